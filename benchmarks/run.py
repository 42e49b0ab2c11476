"""Run every benchmark and write benchmarks/RESULTS.md.

    python benchmarks/run.py [--customers 1000000] [--only ingest,summarize,models] [--runs 3]

Each benchmark runs in its own process so that its peak memory is its own.
The foundation benchmarks (ingest, summarize) live here; each area adds a
``bench_<area>.py`` exposing ``run(n_customers) -> list[dict]`` (keys: name,
seconds, peak_mb, and any peer figures), found and run by this script. Every peer
comparison is timed as ``benchmarks/harness.py`` says (a fresh process per timed call,
median with min and max of ``--runs`` runs); each section records the load average.
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
from functools import partial
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
    untimed call first. A warm-call figure: its rows say "warm" and compare with no peer
    (peer comparisons are timed by benchmarks/harness.py, a fresh process per call)."""
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
    """retain's summary from the store, and from the Parquet file against lifetimes',
    each call in a fresh process (benchmarks/harness.py)."""
    from harness import (
        columns,
        interleaved,
        load_1m,
        machine_load,
        python_call,
        run_fresh,
        runs_label,
    )

    data = data_dir(n_customers)
    db = data / "bench.duckdb"
    if not db.exists():
        bench_ingest(n_customers)
    end = "2026-01-01"
    calls = HERE / "calls.py"
    before = load_1m()
    sides = {"store": partial(run_fresh, python_call(calls, "summarize_store", db, end))}
    orders = data / "orders.parquet"
    sides["retain"] = partial(run_fresh, python_call(calls, "summarize", orders, end))
    peer = peer_python()
    if peer:
        script = HERE / "peers" / "lifetimes_calls.py"
        command = python_call(script, "summarize", orders, end, python=peer)
        sides["lifetimes"] = partial(run_fresh, command)
    done = interleaved(sides)
    load = machine_load(before)
    first = done["store"][0].out
    runs = len(done["store"])
    rows: list[dict] = [
        {
            "name": f"summarize {first['orders']:,} orders / {first['customers']:,} customers "
            f"from the store ({runs_label(runs)}, fresh process each)",
            **columns("", [r.seconds for r in done["store"]]),
            "peak_mb": round(max(r.peak_mb for r in done["store"])),
            "target": "< 1 s",
            **load,
        }
    ]
    row: dict = {
        "name": f"summarize the orders read from Parquet ({runs_label(runs)} a side, fresh process "
        "each, the read not timed)",
        **columns("", [r.seconds for r in done["retain"]]),
        "peak_mb": round(max(r.peak_mb for r in done["retain"])),
    }
    if peer:
        ours = row["seconds"]
        theirs = columns("lifetimes_0.11.3", [r.seconds for r in done["lifetimes"]], 2)
        a, b = done["retain"][0].out, done["lifetimes"][0].out
        row.update(theirs)
        row["speedup_vs_lifetimes"] = round(theirs["lifetimes_0.11.3_s"] / ours, 1)
        row["same_totals"] = (a["customers"], a["frequency_total"]) == (
            b["customers"],
            b["frequency_total"],
        )
    rows.append({**row, **load})
    return rows


def peer_python() -> str | None:
    """The peer venv's interpreter (lifetimes 0.11.3), made by `make bench`."""
    python = HERE / ".venv-peers" / "bin" / "python"
    return str(python) if python.exists() else None


def bench_pnbd_fit(n_customers: int) -> list[dict]:
    """benchmarks/bench_pnbd_fit.py at its default sizes (it simulates its own customers,
    so ``n_customers`` is not used): retain's Pareto/NBD fit against its BG/NBD fit."""
    import bench_pnbd_fit

    del n_customers
    rows = bench_pnbd_fit.run([2000, 5000, 20000], 3)
    return [
        {
            "name": f"{row.pop('data')}, {row['customers']:,} simulated customers (warm: best "
            "of 3 fits of each model in one process; no peer)",
            **row,
        }
        for row in rows
    ]


FOUNDATION = {"ingest": bench_ingest, "summarize": bench_summarize, "pnbd_fit": bench_pnbd_fit}


# run through an adapter above: bench_pnbd_fit.py's run takes sizes, not a customer count
STANDALONE = {"pnbd_fit"}


