"""Retention, churn and the per-period measures, on data checked by hand and against a
direct (slow) reading of the definitions."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from metrics_helpers import RETENTION_EXAMPLE, insert_orders, store_with
from retain.errors import DataError
from retain.metrics import period_metrics, repeat_purchase_rate, retention
from retain.store import Store


@pytest.fixture(scope="module")
def example() -> Store:
    return store_with(RETENTION_EXAMPLE)


def test_retention_by_hand_with_a_30_day_window(example: Store) -> None:
    """A customer at a month start ordered in the 30 days before it.

    Feb 1: A, B. Mar 1: A, C (B lapsed). Apr 1: A (D's 1 March is 31 days before).
    May 1: C (A lapsed, C came back).
    """
    frame = retention(example, "month", window_days=30, as_of="2024-04-30").set_index("period")
    assert list(frame.index) == ["2024-01", "2024-02", "2024-03", "2024-04"]
    assert frame["complete"].all()
    assert frame["customers_at_start"].tolist() == [0, 2, 2, 1]
    assert frame["new_customers"].tolist() == [2, 1, 1, 0]
    assert frame["customers_at_end"].tolist() == [2, 2, 1, 1]
    assert frame["retained_customers"].tolist() == [0, 1, 1, 0]
    assert frame["reactivated_customers"].tolist() == [0, 0, 0, 1]
    assert np.isnan(frame.loc["2024-01", "retention_rate"])  # nobody at start
    # Feb: (2 at end - 1 new) / 2; Mar: (1 - 0 new still there) / 2; Apr: (1 - 0) / 1
    assert frame.loc["2024-02", "retention_rate"] == pytest.approx(50)
    assert frame.loc["2024-03", "retention_rate"] == pytest.approx(50)
    assert frame.loc["2024-04", "retention_rate"] == pytest.approx(100)
    assert frame.loc["2024-02", "churn_rate"] == pytest.approx(50)


def test_retention_with_a_365_day_window_keeps_everyone_for_a_year(example: Store) -> None:
    """Everyone is still a customer within a year of the first order: 100% by
    construction, so the rate is left empty while the counts stay."""
    frame = retention(example, "quarter", window_days=365, as_of="2024-06-30")
    assert frame["period"].tolist() == ["2024Q1", "2024Q2"]
    q2 = frame.iloc[1]
    assert (q2["customers_at_start"], q2["customers_at_end"], q2["new_customers"]) == (4, 4, 0)
    assert np.isnan(q2["retention_rate"]) and np.isnan(q2["churn_rate"])
    assert frame.attrs["measurable_from"] is None


def test_unfinished_period_has_no_end_figures(example: Store) -> None:
    frame = retention(example, "month", window_days=30, as_of="2024-04-15")
    last = frame.iloc[-1]
    assert not last["complete"] and frame["complete"].iloc[:-1].all()
    assert pd.isna(last["customers_at_end"]) and np.isnan(last["retention_rate"])
    assert last["customers_at_start"] == 1  # the start is known


def test_orders_after_as_of_are_ignored(example: Store) -> None:
    frame = retention(example, "month", window_days=30, as_of="2024-02-29")
    assert frame["period"].tolist() == ["2024-01", "2024-02"]
    assert frame["customers_at_end"].tolist() == [2, 2]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"period": "week"}, "unknown period"),
        ({"period": "month", "window_days": 29}, "at least 30 days"),
        ({"period": "year", "window_days": 364}, "at least 365 days"),
        ({"period": "month", "window_days": 99_999_999_999}, "at most 36,500 days"),
        ({"period": "month", "as_of": "2023-12-31"}, "before the first order"),
        ({"period": "month", "as_of": "soon"}, "unreadable observation date"),
    ],
)
def test_bad_arguments_are_named(example: Store, kwargs: dict, message: str) -> None:
    with pytest.raises(DataError, match=message):
        retention(example, **kwargs)


def test_empty_store_is_a_clear_error() -> None:
    with Store(":memory:") as store, pytest.raises(DataError, match="no orders yet"):
        retention(store)


def _reference(
    orders: pd.DataFrame, months: int, window_days: int, last_index: int
) -> pd.DataFrame:
    """The definitions read literally, one customer and one period start at a time."""

    def start(k: int) -> dt.datetime:
        m = k * months
        return dt.datetime(m // 12, m % 12 + 1, 1)

    def index(ts: pd.Timestamp) -> int:
        return (ts.year * 12 + ts.month - 1) // months

    window = dt.timedelta(days=window_days)
    by_customer = {c: sorted(g["ordered_at"]) for c, g in orders.groupby("customer_id")}
    first = min(index(times[0]) for times in by_customer.values())
    first_order = min(times[0] for times in by_customer.values())
    rows = []
    for k in range(first, last_index + 1):
        s, e = start(k), start(k + 1)

        def active(times: list[pd.Timestamp], at: dt.datetime) -> bool:
            return any(at - window <= t < at for t in times)

        at_start = {c for c, t in by_customer.items() if active(t, s)}
        at_end = {c for c, t in by_customer.items() if active(t, e)}
        new = {c for c, t in by_customer.items() if s <= t[0] < e}
        rows.append(
            {
                "customers_at_start": len(at_start),
                "customers_at_end": len(at_end),
                "new_customers": len(new),
                "retained_customers": len(at_start & at_end),
                "reactivated_customers": len(at_end - at_start - new),
                # nobody can have lapsed by an end within one window of the first order
                "retention_rate": 100 * len(at_end - new) / len(at_start)
                if at_start and e - window > first_order
                else np.nan,
            }
        )
    return pd.DataFrame(rows)


@pytest.mark.parametrize(
    ("period", "months", "window_days"),
    [
        ("month", 1, 30),
        ("month", 1, 45),
        ("month", 1, 365),
        ("quarter", 3, 90),
        ("quarter", 3, 200),
        ("year", 12, 365),
        ("year", 12, 500),
    ],
)
def test_retention_matches_the_definitions_read_literally(
    period: str, months: int, window_days: int
) -> None:
    rng = np.random.default_rng(months * 1000 + window_days)
    n = 400
    start = np.datetime64("2021-01-01T00:00:00")
    seconds = rng.integers(0, 3 * 365 * 86400, n)
    # a fifth of the orders exactly at midnight on the first of a month: the edges
    edge = rng.random(n) < 0.2
    firsts = pd.to_datetime(start + seconds.astype("timedelta64[s]")).to_period("M").to_timestamp()
    times = np.where(edge, firsts.to_numpy(), (start + seconds.astype("timedelta64[s]")))
    orders = pd.DataFrame(
        {
            "order_id": np.arange(n).astype(str),
            "customer_id": rng.integers(0, 60, n).astype(str),
            "ordered_at": pd.to_datetime(times),
            "net_revenue": 1.0,
        }
    )
    as_of = dt.date(2023, 12, 31)
    with Store(":memory:") as store:
        insert_orders(store, orders)
        got = retention(store, period, window_days=window_days, as_of=as_of)
    expected = _reference(orders, months, window_days, (2023 * 12 + 11) // months)
    columns = list(expected.columns)
    got = got[columns].astype("float64").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected.astype("float64"), check_dtype=False)


def test_period_metrics_by_hand(example: Store) -> None:
    frame = period_metrics(example, "month", as_of="2024-04-30").set_index("period")
    jan, feb, mar, apr = (frame.loc[p] for p in ["2024-01", "2024-02", "2024-03", "2024-04"])
    assert (jan["customers"], jan["new_customers"], jan["orders"]) == (2, 2, 2)
    assert jan["net_revenue"] == 50 and jan["aov"] == 25
    assert jan["returning_revenue_share"] == 0
    # Feb: A returns (20), C is new (50)
    assert (feb["new_customers"], feb["returning_customers"]) == (1, 1)
    assert feb["returning_customer_revenue"] == 20 and feb["new_customer_revenue"] == 50
    assert feb["returning_revenue_share"] == pytest.approx(100 * 20 / 70)
    assert feb["returning_customer_share"] == pytest.approx(50)
    assert mar["purchase_frequency"] == 1.0
    assert apr["returning_revenue_share"] == 100


def test_period_metrics_fill_quiet_periods_with_zeros() -> None:
    store = store_with([("a", "2024-01-05", 10), ("a", "2024-01-06", 30), ("a", "2024-04-05", 5)])
    frame = period_metrics(store, "month", as_of="2024-04-30")
    assert frame["period"].tolist() == ["2024-01", "2024-02", "2024-03", "2024-04"]
    assert frame["orders"].tolist() == [2, 0, 0, 1]
    assert frame["purchase_frequency"].iloc[0] == 2.0  # two orders, one customer
    assert np.isnan(frame["aov"].iloc[1])
    assert frame["returning_customers"].tolist() == [0, 0, 0, 1]


def test_repeat_purchase_rate(example: Store) -> None:
    # A (3 orders) and C (2) of A, B, C, D
    assert repeat_purchase_rate(example) == pytest.approx(50)
    # to 31 March C has one order: A only
    assert repeat_purchase_rate(example, as_of="2024-03-31") == pytest.approx(25)
