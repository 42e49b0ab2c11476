"""Shopify's webhooks, ``POST /webhooks/shopify/{topic}``, on a real uvicorn.

Each delivery is signed here as Shopify signs it (base64 HMAC-SHA256 of the raw body
under the app's secret) and sent over a real socket; what it changed is read back
from the service's API and the store.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from retain.ingest.shopify import order_from_webhook, with_refunds
from retain.service import create_app
from retain.store import Store
from service_helpers import Served
from store_helpers import store_of

SECRET = "shpss_a-shared-secret-for-the-tests"
KEY = "a-test-key-of-enough-length"
ORDERS = """order_id,customer_id,ordered_at,net_revenue
o1,a,2024-01-10,10.00
o2,b,2024-02-01,5.50
"""


def order_json(**changes: Any) -> dict[str, Any]:
    """A Shopify order as orders/create sends it (the fields retain reads, and others)."""
    order: dict[str, Any] = {
        "id": 820982911946154508,
        "name": "#1001",
        "email": "Jon@Example.com",
        "created_at": "2024-03-20T10:00:00-05:00",
        "updated_at": "2024-03-20T10:00:05-05:00",
        "currency": "USD",
        "subtotal_price": "90.00",
        "total_discounts": "10.00",
        "total_tax": "7.20",
        "total_price": "107.20",
        "total_shipping_price_set": {"shop_money": {"amount": "10.00", "currency_code": "USD"}},
        "financial_status": "paid",
        "cancelled_at": None,
        "source_name": "web",
        "discount_codes": [{"code": "SPRING10", "amount": "10.00", "type": "fixed_amount"}],
        "customer": {"id": 115310627314723954, "email": "jon@example.com",
                     "first_name": "Jon", "last_name": "Snow", "accepts_marketing": True},
        "billing_address": {"name": "Jon Snow", "city": "Ottawa"},
        "line_items": [
            {"id": 1, "sku": "TEA-1", "title": "Green tea", "quantity": 2, "price": "30.00"},
            {"id": 2, "sku": "", "title": "Teapot", "quantity": 1, "price": "40.00"},
        ],
        "refunds": [],
    }  # fmt: skip
    order.update(changes)
    return order


def refund_json(refund_id: int, amount: str, order_id: int = 820982911946154508) -> dict[str, Any]:
    return {
        "id": refund_id,
        "order_id": order_id,
        "created_at": "2024-03-25T09:00:00-05:00",
        "transactions": [
            {"id": refund_id * 10, "kind": "refund", "status": "success", "amount": amount},
            {"id": refund_id * 10 + 1, "kind": "refund", "status": "failure", "amount": "99.00"},
        ],
        "refund_line_items": [],
    }


def sign(body: bytes, secret: str = SECRET) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def now_text(delta: dt.timedelta = dt.timedelta()) -> str:
    return (dt.datetime.now(dt.UTC) + delta).isoformat()


class Shop:
    """Deliveries to one served service, as Shopify makes them."""

    def __init__(self, served: Served, app: Any) -> None:
        self.served = served
        self.service = app.state.service
        self.sent = 0

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        """The service's store as it is now (this process holds the file open)."""
        return self.service.store().con.execute(sql).fetchall()

    def deliver(
        self,
        topic: str,
        payload: Any,
        *,
        webhook_id: str | None = None,
        body: bytes | None = None,
        signature: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        raw = json.dumps(payload).encode() if body is None else body
        self.sent += 1
        sent = {
            "Content-Type": "application/json",
            "X-Shopify-Hmac-Sha256": sign(raw) if signature is None else signature,
            "X-Shopify-Topic": topic,
            "X-Shopify-Webhook-Id": webhook_id or f"delivery-{self.sent}",
            "X-Shopify-Shop-Domain": "tea-shop.myshopify.com",
            "X-Shopify-Triggered-At": now_text(),
            **(headers or {}),
        }
        connection = self.served.connection()
        try:
            connection.request("POST", f"/webhooks/shopify/{topic}", body=raw, headers=sent)
            response = connection.getresponse()
            return response.status, json.loads(response.read() or b"{}")
        finally:
            connection.close()

    def customer(self, customer_id: str) -> dict[str, Any]:
        status, _, body = self.served.request(
            "GET", f"/api/customers/{customer_id}?history=10", headers={"X-API-Key": KEY}
        )
        assert status == 200, body
        found: dict[str, Any] = json.loads(body)
        return found


@pytest.fixture(scope="module")
def base_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return store_of(tmp_path_factory.mktemp("hooks"), orders=ORDERS)


@pytest.fixture
def db(base_db: Path, tmp_path: Path) -> Path:
    path = tmp_path / "served.duckdb"
    shutil.copy(base_db, path)
    return path


@pytest.fixture
def shop(db: Path) -> Iterator[Shop]:
    app = create_app(db, KEY, warm=False, shopify_secret=SECRET)
    with Served(app) as served:
        yield Shop(served, app)


# -- the mapping ------------------------------------------------------------------------
def test_an_order_is_read_by_the_file_imports_rules() -> None:
    read = order_from_webhook(order_json())
    order = read.order
    assert read.shopify_id == "820982911946154508"
    assert read.updated_at == dt.datetime(2024, 3, 20, 15, 0, 5)  # UTC
    assert order["order_id"] == "#1001" and order["customer_id"] == "jon@example.com"
    # the subtotal is after discounts: gross adds the discount back (net = gross - discount)
    assert order["gross"] == "100.00" and order["discount"] == "10.00"
    assert order["shipping"] == "10.00" and order["tax"] == "7.20"
    assert order["status"] == "paid" and order["discount_code"] == "SPRING10"
    assert order["name"] == "Jon Snow" and "accepts_marketing" not in order
    assert [line["sku"] for line in order["lines"]] == ["TEA-1", "Teapot"]
    assert "refunded" not in with_refunds(order, {})
    assert with_refunds(order, {"1": "12.50", "2": "2.50"})["refunded"] == "15.00"


def test_a_cancelled_order_and_one_without_email() -> None:
    cancelled = order_from_webhook(order_json(cancelled_at="2024-03-21T10:00:00Z"))
    assert cancelled.order["status"] == "cancelled"
    with pytest.raises(Exception, match="no customer identity"):
        order_from_webhook(order_json(email=None, contact_email=None, customer=None))


# -- deliveries -------------------------------------------------------------------------
def test_a_signed_order_is_stored_and_its_customer_found(shop: Shop) -> None:
    status, body = shop.deliver("orders/create", order_json())
    assert status == 200, body
    assert body["stored"] and body["as"] == "purchase" and body["quarantined"] == []
    customer = shop.customer("jon@example.com")
    assert customer["orders"]["orders"] == 1
    assert customer["orders"]["net_revenue"] == pytest.approx(90.0)  # the subtotal
    assert customer["history"][0]["order_id"] == "#1001"
    assert sorted(customer["history"][0]["products"]) == ["Green tea", "Teapot"]


def test_a_tampered_body_or_another_secret_is_refused(shop: Shop) -> None:
    body = json.dumps(order_json()).encode()
    tampered = body.replace(b'"90.00"', b'"9000.00"')
    status, answer = shop.deliver("orders/create", None, body=tampered, signature=sign(body))
    assert status == 401 and "signature" in answer["detail"]
    status, _ = shop.deliver("orders/create", None, body=body, signature=sign(body, "other"))
    assert status == 401
    status, _ = shop.deliver("orders/create", None, body=body, signature="")
    assert status == 401
    assert shop.rows("SELECT count(*) FROM orders WHERE order_id = '#1001'") == [(0,)]
    assert shop.rows("SELECT count(*) FROM shopify_deliveries") == [(0,)]


def test_a_replay_changes_nothing_and_a_resend_is_idempotent(shop: Shop) -> None:
    assert shop.deliver("orders/create", order_json(), webhook_id="w-1")[0] == 200
    # the same delivery id again, even with another (correctly signed) body: a replay
    status, body = shop.deliver("orders/create", order_json(subtotal_price="500.00"),
                                webhook_id="w-1")  # fmt: skip
    assert status == 200 and body["duplicate"] is True
    assert shop.customer("jon@example.com")["orders"]["net_revenue"] == pytest.approx(90.0)
    # the same order under a new delivery id (orders/updated with nothing new): one order
    status, body = shop.deliver("orders/updated", order_json(), webhook_id="w-2")
    assert status == 200 and body["stored"]
    assert shop.rows("SELECT count(*), sum(net_revenue) FROM orders WHERE order_id = '#1001'") == [
        (1, 90.0)
    ]
    assert shop.rows("SELECT webhook_id, topic, shop FROM shopify_deliveries ORDER BY 1") == [
        ("w-1", "orders/create", "tea-shop.myshopify.com"),
        ("w-2", "orders/updated", "tea-shop.myshopify.com"),
    ]


def test_a_refund_counts_once_whichever_way_it_arrives(shop: Shop) -> None:
    assert shop.deliver("orders/create", order_json())[0] == 200
    status, body = shop.deliver("refunds/create", refund_json(77, "25.00"))
    assert status == 200 and body["stored"], body
    net = "SELECT net_revenue, refunded FROM orders WHERE order_id = '#1001'"
    assert shop.rows(net) == [(65.0, 25.0)]
    # Shopify's orders/updated after the refund carries it too: still 25 refunded
    refunded = order_json(
        updated_at="2024-03-25T09:00:05-05:00",
        financial_status="partially_refunded",
        refunds=[refund_json(77, "25.00")],
    )
    assert shop.deliver("orders/updated", refunded)[0] == 200
    assert shop.rows(net) == [(65.0, 25.0)]
    # a later delivery whose refunds list misses it (a refund is never undone): kept
    fulfilled = order_json(updated_at="2024-03-25T10:00:00-05:00", refunds=[])
    assert shop.deliver("orders/fulfilled", fulfilled)[0] == 200
    assert shop.rows(net) == [(65.0, 25.0)]
    # a second refund, then the rest: refunded in full is no purchase any more
    assert shop.deliver("refunds/create", refund_json(78, "5.00"))[0] == 200
    assert shop.rows(net) == [(60.0, 30.0)]
    status, body = shop.deliver("refunds/create", refund_json(79, "60.00"))
    assert status == 200 and body["as"] == "not a purchase"
    assert shop.rows(net) == []
    assert shop.rows("SELECT status FROM excluded_orders WHERE order_id = '#1001'") == [
        ("refunded",)
    ]


def test_an_older_version_is_ignored_and_a_cancellation_excludes(shop: Shop) -> None:
    newer = order_json(updated_at="2024-03-22T00:00:00Z", subtotal_price="80.00")
    assert shop.deliver("orders/updated", newer)[0] == 200
    status, body = shop.deliver("orders/create", order_json())  # updated 2024-03-20: older
    assert status == 200 and body["stored"] is False and "older" in body["detail"]
    assert shop.rows("SELECT net_revenue FROM orders WHERE order_id = '#1001'") == [(80.0,)]
    cancelled = order_json(updated_at="2024-03-23T00:00:00Z", cancelled_at="2024-03-23T00:00:00Z")
    status, body = shop.deliver("orders/cancelled", cancelled)
    assert status == 200 and body["as"] == "not a purchase"
    assert shop.rows("SELECT count(*) FROM orders WHERE order_id = '#1001'") == [(0,)]
    assert shop.rows("SELECT status FROM excluded_orders WHERE order_id = '#1001'") == [
        ("cancelled",)
    ]


def test_a_refund_of_an_order_no_webhook_delivered_waits_for_it(shop: Shop) -> None:
    status, body = shop.deliver("refunds/create", refund_json(5, "3.00", order_id=42))
    assert status == 202 and body["stored"] is False and "orders/updated" in body["detail"]
    assert shop.rows("SELECT sum(refunded) FROM orders") == [(0.0,)]


@pytest.mark.parametrize(
    ("headers", "status", "words"),
    [
        ({"X-Shopify-Triggered-At": now_text(-dt.timedelta(days=3))}, 401, "stale"),
        ({"X-Shopify-Triggered-At": now_text(dt.timedelta(hours=1))}, 401, "stale"),
        ({"X-Shopify-Triggered-At": "yesterday"}, 400, "ISO 8601"),
        ({"X-Shopify-Topic": "orders/delete"}, 400, "not the path's topic"),
        ({"X-Shopify-Webhook-Id": " "}, 400, "Webhook-Id"),
    ],
)
def test_a_stale_or_malformed_delivery_is_refused(
    shop: Shop, db: Path, headers: dict[str, str], status: int, words: str
) -> None:
    got, body = shop.deliver("orders/create", order_json(), headers=headers)
    assert got == status and words in body["detail"]
    assert shop.rows("SELECT count(*) FROM orders WHERE order_id = '#1001'") == [(0,)]


def test_undone_privacy_topics_are_not_acknowledged_and_others_ignored(shop: Shop) -> None:
    status, body = shop.deliver("customers/data_request", {"customer": {"email": "a@b.co"}})
    assert status == 501 and "not do this yet" in body["detail"]
    status, body = shop.deliver("products/update", {"id": 1})
    assert status == 200 and body["taken"] is False
    status, body = shop.deliver("orders/create", None, body=b"not json")
    assert status == 400
    status, body = shop.deliver("orders/create", order_json(email=None, customer=None))
    assert status == 422 and "no customer identity" in body["detail"]


def test_a_delivery_to_a_public_name_needs_no_api_key(shop: Shop) -> None:
    """Shopify calls the shop's own name for this service and sends no API key: the
    signature is its proof. A read under that name without the key stays refused."""
    host = {"Host": "hooks.tea-shop.example"}
    assert shop.deliver("orders/create", order_json(), headers=host)[0] == 200
    status, _, _ = shop.served.request("GET", "/api/customers/jon@example.com", headers=host)
    assert status == 403


def test_without_a_secret_or_writes_no_webhook_is_taken(db: Path) -> None:
    app = create_app(db, KEY, warm=False)
    with Served(app) as served:
        status, body = Shop(served, app).deliver("orders/create", order_json())
        assert status == 403 and "RETAIN_SHOPIFY_SECRET" in body["detail"]
    app = create_app(db, writes=False, warm=False, shopify_secret=SECRET)
    with Served(app) as served:
        status, body = Shop(served, app).deliver("orders/create", order_json())
        assert status == 403 and "read-only" in body["detail"]


def customer_json(**changes: Any) -> dict[str, Any]:
    customer: dict[str, Any] = {
        "id": 115310627314723954,
        "email": "Jon@Example.com",
        "first_name": "Jon",
        "last_name": "Stark",
        "locale": "en-CA",
        "email_marketing_consent": {"state": "unsubscribed", "opt_in_level": "single_opt_in"},
    }
    customer.update(changes)
    return customer


def test_a_customers_new_details_and_consent_reach_their_page(shop: Shop) -> None:
    assert shop.deliver("orders/create", order_json())[0] == 200
    profile = shop.customer("jon@example.com")["profile"]
    # an order carries no consent (its checkout box is not one given since)
    assert profile["name"] == "Jon Snow" and profile["accepts_marketing"] is None
    status, body = shop.deliver("customers/update", customer_json(), webhook_id="c-1")
    assert status == 200 and body["stored"] and body["quarantined"] == [], body
    profile = shop.customer("jon@example.com")["profile"]
    assert profile["name"] == "Jon Stark" and profile["accepts_marketing"] is False
    assert shop.rows("SELECT locale FROM customers WHERE customer_id = 'jon@example.com'") == [
        ("en-CA",)
    ]
    # a resend of the same delivery is a duplicate; a customer new to the store is listed
    assert shop.deliver("customers/update", customer_json(), webhook_id="c-1")[1]["duplicate"]
    new = customer_json(email="ari@example.com", first_name="Ari", last_name=None)
    assert shop.deliver("customers/create", new)[0] == 200
    assert shop.rows(
        "SELECT c.name, l.customer_id IS NOT NULL FROM customers c LEFT JOIN listed_customers l "
        "USING (customer_id) WHERE customer_id = 'ari@example.com'"
    ) == [("Ari", True)]
    status, body = shop.deliver("customers/update", customer_json(email=None))
    assert status == 422 and "no customer identity" in body["detail"]


def test_a_redact_request_erases_the_customer_everywhere(shop: Shop) -> None:
    assert shop.deliver("orders/create", order_json())[0] == 200
    assert shop.deliver("customers/update", customer_json())[0] == 200
    assert shop.customer("jon@example.com")["orders"]["orders"] == 1  # cached now
    revenue = shop.rows("SELECT sum(net_revenue) FROM orders")[0][0]
    redact = {
        "shop_id": 954889,
        "shop_domain": "tea-shop.myshopify.com",
        "customer": {"id": 115310627314723954, "email": "jon@example.com", "phone": None},
        "orders_to_redact": [820982911946154508],
    }
    status, body = shop.deliver("customers/redact", redact, webhook_id="r-1")
    assert status == 200 and body["erased"] is True and body["remaining"] == {}, body
    # the page is gone at once, and no table names them
    status, _, _ = shop.served.request(
        "GET", "/api/customers/jon@example.com", headers={"X-API-Key": KEY}
    )
    assert status == 404
    for table, column in (
        ("customers", "email"),
        ("shopify_orders", "order_json"),
        ("quarantine", "raw"),
        ("orders", "customer_id"),
    ):
        assert shop.rows(
            f"SELECT count(*) FROM {table} WHERE contains(lower({column}), 'jon@example.com')"
        ) == [(0,)]
    # their order stays, unlinked, for the totals; the audit says who asked
    assert shop.rows("SELECT sum(net_revenue) FROM orders")[0][0] == pytest.approx(revenue)
    assert shop.rows("SELECT requested_by FROM erasures") == [("shopify:tea-shop.myshopify.com",)]
    again = shop.deliver("customers/redact", redact, webhook_id="r-1")[1]
    assert again["duplicate"] is True
    status, body = shop.deliver("customers/redact", redact, webhook_id="r-2")
    assert status == 200 and body["erased"] is False


# -- found by an adversarial pass --------------------------------------------------------
def test_a_redact_erases_every_customer_of_the_email(db: Path) -> None:
    from retain.ingest import ingest

    customers = db.parent / "customers.csv"
    customers.write_text("customer_id,email,name\nC-42,Jon@Example.com,Jon of the file\n")
    with Store(db) as store:
        ingest(store, customers, format="customers")
    app = create_app(db, KEY, warm=False, shopify_secret=SECRET)
    with Served(app) as served:
        shop = Shop(served, app)
        assert shop.deliver("orders/create", order_json())[0] == 200
        redact = {"customer": {"email": "jon@example.com"}, "orders_to_redact": []}
        status, body = shop.deliver("customers/redact", redact)
        assert status == 200 and body["erased"] and body["remaining"] == {}, body
        assert shop.rows(
            "SELECT count(*) FROM customers WHERE lower(email) = 'jon@example.com' "
            "OR customer_id IN ('C-42', 'jon@example.com')"
        ) == [(0,)]


def test_unsigned_headers_are_required_and_shapes_checked(shop: Shop) -> None:
    body = order_json()
    assert shop.deliver("orders/create", body, headers={"X-Shopify-Topic": ""})[0] == 400
    assert shop.deliver("orders/create", body, headers={"X-Shopify-Triggered-At": ""})[0] == 400
    for year in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"):
        assert (
            shop.deliver("orders/create", body, headers={"X-Shopify-Triggered-At": year})[0] == 400
        )
    # a signed order sent again as a redact request is no redact request
    status, answer = shop.deliver("customers/redact", body)
    assert status == 400 and "no redact request" in answer["detail"]
    deep = b"[" * 100_000 + b"]" * 100_000
    assert shop.deliver("orders/create", None, body=deep)[0] == 400
    odd = order_json(line_items=5, refunds=5, discount_codes=5, shipping_lines="x")
    status, answer = shop.deliver("orders/create", odd)
    assert status == 200 and answer["stored"], answer


def test_another_shop_is_refused_once_one_is_taken(shop: Shop) -> None:
    assert shop.deliver("orders/create", order_json())[0] == 200
    other = {"X-Shopify-Shop-Domain": "other-shop.myshopify.com"}
    status, body = shop.deliver("orders/create", order_json(id=5, name="#1001"), headers=other)
    assert status == 403 and "tea-shop.myshopify.com" in body["detail"]


def test_a_bad_line_is_left_out_and_the_order_kept(shop: Shop) -> None:
    items = [
        {"sku": "TEA-1", "title": "Green tea", "quantity": 2, "price": "30.00"},
        {"sku": "X" * 300, "title": "Long", "quantity": 1, "price": "10.00"},
        {"quantity": 1, "price": "5.00"},
    ]
    status, body = shop.deliver("orders/create", order_json(line_items=items))
    assert status == 200 and body["stored"], body
    assert any("line item 2 left out" in n for n in body["notes"])
    assert any("line item 3 left out" in n for n in body["notes"])
    assert shop.rows("SELECT sku FROM order_lines WHERE order_id = '#1001'") == [("TEA-1",)]


def test_failed_and_negative_refunds_give_nothing_back(shop: Shop) -> None:
    assert shop.deliver("orders/create", order_json())[0] == 200
    failed = refund_json(80, "50.00")
    failed["transactions"] = [{"kind": "refund", "status": "failure", "amount": "50.00"}]
    failed["refund_line_items"] = [{"subtotal": "30.00"}]
    assert shop.deliver("refunds/create", failed)[0] == 200
    negative = refund_json(81, "-50.00")
    assert shop.deliver("refunds/create", negative)[0] == 200
    assert shop.rows("SELECT net_revenue, refunded FROM orders WHERE order_id = '#1001'") == [
        (90.0, 0.0)
    ]


def test_an_older_customer_update_does_not_bring_consent_back(shop: Shop) -> None:
    assert shop.deliver("orders/create", order_json())[0] == 200
    newer = customer_json(updated_at="2024-03-22T00:00:00Z")
    assert shop.deliver("customers/update", newer)[0] == 200
    older = customer_json(
        updated_at="2024-03-21T00:00:00Z", email_marketing_consent={"state": "subscribed"}
    )
    status, body = shop.deliver("customers/update", older)
    assert status == 200 and body["stored"] is False and "older" in body["detail"]
    # nor does a later delivery of an order placed with the box ticked
    ticked = order_json(buyer_accepts_marketing=True, updated_at="2024-03-23T00:00:00Z")
    assert shop.deliver("orders/updated", ticked)[0] == 200
    assert shop.customer("jon@example.com")["profile"]["accepts_marketing"] is False


def test_a_delivery_without_a_time_leaves_the_stored_one(shop: Shop) -> None:
    newer = customer_json(updated_at="2024-03-22T00:00:00Z")
    assert shop.deliver("customers/update", newer)[0] == 200
    assert shop.deliver("customers/update", customer_json())[0] == 200  # no updated_at
    older = customer_json(
        updated_at="2024-03-21T00:00:00Z", email_marketing_consent={"state": "subscribed"}
    )
    assert shop.deliver("customers/update", older)[1]["stored"] is False
    assert shop.deliver("orders/updated", order_json(updated_at="2024-03-25T00:00:00Z"))[0] == 200
    untimed = order_json(subtotal_price="70.00")
    del untimed["updated_at"]
    assert shop.deliver("orders/updated", untimed)[0] == 200
    stale = order_json(updated_at="2024-03-24T00:00:00Z", subtotal_price="10.00")
    assert shop.deliver("orders/updated", stale)[1]["stored"] is False
    assert shop.rows("SELECT net_revenue FROM orders WHERE order_id = '#1001'") == [(70.0,)]
