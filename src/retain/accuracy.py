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

from dataclasses import dataclass
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


@dataclass
class Outcomes:
    """Probabilities with, for each, the customers given it and how many of them had
    label 1: the metrics of :func:`auc`, :func:`log_loss`, :func:`brier` and
    :func:`reliability` need no more, so that customers who share a forecast (the
    distinct rows of a model's summary) are scored as one (:func:`outcomes`)."""

    p: Array
    customers: Array
    positives: Array

    @property
    def total(self) -> float:
        return float(self.customers.sum())


def outcomes(p: Any, labels: Any, groups: NDArray[np.intp] | None = None) -> Outcomes:
    """:class:`Outcomes` of probabilities and 0/1 labels, one per customer; with
    ``groups`` (the group of each customer), ``p`` holds one probability per group."""
    if groups is None:
        prob, y = _probabilities(p, labels)
        return Outcomes(prob, np.ones(prob.size), y)
    prob = _values(p, "probabilities")
    if prob.size and (prob.min() < 0 or prob.max() > 1):
        raise ArgumentError("probabilities must lie between 0 and 1")
    y = _values(labels, "labels")
    _check_labels(y)
    if y.size != groups.size:
        raise ArgumentError("labels and groups must have one value per customer each")
    return Outcomes(
        prob,
        np.bincount(groups, minlength=prob.size).astype(np.float64),
        np.bincount(groups, weights=y, minlength=prob.size).astype(np.float64),
    )


def _runs(values: Array, *sums: Array) -> tuple[Array, list[Array]]:
    """The distinct ``values`` in increasing order and, for each, the sums of each of
    ``sums`` over the entries with that value."""
    order = np.argsort(values)  # equal values are merged: their order does not matter
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    if ordered.size == 0:
        return ordered, [np.zeros(0) for _ in sums]
    return ordered[starts], [np.add.reduceat(w[order], starts) for w in sums]


def _auc_of(data: Outcomes) -> float | None:
    """:func:`auc` of grouped outcomes."""
    positives = float(data.positives.sum())
    negatives = data.total - positives
    if positives == 0 or negatives == 0:
        return None
    _, (pos, count) = _runs(data.p, data.positives, data.customers)
    neg = count - pos
    below = np.cumsum(neg) - neg  # negatives scored strictly lower
    return float(np.sum(pos * (below + 0.5 * neg)) / (positives * negatives))


def auc(scores: Any, labels: Any) -> float | None:
    """The area under the ROC curve: the chance that a customer with label 1 scores
    above one with label 0, ties counting one half (Mann-Whitney U over average
    ranks). 1 is a perfect ranking, 0.5 chance, 0 a reversed one; None when either
    label is absent."""
    s, y = _pair(scores, labels, ("scores", "labels"))
    _check_labels(y)
    return _auc_of(Outcomes(s, np.ones(s.size), y))


def _log_loss_of(data: Outcomes) -> float | None:
    if data.total == 0:
        return None
    prob = np.clip(data.p, EPSILON, 1.0 - EPSILON)
    negatives = data.customers - data.positives
    return float(-np.sum(data.positives * np.log(prob) + negatives * np.log1p(-prob)) / data.total)


def _brier_of(data: Outcomes) -> float | None:
    if data.total == 0:
        return None
    negatives = data.customers - data.positives
    return float(np.sum(data.positives * (1.0 - data.p) ** 2 + negatives * data.p**2) / data.total)


def log_loss(p: Any, labels: Any) -> float | None:
    """The mean negative log-likelihood of the labels, -mean(y log p + (1 - y)
    log(1 - p)), with p clipped to [1e-15, 1 - 1e-15]; lower is better. None without
    customers."""
    return _log_loss_of(outcomes(p, labels))


def brier(p: Any, labels: Any) -> float | None:
    """The mean squared difference of probability and label; lower is better. None
    without customers."""
    return _brier_of(outcomes(p, labels))


def buy_scores(buy: Outcomes, bins: int = 10) -> dict[str, Any]:
    """Every score of a forecast of who buys, from :func:`outcomes`: ``auc``,
    ``log_loss``, ``brier``, ``calibration`` (the :func:`reliability` table, ``bins``
    bins) and ``ece`` (its expected calibration error)."""
    table = _reliability_of(buy, bins)
    return {
        "auc": _auc_of(buy),
        "log_loss": _log_loss_of(buy),
        "brier": _brier_of(buy),
        "calibration": table,
        "ece": expected_calibration_error(table),
    }


def _tie_bins(counts: Array, bins: int) -> NDArray[np.intp]:
    """The bin of each run of equal values (in increasing order; ``counts`` customers
    each): ``bins`` bins of (nearly) equal counts, each run wholly in the bin its middle
    customer falls in, so that a bin may be empty (then it is skipped) and the bins are
    numbered 0, 1, ... without gaps."""
    n = float(counts.sum())
    ends = np.cumsum(counts)
    middle = (ends - counts + ends - 1) / 2.0
    run_bin = np.minimum((middle * bins / n).astype(np.intp), bins - 1)
    # renumbered without gaps: the bins of runs in increasing order never decrease
    return np.r_[0, np.cumsum(run_bin[1:] != run_bin[:-1])].astype(np.intp)


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
    return _reliability_of(outcomes(p, labels), bins)


