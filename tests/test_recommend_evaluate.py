"""Offline evaluation: hidden last orders, hit rate@k and coverage against most popular."""

from __future__ import annotations

import pytest

from recommend_helpers import HAND_NAMES, frames, generated_store, hand_store, load, shop_store
from retain.errors import DataError, StoreError
from retain.recommend import evaluate, load_baskets
from retain.store import Store


@pytest.fixture(scope="module")
def shop_baskets():
    with shop_store(n_customers=2000, seed=3) as store:
        returning = store.scalar(
            "SELECT count(*) FROM (SELECT customer_id FROM orders GROUP BY 1 HAVING count(*) > 1)"
        )
        yield load_baskets(store), returning


def test_beats_most_popular_on_planted_affinities(shop_baskets) -> None:
    baskets, returning = shop_baskets
    result = evaluate(baskets, k=10, sample=None)
    assert result["customers"] == returning == result["evaluated"]
    for task in ("next_basket", "cart"):
        part = result[task]
        model, popular = part["model"], part["most_popular"]
        assert part["beats_baseline"] is True
        assert model["hit_rate"] > popular["hit_rate"] + 0.03
        assert model["coverage"] > popular["coverage"]
        assert 0 <= model["recall"] <= model["hit_rate"] <= 1
        assert part["hit_rate_ratio"] == pytest.approx(
            model["hit_rate"] / popular["hit_rate"], 1e-3
        )
    assert result["cart"]["carts"] > 0


def test_beats_most_popular_on_generated_histories() -> None:
    """The benchmark generator at 20,000 customers (seed 0): taste, follow-ups and
    consumables link each customer's orders, and the next order's hit rate beats the
    best sellers' clearly. Dealing the same baskets to random orders keeps every basket
    and best seller but cuts those links: the gain is gone, so it came from them."""

    def gain(store: Store) -> float:
        with store:
            part = evaluate(store, k=10, sample=None)["next_basket"]
        return part["model"]["hit_rate"] - part["most_popular"]["hit_rate"]

    linked = gain(generated_store(n_customers=20_000, seed=0))
    dealt = gain(generated_store(n_customers=20_000, seed=0, deal_baskets=True))
    assert linked > 0.04
    assert abs(dealt) < 0.015  # nothing to find, and no worse than the best sellers
    assert linked > dealt + 0.04


def test_sample_and_seed(shop_baskets) -> None:
    baskets, _ = shop_baskets
    small = evaluate(baskets, sample=200, seed=1)
    assert small["evaluated"] == 200
    assert evaluate(baskets, sample=200, seed=1) == small


def test_hand_checked_baseline() -> None:
    # c1 (o1 then o7 = A B) and c2 (o2 then o8 = D E) have a last order to hide; the
    # other 8 orders hold A 5 times, B 4, C 3, D 1, E 1: the best seller is A
    with hand_store() as store:
        result = evaluate(store, k=1, sample=None)
    assert result["customers"] == 2 and result["training_baskets"] == 8
    popular = result["next_basket"]["most_popular"]
    assert popular["hit_rate"] == pytest.approx(0.5)  # o7 holds A, o8 does not
    assert popular["recall"] == pytest.approx(0.25)  # one of the 4 hidden products
    assert popular["coverage"] == pytest.approx(1 / 5)
    assert result["cart"]["carts"] == 2


def test_needs_returning_customers() -> None:
    orders = [("o1", "c1", "2024-01-01", "A B"), ("o2", "c2", "2024-01-02", "A")]
    with load(Store(":memory:"), *frames(orders, HAND_NAMES)) as store:
        with pytest.raises(StoreError, match="two orders"):
            evaluate(store)
        with pytest.raises(DataError, match="sample"):
            evaluate(store, sample=0)
