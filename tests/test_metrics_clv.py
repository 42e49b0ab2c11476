"""CLV: lifespan and the formula (the field's worked examples), per customer, business,
subscription."""

from __future__ import annotations

import numpy as np
import pytest

from metrics_helpers import RETENTION_EXAMPLE, store_with
from retain.errors import DataError
from retain.metrics import (
    business_clv,
    customer_metrics,
    formula_clv,
    lifespan,
    subscription_clv,
)


@pytest.mark.parametrize(
    ("churn", "periods"), [(0.10, 10.0), (0.05, 20.0), (0.90, 1.11), (0.45, 2.22)]
)
def test_lifespan_is_one_over_churn(churn: float, periods: float) -> None:
    """The churn-lifespan table: 10% -> 10 periods, 5% -> 20, 90% -> 1.11, 45% -> 2.22."""
    assert lifespan(churn) == pytest.approx(periods, abs=0.005)


def test_lower_churn_is_where_the_big_gains_are() -> None:
    # halving churn from 10% to 5% adds 10 periods; from 90% to 45% only 1.1
    assert lifespan(0.05) - lifespan(0.10) > 8 * (lifespan(0.45) - lifespan(0.90))


def test_subscriber_paying_20_a_month_for_two_and_a_half_years_is_worth_600() -> None:
    assert formula_clv(aov=20, frequency=1, lifespan=30) == pytest.approx(600)
    assert formula_clv(aov=20, frequency=1, churn_rate=1 / 30) == pytest.approx(600)


def test_formula_multiplies_aov_frequency_lifespan_and_margin() -> None:
    # 0.4 x 50 x 2 purchases per period x 1 / 0.25
    assert formula_clv(50, 2, churn_rate=0.25, margin=0.4) == pytest.approx(160)


def test_discounted_formula_is_the_discounted_sum_over_periods() -> None:
    # retention 0.8, discount 10%: 100 / (1 - 0.8 / 1.1) = 366.67
    assert formula_clv(100, 1, churn_rate=0.2, discount_rate=0.1) == pytest.approx(110 / 0.3)
    t = np.arange(2000)
    explicit = float(np.sum(0.5 * 40 * 3 * 0.7**t / 1.05**t))
    assert formula_clv(40, 3, churn_rate=0.3, margin=0.5, discount_rate=0.05) == pytest.approx(
        explicit
    )
    assert formula_clv(40, 3, churn_rate=0.3, discount_rate=0.0) == pytest.approx(400)
    # discounting lowers the value
    assert formula_clv(40, 3, churn_rate=0.3, discount_rate=0.01) < 400


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"churn_rate": 0.0}, "churn_rate must be a fraction"),
        ({"churn_rate": 10}, "write 0.1"),
        ({"churn_rate": 0.1, "lifespan": 10}, "either churn_rate or lifespan"),
        ({}, "either churn_rate or lifespan"),
        ({"churn_rate": 0.1, "margin": 30}, "write 0.3"),
        ({"churn_rate": 0.1, "margin": 0}, "margin must be a fraction"),
        ({"churn_rate": 0.1, "discount_rate": 1.0}, "discount_rate"),
        ({"churn_rate": 0.1, "discount_rate": -0.1}, "discount_rate"),
        ({"lifespan": 0}, "lifespan must be a positive number"),
        ({"lifespan": 0.5, "discount_rate": 0.1}, "at least 1 period"),
    ],
)
def test_formula_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(DataError, match=message):
        formula_clv(50, 1, **kwargs)


def test_formula_rejects_negative_frequency_and_lifespan_rejects_percent() -> None:
    with pytest.raises(DataError, match="frequency"):
        formula_clv(50, -1, churn_rate=0.1)
    with pytest.raises(DataError, match=r"write 0\.05"):
        lifespan(5)


