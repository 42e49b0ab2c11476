"""Ingest: bring a business's files into the store, checked, with nothing lost.

``ingest(store, path)`` recognises the format by its header (orders CSV or
Parquet, Shopify's orders export, the CDNOW files, customers, order lines,
marketing spend, subscriptions and Stripe's subscriptions export), validates every row, sets bad rows aside in the
``quarantine`` table with the reason, and writes the rest in one transaction.
Ingesting the same file again changes nothing: rows are keyed (orders by
order_id, unique in the store) and a changed row replaces its older version; a
file whose content (SHA-256) was already ingested with the same options is
skipped whatever its path (the report's ``same_as`` names the earlier ingest).

:func:`load_orders`, :func:`load_customers` and :func:`load_lines` are the
steps ``ingest`` takes for each kind of row once a file is staged; the service
passes the single order of ``POST /api/orders`` through the very same steps.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import math
import re
import unicodedata
from collections.abc import Mapping
from pathlib import Path

from retain import config
from retain.errors import ArgumentError, DataError, SchemaError
from retain.ingest import cdnow, events, feedback, shopify, subscriptions
from retain.ingest.detect import FORMATS, check_readable, detect_format, is_parquet
from retain.ingest.load import (
    AFTER_AS_OF,
    CUSTOMER_KEY,
    IngestReport,
    Loader,
    first_line_columns,
    require,
    resolve_mapping,
)
from retain.ingest.purchases import REFUND_ROW, split_refunds
from retain.schema import CUSTOMERS, MARKETING_SPEND, ORDER_INPUT, ORDER_LINES, ORDERS, Table
from retain.store import Store, memory_at_most, open_store

__all__ = [
    "FORMATS",
    "IngestReport",
    "customer_key",
    "ingest",
    "load_customers",
    "load_lines",
    "load_orders",
    "observation_date",
]


def ingest(
    store: Store | str | Path,
    path: str | Path,
    *,
    format: str = "auto",
    mapping: Mapping[str, str] | None = None,
    as_of: str | dt.date | dt.datetime | None = None,
    currency: str | None = None,
    rates: Mapping[str, float] | None = None,
    pending_revenue: bool = False,
    date_format: str | None = None,
    encoding: str | None = None,
) -> IngestReport:
    """Load one file into the store and report what was loaded and what was set aside.

    - ``format``: "auto" (default), "orders", "shopify", "cdnow", "customers",
      "lines" (order lines), "spend" (marketing spend: date, channel, amount),
      "subscriptions" or "stripe" (Stripe's subscriptions export): see
      :mod:`retain.ingest.subscriptions`; "feedback" (survey answers, reviews, support
      tickets): see :mod:`retain.ingest.feedback`; "events" (browse and cart events of
      visitors and customers): see :mod:`retain.ingest.events`.
    - ``mapping``: canonical column -> column in the file, for files whose
      headers differ from the canonical names.
    - ``as_of``: the observation date; orders dated after it are quarantined
      (default: the store's ``as_of`` setting when set by hand, else now, UTC).
    - ``currency``: the reporting currency (default: the store's ``currency``
      setting, see :mod:`retain.config`); ``rates`` maps other currency codes
      to the reporting currency's units per one unit of them. Orders in a
      currency without a rate are quarantined.
    - ``pending_revenue``: count orders awaiting payment (status pending,
      authorized, unpaid, on-hold) as purchases; by default they are not revenue
      until paid and wait in ``excluded_orders`` (see :mod:`retain.ingest.purchases`
      for refund rows and the orders that are not purchases).
    - ``date_format``: how day-first or month-first dates are written, e.g.
      "%m/%d/%Y" or "DD/MM/YYYY"; ISO dates (YYYY-MM-DD) are read either way.
      Without it such dates are quarantined, as they are ambiguous.
    - ``encoding``: a text file's encoding, e.g. "cp1252" (Windows-1252) or
      "latin-1" (default: the one its byte-order mark names, UTF-8, UTF-16 or
      UTF-32, else UTF-8; in a UTF-8 file, rows that are not valid UTF-8 are
      quarantined).

    The ``as_of`` given is recorded with the file in ``ingested_files`` and becomes
    the store's ``as_of`` setting (:func:`observation_date`) unless that was set by
    hand; without one, what an earlier ingest set is cleared (the store is live
    again). A ``currency`` given becomes the ``currency`` setting the same way.

    Raises :class:`SchemaError` (nothing stored) when required columns are
    missing, :class:`DataError` for an empty or unreadable file.
    """
    if format not in FORMATS:
        raise SchemaError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    store = open_store(store)
    file = Path(path).expanduser().resolve()
    check_readable(file)
    checked_rates = check_rates(rates)
    settings = config.load_settings(store)
    by_hand = settings.source("as_of") == config.BY_HAND
    observed = _as_of(as_of)
    if as_of is None and by_hand:
        observed = config.observation_time(store) or observed
    reporting = settings.currency if currency is None else config.check_currency(currency)
    digest = file_sha256(file)
    options = json.dumps(
        {
            "format": format,
            "mapping": sorted((mapping or {}).items()),
            "as_of": observed.isoformat() if as_of is not None or by_hand else None,
            "currency": reporting,
            "rates": sorted(checked_rates.items()),
            "pending_revenue": pending_revenue,
            "date_format": date_format,
            "encoding": encoding,
            "max_amount": settings.max_amount,
        },
        sort_keys=True,
    )
    live = json.loads(options)["as_of"] is None
    same = store.con.execute(
        "SELECT source_file, format, ingested_at FROM ingested_files f "
        "WHERE sha256 = ? AND options = ? AND latest AND NOT (? AND EXISTS (SELECT 1 FROM "
        "quarantine q WHERE q.source_file = f.source_file AND starts_with(q.reason, ?))) "
        "ORDER BY ingested_at DESC LIMIT 1",
        [digest, options, live, AFTER_AS_OF],
    ).fetchall()
    # identical content and options, and nothing written since (a file or an API order
    # that moved an order elsewhere, a customers file that changed an e-mail address):
    # the store holds this ingest already. Live (no as_of), orders set aside as dated
    # after the wall clock may be due now: read again.
    if same:
        earlier, earlier_format, when = same[0]
        return IngestReport(
            file=str(file),
            format=str(earlier_format),
            same_as=f"{earlier} (ingested {when:%Y-%m-%d %H:%M:%S} UTC)",
        )
    loader = Loader(
        store,
        file,
        as_of=observed,
        currency=reporting,
        rates=checked_rates,
        given_as_of=observed if as_of is not None else None,
        pending_revenue=pending_revenue,
        date_format=date_format,
        encoding=encoding,
    )

    # a big file spills to disk rather than hold it all in memory (see INGEST_MEMORY)
    with bounded_memory(store):
        columns = first_line_columns(file, encoding)
        fmt = format if format != "auto" else detect_format(file, columns, mapping)
        if fmt == "cdnow":
            columns = cdnow.stage(loader)
        else:
            if columns is None and not is_parquet(file):
                raise DataError(
                    "the first line is not a header of comma-, semicolon-, tab- or pipe-separated columns",
                    file=str(file),
                    row=1,
                )
            columns = loader.stage_file()
        report = IngestReport(
            file=str(file), format=fmt, rows_read=loader.count("_raw") + loader.rejected
        )
        if report.rows_read == 0:
            loader.drop_raw()
            raise DataError(
                "the file holds a header but no data rows: nothing to ingest", file=str(file)
            )
        if fmt == "cdnow":
            mapping = {**cdnow.MAPPING, **(mapping or {})}

        with loader.transaction():
            if fmt in ("orders", "cdnow"):
                load_orders(loader, columns, mapping, report)
            elif fmt == "shopify":
                shopify.load(loader, columns, report)
            elif fmt == "customers":
                load_customers(loader, columns, mapping, report)
            elif fmt == "lines":
                load_lines(loader, columns, mapping, report)
            elif fmt == "spend":
                _spend(loader, columns, mapping, report)
            elif fmt == "subscriptions":
                subscriptions.load(loader, columns, mapping, report)
            elif fmt == "stripe":
                subscriptions.load_stripe(loader, columns, report)
            elif fmt == "feedback":
                feedback.load(loader, columns, mapping, report)
            elif fmt == "events":
                events.load(loader, columns, mapping, report)
            loader.write_quarantine(report, digest)
            loader.record_file(fmt, report, digest=digest, options=options)
            config.record_from_ingest(store, "as_of", None if as_of is None else observed.date())
            if currency is not None:
                config.record_from_ingest(store, "currency", currency)
    return report


# DuckDB's memory for one file ingest, at most (its default is 80% of the machine's): a
# file of 1M customers stays within it, 5M customers (16M orders) spill temp tables to disk
# and peak at 2.5 GB instead of 7 GB, taking 40% longer.
INGEST_MEMORY = "2GB"


def bounded_memory(store: Store) -> contextlib.AbstractContextManager[None]:
    """Within the block, DuckDB's memory limit is at most :data:`INGEST_MEMORY` (see
    :func:`retain.store.memory_at_most`)."""
    return memory_at_most(store, INGEST_MEMORY)


def check_rates(rates: Mapping[str, float] | None) -> dict[str, float]:
    """``rates`` (currency code -> reporting-currency units per unit of it) checked: each
    code three letters, each rate a finite number above 0. Raises
    :class:`~retain.errors.ArgumentError` naming the first that is not."""
    checked: dict[str, float] = {}
    for code, value in (rates or {}).items():
        text = str(code).strip().upper()
        if not re.fullmatch(r"[A-Z]{3}", text):
            raise ArgumentError(
                f"rate for {code!r}: expected a three-letter currency code such as EUR"
            )
        try:
            rate = float(value)
        except (TypeError, ValueError):
            rate = math.nan
        if isinstance(value, bool) or not math.isfinite(rate) or rate <= 0:
            raise ArgumentError(
                f"rate {text}={value!r}: expected a finite number above 0, the "
                f"reporting-currency units per {text} (e.g. EUR=1.08)"
            )
        checked[text] = rate
    return checked


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, hex: what makes two files the same content."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def observation_date(store: Store) -> dt.datetime | None:
    """The store's observation time, the ``as_of`` setting (:mod:`retain.config`): the end
    of that day, UTC (set by hand, or by the latest file ingest given ``as_of``), the wall
    clock for ``live``, or None when not set (the wall clock)."""
    return config.observation_time(store)


def customer_key(customer_id: str) -> str:
    """The customer_id as the store keys it: trimmed of Unicode whitespace, without
    controls (tab, NUL) or zero-width characters, and lower-cased when it is an e-mail
    address (as Shopify keys customers), so any case finds the customer."""
    visible = "".join(ch for ch in customer_id if unicodedata.category(ch) not in ("Cc", "Cf"))
    key = visible.strip()
    return key.lower() if re.search(r".@.", key) else key


def _as_of(value: str | dt.date | dt.datetime | None) -> dt.datetime:
    if value is None:
        return dt.datetime.now(dt.UTC).replace(tzinfo=None)
    moment = config.parse_as_of(value)
    if (isinstance(value, str) and len(value) <= 10) or (
        isinstance(value, dt.date) and not isinstance(value, dt.datetime)
    ):
        moment += dt.timedelta(days=1, microseconds=-1)  # the whole day
    return moment


def load_orders(
    loader: Loader, columns: list[str], mapping: Mapping[str, str] | None, report: IngestReport
) -> None:
    """Validate the orders staged as text in the temp table ``_raw`` (with ``columns``,
    and ``_row``: the row number in the source), quarantine the bad ones with their
    reason, store the rest (an order_id already stored is replaced) and their customers.

    ``mapping``: canonical column -> staged column. Runs in the caller's transaction;
    counts go to ``report``. Raises :class:`SchemaError` when a required column is absent.
    """
    resolved = resolve_mapping(ORDER_INPUT, columns, mapping, loader.file)
    require(ORDERS, resolved, columns, loader.file, ["order_id", "customer_id", "ordered_at"])
    if "net_revenue" not in resolved and "gross" not in resolved:
        raise SchemaError(
            f"{loader.file}: missing required column net_revenue or gross for orders. "
            f"Found: {', '.join(columns)}. Needed: order_id, customer_id, ordered_at, and "
            "net_revenue or gross. Rename them in the file or map them with --map canonical=source."
        )
    layers = loader.order_layers("net_revenue" in resolved)
    checks = loader.order_checks()
    clean = loader.validate(
        ORDER_INPUT, "_raw", resolved, checks, layers, raw_columns=columns, negative_ok=REFUND_ROW
    )
    order_rows, refund_rows = split_refunds(loader, clean)
    bought = loader.write_orders(order_rows, report, refund_rows)
    report.customers = loader.write_customers_from_orders(bought)


def load_customers(
    loader: Loader, columns: list[str], mapping: Mapping[str, str] | None, report: IngestReport
) -> None:
    """Validate the customers staged in ``_raw`` (as :func:`load_orders`) and store them:
    a value given replaces the stored one, a blank leaves it as it was."""
    resolved = resolve_mapping(CUSTOMERS, columns, mapping, loader.file)
    require(CUSTOMERS, resolved, columns, loader.file)
    clean = loader.validate(
        CUSTOMERS,
        "_raw",
        resolved,
        layers=[[("customer_id", CUSTOMER_KEY), ("email", "lower(email)")]],
        raw_columns=columns,
    )
    loader.quarantine_duplicates(clean, "customer_id", "customers")
    given = [c for c in CUSTOMERS.column_names if c in resolved and c != "customer_id"]
    # a value in the file replaces the stored one; a blank leaves it as it was
    updates = ", ".join(f"{c} = coalesce(excluded.{c}, customers.{c})" for c in given)
    names = ", ".join(CUSTOMERS.column_names)
    loader.con.execute(
        f"INSERT INTO customers ({names}) SELECT {names} FROM {clean} ON CONFLICT (customer_id) "
        + (f"DO UPDATE SET {updates}" if updates else "DO NOTHING")
    )
    if report.format == "customers":  # a customers file: they stay without orders
        loader.con.execute(
            f"INSERT OR REPLACE INTO listed_customers SELECT customer_id, ? FROM {clean}",
            [loader.file],
        )
    report.customers = loader.count(clean)


def load_lines(
    loader: Loader,
    columns: list[str],
    mapping: Mapping[str, str] | None,
    report: IngestReport,
    *,
    raw: str = "_raw",
) -> None:
    """Validate the order lines staged in the temp table ``raw`` (as :func:`load_orders`)
    and store them: the lines of every order present replace that order's stored lines."""
    resolved = resolve_mapping(ORDER_LINES, columns, mapping, loader.file)
    require(ORDER_LINES, resolved, columns, loader.file)
    clean = loader.validate(ORDER_LINES, raw, resolved, raw_columns=columns)
    write_lines(loader, clean, report)


def write_lines(loader: Loader, clean: str, report: IngestReport) -> None:
    """Replace the lines of every order present in ``clean``."""
    names = ", ".join(ORDER_LINES.column_names)
    loader.con.execute(
        f"DELETE FROM order_lines WHERE order_id IN (SELECT DISTINCT order_id FROM {clean})"
    )
    loader.con.execute(f"INSERT INTO order_lines SELECT {names} FROM {clean}")
    report.order_lines = loader.count(clean)


def _spend(
    loader: Loader, columns: list[str], mapping: Mapping[str, str] | None, report: IngestReport
) -> None:
    table: Table = MARKETING_SPEND
    resolved = resolve_mapping(table, columns, mapping, loader.file)
    require(table, resolved, columns, loader.file)
    clean = loader.validate(table, "_raw", resolved, raw_columns=columns)
    # several rows for one day and channel add up
    loader.con.execute(
        "CREATE OR REPLACE TEMP TABLE _spend AS SELECT date, channel, sum(amount) AS amount "
        f"FROM {clean} GROUP BY date, channel"
    )
    loader.con.execute(
        "INSERT OR REPLACE INTO marketing_spend SELECT date, channel, amount FROM _spend"
    )
    report.spend_rows = loader.count(clean)