def _reliability_of(data: Outcomes, bins: int = 10) -> list[dict[str, Any]]:
    """:func:`reliability` of grouped outcomes."""
    _check_bins(bins)
    values, (count, pos) = _runs(data.p, data.customers, data.positives)
    keep = count > 0
    values, count, pos = values[keep], count[keep], pos[keep]
    if values.size == 0:
        return []
    run_bin = _tie_bins(count, bins)
    customers = np.bincount(run_bin, weights=count)
    predicted = np.bincount(run_bin, weights=values * count) / customers
    observed = np.bincount(run_bin, weights=pos) / customers
    last = np.flatnonzero(np.r_[run_bin[1:] != run_bin[:-1], True])
    first = np.r_[0, last[:-1] + 1]
    return [
        {
            "bin": int(k + 1),
            "customers": round(customers[k]),
            "predicted": float(predicted[k]),
            "observed": float(observed[k]),
            "low": float(values[first[k]]),
            "high": float(values[last[k]]),
        }
        for k in range(customers.size)
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


@dataclass
class Ranked:
    """Customers ranked by a predicted value, the highest first, customers with equal
    predictions merged: each run's prediction, customers and actual total
    (:func:`ranked`); what :func:`decile_lift` and :func:`normalized_gini` read."""

    predicted: Array
    customers: Array
    actual: Array


def ranked(predicted: Any, actual: Any) -> Ranked:
    """:class:`Ranked` of one predicted and one actual value per customer."""
    pred, act = _pair(predicted, actual, ("predicted values", "actual values"))
    values, (count, total) = _runs(-pred, np.ones(pred.size), act)
    return Ranked(-values, count, total)


def decile_lift(predicted: Any, actual: Any) -> list[dict[str, Any]]:
    """The customers in ten equal-count groups by predicted value, the highest first
    (customers with equal predictions kept in one group, so there may be fewer), each
    a dict ``decile`` (1 = the highest predicted), ``customers``, ``predicted`` and
    ``actual`` (means per customer), ``actual_share`` (the group's share of all the
    actual value; None when that is 0) and ``lift`` (``actual_share`` over the
    group's share of the customers: 1 is no better than chance)."""
    return _lift_of(ranked(predicted, actual))


def _lift_of(data: Ranked) -> list[dict[str, Any]]:
    if data.customers.size == 0:
        return []
    group = _tie_bins(data.customers, 10)
    count = np.bincount(group, weights=data.customers)
    n = float(data.customers.sum())
    total = float(data.actual.sum())
    actual_sum = np.bincount(group, weights=data.actual)
    predicted_mean = np.bincount(group, weights=data.predicted * data.customers) / count
    rows = []
    for k in range(count.size):
        share = float(actual_sum[k] / total) if total != 0 else None
        rows.append(
            {
                "decile": int(k + 1),
                "customers": round(count[k]),
                "predicted": float(predicted_mean[k]),
                "actual": float(actual_sum[k] / count[k]),
                "actual_share": share,
                "lift": None if share is None else share / (count[k] / n),
            }
        )
    return rows


def _gini_of(data: Ranked) -> float:
    """The Gini of the actual values in ``data``'s order: the mean over ranks of the
    cumulative share of the actual value above the share of the customers. The
    customers of a run share its mean value (the expectation over their orders)."""
    c, a = data.customers, data.actual
    n, total = float(c.sum()), float(a.sum())
    before = np.cumsum(a) - a  # the actual value ranked above each run
    # the run's customers' cumulative shares: c * before + a * (c + 1) / 2, over total
    lorenz = float(np.sum(c * before + a * (c + 1.0) / 2.0)) / total
    return (lorenz - (n + 1.0) / 2.0) / n


def normalized_gini(predicted: Any, actual: Any) -> float | None:
    """The Gini of the actual values ranked by ``predicted`` over their Gini ranked
    by themselves: 1 is the best possible ranking, 0 no better than chance, below 0
    worse. None when there is nothing to rank (no customers, an actual total of 0, or
    every actual value equal)."""
    _, act = _pair(predicted, actual, ("predicted values", "actual values"))
    return _normalized_gini_of(ranked(predicted, actual), ranked(act, act))


def _normalized_gini_of(data: Ranked, best: Ranked) -> float | None:
    """:func:`normalized_gini` of ``data``; ``best`` ranks the same actual values by
    themselves."""
    if data.customers.sum() < 2 or data.actual.sum() == 0:
        return None
    top = _gini_of(best)
    if top == 0:
        return None
    return _gini_of(data) / top
