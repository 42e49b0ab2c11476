"""The FastAPI application: one store, a JSON API and the dashboard pages over it.

:func:`create_app` opens the store once and serves every request from its own
DuckDB cursor (a connection to the same database), so that a slow page never
holds up a customer lookup. Results that take a pass over all orders (metrics,
cohorts, segments) are cached until the service itself writes to the store:
while it holds the store open no other process can write to it (DuckDB's file
lock), so nothing else can make them stale.

Write endpoints (``POST /api/orders``) need the API key, sent as
``Authorization: Bearer KEY`` or ``X-API-Key: KEY``. The key comes from the
``api_key`` argument, the ``RETAIN_API_KEY`` variable or a key file
(``RETAIN_API_KEY_FILE``); see :func:`resolve_api_key` and :func:`check_bind`.
When the service listens beyond loopback (``host``) and has a key, reads need it
too: the API from the same headers, the dashboard also from a cookie that
opening any page once with ``?key=KEY`` sets (see :func:`create_app`). While reads
need no key, a request must name this machine in its ``Host`` (against DNS
rebinding), and with no key a write from another site's page is refused.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import hmac
import ipaddress
import logging
import os
import re
import secrets
import threading
from collections.abc import AsyncIterator, Callable, Hashable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import duckdb
from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from retain.errors import ArgumentError, DataError, RetainError, SchemaError, StoreError
from retain.store import Store

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
TEMPLATES_DIR = HERE / "templates"

T = TypeVar("T")


class ServiceError(RetainError):
    """The service cannot start as asked (no API key for a public write endpoint, ...)."""


def resolve_api_key(api_key: str | None = None, key_file: str | Path | None = None) -> str | None:
    """The API key: ``api_key``, else the first line of ``key_file``, else the
    ``RETAIN_API_KEY`` variable, else the file named by ``RETAIN_API_KEY_FILE``;
    None when none is set. Spaces, tabs and line ends around a key are not part of it
    (an HTTP header cannot carry them). A key file that cannot be read, or a key that
    is blank or shorter than 16 characters from any of them, is an error.
    """
    path = key_file or os.environ.get("RETAIN_API_KEY_FILE")
    if api_key:
        key, source = api_key.strip(), "the API key given"
    elif key_file is None and os.environ.get("RETAIN_API_KEY"):
        key, source = os.environ["RETAIN_API_KEY"].strip(), "RETAIN_API_KEY"
    elif path:
        try:
            text = Path(path).expanduser().read_text(encoding="utf-8")
        except OSError as exc:
            raise ServiceError(f"cannot read the API key file {path}: {exc.strerror}") from exc
        key = text.strip().splitlines()[0].strip() if text.strip() else ""
        source = f"the API key file {path}"
    else:
        return None
    if not key:
        raise ServiceError(
            f"{source} is blank (only spaces, tabs or line ends), so it is no key; make one "
            "with `python -c 'import secrets; print(secrets.token_urlsafe(32))'`, or unset it"
        )
    if len(key) < 16:
        raise ServiceError(
            f"{source} holds no key of 16 characters or more; make one with "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
        )
    return key


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, api_key: str | None, writes: bool) -> None:
    """Refuse to serve write endpoints without a key on anything but loopback."""
    if writes and api_key is None and not is_loopback(host):
        raise ServiceError(
            f"refusing to listen on {host} with write endpoints (POST /api/orders) and no API "
            "key: set RETAIN_API_KEY or --api-key-file, or add --read-only, "
            "or listen on 127.0.0.1"
        )


KEY_COOKIE = "retain_key"
"""The cookie that lets a browser read the dashboard of a service that needs the key for
reads; it holds a token derived from the key, which does not let anyone write."""

MAX_BODY_BYTES = 1_048_576
"""The largest request body the service reads by default: 1 MiB (1,048,576 bytes). A larger
one is answered 413 before the service looks at it (see :func:`create_app`)."""

# paths anyone may read: the page furniture and the API's documentation
# /unsubscribe and /click: customers follow them from a message; the signed token is the key
PUBLIC_PATHS = ("/favicon.ico", "/openapi.json", "/docs", "/redoc", "/unsubscribe", "/click")
PUBLIC_PREFIXES = ("/static/", "/docs/assets/")
SIGNED_PREFIXES = ("/webhooks/",)
"""Paths whose requests prove themselves by a signature over their body (a shop's
webhooks, :mod:`retain.service.webhooks`): they need no API key and may name any host."""


class Service:
    """What every request shares: the store, the key, the cache and the write lock."""

    def __init__(
        self,
        db_path: str | Path,
        *,
        api_key: str | None,
        writes: bool,
        reads_need_key: bool = False,
        shopify_secret: str | None = None,
    ) -> None:
        self.db_path = str(db_path)
        self.api_key = api_key
        self.shopify_secret = shopify_secret  # the key of Shopify's webhook signatures
        self.writes = writes
        self.reads_need_key = reads_need_key and api_key is not None
        if self.db_path != ":memory:" and not Path(self.db_path).exists():
            raise StoreError(
                f"no store at {self.db_path}: ingest some orders first "
                f"(retain ingest FILE --db {self.db_path})"
            )
        self.root = Store(self.db_path, read_only=not writes)
        self.write_lock = threading.Lock()  # held while a batch of orders is written
        self.writer: Any = None  # the WriteQueue of POST /api/orders, started on first use
        self.generation = 0  # bumped by every write; cache entries of older ones are stale
        self.epoch = 0  # bumped by an erasure: nothing computed before it is kept, even stale
        self._cache: dict[Hashable, tuple[int, Any]] = {}
        self._cache_lock = threading.Lock()
        self._local = threading.local()
        self._key_locks: dict[Hashable, threading.Lock] = {}
        self._cursors: list[Any] = []
        self._refreshing: set[Hashable] = set()
        self._threads: list[threading.Thread] = []
        self.written: dict[str, int] = {}  # customer -> generation of their last write
        self.ledger_seq = 0  # writes to the points ledger so far
        self.ledger_written: dict[str, int] = {}  # customer -> ledger_seq of their last write
        self.extras: dict[str, Any] = {}  # what the routes derive from one customer index
        self.closed = False
        self._closing = False  # close() has begun
        self.stopping = threading.Event()  # set by close(): background loops end
        self.warmed = threading.Event()  # set when warm() has computed what it computes

    def store(self) -> Store:
        """A Store on this thread's own cursor of the shared database."""
        view: Store | None = getattr(self._local, "store", None)
        if view is None:
            view = Store.__new__(Store)
            view.path = self.root.path
            view.in_transaction = False  # as Store() starts: this cursor's own transactions
            with self._cache_lock:
                if self.closed:
                    raise StoreError("the service is shutting down")
                view.con = self.root.con.cursor()
                self._cursors.append(view.con)
            view.con.execute("SET TimeZone = 'UTC'")
            self._local.store = view
        return view

    def cached(
        self,
        key: Hashable,
        compute: Callable[[Store], T],
        *,
        sticky: bool = False,
        stale_ok: bool = False,
    ) -> T:
        """``compute(store)``, computed once per store generation by one thread.

        ``sticky`` results are kept across writes. ``stale_ok``: after a write,
        keep answering with the previous result while a background thread
        computes the new one, so that a large store never stalls a lookup.
        """
        start_refresh = False
        with self._cache_lock:
            hit = self._cache.get(key)
            if hit is not None and (sticky or hit[0] == self.generation):
                return hit[1]
            if hit is not None and stale_ok and key not in self._refreshing and not self.closed:
                self._refreshing.add(key)
                start_refresh = True
            lock = self._key_locks.setdefault(key, threading.Lock())
        if hit is not None and stale_ok:
            if start_refresh:
                self.background(self._refresh, key, compute)
            return hit[1]
        with lock:
            with self._cache_lock:
                hit = self._cache.get(key)
                generation, epoch = self.generation, self.epoch
                if hit is not None and (sticky or hit[0] == generation):
                    return hit[1]
            value = compute(self.store())
            with self._cache_lock:
                if epoch == self.epoch:  # else computed from what an erasure removed
                    self._cache[key] = (generation, value)
            return value

    def _refresh(self, key: Hashable, compute: Callable[[Store], Any]) -> None:
        try:
            with self._cache_lock:
                generation, epoch = self.generation, self.epoch
            value = compute(self.store())
            with self._cache_lock:
                current = self._cache.get(key)
                if epoch == self.epoch and (current is None or current[0] <= generation):
                    self._cache[key] = (generation, value)
        except Exception:  # the next request meets the error and reports it
            pass
        finally:
            with self._cache_lock:
                self._refreshing.discard(key)

    def caller(self, headers: dict[str, str], client: Any, route: str, status: int) -> str:
        """Who made a request, for the audit: ``key:`` and the first 12 hex digits of the
        key's SHA-256 (the key itself is never written), ``shopify:SHOP`` for a webhook
        whose signature held (any answer but 401 and 403), ``loopback`` for a keyless write from this machine, else
        ``unknown``."""
        if route.startswith("/webhooks/shopify") and status not in (401, 403):
            return "shopify:" + headers.get("x-shopify-shop-domain", "unknown")[:200]
        if self.key_matches(self.given_key(headers)):
            assert self.api_key is not None
            return "key:" + hashlib.sha256(self.api_key.encode()).hexdigest()[:12]
        host = str(client[0]) if client else ""
        if self.api_key is None and is_loopback(host):
            return "loopback"
        return "unknown"

    def audit(self, who: str, method: str, route: str, status: int) -> None:
        """Keep one write request in ``api_audit`` (see :class:`_Audit`)."""
        if self.closed or not self.writes:
            return
        with contextlib.suppress(duckdb.Error, RetainError):  # it never fails a request
            self.store().con.execute(
                "INSERT INTO api_audit VALUES (now()::TIMESTAMP, ?, ?, ?, ?)",
                [who, method, route, status],
            )

    def forget_everything(self) -> None:
        """Forget every cached result, the customer index and sticky ones too, and any
        being computed now: after an erasure no answer may come from what was there
        before (the next request computes afresh, and waits for it)."""
        with self._cache_lock:
            self._cache.clear()
            self.generation += 1
            self.epoch += 1

    def generation_of(self, key: Hashable) -> int:
        """The store generation the cached ``key`` was computed at (-1: none)."""
        with self._cache_lock:
            hit = self._cache.get(key)
            return hit[0] if hit is not None else -1

    def wrote(self, customer_id: str) -> None:
        """Record a write for ``customer_id``: cached results are now stale."""
        with self._cache_lock:
            self.generation += 1
            self.written[customer_id] = self.generation

    def wrote_batch(self, customer_ids: list[str], index_key: Hashable, index: Any) -> None:
        """Record writes for ``customer_ids`` whose rows ``index`` (the cached ``index_key``,
        or None) already holds: other cached results are now stale, the index is current
        and is not rebuilt."""
        with self._cache_lock:
            hit = self._cache.get(index_key)
            current = index is not None and hit is not None and hit[1] is index
            current = current and hit is not None and hit[0] == self.generation
            self.generation += 1
            for customer_id in customer_ids:
                self.written[customer_id] = self.generation
            if current:
                self._cache[index_key] = (self.generation, index)

    def peek(self, key: Hashable) -> Any:
        """The cached ``key`` whatever its generation, or None: never computes it."""
        with self._cache_lock:
            hit = self._cache.get(key)
            return hit[1] if hit is not None else None

    def replace_cached(self, key: Hashable, old: Any, new: Any) -> bool:
        """Put ``new`` in place of the cached ``old`` (same generation); False, and nothing
        changed, when ``key`` no longer holds ``old``."""
        with self._cache_lock:
            hit = self._cache.get(key)
            if hit is None or hit[1] is not old:
                return False
            self._cache[key] = (hit[0], new)
            return True

    def is_fresh(self, customer_id: str, key: Hashable) -> bool:
        """Whether the cached ``key`` was computed after the last write for this customer."""
        return self.written.get(customer_id, -1) <= self.generation_of(key)

    def wrote_ledger(self, customer_id: str) -> None:
        """Record a write to ``customer_id``'s points: the balances held in memory are stale
        for them (and for them alone: nothing else cached is)."""
        with self._cache_lock:
            self.ledger_seq += 1
            self.ledger_written[customer_id] = self.ledger_seq

    def forget_ledger_writes(self, until: int) -> None:
        """Forget the ledger writes up to ``until`` (of :attr:`ledger_seq`): what is held
        in memory now was read after them."""
        with self._cache_lock:
            self.ledger_written = {c: n for c, n in self.ledger_written.items() if n > until}

    def refresh(self, key: Hashable, compute: Callable[[Store], Any]) -> None:
        """Compute ``key`` anew in the background (once at a time), the value held
        answering meanwhile."""
        with self._cache_lock:
            if key in self._refreshing or self.closed:
                return
            self._refreshing.add(key)
        self.background(self._refresh, key, compute)

    def forget(self, key: Hashable) -> None:
        """Forget the cached ``key`` alone: a write changed what it was computed from and
        nothing else (a ledger entry and the loyalty report)."""
        with self._cache_lock:
            self._cache.pop(key, None)

    def invalidate(self) -> None:
        """Forget every cached result: the store changed."""
        with self._cache_lock:
            self.generation += 1

    def key_matches(self, given: str | None) -> bool:
        """Whether ``given`` is the API key (False when no key is set)."""
        if not given or self.api_key is None:
            return False
        return hmac.compare_digest(given.encode(), self.api_key.encode())

    def cookie_token(self) -> str:
        """What the read cookie holds: derived from the key, not the key itself."""
        assert self.api_key is not None
        return hmac.new(self.api_key.encode(), b"retain read cookie", "sha256").hexdigest()

    @staticmethod
    def given_key(headers: Mapping[str, str]) -> str | None:
        """The key a request sends (``headers``: its headers by lower-case name), as
        ``X-API-Key`` or ``Authorization: Bearer``."""
        given = headers.get("x-api-key")
        auth = headers.get("authorization", "")
        if given is None and auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        return given

    def may_read(self, request: Request) -> bool:
        """Whether the request may read: always, unless reads need the key; then with the
        key in a header or the read cookie."""
        if not self.reads_need_key:
            return True
        if self.key_matches(self.given_key(request.headers)):
            return True
        cookie = request.cookies.get(KEY_COOKIE)
        if not cookie:
            return False
        return hmac.compare_digest(cookie.encode(), self.cookie_token().encode())

    def check_key(self, request: Request) -> None:
        """Raise 401 unless the request carries the API key (or, with no key set, comes
        from this machine)."""
        if self.api_key is None:
            client = request.client.host if request.client else ""
            if is_loopback(client):
                return
            raise HTTPException(401, "write endpoints need an API key; none is configured")
        if not self.key_matches(self.given_key(request.headers)):
            raise HTTPException(
                401,
                "missing or wrong API key: send it as 'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
                headers={"WWW-Authenticate": "Bearer"},
            )

    def background(self, target: Callable[..., Any], *args: Any) -> None:
        """Run ``target(*args)`` in a thread that :meth:`close` waits for."""
        thread = threading.Thread(target=target, args=args, daemon=True)
        with self._cache_lock:
            if self.closed:
                return
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def warm(self) -> None:
        """Compute what the first pages need (customer index, overview), so that the first
        visitor does not wait for it. Errors are left for the request that meets them."""
        from retain.service import api

        # the overview (a few passes over the orders in DuckDB, holding little) beside the
        # customer index, whose Python work it fills the other core with
        def overview() -> None:
            with contextlib.suppress(Exception):
                api.metrics(self, "month", 1.0, 365)

        beside = threading.Thread(target=overview, name="warm-overview", daemon=True)
        beside.start()
        # the index and the recommendations one after the other, each once the working
        # memory of the one before is let go: loaded side by side, the customers' purchases
        # (a lookup needs them too) were read while the index's intermediate tables were
        # still held, and the two peaks added up
        with contextlib.suppress(Exception):
            api.index_of(self)
        # DuckDB's cached table blocks go too (see release_free_memory), once no start-up
        # query runs beside: they are let go by lowering its memory limit for a moment
        beside.join()
        release_free_memory(self)
        with contextlib.suppress(Exception):
            api.recommendations(self)
        release_free_memory(self)
        with contextlib.suppress(Exception):
            rules = self.cached(api.RULES_KEY, api.loyalty_rules, sticky=True)
            if rules:  # a store without a loyalty ledger has no balances
                self.cached("loyalty_basis", api.loyalty_basis)
                api.load_balances(self)
        # lookups are answered from memory: what the store's queries kept goes now
        release_free_memory(self)
        # what was just built lives as long as the service: keep the collector off it
        gc.freeze()
        self.warmed.set()

    def close(self) -> None:
        """Stop background work, close every cursor, then the store (once: a second call
        does nothing)."""
        with self._cache_lock:
            if self._closing:
                return
            self._closing = True
        self.stopping.set()
        if self.writer is not None:  # answer the queued orders, finish the batch started
            self.writer.close()
        with self._cache_lock:
            self.closed = True  # no new cursors or threads from now on
            cursors = list(self._cursors)
            threads = list(self._threads)
        for cursor in cursors:
            with contextlib.suppress(Exception):
                cursor.interrupt()
        for thread in threads:
            thread.join(timeout=30)
        with self._cache_lock:
            cursors, self._cursors = self._cursors, []
        for cursor in cursors:
            with contextlib.suppress(Exception):
                cursor.close()
        self.root.close()
        gc.unfreeze()


