"""Service benchmark: GET /api/customers/{id} under a fixed load on loopback.

    python benchmarks/bench_service.py [--customers 1000000] [--rate 200] [--seconds 30]
                                       [--write-share 0.1] [--writes-only [--db STORE]]
                                       [--floor]

Builds ``benchmarks/data/<n>/service.duckdb``: the ingest benchmark's store
plus the generated order lines and customers, model scores for every customer
(``retain score`` when this retain has it, else seeded stand-in scores shaped
like a model's), and the saved recommender. Starts ``retain serve
--read-only`` on 127.0.0.1, waits until it answers, then sends requests for
random customers at a fixed rate (open loop: each request leaves at its
scheduled time whether or not earlier ones have returned, and its latency is
counted from that time, so a stall is not hidden). Traffic goes to 127.0.0.1
only, for a bounded number of requests, and the script stops by itself.

With ``--write-share`` (0.1 by default) a second run serves a writable copy of the
store (``service-writes.duckdb``) and sends that share of the requests as ``POST
/api/orders`` of new orders; afterwards it opens the copy and checks every answer:
each order answered 201 is stored, each answered 503 or 429 is absent, and timed-out
orders are counted as stored or absent. The load client is this script's process; the
server is a process of its own.

``--floor`` runs the same load against uvicorn serving a bare FastAPI route and a bare
ASGI app (fixed answers, nothing of retain): the CPU per request no route can go below.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

TARGET_P99_MS = 20.0


def sample_customers(store: Any, seed: int) -> tuple[int, list[str]]:
    """How many customers the store holds, and 20,000 of their ids drawn at random."""
    customers = int(store.scalar("SELECT count(DISTINCT customer_id) FROM orders"))
    ids = store.query(
        "SELECT customer_id FROM (SELECT DISTINCT customer_id FROM orders) "
        f"USING SAMPLE 20000 ROWS (reservoir, {int(seed)})"
    )["customer_id"]
    return customers, ids.astype(str).tolist()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stand_in_scores(store: Any, seed: int = 0) -> None:
    """Seeded per-customer scores shaped like a model's, written as ``customer_scores``."""
    rng = np.random.default_rng(seed)
    ids = store.query("SELECT DISTINCT customer_id FROM orders ORDER BY customer_id")["customer_id"]
    n = len(ids)
    p_alive = rng.beta(1.2, 1.0, n)
    expected = rng.gamma(0.8, 1.0, n) * p_alive
    clv = np.round(rng.gamma(1.5, 40.0, n) * p_alive, 2)
    frame = {
        "customer_id": ids.to_numpy(),
        "p_alive": p_alive,
        "expected_purchases": expected,
        "clv": clv,
        "clv_low": np.round(clv * 0.6, 2),
        "clv_high": np.round(clv * 1.5, 2),
    }
    import pandas as pd

    scores = pd.DataFrame(frame)
    store.con.register("_stand_in", scores)
    store.con.execute("CREATE OR REPLACE TABLE customer_scores AS SELECT * FROM _stand_in")
    store.con.unregister("_stand_in")


def prepare(n_customers: int) -> tuple[Path, str]:
    """The benchmark store, built once; returns its path and where its scores came from."""
    from retain.ingest import ingest
    from retain.store import Store
    from run import bench_ingest, data_dir

    folder = data_dir(n_customers)
    db = folder / "service.duckdb"
    source_file = folder / "service-scores.txt"
    if db.exists() and source_file.exists():
        return db, source_file.read_text().strip()
    if not (folder / "bench.duckdb").exists():
        bench_ingest(n_customers)
    shutil.copy(folder / "bench.duckdb", db)
    with Store(db) as store:
        for name, fmt in (("order_lines.parquet", "lines"), ("customers.parquet", "customers")):
            if (folder / name).exists():
                ingest(store, folder / name, format=fmt, as_of="2026-01-01")
    source = "retain score"
    fit = subprocess.run(
        [sys.executable, "-m", "retain.cli", "fit", "--db", str(db)], capture_output=True
    )
    score = subprocess.run(
        [sys.executable, "-m", "retain.cli", "score", "--db", str(db)], capture_output=True
    )
    with Store(db) as store:
        if fit.returncode or score.returncode or not store.has_table("customer_scores"):
            source = "seeded stand-in scores (no retain score)"
            stand_in_scores(store)
        if store.scalar("SELECT count(*) FROM order_lines"):
            from retain.recommend import build

            build(store, save=True)
    source_file.write_text(source)
    return db, source


