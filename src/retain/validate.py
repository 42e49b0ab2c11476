"""Out-of-sample checks of the repeat-purchase models.

:func:`holdout` fits a model on the purchases up to a calibration end and
compares its forecasts with what the same customers did afterwards: total
repeat purchases, per-customer errors, the weekly cumulative tracking curve
(the classic "tracking plot" of Fader, Hardie & Lee 2005), and how well
``next_purchase`` placed each buyer's first purchase after the calibration end.
:func:`compare` does it for several models at once.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from retain.errors import DataError, SchemaError
from retain.features import summarize
from retain.models import TRANSACTION_MODELS, TransactionModel, transaction_model
from retain.models.base import UNIT_DAYS
from retain.store import Store

HOLDOUT_SQL = """
WITH tx AS (
    SELECT CAST(customer_id AS VARCHAR) AS customer_id, CAST(ts AS TIMESTAMP) AS ts
    FROM holdout_src
    WHERE customer_id IS NOT NULL AND ts IS NOT NULL
),
held AS (
    -- the orders after the calibration end's day up to the end of the holdout's
    -- last day, cut on the timestamp before they are merged by grain period
    SELECT customer_id, date_trunc($grain, ts) AS period, min(date_trunc('day', ts)) AS day
    FROM tx
    WHERE ts >= $holdout_start AND ts < $holdout_stop
    GROUP BY customer_id, date_trunc($grain, ts)
),
seen AS (
    -- the period holding the calibration end, where the customer bought by then:
    -- the calibration summary has counted it already
    SELECT DISTINCT customer_id, date_trunc($grain, ts) AS period
    FROM tx
    WHERE ts >= date_trunc($grain, $holdout_start - INTERVAL 1 DAY) AND ts < $holdout_start
)
SELECT held.customer_id, held.period, held.day
FROM held
WHERE NOT EXISTS (
    SELECT 1 FROM seen WHERE seen.customer_id = held.customer_id AND seen.period = held.period
)
"""

GRAIN_NAMES = {"D": "day", "W": "week"}
#: purchase windows are computed out to this many holdout lengths, so that the cap
#: does not cut the windows that are judged (those ending inside the holdout)
WINDOW_REACH = 10


@dataclass
class HoldoutResult:
    """What :func:`holdout` found. Times are in days unless said otherwise.

    - ``actual`` / ``predicted``: total repeat purchases (distinct ``grain``
      periods with a purchase) in the holdout by the calibration customers.
    - ``mae`` / ``rmse``: per-customer mean absolute and root mean squared error
      of those counts.
    - ``tracking``: one row per holdout week: ``week``, ``date`` (end of the
      week), ``actual_cumulative``, ``predicted_cumulative``.
    - ``next_purchase``: ``buyers`` (customers who bought in the holdout);
      ``window_customers``, the customers whose whole predicted 25th-75th
      percentile window of the time to their next purchase lies inside the
      holdout (buyers or not: for them a purchase after the window would have
      been seen), and among them the shares whose first holdout purchase fell
      ``window_before``, ``window_inside`` or ``window_after`` the window (no
      holdout purchase counts as after); ``window_coverage`` is
      ``window_inside``, about 0.5 for a well calibrated model. Also
      ``median_error_days`` (median distance between predicted median and
      actual day, over buyers given a date), ``buyers_given_a_date`` (share of
      buyers whose predicted median fell inside the holdout) and
      ``non_buyers_given_a_date`` (the same share for customers who did not
      buy: false alarms); None where there is nobody to count.
    - ``per_customer``: ``actual`` and ``predicted`` per customer.
    """

    model: str
    calibration_end: str
    holdout_end: str
    unit: str
    grain: str
    holdout_days: int
    customers: int
    actual: float
    predicted: float
    mae: float
    rmse: float
    tracking: pd.DataFrame
    next_purchase: dict[str, float | None]
    fitted: TransactionModel = field(repr=False)
    per_customer: pd.DataFrame = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (tracking as records, no per-customer rows)."""
        return {
            "model": self.model,
            "calibration_end": self.calibration_end,
            "holdout_end": self.holdout_end,
            "unit": self.unit,
            "grain": self.grain,
            "holdout_days": self.holdout_days,
            "customers": self.customers,
            "actual": self.actual,
            "predicted": self.predicted,
            "mae": self.mae,
            "rmse": self.rmse,
            "params": self.fitted.params_,
            "log_likelihood": self.fitted.log_likelihood_,
            "next_purchase": self.next_purchase,
            "tracking": [
                {
                    "week": int(week),
                    "date": str(date),
                    "actual_cumulative": float(actual),
                    "predicted_cumulative": float(predicted),
                }
                for week, date, actual, predicted in zip(
                    self.tracking["week"].tolist(),
                    self.tracking["date"].tolist(),
                    self.tracking["actual_cumulative"].tolist(),
                    self.tracking["predicted_cumulative"].tolist(),
                    strict=True,
                )
            ],
        }