def campaign_ticks(
    service: Service, campaigns: Any, channels: dict[str, Any], every: float
) -> None:
    """Run the campaigns every ``every`` seconds until the service stops (``retain serve
    --campaigns``): the tick ``retain campaigns run`` runs, on the service's own store,
    which another process cannot write while the service holds it. Each tick holds the
    write lock (orders posted meanwhile wait); its result is kept for the Campaigns page,
    an error is logged and the next tick tries again."""
    from retain.campaigns import run_campaigns

    while not service.stopping.is_set():
        try:
            with service.write_lock:
                result = run_campaigns(service.store(), campaigns, channels=channels)
            service.extras["campaigns_last"] = result.to_dict()
            log.info("campaigns: %s", {k: result.counts.get(k) for k in ("sent", "held", "failed")})
        except Exception as exc:  # the service goes on; the next tick tries again
            service.extras["campaigns_last"] = {"error": str(exc)}
            log.exception("campaigns: the tick failed")
        service.stopping.wait(every)


def route_ticks(service: Service, routes: Any, channels: dict[str, Any], every: float) -> None:
    """Route new complaints every ``every`` seconds until the service stops (``retain serve
    --feedback-routes``): what ``retain feedback route`` does, on the service's own store.
    An error is logged and the next tick tries again."""
    from retain.feedback.routing import route_complaints

    while not service.stopping.is_set():
        try:
            with service.write_lock:
                result = route_complaints(service.store(), routes, channels=channels)
            service.extras["routes_last"] = result
            log.info("feedback routes: %s", {r["route"]: r["sent"] for r in result["routes"]})
        except Exception:  # the service goes on; the next tick tries again
            log.exception("feedback routes: the tick failed")
        service.stopping.wait(every)


