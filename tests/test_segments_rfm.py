"""RFM measures and scores: boundaries, ties, the observation date."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retain.errors import DataError, SchemaError
from retain.segments import rfm_scores
from segments_helpers import build_store, orders_frame


def one_order_each(values: list[float]) -> pd.DataFrame:
    """Customer i has one order on 2024-01-01 worth values[i]."""
    return orders_frame((f"c{i}", "2024-01-01", v) for i, v in enumerate(values))


def test_distinct_values_split_into_equal_quintiles() -> None:
    scores = rfm_scores(one_order_each([float(v) for v in range(1, 11)]))
    by_value = scores.sort_values("net_revenue")["m_score"].tolist()
    assert by_value == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]


def test_distinct_values_split_into_equal_quartiles() -> None:
    scores = rfm_scores(one_order_each([float(v) for v in range(1, 9)]), scheme="quartiles")
    assert scores.sort_values("net_revenue")["m_score"].tolist() == [1, 1, 2, 2, 3, 3, 4, 4]


def test_boundary_customer_takes_the_higher_score() -> None:
    # 5 customers: each has exactly k*W/N = W whole, so every one sits on a boundary
    scores = rfm_scores(one_order_each([10.0, 20.0, 30.0, 40.0, 50.0]))
    assert scores.sort_values("net_revenue")["m_score"].tolist() == [1, 2, 3, 4, 5]


def test_ties_share_the_score_of_their_worst_member() -> None:
    # frequencies 1,1,1,1,1,1,2,2,3,4: six customers have one order and share F1; a
    # two-order customer has 6 of 10 strictly worse (share score 1 + floor(5 * 6 / 10) = 4);
    # four values for five levels: the better values keep their share scores 5 and 5 as
    # far as they fit above (3, 4, 5 for two, three and four orders), F2 stays empty
    counts = [1, 1, 1, 1, 1, 1, 2, 2, 3, 4]
    rows = [(f"c{i}", f"2024-01-0{k + 1}", 10.0) for i, n in enumerate(counts) for k in range(n)]
    scores = rfm_scores(orders_frame(rows), as_of="2024-01-10")
    expected = {1: 1, 2: 3, 3: 4, 4: 5}
    assert (scores["f_score"] == scores["orders"].map(expected)).all()


def test_f2_is_not_empty_when_most_customers_bought_once() -> None:
    # 45 of 100 customers bought once, then 2 to 12 orders: the share rule would give
    # two orders F3 (45 of 100 worse) and leave F2 empty
    counts = [1] * 45 + [2 + i % 11 for i in range(55)]
    rows = [(f"c{i}", f"2024-01-{k + 1:02d}", 10.0) for i, n in enumerate(counts) for k in range(n)]
    scores = rfm_scores(orders_frame(rows), as_of="2024-01-31")
    assert sorted(scores["f_score"].unique()) == [1, 2, 3, 4, 5]
    assert (scores.loc[scores["orders"] == 1, "f_score"] == 1).all()
    assert (scores.loc[scores["orders"] == 2, "f_score"] == 2).all()
    assert (scores.loc[scores["orders"] == 12, "f_score"] == 5).all()


def test_scores_do_not_depend_on_row_order() -> None:
    rng = np.random.default_rng(3)
    values = rng.integers(0, 5, 200).astype(float)  # many ties
    orders = one_order_each(list(values))
    first = rfm_scores(orders)
    shuffled = rfm_scores(orders.sample(frac=1.0, random_state=7))
    pd.testing.assert_frame_equal(first, shuffled)


def test_recency_counts_days_to_the_observation_date_and_ignores_later_orders() -> None:
    orders = orders_frame(
        [
            ("a", "2024-03-01 10:00", 10.0),
            ("a", "2024-03-20 23:59", 10.0),
            ("a", "2024-04-01 00:00", 99.0),  # after the observation day
            ("b", "2024-01-01", 5.0),
        ]
    )
    scores = rfm_scores(orders, as_of="2024-03-31")
    assert scores.loc["a", "days_since_last_order"] == 11
    assert scores.loc["a", "orders"] == 2
    assert scores.loc["a", "net_revenue"] == pytest.approx(20.0)
    assert scores.loc["b", "days_since_last_order"] == 90  # 2024 is a leap year
    assert scores.loc["a", "r_score"] > scores.loc["b", "r_score"]
    assert scores.attrs["as_of"] == "2024-03-31"


def test_default_observation_date_is_the_last_order_day() -> None:
    orders = orders_frame([("a", "2024-05-04 18:00", 1.0), ("b", "2024-05-01", 1.0)])
    scores = rfm_scores(orders)
    assert scores.attrs["as_of"] == "2024-05-04"
    assert scores.loc["a", "days_since_last_order"] == 0


def test_typical_gap_counts_distinct_order_days() -> None:
    orders = orders_frame(
        [
            ("a", "2024-01-01 09:00", 1.0),
            ("a", "2024-01-01 17:00", 1.0),  # same day: not a gap
            ("a", "2024-01-31", 1.0),
            ("a", "2024-03-01", 1.0),
            ("b", "2024-02-01", 1.0),
            ("b", "2024-02-01", 1.0),
        ]
    )
    scores = rfm_scores(orders)
    assert scores.loc["a", "typical_gap_days"] == pytest.approx(30.0)
    assert np.isnan(scores.loc["b", "typical_gap_days"])
    assert scores.loc["a", "orders"] == 4


def test_store_and_frame_give_the_same_scores() -> None:
    orders = orders_frame((f"c{i % 7}", f"2024-0{1 + i % 9}-1{i % 10}", i * 1.5) for i in range(60))
    with build_store(orders) as store:
        from_store = rfm_scores(store)
    pd.testing.assert_frame_equal(from_store, rfm_scores(orders))


def test_an_arrow_table_gives_the_same_scores_as_pandas() -> None:
    import pyarrow as pa

    orders = orders_frame((f"c{i % 7}", f"2024-0{1 + i % 9}-1{i % 10}", i * 1.5) for i in range(60))
    from_arrow = rfm_scores(pa.Table.from_pandas(orders, preserve_index=False))
    pd.testing.assert_frame_equal(from_arrow, rfm_scores(orders))


def test_bad_inputs_say_what_is_wrong() -> None:
    orders = one_order_each([1.0, 2.0])
    with pytest.raises(SchemaError, match="net_revenue"):
        rfm_scores(orders.drop(columns="net_revenue"))
    with pytest.raises(SchemaError, match="quintiles or quartiles"):
        rfm_scores(orders, scheme="deciles")
    with pytest.raises(DataError, match="before the first order"):
        rfm_scores(orders, as_of="2020-01-01")
    with pytest.raises(DataError, match="YYYY-MM-DD"):
        rfm_scores(orders, as_of="soon")
    with pytest.raises(DataError, match="no orders"):
        rfm_scores(orders.iloc[0:0])


@settings(max_examples=40, deadline=None)
@given(
    values=st.lists(st.integers(min_value=0, max_value=6), min_size=1, max_size=60),
    scheme=st.sampled_from(["quintiles", "quartiles"]),
)
def test_scores_are_monotone_in_range_and_tie_safe(values: list[int], scheme: str) -> None:
    levels = 5 if scheme == "quintiles" else 4
    scores = rfm_scores(one_order_each([float(v) for v in values]), scheme=scheme)
    assert scores["m_score"].between(1, levels).all()
    by_value = scores.groupby("net_revenue")["m_score"]
    assert (by_value.nunique() == 1).all()  # equal values, equal score
    assert by_value.first().is_monotonic_increasing
    assert scores.loc[scores["net_revenue"].idxmin(), "m_score"] == 1
    # a value's score: its share score (from the share of customers strictly below it),
    # at most one level above the next lower value's score unless the better values
    # would not fit in the levels above
    n = len(values)
    distinct = sorted(set(values))
    expected: dict[float, int] = {}
    step = 0
    for place, v in enumerate(distinct, start=1):
        share = 1 + (levels * sum(x < v for x in values)) // n
        step = min(share, step + 1)
        expected[float(v)] = max(step, min(share, levels - (len(distinct) - place)))
    assert (scores["m_score"] == scores["net_revenue"].map(expected)).all()
