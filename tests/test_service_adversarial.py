"""An adversarial pass over the service's write path and its gates, against a real
`retain serve` (a subprocess) or a real uvicorn on loopback: shutdown with orders queued
and a client that never finishes its request, Host and Origin values a browser or a
careless client can send, and hostile JSON bodies."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from retain.service.serve import SHUTDOWN_GRACE_S
from retain.store import Store
from service_helpers import Served
from store_helpers import free_port, store_copy, store_of

ORDERS = """order_id,customer_id,ordered_at,net_revenue,email,name
o1,a,2024-01-10,10.00,ana@example.com,Ana
o2,a,2024-03-10,30.00,ana@example.com,Ana
o3,b,2024-02-01,5.50,bo@example.com,Bo
o4,c,2024-03-01,12.00,cy@example.com,Cy
"""
DAY = "2024-03-20"


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return store_of(tmp_path_factory.mktemp("adversarial"), orders=ORDERS)


@pytest.fixture
def copy(db: Path, tmp_path: Path) -> Path:
    """A copy of the store that a test may write to."""
    return store_copy(db, tmp_path)


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """One request on a new connection: the status and the body."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def post_json(port: int, path: str, payload: Any) -> tuple[int, bytes]:
    return request(
        port, "POST", path, json.dumps(payload).encode(), {"Content-Type": "application/json"}
    )


@contextlib.contextmanager
def retain_serve(
    db: Path, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """`retain serve` over ``db`` on a free loopback port, in a process of its own, once it
    answers; killed at the end if still running. Its stderr goes to ``db`` + ``.log``.
    ``env``: variables for it (default: no API key)."""
    port = free_port()
    with Path(f"{db}.log").open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "retain.cli", "serve", "--db", str(db), "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=log,
            text=True,
            env={**os.environ, "RETAIN_API_KEY": "", **(env or {})},
        )
        try:
            deadline = time.monotonic() + 90
            while True:
                assert process.poll() is None, Path(f"{db}.log").read_text()
                assert time.monotonic() < deadline, "retain serve did not start"
                try:
                    if request(port, "GET", "/api/status")[0] == 200:
                        break
                except OSError:
                    time.sleep(0.1)
            yield process, port
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()


def order(order_id: str, customer_id: str, amount: float = 20.0) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "customer_id": customer_id,
        "ordered_at": DAY,
        "net_revenue": amount,
    }


# -- shutdown ------------------------------------------------------------------------------
def test_a_stop_answers_the_queued_orders_and_a_half_sent_request_does_not_hold_it(
    copy: Path,
) -> None:
    """SIGTERM with orders queued and a client that sent half a body and waits: every
    order is answered 201 (stored) or 503 (not stored), the server exits within its grace
    period instead of waiting for that client for ever, and the store opens again with
    every stored order's customer."""
    with retain_serve(copy) as (process, port):
        assert post_json(port, "/api/orders", order("warm", "a"))[0] == 201
        stalled = socket.create_connection(("127.0.0.1", port))
        stalled.sendall(
            b"POST /api/orders HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
            b'\r\nContent-Length: 1000\r\n\r\n{"order_id": '
        )
        answers: dict[str, Any] = {}

        def send(i: int) -> None:
            customer = "b" if i % 2 else f"new-{i}"
            try:
                answers[f"q{i}"] = post_json(port, "/api/orders", order(f"q{i}", customer))[0]
            except OSError as exc:  # the server stopped before it took the request
                answers[f"q{i}"] = exc

        threads = [threading.Thread(target=send, args=(i,)) for i in range(40)]
        for thread in threads:
            thread.start()
        time.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        for thread in threads:
            thread.join(timeout=60)
        try:
            process.wait(timeout=SHUTDOWN_GRACE_S + 15)
        except subprocess.TimeoutExpired:
            pytest.fail("retain serve still runs 20 s after SIGTERM: a half-sent request holds it")
        took = time.monotonic() - stopped
        stalled.close()
    assert took < SHUTDOWN_GRACE_S + 10
    statuses = {a for a in answers.values() if isinstance(a, int)}
    assert statuses <= {201, 503}, answers
    with Store(copy) as store:
        stored = {r[0] for r in store.con.execute("SELECT order_id FROM orders").fetchall()}
        orphans = store.scalar(
            "SELECT count(*) FROM orders LEFT JOIN customers USING (customer_id) "
            "WHERE customers.customer_id IS NULL"
        )
    assert "warm" in stored
    for order_id, answer in answers.items():
        if answer == 201:
            assert order_id in stored
        elif answer == 503:
            assert order_id not in stored
    assert orphans == 0


