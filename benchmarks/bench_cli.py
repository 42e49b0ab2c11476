"""CLI benchmark: the user's path, ``retain ingest`` + ``retain fit`` + ``retain score``.

    python benchmarks/bench_cli.py [--customers 1000000] [--runs 3] [--no-peer] [--data DIR]

On the orders of ``benchmarks/generate.py`` (seed 0), observation date 2026-01-01:

- each command a fresh process (the installed ``retain``), into a new store each run:
  wall seconds and the command's peak resident memory, and the total of the three;
- in the same runs, interleaved: the Python API path in a fresh process (the orders read
  from Parquet, ``retain.summarize``, BG/NBD + Gamma-Gamma fits, P(alive), 90-day
  purchases, 12-month CLV) and DuckDB's summary query alone on the same file;
- the API fit + score against lifetimes 0.11.3 on the same summary file, and the whole
  path from the Parquet file against lifetimes', each side a fresh process per run.

Timed as ``benchmarks/harness.py`` says; the targets are issue 14's. This process starts
the children and imports neither pandas nor retain, so that its own memory (a child's
peak starts from it) stays small.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import (  # noqa: E402
    BenchError,
    Run,
    columns,
    interleaved,
    load_1m,
    machine_load,
    peer_python,
    python_call,
    run_fresh,
    runs_label,
    runs_wanted,
    spread,
)

OBSERVATION_END = "2026-01-01"
CALLS = HERE / "calls.py"
PEER_CALLS = HERE / "peers" / "lifetimes_calls.py"
STEPS = ("ingest", "fit", "score")


def retain_command() -> list[str]:
    """The installed ``retain`` beside this interpreter, else ``python -m retain.cli``."""
    script = Path(sys.executable).parent / "retain"
    return [str(script)] if script.exists() else [sys.executable, "-m", "retain.cli"]


def cli_steps(orders: Path, db: Path) -> dict[str, list[str]]:
    retain = retain_command()
    end = ["--as-of", OBSERVATION_END]
    return {
        "ingest": [*retain, "ingest", "--db", str(db), *end, str(orders)],
        "fit": [*retain, "fit", "--db", str(db), *end],
        "score": [*retain, "score", "--db", str(db), *end],
    }


def fresh_store(db: Path) -> None:
    for path in (db, Path(f"{db}.wal")):
        path.unlink(missing_ok=True)


def cli_path(orders: Path, work: Path) -> Run:
    """One run of the three commands into a new store; ``out`` holds each step's Run."""
    db = work / "cli.duckdb"
    fresh_store(db)
    steps = {name: run_fresh(command) for name, command in cli_steps(orders, db).items()}
    return Run(
        wall_s=sum(r.wall_s for r in steps.values()),
        peak_mb=max(r.peak_mb for r in steps.values()),
        pid=steps["ingest"].pid,
        out={"steps": steps},
    )


def targets(n_customers: int, total_s: float, peak_mb: float) -> dict[str, Any]:
    """Issue 14's targets for the CLI path: < 15 s at 1M; < 80 s and < 3 GB at 5M."""
    row: dict[str, Any] = {"target": "1M: < 15 s; 5M: < 80 s, < 3 GB"}
    if n_customers == 1_000_000:
        row["met"] = total_s < 15
    elif n_customers == 5_000_000:
        row["met"] = total_s < 80 and peak_mb < 3 * 1024
    return row


