"""Small stores for the metrics tests, built from rows written out by hand."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from retain.store import Store

Order = tuple  # (customer_id, "YYYY-MM-DD[ HH:MM:SS]", net_revenue[, channel])

# The retention example, checked by hand in test_metrics_retention.
# A: buys in Jan, Feb, Mar; B: Jan only; C: Feb, lapses, back in Apr; D: 1 March only
RETENTION_EXAMPLE: list[Order] = [
    ("A", "2024-01-10", 10),
    ("A", "2024-02-15", 20),
    ("A", "2024-03-20", 30),
    ("B", "2024-01-20", 40),
    ("C", "2024-02-05", 50),
    ("C", "2024-04-10", 60),
    ("D", "2024-03-01", 70),
]


def store_with(
    orders: Sequence[Order],
    *,
    customers: Sequence[tuple[str, str | None]] = (),
    spend: Sequence[tuple[str, str, float]] = (),
) -> Store:
    """An in-memory store holding these orders, customers (id, acquisition channel)
    and marketing spend (date, channel, amount)."""
    store = Store(":memory:")
    frame = pd.DataFrame(
        [
            {
                "order_id": f"o{i}",
                "customer_id": row[0],
                "ordered_at": pd.Timestamp(row[1]),
                "net_revenue": float(row[2]),
                "channel": row[3] if len(row) > 3 else None,
            }
            for i, row in enumerate(orders)
        ]
    )
    insert_orders(store, frame)
    for customer_id, channel in customers:
        store.con.execute(
            "INSERT INTO customers (customer_id, acquisition_channel) VALUES (?, ?)",
            [customer_id, channel],
        )
    for day, channel, amount in spend:
        store.con.execute(
            "INSERT INTO marketing_spend VALUES (CAST(? AS DATE), ?, ?)", [day, channel, amount]
        )
    return store


def insert_orders(store: Store, frame: pd.DataFrame) -> None:
    """Append orders (order_id, customer_id, ordered_at, net_revenue[, channel])."""
    if "channel" not in frame:
        frame = frame.assign(channel=None)
    store.con.register("new_orders", frame)
    store.con.execute(
        "INSERT INTO orders (order_id, customer_id, ordered_at, net_revenue, channel) "
        "SELECT CAST(order_id AS VARCHAR), CAST(customer_id AS VARCHAR), "
        "CAST(ordered_at AS TIMESTAMP), net_revenue, CAST(channel AS VARCHAR) FROM new_orders"
    )
    store.con.unregister("new_orders")


def simulate_orders(
    months: int = 36,
    new_per_month: int = 300,
    seed: int = 0,
    plant: dict[str, float] | None = None,
) -> pd.DataFrame:
    """Steady monthly buying from 2021-01, with optional drops planted in the last month.

    Each month ``new_per_month`` customers arrive; a customer stays for a geometric
    number of months (mean 10), buys in their first month and with probability 0.35
    in each later one, 1 + Poisson(0.3) orders when buying, order values lognormal
    (about 40). ``plant`` lowers, in the last month only: ``new_customers`` (factor
    on arrivals), ``buy_rate`` (factor on 0.35), ``extra_orders`` (factor on 0.3),
    ``order_value`` (factor on values).
    """
    import numpy as np

    plant = plant or {}
    rng = np.random.default_rng(seed)
    last = months - 1
    arrivals = np.full(months, new_per_month)
    arrivals[last] = round(new_per_month * plant.get("new_customers", 1.0))
    first_month = np.repeat(np.arange(months), arrivals)
    n = first_month.size
    stay = rng.geometric(0.1, n)
    spans = np.minimum(stay, months - first_month)
    customer = np.repeat(np.arange(n), spans)
    month = first_month[customer] + (
        np.arange(customer.size) - np.repeat(np.cumsum(spans) - spans, spans)
    )
    buy_rate = np.where(month == last, 0.35 * plant.get("buy_rate", 1.0), 0.35)
    buys = (month == first_month[customer]) | (rng.random(customer.size) < buy_rate)
    customer, month = customer[buys], month[buys]
    extra = np.where(month == last, 0.3 * plant.get("extra_orders", 1.0), 0.3)
    count = 1 + rng.poisson(extra)
    customer, month = np.repeat(customer, count), np.repeat(month, count)
    value = rng.lognormal(3.5, 0.6, customer.size)
    value = np.where(month == last, value * plant.get("order_value", 1.0), value)
    month_start = (np.datetime64("2021-01", "M") + month.astype("timedelta64[M]")).astype(
        "datetime64[s]"
    )
    offset = rng.integers(0, 28 * 86400, customer.size).astype("timedelta64[s]")
    return pd.DataFrame(
        {
            "order_id": np.arange(customer.size).astype(str),
            "customer_id": customer.astype(str),
            "ordered_at": pd.to_datetime(month_start + offset),
            "net_revenue": np.round(value, 2),
        }
    )
