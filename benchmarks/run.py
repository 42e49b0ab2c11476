"""Run every benchmark and write benchmarks/RESULTS.md.

    python benchmarks/run.py [--customers 1000000] [--only ingest,summarize,models]

Each benchmark runs in its own process so that its peak memory is its own.
The foundation benchmarks (ingest, summarize) live here; each area adds a
``bench_<area>.py`` exposing ``run(n_customers) -> list[dict]`` (keys: name,
seconds, peak_mb, and any peer figures), found and run by this script.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    import duckdb

    return (
        f"{cpu}, {os.cpu_count()} cores, {mem_gib:.0f} GiB RAM, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}, DuckDB {duckdb.__version__}"
    )


def best_of(repeats: int, func: Callable[[], Any], *, warm_up: bool = True) -> tuple[float, Any]:
    """Best wall-clock seconds of ``repeats`` calls, and the last result; ``warm_up``: one
    untimed call first."""
    result = func() if warm_up else None
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - start)
    return min(times), result


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def data_dir(n_customers: int) -> Path:
    # keyed by the generator's text too: a changed generator writes a new data set
    version = hashlib.sha256((HERE / "generate.py").read_bytes()).hexdigest()[:8]
    out = HERE / "data" / f"{n_customers}-{version}"
    if not (out / "orders.parquet").exists():
        from generate import write  # NumPy and pandas: only when generating

        print(f"generating {n_customers:,} customers into {out} ...", flush=True)
        write(n_customers, out)
    return out


# -- foundation benchmarks, each run in a child process -------------------------------
def bench_ingest(n_customers: int) -> list[dict]:
    import duckdb

    from retain.ingest import ingest
    from retain.store import Store

    data = data_dir(n_customers)
    db = data / "bench.duckdb"
    for path in (db, Path(f"{db}.wal")):
        path.unlink(missing_ok=True)
    counted = (
        duckdb.connect()
        .execute("SELECT count(*) FROM read_parquet(?)", [str(data / "orders.parquet")])
        .fetchall()[0]
    )
    rows = counted[0] if counted else 0
    with Store(db) as store:
        start = time.perf_counter()
        report = ingest(store, data / "orders.parquet", as_of="2026-01-01")
        seconds = time.perf_counter() - start
    return [
        {
            "name": f"ingest {rows:,}-row orders Parquet",
            "seconds": round(seconds, 2),
            "peak_mb": round(peak_mb()),
            "rows_per_s": round(report.orders / seconds),
            "target": "< 10 s, < 2 GB",
        }
    ]


def bench_summarize(n_customers: int) -> list[dict]:
    import retain
    from retain.store import Store

    db = data_dir(n_customers) / "bench.duckdb"
    if not db.exists():
        bench_ingest(n_customers)
    end = "2026-01-01"
    with Store(db, read_only=True) as store:
        retain.summarize(store, unit="D", observation_end=end)  # warm the file cache
        times = []
        for _ in range(3):
            start = time.perf_counter()
            summary = retain.summarize(store, unit="D", observation_end=end)
            times.append(time.perf_counter() - start)
        orders = store.scalar("SELECT count(*) FROM orders")
    row: dict = {
        "name": f"summarize {orders:,} orders / {len(summary):,} customers (best of 3)",
        "seconds": round(min(times), 3),
        "peak_mb": round(peak_mb()),
        "target": "< 1 s",
    }
    peer = peer_python()
    if peer:
        proc = subprocess.run(
            [
                peer,
                str(HERE / "peers" / "summarize_lifetimes.py"),
                str(data_dir(n_customers) / "orders.parquet"),
                end,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        theirs = json.loads(proc.stdout.strip().splitlines()[-1])
        row["lifetimes_0.11.3_s"] = round(theirs["seconds"], 2)
        row["speedup_vs_lifetimes"] = round(theirs["seconds"] / min(times), 1)
        row["same_totals"] = theirs["customers"] == len(summary) and theirs["frequency"] == float(
            summary["frequency"].sum()
        )
    return [row]


def peer_python() -> str | None:
    """The peer venv's interpreter (lifetimes 0.11.3), made by `make bench`."""
    python = HERE / ".venv-peers" / "bin" / "python"
    return str(python) if python.exists() else None


FOUNDATION = {"ingest": bench_ingest, "summarize": bench_summarize}


def areas() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))


def child(name: str, n_customers: int) -> list[dict]:
    """Run one benchmark in this process and return its rows."""
    if name in FOUNDATION:
        return FOUNDATION[name](n_customers)
    module = __import__(f"bench_{name}")
    return module.run(n_customers)


def run_in_child(name: str, n_customers: int) -> list[dict]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", name, "--customers", str(n_customers)],
        capture_output=True,
        text=True,
    )
    sys.stderr.write(proc.stderr)
    if proc.returncode != 0:
        return [{"name": name, "error": proc.stderr.strip().splitlines()[-1:]}]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def write_results(results: dict[str, list[dict]], n_customers: int, path: Path) -> None:
    lines = [
        "# Benchmark results",
        "",
        f"Run: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, `make bench` "
        f"(`python benchmarks/run.py --customers {n_customers}`).",
        f"Machine: {machine()}.",
        "",
        "Data: `benchmarks/generate.py`, seed 0 (BG/NBD purchase histories, affinities "
        "planted within orders and across a customer's orders). Times are wall clock; peak "
        "memory is the benchmark process's maximum resident set. Ratios compare with the "
        "named peer in the same run.",
        "",
    ]
    for area, rows in results.items():
        lines += [f"## {area}", ""]
        keys: list[str] = []
        for row in rows:
            keys += [k for k in row if k not in keys]
        lines.append("| " + " | ".join(keys) + " |")
        lines.append("|" + "---|" * len(keys))
        for row in rows:
            lines.append("| " + " | ".join(str(row.get(k, "")) for k in keys) + " |")
        lines.append("")
    path.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description="Run retain's benchmarks.")
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.customers)))
        return
    names = [*FOUNDATION, *areas()]
    if args.only:
        names = [n for n in names if n in args.only.split(",")]
    data_dir(args.customers)
    results: dict[str, list[dict]] = {}
    for name in names:
        print(f"== {name}", flush=True)
        results[name] = run_in_child(name, args.customers)
        for row in results[name]:
            print("   " + ", ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    write_results(results, args.customers, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
