"""Churn risk: levels at their cut points, reasons that match the data they cite, value at stake."""

from __future__ import annotations

import datetime as dt
import re

import numpy as np
import pandas as pd
import pytest

from retain.errors import DataError, SchemaError
from retain.segments import RiskThresholds, churn_risk, customer_segments, segment_scores
from segments_helpers import build_store, orders_frame

AS_OF = dt.date(2024, 7, 19)
ORDER_DAYS = {
    "a": ["2024-01-01", "2024-01-31", "2024-03-01"],  # every 30 days
    "b": ["2024-06-01"],  # one order
    "c": ["2024-05-01", "2024-05-11", "2024-05-11", "2024-05-21"],  # two orders one day
    "d": ["2024-02-01", "2024-02-21", "2024-03-12"],  # every 20 days
    "e": ["2024-07-19"],  # one order, on the observation day
}
P_ALIVE = {"a": 0.12, "b": 0.5, "c": 0.95, "d": 0.04, "e": 0.999}
CLV_12M = {"a": 24.0, "b": 10.0, "c": 95.0, "d": 2.0, "e": 50.0}


@pytest.fixture(scope="module")
def customers() -> pd.DataFrame:
    orders = orders_frame((c, day, 25.0) for c, days in ORDER_DAYS.items() for day in days)
    scores = pd.DataFrame({"p_alive": P_ALIVE, "clv_12m": CLV_12M}).rename_axis("customer_id")
    with build_store(orders) as store:
        return customer_segments(store, as_of=AS_OF, scores=scores)


def days_between(a: str, b: dt.date) -> int:
    return (b - dt.date.fromisoformat(a)).days


def test_the_reason_reads_as_in_the_issue(customers: pd.DataFrame) -> None:
    assert customers.loc["a", "churn_reason"] == (
        "last order 140 days ago; usually orders every 30 days: 4.7 gaps without an order; "
        "12% likely still active"
    )


def test_a_late_customer_the_model_calls_active_is_told_how_late(
    customers: pd.DataFrame,
) -> None:
    """Risk raised by lateness, not by P(alive): the reason says how many usual gaps
    have passed, so it does not read as a contradiction."""
    late = customers[(customers["overdue_ratio"] >= 1.5)]
    on_time = customers[(customers["overdue_ratio"] < 1.5)]
    assert len(late) and all("gaps without an order" in r for r in late["churn_reason"])
    assert not any("gaps without an order" in str(r) for r in on_time["churn_reason"])


def test_reasons_cite_the_numbers_of_the_data(customers: pd.DataFrame) -> None:
    repeat_gaps = {}
    for customer, days in ORDER_DAYS.items():
        distinct = sorted(set(days))
        if len(distinct) > 1:
            span = days_between(distinct[0], dt.date.fromisoformat(distinct[-1]))
            repeat_gaps[customer] = span / (len(distinct) - 1)
    population_gap = float(np.median(list(repeat_gaps.values())))
    assert population_gap == 20.0

    for customer, days in ORDER_DAYS.items():
        reason = customers.loc[customer, "churn_reason"]
        since = days_between(max(days), AS_OF)
        if since == 0:
            assert re.match(r"^only order today; ", reason), reason
        else:
            found = re.search(r"(last|only) order (\d+) days? ago", reason)
            assert found and int(found.group(2)) == since, reason
            assert (found.group(1) == "only") == (customer not in repeat_gaps)
        gap = re.search(r"orders? every (\d+) days", reason)
        assert gap, reason
        expected_gap = repeat_gaps.get(customer, population_gap)
        assert int(gap.group(1)) == round(expected_gap)
        if customer not in repeat_gaps:
            assert "repeat customers usually order every" in reason
        share = re.search(r"(over |under )?(\d+)% likely still active$", reason)
        assert share, reason
        if share.group(1) == "over ":
            assert P_ALIVE[customer] >= 0.995
        else:
            assert int(share.group(2)) == round(100 * P_ALIVE[customer])


