"""Small hand-made stores for the segment tests."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from retain.store import Store
from store_helpers import insert_frames


def orders_frame(rows: Iterable[tuple[str, str, float]]) -> pd.DataFrame:
    """Orders from (customer_id, date, net_revenue) triples, one order per triple."""
    frame = pd.DataFrame(list(rows), columns=["customer_id", "ordered_at", "net_revenue"])
    frame["ordered_at"] = pd.to_datetime(frame["ordered_at"], format="ISO8601")
    frame.insert(0, "order_id", [f"o{i}" for i in range(len(frame))])
    return frame


def build_store(
    orders: pd.DataFrame,
    *,
    customers: pd.DataFrame | None = None,
    lines: pd.DataFrame | None = None,
    path: str | Path = ":memory:",
) -> Store:
    """A store holding the given orders, customers and order lines."""
    return insert_frames(
        Store(path), {"orders": orders, "customers": customers, "order_lines": lines}
    )


def random_orders(n_customers: int, seed: int) -> pd.DataFrame:
    """Independent recency, frequency and spend per customer, so every score combination occurs."""
    rng = np.random.default_rng(seed)
    n_orders = rng.integers(1, 25, n_customers)
    last_day = rng.integers(0, 700, n_customers)  # days after 2023-01-01 of the last order
    spend = rng.gamma(2.0, 30.0, n_customers)
    owner = np.repeat(np.arange(n_customers), n_orders)
    position = np.arange(owner.size) - np.repeat(np.cumsum(n_orders) - n_orders, n_orders)
    # orders every 3 days back from the last one, spend split evenly
    day = last_day[owner] - 3 * position
    return pd.DataFrame(
        {
            "order_id": [f"o{i}" for i in range(owner.size)],
            "customer_id": [f"c{i}" for i in owner],
            "ordered_at": pd.Timestamp("2023-01-01") + pd.to_timedelta(day, unit="D"),
            "net_revenue": np.round(spend[owner] / n_orders[owner], 2),
        }
    )
