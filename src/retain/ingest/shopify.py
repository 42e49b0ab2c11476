"""Reader for Shopify's native orders export (Admin > Orders > Export, CSV).

One row per line item; the order's own columns are filled only on its first
row. Exports differ between store versions and export apps, so only the
columns the rules use are required: ``Name`` (or ``Id``), ``Email``,
``Subtotal`` and ``Created at`` (or ``Paid at``).

Rules:
- the order is ``Name`` (or ``Id``); the customer is the lower-cased, trimmed ``Email``;
- net revenue = ``Subtotal`` (after discounts, before shipping and taxes)
  minus ``Refunded Amount``;
- ``Financial Status`` is the order's status (:mod:`retain.ingest.purchases`):
  an order with ``Cancelled at`` set, voided, refunded (or whose Refunded
  Amount is its whole Subtotal), pending or authorized is not a purchase: it is
  kept in ``excluded_orders``, with no lines, and an older stored version of it
  leaves ``orders``;
- the customer's name is ``Billing Name``; their identity fills in what the
  store lacks (see :meth:`~retain.ingest.load.Loader.write_customers_from_orders`);
- an order with no Email is quarantined: "no customer identity";
- line items go to ``order_lines``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from retain.errors import DataError, SchemaError
from retain.schema import ORDER_INPUT, ORDER_LINES

if TYPE_CHECKING:
    from retain.ingest.load import IngestReport, Loader


def _pick(columns: list[str], *names: str) -> str | None:
    lower = {c.strip().lower(): c for c in columns}
    for name in names:
        if name.lower() in lower:
            return lower[name.lower()]
    return None


def _col(name: str | None) -> str:
    return '"' + name.replace('"', '""') + '"' if name else "NULL"


def load(loader: Loader, columns: list[str], report: IngestReport) -> None:
    order_col = _pick(columns, "Name", "Id")
    email = _pick(columns, "Email")
    subtotal = _pick(columns, "Subtotal")
    created = _pick(columns, "Created at", "Paid at")
    missing = [
        label
        for label, found in (
            ("Name (or Id)", order_col),
            ("Email", email),
            ("Subtotal", subtotal),
            ("Created at (or Paid at)", created),
        )
        if found is None
    ]
    if missing:
        raise SchemaError(
            f"{loader.file}: this Shopify orders export lacks {', '.join(missing)}. "
            f"Found: {', '.join(columns)}. Needed: Name (or Id), Email, Subtotal, "
            "Created at (or Paid at)."
        )
    c = {
        "order": _col(order_col),
        "email": _col(email),
        "subtotal": _col(subtotal),
        "created": _col(created),
        "paid": _col(_pick(columns, "Paid at")),
        "status": _col(_pick(columns, "Financial Status")),
        "cancelled": _col(_pick(columns, "Cancelled at")),
        "refunded": _col(_pick(columns, "Refunded Amount")),
        "discount": _col(_pick(columns, "Discount Amount")),
        "discount_code": _col(_pick(columns, "Discount Code")),
        "shipping": _col(_pick(columns, "Shipping")),
        "taxes": _col(_pick(columns, "Taxes")),
        "currency": _col(_pick(columns, "Currency")),
        "source": _col(_pick(columns, "Source")),
        "billing_name": _col(_pick(columns, "Billing Name")),
        "marketing": _col(_pick(columns, "Accepts Marketing")),
        "li_name": _col(_pick(columns, "Lineitem name")),
        "li_sku": _col(_pick(columns, "Lineitem sku")),
        "li_qty": _col(_pick(columns, "Lineitem quantity")),
        "li_price": _col(_pick(columns, "Lineitem price")),
    }
    con = loader.con
    # The order's columns come from its first row; later rows carry only line items.
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _shop_orders AS
        WITH keyed AS (
            SELECT *, nullif(trim({c["order"]}), '') AS _retain_order FROM _raw
        )
        SELECT
            min(_retain_row)                                         AS _retain_row,
            _retain_order                                            AS _retain_s_order_id,
            lower(trim(arg_min({c["email"]}, _retain_row)))          AS _retain_s_customer_id,
            coalesce(arg_min(nullif(trim({c["created"]}), ''), _retain_row),
                     arg_min(nullif(trim({c["paid"]}), ''), _retain_row))
                                                                     AS _retain_s_ordered_at,
            arg_min({c["currency"]}, _retain_row)                    AS _retain_s_currency,
            arg_min({c["subtotal"]}, _retain_row)                    AS _retain_s_subtotal,
            arg_min({c["discount"]}, _retain_row)                    AS _retain_s_discount,
            arg_min({c["discount_code"]}, _retain_row)               AS _retain_s_discount_code,
            arg_min({c["shipping"]}, _retain_row)                    AS _retain_s_shipping,
            arg_min({c["taxes"]}, _retain_row)                       AS _retain_s_tax,
            arg_min({c["refunded"]}, _retain_row)                    AS _retain_s_refunded,
            arg_min({c["source"]}, _retain_row)                      AS _retain_s_channel,
            arg_min({c["billing_name"]}, _retain_row)                AS _retain_s_billing_name,
            arg_min({c["marketing"]}, _retain_row)                   AS _retain_s_accepts_marketing,
            CASE WHEN bool_or(nullif(trim({c["cancelled"]}), '') IS NOT NULL) THEN 'cancelled'
                 ELSE arg_min(nullif(trim(CAST({c["status"]} AS VARCHAR)), ''), _retain_row)
                 END                                                 AS _retain_s_status
        FROM keyed
        GROUP BY _retain_order
        """
    )
    # Rows with no order number belong to no order: set them aside.
    loader.add_quarantine(
        "SELECT _retain_row, "
        + repr(order_col)
        + " AS col, 'missing order number (Name or Id)' AS why, "
        "CAST(to_json(struct_pack("
        + ", ".join(f"{_col(x)} := {_col(x)}" for x in columns)
        + ")) AS VARCHAR) AS _raw_json FROM _raw WHERE nullif(trim("
        + c["order"]
        + "), '') IS NULL",
        "orders",
    )
    con.execute("DELETE FROM _shop_orders WHERE _retain_s_order_id IS NULL")
    # gross = subtotal + discount; net = subtotal - refunded (fees are not in the export)
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _shop AS SELECT s.*, r.* EXCLUDE (_retain_row) "
        "FROM _shop_orders s JOIN _raw r USING (_retain_row)"
    )
    mapping = {
        "order_id": "_retain_s_order_id",
        "customer_id": "_retain_s_customer_id",
        "ordered_at": "_retain_s_ordered_at",
        "currency": "_retain_s_currency",
        "gross": "_retain_s_subtotal",
        "discount": "_retain_s_discount",
        "discount_code": "_retain_s_discount_code",
        "shipping": "_retain_s_shipping",
        "tax": "_retain_s_tax",
        "refunded": "_retain_s_refunded",
        "channel": "_retain_s_channel",
        "status": "_retain_s_status",
        "email": "_retain_s_customer_id",
        "name": "_retain_s_billing_name",
    }
    layers = loader.order_layers(has_net=False)
    # gross is stored before discounts: add the discount back to Shopify's subtotal
    layers.insert(1, [("gross", "gross + discount")])
    checks = loader.order_checks(refund_rows=False)
    checks[0] = ("_t_gross IS NULL", "gross", "'missing Subtotal'")
    labels = {
        "order_id": order_col or "Name",
        "customer_id": email or "Email",
        "ordered_at": created or "Created at",
        "gross": subtotal or "Subtotal",
    }
    for canonical, label in (
        ("currency", "Currency"),
        ("discount", "Discount Amount"),
        ("discount_code", "Discount Code"),
        ("shipping", "Shipping"),
        ("tax", "Taxes"),
        ("refunded", "Refunded Amount"),
        ("status", "Financial Status"),
    ):
        labels[canonical] = _pick(columns, label) or label
    clean = loader.validate(
        ORDER_INPUT, "_shop", mapping, checks, layers, raw_columns=columns, labels=labels
    )
    bought = loader.write_orders(clean, report)
    # an order that is no longer a purchase keeps no lines
    con.execute(
        "DELETE FROM order_lines WHERE order_id IN (SELECT order_id FROM excluded_orders "
        "WHERE order_id IN (SELECT order_id FROM _written))"
    )
    report.customers = loader.write_customers_from_orders(
        bought,
        extra=(
            "any_value(customer_id) AS email, "
            "arg_max(name, ordered_at) FILTER (WHERE name IS NOT NULL) AS name, "
            "any_value(CASE WHEN lower(trim(s._retain_s_accepts_marketing)) IN ('yes', 'true', '1') "
            "THEN true WHEN lower(trim(s._retain_s_accepts_marketing)) IN ('no', 'false', '0') "
            "THEN false END) "
            "AS accepts_marketing"
        ),
        join=(
            "JOIN (SELECT _retain_s_order_id AS order_id, _retain_s_billing_name, _retain_s_accepts_marketing "
            "FROM _shop_orders) s USING (order_id)"
        ),
    )

    # line items of the orders that loaded
    if c["li_name"] == "NULL" and c["li_sku"] == "NULL":
        return
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _shop_lines AS
        SELECT r.*, o.order_id AS _retain_order_id,
               coalesce(nullif(trim({c["li_sku"]}), ''), nullif(trim({c["li_name"]}), '')) AS _retain_sku
        FROM _raw r
        JOIN (SELECT order_id, customer_id FROM {bought}) o
          ON o.order_id = nullif(trim(r.{c["order"]}), '')
        """
    )
    lines_mapping = {"order_id": "_retain_order_id", "sku": "_retain_sku"}
    if c["li_name"] != "NULL":
        lines_mapping["name"] = c["li_name"].strip('"')
    if c["li_qty"] != "NULL":
        lines_mapping["quantity"] = c["li_qty"].strip('"')
    if c["li_price"] != "NULL":
        lines_mapping["unit_price"] = c["li_price"].strip('"')
    lines = loader.validate(
        ORDER_LINES,
        "_shop_lines",
        lines_mapping,
        raw_columns=columns,
        labels={"sku": "Lineitem sku", "order_id": order_col or "Name"},
    )
    from retain.ingest import write_lines

    write_lines(loader, lines, report)


# -- webhooks -------------------------------------------------------------------------
# Shopify's order JSON (orders/create, orders/updated, ...) read by the rules above: the
# order is ``name`` (else ``id``), the customer the lower-cased e-mail, gross the subtotal
# with the discount added back, the status ``cancelled`` when ``cancelled_at`` is set,
# else ``financial_status``; the refunded amount is the sum of the order's refunds.


@dataclass
class WebhookOrder:
    """One Shopify order as a webhook delivered it: Shopify's own ``id``, when it was
    last changed (``updated_at``, naive UTC; None when not given), the order in the
    columns of ``POST /api/orders`` without ``refunded``, and the refunds it carries
    (refund id -> amount, as text)."""

    shopify_id: str
    updated_at: dt.datetime | None
    order: dict[str, Any]
    refunds: dict[str, str]


def _text(value: Any) -> str | None:
    """A JSON string or number as text (trimmed; None when blank); anything else None."""
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        return None
    text = str(value).strip()
    return text or None


def _items(value: Any) -> list[Mapping[str, Any]]:
    """The objects of a JSON list (anything else: none)."""
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def _object(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _decimal(value: Any) -> Decimal | None:
    text = _text(value)
    if text is None:
        return None
    try:
        number = Decimal(text)
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _amount(value: Any) -> str | None:
    """An amount as text: the number, or (not a number) the text as sent, for the ingest's
    checks to quarantine with its reason."""
    number = _decimal(value)
    return str(number) if number is not None else _text(value)


def webhook_time(value: Any) -> dt.datetime | None:
    """Shopify's ISO 8601 time (with its offset) as naive UTC; None when absent or unreadable."""
    text = _text(value)
    if text is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        if moment.tzinfo is not None:
            moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
    except (ValueError, OverflowError):  # not a time, or one beyond the years 1 to 9999
        return None
    return moment


