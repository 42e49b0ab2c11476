"""Which orders are purchases, and refunds that adjust their orders.

Rules, for every orders reader (orders files, Shopify, ``POST /api/orders``):

- **Refund rows.** A row of an orders file is a refund row when it has a
  ``refund_of`` value (the order_id it refunds), or a negative ``gross``, or a
  negative ``net_revenue`` with no gross and no refunded amount. It refunds the order named
  by ``refund_of``, else by its own ``order_id``; that order must be in the same
  file or already in the store (``orders`` or ``excluded_orders``), otherwise the
  row is quarantined ("negative amount that is not a refund"). Its amount is
  ``refunded`` when given, else the size of ``gross``, else of ``net_revenue``
  (the same money written twice counts once), in the reporting currency. The
  row is kept in ``order_refunds`` and added to its order's ``refunded`` and
  subtracted from its ``net_revenue``; it is not an order of its own. Ingesting
  the same file again replaces its refund rows, it does not add them twice.
- **Not purchases.** An order is kept out of ``orders`` (so that no metric,
  model or segment counts it) and stored in ``excluded_orders`` with its
  ``status`` and ``reason`` when it is

  - refunded in full: refunded > 0 and net revenue plus fees at most 0 (a
    refund that leaves only the fees is a full refund), or a status "refunded";
  - cancelled or voided: status cancelled, canceled, voided, void, trash (or
    Shopify's ``Cancelled at``);
  - failed: status failed, declined, expired;
  - pending payment: status pending, authorized, unpaid, on-hold,
    awaiting_payment, unless the ingest is given ``pending_revenue=True``.

  A blank status is a paid order; :data:`retain.schema.ORDER_STATUSES` lists
  the accepted values, and any other status is quarantined. An order that is
  ingested again with another status moves between the two tables.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from retain.schema import ORDER_STATUSES, ORDERS

if TYPE_CHECKING:
    from retain.ingest.load import IngestReport, Loader

# Over the parsed columns of an orders row.
REFUND_ROW = (
    "(refund_of IS NOT NULL OR gross < 0 OR (gross = 0 AND net_revenue < 0 AND refunded = 0))"
)
REFUND_AMOUNT = (
    "CASE WHEN refunded > 0 THEN refunded WHEN gross <> 0 THEN abs(gross) ELSE abs(net_revenue) END"
)
# Within a cent: a refund of everything but the fees is a full refund.
FULLY_REFUNDED = "(refunded > 0 AND net_revenue + coalesce(fees, 0) <= 0.005)"
# excluded_orders.reason of an order that its amounts (not its status) set aside
REFUNDED_IN_FULL = "refunded in full"

STATUSES_EXPECTED = "paid, pending, refunded, cancelled, voided or failed (blank: paid)"


def status_sql(col: str = "status") -> str:
    """SQL: the status text in ``col`` as paid, pending, refunded, cancelled or failed;
    NULL for a status not in :data:`~retain.schema.ORDER_STATUSES`; paid when blank."""
    cases = " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in ORDER_STATUSES.items())
    return (
        f"CASE WHEN {col} IS NULL THEN 'paid' "
        f"ELSE CASE lower(replace(trim({col}), ' ', '_')) {cases} END END"
    )


def status_check() -> tuple[str, str, str]:
    """The validator's check that names an unknown status."""
    return (
        f"status IS NOT NULL AND ({status_sql()}) IS NULL",
        "status",
        f"'unknown order status: got ''' || status || ''', expected one of {STATUSES_EXPECTED}'",
    )


