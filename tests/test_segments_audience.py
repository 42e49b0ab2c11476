"""Win-back lists and audiences: the reactivation rule, consent, top products, exports."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from retain.errors import DataError
from retain.segments import (
    audience,
    customer_segments,
    load_rules,
    winback_list,
    write_audience,
)
from retain.store import Store
from segments_helpers import build_store, orders_frame, random_orders

WHALES = [f"w{i}" for i in range(10)]
REGULARS = [f"r{i}" for i in range(30)]
# each whale's 12 orders: beans in all, frother in 6, mug in 2, filter in 1
WHALE_BASKETS = [["BEANS"], ["BEANS", "FROTH"], ["BEANS", "MUG"]] * 2 + [["BEANS", "FROTH"]] * 4
WHALE_BASKETS += [["BEANS", "FILTER"], ["BEANS"]]
NAMES = {"BEANS": "Espresso Beans", "FROTH": "Milk Frother", "MUG": "Mug", "FILTER": "Filter"}
CONSENT = {"w7": False, "w8": None}  # the other whales said yes


def whale_data() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """10 customers with the most orders and spend, all silent since before anyone else ordered."""
    rows = []
    for w in WHALES:
        rows += [(w, f"2023-01-{day:02d}", 100.0) for day in range(1, 13)]
    for i, r in enumerate(REGULARS):
        rows += [(r, f"2024-{1 + i % 12:02d}-{1 + k:02d}", 20.0) for k in range(1 + i % 3)]
    orders = orders_frame(rows)
    whale_orders = orders[orders["customer_id"].isin(WHALES)]
    lines = [
        (order_id, sku, NAMES[sku], 1.0, 10.0)
        for order_id, basket in zip(
            whale_orders["order_id"], WHALE_BASKETS * len(WHALES), strict=True
        )
        for sku in basket
    ]
    lines_frame = pd.DataFrame(lines, columns=["order_id", "sku", "name", "quantity", "unit_price"])
    customers = pd.DataFrame(
        {
            "customer_id": WHALES + REGULARS,
            "email": [f"{c}@example.com" for c in WHALES + REGULARS],
            "name": [f"Customer {c}" for c in WHALES + REGULARS],
            "accepts_marketing": [CONSENT.get(c, True) for c in WHALES + REGULARS],
        }
    )
    return orders, customers, lines_frame


@pytest.fixture(scope="module")
def store() -> Iterator[Store]:
    orders, customers, lines = whale_data()
    with build_store(orders, customers=customers, lines=lines) as s:
        yield s


@pytest.mark.parametrize("scheme", ["quintiles", "quartiles"])
def test_top_f_and_m_bottom_r_must_be_reactivated(store: Store, scheme: str) -> None:
    """Top 25% for frequency and monetary value, bottom 25% for recency: reactivate with a
    coupon for the customer's own products, listed in the audience export."""
    result = customer_segments(store, scheme=scheme)
    assert (result.loc[WHALES, "segment"] == "Can't Lose Them").all()
    exported = audience(store, "Can't Lose Them", scheme=scheme, include_unknown_consent=True)
    exported = exported.set_index("customer_id")
    assert set(exported.index) == set(WHALES) - {"w7"}
    for whale in exported.index:
        assert exported.loc[whale, "top_products"] == ["Espresso Beans", "Milk Frother", "Mug"]
        action = exported.loc[whale, "action"]
        assert "coupon" in action and "Espresso Beans, Milk Frother and Mug" in action


def test_the_reactivation_rule_holds_on_random_customers() -> None:
    orders = random_orders(2000, seed=5)
    per_customer = orders.groupby("customer_id").agg(
        last=("ordered_at", "max"), orders=("order_id", "size"), spend=("net_revenue", "sum")
    )
    n = len(per_customer)
    # share of customers strictly below (worse than) each customer, measure by measure
    top_f = per_customer["orders"].rank(method="min") - 1 >= 0.75 * n
    top_m = per_customer["spend"].rank(method="min") - 1 >= 0.75 * n
    customers_more_recent = n - per_customer["last"].rank(method="max")
    bottom_r = customers_more_recent >= 0.75 * n
    rule = per_customer.index[top_f & top_m & bottom_r]
    assert len(rule) > 10
    for scheme in ("quintiles", "quartiles"):
        result = customer_segments(orders, scheme=scheme)
        assert (result.loc[rule, "segment"] == "Can't Lose Them").all()


def test_opted_out_customers_are_never_exported(store: Store) -> None:
    default = audience(store, "Can't Lose Them")
    assert set(default["customer_id"]) == set(WHALES) - {"w7", "w8"}
    assert default.attrs["opted_out"] == 1 and default.attrs["unknown_consent"] == 1
    everyone = audience(store, "cant lose them", include_unknown_consent=True)
    assert "w7" not in set(everyone["customer_id"]) and "w8" in set(everyone["customer_id"])
    assert everyone.attrs["unknown_consent"] == 0
    winback = audience(store, "win-back", include_unknown_consent=True)
    assert "w7" not in set(winback["customer_id"])
    # analyses keep them
    assert "w7" in set(winback_list(store)["customer_id"])


