"""Saved purchase histories: `retain recommend build` keeps every customer's purchases as
item codes; they are read back only while they are what the order lines would give now."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from recommend_helpers import shop_store
from retain.config import set_setting
from retain.recommend import build, load_histories, load_or_build, recommend_from_history
from retain.recommend.personal import CustomerHistories, saved_histories
from retain.service import data
from retain.store import Store

FIELDS = ("customer_ids", "starts", "item", "first_ts", "last_ts", "purchases", "skus", "names")


def same(saved: CustomerHistories | None, loaded: CustomerHistories) -> None:
    assert saved is not None
    for name in FIELDS:
        a, b = getattr(saved, name), getattr(loaded, name)
        assert a.dtype == b.dtype, name
        assert np.array_equal(a, b), name
    assert saved.as_of_s == loaded.as_of_s


@pytest.fixture
def shop() -> Iterator[Store]:
    with shop_store(n_customers=400, seed=3) as store:
        build(store, save=True)
        yield store


def test_saved_histories_are_the_loaded_ones(shop: Store) -> None:
    rec = load_or_build(shop)
    loaded = load_histories(shop, recommender=rec)
    saved = saved_histories(shop, rec)
    same(saved, loaded)
    assert saved is not None
    for customer_id in loaded.customer_ids[:50]:
        assert recommend_from_history(saved, customer_id, 5) == recommend_from_history(
            loaded, customer_id, 5
        )


def test_the_service_reads_them_and_ranks_alike(shop: Store) -> None:
    recs = data.build_recommendations(shop)
    loaded = load_histories(shop, recommender=recs.recommender)
    same(recs.histories, loaded)
    customer_id = str(loaded.customer_ids[7])
    assert recs.of(customer_id) == recommend_from_history(loaded, customer_id, 5)


@pytest.mark.parametrize(
    "change",
    [
        # an order moved to an earlier day: the same count of lines and the same last order,
        # so the saved recommender still counts as current, but not the histories
        "UPDATE orders SET ordered_at = ordered_at - INTERVAL 3 DAY "
        "WHERE order_id = (SELECT min(order_id) FROM orders)",
        "UPDATE orders SET customer_id = 'someone-else' "
        "WHERE order_id = (SELECT min(order_id) FROM orders)",
        "UPDATE order_lines SET sku = (SELECT max(sku) FROM order_lines) "
        "WHERE order_id = (SELECT min(order_id) FROM order_lines)",
        "DELETE FROM recommend_history_basis",
        "DROP TABLE recommend_history_basis",  # a read-only store of an older retain
    ],
)
def test_stale_histories_are_read_again(shop: Store, change: str) -> None:
    shop.con.execute(change)
    rec = load_or_build(shop)
    assert saved_histories(shop, rec) is None
    same(data.build_recommendations(shop).histories, load_histories(shop, recommender=rec))


def test_another_observation_date_reads_them_again(shop: Store) -> None:
    set_setting(shop, "as_of", "2024-02-15")
    rec = load_or_build(shop)
    assert saved_histories(shop, rec) is None
    same(data.build_recommendations(shop).histories, load_histories(shop, recommender=rec))


def test_a_rebuild_saves_them_again(shop: Store) -> None:
    set_setting(shop, "as_of", "2024-02-15")
    build(shop, save=True)
    rec = load_or_build(shop)
    same(saved_histories(shop, rec), load_histories(shop, recommender=rec))


def test_rows_stored_in_another_order_are_read_in_theirs(shop: Store) -> None:
    for table in ("recommend_histories", "recommend_history_customers"):
        shop.con.execute(f"CREATE TEMP TABLE shuffled AS SELECT * FROM {table} ORDER BY random()")
        shop.con.execute(f"DELETE FROM {table}")
        shop.con.execute(f"INSERT INTO {table} SELECT * FROM shuffled")
        shop.con.execute("DROP TABLE shuffled")
    rec = load_or_build(shop)
    same(saved_histories(shop, rec), load_histories(shop, recommender=rec))
