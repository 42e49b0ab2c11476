"""A learned churn and value model: gradient-boosted trees on top of a BTYD model.

:class:`LearnedModel` learns, from the store's own past, how far the base
repeat-purchase model (Pareto/NBD by default) is off for each kind of customer.
At cut-offs inside the training period (on or before the ``calibration_end`` given
to :meth:`LearnedModel.fit`) it builds each customer's features as of the cut-off
(:data:`FEATURE_BUILDERS`: recency, frequency, gaps and their regularity and trend,
spend level and trend, discount and refund shares, recent orders, first channel, the
base model's outputs) and the labels of the window after it: purchases (distinct
days), buys again (at least one) and net revenue.

Two LightGBM boosters per horizon start from the base model (``init_score``): a binary
one from the base model's log-odds of buying within the window, a Poisson one from the
log of its expected purchases. They learn a correction only; with nothing to learn
they stay near it (early stopping keeps few rounds). A horizon longer than the
training period can label (CDNOW's nine calibration months cannot hold a 273-day
window) is trained on the longest window it does hold and applies that correction to
the base model's prediction at the full horizon, its rounds chosen out of time (early
stopping on a later cut-off's customers over its window to the calibration end, so
that a correction that does not carry over to another cut-off and window is not kept);
:meth:`LearnedModel.card` says which window served which horizon. Otherwise the rounds
are chosen on a seeded fifth of the training customers, and where the training period
holds the full horizon at two cut-offs or more the latest is kept out of training and
fits an isotonic calibration of the probability. Expected revenue is expected
purchases x the Gamma-Gamma conditional spend per purchase, fitted on the summary to
the calibration end.

Scale: monthly cut-offs, at most ``cutoffs`` per horizon (fewer once ``max_rows``
customers are in); a cut-off with more customers than ``max_rows`` is sampled by a
seeded hash of customer_id, and each base fit uses at most :data:`BASE_ROWS` of them.

LightGBM is imported only by the methods that need it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import duckdb
import numpy as np
import pandas as pd
from numpy.typing import NDArray

from retain.errors import ArgumentError, DataError, ModelError
from retain.models import TRANSACTION_MODELS, GammaGamma, TransactionModel
from retain.models.base import Model, TransactionRows, collapse_rows
from retain.store import Store

Array = NDArray[np.float64]

FORMAT = 1
#: the base model's unit: weeks, as the holdouts fit the BTYD models
UNIT = "W"
UNIT_DAYS = 7.0
#: a probability is kept this far from 0 and 1 before its log-odds are taken
P_CLIP = 1e-6
#: the predictions per horizon, in their column order
PREDICTED = ("p_buy", "expected_purchases", "expected_revenue")
#: the boosters' settings, chosen once (not on any test window); the number of rounds
#: is chosen by early stopping on a seeded fifth of the training customers
BOOSTER_PARAMS: dict[str, Any] = {
    "learning_rate": 0.1,
    "num_leaves": 15,
    "min_data_in_leaf": 100,
    "feature_fraction": 0.9,
    "lambda_l2": 1.0,
    "max_bin": 63,
    "verbosity": -1,
    "deterministic": True,
    "force_row_wise": True,
}
MAX_ROUNDS = 200
EARLY_STOP = 20
#: the base model is fitted on at most this many customers of a cut-off (a seeded
#: sample): its four parameters are well determined long before
BASE_ROWS = 100_000


def _lightgbm() -> Any:
    # OpenMP threads that sleep when idle rather than spin: on a machine shared with
    # other work, spinning threads slow training several times over
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import lightgbm
    except ImportError as exc:  # pragma: no cover - lightgbm is a dependency
        raise ModelError(
            f"the learned model needs LightGBM (pip install 'lightgbm>=4.5'): {exc}"
        ) from None
    return lightgbm


def _day(value: Any, name: str) -> pd.Timestamp:
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise ArgumentError(f"{name} must be a date such as 1997-09-30, got {value!r}") from None
    if pd.isna(stamp):
        raise ArgumentError(f"{name} must be a date such as 1997-09-30, got {value!r}")
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return stamp.normalize()


# -- features --------------------------------------------------------------------------

#: the customers kept by a seeded hash when a cut-off is sampled ($share of them)
SAMPLE_SQL = "($share >= 1.0 OR hash(customer_id || $salt) % 1000000 < $share * 1000000)"

#: every customer with an order on or before the cut-off (the end of its day), one row
#: each in customer_id order: the order-history features; gaps are between distinct
#: purchase days, "last 3 orders" the latest three by time
ORDER_FEATURES_SQL = f"""
WITH o AS (
    SELECT customer_id, ordered_at, CAST(ordered_at AS DATE) AS day, net_revenue, gross,
           discount, refunded, channel
    FROM orders
    WHERE ordered_at < $cutoff AND {SAMPLE_SQL}
),
days AS (
    SELECT customer_id, day, sum(net_revenue) AS revenue
    FROM o
    GROUP BY customer_id, day
),
gaps AS (
    SELECT customer_id, day, revenue,
           date_diff('day', lag(day) OVER (PARTITION BY customer_id ORDER BY day), day) AS gap
    FROM days
),
per_day AS (
    SELECT customer_id,
           count(*)                               AS purchase_days,
           min(day)                               AS first_day,
           max(day)                               AS last_day,
           avg(gap)                               AS mean_gap,
           stddev_pop(gap)                        AS std_gap,
           arg_max(gap, day)                      AS last_gap,
           arg_min(revenue, day)                  AS first_day_revenue,
           sum(revenue)                           AS day_revenue
    FROM gaps
    GROUP BY customer_id
),
per_order AS (
    SELECT customer_id,
           count(*)                                                     AS orders,
           sum(net_revenue)                                             AS total_spend,
           avg(net_revenue)                                             AS mean_spend,
           list_avg(arg_max(net_revenue, ordered_at, 3))                AS last3_spend,
           sum(discount) FILTER (WHERE discount IS NOT NULL AND gross IS NOT NULL)
               / nullif(sum(gross) FILTER (WHERE discount IS NOT NULL AND gross IS NOT NULL), 0)
                                                                        AS discount_share,
           sum(refunded) FILTER (WHERE refunded IS NOT NULL AND gross IS NOT NULL)
               / nullif(sum(gross) FILTER (WHERE refunded IS NOT NULL AND gross IS NOT NULL), 0)
                                                                        AS refund_share,
           count(*) FILTER (WHERE ordered_at >= $cutoff - INTERVAL 30 DAY)  AS orders_30d,
           count(*) FILTER (WHERE ordered_at >= $cutoff - INTERVAL 90 DAY)  AS orders_90d,
           count(*) FILTER (WHERE ordered_at >= $cutoff - INTERVAL 365 DAY) AS orders_365d,
           arg_min(channel, ordered_at)                                 AS first_channel
    FROM o
    GROUP BY customer_id
)
SELECT customer_id,
       purchase_days - 1                                        AS frequency,
       CAST(date_diff('day', last_day, $day) AS DOUBLE)         AS recency_days,
       CAST(date_diff('day', first_day, $day) AS DOUBLE)        AS tenure_days,
       CAST(date_diff('day', first_day, last_day) AS DOUBLE)    AS span_days,
       mean_gap, std_gap, last_gap,
       CASE WHEN purchase_days > 1
            THEN (day_revenue - first_day_revenue) / (purchase_days - 1) ELSE 0.0 END
                                                                AS monetary,
       orders, total_spend, mean_spend, last3_spend, discount_share, refund_share,
       orders_30d, orders_90d, orders_365d, first_channel