def split_refunds(loader: Loader, clean: str) -> tuple[str, str]:
    """Views of the clean rows that are orders and of those that are refund rows.

    Refund rows whose order is neither in the file nor in the store are quarantined."""
    orders, refunds = "_order_rows", "_refund_rows"
    con = loader.con
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW {orders} AS SELECT * FROM {clean} WHERE NOT {REFUND_ROW}"
    )
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW {refunds} AS SELECT *, coalesce(refund_of, order_id) "
        f"AS _target, {REFUND_AMOUNT} AS _amount FROM {clean} WHERE {REFUND_ROW}"
    )
    loader.sources[orders] = loader.sources[clean]
    loader.sources[refunds] = loader.sources[clean]
    checked, source, raw_cols = loader.sources[clean]
    # no refund row, no orphan: skip the look-up over every stored order_id (a second on
    # a store of millions of orders, paid by every POST /api/orders)
    if not loader.count(refunds):
        return orders, refunds
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _orphan_refunds AS SELECT _retain_row, _target, gross, "
        f"net_revenue, refund_of FROM {refunds} WHERE _target NOT IN ("
        f"SELECT order_id FROM {orders} UNION ALL SELECT order_id FROM orders "
        "UNION ALL SELECT order_id FROM excluded_orders)"
    )
    if not loader.count("_orphan_refunds"):
        return orders, refunds
    loader.add_quarantine(
        "SELECT o._retain_row, CASE WHEN o.refund_of IS NOT NULL THEN 'refund_of' "
        "WHEN o.gross < 0 THEN 'gross' ELSE 'net_revenue' END AS col, "
        "'negative amount that is not a refund: got ' || "
        "CAST(round(CASE WHEN o.gross < 0 THEN o.gross ELSE o.net_revenue END, 2) AS VARCHAR) || "
        "', and no order ''' || o._target || ''' in the file or the store to refund; "
        "expected 0 or more, or the order_id (or refund_of) of an order' AS why, "
        f"{loader.raw_json(raw_cols, 's')} AS _raw_json "
        f"FROM _orphan_refunds o JOIN {source} s USING (_retain_row)",
        "orders",
    )
    con.execute(
        f"UPDATE {checked} SET _problem = struct_pack(col := 'order_id', why := 'orphan refund') "
        "WHERE _retain_row IN (SELECT _retain_row FROM _orphan_refunds)"
    )
    return orders, refunds


def purchase_sql(loader: Loader) -> str:
    """SQL over a written row (with ``_status``): whether it is a purchase."""
    statuses = "('paid', 'pending')" if loader.pending_revenue else "('paid')"
    return f"(_status IN {statuses} AND NOT {FULLY_REFUNDED})"


def write(loader: Loader, order_rows: str, refund_rows: str | None, report: IngestReport) -> str:
    """Store the refund rows, then the orders (refunds applied) in ``orders`` or
    ``excluded_orders``; adjust stored orders that this file's refund rows refund.

    Every writer of ``orders`` and ``excluded_orders`` comes here, and this keeps an
    order_id once in the two tables together: a later row of the same order_id in
    ``order_rows`` is quarantined, and an order written replaces its stored version.

    Returns the temp view of the orders written that are purchases (ORDER_INPUT columns)."""
    con = loader.con
    file = loader.file
    # the first row of an order_id in the file is its order; later ones are quarantined
    loader.quarantine_duplicates(order_rows, "order_id", "orders")
    totals = "(SELECT order_id, sum(amount) AS amount FROM order_refunds GROUP BY order_id)"
    if refund_rows is not None:
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _refund_old AS SELECT order_id, sum(amount) AS amount "
            "FROM order_refunds WHERE source_file = ? GROUP BY order_id",
            [file],
        )
        con.execute("DELETE FROM order_refunds WHERE source_file = ?", [file])
        con.execute(
            "INSERT INTO order_refunds SELECT _target, customer_id, ordered_at, _amount, "
            f"currency, {loader.source_sql}, {loader.row_sql} FROM {refund_rows}"
        )
        report.refunds = loader.count(refund_rows)
    # a view, not a copy: each statement below reads the rows once, and a copy of millions
    # of rows costs its time and, beyond the ingest's memory bound, a spill to disk
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW _written AS SELECT o.* REPLACE ("
        "o.refunded + coalesce(r.amount, 0) AS refunded, "
        "o.net_revenue - coalesce(r.amount, 0) AS net_revenue), "
        f"{status_sql('o.status')} AS _status "
        f"FROM {order_rows} o LEFT JOIN {totals} r USING (order_id)"
    )
    purchase = purchase_sql(loader)
    names = ", ".join(c for c in ORDERS.column_names if c != "source_file")
    written = "(SELECT order_id FROM _written)"
    # customers whose orders this file gives to another customer (see Loader.drop_orphans)
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _moved_from AS SELECT DISTINCT s.customer_id FROM "
        "(SELECT order_id, customer_id FROM orders UNION ALL "
        "SELECT order_id, customer_id FROM excluded_orders) s "
        "JOIN _written w USING (order_id) WHERE s.customer_id <> w.customer_id"
    )
    # order_id is unique in orders and excluded_orders together by this delete and insert
    # (no index: keeping one costs a bulk ingest several times the insert itself); the
    # written ids are unique, as duplicates in a file were set aside above
    for table in ("orders", "excluded_orders"):
        con.execute(f"DELETE FROM {table} WHERE order_id IN {written}")
    con.execute(
        f"INSERT INTO orders ({names}, source_file) SELECT {names}, {loader.source_sql} "
        f"FROM _written WHERE {purchase}"
    )
    reason = (
        f"CASE WHEN _status = 'paid' THEN '{REFUNDED_IN_FULL}: ' || "
        "CAST(round(refunded, 2) AS VARCHAR) || ' refunded, net ' || "
        "CAST(round(net_revenue, 2) AS VARCHAR) "
        "WHEN _status = 'pending' THEN 'status ''' || status || ''': not revenue until paid' "
        "ELSE 'status ''' || status || '''' END"
    )
    status = "CASE WHEN _status = 'paid' THEN 'refunded' ELSE _status END"
    con.execute(
        f"INSERT INTO excluded_orders ({names}, source_file, status, reason) "
        f"SELECT {names}, {loader.source_sql}, {status}, {reason} FROM _written "
        f"WHERE NOT {purchase}"
    )
    report.orders = 0
    for bought, status_name, n in con.execute(
        f"SELECT {purchase}, CASE WHEN NOT {purchase} THEN {status} END, count(*) "
        "FROM _written GROUP BY ALL ORDER BY 2"
    ).fetchall():
        if bought:
            report.orders = int(n)
        elif bought is not None:
            report.excluded[str(status_name)] = int(n)
    report.skipped_cancelled = report.excluded.get("cancelled", 0)
    # no refund row in the file and none of an earlier ingest of it replaced: no stored
    # order's refunds change (the look-up over every written order_id is skipped)
    if refund_rows is not None and (report.refunds or loader.count("_refund_old")):
        _adjust_stored(loader, refund_rows)
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW _purchases AS SELECT * FROM _written WHERE {purchase}"
    )
    return "_purchases"


