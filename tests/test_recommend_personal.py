"""Personal recommendations: owned durables, replenishment of consumables, reasons."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recommend_helpers import frames, load, shop_store
from retain.errors import DataError
from retain.recommend import (
    PERSONAL_COLUMNS,
    Recommender,
    build,
    load_histories,
    recommend_for_customer,
    recommend_for_customers,
    recommend_from_history,
)
from retain.store import Store

SHOP_NAMES = {
    "DESK-OAK": ("Desk, oak", "Desks", 349.0),
    "CHAIR-BASIC": ("Office chair, basic", "Chairs", 89.0),
    "BEANS-HOUSE": ("Coffee beans, house blend", "Coffee", 14.0),
    "ESPRESSO-BASIC": ("Espresso machine, basic", "Coffee machines", 199.0),
    "WOK-CS": ("Wok, carbon steel", "Cookware", 59.0),
    "NEW-THING": ("Something new", "Misc", 5.0),
}
# three customers of our own, added to the seeded shop
OURS = [
    ("t1", "t-office", "2024-03-01", "DESK-OAK CHAIR-BASIC"),
    ("t2", "t-coffee", "2024-01-01", "ESPRESSO-BASIC BEANS-HOUSE"),
    ("t3", "t-coffee", "2024-02-10", "BEANS-HOUSE"),
    ("t4", "t-coffee", "2024-03-21", "BEANS-HOUSE"),
    ("t5", "t-wok", "2024-03-01", "WOK-CS"),
]


@pytest.fixture(scope="module")
def shop():
    with shop_store() as store:
        load(store, *frames(OURS, SHOP_NAMES))
        load(
            store,
            pd.DataFrame(
                {
                    "order_id": ["t6"],
                    "customer_id": ["t-no-lines"],
                    "ordered_at": [pd.Timestamp("2024-03-01")],
                    "net_revenue": [10.0],
                }
            ),
            None,
        )
        yield store


@pytest.fixture(scope="module")
def rec(shop: Store) -> Recommender:
    return build(shop)


def skus(rows: list[dict]) -> list[str]:
    return [r["sku"] for r in rows]


def test_owned_durables_are_not_offered_again(shop: Store, rec: Recommender) -> None:
    rows = recommend_for_customer(shop, "t-office", 10, recommender=rec, as_of="2024-03-20")
    assert "DESK-OAK" not in skus(rows) and "CHAIR-BASIC" not in skus(rows)
    # planted: desk buyers move on to a monitor and an arm in their next order
    top = rows[:3]
    assert {"MONITOR-27", "MONITOR-ARM"} & set(skus(top))
    monitor = next(r for r in rows if r["sku"] in {"MONITOR-27", "MONITOR-ARM"})
    assert monitor["kind"] == "bought_later_by_similar_customers"
    assert monitor["reason"].startswith("bought later by ")
    assert "Desk, oak" in monitor["reason"] or "Office chair, basic" in monitor["reason"]
    assert all(set(r) == {"sku", "name", "score", "reason", "kind"} for r in rows)
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True)


def test_consumables_come_back_when_due(shop: Store, rec: Recommender) -> None:
    # beans every 40 days (Jan 1, Feb 10, Mar 21): not due 10 days later, due 41 days later
    early = recommend_for_customer(shop, "t-coffee", 10, recommender=rec, as_of="2024-03-31")
    assert "BEANS-HOUSE" not in skus(early)
    # a date alone means the end of that day; a timestamp is taken as it is
    due = recommend_for_customer(shop, "t-coffee", 10, recommender=rec, as_of="2024-05-01T00:00:00")
    beans = next(r for r in due if r["sku"] == "BEANS-HOUSE")
    assert beans["kind"] == "replenish"
    assert beans["reason"] == (
        "time to replenish: bought about every 40 days, last bought 41 days ago"
    )
    # due from 75% of the interval by default (30 days): 35 days is due, 25 is not
    assert "BEANS-HOUSE" in skus(
        recommend_for_customer(shop, "t-coffee", 10, recommender=rec, as_of="2024-04-24")
    )
    assert "BEANS-HOUSE" not in skus(
        recommend_for_customer(shop, "t-coffee", 10, recommender=rec, as_of="2024-04-14")
    )
    strict = recommend_for_customer(
        shop, "t-coffee", 10, recommender=rec, as_of="2024-04-24", replenish_early=0.0
    )
    assert "BEANS-HOUSE" not in skus(strict)
    assert all(r["sku"] != "ESPRESSO-BASIC" for r in due)  # durable, owned


def test_history_stops_at_as_of(shop: Store, rec: Recommender) -> None:
    # before the second order only one purchase of beans is known: the item's
    # median interval applies, and the machine was bought that day
    rows = recommend_for_customer(shop, "t-coffee", 10, recommender=rec, as_of="2024-01-05")
    assert "ESPRESSO-BASIC" not in skus(rows) and "BEANS-HOUSE" not in skus(rows)


def test_near_duplicates_of_owned_durables_are_left_out(shop: Store, rec: Recommender) -> None:
    rows = recommend_for_customer(shop, "t-wok", 20, recommender=rec, as_of="2024-03-10")
    assert "WOK-CS" not in skus(rows) and "WOK-CI" not in skus(rows)
    # planted: wok buyers come back for a chef's knife and sesame oil
    assert {"KNIFE-CHEF", "OIL-SESAME"} <= set(skus(rows[:5]))


def test_batch_matches_one_by_one(shop: Store, rec: Recommender) -> None:
    ids = ["t-office", "t-coffee", "c000007", "t-no-lines"]
    frame = recommend_for_customers(shop, ids, 5, recommender=rec, as_of="2024-06-01")
    assert list(frame.columns) == PERSONAL_COLUMNS
    assert frame["customer_id"].unique().tolist() == ids
    for customer_id in ids:
        mine = frame[frame["customer_id"] == customer_id]
        assert mine["rank"].tolist() == list(range(1, len(mine) + 1))
        one = recommend_for_customer(shop, customer_id, 5, recommender=rec, as_of="2024-06-01")
        assert mine["sku"].tolist() == skus(one)
        assert mine["reason"].tolist() == [r["reason"] for r in one]


def test_customer_without_lines_gets_popular_products(shop: Store, rec: Recommender) -> None:
    rows = recommend_for_customer(shop, "t-no-lines", 3, recommender=rec)
    assert [r["kind"] for r in rows] == ["popular"] * 3
    assert rows[0]["sku"] == rec.sku(int(rec.popular_later[0]))
    assert rows[0]["reason"].startswith("popular: ")


def test_all_customers_at_once(shop: Store, rec: Recommender) -> None:
    frame = recommend_for_customers(shop, None, 3, recommender=rec)
    assert frame["customer_id"].nunique() == shop.scalar(
        "SELECT count(DISTINCT customer_id) FROM orders"
    )
    assert frame.groupby("customer_id").size().max() == 3


@pytest.mark.parametrize("as_of", [None, "2024-02-15"])
def test_one_customer_from_histories_matches_everyone_at_once(
    shop: Store, rec: Recommender, as_of: str | None
) -> None:
    """The service ranks a customer on demand from histories held in memory: the very rows
    (products, scores, reasons, kinds) the ranking of every customer at once gives (a
    customer whose orders all come after ``as_of`` gets the popular products)."""
    ids = shop.query("SELECT DISTINCT customer_id FROM orders")["customer_id"].tolist()
    frame = recommend_for_customers(shop, ids, 5, recommender=rec, as_of=as_of)
    histories = load_histories(shop, recommender=rec, as_of=as_of)
    assert len(histories) == len(ids)
    batch = {
        cid: rows.drop(columns=["customer_id", "rank"]).to_dict(orient="records")
        for cid, rows in frame.groupby("customer_id", sort=False)
    }
    for customer_id in ids:
        one = recommend_from_history(histories, customer_id, 5)
        assert one == batch.get(customer_id, []), customer_id
    assert recommend_from_history(histories, "nobody", 5) is None


def test_bad_input(shop: Store, rec: Recommender) -> None:
    with pytest.raises(DataError, match="no orders from this customer"):
        recommend_for_customer(shop, "nobody", recommender=rec)
    with pytest.raises(DataError, match="as_of"):
        recommend_for_customer(shop, "t-office", recommender=rec, as_of="not a date")
    with pytest.raises(DataError, match="half_life_days"):
        recommend_for_customer(shop, "t-office", recommender=rec, half_life_days=0)
    with pytest.raises(DataError, match="replenish_early"):
        recommend_for_customer(shop, "t-office", recommender=rec, replenish_early=1.0)
    with pytest.raises(DataError, match="k is how many"):
        recommend_for_customer(shop, "t-office", 0, recommender=rec)


def test_histories_hold_the_purchases_as_read(shop: Store, rec: Recommender) -> None:
    """The compact histories give back every row of the history query as it reads them:
    each customer's items, first and last purchase (float64 seconds) and counts."""
    from retain.recommend.personal import _as_of_seconds

    histories = load_histories(shop, recommender=rec)
    ids = np.sort(shop.query("SELECT DISTINCT customer_id FROM orders")["customer_id"].to_numpy())
    assert histories.customer_ids.tolist() == ids.tolist()
    rows = shop.query(
        """SELECT o.customer_id, l.sku, min(epoch(o.ordered_at)), max(epoch(o.ordered_at)),
                  count(DISTINCT o.order_id)
           FROM order_lines l JOIN orders o USING (order_id)
           WHERE o.ordered_at <= to_timestamp($s)::TIMESTAMP
           GROUP BY 1, 2""",
        {"s": _as_of_seconds(shop, None)},
    )
    skus = histories.skus
    held = []
    for at, customer_id in enumerate(ids):
        assert histories.position(customer_id) == at
        bought = histories.rows(at)
        for name in ("first_ts", "last_ts"):
            assert bought[name].dtype == np.float64
        held += [
            (customer_id, skus[i], f, last, p)
            for i, f, last, p in zip(*bought.values(), strict=True)
        ]
    expected = sorted(rows.itertuples(index=False, name=None))
    assert sorted(held) == [(c, s, float(f), float(la), int(p)) for c, s, f, la, p in expected]
    whole = histories.first_ts
    assert whole.dtype == np.float64 and np.array_equal(
        whole, histories.ts_base + histories.first_offsets
    )


@pytest.mark.parametrize(
    "first, last, compact",
    [
        ([1_700_000_000.0, 10.0], [1_700_000_500.0, 10.0], True),
        ([-86_400.0, 0.0], [5.0, 0.0], True),  # before 1970
        ([1.5, 2.0], [2.0, 3.0], False),  # a fraction of a second
        ([0.0, 2.0**32], [1.0, 2.0**32], False),  # further apart than 32 bits hold
        ([0.0, np.nan], [1.0, 2.0], False),
        ([], [], False),
    ],
)
def test_purchase_times_are_held_exactly(first: list, last: list, compact: bool) -> None:

    from retain.recommend.personal import _compact_times

    base, a, b = _compact_times(np.array(first, dtype=float), np.array(last, dtype=float))
    assert (a.dtype == np.uint32) is compact and (b.dtype == np.uint32) is compact
    for held, given in ((a, first), (b, last)):
        back = base + held.astype(np.float64)
        assert back.dtype == np.float64
        np.testing.assert_array_equal(back, np.array(given, dtype=float))
