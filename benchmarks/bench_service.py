"""Service benchmark: GET /api/customers/{id} under a fixed load on loopback.

    python benchmarks/bench_service.py [--customers 1000000] [--rate 200] [--seconds 30]

Builds ``benchmarks/data/<n>/service.duckdb``: the ingest benchmark's store
plus the generated order lines and customers, model scores for every customer
(``retain score`` when this retain has it, else seeded stand-in scores shaped
like a model's), and the saved recommender. Starts ``retain serve
--read-only`` on 127.0.0.1, waits until it answers, then sends requests for
random customers at a fixed rate (open loop: each request leaves at its
scheduled time whether or not earlier ones have returned, and its latency is
counted from that time, so a stall is not hidden). Traffic goes to 127.0.0.1
only, for a bounded number of requests, and the script stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
    """Seconds until the server answers a customer lookup and has ranked every
    customer's recommendations (its caches are built)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        try:
            with urllib.request.urlopen(f"{base}/api/customers/{customer_id}", timeout=120) as r:
                r.read()
            with urllib.request.urlopen(f"{base}/api/status", timeout=120) as r:
                ranked = json.loads(r.read())["recommendations"]
            if not ranked["available"] or ranked["customers_ranked"] >= ranked["customers"]:
                return time.monotonic() - start
        except OSError:
            pass
        time.sleep(2)
    raise RuntimeError(f"the server at {base} was not ready within {timeout_s:.0f} s")


async def fixed_rate(
    base: str, ids: list[str], rate: float, seconds: float, timeout_s: float = 5.0
) -> dict[str, Any]:
    """Open-loop load: request i leaves at start + i / rate; latency from that moment."""
    import httpx

    total = int(rate * seconds)
    latencies = np.full(total, np.nan)
    statuses = np.zeros(total, dtype=np.int64)
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(base_url=base, timeout=timeout_s, limits=limits) as client:
        loop = asyncio.get_running_loop()
        start = loop.time() + 0.1

        async def one(i: int) -> None:
            scheduled = start + i / rate
            await asyncio.sleep(max(0.0, scheduled - loop.time()))
            try:
                response = await client.get(f"/api/customers/{ids[i % len(ids)]}")
                await response.aread()
                statuses[i] = response.status_code
            except httpx.HTTPError:
                statuses[i] = -1
            latencies[i] = loop.time() - scheduled

        await asyncio.gather(*(one(i) for i in range(total)))
    ok = statuses == 200
    ms = latencies[ok] * 1000
    return {
        "requests": total,
        "ok": int(ok.sum()),
        "errors": int((~ok).sum()),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p90_ms": round(float(np.percentile(ms, 90)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "max_ms": round(float(ms.max()), 2),
    }


def run(n_customers: int, rate: float = 200.0, seconds: float = 30.0) -> list[dict]:
    from retain.store import Store
    from run import peak_mb

    db, source = prepare(n_customers)
    with Store(db, read_only=True) as store:
        customers = int(store.scalar("SELECT count(DISTINCT customer_id) FROM orders"))
        ids = (
            store.query(
                "SELECT customer_id FROM (SELECT DISTINCT customer_id FROM orders) "
                "USING SAMPLE 20000 ROWS (reservoir, 1)"
            )["customer_id"]
            .astype(str)
            .tolist()
        )
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
        asyncio.run(fixed_rate(base, ids[1:], rate, 2.0))  # warm connections and caches
        result = asyncio.run(fixed_rate(base, ids, rate, seconds))
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
            "server_rss_mb": rss_mb,
            **result,
            "target": f"p99 < {TARGET_P99_MS:.0f} ms",
            "met": result["errors"] == 0 and result["p99_ms"] < TARGET_P99_MS,
            "note": "seconds: from server start until lookups answer and every customer's "
            "recommendations are ranked",
        },
    ]


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


def _rss_mb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024)
    except OSError:
        return None
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    rows = run(args.customers, args.rate, args.seconds)
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
