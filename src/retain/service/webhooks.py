"""Shopify's webhooks: ``POST /webhooks/shopify/{topic}``.

A shop's app sends each order as it is created, paid, changed, cancelled or refunded.
A delivery is taken when:

- its ``X-Shopify-Hmac-Sha256`` is the base64 HMAC-SHA256 of the raw body under the
  app's shared secret (``RETAIN_SHOPIFY_SECRET``), compared in constant time: else 401;
- its ``X-Shopify-Topic`` is the topic of the path: else 400;
- it carries ``X-Shopify-Webhook-Id``: else 400. A delivery whose id was taken before (a
  resend, or a replay) changes nothing and is answered 200 with ``duplicate``;
- it is not stale: an ``X-Shopify-Triggered-At`` more than :data:`MAX_AGE` ago (or more
  than :data:`MAX_AHEAD` ahead of this clock) is refused with 401.

The order is read by the rules of the Shopify file import
(:func:`retain.ingest.shopify.order_from_webhook`) and stored through the writer of
``POST /api/orders``: the same checks and quarantine, a stored order replaced, the
customer rescored. Each Shopify order is kept as last delivered (``shopify_orders``):
a delivery older than the stored one (its ``updated_at``) is ignored, and a
``refunds/create`` adds its refund to the stored order, which is then written again
with the refunds summed, so that a refund arriving twice (by ``refunds/create`` and in
the next ``orders/updated``) counts once. A refund of an order no webhook delivered is
left to that order's ``orders/updated``, which carries it.

``customers/create`` and ``customers/update`` store the customer's contact details and
e-mail marketing consent by a customers file's rules. ``customers/redact`` erases the
customer from every table (:mod:`retain.erase`; their orders as the ``erase_orders``
setting says) and forgets every answer the service had cached.

Answers are 200 for a delivery taken (stored, quarantined, erased, a duplicate or
ignored), 422 for an order or customer that names no one (no number, no e-mail), 503
with ``Retry-After`` when the writer is behind (Shopify sends it again) and 403 when the
service takes no webhooks (no secret, or read-only). Other topics are acknowledged and
ignored, but ``shop/redact`` and ``customers/data_request`` are answered 501: the
service does not do them yet.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from retain.errors import DataError
from retain.ingest.shopify import (
    customer_from_webhook,
    order_from_webhook,
    refund_amount,
    webhook_time,
    with_refunds,
)
from retain.service.api import OrderIn, OrderLineIn, ServiceDep, write_queue
from retain.service.app import Service
from retain.service.orders import WritesBusy

router = APIRouter(tags=["webhooks"])

ORDER_TOPICS = (
    "orders/create",
    "orders/updated",
    "orders/paid",
    "orders/cancelled",
    "orders/fulfilled",
    "orders/partially_fulfilled",
)
REFUND_TOPICS = ("refunds/create",)
CUSTOMER_TOPICS = ("customers/create", "customers/update")
REDACT_TOPIC = "customers/redact"
#: privacy topics Shopify requires an app to act on that the service does not do (yet):
#: not acknowledged
UNDONE_TOPICS = ("shop/redact", "customers/data_request")
MAX_AGE = dt.timedelta(hours=48)
"""The oldest delivery taken, by ``X-Shopify-Triggered-At``: Shopify resends a failed
delivery for less than this."""
MAX_AHEAD = dt.timedelta(minutes=5)
"""How far ahead of this machine's clock a delivery's time may be (clocks differ)."""
SECRET_VARIABLE = "RETAIN_SHOPIFY_SECRET"
SHOP_KEY = "shopify_shop"  # Service.extras: the shop whose webhooks this store takes


def signature(secret: str, body: bytes) -> str:
    """What Shopify sends in ``X-Shopify-Hmac-Sha256``: the base64 HMAC-SHA256 of ``body``."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def _problem(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


@dataclass
class _Prepared:
    """What a delivery asks of the writer: ``order`` to store, or ``answer`` at once."""

    order: dict[str, Any] | None = None
    order_id: str | None = None
    answer: JSONResponse | None = None
    outcome: str = ""
    kept: tuple[str, dict[str, Any], dt.datetime | None, dict[str, str]] | None = None
    notes: list[str] = field(default_factory=list)


