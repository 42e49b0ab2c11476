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
from collections.abc import Sequence
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


@dataclass(frozen=True)
class Target:
    """Who an erasure is of: the stored ids of every customer it names (the id given, and
    every customer with that e-mail), and their e-mails and names."""

    ids: tuple[str, ...]
    emails: tuple[str, ...]
    names: tuple[str, ...]

    @property
    def needles(self) -> list[str]:
        """The values that name them, lower-cased: ids and e-mails."""
        return sorted({v.strip().lower() for v in (*self.ids, *self.emails) if v.strip()})


def find_target(store: Store, customer: str, order_ids: Sequence[str] = ()) -> Target:
    """Every customer ``customer`` names: the one of that id (as given, or as the store keys
    it) and every one with that e-mail; with ``order_ids``, the customers of those orders
    too. The target may name no stored customer (then only rows read from files and
    webhooks can name them)."""
    from retain.ingest import customer_key

    given = customer.strip()
    key = customer_key(given)
    ids: set[str] = set()
    emails: set[str] = set()
    names: set[str] = set()
    for cid, email, name in store.con.execute(
        "SELECT customer_id, email, name FROM customers WHERE customer_id IN (?, ?) "
        "OR lower(email) = lower(?)",
        [given, key, given],
    ).fetchall():
        ids.add(str(cid))
        emails.update([str(email)] if email else [])
        names.update([str(name)] if name else [])
    for table in ORDER_TABLES:
        for (cid,) in store.con.execute(
            f"SELECT DISTINCT customer_id FROM {table} WHERE customer_id IN (?, ?) "
            "OR order_id IN (SELECT unnest(?))",
            [given, key, list(order_ids)],
        ).fetchall():
            ids.add(str(cid))
    if "@" in given:
        emails.add(given.lower())
    return Target(tuple(sorted(ids)), tuple(sorted(emails)), tuple(sorted(names)))


def erase_customer(
    store: Store,
    customer: str,
    *,
    orders: str | None = None,
    requested_by: str = "cli",
    dry_run: bool = False,
    order_ids: Sequence[str] = (),
) -> ErasureReport:
    """Erase ``customer`` (an id or an e-mail: every customer of that e-mail) from the
    store: see the module docstring. ``orders``: ``unlink`` or ``remove`` (default: the
    store's ``erase_orders`` setting, unlink unless set). ``order_ids``: orders of theirs
    the request names (Shopify's ``orders_to_redact``), whoever they are stored under.
    ``dry_run``: count what would go, change nothing. Raises
    :class:`~retain.errors.DataError` when nothing in the store names them."""
    if orders is None:
        from retain.config import load_settings

        orders = load_settings(store).erase_orders
    if orders not in ORDER_MODES:
        raise ArgumentError(f"orders must be one of {', '.join(ORDER_MODES)}, got {orders!r}")
    report = ErasureReport(erasure_id=secrets.token_hex(8), dry_run=dry_run)
    try:
        with store.transaction() as con:
            target = find_target(store, customer, order_ids)
            _erase(con, _columns(con), target, orders, report)
            if not report.rows:
                raise DataError(f"no customer {customer!r} in the store {store.path}")
            report.remaining = _mentions(con, _columns(con), target)
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


#: the keys of a row as read (a file's own column names) that can name a customer
WHO_KEYS = "customer|e-?mail|client|buyer|user|member|contact|subscriber|friend|referrer"


def _json_names(column: str) -> str:
    """SQL: whether ``column``, a JSON object's text (a row as read, an order as
    delivered), holds one of the values ``$needles`` (lower-cased, trimmed) under a key
    that names a customer (:data:`WHO_KEYS`: ``customer_id``, ``Email``, ...), so that
    another row's amount or order number equal to a short id does not count."""
    value = f"""json_extract_string({column}, '$."' || replace(k, '"', '\\"') || '"')"""
    return (
        f"(json_valid({column}) AND starts_with(ltrim({column}), '{{') AND list_has_any("
        f"[lower(trim({value})) FOR k IN json_keys({column}) "
        f"IF regexp_matches(lower(k), '{WHO_KEYS}')], $needles))"
    )


