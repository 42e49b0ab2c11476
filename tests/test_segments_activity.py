"""Segments agree with each customer's activity: CDNOW master as of 1998-06-30, fit and scored.

Most CDNOW customers bought in early 1997 and never again, so ranking recency among
customers alone makes "recent" relative. These tests hold the segments, their actions,
the churn risk and the value at stake to what the data say about each customer.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

import retain.datasets
import retain.ingest
import retain.scoring
from retain.segments import load_rules, rfm_scores, segment_summary, winback_list
from retain.store import Store

RECENT = ["Champions", "Loyal Customers", "Potential Loyalists", "New Customers", "Promising"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    path = Path(tmp_path_factory.mktemp("cdnow_master")) / "store.duckdb"
    with Store(path) as db:
        retain.ingest.ingest(
            db, retain.datasets.cdnow_path(sample=False), format="cdnow", as_of="1998-06-30"
        )
        retain.scoring.fit_store(db, unit="W")
        retain.scoring.score_store(db)
        yield db


@pytest.fixture(scope="module")
def scored(store: Store) -> pd.DataFrame:
    return store.query(
        """
        SELECT s.*, date_diff('day', CAST(o.last_order AS DATE), DATE '1998-06-30') AS silent_days
        FROM customer_scores AS s
        JOIN (SELECT customer_id, max(ordered_at) AS last_order FROM orders GROUP BY 1) AS o
        USING (customer_id)
        """
    ).set_index("customer_id")


def test_no_customer_silent_for_a_year_is_in_a_recent_segment(scored: pd.DataFrame) -> None:
    assert len(scored) == 23570
    silent = scored[scored["silent_days"] > 365]
    assert len(silent) > 10_000
    assert not silent["segment"].isin(RECENT).any()
    assert (silent["churn_risk"] == "lost").all()
    loyal = scored[scored["segment"] == "Loyal Customers"]
    assert loyal["silent_days"].max() <= 365
    assert loyal["silent_days"].mean() < 180  # 305 days when recency was only ranked


def test_a_loyal_customer_who_stopped_buying_is_to_be_won_back(
    store: Store, scored: pd.DataFrame
) -> None:
    # 56 orders, one every 2 days, the last 445 days ago; P(alive) about 0
    row = scored.loc["19339"]
    assert row["silent_days"] == 445 and row["p_alive"] < 0.01
    assert row["segment"] == "Can't Lose Them"
    assert row["churn_risk"] == "lost"
    listed = winback_list(store, limit=20).set_index("customer_id")
    assert "upsell" not in listed.loc["19339", "action"].lower()
    assert "reactivate" in listed.loc["19339", "action"].lower()


def test_segment_action_risk_and_reason_agree(store: Store, scored: pd.DataFrame) -> None:
    # the segments whose action assumes an active customer hold no one at risk
    recent = scored[scored["segment"].isin(RECENT)]
    assert recent["churn_risk"].isin(["low", "medium"]).all()
    assert (scored.loc[scored["segment"] == "Champions", "churn_risk"] == "low").all()
    # no "thank them, no discounts" on the win-back list
    listed = winback_list(store)
    assert not listed["action"].str.contains("no discounts").any()
    assert not listed["segment"].isin(RECENT).any()
    days = listed["reason"].str.extract(r"order (\d+) days ago")[0].astype(int)
    assert (days == listed["days_since_last_order"]).all()


def test_the_winback_list_is_ranked_by_a_bounded_value_at_stake(
    store: Store, scored: pd.DataFrame
) -> None:
    listed = winback_list(store)
    assert listed["value_at_stake"].is_monotonic_decreasing
    clv = scored.loc[listed["customer_id"], "clv_if_retained"]
    assert listed["value_at_stake"].sum() <= clv.sum()
    assert (listed["value_at_stake"].to_numpy() <= clv.to_numpy() + 1e-9).all()
    # narrow enough to act on: well under half of the customers
    assert len(listed) < 0.25 * len(scored)
    assert listed.attrs["total"] == len(listed)
    # every customer flagged at risk has something at stake
    flagged = scored[scored["churn_risk"].isin(["high", "lost"])]
    assert (flagged["value_at_stake"] > 0).all()
    assert (scored["value_at_stake"] <= scored["clv_if_retained"] + 1e-9).all()


def test_the_segment_summary_uses_the_same_value_at_stake(
    store: Store, scored: pd.DataFrame
) -> None:
    summary = segment_summary(store).set_index("segment")
    by_segment = scored.groupby("segment")["value_at_stake"].sum()
    for name, value in by_segment.items():
        assert summary.loc[name, "value_at_stake"] == pytest.approx(value)
    assert summary["value_at_stake"].sum() <= scored["clv_if_retained"].sum()
    assert summary.loc[RECENT, "at_risk"].sum() == 0


def test_the_f2_row_is_not_empty(store: Store) -> None:
    scores = rfm_scores(store)
    assert (scores["orders"] == 1).mean() > 0.4
    assert sorted(scores["f_score"].unique()) == [1, 2, 3, 4, 5]
    assert load_rules().unreachable() == []