def test_a_second_ctrl_c_does_not_cut_the_stop_short(copy: Path) -> None:
    """Ctrl+C twice with orders queued: uvicorn's "force quit" would answer the orders
    under way 500 (stored or not) with a traceback each and skip closing the store; the
    service takes the second as the first: every order 201 (stored) or 503 (not), no
    traceback, and it still exits within its grace period."""
    with retain_serve(copy) as (process, port):
        assert post_json(port, "/api/orders", order("warm", "a"))[0] == 201
        answers: dict[str, Any] = {}

        def send(i: int) -> None:
            customer = "b" if i % 2 else f"new-{i}"
            try:
                answers[f"c{i}"] = post_json(port, "/api/orders", order(f"c{i}", customer))[0]
            except OSError as exc:
                answers[f"c{i}"] = exc

        threads = [threading.Thread(target=send, args=(i,)) for i in range(40)]
        for thread in threads:
            thread.start()
            time.sleep(0.003)
        time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        stopped = time.monotonic()
        for thread in threads:
            thread.join(timeout=60)
        process.wait(timeout=SHUTDOWN_GRACE_S + 15)
        took = time.monotonic() - stopped
    log = Path(f"{copy}.log").read_text()
    assert "Traceback" not in log, log[-3000:]
    assert took < SHUTDOWN_GRACE_S + 10
    assert {a for a in answers.values() if isinstance(a, int)} <= {201, 503}, answers
    with Store(copy) as store:
        stored = {r[0] for r in store.con.execute("SELECT order_id FROM orders").fetchall()}
    for order_id, answer in answers.items():
        assert (order_id in stored) is (answer == 201) or not isinstance(answer, int)