def test_customer_metrics_by_hand() -> None:
    store = store_with(
        [
            ("a", "2024-01-01", 10),
            ("a", "2024-02-15", 20),
            ("a", "2024-03-31", 30),
            ("b", "2024-03-01", 100),
            ("b", "2024-05-01", 999),  # after as_of: ignored
        ]
    )
    frame = customer_metrics(store, margin=0.5, as_of="2024-03-31").set_index("customer_id")
    assert list(frame.index) == ["b", "a"]  # most valuable first
    a, b = frame.loc["a"], frame.loc["b"]
    assert (a["orders"], a["net_revenue"], a["aov"]) == (3, 60, 20)
    assert a["tenure_days"] == 90 and a["days_since_last_order"] == 0
    assert a["purchase_frequency"] == pytest.approx(3 / (90 / (365.25 / 12)))
    assert a["historical_clv"] == 30
    assert (b["orders"], b["net_revenue"], b["historical_clv"]) == (1, 100, 50)
    # a tenure under one period counts as one period
    assert b["tenure_days"] == 30 and b["purchase_frequency"] == 1.0
    assert len(customer_metrics(store, limit=1)) == 1


def test_business_clv_pools_the_trailing_periods() -> None:
    # the retention example of test_metrics_retention (30-day window):
    # Feb S=2 E=2 new=1, Mar S=2 E=1 new at end 0, Apr S=1 E=1 new 0
    store = store_with(RETENTION_EXAMPLE)
    result = business_clv(
        store,
        "month",
        window_days=30,
        lookback=3,
        margin=0.5,
        discount_rate=0.0,
        as_of="2024-04-30",
    )
    assert result["periods"] == ["2024-02", "2024-03", "2024-04"]
    retention = (1 + 1 + 1) / (2 + 2 + 1)
    assert result["retention_rate"] == pytest.approx(100 * retention)
    assert result["churn_rate"] == pytest.approx(100 * (1 - retention))
    assert result["lifespan"] == pytest.approx(2.5)
    orders, revenue = 5, 20 + 30 + 50 + 60 + 70
    assert result["aov"] == pytest.approx(revenue / orders)
    base = (2 + 2) / 2 + (2 + 1) / 2 + (1 + 1) / 2
    assert result["purchase_frequency"] == pytest.approx(orders / base)
    assert result["clv"] == pytest.approx(0.5 * revenue / orders * orders / base * 2.5)


def test_business_clv_without_measured_churn_says_so() -> None:
    store = store_with([("a", "2024-01-05", 10), ("b", "2024-02-05", 10)])
    result = business_clv(store, as_of="2024-02-29")
    assert result["clv"] is None and "could have lapsed" in result["note"]
    # a buys every month: kept at every month start, no churn at all
    store = store_with([("a", "2024-01-05", 10), ("a", "2024-02-05", 10), ("a", "2024-03-05", 10)])
    result = business_clv(store, window_days=30, as_of="2024-03-31")
    assert result["periods"] == ["2024-02", "2024-03"]
    assert result["clv"] is None and "unbounded" in result["note"]
    result = business_clv(store, "year")
    assert result["clv"] is None and "no complete year" in result["note"]


def test_subscription_clv_by_hand() -> None:
    # four accounts pay 20 on the 5th of each month they are subscribed
    months = {"a": range(1, 7), "b": range(1, 4), "c": range(1, 7), "d": range(1, 2)}
    store = store_with([(acc, f"2024-{m:02d}-05", 20) for acc, ms in months.items() for m in ms])
    frame = subscription_clv(store, margin=0.5, as_of="2024-06-30")
    row = frame.set_index("cohort").loc["2024-01"]
    # active Jan..May 4+3+3+2+2 = 14 at risk, d lost after Jan and b after Mar
    assert row["accounts"] == 4
    assert row["account_periods"] == 16
    assert row["revenue_per_account"] == pytest.approx(20)
    assert row["churned"] == 2
    assert row["churn_rate"] == pytest.approx(100 * 2 / 14)
    assert row["lifespan"] == pytest.approx(7)
    assert row["subscription_clv"] == pytest.approx(0.5 * 20 * 7)
    assert frame["cohort"].iloc[-1] == "all"
    assert frame["subscription_clv"].iloc[-1] == pytest.approx(70)
