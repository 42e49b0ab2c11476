"""The holes a browser or a careless client can reach: a request under another host's name
(DNS rebinding), a write from another site's page, formulas in exported CSVs, error text,
keep-alive after an error, the store's path in the footer, oversized bodies, blank keys and
a busy port. Host, keep-alive and the port are checked against a real uvicorn on loopback."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

warnings.filterwarnings("ignore", message=".*httpx.*starlette.testclient.*")

from fastapi import FastAPI, Request  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from retain.segments import audience, customer_segments, write_audience  # noqa: E402
from retain.service import ServiceError, create_app, resolve_api_key  # noqa: E402
from retain.service.app import MAX_BODY_BYTES, names_this_machine  # noqa: E402
from retain.store import Store  # noqa: E402
from service_helpers import Served  # noqa: E402
from store_helpers import free_port, store_copy, store_of  # noqa: E402

KEY = "a-test-key-of-enough-length"
FORMULA = "=cmd|' /C calc'!A0"
ORDERS = f"""order_id,customer_id,ordered_at,net_revenue,email,name,accepts_marketing
o1,a,2024-01-10,10.00,ana@example.com,Ana,true
o2,a,2024-03-10,30.00,ana@example.com,Ana,true
o3,b,2024-02-01,5.50,bo@example.com,Bo,true
o4,"{FORMULA.replace('"', '""')}",2024-03-01,12.00,"{FORMULA}","@SUM(1+1)",true
o5,+plus,2024-03-02,12.00,-minus@example.com,-1+2,true
"""
LINES = """order_id,sku,name,quantity,unit_price
o4,S1,"=HYPERLINK(""http://attacker.example"")",1,12.00
o5,S2,Tea,1,12.00
"""
ORDER = {"order_id": "n1", "customer_id": "a", "ordered_at": "2024-03-20", "net_revenue": 5}


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return store_of(tmp_path_factory.mktemp("hardening"), orders=ORDERS, lines=LINES)


@pytest.fixture
def copy(db: Path, tmp_path: Path) -> Path:
    """A copy of the store that a test may write to."""
    return store_copy(db, tmp_path)


@pytest.fixture
def served(copy: Path) -> Iterator[Served]:
    """The service as `retain serve` makes it on 127.0.0.1 with no key."""
    with Served(create_app(copy, warm=False, host="127.0.0.1")) as running:
        yield running


# --- DNS rebinding and cross-site writes -----------------------------------------------


@pytest.mark.parametrize(
    ("host", "ours"),
    [
        ("localhost", True),
        ("localhost:8765", True),
        ("LOCALHOST.", True),
        ("app.localhost:80", True),
        ("127.0.0.1", True),
        ("127.0.0.1:8765", True),
        ("127.4.5.6:1", True),
        ("[::1]", True),
        ("[::1]:8765", True),
        ("attacker.example", False),
        ("attacker.example:8765", False),
        ("127.0.0.1.attacker.example", False),
        ("localhost.attacker.example", False),
        ("10.0.0.5:8765", False),
        ("[::2]:8765", False),
    ],
)
def test_which_host_names_this_machine(host: str, ours: bool) -> None:
    assert names_this_machine(host) is ours


def test_the_address_a_request_arrived_at_names_this_machine() -> None:
    assert names_this_machine("192.168.1.5:8765", "192.168.1.5")
    assert names_this_machine("192.168.1.5", "::ffff:192.168.1.5")  # dual-stack socket
    assert not names_this_machine("192.168.1.6", "192.168.1.5")


def test_a_request_under_another_hosts_name_is_refused(served: Served) -> None:
    """A page of attacker.example whose name now points at 127.0.0.1 reads and writes
    nothing: a refusal before any route runs, saying why."""
    for method, path, body in (
        ("GET", "/api/customers/a", None),
        ("GET", "/api/audiences/win-back.csv", None),
        ("GET", "/customers/a", None),
        ("POST", "/api/orders", ORDER),
    ):
        status, _, text = served.request(method, path, body, {"Host": "attacker.example"})
        assert status == 403, (path, text)
        assert b"ana@example.com" not in text
        assert "attacker.example" in json.loads(text)["detail"]
    # nothing was stored: the order is not there under the right name either
    status, _, text = served.request("GET", "/api/customers/a", headers={"Host": "127.0.0.1"})
    assert status == 200 and json.loads(text)["orders"]["orders"] == 2
    for host in ("localhost", f"localhost:{served.port}", f"127.0.0.1:{served.port}", "[::1]"):
        status, _, text = served.request("GET", "/api/customers/a", headers={"Host": host})
        assert status == 200 and b"ana@example.com" in text, host
    status, _, text = served.request("POST", "/api/orders", ORDER, {"Host": "localhost"})
    assert status == 201, text


def test_with_a_key_on_loopback_another_host_needs_the_key(copy: Path) -> None:
    """Reads on loopback need no key, so a page under another name is refused too; a
    request that carries the key is the key holder's, whatever name it used."""
    with Served(create_app(copy, KEY, warm=False, host="127.0.0.1")) as running:
        status, _, _ = running.request("GET", "/api/customers/a", headers={"Host": "evil.test"})
        assert status == 403
        status, _, _ = running.request(
            "GET", "/api/customers/a", headers={"Host": "evil.test", "X-API-Key": KEY}
        )
        assert status == 200
        status, _, _ = running.request("GET", "/api/customers/a")
        assert status == 200


