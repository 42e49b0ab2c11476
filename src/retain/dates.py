"""Observation dates as users give them: read once, checked the same way everywhere."""

from __future__ import annotations

import datetime as dt

import pandas as pd

from retain.errors import DataError


def parse_observation_date(value: str | dt.date | dt.datetime | pd.Timestamp) -> pd.Timestamp:
    """``value`` (a date or a time, as text or object) as a naive UTC timestamp.

    A time with a zone is converted to UTC; one without is taken as UTC. Raises
    :class:`~retain.errors.DataError` when ``value`` is not a date.
    """
    unreadable = DataError(
        "unreadable observation date", value=value, expected="a date as YYYY-MM-DD"
    )
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise unreadable from None
    if pd.isna(ts):
        raise unreadable
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts


def check_not_before_first_order(day: dt.date, first: dt.date) -> None:
    """Raise :class:`~retain.errors.DataError` when the observation ``day`` is before ``first``,
    the day of the first order."""
    if day < first:
        raise DataError(
            f"the observation date {day} is before the first order ({first})",
            expected=f"a date on or after {first}",
        )
