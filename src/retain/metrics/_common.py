"""Shared pieces of the metrics: periods, the observation day, argument checks.

A period is a calendar month, quarter or year in UTC. In SQL a period is an
integer index: ``(year * 12 + month - 1) // months_per_period``, so that
consecutive periods have consecutive indexes whatever their length.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import pandas as pd

from retain.config import MAX_WINDOW_DAYS, observation_day, resolve_window_days
from retain.config import check_margin as check_margin  # re-exported: the metrics' check
from retain.config import resolve_margin as resolve_margin
from retain.config import scored_margin as scored_margin
from retain.errors import DataError
from retain.store import Store

AsOf = str | dt.date | dt.datetime | pd.Timestamp | None

PERIODS: dict[str, int] = {"month": 1, "quarter": 3, "year": 12}
"""Months in each period."""

PERIOD_DAYS: dict[str, float] = {"month": 365.25 / 12, "quarter": 365.25 / 4, "year": 365.25}
"""Mean length of each period in days (for rates per period over a span of days)."""

# With a window shorter than the period, a customer buying once every period would
# count as lapsed at some period starts: retention would measure noise.
MIN_WINDOW_DAYS: dict[str, int] = {"month": 30, "quarter": 90, "year": 365}

PANDAS_FREQ: dict[str, str] = {"month": "M", "quarter": "Q", "year": "Y"}


def check_period(period: str) -> int:
    """Months in ``period``; a clear error for anything but month, quarter or year."""
    if period not in PERIODS:
        raise DataError("unknown period", value=period, expected="month, quarter or year")
    return PERIODS[period]


def check_window_days(window_days: int, period: str) -> int:
    """The activity window: a customer is one who ordered in the last ``window_days`` days."""
    if isinstance(window_days, bool) or not isinstance(window_days, int):
        raise DataError("window_days must be a whole number of days", value=window_days)
    least = MIN_WINDOW_DAYS[period]
    if window_days < least:
        raise DataError(
            f"an activity window of {window_days} days is shorter than a {period}: a customer "
            f"who buys once every {period} would count as lapsed between purchases",
            value=window_days,
            expected=f"at least {least} days for --period {period}",
        )
    if window_days > MAX_WINDOW_DAYS:
        raise DataError(
            "an activity window longer than a century",
            value=window_days,
            expected=f"at most {MAX_WINDOW_DAYS:,} days",
        )
    return window_days


# The activity window from the store's purchase rhythm (``window_days=None``): a high
# quantile of the gaps between a customer's orders, bounded.
RHYTHM_QUANTILE = 0.9
RHYTHM_MIN_GAPS = 30
RHYTHM_MAX_DAYS = 365

RHYTHM_SQL = """
WITH days AS (
    SELECT DISTINCT customer_id, CAST(ordered_at AS DATE) AS day
    FROM orders
    WHERE ordered_at < $end
),
gaps AS (
    SELECT date_diff('day', lag(day) OVER (PARTITION BY customer_id ORDER BY day), day) AS gap
    FROM days
)
SELECT count(gap), quantile_cont(gap, $q) FROM gaps WHERE gap IS NOT NULL
"""


@dataclass(frozen=True)
class ActivityWindow:
    """How long after an order a customer still counts as a customer: ``days``, and
    ``rule`` (how it was chosen, in words)."""

    days: int
    rule: str
    from_rhythm: bool


def activity_window(store: Store, window: Window, window_days: int | None) -> ActivityWindow:
    """The activity window: ``window_days`` when given (checked), else the store's
    ``window_days`` setting, else the store's rhythm.

    The rhythm rule: the 90th percentile of the gaps in days between a customer's
    consecutive order days (every customer's, orders to the observation day),
    rounded up, and kept within the shortest window the period allows (30 days for
    a month, 90 for a quarter, 365 for a year) and 365 days. With fewer than 30
    such gaps (too few repeat purchases to tell a rhythm) it is 365 days.
    """
    period = window.period
    how = "as set"
    if window_days is None:
        window_days, how = resolve_window_days(store), "the store's window_days setting"
    if window_days is not None:
        try:
            days = check_window_days(window_days, period)
        except DataError as exc:
            if how == "as set":
                raise
            raise DataError(
                f"the store's window_days setting does not fit {period}s ({exc}): give "
                "--window-days, or change it with `retain settings set window_days N|auto`"
            ) from None
        return ActivityWindow(days, f"{days} days, {how}", from_rhythm=False)
    least = MIN_WINDOW_DAYS[period]
    rows = store.con.execute(RHYTHM_SQL, {"end": window.end, "q": RHYTHM_QUANTILE}).fetchall()
    gaps, quantile = rows[0] if rows else (0, None)
    percentile = f"{RHYTHM_QUANTILE * 100:.0f}th percentile"
    if not gaps or gaps < RHYTHM_MIN_GAPS or quantile is None:
        days = max(RHYTHM_MAX_DAYS, least)
        return ActivityWindow(
            days,
            f"{days} days: too few repeat purchases ({int(gaps or 0):,} gaps between a "
            f"customer's orders, {RHYTHM_MIN_GAPS} needed) to measure the store's rhythm",
            from_rhythm=True,
        )
    measured = math.ceil(float(quantile))
    days = max(least, min(measured, RHYTHM_MAX_DAYS))
    bound = ""
    if days != measured:
        bound = f", raised to {days}" if days > measured else f", capped at {days}"
    return ActivityWindow(
        days,
        f"{days} days: the {percentile} of the {int(gaps):,} gaps between a customer's "
        f"orders is {measured} days{bound} (kept within {least} to "
        f"{max(RHYTHM_MAX_DAYS, least)} days for {period}s)",
        from_rhythm=True,
    )


def check_positive_int(name: str, value: int, least: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise DataError(f"{name} must be a whole number", value=value, expected=f"{least} or more")
    return value


@dataclass(frozen=True)
class Window:
    """What a metric looks at: orders placed before ``end`` (midnight after ``as_of``)."""

    as_of: dt.date
    end: dt.datetime
    months_per_period: int
    period: str

    @property
    def params(self) -> dict[str, object]:
        return {"end": self.end, "p": self.months_per_period}


def observation(store: Store, as_of: AsOf, period: str = "month") -> Window:
    """Resolve the observation day: ``as_of`` (a date, UTC, or ``live``), else the store's
    ``as_of`` setting, else the day of the last order (:func:`retain.config.observation_day`).

    Orders up to the end of that day are counted; later ones are ignored.
    """
    months = check_period(period)
    day = observation_day(store, as_of)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time())
    return Window(as_of=day, end=end, months_per_period=months, period=period)


def period_labels(period_start: pd.Series, period: str) -> pd.Series:
    """Labels such as ``1997-03``, ``1997Q1`` or ``1997`` for period start dates."""
    return pd.Series(
        pd.PeriodIndex(pd.to_datetime(period_start), freq=PANDAS_FREQ[period]).astype(str),
        index=period_start.index,
    )


def has_spend(store: Store) -> bool:
    return bool(store.scalar("SELECT count(*) FROM marketing_spend"))