def test_beyond_loopback_with_a_key_the_host_is_not_checked(db: Path) -> None:
    """Every read there needs the key already: a name of the operator's own is fine."""
    app = create_app(db, KEY, writes=False, warm=False, host="0.0.0.0")
    headers = {"Host": "retain.shop.example", "X-API-Key": KEY}
    with TestClient(app, client=("203.0.113.9", 50000)) as client:
        assert client.get("/api/customers/a", headers=headers).status_code == 200


def test_a_write_from_another_sites_page_is_refused_without_a_key(served: Served) -> None:
    """A form or script on another site sends its Origin (or at least a Referer)."""
    for headers in (
        {"Origin": "http://attacker.example"},
        {"Origin": "null"},  # a sandboxed frame or a file
        {"Referer": "https://attacker.example/page.html"},
    ):
        status, _, text = served.request("POST", "/api/orders", ORDER, headers)
        assert status == 403, (headers, text)
        assert "no API key" in json.loads(text)["detail"]
    assert served.request("GET", "/api/customers/a")[2].count(b'"n1"') == 0
    # the dashboard's own pages and programs with no Origin still write
    own = {"Origin": f"http://127.0.0.1:{served.port}", "Referer": "http://localhost/"}
    status, _, text = served.request("POST", "/api/orders", ORDER, own)
    assert status == 201, text
    status, _, text = served.request("POST", "/api/orders", {**ORDER, "order_id": "n2"})
    assert status == 201, text
    # reads from another site's page are the browser's to block (no CORS headers)
    status, headers, _ = served.request(
        "GET", "/api/customers/a", headers={"Origin": "http://attacker.example"}
    )
    assert status == 200 and "access-control-allow-origin" not in headers


# --- formulas in CSV exports --------------------------------------------------------------


def test_an_audience_csv_never_hands_a_spreadsheet_a_formula(db: Path) -> None:
    """OWASP's rule: a text cell starting with = + - @ tab or CR gets a ' in front."""
    import csv
    import io

    rows, records = [], []
    with Store(db, read_only=True) as store:
        for segment in customer_segments(store)["segment"].unique():
            frame = audience(store, segment, include_unknown_consent=True)
            rows += list(csv.DictReader(io.StringIO(write_audience(frame, "csv"))))
            records += json.loads(write_audience(frame, "json"))
    by_id = {row["customer_id"]: row for row in rows}
    assert len(by_id) == 4
    hostile = by_id["'" + FORMULA]
    assert hostile["email"] == "'" + FORMULA.lower()
    assert hostile["name"] == "'@SUM(1+1)"
    assert hostile["top_products"] == '\'=HYPERLINK("http://attacker.example")'
    plus = by_id["'+plus"]
    assert plus["email"] == "'-minus@example.com" and plus["name"] == "'-1+2"
    assert by_id["a"]["email"] == "ana@example.com"  # the rest as it was
    for row in rows:
        for column, cell in row.items():
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), (column, cell)
    # the JSON export keeps every value as it is
    assert FORMULA in {r["customer_id"] for r in records}


def test_numbers_in_an_audience_csv_stay_numbers() -> None:
    import io

    frame = pd.DataFrame(
        {
            "customer_id": ["-7", "c", "d"],
            "name": ["\ttab", "\rcr", None],
            "value_at_stake": [-12.5, 3.0, None],
            "top_products": [["-x"], [], ["y", "=z"]],
        }
    )
    text = write_audience(frame, "csv")
    assert text.split("\n")[1:] == ["'-7,'\ttab,-12.5,'-x", "c,\"'", 'cr",3.0,', "d,,,y; =z", ""]
    back = pd.read_csv(io.StringIO(text), keep_default_na=False)
    assert list(back["customer_id"]) == ["'-7", "c", "d"]  # one row each
    assert list(back["name"]) == ["'\ttab", "'\ncr", ""]