def areas() -> list[str]:
    names = (p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    return sorted(n for n in names if n not in STANDALONE)


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


# benchmarks on data sets of their own size (simulated summaries, CDNOW)
SIZE_FREE = {"pnbd_fit", "accuracy", "feedback"}


def section_title(area: str, n_customers: int) -> str:
    """A section's heading: the area, and the size when not the default 1M customers."""
    if n_customers == 1_000_000 or area in SIZE_FREE:
        return area
    return f"{area} at {n_customers:,} customers"


def section(area: str, rows: list[dict], n_customers: int, load: str = "") -> str:
    """One benchmark's section: when and how it ran, the load beside it, its table."""
    lines = [
        f"## {section_title(area, n_customers)}",
        "",
        f"Run: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {machine()}, `python "
        f"benchmarks/run.py --customers {n_customers} --only {area}` (or `make bench`)"
        + (f"; load average (1 min) before and after: {load}." if load else "."),
        "",
    ]
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    lines.append("| " + " | ".join(keys) + " |")
    lines.append("|" + "---|" * len(keys))
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(k, "")) for k in keys) + " |")
    return "\n".join(lines) + "\n"


def sections_of(text: str) -> dict[str, str]:
    """The ``## `` sections of a RESULTS.md, by heading, each with its text."""
    found: dict[str, str] = {}
    title = None
    for line in text.splitlines(keepends=True):
        if line.startswith("## "):
            title = line[3:].strip()
            found[title] = ""
        if title is not None:
            found[title] += line
    return found


def write_results(
    results: dict[str, list[dict]],
    n_customers: int,
    path: Path,
    loads: dict[str, str] | None = None,
) -> None:
    """RESULTS.md: the method, then a section per benchmark. The sections of this run
    replace those of the same name; the file's other sections (other sizes, other
    benchmarks, notes) stay where they are, each saying when it ran."""
    from harness import METHOD

    loads = loads or {}
    fresh = {
        section_title(area, n_customers): section(area, rows, n_customers, loads.get(area, ""))
        for area, rows in results.items()
    }
    kept = sections_of(path.read_text()) if path.exists() else {}
    order = [*kept, *(t for t in fresh if t not in kept)]
    lines = [
        "# Benchmark results",
        "",
        "Machine: as each section says (sections run at different times may run on "
        f"different machines); this run's: {machine()}.",
        "",
        "Data: `benchmarks/generate.py`, seed 0 (BG/NBD purchase histories, affinities "
        "planted within orders and across a customer's orders). Times are wall clock; peak "
        "memory is the benchmark process's maximum resident set. Ratios compare with the "
        "named peer in the same run. Each section says when and where it ran and the load "
        "beside it.",
        "",
        f"Method: {METHOD}",
        "",
    ]
    body = [fresh.get(t) or kept[t] for t in order]
    path.write_text("\n".join(lines) + "\n" + "\n".join(b.rstrip("\n") + "\n" for b in body))


def main() -> None:
    parser = argparse.ArgumentParser(description="Run retain's benchmarks.")
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument(
        "--runs", type=int, default=0, help="runs per side of each fresh-process timing (3)"
    )
    args = parser.parse_args()
    if args.runs:
        os.environ["RETAIN_BENCH_RUNS"] = str(args.runs)  # the children read it
    if args.child:
        print(json.dumps(child(args.child, args.customers)))
        return
    names = [*FOUNDATION, *areas()]
    if args.only:
        names = [n for n in names if n in args.only.split(",")]
    # generated in a child: a benchmark child's peak memory starts from this process's
    subprocess.run(
        [sys.executable, "-c", f"from run import data_dir; data_dir({args.customers})"],
        cwd=HERE,
        check=True,
    )
    from harness import load_1m

    results: dict[str, list[dict]] = {}
    loads: dict[str, str] = {}
    for name in names:
        print(f"== {name}", flush=True)
        before = load_1m()
        results[name] = run_in_child(name, args.customers)
        loads[name] = f"{before:.2f} -> {load_1m():.2f} on {os.cpu_count()} CPUs"
        for row in results[name]:
            print("   " + ", ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    write_results(results, args.customers, args.out, loads)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