def _day(value: Any, name: str) -> pd.Timestamp:
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise DataError(
            f"{name} is not a date ({exc})", value=value, expected="YYYY-MM-DD"
        ) from None
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return stamp.normalize()


def _holdout_periods(
    transactions: Any,
    customer_id: str,
    timestamp: str,
    calibration_end: pd.Timestamp,
    holdout_end: pd.Timestamp,
    grain: str,
) -> pd.DataFrame:
    """(customer_id, period, day) of every distinct purchase period in the holdout,
    ``day`` the first holdout purchase day in the period."""
    params = {
        "grain": GRAIN_NAMES[grain],
        "holdout_start": (calibration_end + pd.Timedelta(days=1)).to_pydatetime(),
        "holdout_stop": (holdout_end + pd.Timedelta(days=1)).to_pydatetime(),
    }
    if isinstance(transactions, Store):
        con = transactions.con
        con.execute(
            f'CREATE OR REPLACE TEMP VIEW holdout_src AS SELECT "{customer_id}" AS customer_id, '
            f'"{timestamp}" AS ts FROM orders'
        )
        try:
            return con.execute(HOLDOUT_SQL, params).df()
        finally:
            con.execute("DROP VIEW IF EXISTS holdout_src")
    frame = transactions
    if type(frame).__module__.startswith("polars"):
        frame = frame.to_arrow()
    columns = list(frame.column_names) if hasattr(frame, "column_names") else list(frame.columns)
    missing = [c for c in (customer_id, timestamp) if c not in columns]
    if missing:
        raise SchemaError(f"transactions lack the column(s) {missing}; found {columns}")
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("holdout_input", frame)
    con.execute(
        f'CREATE TEMP VIEW holdout_src AS SELECT "{customer_id}" AS customer_id, '
        f'"{timestamp}" AS ts FROM holdout_input'
    )
    try:
        return con.execute(HOLDOUT_SQL, params).df()
    finally:
        con.close()


def _last_day(transactions: Any, timestamp: str) -> pd.Timestamp:
    if isinstance(transactions, Store):
        value = transactions.scalar(f'SELECT max("{timestamp}") FROM orders')
    else:
        frame = transactions.to_pandas() if hasattr(transactions, "to_pandas") else transactions
        value = pd.to_datetime(frame[timestamp]).max()
    if value is None or pd.isna(value):
        raise DataError("no transactions")
    return _day(value, "the last transaction")


@dataclass
class _HoldoutData:
    """The calibration summary and what the customers did in the holdout, shared by
    every model a comparison fits."""

    calibration_end: pd.Timestamp
    holdout_end: pd.Timestamp
    unit: str
    grain: str
    summary: pd.DataFrame
    actual: pd.Series  # holdout purchases per calibration customer
    first: pd.Series  # days from the calibration end to the first holdout purchase, NaN if none
    offset: np.ndarray  # days from the calibration end of every holdout purchase

    @property
    def days(self) -> int:
        return int((self.holdout_end - self.calibration_end).days)


