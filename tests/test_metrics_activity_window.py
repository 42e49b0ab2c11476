"""The default activity window follows the store's purchase rhythm: the 90th percentile
of the gaps between a customer's order days, kept within the period's least window and
365 days; 365 days when there are too few repeat purchases to tell."""

from __future__ import annotations

import pandas as pd
import pytest

from metrics_helpers import insert_orders
from retain.metrics import alerts, business_clv, overview, retention
from retain.store import Store


def _store(gap_days: int, customers: int = 40, orders_each: int = 4) -> Store:
    """Customers who each order ``orders_each`` times, ``gap_days`` apart, from 2023-01-02."""
    rows = [
        {
            "order_id": f"{c}-{k}",
            "customer_id": str(c),
            "ordered_at": pd.Timestamp("2023-01-02") + pd.Timedelta(days=k * gap_days + c % 7),
            "net_revenue": 10.0,
        }
        for c in range(customers)
        for k in range(orders_each)
    ]
    store = Store(":memory:")
    insert_orders(store, pd.DataFrame(rows))
    return store


def test_the_window_is_the_90th_percentile_of_the_gaps() -> None:
    store = _store(45)
    frame = retention(store, "month")
    assert frame.attrs["window_days"] == 45
    assert "90th percentile" in frame.attrs["window_rule"]
    assert "120 gaps" in frame.attrs["window_rule"]  # 40 customers x 3 gaps
    assert overview(store)["window_days"] == 45
    assert business_clv(store)["window_days"] == 45
    assert alerts(store).attrs["window_days"] == 45


def test_the_window_is_bounded_by_the_period_and_a_year() -> None:
    assert retention(_store(45), "quarter").attrs["window_days"] == 90  # at least a quarter
    assert retention(_store(45), "year").attrs["window_days"] == 365
    assert retention(_store(10), "month").attrs["window_days"] == 30
    long = retention(_store(200, orders_each=3), "month")
    assert long.attrs["window_days"] == 200
    capped = retention(_store(500, orders_each=2), "month")
    assert capped.attrs["window_days"] == 365 and "capped at 365" in capped.attrs["window_rule"]


def test_too_few_repeat_purchases_keep_a_year() -> None:
    frame = retention(_store(45, customers=5), "month")  # 15 gaps
    assert frame.attrs["window_days"] == 365
    assert "too few repeat purchases" in frame.attrs["window_rule"]


def test_a_window_set_is_kept() -> None:
    frame = retention(_store(45), "month", window_days=120)
    assert frame.attrs["window_days"] == 120 and frame.attrs["window_rule"] == "120 days, as set"


@pytest.mark.parametrize("gap", [45, 200])
def test_retention_is_empty_until_someone_could_lapse(gap: int) -> None:
    """Within one window of the store's first order every customer is still one."""
    frame = retention(_store(gap, orders_each=3), "month")
    window = pd.Timedelta(days=frame.attrs["window_days"])
    ends = pd.to_datetime(frame["period_start"]) + pd.offsets.MonthBegin(1)
    could_lapse = ends > pd.Timestamp("2023-01-02") + window
    assert frame.loc[~could_lapse, "retention_rate"].isna().all()
    done = frame["complete"] & could_lapse & (frame["customers_at_start"] > 0)
    assert frame.loc[done, "retention_rate"].notna().all()
