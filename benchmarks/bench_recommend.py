"""Recommendations benchmark: rules and tables, cart latency, personal lists, evaluation.

    python benchmarks/bench_recommend.py [--customers 1000000]

Reads the orders and order lines that ``benchmarks/generate.py`` writes (seed 0;
1M customers give about 3.2M orders, 9M lines and 20k SKUs) into a store of its
own, ``recommend.duckdb`` beside them (made once, not timed). Peak memory is the
process's maximum resident set when the row was measured: the first row's is
the build's alone. The evaluation runs on the generator's data (affinities
planted within orders and across a customer's orders: taste, follow-ups,
consumables) and on the seeded shop of ``benchmarks/shop.py`` (each customer
walks through the stages of one interest).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from retain.recommend import Recommender
    from retain.store import Store

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def recommend_store(n_customers: int) -> Path:
    """The benchmark data in a store of its own: orders and order lines."""
    from retain.store import Store
    from run import data_dir

    data = data_dir(n_customers)
    db = data / "recommend.duckdb"
    if db.exists():
        return db
    partial = data / "recommend.duckdb.partial"
    partial.unlink(missing_ok=True)
    with Store(partial) as store:
        store.con.execute(
            "INSERT INTO orders (order_id, customer_id, ordered_at, currency, gross, net_revenue, "
            "channel) SELECT order_id, customer_id, ordered_at, currency, gross, net_revenue, "
            "channel FROM read_parquet(?)",
            [str(data / "orders.parquet")],
        )
        store.con.execute(
            "INSERT INTO order_lines SELECT order_id, sku, name, category, quantity, unit_price "
            "FROM read_parquet(?)",
            [str(data / "order_lines.parquet")],
        )
    partial.rename(db)
    return db


def cart_latency(rec: Recommender, carts: list[list[str]]) -> tuple[float, float]:
    """p50 and p99 milliseconds of recommend_for_cart(cart, 10) over the carts."""
    times = np.empty(len(carts))
    for i, cart in enumerate(carts):
        start = time.perf_counter()
        rec.recommend_for_cart(cart, 10)
        times[i] = time.perf_counter() - start
    return float(np.percentile(times, 50) * 1e3), float(np.percentile(times, 99) * 1e3)


def sample_carts(store: Store, n: int, seed: int = 0) -> list[list[str]]:
    """Carts of 1 to 4 products taken from real orders."""
    frame = store.query(
        "SELECT order_id, list(sku) AS skus FROM order_lines "
        "WHERE order_id IN (SELECT order_id FROM orders "
        f"USING SAMPLE reservoir({int(n)} ROWS) REPEATABLE (7)) GROUP BY order_id"
    )
    rng = np.random.default_rng(seed)
    return [list(skus[: int(rng.integers(1, 5))]) for skus in frame["skus"] if len(skus)]


def evaluation_row(name: str, result: dict, seconds: float, peak: float) -> dict:
    nb, cart = result["next_basket"], result["cart"]
    return {
        "name": name,
        "seconds": round(seconds, 2),
        "peak_mb": round(peak),
        "customers_evaluated": result["evaluated"],
        "next_order_hit_rate@10": nb["model"]["hit_rate"],
        "most_popular_hit_rate@10": nb["most_popular"]["hit_rate"],
        "next_order_ratio": nb["hit_rate_ratio"],
        "next_order_coverage": nb["model"]["coverage"],
        "most_popular_coverage": nb["most_popular"]["coverage"],
        "cart_hit_rate@10": cart["model"]["hit_rate"],
        "cart_most_popular_hit_rate@10": cart["most_popular"]["hit_rate"],
        "cart_ratio": cart["hit_rate_ratio"],
    }


def run(n_customers: int) -> list[dict]:
    from retain.recommend import (
        Recommender,
        association_rules,
        build,
        evaluate,
        load_baskets,
        recommend_for_customer,
        recommend_for_customers,
    )
    from retain.store import Store
    from run import peak_mb
    from shop import generate_shop

    db = recommend_store(n_customers)
    rows: list[dict] = []
    with Store(db) as store:
        store.con.execute("SET enable_progress_bar = false")
        orders = store.scalar("SELECT count(*) FROM orders")
        lines = store.scalar("SELECT count(*) FROM order_lines")

        start = time.perf_counter()
        rec = build(store)
        build_s = time.perf_counter() - start
        build_peak = peak_mb()
        rows.append(
            {
                "name": f"rules and tables from {orders:,} orders / {lines:,} lines / "
                f"{rec.n_items:,} SKUs (build: pairs, triples, bundles, also-bought, "
                "bought-later, upsell, replenishment)",
                "seconds": round(build_s, 2),
                "peak_mb": round(build_peak),
                "target": "< 30 s, < 4 GB",
                "met": build_s < 30 and build_peak < 4096,
                "also_bought_links": int(rec.basket.other.size),
                "bought_later_links": int(rec.later.other.size),
                "upsell_links": int(rec.upsell_table.other.size),
                "bundles_kept": len(rec.bundle_list),
            }
        )

        start = time.perf_counter()
        rules = association_rules(store)
        rows.append(
            {
                "name": "association rules, pairs and triples (min support 1e-5, "
                "at least 5 orders)",
                "seconds": round(time.perf_counter() - start, 2),
                "peak_mb": round(peak_mb()),
                "rules": len(rules),
                "triple_rules": int((rules["size"] == 3).sum()),
            }
        )

        start = time.perf_counter()
        rec.save(store)
        save_s = time.perf_counter() - start
        start = time.perf_counter()
        rec = Recommender.from_store(store)
        load_s = time.perf_counter() - start
        rows.append(
            {
                "name": "save the tables in the store / load them at start (from_store)",
                "seconds": round(load_s, 2),
                "save_seconds": round(save_s, 2),
                "peak_mb": round(peak_mb()),
            }
        )

        carts = sample_carts(store, 10_000)
        cart_latency(rec, carts[:500])  # warm up
        p50, p99 = cart_latency(rec, carts)
        rows.append(
            {
                "name": f"cart recommendation, {len(carts):,} carts of 1-4 products from "
                "real orders, k = 10 (recommend_for_cart)",
                "seconds": round(p99 / 1e3, 5),
                "peak_mb": round(peak_mb()),
                "p50_ms": round(p50, 3),
                "p99_ms": round(p99, 3),
                "target": "p99 < 5 ms",
                "met": p99 < 5.0,
            }
        )

        ids = store.query(
            "SELECT customer_id FROM orders USING SAMPLE reservoir(50 ROWS) REPEATABLE (3)"
        )["customer_id"].tolist()
        times = []
        for customer_id in ids:
            start = time.perf_counter()
            recommend_for_customer(store, customer_id, 10, recommender=rec)
            times.append(time.perf_counter() - start)
        rows.append(
            {
                "name": "personal recommendation for one customer, history read from the "
                "store (recommend_for_customer, median of 50)",
                "seconds": round(float(np.median(times)), 4),
                "peak_mb": round(peak_mb()),
            }
        )

        start = time.perf_counter()
        every = recommend_for_customers(store, None, 5, recommender=rec)
        rows.append(
            {
                "name": f"personal top 5 for all {every['customer_id'].nunique():,} customers "
                "(recommend_for_customers, what the service loads at start)",
                "seconds": round(time.perf_counter() - start, 2),
                "peak_mb": round(peak_mb()),
            }
        )
        del every

        baskets = load_baskets(store)
    start = time.perf_counter()
    result = evaluate(baskets, k=10, sample=20_000)
    rows.append(
        evaluation_row(
            "evaluation on benchmarks/generate.py data: last order hidden, 20,000 customers "
            "(tables relearned without the hidden orders)",
            result,
            time.perf_counter() - start,
            peak_mb(),
        )
    )
    del baskets

    shop = generate_shop(20_000, seed=0)
    with Store(":memory:") as store:
        for table, frame in (("orders", shop["orders"]), ("order_lines", shop["order_lines"])):
            store.con.register("incoming", frame)
            columns = ", ".join(frame.columns)
            store.con.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM incoming")
            store.con.unregister("incoming")
        start = time.perf_counter()
        result = evaluate(store, k=10, sample=20_000)
        rows.append(
            evaluation_row(
                "evaluation on benchmarks/shop.py (20,000 customers, planted affinities across "
                "orders): last order hidden",
                result,
                time.perf_counter() - start,
                peak_mb(),
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    args = parser.parse_args()
    for row in run(args.customers):
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
