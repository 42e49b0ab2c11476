"""Ingest one order as it happens: the file ingest's own validation and quarantine, one row.

The order (and its lines, and the customer's contact details when given) is
staged as text exactly as a CSV file's rows would be, then passed through the
same :class:`~retain.ingest.load.Loader` steps as ``retain ingest``: the same
parsing, checks, messages, duplicate handling and quarantine. An order whose
``order_id`` is already stored replaces it, as a changed row in a file does.
Quarantined rows name the source ``api:POST /api/orders`` with the time and
the order id; row 1 is the order, rows 2 and on its lines, in order.

A batch of orders (:func:`ingest_orders`) is staged as the rows of one file and
goes through one Loader pass: the cost is a fixed number of statements a pass,
not a number an order. Each order keeps its own source, row numbers and report.

Dates follow the file ingest's rule: an order dated after the store's
observation date (the ``as_of`` of its latest file ingest, see
:func:`retain.ingest.observation_date`; the wall clock for a live store) is
quarantined, so one mis-dated order cannot move the store's dates. Refund
rows, statuses and identity follow :mod:`retain.ingest.purchases` and
:func:`retain.ingest.load_orders`.
"""

from __future__ import annotations

import datetime as dt
import math
import queue
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retain.config import resolve_currency
from retain.ingest import (
    customer_key,
    load_customers,
    load_lines,
    load_orders,
    observation_date,
    purchases,
)
from retain.ingest.load import IngestReport, Loader, api_loader, stage_rows
from retain.schema import ORDER_LINES, ORDERS
from retain.store import Store

ORDER_FIELDS = [c for c in ORDERS.column_names if c != "source_file"] + ["refund_of", "status"]
LINE_FIELDS = [c for c in ORDER_LINES.column_names if c != "order_id"]
CUSTOMER_FIELDS = ["email", "name", "accepts_marketing", "timezone", "locale", "birthday"]


