"""A seeded population whose buying the BTYD models do not describe, for backtests.

The BG/NBD and Pareto/NBD stories have every customer buy at a constant Poisson rate
while alive, leave at a moment nothing announces, and spend independently of when
they buy. Real stores break each of these; this population breaks all three:

- regular buyers: two in five customers buy on a rhythm of their own (gaps drawn
  from a gamma distribution of shape 6 around their own mean gap of 20 to 90 days),
  not at Poisson times; the others buy at exponential gaps;
- a seasonal peak: every November and December, each customer still alive makes an
  extra purchase with probability 0.35 (gifts), on top of their usual buying;
- decline before churn: each purchase is the last with the customer's own
  probability; the three orders before the last are smaller (0.8, 0.65 and 0.5 of
  their usual spend) and come after longer gaps (1.3, 1.6 and 2 times).

Customers arrive over the first 18 months of a three-year history (2023-01-01 to
2025-12-31). The orders have the canonical columns of ``retain ingest``.

    python benchmarks/patterns.py --customers 20000 --out benchmarks/data/patterns.parquet
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

START = pd.Timestamp("2023-01-01")
DAYS = 1095
ARRIVAL_DAYS = 548
REGULAR_SHARE = 0.4
REGULAR_SHAPE = 6.0
SEASON_EXTRA = 0.35
DECLINE_SPEND = (0.5, 0.65, 0.8)  # the last three orders before leaving, last first
DECLINE_GAP = (2.0, 1.6, 1.3)
CHANNELS = np.array(["search", "social", "email", "organic"])


def _peaks(start: float, end: float) -> list[tuple[float, float]]:
    """The November-December spans (days from START) between ``start`` and ``end``."""
    spans = []
    for year in range(START.year, START.year + DAYS // 365 + 2):
        lo = (pd.Timestamp(year=year, month=11, day=1) - START).days
        hi = (pd.Timestamp(year=year + 1, month=1, day=1) - START).days
        if hi > start and lo < end:
            spans.append((float(max(lo, start)), float(min(hi, end))))
    return spans


def generate(n_customers: int, seed: int = 0) -> pd.DataFrame:
    """The orders of ``n_customers`` customers (columns as ``retain ingest`` reads)."""
    rng = np.random.default_rng(seed)
    customers, days, spends = [], [], []
    for i in range(int(n_customers)):
        first = rng.uniform(0, ARRIVAL_DAYS)
        regular = rng.random() < REGULAR_SHARE
        mean_gap = rng.uniform(20, 90) if regular else 1.0 / rng.gamma(0.9, 1 / 45.0)
        leave = rng.beta(1.2, 5.0)
        usual = rng.gamma(4.0, 12.0)
        purchases = 1 + min(int(rng.geometric(leave)) - 1, 150)
        gaps = (
            rng.gamma(REGULAR_SHAPE, mean_gap / REGULAR_SHAPE, purchases - 1)
            if regular
            else rng.exponential(mean_gap, purchases - 1)
        )
        spend = rng.gamma(8.0, usual / 8.0, purchases)
        # the last three orders before leaving: smaller, later
        for back, (shrink, stretch) in enumerate(zip(DECLINE_SPEND, DECLINE_GAP, strict=True)):
            if purchases - 1 - back >= 1:
                spend[purchases - 1 - back] *= shrink
                gaps[purchases - 2 - back] *= stretch
        times = first + np.concatenate(([0.0], np.cumsum(gaps)))
        last = times[-1]
        # gifts: one extra purchase per season while the customer is still a customer
        extra = [
            rng.uniform(lo, hi)
            for lo, hi in _peaks(first, last)
            if hi > lo and rng.random() < SEASON_EXTRA
        ]
        when = np.concatenate((times, np.asarray(extra, dtype=float)))
        paid = np.concatenate((spend, rng.gamma(8.0, usual / 8.0, len(extra))))
        keep = when < DAYS
        customers.append(np.full(int(keep.sum()), i))
        days.append(when[keep])
        spends.append(paid[keep])
    owner = np.concatenate(customers)
    day = np.concatenate(days)
    gross = np.round(np.concatenate(spends) + 5.0, 2)
    order = np.lexsort((day, owner))
    owner, day, gross = owner[order], day[order], gross[order]
    n = owner.size
    discount = np.where(rng.random(n) < 0.15, np.round(gross * 0.1, 2), 0.0)
    refunded = np.where(rng.random(n) < 0.03, gross - discount, 0.0)
    channel = CHANNELS[rng.integers(0, CHANNELS.size, int(n_customers))]
    return pd.DataFrame(
        {
            "order_id": np.char.add("p", np.arange(n).astype(str)),
            "customer_id": np.char.add("c", owner.astype(str)),
            "ordered_at": START + pd.to_timedelta(np.round(day * 86400), unit="s"),
            "currency": "USD",
            "gross": gross,
            "discount": discount,
            "refunded": np.round(refunded, 2),
            "net_revenue": np.round(gross - discount - refunded, 2),
            "channel": channel[owner],
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/data/patterns.parquet"))
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    orders = generate(args.customers, args.seed)
    orders.to_parquet(args.out, index=False)
    print(f"{len(orders):,} orders of {args.customers:,} customers: {args.out}")


if __name__ == "__main__":
    main()
