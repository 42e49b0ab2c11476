"""Models benchmark: fit the models and score every customer, against lifetimes 0.11.3.

    python benchmarks/bench_models.py [--customers 1000000] [--no-peer]

Reads the store that the ingest benchmark builds from ``benchmarks/generate.py``
(seed 0) and summarises it in days (unit D, grain D, observation end
2026-01-01). On that summary it times retain's BG/NBD, Pareto/NBD and
Gamma-Gamma fits (best of 3) and the scoring of every customer (P(alive),
expected purchases in 30/90/365 days, 12-month CLV with Gamma-Gamma, next
purchase date and 25-75% window), without and with the 90% ranges of each
customer's purchases and value, and with the band of the mean CLV.

lifetimes 0.11.3 runs in its own interpreter (``benchmarks/.venv-peers``, made
by ``make bench``) on the same summary, written to Parquet: BG/NBD and
Gamma-Gamma fits, P(alive) and expected purchases, CLV over 12 months
(its monthly steps), and its Pareto/NBD fit up to 200,000 customers (beyond,
it takes many minutes). lifetimes has no next-purchase prediction.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

OBSERVATION_END = "2026-01-01"


def peer(summary_path: Path, pareto: bool) -> dict[str, Any] | None:
    """lifetimes' timings on the same summary, or None without the peer venv."""
    python = HERE / ".venv-peers" / "bin" / "python"
    if not python.exists():
        return None
    command = [str(python), str(HERE / "peers" / "models_lifetimes.py"), str(summary_path)]
    if pareto:
        command.append("--pareto")
    proc = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        print(proc.stderr, file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(n_customers: int, with_peer: bool = True) -> list[dict]:
    import retain
    from retain.models import BetaGeo, GammaGamma, ParetoNBD
    from retain.store import Store
    from run import bench_ingest, best_of, data_dir, peak_mb

    warnings.simplefilter("ignore")
    folder = data_dir(n_customers)
    db = folder / "bench.duckdb"
    if not db.exists():
        bench_ingest(n_customers)
    with Store(db, read_only=True) as store:
        orders = store.scalar("SELECT count(*) FROM orders")
        summary = retain.summarize(store, unit="D", grain="D", observation_end=OBSERVATION_END)
    customers = len(summary)
    distinct = len(summary[["frequency", "recency", "T"]].drop_duplicates())

    bg_s, bg = best_of(3, lambda: BetaGeo().fit(summary), warm_up=False)
    pn_s, pn = best_of(3, lambda: ParetoNBD().fit(summary), warm_up=False)
    gg_s, gg = best_of(3, lambda: GammaGamma().fit(summary), warm_up=False)

    def score(model: Any, interval: float | None, confidence: float | None = None) -> Any:
        return model.score(
            summary, gamma_gamma=gg, discount_rate=0.1, interval=interval, confidence=confidence
        )

    score_s, scores = best_of(3, lambda: score(bg, None), warm_up=False)
    score_ci_s, _ = best_of(3, lambda: score(bg, 0.9), warm_up=False)
    score_both_s, _ = best_of(3, lambda: score(bg, 0.9, 0.9), warm_up=False)
    pn_score_s, _ = best_of(3, lambda: score(pn, None), warm_up=False)
    pn_score_ci_s, _ = best_of(3, lambda: score(pn, 0.9), warm_up=False)
    peak = round(peak_mb())

    theirs = None
    if with_peer:
        path = folder / "models_summary.parquet"
        summary.reset_index(drop=True).to_parquet(path)
        theirs = peer(path, pareto=n_customers <= 200_000)

    def versus(row: dict, key: str, mine: float) -> dict:
        if theirs and key in theirs:
            row["lifetimes_0.11.3_s"] = round(theirs[key], 2)
            row["speedup_vs_lifetimes"] = round(theirs[key] / mine, 1)
        return row

    what = f"{customers:,} customers / {orders:,} orders, {distinct:,} distinct (x, t_x, T) rows"
    rows = [
        versus(
            {
                "name": f"BG/NBD fit, {what} (best of 3)",
                "seconds": round(bg_s, 3),
                "peak_mb": peak,
                "target": "< 0.5 s",
                "met": bg_s < 0.5,
                "params": {k: round(v, 4) for k, v in bg.params_.items()},
            },
            "bgnbd_fit_s",
            bg_s,
        ),
        versus(
            {
                "name": "Pareto/NBD fit (best of 3)",
                "seconds": round(pn_s, 3),
                "peak_mb": peak,
                "target": "< 2 s",
                "met": pn_s < 2.0,
                "params": {k: round(v, 4) for k, v in pn.params_.items()},
            },
            "pnbd_fit_s",
            pn_s,
        ),
        versus(
            {"name": "Gamma-Gamma fit (best of 3)", "seconds": round(gg_s, 3), "peak_mb": peak},
            "gamma_gamma_fit_s",
            gg_s,
        ),
        {
            "name": "score every customer with BG/NBD: P(alive), expected purchases 30/90/365 d, "
            "CLV 12 months with Gamma-Gamma, next purchase and window (best of 3)",
            "seconds": round(score_s, 3),
            "peak_mb": peak,
            "target": "< 2 s",
            "met": score_s < 2.0,
            "customers_with_a_next_purchase_date": int(scores["next_purchase_within"].sum()),
        },
        {
            "name": "the same with the 90% ranges of each customer's purchases and value "
            "(count and Gamma-Gamma spend distributions)",
            "seconds": round(score_ci_s, 3),
            "peak_mb": peak,
            "added_s": round(score_ci_s - score_s, 3),
            "target": "< 2 s added",
            "met": score_ci_s - score_s < 2.0,
        },
        {
            "name": "the same with the ranges and the 90% band of the mean CLV (delta method)",
            "seconds": round(score_both_s, 3),
            "peak_mb": peak,
        },
        {
            "name": "score every customer with Pareto/NBD (best of 3)",
            "seconds": round(pn_score_s, 3),
            "peak_mb": peak,
        },
        {
            "name": "the same with the 90% ranges of each customer's purchases and value",
            "seconds": round(pn_score_ci_s, 3),
            "peak_mb": peak,
            "added_s": round(pn_score_ci_s - pn_score_s, 3),
            "target": "< 2 s added",
            "met": pn_score_ci_s - pn_score_s < 2.0,
        },
    ]
    if theirs:
        rows[3]["lifetimes_0.11.3_s"] = round(theirs["p_alive_and_expected_s"] + theirs["clv_s"], 2)
        rows[3]["lifetimes_does"] = (
            "P(alive), expected purchases 30/90/365 d, CLV (no next purchase)"
        )
        rows[3]["speedup_vs_lifetimes"] = round(
            (theirs["p_alive_and_expected_s"] + theirs["clv_s"]) / score_s, 1
        )
        mine = bg_s + gg_s + score_s
        total = (
            theirs["bgnbd_fit_s"]
            + theirs["gamma_gamma_fit_s"]
            + theirs["p_alive_and_expected_s"]
            + theirs["clv_s"]
        )
        rows.append(
            {
                "name": "whole fit and score: BG/NBD + Gamma-Gamma fits, then every customer "
                "scored",
                "seconds": round(mine, 3),
                "peak_mb": peak,
                "lifetimes_0.11.3_s": round(total, 2),
                "lifetimes_peak_mb": round(theirs["peak_mb"]),
                "speedup_vs_lifetimes": round(total / mine, 1),
                "target": ">= 10x lifetimes",
                "met": total / mine >= 10,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--no-peer", action="store_true")
    args = parser.parse_args()
    for row in run(args.customers, with_peer=not args.no_peer):
        print(json.dumps(row))


if __name__ == "__main__":
    main()