def _holdout_data(
    transactions: Any,
    calibration_end: str | dt.date | pd.Timestamp,
    holdout_end: str | dt.date | pd.Timestamp | None,
    unit: str,
    grain: str,
    customer_id: str,
    timestamp: str,
) -> _HoldoutData:
    cal_end = _day(calibration_end, "calibration_end")
    hold_end = (
        _last_day(transactions, timestamp)
        if holdout_end is None
        else _day(holdout_end, "holdout_end")
    )
    if hold_end <= cal_end:
        raise DataError(
            f"the holdout must end after the calibration end {cal_end.date()}, "
            f"got {hold_end.date()}"
        )
    if unit not in UNIT_DAYS or grain not in UNIT_DAYS:
        raise ValueError("unit and grain must each be 'D' or 'W'")
    summary = summarize(
        transactions,
        customer_id=customer_id,
        timestamp=timestamp,
        amount=None,
        observation_end=cal_end,
        unit=unit,
        grain=grain,
    )
    periods = _holdout_periods(transactions, customer_id, timestamp, cal_end, hold_end, grain)
    periods = periods[periods["customer_id"].isin(summary.index)]
    # days from the calibration end to each period's first holdout purchase (not to
    # the period's start, which may precede the calibration end under grain "W")
    offset = (pd.to_datetime(periods["day"]) - cal_end).dt.days.to_numpy()
    actual = (
        periods.groupby("customer_id").size().reindex(summary.index, fill_value=0).astype(float)
    )
    first = (
        pd.Series(offset, index=periods["customer_id"].to_numpy())
        .groupby(level=0)
        .min()
        .reindex(summary.index)
    )
    return _HoldoutData(cal_end, hold_end, unit, grain, summary, actual, first, offset)


def holdout(
    transactions: Any,
    calibration_end: str | dt.date | pd.Timestamp,
    *,
    model: str | type[TransactionModel] | TransactionModel = "bgnbd",
    holdout_end: str | dt.date | pd.Timestamp | None = None,
    unit: str = "W",
    grain: str = "D",
    customer_id: str = "customer_id",
    timestamp: str = "ordered_at",
) -> HoldoutResult:
    """Fit ``model`` on the purchases up to ``calibration_end`` and score its
    forecast of the holdout, ``calibration_end`` (exclusive) to ``holdout_end``
    (inclusive, default the last transaction's day).

    ``transactions`` is a DataFrame (pandas, polars, Arrow) or a
    :class:`~retain.store.Store`; ``model`` a short name ("bgnbd", "mbgnbd",
    "pnbd"), a model class or an unfitted instance. ``unit`` ("D" or "W") is
    the time unit of the fit, ``grain`` how purchases are merged (one per day by
    default). Only customers who bought by ``calibration_end`` are scored.
    """
    data = _holdout_data(
        transactions, calibration_end, holdout_end, unit, grain, customer_id, timestamp
    )
    return _evaluate(data, transaction_model(model))