FROM per_day JOIN per_order USING (customer_id)
ORDER BY customer_id
"""

#: purchases (distinct days) and net revenue of each window after the cut-off, for the
#: customers with an order on or before it (sampled as the features), in customer_id
#: order
LABELS_SQL = f"""
WITH known AS (
    SELECT DISTINCT customer_id FROM orders WHERE ordered_at < $cutoff AND {SAMPLE_SQL}
),
later AS (
    SELECT customer_id, CAST(ordered_at AS DATE) AS day, net_revenue
    FROM orders
    WHERE ordered_at >= $cutoff AND ordered_at < $until
)
SELECT k.customer_id, {{columns}}
FROM known k LEFT JOIN later l USING (customer_id)
GROUP BY k.customer_id
ORDER BY k.customer_id
"""


@dataclass
class Cutoff:
    """What a feature builder reads: the store, the cut-off day (its orders count),
    the order-history query's columns (``orders``, one entry per customer in
    ``customer_ids`` order) and the base model fitted or applied at the cut-off."""

    store: Store
    day: pd.Timestamp
    customer_ids: NDArray[Any]
    orders: dict[str, NDArray[Any]]
    base: TransactionModel
    horizons: tuple[int, ...]
    channels: list[str]
    cache: dict[str, Array] = field(default_factory=dict)
    rows: TransactionRows | None = None  # the distinct (x, recency, T) rows
    inverse: NDArray[np.intp] | None = None  # each customer's row
    p_alive_rows: Array | None = None
    #: the connection a builder queries the store through (cut-offs are prepared on
    #: threads, each with its own cursor)
    con: duckdb.DuckDBPyConnection | None = None


FeatureBuilder = Callable[[Cutoff], dict[str, Array]]


def _ratio(top: Array, bottom: Array) -> Array:
    with np.errstate(divide="ignore", invalid="ignore"):
        out = top / bottom
    return np.where(np.isfinite(out), out, np.nan)


def history_features(cut: Cutoff) -> dict[str, Array]:
    """Recency, frequency, tenure, the purchase gaps (mean, spread, regularity, the
    last against the mean, days silent against the mean), spend level and trend,
    discount and refund shares and recent orders (all NaN where not defined)."""
    o = {k: np.asarray(v, dtype=np.float64) for k, v in cut.orders.items() if k != "first_channel"}
    mean_gap = o["mean_gap"]
    return {
        "recency_days": o["recency_days"],
        "frequency": o["frequency"],
        "tenure_days": o["tenure_days"],
        "span_days": o["span_days"],
        "mean_gap_days": mean_gap,
        "std_gap_days": o["std_gap"],
        "gap_cv": _ratio(o["std_gap"], mean_gap),
        "silent_over_gap": _ratio(o["recency_days"], mean_gap),
        "last_gap_over_gap": _ratio(o["last_gap"], mean_gap),
        "mean_spend": o["mean_spend"],
        "total_spend": o["total_spend"],
        "spend_trend": _ratio(o["last3_spend"], o["mean_spend"]),
        "discount_share": o["discount_share"],
        "refund_share": o["refund_share"],
        "orders_30d": o["orders_30d"],
        "orders_90d": o["orders_90d"],
        "orders_365d": o["orders_365d"],
    }


def channel_features(cut: Cutoff) -> dict[str, Array]:
    """The first order's channel as a category code (NaN when absent or unseen in
    training)."""
    codes = {name: float(i) for i, name in enumerate(cut.channels)}
    raw = cut.orders["first_channel"]
    series = pd.Series(raw, dtype=object).map(codes)
    return {"first_channel": np.asarray(series.to_numpy(na_value=np.nan), dtype=np.float64)}


def btyd_features(cut: Cutoff) -> dict[str, Array]:
    """The base model at the cut-off: P(alive) and expected purchases in each horizon."""
    _base_outputs(cut)
    out = {"btyd_p_alive": cut.cache["p_alive"]}
    for h in cut.horizons:
        out[f"btyd_expected_{h}d"] = _base_window(cut, float(h))[1]
    return out


#: the feature builders, in order: each returns named columns for the cut-off's
#: customers; later work appends its own (feedback, campaign engagement)
FEATURE_BUILDERS: list[FeatureBuilder] = [history_features, channel_features, btyd_features]
#: features LightGBM treats as categories
CATEGORICAL = ("first_channel",)


def _summary_arrays(cut: Cutoff) -> tuple[Array, Array, Array]:
    o = cut.orders
    x = np.asarray(o["frequency"], dtype=np.float64)
    recency = np.asarray(o["span_days"], dtype=np.float64) / UNIT_DAYS
    T = np.asarray(o["tenure_days"], dtype=np.float64) / UNIT_DAYS
    return x, recency, T


def _base_outputs(cut: Cutoff) -> tuple[TransactionRows, NDArray[np.intp], Array]:
    """The cut-off's distinct rows, each customer's row and P(alive) per row (once)."""
    if cut.rows is None or cut.inverse is None or cut.p_alive_rows is None:
        x, recency, T = _summary_arrays(cut)
        cut.rows, cut.inverse = collapse_rows(x, recency, T)
        rows = cut.rows
        cut.p_alive_rows = np.clip(cut.base._p_alive(rows.x, rows.recency, rows.T), 0.0, 1.0)
        cut.cache["p_alive"] = cut.p_alive_rows[cut.inverse]
    return cut.rows, cut.inverse, cut.p_alive_rows


def _base_window(cut: Cutoff, days: float) -> tuple[Array, Array]:
    """The base model's P(at least one purchase) and expected purchases in the
    ``days`` after the cut-off, per customer."""
    key = f"window_{days}"
    if key not in cut.cache:
        rows, inverse, p_alive = _base_outputs(cut)
        t = days / UNIT_DAYS
        expected = cut.base._conditional_expected(rows, np.array([t]), p_alive)[:, 0]
        px, pT, code = rows.pairs
        none_alive = np.clip(np.nan_to_num(cut.base._pmf_alive(0, t, px, pT)), 0.0, 1.0)[code]
        p_buy = np.clip(p_alive * (1.0 - none_alive), 0.0, 1.0)
        cut.cache[key] = p_buy[inverse]
        cut.cache[key + "_expected"] = np.maximum(expected, 0.0)[inverse]
    return cut.cache[key], cut.cache[key + "_expected"]


def _orders_at(
    con: duckdb.DuckDBPyConnection, day: pd.Timestamp, share: float = 1.0, salt: int = 0
) -> tuple[NDArray[Any], dict[str, NDArray[Any]]]:
    """The order-history columns as of ``day`` of every customer (or of a seeded
    ``share`` of them), in customer_id order."""
    params = {
        "cutoff": (day + pd.Timedelta(days=1)).to_pydatetime(),
        "day": day.date(),
        "share": float(share),
        "salt": str(salt),
    }
    result = con.execute(ORDER_FEATURES_SQL, params).fetchnumpy()
    ids = np.asarray(result.pop("customer_id"), dtype=object)
    columns: dict[str, NDArray[Any]] = {}
    for name, values in result.items():
        if name == "first_channel":
            columns[name] = np.asarray(values, dtype=object)
        else:
            columns[name] = np.ma.filled(np.ma.asarray(values, dtype=np.float64), np.nan)
    return ids, columns


def _labels_at(
    con: duckdb.DuckDBPyConnection,
    day: pd.Timestamp,
    windows: Sequence[int],
    share: float = 1.0,
    salt: int = 0,
) -> dict[int, tuple[Array, Array]]:
    """Per window (days): purchases (distinct days) and net revenue after ``day``."""
    start = day + pd.Timedelta(days=1)
    parts = []
    for h in windows:
        end = f"TIMESTAMP '{(start + pd.Timedelta(days=int(h))).isoformat()}'"
        parts.append(f"count(DISTINCT l.day) FILTER (WHERE l.day < CAST({end} AS DATE)) AS n_{h}")
        parts.append(
            f"coalesce(sum(l.net_revenue) FILTER (WHERE l.day < CAST({end} AS DATE)), 0) AS r_{h}"
        )
    until = start + pd.Timedelta(days=int(max(windows)))
    result = con.execute(
        LABELS_SQL.format(columns=", ".join(parts)),
        {
            "cutoff": start.to_pydatetime(),
            "until": until.to_pydatetime(),
            "share": float(share),
            "salt": str(salt),
        },
    ).fetchnumpy()
    return {
        h: (
            np.asarray(result[f"n_{h}"], dtype=np.float64),
            np.asarray(result[f"r_{h}"], dtype=np.float64),
        )
        for h in windows
    }


def _fit_base(name: str, cut_orders: dict[str, NDArray[Any]], seed: int = 0) -> TransactionModel:
    """The base model fitted on the summary of the cut-off's customers (weeks, days):
    on a seeded sample of :data:`BASE_ROWS` of them when there are more, and on all of
    them when that fit does not converge (a small sample can leave a parameter free)."""
    x = np.asarray(cut_orders["frequency"], dtype=np.float64)
    recency = np.asarray(cut_orders["span_days"], dtype=np.float64) / UNIT_DAYS
    T = np.asarray(cut_orders["tenure_days"], dtype=np.float64) / UNIT_DAYS
    if x.size > BASE_ROWS:
        keep = np.random.default_rng(seed).choice(x.size, BASE_ROWS, replace=False)
        model = _fit_rows(name, x[keep], recency[keep], T[keep])
        if model.converged_:
            return model
    return _fit_rows(name, x, recency, T)


def _fit_rows(name: str, x: Array, recency: Array, T: Array) -> TransactionModel:
    model = TRANSACTION_MODELS[name]()
    rows, _ = collapse_rows(x, recency, T)
    distinct = pd.DataFrame({"frequency": rows.x, "recency": rows.recency, "T": rows.T})
    model.fit(distinct, weights=rows.weight, unit=UNIT, grain="D")
    return model


# -- isotonic calibration ----------------------------------------------------------------


#: each block of the isotonic calibration counts this many customers more, at the
#: model's own chance for the block: a block of a few customers who all stayed silent
#: (a small store's calibration cut-off) no longer sets a chance of 0 for everyone in it
ISOTONIC_PRIOR = 10.0


def isotonic_fit(p: Array, y: Array) -> tuple[Array, Array]:
    """The non-decreasing step function of ``p`` closest to ``y`` in squared error (pool
    adjacent violators): its knots (the largest ``p`` of each block) and values, each
    block's share of ``y`` drawn towards its mean ``p`` by :data:`ISOTONIC_PRIOR`
    customers (kept non-decreasing)."""
    order = np.argsort(p, kind="stable")
    xs, ys = np.asarray(p, dtype=np.float64)[order], np.asarray(y, dtype=np.float64)[order]
    values: list[float] = []
    weights: list[float] = []
    tops: list[float] = []
    sums: list[float] = []
    for xv, yv in zip(xs.tolist(), ys.tolist(), strict=True):
        values.append(yv)
        weights.append(1.0)
        tops.append(xv)
        sums.append(xv)
        while len(values) > 1 and values[-2] >= values[-1]:
            w = weights[-2] + weights[-1]
            v = (values[-2] * weights[-2] + values[-1] * weights[-1]) / w
            values[-2:] = [v]
            weights[-2:] = [w]
            tops[-2:] = [tops[-1]]
            sums[-2:] = [sums[-2] + sums[-1]]
    n = np.asarray(weights)
    drawn = (np.asarray(values) * n + np.asarray(sums) / n * ISOTONIC_PRIOR) / (n + ISOTONIC_PRIOR)
    return np.asarray(tops), np.maximum.accumulate(drawn)


def isotonic_apply(p: Array, knots: Array, values: Array) -> Array:
    """The step function of :func:`isotonic_fit` at ``p``, linear between block tops."""
    return np.interp(p, knots, values)


# -- the model ----------------------------------------------------------------------------


def _logit(p: Array) -> Array:
    q = np.clip(p, P_CLIP, 1.0 - P_CLIP)
    return np.log(q) - np.log1p(-q)


def _log_expected(n: Array) -> Array:
    return np.log(np.maximum(n, 1e-9))


def _sigmoid(z: Array) -> Array:
    return 1.0 / (1.0 + np.exp(-z))


@dataclass
class _Horizon:
    """What was learned for one horizon (days)."""

    horizon: int
    window: int  # the label window trained on (days)
    cutoffs: list[str]
    calibration_cutoff: str | None
    rows: int
    buyers: int
    buy_model: Any = None  # lightgbm.Booster
    count_model: Any = None
    knots: Array | None = None
    values: Array | None = None
    rounds: dict[str, int] = field(default_factory=dict)
    #: a later cut-off and its window to the calibration end whose customers choose the
    #: rounds (out of time) when the horizon is longer than the training period
    check_cutoff: str | None = None
    check_window: int | None = None


@dataclass
class _Prepared:
    """A training cut-off's inputs: the cut-off, its feature matrix (and their names)
    once built, and per label window the labels and the base model's predictions."""

    cut: Cutoff
    X: Array | None = None
    features: list[str] = field(default_factory=list)
    windows: dict[int, tuple[Array, Array, Array, Array]] = field(default_factory=dict)


