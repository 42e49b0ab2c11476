"""Personal recommendations never offer a product the customer already bought, whatever
its product type; a consumable that is due comes back as a replenishment."""

from __future__ import annotations

import pandas as pd
import pytest

from recommend_helpers import shop_store
from retain.recommend import build, recommend_for_customers
from retain.store import Store


@pytest.fixture(scope="module")
def shop() -> Store:
    with shop_store() as store:
        yield store


def test_nothing_already_bought_is_offered_except_a_due_replenishment(shop: Store) -> None:
    rec = build(shop)
    types = dict(zip(rec.items["sku"], rec.items["product_type"], strict=True))
    assert "repeatable" in types.values()  # the case that slipped through
    frame = recommend_for_customers(shop, None, 10, recommender=rec)
    owned = shop.query(
        "SELECT DISTINCT o.customer_id, l.sku FROM order_lines l JOIN orders o USING (order_id)"
    )
    bought = frame.merge(owned, on=["customer_id", "sku"])
    assert len(frame) > 0
    again = bought[bought["kind"] != "replenish"]
    assert again.empty, again.head().to_dict(orient="records")
    # what does come back is a due consumable, with its reason
    assert (bought["kind"] == "replenish").any()
    assert set(bought["sku"].map(types)) <= {"consumable"}
    assert bought["reason"].str.startswith("time to replenish").all()
    # and customers still get a full list
    sizes = frame.groupby("customer_id").size()
    assert isinstance(sizes, pd.Series) and sizes.min() == 10


def test_owned_repeatable_products_only_when_asked(shop: Store) -> None:
    rec = build(shop)
    types = dict(zip(rec.items["sku"], rec.items["product_type"], strict=True))
    frame = recommend_for_customers(shop, None, 10, recommender=rec, include_owned=True)
    owned = shop.query(
        "SELECT DISTINCT o.customer_id, l.sku FROM order_lines l JOIN orders o USING (order_id)"
    )
    again = frame.merge(owned, on=["customer_id", "sku"])
    again = again[again["kind"] != "replenish"]
    assert len(again) and set(again["sku"].map(types)) == {"repeatable"}
