"""Segments benchmark: RFM scores, named segments and churn risk for every customer.

    python benchmarks/bench_segments.py [--customers 1000000]

Reads the store that the ingest benchmark builds from ``benchmarks/generate.py``
(seed 0). Model scores come from the store's ``customer_scores`` table when a
``retain score`` has written one; otherwise seeded stand-in scores (P(alive)
and 12-month CLV per customer) are passed in, so that the churn-risk path is
timed in full either way. The model fit itself is timed by the models
benchmark, not here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
WARM = "warm: best of 3 after a warm-up, one process"  # repeated calls; no peer here
sys.path.insert(0, str(HERE))


def stand_in_scores(customer_ids: pd.Series, seed: int = 0) -> pd.DataFrame:
    """Seeded P(alive) and 12-month CLV per customer, shaped like a model's output."""
    rng = np.random.default_rng(seed)
    n = len(customer_ids)
    return pd.DataFrame(
        {"p_alive": rng.beta(1.2, 1.0, n), "clv_12m": np.round(rng.gamma(1.5, 40.0, n), 2)},
        index=pd.Index(customer_ids.to_numpy(), name="customer_id"),
    )


def run(n_customers: int) -> list[dict]:
    from retain.segments import rfm_scores, segment_scores, segment_summary, winback_list
    from retain.store import Store
    from run import bench_ingest, best_of, data_dir, peak_mb

    db = data_dir(n_customers) / "bench.duckdb"
    if not db.exists():
        bench_ingest(n_customers)
    with Store(db, read_only=True) as store:
        orders = store.scalar("SELECT count(*) FROM orders")
        scores = None
        source = "customer_scores table"
        if not store.has_table("customer_scores"):
            ids = store.query("SELECT DISTINCT customer_id FROM orders ORDER BY customer_id")
            scores = stand_in_scores(ids["customer_id"])
            source = "seeded stand-in scores"

        rfm_s, rfm = best_of(3, lambda: rfm_scores(store))
        full_s, full = best_of(3, lambda: segment_scores(store, scores=scores))
        summary_s, _ = best_of(3, lambda: segment_summary(store, scores=scores))
        winback_s, winback = best_of(3, lambda: winback_list(store, scores=scores, limit=1000))

    customers = len(full)
    risk_counts = full["churn_risk"].value_counts().to_dict()
    segment_counts = full["segment"].value_counts().to_dict()
    common = {"peak_mb": round(peak_mb())}
    return [
        {
            "name": f"RFM + segments + churn risk, {customers:,} customers / {orders:,} orders "
            f"(segment_scores, {WARM}; model inputs: {source})",
            "seconds": round(full_s, 3),
            **common,
            "target": "< 3 s",
            "met": full_s < 3.0,
            "segments": segment_counts,
            "risk": risk_counts,
        },
        {
            "name": f"RFM scores alone, {len(rfm):,} customers (rfm_scores, {WARM})",
            "seconds": round(rfm_s, 3),
            **common,
        },
        {
            "name": f"segment summary with risk and value at stake (segment_summary, {WARM})",
            "seconds": round(summary_s, 3),
            **common,
        },
        {
            "name": f"win-back list, top {len(winback):,} by value at stake with top products "
            f"(winback_list, {WARM})",
            "seconds": round(winback_s, 3),
            **common,
        },
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    args = parser.parse_args()
    for row in run(args.customers):
        print(json.dumps(row))


if __name__ == "__main__":
    main()
