"""Baskets as arrays: every order's distinct products, coded for sparse algebra.

:func:`load_baskets` reads ``order_lines`` joined to ``orders`` once and hands
back integer codes (item per SKU, basket per order, customer per customer_id)
so that the rest of :mod:`retain.recommend` works on NumPy and SciPy arrays.
Baskets are numbered in (customer, time) order: a customer's baskets are
contiguous and their last one is their latest order.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import scipy.sparse as sp

from retain.errors import DataError, StoreError
from retain.store import Store

SECONDS_PER_DAY = 86_400.0

# One product a row: its most common name and category, and its median price.
ITEMS_SQL = """
SELECT
    sku,
    mode(name)                 AS name,
    mode(category)             AS category,
    median(unit_price)         AS unit_price
FROM order_lines
GROUP BY sku
ORDER BY sku
"""

# Orders numbered by customer and time; only the codes leave DuckDB, never the strings.
ORDERS_SQL = """
CREATE OR REPLACE TEMP TABLE {orders} AS
SELECT
    order_id,
    customer_id,
    (row_number() OVER (ORDER BY customer_id, ordered_at, order_id) - 1)::BIGINT AS basket,
    (dense_rank() OVER (ORDER BY customer_id) - 1)::BIGINT                     AS customer,
    epoch(ordered_at)                                                           AS ts
FROM orders
"""

LINES_SQL = """
SELECT o.basket, i.item
FROM order_lines AS l
JOIN {orders} AS o USING (order_id)
JOIN {items} AS i USING (sku)
"""

# Where a product name stops naming the product family: "Wok, carbon steel" -> "wok".
_STEM_BREAK = re.compile(r"\s*(?:,|;|:|\(|\[|/|\||\s[-–—]\s).*$")


def name_stem(name: object) -> str | None:
    """The product family part of a name: lower-cased text before the first comma,
    colon, bracket, slash or spaced dash. ``"Wok, carbon steel"`` -> ``"wok"``."""
    if not isinstance(name, str) or not name.strip():
        return None
    stem = _STEM_BREAK.sub("", name.strip()).strip().lower()
    return stem or None


def product_families(items: pd.DataFrame) -> np.ndarray:
    """A family code per item: items share one when their name stems match within the
    same category (or both without one). An item without a name is its own family."""
    stems = items["name"].map(name_stem)
    category = items["category"].fillna("").astype(str)
    key = (category + "\x1f" + stems.fillna("")).where(stems.notna(), None)
    # items without a stem get unique keys so that they match nothing else
    key = key.where(key.notna(), "\x1e" + items["sku"].astype(str))
    codes, _ = pd.factorize(key)
    return np.asarray(codes, dtype=np.int64)


@dataclass(frozen=True)
class Baskets:
    """Every basket's distinct items as coded arrays.

    - ``items``: one row per product in item-code order: ``sku``, ``name``,
      ``category``, ``unit_price`` (median price paid, store currency), ``family``.
    - ``line_basket``, ``line_item``: one entry per distinct (basket, item),
      sorted by basket then item.
    - ``basket_customer``: customer code of each basket; ``basket_time``:
      when it was ordered, seconds since 1970-01-01 UTC.
    - ``customer_ids``: the customer_id of each customer code.
    """

    items: pd.DataFrame
    line_basket: np.ndarray
    line_item: np.ndarray
    basket_customer: np.ndarray
    basket_time: np.ndarray
    customer_ids: np.ndarray

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_baskets(self) -> int:
        return len(self.basket_customer)

    @property
    def n_customers(self) -> int:
        return len(self.customer_ids)

    @cached_property
    def sku_index(self) -> dict[str, int]:
        return {sku: i for i, sku in enumerate(self.items["sku"].tolist())}

    def matrix(self, lines: np.ndarray | None = None) -> sp.csr_matrix:
        """The basket x item 0/1 matrix (int32), of the selected lines when given."""
        rows = self.line_basket if lines is None else self.line_basket[lines]
        cols = self.line_item if lines is None else self.line_item[lines]
        data = np.ones(rows.size, dtype=np.int32)
        return sp.csr_matrix((data, (rows, cols)), shape=(self.n_baskets, self.n_items))

    def last_baskets(self) -> np.ndarray:
        """The latest basket of each customer who has two baskets or more."""
        customer = self.basket_customer
        is_last = np.append(customer[1:] != customer[:-1], True)
        is_first = np.insert(customer[1:] != customer[:-1], 0, True)
        return np.flatnonzero(is_last & ~is_first)


def temp_name(prefix: str) -> str:
    return f"_{prefix}_{np.random.default_rng().integers(1 << 40):x}"


def load_baskets(store: Store) -> Baskets:
    """Read the store's order lines as coded baskets (one pass over ``order_lines``).

    Lines whose order is not in ``orders`` are left out (they have no customer
    or date); a product bought twice in one order counts once in that basket.
    Raises :class:`StoreError` when the store has no order lines.
    """
    if not store.scalar("SELECT count(*) FROM order_lines"):
        raise StoreError(
            f"the store {store.path} holds no order lines, which recommendations are learned "
            f"from: load them with `retain ingest lines.csv --format lines --db {store.path}` "
            "(columns order_id, sku, name, category, quantity, unit_price)"
        )
    items = store.query(ITEMS_SQL)
    items["unit_price"] = items["unit_price"].astype(float)
    items["family"] = product_families(items)
    orders, codes = temp_name("rec_orders"), temp_name("rec_items")
    con = store.con
    try:
        con.execute(ORDERS_SQL.format(orders=orders))
        con.register(
            codes,
            pd.DataFrame({"sku": items["sku"], "item": np.arange(len(items), dtype=np.int64)}),
        )
        lines = con.execute(LINES_SQL.format(orders=orders, items=codes)).fetchnumpy()
        basket_rows = con.execute(f"SELECT customer, ts FROM {orders} ORDER BY basket").fetchnumpy()
        customer_ids = con.execute(
            f"SELECT customer_id FROM {orders} GROUP BY customer, customer_id ORDER BY customer"
        ).fetchnumpy()["customer_id"]
    finally:
        con.unregister(codes)
        con.execute(f"DROP TABLE IF EXISTS {orders}")
    basket = np.asarray(lines["basket"], dtype=np.int64)
    item = np.asarray(lines["item"], dtype=np.int64)
    if basket.size == 0:
        raise StoreError(
            f"none of the order lines in {store.path} belongs to an order in the orders table: "
            "ingest the orders as well as their lines"
        )
    # keep only orders that have lines, and customers who placed them
    used = np.zeros(len(basket_rows["customer"]), dtype=bool)
    used[basket] = True
    new_basket = np.cumsum(used) - 1
    basket_customer = np.asarray(basket_rows["customer"], dtype=np.int64)[used]
    basket_time = np.asarray(basket_rows["ts"], dtype=np.float64)[used]
    kept_customers, basket_customer = np.unique(basket_customer, return_inverse=True)
    # distinct (basket, item) pairs, sorted: the CSR structure does both
    matrix = sp.csr_matrix(
        (np.ones(basket.size, dtype=np.int32), (new_basket[basket], item)),
        shape=(int(used.sum()), len(items)),
    )
    matrix.sum_duplicates()
    line_basket = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    return Baskets(
        items=items,
        line_basket=line_basket.astype(np.int64),
        line_item=matrix.indices.astype(np.int64),
        basket_customer=basket_customer.astype(np.int64),
        basket_time=basket_time,
        customer_ids=np.asarray(customer_ids, dtype=object)[kept_customers],
    )


def group_pairs(starts: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (p, q) with p < q inside each group of consecutive rows.

    Groups are given by their first row and their size; the result is two
    arrays of row numbers, without any loop over groups.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    starts = np.asarray(starts, dtype=np.int64)
    rows = np.repeat(starts, sizes) + (
        np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    )
    position = rows - np.repeat(starts, sizes)
    follow = np.repeat(sizes, sizes) - 1 - position
    left = np.repeat(rows, follow)
    first = np.cumsum(follow) - follow
    right = left + 1 + (np.arange(int(follow.sum())) - np.repeat(first, follow))
    return left, right


def iter_group_pairs(
    starts: np.ndarray, sizes: np.ndarray, max_pairs: int = 2_000_000
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """:func:`group_pairs` in chunks of whole groups, about ``max_pairs`` pairs each,
    so that memory stays bounded however many pairs there are."""
    sizes = np.asarray(sizes, dtype=np.int64)
    pairs = sizes * (sizes - 1) // 2
    cumulative = np.cumsum(pairs)
    begin = 0
    while begin < sizes.size:
        done = cumulative[begin - 1] if begin else 0
        end = int(np.searchsorted(cumulative, done + max_pairs, side="right"))
        end = max(end, begin + 1)
        yield group_pairs(starts[begin:end], sizes[begin:end])
        begin = end


def segment_bounds(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and size of each run of equal values in a sorted array."""
    if keys.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.insert(keys[1:] != keys[:-1], 0, True))
    sizes = np.diff(np.append(starts, keys.size))
    return starts, sizes