def test_audience_columns_and_contact_details(store: Store) -> None:
    exported = audience(store, "Can't Lose Them")
    assert list(exported.columns)[:3] == ["customer_id", "email", "name"]
    for column in ("segment", "action", "value_at_stake", "top_products"):
        assert column in exported.columns
    row = exported.set_index("customer_id").loc["w0"]
    assert row["email"] == "w0@example.com" and row["name"] == "Customer w0"


def test_customers_without_order_lines_have_no_products(store: Store) -> None:
    lapsed = winback_list(store, min_risk="low", all_lost=True).set_index("customer_id")
    assert lapsed.loc["r0", "top_products"] == []
    champions = audience(store, "Champions", include_unknown_consent=True)
    assert all(products == [] for products in champions["top_products"])


def test_top_products_break_ties_by_recency_then_sku() -> None:
    orders = orders_frame(
        [("a", "2024-01-01", 1.0), ("a", "2024-02-01", 1.0), ("a", "2024-03-01", 1.0)]
    )
    lines = pd.DataFrame(
        {
            "order_id": ["o0", "o0", "o1", "o1", "o2", "o2"],
            "sku": ["A", "Z", "A", "B", "C", "D"],
            "name": ["Apple", "Zest", "Apple", None, "Cherry", "Date"],
            "quantity": [1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
        }
    )
    with build_store(orders, lines=lines) as s:
        result = winback_list(s, min_risk="low", top_n=4).set_index("customer_id")
    # A in two orders; then C and D (most recent, by sku), then B (name missing: its sku)
    assert result.loc["a", "top_products"] == ["Apple", "Cherry", "Date", "B"]


def test_winback_list_is_ranked_by_value_at_stake() -> None:
    orders = random_orders(400, seed=9)
    ids = sorted(orders["customer_id"].unique())
    scores = pd.DataFrame(
        {
            "p_alive": [(i % 10) / 10 + 0.05 for i in range(len(ids))],
            "clv_12m": [float(i % 37) for i in range(len(ids))],
        },
        index=pd.Index(ids, name="customer_id"),
    )
    with build_store(orders) as s:
        high = winback_list(s, scores=scores)
        medium = winback_list(s, scores=scores, min_risk="medium")
        top = winback_list(s, scores=scores, limit=5)
    assert set(high["risk"]) <= {"high", "lost"}
    assert set(medium["risk"]) <= {"medium", "high", "lost"} and len(medium) > len(high)
    assert high["value_at_stake"].is_monotonic_decreasing
    assert top["customer_id"].tolist() == high["customer_id"].head(5).tolist()
    assert top.attrs["total"] == len(high)
    assert top.attrs["value_at_stake"] == pytest.approx(high["value_at_stake"].sum())
    with (
        build_store(orders_frame([("a", "2024-01-01", 1.0)])) as s,
        pytest.raises(DataError, match="risk level"),
    ):
        winback_list(s, min_risk="severe")


def test_exports_as_csv_and_json(store: Store, tmp_path: Path) -> None:
    exported = audience(store, "Can't Lose Them")
    out = tmp_path / "audience.csv"
    text = write_audience(exported, "csv", out)
    assert out.read_text(encoding="utf-8") == text
    back = pd.read_csv(out)
    assert list(back.columns) == list(exported.columns)
    assert (back["top_products"] == "Espresso Beans; Milk Frother; Mug").all()
    records = json.loads(write_audience(exported, "json"))
    assert len(records) == len(exported)
    assert records[0]["top_products"] == ["Espresso Beans", "Milk Frother", "Mug"]
    with pytest.raises(DataError, match="csv or json"):
        write_audience(exported, "xml")
    with pytest.raises(DataError, match="cannot write"):
        write_audience(exported, "csv", tmp_path / "missing" / "a.csv")


def test_the_winback_list_leaves_out_lost_customers_not_worth_a_personal_winback() -> None:
    orders = random_orders(400, seed=9)
    ids = sorted(orders["customer_id"].unique())
    scores = pd.DataFrame(
        {"p_alive": [0.5] * len(ids), "clv_12m": [10.0] * len(ids)},
        index=pd.Index(ids, name="customer_id"),
    )
    with build_store(orders) as s:
        listed = winback_list(s, scores=scores)
        everyone = winback_list(s, scores=scores, all_lost=True)
    valuable = load_rules().table().set_index("segment")["valuable"]
    lost = listed[listed["risk"] == "lost"]
    assert len(lost) > 0 and lost["segment"].map(valuable).all()
    left_out = everyone[~everyone["customer_id"].isin(listed["customer_id"])]
    assert len(left_out) > 0
    assert (left_out["risk"] == "lost").all() and not left_out["segment"].map(valuable).any()
    assert (listed["value_at_stake"] > 0).all()


def test_the_audience_csv_gives_the_value_at_stake_to_the_cent() -> None:
    frame = pd.DataFrame(
        {
            "customer_id": ["a", "b"],
            "value_at_stake": [16.40708051498788, 3.0],
            "top_products": [["x"], []],
        }
    )
    rows = list(csv.DictReader(io.StringIO(write_audience(frame))))
    assert [r["value_at_stake"] for r in rows] == ["16.41", "3.0"]