def wait_until_ready(base: str, customer_id: str, timeout_s: float = 1800) -> float:
    """Seconds until the server answers a customer lookup, /api/status counts every
    customer's recommendations as ready (each is ranked on its first lookup) and says
    its start-up work is done (``warm``: the index, recommendations, overview and
    loyalty balances built), so that no timed request meets that work."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        try:
            with urllib.request.urlopen(f"{base}/api/customers/{customer_id}", timeout=120) as r:
                r.read()
            with urllib.request.urlopen(f"{base}/api/status", timeout=120) as r:
                status = json.loads(r.read())
            ranked = status["recommendations"]
            all_ranked = (
                not ranked["available"] or ranked["customers_ranked"] >= ranked["customers"]
            )
            if all_ranked and status.get("warm", True):
                return time.monotonic() - start
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the server at {base} was not ready within {timeout_s:.0f} s")


async def fixed_rate(
    base: str,
    ids: list[str],
    rate: float,
    seconds: float,
    timeout_s: float = 5.0,
    *,
    write_share: float = 0.0,
    order_day: str = "",
    run_id: str = "w",
    seed: int = 0,
    path: str = "/api/customers/{}",
    secret: str | None = None,
) -> dict[str, Any]:
    """Open-loop load: request i leaves at start + i / rate; latency from that moment.

    A share ``write_share`` of the requests (chosen by a seeded draw) are
    ``POST /api/orders`` of a new order (id ``bench-<run_id>-<i>``, dated ``order_day``)
    for a random customer; the rest look a customer up (``path`` with the id). ``orders`` maps each order id
    sent to what came back: the status, or "timeout" / "error". With ``secret`` (the Shopify
    app's), the writes take turns: an order, an event (``POST /api/events``, id
    ``ev-<run_id>-<i>``) and a signed Shopify ``orders/create`` webhook (order
    ``#<run_id>-<i>``); ``events`` and ``hooks`` map their ids to what came back."""
    import base64
    import datetime as dt
    import hashlib
    import hmac

    import httpx

    total = int(rate * seconds)
    rng = np.random.default_rng(seed)
    writes = rng.random(total) < write_share
    latencies = np.full(total, np.nan)
    lags = np.full(total, np.nan)  # from the scheduled time until this client sent it
    statuses = np.zeros(total, dtype=np.int64)  # -1: timed out, -2: other error
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
    orders: dict[str, str] = {}
    events: dict[str, str] = {}
    hooks: dict[str, str] = {}
    write_number = np.cumsum(writes) - 1  # each write's place among the writes
    async with httpx.AsyncClient(base_url=base, timeout=timeout_s, limits=limits) as client:
        loop = asyncio.get_running_loop()
        start = loop.time() + 0.1

        async def one(i: int) -> None:
            scheduled = start + i / rate
            await asyncio.sleep(max(0.0, scheduled - loop.time()))
            customer = ids[i % len(ids)]
            order_id = f"bench-{run_id}-{i}"
            lags[i] = loop.time() - scheduled
            kind = "order" if secret is None else ("order", "event", "hook")[write_number[i] % 3]
            answers, key = {"order": (orders, order_id), "event": (events, f"ev-{run_id}-{i}"),
                            "hook": (hooks, f"#{run_id}-{i}")}[kind]  # fmt: skip
            try:
                if writes[i] and kind == "event":
                    event = {"event_id": key, "kind": "product_view", "customer_id": customer,
                             "sku": f"SKU-{i % 50}", "occurred_at": order_day}  # fmt: skip
                    response = await client.post("/api/events", json=event)
                elif writes[i] and kind == "hook":
                    assert secret is not None
                    body = json.dumps(
                        {
                            "id": 10**9 + i,
                            "name": key,
                            "email": f"shopper-{i}@example.com",
                            "created_at": f"{order_day}T08:00:00Z",
                            "subtotal_price": "20.00",
                            "financial_status": "paid",
                            "line_items": [],
                        }
                    ).encode()
                    signature = base64.b64encode(
                        hmac.new(secret.encode(), body, hashlib.sha256).digest()
                    ).decode()
                    headers = {
                        "Content-Type": "application/json",
                        "X-Shopify-Hmac-Sha256": signature,
                        "X-Shopify-Topic": "orders/create",
                        "X-Shopify-Webhook-Id": f"hook-{run_id}-{i}",
                        "X-Shopify-Shop-Domain": "bench.myshopify.com",
                        "X-Shopify-Triggered-At": dt.datetime.now(dt.UTC).isoformat(),
                    }
                    response = await client.post(
                        "/webhooks/shopify/orders/create", content=body, headers=headers
                    )
                elif writes[i]:
                    order = {
                        "order_id": order_id,
                        "customer_id": customer,
                        "ordered_at": order_day,
                        "net_revenue": round(5 + (i % 97), 2),
                    }
                    response = await client.post("/api/orders", json=order)
                else:
                    response = await client.get(path.format(customer))
                await response.aread()
                statuses[i] = response.status_code
            except httpx.TimeoutException:
                statuses[i] = -1
            except httpx.HTTPError:
                statuses[i] = -2
            latencies[i] = loop.time() - scheduled
            if writes[i]:
                code = int(statuses[i])
                answers[key] = {-1: "timeout", -2: "error"}.get(code, str(code))

        await asyncio.gather(*(one(i) for i in range(total)))
    result: dict[str, Any] = {"requests": total}
    for kind, mask, good in (("read", ~writes, 200), ("write", writes, 201)):
        if not mask.any():
            continue
        # a webhook taken is answered 200, an event or order 201
        ok = mask & ((statuses == good) | ((statuses == 200) & (kind == "write")))
        ms = latencies[ok] * 1000
        prefix = "" if write_share == 0 else f"{kind}_"
        result[f"{prefix}requests"] = int(mask.sum())
        result[f"{prefix}ok"] = int(ok.sum())
        result[f"{prefix}errors"] = int((mask & ~ok).sum())
        result[f"{prefix}timeouts"] = int((mask & (statuses == -1)).sum())
        result[f"{prefix}429_503"] = int((mask & np.isin(statuses, (429, 503))).sum())
        if write_share:  # how late this client itself was: a busy machine shows here
            result[f"{prefix}client_lag_p99_ms"] = round(
                float(np.percentile(lags[mask], 99)) * 1000, 2
            )
            answered = (latencies[ok] - lags[ok]) * 1000
            if len(answered):
                result[f"{prefix}answer_p50_ms"] = round(float(np.percentile(answered, 50)), 2)
                result[f"{prefix}answer_p99_ms"] = round(float(np.percentile(answered, 99)), 2)
        if len(ms):
            result[f"{prefix}p50_ms"] = round(float(np.percentile(ms, 50)), 2)
            if write_share == 0:
                result["p90_ms"] = round(float(np.percentile(ms, 90)), 2)
            result[f"{prefix}p99_ms"] = round(float(np.percentile(ms, 99)), 2)
            result[f"{prefix}max_ms"] = round(float(ms.max()), 2)
    if write_share:
        result["requests"] = total
        result["orders"] = orders
        result["events"] = events
        result["hooks"] = hooks
    return result


def check_orders(db: Path, orders: dict[str, str]) -> dict[str, Any]:
    """After the run (server stopped): every order answered 201 must be stored, every
    order answered 503 or 429 must be absent; a timed-out order may be either, and is
    counted as which."""
    from retain.store import Store

    with Store(db, read_only=True) as store:
        found = store.con.execute(
            "SELECT order_id FROM orders WHERE order_id IN (SELECT unnest($ids)) "
            "UNION SELECT order_id FROM excluded_orders WHERE order_id IN (SELECT unnest($ids))",
            {"ids": list(orders)},
        ).fetchall()
    stored = {r[0] for r in found}
    answered = [k for k, v in orders.items() if v == "201"]
    refused = [k for k, v in orders.items() if v in ("429", "503")]
    unknown = [k for k, v in orders.items() if v in ("timeout", "error")]
    lost = [k for k in answered if k not in stored]
    refused_stored = [k for k in refused if k in stored]
    return {
        "orders_201_stored": len(answered) - len(lost),
        "orders_201_missing": len(lost),
        "orders_refused_absent": len(refused) - len(refused_stored),
        "orders_refused_but_stored": len(refused_stored),
        "orders_timed_out_stored": sum(k in stored for k in unknown),
        "orders_timed_out_absent": sum(k not in stored for k in unknown),
        "orders_other_status": sum(
            v not in ("201", "429", "503", "timeout", "error") for v in orders.values()
        ),
        "orders_consistent": not lost and not refused_stored,
    }


def check_once(db: Path, events: dict[str, str], hooks: dict[str, str]) -> dict[str, Any]:
    """After the run: every event answered 201 and every webhook order answered 200 is
    stored exactly once; every one refused (503) is absent."""
    from retain.store import Store

    with Store(db, read_only=True) as store:
        counts = dict(
            store.con.execute(
                "SELECT event_id, count(*) FROM events WHERE event_id IN (SELECT unnest($e)) "
                "GROUP BY ALL UNION ALL SELECT order_id, count(*) FROM (SELECT order_id FROM "
                "orders UNION ALL SELECT order_id FROM excluded_orders) "
                "WHERE order_id IN (SELECT unnest($h)) GROUP BY ALL",
                {"e": list(events), "h": list(hooks)},
            ).fetchall()
        )
    result: dict[str, Any] = {}
    for name, answers, ok in (("events", events, "201"), ("webhooks", hooks, "200")):
        taken = [k for k, v in answers.items() if v == ok]
        refused = [k for k, v in answers.items() if v in ("429", "503")]
        result[f"{name}_taken"] = len(taken)
        result[f"{name}_taken_not_once"] = sum(counts.get(k) != 1 for k in taken)
        result[f"{name}_refused_but_stored"] = sum(k in counts for k in refused)
        result[f"{name}_other_status"] = sum(
            v not in (ok, "429", "503", "timeout", "error") for v in answers.values()
        )
    return result


TARGET_READ_P99_MS = 50.0
TARGET_MIXED_READ_P99_MS = 20.0
TARGET_WRITE_P99_MS = 250.0


def run_writes(
    n_customers: int,
    rate: float = 200.0,
    seconds: float = 30.0,
    write_share: float = 0.1,
    db: Path | None = None,
    mixed: bool = False,
) -> dict:
    """Reads and ``POST /api/orders`` mixed, against a writable copy of the benchmark store
    (or of ``db``, a fitted and scored store such as ``make demo``'s, copied next to it);
    afterwards, the store is checked against every answer (:func:`check_orders`). ``mixed``:
    the writes are orders, events and signed Shopify webhooks in turn (issue 23's load),
    each checked stored exactly once (:func:`check_once`)."""
    from retain.store import Store

    if db is None:
        db, source = prepare(n_customers)
        copy = db.with_name("service-writes.duckdb")
    else:
        source = f"the store {db.name}"
        copy = db.with_name(f"{db.stem}-writes.duckdb")
    for path in (copy, Path(f"{copy}.wal")):
        path.unlink(missing_ok=True)
    shutil.copy(db, copy)
    with Store(copy, read_only=True) as store:
        customers, ids = sample_customers(store, seed=2)
        day = str(store.scalar("SELECT CAST(max(ordered_at) AS DATE) FROM orders"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETAIN_API_KEY")}
    secret = "bench-shopify-secret" if mixed else None
    if secret:
        env["RETAIN_SHOPIFY_SECRET"] = secret
    server = subprocess.Popen(
        [sys.executable, "-m", "retain.cli", "serve", "--db", str(copy), "--port", str(port)],
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        ready_s = wait_until_ready(base, ids[0])
        asyncio.run(fixed_rate(base, ids[1:], rate, 2.0))  # warm connections and caches
        result = asyncio.run(
            fixed_rate(
                base,
                ids,
                rate,
                seconds,
                timeout_s=10.0,
                write_share=write_share,
                order_day=day,
                run_id="mix",
                secret=secret,
            )
        )
        rss_mb = _rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=120)
    orders = result.pop("orders", {})  # none with --write-share 0
    events, hooks = result.pop("events", {}), result.pop("hooks", {})
    checked = check_orders(copy, orders)
    if mixed:
        checked.update(check_once(copy, events, hooks))
    once = not mixed or not any(
        checked[f"{n}_{w}"] for n in ("events", "webhooks") for w in ("taken_not_once",
                                                                       "refused_but_stored")
    )  # fmt: skip
    read_target = TARGET_MIXED_READ_P99_MS if mixed else TARGET_READ_P99_MS
    met = (
        checked["orders_consistent"]
        and once
        and result.get("read_errors", 1) == 0
        and result.get("read_p99_ms", 1e9) < read_target
        and (mixed or result.get("write_p99_ms", 1e9) < TARGET_WRITE_P99_MS)
    )
    writes = "orders, events and Shopify webhooks in turn" if mixed else "POST /api/orders"
    target = (
        f"reads p99 < {TARGET_MIXED_READ_P99_MS:.0f} ms, no read error, every accepted "
        "write stored exactly once, every refused one absent"
        if mixed
        else f"reads p99 < {TARGET_READ_P99_MS:.0f} ms, writes p99 < "
        f"{TARGET_WRITE_P99_MS:.0f} ms, every 201 stored, every 503 absent"
    )
    return {
        "name": f"GET /api/customers/{{id}} and {write_share:.0%} {writes}, "
        f"{customers:,} scored customers, {rate:.0f} req/s for {seconds:.0f} s on loopback "
        f"(open loop, client timeout 10 s; scores: {source})",
        "seconds": round(ready_s, 1),
        "server_rss_mb": rss_mb,
        **result,
        **checked,
        "target": target,
        "met": met,
    }


def run(
    n_customers: int, rate: float = 200.0, seconds: float = 30.0, write_share: float = 0.1
) -> list[dict]:
    from retain.store import Store
    from run import peak_mb

    db, source = prepare(n_customers)
    with Store(db, read_only=True) as store:
        customers, ids = sample_customers(store, seed=1)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "retain.cli",
            "serve",
            "--db",
            str(db),
            "--port",
            str(port),
            "--read-only",
        ],
        stderr=subprocess.DEVNULL,
    )
    try:
        ready_s = wait_until_ready(base, ids[0])
        peak_server_mb = _rss_mb(server.pid, "VmHWM")
        ready_mb = _rss_mb(server.pid)
        asyncio.run(fixed_rate(base, ids[1:], rate, 2.0))  # warm connections and caches
        result, cpu = _with_cpu(
            server.pid, lambda: asyncio.run(fixed_rate(base, ids, rate, seconds))
        )
        rss_mb = _rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=60)
    return [
        pages_on_demo_data(),
        {
            "name": f"GET /api/customers/{{id}}, {customers:,} scored customers, "
            f"{rate:.0f} req/s for {seconds:.0f} s on loopback (open loop; scores: {source})",
            "seconds": round(ready_s, 1),
            "peak_mb": round(peak_mb()),
            "server_peak_mb_at_ready": peak_server_mb,
            "server_rss_mb_at_ready": ready_mb,
            "server_rss_mb": rss_mb,
            **result,
            "server_cpu_ms_per_request": round(cpu["server_s"] * 1000 / result["requests"], 3),
            "client_cpu_share_of_a_core": round(cpu["client_s"] / cpu["wall_s"], 3),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "target": f"p99 < {TARGET_P99_MS:.0f} ms; at 1M: ready < 10 s, < 1 GB",
            "met": result["errors"] == 0
            and result["p99_ms"] < TARGET_P99_MS
            and (n_customers != 1_000_000 or (ready_s < 10 and ready_mb < 1024)),
            "note": "seconds: from server start until a lookup answers with its "
            "recommendations and the start-up work is done (/api/status warm); "
            "server_rss_mb_at_ready and server_rss_mb: resident memory then and after the "
            "timed run; server_cpu_ms_per_request: the server process's CPU over the "
            "timed run over its requests; client_cpu_share_of_a_core: the load client's own "
            "CPU (this process) over the run, on the same machine",
        },
        *([run_writes(n_customers, rate, seconds, write_share)] if write_share else []),
    ]


