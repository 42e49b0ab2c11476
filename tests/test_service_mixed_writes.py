"""Reads, orders, events and Shopify webhooks at once, some of them sent twice, against a
real ``retain serve`` process: afterwards every accepted write is in the store exactly
once, every refused one is absent, and no read failed."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from retain.store import Store
from store_helpers import scored_copy
from test_service_adversarial import request, retain_serve
from test_service_webhooks import now_text, order_json, sign

KEY = "a-mixed-writes-key-of-length"
SECRET = "shpss_mixed-writes-secret"
DAY = "1998-06-30"  # the sample's observation day: nothing may be later
SECONDS = 4.0
CLIENTS = 6


@pytest.fixture(scope="module")
def served(
    cdnow_sample_db: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, int, subprocess.Popen[str]]]:
    folder = tmp_path_factory.mktemp("mixed")
    db = scored_copy(cdnow_sample_db, folder / "mixed.duckdb")
    with Store(db, read_only=True) as store:
        ids = [r[0] for r in store.con.execute(
            "SELECT customer_id FROM customer_scores ORDER BY customer_id LIMIT 400"
        ).fetchall()]  # fmt: skip
    (folder / "ids.json").write_text(json.dumps(ids))
    env = {"RETAIN_API_KEY": KEY, "RETAIN_SHOPIFY_SECRET": SECRET}
    with retain_serve(db, env) as (process, port):
        yield db, port, process


def send(port: int, method: str, path: str, body: Any = None, headers: Any = None) -> int:
    raw = json.dumps(body).encode() if body is not None else None
    sent = {"X-API-Key": KEY, **({"Content-Type": "application/json"} if raw else {})}
    return request(port, method, path, raw, {**sent, **(headers or {})})[0]


def test_every_accepted_write_is_stored_once(
    served: tuple[Path, int, subprocess.Popen[str]],
) -> None:
    db, port, process = served
    customers = json.loads((db.parent / "ids.json").read_text())
    lock = threading.Lock()
    orders: dict[str, list[int]] = {}
    events: dict[str, list[int]] = {}
    hooks: dict[str, list[int]] = {}  # order name -> statuses (one webhook id each)
    reads: list[int] = []
    stop = time.monotonic() + SECONDS

    def client(seed: int) -> None:
        rng = random.Random(seed)
        n = 0
        while time.monotonic() < stop:
            n += 1
            tag = f"{seed}-{n}"
            roll = rng.random()
            customer = rng.choice(customers)
            if roll < 0.5:
                status = send(port, "GET", f"/api/customers/{customer}")
                with lock:
                    reads.append(status)
            elif roll < 0.7:
                order = {"order_id": f"mix-{tag}", "customer_id": customer,
                         "ordered_at": DAY, "net_revenue": 10 + n % 7}  # fmt: skip
                for _ in range(2 if n % 3 == 0 else 1):  # a retry sends it again
                    status = send(port, "POST", "/api/orders", order)
                    with lock:
                        orders.setdefault(order["order_id"], []).append(status)
            elif roll < 0.85:
                event = {"event_id": f"ev-{tag}", "kind": "product_view", "customer_id": customer,
                         "sku": f"SKU-{n % 5}", "occurred_at": DAY}  # fmt: skip
                for _ in range(2 if n % 3 == 0 else 1):
                    status = send(port, "POST", "/api/events", event)
                    with lock:
                        events.setdefault(event["event_id"], []).append(status)
            else:
                name = f"#W{tag}"
                body = json.dumps(
                    order_json(id=zlib.crc32(name.encode()), name=name,
                               email=f"shopper-{seed}@example.com",
                               created_at=f"{DAY}T08:00:00Z", updated_at=f"{DAY}T08:00:00Z")
                ).encode()  # fmt: skip
                headers = {
                    "Content-Type": "application/json",
                    "X-Shopify-Hmac-Sha256": sign(body, SECRET),
                    "X-Shopify-Topic": "orders/create",
                    "X-Shopify-Webhook-Id": f"hook-{tag}",
                    "X-Shopify-Shop-Domain": "mixed.myshopify.com",
                    "X-Shopify-Triggered-At": now_text(),
                }
                for _ in range(2 if n % 3 == 0 else 1):  # Shopify resends
                    status = request(
                        port, "POST", "/webhooks/shopify/orders/create", body, headers
                    )[0]
                    with lock:
                        hooks.setdefault(name, []).append(status)

    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(client, range(CLIENTS)))
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)

    assert reads and set(reads) == {200}, sorted(set(reads))
    for answers, ok in ((orders, 201), (events, 201), (hooks, 200)):
        accepted = [k for k, v in answers.items() if ok in v]
        resent = [k for k, v in answers.items() if len(v) > 1 and ok in v]
        assert len(accepted) >= 5 and resent, (len(accepted), len(resent))
    for kind, answers in (("orders", orders), ("events", events), ("hooks", hooks)):
        odd = {k: v for k, v in answers.items() if not set(v) <= {200, 201, 503}}
        assert not odd, (kind, list(odd.items())[:5])
    with Store(db, read_only=True) as store:

        def counted(sql: str, ids: list[str]) -> dict[str, int]:
            return dict(store.con.execute(sql, [ids]).fetchall())

        stored_orders = counted(
            "SELECT order_id, count(*) FROM (SELECT order_id FROM orders UNION ALL "
            "SELECT order_id FROM excluded_orders) WHERE order_id IN (SELECT unnest(?)) "
            "GROUP BY order_id",
            list(orders) + list(hooks),
        )
        stored_events = counted(
            "SELECT event_id, count(*) FROM events WHERE event_id IN (SELECT unnest(?)) "
            "GROUP BY event_id",
            list(events),
        )
    for answers, stored, ok in ((orders, stored_orders, 201), (events, stored_events, 201),
                                (hooks, stored_orders, 200)):  # fmt: skip
        for key, statuses in answers.items():
            if ok in statuses:  # accepted: there once
                assert stored.get(key) == 1, (key, statuses, stored.get(key))
            else:  # every answer refused it: not there
                assert key not in stored, (key, statuses)
