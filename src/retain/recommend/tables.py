"""Precomputed recommendation tables, held in memory for answers in a millisecond.

:func:`build` learns from the store's order lines, once:

- **also bought** (``basket`` table): per item, the top items bought in the same
  order, scored by *shrunk added value* (below);
- **bought later** (``later`` table): per item i, the items its buyers bought in
  a later order, scored the same way against the share of returning customers
  who buy each item later: n_i counts i's buyers who ordered again, n_ij those
  of them who then bought j. Personal recommendations rest on it;
- **upsell**: per item, pricier items of the same category from its ``later``
  counts, scored by the share of its returning buyers who bought them;
- **replenishment**: per item, the share of its returning buyers who bought it
  again, how that compares with others, and the median days between purchases:
  see ``product_type`` in :class:`Recommender`;
- **bundles**: see :func:`retain.recommend.rules.bundles`.

The score. For items i and j bought together in n_ij of the n_i baskets that
hold i, with j in a share p_j of all baskets::

    score(i -> j) = (n_ij - n_i * p_j) / (n_i + shrinkage)

It is the *added value* of i for j (confidence - p_j = p_j * (lift - 1)),
shrunk towards 0 as if ``shrinkage`` (default 100) more baskets of i had shown
no affinity. The default is large on purpose: a product's best-looking pairs are
picked among thousands, so part of their score is luck, and evaluations on
data without real affinities show it (see :mod:`retain.recommend.evaluate`).
So it grows with lift (how much more likely j is with i), with confidence (how
likely j is at all with i) and with support (how many baskets show it): a
popular item that goes with everything (lift near 1) scores near 0, and so
does a high lift seen in three baskets. Pairs with a score of 0 or less, or
bought together in fewer than ``min_count`` baskets, are dropped; so are items
of the same product family (see :func:`retain.recommend.baskets.product_families`).

:meth:`Recommender.save` writes the tables into the store (``recommend_items``,
``item_associations``, ``item_bundles``, ``recommend_builds``) and
:meth:`Recommender.from_store` reads them back without recomputing.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from retain.errors import DataError, StoreError
from retain.recommend.baskets import (
    SECONDS_PER_DAY,
    Baskets,
    CustomerItems,
    customer_items,
    item_code_of,
    load_baskets,
    segment_bounds,
)
from retain.recommend.rules import (
    Itemsets,
    bundle_frame,
    min_basket_count,
    pair_counts,
    triple_counts,
)
from retain.store import Store

TABLE_KINDS = ("basket", "later", "upsell")
RECOMMENDATION_KEYS = ("sku", "name", "score", "reason", "kind")


@dataclass(frozen=True)
class Neighbours:
    """Per-item ranked lists in CSR form: item i's list is ``other[indptr[i]:indptr[i+1]]``
    with its ``score``, ``confidence`` (share of i's baskets or buyers that hold the
    other item), ``lift`` and ``count`` (baskets or customers holding both)."""

    indptr: np.ndarray
    other: np.ndarray
    score: np.ndarray
    confidence: np.ndarray
    lift: np.ndarray
    count: np.ndarray

    @classmethod
    def from_entries(
        cls,
        n_items: int,
        item: np.ndarray,
        other: np.ndarray,
        score: np.ndarray,
        confidence: np.ndarray,
        lift: np.ndarray,
        count: np.ndarray,
        top_k: int,
    ) -> Neighbours:
        """Keep the ``top_k`` best-scored entries per item, best first (scores in [0, 1])."""
        # one sort on a key that orders by item, then by score from high to low
        order = np.argsort(item + 0.5 * (1.0 - np.clip(score, 0.0, 1.0)), kind="stable")
        item = item[order]
        starts, sizes = _run_bounds(item)
        rank = np.arange(item.size) - np.repeat(starts, sizes)
        keep = order[rank < top_k]
        kept_item = item[rank < top_k]
        indptr = np.concatenate(([0], np.cumsum(np.bincount(kept_item, minlength=n_items))))
        return cls(
            indptr.astype(np.int64),
            other[keep].astype(np.int64),
            score[keep].astype(np.float64),
            confidence[keep].astype(np.float64),
            lift[keep].astype(np.float64),
            count[keep].astype(np.int64),
        )

    def expand(
        self, owner: np.ndarray, item: np.ndarray, limit: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For rows (owner, item): one entry per neighbour of the item (its best
        ``limit`` when given), as (row number of the source row, neighbour position in
        this table, owner)."""
        start = self.indptr[item]
        size = self.indptr[item + 1] - start
        if limit is not None:
            size = np.minimum(size, limit)
        row = np.repeat(np.arange(item.size), size)
        first = np.cumsum(size) - size
        position = np.repeat(start - first, size) + np.arange(int(size.sum()))
        return row, position, owner[row]