@router.post(
    "/webhooks/shopify/{topic:path}",
    summary="A Shopify webhook delivery (signed with the app's secret)",
    responses={
        401: {"description": "The signature does not match, or the delivery is stale."},
        403: {"description": "The service takes no webhooks (no secret, or read-only)."},
        501: {"description": "shop/redact or customers/data_request: not done yet."},
        503: {"description": "The writer is behind: send it again after Retry-After seconds."},
    },
)
async def shopify_webhook(topic: str, request: Request, service: ServiceDep) -> JSONResponse:
    """Take one delivery of Shopify's ``orders/*`` or ``refunds/create`` (see the module's
    docstring for what is checked and what each answer means)."""
    secret = service.shopify_secret
    if not service.writes:
        return _problem(403, "this service was started read-only (--read-only): no webhooks")
    if not secret:
        return _problem(
            403, f"Shopify webhooks are off: set {SECRET_VARIABLE} to the app's shared secret"
        )
    body = await request.body()
    given = request.headers.get("x-shopify-hmac-sha256", "").strip()
    if not given or not hmac.compare_digest(given.encode(), signature(secret, body).encode()):
        return _problem(401, "the X-Shopify-Hmac-Sha256 signature does not match the body")
    # the headers are not signed: each is required, so that a signed body cannot be sent
    # again without them, under another topic, or (Triggered-At) long after
    sent_topic = request.headers.get("x-shopify-topic")
    if sent_topic is None or sent_topic.strip().lower() != topic.lower():
        return _problem(400, f"X-Shopify-Topic {sent_topic!r} is not the path's topic {topic!r}")
    webhook_id = (request.headers.get("x-shopify-webhook-id") or "").strip()
    if not webhook_id:
        return _problem(400, "no X-Shopify-Webhook-Id: a delivery needs its id")
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    sent_at = request.headers.get("x-shopify-triggered-at")
    triggered = webhook_time(sent_at)
    if triggered is None:
        return _problem(400, f"X-Shopify-Triggered-At {sent_at!r} is not an ISO 8601 time")
    if now - triggered > MAX_AGE or triggered - now > MAX_AHEAD:
        return _problem(
            401,
            f"stale delivery: triggered at {triggered.isoformat()} UTC, not within "
            f"{MAX_AGE.total_seconds() / 3600:.0f} hours of now",
        )
    topic = topic.lower()
    if topic in UNDONE_TOPICS:
        return _problem(501, f"{topic}: this service does not do this yet")
    if topic not in (*ORDER_TOPICS, *REFUND_TOPICS, *CUSTOMER_TOPICS, REDACT_TOPIC):
        return JSONResponse({"taken": False, "detail": f"topic {topic} is not used"})
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return _problem(400, "the body is not JSON (or nests too deep)")
    if not isinstance(payload, dict):
        return _problem(400, "the body is not a JSON object")
    wrong = _shape(topic, payload)
    if wrong:
        return _problem(400, f"{topic}: {wrong}")
    shop = (request.headers.get("x-shopify-shop-domain") or "").strip().lower() or None
    seen = await run_in_threadpool(_seen, service, webhook_id)
    if seen is not None:  # a resend or a replay: taken before (two at once both run,
        return _duplicate(webhook_id, seen)  # and store the same thing)
    other = _other_shop(service, shop)
    if other is not None:
        return _problem(
            403,
            f"this store takes the webhooks of {other}, not of {shop}: one store is one shop's",
        )
    if topic in CUSTOMER_TOPICS or topic == REDACT_TOPIC:
        handle = _customer if topic in CUSTOMER_TOPICS else _redact
        taken: JSONResponse = await run_in_threadpool(
            handle, service, topic, webhook_id, shop, payload
        )
        return taken
    prepared = await run_in_threadpool(_prepare, service, topic, webhook_id, payload)
    if prepared.answer is not None:
        if prepared.outcome:
            await run_in_threadpool(_record, service, webhook_id, topic, shop, prepared.outcome)
        return prepared.answer
    assert prepared.order is not None
    try:
        result = await asyncio.wrap_future(write_queue(service).submit(prepared.order))
    except WritesBusy as exc:  # not recorded: Shopify sends it again
        return JSONResponse(
            {"detail": str(exc), "stored": False},
            status_code=503,
            headers={"Retry-After": str(exc.retry_after)},
        )
    outcome = f"stored as {result['as']}" if result["stored"] else "quarantined"
    await run_in_threadpool(_record, service, webhook_id, topic, shop, outcome)
    answer = {
        k: result.get(k)
        for k in ("stored", "as", "order_id", "customer_id", "quarantined", "rescored", "notes")
    }
    answer["notes"] = [*prepared.notes, *(answer["notes"] or [])]
    return JSONResponse({"taken": True, "webhook_id": webhook_id, **answer})


