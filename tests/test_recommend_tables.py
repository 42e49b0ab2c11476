"""The in-memory tables: also bought, bought later, upsell, carts, save and load."""

from __future__ import annotations

import numpy as np
import pytest

from recommend_helpers import hand_store, load, shop_store
from retain.errors import DataError, StoreError
from retain.recommend import BuildOptions, Recommender, build, load_or_build
from retain.store import Store

EXACT = BuildOptions(shrinkage=0.0, min_count=1, min_repeat_buyers=1)


@pytest.fixture(scope="module")
def hand():
    with hand_store() as store:
        yield store


@pytest.fixture(scope="module")
def exact(hand: Store) -> Recommender:
    """Tables without shrinkage: scores are plain added values."""
    return build(hand, options=EXACT)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory):
    with shop_store(tmp_path_factory.mktemp("shop") / "shop.duckdb") as store:
        yield store


@pytest.fixture(scope="module")
def shop_rec(shop: Store) -> Recommender:
    return build(shop, save=True)


def test_also_bought_scores_are_added_values(exact: Recommender) -> None:
    frame = exact.also_bought("A")
    # A in 6 of 10 baskets: B with it in 4 (B in 5 of 10), C in 3 (C in 4 of 10)
    assert frame["sku"].tolist() == ["B", "C"]
    assert frame["score"].tolist() == pytest.approx([4 / 6 - 0.5, 3 / 6 - 0.4])
    assert frame["confidence"].tolist() == pytest.approx([4 / 6, 0.5])
    assert frame["count"].tolist() == [4, 3]
    assert frame["reason"][0] == "bought together with Desk, oak by 67% of its buyers"
    # E goes with D only (lift 2.5); A, B and C never with D
    assert exact.also_bought("D")["sku"].tolist() == ["E"]


def test_shrinkage_pulls_scores_towards_zero(hand: Store) -> None:
    rec = build(hand, options=BuildOptions(shrinkage=20.0, min_count=1))
    frame = rec.also_bought("A")
    assert frame["score"].tolist() == pytest.approx([(4 - 6 * 0.5) / 26, (3 - 6 * 0.4) / 26])
    assert frame["confidence"].tolist() == pytest.approx([4 / 6, 0.5])


def test_cart_scores_add_up_over_cart_items(exact: Recommender) -> None:
    rows = exact.recommend_for_cart(["A"], k=3)
    assert [r["sku"] for r in rows] == ["B", "C", "D"]
    # share of orders plus added value: the confidence for one cart item
    assert [r["score"] for r in rows] == pytest.approx([4 / 6, 0.5, 0.2], abs=1e-6)
    assert [r["kind"] for r in rows] == ["bought_together", "bought_together", "best_seller"]
    assert rows[2]["reason"] == "best seller: in 20% of all orders"
    both = exact.recommend_for_cart(["A", "B"], k=1)[0]
    # C: 0.4 + (0.5 - 0.4) from A + (0.6 - 0.4) from B; B's is the larger reason
    assert both["sku"] == "C"
    assert both["score"] == pytest.approx(0.7, abs=1e-6)
    assert both["reason"] == "bought together with Office chair by 60% of its buyers"
    assert all(r["sku"] not in {"A", "B"} for r in exact.recommend_for_cart(["A", "B"], k=10))


def test_cart_edge_cases(exact: Recommender) -> None:
    unknown = exact.recommend_for_cart(["nope"], k=2)
    assert [r["kind"] for r in unknown] == ["best_seller", "best_seller"]
    assert [r["sku"] for r in unknown] == ["A", "B"]  # most orders first
    assert exact.recommend_for_cart([], k=1)[0]["sku"] == "A"
    assert len(exact.recommend_for_cart(["A"], k=50)) == 4  # every other product
    assert exact.known(["A", "x", "E"]) == ([0, 4], ["x"])
    with pytest.raises(DataError, match="k is how many"):
        exact.recommend_for_cart(["A"], k=0)
    with pytest.raises(DataError, match="unknown SKU"):
        exact.also_bought("nope")


