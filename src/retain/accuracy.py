"""How good a forecast was: the scores a backtest gives each model, in plain NumPy.

Probabilities of an event ("buys again within H days") against what happened (0/1
labels): :func:`auc` (ranking), :func:`log_loss` and :func:`brier` (proper scores,
lower is better), :func:`reliability` (predicted against observed by equal-count
bins) and :func:`expected_calibration_error` (its weighted gap).

Values (purchases, revenue) against what happened: :func:`decile_lift` (the share
of the actual value each tenth of the customers, ranked by the prediction, holds)
and :func:`normalized_gini` (how close that ranking comes to the best possible one).

Every function takes array-likes of equal length; ties in a prediction are kept
together (averaged ranks, whole tie groups in one bin), so that the order of the
customers never changes a score.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from retain.errors import ArgumentError

#: probabilities are clipped to [EPSILON, 1 - EPSILON] before the log of the log-loss
EPSILON = 1e-15

Array = NDArray[np.float64]


def _values(values: Any, name: str) -> Array:
    array = np.asarray(values, dtype=np.float64).ravel()
    if not np.all(np.isfinite(array)):
        raise ArgumentError(f"{name} must be finite numbers; found NaN or infinity")
    return array


def _pair(first: Any, second: Any, names: tuple[str, str]) -> tuple[Array, Array]:
    a, b = _values(first, names[0]), _values(second, names[1])
    if a.size != b.size:
        raise ArgumentError(
            f"{names[0]} and {names[1]} must have one value per customer each; "
            f"got {a.size:,} and {b.size:,}"
        )
    return a, b


def _probabilities(p: Any, labels: Any) -> tuple[Array, Array]:
    prob, y = _pair(p, labels, ("probabilities", "labels"))
    if prob.size and (prob.min() < 0 or prob.max() > 1):
        raise ArgumentError("probabilities must lie between 0 and 1")
    _check_labels(y)
    return prob, y


def _check_labels(y: Array) -> None:
    if not np.all((y == 0) | (y == 1)):
        raise ArgumentError("labels must be 0 or 1 (or false and true)")


def _average_ranks(values: Array) -> Array:
    """Ranks 1..n of ``values``, ties given the mean of the ranks they span."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    # the start of each run of equal values, and the mean rank of the run
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], ordered.size]
    mean_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(values.size)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def auc(scores: Any, labels: Any) -> float | None:
    """The area under the ROC curve: the chance that a customer with label 1 scores
    above one with label 0, ties counting one half (Mann-Whitney U over average
    ranks). 1 is a perfect ranking, 0.5 chance, 0 a reversed one; None when either
    label is absent."""
    s, y = _pair(scores, labels, ("scores", "labels"))
    _check_labels(y)
    positives = int(y.sum())
    negatives = y.size - positives
    if positives == 0 or negatives == 0:
        return None
    ranks = _average_ranks(s)
    u = ranks[y == 1].sum() - positives * (positives + 1) / 2.0
    return float(u / (positives * negatives))


def log_loss(p: Any, labels: Any) -> float | None:
    """The mean negative log-likelihood of the labels, -mean(y log p + (1 - y)
    log(1 - p)), with p clipped to [1e-15, 1 - 1e-15]; lower is better. None without
    customers."""
    prob, y = _probabilities(p, labels)
    if prob.size == 0:
        return None
    prob = np.clip(prob, EPSILON, 1.0 - EPSILON)
    return float(-np.mean(y * np.log(prob) + (1.0 - y) * np.log1p(-prob)))


def brier(p: Any, labels: Any) -> float | None:
    """The mean squared difference of probability and label; lower is better. None
    without customers."""
    prob, y = _probabilities(p, labels)
    if prob.size == 0:
        return None
    return float(np.mean((prob - y) ** 2))