def _shape(topic: str, payload: dict[str, Any]) -> str | None:
    """What a payload of ``topic`` lacks (None: it has the shape of one): a signed body of
    one topic sent again under another is refused."""
    if topic in ORDER_TOPICS and "line_items" not in payload and "subtotal_price" not in payload:
        return "the body is no order (no line_items or subtotal_price)"
    if topic in REFUND_TOPICS and ("order_id" not in payload or "line_items" in payload):
        return "the body is no refund (no order_id)"
    if topic in CUSTOMER_TOPICS and ("line_items" in payload or "orders_to_redact" in payload):
        return "the body is no customer"
    if topic == REDACT_TOPIC and (
        "orders_to_redact" not in payload or not isinstance(payload.get("customer"), dict)
    ):
        return "the body is no redact request (no customer and orders_to_redact)"
    return None


def _other_shop(service: Service, shop: str | None) -> str | None:
    """The shop this store took webhooks of, when ``shop`` is another (else None). The
    first shop taken is looked up once, then held (``Service.extras``)."""
    if shop is None:
        return None
    pinned = service.extras.get(SHOP_KEY)
    if pinned is None:
        found = (
            service.store()
            .con.execute("SELECT shop FROM shopify_deliveries WHERE shop IS NOT NULL LIMIT 1")
            .fetchall()
        )
        if not found:
            return None
        pinned = service.extras[SHOP_KEY] = str(found[0][0])
    return None if pinned == shop else str(pinned)


def _prepare(service: Service, topic: str, webhook_id: str, payload: dict[str, Any]) -> _Prepared:
    """Under the write lock: the Shopify order's stored
    state is brought up to date and the order to write is returned."""
    store = service.store()
    with service.write_lock:
        prepared = _refund(store, payload) if topic in REFUND_TOPICS else _order(store, payload)
        if prepared.order is None:
            return prepared
        try:
            prepared.order, prepared.notes = _checked(prepared.order)
        except (ValidationError, DataError, ValueError) as exc:
            return _Prepared(
                answer=_problem(422, f"order {prepared.order_id}: {exc}"),
                outcome="refused: not an order",
            )
        if prepared.kept is not None:  # kept as delivered once it is an order to store
            _keep(store, *prepared.kept)
        return prepared


MAX_LINES = 1_000
"""The most line items of one order stored (``POST /api/orders`` takes as many)."""


