"""A seeded small shop whose order lines carry affinities a recommender should find.

Each customer has one interest (home office, wok cooking, coffee, garden, baby,
fitness) and walks through its stages, one stage an order: a first order with the
basics (a desk and a basic chair), the second with what goes next (a monitor
and an arm), the third with upgrades (an ergonomic chair: pricier, same
category), while consumables (coffee beans, diapers, plant food) come back in
most orders, about every 40 days. Some products come in near-duplicate variants (a carbon steel or
a cast iron wok; a customer has one of them). Every order may also hold a few
gifts drawn from a long tail, the popular ones more often. Planted, therefore:

- bought together: each stage's products (desk + chair, wok + spatula);
- bought later: the next stage's products, and the upgrade (upsell);
- replenishment: consumables re-bought in most orders, durables never;
- near-duplicates: variants share a name stem within their category.

Everything is vectorised NumPy and pandas, no loop over customers or orders.

    python benchmarks/shop.py --customers 5000 --out demo_shop   # orders.csv, lines.csv
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

START = pd.Timestamp("2024-01-01")

# interest, stage (0 first order, 1 second, 2 third, 3 later), variant (-1 any),
# sku, name, category, price, probability of being in an order at that stage
PLAN = [
    # home office
    ("office", 0, -1, "DESK-OAK", "Desk, oak", "Desks", 349.0, 0.75),
    ("office", 0, -1, "CHAIR-BASIC", "Office chair, basic", "Chairs", 89.0, 0.65),
    ("office", 0, -1, "DESK-MAT", "Desk mat, felt", "Desk accessories", 24.0, 0.3),
    ("office", 1, -1, "MONITOR-27", "Monitor, 27 inch", "Monitors", 279.0, 0.6),
    ("office", 1, -1, "MONITOR-ARM", "Monitor arm", "Desk accessories", 69.0, 0.5),
    ("office", 1, -1, "LAMP-LED", "Desk lamp, LED", "Lighting", 45.0, 0.35),
    ("office", 2, -1, "CHAIR-ERGO", "Office chair, ergonomic", "Chairs", 429.0, 0.35),
    ("office", 2, -1, "CABLE-TRAY", "Cable tray", "Desk accessories", 19.0, 0.3),
    ("office", 1, -1, "NOTEBOOK-A5", "Notebook, A5 dotted", "Stationery", 9.5, 0.3),
    ("office", 2, -1, "NOTEBOOK-A5", "Notebook, A5 dotted", "Stationery", 9.5, 0.45),
    ("office", 3, -1, "NOTEBOOK-A5", "Notebook, A5 dotted", "Stationery", 9.5, 0.45),
    # wok cooking
    ("kitchen", 0, 0, "WOK-CS", "Wok, carbon steel", "Cookware", 59.0, 0.7),
    ("kitchen", 0, 1, "WOK-CI", "Wok, cast iron", "Cookware", 79.0, 0.7),
    ("kitchen", 0, -1, "SPATULA-BAMBOO", "Spatula, bamboo", "Utensils", 8.0, 0.55),
    ("kitchen", 0, -1, "WOK-RING", "Wok ring", "Cookware accessories", 12.0, 0.25),
    ("kitchen", 1, -1, "KNIFE-CHEF", "Chef's knife, 20 cm", "Knives", 65.0, 0.5),
    ("kitchen", 1, -1, "BOARD-WALNUT", "Cutting board, walnut", "Utensils", 49.0, 0.4),
    ("kitchen", 2, -1, "KNIFE-CHEF-PRO", "Chef's knife, 20 cm Damascus", "Knives", 189.0, 0.3),
    ("kitchen", 1, -1, "OIL-SESAME", "Sesame oil", "Pantry", 6.5, 0.45),
    ("kitchen", 2, -1, "OIL-SESAME", "Sesame oil", "Pantry", 6.5, 0.6),
    ("kitchen", 3, -1, "OIL-SESAME", "Sesame oil", "Pantry", 6.5, 0.6),
    ("kitchen", 2, -1, "SOY-SAUCE", "Soy sauce, aged", "Pantry", 7.9, 0.4),
    ("kitchen", 3, -1, "SOY-SAUCE", "Soy sauce, aged", "Pantry", 7.9, 0.4),
    # coffee
    ("coffee", 0, -1, "ESPRESSO-BASIC", "Espresso machine, basic", "Coffee machines", 199.0, 0.7),
    ("coffee", 0, -1, "BEANS-HOUSE", "Coffee beans, house blend", "Coffee", 14.0, 0.8),
    ("coffee", 0, -1, "MILK-JUG", "Milk jug, steel", "Coffee accessories", 18.0, 0.3),
    ("coffee", 1, -1, "GRINDER-BURR", "Grinder, burr", "Coffee accessories", 129.0, 0.45),
    ("coffee", 1, -1, "BEANS-HOUSE", "Coffee beans, house blend", "Coffee", 14.0, 0.85),
    ("coffee", 2, -1, "BEANS-HOUSE", "Coffee beans, house blend", "Coffee", 14.0, 0.85),
    ("coffee", 3, -1, "BEANS-HOUSE", "Coffee beans, house blend", "Coffee", 14.0, 0.85),
    (
        "coffee",
        2,
        -1,
        "ESPRESSO-DUAL",
        "Espresso machine, dual boiler",
        "Coffee machines",
        1290.0,
        0.2,
    ),
    ("coffee", 2, -1, "DESCALER", "Descaler", "Coffee accessories", 11.0, 0.35),
    ("coffee", 3, -1, "DESCALER", "Descaler", "Coffee accessories", 11.0, 0.35),
    # garden
    ("garden", 0, -1, "HOSE-25", "Garden hose, 25 m", "Hoses", 39.0, 0.65),
    ("garden", 0, -1, "HOSE-REEL", "Hose reel", "Garden tools", 55.0, 0.4),
    ("garden", 1, -1, "SHEARS", "Pruning shears", "Garden tools", 29.0, 0.5),
    ("garden", 1, -1, "GLOVES-GARDEN", "Gardening gloves", "Garden clothing", 15.0, 0.4),
    ("garden", 1, -1, "PLANT-FOOD", "Plant food, 1 l", "Garden care", 9.0, 0.4),
    ("garden", 2, -1, "PLANT-FOOD", "Plant food, 1 l", "Garden care", 9.0, 0.65),
    ("garden", 3, -1, "PLANT-FOOD", "Plant food, 1 l", "Garden care", 9.0, 0.65),
    ("garden", 2, -1, "SEEDS-TOMATO", "Seeds, tomato", "Garden care", 3.5, 0.35),
    ("garden", 3, -1, "SEEDS-TOMATO", "Seeds, tomato", "Garden care", 3.5, 0.35),
    ("garden", 2, -1, "HOSE-50", "Garden hose, 50 m", "Hoses", 69.0, 0.2),
    # baby
    ("baby", 0, -1, "STROLLER", "Stroller", "Baby gear", 399.0, 0.6),
    ("baby", 0, -1, "CAR-SEAT", "Car seat", "Baby gear", 229.0, 0.5),
    ("baby", 0, -1, "DIAPERS-3", "Diapers, size 3", "Baby care", 24.0, 0.5),
    ("baby", 1, -1, "DIAPERS-3", "Diapers, size 3", "Baby care", 24.0, 0.85),
    ("baby", 1, -1, "WIPES", "Baby wipes", "Baby care", 4.5, 0.6),
    ("baby", 2, -1, "DIAPERS-3", "Diapers, size 3", "Baby care", 24.0, 0.85),
    ("baby", 3, -1, "DIAPERS-3", "Diapers, size 3", "Baby care", 24.0, 0.85),
    ("baby", 2, -1, "WIPES", "Baby wipes", "Baby care", 4.5, 0.6),
    ("baby", 3, -1, "WIPES", "Baby wipes", "Baby care", 4.5, 0.6),
    ("baby", 2, -1, "HIGH-CHAIR", "High chair", "Baby furniture", 149.0, 0.35),
    # fitness
    ("fitness", 0, -1, "YOGA-MAT", "Yoga mat", "Fitness gear", 35.0, 0.65),
    ("fitness", 0, -1, "DUMBBELL-5", "Dumbbells, 5 kg", "Weights", 39.0, 0.45),
    ("fitness", 1, -1, "BANDS", "Resistance bands", "Fitness gear", 19.0, 0.45),
    ("fitness", 1, -1, "FOAM-ROLLER", "Foam roller", "Fitness gear", 25.0, 0.35),
    ("fitness", 1, -1, "PROTEIN", "Protein powder, vanilla", "Nutrition", 32.0, 0.4),
    ("fitness", 2, -1, "PROTEIN", "Protein powder, vanilla", "Nutrition", 32.0, 0.65),
    ("fitness", 3, -1, "PROTEIN", "Protein powder, vanilla", "Nutrition", 32.0, 0.65),
    ("fitness", 2, -1, "DUMBBELL-10", "Dumbbells, 10 kg", "Weights", 69.0, 0.3),
]
INTERESTS = ["office", "kitchen", "coffee", "garden", "baby", "fitness"]
GIFT_KINDS = [
    ("MUG", "Mug", "Home", 12.0),
    ("CANDLE", "Candle", "Home", 16.0),
    ("CARD", "Greeting card", "Stationery", 3.5),
    ("SOCKS", "Socks", "Clothing", 9.0),
    ("TOTE", "Tote bag", "Bags", 14.0),
]
GIFT_STYLES = [
    "blue", "red", "green", "black", "white", "grey", "yellow", "striped",
    "dotted", "floral", "large", "small", "linen", "vanilla", "cedar", "citrus",
    "forest", "ocean", "sunset", "classic",
]  # fmt: skip


def gifts() -> pd.DataFrame:
    """The long tail: 100 gift products in 5 families of 20 variants each."""
    kinds = pd.DataFrame(GIFT_KINDS, columns=["code", "kind", "category", "price"])
    styles = pd.DataFrame({"style": GIFT_STYLES})
    frame = kinds.merge(styles, how="cross")
    frame["sku"] = frame["code"] + "-" + frame["style"].str.upper()
    frame["name"] = frame["kind"] + ", " + frame["style"]
    return frame[["sku", "name", "category", "price"]]


def generate_shop(n_customers: int, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Tables ``orders`` (order_id, customer_id, ordered_at, gross, net_revenue) and
    ``order_lines`` (order_id, sku, name, category, quantity, unit_price), about 3.5
    orders per customer, plus ``customers`` (customer_id, interest)."""
    rng = np.random.default_rng(seed)
    n = int(n_customers)
    interest = rng.integers(0, len(INTERESTS), n)
    variant = rng.integers(0, 2, n)
    n_orders = 1 + rng.poisson(2.5, n)
    owner = np.repeat(np.arange(n), n_orders)
    position = np.arange(owner.size) - np.repeat(np.cumsum(n_orders) - n_orders, n_orders)
    gaps = rng.gamma(4.0, 10.0, owner.size) * (position > 0)  # 40 days on average
    start = rng.uniform(0, 365, n)
    day = start[owner] + _cumsum_within(gaps, n_orders)
    orders = pd.DataFrame(
        {
            "order": np.arange(owner.size),
            "customer": owner,
            "interest": interest[owner],
            "variant": variant[owner],
            "stage": np.minimum(position, 3),
        }
    )

    # stage products: every plan row of the order's interest, stage and variant, drawn
    plan = pd.DataFrame(
        PLAN,
        columns=["interest", "stage", "variant", "sku", "name", "category", "price", "p"],
    )
    plan["interest"] = plan["interest"].map({k: i for i, k in enumerate(INTERESTS)})
    candidates = orders.merge(plan, on=["interest", "stage"], suffixes=("", "_plan"))
    fits = (candidates["variant_plan"] < 0) | (candidates["variant_plan"] == candidates["variant"])
    candidates = candidates[fits]
    drawn = candidates[rng.random(len(candidates)) < candidates["p"].to_numpy()]
    planned = drawn[["order", "sku", "name", "category", "price"]]

    # gifts: a few per order, the popular ones more often (weight 1 / (rank + 3)), and
    # one for any order left empty
    tail = gifts()
    weight = 1.0 / (rng.permutation(len(tail)) + 3.0)
    n_gifts = rng.poisson(0.6, owner.size)
    empty = ~np.isin(np.arange(owner.size), planned["order"].to_numpy())
    n_gifts = np.maximum(n_gifts, empty.astype(int))
    gift_order = np.repeat(np.arange(owner.size), n_gifts)
    pick = rng.choice(len(tail), gift_order.size, p=weight / weight.sum())
    gift_lines = tail.iloc[pick].assign(order=gift_order)

    lines = pd.concat([planned, gift_lines[planned.columns]], ignore_index=True)
    lines = lines.drop_duplicates(["order", "sku"]).sort_values(["order", "sku"], kind="stable")
    quantity = np.where(rng.random(len(lines)) < 0.1, 2.0, 1.0)
    unit_price = np.round(
        lines["price"].to_numpy() * rng.choice([1.0, 0.9], len(lines), p=[0.85, 0.15]), 2
    )
    order_ids = np.char.add("o", np.char.zfill(np.arange(owner.size).astype(str), 7))
    customer_ids = np.char.add("c", np.char.zfill(np.arange(n).astype(str), 6))
    order_lines = pd.DataFrame(
        {
            "order_id": order_ids[lines["order"].to_numpy()],
            "sku": lines["sku"].to_numpy(),
            "name": lines["name"].to_numpy(),
            "category": lines["category"].to_numpy(),
            "quantity": quantity,
            "unit_price": unit_price,
        }
    )
    gross = np.bincount(
        lines["order"].to_numpy(), weights=quantity * unit_price, minlength=owner.size
    )
    ordered_at = START + pd.to_timedelta(np.round(day * 86400), unit="s")
    return {
        "orders": pd.DataFrame(
            {
                "order_id": order_ids,
                "customer_id": customer_ids[owner],
                "ordered_at": ordered_at,
                "gross": np.round(gross, 2),
                "net_revenue": np.round(gross, 2),
            }
        ),
        "order_lines": order_lines,
        "customers": pd.DataFrame(
            {"customer_id": customer_ids, "interest": np.array(INTERESTS)[interest]}
        ),
    }


def _cumsum_within(values: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Running sums that restart at each group of ``sizes`` consecutive values."""
    total = np.cumsum(values)
    starts = np.cumsum(sizes) - sizes
    before = np.where(starts > 0, total[np.maximum(starts - 1, 0)], 0.0)
    return total - np.repeat(before, sizes)


def write(n_customers: int, out: Path, seed: int = 0) -> dict[str, Path]:
    """Write ``orders.csv`` and ``lines.csv`` (ready for ``retain ingest``) into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    tables = generate_shop(n_customers, seed)
    paths = {"orders": out / "orders.csv", "order_lines": out / "lines.csv"}
    orders = tables["orders"].assign(
        ordered_at=tables["orders"]["ordered_at"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    )
    orders.to_csv(paths["orders"], index=False)
    tables["order_lines"].to_csv(paths["order_lines"], index=False)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/data/shop"))
    args = parser.parse_args()
    for name, path in write(args.customers, args.out, args.seed).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