def test_a_kill_during_writes_leaves_the_store_whole(copy: Path) -> None:
    """kill -9 while orders with lines, for known and new customers, stream in: the store
    opens, every order answered 201 is there with its lines and its customer, and no line or
    quarantine row is left without its order or its source."""
    with retain_serve(copy) as (process, port):
        answers: dict[str, Any] = {}
        stop = threading.Event()

        def send(worker: int) -> None:
            i = 0
            while not stop.is_set():
                i += 1
                order_id = f"k{worker}-{i}"
                body = order(order_id, f"new-{worker}-{i}" if i % 2 else "b", 12.0)
                body["lines"] = [{"sku": "S1", "quantity": 1, "unit_price": 4}] * 3
                if i % 4 == 0:
                    body["lines"].append({"sku": "S2", "quantity": "lots", "unit_price": 1})
                try:
                    answers[order_id] = post_json(port, "/api/orders", body)[0]
                except OSError:
                    answers[order_id] = None

        threads = [threading.Thread(target=send, args=(w,)) for w in range(4)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 20
        while sum(a == 201 for a in answers.values()) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        process.kill()
        process.wait(timeout=20)
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    with Store(copy) as store:
        lines = dict(
            store.con.execute(
                "SELECT order_id, count(*) FROM order_lines GROUP BY order_id"
            ).fetchall()
        )
        stored = {r[0] for r in store.con.execute("SELECT order_id FROM orders").fetchall()}
        lost = store.con.execute(
            """SELECT
              (SELECT count(*) FROM orders LEFT JOIN customers USING (customer_id)
               WHERE customers.customer_id IS NULL),
              (SELECT count(*) FROM order_lines LEFT JOIN orders USING (order_id)
               WHERE orders.order_id IS NULL),
              (SELECT count(*) FROM quarantine WHERE source_file LIKE 'api:%'
               AND split_part(source_file, ' ', 4) NOT IN (SELECT order_id FROM orders))"""
        ).fetchone()
    assert sum(a == 201 for a in answers.values()) >= 3
    for order_id, answer in answers.items():
        if answer == 201:
            assert order_id in stored
        if order_id in stored:  # all of an order or none of it: 3 lines, the bad one set aside
            assert lines.get(order_id) == 3, order_id
        if answer == 503:
            assert order_id not in stored
    assert lost == (0, 0, 0)


# -- hostile JSON ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def served(db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    path = tmp_path_factory.mktemp("served") / "store.duckdb"
    shutil.copy(db, path)
    from retain.service import create_app

    with Served(create_app(path, None, warm=False)) as server:
        yield server


GOOD = '"order_id": "h1", "customer_id": "a", "ordered_at": "2024-03-20"'
HOSTILE_ORDERS = {
    "a boolean amount": ("{" + GOOD + ', "net_revenue": true}', "net_revenue"),
    "a boolean order id": (
        '{"order_id": true, "customer_id": "a", "ordered_at": "2024-03-20", "net_revenue": 5}',
        "order_id",
    ),
    "a boolean customer id": (
        '{"order_id": "h1", "customer_id": false, "ordered_at": "2024-03-20", "net_revenue": 5}',
        "customer_id",
    ),
    "a 300-digit order id": (
        '{"order_id": %s, "customer_id": "a", "ordered_at": "2024-03-20", "net_revenue": 5}'
        % ("9" * 300),
        "order_id",
    ),
    "a boolean quantity": (
        "{" + GOOD + ', "net_revenue": 5, "lines": [{"sku": "S", "quantity": true}]}',
        "quantity",
    ),
    "NaN": ("{" + GOOD + ', "net_revenue": NaN}', "net_revenue"),
    "Infinity in a line": (
        "{" + GOOD + ', "net_revenue": 5, "lines": [{"sku": "S", "unit_price": Infinity}]}',
        "lines.0.unit_price",
    ),
    "a key twice": ("{" + GOOD + ', "customer_id": "b", "net_revenue": 5}', "customer_id"),
    "a lone surrogate": (
        '{"order_id": "h1\\ud800", "customer_id": "a", "ordered_at": "2024-03-20", '
        '"net_revenue": 5}',
        "order_id",
    ),
    "an array for an object": ("{" + GOOD + ', "net_revenue": 5, "lines": {"sku": "S"}}', "lines"),
    "an object for an id": (
        '{"order_id": {"id": 1}, "customer_id": "a", "ordered_at": "2024-03-20", "net_revenue": 5}',
        "order_id",
    ),
}


def counts(port: int) -> tuple[int, int]:
    status = json.loads(request(port, "GET", "/api/status")[1])
    return status["orders"], status["quarantined_rows"]


@pytest.mark.parametrize("case", list(HOSTILE_ORDERS), ids=list(HOSTILE_ORDERS))
def test_a_hostile_order_is_refused_naming_the_field_and_nothing_is_stored(
    served: Served, case: str
) -> None:
    body, field = HOSTILE_ORDERS[case]
    before = counts(served.port)
    status, answer = request(
        served.port, "POST", "/api/orders", body.encode(), {"Content-Type": "application/json"}
    )
    assert status == 422, answer
    detail = json.loads(answer)["detail"]
    assert any(field in problem for problem in detail), detail
    assert counts(served.port) == before


@pytest.mark.parametrize(
    "body, content_type, words",
    [
        ('{"skus": ["a"]}'.encode("utf-16"), "application/json", "UTF-8"),
        ('{"skus": ["a"]}'.encode("utf-16-le"), "application/json", "UTF-8"),
        (b'{"skus": ["caf\xe9"]}', "application/json", "not UTF-8 at byte 15"),
        (b'{"skus": ["a"], "k": true}', "application/json", "k is true"),
        (b'{"skus": ["a"], "skus": ["b"]}', "application/json", "skus: given more than once"),
        (b'{"skus": ["a"], "k": NaN}', "application/json", "k: NaN"),
        (b'{"skus": ["a"]}', "text/plain", "Content-Type: application/json"),
        (b'{"skus": ["a"]} x', "application/json", "not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "application/json", "too deep"),
    ],
    ids=[
        "utf-16",
        "utf-16 no BOM",
        "latin-1",
        "k true",
        "key twice",
        "k NaN",
        "text/plain",
        "junk after",
        "deep",
    ],
)
def test_a_hostile_cart_is_a_clear_4xx(
    served: Served, body: bytes, content_type: str, words: str
) -> None:
    status, answer = request(
        served.port, "POST", "/api/recommendations", body, {"Content-Type": content_type}
    )
    assert status in (415, 422), answer
    assert words in json.dumps(json.loads(answer)["detail"], ensure_ascii=False)


def test_a_utf8_json_body_with_a_byte_order_mark_is_read(served: Served) -> None:
    status, answer = request(
        served.port,
        "POST",
        "/api/recommendations",
        b'\xef\xbb\xbf{"skus": ["a"], "k": 2}',
        {"Content-Type": "application/json; charset=utf-8"},
    )
    assert status == 200, answer
    assert json.loads(answer)["skus"] == ["a"]


# -- Host and Origin ---------------------------------------------------------------------------
def raw(port: int, head: str, body: bytes = b"") -> tuple[int, bytes]:
    """Send ``head`` (request line and headers, no blank line) and ``body`` as they are on a
    socket; the status and body of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(head.encode("latin-1") + b"\r\nConnection: close\r\n\r\n" + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("[::1]:{port}", 200),
        ("LOCALHOST:{port}", 200),
        ("localhost.:{port}", 200),
        ("127.0.0.1.:{port}", 200),
        ("[::ffff:127.0.0.1]:{port}", 200),
        # not a host and a port: names no machine, whatever part of it looks like this one
        ("localhost:{port}@attacker.example", 403),
        ("127.0.0.1:{port}, attacker.example", 403),
        ("127.0.0.1 attacker.example", 403),
        ("[::1", 403),
        ("", 403),
        ("attacker.example", 403),
    ],
)
def test_host_values_a_client_can_send(served: Served, host: str, status: int) -> None:
    head = f"GET /api/status HTTP/1.1\r\nHost: {host.format(port=served.port)}"
    assert raw(served.port, head)[0] == status


def test_a_request_with_no_host_and_forwarded_hosts(served: Served) -> None:
    """HTTP/1.0 may send no Host (no browser does): it is this machine's own program.
    X-Forwarded-Host is not read: it neither lets another name in nor keeps this one out."""
    assert raw(served.port, "GET /api/status HTTP/1.0")[0] == 200
    forwarded = "X-Forwarded-Host: attacker.example"
    assert raw(served.port, f"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n{forwarded}")[0] == 200
    back = "X-Forwarded-Host: 127.0.0.1"
    assert (
        raw(served.port, f"GET /api/status HTTP/1.1\r\nHost: attacker.example\r\n{back}")[0] == 403
    )


@pytest.mark.parametrize(
    ("origin", "status"),
    [
        ("Origin: http://127.0.0.1:{port}", 200),
        ("Origin: http://localhost:{port}", 200),
        ("Origin: http://[::1]:{port}", 200),
        # another program's page on this machine is another origin: not this service's
        ("Origin: http://127.0.0.1:{other}", 403),
        ("Origin: http://localhost:{other}", 403),
        ("Origin: http://127.0.0.1", 403),
        ("Referer: http://localhost:{other}/page.html", 403),
        ("Origin: http://127.0.0.1:99999", 403),
        ("Origin: ftp://127.0.0.1:{port}", 403),
    ],
)
def test_a_keyless_write_is_taken_from_this_services_own_pages_only(
    served: Served, origin: str, status: int
) -> None:
    body = b'{"skus": ["a"]}'
    header = origin.format(port=served.port, other=served.port + 1)
    head = (
        f"POST /api/recommendations HTTP/1.1\r\nHost: 127.0.0.1:{served.port}\r\n{header}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}"
    )
    answer = raw(served.port, head, body)
    assert answer[0] == status, answer


@pytest.mark.parametrize("order_id", ["z1\x00x", "\u200bz2", "z3\there", " z4 "])
def test_an_order_answers_and_is_found_under_the_id_it_is_stored_as(
    served: Served, order_id: str
) -> None:
    """Ingest keeps no tab, NUL, zero-width character or edge space in an id: the answer
    names the order as stored, and a look-up by the id as sent finds it."""
    from urllib.parse import quote

    status, answer = post_json(served.port, "/api/orders", order(order_id, "a", 3.0))
    assert status == 201, answer
    stored_as = json.loads(answer)["order_id"]
    assert stored_as == "".join(c for c in order_id if c.isprintable()).strip()
    for asked in (stored_as, order_id):
        status, found = request(served.port, "GET", "/api/orders/" + quote(asked, safe=""))
        assert status == 200, (asked, found)
        assert json.loads(found)["order_id"] == stored_as


# -- audience CSV ------------------------------------------------------------------------------
def test_a_cell_starting_with_nul_is_neutralised_as_a_formula() -> None:
    """OWASP ASVS 1.2.10 lists NUL beside = + - @ and tab: a reader that drops the NUL
    sees the formula after it."""
    import pandas as pd

    from retain.segments import write_audience

    frame = pd.DataFrame(
        {
            "customer_id": ["\x00=1+1", "ok"],
            "name": ["\x00@SUM(A1)", "Ana"],
            "top_products": [["\x00=HYPERLINK(1)"], ["Tea"]],
            "value_at_stake": [1.0, 2.0],
        }
    )
    text = write_audience(frame, "csv")
    rows = text.splitlines()[1:]
    assert rows[0].startswith("'\x00=1+1,'\x00@SUM(A1),'\x00=HYPERLINK(1),")
    assert rows[1] == "ok,Ana,Tea,2.0"
