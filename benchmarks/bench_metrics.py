"""Metrics benchmark: every descriptive metric on the generated orders, customers and spend.

    python benchmarks/bench_metrics.py [--customers 1000000]

Loads the Parquet tables written by ``benchmarks/generate.py`` (seed 0: orders,
customers, marketing spend) into an in-memory store (not timed), then times what
the four commands compute: ``retain metrics`` (:func:`metrics_report`),
``retain cohorts``, ``retain acquisition`` (:func:`acquisition_report`),
``retain alerts``, plus :func:`customer_metrics` for every customer. The total
is the sum of those five; the target is under 5 s at 1M customers / 3M orders.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def load_store(n_customers: int) -> Any:
    """An in-memory store holding the generated orders, customers and marketing spend."""
    from retain.store import Store
    from run import data_dir

    data = data_dir(n_customers)
    store = Store(":memory:")
    orders = str(data / "orders.parquet")
    customers = str(data / "customers.parquet")
    spend = str(data / "marketing_spend.parquet")
    store.con.execute(
        "INSERT INTO orders (order_id, customer_id, ordered_at, currency, gross, discount, "
        "shipping, tax, fees, refunded, net_revenue, channel) SELECT order_id, customer_id, "
        "ordered_at, currency, gross, discount, shipping, tax, fees, refunded, net_revenue, "
        "channel FROM read_parquet(?)",
        [orders],
    )
    store.con.execute(
        "INSERT INTO customers (customer_id, email, name, first_seen, acquisition_channel, "
        "accepts_marketing) SELECT customer_id, email, name, first_seen, acquisition_channel, "
        "accepts_marketing FROM read_parquet(?)",
        [customers],
    )
    store.con.execute(
        "INSERT INTO marketing_spend SELECT date, channel, amount FROM read_parquet(?)", [spend]
    )
    return store


def run(n_customers: int) -> list[dict]:
    from retain.metrics import (
        acquisition_report,
        alerts,
        cohorts,
        customer_metrics,
        metrics_report,
        overview,
    )
    from run import best_of, peak_mb

    store = load_store(n_customers)
    orders = store.scalar("SELECT count(*) FROM orders")
    customers = store.scalar("SELECT count(DISTINCT customer_id) FROM orders")
    margin = 0.3
    timed = {
        "retain metrics (metrics_report: overview, formula CLV, periods, top 10)": lambda: (
            metrics_report(store, "month", margin=margin)
        ),
        "retain cohorts (cohorts, monthly)": lambda: cohorts(store, "month", margin=margin),
        "retain acquisition (acquisition_report: clv_cac and cac, monthly)": lambda: (
            acquisition_report(store, "month", margin=margin)
        ),
        "retain alerts (monthly, 6-month baselines)": lambda: alerts(store, "month"),
        "customer_metrics, every customer": lambda: customer_metrics(store, margin=margin),
    }
    rows: list[dict] = []
    total = 0.0
    results: dict[str, Any] = {}
    for name, func in timed.items():
        seconds, results[name] = best_of(3, func)
        total += seconds
        rows.append({"name": f"{name} (warm)", "seconds": round(seconds, 3)})
    overview_s, headline = best_of(3, lambda: overview(store, margin=margin))
    rows.append(
        {
            "name": "overview (the dashboard's headline numbers) (warm)",
            "seconds": round(overview_s, 3),
        }
    )
    store.close()
    peak = round(peak_mb())
    for row in rows:
        row["peak_mb"] = peak
    rows.append(
        {
            "name": f"all metrics, {customers:,} customers / {orders:,} orders "
            "(sum of the five above; warm: each best of 3 after a warm-up, one process)",
            "seconds": round(total, 2),
            "peak_mb": peak,
            "target": "< 5 s",
            "retention_latest_month": round(headline["retention_rate"], 2),
            "blended_clv_cac": round(headline["clv_cac"], 2),
        }
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    args = parser.parse_args()
    for row in run(args.customers):
        print(json.dumps(row))


if __name__ == "__main__":
    main()