def test_risk_is_the_worse_of_p_alive_and_overdue(customers: pd.DataFrame) -> None:
    # a: P(alive) 0.12 -> high, 140/30 = 4.7 gaps -> high
    # b: 0.5 -> medium, 48/20 = 2.4 gaps -> medium
    # c: 0.95 -> low, but 59/10 = 5.9 gaps overdue -> high
    # d: 0.04 -> lost
    # e: 0.999, ordered today -> low
    expected = {"a": "high", "b": "medium", "c": "high", "d": "lost", "e": "low"}
    assert customers["churn_risk"].to_dict() == expected


def test_value_at_stake_is_clv_if_retained_times_chance_of_loss(customers: pd.DataFrame) -> None:
    # c: the model says 95% alive, but 59 days after an order every 10 days is 5.9 gaps
    # (high risk): taken as at most 30% alive, like any customer at high risk
    used = {**P_ALIVE, "c": 0.30}
    for customer, p in P_ALIVE.items():
        clv_if_retained = CLV_12M[customer] / p
        assert customers.loc[customer, "clv_if_retained"] == pytest.approx(clv_if_retained)
        assert customers.loc[customer, "value_at_stake"] == pytest.approx(
            clv_if_retained * (1 - used[customer])
        )
    assert customers.attrs["model"] == "scores"


def test_a_customer_flagged_at_risk_has_something_at_stake() -> None:
    # a model that gives one-day buyers P(alive) 1 (BG/NBD): overdue by 3, 6 and 9 gaps
    result = churn_risk(
        frame(days_since_last_order=[30, 300, 600, 900], p_alive=[1.0], clv_if_retained=[40.0])
    )
    assert result["risk"].tolist() == ["low", "high", "lost", "lost"]
    assert result["value_at_stake"].tolist() == pytest.approx([0.0, 40 * 0.7, 40 * 0.9, 40 * 0.9])
    flagged = result["risk"].isin(["high", "lost"])
    assert (result.loc[flagged, "value_at_stake"] > 0).all()


def test_value_at_stake_lies_between_0_and_the_clv_if_retained() -> None:
    p = [0.0, 0.05, 0.2, 0.5, 0.9, 1.0]
    result = churn_risk(frame(p_alive=p, days_since_last_order=[10], clv_if_retained=[80.0]))
    assert result["value_at_stake"].between(0, 80).all()
    assert result["value_at_stake"].tolist() == pytest.approx([80 * (1 - v) for v in p])
    negative = churn_risk(frame(clv_if_retained=[-5.0], p_alive=[0.2]))
    assert negative["value_at_stake"].tolist() == [0.0]


def test_silent_for_over_a_year_is_lost_whatever_the_rhythm() -> None:
    # orders every 300 days: 366 days is 1.2 gaps, and the model says 70% alive
    data = frame(days_since_last_order=[365, 366], typical_gap_days=[300.0], p_alive=[0.7])
    assert churn_risk(data)["risk"].tolist() == ["low", "lost"]
    no_model = frame(days_since_last_order=[400], typical_gap_days=[np.nan], p_alive=[np.nan])
    assert churn_risk(no_model)["risk"].tolist() == ["lost"]
    longer = RiskThresholds(lapsed_days=500)
    assert churn_risk(data, thresholds=longer)["risk"].tolist() == ["low", "low"]
    with pytest.raises(DataError, match="silence"):
        churn_risk(data, thresholds=RiskThresholds(lapsed_days=0))


def test_segment_scores_has_the_columns_for_customer_scores(customers: pd.DataFrame) -> None:
    orders = orders_frame((c, day, 25.0) for c, days in ORDER_DAYS.items() for day in days)
    with build_store(orders) as store:
        store.con.execute(
            "CREATE TABLE customer_scores (customer_id VARCHAR, p_alive DOUBLE, clv_12m DOUBLE)"
        )
        store.con.executemany(
            "INSERT INTO customer_scores VALUES (?, ?, ?)",
            [[c, P_ALIVE[c], CLV_12M[c]] for c in P_ALIVE],
        )
        result = segment_scores(store, as_of=AS_OF)
    assert list(result.columns) == [
        "segment", "r_score", "f_score", "m_score", "rfm",
        "churn_risk", "churn_reason", "value_at_stake",
    ]  # fmt: skip
    assert result.attrs["model"] == "customer_scores"
    pd.testing.assert_series_equal(result["churn_reason"], customers["churn_reason"])
    pd.testing.assert_series_equal(result["value_at_stake"], customers["value_at_stake"])