# A server of the same uvicorn settings as `retain serve`, with nothing of retain: a bare
# FastAPI route returning a fixed dict ("fastapi"), or an ASGI app answering fixed bytes
# ("asgi"): the CPU per request that uvicorn (and FastAPI) take whatever a route does.
FLOOR_SERVER = """
import sys
import uvicorn
from fastapi import FastAPI

kind, port = sys.argv[1], int(sys.argv[2])
if kind == "fastapi":
    app = FastAPI()

    @app.get("/api/customers/{customer_id:path}")
    async def customer(customer_id: str) -> dict:
        return {"customer_id": "c1", "orders": 2, "clv": 35.75}

else:

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = b'{"customer_id":"c1","orders":2,"clv":35.75}'
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
"""


def run_floor(rate: float = 200.0, seconds: float = 30.0) -> list[dict]:
    """The server CPU per request and p99 of uvicorn with a bare FastAPI route and with a
    bare ASGI app, under the lookup run's load: what no route of the service can go below."""
    ids = [f"c{i}" for i in range(20_000)]
    rows = []
    for kind in ("fastapi", "asgi"):
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [sys.executable, "-c", FLOOR_SERVER, kind, str(port)], stderr=subprocess.DEVNULL
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    with urllib.request.urlopen(f"{base}/api/customers/c0", timeout=10) as r:
                        r.read()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            asyncio.run(fixed_rate(base, ids[1:], rate, 2.0))  # warm connections
            result, cpu = _with_cpu(
                server.pid, lambda url=base: asyncio.run(fixed_rate(url, ids, rate, seconds))
            )
        finally:
            server.terminate()
            server.wait(timeout=60)
        rows.append(
            {
                "name": f"floor: uvicorn with a bare {'FastAPI route' if kind == 'fastapi' else 'ASGI app'}"
                f" answering a fixed body, {rate:.0f} req/s for {seconds:.0f} s on loopback",
                **result,
                "server_cpu_ms_per_request": round(cpu["server_s"] * 1000 / result["requests"], 3),
                "client_cpu_share_of_a_core": round(cpu["client_s"] / cpu["wall_s"], 3),
                "load_average": [round(x, 2) for x in os.getloadavg()],
            }
        )
    return rows


