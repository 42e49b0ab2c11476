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
    # the best customers carry most of the revenue
    assert summary.loc["Champions", "share_of_revenue"] > 0.5