def _evaluate(data: _HoldoutData, fitted: TransactionModel) -> HoldoutResult:
    summary, cal_end, days = data.summary, data.calibration_end, data.days
    fitted.fit(summary)
    unit_days = UNIT_DAYS[data.unit]
    length = days / unit_days
    actual = data.actual
    predicted = fitted.expected_purchases(summary, length)
    errors = predicted.to_numpy() - actual.to_numpy()

    # weekly cumulative tracking: all customers, each week's end
    weeks = int(np.ceil(days / 7))
    ends = np.minimum(7 * np.arange(1, weeks + 1), days)
    customers = fitted._customers(summary)
    expected = fitted._conditional_expected(customers.rows, ends / unit_days)
    predicted_cumulative = np.einsum("i,ij->j", customers.rows.weight, expected)
    week_of = np.ceil(data.offset / 7).astype(int)
    actual_cumulative = np.cumsum(np.bincount(week_of, minlength=weeks + 1)[1:])
    tracking = pd.DataFrame(
        {
            "week": np.arange(1, weeks + 1),
            "date": [(cal_end + pd.Timedelta(days=int(e))).date() for e in ends],
            "actual_cumulative": actual_cumulative[:weeks].astype(float),
            "predicted_cumulative": predicted_cumulative,
        }
    )

    # next purchase: where the first holdout purchase fell relative to the predicted
    # 25th-75th percentile window, over the customers whose whole window lies in the
    # holdout (so that a purchase after it would have been seen), buyers or not
    window = fitted.purchase_window(summary, horizon=WINDOW_REACH * length)
    median = fitted.next_purchase(summary, 0.5, horizon=length)
    bought = data.first.notna().to_numpy()
    actual_time = data.first.to_numpy(dtype=float) / unit_days
    start = window["window_start"].to_numpy()
    end = window["window_end"].to_numpy()
    observable = window["end_within_horizon"].to_numpy() & (end <= length + 1e-9)
    before = bought & (actual_time < start - 1e-9)
    inside = bought & ~before & (actual_time <= end + 1e-9)
    counted = int(observable.sum())

    def share(hit: np.ndarray) -> float | None:
        return float(hit[observable].mean()) if counted else None

    dated = median["within_horizon"].to_numpy()
    gap_days = np.abs(median["next_purchase"].to_numpy() - actual_time) * unit_days
    buyers = int(bought.sum())
    non_buyers = len(summary) - buyers
    next_purchase: dict[str, float | None] = {
        "buyers": float(buyers),
        "window_customers": float(counted),
        "window_coverage": share(inside),
        "window_before": share(before),
        "window_inside": share(inside),
        "window_after": share(~before & ~inside),
        "median_error_days": (
            float(np.median(gap_days[bought & dated])) if (bought & dated).any() else None
        ),
        "buyers_given_a_date": float(dated[bought].mean()) if buyers else None,
        "non_buyers_given_a_date": float(dated[~bought].mean()) if non_buyers else None,
    }
    name = next((k for k, v in TRANSACTION_MODELS.items() if type(fitted) is v), fitted.name)
    return HoldoutResult(
        model=name,
        calibration_end=cal_end.date().isoformat(),
        holdout_end=data.holdout_end.date().isoformat(),
        unit=data.unit,
        grain=data.grain,
        holdout_days=days,
        customers=len(summary),
        actual=float(actual.to_numpy().sum()),
        predicted=float(predicted.to_numpy().sum()),
        mae=float(np.mean(np.abs(errors))),
        rmse=float(np.sqrt(np.mean(errors**2))),
        tracking=tracking,
        next_purchase=next_purchase,
        fitted=fitted,
        per_customer=pd.DataFrame({"actual": actual, "predicted": predicted}),
    )


def compare(
    transactions: Any,
    calibration_end: str | dt.date | pd.Timestamp,
    *,
    models: tuple[str, ...] = tuple(TRANSACTION_MODELS),
    **kwargs: Any,
) -> pd.DataFrame:
    """:func:`holdout` for each of ``models`` (the data read and summarised once):
    one row per model with ``actual``, ``predicted``, ``mae``, ``rmse``,
    ``log_likelihood`` and the next-purchase figures, best (lowest RMSE) first.
    Keyword arguments as for :func:`holdout`."""
    data = _holdout_data(
        transactions,
        calibration_end,
        kwargs.pop("holdout_end", None),
        kwargs.pop("unit", "W"),
        kwargs.pop("grain", "D"),
        kwargs.pop("customer_id", "customer_id"),
        kwargs.pop("timestamp", "ordered_at"),
    )
    if kwargs:
        raise TypeError(f"unexpected argument(s): {', '.join(kwargs)}")
    rows = []
    for name in models:
        result = _evaluate(data, transaction_model(name))
        rows.append(
            {
                "model": result.model,
                "actual": result.actual,
                "predicted": result.predicted,
                "mae": result.mae,
                "rmse": result.rmse,
                "log_likelihood": result.fitted.log_likelihood_,
                "converged": result.fitted.converged_,
                **{f"next_{k}": v for k, v in result.next_purchase.items()},
            }
        )
    return pd.DataFrame(rows).sort_values("rmse", kind="stable").reset_index(drop=True)
