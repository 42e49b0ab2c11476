"""Seeded synthetic order histories at any size, for benchmarks.

Customers follow the BG/NBD story (Fader, Hardie & Lee 2005): each buys at
their own Poisson rate while alive and may drop out after any purchase.
Baskets have planted affinities (each "anchor" product has a companion bought
with it 40% of the time) and customers lean to a favourite category, so that
recommendations have something real to find. Everything is vectorised NumPy.

    python benchmarks/generate.py --customers 1000000 --out benchmarks/data/1m
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

START = np.datetime64("2024-01-01T00:00:00")
DAYS = 730  # two years of history
END = START + np.timedelta64(DAYS, "D")
CHANNELS = np.array(["search", "social", "email", "affiliate", "organic"])
CHANNEL_SHARE = np.array([0.3, 0.25, 0.1, 0.1, 0.25])
CHANNEL_CAC = np.array([38.0, 52.0, 9.0, 30.0, 2.0])  # spend per acquired customer
N_SKUS = 20_000
N_CATEGORIES = 200
ANCHOR_SHARE = 0.1  # a tenth of the products have a planted companion
COMPANION_RATE = 0.4


def _catalog(rng: np.random.Generator) -> pd.DataFrame:
    category = rng.integers(0, N_CATEGORIES, N_SKUS)
    price = np.round(np.exp(rng.normal(3.0, 0.7, N_SKUS)), 2) + 0.99
    companion = np.full(N_SKUS, -1)
    anchors = rng.choice(N_SKUS, int(N_SKUS * ANCHOR_SHARE), replace=False)
    companion[anchors] = rng.integers(0, N_SKUS, anchors.size)
    companion[companion == np.arange(N_SKUS)] = -1
    return pd.DataFrame(
        {
            "sku": [f"SKU{i:05d}" for i in range(N_SKUS)],
            "name": [f"Product {i}" for i in range(N_SKUS)],
            "category": [f"Category {c:03d}" for c in category],
            "category_id": category,
            "price": price,
            "companion": companion,
        }
    )


def generate(n_customers: int, seed: int = 0, lines: bool = True) -> dict[str, pd.DataFrame]:
    """Tables ``orders``, ``order_lines``, ``customers``, ``marketing_spend`` in the
    canonical columns, about 3 orders per customer and 3 lines per order."""
    rng = np.random.default_rng(seed)
    n = int(n_customers)

    # -- customers: acquired over the first year, each with a BG/NBD life ------------
    first = rng.uniform(0, 365, n)
    rate = rng.gamma(0.8, 1 / 60.0, n)  # purchases per day while alive
    drop = rng.beta(1.5, 4.0, n)  # chance of dropping out after each purchase
    repeats = np.minimum(rng.geometric(drop) - 1, 200)  # repeat purchases before dropping out
    owner = np.repeat(np.arange(n), repeats)
    gaps = rng.exponential(1.0, owner.size) / rate[owner]
    csum = np.cumsum(gaps)
    starts = np.concatenate(([0], np.cumsum(repeats)[:-1]))
    offset = np.repeat(csum[starts - 1] * (starts > 0), repeats) if owner.size else csum
    times = first[owner] + csum - offset
    keep = times < DAYS
    order_customer = np.concatenate((np.arange(n), owner[keep]))
    order_day = np.concatenate((first, times[keep]))
    sort = np.lexsort((order_day, order_customer))
    order_customer, order_day = order_customer[sort], order_day[sort]
    m = order_customer.size

    channel_idx = rng.choice(CHANNELS.size, n, p=CHANNEL_SHARE)
    ordered_at = START + (order_day * 86400).astype("timedelta64[s]")
    customer_ids = np.char.add("c", np.arange(n).astype(str))

    # -- baskets --------------------------------------------------------------------
    catalog = _catalog(rng)
    if lines:
        favourite = rng.integers(0, N_CATEGORIES, n)
        by_category = np.argsort(catalog["category_id"].to_numpy(), kind="stable")
        cat_start = np.searchsorted(
            catalog["category_id"].to_numpy()[by_category], np.arange(N_CATEGORIES)
        )
        cat_size = np.diff(np.append(cat_start, N_SKUS))
        n_lines = 1 + rng.poisson(1.7, m)
        line_order = np.repeat(np.arange(m), n_lines)
        popular = np.minimum(rng.zipf(1.3, line_order.size) - 1, N_SKUS - 1)
        fav = favourite[order_customer[line_order]]
        in_fav = by_category[
            cat_start[fav] + (rng.random(line_order.size) * cat_size[fav]).astype(int)
        ]
        sku = np.where(rng.random(line_order.size) < 0.5, in_fav, popular)
        companion = catalog["companion"].to_numpy()[sku]
        add = (companion >= 0) & (rng.random(sku.size) < COMPANION_RATE)
        line_order = np.concatenate((line_order, line_order[add]))
        sku = np.concatenate((sku, companion[add]))
        order_sort = np.argsort(line_order, kind="stable")
        line_order, sku = line_order[order_sort], sku[order_sort]
        quantity = 1 + (rng.random(sku.size) < 0.15)
        price = catalog["price"].to_numpy()[sku]
        gross = np.bincount(line_order, weights=quantity * price, minlength=m)
        order_lines = pd.DataFrame(
            {
                "order_id": np.char.add("o", line_order.astype(str)),
                "sku": catalog["sku"].to_numpy()[sku],
                "name": catalog["name"].to_numpy()[sku],
                "category": catalog["category"].to_numpy()[sku],
                "quantity": quantity.astype(float),
                "unit_price": price,
            }
        )
    else:
        # Gamma-Gamma spend: each customer's mean spend varies, orders vary around it
        scale = rng.gamma(4.0, 15.0, n) / 6.0
        gross = np.round(rng.gamma(6.0, scale[order_customer]), 2)
        order_lines = pd.DataFrame(
            columns=["order_id", "sku", "name", "category", "quantity", "unit_price"]
        )

    discount = np.where(rng.random(m) < 0.1, np.round(gross * 0.1, 2), 0.0)
    refunded = np.where(rng.random(m) < 0.02, gross - discount, 0.0)
    fees = np.round((gross - discount) * 0.029 + 0.30, 2)
    orders = pd.DataFrame(
        {
            "order_id": np.char.add("o", np.arange(m).astype(str)),
            "customer_id": customer_ids[order_customer],
            "ordered_at": ordered_at,
            "currency": "USD",
            "gross": np.round(gross, 2),
            "discount": discount,
            "shipping": np.where(gross < 50, 4.95, 0.0),
            "tax": np.round((gross - discount) * 0.08, 2),
            "fees": fees,
            "refunded": np.round(refunded, 2),
            "net_revenue": np.round(gross - discount - refunded - fees, 2),
            "channel": CHANNELS[channel_idx[order_customer]],
        }
    )

    customers = pd.DataFrame(
        {
            "customer_id": customer_ids,
            "email": np.char.add(customer_ids, "@example.com"),
            "name": np.char.add("Customer ", np.arange(n).astype(str)),
            "first_seen": START + (first * 86400).astype("timedelta64[s]"),
            "acquisition_channel": CHANNELS[channel_idx],
            "accepts_marketing": rng.random(n) < 0.8,
        }
    )

    # -- spend: what each channel paid per day for the customers it brought -------------
    day = first.astype(int)
    new_per_day = np.zeros((366, CHANNELS.size))
    np.add.at(new_per_day, (day, channel_idx), 1)
    noise = rng.lognormal(0.0, 0.2, new_per_day.shape)
    amount = np.round(new_per_day * CHANNEL_CAC * noise, 2)
    dd, cc = np.nonzero(amount)
    marketing_spend = pd.DataFrame(
        {
            "date": (START + dd.astype("timedelta64[D]")).astype("datetime64[D]"),
            "channel": CHANNELS[cc],
            "amount": amount[dd, cc],
        }
    )
    return {
        "orders": orders,
        "order_lines": order_lines,
        "customers": customers,
        "marketing_spend": marketing_spend,
    }


def write(n_customers: int, out: Path, seed: int = 0, lines: bool = True) -> dict[str, Path]:
    """Write the tables as Parquet files in ``out``; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, frame in generate(n_customers, seed, lines).items():
        path = out / f"{name}.parquet"
        frame.to_parquet(path, index=False)
        paths[name] = path
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-lines", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/data/synthetic"))
    args = parser.parse_args()
    for name, path in write(args.customers, args.out, args.seed, not args.no_lines).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