PAGES = ("/", "/cohorts", "/segments", "/models", "/at-risk", "/customers", "/customers/7592")
TARGET_PAGE_S = 1.0


def pages_on_demo_data() -> dict:
    """Each dashboard page's first render (nothing cached) over the demo store:
    the CDNOW master file, fitted and scored as ``make demo`` does."""
    import tempfile

    from retain.datasets import cdnow_path

    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "demo.duckdb")
        steps = [
            ["ingest", str(cdnow_path()), "--format", "cdnow", "--as-of", "1998-06-30"],
            ["fit", "--unit", "W"],
            ["score"],
        ]
        for step in steps:
            subprocess.run(
                [sys.executable, "-m", "retain.cli", *step, "--db", db],
                check=True,
                capture_output=True,
            )
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [sys.executable, "-m", "retain.cli", "serve", "--db", db, "--port", str(port)],
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 120
            while True:  # the status endpoint only: no page or customer is warmed
                try:
                    with urllib.request.urlopen(base + "/api/status", timeout=10) as response:
                        response.read()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            seconds = {}
            for page in PAGES:
                start = time.perf_counter()
                with urllib.request.urlopen(base + page, timeout=60) as response:
                    response.read()
                seconds[page] = round(time.perf_counter() - start, 3)
        finally:
            server.terminate()
            server.wait(timeout=60)
    slowest = max(seconds.values())
    return {
        "name": "dashboard pages, first render on the demo data (CDNOW, 23,570 customers)",
        "seconds": slowest,
        "pages_s": seconds,
        "target": f"every page < {TARGET_PAGE_S:.0f} s",
        "met": slowest < TARGET_PAGE_S,
    }


