"""POST /api/orders under load: one rescore per write, reads beside writes, overload.

The service runs in real uvicorn on a loopback port over a fitted and scored copy
of the CDNOW sample; clients are threads with their own connections.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from retain.service import api as service_api
from retain.service import create_app
from retain.service.orders import WriteQueue
from retain.store import Store
from store_helpers import scored_copy, store_copy

DAY = "1998-06-30"  # the sample's observation day: an order may not be later


@pytest.fixture(scope="module")
def scored_db(cdnow_sample_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return scored_copy(cdnow_sample_db, tmp_path_factory.mktemp("writes") / "scored.duckdb")


@contextlib.contextmanager
def serving(db: Path, tmp_path: Path, **queue: Any) -> Iterator[tuple[str, Any]]:
    """uvicorn on a free loopback port over a copy of ``db``: its base URL and the app's
    service. ``queue``: the write queue's bounds, else its defaults."""
    path = tmp_path / "served.duckdb"
    shutil.copy(db, path)
    app = create_app(path, None, warm=False)
    service = app.state.service
    if queue:
        service.writer = WriteQueue(
            lambda orders: service_api.ingest_batch(service, orders), **queue
        )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", service
    finally:
        server.should_exit = True
        thread.join(timeout=60)


def order(order_id: str, customer_id: str, amount: float = 30.0) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "customer_id": customer_id,
        "ordered_at": f"{DAY}T12:00:00",
        "net_revenue": amount,
        "lines": [{"sku": "SKU-1", "quantity": 1, "unit_price": amount}],
    }


def stored_orders(path: str, order_ids: list[str]) -> dict[str, int]:
    """How many rows each order id has in orders, order_lines and quarantine."""
    with Store(path, read_only=True) as store:
        counts = {}
        for table, column in (("orders", "order_id"), ("order_lines", "order_id")):
            rows = store.con.execute(
                f"SELECT {column}, count(*) FROM {table} WHERE {column} IN "
                "(SELECT unnest($ids)) GROUP BY 1",
                {"ids": order_ids},
            ).fetchall()
            counts[table] = dict(rows)
        quarantined = store.scalar("SELECT count(*) FROM quarantine WHERE source_file LIKE 'api:%'")
    return {"orders": counts["orders"], "lines": counts["order_lines"], "quarantine": quarantined}