def refund_amount(refund: Mapping[str, Any]) -> str:
    """What a Shopify refund gave back: its successful refund transactions (a refund that
    moved money only through failed ones gave back nothing); a refund with no transactions
    at all (items refunded, no money moved yet), the subtotals of its lines. Negative
    amounts are not refunds and count nothing."""
    transactions = _items(refund.get("transactions"))
    if transactions:
        paid = [
            _decimal(t.get("amount"))
            for t in transactions
            if str(t.get("kind", "refund")).lower() == "refund"
            and str(t.get("status", "success")).lower() == "success"
        ]
    else:
        paid = [_decimal(line.get("subtotal")) for line in _items(refund.get("refund_line_items"))]
    return str(sum((p for p in paid if p is not None and p > 0), Decimal(0)))


def order_from_webhook(payload: Mapping[str, Any]) -> WebhookOrder:
    """The order of an ``orders/*`` delivery by the export's rules (see the module's
    docstring). The customer's name is the customer's own (else the billing name); their
    marketing consent is not read from an order (a checkout's box is no consent given
    later: ``customers/update`` carries it). Raises :class:`~retain.errors.DataError`
    without an order number or a customer e-mail, as the file import quarantines such
    rows."""
    number = _text(payload.get("name")) or _text(payload.get("id"))
    if number is None:
        raise DataError("missing order number (name or id)", column="name")
    customer = _object(payload.get("customer"))
    email = (
        _text(payload.get("email"))
        or _text(payload.get("contact_email"))
        or _text(customer.get("email"))
    )
    if email is None or "@" not in email:
        raise DataError(f"order {number}: no customer identity (no email)", column="email")
    subtotal = _decimal(payload.get("subtotal_price"))
    discount = _decimal(payload.get("total_discounts"))
    shipping = _amount(
        _object(_object(payload.get("total_shipping_price_set")).get("shop_money")).get("amount")
    )
    if shipping is None and _items(payload.get("shipping_lines")):
        prices = [_decimal(s.get("price")) for s in _items(payload.get("shipping_lines"))]
        shipping = str(sum((p for p in prices if p is not None), Decimal(0)))
    name = _text(" ".join(str(_text(customer.get(k)) or "") for k in ("first_name", "last_name")))
    if name is None:
        name = _text(_object(payload.get("billing_address")).get("name"))
    codes = _items(payload.get("discount_codes"))
    order: dict[str, Any] = {
        "order_id": number,
        "customer_id": email.lower(),
        "email": email.lower(),
        "ordered_at": _text(payload.get("created_at")) or _text(payload.get("processed_at")),
        # the subtotal is after discounts: gross is before them, as the file import keeps it
        "gross": (
            str(subtotal + (discount or 0))
            if subtotal is not None
            else _text(payload.get("subtotal_price"))
        ),
        "discount": str(discount)
        if discount is not None
        else _amount(payload.get("total_discounts")),
        "shipping": shipping,
        "tax": _amount(payload.get("total_tax")),
        "currency": _text(payload.get("currency")),
        "channel": _text(payload.get("source_name")),
        "discount_code": _text(codes[0].get("code")) if codes else None,
        "status": "cancelled"
        if _text(payload.get("cancelled_at"))
        else _text(payload.get("financial_status")),
        "name": name,
        "lines": [
            {
                "sku": _text(item.get("sku"))
                or _text(item.get("title"))
                or _text(item.get("name")),
                "name": _text(item.get("title")) or _text(item.get("name")),
                "quantity": _amount(item.get("quantity")),
                "unit_price": _amount(item.get("price")),
            }
            for item in _items(payload.get("line_items"))
        ],
    }
    refunds = {
        str(r.get("id")): refund_amount(r)
        for r in _items(payload.get("refunds"))
        if _text(r.get("id")) is not None
    }
    return WebhookOrder(
        shopify_id=str(_text(payload.get("id")) or number),
        updated_at=webhook_time(payload.get("updated_at")),
        order={k: v for k, v in order.items() if v is not None and v != []},
        refunds=refunds,
    )


