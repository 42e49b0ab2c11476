"""Personal recommendations: what each customer is likely to buy next.

For a customer with a purchase history, every product j gets::

    score(j) = later_share(j) + sum over the products i they bought of  w_i * later(i -> j)

``later_share(j)`` is the share of returning customers who bought j in a later
order than their first; ``later(i -> j)`` is the shrunk added value of having
bought i for buying j later (the ``later`` table of
:mod:`retain.recommend.tables`); ``w_i`` halves every ``half_life_days`` since
they last bought i. With one product bought, the score is the (shrunk) share of
its buyers who went on to buy j: the chance of buying j, from popularity raised
by what their own purchases say.

A product the customer already bought is never suggested as a new one, and its
``product_type`` (see :class:`retain.recommend.tables.Recommender`) says what
else follows: no other product of an owned durable good's family is suggested
either; a consumable comes back, as a replenishment, once its repurchase
interval has (all but) passed since they last bought it (their own mean
interval when they bought it twice or more, else the item's median interval;
``replenish_early`` = 0.25 makes it due after 75% of the interval), scored by
the share of its buyers who buy it again. (The offline evaluation predicts the
next basket, repeat purchases included: it ranks owned repeatable products like
any other, ``rank_customers(..., repeat_owned=True)``.)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from numpy.typing import NDArray

from retain.config import load_settings, observation_day
from retain.errors import DataError, StoreError
from retain.recommend.baskets import SECONDS_PER_DAY, temp_name
from retain.recommend.tables import (
    Recommender,
    _check_k,
    _isin_sorted,
    _pair_keys,
    _pct,
    _top_k,
    load_or_build,
)
from retain.row_numbers import SortedRowNumbers
from retain.store import Store

KIND_NAMES = {0: "bought_later_by_similar_customers", 1: "popular", 2: "replenish"}
PERSONAL_COLUMNS = ["customer_id", "rank", "sku", "name", "score", "reason", "kind"]

# Each customer's products up to the observation moment, as codes: {owners} maps
# customer_id to its owner code, {items} sku to the recommender's item code.
HISTORY_SQL = """
SELECT
    w.owner,
    i.item,
    min(epoch(o.ordered_at))    AS first_ts,
    max(epoch(o.ordered_at))    AS last_ts,
    count(DISTINCT o.order_id)  AS purchases
FROM order_lines AS l
JOIN orders AS o USING (order_id)
JOIN {owners} AS w USING (customer_id)
JOIN {items} AS i USING (sku)
WHERE o.ordered_at <= $as_of
GROUP BY w.owner, i.item
ORDER BY w.owner
"""

# HISTORY_SQL for every customer at once: each order's products made distinct first, so
# that a customer's purchases of a product are a count, not a distinct count (at 1M
# customers half the time and a fifth less memory); in (owner, item) order.
ALL_HISTORIES_SQL = """
SELECT
    w.owner,
    i.item,
    min(epoch(o.ordered_at))    AS first_ts,
    max(epoch(o.ordered_at))    AS last_ts,
    count(*)                    AS purchases
