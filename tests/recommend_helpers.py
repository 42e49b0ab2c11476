"""Small stores for the recommendation tests: hand-checked baskets, a seeded shop and
the benchmark generator's order histories."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from retain.store import Store

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from generate import generate as generate_histories
from shop import generate_shop
from store_helpers import insert_frames

# Ten orders of five products. By hand, over N = 10 baskets:
#   A in 6, B in 5, C in 4, D in 2, E in 2
#   A+B in 4 (o1 o2 o3 o7), A+C in 3 (o1 o3 o4), B+C in 3 (o1 o3 o5), D+E in 1 (o8)
#   A+B+C in 2 (o1 o3)
# c1 buys A B C, then A B again; c2 buys A B, then D E; everyone else orders once.
HAND_ORDERS = [
    ("o1", "c1", "2024-01-01", "A B C"),
    ("o2", "c2", "2024-01-02", "A B"),
    ("o3", "c3", "2024-01-03", "A B C"),
    ("o4", "c4", "2024-01-04", "A C"),
    ("o5", "c5", "2024-01-05", "B C"),
    ("o6", "c6", "2024-01-06", "D"),
    ("o7", "c1", "2024-02-01", "A B"),
    ("o8", "c2", "2024-02-02", "D E"),
    ("o9", "c7", "2024-01-09", "A"),
    ("o10", "c8", "2024-01-10", "E"),
]
HAND_NAMES = {
    "A": ("Desk, oak", "Desks", 300.0),
    "B": ("Office chair", "Chairs", 100.0),
    "C": ("Monitor", "Monitors", 200.0),
    "D": ("Yoga mat", "Fitness", 30.0),
    "E": ("Foam roller", "Fitness", 20.0),
}


def frames(
    orders: list[tuple[str, str, str, str]], names: dict[str, tuple[str, str, float]]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Orders and order lines from (order_id, customer_id, date, "SKU SKU ...") rows."""
    order_frame = pd.DataFrame(
        {
            "order_id": [o[0] for o in orders],
            "customer_id": [o[1] for o in orders],
            "ordered_at": pd.to_datetime([o[2] for o in orders]),
            "net_revenue": 10.0,
        }
    )
    lines = [(o[0], sku) for o in orders for sku in o[3].split()]
    line_frame = pd.DataFrame(lines, columns=["order_id", "sku"])
    line_frame["name"] = line_frame["sku"].map(lambda s: names[s][0])
    line_frame["category"] = line_frame["sku"].map(lambda s: names[s][1])
    line_frame["quantity"] = 1.0
    line_frame["unit_price"] = line_frame["sku"].map(lambda s: names[s][2])
    return order_frame, line_frame


def load(store: Store, orders: pd.DataFrame, lines: pd.DataFrame | None) -> Store:
    """Insert the frames into the store's orders and order_lines."""
    return insert_frames(store, {"orders": orders, "order_lines": lines})


def hand_store(path: str | Path = ":memory:") -> Store:
    """A store holding the ten hand-checked orders."""
    return load(Store(path), *frames(HAND_ORDERS, HAND_NAMES))


def shop_store(path: str | Path = ":memory:", n_customers: int = 1500, seed: int = 0) -> Store:
    """A store holding the seeded shop of ``benchmarks/shop.py`` (planted affinities)."""
    tables = generate_shop(n_customers, seed)
    return load(Store(path), tables["orders"], tables["order_lines"])


def generated_store(
    path: str | Path = ":memory:",
    n_customers: int = 20_000,
    seed: int = 0,
    *,
    deal_baskets: bool = False,
) -> Store:
    """A store holding the orders and order lines of ``benchmarks/generate.py`` (affinities
    planted within orders and across a customer's orders). With ``deal_baskets`` each
    order's lines go to another order drawn at random: every basket and best seller stays,
    and nothing links a customer's orders any more."""
    tables = generate_histories(n_customers, seed)
    orders, lines = tables["orders"], tables["order_lines"]
    if deal_baskets:
        ids = orders["order_id"].to_numpy()
        dealt = np.random.default_rng(seed).permutation(ids)
        lines = lines.assign(order_id=lines["order_id"].map(dict(zip(ids, dealt, strict=True))))
    return load(Store(path), orders, lines)


__all__ = [
    "HAND_NAMES",
    "HAND_ORDERS",
    "frames",
    "generate_histories",
    "generate_shop",
    "generated_store",
    "hand_store",
    "load",
    "shop_store",
]
