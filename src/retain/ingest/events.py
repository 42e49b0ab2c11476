"""The reader for browse and cart events, from a file (``--format events``) or
``POST /api/events``.

Columns: ``kind`` and ``occurred_at`` required; ``customer_id`` (an id or an e-mail, as in
orders) and/or ``anonymous_id`` (the visitor's cookie or device id), at least one;
``sku`` (needed for ``product_view`` and ``add_to_cart``); ``event_id`` (blank: one made
from the event's content, so the same event sent twice is stored once).

Kinds (:data:`KINDS`): ``page_view``, ``product_view``, ``add_to_cart`` and
``checkout_started``; ``view_item``, ``add-to-cart`` and other spellings of them are read
as them. Rules, beyond each column's type: an event names someone; it cannot be dated
after the observation date; an ``event_id`` stored before is replaced, and twice in one
file the later row is quarantined.

Identity: an event that carries both a customer and an anonymous id links the two
(``identities``): every event of that visitor, before and after, is then the
customer's. The campaign triggers ``cart_abandoned`` and ``browse_abandoned``
(:mod:`retain.campaigns.triggers`) read the customers' events.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from retain.schema import EVENTS

if TYPE_CHECKING:
    from retain.ingest.load import IngestReport, Loader
    from retain.store import Store

KINDS: dict[str, tuple[str, ...]] = {
    "page_view": ("page_view", "pageview", "page", "view", "screen_view"),
    "product_view": ("product_view", "view_item", "product_viewed", "item_view"),
    "add_to_cart": ("add_to_cart", "addtocart", "cart_add", "added_to_cart", "product_added"),
    "checkout_started": ("checkout_started", "begin_checkout", "checkout", "initiate_checkout"),
}
NEEDS_SKU = ("product_view", "add_to_cart")
ALIASES = {"occurred_at": ("timestamp", "created_at", "time"), "kind": ("event", "type")}
"""Other names a file may give a column (a column of the canonical name wins)."""


def load(
    loader: Loader, columns: list[str], mapping: Mapping[str, str] | None, report: IngestReport
) -> None:
    """Validate the events staged in ``_raw``, quarantine the bad rows with their reason,
    store the rest (a stored event_id is replaced) and link visitors to customers."""
    from retain.ingest.load import (
        AFTER_AS_OF,
        CUSTOMER_KEY,
        _as_text,
        _lit,
        require,
        resolve_mapping,
    )

    resolved = resolve_mapping(EVENTS, columns, mapping, loader.file)
    for canonical, others in ALIASES.items():
        for other in others:
            if canonical not in resolved and other in columns:
                resolved[canonical] = other
    require(EVENTS, resolved, columns, loader.file)
    spelled = " ".join(
        f"WHEN {_lit(alias)} THEN {_lit(name)}"
        for name, aliases in KINDS.items()
        for alias in aliases
    )
    content = (
        "coalesce(customer_id, '') || '|' || coalesce(anonymous_id, '') || '|' || kind || '|' "
        "|| coalesce(sku, '') || '|' || CAST(occurred_at AS VARCHAR)"
    )
    as_of = _lit(loader.as_of.isoformat(sep=" "))
    layers = [
        [
            ("customer_id", CUSTOMER_KEY),
            ("kind", f"CASE replace(replace(lower(kind), '-', '_'), ' ', '_') {spelled} END"),
            ("source_file", _lit(loader.file)),
        ],
        [("event_id", f"coalesce(event_id, 'h:' || md5({content}))")],
    ]
    checks = [
        (
            "kind IS NULL",
            "kind",
            f"'unknown event kind: got ''' || {_as_text('kind')} || ''', expected "
            f"{', '.join(KINDS)}'",
        ),
        (
            "customer_id IS NULL AND anonymous_id IS NULL",
            "customer_id",
            "'no one: an event needs a customer_id or an anonymous_id'",
        ),
        (
            f"kind IN ({', '.join(_lit(k) for k in NEEDS_SKU)}) AND sku IS NULL",
            "sku",
            "'no sku: a product_view or add_to_cart names the product'",
        ),
        (
            f"occurred_at > TIMESTAMP {as_of}",
            "occurred_at",
            f"'{AFTER_AS_OF} {loader.as_of.date()}: got ' || {_as_text('occurred_at')}",
        ),
    ]
    clean = loader.validate(EVENTS, "_raw", resolved, checks, layers, raw_columns=columns)
    loader.quarantine_duplicates(clean, "event_id", "events")
    con = loader.con
    # said by e-mail where the orders name customers by id: the customer with that e-mail
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _events AS SELECT e.* REPLACE (coalesce(m.customer_id, "
        f"e.customer_id) AS customer_id) FROM {clean} e LEFT JOIN (SELECT lower(email) AS email, "
        "min(customer_id) AS customer_id FROM customers WHERE email LIKE '%_@_%' "
        "GROUP BY lower(email)) m ON e.customer_id = m.email"
    )
    # a visitor who says who they are is that customer, from their first event on
    con.execute(
        "INSERT OR REPLACE INTO identities SELECT anonymous_id, arg_max(customer_id, occurred_at), "
        "now()::TIMESTAMP FROM _events WHERE anonymous_id IS NOT NULL AND customer_id IS NOT NULL "
        "GROUP BY anonymous_id"
    )
    names = ", ".join(EVENTS.column_names)
    con.execute(
        f"INSERT OR REPLACE INTO events ({names}) SELECT e.* REPLACE (coalesce(e.customer_id, "
        "i.customer_id) AS customer_id) FROM (SELECT " + names + " FROM _events) e "
        "LEFT JOIN identities i USING (anonymous_id)"
    )
    con.execute(
        "UPDATE events SET customer_id = i.customer_id FROM identities i "
        "WHERE events.anonymous_id = i.anonymous_id AND events.customer_id IS NULL "
        "AND i.anonymous_id IN (SELECT anonymous_id FROM _events WHERE customer_id IS NOT NULL)"
    )
    report.events = loader.count("_events")
    con.execute("DROP TABLE IF EXISTS _events")


def ingest_records(store: Store, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Events sent as records (``POST /api/events``), checked by the file's rules: see
    :func:`retain.ingest.load.ingest_api_records`."""
    from retain.ingest.load import ingest_api_records

    return ingest_api_records(
        store,
        records,
        route="/api/events",
        table=EVENTS,
        load=load,
        stored=lambda report: report.events,
    )