FROM (SELECT DISTINCT order_id, sku FROM order_lines) AS l
JOIN orders AS o USING (order_id)
JOIN {owners} AS w USING (customer_id)
JOIN {items} AS i USING (sku)
WHERE o.ordered_at <= $as_of
GROUP BY w.owner, i.item
ORDER BY w.owner, i.item
"""

# Customers scored at once: bounds the memory of the neighbour expansion.
CHUNK_CUSTOMERS = 50_000


def rank_customers(
    rec: Recommender,
    owner: np.ndarray,
    item: np.ndarray,
    first_ts: np.ndarray,
    last_ts: np.ndarray,
    purchases: np.ndarray,
    as_of: np.ndarray,
    n_owners: int,
    k: int,
    *,
    half_life_days: float = 365.0,
    replenish_early: float = 0.25,
    neighbours: int = 20,
    repeat_owned: bool = True,
) -> dict[str, np.ndarray]:
    """Personal recommendations for many customers at once.

    Rows (owner, item, first_ts, last_ts, purchases) are each customer's history
    (times in seconds since 1970-01-01 UTC); ``as_of`` holds each owner's moment
    of recommendation in the same unit. Returns arrays ``owner``, ``item``,
    ``score``, ``kind`` (0 similar customers, 1 popular, 2 replenish),
    ``source``, ``confidence``, ``interval_days``, ``days_since``; best first per
    owner, at most ``k`` per owner. ``replenish_early``: share of the repurchase
    interval before its end from which a consumable is due (0.25: after 75% of it);
    ``neighbours``: how many of each bought product's ``later`` list count.
    ``repeat_owned``: rank owned repeatable products like any other, as a prediction
    of the next basket does (:func:`retain.recommend.evaluate`); False leaves out
    everything owned but a due consumable, as suggestions to a customer do
    (:func:`recommend_for_customers`).
    """
    _check_k(k)
    if half_life_days <= 0:
        raise DataError("half_life_days must be positive", value=half_life_days, expected="> 0")
    if not 0 <= replenish_early < 1:
        raise DataError(
            "replenish_early is a share of the interval",
            value=replenish_early,
            expected="0 <= x < 1",
        )
    n_items, n_fam = rec.n_items, int(rec.family.max()) + 1
    days_since = np.maximum(as_of[owner] - last_ts, 0) / SECONDS_PER_DAY
    weight = 0.5 ** (days_since / half_life_days)

    interval = rec.repurchase_days
    product_code = rec.product_code[item]
    consumable = product_code == 2
    durable = product_code == 0
    own_interval = np.where(
        purchases >= 2,
        (last_ts - first_ts) / np.maximum(purchases - 1, 1) / SECONDS_PER_DAY,
        interval[item],
    )
    due = consumable & (days_since >= (1.0 - replenish_early) * own_interval)
    # owned durables and consumables are not suggested as new products (a due
    # consumable comes back below as a replenishment), nor owned repeatable products
    # unless asked
    blocked = durable | consumable if repeat_owned else np.ones(item.size, dtype=bool)
    owned = _pair_keys(owner[blocked], item[blocked], n_items)
    durable_families = _pair_keys(owner[durable], rec.family[item[durable]], n_fam)

    share = rec.later_share
    table = rec.later
    row, pos, who = table.expand(owner, item, neighbours)
    candidate = table.other[pos]
    contribution = weight[row] * table.score[pos]

    # best sellers for every owner, enough to fill k places after their blocked ones
    popular = rec.popular_later
    blocked_count = np.bincount(owner[blocked], minlength=n_owners)
    depth = np.minimum(popular.size, 2 * k + 10 + 2 * blocked_count)
    pop_owner = np.repeat(np.arange(n_owners), depth)
    pop_item = popular[np.arange(int(depth.sum())) - np.repeat(np.cumsum(depth) - depth, depth)]
    pop_kept = ~_isin_sorted(pop_owner * n_items + pop_item, owned) & ~_isin_sorted(
        pop_owner * n_fam + rec.family[pop_item], durable_families
    )
    # the k-th best seller left to an owner bounds their k-th best score from below
    kept_so_far = np.cumsum(pop_kept)
    block_start = np.cumsum(depth) - depth
    kept_before = np.where(block_start > 0, kept_so_far[np.maximum(block_start - 1, 0)], 0)
    kept_rank = kept_so_far - np.repeat(kept_before, depth)  # 1 for an owner's first kept
    at_k = pop_kept & (kept_rank == k)
    bound = np.full(n_owners, -np.inf)
    bound[pop_owner[at_k]] = share[pop_item[at_k]]

    # evidence summed per (owner, product); best sellers join with none
    summed = sp.csr_matrix(
        (
            np.concatenate((contribution, np.zeros(pop_owner.size))),
            (np.concatenate((who, pop_owner)), np.concatenate((candidate, pop_item))),
        ),
        shape=(n_owners, n_items),
    )
    summed.sum_duplicates()
    cand_owner = np.repeat(np.arange(n_owners), np.diff(summed.indptr))
    cand_item = summed.indices.astype(np.int64)
    evidence = summed.data
    score = share[cand_item] + evidence
    keep = score >= bound[cand_owner]
    keep[keep] = ~_isin_sorted(cand_owner[keep] * n_items + cand_item[keep], owned) & ~_isin_sorted(
        cand_owner[keep] * n_fam + rec.family[cand_item[keep]], durable_families
    )

    repeat_share = rec.repeat_share
    n_due = int(due.sum())
    n_kept = int(keep.sum())
    evidence_kept = evidence[keep]
    item_kept = cand_item[keep]
    # the history "explains" a product when it at least doubles its base chance
    explained = (evidence_kept > 0) & (evidence_kept >= share[item_kept])
    ranked = {
        "owner": np.concatenate((cand_owner[keep], owner[due])),
        "item": np.concatenate((item_kept, item[due])),
        "score": np.concatenate((score[keep], repeat_share[item[due]])),
        "kind": np.concatenate((np.where(explained, 0, 1), np.full(n_due, 2))),
        "source": np.concatenate((np.full(n_kept, -1), item[due])),
        "confidence": np.concatenate((np.full(n_kept, np.nan), repeat_share[item[due]])),
        "interval_days": np.concatenate((np.full(n_kept, np.nan), own_interval[due])),
        "days_since": np.concatenate((np.full(n_kept, np.nan), days_since[due])),
        # among equal scores, the more popular first
        "tiebreak": np.concatenate((rec.popular_rank_later[item_kept], np.zeros(n_due))),
    }
    ranked = _top_k(ranked, k, by_kind=False)

    # the reason of an explained product: the purchase that raised it most
    chosen = np.flatnonzero(ranked["kind"] == 0)
    if chosen.size:
        keys = ranked["owner"][chosen] * n_items + ranked["item"][chosen]
        order = np.argsort(keys)
        entry_keys = who * n_items + candidate
        mine = np.flatnonzero(_isin_sorted(entry_keys, keys[order]))
        mine = mine[np.lexsort((-contribution[mine], entry_keys[mine]))]
        first = np.insert(entry_keys[mine][1:] != entry_keys[mine][:-1], 0, True)
        best = mine[first]
        at = order[np.searchsorted(keys[order], entry_keys[best])]
        ranked["source"][chosen[at]] = item[row[best]]
        ranked["confidence"][chosen[at]] = table.confidence[pos[best]]
    return ranked


def reasons(rec: Recommender, ranked: dict[str, np.ndarray]) -> list[str]:
    """A sentence per recommendation saying why it is there."""
    share = rec.later_share
    out = []
    for item, kind, source, conf, interval, since in zip(
        ranked["item"].tolist(),
        ranked["kind"].tolist(),
        ranked["source"].tolist(),
        ranked["confidence"].tolist(),
        ranked["interval_days"].tolist(),
        ranked["days_since"].tolist(),
        strict=True,
    ):
        if kind == 0:
            out.append(
                f"bought later by {_pct(conf)} of the customers who bought {rec.name(source)}"
            )
        elif kind == 2:
            out.append(
                f"time to replenish: bought about every {interval:.0f} days, "
                f"last bought {since:.0f} days ago"
            )
        else:
            out.append(f"popular: {_pct(share[item])} of returning customers buy it")
    return out


def _as_of_seconds(store: Store, as_of: str | dt.date | dt.datetime | None) -> float:
    if as_of is None:
        store.require_orders()
        if load_settings(store).as_of is not None:
            as_of = observation_day(store)  # the store's observation date, the whole day
        else:
            as_of = store.scalar("SELECT max(ordered_at) FROM orders")
    try:
        stamp = pd.Timestamp(as_of)
    except (ValueError, TypeError) as exc:
        raise DataError("as_of is not a date", value=as_of, expected="YYYY-MM-DD") from exc
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    if (isinstance(as_of, str) and len(as_of) <= 10) or type(as_of) is dt.date:
        stamp = stamp + pd.Timedelta(days=1) - pd.Timedelta(microseconds=1)  # the whole day
    return float(stamp.timestamp())


def recommend_for_customers(
    store: Store,
    customer_ids: list[str] | None = None,
    k: int = 10,
    *,
    recommender: Recommender | None = None,
    as_of: str | dt.date | dt.datetime | None = None,
    half_life_days: float = 365.0,
    replenish_early: float = 0.25,
    include_owned: bool = False,
) -> pd.DataFrame:
    """Up to ``k`` personal recommendations for each customer (all of them when
    ``customer_ids`` is None), from their purchases up to ``as_of`` (default: the
    last order in the store; a date means the end of that day, UTC).
    ``half_life_days``: days after which a past purchase counts half as much.
    Nothing the customer already bought is suggested, except a consumable that is
    due again (kind ``replenish``); ``include_owned`` also ranks the repeatable
    products they bought among the others.

    Columns: ``customer_id``, ``rank`` (1 = best), ``sku``, ``name``, ``score``
    (estimated chance they buy it; see :mod:`retain.recommend.personal`),
    ``reason``, ``kind`` (bought_by_similar_customers, popular or replenish).
    Customers without order lines get the most popular products.
    """
    _check_k(k)
    rec = recommender or load_or_build(store)
    as_of_s = _as_of_seconds(store, as_of)
    params: dict[str, Any] = {"as_of": pd.Timestamp(as_of_s, unit="s")}
    con = store.con
    if customer_ids is None:
        ids = con.execute(
            "SELECT DISTINCT customer_id FROM orders WHERE ordered_at <= $as_of "
            "ORDER BY customer_id",
            params,
        ).df()["customer_id"]
    else:
        ids = pd.Series(list(customer_ids), dtype=object).drop_duplicates()
    ids = ids.reset_index(drop=True)
    owners, items = temp_name("rec_owners"), temp_name("rec_items")
    con.register(owners, pd.DataFrame({"customer_id": ids, "owner": np.arange(len(ids))}))
    con.register(items, pd.DataFrame({"sku": rec._skus, "item": np.arange(rec.n_items)}))
    try:
        history = con.execute(HISTORY_SQL.format(owners=owners, items=items), params).fetchnumpy()
    finally:
        con.unregister(owners)
        con.unregister(items)
    owner = np.asarray(history["owner"], dtype=np.int64)
    item = np.asarray(history["item"], dtype=np.int64)
    first_ts = np.asarray(history["first_ts"], dtype=np.float64)
    last_ts = np.asarray(history["last_ts"], dtype=np.float64)
    purchases = np.asarray(history["purchases"], dtype=np.int64)
    parts = []
    for lo in range(0, max(len(ids), 1), CHUNK_CUSTOMERS):
        hi = min(lo + CHUNK_CUSTOMERS, len(ids))
        a, b = np.searchsorted(owner, [lo, hi])
        part = rank_customers(
            rec,
            owner[a:b] - lo,
            item[a:b],
            first_ts[a:b],
            last_ts[a:b],
            purchases[a:b],
            np.full(hi - lo, as_of_s),
            hi - lo,
            k,
            half_life_days=half_life_days,
            replenish_early=replenish_early,
            repeat_owned=include_owned,
        )
        part["owner"] = part["owner"] + lo
        parts.append(part)
    ranked = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    return personal_frame(rec, ranked, np.asarray(ids, dtype=object))


def personal_frame(
    rec: Recommender, ranked: dict[str, np.ndarray], customer_ids: np.ndarray
) -> pd.DataFrame:
    """The ranked arrays as a DataFrame with PERSONAL_COLUMNS."""
    owner = ranked["owner"]
    starts = np.flatnonzero(np.insert(owner[1:] != owner[:-1], 0, True)) if owner.size else owner
    sizes = np.diff(np.append(starts, owner.size))
    items = ranked["item"]
    return pd.DataFrame(
        {
            "customer_id": customer_ids[owner] if owner.size else [],
            "rank": np.arange(owner.size) - np.repeat(starts, sizes) + 1,
            "sku": rec.items["sku"].to_numpy(dtype=object)[items],
            "name": np.asarray(rec._names, dtype=object)[items],
            "score": np.round(ranked["score"], 6),
            "reason": reasons(rec, ranked),
            "kind": [KIND_NAMES[int(x)] for x in ranked["kind"]],
        },
        columns=PERSONAL_COLUMNS,
    )


def recommend_for_customer(
    store: Store,
    customer_id: str,
    k: int = 10,
    *,
    recommender: Recommender | None = None,
    as_of: str | dt.date | dt.datetime | None = None,
    half_life_days: float = 365.0,
    replenish_early: float = 0.25,
    include_owned: bool = False,
) -> list[dict]:
    """Up to ``k`` products for one customer, best first, as dicts with ``sku``,
    ``name``, ``score``, ``reason`` and ``kind`` (see :func:`recommend_for_customers`).
    Raises :class:`DataError` when the store has no orders from this customer."""
    if not store.scalar("SELECT count(*) FROM orders WHERE customer_id = ?", [customer_id]):
        raise DataError(
            "no orders from this customer in the store",
            value=customer_id,
            expected="a customer_id from the orders table",
        )
    frame = recommend_for_customers(
        store,
        [customer_id],
        k,
        recommender=recommender,
        as_of=as_of,
        half_life_days=half_life_days,
        replenish_early=replenish_early,
        include_owned=include_owned,
    )
    return frame.drop(columns=["customer_id", "rank"]).to_dict(orient="records")


@dataclass(frozen=True)
class CustomerHistories:
    """Every customer's purchases up to one moment, held compactly in memory, so that one
    customer's recommendations are ranked on demand in well under a millisecond (a
    store's customers at once take minutes). :func:`load_histories` reads them in one
    pass; :func:`recommend_from_history` ranks one customer exactly as
    :func:`recommend_for_customers` ranks them among all the others.

    ``customer_ids`` is sorted; customer ``i``'s products are rows ``starts[i]`` to
    ``starts[i + 1]`` of ``item``, ``first_ts``, ``last_ts`` (seconds since
    1970-01-01 UTC) and ``purchases``; ``as_of_s`` is the moment of recommendation.

    Held in as little memory as keeps every value (at 1M customers 110 MB, where the
    arrays as they are read took 216): ``ids`` finds a customer's place
    (:class:`~retain.row_numbers.SortedRowNumbers`), the times are
    ``ts_base`` plus ``first_offsets`` and ``last_offsets`` (whole seconds from the
    earliest in 32 bits when every time is a whole second within 136 years of it, else
    the times themselves), ``purchases`` in 16 bits when every count fits.
    """

    recommender: Recommender
    ids: SortedRowNumbers
    starts: np.ndarray
    item: np.ndarray
    ts_base: float
    first_offsets: np.ndarray
    last_offsets: np.ndarray
    purchases: np.ndarray
    as_of_s: float
    skus: np.ndarray = field(repr=False)
    names: np.ndarray = field(repr=False)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def customer_ids(self) -> np.ndarray:
        """The customer ids, sorted (an array made on each call)."""
        return np.array(list(self.ids), dtype=object)

    @property
    def first_ts(self) -> np.ndarray:
        """Each row's first purchase, seconds since 1970-01-01 UTC (an array made on each
        call: :meth:`rows` gives one customer's)."""
        return self.ts_base + self.first_offsets.astype(np.float64)

    @property
    def last_ts(self) -> np.ndarray:
        """Each row's last purchase, as :attr:`first_ts`."""
        return self.ts_base + self.last_offsets.astype(np.float64)

    def position(self, customer_id: str) -> int | None:
        """The customer's place in ``customer_ids``, or None when they have no orders."""
        at: int | None = self.ids.get(customer_id)
        return at

    def rows(self, at: int) -> dict[str, np.ndarray]:
        """The purchases of the customer at place ``at`` as :func:`rank_customers` takes
        them: ``item``, ``first_ts``, ``last_ts`` (float64 seconds) and ``purchases``."""
        a, b = int(self.starts[at]), int(self.starts[at + 1])
        return {
            "item": self.item[a:b].astype(np.int64),
            "first_ts": self.ts_base + self.first_offsets[a:b].astype(np.float64),
            "last_ts": self.ts_base + self.last_offsets[a:b].astype(np.float64),
            "purchases": self.purchases[a:b].astype(np.int64),
        }