def _checked(order: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``order`` as ``POST /api/orders`` takes it, and what was left out of it: a line
    item that is no line (no sku or title, a field too long) is left out with a note, as
    the file import quarantines a bad line and keeps the order; so is a discount code too
    long to be one. Raises pydantic's ValidationError when the order itself is none."""
    notes: list[str] = []
    lines: list[dict[str, Any]] = []
    for number, line in enumerate(order.get("lines") or [], start=1):
        if len(lines) == MAX_LINES:
            notes.append(f"line items after the first {MAX_LINES:,} left out")
            break
        try:
            lines.append(OrderLineIn(**line).model_dump(exclude_none=True))
        except (ValidationError, DataError, ValueError) as exc:
            first = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
            notes.append(f"line item {number} left out: {first}")
    rest = {k: v for k, v in order.items() if k != "lines"}
    code = rest.get("discount_code")
    if isinstance(code, str) and len(code) > 200:
        notes.append(f"discount code left out: {len(code):,} characters long, at most 200")
        del rest["discount_code"]
    checked = OrderIn(**rest, lines=[]).model_dump(exclude_none=True)
    checked["lines"] = lines
    return checked, notes


def _order(store: Any, payload: dict[str, Any]) -> _Prepared:
    try:
        delivered = order_from_webhook(payload)
    except DataError as exc:
        return _Prepared(answer=_problem(422, str(exc)), outcome=f"refused: {exc}")
    stored = store.con.execute(
        "SELECT updated_at, refunds_json FROM shopify_orders WHERE shopify_id = ?",
        [delivered.shopify_id],
    ).fetchall()
    refunds = dict(delivered.refunds)
    if stored:
        updated_at, refunds_json = stored[0]
        newer = delivered.updated_at
        if updated_at is not None and newer is not None and newer < updated_at:
            detail = (
                f"order {delivered.order['order_id']}: this version ({newer.isoformat()}) is "
                f"older than the one stored ({updated_at.isoformat()}): ignored"
            )
            return _Prepared(
                answer=JSONResponse({"taken": True, "stored": False, "detail": detail}),
                outcome="older than stored",
            )
        # refunds known from refunds/create stay; the order's own list wins on an id
        refunds = {**json.loads(refunds_json), **refunds}
    # a delivery without a time leaves the stored one, so that an older one is still known
    newest = (
        delivered.updated_at
        if delivered.updated_at is not None
        else (stored[0][0] if stored else None)
    )
    return _Prepared(
        order=with_refunds(delivered.order, refunds),
        order_id=str(delivered.order["order_id"]),
        kept=(delivered.shopify_id, delivered.order, newest, refunds),
    )


def _refund(store: Any, payload: dict[str, Any]) -> _Prepared:
    refund_id, shopify_id = payload.get("id"), payload.get("order_id")
    if refund_id is None or shopify_id is None:
        return _Prepared(
            answer=_problem(422, "a refund needs its id and order_id"),
            outcome="refused: no refund id or order id",
        )
    stored = store.con.execute(
        "SELECT order_json, refunds_json, updated_at FROM shopify_orders WHERE shopify_id = ?",
        [str(shopify_id)],
    ).fetchall()
    if not stored:
        return _Prepared(
            answer=JSONResponse(
                {
                    "taken": True,
                    "stored": False,
                    "detail": f"refund {refund_id} of Shopify order {shopify_id}, which no "
                    "webhook delivered: its orders/updated delivery carries the refund",
                },
                status_code=202,
            ),
            outcome="order unknown",
        )
    order_json, refunds_json, updated_at = stored[0]
    order = json.loads(order_json)
    refunds = {**json.loads(refunds_json), str(refund_id): refund_amount(payload)}
    return _Prepared(
        order=with_refunds(order, refunds),
        order_id=str(order["order_id"]),
        kept=(str(shopify_id), order, updated_at, refunds),
    )


def _keep(
    store: Any,
    shopify_id: str,
    order: dict[str, Any],
    updated_at: dt.datetime | None,
    refunds: dict[str, str],
) -> None:
    store.con.execute(
        "INSERT OR REPLACE INTO shopify_orders VALUES (?, ?, ?, ?, ?, now()::TIMESTAMP)",
        [shopify_id, str(order["order_id"]), updated_at, json.dumps(order), json.dumps(refunds)],
    )


def _customer(
    service: Service, topic: str, webhook_id: str, shop: str | None, payload: dict[str, Any]
) -> JSONResponse:
    """A customer's new contact details (``customers/create``, ``customers/update``),
    stored at once under the write lock by the customers file's rules; the customer's row
    is rescored so that their page shows them."""
    from retain.service.api import rescore_written
    from retain.service.orders import ingest_customer, quarantined_rows

    try:
        record = customer_from_webhook(payload)
    except DataError as exc:
        _record(service, webhook_id, topic, shop, f"refused: {exc}")
        return _problem(422, str(exc))
    store = service.store()
    updated = webhook_time(payload.get("updated_at"))
    with service.write_lock:
        customer_id = record["customer_id"]
        last = store.con.execute(
            "SELECT updated_at FROM shopify_customers WHERE customer_id = ?", [customer_id]
        ).fetchall()
        if last and last[0][0] is not None and updated is not None and updated < last[0][0]:
            _record(service, webhook_id, topic, shop, "older than stored", locked=True)
            detail = (
                f"customer {customer_id}: this version ({updated.isoformat()}) is older than "
                f"the one stored ({last[0][0].isoformat()}): ignored"
            )
            return JSONResponse({"taken": True, "stored": False, "detail": detail})
        report = ingest_customer(store, record, source=f"webhook:{topic}")
        # a delivery without a time leaves the stored one: an older one is still known
        newest = updated if updated is not None else (last[0][0] if last else None)
        store.con.execute(
            "INSERT OR REPLACE INTO shopify_customers VALUES (?, ?)", [customer_id, newest]
        )
        problems = quarantined_rows(store, report.file) if report.quarantined else []
        ordered = store.con.execute(
            "SELECT count(*) FROM orders WHERE customer_id = ?", [customer_id]
        ).fetchall()[0][0]
        if ordered:
            rescore_written(service, store, [customer_id])
        else:
            service.invalidate()
    stored = not problems
    _record(service, webhook_id, topic, shop, "stored" if stored else "quarantined")
    return JSONResponse(
        {
            "taken": True,
            "webhook_id": webhook_id,
            "stored": stored,
            "customer_id": customer_id,
            "quarantined": problems,
        }
    )


def _redact(
    service: Service, topic: str, webhook_id: str, shop: str | None, payload: dict[str, Any]
) -> JSONResponse:
    """``customers/redact``: erase the customer of ``customer.email`` from every table
    (:func:`retain.erase.erase_customer`, orders as the ``erase_orders`` setting says),
    and forget every cached answer that held them."""
    from retain.erase import erase_customer

    customer = payload.get("customer")
    email = customer.get("email") if isinstance(customer, dict) else None
    if not isinstance(email, str) or not email.strip():
        _record(service, webhook_id, topic, shop, "refused: no customer email")
        return _problem(422, "customers/redact: no customer.email to erase")
    store = service.store()
    with service.write_lock:
        # the orders Shopify names, as stored: by their Shopify id, kept from webhooks
        shopify_ids = [str(i) for i in payload.get("orders_to_redact") or [] if i is not None]
        order_ids = [
            str(r[0])
            for r in store.con.execute(
                "SELECT order_id FROM shopify_orders WHERE shopify_id IN (SELECT unnest(?))",
                [shopify_ids],
            ).fetchall()
        ]
        try:
            report = erase_customer(
                store, email, requested_by=f"shopify:{shop or 'unknown'}", order_ids=order_ids
            )
        except DataError:
            report = None
        finally:
            service.forget_everything()
    if report is None:  # nothing of them here: done, as far as this store goes
        _record(service, webhook_id, topic, shop, "nothing to erase")
        return JSONResponse(
            {"taken": True, "erased": False, "detail": "no such customer in the store"}
        )
    _record(service, webhook_id, topic, shop, f"erased ({report.erasure_id})")
    return JSONResponse(
        {
            "taken": True,
            "erased": True,
            "erasure_id": report.erasure_id,
            "rows": report.rows,
            "remaining": report.remaining,
        }
    )


def _seen(service: Service, webhook_id: str) -> str | None:
    """What became of the delivery ``webhook_id`` when it was taken before, else None."""
    found = (
        service.store()
        .con.execute("SELECT outcome FROM shopify_deliveries WHERE webhook_id = ?", [webhook_id])
        .fetchall()
    )
    return str(found[0][0]) if found else None


def _duplicate(webhook_id: str, outcome: str) -> JSONResponse:
    return JSONResponse(
        {
            "taken": True,
            "duplicate": True,
            "webhook_id": webhook_id,
            "detail": f"delivery {webhook_id} was taken before ({outcome}): nothing changed",
        }
    )


def _record(
    service: Service,
    webhook_id: str,
    topic: str,
    shop: str | None,
    outcome: str,
    *,
    locked: bool = False,
) -> None:
    """Keep the delivery's id: a resend of it is then a duplicate. ``locked``: the caller
    holds the write lock."""
    insert = "INSERT OR IGNORE INTO shopify_deliveries VALUES (?, ?, ?, now()::TIMESTAMP, ?)"
    values = [webhook_id, topic, shop, outcome[:500]]
    if locked:
        service.store().con.execute(insert, values)
        return
    with service.write_lock:
        service.store().con.execute(insert, values)
