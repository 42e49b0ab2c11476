"""Association rules and bundles: which products are bought together, and how much more
often than chance.

Counts come from sparse algebra on the basket x item matrix ``X``: pair counts
are ``X.T @ X``; triples are counted only inside frequent pairs, as
``P.T @ X`` where ``P`` marks the baskets holding each frequent pair. For an
itemset bought in ``n_AB`` of ``N`` baskets:

- support(A, B) = n_AB / N
- confidence(A -> B) = n_AB / n_A, the share of A's baskets that also hold B
- lift(A -> B) = confidence(A -> B) / support(B), 1 when independent
- added value(A -> B) = confidence(A -> B) - support(B)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from retain.errors import DataError
from retain.recommend.baskets import Baskets, group_pairs, item_code_of, load_baskets
from retain.store import Store

RULE_COLUMNS = [
    "antecedent",
    "consequent",
    "antecedent_names",
    "consequent_name",
    "size",
    "count",
    "support",
    "confidence",
    "lift",
    "added_value",
]
BUNDLE_COLUMNS = [
    "skus",
    "names",
    "size",
    "count",
    "support",
    "lift",
    "total_price",
    "bundle_price",
    "saving",
]


@dataclass(frozen=True)
class Itemsets:
    """Baskets per item, per frequent pair (a < b) and per frequent triple (a < b < c)."""

    n_baskets: int
    item_count: np.ndarray
    pairs: np.ndarray  # (n, 2) item codes
    pair_count: np.ndarray
    triples: np.ndarray  # (n, 3) item codes
    triple_count: np.ndarray


def min_basket_count(n_baskets: int, min_support: float, min_count: int) -> int:
    """The smallest basket count an itemset needs: ``min_support`` as a share of the
    baskets, but never fewer than ``min_count`` baskets."""
    if not 0 <= min_support <= 1:
        raise DataError(
            "min_support is a share of baskets", value=min_support, expected="0 <= x <= 1"
        )
    if min_count < 1:
        raise DataError("min_count is a number of baskets", value=min_count, expected="1 or more")
    return max(int(min_count), math.ceil(min_support * n_baskets - 1e-9))


def pair_counts(matrix: sp.csr_matrix, min_count: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of items (a < b) bought together in at least ``min_count`` baskets, and how
    many: the upper triangle of ``X.T @ X``."""
    co = sp.triu(matrix.T @ matrix, k=1).tocoo()
    keep = co.data >= min_count
    pairs = np.column_stack((co.row[keep], co.col[keep])).astype(np.int64)
    return pairs, co.data[keep].astype(np.int64)


def count_itemsets(
    baskets: Baskets,
    min_count: int,
    *,
    max_size: int = 3,
    lines: np.ndarray | None = None,
) -> Itemsets:
    """Count items, pairs and triples in at least ``min_count`` baskets (of the selected
    lines when ``lines`` is a boolean mask)."""
    if max_size not in (2, 3):
        raise DataError("itemsets hold 2 or 3 items", value=max_size, expected="2 or 3")
    matrix = baskets.matrix(lines)
    n_baskets = int(np.count_nonzero(np.diff(matrix.indptr)))
    item_count = np.asarray(matrix.sum(axis=0)).ravel().astype(np.int64)
    pairs, pair_count = pair_counts(matrix, min_count)
    triples = np.zeros((0, 3), dtype=np.int64)
    triple_count = np.zeros(0, dtype=np.int64)
    if max_size == 3 and len(pairs):
        triples, triple_count = triple_counts(matrix, pairs, min_count, baskets.n_items)
    return Itemsets(n_baskets, item_count, pairs, pair_count, triples, triple_count)