def _adjust_stored(loader: Loader, refund_rows: str) -> None:
    """Apply the change in this file's refunds to the stored orders it did not write."""
    con = loader.con
    # the file's refund rows, under its name or (a batch of API orders) their orders' own
    sources = f"(SELECT ? UNION SELECT {loader.source_sql} FROM {refund_rows})"
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _refund_delta AS SELECT order_id, "
        "coalesce(n.amount, 0) - coalesce(o.amount, 0) AS delta FROM "
        f"(SELECT order_id, sum(amount) AS amount FROM order_refunds WHERE source_file IN "
        f"{sources} GROUP BY order_id) n FULL JOIN _refund_old o USING (order_id) "
        "WHERE order_id NOT IN (SELECT order_id FROM _written)",
        [loader.file],
    )
    con.execute("DELETE FROM _refund_delta WHERE abs(delta) < 1e-9")
    for table in ("orders", "excluded_orders"):
        con.execute(
            f"UPDATE {table} SET refunded = {table}.refunded + d.delta, "
            f"net_revenue = {table}.net_revenue - d.delta FROM _refund_delta d "
            f"WHERE {table}.order_id = d.order_id"
        )
    names = ", ".join(ORDERS.column_names)
    touched = "order_id IN (SELECT order_id FROM _refund_delta)"
    con.execute(
        f"INSERT INTO excluded_orders ({names}, status, reason) SELECT {names}, 'refunded', "
        f"'{REFUNDED_IN_FULL} by refund rows: ' || CAST(round(refunded, 2) AS VARCHAR) || "
        f"' refunded, net ' || CAST(round(net_revenue, 2) AS VARCHAR) "
        f"FROM orders WHERE {touched} AND {FULLY_REFUNDED}"
    )
    con.execute(f"DELETE FROM orders WHERE {touched} AND {FULLY_REFUNDED}")
    # refund rows withdrawn: an order no longer refunded in full is a purchase again
    back = (
        f"{touched} AND status = 'refunded' AND reason LIKE '{REFUNDED_IN_FULL}%' "
        f"AND NOT {FULLY_REFUNDED}"
    )
    con.execute(f"INSERT INTO orders ({names}) SELECT {names} FROM excluded_orders WHERE {back}")
    con.execute(f"DELETE FROM excluded_orders WHERE {back}")


__all__ = ["FULLY_REFUNDED", "REFUND_ROW", "purchase_sql", "split_refunds", "status_sql", "write"]
