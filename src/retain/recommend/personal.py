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

Owned products follow their ``product_type`` (see
:class:`retain.recommend.tables.Recommender`): a durable good is not suggested
again, nor another of its product family; a consumable comes back once its
repurchase interval has (all but) passed since they last bought it (their own
mean interval when they bought it twice or more, else the item's median
interval; ``replenish_early`` = 0.25 makes it due after 75% of the interval),
scored by the share of its buyers who buy it again; a repeatable product is
ranked like any other.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd

from retain.errors import DataError
from retain.recommend.baskets import SECONDS_PER_DAY
from retain.recommend.tables import (
    Recommender,
    _aggregate,
    _check_k,
    _isin_sorted,
    _pair_keys,
    _pct,
    _top_k,
    load_or_build,
)
from retain.store import Store

KIND_NAMES = {0: "bought_later_by_similar_customers", 1: "popular", 2: "replenish"}
PERSONAL_COLUMNS = ["customer_id", "rank", "sku", "name", "score", "reason", "kind"]

HISTORY_SQL = """
SELECT
    o.customer_id,
    l.sku,
    min(epoch(o.ordered_at))    AS first_ts,
    max(epoch(o.ordered_at))    AS last_ts,
    count(DISTINCT o.order_id)  AS purchases
FROM order_lines AS l
JOIN orders AS o USING (order_id)
WHERE o.ordered_at <= $as_of {only}
GROUP BY o.customer_id, l.sku
"""


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
) -> dict[str, np.ndarray]:
    """Personal recommendations for many customers at once.

    Rows (owner, item, first_ts, last_ts, purchases) are each customer's history
    (times in seconds since 1970-01-01 UTC); ``as_of`` holds each owner's moment
    of recommendation in the same unit. Returns arrays ``owner``, ``item``,
    ``score``, ``kind`` (0 similar customers, 1 popular, 2 replenish),
    ``source``, ``confidence``, ``interval_days``, ``days_since``; best first per
    owner, at most ``k`` per owner. ``replenish_early``: share of the repurchase
    interval before its end from which a consumable is due (0.25: after 75% of it).
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

    interval = rec.items["repurchase_days"].to_numpy(dtype=np.float64)
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
    # consumable comes back below as a replenishment); repeatable products may be
    blocked = durable | consumable
    owned = _pair_keys(owner[blocked], item[blocked], n_items)
    durable_families = _pair_keys(owner[durable], rec.family[item[durable]], n_fam)

    table = rec.later
    row, pos, who = table.expand(owner, item)
    candidate = table.other[pos]
    keep = ~_isin_sorted(who * n_items + candidate, owned) & ~_isin_sorted(
        who * n_fam + rec.family[candidate], durable_families
    )
    agg = _aggregate(
        who[keep],
        candidate[keep],
        weight[row[keep]] * table.score[pos[keep]],
        item[row[keep]],
        table.confidence[pos[keep]],
        n_items,
    )
    share = rec.later_share
    agg["score"] = share[agg["item"]] + agg["score"]

    history_size = np.bincount(owner, minlength=n_owners) if owner.size else np.zeros(1)
    filled = rec._fill(
        agg,
        n_owners,
        k,
        rec.popular_later,
        durable_families,
        share,
        int(history_size.max(initial=0)),
    )
    # owned durables and consumables among the best sellers: drop those
    filled_keep = ~_isin_sorted(filled["owner"] * n_items + filled["item"], owned)
    filled = {name: values[filled_keep] for name, values in filled.items()}

    repeat_share = rec.items["repeat_share"].to_numpy(dtype=np.float64)
    n_due = int(due.sum())
    nan = np.full(filled["owner"].size, np.nan)
    ranked = {
        "owner": np.concatenate((filled["owner"], owner[due])),
        "item": np.concatenate((filled["item"], item[due])),
        "score": np.concatenate((filled["score"], repeat_share[item[due]])),
        "kind": np.concatenate((filled["kind"], np.full(n_due, 2))),
        "source": np.concatenate((filled["source"], item[due])),
        "confidence": np.concatenate((filled["confidence"], repeat_share[item[due]])),
        "interval_days": np.concatenate((nan, own_interval[due])),
        "days_since": np.concatenate((nan, days_since[due])),
        "tiebreak": np.concatenate((filled["tiebreak"], np.zeros(n_due))),
    }
    return _top_k(ranked, k, by_kind=False)


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
) -> pd.DataFrame:
    """Up to ``k`` personal recommendations for each customer (all of them when
    ``customer_ids`` is None), from their purchases up to ``as_of`` (default: the
    last order in the store; a date means the end of that day, UTC).
    ``half_life_days``: days after which a past purchase counts half as much.

    Columns: ``customer_id``, ``rank`` (1 = best), ``sku``, ``name``, ``score``
    (estimated chance they buy it; see :mod:`retain.recommend.personal`),
    ``reason``, ``kind`` (bought_by_similar_customers, popular or replenish).
    Customers without order lines get the most popular products.
    """
    _check_k(k)
    rec = recommender or load_or_build(store)
    as_of_s = _as_of_seconds(store, as_of)
    params: dict[str, Any] = {"as_of": pd.Timestamp(as_of_s, unit="s")}
    only = ""
    con = store.con
    wanted = None
    if customer_ids is not None:
        wanted = pd.DataFrame({"customer_id": pd.Series(list(customer_ids), dtype=object)})
        con.register("_wanted_customers", wanted)
        only = "AND o.customer_id IN (SELECT customer_id FROM _wanted_customers)"
    try:
        history = con.execute(HISTORY_SQL.format(only=only), params).df()
        if wanted is None:
            ids = con.execute(
                "SELECT DISTINCT customer_id FROM orders WHERE ordered_at <= $as_of "
                "ORDER BY customer_id",
                params,
            ).df()["customer_id"]
        else:
            ids = wanted["customer_id"].drop_duplicates().reset_index(drop=True)
    finally:
        if wanted is not None:
            con.unregister("_wanted_customers")
    codes = history["sku"].map(rec._index)
    history = history[codes.notna()]
    codes = codes[codes.notna()].astype(np.int64)
    owner_of = pd.Index(ids)
    owner = owner_of.get_indexer(history["customer_id"])
    ranked = rank_customers(
        rec,
        owner.astype(np.int64),
        codes.to_numpy(),
        history["first_ts"].to_numpy(dtype=np.float64),
        history["last_ts"].to_numpy(dtype=np.float64),
        history["purchases"].to_numpy(dtype=np.int64),
        np.full(len(ids), as_of_s),
        len(ids),
        k,
        half_life_days=half_life_days,
        replenish_early=replenish_early,
    )
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
    )
    return frame.drop(columns=["customer_id", "rank"]).to_dict(orient="records")