def test_the_audience_csv_of_the_api_and_the_cli_are_neutralised(db: Path) -> None:
    with Store(db, read_only=True) as store:
        segment = str(customer_segments(store).loc[FORMULA, "segment"])
    app = create_app(db, writes=False, warm=False)
    with TestClient(app) as client:
        served = client.get(f"/api/audiences/{segment}.csv?consent=unknown-ok")
    assert served.status_code == 200
    assert "'" + FORMULA in served.text and "\n" + FORMULA not in served.text
    command = ["audience", segment, "--db", str(db), "--consent", "unknown-ok"]
    cli = subprocess.run(
        [sys.executable, "-m", "retain.cli", *command],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout == served.text


# --- errors -------------------------------------------------------------------------------


def failing_app(path: Path) -> FastAPI:
    """The service with two routes whose SQL fails, as a bug would."""
    app = create_app(path, writes=False, warm=False, host="127.0.0.1")

    def fails(request: Request) -> dict[str, Any]:
        store = request.app.state.service.store()
        store.con.execute("SELECT CAST('secret_column' AS INTEGER) FROM orders").fetchall()
        return {}

    app.add_api_route("/api/fails", fails)
    app.add_api_route("/fails", fails)
    return app


def test_a_500_says_an_error_id_and_the_log_has_the_rest(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.ERROR, logger="retain.service"),
        TestClient(failing_app(db), raise_server_exceptions=False) as client,
    ):
        api = client.get("/api/fails")
        page = client.get("/fails")
    assert api.status_code == 500 and page.status_code == 500
    detail = api.json()["detail"]
    assert "secret_column" not in api.text and "CAST" not in api.text and "SELECT" not in api.text
    error_id = api.json()["error_id"]
    assert error_id in detail and api.headers["x-retain-error-id"] == error_id
    assert "text/html" in page.headers["content-type"] and "secret_column" not in page.text
    assert page.headers["x-retain-error-id"] in page.text
    logged = [r for r in caplog.records if error_id in r.getMessage()]
    assert logged and logged[0].exc_info is not None
    assert "secret_column" in str(logged[0].exc_info[1])  # the detail, for the operator
    assert "GET /api/fails" in logged[0].getMessage()


def test_the_connection_stays_usable_after_a_500(db: Path) -> None:
    """The next request on a keep-alive connection after a 500 is answered (it used to meet
    a closed connection: the exception reached the server, which closed it)."""
    with Served(failing_app(db)) as running:
        connection = running.connection()
        try:
            for path, status in (("/api/fails", 500), ("/api/status", 200), ("/fails", 500)):
                connection.request("GET", path)
                response = connection.getresponse()
                response.read()
                assert response.status == status, path
            connection.request("GET", "/api/customers/a")
            assert connection.getresponse().status == 200
        finally:
            connection.close()


def test_the_footer_names_the_store_file_not_where_it_lives(db: Path) -> None:
    with TestClient(create_app(db, writes=False, warm=False)) as client:
        page = client.get("/customers").text
    assert "store store.duckdb" in page
    assert str(db.parent) not in page


# --- request sizes ------------------------------------------------------------------------


