"""Every write request through the service is kept in ``api_audit``: who, what, when."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from retain.service import create_app
from service_helpers import Served
from store_helpers import store_of
from test_service_webhooks import ORDERS, SECRET, Shop, order_json

KEY = "an-audit-test-key-of-length"
ORDER = {"order_id": "n1", "customer_id": "a", "ordered_at": "2024-03-20", "net_revenue": 12}


def test_each_write_is_audited_with_its_caller_and_answer(tmp_path: Path) -> None:
    db = store_of(tmp_path, orders=ORDERS)
    app = create_app(db, KEY, warm=False, shopify_secret=SECRET)
    with Served(app) as served:
        good = served.request("POST", "/api/orders", ORDER, {"X-API-Key": KEY})
        assert good[0] == 201, good
        assert served.request("POST", "/api/orders", ORDER, {"X-API-Key": "wrong"})[0] == 401
        assert (
            served.request("POST", "/api/orders", {"order_id": "n2"}, {"X-API-Key": KEY})[0] == 422
        )
        assert served.request("GET", "/api/customers/a", headers={"X-API-Key": KEY})[0] == 200
        shop = Shop(served, app)
        assert shop.deliver("orders/create", order_json())[0] == 200
        forged = json.dumps(order_json()).encode()
        assert shop.deliver("orders/create", None, body=forged, signature="x")[0] == 401
        rows = shop.rows(
            "SELECT caller, method, route, status FROM api_audit ORDER BY requested_at"
        )
    key_id = "key:" + hashlib.sha256(KEY.encode()).hexdigest()[:12]
    assert rows == [
        (key_id, "POST", "/api/orders", 201),
        ("unknown", "POST", "/api/orders", 401),
        (key_id, "POST", "/api/orders", 422),
        ("shopify:tea-shop.myshopify.com", "POST", "/webhooks/shopify/{topic:path}", 200),
        ("unknown", "POST", "/webhooks/shopify/{topic:path}", 401),
    ]
    assert not any(KEY in str(row) for row in rows)  # the key itself is never kept


def test_a_keyless_service_audits_writes_from_this_machine(tmp_path: Path) -> None:
    db = tmp_path / "copy.duckdb"
    shutil.copy(store_of(tmp_path, orders=ORDERS), db)
    app = create_app(db, None, warm=False)
    with Served(app) as served:
        assert served.request("POST", "/api/orders", ORDER)[0] == 201
        rows = (
            app.state.service.store().con.execute("SELECT caller, status FROM api_audit").fetchall()
        )
    assert rows == [("loopback", 201)]