def _text(value: Any) -> str | None:
    """A JSON value as the text a CSV cell would hold."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


REQUIRED_LINE_FIELDS = [c.name for c in ORDER_LINES.columns if c.required and c.name != "order_id"]


def _complete(order: Mapping[str, Any]) -> bool:
    """Whether the order has every field an orders file needs, and each of its lines every
    field a lines file needs: else it goes through a pass of its own, which names what
    is missing (a batch would only see the batch's columns)."""
    needed = ("order_id", "customer_id", "ordered_at")
    if any(order.get(c) is None for c in needed):
        return False
    if order.get("net_revenue") is None and order.get("gross") is None:
        return False
    lines = order.get("lines") or []
    return all(line.get(c) is not None for line in lines for c in REQUIRED_LINE_FIELDS)


def _passes(orders: Sequence[Mapping[str, Any]]) -> list[list[int]]:
    """The positions of ``orders`` in groups that one Loader pass each can store as if
    one after the other: a group ends before an order_id comes again (in a file the first
    row would win; here the later order replaces the earlier, as a second POST does) or
    a customer's contact details come again; an incomplete order is a group of its own."""
    groups: list[list[int]] = []
    order_ids: set[str] = set()
    contacts: set[str] = set()
    closed = True  # the last group takes no more orders
    for i, order in enumerate(orders):
        alone = not _complete(order)
        # keyed as the store keys ids, or more coarsely: a needless split costs time only
        order_id = customer_key(str(order.get("order_id")))
        customer = customer_key(str(order.get("customer_id")))
        has_contact = any(order.get(c) is not None for c in CUSTOMER_FIELDS)
        if closed or alone or order_id in order_ids or (has_contact and customer in contacts):
            groups.append([])
            order_ids, contacts = set(), set()
        groups[-1].append(i)
        order_ids.add(order_id)
        if has_contact:
            contacts.add(customer)
        closed = alone
    return groups


def _quoted(text: str) -> str:
    """SQL: ``text`` as a string literal."""
    return "'" + text.replace("'", "''") + "'"


def _case(starts: list[int], values: list[str]) -> str:
    """SQL over ``_retain_row``: ``values[i]`` for the rows from ``starts[i]`` on."""
    if len(values) == 1:
        return values[0]
    arms = " ".join(
        f"WHEN _retain_row < {s} THEN {v}" for s, v in zip(starts[1:], values[:-1], strict=True)
    )
    return f"CASE {arms} ELSE {values[-1]} END"


def ingest_order(
    store: Store,
    order: Mapping[str, Any],
    *,
    as_of: dt.datetime | None = None,
    currency: str | None = None,
    rates: Mapping[str, float] | None = None,
) -> IngestReport:
    """Validate and store one order (a mapping of canonical order columns, optional
    ``lines``: a list of order-line mappings, and optional customer fields ``email``,
    ``name``, ``accepts_marketing``...).

    ``as_of``: the observation time, UTC (default: the store's observation date,
    or now for a live store): a later order is quarantined. ``currency`` (default: the
    store's ``currency`` setting) and ``rates`` as in :func:`retain.ingest.ingest`.
    Returns the :class:`~retain.ingest.load.IngestReport`: ``orders`` is 1 when
    the order was stored, 0 when it was quarantined (``examples`` say why).
    Raises :class:`~retain.errors.SchemaError` when a required field is absent.
    """
    result = ingest_orders(store, [order], as_of=as_of, currency=currency, rates=rates)[0]
    if isinstance(result, Exception):
        raise result
    return result


def ingest_orders(
    store: Store,
    orders: Sequence[Mapping[str, Any]],
    *,
    as_of: dt.datetime | None = None,
    currency: str | None = None,
    rates: Mapping[str, float] | None = None,
) -> list[IngestReport | Exception]:
    """:func:`ingest_order` for a batch of orders, in one Loader pass (one transaction)
    where it can: the result is as if they were stored one after the other. Each order
    keeps its own source (``api:POST /api/orders <time> <order_id> <tag>``) and row
    numbers (row 1 the order, rows 2 and on its lines), and its own report, or the
    exception it raised (nothing of that order stored). An order whose row is
    quarantined does not keep the others of its batch from being stored. The work is
    a fixed number of statements a pass, each over the batch's rows and the stored rows
    of the batch's orders and customers, not over the store."""
    wall = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    now = as_of or observation_date(store) or wall
    currency = resolve_currency(store, currency)
    results: list[IngestReport | Exception] = [Exception("not ingested")] * len(orders)
    for group in _passes(orders):
        batch = [orders[i] for i in group]
        try:
            reports: list[IngestReport | Exception] = list(
                _ingest_pass(store, batch, now, wall, currency, rates or {})
            )
        except Exception as exc:  # rolled back: each order again alone, so one cannot
            if len(batch) == 1:  # refuse the others
                reports = [exc]
            else:
                reports = []
                for order in batch:
                    try:
                        reports.extend(
                            _ingest_pass(store, [order], now, wall, currency, rates or {})
                        )
                    except Exception as alone:
                        reports.append(alone)
        for i, report in zip(group, reports, strict=True):
            results[i] = report
    return results


def _ingest_pass(
    store: Store,
    orders: list[Mapping[str, Any]],
    now: dt.datetime,
    wall: dt.datetime,
    currency: str,
    rates: Mapping[str, float],
) -> list[IngestReport]:
    """Store ``orders`` (no order_id twice) in one Loader pass and one transaction."""
    stamp = wall.strftime("%Y-%m-%dT%H:%M:%S")
    tag = uuid.uuid4().hex[:8]
    sources = [f"api:POST /api/orders {stamp} {o.get('order_id')} {tag}" for o in orders]
    if len(orders) > 1:  # one order's source is unique by its order_id in the batch
        sources = [f"{s}-{i}" for i, s in enumerate(sources)]
    # each order's rows: the order, then its lines, numbered on through the batch
    starts, row = [], 1
    for order in orders:
        starts.append(row)
        row += 1 + len(order.get("lines") or [])
    loader = Loader(store, Path(sources[0]), as_of=now, currency=currency, rates=rates)
    # Loader names the source by its path; keep the label exactly as written
    loader.file = sources[0] if len(orders) == 1 else f"api:POST /api/orders {stamp} {tag}"
    loader.source_sql = _case(starts, [_quoted(s) for s in sources])
    loader.row_sql = f"_retain_row - {_case(starts, [str(s - 1) for s in starts])}"
    reports = [
        IngestReport(file=s, format="orders", rows_read=1 + len(o.get("lines") or []))
        for s, o in zip(sources, orders, strict=True)
    ]
    total = IngestReport(file=loader.file, format="orders", rows_read=row - 1)
    by_row = {start: i for i, start in enumerate(starts)}
    order_columns = [c for c in ORDER_FIELDS if any(o.get(c) is not None for o in orders)]
    rows = [{c: _text(o.get(c)) for c in order_columns} for o in orders]
    stage_rows(store, "_raw", rows, order_columns, starts)
    try:
        with loader.transaction():
            load_orders(loader, order_columns, None, total)
            status = "CASE WHEN _status = 'paid' THEN 'refunded' ELSE _status END"
            bought: list[int] = []
            for start, purchase, why in loader.con.execute(
                f"SELECT _retain_row, {purchases.purchase_sql(loader)}, {status} FROM _written"
            ).fetchall():
                report = reports[by_row[start]]
                if purchase:
                    report.orders = 1
                    bought.append(by_row[start])
                else:
                    report.excluded[str(why)] = 1
            for (start,) in loader.con.execute("SELECT _retain_row FROM _refund_rows").fetchall():
                reports[by_row[start]].refunds = 1
            stored = [orders[i] for i in bought]
            if any(o.get("lines") for o in stored):
                line_columns = ["order_id", *LINE_FIELDS]
                lines, numbers = [], []
                for i in bought:
                    for n, line in enumerate(orders[i].get("lines") or [], start=1):
                        lines.append(
                            {"order_id": _text(orders[i].get("order_id"))}
                            | {c: _text(line.get(c)) for c in LINE_FIELDS}
                        )
                        numbers.append(starts[i] + n)  # row 1 is the order
                stage_rows(store, "_raw_lines", lines, line_columns, numbers)
                load_lines(loader, line_columns, None, total, raw="_raw_lines")
            contact = [c for c in CUSTOMER_FIELDS if any(o.get(c) is not None for o in stored)]
            given = [i for i in bought if any(orders[i].get(c) is not None for c in contact)]
            if given:
                columns = ["customer_id", *contact]
                people = [{c: _text(orders[i].get(c)) for c in columns} for i in given]
                stage_rows(store, "_raw", people, columns, [starts[i] for i in given])
                load_customers(loader, columns, None, total)
            loader.write_quarantine(total)
            if loader.quarantine_parts:
                union = " UNION ALL ".join(f"SELECT * FROM {p}" for p in loader.quarantine_parts)
                problems = loader.con.execute(
                    f"SELECT source_file, row_number, column_name, reason FROM ({union}) "
                    "ORDER BY source_file, row_number"
                ).fetchall()
                index = {s: i for i, s in enumerate(sources)}
                for source, number, column, reason in problems:
                    report = reports[index[source]]
                    report.quarantined += 1
                    key = reason.split(":")[0]
                    report.reasons[key] = report.reasons.get(key, 0) + 1
                    if len(report.examples) < 3:
                        where = f", column '{column}'" if column else ""
                        report.examples.append(f"row {number}{where}: {reason}")
    finally:
        loader.con.execute("DROP TABLE IF EXISTS _raw_lines")
    for report in reports:
        report.customers = 1 if report.orders else 0
        report.skipped_cancelled = report.excluded.get("cancelled", 0)
    return reports


def ingest_customer(store: Store, record: Mapping[str, Any], *, source: str) -> IngestReport:
    """Store one customer's contact details (``customer_id`` and any of
    :data:`CUSTOMER_FIELDS`) by a customers file's rules: a value given replaces the
    stored one, a blank leaves it; a customer new to the store is listed as a customers
    file lists them. ``source`` names the write in the quarantine (row 1)."""
    loader = api_loader(store, source)
    label = loader.file
    columns = ["customer_id", *(c for c in CUSTOMER_FIELDS if record.get(c) is not None)]
    report = IngestReport(file=label, format="customers", rows_read=1)
    stage_rows(store, "_raw", [{c: _text(record.get(c)) for c in columns}], columns)
    with loader.transaction():
        load_customers(loader, columns, None, report)
        loader.write_quarantine(report)
    return report


def quarantined_rows(store: Store, source: str) -> list[dict[str, Any]]:
    """The quarantine rows one API ingest left: row, column and reason."""
    rows = store.con.execute(
        "SELECT row_number, target, column_name, reason FROM quarantine "
        "WHERE source_file = ? ORDER BY row_number",
        [source],
    ).fetchall()
    return [{"row": r, "target": t, "column": c, "reason": why} for r, t, c, why in rows]


class WritesBusy(Exception):
    """The write queue is full, or an order waited too long to be started: the order was
    not stored. ``retry_after`` (seconds) is when to try again."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class _Job:
    order: dict[str, Any]
    future: Future[Any]
    queued_at: float


class WriteQueue:
    """The service's one writer: orders queue here and a thread of its own stores them.

    ``process`` takes the orders of one batch (at most ``max_batch``, those queued while
    the previous batch was written) and returns one result or exception per order, in
    order; it stores the batch's orders together (:func:`ingest_orders`) and shares the
    rest of the work (rescoring, the customer index) across the batch. Requests wait on a future and
    hold no server thread meanwhile, so reads never queue behind writes.

    Bounded: :meth:`submit` raises :class:`WritesBusy` at once when ``max_pending`` orders
    are already waiting, or when the new order could not start within ``max_wait_s``
    seconds: it waits for the batch under way (or the rest after it), then for the
    batches of ``max_batch`` orders ahead of it, each taking the time a batch took so far
    (``seconds_per_batch``, its rest included: a batch costs about the same whatever its
    size); an order that still waited ``max_wait_s`` seconds without being started is
    answered :class:`WritesBusy` and never stored. After a batch that took ``t`` seconds
    the writer rests
    ``t * (1 / busy_share - 1)``, at most ``max_wait_s / 2``: writes take at most
    ``busy_share`` of the time (while batches take under ``max_wait_s / 6`` at the
    default share), and the reads (which need the same CPU and interpreter) the rest;
    an order sent alone after a slow batch is still taken and started within
    ``max_wait_s``. An order whose request is
    given up (its future cancelled) before it starts is not stored either; one that has
    started is stored and answered.

    ``clock`` (seconds, :func:`time.monotonic` by default) measures the waits, the pace and
    the rests: a test gives a clock of its own and decides what each batch takes.
    """

    def __init__(
        self,
        process: Callable[[list[dict[str, Any]]], list[Any]],
        *,
        max_pending: int = 64,
        max_wait_s: float = 1.0,
        max_batch: int = 32,
        busy_share: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.process = process
        self.clock = clock
        self.max_pending = max_pending
        self.max_wait_s = max_wait_s
        self.max_batch = max_batch
        self.busy_share = busy_share
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._closed = False
        self._closing = threading.Event()  # ends a rest at once
        self.seconds_per_batch = 0.0  # a batch and its rest, seconds, averaged
        self._busy = False  # a batch is being written
        self._rest_until = 0.0  # the writer rests until then (``clock``)
        self.batches_started = 0  # batches handed to ``process``
        self.batches = 0  # batches written
        self._thread = threading.Thread(target=self._run, name="retain-writer", daemon=True)
        self._thread.start()

    def pending(self) -> int:
        """Orders waiting to be started."""
        return self._queue.qsize()

    def submit(self, order: dict[str, Any]) -> Future[Any]:
        """Queue ``order``; the future gets its result. Raises :class:`WritesBusy` when full."""
        future: Future[Any] = Future()
        with self._lock:
            if self._closed:
                raise WritesBusy("not stored: the service is shutting down", retry_after=5)
            waiting = self._queue.qsize()
            # the batch or the rest under way, then the batches already waiting: an idle
            # writer takes any order, however slow
            now = self.seconds_per_batch if self._busy else self._rest_until - self.clock()
            ahead = waiting // self.max_batch
            behind = max(0.0, now) + ahead * self.seconds_per_batch
            if waiting >= self.max_pending or behind > self.max_wait_s:
                raise WritesBusy(
                    f"not stored: {waiting} orders are already waiting to be written "
                    f"(about {behind:.1f} s of work); send it again in a moment (the same "
                    "order_id again is stored once)",
                    retry_after=max(1, math.ceil(behind)),
                )
            self._queue.put(_Job(order, future, self.clock()))
        return future

    def close(self, timeout_s: float = 30.0) -> None:
        """Answer what still waits with :class:`WritesBusy`, finish the batch being written,
        stop the thread."""
        with self._lock:
            self._closed = True
            self._closing.set()
            self._queue.put(None)
        self._thread.join(timeout=timeout_s)

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                break
            batch = [job]
            while len(batch) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(more)
            self._write(batch)
        while True:  # closed: nothing more is started
            try:
                left = self._queue.get_nowait()
            except queue.Empty:
                return
            if left is not None and left.future.set_running_or_notify_cancel():
                left.future.set_exception(
                    WritesBusy("not stored: the service is shutting down", retry_after=5)
                )

    def _write(self, batch: list[_Job]) -> None:
        now = self.clock()
        started: list[_Job] = []
        for job in batch:
            if not job.future.set_running_or_notify_cancel():
                continue  # the request was given up before its order started: not stored
            if self._closed or now - job.queued_at > self.max_wait_s:
                job.future.set_exception(
                    WritesBusy(
                        f"not stored: the order waited {now - job.queued_at:.1f} s to be "
                        f"written (at most {self.max_wait_s:g} s); send it again in a moment"
                    )
                )
                continue
            started.append(job)
        if not started:
            return
        self.batches_started += 1
        self._busy = True
        began = self.clock()
        try:
            results = self.process([job.order for job in started])
        except Exception as exc:  # every waiting request hears of it
            results = [exc] * len(started)
        busy = self.clock() - began
        # leave the CPU to the reads for a while: writes take at most busy_share of it, but
        # the rest is at most half of max_wait_s, so that an order sent alone after a slow
        # batch (the first after a start, a loaded machine) still starts in time
        rest = min(busy * (1 / self.busy_share - 1), self.max_wait_s / 2)
        # with the rest that follows, as the orders waiting will wait for it
        took = busy + rest
        self.seconds_per_batch = (
            took if not self.batches else 0.7 * self.seconds_per_batch + 0.3 * took
        )
        self.batches += 1
        for job, result in zip(started, results, strict=True):
            if isinstance(result, BaseException):
                job.future.set_exception(result)
            else:
                job.future.set_result(result)
        self._rest_until = self.clock() + rest
        self._busy = False
        if rest > 0:
            self._closing.wait(rest)