def _compact_times(
    first_ts: np.ndarray, last_ts: np.ndarray
) -> tuple[float, np.ndarray, np.ndarray]:
    """``(base, first, last)`` with ``base + first`` and ``base + last`` (as float64) equal
    to ``first_ts`` and ``last_ts``: whole seconds after the earliest in uint32 when every
    time is a whole second within 2**32 s of it (sums of integers below 2**53 are exact),
    else the times themselves as float64 and base 0."""
    first = np.asarray(first_ts, dtype=np.float64)
    last = np.asarray(last_ts, dtype=np.float64)
    if not first.size:
        return 0.0, first, last
    base = float(min(first.min(), last.min()))  # NaN when one is missing
    top = float(max(first.max(), last.max()))
    if not (math.isfinite(base) and math.isfinite(top)):
        return 0.0, first, last
    if top - base >= 2**32 or max(abs(base), abs(top)) >= 2**52:
        return 0.0, first, last
    held = []
    for times in (first, last):
        shifted = times - base
        offsets = shifted.astype(np.uint32)
        if not np.array_equal(offsets, shifted):  # a fraction of a second
            return 0.0, first, last
        held.append(offsets)
    return base, held[0], held[1]


def load_histories(
    store: Store,
    *,
    recommender: Recommender | None = None,
    as_of: str | dt.date | dt.datetime | None = None,
) -> CustomerHistories:
    """The purchases of every customer with an order (up to ``as_of``, default as in
    :func:`recommend_for_customers`), in one pass over the order lines."""
    rec = recommender or load_or_build(store)
    as_of_s = _as_of_seconds(store, as_of)
    params: dict[str, Any] = {"as_of": pd.Timestamp(as_of_s, unit="s")}
    con = store.con
    fetched = con.execute("SELECT DISTINCT customer_id FROM orders").fetchnumpy()["customer_id"]
    ids = np.asarray(fetched, dtype=object)
    ids = ids[np.argsort(ids, kind="stable")] if len(ids) else ids
    owners, items = temp_name("rec_owners"), temp_name("rec_items")
    con.register(owners, pd.DataFrame({"customer_id": ids, "owner": np.arange(len(ids))}))
    con.register(items, pd.DataFrame({"sku": rec._skus, "item": np.arange(rec.n_items)}))
    try:
        history = con.execute(
            ALL_HISTORIES_SQL.format(owners=owners, items=items), params
        ).fetchnumpy()
    finally:
        con.unregister(owners)
        con.unregister(items)
    owner = np.asarray(history["owner"], dtype=np.int64)
    return _histories(rec, ids, owner, history, as_of_s)