class SharedCutoffs:
    """Training cut-offs shared by the fits of several learned models on one store's
    orders, as a backtest makes one per origin: a cut-off's inputs depend on its day,
    its sample, the base model, the seed, the channels and the horizons only, and
    consecutive origins train on some of the same cut-offs. Holds the ``size`` latest prepared (their
    feature matrices, labels and base-model rows; about 200 bytes per sampled customer
    and feature); the orders must not change between the fits that share it."""

    def __init__(self, size: int = 5) -> None:
        self.size = size
        self._entries: dict[Any, _Prepared] = {}
        self._lock = threading.Lock()

    def get(self, key: Any) -> _Prepared | None:
        with self._lock:
            return self._entries.get(key)

    def put(self, key: Any, entry: _Prepared) -> None:
        with self._lock:
            self._entries[key] = entry
            while len(self._entries) > self.size:
                del self._entries[next(iter(self._entries))]


class LearnedModel:
    """Gradient-boosted corrections to a BTYD base model, per horizon in days.

    ``fit(store, calibration_end)`` trains on the store's orders up to the end of
    ``calibration_end`` only; ``predict(store, as_of)`` gives, for every customer with
    an order on or before ``as_of``, ``p_buy_{h}d`` (at least one purchase in the
    ``h`` days after ``as_of``), ``expected_purchases_{h}d`` (distinct purchase days)
    and ``expected_revenue_{h}d`` (net revenue, the store's currency) per horizon.

    ``base``: the BTYD model the boosters start from ("bgnbd", "mbgnbd", "pnbd");
    ``seed``: every sample and booster (the same seed, the same model); ``cutoffs``:
    most cut-offs per horizon, the isotonic one included; ``max_rows``: most customers
    a cut-off (and a booster's training set) keeps; ``min_history_days``: a cut-off
    comes at least this long after the first order.
    """

    def __init__(
        self,
        horizons: Sequence[int] = (30, 90, 365),
        *,
        base: str = "pnbd",
        seed: int = 0,
        cutoffs: int = 3,
        max_rows: int = 300_000,
        min_history_days: int = 60,
        shared: SharedCutoffs | None = None,
    ) -> None:
        hs = tuple(int(h) for h in horizons)
        if not hs or any(h <= 0 for h in hs) or len(set(hs)) != len(hs):
            raise ArgumentError(
                f"horizons must be distinct whole numbers of days > 0, got {list(horizons)}"
            )
        if base not in TRANSACTION_MODELS:
            raise ArgumentError(
                f"unknown base model {base!r}: choose one of {', '.join(TRANSACTION_MODELS)}"
            )
        if cutoffs < 1 or max_rows < 100 or min_history_days < 0:
            raise ArgumentError(
                "cutoffs must be 1 or more, max_rows 100 or more, min_history_days 0 or more"
            )
        self.horizons = hs
        self.base = base
        self.seed = int(seed)
        self.n_cutoffs = int(cutoffs)
        self.max_rows = int(max_rows)
        self.min_history_days = int(min_history_days)
        self.calibration_end_: str | None = None
        self.base_model_: TransactionModel | None = None
        self.spend_model_: GammaGamma | None = None
        self.channels_: list[str] = []
        self.features_: list[str] = []
        self.learned_: dict[int, _Horizon] = {}
        self.fitted_at_: str | None = None
        self.warnings_: list[str] = []
        self.shared = shared

    # -- training ----------------------------------------------------------------------
    def _grid(self, store: Store, end: pd.Timestamp) -> list[pd.Timestamp]:
        """Month-end-aligned cut-offs one calendar month apart back from ``end``, each
        at least ``min_history_days`` after the first order, latest first."""
        first = store.scalar(
            "SELECT min(ordered_at) FROM orders WHERE ordered_at < ?",
            [(end + pd.Timedelta(days=1)).to_pydatetime()],
        )
        if first is None:
            raise DataError(f"no orders on or before the calibration end {end.date()}")
        earliest = _day(first, "the first order") + pd.Timedelta(days=self.min_history_days)
        grid = []
        month_end = end + pd.offsets.MonthEnd(0) == end
        k = 1
        while True:
            c = end - pd.DateOffset(months=k)
            if month_end:
                c = c + pd.offsets.MonthEnd(0)
            if c < earliest:
                break
            grid.append(pd.Timestamp(c).normalize())
            k += 1
        return grid

    def _plan(
        self, grid: list[pd.Timestamp], end: pd.Timestamp, customers: dict[pd.Timestamp, int]
    ) -> list[_Horizon]:
        """Per horizon: the latest cut-offs whose window fits before ``end`` (the latest
        kept for the isotonic calibration when another trains), training cut-offs added
        until ``cutoffs`` in all or ``max_rows`` customers."""
        plans = []
        for h in self.horizons:
            usable = [c for c in grid if (end - c).days >= h]
            calibration = check = None
            if usable:
                window = h
                if len(usable) >= 2 and self.n_cutoffs >= 2:
                    calibration, usable = usable[0], usable[1:]
                chosen: list[pd.Timestamp] = []
                for c in usable[: max(1, self.n_cutoffs - (calibration is not None))]:
                    chosen.append(c)
                    if sum(customers[d] for d in chosen) >= self.max_rows:
                        break
            elif grid:
                # the horizon is longer than the training period can label: the longest
                # window it holds, at the earliest cut-off
                chosen = [grid[-1]]
                window = int((end - grid[-1]).days)
                later = [c for c in grid[:-1] if (end - c).days * 2 >= window]
                check = later[0] if later else None
            else:
                raise DataError(
                    f"the orders to {end.date()} leave no training cut-off: the first order "
                    f"must come at least {self.min_history_days} days and a month before "
                    "the calibration end"
                )
            plans.append(
                _Horizon(
                    horizon=h,
                    window=window,
                    cutoffs=[c.date().isoformat() for c in chosen],
                    calibration_cutoff=None
                    if calibration is None
                    else calibration.date().isoformat(),
                    rows=0,
                    buyers=0,
                    check_cutoff=None if check is None else check.date().isoformat(),
                    check_window=None if check is None else int((end - check).days),
                )
            )
        return plans

    def _share(self, customers: int) -> float:
        return min(1.0, self.max_rows / max(customers, 1))

    def _cutoff(
        self,
        store: Store,
        day: pd.Timestamp,
        base: TransactionModel | None,
        share: float = 1.0,
        con: duckdb.DuckDBPyConnection | None = None,
    ) -> Cutoff:
        ids, orders = _orders_at(store.con if con is None else con, day, share, self.seed)
        if ids.size == 0:
            raise DataError(f"no orders on or before {day.date()}")
        model = base if base is not None else _fit_base(self.base, orders, self.seed)
        cut = Cutoff(store, day, ids, orders, model, self.horizons, self.channels_)
        cut.con = store.con if con is None else con
        return cut

    def _shared_cutoff(
        self, store: Store, day: pd.Timestamp, share: float, con: duckdb.DuckDBPyConnection
    ) -> _Prepared:
        """The cut-off ``day`` sampled at ``share`` with the base model fitted there: from
        ``shared`` when another fit prepared it (same day, sample, base model, seed,
        channels and horizons: the same inputs), else prepared now (and offered to
        ``shared``)."""
        key = (
            day.date().isoformat(),
            share,
            self.base,
            self.seed,
            tuple(self.channels_),
            self.horizons,  # the base model's outputs among the features are per horizon
        )
        found = self.shared.get(key) if self.shared is not None else None
        if found is None:
            found = _Prepared(self._cutoff(store, day, None, share, con))
            if self.shared is not None:
                self.shared.put(key, found)
        return found

    def _matrix(self, cut: Cutoff) -> Array:
        columns: dict[str, Array] = {}
        for builder in FEATURE_BUILDERS:
            columns.update(builder(cut))
        if not self.features_:
            self.features_ = list(columns)
        missing = [f for f in self.features_ if f not in columns]
        if missing:
            raise ModelError(f"the features {missing} the model was trained on are not built")
        return np.column_stack([np.asarray(columns[f], dtype=np.float64) for f in self.features_])

    def fit(self, store: Store, calibration_end: Any) -> LearnedModel:
        """Train on the orders up to the end of ``calibration_end`` (a day); labels stop
        there too. Returns the model."""
        lgb = _lightgbm()
        end = _day(calibration_end, "calibration_end")
        grid = self._grid(store, end)
        firsts = store.con.execute(
            "SELECT min(ordered_at) AS first FROM orders WHERE ordered_at < ? "
            "GROUP BY customer_id ORDER BY first",
            [(end + pd.Timedelta(days=1)).to_pydatetime()],
        ).fetchnumpy()["first"]
        firsts = np.asarray(firsts, dtype="datetime64[us]")

        def known(day: pd.Timestamp) -> int:
            stop = (day + pd.Timedelta(days=1)).to_datetime64().astype("datetime64[us]")
            return int(np.searchsorted(firsts, stop, side="left"))

        plans = self._plan(grid, end, {c: known(c) for c in grid})
        # the channel vocabulary: order channels up to the calibration end
        channels = store.con.execute(
            "SELECT DISTINCT channel FROM orders WHERE ordered_at < ? AND channel IS NOT NULL "
            "ORDER BY channel",
            [(end + pd.Timedelta(days=1)).to_pydatetime()],
        ).fetchall()
        self.channels_ = [str(r[0]) for r in channels]
        self.features_ = []
        needed: dict[str, list[int]] = {}
        for plan in plans:
            for c in plan.cutoffs + ([plan.calibration_cutoff] if plan.calibration_cutoff else []):
                needed.setdefault(c, []).append(plan.window)
            if plan.check_cutoff is not None and plan.check_window is not None:
                needed.setdefault(plan.check_cutoff, []).append(plan.check_window)

        # per cut-off (a seeded sample of at most about max_rows customers): the feature
        # matrix and, per label window, purchases, revenue and the base model's P(buy)
        # and expected purchases
        # the feature names are set by the first matrix built (every cut-off's are the same)
        def prepare(c: str) -> tuple[Array, dict[int, tuple[Array, Array, Array, Array]]]:
            # a cursor of its own: two cut-offs are prepared at once, one's query beside
            # the other's base fit
            con = store.con.cursor()
            try:
                day = pd.Timestamp(c)
                windows = sorted(set(needed[c]))
                share = self._share(known(day))
                entry = self._shared_cutoff(store, day, share, con)
                if entry.X is None:
                    entry.cut.con = con  # the builders query through this thread's cursor
                    entry.X = self._matrix(entry.cut)
                    entry.features = list(self.features_)
                elif not self.features_:
                    self.features_ = list(entry.features)
                missing = [w for w in windows if w not in entry.windows]
                if missing:
                    labels = _labels_at(con, day, missing, share, self.seed)
                    for w in missing:
                        entry.windows[w] = (*labels[w], *_base_window(entry.cut, float(w)))
                if self.shared is not None:
                    # kept for other fits: the matrix, and what another label window needs
                    # (the base model's rows, cached on the cut-off), not the order history
                    entry.cut.orders = {}
                return entry.X, {w: entry.windows[w] for w in windows}
            finally:
                con.close()

        # the base fits' warnings (an early cut-off's short histories may leave a
        # parameter loose) go to the card, not to the caller
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with ThreadPoolExecutor(max_workers=2) as pool:
                data = dict(zip(sorted(needed), pool.map(prepare, sorted(needed)), strict=True))
            by_cutoff = {str(w.message) for w in caught}
        threads = os.cpu_count() or 1
        categorical = [self.features_.index(f) for f in CATEGORICAL if f in self.features_]
        for plan in plans:
            X = np.vstack([data[c][0] for c in plan.cutoffs])
            parts = [data[c][1][plan.window] for c in plan.cutoffs]
            count = np.concatenate([p[0] for p in parts])
            base_p = np.concatenate([p[2] for p in parts])
            base_n = np.concatenate([p[3] for p in parts])
            if X.shape[0] > self.max_rows:  # several cut-offs: at most max_rows in all
                rng = np.random.default_rng(self.seed)
                keep = np.sort(rng.choice(X.shape[0], self.max_rows, replace=False))
                X, count, base_p, base_n = X[keep], count[keep], base_p[keep], base_n[keep]
            buy = (count > 0).astype(np.float64)
            plan.rows, plan.buyers = int(X.shape[0]), int(buy.sum())
            if plan.check_cutoff is not None and plan.check_window is not None:
                # rounds chosen out of time: the correction applied at a later cut-off,
                # to a window of another length, as it will be at the horizon
                X_check = data[plan.check_cutoff][0]
                n_check, _, p_check, e_check = data[plan.check_cutoff][1][plan.check_window]
                train = np.ones(X.shape[0], dtype=bool)
            else:
                draws = np.random.default_rng(self.seed + plan.horizon).random(X.shape[0])
                train = np.asarray(draws >= 0.2, dtype=bool)
                X_check, n_check, p_check, e_check = (
                    X[~train],
                    count[~train],
                    base_p[~train],
                    base_n[~train],
                )
            X, count, base_p, base_n = X[train], count[train], base_p[train], base_n[train]
            buy, buy_check = (count > 0).astype(np.float64), (n_check > 0).astype(np.float64)
            params = {**BOOSTER_PARAMS, "seed": self.seed, "num_threads": threads}
            if X.shape[0] < 4 * params["min_data_in_leaf"]:  # a small store: smaller leaves
                params["min_data_in_leaf"] = max(5, int(X.shape[0] // 20))
            sets = _datasets(lgb, X, X_check, params, categorical)
            plan.buy_model, plan.rounds["buy"] = _train(
                lgb,
                sets,
                (buy, _logit(base_p)),
                (buy_check, _logit(p_check)),
                {**params, "objective": "binary"},
            )
            plan.count_model, plan.rounds["count"] = _train(
                lgb,
                sets,
                (count, _log_expected(base_n)),
                (n_check, _log_expected(e_check)),
                {**params, "objective": "poisson"},
            )
            if plan.calibration_cutoff is not None:
                Xc = data[plan.calibration_cutoff][0]
                lc = data[plan.calibration_cutoff][1][plan.window]
                raw = plan.buy_model.predict(Xc, raw_score=True) + _logit(lc[2])
                plan.knots, plan.values = isotonic_fit(_sigmoid(raw), (lc[0] > 0).astype(float))
        # the base and spend models applied at prediction time: fitted to the calibration
        # end (on a seeded sample of about max_rows customers)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            final = self._shared_cutoff(store, end, self._share(known(end)), store.con).cut
            if not final.orders:  # a training cut-off of another fit: its history let go
                final = self._cutoff(store, end, None, self._share(known(end)))
            at_end = [str(w.message) for w in caught]
            x, _, _ = _summary_arrays(final)
            monetary = np.asarray(final.orders["monetary"], dtype=np.float64)
            spend = pd.DataFrame({"frequency": x, "monetary": monetary})
            spend = spend[(spend["frequency"] > 0) & (spend["monetary"] > 0)]
            self.spend_model_ = GammaGamma().fit(spend) if len(spend) else None
            spent = [str(w.message) for w in caught[len(at_end) :]]
        self.warnings_ = sorted(
            [f"base model at a training cut-off: {m}" for m in by_cutoff]
            + [f"base model at the calibration end: {m}" for m in at_end]
        ) + [f"spend model: {m}" for m in spent]
        self.base_model_ = final.base
        self.learned_ = {p.horizon: p for p in plans}
        self.calibration_end_ = end.date().isoformat()
        self.fitted_at_ = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
        return self

    # -- prediction --------------------------------------------------------------------
    def _require_fitted(self) -> None:
        if self.base_model_ is None or not self.learned_:
            raise ModelError("the learned model is not fitted: call fit(store, calibration_end)")

    def _at(self, store: Store, as_of: Any) -> tuple[Cutoff, Array]:
        self._require_fitted()
        day = _day(as_of, "as_of")
        cut = self._cutoff(store, day, self.base_model_)
        return cut, self._matrix(cut)

    def features(self, store: Store, as_of: Any) -> pd.DataFrame:
        """The features the boosters read, as of the end of the ``as_of`` day, per
        customer with an order by then (index ``customer_id``; NaN where undefined)."""
        cut, X = self._at(store, as_of)
        return pd.DataFrame(
            X, index=pd.Index(cut.customer_ids, name="customer_id"), columns=self.features_
        )

    def predict(self, store: Store, as_of: Any) -> pd.DataFrame:
        """Per customer with an order on or before ``as_of`` (index ``customer_id``):
        ``p_buy_{h}d``, ``expected_purchases_{h}d``, ``expected_revenue_{h}d``."""
        cut, X = self._at(store, as_of)
        x = np.asarray(cut.orders["frequency"], dtype=np.float64)
        monetary = np.asarray(cut.orders["monetary"], dtype=np.float64)
        if self.spend_model_ is not None:
            spend = self.spend_model_._spend_values(x, monetary)
        else:
            spend = np.asarray(cut.orders["mean_spend"], dtype=np.float64)
        out: dict[str, Array] = {}
        for h in self.horizons:
            plan = self.learned_[h]
            base_p, base_n = _base_window(cut, float(h))
            raw = plan.buy_model.predict(X, raw_score=True) + _logit(base_p)
            p = _sigmoid(raw)
            if plan.knots is not None and plan.values is not None:
                p = isotonic_apply(p, plan.knots, plan.values)
            n = np.exp(plan.count_model.predict(X, raw_score=True) + _log_expected(base_n))
            out[f"p_buy_{h}d"] = np.clip(p, P_CLIP, 1.0 - P_CLIP)
            out[f"expected_purchases_{h}d"] = n
        # each horizon has boosters of its own: a longer window is held to at least the
        # chance and the purchases of every shorter one (a purchase within 30 days is one
        # within 90), and no chance is exactly 0 or 1 (isotonic steps can reach them)
        shorter: dict[str, Array] = {}
        for h in sorted(self.horizons):
            for key in ("p_buy", "expected_purchases"):
                name = f"{key}_{h}d"
                if key in shorter:
                    out[name] = np.maximum(out[name], shorter[key])
                shorter[key] = out[name]
            out[f"expected_revenue_{h}d"] = out[f"expected_purchases_{h}d"] * spend
        columns = [f"{key}_{h}d" for h in self.horizons for key in PREDICTED]
        frame = pd.DataFrame(
            {c: out[c] for c in columns}, index=pd.Index(cut.customer_ids, name="customer_id")
        )
        return frame

    # -- explanations --------------------------------------------------------------------
    def explain(
        self,
        store: Store,
        as_of: Any,
        customer_ids: Sequence[str],
        top: int = 3,
        *,
        horizon: int | None = None,
    ) -> dict[str, list[dict[str, Any]]]:
        """The ``top`` features that moved each customer's chance of buying within
        ``horizon`` days (default: the longest) most, from the buy model's tree
        contributions to its log-odds: ``feature``, ``value``, ``contribution``
        (log-odds; negative raises the churn risk) and ``text``."""
        h = max(self.horizons) if horizon is None else int(horizon)
        if h not in self.horizons:
            raise ArgumentError(f"horizon must be one of {list(self.horizons)}, got {horizon}")
        cut, X = self._at(store, as_of)
        position = {cid: i for i, cid in enumerate(cut.customer_ids.tolist())}
        unknown = [c for c in customer_ids if c not in position]
        if unknown:
            raise DataError(
                f"no orders on or before {cut.day.date()} for customer(s) {unknown[:5]}",
                expected="customers with an order by as_of",
            )
        rows = np.array([position[c] for c in customer_ids], dtype=np.intp)
        contrib = self.learned_[h].buy_model.predict(X[rows], pred_contrib=True)[:, :-1]
        values = X[rows]
        result: dict[str, list[dict[str, Any]]] = {}
        for i, cid in enumerate(customer_ids):
            order = np.argsort(-np.abs(contrib[i]), kind="stable")[:top]
            row = {f: values[i, j] for j, f in enumerate(self.features_)}
            result[cid] = [
                {
                    "feature": self.features_[j],
                    "value": None if np.isnan(values[i, j]) else float(values[i, j]),
                    "contribution": float(contrib[i, j]),
                    "text": _reason(self.features_[j], row, float(contrib[i, j]), self.channels_),
                }
                for j in order
            ]
        return result

    # -- persistence and card ------------------------------------------------------------
    def to_json(self) -> str:
        """The fit as JSON: the boosters as LightGBM model strings, the isotonic
        calibrations and the base and spend models' parameters."""
        self._require_fitted()
        assert self.base_model_ is not None
        return json.dumps(
            {
                "model": "learned",
                "format": FORMAT,
                "horizons": list(self.horizons),
                "base": self.base,
                "seed": self.seed,
                "cutoffs": self.n_cutoffs,
                "max_rows": self.max_rows,
                "min_history_days": self.min_history_days,
                "calibration_end": self.calibration_end_,
                "fitted_at": self.fitted_at_,
                "warnings": self.warnings_,
                "channels": self.channels_,
                "features": self.features_,
                "base_model": self.base_model_.to_json(),
                "spend_model": None if self.spend_model_ is None else self.spend_model_.to_json(),
                "learned": [
                    {
                        "horizon": p.horizon,
                        "window": p.window,
                        "cutoffs": p.cutoffs,
                        "calibration_cutoff": p.calibration_cutoff,
                        "rows": p.rows,
                        "buyers": p.buyers,
                        "rounds": p.rounds,
                        "check_cutoff": p.check_cutoff,
                        "check_window": p.check_window,
                        "buy_model": p.buy_model.model_to_string(),
                        "count_model": p.count_model.model_to_string(),
                        "knots": None if p.knots is None else p.knots.tolist(),
                        "values": None if p.values is None else p.values.tolist(),
                    }
                    for p in self.learned_.values()
                ],
            }
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> LearnedModel:
        """A model from :meth:`to_json` output."""
        lgb = _lightgbm()
        try:
            doc = json.loads(text)
            if doc.get("model") != "learned":
                raise KeyError("model")
            model = cls(
                doc["horizons"],
                base=doc["base"],
                seed=doc["seed"],
                cutoffs=doc["cutoffs"],
                max_rows=doc["max_rows"],
                min_history_days=doc["min_history_days"],
            )
            model.calibration_end_ = doc["calibration_end"]
            model.fitted_at_ = doc.get("fitted_at")
            model.warnings_ = [str(w) for w in doc.get("warnings", [])]
            model.channels_ = list(doc["channels"])
            model.features_ = list(doc["features"])
            base = Model.from_json(doc["base_model"])
            spend = doc.get("spend_model")
            learned = {}
            for p in doc["learned"]:
                learned[int(p["horizon"])] = _Horizon(
                    horizon=int(p["horizon"]),
                    window=int(p["window"]),
                    cutoffs=list(p["cutoffs"]),
                    calibration_cutoff=p["calibration_cutoff"],
                    rows=int(p["rows"]),
                    buyers=int(p["buyers"]),
                    buy_model=lgb.Booster(model_str=p["buy_model"]),
                    count_model=lgb.Booster(model_str=p["count_model"]),
                    knots=None if p["knots"] is None else np.asarray(p["knots"], dtype=float),
                    values=None if p["values"] is None else np.asarray(p["values"], dtype=float),
                    rounds=dict(p["rounds"]),
                    check_cutoff=p.get("check_cutoff"),
                    check_window=p.get("check_window"),
                )
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"not a learned model file: {exc}") from None
        if doc.get("format", 1) > FORMAT:
            raise ModelError("the model file was written by a newer retain; upgrade retain")
        if not isinstance(base, TransactionModel):
            raise ModelError("the learned model file's base model is not a repeat-purchase model")
        model.base_model_ = base
        model.spend_model_ = None if spend is None else GammaGamma.from_json(spend)  # type: ignore[assignment]
        model.learned_ = learned
        return model

    def card(self) -> dict[str, Any]:
        """What the model was trained on: cut-offs, rows, label windows, features and
        the assumptions made."""
        self._require_fitted()
        assert self.base_model_ is not None
        horizons = []
        for p in self.learned_.values():
            entry: dict[str, Any] = {
                "horizon_days": p.horizon,
                "label_window_days": p.window,
                "cutoffs": p.cutoffs,
                "calibration_cutoff": p.calibration_cutoff,
                "rows": p.rows,
                "buyers": p.buyers,
                "rounds": p.rounds,
                "calibrated": p.knots is not None,
                "rounds_chosen_on": (
                    f"the {p.check_window} days after {p.check_cutoff}"
                    if p.check_cutoff
                    else "a seeded fifth of the training customers"
                ),
            }
            if p.window != p.horizon:
                entry["assumption"] = (
                    f"the training period to {self.calibration_end_} holds no {p.horizon}-day "
                    f"label window: the correction learned on the {p.window} days after "
                    f"{p.cutoffs[0]} is applied to the base model's {p.horizon}-day prediction"
                )
            horizons.append(entry)
        return {
            "model": "learned",
            "base": self.base,
            "base_params": self.base_model_.params_,
            "calibration_end": self.calibration_end_,
            "fitted_at": self.fitted_at_,
            "seed": self.seed,
            "warnings": list(self.warnings_),
            "features": list(self.features_),
            "categorical": [f for f in CATEGORICAL if f in self.features_],
            "horizons": horizons,
            "spend": "Gamma-Gamma conditional spend per purchase, fitted to the calibration end",
            "counts": "distinct purchase days after the cut-off",
            "booster": {k: v for k, v in BOOSTER_PARAMS.items() if k != "verbosity"},
        }


def _datasets(
    lgb: Any, X: Array, X_check: Array, params: dict[str, Any], categorical: list[int]
) -> tuple[Any, Any]:
    """The binned training and early-stopping rows, shared by a horizon's two boosters
    (their labels and starting scores are set before each is trained)."""
    train = lgb.Dataset(
        X,
        np.zeros(X.shape[0]),
        categorical_feature=categorical,
        params=params,
        free_raw_data=False,
    ).construct()
    check = lgb.Dataset(
        X_check,
        np.zeros(X_check.shape[0]),
        categorical_feature=categorical,
        reference=train,
        params=params,
    ).construct()
    return train, check


def _train(
    lgb: Any,
    sets: tuple[Any, Any],
    fit_on: tuple[Array, Array],
    check_on: tuple[Array, Array],
    params: dict[str, Any],
) -> tuple[Any, int]:
    """A booster on the training rows' (labels, starting scores), its rounds chosen by
    early stopping on the check rows'."""
    train, check = sets
    train.set_label(fit_on[0])
    train.set_init_score(fit_on[1])
    check.set_label(check_on[0])
    check.set_init_score(check_on[1])
    booster = lgb.train(
        params,
        train,
        num_boost_round=MAX_ROUNDS,
        valid_sets=[check],
        callbacks=[lgb.early_stopping(EARLY_STOP, verbose=False)],
    )
    rounds = int(booster.best_iteration or booster.current_iteration())
    if booster.best_iteration:
        booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=rounds))
    return booster, rounds