def test_a_write_measures_the_customer_once_and_shows_what_retain_score_stores(
    scored_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from retain.segments import assign
    from retain.service import data

    passes: list[object] = []
    builds: list[object] = []
    measure, build = assign._per_customer, data.build_customer_index

    def counted_measure(*args: Any, **kwargs: Any) -> Any:
        passes.append(kwargs.get("customers"))
        return measure(*args, **kwargs)

    def counted_build(*args: Any, **kwargs: Any) -> Any:
        builds.append(1)
        return build(*args, **kwargs)

    monkeypatch.setattr(assign, "_per_customer", counted_measure)
    monkeypatch.setattr(data, "build_customer_index", counted_build)
    with serving(scored_db, tmp_path) as (base, service), httpx.Client(base_url=base) as client:
        before = client.get("/api/customers/1012").json()
        assert len(builds) == 1
        passes.clear()
        response = client.post("/api/orders", json=order("w-1", "1012"))
        assert response.status_code == 201, response.text
        body = response.json()
        # one pass over the customer's orders for segment, RFM and risk: not two
        assert passes == [["1012"]]
        assert body["rescored"] is True
        after = client.get("/api/customers/1012").json()
        for _ in range(3):
            client.post("/api/orders", json=order("w-2", "1012", 12.0))
        # the index took the rescored rows: it was not rebuilt after the writes
        assert len(builds) == 1
        again = client.get("/api/customers/1012").json()
    assert after["orders"]["orders"] == before["orders"]["orders"] + 1
    assert after["scores"] == body["customer"]["scores"]
    assert after["segment"] == body["customer"]["segment"]
    assert again["orders"]["orders"] == after["orders"]["orders"] + 1  # w-2 once
    with Store(service.db_path, read_only=True) as store:
        row = store.query("SELECT * FROM customer_scores WHERE customer_id = '1012'").iloc[0]
        orders = store.scalar("SELECT count(*) FROM orders WHERE customer_id = '1012'")
    # the page shows the row the rescoring stored (what retain score writes for it)
    assert again["orders"]["orders"] == orders
    assert again["scores"]["p_alive"] == pytest.approx(float(row["p_alive"]), rel=1e-12)
    assert again["scores"]["clv_12m"] == pytest.approx(float(row["clv_12m"]), rel=1e-12)
    assert again["segment"]["name"] == row["segment"]
    assert again["churn"]["risk"] == row["churn_risk"]
    assert again["rfm"]["rfm"] == row["rfm"]


def test_concurrent_reads_and_writes_all_answer_right(scored_db: Path, tmp_path: Path) -> None:
    with Store(scored_db, read_only=True) as store:
        ids = store.query(
            "SELECT customer_id, count(*) AS n FROM orders GROUP BY 1 ORDER BY 1 LIMIT 40"
        )
    counts = dict(zip(ids["customer_id"], ids["n"], strict=True))
    writers = list(counts)[:8]  # each gets 3 new orders
    readers = list(counts)[8:]
    # no deadline that a slow machine could miss: this test is about the answers
    with serving(scored_db, tmp_path, max_wait_s=120) as (base, service):
        with httpx.Client(base_url=base) as warm:
            assert warm.get(f"/api/customers/{readers[0]}").status_code == 200

        def read(i: int) -> tuple[str, int, int]:
            customer = readers[i % len(readers)]
            with httpx.Client(base_url=base, timeout=30) as client:
                got = client.get(f"/api/customers/{customer}")
            return customer, got.status_code, got.json()["orders"]["orders"]

        def write(i: int) -> tuple[str, int]:
            customer = writers[i % len(writers)]
            with httpx.Client(base_url=base, timeout=30) as client:
                got = client.post("/api/orders", json=order(f"c-{i}", customer))
            return customer, got.status_code

        with ThreadPoolExecutor(max_workers=12) as pool:
            reads = [pool.submit(read, i) for i in range(120)]
            writes = [pool.submit(write, i) for i in range(24)]
            read_results = [f.result() for f in reads]
            write_results = [f.result() for f in writes]
        with httpx.Client(base_url=base) as client:
            after = {c: client.get(f"/api/customers/{c}").json() for c in writers}
    # every read answered with the customer it asked for, unchanged by the writes
    assert all(status == 200 for _, status, _ in read_results)
    assert all(n == counts[c] for c, _, n in read_results)
    assert [status for _, status in write_results] == [201] * 24
    for customer in writers:
        assert after[customer]["orders"]["orders"] == counts[customer] + 3
    stored = stored_orders(service.db_path, [f"c-{i}" for i in range(24)])
    assert stored["orders"] == {f"c-{i}": 1 for i in range(24)}
    assert stored["lines"] == {f"c-{i}": 1 for i in range(24)}


def test_overload_is_refused_at_once_and_nothing_refused_is_stored(
    scored_db: Path, tmp_path: Path
) -> None:
    with serving(scored_db, tmp_path, max_pending=3, max_wait_s=60) as (base, service):
        ids = [f"o-{i}" for i in range(12)]

        def write(order_id: str) -> httpx.Response:
            with httpx.Client(base_url=base, timeout=60) as client:
                return client.post("/api/orders", json=order(order_id, "1012"))

        with ThreadPoolExecutor(max_workers=12) as pool:
            with service.write_lock:  # the writer is busy: orders queue, then are refused
                futures = {ids[0]: pool.submit(write, ids[0])}
                deadline = time.monotonic() + 30
                while (service.writer is None or service.writer.batches_started == 0) and (
                    time.monotonic() < deadline
                ):
                    time.sleep(0.02)  # until the writer has taken o-0 and waits for the lock
                futures |= {i: pool.submit(write, i) for i in ids[1:]}
                refused: list[str] = []
                while len(refused) < len(ids) - 4 and time.monotonic() < deadline:
                    refused = [i for i, f in futures.items() if f.done()]
                    time.sleep(0.02)
                # answered while the writer was still busy: at once, not after a wait
                assert len(refused) == len(ids) - 4
            answers = {i: f.result() for i, f in futures.items()}
    statuses = {i: r.status_code for i, r in answers.items()}
    assert sorted(statuses.values()) == [201] * 4 + [503] * 8
    for i in refused:
        assert statuses[i] == 503
        assert answers[i].headers["retry-after"] == "1"
        assert answers[i].json()["stored"] is False
    stored = stored_orders(service.db_path, ids)
    accepted = sorted(i for i, s in statuses.items() if s == 201)
    assert sorted(stored["orders"]) == accepted  # nothing half-stored
    assert sorted(stored["lines"]) == accepted
    assert stored["quarantine"] == 0


class Clock:
    """A clock for the write queue that moves only when the test moves it (seconds)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_an_order_that_waited_too_long_is_not_stored(scored_db: Path, tmp_path: Path) -> None:
    clock = Clock()
    with serving(scored_db, tmp_path, max_pending=50, max_wait_s=0.5, clock=clock) as (
        base,
        service,
    ):

        def write(order_id: str) -> httpx.Response:
            with httpx.Client(base_url=base, timeout=60) as client:
                return client.post("/api/orders", json=order(order_id, "1012"))

        with ThreadPoolExecutor(max_workers=6) as pool:
            with service.write_lock:
                first = pool.submit(write, "late-0")
                deadline = time.monotonic() + 30
                while (service.writer is None or service.writer.batches_started == 0) and (
                    time.monotonic() < deadline
                ):
                    time.sleep(0.02)  # until the writer has taken late-0 and waits for the lock
                rest = [pool.submit(write, f"late-{i}") for i in range(1, 6)]
                while service.writer.pending() < 5 and time.monotonic() < deadline:
                    time.sleep(0.02)  # until late-1.. are queued
                clock.advance(1.0)  # late-1.. have now waited longer than 0.5 s
            answers = [first.result(), *(f.result() for f in rest)]
    assert answers[0].status_code == 201
    assert [a.status_code for a in answers[1:]] == [503] * 5
    assert "waited 1.0 s" in answers[1].json()["detail"]
    stored = stored_orders(service.db_path, [f"late-{i}" for i in range(6)])
    assert stored["orders"] == {"late-0": 1}


def test_a_retried_order_is_stored_once_and_can_be_looked_up(
    scored_db: Path, tmp_path: Path
) -> None:
    with serving(scored_db, tmp_path) as (base, service), httpx.Client(base_url=base) as client:
        assert client.get("/api/orders/r-1").status_code == 404
        first = client.post("/api/orders", json=order("r-1", "1012"))
        second = client.post("/api/orders", json=order("r-1", "1012"))
        found = client.get("/api/orders/r-1")
        customer = client.get("/api/customers/1012").json()
    assert first.status_code == second.status_code == 201
    assert first.json()["customer"]["orders"] == second.json()["customer"]["orders"]
    assert found.status_code == 200
    assert found.json()["customer_id"] == "1012" and found.json()["stored_as"] == "purchase"
    assert customer["orders"] == first.json()["customer"]["orders"]
    assert stored_orders(service.db_path, ["r-1"])["orders"] == {"r-1": 1}


def test_lists_take_up_rescored_and_new_customers_after_a_fold(
    scored_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_api, "FOLD_EVERY_S", 0.2)
    with serving(scored_db, tmp_path) as (base, _), httpx.Client(base_url=base) as client:
        before = client.get("/api/customers", params={"q": "1012"}).json()["customers"]
        old = next(c for c in before if c["customer_id"] == "1012")
        assert client.post("/api/orders", json=order("f-1", "1012")).status_code == 201
        assert client.post("/api/orders", json=order("f-2", "fold-new")).status_code == 201
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = client.get("/api/customers", params={"q": "fold-new"}).json()
            if found["total"]:
                break
            time.sleep(0.1)
        listed = client.get("/api/customers", params={"q": "1012"}).json()["customers"]
        by_value = client.get("/api/customers", params={"sort": "clv", "limit": 5}).json()
        page = client.get("/api/customers/1012").json()
    assert found["total"] == 1 and found["customers"][0]["orders"] == 1
    row = next(c for c in listed if c["customer_id"] == "1012")
    assert row["orders"] == old["orders"] + 1
    # the list shows the row the customer's own page shows
    assert row["p_alive"] == page["scores"]["p_alive"]
    assert row["segment"] == page["segment"]["name"]
    clvs = [c["clv"] for c in by_value["customers"]]
    assert clvs == sorted(clvs, reverse=True)


def test_the_writer_refuses_at_once_what_it_could_not_start_in_time() -> None:
    from retain.service.orders import WritesBusy

    gate = threading.Event()
    clock = Clock()
    sizes: list[int] = []

    def process(orders: list[dict[str, Any]]) -> list[Any]:
        if orders[0].get("hold"):
            gate.wait(30)
        sizes.append(len(orders))
        clock.advance(0.3)  # a batch takes 0.3 s whatever its size
        return [dict(o) for o in orders]

    # no rest: the pace alone; batches of at most 2 orders
    writer = WriteQueue(process, max_wait_s=0.5, max_batch=2, busy_share=1.0, clock=clock)
    try:
        assert writer.submit({"n": 0}).result(30) == {"n": 0}
        assert writer.seconds_per_batch == pytest.approx(0.3)
        held = writer.submit({"hold": True})
        deadline = time.monotonic() + 30
        while writer.batches_started < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        taken = writer.submit({"n": 1})  # starts after the batch under way: 0.3 s
        more = writer.submit({"n": 2})  # in the same next batch: 0.3 s
        with pytest.raises(WritesBusy) as caught:
            writer.submit({"n": 3})  # a batch later: 0.6 s, refused before it waits
        assert "not stored" in str(caught.value) and caught.value.retry_after == 1
        gate.set()
        assert held.result(30) == {"hold": True}
        assert taken.result(30) == {"n": 1} and more.result(30) == {"n": 2}
        assert sizes == [1, 1, 2] and writer.batches == 3
    finally:
        gate.set()
        writer.close()


def test_an_order_sent_alone_after_a_slow_batch_is_taken() -> None:
    clock = Clock()

    def process(orders: list[dict[str, Any]]) -> list[Any]:
        clock.advance(2.0)  # slower than anyone waits: a first write, a loaded machine
        return [dict(o) for o in orders]

    # the default share would rest 6 s after it; the rest stops at half of max_wait_s, so
    # the next order of a client sending one after another is taken, not refused
    writer = WriteQueue(process, max_wait_s=1.0, clock=clock)
    try:
        assert writer.submit({"n": 0}).result(30) == {"n": 0}
        assert writer.seconds_per_batch == pytest.approx(2.5)  # the batch and its rest
        assert writer.submit({"n": 1}).result(30) == {"n": 1}
        assert writer.batches == 2
    finally:
        writer.close()


def test_an_order_not_started_in_time_is_refused_when_its_turn_comes() -> None:
    from retain.service.orders import WritesBusy

    gate = threading.Event()
    clock = Clock()

    def process(orders: list[dict[str, Any]]) -> list[Any]:
        if orders[0].get("hold"):
            gate.wait(30)
            clock.advance(0.6)  # the held batch took longer than anyone waits
        return [dict(o) for o in orders]

    writer = WriteQueue(process, max_wait_s=0.5, busy_share=1.0, clock=clock)
    try:
        held = writer.submit({"hold": True})  # an idle writer takes it
        deadline = time.monotonic() + 30
        while writer.batches_started < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        late = writer.submit({"n": 1})  # nothing measured yet: taken
        gate.set()
        assert held.result(30) == {"hold": True}
        refused = late.exception(30)
        assert isinstance(refused, WritesBusy) and "waited 0.6 s" in str(refused)
    finally:
        gate.set()
        writer.close()


class Counted:
    """A DuckDB connection that counts the statements run on it."""

    def __init__(self, con: Any) -> None:
        self.con = con
        self.statements = 0

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        self.statements += 1
        return self.con.execute(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.con, name)


def test_a_batch_is_one_pass_and_each_order_keeps_its_own_answer(
    scored_db: Path, tmp_path: Path
) -> None:
    from retain.service.orders import ingest_orders, quarantined_rows

    path = store_copy(scored_db, tmp_path)
    with Store(path) as store:

        def orders_of(prefix: str, n: int) -> list[dict[str, Any]]:
            """A good order, one with contact details, one dated too late, one with a
            bad line, then good ones: ``n`` in all."""
            late = order(f"{prefix}-2", "1013") | {"ordered_at": "2030-01-01T00:00:00"}
            bad_line = order(f"{prefix}-3", "1014")
            bad_line["lines"] = [{"sku": "SKU-1", "quantity": "two", "unit_price": 30}]
            return [
                order(f"{prefix}-0", "1012", 10.0),
                order(f"{prefix}-1", f"new-{prefix}", 20.0) | {"email": "New@Example.com"},
                late,
                bad_line,
                *(order(f"{prefix}-{i}", f"many-{i}") for i in range(4, n)),
            ]

        counted = Counted(store.con)
        store.con = counted  # type: ignore[assignment]
        ingest_orders(store, orders_of("a", 4))
        four = counted.statements
        counted.statements = 0
        batch = orders_of("b", 20)
        reports = ingest_orders(store, batch)
        # one pass: as many statements for 20 orders as for 4
        assert counted.statements == four
        store.con = counted.con
        assert not any(isinstance(r, Exception) for r in reports)
        assert [r.orders for r in reports] == [1, 1, 0, *[1] * 17]  # type: ignore[union-attr]
        sources = [r.file for r in reports]  # type: ignore[union-attr]
        assert len(set(sources)) == 20 and all(f" b-{i} " in s for i, s in enumerate(sources))
        # the quarantined order names its own row 1, the bad line its row 2
        assert [(q["row"], q["column"]) for q in quarantined_rows(store, sources[2])] == [
            (1, "ordered_at")
        ]
        assert [(q["row"], q["column"]) for q in quarantined_rows(store, sources[3])] == [
            (2, "quantity")
        ]
        assert reports[3].order_lines == 0 and reports[3].quarantined == 1  # type: ignore[union-attr]
        assert quarantined_rows(store, sources[0]) == []
        stored = dict(
            store.con.execute(
                "SELECT order_id, source_file FROM orders WHERE order_id LIKE 'b-%'"
            ).fetchall()
        )
        assert sorted(stored) == sorted(f"b-{i}" for i in range(20) if i != 2)
        assert all(stored[f"b-{i}"] == sources[i] for i in range(20) if i != 2)
        assert store.scalar("SELECT email FROM customers WHERE customer_id = 'new-b'") == (
            "new@example.com"
        )
        lines = store.scalar("SELECT count(*) FROM order_lines WHERE order_id LIKE 'b-%'")
        assert lines == 18  # every stored order's line but b-3's bad one


def test_the_same_order_twice_in_a_batch_is_stored_once_as_the_later(
    scored_db: Path, tmp_path: Path
) -> None:
    from retain.service.orders import ingest_orders

    path = store_copy(scored_db, tmp_path)
    with Store(path) as store:
        reports = ingest_orders(
            store,
            [
                order("t-1", "1012", 10.0) | {"name": "First"},
                order("t-2", "1012", 5.0) | {"name": "Second"},
                order("t-1", "1012", 40.0),
            ],
        )
        assert [r.orders for r in reports] == [1, 1, 1]  # type: ignore[union-attr]
        assert [r.quarantined for r in reports] == [0, 0, 0]  # type: ignore[union-attr]
        rows = store.con.execute(
            "SELECT order_id, net_revenue FROM orders WHERE order_id LIKE 't-%' ORDER BY 1"
        ).fetchall()
        assert rows == [("t-1", 40.0), ("t-2", 5.0)]
        assert (
            store.scalar("SELECT sum(unit_price) FROM order_lines WHERE order_id = 't-1'") == 40.0
        )
