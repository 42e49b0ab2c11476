"""Pareto/NBD fit time against BG/NBD on the same data.

    python benchmarks/bench_pnbd_fit.py [--customers 2000 5000 20000] [--repeats 3]

For each size, seeded simulated customer summaries in days (no store needed):

- ``pareto``: the Pareto/NBD story at CDNOW-like parameters (r = 0.55, alpha = 10.6,
  s = 0.6, beta = 11.7 in days), first purchases spread over two years: continuous T,
  so every customer is a distinct (frequency, recency, T) row;
- ``pareto, whole days``: the same with T and recency in whole days;
- ``common rate``: nearly one purchase rate for all (r = 50, alpha = 1000: 0.05 a day),
  exponential dropout at 0.005 a day: the fit runs towards r, alpha -> infinity, where
  z = |alpha - beta| / (max + t_x) is near 1 and the series for F is slow;
- ``small shop``: seven in ten customers buy once, three in a hundred buy every day or
  two (the messy store of tests/test_models_pnbd_speed.py, summarised at day grain).

Prints the best wall-clock seconds of ``--repeats`` fits of each model, the Pareto/NBD
to BG/NBD ratio and the Pareto/NBD log-likelihood, and a JSON line with every row.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

import pandas as pd


def _tests() -> Any:
    """The model tests' module, whose simulators the benchmark shares."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import test_models_pnbd_speed

    return test_models_pnbd_speed


def pareto_summary(n: int, seed: int, **parameters: Any) -> pd.DataFrame:
    """Simulated (frequency, recency, T) in days of the Pareto/NBD story
    (``simulate_pareto`` of tests/test_models_pnbd_speed.py)."""
    return _tests().simulate_pareto(n, seed, **parameters)


def small_shop_summary(n: int, seed: int) -> pd.DataFrame:
    """The small messy shop's orders, summarised with retain.summarize (days)."""
    return _tests().shop_summary(n, seed)


def best_of(repeats: int, func: Callable[[], Any]) -> tuple[float, Any]:
    """Best wall-clock seconds of ``repeats`` calls, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - start)
    return min(times), result


def _fit(model: Callable[[], Any], data: pd.DataFrame) -> Any:
    return model().fit(data)


def run(sizes: list[int], repeats: int) -> list[dict[str, Any]]:
    from retain.models import BetaGeo, ParetoNBD

    warnings.simplefilter("ignore")
    rows = []
    for n in sizes:
        cases = {
            "pareto": pareto_summary(n, 0, r=0.55, alpha=10.6, s=0.6, beta=11.7),
            "pareto, whole days": pareto_summary(
                n, 0, r=0.55, alpha=10.6, s=0.6, beta=11.7, whole_days=True
            ),
            "common rate": pareto_summary(n, 1, r=50.0, alpha=1000.0, s=0.5, beta=100.0),
            "small shop": small_shop_summary(n, 0),
        }
        for name, data in cases.items():
            bg_s, _ = best_of(repeats, partial(_fit, BetaGeo, data))
            pn_s, pn = best_of(repeats, partial(_fit, ParetoNBD, data))
            distinct = len(data[["frequency", "recency", "T"]].drop_duplicates())
            rows.append(
                {
                    "data": name,
                    "customers": len(data),
                    "distinct_rows": distinct,
                    "bgnbd_s": round(bg_s, 4),
                    "pnbd_s": round(pn_s, 4),
                    "ratio": round(pn_s / bg_s, 1),
                    "pnbd_log_likelihood": round(pn.log_likelihood_, 3),
                    "pnbd_fit": pn.fit_message_,
                }
            )
            row = rows[-1]
            print(
                f"{name:20s} {n:>7,} customers {distinct:>7,} rows  BG/NBD {bg_s:7.3f} s  "
                f"Pareto/NBD {pn_s:7.3f} s  ratio {row['ratio']:6.1f}  ({pn.fit_message_})",
                flush=True,
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, nargs="+", default=[2000, 5000, 20000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, OPENBLAS_NUM_THREADS="
        f"{os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}"
    )
    rows = run(args.customers, args.repeats)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