def _histories(
    recommender: Recommender,
    ids: Any,
    owner: NDArray[np.int64],
    history: dict[str, Any],
    as_of_s: float,
) -> CustomerHistories:
    """:class:`CustomerHistories` from the rows of every customer's purchases (``owner``:
    each row's customer, ascending; ``history``: its ``item``, ``first_ts``, ``last_ts``
    and ``purchases``), however they were read."""
    item_type = np.int16 if recommender.n_items <= np.iinfo(np.int16).max else np.int32
    starts = np.searchsorted(owner, np.arange(len(ids) + 1, dtype=owner.dtype))
    purchases = np.asarray(history["purchases"])
    counts = (
        np.int16 if not purchases.size or purchases.max() <= np.iinfo(np.int16).max else np.int32
    )
    base, first, last = _compact_times(history["first_ts"], history["last_ts"])
    return CustomerHistories(
        recommender=recommender,
        ids=SortedRowNumbers(ids.tolist() if isinstance(ids, np.ndarray) else list(ids)),
        starts=starts.astype(np.int32 if starts[-1] <= np.iinfo(np.int32).max else np.int64),
        item=np.asarray(history["item"]).astype(item_type),
        ts_base=base,
        first_offsets=first,
        last_offsets=last,
        purchases=purchases.astype(counts),
        as_of_s=float(as_of_s),
        skus=recommender.items["sku"].to_numpy(dtype=object),
        names=np.asarray(recommender._names, dtype=object),
    )


