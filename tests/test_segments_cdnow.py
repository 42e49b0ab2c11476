"""Segments on real data: the CDNOW sample (2,357 customers, 1997-01 to 1998-06)."""

from __future__ import annotations

from pathlib import Path

import pytest

from retain.datasets import load_cdnow
from retain.segments import load_rules, segment_summary
from retain.store import Store


def test_cdnow_sample_segments(cdnow_sample_db: Path) -> None:
    with Store(cdnow_sample_db, read_only=True) as store:
        summary = segment_summary(store).set_index("segment")
        total = store.scalar("SELECT sum(net_revenue) FROM orders")
    assert list(summary.index) == load_rules().names
    assert summary["customers"].sum() == 2357
    assert summary["net_revenue"].sum() == pytest.approx(total)
    assert summary.attrs["as_of"] == "1998-06-30"

    # Everyone first bought in the first 12 weeks of 1997; when 40% or more of the
    # customers ordered again later, no one-order customer is among the most recent 40%
    # (recency score 4 or 5), so nobody is "New" or "Promising" at the end of the data.
    transactions = load_cdnow(sample=True)
    last = transactions.groupby("customer_id")["ordered_at"].max()
    assert (last > "1997-03-31").mean() >= 0.4
    assert summary.loc["New Customers", "customers"] == 0
    assert summary.loc["Promising", "customers"] == 0
    # the best customers still buying carry the largest share of the revenue, and the
    # best who stopped are among those to win back
    assert summary["share_of_revenue"].idxmax() == "Champions"
    assert summary.loc[["Can't Lose Them", "At Risk"], "customers"].sum() > 0


def test_boundaries_of_a_full_scoring_give_every_customer_the_same_scores(
    cdnow_sample_db: Path,
) -> None:
    from retain.segments import segment_scores

    with Store(cdnow_sample_db, read_only=True) as store:
        full = segment_scores(store)
        boundaries = full.attrs["boundaries"]
        one_by_one = segment_scores(
            store, customers=list(full.index), boundaries=boundaries, as_of=boundaries.as_of
        )
        few = segment_scores(
            store, customers=["1012", "16217", "nobody"], boundaries=boundaries, as_of="1998-06-30"
        )
        with pytest.raises(ValueError, match="boundaries"):
            segment_scores(store, customers=["1012"])
    assert boundaries.customers == 2357 and boundaries.scheme == "quintiles"
    assert len(boundaries.recency) == 4
    # recency bounds fall (fewer days is better); the others rise
    assert list(boundaries.recency) == sorted(boundaries.recency, reverse=True)
    assert list(boundaries.monetary) == sorted(boundaries.monetary)
    columns = ["r_score", "f_score", "m_score", "segment", "churn_risk", "churn_reason"]
    assert one_by_one[columns].equals(full[columns])
    assert list(few.index) == ["1012", "16217"]
    assert few[columns].equals(full.loc[["1012", "16217"], columns])
