"""Segment migration between two dates."""

from __future__ import annotations

import pandas as pd
import pytest

from retain.errors import DataError
from retain.segments import customer_segments, load_rules, segment_migration
from retain.segments.migration import NEW
from segments_helpers import build_store, orders_frame, random_orders


@pytest.fixture(scope="module")
def orders() -> pd.DataFrame:
    return random_orders(1500, seed=21)


def test_matrix_rows_and_columns_add_up(orders: pd.DataFrame) -> None:
    start, end = "2024-01-31", "2024-11-30"
    with build_store(orders) as store:
        result = segment_migration(store, start, end)
        before = customer_segments(store, as_of=start)["segment"].value_counts()
        after = customer_segments(store, as_of=end)["segment"].value_counts()
    names = load_rules().names
    assert list(result.counts.columns) == names
    assert list(result.counts.index) == [*names, NEW]
    row_totals = result.counts.sum(axis=1)
    assert (row_totals.drop(NEW) == before.reindex(names, fill_value=0)).all()
    assert (result.counts.sum(axis=0) == after.reindex(names, fill_value=0)).all()
    first_order = orders.groupby("customer_id")["ordered_at"].min()
    joined_between = (
        (first_order >= pd.Timestamp(start) + pd.Timedelta(days=1))
        & (first_order < pd.Timestamp(end) + pd.Timedelta(days=1))
    ).sum()
    assert row_totals[NEW] == joined_between > 0
    filled = result.percent[row_totals > 0].sum(axis=1)
    assert filled.to_numpy() == pytest.approx(100.0)


def test_moved_down_lists_valuable_customers_who_slipped(orders: pd.DataFrame) -> None:
    with build_store(orders) as store:
        result = segment_migration(store, "2024-01-31", "2024-11-30")
    segments = load_rules().table().set_index("segment")
    moved = result.moved_down
    assert len(moved) > 0
    assert moved["from_segment"].map(segments["valuable"]).all()
    assert (
        moved["to_segment"].map(segments["rank"]) > moved["from_segment"].map(segments["rank"])
    ).all()
    assert moved["net_revenue"].is_monotonic_decreasing
    data = result.to_dict()
    assert data["counts"]["Champions"]["Champions"] == result.counts.loc["Champions", "Champions"]
    assert len(data["moved_down"]) == len(moved)


def test_a_champion_who_stops_buying_moves_down() -> None:
    # "x" buys the most, most recently, every other day until 29 March; the others keep
    # buying after
    rows = [("x", f"2024-03-{d:02d}", 50.0) for d in range(1, 30, 2)]
    for i in range(9):
        rows += [(f"c{i}", f"2024-0{m}-0{1 + i % 9}", 10.0) for m in (1, 2, 4, 5, 6)]
    with build_store(orders_frame(rows)) as store:
        result = segment_migration(store, "2024-03-31", "2024-06-30")
    moved = result.moved_down.set_index("customer_id")
    assert moved.loc["x", "from_segment"] == "Champions"
    assert moved.loc["x", "to_segment"] in ("Can't Lose Them", "At Risk")
    assert moved.loc["x", "days_since_last_order"] == 2 + 30 + 31 + 30  # 29 March to 30 June


def test_dates_in_the_wrong_order() -> None:
    with build_store(orders_frame([("a", "2024-01-01", 1.0), ("b", "2024-05-01", 1.0)])) as store:
        with pytest.raises(DataError, match="must be before"):
            segment_migration(store, "2024-04-01", "2024-02-01")
        with pytest.raises(DataError, match="before the first order"):
            segment_migration(store, "2023-04-01", "2024-02-01")