# What a customer's purchases are read from: every order's customer and moment, and every
# order's products. Saved histories are used only while these hash the same (a write to
# either, an order replaced included, makes them stale); some 0.5 s at 1M customers.
HISTORY_SOURCE_SQL = """
SELECT (SELECT count(*) FROM orders),
       (SELECT coalesce(bit_xor(hash(order_id, customer_id, ordered_at)), 0) FROM orders),
       (SELECT count(*) FROM order_lines),
       (SELECT coalesce(bit_xor(hash(order_id, sku)), 0) FROM order_lines)
"""


def history_source(store: Store) -> str:
    """A digest of the rows every customer's purchases come from (:data:`HISTORY_SOURCE_SQL`)."""
    row = store.con.execute(HISTORY_SOURCE_SQL).fetchall()[0]
    return ":".join(str(value) for value in row)


def _items_digest(skus: np.ndarray) -> str:
    """The recommender's item codes (each code's SKU, in code order) as one digest."""
    return hashlib.sha256("\n".join(str(s) for s in skus).encode()).hexdigest()


def save_histories(store: Store, histories: CustomerHistories) -> None:
    """Keep ``histories`` in the store (``recommend_histories``, with their customers and
    what they were read from), so that :func:`saved_histories` reads them as coded arrays
    instead of grouping every order line again (at 1M customers 7 s and 1.2 GB of DuckDB
    working memory). Written by ``retain recommend build``."""
    if not store.has_table("recommend_histories"):
        raise StoreError(
            f"the store {store.path} predates saved purchase histories: "
            "open it read-write once to upgrade it"
        )
    owner = np.repeat(np.arange(len(histories), dtype=np.int32), np.diff(histories.starts))
    rows = pd.DataFrame(
        {
            "owner": owner,
            "item": histories.item.astype(np.int32),
            "first_ts": histories.first_ts,
            "last_ts": histories.last_ts,
            "purchases": histories.purchases.astype(np.int32),
        }
    )
    people = pd.DataFrame(
        {"owner": np.arange(len(histories), dtype=np.int32), "customer_id": histories.customer_ids}
    )
    basis = pd.DataFrame(
        {
            "as_of_s": [histories.as_of_s],
            "source": [history_source(store)],
            "items": [_items_digest(histories.skus)],
        }
    )
    with store.transaction() as con:
        for table_name, frame in (
            ("recommend_histories", rows),
            ("recommend_history_customers", people),
            ("recommend_history_basis", basis),
        ):
            con.execute(f"DELETE FROM {table_name}")
            view = temp_name("incoming")
            con.register(view, frame)
            names = ", ".join(frame.columns)
            con.execute(f"INSERT INTO {table_name} ({names}) SELECT {names} FROM {view}")
            con.unregister(view)


