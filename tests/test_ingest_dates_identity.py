"""The store's observation date binds single API orders; day-first and month-first dates;
identity (e-mail, name) taken from orders; an e-mail in any case is one customer."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from retain.errors import DataError
from retain.ingest import customer_key, ingest, observation_date
from retain.service.orders import ingest_order
from retain.store import Store


def write(tmp_path: Path, text: str, name: str = "orders.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_an_api_order_after_the_stores_as_of_is_quarantined(store: Store, tmp_path: Path):
    text = "order_id,customer_id,ordered_at,net_revenue\nA1,c1,1998-06-01,10\n"
    ingest(store, write(tmp_path, text), as_of="1998-06-30")
    assert observation_date(store) == dt.datetime(1998, 6, 30, 23, 59, 59, 999999)
    report = ingest_order(
        store, {"order_id": "X1", "customer_id": "c1", "ordered_at": "2026-11-30", "net_revenue": 5}
    )
    assert report.orders == 0
    assert "dated after the observation date 1998-06-30" in report.examples[0]
    assert str(store.scalar("SELECT max(ordered_at) FROM orders")).startswith("1998-06-01")
    # an order within the store's dates is stored
    inside = {"order_id": "X2", "customer_id": "c1", "ordered_at": "1998-06-15", "net_revenue": 5}
    assert ingest_order(store, inside).orders == 1


def test_a_live_store_checks_api_orders_against_the_clock(store: Store, tmp_path: Path):
    ingest(
        store, write(tmp_path, "order_id,customer_id,ordered_at,net_revenue\nA1,c1,2025-01-01,1\n")
    )
    assert observation_date(store) is None
    assert store.scalar("SELECT as_of FROM ingested_files") is None
    order = {"order_id": "X1", "customer_id": "c1", "ordered_at": "2025-02-01", "net_revenue": 5}
    assert ingest_order(store, order).orders == 1


def test_us_dates_are_explained_and_read_with_a_date_format(store: Store, tmp_path: Path):
    path = write(tmp_path, "order_id,customer_id,ordered_at,net_revenue\nA1,c1,03/04/2025,10\n")
    report = ingest(store, path, as_of="2025-12-31")
    assert report.quarantined == 1
    reason = store.scalar("SELECT reason FROM quarantine")
    assert reason.startswith("unreadable date: got '03/04/2025': expected YYYY-MM-DD")
    assert "date_format" in reason
    report = ingest(store, path, as_of="2025-12-31", date_format="MM/DD/YYYY")
    assert (report.orders, report.quarantined) == (1, 0)
    assert store.scalar("SELECT ordered_at FROM orders") == pd.Timestamp("2025-03-04")
    ingest(store, path, as_of="2025-12-31", date_format="%d/%m/%Y")
    assert store.scalar("SELECT ordered_at FROM orders") == pd.Timestamp("2025-04-03")


def test_an_unusable_date_format_is_refused(store: Store, tmp_path: Path):
    path = write(tmp_path, "order_id,customer_id,ordered_at,net_revenue\nA1,c1,03/04/2025,10\n")
    with pytest.raises(DataError, match="unusable date_format"):
        ingest(store, path, as_of="2025-12-31", date_format="MM/YYYY")


def test_identity_comes_from_orders_without_overwriting(store: Store, tmp_path: Path):
    customers = write(tmp_path, "customer_id,email,name\nc1,ann@shop.test,Ann Long\n", "c.csv")
    ingest(store, customers, format="customers")
    orders = write(
        tmp_path,
        "order_id,customer_id,ordered_at,net_revenue,email,name\n"
        "A1,c1,2025-01-01,10,,\n"  # blank: the customers file's value stays
        "A2,c2,2025-01-02,10,Bo@Shop.Test,Bo Chen\n"
        "A3,c3,2025-01-03,10,,\n",
    )
    ingest(store, orders, as_of="2025-12-31")
    people = store.query("SELECT customer_id, email, name FROM customers").set_index("customer_id")
    assert people.loc["c1", "email"] == "ann@shop.test" and people.loc["c1", "name"] == "Ann Long"
    assert people.loc["c2", "email"] == "bo@shop.test" and people.loc["c2", "name"] == "Bo Chen"
    assert pd.isna(people.loc["c3", "email"])


def test_an_email_in_any_case_is_one_customer(store: Store, tmp_path: Path):
    shopify = "Name,Email,Subtotal,Created at\n#1,ana@example.com,10,2025-01-01\n"
    ingest(store, write(tmp_path, shopify, "shop.csv"), as_of="2025-12-31", format="shopify")
    orders = "order_id,customer_id,ordered_at,net_revenue\nA1,Ana@Example.COM,2025-02-01,5\n"
    ingest(store, write(tmp_path, orders), as_of="2025-12-31")
    ingest(store, write(tmp_path, "customer_id,name\n ANA@example.com ,Ana\n", "c.csv"))
    assert store.query("SELECT DISTINCT customer_id FROM orders")["customer_id"].tolist() == [
        "ana@example.com"
    ]
    assert store.query("SELECT customer_id, name FROM customers").values.tolist() == [
        ["ana@example.com", "Ana"]
    ]
    assert customer_key(" Ana@Example.COM ") == "ana@example.com"
    assert customer_key("C-19339") == "C-19339"
