"""Erasing a customer on request (a data-protection law's right to erasure).

:func:`erase_customer` removes a customer from every table of the store, in one
transaction:

- every row that names them by id (any ``customer_id``, ``friend_id`` or
  ``referrer_id`` column: their profile, scores, audiences, outbox, clicks, coupons,
  suppressions, loyalty ledger, members, referrals, feedback, subscriptions,
  recommendation histories) is deleted, and with their feedback its tags and routes;
- their orders are, by ``orders``: ``"unlink"`` (the default) kept for the revenue
  totals under an anonymous id (``erased-`` and random hex) that nothing links to them,
  or ``"remove"``d with their lines and refunds;
- what was read of them from a file or a webhook goes too: the quarantine rows whose raw
  row names their id or e-mail, and the Shopify orders kept from webhooks;
- then every text column of every table is searched for their id (as a value, or quoted
  in JSON), e-mail and name; what is still found is reported in
  :attr:`ErasureReport.remaining` (free text of others, such as a review naming them).

An audit row in ``erasures`` records when, by whom (``requested_by``), how and how many
rows of each table: no id, e-mail or name. The CLI is ``retain erase CUSTOMER --yes``;
the service erases on Shopify's ``customers/redact`` webhook.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from retain.errors import ArgumentError, DataError
from retain.store import Store

ORDER_MODES = ("unlink", "remove")
#: columns that hold a customer's id
ID_COLUMNS = ("customer_id", "friend_id", "referrer_id")
#: the tables of orders, kept under the anonymous id when orders are unlinked
ORDER_TABLES = ("orders", "excluded_orders", "order_refunds")
AUDIT_DDL = """
CREATE TABLE IF NOT EXISTS erasures (
    erasure_id VARCHAR PRIMARY KEY, erased_at TIMESTAMP NOT NULL, requested_by VARCHAR NOT NULL,
    orders VARCHAR NOT NULL, rows_json VARCHAR NOT NULL)
"""


@dataclass
class ErasureReport:
    """What :func:`erase_customer` did: its audit id, the rows removed (or unlinked) per
    table, the anonymous id their kept orders carry (None when removed or none), and any
    text still naming them (table.column -> rows)."""

    erasure_id: str
    rows: dict[str, int] = field(default_factory=dict)
    anonymous_id: str | None = None
    remaining: dict[str, int] = field(default_factory=dict)
    dry_run: bool = False

    def summary(self) -> str:
        total = sum(self.rows.values())
        if self.dry_run:
            head = f"would erase or unlink {total:,} rows"
        else:
            head = f"erased or unlinked {total:,} rows (erasure {self.erasure_id})"
        parts = [f"{table} {n:,}" for table, n in sorted(self.rows.items()) if n]
        text = head + (": " + ", ".join(parts) if parts else "")
        if self.anonymous_id:
            text += (
                f"; their orders stay for the revenue totals under {self.anonymous_id}, "
                "which nothing links to them"
            )
        if self.remaining:
            found = ", ".join(f"{k} ({n:,})" for k, n in sorted(self.remaining.items()))
            text += f". Still mentioned in free text: {found}: review these by hand"
        return text


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _columns(con: Any) -> dict[str, dict[str, str]]:
    """Every base table of the store's main schema: column -> type."""
    tables: dict[str, dict[str, str]] = {}
    for table, column, kind in con.execute(
        "SELECT c.table_name, c.column_name, c.data_type FROM information_schema.columns c "
        "JOIN information_schema.tables t USING (table_catalog, table_schema, table_name) "
        "WHERE c.table_schema = 'main' AND t.table_type = 'BASE TABLE' "
        "AND c.table_catalog = current_database() ORDER BY c.table_name, c.ordinal_position"
    ).fetchall():
        tables.setdefault(str(table), {})[str(column)] = str(kind)
    return tables


def find_customer(store: Store, customer: str) -> tuple[str, str | None, str | None]:
    """The stored id, e-mail and name of ``customer`` (an id, or an e-mail in any case).
    Raises :class:`~retain.errors.DataError` when the store does not know them."""
    from retain.ingest import customer_key

    key = customer_key(customer)
    found = store.con.execute(
        "SELECT customer_id, email, name FROM customers WHERE customer_id = ? OR customer_id = ? "
        "OR lower(email) = lower(?) ORDER BY customer_id = ? DESC LIMIT 1",
        [customer, key, customer.strip(), key],
    ).fetchall()
    if found:
        cid, email, name = found[0]
        return str(cid), email, name
    for table in ORDER_TABLES:
        hit = store.con.execute(
            f"SELECT customer_id FROM {table} WHERE customer_id IN (?, ?) LIMIT 1",
            [customer, key],
        ).fetchall()
        if hit:
            return str(hit[0][0]), None, None
    raise DataError(f"no customer {customer!r} in the store {store.path}")


def erase_customer(
    store: Store,
    customer: str,
    *,
    orders: str | None = None,
    requested_by: str = "cli",
    dry_run: bool = False,
) -> ErasureReport:
    """Erase ``customer`` (an id or an e-mail) from the store: see the module docstring.
    ``orders``: ``unlink`` or ``remove`` (default: the store's ``erase_orders`` setting,
    unlink unless set). ``dry_run``: count what would go, change nothing."""
    if orders is None:
        from retain.config import load_settings

        orders = load_settings(store).erase_orders
    if orders not in ORDER_MODES:
        raise ArgumentError(f"orders must be one of {', '.join(ORDER_MODES)}, got {orders!r}")
    cid, email, name = find_customer(store, customer)
    report = ErasureReport(erasure_id=secrets.token_hex(8), dry_run=dry_run)
    try:
        with store.transaction() as con:
            _erase(con, _columns(con), cid, email, orders, report)
            report.remaining = _mentions(con, _columns(con), cid, email, name)
            if dry_run:
                raise _RollBack
            con.execute(AUDIT_DDL)
            con.execute(
                "INSERT INTO erasures VALUES (?, now()::TIMESTAMP, ?, ?, ?)",
                [report.erasure_id, requested_by, orders, json.dumps(report.rows, sort_keys=True)],
            )
    except _RollBack:  # a dry run: counted, and every change rolled back
        pass
    return report