def run(
    n_customers: int,
    runs: int | None = None,
    with_peer: bool | None = None,
    data: Path | None = None,
) -> list[dict]:
    """The rows; ``data``: a folder holding ``orders.parquet`` (default: the generated
    data set of ``n_customers``, made if missing); ``with_peer`` (default: unless the
    environment sets ``RETAIN_BENCH_PEER=0``, as for ``run.py --customers 5000000
    --only cli``, where lifetimes alone takes minutes a run): the lifetimes rows."""
    from run import data_dir

    runs = runs_wanted() if runs is None else runs
    if with_peer is None:
        with_peer = os.environ.get("RETAIN_BENCH_PEER", "1") != "0"
    orders = (data or data_dir(n_customers)) / "orders.parquet"
    work = Path(tempfile.mkdtemp(prefix="retain-bench-cli-"))
    try:
        rows = _cli_rows(n_customers, orders, work, runs)
        if with_peer:
            rows += _peer_rows(orders, work, runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def _cli_rows(n_customers: int, orders: Path, work: Path, runs: int) -> list[dict]:
    before = load_1m()
    done = interleaved(
        {
            "cli": lambda: cli_path(orders, work),
            "api": lambda: run_fresh(
                python_call(CALLS, "parquet_to_scores", orders, OBSERVATION_END)
            ),
            "duckdb": lambda: run_fresh(
                python_call(CALLS, "duckdb_summary", orders, OBSERVATION_END)
            ),
        },
        runs,
    )
    load = machine_load(before)
    customers = done["api"][0].out.get("customers", n_customers)
    what = f"{customers:,} customers, {runs_label(runs)}, fresh process each"
    rows: list[dict] = []
    for step in STEPS:
        step_runs = [r.out["steps"][step] for r in done["cli"]]
        rows.append(
            {
                "name": f"retain {step} ({what})",
                **columns("", [r.wall_s for r in step_runs]),
                "peak_mb": round(spread(r.peak_mb for r in step_runs)["max"]),
                **load,
            }
        )
    total = spread(r.wall_s for r in done["cli"])
    peak = round(max(r.peak_mb for r in done["cli"]))
    api = spread(r.seconds for r in done["api"])
    duck = spread(r.seconds for r in done["duckdb"])
    rows.append(
        {
            "name": "CLI path: retain ingest + fit + score (the three processes' wall time)",
            "seconds": total["median"],
            "min_s": total["min"],
            "max_s": total["max"],
            "peak_mb": peak,
            "vs_api_path": round(total["median"] / api["median"], 1),
            **targets(n_customers, total["median"], peak),
            **load,
        }
    )
    rows.append(
        {
            "name": "Python API path: Parquet -> summarize -> BG/NBD + Gamma-Gamma fits -> "
            "P(alive), 90-day purchases, 12-month CLV (timed in the process, imports excluded)",
            **columns("", [r.seconds for r in done["api"]]),
            "process_s": spread(r.wall_s for r in done["api"])["median"],
            "peak_mb": round(spread(r.peak_mb for r in done["api"])["max"]),
            "vs_duckdb_summary": round(api["median"] / duck["median"], 2),
            "target": "within 1.5x of the DuckDB summary query (at 1M)",
            **({"met": api["median"] <= 1.5 * duck["median"]} if n_customers == 1_000_000 else {}),
            **load,
        }
    )
    rows.append(
        {
            "name": "DuckDB's summary query alone on the same Parquet file, fetched into NumPy",
            **columns("", [r.seconds for r in done["duckdb"]]),
            "process_s": spread(r.wall_s for r in done["duckdb"])["median"],
            "peak_mb": round(spread(r.peak_mb for r in done["duckdb"])["max"]),
            **load,
        }
    )
    check_rows(rows)
    return rows


ROW_COLUMNS = {"seconds", "min_s", "max_s", "peak_mb", "load_1m", "cpus"}


def check_rows(rows: list[dict]) -> None:
    """What the CLI rows must say of themselves, checked on every run (a benchmark's
    figures are timings, so they are checked here, not in the test suite): the three
    steps, the path, the API path and the query, in that order, each with its median,
    min, max, peak and load; min <= median <= max; the path's runs at least as long as
    its steps' fastest together, and its peak the steps' highest."""
    names = [row["name"].split(" (")[0] for row in rows]
    expected = [
        "retain ingest",
        "retain fit",
        "retain score",
        "CLI path: retain ingest + fit + score",
    ]
    wrong = []
    if (
        names[:4] != expected
        or not names[4].startswith("Python API path")
        or not names[5].startswith("DuckDB's summary query")
    ):
        wrong.append(f"rows {names}")
    for row in rows:
        missing = ROW_COLUMNS - set(row)
        if missing:
            wrong.append(f"{row['name']}: no {sorted(missing)}")
        elif not row["min_s"] <= row["seconds"] <= row["max_s"] or row["peak_mb"] <= 0:
            wrong.append(f"{row['name']}: min, median, max or peak out of order")
    steps, total = rows[:3], rows[3]
    if total["min_s"] < sum(step["min_s"] for step in steps) - 0.01:
        wrong.append("the CLI path's fastest run is shorter than its steps' fastest together")
    if total["peak_mb"] != max(step["peak_mb"] for step in steps):
        wrong.append("the CLI path's peak is not its steps' highest")
    if wrong:
        raise BenchError("; ".join(wrong))


def _peer_rows(orders: Path, work: Path, runs: int) -> list[dict]:
    peer = peer_python()
    if peer is None:
        return [{"name": "lifetimes 0.11.3 comparison", "error": "no benchmarks/.venv-peers"}]
    summary = work / "summary.parquet"
    run_fresh(python_call(CALLS, "summary_file", orders, OBSERVATION_END, summary))
    rows = []
    for call, args, name, target in (
        (
            "fit_score",
            (summary,),
            "API fit + score: BG/NBD + Gamma-Gamma fits, P(alive), 90-day purchases, "
            "12-month CLV, on the same summary file",
            ">= 20x lifetimes (at 1M)",
        ),
        (
            "parquet_to_scores",
            (orders, OBSERVATION_END),
            "Parquet -> scores: read, summarize, both fits, P(alive), 90-day purchases, "
            "12-month CLV",
            "",
        ),
    ):
        before = load_1m()
        done = interleaved(
            {
                "retain": partial(run_fresh, python_call(CALLS, call, *args)),
                "lifetimes": partial(run_fresh, python_call(PEER_CALLS, call, *args, python=peer)),
            },
            runs,
        )
        rows.append(versus(name, done, target, machine_load(before)))
    return rows


def versus(name: str, done: dict[str, list[Run]], target: str, load: dict) -> dict[str, Any]:
    """One comparison row: both sides' medians with min and max, the ratio of the medians,
    and whether both found the same customers and the same P(alive)."""
    mine, theirs = done["retain"], done["lifetimes"]
    ours = spread(r.seconds for r in mine)["median"]
    peer = spread(r.seconds for r in theirs)["median"]
    a, b = mine[0].out, theirs[0].out
    row: dict[str, Any] = {
        "name": f"{name} ({runs_label(len(mine))} a side, fresh process each)",
        **columns("", [r.seconds for r in mine]),
        "peak_mb": round(max(r.peak_mb for r in mine)),
        **columns("lifetimes_0.11.3", [r.seconds for r in theirs], 2),
        "lifetimes_peak_mb": round(max(r.peak_mb for r in theirs)),
        "speedup_vs_lifetimes": round(peer / ours, 1),
        "same_customers": a.get("customers") == b.get("customers")
        and a.get("frequency_total") == b.get("frequency_total"),
        "p_alive_mean_diff": _diff(a.get("p_alive_mean"), b.get("p_alive_mean")),
        "expected_90d_ratio": _ratio(a.get("expected_90d_total"), b.get("expected_90d_total")),
        "clv_ratio": _ratio(a.get("clv_total"), b.get("clv_total")),
    }
    if target:
        row["target"] = target
        if "1M" in target and a.get("customers") == 1_000_000:
            row["met"] = peer / ours >= 20
    return {**row, **load}


def _diff(a: Any, b: Any) -> float | str:
    return "" if a is None or b is None else float(f"{a - b:.2g}")


def _ratio(a: Any, b: Any) -> float | str:
    return "" if not a or not b else round(a / b, 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument(
        "--data", type=Path, help="a folder with orders.parquet (generate.py output) to use"
    )
    args = parser.parse_args()
    if args.runs:
        os.environ["RETAIN_BENCH_RUNS"] = str(args.runs)
    rows = run(args.customers, runs=args.runs, with_peer=not args.no_peer, data=args.data)
    for row in rows:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
