"""Trend alerts: planted drops are found and named; steady data raises none."""

from __future__ import annotations

import pytest

from metrics_helpers import insert_orders, simulate_orders, store_with
from retain.errors import DataError
from retain.metrics import ALERT_COLUMNS, alerts
from retain.store import Store

AS_OF = "2023-12-31"  # the simulated history runs January 2021 to December 2023


def _alerts_for(plant: dict[str, float] | None, seed: int = 0) -> object:
    with Store(":memory:") as store:
        insert_orders(store, simulate_orders(seed=seed, plant=plant))
        return alerts(store, "month", window_days=30, as_of=AS_OF)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_steady_buying_raises_no_alert(seed: int) -> None:
    found = _alerts_for(None, seed)
    assert found.empty
    assert found.attrs["checked"] == 15  # five metrics x three months
    assert list(found.columns) == ALERT_COLUMNS


@pytest.mark.parametrize(
    ("plant", "metric"),
    [
        ({"new_customers": 0.5}, "new_customers"),
        ({"order_value": 0.75}, "aov"),
        ({"extra_orders": 0.1}, "purchase_frequency"),
    ],
)
def test_a_planted_drop_is_found_and_only_it(plant: dict[str, float], metric: str) -> None:
    found = _alerts_for(plant)
    assert found["metric"].tolist() == [metric]
    alert = found.iloc[0]
    assert alert["period"] == "2023-12"
    assert alert["value"] < alert["baseline"] and alert["change"] < 0
    assert alert["change"] == pytest.approx(alert["value"] - alert["baseline"])
    assert alert["p_value"] < 0.01
    assert "2023-12" in alert["reason"] and "baseline" in alert["reason"]


def test_fewer_returning_purchases_lower_retention() -> None:
    found = _alerts_for({"buy_rate": 0.5})
    assert "retention_rate" in set(found["metric"])
    assert set(found["metric"]) <= {"retention_rate", "returning_revenue_share"}
    retention = found[found["metric"] == "retention_rate"].iloc[0]
    assert retention["period"] == "2023-12"
    assert retention["reason"].startswith("retention rate fell to ")
    assert " points " in retention["reason"]


def test_drop_by_hand_with_a_flat_baseline() -> None:
    """Six months of exactly 4 orders of 10; the seventh month, 4 orders of 5.

    The baseline spread is 0, so the AOV's own standard error bounds the test: the
    order values of the last month do not vary either, and any drop is flagged.
    """
    orders = [
        (f"c{m}{i}", f"2024-{m:02d}-0{i + 1}", 10 if m < 7 else 5)
        for m in range(1, 8)
        for i in range(4)
    ]
    store = store_with(orders)
    found = alerts(store, "month", as_of="2024-07-31", recent_periods=1)
    aov = found[found["metric"] == "aov"].iloc[0]
    assert (aov["value"], aov["baseline"], aov["change"], aov["change_pct"]) == (5, 10, -5, -50)
    # new customers stay at 4 and the share of returning revenue at 0: no alert
    assert set(found["metric"]) == {"aov"}


def test_too_little_history_says_so() -> None:
    store = store_with([("a", "2024-01-05", 10), ("b", "2024-02-05", 10)])
    found = alerts(store, as_of="2024-02-29")
    assert found.empty and found.attrs["checked"] == 0
    assert "not enough history" in found.attrs["note"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"baseline_periods": 2}, "baseline_periods"),
        ({"recent_periods": 0}, "recent_periods"),
        ({"alpha": 0.5}, "significance level"),
        ({"period": "day"}, "unknown period"),
    ],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    store = store_with([("a", "2024-01-05", 10)])
    with pytest.raises(DataError, match=message):
        alerts(store, **kwargs)
