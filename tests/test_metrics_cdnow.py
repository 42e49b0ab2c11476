"""The metrics on the real CDNOW master data (23,570 customers, January 1997 to June 1998).

Source: Fader, Hardie & Lee (2005); the data description in /work/shared/data/SOURCES.md:
every customer made their first purchase in the first 12 weeks of 1997, and the data
run to 30 June 1998. Expected values here come from that description or from pandas
on the raw file, never from the functions under test.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from metrics_helpers import insert_orders
from retain.datasets import load_cdnow
from retain.metrics import cohorts, overview, period_metrics, retention
from retain.store import Store


@pytest.fixture(scope="module")
def raw() -> pd.DataFrame:
    frame = load_cdnow()
    return frame.assign(order_id=[f"o{i}" for i in range(len(frame))])


@pytest.fixture(scope="module")
def store(raw: pd.DataFrame) -> Store:
    store = Store(":memory:")
    insert_orders(store, raw[["order_id", "customer_id", "ordered_at", "net_revenue"]])
    return store


def test_cohorts_are_the_first_three_months_of_1997_and_all_active_at_age_zero(
    store: Store, raw: pd.DataFrame
) -> None:
    frame = cohorts(store, "month")
    first = frame[frame["age"] == 0]
    assert first["cohort"].tolist() == ["1997-01", "1997-02", "1997-03"]
    assert (first["active_share"] == 100).all()
    assert first["cohort_customers"].sum() == 23_570
    # every cohort is followed to June 1998, and all of those months are complete
    last_age = frame.groupby("cohort")["period"].last()
    assert set(last_age) == {"1998-06"} and frame["complete"].all()
    assert frame["active_share"].between(0, 100).all()
    # the cohort CLV curve never falls (net revenues are positive) and adds up
    assert (
        frame.groupby("cohort")["cumulative_net_revenue_per_customer"].diff().dropna() >= 0
    ).all()
    ends = frame.groupby("cohort").last()
    assert (ends["cumulative_net_revenue_per_customer"] * ends["cohort_customers"]).sum() == (
        pytest.approx(raw["net_revenue"].sum())
    )


def test_everyone_stays_a_customer_through_1997_with_a_365_day_window(store: Store) -> None:
    """First purchases end by late March 1997, so with a 365-day window all 23,570
    customers are customers at every month start from April 1997 to January 1998.
    Nobody can lapse before 1 January 1998: no retention rate is shown until then."""
    frame = retention(store, "month", window_days=365).set_index("period")
    assert frame.loc["1997-04":"1998-01", "customers_at_start"].eq(23_570).all()
    assert frame.loc["1997-01":"1997-12", "retention_rate"].isna().all()
    assert frame.attrs["measurable_from"] == "1998-01"
    # from 1998 the customers who never came back lapse: retention below 100
    assert (frame.loc["1998-01":"1998-06", "retention_rate"] < 100).all()
    assert frame.loc["1998-01":"1998-06", "retention_rate"].between(50, 100).all()
    assert frame["new_customers"].sum() == 23_570


def test_revenue_and_repeat_rate_match_the_raw_file(store: Store, raw: pd.DataFrame) -> None:
    headline = overview(store)
    per_customer = raw.groupby("customer_id")["net_revenue"].agg(["sum", "size"])
    assert headline["customers"] == 23_570 and headline["orders"] == len(raw)
    assert headline["net_revenue"] == pytest.approx(raw["net_revenue"].sum())
    assert headline["median_historical_clv"] == pytest.approx(per_customer["sum"].median())
    assert headline["repeat_purchase_rate"] == pytest.approx(
        100 * (per_customer["size"] >= 2).mean()
    )
    assert headline["latest_retention_period"] == "1998-06"
    assert headline["retention_periods"][-1] == "1998-06"
    periods = period_metrics(store, "quarter")
    assert periods["net_revenue"].sum() == pytest.approx(raw["net_revenue"].sum())
    # only 1997Q1 has new customers; after it all revenue is from returning customers
    assert periods["new_customers"].tolist() == [23_570, 0, 0, 0, 0, 0]
    assert (periods["returning_revenue_share"].iloc[1:] == 100).all()


def test_the_default_window_follows_the_rhythm_and_pages_agree_on_churn(
    store: Store, raw: pd.DataFrame
) -> None:
    """The activity window is the 90th percentile of the gaps between a customer's order
    days (pandas on the raw file); the overview and the Models page show one churn."""
    from retain.service import data

    days = raw.assign(day=raw["ordered_at"].dt.normalize())[["customer_id", "day"]]
    days = days.drop_duplicates().sort_values(["customer_id", "day"])
    gaps = days.groupby("customer_id")["day"].diff().dropna().dt.days
    expected = int(np.ceil(gaps.quantile(0.9)))
    headline = overview(store)
    assert headline["window_days"] == expected == 200
    assert "90th percentile" in headline["window_rule"]
    # nobody can lapse before 200 days after 1 January 1997: rates from July 1997
    frame = retention(store).set_index("period")
    assert frame.loc[:"1997-06", "retention_rate"].isna().all()
    assert frame.loc["1997-07":, "retention_rate"].notna().all()
    # the overview's churn is the Models page's churn
    overview_page = data.metrics_payload(store)["overview"]
    models_page = data.models_payload(store)["lifespan"]
    assert overview_page["churn_rate"] == pytest.approx(models_page["store_churn_rate"])
    assert overview_page["retention_periods"] == models_page["measured_over"]
    assert models_page["window_days"] == overview_page["window_days"] == 200
    # cohort repeat-purchase retention beside it, from the raw file
    first = raw.groupby("customer_id")["ordered_at"].min().dt.normalize()
    later = days[days["day"] > days["customer_id"].map(first)]
    second = later.groupby("customer_id")["day"].min()
    again = (second - first.reindex(second.index)).dt.days < 365
    assert headline["repeat_retention"] == pytest.approx(100 * again.sum() / len(first))
    assert headline["repeat_retention_cohorts"] == ["1997-01", "1997-03"]


@pytest.mark.parametrize("period, window_days", [("month", None), ("quarter", None), ("month", 60)])
def test_the_overview_page_shares_one_pass_and_agrees_with_each_function(
    store: Store, period: str, window_days: int | None
) -> None:
    """The overview page computes the activity aggregates once for its overview and its
    alerts: each must equal what its own function computes alone."""
    from retain.service import data

    page = data.metrics_payload(store, period=period, window_days=window_days)
    margin = page["margin"]["historical"]
    alone = overview(store, margin=margin, period=period, window_days=window_days)

    def same(got: object, want: object) -> None:  # floats to 1e-9: sums in DuckDB's order
        if isinstance(want, dict):
            assert isinstance(got, dict) and got.keys() == want.keys()
            for key in want:
                same(got[key], want[key])
        elif isinstance(want, list):
            assert isinstance(got, list) and len(got) == len(want)
            for g, w in zip(got, want, strict=True):
                same(g, w)
        elif isinstance(want, float):
            assert got == pytest.approx(want, rel=1e-9, nan_ok=True)
        else:
            assert got == want

    same(page["overview"], data.plain(alone))
    alerts = data.alerts_payload(store, period=period, window_days=window_days)
    assert page["alerts"]["checked"] == alerts["checked"] > 0
    assert [(a["metric"], a["period"]) for a in page["alerts"]["alerts"]] == [
        (a["metric"], a["period"]) for a in alerts["alerts"]
    ]
    assert page["alerts"]["window_days"] == alerts["window_days"] == page["overview"]["window_days"]
    assert page["models_window_days"] == data.models_window_days(store)