class _RollBack(Exception):
    """Raised inside a dry run's transaction: the transaction rolls everything back."""


def _erase(
    con: Any,
    tables: dict[str, dict[str, str]],
    cid: str,
    email: str | None,
    orders: str,
    report: ErasureReport,
) -> None:
    def count(table: str, n: int) -> None:
        if n:
            report.rows[table] = report.rows.get(table, 0) + n

    def run(table: str, sql: str, params: list[Any]) -> None:
        """A DELETE or UPDATE; DuckDB answers it with the rows it changed."""
        found = con.execute(sql, params).fetchall()
        count(table, int(found[0][0]) if found and found[0][0] is not None else 0)

    order_ids = [
        r[0]
        for t in ORDER_TABLES
        if t in tables
        for r in con.execute(f"SELECT order_id FROM {t} WHERE customer_id = ?", [cid]).fetchall()
    ]
    # what hangs on their rows, before the rows themselves go
    if "feedback" in tables:
        ids = [
            r[0]
            for r in con.execute(
                "SELECT feedback_id FROM feedback WHERE customer_id = ?", [cid]
            ).fetchall()
        ]
        for table in ("feedback_tags", "feedback_routed"):
            if table in tables and ids:
                run(table, f"DELETE FROM {table} WHERE feedback_id IN (SELECT unnest(?))", [ids])
    if "recommend_history_customers" in tables and "recommend_histories" in tables:
        run(
            "recommend_histories",
            "DELETE FROM recommend_histories WHERE owner IN (SELECT owner FROM "
            "recommend_history_customers WHERE customer_id = ?)",
            [cid],
        )
    if "shopify_orders" in tables and order_ids:
        run(
            "shopify_orders",
            "DELETE FROM shopify_orders WHERE order_id IN (SELECT unnest(?))",
            [order_ids],
        )
    if "quarantine" in tables:
        # the raw rows as read (JSON text) that name them: their id as a value, their e-mail
        needles = [json.dumps(cid).lower()] + ([email.lower()] if email else [])
        named = " OR ".join("contains(lower(raw), ?)" for _ in needles)
        run("quarantine", f"DELETE FROM quarantine WHERE raw IS NOT NULL AND ({named})", needles)
    anonymous = None
    if orders == "unlink" and order_ids:
        anonymous = f"erased-{secrets.token_hex(6)}"
        report.anonymous_id = anonymous
    if orders == "remove" and order_ids and "order_lines" in tables:
        run(
            "order_lines",
            "DELETE FROM order_lines WHERE order_id IN (SELECT unnest(?))",
            [order_ids],
        )
    for table, columns in tables.items():
        if table == "erasures":
            continue
        for column in (c for c in ID_COLUMNS if c in columns):
            if anonymous is not None and table in ORDER_TABLES and column == "customer_id":
                run(
                    f"{table} (unlinked)",
                    f"UPDATE {table} SET customer_id = ? WHERE customer_id = ?",
                    [anonymous, cid],
                )
                continue
            run(
                table,
                f"DELETE FROM {_q(table)} WHERE {_q(column)} = ?",
                [cid],
            )
    if anonymous is not None and "customers" in tables:
        # the anonymous buyer of the kept orders: when and how they came, nothing of who
        first = con.execute(
            "SELECT min(ordered_at), arg_min(channel, ordered_at) FROM orders WHERE customer_id = ?",
            [anonymous],
        ).fetchall()[0]
        if first[0] is not None:
            con.execute(
                "INSERT INTO customers (customer_id, first_seen, acquisition_channel) "
                "VALUES (?, ?, ?)",
                [anonymous, first[0], first[1]],
            )


def _mentions(
    con: Any, tables: dict[str, dict[str, str]], cid: str, email: str | None, name: str | None
) -> dict[str, int]:
    """Text columns of every table that still hold the id (as a value, or quoted in
    JSON), the e-mail or the name (names of three letters or more): table.column -> rows."""
    found: dict[str, int] = {}
    needles = [json.dumps(cid).lower()] + [n.lower() for n in (email, name) if n and len(n) >= 3]
    named = " OR ".join("contains({text}, ?)" for _ in needles)
    for table, columns in tables.items():
        if table == "erasures":
            continue
        for column, kind in columns.items():
            if kind == "VARCHAR" or kind == "JSON":
                text = f"lower(CAST({_q(column)} AS VARCHAR))"
            elif kind.endswith("[]"):
                text = f"lower(array_to_string({_q(column)}, chr(31)))"
            else:
                continue
            hits = con.execute(
                f"SELECT count(*) FROM {_q(table)} WHERE {_q(column)} IS NOT NULL AND "
                f"(CAST({_q(column)} AS VARCHAR) = ? OR {named.format(text=text)})",
                [cid, *needles],
            ).fetchall()[0][0]
            if hits:
                found[f"{table}.{column}"] = int(hits)
    return found


__all__ = ["ORDER_MODES", "ErasureReport", "erase_customer", "find_customer"]