def _rss_mb(pid: int, field: str = "VmRSS") -> int | None:
    """The process's resident memory now (``VmRSS``) or at its peak (``VmHWM``), MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return round(int(line.split()[1]) / 1024)
    except OSError:
        return None
    return None


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) the process ``pid`` has used so far (0 off Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _with_cpu(pid: int, work: Any) -> tuple[Any, dict[str, float]]:
    """``work()``, and the CPU seconds the server ``pid`` and this process (the load
    client) used meanwhile, with the wall time."""
    server, client, wall = _cpu_s(pid), time.process_time(), time.monotonic()
    result = work()
    return result, {
        "server_s": _cpu_s(pid) - server,
        "client_s": time.process_time() - client,
        "wall_s": time.monotonic() - wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument(
        "--write-share", type=float, default=0.1, help="share of requests that POST an order"
    )
    parser.add_argument(
        "--writes-only", action="store_true", help="only the run with writes (no page timings)"
    )
    parser.add_argument(
        "--mixed",
        action="store_true",
        help="with --writes-only: the writes are orders, events and signed Shopify webhooks "
        "in turn, each checked stored exactly once",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="only uvicorn's own CPU per request: a bare FastAPI route and a bare ASGI app",
    )
    parser.add_argument(
        "--db",
        type=Path,
        help="with --writes-only: a fitted and scored store to serve a copy of (e.g. make "
        "demo's demo.duckdb) instead of the generated one",
    )
    args = parser.parse_args()
    if args.floor:
        rows = run_floor(args.rate, args.seconds)
    elif args.writes_only:
        db = args.db.resolve() if args.db else None
        rows = [
            run_writes(args.customers, args.rate, args.seconds, args.write_share, db, args.mixed)
        ]
    else:
        rows = run(args.customers, args.rate, args.seconds, args.write_share)
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
