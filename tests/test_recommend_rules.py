"""Association rules and bundles on hand-checked baskets, and counts against brute force."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recommend_helpers import HAND_NAMES, frames, hand_store, load
from retain.errors import DataError, StoreError
from retain.recommend import association_rules, bundles, load_baskets, name_stem
from retain.recommend.baskets import group_pairs, product_families
from retain.recommend.rules import count_itemsets, min_basket_count
from retain.store import Store


@pytest.fixture(scope="module")
def hand():
    with hand_store() as store:
        yield store


def rule(frame: pd.DataFrame, antecedent: tuple[str, ...], consequent: str) -> pd.Series:
    hit = frame[(frame["antecedent"] == antecedent) & (frame["consequent"] == consequent)]
    assert len(hit) == 1, f"{antecedent} -> {consequent} not found once"
    return hit.iloc[0]


def test_pair_rules_match_hand_counts(hand: Store) -> None:
    rules = association_rules(hand, min_support=0, min_count=1)
    assert rules.attrs["baskets"] == 10
    a_b = rule(rules, ("A",), "B")  # A+B in 4 of 10 baskets, A in 6, B in 5
    assert a_b["count"] == 4
    assert a_b["support"] == pytest.approx(0.4)
    assert a_b["confidence"] == pytest.approx(4 / 6)
    assert a_b["lift"] == pytest.approx((4 / 6) / 0.5)
    assert a_b["added_value"] == pytest.approx(4 / 6 - 0.5)
    b_a = rule(rules, ("B",), "A")
    assert b_a["confidence"] == pytest.approx(0.8)
    assert b_a["lift"] == pytest.approx(0.8 / 0.6)
    c_b = rule(rules, ("C",), "B")
    assert c_b["confidence"] == pytest.approx(0.75)
    assert c_b["lift"] == pytest.approx(1.5)
    d_e = rule(rules, ("D",), "E")
    assert d_e["lift"] == pytest.approx(2.5)
    assert d_e["antecedent_names"] == ("Yoga mat",)
    assert d_e["consequent_name"] == "Foam roller"


def test_triple_rules_match_hand_counts(hand: Store) -> None:
    rules = association_rules(hand, min_support=0, min_count=1)
    ab_c = rule(rules, ("A", "B"), "C")  # A+B+C in 2, A+B in 4, C in 4 of 10
    assert ab_c["size"] == 3
    assert ab_c["count"] == 2
    assert ab_c["confidence"] == pytest.approx(0.5)
    assert ab_c["lift"] == pytest.approx(0.5 / 0.4)
    assert rule(rules, ("A", "C"), "B")["confidence"] == pytest.approx(2 / 3)
    assert rule(rules, ("B", "C"), "A")["lift"] == pytest.approx((2 / 3) / 0.6)
    # 7 pairs in both directions would be 2 x 4 = 8 rules; plus 3 rules of the triple
    assert len(rules) == 8 + 3
    assert len(association_rules(hand, min_support=0, min_count=1, max_size=2)) == 8


def test_thresholds_filter_rules(hand: Store) -> None:
    # D+E is in one basket only: gone at min_count 2; the triple (2 baskets) stays
    rules = association_rules(hand, min_support=0, min_count=2)
    assert not ((rules["consequent"] == "E") | (rules["consequent"] == "D")).any()
    assert (rules["size"] == 3).sum() == 3
    # min_support 0.35 of 10 baskets needs 4: only A+B remains
    rules = association_rules(hand, min_support=0.35, min_count=1)
    assert set(zip(rules["antecedent"], rules["consequent"], strict=True)) == {
        (("A",), "B"),
        (("B",), "A"),
    }
    # lift 1.3 keeps A<->B (1.33), B<->C (1.5), D<->E (2.5) and {A, C} -> B (1.33)
    rules = association_rules(hand, min_support=0, min_count=1, min_lift=1.3)
    assert (rules["lift"] >= 1.3).all()
    assert len(rules) == 7
    assert rules["lift"].is_monotonic_decreasing
    rules = association_rules(hand, min_support=0, min_count=1, min_confidence=0.75)
    assert (rules["confidence"] >= 0.75).all() and len(rules) == 3  # B->A, C->A, C->B


def test_bundles_price_and_affinity(hand: Store) -> None:
    frame = bundles(hand, min_support=0, min_count=1, min_lift=1.2, discount=0.2)
    sets = {tuple(sorted(s)) for s in frame["skus"]}
    # pairs with lift >= 1.2: A+B 1.33, A+C 1.25, B+C 1.5, D+E 2.5; the triple's
    # weakest rule {B, C} -> A has lift 1.11, so it is not a bundle
    assert sets == {("A", "B"), ("A", "C"), ("B", "C"), ("D", "E")}
    ab = frame[[set(s) == {"A", "B"} for s in frame["skus"]]].iloc[0]
    assert ab["total_price"] == pytest.approx(400.0)
    assert ab["bundle_price"] == pytest.approx(320.0)
    assert ab["saving"] == pytest.approx(80.0)
    assert frame["count"].is_monotonic_decreasing
    with_triple = bundles(hand, min_support=0, min_count=1, min_lift=1.1)
    triple = with_triple[with_triple["size"] == 3].iloc[0]
    assert set(triple["skus"]) == {"A", "B", "C"}
    assert triple["lift"] == pytest.approx((2 / 3) / 0.6)
    assert triple["total_price"] == pytest.approx(600.0)
    only_d = bundles(hand, min_support=0, min_count=1, min_lift=1.2, sku="D")
    assert [set(s) for s in only_d["skus"]] == [{"D", "E"}]


def test_bundles_leave_out_near_duplicates() -> None:
    names = {
        "W1": ("Wok, carbon steel", "Cookware", 60.0),
        "W2": ("Wok, cast iron", "Cookware", 80.0),
        "S": ("Spatula", "Utensils", 8.0),
        "X": ("Apron", "Textiles", 20.0),
    }
    orders = [(f"o{i}", f"c{i}", "2024-01-01", "W1 W2 S") for i in range(6)]
    orders += [(f"p{i}", f"d{i}", "2024-01-02", "X") for i in range(6)]
    with load(Store(":memory:"), *frames(orders, names)) as store:
        sets = {frozenset(s) for s in bundles(store, min_support=0, min_count=1)["skus"]}
    assert frozenset({"W1", "S"}) in sets and frozenset({"W2", "S"}) in sets
    assert not any({"W1", "W2"} <= s for s in sets)


def test_name_stem_and_families() -> None:
    assert name_stem("Wok, carbon steel") == "wok"
    assert name_stem("Chef's knife, 20 cm") == "chef's knife"
    assert name_stem("Monitor - 27 inch") == "monitor"
    assert name_stem("Lamp (LED)") == "lamp"
    assert name_stem("T-shirt") == "t-shirt"
    assert name_stem(None) is None and name_stem("  ") is None
    items = pd.DataFrame(
        {
            "sku": ["a", "b", "c", "d", "e"],
            "name": ["Wok, carbon steel", "Wok, cast iron", "Wok, cast iron", None, None],
            "category": ["Cookware", "Cookware", "Gifts", "Cookware", "Cookware"],
        }
    )
    family = product_families(items)
    assert family[0] == family[1]  # same stem, same category
    assert family[1] != family[2]  # same stem, another category
    assert family[3] != family[4]  # no name: each its own family


def test_bad_thresholds_are_refused(hand: Store) -> None:
    with pytest.raises(DataError, match="min_support"):
        association_rules(hand, min_support=1.5)
    with pytest.raises(DataError, match="min_count"):
        association_rules(hand, min_count=0)
    with pytest.raises(DataError, match="2 or 3"):
        association_rules(hand, max_size=4)
    with pytest.raises(DataError, match="thresholds"):
        association_rules(hand, min_confidence=2)
    with pytest.raises(DataError, match="discount"):
        bundles(hand, discount=1.0)
    with pytest.raises(DataError, match="unknown SKU"):
        bundles(hand, sku="nope")
    assert min_basket_count(3_000_000, 1e-5, 5) == 30
    assert min_basket_count(100, 1e-5, 5) == 5


def test_no_order_lines_is_a_clear_error() -> None:
    orders, _ = frames([("o1", "c1", "2024-01-01", "A")], HAND_NAMES)
    with load(Store(":memory:"), orders, None) as store, pytest.raises(StoreError) as err:
        association_rules(store)
    assert "no order lines" in str(err.value) and "--format lines" in str(err.value)


def test_lines_of_unknown_orders_are_left_out() -> None:
    orders, lines = frames(HAND_ORDERS_SMALL, HAND_NAMES)
    lines = pd.concat([lines, lines.assign(order_id="ghost")], ignore_index=True)
    with load(Store(":memory:"), orders, lines) as store:
        baskets = load_baskets(store)
    assert baskets.n_baskets == 2
    assert baskets.line_item.size == 3


HAND_ORDERS_SMALL = [("o1", "c1", "2024-01-01", "A B"), ("o2", "c2", "2024-01-02", "A")]


def test_group_pairs_lists_every_pair_within_groups() -> None:
    starts = np.array([0, 3, 3, 7])
    sizes = np.array([3, 0, 4, 1])
    left, right = group_pairs(starts, sizes)
    expected = [(0, 1), (0, 2), (1, 2), *itertools.combinations(range(3, 7), 2)]
    assert sorted(zip(left.tolist(), right.tolist(), strict=True)) == sorted(expected)


baskets_strategy = st.lists(
    st.sets(st.sampled_from("ABCDEFG"), min_size=1, max_size=5), min_size=1, max_size=25
)


@settings(max_examples=40, deadline=None)
@given(baskets_strategy, st.integers(min_value=1, max_value=3))
def test_counts_match_brute_force(baskets: list[set[str]], min_count: int) -> None:
    orders = [(f"o{i}", f"c{i}", "2024-01-01", " ".join(sorted(b))) for i, b in enumerate(baskets)]
    names = {s: (f"Item {s}", "Things", 1.0) for s in "ABCDEFG"}
    with load(Store(":memory:"), *frames(orders, names)) as store:
        coded = load_baskets(store)
    sets = count_itemsets(coded, min_count)
    sku = coded.items["sku"].tolist()
    pairs = Counter(p for b in baskets for p in itertools.combinations(sorted(b), 2))
    triples = Counter(t for b in baskets for t in itertools.combinations(sorted(b), 3))
    got_pairs = {
        (sku[a], sku[b]): c for (a, b), c in zip(sets.pairs.tolist(), sets.pair_count, strict=True)
    }
    got_triples = {
        tuple(sku[i] for i in t): c
        for t, c in zip(sets.triples.tolist(), sets.triple_count, strict=True)
    }
    assert got_pairs == {p: c for p, c in pairs.items() if c >= min_count}
    assert got_triples == {t: c for t, c in triples.items() if c >= min_count}
    rules = association_rules(coded, min_support=0, min_count=min_count)
    assert ((rules["confidence"] > 0) & (rules["confidence"] <= 1)).all()
    support_of = {s: sum(s in b for b in baskets) / len(baskets) for s in "ABCDEFG"}
    base = rules["consequent"].map(support_of)
    assert np.allclose(rules["lift"], rules["confidence"] / base)