def saved_histories(store: Store, recommender: Recommender) -> CustomerHistories | None:
    """The histories :func:`save_histories` kept, when they are what :func:`load_histories`
    would read now for ``recommender`` (same orders and order lines, same moment of
    recommendation, same item codes); else None."""
    if not store.has_table("recommend_history_basis"):
        return None
    basis = store.con.execute(
        "SELECT as_of_s, source, items FROM recommend_history_basis"
    ).fetchall()
    if len(basis) != 1:
        return None
    as_of_s, source, items = basis[0]
    skus = recommender.items["sku"].to_numpy(dtype=object)
    if items != _items_digest(skus) or as_of_s != _as_of_seconds(store, None):
        return None
    if source != history_source(store):
        return None
    # read in the order they were written, (owner, item), put in it again if ever not:
    # DuckDB's ORDER BY of 7M rows doubled the memory of reading them (1M customers)
    con = store.con
    people = con.execute("SELECT owner, customer_id FROM recommend_history_customers").fetchnumpy()
    ids = np.asarray(people["customer_id"], dtype=object)
    order = np.asarray(people["owner"], dtype=np.int64)
    if not np.array_equal(order, np.arange(len(order))):
        ids = ids[np.argsort(order, kind="stable")]
    history = con.execute(
        "SELECT owner, item, first_ts, last_ts, purchases FROM recommend_histories"
    ).fetchnumpy()
    # compared as stored (int32): int64 copies of 7M rows each added to the load's peak
    owner = np.asarray(history["owner"])
    item = np.asarray(history["item"])
    if owner.size and not np.all(
        (owner[1:] > owner[:-1]) | ((owner[1:] == owner[:-1]) & (item[1:] > item[:-1]))
    ):
        rows = np.lexsort((item, owner))
        history = {name: np.asarray(values)[rows] for name, values in history.items()}
        owner = owner[rows]
    return _histories(recommender, ids, owner, history, as_of_s)