def _erase(
    con: Any,
    tables: dict[str, dict[str, str]],
    target: Target,
    orders: str,
    report: ErasureReport,
) -> None:
    ids = list(target.ids)
    needles = target.needles

    def run(table: str, sql: str, params: dict[str, Any]) -> None:
        """A DELETE or UPDATE; DuckDB answers it with the rows it changed."""
        found = con.execute(sql, params).fetchall()
        n = int(found[0][0]) if found and found[0][0] is not None else 0
        if n:
            report.rows[table] = report.rows.get(table, 0) + n

    order_ids = sorted(
        {
            str(r[0])
            for t in ORDER_TABLES
            if t in tables
            for r in con.execute(
                f"SELECT order_id FROM {t} WHERE customer_id IN (SELECT unnest(?))", [ids]
            ).fetchall()
        }
    )
    # what hangs on their rows, before the rows themselves go
    if "feedback" in tables:
        for table in ("feedback_tags", "feedback_routed"):
            if table in tables:
                run(
                    table,
                    f"DELETE FROM {table} WHERE feedback_id IN (SELECT feedback_id FROM "
                    "feedback WHERE customer_id IN (SELECT unnest($ids)))",
                    {"ids": ids},
                )
    if "recommend_history_customers" in tables and "recommend_histories" in tables:
        run(
            "recommend_histories",
            "DELETE FROM recommend_histories WHERE owner IN (SELECT owner FROM "
            "recommend_history_customers WHERE customer_id IN (SELECT unnest($ids)))",
            {"ids": ids},
        )
    if "shopify_orders" in tables:
        # their orders as delivered: by order, and any that names them (a quarantined one)
        run(
            "shopify_orders",
            "DELETE FROM shopify_orders WHERE order_id IN (SELECT unnest($orders)) OR "
            + _json_names("order_json"),
            {"orders": order_ids, "needles": needles},
        )
    if "quarantine" in tables:
        # the rows as read (JSON) of which a value is one of their ids or e-mails
        run(
            "quarantine",
            "DELETE FROM quarantine WHERE raw IS NOT NULL AND " + _json_names("raw"),
            {"needles": needles},
        )
    anonymous = None
    if orders == "unlink" and order_ids:
        anonymous = "erased-" + (secrets.token_hex(6) if not report.dry_run else "...")
        report.anonymous_id = anonymous
    if orders == "remove" and order_ids and "order_lines" in tables:
        run(
            "order_lines",
            "DELETE FROM order_lines WHERE order_id IN (SELECT unnest($orders))",
            {"orders": order_ids},
        )
    for table, columns in tables.items():
        if table == "erasures":
            continue
        for column in (c for c in ID_COLUMNS if c in columns):
            if anonymous is not None and table in ORDER_TABLES and column == "customer_id":
                run(
                    f"{table} (unlinked)",
                    f"UPDATE {table} SET customer_id = $anonymous "
                    "WHERE customer_id IN (SELECT unnest($ids))",
                    {"anonymous": anonymous, "ids": ids},
                )
                continue
            run(
                table,
                f"DELETE FROM {_q(table)} WHERE {_q(column)} IN (SELECT unnest($ids))",
                {"ids": ids},
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


def _mentions(con: Any, tables: dict[str, dict[str, str]], target: Target) -> dict[str, int]:
    """Text columns of every table that still name them: a value equal to one of their ids
    or e-mails (as text, or as a value of a JSON object), or text holding one of their
    e-mails or names (of three letters or more): table.column -> rows. A ``name`` column
    is not searched for their name: it holds another customer of the same name, or a
    product's."""
    found: dict[str, int] = {}
    emails = {n.lower() for n in target.emails if len(n) >= 3}
    names = {n.lower() for n in target.names if len(n) >= 3}
    for table, columns in tables.items():
        if table == "erasures":
            continue
        for column, kind in columns.items():
            words = sorted(emails if column == "name" else emails | names)
            if kind in ("VARCHAR", "JSON"):
                value = f"CAST({_q(column)} AS VARCHAR)"
            elif kind.endswith("[]"):
                value = f"array_to_string({_q(column)}, chr(31))"
            else:
                continue
            said = " OR ".join(f"contains(lower({value}), $w{i})" for i in range(len(words)))
            hits = con.execute(
                f"SELECT count(*) FROM {_q(table)} WHERE {_q(column)} IS NOT NULL AND "
                f"(list_contains($needles, lower(trim({value}))) OR {_json_names(value)}"
                f"{' OR ' + said if said else ''})",
                {"needles": target.needles, **{f"w{i}": w for i, w in enumerate(words)}},
            ).fetchall()[0][0]
            if hits:
                found[f"{table}.{column}"] = int(hits)
    return found


__all__ = ["ORDER_MODES", "ErasureReport", "Target", "erase_customer", "find_target"]