def _tie_bins(values: Array, bins: int) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """The customers in increasing order of ``values`` and, for each in that order, its
    bin: ``bins`` bins of (nearly) equal counts, each run of equal values wholly in the
    bin its middle falls in, so that a bin may be empty (then it is skipped) and the
    bins are numbered 0, 1, ... without gaps."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    n = ordered.size
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], n]
    middle = (starts + ends - 1) / 2.0
    run_bin = np.minimum((middle * bins / n).astype(np.intp), bins - 1)
    _, run_bin = np.unique(run_bin, return_inverse=True)  # renumber without gaps
    return order, np.repeat(run_bin, ends - starts)


def _check_bins(bins: int) -> None:
    if not isinstance(bins, int | np.integer) or isinstance(bins, bool) or bins < 1:
        raise ArgumentError(f"bins must be a whole number of 1 or more, got {bins!r}")


def reliability(p: Any, labels: Any, bins: int = 10) -> list[dict[str, Any]]:
    """Predicted against observed: the customers in ``bins`` equal-count bins by
    predicted probability (lowest first; customers with equal probabilities kept in
    one bin, so there may be fewer bins), each a dict ``bin`` (1, 2, ...),
    ``customers``, ``predicted`` (mean probability), ``observed`` (share with label
    1), ``low`` and ``high`` (the bin's smallest and largest probability)."""
    _check_bins(bins)
    prob, y = _probabilities(p, labels)
    if prob.size == 0:
        return []
    order, bin_of = _tie_bins(prob, bins)
    count = np.bincount(bin_of)
    predicted = np.bincount(bin_of, weights=prob[order]) / count
    observed = np.bincount(bin_of, weights=y[order]) / count
    ordered = prob[order]
    first = np.r_[0, np.cumsum(count)[:-1]]
    last = np.cumsum(count) - 1
    return [
        {
            "bin": int(k + 1),
            "customers": int(count[k]),
            "predicted": float(predicted[k]),
            "observed": float(observed[k]),
            "low": float(ordered[first[k]]),
            "high": float(ordered[last[k]]),
        }
        for k in range(count.size)
    ]


def expected_calibration_error(table: list[dict[str, Any]]) -> float | None:
    """The weighted mean gap of a :func:`reliability` table: the sum over bins of
    customers / all customers x |predicted - observed|. 0 is perfect calibration;
    None for an empty table."""
    total = sum(int(row["customers"]) for row in table)
    if total == 0:
        return None
    return float(
        sum(
            int(row["customers"]) / total * abs(float(row["predicted"]) - float(row["observed"]))
            for row in table
        )
    )


def decile_lift(predicted: Any, actual: Any) -> list[dict[str, Any]]:
    """The customers in ten equal-count groups by predicted value, the highest first
    (customers with equal predictions kept in one group, so there may be fewer), each
    a dict ``decile`` (1 = the highest predicted), ``customers``, ``predicted`` and
    ``actual`` (means per customer), ``actual_share`` (the group's share of all the
    actual value; None when that is 0) and ``lift`` (``actual_share`` over the
    group's share of the customers: 1 is no better than chance)."""
    pred, act = _pair(predicted, actual, ("predicted values", "actual values"))
    if pred.size == 0:
        return []
    order, group = _tie_bins(-pred, 10)
    count = np.bincount(group)
    total = float(act.sum())
    actual_sum = np.bincount(group, weights=act[order])
    predicted_mean = np.bincount(group, weights=pred[order]) / count
    rows = []
    for k in range(count.size):
        share = float(actual_sum[k] / total) if total != 0 else None
        rows.append(
            {
                "decile": int(k + 1),
                "customers": int(count[k]),
                "predicted": float(predicted_mean[k]),
                "actual": float(actual_sum[k] / count[k]),
                "actual_share": share,
                "lift": None if share is None else share / (count[k] / pred.size),
            }
        )
    return rows


def _gini(order_by: Array, actual: Array) -> float:
    """The Gini of ``actual`` with the customers ranked by ``order_by``, highest first:
    the mean over ranks of the cumulative share of the actual value above the share of
    the customers. Customers with equal ``order_by`` share their group's mean value
    (the expectation over their orders)."""
    order = np.argsort(-order_by, kind="stable")
    ranked = order_by[order]
    values = actual[order]
    starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
    sizes = np.diff(np.r_[starts, ranked.size])
    means = np.add.reduceat(values, starts) / sizes
    spread = np.repeat(means, sizes)
    n = values.size
    cumulative = np.cumsum(spread) / values.sum()
    return float(np.sum(cumulative - np.arange(1, n + 1) / n) / n)


def normalized_gini(predicted: Any, actual: Any) -> float | None:
    """The Gini of the actual values ranked by ``predicted`` over their Gini ranked
    by themselves: 1 is the best possible ranking, 0 no better than chance, below 0
    worse. None when there is nothing to rank (no customers, an actual total of 0, or
    every actual value equal)."""
    pred, act = _pair(predicted, actual, ("predicted values", "actual values"))
    if pred.size < 2 or act.sum() == 0:
        return None
    best = _gini(act, act)
    if best == 0:
        return None
    return _gini(pred, act) / best