def answer_to(port: int, head: str, body: bytes) -> bytes:
    """What the server answers to ``head`` and ``body`` sent on a raw socket, up to the end
    of a JSON answer's body."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(head.encode() + body)
        answer = b""
        while not answer.endswith(b"}"):
            data = sock.recv(65536)
            assert data, answer
            answer += data
    return answer


def test_a_body_over_the_limit_is_refused_before_it_is_read(served: Served) -> None:
    """A 10 MB order or cart is refused on its Content-Length: the answer comes with only
    the start of the body sent."""
    for path in ("/api/orders", "/api/recommendations"):
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            "Content-Length: 10000000\r\n\r\n"
        )
        answer = answer_to(served.port, head, b'{"order_id": "big", "name": "xxxx')
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
        assert b"10,000,000 bytes" in answer and b"at most 1,048,576 bytes" in answer
    # a body of the limit itself is read (and refused by its content, a name too long)
    order = json.dumps({**ORDER, "name": "x"}).encode()
    order = order.replace(b'"x"', b'"' + b"x" * (MAX_BODY_BYTES - len(order) + 1) + b'"')
    assert len(order) == MAX_BODY_BYTES
    status, _, text = served.request("POST", "/api/orders", json.loads(order))
    assert status == 422 and b"characters long" in text
    customer = json.loads(served.request("GET", "/api/customers/a")[2])
    assert customer["orders"]["orders"] == 2  # nothing stored


def test_a_body_sent_in_chunks_is_stopped_at_the_limit(served: Served) -> None:
    """No Content-Length: the body is counted as it comes, and refused one byte past the
    limit, before the rest (here never sent) arrives."""
    head = (
        "POST /api/orders HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    )
    half = MAX_BODY_BYTES // 2 + 1
    chunk = f"{half:x}\r\n".encode() + b"x" * half + b"\r\n"
    answer = answer_to(served.port, head, chunk + chunk)  # one byte too many, and no end
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b"more than 1,048,576 bytes" in answer


def test_the_body_limit_can_be_set(copy: Path) -> None:
    app = create_app(copy, warm=False, max_body_bytes=100)
    with TestClient(app, client=("127.0.0.1", 50000)) as client:
        assert client.post("/api/orders", json={**ORDER, "channel": "x" * 100}).status_code == 413
        assert client.post("/api/orders", json=ORDER).status_code == 201


def test_fields_have_lengths(copy: Path) -> None:
    """A 10,000-character name fits in the body limit, but not in a name."""
    with TestClient(create_app(copy, warm=False), client=("127.0.0.1", 50000)) as client:
        for field, size in (("name", 1001), ("email", 255), ("customer_id", 201)):
            refused = client.post("/api/orders", json={**ORDER, field: "x" * size})
            assert refused.status_code == 422, refused.text
            assert refused.json()["detail"] == [
                f"{field} is {size:,} characters long; it takes at most {size - 1:,}"
            ]
        line = client.post("/api/orders", json={**ORDER, "lines": [{"sku": "s" * 201}]})
        assert line.status_code == 422
        assert line.json()["detail"] == [
            "lines.0: sku is 201 characters long; it takes at most 200"
        ]
        cart = client.post("/api/recommendations", json={"skus": ["s" * 201]})
        assert cart.status_code == 422 and "200 characters" in str(cart.json()["detail"])
        assert client.get("/api/customers/a").json()["orders"]["orders"] == 2
        stored = client.post("/api/orders", json={**ORDER, "name": "x" * 1000})
        assert stored.status_code == 201, stored.text


# --- keys and ports -----------------------------------------------------------------------


@pytest.mark.parametrize("blank", [" " * 16, "\t" * 20, " \n " * 8])
def test_a_blank_key_is_no_key(blank: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RETAIN_API_KEY", raising=False)
    monkeypatch.delenv("RETAIN_API_KEY_FILE", raising=False)
    with pytest.raises(ServiceError, match="the API key given is blank"):
        resolve_api_key(blank)
    monkeypatch.setenv("RETAIN_API_KEY", blank)
    with pytest.raises(ServiceError, match="RETAIN_API_KEY is blank"):
        resolve_api_key()
    monkeypatch.delenv("RETAIN_API_KEY")
    (tmp_path / "key").write_text(blank)
    with pytest.raises(ServiceError, match="blank"):
        resolve_api_key(key_file=tmp_path / "key")


def test_the_spaces_around_a_key_are_not_part_of_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETAIN_API_KEY", f"  {KEY}\n")
    assert resolve_api_key() == KEY
    with pytest.raises(ServiceError, match="16 characters"):
        resolve_api_key("   short-key    ")


def run_serve(db: Path, port: int, **env: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "retain.cli", "serve", "--db", str(db), "--port", str(port)]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=60, env={**os.environ, **env}
    )


def test_retain_serve_refuses_a_blank_key_from_the_environment(db: Path) -> None:
    result = run_serve(db, free_port(), RETAIN_API_KEY=" " * 16)
    assert result.returncode == 2, result.stderr
    assert "RETAIN_API_KEY is blank" in result.stderr and "Traceback" not in result.stderr
    assert "dashboard on" not in result.stderr


def test_a_busy_port_is_said_before_anything_else(db: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_serve(db, port)
    assert result.returncode == 3, result.stderr
    assert f"port {port} on 127.0.0.1 is in use" in result.stderr
    assert "dashboard on" not in result.stderr and "Traceback" not in result.stderr
