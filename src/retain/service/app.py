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
opening any page once with ``?key=KEY`` sets (see :func:`create_app`).
"""

from __future__ import annotations

import contextlib
import gc
import hmac
import ipaddress
import os
import threading
from collections.abc import AsyncIterator, Callable, Hashable
from pathlib import Path
from typing import Any, TypeVar

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from retain.errors import DataError, RetainError, SchemaError, StoreError
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
    None when none is set. A key file that cannot be read, or a key shorter than
    16 characters from any of them, is an error.
    """
    path = key_file or os.environ.get("RETAIN_API_KEY_FILE")
    if api_key:
        key, source = api_key, "the API key given"
    elif key_file is None and os.environ.get("RETAIN_API_KEY"):
        key, source = os.environ["RETAIN_API_KEY"], "RETAIN_API_KEY"
    elif path:
        try:
            text = Path(path).expanduser().read_text(encoding="utf-8")
        except OSError as exc:
            raise ServiceError(f"cannot read the API key file {path}: {exc.strerror}") from exc
        key = text.strip().splitlines()[0].strip() if text.strip() else ""
        source = f"the API key file {path}"
    else:
        return None
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

# paths anyone may read: the page furniture and the API's documentation
PUBLIC_PATHS = ("/favicon.ico", "/openapi.json", "/docs", "/redoc")
PUBLIC_PREFIXES = ("/static/", "/docs/assets/")


class Service:
    """What every request shares: the store, the key, the cache and the write lock."""

    def __init__(
        self,
        db_path: str | Path,
        *,
        api_key: str | None,
        writes: bool,
        reads_need_key: bool = False,
    ) -> None:
        self.db_path = str(db_path)
        self.api_key = api_key
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
        self._cache: dict[Hashable, tuple[int, Any]] = {}
        self._cache_lock = threading.Lock()
        self._local = threading.local()
        self._key_locks: dict[Hashable, threading.Lock] = {}
        self._cursors: list[Any] = []
        self._refreshing: set[Hashable] = set()
        self._threads: list[threading.Thread] = []
        self.written: dict[str, int] = {}  # customer -> generation of their last write
        self.extras: dict[str, Any] = {}  # what the routes derive from one customer index
        self.closed = False

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
                generation = self.generation
                if hit is not None and (sticky or hit[0] == generation):
                    return hit[1]
            value = compute(self.store())
            with self._cache_lock:
                self._cache[key] = (generation, value)
            return value

    def _refresh(self, key: Hashable, compute: Callable[[Store], Any]) -> None:
        try:
            with self._cache_lock:
                generation = self.generation
            value = compute(self.store())
            with self._cache_lock:
                current = self._cache.get(key)
                if current is None or current[0] < generation:
                    self._cache[key] = (generation, value)
        except Exception:  # the next request meets the error and reports it
            pass
        finally:
            with self._cache_lock:
                self._refreshing.discard(key)

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
    def given_key(request: Request) -> str | None:
        """The key a request sends, as ``X-API-Key`` or ``Authorization: Bearer``."""
        given = request.headers.get("x-api-key")
        auth = request.headers.get("authorization", "")
        if given is None and auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        return given

    def may_read(self, request: Request) -> bool:
        """Whether the request may read: always, unless reads need the key; then with the
        key in a header or the read cookie."""
        if not self.reads_need_key:
            return True
        if self.key_matches(self.given_key(request)):
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
        if not self.key_matches(self.given_key(request)):
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

    def rank_in_background(self, recs: Any) -> None:
        """Rank the customers' personal recommendations chunk by chunk in one thread."""
        from retain.service import data

        with self._cache_lock:
            if "ranking" in self._refreshing or self.closed:
                return
            self._refreshing.add("ranking")

        def work() -> None:
            try:
                while not self.closed and data.rank_more_customers(self.store(), recs, 50_000):
                    pass
                gc.freeze()  # the ranked tables live as long as the service: keep GC off them
            except Exception:  # interrupted at shutdown, or the store changed under it
                pass
            finally:
                with self._cache_lock:
                    self._refreshing.discard("ranking")

        self.background(work)

    def warm(self) -> None:
        """Compute what the first pages need (customer index, overview), so that the first
        visitor does not wait for it. Errors are left for the request that meets them."""
        from retain.service import api

        with contextlib.suppress(Exception):
            api.index_of(self)
            api.recommendations(self)
            api.metrics(self, "month", 1.0, 365)
        # what was just built lives as long as the service: keep the collector off it
        gc.freeze()

    def close(self) -> None:
        """Stop background work, close every cursor, then the store."""
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


def create_app(
    db_path: str | Path,
    api_key: str | None = None,
    *,
    writes: bool = True,
    key_file: str | Path | None = None,
    warm: bool = True,
    host: str | None = None,
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
    """
    from retain import __version__
    from retain.service import api, pages

    service = Service(
        db_path,
        api_key=resolve_api_key(api_key, key_file),
        writes=writes,
        reads_need_key=host is not None and not is_loopback(host),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if warm:
            service.background(service.warm)
        yield
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
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    _offline_docs(app)
    if service.reads_need_key:
        app.middleware("http")(_reads_need_the_key)

    @app.exception_handler(RetainError)
    async def retain_error(request: Request, exc: RetainError) -> Response:
        status = 422 if isinstance(exc, DataError | SchemaError) else 409
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

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        # logged with its traceback by the server; the client gets the same shape as any error
        message = f"internal error: {type(exc).__name__}: {exc}"
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": message}, status_code=500)
        return pages.error_page(request, 500, message)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Any:
        problems = [
            f"{'.'.join(str(p) for p in e['loc'] if p != 'body')}: {e['msg']}" for e in exc.errors()
        ]
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": problems}, status_code=422)
        return pages.error_page(request, 422, "; ".join(problems))

    return app


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
    if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
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
