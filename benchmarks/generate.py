"""Seeded synthetic order histories at any size, for benchmarks.

Customers follow the BG/NBD story (Fader, Hardie & Lee 2005): each buys at
their own Poisson rate while alive and may drop out after any purchase.
Their baskets carry affinities planted the way real shops have them, so that
recommendations have something real to find:

- taste: each customer has a favourite category, drawn once, that half of
  their products come from; within a category a few products are the
  favourites (a product's share falls as 1 / its rank there);
- bought together: a tenth of the products have a companion bought in the
  same order 40% of the time;
- bought later: a fifth of the durable products have a follow-up (desk, then
  chair) that 35% of their buyers who order again buy in their next order;
- replenished: the products of a tenth of the categories are consumables,
  each with its own interval (20 to 90 days); a buyer keeps using one for a
  while (a year on average) and buys it again when an order comes after
  running low.

The rest is drawn from a Zipf law over the whole catalogue (best sellers).
Everything is vectorised NumPy.

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
BASE_LINES = 1.55  # products an order holds besides its first, before the planted ones (Poisson)
TASTE_SHARE = 0.5  # of those, the share from the customer's favourite category
CONSUMABLE_CATEGORIES = 20
REPLENISH_DAYS = (20.0, 90.0)  # range of the consumables' intervals
KEEP_USING_DAYS = 365.0  # mean time a customer keeps using a consumable
FOLLOW_UP_SHARE = 0.2  # of the durable products, those with a follow-up
FOLLOW_UP_RATE = 0.35


def _catalog(rng: np.random.Generator) -> pd.DataFrame:
    category = rng.integers(0, N_CATEGORIES, N_SKUS)
    price = np.round(np.exp(rng.normal(3.0, 0.7, N_SKUS)), 2) + 0.99
    companion = np.full(N_SKUS, -1)
    anchors = rng.choice(N_SKUS, int(N_SKUS * ANCHOR_SHARE), replace=False)
    companion[anchors] = rng.integers(0, N_SKUS, anchors.size)
    companion[companion == np.arange(N_SKUS)] = -1
    # each product's rank among its category's products, in a random order
    by_category = np.lexsort((rng.random(N_SKUS), category))
    cat_start = np.searchsorted(category[by_category], np.arange(N_CATEGORIES))
    taste_rank = np.empty(N_SKUS, dtype=np.int64)
    taste_rank[by_category] = np.arange(N_SKUS) - cat_start[category[by_category]]
    consumable = np.isin(category, rng.choice(N_CATEGORIES, CONSUMABLE_CATEGORIES, replace=False))
    replenish_days = np.where(consumable, rng.uniform(*REPLENISH_DAYS, N_SKUS), np.nan)
    follow_up = np.full(N_SKUS, -1)
    durable = np.flatnonzero(~consumable)
    leads = rng.choice(durable, int(durable.size * FOLLOW_UP_SHARE), replace=False)
    follow_up[leads] = rng.integers(0, N_SKUS, leads.size)
    follow_up[follow_up == np.arange(N_SKUS)] = -1
    return pd.DataFrame(
        {
            "sku": [f"SKU{i:05d}" for i in range(N_SKUS)],
            "name": [f"Product {i}" for i in range(N_SKUS)],
            "category": [f"Category {c:03d}" for c in category],
            "category_id": category,
            "price": price,
            "companion": companion,
            "taste_rank": taste_rank,
            "consumable": consumable,
            "replenish_days": replenish_days,
            "follow_up": follow_up,
        }
    )


def _baskets(
    rng: np.random.Generator,
    catalog: pd.DataFrame,
    order_customer: np.ndarray,
    order_day: np.ndarray,
    n_customers: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Order lines as (order, product) codes, one per product and order, sorted.
    ``order_customer`` and ``order_day`` (days since START) are sorted by customer,
    then time."""
    m = order_customer.size
    category = catalog["category_id"].to_numpy()
    taste_rank = catalog["taste_rank"].to_numpy()

    # taste: a product of the favourite category, drawn with weight 1 / rank; the
    # categories' cumulative weights laid end to end (category c in [c, c + 1))
    favourite = rng.integers(0, N_CATEGORIES, n_customers)
    by_taste = np.lexsort((taste_rank, category))
    cat_sorted = category[by_taste]
    cat_start = np.searchsorted(cat_sorted, np.arange(N_CATEGORIES))
    cat_end = np.append(cat_start[1:], N_SKUS)
    weight = 1.0 / (taste_rank[by_taste] + 1.0)
    total = np.cumsum(weight)
    before = np.where(cat_start > 0, total[np.maximum(cat_start - 1, 0)], 0.0)
    cdf = cat_sorted + (total - before[cat_sorted]) / (total[cat_end - 1] - before)[cat_sorted]

    n_lines = 1 + rng.poisson(BASE_LINES, m)
    line_order = np.repeat(np.arange(m), n_lines)
    popular = np.minimum(rng.zipf(1.3, line_order.size) - 1, N_SKUS - 1)
    fav = favourite[order_customer[line_order]]
    at = np.searchsorted(cdf, fav + rng.random(line_order.size), side="right")
    in_taste = by_taste[np.minimum(at, cat_end[fav] - 1)]
    sku = np.where(rng.random(line_order.size) < TASTE_SHARE, in_taste, popular)

    # bought together: the companion in the same order
    companion = catalog["companion"].to_numpy()[sku]
    add = (companion >= 0) & (rng.random(sku.size) < COMPANION_RATE)
    line_order = np.concatenate((line_order, line_order[add]))
    sku = np.concatenate((sku, companion[add]))

    # bought later: the follow-up in the customer's next order
    follow_up = catalog["follow_up"].to_numpy()[sku]
    has_next = np.append(order_customer[1:] == order_customer[:-1], False)
    add = (follow_up >= 0) & has_next[line_order] & (rng.random(sku.size) < FOLLOW_UP_RATE)
    line_order = np.concatenate((line_order, line_order[add] + 1))
    sku = np.concatenate((sku, follow_up[add]))

    # replenished: every later order placed while the customer still uses a
    # consumable may hold it again, the likelier the longer since their last order
    source = np.flatnonzero(catalog["consumable"].to_numpy()[sku])
    # orders on one increasing time line, customer c's at c * 2 * DAYS + day, so
    # that one search counts the orders a customer places while still using it
    timeline = order_customer * (2.0 * DAYS) + order_day
    bought_at = line_order[source]
    until = np.minimum(
        timeline[bought_at] + rng.exponential(KEEP_USING_DAYS, source.size),
        order_customer[bought_at] * (2.0 * DAYS) + DAYS,  # not into the next customer's
    )
    later = np.searchsorted(timeline, until, side="right") - 1 - bought_at
    step = np.arange(int(later.sum())) - np.repeat(np.cumsum(later) - later, later)
    at_order = np.repeat(bought_at, later) + 1 + step
    kept = np.repeat(sku[source], later)
    since_last = order_day[at_order] - order_day[at_order - 1]
    interval = catalog["replenish_days"].to_numpy()[kept]
    again = rng.random(kept.size) < -np.expm1(-since_last / interval)
    line_order = np.concatenate((line_order, at_order[again]))
    sku = np.concatenate((sku, kept[again]))

    # one line per product and order (a sort: np.unique's hashing is slower here)
    key = np.sort(line_order * N_SKUS + sku)
    key = key[np.insert(key[1:] != key[:-1], 0, True)]
    return key // N_SKUS, key % N_SKUS


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
    # the catalogue and the baskets draw from streams of their own: a seed gives the
    # same catalogue at any number of customers
    catalog_seed, basket_seed = np.random.SeedSequence(seed).spawn(2)
    catalog = _catalog(np.random.default_rng(catalog_seed))
    if lines:
        basket_rng = np.random.default_rng(basket_seed)
        line_order, sku = _baskets(basket_rng, catalog, order_customer, order_day, n)
        quantity = 1 + (basket_rng.random(sku.size) < 0.15)
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