def triple_counts(
    matrix: sp.csr_matrix, pairs: np.ndarray, min_count: int, n_items: int
) -> tuple[np.ndarray, np.ndarray]:
    """Triples (a < b < c) in at least ``min_count`` baskets, counted inside the given
    frequent pairs (every pair of a frequent triple is itself frequent)."""
    # A triple is frequent only if its pairs are: look for triples among the lines
    # of items that are in a frequent pair, in baskets holding three of them or more.
    in_pair = np.zeros(n_items, dtype=bool)
    in_pair[pairs.ravel()] = True
    kept = matrix[:, np.flatnonzero(in_pair)].tocsr()
    kept_items = np.flatnonzero(in_pair)
    sizes = np.diff(kept.indptr)
    big = np.flatnonzero(sizes >= 3)
    if big.size == 0:
        return np.zeros((0, 3), dtype=np.int64), np.zeros(0, dtype=np.int64)
    left, right = group_pairs(kept.indptr[big], sizes[big])
    item_left, item_right = kept_items[kept.indices[left]], kept_items[kept.indices[right]]
    pair_keys = pairs[:, 0] * n_items + pairs[:, 1]
    order = np.argsort(pair_keys)
    found = np.searchsorted(pair_keys[order], item_left * n_items + item_right)
    found = np.minimum(found, pair_keys.size - 1)
    hit = pair_keys[order][found] == item_left * n_items + item_right
    basket_of_line = np.repeat(np.arange(kept.shape[0]), sizes)
    holder = sp.csr_matrix(
        (
            np.ones(int(hit.sum()), dtype=np.int32),
            (basket_of_line[left[hit]], order[found[hit]]),
        ),
        shape=(kept.shape[0], len(pairs)),
    )
    counts = (holder.T @ kept).tocoo()
    third = kept_items[counts.col]
    keep = (third > pairs[counts.row, 1]) & (counts.data >= min_count)
    triples = np.column_stack((pairs[counts.row[keep]], third[keep])).astype(np.int64)
    return triples, counts.data[keep].astype(np.int64)


def _as_baskets(data: Store | Baskets) -> Baskets:
    return data if isinstance(data, Baskets) else load_baskets(data)


def association_rules(
    data: Store | Baskets,
    *,
    min_support: float = 1e-5,
    min_count: int = 5,
    min_confidence: float = 0.0,
    min_lift: float = 1.0,
    max_size: int = 3,
    limit: int | None = None,
) -> pd.DataFrame:
    """Rules A -> B and {A, B} -> C learned from the baskets (orders) in the store.

    An itemset qualifies when it is in at least ``min_support`` (share of
    baskets) and at least ``min_count`` baskets; a rule is kept when its
    confidence is at least ``min_confidence`` and its lift at least
    ``min_lift``. ``max_size`` 2 gives pair rules only, 3 adds rules with two
    items on the left. Sorted by lift, then count; ``limit`` keeps the first rows.

    Columns: ``antecedent`` (tuple of SKUs), ``consequent`` (SKU),
    ``antecedent_names``, ``consequent_name``, ``size`` (items in the rule),
    ``count`` (baskets holding all of them), ``support``, ``confidence``,
    ``lift``, ``added_value`` (definitions in :mod:`retain.recommend.rules`).
    ``.attrs`` holds ``baskets`` and ``min_basket_count``.
    """
    if min_lift < 0 or not 0 <= min_confidence <= 1:
        raise DataError(
            "thresholds out of range",
            value={"min_lift": min_lift, "min_confidence": min_confidence},
            expected="min_lift >= 0 and 0 <= min_confidence <= 1",
        )
    baskets = _as_baskets(data)
    threshold = min_basket_count(baskets.n_baskets, min_support, min_count)
    sets = count_itemsets(baskets, threshold, max_size=max_size)
    n, freq = sets.n_baskets, sets.item_count
    # pair rules in both directions, then the three rules of each triple
    a, b = sets.pairs[:, 0], sets.pairs[:, 1]
    left_parts = [a[:, None], b[:, None]]
    right_parts = [b, a]
    counts = [sets.pair_count, sets.pair_count]
    left_counts = [freq[a], freq[b]]
    if len(sets.triples):
        t = sets.triples
        pair_lookup = _pair_lookup(sets.pairs, sets.pair_count, baskets.n_items)
        for keep_left, consequent in (((0, 1), 2), ((0, 2), 1), ((1, 2), 0)):
            lhs = t[:, keep_left]
            left_parts.append(lhs)
            right_parts.append(t[:, consequent])
            counts.append(sets.triple_count)
            left_counts.append(pair_lookup(lhs[:, 0], lhs[:, 1]))
    lhs_items = _stack_ragged(left_parts)
    consequent_item = np.concatenate(right_parts)
    count = np.concatenate(counts).astype(np.int64)
    lhs_count = np.concatenate(left_counts).astype(np.float64)
    confidence = count / lhs_count
    base = freq[consequent_item] / n
    lift = confidence / base
    keep = (confidence >= min_confidence) & (lift >= min_lift)
    order = np.flatnonzero(keep)
    order = order[np.lexsort((-count[order], -lift[order]))]
    if limit is not None:
        order = order[: max(int(limit), 0)]
    sku = baskets.items["sku"].to_numpy(dtype=object)
    name = _display_names(baskets.items)
    lhs = lhs_items[order]
    frame = pd.DataFrame(
        {
            "antecedent": _tuples(sku, lhs),
            "consequent": sku[consequent_item[order]],
            "antecedent_names": _tuples(name, lhs),
            "consequent_name": name[consequent_item[order]],
            "size": (lhs >= 0).sum(axis=1) + 1,
            "count": count[order],
            "support": count[order] / n,
            "confidence": confidence[order],
            "lift": lift[order],
            "added_value": confidence[order] - base[order],
        },
        columns=RULE_COLUMNS,
    )
    frame.attrs.update(baskets=n, min_basket_count=threshold)
    return frame


