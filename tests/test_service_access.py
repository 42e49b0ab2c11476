"""Who may read: beyond loopback, with an API key set, every read needs the key (the API
from a header, the dashboard from a cookie that ``?key=`` sets); on loopback reads stay
open as before."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

warnings.filterwarnings("ignore", message=".*httpx.*starlette.testclient.*")

from fastapi.testclient import TestClient  # noqa: E402

from retain.service import create_app  # noqa: E402
from store_helpers import store_of  # noqa: E402

KEY = "a-test-key-of-enough-length"
LOOPBACK = ("127.0.0.1", 50000)
ELSEWHERE = ("203.0.113.9", 50000)
ORDERS = """order_id,customer_id,ordered_at,net_revenue,email
o1,a,2024-01-10,10.00,ana@example.com
o2,a,2024-03-10,30.00,ana@example.com
o3,b,2024-02-01,5.50,bo@example.com
"""
# every kind of read: the API, a customer (e-mail, name), an export, the pages
READS = (
    "/api/metrics",
    "/api/customers",
    "/api/customers/a",
    "/api/status",
    "/api/audiences/win-back.csv",
    "/",
    "/customers",
    "/customers/a",
    "/segments",
    "/search?q=a",
)


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return store_of(tmp_path_factory.mktemp("access"), orders=ORDERS)


@pytest.fixture
def public(db: Path) -> Iterator[TestClient]:
    """The service as `retain serve --host 0.0.0.0` with a key makes it."""
    app = create_app(db, KEY, writes=False, warm=False, host="0.0.0.0")
    with TestClient(app, client=ELSEWHERE, follow_redirects=False) as client:
        yield client


@pytest.mark.parametrize("path", READS)
def test_beyond_loopback_every_read_needs_the_key(public: TestClient, path: str) -> None:
    refused = public.get(path)
    assert refused.status_code == 401, refused.text
    if path.startswith("/api/"):
        assert "X-API-Key" in refused.json()["detail"]
        assert "ana@example.com" not in refused.text
    else:
        assert "text/html" in refused.headers["content-type"]
        assert "?key=" in refused.text  # says how to pass the key
    for headers in ({"X-API-Key": KEY}, {"Authorization": f"Bearer {KEY}"}):
        allowed = public.get(path, headers=headers)
        assert allowed.status_code in (200, 303), (path, allowed.text)
    assert public.get(path, headers={"X-API-Key": "not-the-key"}).status_code == 401


def test_from_this_machine_too(db: Path) -> None:
    app = create_app(db, KEY, writes=False, warm=False, host="::")
    with TestClient(app, client=LOOPBACK) as client:
        assert client.get("/api/customers/a").status_code == 401


def test_a_browser_passes_the_key_once_and_keeps_a_cookie(public: TestClient) -> None:
    wrong = public.get("/customers?key=nope")
    assert wrong.status_code == 401 and "wrong API key" in wrong.text
    given = public.get(f"/customers?segment=Champions&key={KEY}")
    assert given.status_code == 303
    assert given.headers["location"] == "/customers?segment=Champions"  # the key leaves the URL
    cookie = given.headers["set-cookie"]
    assert "retain_key=" in cookie and "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
    assert KEY not in cookie  # a token derived from the key, not the key
    # the test client keeps the cookie, as a browser does
    assert public.get("/customers").status_code == 200
    assert public.get("/customers/a").status_code == 200
    assert public.get("/api/customers/a").json()["customer_id"] == "a"  # the page's JSON link
    assert public.get("/api/audiences/win-back.csv").status_code == 200  # the export link
    public.cookies.clear()
    assert public.get("/customers").status_code == 401


def test_the_read_cookie_does_not_let_anyone_write(db: Path, tmp_path: Path) -> None:
    import shutil

    path = tmp_path / "copy.duckdb"
    shutil.copy(db, path)
    app = create_app(path, KEY, warm=False, host="0.0.0.0")
    order = {"order_id": "o9", "customer_id": "a", "ordered_at": "2024-03-20", "net_revenue": 5}
    with TestClient(app, client=ELSEWHERE, follow_redirects=False) as client:
        assert client.get(f"/?key={KEY}").status_code == 303
        assert client.get("/api/customers/a").status_code == 200
        assert client.post("/api/orders", json=order).status_code == 401
        stored = client.post("/api/orders", json=order, headers={"X-API-Key": KEY})
        assert stored.status_code == 201, stored.text


@pytest.mark.parametrize("path", ["/static/retain.css", "/openapi.json", "/docs"])
def test_the_page_furniture_and_the_api_docs_stay_public(public: TestClient, path: str) -> None:
    assert public.get(path).status_code == 200


def test_on_loopback_reads_stay_open(db: Path) -> None:
    app = create_app(db, KEY, writes=False, warm=False, host="127.0.0.1")
    with TestClient(app, client=ELSEWHERE) as client:
        for path in READS:
            assert client.get(path).status_code == 200, path


def test_serve_tells_the_app_where_it_listens(
    db: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    from retain.service import serve

    monkeypatch.delenv("RETAIN_API_KEY", raising=False)
    monkeypatch.delenv("RETAIN_API_KEY_FILE", raising=False)
    served: dict[str, Any] = {}
    monkeypatch.setattr(
        sys.modules["retain.service.serve"],
        "run_uvicorn",
        lambda app, **options: served.update(app=app, **options),
    )
    import socket

    with socket.socket() as probe:  # a port nothing listens on: serve checks it is free
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    serve(db, host="0.0.0.0", port=port, api_key=KEY, writes=False)
    assert served["host"] == "0.0.0.0"
    assert "reads need the key" in capsys.readouterr().err
    with TestClient(served["app"], client=LOOPBACK) as client:
        assert client.get("/api/customers/a").status_code == 401
        assert client.get("/api/customers/a", headers={"X-API-Key": KEY}).status_code == 200
    # no key at all: reads are open, and it says so
    serve(db, host="0.0.0.0", port=port, writes=False)
    assert "WARNING" in capsys.readouterr().err