def _run_bounds(sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return segment_bounds(sorted_keys)


@dataclass(frozen=True)
class BuildOptions:
    """Settings of :func:`build`: ``top_k`` items kept per list, ``min_count`` baskets
    (or customers) a pair needs, ``shrinkage`` in baskets (see the module docstring),
    ``min_repeat_share``, ``min_repeat_buyers`` and ``min_repeat_lift`` that make an
    item a consumable and ``max_durable_repeat_lift`` below which it is durable
    (see :meth:`Recommender.items`),
    ``bundle_min_support``, ``bundle_min_count``, ``bundle_min_lift`` and
    ``bundles_kept`` for the bundle list."""

    top_k: int = 50
    min_count: int = 3
    shrinkage: float = 100.0
    min_repeat_share: float = 0.2
    min_repeat_buyers: int = 5
    min_repeat_lift: float = 2.0
    min_z: float = 0.0
    max_durable_repeat_lift: float = 0.5
    bundle_min_support: float = 1e-5
    bundle_min_count: int = 5
    bundle_min_lift: float = 2.0
    bundles_kept: int = 500

    def check(self) -> None:
        if self.top_k < 1 or self.min_count < 1 or self.min_repeat_buyers < 1:
            raise DataError(
                "top_k, min_count and min_repeat_buyers must be positive",
                value={"top_k": self.top_k, "min_count": self.min_count},
                expected="1 or more",
            )
        if self.shrinkage < 0 or not 0 <= self.min_repeat_share <= 1:
            raise DataError(
                "shrinkage must be >= 0 and min_repeat_share in [0, 1]",
                value={"shrinkage": self.shrinkage, "min_repeat_share": self.min_repeat_share},
            )


@dataclass(eq=False, repr=False)
class Recommender:
    """Everything a recommendation needs, in memory. Build it with :func:`build` or
    load it with :meth:`from_store`; ask it with :meth:`recommend_for_cart`,
    :meth:`also_bought`, :meth:`upsell`, :meth:`bundles`.

    ``items`` has one row per product (item code order): ``sku``, ``name``,
    ``category``, ``unit_price`` (median price paid), ``family``, ``baskets``
    (orders holding it), ``customers`` (who bought it), ``repeat_share`` (of its
    buyers who ordered again after buying it, the share who bought it again),
    ``repeat_lift`` (repeat_share over the share of all returning customers who
    bought it in a later order than their first), ``product_type`` and
    ``repurchase_days`` (median days between a customer's purchases of it, for
    consumables; NaN otherwise).

    ``product_type`` is ``"consumable"`` when at least ``min_repeat_buyers`` bought
    it again, ``repeat_share >= min_repeat_share`` and ``repeat_lift >=
    min_repeat_lift`` (owners come back for it); ``"durable"`` when owners buy it
    again less than ``max_durable_repeat_lift`` times as often as others buy it
    later, or when fewer than ``min_repeat_buyers`` owners ordered again (too
    little to tell); ``"repeatable"`` otherwise (owning it changes nothing).
    """

    items: pd.DataFrame
    n_baskets: int
    n_customers: int
    n_returning: int
    basket: Neighbours
    later: Neighbours
    upsell_table: Neighbours
    bundle_list: pd.DataFrame
    built_at: str
    options: BuildOptions
    fingerprint: dict[str, Any] = field(default_factory=dict)
    # derived from the above when made
    family: np.ndarray = field(init=False)
    product_code: np.ndarray = field(init=False)
    popular: np.ndarray = field(init=False)
    popular_later: np.ndarray = field(init=False)
    popular_rank_later: np.ndarray = field(init=False)
    basket_share: np.ndarray = field(init=False)
    later_share: np.ndarray = field(init=False)
    repeat_share: np.ndarray = field(init=False)
    repurchase_days: np.ndarray = field(init=False)
    _skus: list[str] = field(init=False)
    _names: list[str] = field(init=False)
    _index: dict[str, int] = field(init=False)
    _prices: list[float | None] = field(init=False)

    def __post_init__(self) -> None:
        items = self.items
        # plain Python lists: indexing them one at a time is faster than numpy's
        self._skus = [str(s) for s in items["sku"].tolist()]
        self._names = [str(n) for n in items["name"].where(items["name"].notna(), items["sku"])]
        self._index = {s: i for i, s in enumerate(self._skus)}
        prices = pd.to_numeric(items["unit_price"], errors="coerce").round(2)
        self._prices = [None if p != p else float(p) for p in prices.tolist()]
        self.family = items["family"].to_numpy(dtype=np.int64)
        codes = {"durable": 0, "repeatable": 1, "consumable": 2}
        self.product_code = items["product_type"].map(codes).fillna(0).to_numpy(dtype=np.int64)
        order = np.arange(len(items))
        self.popular = np.lexsort((order, -items["baskets"].to_numpy()))
        self.popular_later = np.lexsort((order, -items["later_buyers"].to_numpy()))
        self.popular_rank_later = np.empty(len(items), dtype=np.int64)
        self.popular_rank_later[self.popular_later] = order
        self.basket_share = items["baskets"].to_numpy() / max(self.n_baskets, 1)
        self.later_share = items["later_buyers"].to_numpy() / max(self.n_returning, 1)
        # read by every personal ranking: a column of the frame costs more than the rest
        self.repeat_share = items["repeat_share"].to_numpy(dtype=np.float64)
        self.repurchase_days = items["repurchase_days"].to_numpy(dtype=np.float64)

    def __repr__(self) -> str:
        return (
            f"Recommender({self.n_items:,} items, {self.n_baskets:,} baskets, "
            f"{self.n_customers:,} customers, built {self.built_at})"
        )

    # -- lookups ------------------------------------------------------------------
    @property
    def n_items(self) -> int:
        return len(self._skus)

    def item_code(self, sku: str) -> int:
        """The item code of a SKU; :class:`DataError` when no order line has it."""
        return item_code_of(self._index, sku)

    def price(self, sku: str) -> float | None:
        """The median price paid for a SKU (None: unknown SKU or no price)."""
        at = self._index.get(sku)
        return None if at is None else self._prices[at]

    def known(self, skus: list[str]) -> tuple[list[int], list[str]]:
        """Item codes of the SKUs the tables know, and the SKUs they do not."""
        index = self._index
        codes = [index[s] for s in skus if s in index]
        return codes, [s for s in skus if s not in index]

    def name(self, code: int) -> str:
        return str(self._names[code])

    def sku(self, code: int) -> str:
        return str(self._skus[code])

    # -- real time ------------------------------------------------------------------
    def recommend_for_cart(self, skus: list[str] | tuple[str, ...], k: int = 10) -> list[dict]:
        """Up to ``k`` products to add to a cart holding ``skus``, best first.

        Each is a dict with ``sku``, ``name``, ``score``, ``reason`` and ``kind``.
        The score ranks the products: their share of all orders plus the added
        value (the ``basket`` table's score) of each cart item for them. For a
        one-item cart it estimates the chance that an order holding the cart also
        holds the product; with several items the added values sum, so it can pass 1.
        Products with an affinity to the cart are kind ``"bought_together"``, with
        the strongest one as reason; best sellers compete on their share of orders
        alone (kind ``"best_seller"``). The cart's own products and their product family are
        never suggested; SKUs the tables do not know are ignored, and a SKU listed
        twice counts once.
        """
        _check_k(k)
        codes, _ = self.known(list(dict.fromkeys(skus)))
        cart = np.asarray(codes, dtype=np.int64)
        ranked = self.rank_carts(np.zeros(cart.size, dtype=np.int64), cart, 1, k)
        return self._as_dicts(ranked)

    def rank_carts(
        self, owner: np.ndarray, item: np.ndarray, n_owners: int, k: int
    ) -> dict[str, np.ndarray]:
        """Cart recommendations for many carts at once: rows (owner, item) give each
        cart's items. Returns arrays ``owner``, ``item``, ``score``, ``kind`` (0 bought
        together, 1 best seller), ``source`` (cart item behind the reason, -1 none),
        ``confidence``, ranked best first within each owner."""
        table = self.basket
        row, pos, who = table.expand(owner, item)
        candidate = table.other[pos]
        excluded = _pair_keys(owner, self.family[item], int(self.family.max()) + 1)
        fam_keys = who * (int(self.family.max()) + 1) + self.family[candidate]
        keep = ~_isin_sorted(fam_keys, excluded)
        agg = _aggregate(
            who[keep],
            candidate[keep],
            table.score[pos[keep]],
            item[row[keep]],
            table.confidence[pos[keep]],
            self.n_items,
        )
        agg["score"] = self.basket_share[agg["item"]] + agg["score"]
        sizes = np.bincount(owner, minlength=n_owners) if owner.size else np.zeros(1)
        fill = self._fill(
            agg, n_owners, k, self.popular, excluded, self.basket_share, int(sizes.max(initial=0))
        )
        return _top_k(fill, k, by_kind=False)

    def _fill(
        self,
        agg: dict[str, np.ndarray],
        n_owners: int,
        k: int,
        popular: np.ndarray,
        excluded_families: np.ndarray,
        popular_score: np.ndarray | None,
        extra_depth: int,
    ) -> dict[str, np.ndarray]:
        """Add best sellers (kind 1) after the found items, skipping the excluded
        (owner, family) keys and the items already found. ``extra_depth``: how many
        best sellers an owner may have to skip besides the found ones."""
        n_fam = int(self.family.max()) + 1
        depth = min(popular.size, 2 * k + extra_depth + 10)
        top = popular[:depth]
        pop_owner = np.repeat(np.arange(n_owners), depth)
        pop_item = np.tile(top, n_owners)
        found = np.sort(agg["owner"] * self.n_items + agg["item"])
        keep = ~_isin_sorted(
            pop_owner * n_fam + self.family[pop_item], excluded_families
        ) & ~_isin_sorted(pop_owner * self.n_items + pop_item, found)
        pop_rank = np.tile(np.arange(depth), n_owners)[keep]
        pop_item = pop_item[keep]
        score = popular_score[pop_item] if popular_score is not None else np.zeros(pop_item.size)
        return {
            "owner": np.concatenate((agg["owner"], pop_owner[keep])),
            "item": np.concatenate((agg["item"], pop_item)),
            "score": np.concatenate((agg["score"], score)),
            "kind": np.concatenate((agg["kind"], np.ones(pop_item.size, dtype=np.int64))),
            "source": np.concatenate((agg["source"], np.full(pop_item.size, -1))),
            "confidence": np.concatenate((agg["confidence"], np.full(pop_item.size, np.nan))),
            "tiebreak": np.concatenate((np.zeros(agg["owner"].size), pop_rank)),
        }

    def _as_dicts(self, ranked: dict[str, np.ndarray]) -> list[dict]:
        out = []
        share = self.basket_share
        for item, score, kind, source, conf in zip(
            ranked["item"].tolist(),
            ranked["score"].tolist(),
            ranked["kind"].tolist(),
            ranked["source"].tolist(),
            ranked["confidence"].tolist(),
            strict=True,
        ):
            if kind == 0:
                reason = f"bought together with {self.name(source)} by {_pct(conf)} of its buyers"
                label = "bought_together"
            else:
                reason = f"best seller: in {_pct(share[item])} of all orders"
                label = "best_seller"
            out.append(
                {
                    "sku": self.sku(item),
                    "name": self.name(item),
                    "score": round(score, 6),
                    "reason": reason,
                    "kind": label,
                }
            )
        return out

    # -- per item -------------------------------------------------------------------
    def also_bought(self, sku: str, k: int = 10) -> pd.DataFrame:
        """Items most often bought in the same order as ``sku``, beyond chance.

        Columns: ``sku``, ``name``, ``score`` (shrunk added value, see the module
        docstring), ``confidence`` (share of the item's orders that hold it),
        ``lift``, ``count`` (orders holding both), ``reason``.
        """
        _check_k(k)
        return self._slice(
            self.basket, self.item_code(sku), k, "bought together with {0} by {1} of its buyers"
        )

    def bought_later(self, sku: str, k: int = 10) -> pd.DataFrame:
        """Items that buyers of ``sku`` bought in a later order, beyond chance (the
        ``later`` table: shrunk added value over the share of returning customers who
        buy the item later). Columns as :meth:`also_bought`; ``confidence`` is the
        share of the item's returning buyers, ``count`` a number of customers."""
        _check_k(k)
        return self._slice(
            self.later,
            self.item_code(sku),
            k,
            "bought later by {1} of the customers who bought {0}",
        )

    def upsell(self, sku: str, k: int = 10) -> pd.DataFrame:
        """Pricier items of the same category that buyers of ``sku`` bought later.

        Columns: ``sku``, ``name``, ``unit_price`` and ``price_increase`` (store
        currency), ``score`` and ``confidence`` (of the item's buyers who ordered
        again, the share who bought it), ``count`` (those buyers), ``lift`` (price
        ratio), ``reason``.
        """
        _check_k(k)
        code = self.item_code(sku)
        frame = self._slice(
            self.upsell_table,
            code,
            k,
            "{1} of the customers who bought {0} and came back bought it later",
        )
        price = self.items["unit_price"].to_numpy()
        codes = np.asarray([self._index[s] for s in frame["sku"]], dtype=np.int64)
        frame.insert(2, "unit_price", price[codes] if codes.size else np.zeros(0))
        frame.insert(3, "price_increase", np.round(frame["unit_price"] - price[code], 2))
        return frame

    def _slice(self, table: Neighbours, code: int, k: int, template: str) -> pd.DataFrame:
        lo = table.indptr[code]
        hi = min(table.indptr[code + 1], lo + k)
        other = table.other[lo:hi]
        conf = table.confidence[lo:hi]
        source = self.name(code)
        return pd.DataFrame(
            {
                "sku": [self.sku(o) for o in other],
                "name": [self.name(o) for o in other],
                "score": table.score[lo:hi],
                "confidence": conf,
                "lift": table.lift[lo:hi],
                "count": table.count[lo:hi],
                "reason": [template.format(source, _pct(c)) for c in conf.tolist()],
            }
        )

    def bundles(
        self, limit: int = 20, discount: float = 0.1, sku: str | None = None
    ) -> pd.DataFrame:
        """The precomputed bundles (most frequent first), priced with ``discount`` off
        (share, 0.1 = 10%); only those holding ``sku`` when given. Columns as
        :func:`retain.recommend.rules.bundles`."""
        if not 0 <= discount < 1:
            raise DataError(
                "discount is a share of the price", value=discount, expected="0 <= x < 1"
            )
        frame = self.bundle_list
        if sku is not None:
            self.item_code(sku)
            frame = frame[[sku in skus for skus in frame["skus"]]]
        frame = frame.head(max(int(limit), 0)).copy()
        frame["bundle_price"] = np.round(frame["total_price"] * (1 - discount), 2)
        frame["saving"] = np.round(frame["total_price"] - frame["bundle_price"], 2)
        frame.attrs.update(discount=discount, baskets=self.n_baskets)
        return frame.reset_index(drop=True)

    # -- persistence ------------------------------------------------------------------
    def save(self, store: Store) -> None:
        """Write the tables into the store, replacing an earlier build (one transaction)."""
        items = self.items.reset_index(drop=True).assign(item=np.arange(self.n_items))
        parts = []
        for kind, table in zip(
            TABLE_KINDS, (self.basket, self.later, self.upsell_table), strict=True
        ):
            sizes = np.diff(table.indptr)
            item = np.repeat(np.arange(self.n_items), sizes)
            parts.append(
                pd.DataFrame(
                    {
                        "kind": kind,
                        "item": item.astype(np.int32),
                        "rank": (
                            np.arange(item.size) - np.repeat(table.indptr[:-1], sizes) + 1
                        ).astype(np.int32),
                        "other": table.other.astype(np.int32),
                        "score": table.score,
                        "confidence": table.confidence,
                        "lift": table.lift,
                        "count": table.count,
                    }
                )
            )
        associations = pd.concat(parts, ignore_index=True)
        sku_index = self._index
        bundle_rows = pd.DataFrame(
            {
                "rank": np.arange(1, len(self.bundle_list) + 1, dtype=np.int32),
                "items": [[sku_index[s] for s in skus] for skus in self.bundle_list["skus"]],
                "count": self.bundle_list["count"].to_numpy(),
                "support": self.bundle_list["support"].to_numpy(),
                "lift": self.bundle_list["lift"].to_numpy(),
                "total_price": self.bundle_list["total_price"].to_numpy(),
            }
        )
        build = pd.DataFrame(
            {
                "built_at": [pd.Timestamp(self.built_at).tz_localize(None)],
                "baskets": [self.n_baskets],
                "customers": [self.n_customers],
                "returning_customers": [self.n_returning],
                "items": [self.n_items],
                "order_lines": [self.fingerprint.get("order_lines")],
                "last_order": [
                    pd.Timestamp(self.fingerprint["last_order"])
                    if self.fingerprint.get("last_order")
                    else pd.NaT
                ],
                "options": [json.dumps(self.options.__dict__)],
            }
        )
        if not store.has_table("item_associations"):
            raise StoreError(
                f"the store {store.path} predates recommendation tables: "
                "open it read-write once to upgrade it"
            )
        with store.transaction() as con:
            for table_name, frame, columns in (
                ("recommend_items", items, ITEM_COLUMNS),
                ("item_associations", associations, ASSOCIATION_COLUMNS),
                ("item_bundles", bundle_rows, BUNDLE_ROW_COLUMNS),
                ("recommend_builds", build, BUILD_COLUMNS),
            ):
                con.execute(f"DELETE FROM {table_name}")
                view = f"_incoming_{table_name}"
                con.register(view, frame[list(columns)])
                names = ", ".join(columns)
                con.execute(f"INSERT INTO {table_name} ({names}) SELECT {names} FROM {view}")
                con.unregister(view)

    @classmethod
    def from_store(cls, store: Store) -> Recommender:
        """Load the tables a :meth:`save` wrote; :class:`StoreError` when there are none."""
        if not store.has_table("recommend_builds") or not store.scalar(
            "SELECT count(*) FROM recommend_builds"
        ):
            raise StoreError(
                f"no recommendation tables in {store.path}: "
                f"run `retain recommend build --db {store.path}`"
            )
        build = store.query("SELECT * FROM recommend_builds").iloc[0]
        items = store.query(
            f"SELECT {', '.join(ITEM_COLUMNS)} FROM recommend_items ORDER BY item"
        ).drop(columns="item")
        n_items = len(items)
        tables = []
        for kind in TABLE_KINDS:
            rows = store.con.execute(
                "SELECT item, other, score, confidence, lift, count FROM item_associations "
                "WHERE kind = ? ORDER BY item, rank",
                [kind],
            ).fetchnumpy()
            item = np.asarray(rows["item"], dtype=np.int64)
            indptr = np.concatenate(([0], np.cumsum(np.bincount(item, minlength=n_items))))
            tables.append(
                Neighbours(
                    indptr.astype(np.int64),
                    np.asarray(rows["other"], dtype=np.int64),
                    np.asarray(rows["score"], dtype=np.float64),
                    np.asarray(rows["confidence"], dtype=np.float64),
                    np.asarray(rows["lift"], dtype=np.float64),
                    np.asarray(rows["count"], dtype=np.int64),
                )
            )
        bundle_rows = store.query("SELECT * FROM item_bundles ORDER BY rank")
        sku = items["sku"].to_numpy(dtype=object)
        names = items["name"].where(items["name"].notna(), items["sku"]).to_numpy(dtype=object)
        total = bundle_rows["total_price"].to_numpy(dtype=np.float64)
        bundle_list = pd.DataFrame(
            {
                "skus": [tuple(sku[list(c)]) for c in bundle_rows["items"]],
                "names": [tuple(names[list(c)]) for c in bundle_rows["items"]],
                "size": [len(c) for c in bundle_rows["items"]],
                "count": bundle_rows["count"].to_numpy(dtype=np.int64),
                "support": bundle_rows["support"].to_numpy(dtype=np.float64),
                "lift": bundle_rows["lift"].to_numpy(dtype=np.float64),
                "total_price": total,
                "bundle_price": np.round(total * 0.9, 2),
                "saving": np.round(total - np.round(total * 0.9, 2), 2),
            }
        )
        options = BuildOptions(**json.loads(build["options"]))
        last = build["last_order"]
        return cls(
            items=items,
            n_baskets=int(build["baskets"]),
            n_customers=int(build["customers"]),
            n_returning=int(build["returning_customers"]),
            basket=tables[0],
            later=tables[1],
            upsell_table=tables[2],
            bundle_list=bundle_list,
            built_at=pd.Timestamp(build["built_at"]).tz_localize("UTC").isoformat(),
            options=options,
            fingerprint={
                "order_lines": None if pd.isna(build["order_lines"]) else int(build["order_lines"]),
                "last_order": None if pd.isna(last) else pd.Timestamp(last).isoformat(),
            },
        )


ITEM_COLUMNS = (
    "item",
    "sku",
    "name",
    "category",
    "unit_price",
    "family",
    "baskets",
    "customers",
    "repeat_share",
    "repurchase_days",
    "repeat_lift",
    "product_type",
    "returning_buyers",
    "later_buyers",
)
ASSOCIATION_COLUMNS = ("kind", "item", "rank", "other", "score", "confidence", "lift", "count")
BUNDLE_ROW_COLUMNS = ("rank", "items", "count", "support", "lift", "total_price")
BUILD_COLUMNS = (
    "built_at",
    "baskets",
    "customers",
    "returning_customers",
    "items",
    "order_lines",
    "last_order",
    "options",
)


# -- building ------------------------------------------------------------------------
def store_fingerprint(store: Store) -> dict[str, Any]:
    """What the tables were learned from: the count of order lines and the last order."""
    row = store.con.execute(
        "SELECT (SELECT count(*) FROM order_lines), (SELECT max(ordered_at) FROM orders)"
    ).fetchall()[0]
    return {
        "order_lines": int(row[0]),
        "last_order": None if row[1] is None else pd.Timestamp(row[1]).isoformat(),
    }


def build(store: Store, *, save: bool = False, options: BuildOptions | None = None) -> Recommender:
    """Learn every recommendation table from the store's orders and order lines.

    With ``save=True`` the tables are also written into the store so that
    :meth:`Recommender.from_store` (and the service) can load them at start.
    Raises :class:`StoreError` when the store has no order lines.
    """
    baskets = load_baskets(store)
    recommender = build_from_baskets(baskets, options=options)
    object.__setattr__(recommender, "fingerprint", store_fingerprint(store))
    if save:
        from retain.recommend.personal import load_histories, save_histories

        del baskets  # the customers' purchases are read next: not both at once
        recommender.save(store)
        # every customer's purchases, coded, for the service to read at start
        save_histories(store, load_histories(store, recommender=recommender))
    return recommender


def load_or_build(store: Store, *, options: BuildOptions | None = None) -> Recommender:
    """The saved tables when they were learned from the store's current order lines,
    else freshly built ones (not saved)."""
    if store.has_table("recommend_builds") and store.scalar(
        "SELECT count(*) FROM recommend_builds"
    ):
        saved = Recommender.from_store(store)
        if saved.fingerprint == store_fingerprint(store):
            return saved
    return build(store, options=options)


def build_from_baskets(
    baskets: Baskets,
    *,
    lines: np.ndarray | None = None,
    options: BuildOptions | None = None,
) -> Recommender:
    """Learn the tables from coded baskets (only the lines where the boolean mask
    ``lines`` is true, when given: the evaluation hides baskets this way)."""
    opts = options or BuildOptions()
    opts.check()
    n_items = baskets.n_items
    family = baskets.items["family"].to_numpy(dtype=np.int64)
    line_item = baskets.line_item if lines is None else baskets.line_item[lines]

    # -- baskets: pairs bought in the same order ------------------------------------
    matrix = baskets.matrix(lines)
    n_baskets = int(np.count_nonzero(np.diff(matrix.indptr)))
    if n_baskets == 0:
        raise StoreError("no baskets to learn from")
    basket_count = np.bincount(line_item, minlength=n_items).astype(np.int64)
    pairs, pair_count = pair_counts(matrix, opts.min_count)
    # the score is positive in both directions exactly when lift > 1: filter first
    a, b = pairs[:, 0], pairs[:, 1]
    positive = np.flatnonzero(
        (
            pair_count.astype(np.float64) * n_baskets
            > basket_count[a].astype(np.float64) * basket_count[b]
        )
        & (family[a] != family[b])
    )
    a, b, both = a[positive], b[positive], pair_count[positive]
    basket_table = _association_table(
        np.concatenate((a, b)),
        np.concatenate((b, a)),
        np.concatenate((both, both)),
        basket_count,
        basket_count / n_baskets,
        family,
        opts,
        n_items,
    )

    # -- customers: who bought what, first and last, and what they bought later -------
    bought = customer_items(baskets, lines)
    n_customers = int(np.unique(bought.customer).size)
    customer_count = np.bincount(bought.item, minlength=n_items).astype(np.int64)
    repeats = _repeat_purchases(bought, n_items, opts)
    later = _later_counts(bought, baskets.n_baskets, n_items)
    off_diagonal = (later.row != later.col) & (later.data >= opts.min_count)
    src = later.row[off_diagonal].astype(np.int64)
    dst = later.col[off_diagonal].astype(np.int64)
    later_count = later.data[off_diagonal].astype(np.int64)
    del later
    n_returning = int(repeats.pop("returning_customers")[0])
    returning_buyers = repeats["returning_buyers"]
    later_share = repeats["later_buyers"] / max(n_returning, 1)
    later_table = _association_table(
        src, dst, later_count, returning_buyers, later_share, None, opts, n_items
    )

    # -- upsell: pricier, same category, bought in a later order ----------------------
    upsell_table = _upsell_table(
        baskets.items, src, dst, later_count, returning_buyers, opts, n_items
    )

    # -- bundles ----------------------------------------------------------------------
    threshold = min_basket_count(n_baskets, opts.bundle_min_support, opts.bundle_min_count)
    frequent = pair_count >= threshold
    bundle_pairs, bundle_pair_count = pairs[frequent], pair_count[frequent]
    triples, triple_count = (
        triple_counts(matrix, bundle_pairs, threshold, n_items)
        if len(bundle_pairs)
        else (np.zeros((0, 3), dtype=np.int64), np.zeros(0, dtype=np.int64))
    )
    sets = Itemsets(n_baskets, basket_count, bundle_pairs, bundle_pair_count, triples, triple_count)
    bundle_list = bundle_frame(
        baskets.items, sets, min_lift=opts.bundle_min_lift, limit=opts.bundles_kept
    )

    items = baskets.items[["sku", "name", "category", "unit_price", "family"]].copy()
    items["baskets"] = basket_count
    items["customers"] = customer_count
    for column, values in repeats.items():
        items[column] = values
    return Recommender(
        items=items.reset_index(drop=True),
        n_baskets=n_baskets,
        n_customers=n_customers,
        n_returning=n_returning,
        basket=basket_table,
        later=later_table,
        upsell_table=upsell_table,
        bundle_list=bundle_list,
        built_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        options=opts,
    )


def _association_table(
    src: np.ndarray,
    dst: np.ndarray,
    count: np.ndarray,
    src_count: np.ndarray,
    base: np.ndarray,
    family: np.ndarray | None,
    opts: BuildOptions,
    n_items: int,
) -> Neighbours:
    """Directed entries src -> dst seen ``count`` times out of ``src_count[src]``, with
    dst's base rate ``base[dst]``: scored by shrunk added value, top-k per item (items
    of the same family left out when ``family`` is given)."""
    n_src = src_count[src].astype(np.float64)
    both = count.astype(np.float64)
    rate = base[dst]
    expected = n_src * rate
    score = (both - expected) / (n_src + opts.shrinkage)
    # and more than chance would give: a Poisson z-score of at least min_z
    keep = (score > 0) & (both - expected >= opts.min_z * np.sqrt(expected + 1.0))
    if family is not None:
        keep &= family[src] != family[dst]
    confidence = both[keep] / n_src[keep]
    return Neighbours.from_entries(
        n_items,
        src[keep],
        dst[keep],
        score[keep],
        confidence,
        confidence / rate[keep],
        count[keep],
        opts.top_k,
    )


def _later_counts(bought: CustomerItems, n_baskets: int, n_items: int) -> sp.coo_matrix:
    """For items i and j: customers who bought j in an order after their first order
    of i (the diagonal: customers who bought i again).

    ``B.T @ L`` where ``L`` marks each customer's last order of each item and ``B``
    marks, in every later order of the customer, the items first bought before it.
    """
    starts, sizes = segment_bounds(bought.customer)
    last_of_customer = np.repeat(np.maximum.reduceat(bought.last_basket, starts), sizes)
    slots = (last_of_customer - bought.first_basket).astype(np.int64)
    total = int(slots.sum())
    offset = np.cumsum(slots) - slots
    rows = np.repeat(bought.first_basket + 1 - offset, slots) + np.arange(total)
    before = sp.csr_matrix(
        (np.ones(total, dtype=np.int32), (rows, np.repeat(bought.item, slots))),
        shape=(n_baskets, n_items),
    )
    del rows
    last = sp.csr_matrix(
        (np.ones(bought.item.size, dtype=np.int32), (bought.last_basket, bought.item)),
        shape=(n_baskets, n_items),
    )
    return (before.T @ last).tocoo()


def _repeat_purchases(
    bought: CustomerItems, n_items: int, opts: BuildOptions
) -> dict[str, np.ndarray]:
    """Per item: ``returning_buyers`` (its buyers who ordered again after buying it),
    ``later_buyers`` (customers who bought it in a later order than their first),
    ``repeat_share`` (of the returning buyers, the share who bought it again),
    ``repeat_lift`` (repeat_share over the share of returning customers among the
    later buyers), ``product_type``, ``repurchase_days`` (median days between a
    customer's purchases of it, for consumables); and ``returning_customers``."""
    starts, sizes = segment_bounds(bought.customer)
    customer_first = np.minimum.reduceat(bought.first_basket, starts)
    customer_last = np.maximum.reduceat(bought.last_basket, starts)
    returning = int(np.count_nonzero(customer_last > customer_first))
    item = bought.item
    returning_buyers = np.bincount(
        item[bought.first_basket < np.repeat(customer_last, sizes)], minlength=n_items
    )
    later_buyers = np.bincount(
        item[bought.last_basket > np.repeat(customer_first, sizes)], minlength=n_items
    )
    repeat = bought.purchases >= 2
    repeat_buyers = np.bincount(item[repeat], minlength=n_items)
    base_rate = later_buyers / max(returning, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        repeat_share = np.where(
            returning_buyers > 0, repeat_buyers / np.maximum(returning_buyers, 1), 0.0
        )
        repeat_lift = np.where(base_rate > 0, repeat_share / base_rate, np.nan)
    consumable = (
        (repeat_buyers >= opts.min_repeat_buyers)
        & (repeat_share >= opts.min_repeat_share)
        & (repeat_lift >= opts.min_repeat_lift)
    )
    # durable: owners buy it again far less than others buy it later, or too few
    # owners came back to tell
    durable = ~consumable & (
        (returning_buyers < opts.min_repeat_buyers) | ~(repeat_lift >= opts.max_durable_repeat_lift)
    )
    first_ts, last_ts, purchases = bought.first_ts, bought.last_ts, bought.purchases
    gap_days = (last_ts[repeat] - first_ts[repeat]) / (purchases[repeat] - 1) / SECONDS_PER_DAY
    median_gap = (
        pd.Series(gap_days).groupby(item[repeat]).median().reindex(range(n_items)).to_numpy()
    )
    product_type = np.where(consumable, "consumable", np.where(durable, "durable", "repeatable"))
    return {
        "returning_buyers": returning_buyers.astype(np.int64),
        "later_buyers": later_buyers.astype(np.int64),
        "repeat_share": repeat_share,
        "repeat_lift": repeat_lift,
        "product_type": product_type.astype(object),
        "repurchase_days": np.where(consumable, median_gap, np.nan),
        "returning_customers": np.array([returning]),
    }


def _upsell_table(
    items: pd.DataFrame,
    src: np.ndarray,
    dst: np.ndarray,
    later_count: np.ndarray,
    returning_buyers: np.ndarray,
    opts: BuildOptions,
    n_items: int,
) -> Neighbours:
    """For each item i, pricier items j of its category that i's buyers bought in a
    later order; scored by the share of i's returning buyers who did."""
    category = pd.factorize(items["category"])[0]  # -1 where unknown
    price = items["unit_price"].to_numpy(dtype=np.float64)
    keep = (category[src] >= 0) & (category[src] == category[dst]) & (price[dst] > price[src])
    src, dst, count = src[keep], dst[keep], later_count[keep]
    share = count / np.maximum(returning_buyers[src], 1)
    return Neighbours.from_entries(
        n_items, src, dst, share, share, price[dst] / price[src], count, opts.top_k
    )


# -- batch helpers shared with personal recommendations and the evaluation ----------------
def _pair_keys(owner: np.ndarray, value: np.ndarray, width: int) -> np.ndarray:
    return np.unique(owner * width + value)


def _isin_sorted(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    if sorted_set.size == 0 or values.size == 0:
        return np.zeros(values.size, dtype=bool)
    at = np.minimum(np.searchsorted(sorted_set, values), sorted_set.size - 1)
    return sorted_set[at] == values


def _aggregate(
    owner: np.ndarray,
    item: np.ndarray,
    contribution: np.ndarray,
    source: np.ndarray,
    confidence: np.ndarray,
    n_items: int,
) -> dict[str, np.ndarray]:
    """Sum contributions per (owner, item); the largest one names the reason."""
    key = owner * n_items + item
    order = np.lexsort((-contribution, key))
    key = key[order]
    starts, _ = segment_bounds(key)
    total = np.add.reduceat(contribution[order], starts) if starts.size else np.zeros(0)
    best = order[starts]
    return {
        "owner": owner[best],
        "item": item[best],
        "score": total,
        "kind": np.zeros(best.size, dtype=np.int64),
        "source": source[best],
        "confidence": confidence[best],
    }


def _top_k(ranked: dict[str, np.ndarray], k: int, *, by_kind: bool = True) -> dict[str, np.ndarray]:
    """Best ``k`` rows per owner: by kind when ``by_kind`` (found before filled), then
    score (high first), then tiebreak."""
    tiebreak = ranked.get("tiebreak", np.zeros(ranked["owner"].size))
    kind = ranked["kind"] if by_kind else np.zeros(ranked["owner"].size)
    order = np.lexsort((ranked["item"], tiebreak, -ranked["score"], kind, ranked["owner"]))
    owner = ranked["owner"][order]
    starts, sizes = segment_bounds(owner)
    rank = np.arange(owner.size) - np.repeat(starts, sizes)
    chosen = order[rank < k]
    return {name: values[chosen] for name, values in ranked.items() if name != "tiebreak"}


def _check_k(k: int) -> None:
    if not isinstance(k, int | np.integer) or k < 1:
        raise DataError("k is how many recommendations to return", value=k, expected="1 or more")


def _pct(share: float) -> str:
    return f"{share:.0%}" if share >= 0.01 else f"{share:.1%}" if share >= 0.001 else "under 0.1%"