@dataclass(frozen=True)
class CustomerItems:
    """One row per (customer, item) bought: ``customer`` code, ``item`` code,
    ``first_ts`` and ``last_ts`` (first and last order holding it, seconds since
    1970-01-01 UTC), ``first_basket`` and ``last_basket`` (those orders' basket
    codes) and ``purchases`` (orders holding it). Sorted by customer, item."""

    customer: np.ndarray
    item: np.ndarray
    first_ts: np.ndarray
    last_ts: np.ndarray
    first_basket: np.ndarray
    last_basket: np.ndarray
    purchases: np.ndarray


def customer_items(baskets: Baskets, lines: np.ndarray | None = None) -> CustomerItems:
    """Who bought what, first and last, and how often (of the selected lines)."""
    line_basket = baskets.line_basket if lines is None else baskets.line_basket[lines]
    line_item = baskets.line_item if lines is None else baskets.line_item[lines]
    customer = baskets.basket_customer[line_basket]
    key = customer * baskets.n_items + line_item
    # baskets are numbered in time order within a customer, and a stable sort keeps it
    order = np.argsort(key, kind="stable")
    starts, sizes = segment_bounds(key[order])
    basket = line_basket[order]
    ends = starts + sizes - 1
    return CustomerItems(
        customer=customer[order][starts],
        item=line_item[order][starts],
        first_ts=baskets.basket_time[basket[starts]],
        last_ts=baskets.basket_time[basket[ends]],
        first_basket=basket[starts],
        last_basket=basket[ends],
        purchases=sizes.astype(np.int64),
    )


def item_code_of(index: Mapping[str, int], sku: str) -> int:
    """The item code of ``sku`` in ``index`` (SKU to code); :class:`DataError` when no
    order line has it."""
    code = index.get(sku)
    if code is None:
        raise DataError(
            "unknown SKU: no order line in the store has it",
            value=sku,
            expected="a SKU from order_lines",
        )
    return int(code)
