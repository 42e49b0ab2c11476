"""Offline evaluation: would the recommendations have named what customers bought next?

Each customer with two orders or more has their last basket (order with lines)
hidden; the tables are learned from every other basket, and then:

- **next basket**: the customer's personal top-k (from everything they bought
  before, as of the hidden order's time) is a *hit* when it holds any product of
  the hidden basket;
- **cart**: one product of the hidden basket (of two products or more), drawn at
  random, is hidden again; the rest is the cart, and the cart's top-k is a hit
  when it names the hidden product.

Each is compared with the most-popular baseline: the k products in the most
training baskets (for a cart, the most popular ones not of a family in it).
Coverage is the share of the products sold in training that appear in at least
one of the lists.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from retain.errors import DataError, StoreError
from retain.recommend.baskets import Baskets, customer_items, load_baskets, segment_bounds
from retain.recommend.personal import rank_customers
from retain.recommend.tables import (
    BuildOptions,
    Recommender,
    _check_k,
    _isin_sorted,
    _pair_keys,
    _top_k,
    build_from_baskets,
)
from retain.store import Store


def evaluate(
    data: Store | Baskets,
    *,
    k: int = 10,
    sample: int | None = 20_000,
    seed: int = 0,
    half_life_days: float = 365.0,
    options: BuildOptions | None = None,
) -> dict[str, Any]:
    """Hit rate@k and coverage of personal and cart recommendations against the
    most-popular baseline, on each customer's hidden last basket.

    ``sample``: how many eligible customers (drawn with ``seed``) to score; None
    scores all. The tables are always learned from all the training baskets.

    Returns a dict: ``k``, ``customers`` (with two baskets or more),
    ``evaluated``, ``next_basket`` and ``cart``, each holding ``model`` and
    ``most_popular`` with ``hit_rate``, ``recall`` (share of hidden products
    named) and ``coverage``, plus ``hit_rate_ratio`` (model / baseline) and
    ``beats_baseline``; and ``items``, ``training_baskets``.
    """
    _check_k(k)
    if sample is not None and sample < 1:
        raise DataError("sample is a number of customers", value=sample, expected="1 or more")
    baskets = data if isinstance(data, Baskets) else load_baskets(data)
    hidden = baskets.last_baskets()
    if hidden.size == 0:
        raise StoreError(
            "no customer has two orders with order lines: the evaluation hides each "
            "customer's last order and needs earlier ones to learn from"
        )
    is_hidden = np.zeros(baskets.n_baskets, dtype=bool)
    is_hidden[hidden] = True
    training = ~is_hidden[baskets.line_basket]
    rec = build_from_baskets(baskets, lines=training, options=options)

    rng = np.random.default_rng(seed)
    chosen = hidden
    if sample is not None and hidden.size > sample:
        chosen = np.sort(rng.choice(hidden, sample, replace=False))
    n_owners = chosen.size
    owner_of_customer = np.full(baskets.n_customers, -1)
    owner_of_customer[baskets.basket_customer[chosen]] = np.arange(n_owners)
    owner_of_basket = np.full(baskets.n_baskets, -1)
    owner_of_basket[chosen] = np.arange(n_owners)

    # the hidden baskets' products, one row per (owner, item)
    in_hidden = owner_of_basket[baskets.line_basket] >= 0
    truth_owner = owner_of_basket[baskets.line_basket[in_hidden]]
    truth_item = baskets.line_item[in_hidden]
    truth = _pair_keys(truth_owner, truth_item, rec.n_items)

    # -- next basket ----------------------------------------------------------------
    mine = training & (owner_of_customer[baskets.basket_customer[baskets.line_basket]] >= 0)
    history = customer_items(baskets, mine)
    ranked = rank_customers(
        rec,
        owner_of_customer[history.customer],
        history.item,
        history.first_ts,
        history.last_ts,
        history.purchases,
        baskets.basket_time[chosen],
        n_owners,
        k,
        half_life_days=half_life_days,
    )
    model = _scores(ranked["owner"], ranked["item"], truth, truth_owner, n_owners, rec)
    top = rec.popular[:k]
    popular = _scores(
        np.repeat(np.arange(n_owners), top.size),
        np.tile(top, n_owners),
        truth,
        truth_owner,
        n_owners,
        rec,
    )
    next_basket = _compare(model, popular)

    # -- cart: hide one product of each hidden basket of two or more ------------------
    starts, sizes = segment_bounds(truth_owner)
    big = sizes >= 2
    pick = starts[big] + (rng.random(int(big.sum())) * sizes[big]).astype(np.int64)
    held = np.zeros(truth_owner.size, dtype=bool)
    held[pick] = True
    # renumber the carts 0..n-1 by owner
    cart_of_owner = np.full(n_owners, -1)
    cart_of_owner[truth_owner[pick]] = np.arange(pick.size)
    in_cart = (cart_of_owner[truth_owner] >= 0) & ~held
    cart_owner = cart_of_owner[truth_owner[in_cart]]
    cart_item = truth_item[in_cart]
    cart_truth = _pair_keys(np.arange(pick.size), truth_item[pick], rec.n_items)
    n_carts = pick.size
    if n_carts:
        cart_ranked = rec.rank_carts(cart_owner, cart_item, n_carts, k)
        cart_model = _scores(
            cart_ranked["owner"], cart_ranked["item"], cart_truth, np.arange(n_carts), n_carts, rec
        )
        excluded = _pair_keys(cart_owner, rec.family[cart_item], int(rec.family.max()) + 1)
        empty = {
            name: np.zeros(0, dtype=np.int64)
            for name in ("owner", "item", "kind", "source", "score", "confidence")
        }
        sizes_cart = np.bincount(cart_owner, minlength=n_carts)
        baseline = _top_k(
            rec._fill(empty, n_carts, k, rec.popular, excluded, None, int(sizes_cart.max())), k
        )
        cart_popular = _scores(
            baseline["owner"], baseline["item"], cart_truth, np.arange(n_carts), n_carts, rec
        )
        cart = _compare(cart_model, cart_popular)
    else:
        cart = {"note": "no hidden basket holds two products or more"}
    cart["carts"] = int(n_carts)
    return {
        "k": k,
        "customers": int(hidden.size),
        "evaluated": int(n_owners),
        "items": int(np.count_nonzero(rec.items["baskets"].to_numpy())),
        "training_baskets": rec.n_baskets,
        "next_basket": next_basket,
        "cart": cart,
    }


def _scores(
    owner: np.ndarray,
    item: np.ndarray,
    truth: np.ndarray,
    truth_owner: np.ndarray,
    n_owners: int,
    rec: Recommender,
) -> dict[str, float]:
    hit = _isin_sorted(owner * rec.n_items + item, truth)
    hit_owner = np.zeros(n_owners, dtype=bool)
    hit_owner[owner[hit]] = True
    sold = max(int(np.count_nonzero(rec.items["baskets"].to_numpy())), 1)
    return {
        "hit_rate": round(float(hit_owner.mean()), 4),
        "recall": round(float(hit.sum() / max(truth_owner.size, 1)), 4),
        "coverage": round(float(np.unique(item).size / sold), 4),
    }


def _compare(model: dict[str, float], popular: dict[str, float]) -> dict[str, Any]:
    ratio = model["hit_rate"] / popular["hit_rate"] if popular["hit_rate"] else float("inf")
    return {
        "model": model,
        "most_popular": popular,
        "hit_rate_ratio": round(ratio, 3),
        "beats_baseline": model["hit_rate"] > popular["hit_rate"],
    }