def recommend_from_history(
    histories: CustomerHistories,
    customer_id: str,
    k: int = 10,
    *,
    half_life_days: float = 365.0,
    replenish_early: float = 0.25,
    include_owned: bool = False,
) -> list[dict] | None:
    """Up to ``k`` products for one customer of ``histories``, best first, as dicts with
    ``sku``, ``name``, ``score``, ``reason`` and ``kind``: the rows
    :func:`recommend_for_customers` gives them (same arguments, same ``as_of``). None
    when the customer had no order when the histories were loaded."""
    at = histories.position(customer_id)
    if at is None:
        return None
    bought = histories.rows(at)
    rec = histories.recommender
    ranked = rank_customers(
        rec,
        np.zeros(bought["item"].size, dtype=np.int64),
        bought["item"],
        bought["first_ts"],
        bought["last_ts"],
        bought["purchases"],
        np.full(1, histories.as_of_s),
        1,
        k,
        half_life_days=half_life_days,
        replenish_early=replenish_early,
        repeat_owned=include_owned,
    )
    items = ranked["item"]
    return [
        {"sku": sku, "name": name, "score": float(score), "reason": reason, "kind": kind}
        for sku, name, score, reason, kind in zip(
            histories.skus[items].tolist(),
            histories.names[items].tolist(),
            np.round(ranked["score"], 6).tolist(),
            reasons(rec, ranked),
            [KIND_NAMES[int(x)] for x in ranked["kind"]],
            strict=True,
        )
    ]