def test_without_model_scores_risk_rests_on_overdue_alone() -> None:
    orders = orders_frame((c, day, 25.0) for c, days in ORDER_DAYS.items() for day in days)
    with build_store(orders) as store:
        result = customer_segments(store, as_of=AS_OF)
    assert result.attrs["model"] == "none"
    assert result["value_at_stake"].isna().all()
    assert not result["churn_reason"].str.contains("likely").any()
    # overdue: a 4.7 -> high, b 2.4 -> medium, c 5.9 -> high, d 129/20 = 6.45 -> lost, e 0 -> low
    expected = {"a": "high", "b": "medium", "c": "high", "d": "lost", "e": "low"}
    assert result["churn_risk"].to_dict() == expected


def frame(**columns: list) -> pd.DataFrame:
    base = {"days_since_last_order": [10], "typical_gap_days": [100.0], "p_alive": [0.9],
            "clv_if_retained": [1.0]}  # fmt: skip
    base.update(columns)
    size = max(len(v) for v in base.values())
    return pd.DataFrame({k: v * size if len(v) == 1 else v for k, v in base.items()})


def test_p_alive_cut_points() -> None:
    p = [0.6, 0.5999, 0.3, 0.2999, 0.1, 0.0999, 0.0]
    result = churn_risk(frame(p_alive=p))
    assert result["risk"].tolist() == ["low", "medium", "medium", "high", "high", "lost", "lost"]


def test_overdue_cut_points() -> None:
    days = [74, 75, 149, 150, 299, 300]  # gap 50 days
    result = churn_risk(
        frame(days_since_last_order=days, typical_gap_days=[50.0], p_alive=[np.nan])
    )
    assert result["risk"].tolist() == ["low", "medium", "medium", "high", "high", "lost"]
    assert result["overdue_ratio"].tolist() == pytest.approx([d / 50 for d in days])


def test_custom_thresholds() -> None:
    strict = RiskThresholds(p_alive_medium=0.95)
    assert churn_risk(frame(), thresholds=strict)["risk"].tolist() == ["medium"]
    with pytest.raises(DataError, match="cut points"):
        churn_risk(frame(), thresholds=RiskThresholds(p_alive_lost=0.5, p_alive_high=0.3))


def test_one_day_buyers_are_measured_against_the_population_gap() -> None:
    data = frame(
        days_since_last_order=[10, 10, 10, 45],
        typical_gap_days=[10.0, 20.0, 30.0, np.nan],
        p_alive=[np.nan],
    )
    result = churn_risk(data)
    assert result.loc[3, "overdue_ratio"] == pytest.approx(45 / 20)
    assert (
        result.loc[3, "reason"]
        == "only order 45 days ago; repeat customers usually order every 20 days: "
        "2.2 gaps without an order"
    )
    given = churn_risk(data, population_gap_days=5.0)
    assert given.loc[3, "risk"] == "lost"  # 45 / 5 = 9 gaps


def test_no_signal_leaves_risk_unknown() -> None:
    result = churn_risk(frame(typical_gap_days=[np.nan], p_alive=[np.nan]))
    assert result["risk"].isna().all()
    assert result["reason"].tolist() == ["only order 10 days ago"]


def test_percentages_near_the_ends() -> None:
    result = churn_risk(frame(p_alive=[0.004, 0.996, 1.0, 0.0, 0.5]))
    assert [r.split("; ")[-1] for r in result["reason"]] == [
        "under 1% likely still active",
        "over 99% likely still active",
        "100% likely still active",
        "0% likely still active",
        "50% likely still active",
    ]


def test_bad_risk_inputs() -> None:
    with pytest.raises(DataError, match="probability"):
        churn_risk(frame(p_alive=[1.5]))
    with pytest.raises(DataError, match="days since the last order"):
        churn_risk(frame(days_since_last_order=[-1]))
    with pytest.raises(SchemaError, match="p_alive"):
        churn_risk(frame().drop(columns="p_alive"))


def test_bad_scores_frame() -> None:
    orders = orders_frame([("a", "2024-01-01", 1.0)])
    with pytest.raises(SchemaError, match="p_alive and clv_12m"):
        customer_segments(orders, scores=pd.DataFrame({"p_alive": [0.5]}, index=["a"]))
