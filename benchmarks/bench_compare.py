"""Model comparison benchmark: what ``retain fit``'s holdout comparison of the three
models costs against one model's holdout check and one model's fit.

    python benchmarks/bench_compare.py [--customers 1000000] [--runs 3]

On the orders of ``benchmarks/generate.py`` ingested into a store (not timed), observed
to 2026-01-01 as ``bench_cli.py``; the holdout is ``retain fit``'s default (a quarter of
the history, in whole weeks). Each call a fresh process (``benchmarks/harness.py``):

- ``compare``: :func:`retain.validate.compare` of BG/NBD, MBG/NBD and Pareto/NBD (one
  calibration summary and holdout for the three, the candidates side by side);
- ``holdout MODEL``: :func:`retain.validate.holdout` of one model alone;
- ``fit MODEL``: the model's fit on the summary of every order (read, not timed).

Issue 14's target: the comparison at most 2x one model's fit.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import (  # noqa: E402
    columns,
    interleaved,
    load_1m,
    machine_load,
    python_call,
    report,
    run_fresh,
    runs_label,
    runs_wanted,
    spread,
)

OBSERVATION_END = dt.date(2026, 1, 1)
MODELS = ("bgnbd", "mbgnbd", "pnbd")


def calibration_end(store: object) -> dt.date:
    """``retain fit``'s default holdout: a quarter of the history, in whole weeks."""
    first = store.scalar("SELECT min(ordered_at)::DATE FROM orders")  # type: ignore[attr-defined]
    weeks = max(1, (OBSERVATION_END - first).days // 28)
    return OBSERVATION_END - dt.timedelta(weeks=weeks)


def child(call: str, db: str, model: str = "") -> None:
    """One timed call, in this fresh process."""
    import scipy.optimize  # noqa: F401  (loaded before the clock, as by any fit)

    from retain.features import summarize
    from retain.models import transaction_model
    from retain.store import Store
    from retain.validate import compare, holdout

    with Store(db, read_only=True) as store:
        cal = calibration_end(store)
        if call == "fit":
            summary = summarize(store, observation_end=OBSERVATION_END, unit="D")
            start = time.perf_counter()
            transaction_model(model).fit(summary)
        elif call == "holdout":
            start = time.perf_counter()
            holdout(store, cal, model=model, holdout_end=OBSERVATION_END, unit="D")
        else:
            start = time.perf_counter()
            compare(store, cal, models=MODELS, holdout_end=OBSERVATION_END, unit="D")
        report(time.perf_counter() - start, calibration_end=cal.isoformat())


def run(n_customers: int, runs: int | None = None) -> list[dict]:
    from run import data_dir

    runs = runs_wanted() if runs is None else runs
    orders = data_dir(n_customers) / "orders.parquet"
    work = Path(tempfile.mkdtemp(prefix="retain-bench-compare-"))
    try:
        db = work / "store.duckdb"
        retain = Path(sys.executable).parent / "retain"
        subprocess.run(
            [str(retain), "ingest", "--db", str(db), "--as-of", str(OBSERVATION_END), str(orders)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        script = Path(__file__)
        calls = {"compare": ("compare",)}
        calls |= {f"holdout {m}": ("holdout", m) for m in MODELS}
        calls |= {f"fit {m}": ("fit", m) for m in MODELS}
        before = load_1m()
        done = interleaved(
            {
                name: partial(run_fresh, python_call(script, call, db, *rest))
                for name, (call, *rest) in calls.items()
            },
            runs,
        )
        load = machine_load(before)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    median = {name: spread(r.seconds for r in found)["median"] for name, found in done.items()}
    label = f"{n_customers:,} customers, {runs_label(runs)}, fresh process each"
    holdouts = [median[f"holdout {m}"] for m in MODELS]
    fits = {m: median[f"fit {m}"] for m in MODELS}
    rows = [
        {
            "name": f"compare: holdout comparison of {', '.join(MODELS)} ({label})",
            **columns("", [r.seconds for r in done["compare"]]),
            "peak_mb": round(max(r.peak_mb for r in done["compare"])),
            "vs_slowest_holdout": round(median["compare"] / max(holdouts), 2),
            "vs_holdouts_in_turn": round(median["compare"] / sum(holdouts), 2),
            **{f"vs_fit_{m}": round(median["compare"] / fits[m], 1) for m in MODELS},
            "calibration_end": done["compare"][0].out.get("calibration_end", ""),
            "target": "at most 2x one model's fit (met: against the slowest, Pareto/NBD)",
            "met": median["compare"] <= 2 * max(fits.values()),
            **load,
        }
    ]
    for name in [f"holdout {m}" for m in MODELS] + [f"fit {m}" for m in MODELS]:
        what = (
            "on the calibration orders, scored on the holdout"
            if "holdout" in name
            else ("on every order")
        )
        rows.append(
            {
                "name": f"{name} alone, {what} ({label})",
                **columns("", [r.seconds for r in done[name]]),
                "peak_mb": round(max(r.peak_mb for r in done[name])),
                **load,
            }
        )
    return rows


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("compare", "holdout", "fit"):
        child(*sys.argv[1:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=None)
    args = parser.parse_args()
    for row in run(args.customers, runs=args.runs):
        print(json.dumps(row))


if __name__ == "__main__":
    main()