def test_a_sku_twice_in_the_cart_counts_once(exact: Recommender) -> None:
    # a cart is a set of products: listing A twice (two of it) is no more evidence for B
    assert exact.recommend_for_cart(["A", "A"], k=3) == exact.recommend_for_cart(["A"], k=3)
    assert exact.recommend_for_cart(["A", "B", "A"], k=2) == exact.recommend_for_cart(
        ["A", "B"], k=2
    )


def test_bought_later_and_repeat_purchases(exact: Recommender) -> None:
    items = exact.items.set_index("sku")
    # returning customers: c1 (o1 then o7) and c2 (o2 then o8)
    assert exact.n_returning == 2
    assert items.loc[["A", "B", "C", "D", "E"], "returning_buyers"].tolist() == [2, 2, 1, 0, 0]
    assert items.loc[["A", "B", "C", "D", "E"], "later_buyers"].tolist() == [1, 1, 0, 1, 1]
    assert items.loc["A", "repeat_share"] == pytest.approx(0.5)  # c1 bought A again, c2 not
    # A's returning buyers c1 and c2 later bought B (c1), D and E (c2): one of two
    # each, just the base rate (1 of the 2 returning customers): no added value
    assert exact.bought_later("A").empty
    # C's one returning buyer c1 later bought A and B, each with base rate 1/2
    later = exact.bought_later("C")
    assert sorted(later["sku"]) == ["A", "B"]
    assert later["score"].tolist() == pytest.approx([0.5, 0.5])
    assert later["confidence"].tolist() == pytest.approx([1.0, 1.0])
    assert later["reason"][0].startswith("bought later by 100% of the customers who bought Monitor")


def test_upsell_from_the_shop(shop_rec: Recommender) -> None:
    # planted: basic chair buyers upgrade to the ergonomic one in their third order
    frame = shop_rec.upsell("CHAIR-BASIC")
    assert frame["sku"].iloc[0] == "CHAIR-ERGO"
    assert frame["price_increase"].iloc[0] > 0
    assert (frame["unit_price"] > 89.0 * 0.9).all()
    assert "came back bought it later" in frame["reason"].iloc[0]
    assert shop_rec.upsell("KNIFE-CHEF")["sku"].iloc[0] == "KNIFE-CHEF-PRO"
    # never cheaper, never another category
    items = shop_rec.items.set_index("sku")
    for sku in ("DESK-OAK", "HOSE-25", "DUMBBELL-5"):
        up = shop_rec.upsell(sku)
        assert (items.loc[up["sku"], "category"] == items.loc[sku, "category"]).all()
        assert (items.loc[up["sku"], "unit_price"] > items.loc[sku, "unit_price"]).all()


def test_shop_affinities_are_found(shop_rec: Recommender) -> None:
    assert shop_rec.also_bought("DESK-OAK", 1)["sku"].iloc[0] == "CHAIR-BASIC"
    later = set(shop_rec.bought_later("DESK-OAK", 4)["sku"])
    assert {"MONITOR-27", "MONITOR-ARM"} <= later
    # the two woks are one family: never suggested for each other
    assert "WOK-CI" not in set(shop_rec.also_bought("WOK-CS", 50)["sku"])
    assert "WOK-CI" not in {r["sku"] for r in shop_rec.recommend_for_cart(["WOK-CS"], 50)}
    types = shop_rec.items.set_index("sku")["product_type"]
    assert types[["BEANS-HOUSE", "DIAPERS-3", "PLANT-FOOD"]].eq("consumable").all()
    assert types[["DESK-OAK", "STROLLER", "ESPRESSO-BASIC"]].eq("durable").all()
    days = shop_rec.items.set_index("sku").loc["BEANS-HOUSE", "repurchase_days"]
    assert 25 < days < 60  # orders come about every 40 days
    bundle_sets = [set(s) for s in shop_rec.bundles(50)["skus"]]
    assert {"DESK-OAK", "CHAIR-BASIC"} in bundle_sets