# -- reasons in words -------------------------------------------------------------------


def _n(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 10 or value == int(value) else f"{value:.1f}"


def _reason(feature: str, row: dict[str, float], contribution: float, channels: list[str]) -> str:
    effect = "lowers risk" if contribution > 0 else "raises risk"
    v = row.get(feature, np.nan)

    def ok(x: float) -> bool:
        return x is not None and not np.isnan(x)

    gap, silent = row.get("mean_gap_days", np.nan), row.get("recency_days", np.nan)
    if feature in ("recency_days", "silent_over_gap", "mean_gap_days") and ok(gap):
        text = f"orders every {_n(gap)} days; silent for {_n(silent)}"
    elif feature in ("recency_days", "silent_over_gap", "mean_gap_days"):
        text = f"one purchase day so far; silent for {_n(silent)} days"
    elif feature == "frequency":
        text = f"bought on {_n(v + 1)} days" if ok(v) else "purchase count unknown"
    elif feature == "tenure_days":
        text = f"first bought {_n(v)} days ago"
    elif feature == "span_days":
        text = f"bought over a span of {_n(v)} days"
    elif feature == "spend_trend" and ok(v):
        change = (v - 1.0) * 100
        if abs(change) < 5:
            text = "the last 3 orders at the usual spend"
        else:
            direction = "below" if change < 0 else "above"
            text = f"the last 3 orders {abs(change):.0f}% {direction} the usual spend"
    elif feature in ("std_gap_days", "gap_cv") and ok(row.get("gap_cv", np.nan)):
        cv = row["gap_cv"]
        text = f"{'regular' if cv < 0.5 else 'irregular'} orders (gaps vary by {cv * 100:.0f}%)"
    elif feature == "last_gap_over_gap" and ok(v):
        text = f"the last gap between purchases was {v:.1f}x the usual"
    elif feature == "mean_spend" and ok(v):
        text = f"spends {_n(v)} per order"
    elif feature == "total_spend" and ok(v):
        text = f"spent {_n(v)} in all"
    elif feature == "discount_share" and ok(v):
        text = f"{v * 100:.0f}% of order value discounted"
    elif feature == "refund_share" and ok(v):
        text = f"{v * 100:.0f}% of order value refunded"
    elif feature.startswith("orders_") and ok(v):
        text = f"{_n(v)} orders in the last {feature[7:-1]} days"
    elif feature == "first_channel":
        name = channels[int(v)] if ok(v) and 0 <= int(v) < len(channels) else "unknown"
        text = f"first ordered through {name}"
    elif feature == "btyd_p_alive" and ok(v):
        text = f"the base model gives a {v * 100:.0f}% chance of still being a customer"
    elif feature.startswith("btyd_expected_") and ok(v):
        text = f"the base model expects {v:.2g} purchases in {feature[14:-1]} days"
    else:
        text = f"{feature} = {'unknown' if not ok(v) else _n(v)}"
    return f"{text} ({effect})"
