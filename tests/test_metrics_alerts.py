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


def test_a_retention_drop_from_a_flat_baseline_is_tested_as_a_rate() -> None:
    """50 customers buy on the 10th of every month (retention 100% with a 30-day window);
    in August 2023 only 30 of them buy. The drop is tested as a proportion against the
    pooled baseline, not by a t-test whose flat baseline has no spread at all."""
    import math

    from scipy import stats

    rows = [
        (str(c), f"2023-{m:02d}-10", 10.0)
        for c in range(50)
        for m in range(1, 10)
        if m != 8 or c < 30
    ]
    found = alerts(store_with(rows), "month", window_days=30, as_of="2023-08-31")
    retention = found[found["metric"] == "retention_rate"]
    assert len(retention) == 1
    alert = retention.iloc[0]
    assert alert["period"] == "2023-08" and alert["test"] == "z"
    assert alert["value"] == pytest.approx(60) and alert["baseline"] == pytest.approx(100)
    # six baseline months of 50 kept of 50; the period 30 of 50
    pooled = (30 + 300) / (50 + 300)
    z = (0.6 - 1.0) / math.sqrt(pooled * (1 - pooled) * (1 / 50 + 1 / 300))
    assert alert["statistic"] == pytest.approx(z)
    assert alert["p_value"] == pytest.approx(stats.norm.cdf(z))
    assert "two-proportion z-test" in alert["reason"] and "50 customers" not in alert["reason"]
    assert "(customers active at its start, 50, still active at its end)" in alert["reason"]
