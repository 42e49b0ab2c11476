"""Ingest one order as it happens: the file ingest's own validation and quarantine, one row.

The order (and its lines, and the customer's contact details when given) is
staged as text exactly as a CSV file's rows would be, then passed through the
same :class:`~retain.ingest.load.Loader` steps as ``retain ingest``: the same
parsing, checks, messages, duplicate handling and quarantine. An order whose
``order_id`` is already stored replaces it, as a changed row in a file does.
Quarantined rows name the source ``api:POST /api/orders`` with the time and
the order id; row 1 is the order, rows 2 and on its lines, in order.

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
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from retain.config import resolve_currency
from retain.ingest import load_customers, load_lines, load_orders, observation_date
from retain.ingest.load import IngestReport, Loader
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


def _stage(store: Store, name: str, rows: list[dict[str, str | None]], columns: list[str]) -> None:
    """Create the temp table ``name``: text columns plus ``_retain_row`` (1-based, as in a file)."""
    frame = pd.DataFrame({c: pd.Series([r.get(c) for r in rows], dtype="object") for c in columns})
    frame["_retain_row"] = range(1, len(rows) + 1)
    view = f"{name}_frame"
    store.con.register(view, frame)
    try:
        casts = ", ".join(f'CAST("{c}" AS VARCHAR) AS "{c}"' for c in columns)
        store.con.execute(
            f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT {casts}, "
            f"CAST(_retain_row AS BIGINT) AS _retain_row FROM {view}"
        )
    finally:
        store.con.unregister(view)


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
    wall = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    now = as_of or observation_date(store) or wall
    stamp = wall.strftime("%Y-%m-%dT%H:%M:%S")
    source = f"api:POST /api/orders {stamp} {order.get('order_id')} {uuid.uuid4().hex[:8]}"
    currency = resolve_currency(store, currency)
    loader = Loader(store, Path(source), as_of=now, currency=currency, rates=rates or {})
    # Loader names the source by its path; keep the label exactly as written
    loader.file = source
    order_columns = [c for c in ORDER_FIELDS if order.get(c) is not None]
    lines = list(order.get("lines") or [])
    report = IngestReport(file=source, format="orders", rows_read=1 + len(lines))

    _stage(store, "_raw", [{c: _text(order.get(c)) for c in order_columns}], order_columns)
    try:
        with loader.transaction():
            load_orders(loader, order_columns, None, report)
            stored = report.orders > 0
            if stored and lines:
                line_columns = ["order_id", *LINE_FIELDS]
                rows = [
                    {"order_id": _text(order.get("order_id"))}
                    | {c: _text(line.get(c)) for c in LINE_FIELDS}
                    for line in lines
                ]
                _stage(store, "_raw_lines", rows, line_columns)
                # rows 2.. are the lines: row 1 is the order
                loader.con.execute("UPDATE _raw_lines SET _retain_row = _retain_row + 1")
                load_lines(loader, line_columns, None, report, raw="_raw_lines")
            contact = [c for c in CUSTOMER_FIELDS if order.get(c) is not None]
            if stored and contact:
                columns = ["customer_id", *contact]
                _stage(store, "_raw", [{c: _text(order.get(c)) for c in columns}], columns)
                orders_loaded = report.orders
                load_customers(loader, columns, None, report)
                report.orders = orders_loaded
            loader.write_quarantine(report)
    finally:
        loader.con.execute("DROP TABLE IF EXISTS _raw_lines")
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
    order; it stores each order in its own transaction and may share the rest of the
    work (rescoring, the customer index) across the batch. Requests wait on a future and
    hold no server thread meanwhile, so reads never queue behind writes.

    Bounded: :meth:`submit` raises :class:`WritesBusy` at once when ``max_pending`` orders
    are already waiting, or when those waiting would take longer than ``max_wait_s``
    seconds to write at the pace measured so far (``seconds_per_order``); an order that
    still waited ``max_wait_s`` seconds without being started is answered
    :class:`WritesBusy` and never stored. A batch holds no more orders than that pace
    writes in ``max_wait_s``. After a batch that took ``t`` seconds the writer rests
    ``t * (1 / busy_share - 1)``: writes take at most ``busy_share`` of the time, and the
    reads (which need the same CPU and interpreter) the rest. An order whose request is
    given up (its future cancelled) before it starts is not stored either; one that has
    started is stored and answered.
    """

    def __init__(
        self,
        process: Callable[[list[dict[str, Any]]], list[Any]],
        *,
        max_pending: int = 64,
        max_wait_s: float = 1.0,
        max_batch: int = 32,
        busy_share: float = 0.5,
    ) -> None:
        self.process = process
        self.max_pending = max_pending
        self.max_wait_s = max_wait_s
        self.max_batch = max_batch
        self.busy_share = busy_share
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._closed = False
        self.seconds_per_order = 0.0  # the pace of the last batches, averaged
        self._rest_until = 0.0  # the writer rests until then (time.monotonic)
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
            # the rest under way and the work already waiting: an idle writer takes any
            # order, however slow
            resting = max(0.0, self._rest_until - time.monotonic())
            behind = resting + waiting * self.seconds_per_order
            if waiting >= self.max_pending or behind > self.max_wait_s:
                raise WritesBusy(
                    f"not stored: {waiting} orders are already waiting to be written "
                    f"(about {behind:.1f} s of work); send it again in a moment (the same "
                    "order_id again is stored once)",
                    retry_after=max(1, math.ceil(behind)),
                )
            self._queue.put(_Job(order, future, time.monotonic()))
        return future

    def close(self, timeout_s: float = 30.0) -> None:
        """Answer what still waits with :class:`WritesBusy`, finish the batch being written,
        stop the thread."""
        with self._lock:
            self._closed = True
            self._queue.put(None)
        self._thread.join(timeout=timeout_s)

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                break
            batch = [job]
            pace = self.seconds_per_order
            most = self.max_batch if pace <= 0 else int(self.max_wait_s / pace)
            while len(batch) < min(self.max_batch, max(1, most)):
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
        now = time.monotonic()
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
        began = time.monotonic()
        try:
            results = self.process([job.order for job in started])
        except Exception as exc:  # every waiting request hears of it
            results = [exc] * len(started)
        busy = time.monotonic() - began
        # the pace counts the rest that follows, as the orders waiting will wait for it
        pace = busy / self.busy_share / len(started)
        self.seconds_per_order = (
            pace if not self.batches else 0.7 * self.seconds_per_order + 0.3 * pace
        )
        self.batches += 1
        for job, result in zip(started, results, strict=True):
            if isinstance(result, BaseException):
                job.future.set_exception(result)
            else:
                job.future.set_result(result)
        # leave the CPU to the reads for a while: writes take at most busy_share of it
        self._rest_until = time.monotonic() + busy * (1 / self.busy_share - 1)
        while not self._closed and time.monotonic() < self._rest_until:
            time.sleep(min(0.05, max(0.0, self._rest_until - time.monotonic())))