def bundles(
    data: Store | Baskets,
    *,
    min_support: float = 1e-5,
    min_count: int = 5,
    min_lift: float = 2.0,
    discount: float = 0.1,
    max_size: int = 3,
    limit: int | None = 50,
    sku: str | None = None,
) -> pd.DataFrame:
    """Sets of 2 or 3 products often bought together, priced as a bundle.

    A set qualifies when its joint support passes ``min_support`` and
    ``min_count`` (as in :func:`association_rules`) and its lift is at least
    ``min_lift``: for a pair, the pair's lift; for a triple, the smallest lift of
    its three rules {A, B} -> C, so that every item adds real affinity. Sets that
    hold two items of the same product family are left out. ``discount`` is the
    share taken off the summed prices (0.1 = 10%).

    Columns: ``skus``, ``names`` (tuples), ``size``, ``count`` (baskets holding
    the whole set), ``support``, ``lift``, ``total_price`` (sum of the items'
    median unit prices, store currency), ``bundle_price`` (total less the
    discount, rounded to cents), ``saving``. Most frequent first; only the
    bundles holding ``sku`` when given.
    """
    if not 0 <= discount < 1:
        raise DataError("discount is a share of the price", value=discount, expected="0 <= x < 1")
    if min_lift < 0:
        raise DataError("min_lift cannot be negative", value=min_lift, expected=">= 0")
    baskets = _as_baskets(data)
    threshold = min_basket_count(baskets.n_baskets, min_support, min_count)
    only = None if sku is None else item_code_of(baskets.sku_index, sku)
    sets = count_itemsets(baskets, threshold, max_size=max_size)
    frame = bundle_frame(
        baskets.items, sets, min_lift=min_lift, discount=discount, limit=limit, only=only
    )
    frame.attrs.update(min_basket_count=threshold)
    return frame