def test_batch_carts_match_single_carts(shop_rec: Recommender) -> None:
    carts = [["DESK-OAK"], ["WOK-CS", "SPATULA-BAMBOO"], ["MUG-BLUE"], ["BEANS-HOUSE", "STROLLER"]]
    codes = [[shop_rec.item_code(s) for s in cart] for cart in carts]
    owner = np.repeat(np.arange(len(carts)), [len(c) for c in codes])
    ranked = shop_rec.rank_carts(owner, np.concatenate(codes), len(carts), 5)
    for i, cart in enumerate(carts):
        single = [r["sku"] for r in shop_rec.recommend_for_cart(cart, 5)]
        assert [shop_rec.sku(j) for j in ranked["item"][ranked["owner"] == i]] == single


def test_save_and_load_give_the_same_answers(shop: Store, shop_rec: Recommender) -> None:
    loaded = Recommender.from_store(shop)
    assert loaded.n_baskets == shop_rec.n_baskets and loaded.n_returning == shop_rec.n_returning
    for name in ("basket", "later", "upsell_table"):
        ours, theirs = getattr(shop_rec, name), getattr(loaded, name)
        assert np.array_equal(ours.indptr, theirs.indptr)
        assert np.array_equal(ours.other, theirs.other)
        assert np.allclose(ours.score, theirs.score)
    for cart in (["DESK-OAK"], ["COFFEE-NONE"], ["OIL-SESAME", "WOK-CI"]):
        assert loaded.recommend_for_cart(cart, 8) == shop_rec.recommend_for_cart(cart, 8)
    assert loaded.bundles(5).equals(shop_rec.bundles(5))
    assert loaded.items["product_type"].tolist() == shop_rec.items["product_type"].tolist()
    assert load_or_build(shop).built_at == loaded.built_at  # current: loaded, not rebuilt


def test_stale_tables_are_rebuilt(tmp_path) -> None:
    with hand_store(tmp_path / "hand.duckdb") as store:
        saved = build(store, save=True, options=EXACT)
        assert load_or_build(store).fingerprint == saved.fingerprint
        store.con.execute(
            "INSERT INTO orders (order_id, customer_id, ordered_at, net_revenue) "
            "VALUES ('o11', 'c9', '2024-03-01', 5)"
        )
        store.con.execute(
            "INSERT INTO order_lines VALUES ('o11', 'D', 'Yoga mat', 'Fitness', 1, 30)"
        )
        fresh = load_or_build(store)
    assert fresh.n_baskets == 11
    assert fresh.fingerprint["order_lines"] == saved.fingerprint["order_lines"] + 1


def test_no_saved_tables_is_a_clear_error(hand: Store) -> None:
    with Store(":memory:") as empty, pytest.raises(StoreError, match="recommend build"):
        Recommender.from_store(empty)
    with pytest.raises(DataError):
        build(hand, options=BuildOptions(top_k=0))


def test_random_carts_get_ranked_items_outside_the_cart(shop_rec: Recommender) -> None:
    # the latency (p99 < 5 ms) is measured in benchmarks/bench_recommend.py
    rng = np.random.default_rng(0)
    skus = shop_rec.items["sku"].to_numpy()
    carts = [list(rng.choice(skus, rng.integers(1, 6), replace=False)) for _ in range(300)]
    answered = 0
    for cart in carts:
        got = shop_rec.recommend_for_cart(cart, 10)
        scores = [item["score"] for item in got]
        assert len(got) <= 10
        assert not {item["sku"] for item in got} & set(cart)
        assert scores == sorted(scores, reverse=True)
        assert all(item["reason"] for item in got)
        answered += len(got) > 0
    assert answered > 250


def test_store_without_lines_for_build() -> None:
    orders = load(Store(":memory:"), *_one_order())
    with orders as store, pytest.raises(StoreError, match="no order lines"):
        build(store)


def _one_order():
    import pandas as pd

    return (
        pd.DataFrame(
            {
                "order_id": ["o1"],
                "customer_id": ["c1"],
                "ordered_at": [pd.Timestamp("2024-01-01")],
                "net_revenue": [1.0],
            }
        ),
        None,
    )