def with_refunds(order: Mapping[str, Any], refunds: Mapping[str, str]) -> dict[str, Any]:
    """``order`` with ``refunded``, the sum of ``refunds`` (none: no refunded column)."""
    total = sum((_decimal(a) or Decimal(0) for a in refunds.values()), Decimal(0))
    return {**order, "refunded": str(total)} if refunds else dict(order)


def customer_from_webhook(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The contact details of a ``customers/create`` or ``customers/update`` delivery:
    the customer is the lower-cased e-mail (as for orders), the name their first and last
    names, ``accepts_marketing`` their e-mail marketing consent (subscribed or not; the
    older ``accepts_marketing`` field when no consent is given). Raises
    :class:`~retain.errors.DataError` without an e-mail."""
    email = payload.get("email")
    if not isinstance(email, str) or "@" not in email or not email.strip():
        raise DataError(
            f"customer {_text(payload.get('id'))}: no customer identity (no email)",
            column="email",
        )
    state = _text(_object(payload.get("email_marketing_consent")).get("state"))
    marketing: bool | None
    if state is not None:
        marketing = state.lower() == "subscribed"
    else:
        given = payload.get("accepts_marketing")
        marketing = given if isinstance(given, bool) else None
    name = _text(" ".join(str(_text(payload.get(k)) or "") for k in ("first_name", "last_name")))
    record = {
        "customer_id": email.strip().lower(),
        "email": email.strip().lower(),
        "name": name,
        "accepts_marketing": marketing,
        "locale": _text(payload.get("locale")),
    }
    return {k: v for k, v in record.items() if v is not None}