def bundle_frame(
    items: pd.DataFrame,
    sets: Itemsets,
    *,
    min_lift: float = 2.0,
    discount: float = 0.1,
    limit: int | None = 50,
    only: int | None = None,
) -> pd.DataFrame:
    """The bundles among counted itemsets (see :func:`bundles` for the rules and columns),
    only those holding item code ``only`` when given."""
    n, freq = sets.n_baskets, sets.item_count.astype(np.float64)
    n_items = len(items)
    pair_lift = sets.pair_count * n / (freq[sets.pairs[:, 0]] * freq[sets.pairs[:, 1]])
    members = [np.column_stack((sets.pairs, np.full(len(sets.pairs), -1)))]
    counts, lifts = [sets.pair_count], [pair_lift]
    if len(sets.triples):
        t = sets.triples
        pair_lookup = _pair_lookup(sets.pairs, sets.pair_count, n_items)
        rule_lifts = [
            sets.triple_count * n / (pair_lookup(t[:, i], t[:, j]) * freq[t[:, k]])
            for i, j, k in ((0, 1, 2), (0, 2, 1), (1, 2, 0))
        ]
        members.append(t)
        counts.append(sets.triple_count)
        lifts.append(np.minimum.reduce(rule_lifts))
    chosen_all = np.concatenate(members).astype(np.int64)
    count = np.concatenate(counts).astype(np.int64)
    lift = np.concatenate(lifts)
    family = items["family"].to_numpy()
    fam = np.where(chosen_all >= 0, family[np.maximum(chosen_all, 0)], -1 - np.arange(3))
    distinct = (fam[:, 0] != fam[:, 1]) & (fam[:, 0] != fam[:, 2]) & (fam[:, 1] != fam[:, 2])
    wanted = (lift >= min_lift) & distinct
    if only is not None:
        wanted &= (chosen_all == only).any(axis=1)
    order = np.flatnonzero(wanted)
    order = order[np.lexsort((-lift[order], -count[order]))]
    if limit is not None:
        order = order[: max(int(limit), 0)]
    chosen = chosen_all[order]
    price = items["unit_price"].to_numpy(dtype=np.float64)
    total = np.where(chosen >= 0, price[np.maximum(chosen, 0)], 0.0).sum(axis=1)
    bundle_price = np.round(total * (1 - discount), 2)
    sku = items["sku"].to_numpy(dtype=object)
    frame = pd.DataFrame(
        {
            "skus": _tuples(sku, chosen),
            "names": _tuples(_display_names(items), chosen),
            "size": (chosen >= 0).sum(axis=1),
            "count": count[order],
            "support": count[order] / n,
            "lift": lift[order],
            "total_price": np.round(total, 2),
            "bundle_price": bundle_price,
            "saving": np.round(total - bundle_price, 2),
        },
        columns=BUNDLE_COLUMNS,
    )
    frame.attrs.update(baskets=n, discount=discount)
    return frame


def _pair_lookup(
    pairs: np.ndarray, pair_count: np.ndarray, n_items: int
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """A function giving the basket count of pairs (a, b), a < b, known to be frequent."""
    keys = pairs[:, 0] * n_items + pairs[:, 1]
    order = np.argsort(keys)
    sorted_keys, sorted_counts = keys[order], pair_count[order]

    def lookup(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        at = np.searchsorted(sorted_keys, lo * n_items + hi)
        return sorted_counts[at].astype(np.float64)

    return lookup


def _stack_ragged(parts: list[np.ndarray]) -> np.ndarray:
    """Stack (n, 1) and (n, 2) item arrays into (N, 2), padding with -1."""
    padded = [np.column_stack((p, np.full(len(p), -1))) if p.shape[1] == 1 else p for p in parts]
    return np.concatenate(padded).astype(np.int64)


def _tuples(values: np.ndarray, codes: np.ndarray) -> list[tuple[object, ...]]:
    """Rows of item codes (padded with -1) as tuples of the given per-item values."""
    if codes.size == 0:
        return []
    picked = values[np.maximum(codes, 0)]
    valid = codes >= 0
    return [tuple(row[mask]) for row, mask in zip(picked, valid, strict=True)]


def _display_names(items: pd.DataFrame) -> np.ndarray:
    """The product name, or the SKU where the name is unknown."""
    return items["name"].where(items["name"].notna(), items["sku"]).to_numpy(dtype=object)


__all__ = [
    "BUNDLE_COLUMNS",
    "RULE_COLUMNS",
    "Itemsets",
    "association_rules",
    "bundle_frame",
    "bundles",
    "count_itemsets",
    "min_basket_count",
    "pair_counts",
    "triple_counts",
]