def release_free_memory(service: Service) -> None:
    """Hand the memory freed by a large computation back to the system: Arrow's pool keeps
    what its arrays let go, and the C allocator the freed tops of its heaps, which would
    otherwise count in the process's resident memory while the next load adds its own;
    and the ``service``'s store lets go of the table blocks DuckDB keeps after its queries
    (:func:`retain.store.drop_cached_blocks`: at 1M customers some 340 MB after the
    start-up work, and 430 MB of resident memory)."""
    import ctypes
    import ctypes.util

    import duckdb
    import pyarrow as pa

    from retain.store import drop_cached_blocks

    with contextlib.suppress(RetainError, duckdb.Error):  # closing: nothing to drop
        drop_cached_blocks(service.store())

    pa.default_memory_pool().release_unused()
    name = ctypes.util.find_library("c")
    if name is None:
        return
    with contextlib.suppress(OSError, AttributeError):  # malloc_trim is glibc's
        ctypes.CDLL(name).malloc_trim(0)


def create_app(
    db_path: str | Path,
    api_key: str | None = None,
    *,
    writes: bool = True,
    key_file: str | Path | None = None,
    warm: bool = True,
    host: str | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    campaigns: str | Path | None = None,
    campaigns_every: float = 60.0,
    feedback_routes: str | Path | None = None,
    shopify_secret: str | None = None,
) -> FastAPI:
    """The retain web service over the store at ``db_path``.

    ``api_key`` (or ``key_file``, ``RETAIN_API_KEY``, ``RETAIN_API_KEY_FILE``)
    protects the write endpoints; ``writes=False`` leaves them out and opens
    the store read-only. ``host``: the address the server listens on; beyond
    loopback (``0.0.0.0``, a LAN address, ...) and with a key, every read needs the
    key too (customers' e-mails, names and audience exports are personal data):
    ``X-API-Key`` or ``Authorization: Bearer`` for the API, and for a browser
    opening any page once as ``/...?key=KEY``, which keeps a cookie. Give it when
    serving the app with a server of your own. ``warm`` computes the customer index
    and the overview in the background at startup. Serve it with uvicorn (see
    :func:`retain.service.serve`, which also refuses a public address without a key).
    ``campaigns``: a campaign file run every ``campaigns_every`` seconds in the service
    (:func:`campaign_ticks`); its mistakes, and a channel it cannot have (no SMTP URL),
    stop the start. ``feedback_routes``: a routes file whose new complaints are sent every
    ``campaigns_every`` seconds (:func:`route_ticks`; needs ``RETAIN_WEBHOOK_SECRET``).
    ``shopify_secret`` (default ``RETAIN_SHOPIFY_SECRET``): the app's shared secret, which
    opens ``POST /webhooks/shopify/{topic}`` (:mod:`retain.service.webhooks`).

    While reads need no key, only requests addressed to this machine are answered
    (``Host`` localhost, 127.x.x.x, [::1] or the address the request arrived at; others
    403 unless they carry the key), and with no key set a write sent from another site's
    page (its ``Origin`` or ``Referer``) is refused (403). A request body larger than
    ``max_body_bytes`` (default :data:`MAX_BODY_BYTES`, 1 MiB) is answered 413. An
    unexpected error is answered 500 with an error id only; the exception and its
    traceback go to the ``retain.service`` logger under that id.
    """
    from retain import __version__
    from retain.service import api, pages, webhooks

    ticks: tuple[Any, dict[str, Any]] | None = None
    if campaigns is not None:
        from retain.campaigns import load_campaigns
        from retain.campaigns.outbox import channel_for

        if not writes:
            raise ServiceError("--campaigns needs a writable service: drop --read-only")
        checked = load_campaigns(campaigns)

    service = Service(
        db_path,
        api_key=resolve_api_key(api_key, key_file),
        writes=writes,
        reads_need_key=host is not None and not is_loopback(host),
        shopify_secret=shopify_secret or os.environ.get("RETAIN_SHOPIFY_SECRET") or None,
    )
    if campaigns is not None:
        kinds = {c.channel for c in checked.campaigns if c.enabled}
        try:
            ticks = (checked, {kind: channel_for(kind, checked, service.root) for kind in kinds})
        except BaseException:
            service.root.close()
            raise

    if ticks is not None:
        service.extras["campaigns_file"] = ticks[0]
    routing: tuple[Any, dict[str, Any]] | None = None
    if feedback_routes is not None:
        from retain.campaigns.channels import WebhookChannel
        from retain.feedback import store_taxonomy
        from retain.feedback.routing import load_routes

        secret = os.environ.get("RETAIN_WEBHOOK_SECRET")
        try:
            if not writes:
                raise ServiceError("--feedback-routes needs a writable service: drop --read-only")
            if not secret:
                raise ServiceError(
                    "--feedback-routes needs RETAIN_WEBHOOK_SECRET (the key the receivers "
                    "check the signature with)"
                )
            found = load_routes(Path(feedback_routes), set(store_taxonomy(service.root).topics))
        except BaseException:
            service.root.close()
            raise
        routing = (found, {r.name: WebhookChannel(r.webhook_url, secret) for r in found})

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if ticks is not None:
            service.background(campaign_ticks, service, *ticks, campaigns_every)
        if routing is not None:
            service.background(route_ticks, service, *routing, campaigns_every)
        if warm:
            service.background(service.warm)
        try:
            yield
        finally:  # also when the server stops at once (a second Ctrl+C cancels this task):
            # the writer's batch is finished and the store closed before the process exits
            service.close()

    app = FastAPI(
        lifespan=lifespan,
        docs_url=None,  # served below from files in the package, not from a CDN
        redoc_url=None,
        title="retain",
        version=__version__,
        description=(
            "Customer lifetime value and retention: metrics, cohorts, segments, churn risk, "
            "model scores and recommendations over a retain store. Every dashboard page has a "
            "JSON twin under /api. Money is in the store's reporting currency; every rate "
            "and share is in percent (0-100); probabilities such as p_alive are 0-1. "
            "Write endpoints need the API key "
            "(`Authorization: Bearer KEY` or `X-API-Key: KEY`); a service that listens "
            "beyond loopback with a key needs it for reads too."
        ),
    )
    app.state.service = service
    app.include_router(api.router)
    app.include_router(pages.router)
    app.include_router(webhooks.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    _offline_docs(app)
    # innermost: a lookup is answered from memory only once every check above has passed
    app.add_middleware(
        _MemoryLookups,
        service=service,
        lookups={
            "/api/customers/": api.customer_in_memory,
            "/api/loyalty/customers/": api.points_in_memory,
        },
    )
    if service.reads_need_key:
        app.middleware("http")(_reads_need_the_key)
    # added last is outermost: errors, then who may ask, then how much they may send
    app.add_middleware(_BodyLimit, limit=max_body_bytes)
    if not service.reads_need_key:
        app.add_middleware(_ThisMachineOnly, service=service)
    app.add_middleware(_UnexpectedErrors)
    if service.writes:  # outermost: the audit sees every answer, refusals included
        app.add_middleware(_Audit, service=service)

    @app.exception_handler(RetainError)
    async def retain_error(request: Request, exc: RetainError) -> Response:
        status = 422 if isinstance(exc, ArgumentError | DataError | SchemaError) else 409
        if isinstance(exc, StoreError):
            status = 503
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": str(exc)}, status_code=status)
        return pages.error_page(request, status, str(exc))

    # Starlette's class: also the 404 and 405 that routing raises for unknown paths
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Any:
        if request.url.path.startswith("/api/") or request.url.path.startswith("/static/"):
            return JSONResponse(
                {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
            )
        return pages.error_page(request, exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Any:
        problems = [_problem(e) for e in exc.errors()]
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": problems}, status_code=422)
        return pages.error_page(request, 422, "; ".join(problems))

    return app


def _problem(error: Any) -> str:
    """One validation error in words: ``lines.0.sku: ...``, or the message alone for the
    whole request (a check of the model's own, as "give net_revenue or gross")."""
    where = ".".join(str(p) for p in error["loc"] if p != "body")
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def docs_assets_dir() -> Path:
    """Swagger UI and ReDoc's files, as the ``fastapi-offline`` package ships them."""
    import importlib.util

    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        raise ServiceError(
            "the API docs need the fastapi-offline package: pip install fastapi-offline"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def _offline_docs(app: FastAPI) -> None:
    """/docs (Swagger UI) and /redoc, with every file they load served by the app itself,
    so that they work on a machine with no internet."""
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
    from fastapi.responses import HTMLResponse

    app.mount("/docs/assets", StaticFiles(directory=docs_assets_dir()), name="docs-assets")
    title = f"{app.title} {app.version}: API"

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=title,
            swagger_js_url="/docs/assets/swagger-ui-bundle.js",
            swagger_css_url="/docs/assets/swagger-ui.css",
            swagger_favicon_url="/docs/assets/favicon.png",
            # no badge fetched from the online validator
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url="/openapi.json",
            title=title,
            redoc_js_url="/docs/assets/redoc.standalone.js",
            redoc_favicon_url="/docs/assets/favicon.png",
            with_google_fonts=False,
        )


READ_KEY_HELP = (
    "this service listens beyond this machine, so reading it needs the API key: send it "
    "as 'X-API-Key: KEY' or 'Authorization: Bearer KEY'; in a browser, open any page once "
    "with ?key=KEY added to its address (for example /customers?key=KEY) and the browser "
    "keeps a cookie for the dashboard"
)


async def _reads_need_the_key(request: Request, call_next: Callable[[Request], Any]) -> Response:
    """Let a request through when it may read; take ``?key=`` on a page into a cookie."""
    from urllib.parse import urlencode

    from fastapi.responses import RedirectResponse

    from retain.service import pages

    service: Service = request.app.state.service
    path = request.url.path
    if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES + SIGNED_PREFIXES):
        response: Response = await call_next(request)
        return response
    is_api = path.startswith("/api/")
    given = request.query_params.get("key")
    if given is not None and not is_api:
        if not service.key_matches(given):
            return pages.error_page(request, 401, "wrong API key in ?key=; " + READ_KEY_HELP)
        rest = [(k, v) for k, v in request.query_params.multi_items() if k != "key"]
        response = RedirectResponse(path + (f"?{urlencode(rest)}" if rest else ""), 303)
        response.set_cookie(
            KEY_COOKIE,
            service.cookie_token(),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response
    if service.may_read(request):
        response = await call_next(request)
        return response
    if is_api:
        return JSONResponse(
            {"detail": "missing or wrong API key: " + READ_KEY_HELP},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    return pages.error_page(request, 401, READ_KEY_HELP)


# --- what every request passes first: the Host it names, its origin, its size, errors ----

log = logging.getLogger("retain.service")

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def host_name(host: str) -> str:
    """The name or address of a ``Host`` header (or an origin's host part), lower case,
    without its port, brackets or a trailing dot: ``[::1]:8765`` -> ``::1``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host[1:]
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


HOST_VALUE = re.compile(
    r"(?:\[[0-9a-f:.]+\]|[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.?)(?::[0-9]{1,5})?", re.IGNORECASE
)
"""A well-formed ``Host`` value: a name or IPv4 address, or an IPv6 address in brackets,
with an optional port (RFC 9110's uri-host [":" port])."""


def names_this_machine(host: str, server: str | None = None) -> bool:
    """Whether a ``Host`` value names this machine: ``localhost`` (or a name under it),
    an address in 127.0.0.0/8, ``::1``, or ``server``, the address the request arrived at.
    A value that is no host and port (``localhost@attacker.example``, two hosts with a
    comma, an unclosed bracket) names nothing."""
    if not HOST_VALUE.fullmatch(host.strip()):
        return False
    name = host_name(host)
    if name == "localhost" or name.endswith(".localhost") or is_loopback(name):
        return True
    return server is not None and _address(name) == _address(host_name(server))


def _address(name: str) -> str:
    """An IP address in one spelling (an IPv4-mapped IPv6 address as IPv4); other names as
    they are."""
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return name
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


DEFAULT_PORTS = {"http": 80, "https": 443}


def from_this_service(value: str, server: tuple[str, int | None] | None) -> bool:
    """Whether an ``Origin`` or ``Referer`` value is a page of this service itself: this
    machine (:func:`names_this_machine`) at the port the request arrived at (``server``:
    its address and port). A page of another program on this machine (another port) is
    another origin, as the browser sees it, and is not this service's."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(value.strip())
        port = parts.port or DEFAULT_PORTS.get(parts.scheme.lower())
    except ValueError:  # no URL, or a port out of range
        return False
    netloc = parts.netloc.rpartition("@")[2]
    if not netloc or parts.scheme.lower() not in DEFAULT_PORTS:
        return False
    if server is None or server[1] is None:
        return names_this_machine(netloc)
    return names_this_machine(netloc, str(server[0])) and port == server[1]


class _ThisMachineOnly:
    """Answer only requests addressed to this machine while reads need no key.

    A web page the user visits can make the browser send requests to 127.0.0.1 under a
    name of its own that resolves there (DNS rebinding): such a request names that other
    host. So, while reads are open, a request whose ``Host`` is not this machine's (see
    :func:`names_this_machine`) is refused with 403, unless it carries the API key. With
    no key set, a write (POST, PUT, PATCH, DELETE) whose ``Origin`` or, without one,
    ``Referer`` is not a page of this service (:func:`from_this_service`: another site's,
    or another program's on another port of this machine) is refused too.
    """

    def __init__(self, app: Any, service: Service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].startswith(SIGNED_PREFIXES):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        server = scope.get("server")
        server_host = str(server[0]) if server else None
        problem = None
        host = headers.get("host")
        if host is not None and not names_this_machine(host, server_host):
            if not self.service.key_matches(Service.given_key(headers)):
                problem = (
                    f"this service answers requests addressed to this machine only (localhost, "
                    f"127.0.0.1, [::1]), not to {host_name(host)!r}: a request naming another "
                    "host can come from a web page that made its name point here. Open it as "
                    "http://127.0.0.1:PORT/, or set an API key and send it"
                )
        elif self.service.api_key is None and scope["method"] in UNSAFE_METHODS:
            for header in ("origin", "referer"):
                if header not in headers:
                    continue
                if not from_this_service(headers[header], server):
                    problem = (
                        f"refusing a {scope['method']} sent from {headers[header]!r} "
                        f"({header.capitalize()} header): with no API key set, this service "
                        "takes writes from its own pages (this port) and from programs that "
                        "send no Origin only; set an API key (RETAIN_API_KEY) to take writes "
                        "from elsewhere"
                    )
                break
        if problem is None:
            await self.app(scope, receive, send)
            return
        await JSONResponse({"detail": problem}, status_code=403)(scope, receive, send)


class _MemoryLookups:
    """Answer the lookups that the service holds whole in memory, ``GET /api/customers/{id}``
    and ``GET /api/loyalty/customers/{id}`` without a query string (``lookups``: a path's
    prefix and what answers it, :func:`retain.service.api.customer_in_memory` and
    :func:`retain.service.api.points_in_memory`), with the very response the route gives
    (a :class:`JSONResponse` of the same dict); anything else goes on to the routes.
    FastAPI's routing and parameter handling cost about as much CPU as the lookup itself,
    and such lookups are the service's bulk."""

    def __init__(
        self,
        app: Any,
        service: Service,
        lookups: dict[str, Callable[[Service, str, int], Any]],
    ) -> None:
        self.app = app
        self.service = service
        self.lookups = lookups

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] == "http"
            and scope["method"] == "GET"
            and not scope.get("query_string")
            and not scope.get("root_path")
        ):
            for prefix, lookup in self.lookups.items():
                if not path.startswith(prefix):
                    continue
                try:
                    found = lookup(self.service, path[len(prefix) :], 0)
                except Exception:  # the route meets the same error and answers it as it does
                    found = None
                if found is not None:
                    await JSONResponse(found)(scope, receive, send)
                    return
                break
        await self.app(scope, receive, send)


class _BodyLimit:
    """Answer 413 to a request whose body is larger than ``limit`` bytes, before the
    service reads any of it (by its ``Content-Length``) or as soon as it grows past the
    limit (a body sent in chunks)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    def too_large(self, size: str) -> JSONResponse:
        return JSONResponse(
            {
                "detail": f"the request body is {size} bytes; this service takes at most "
                f"{self.limit:,} bytes per request"
            },
            status_code=413,
            headers={"Connection": "close"},
        )

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length", b"").strip()
        if length.isdigit() and int(length) > self.limit:
            await self.too_large(f"{int(length):,}")(scope, receive, send)
            return
        if not length.isdigit() and b"transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body
            return
        # read the body up to the limit, then hand it on as it came
        messages: list[dict[str, Any]] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.limit:
                await self.too_large(f"more than {self.limit:,}")(scope, receive, send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> dict[str, Any]:
            if messages:
                return messages.pop(0)
            message: dict[str, Any] = await receive()
            return message

        await self.app(scope, replay, send)


class _Audit:
    """Record every write request (``POST``, ``PUT``, ``PATCH``, ``DELETE``) in
    ``api_audit`` once it is answered, refused ones too: when, who (:meth:`Service.
    caller`: the key's id, never the key; ``shopify:SHOP`` for a signed webhook), what (the
    method and the route as declared, ``/api/loyalty/customers/{customer_id}/redeem``:
    no customer's id) and the status answered."""

    def __init__(self, app: Any, service: Service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in UNSAFE_METHODS:
            await self.app(scope, receive, send)
            return
        recorded = False

        async def record(status: int) -> None:
            # before the answer goes out: an answered write is always in the audit
            nonlocal recorded
            recorded = True
            route = scope.get("route")
            what = str(getattr(route, "path", None) or "(no route)")
            headers = {
                k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]
            }
            who = self.service.caller(headers, scope.get("client"), what, status)
            await run_in_threadpool(self.service.audit, who, scope["method"], what, status)

        async def watch(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and not recorded:
                await record(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            if not recorded:  # no answer started: the server's own 500
                await record(500)


class _UnexpectedErrors:
    """Answer an exception nothing else handled with a 500 that says only an error id, and
    log the exception with that id and its traceback (logger ``retain.service``).

    It answers in place of the server, so the connection stays open for the client's
    next request (an exception that reaches the server makes it close the connection).
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            if started:  # half an answer is out: only closing the connection can say so
                raise
            error_id = secrets.token_hex(6)
            log.error(
                "internal error %s on %s %s", error_id, scope["method"], scope["path"], exc_info=exc
            )
            message = (
                f"internal error {error_id}: the service could not answer this request; "
                "its log has the details under this id"
            )
            response = _error_response(scope, message, error_id)
            await response(scope, receive, send)


def _error_response(scope: dict[str, Any], message: str, error_id: str) -> Response:
    """A 500: JSON on the API, the error page elsewhere (plain text if even that fails)."""
    from fastapi.responses import PlainTextResponse

    headers = {"X-Retain-Error-Id": error_id}
    if str(scope["path"]).startswith("/api/"):
        return JSONResponse(
            {"detail": message, "error_id": error_id}, status_code=500, headers=headers
        )
    from retain.service import pages

    try:
        page = pages.error_page(Request(scope), 500, message)
    except Exception:  # the page itself cannot be made: the message alone
        return PlainTextResponse(message, status_code=500, headers=headers)
    page.headers.update(headers)
    return page
