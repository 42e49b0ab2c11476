"""The statistics of an experiment: intervals, tests and the rule that picks a winner.

Every function takes counts or per-recipient values and returns plain numbers, so the
tests can check them against figures worked out by hand.

**The decision rule** (:func:`decide`) is a sequential test, safe to look at after every
tick: the mixture sequential probability ratio test (mSPRT) of the difference between
two arms, with a normal mixing distribution of variance ``tau²`` over the effect. Its
interval (:func:`sequential_interval`) holds the true difference with probability at least
``1 - alpha`` *at every look at once*, so reading the report each day, and stopping the
first time it excludes zero, keeps the false-winner rate at ``alpha``. It is wider than
the fixed-horizon interval, which holds only at one planned look. ``tau`` is a fifth of the
pooled rate (the size of effect campaigns are run for); any ``tau`` keeps the guarantee,
a good one shortens the wait.

The fixed-horizon figures (:func:`two_proportion_test`, :func:`difference_interval`,
:func:`welch_interval`) and the Bayesian ones (:func:`beta_binomial`: the probability each
arm is best and the expected loss of choosing it, flat Beta(1, 1) priors) are reported
beside it, as a reader of any A/B tool expects them; the decision uses the sequential one.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from retain.errors import ArgumentError

LEVEL = 0.95
"""The intervals' level: 95%."""
TAU_SHARE = 0.2
"""The mixing distribution's spread, as a share of the pooled rate or mean."""
MIN_PER_ARM = 100
"""Fewer recipients than this in an arm: no decision (the normal approximation is poor)."""


@functools.lru_cache(maxsize=16)
def _z(level: float) -> float:
    from scipy.special import ndtri

    return float(ndtri(0.5 + level / 2))


def _check_counts(successes: int, n: int, what: str = "arm") -> None:
    if n < 0 or successes < 0 or successes > n:
        raise ArgumentError(f"{what}: got {successes} of {n}, expected 0 <= successes <= n")


def wilson(successes: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """The Wilson score interval of a proportion (``(0, 1)`` for no trials)."""
    _check_counts(successes, n)
    if n == 0:
        return 0.0, 1.0
    z = _z(level)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def difference_interval(
    x1: int, n1: int, x2: int, n2: int, level: float = LEVEL
) -> tuple[float, float]:
    """Newcombe's interval of ``x2/n2 - x1/n1`` from the two Wilson intervals (his
    method 10): good at small counts and rates near 0, where the Wald interval is not."""
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson(x1, n1, level)
    l2, u2 = wilson(x2, n2, level)
    d = p2 - p1
    return d - math.hypot(p2 - l2, u1 - p1), d + math.hypot(u2 - p2, p1 - l1)


def two_proportion_test(x1: int, n1: int, x2: int, n2: int) -> tuple[float, float]:
    """The pooled two-proportion z-test of ``x2/n2`` against ``x1/n1``: (z, two-sided p).
    Valid at one planned look; no trials or no variance gives (0, 1)."""
    _check_counts(x1, n1, "first arm")
    _check_counts(x2, n2, "second arm")
    if n1 == 0 or n2 == 0:
        return 0.0, 1.0
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 0.0, 1.0
    z = (x2 / n2 - x1 / n1) / se
    return z, math.erfc(abs(z) / math.sqrt(2))


def welch_interval(
    mean1: float, var1: float, n1: int, mean2: float, var2: float, n2: int, level: float = LEVEL
) -> tuple[float, float]:
    """Welch's t-interval of ``mean2 - mean1`` (per-recipient revenue, say) from each
    arm's mean, sample variance and size."""
    from scipy.special import stdtrit  # the t quantile: scipy.stats takes a second to import

    d = mean2 - mean1
    if n1 < 2 or n2 < 2:
        return -math.inf, math.inf
    a, b = var1 / n1, var2 / n2
    se = math.sqrt(a + b)
    if se == 0:
        return d, d
    df = (a + b) ** 2 / (a * a / (n1 - 1) + b * b / (n2 - 1))
    half = float(stdtrit(df, 0.5 + level / 2)) * se
    return d - half, d + half


def sequential_interval(
    difference: float, variance: float, tau2: float, alpha: float = 1 - LEVEL
) -> tuple[float, float]:
    """The always-valid interval of a difference estimated as ``difference`` with
    ``variance``: the differences the mSPRT with a N(0, ``tau2``) mixture does not reject
    at ``alpha``. The likelihood ratio of an estimate off by ``e`` is
    ``sqrt(V / (V + tau2)) * exp(tau2 * e**2 / (2 * V * (V + tau2)))``; it reaches
    ``1 / alpha`` when ``e**2 = V (V + tau2) / tau2 * (2 log(1/alpha) + log((V + tau2) / V))``."""
    if variance <= 0 or tau2 <= 0:
        return (difference, difference) if variance == 0 else (-math.inf, math.inf)
    v = variance
    half = math.sqrt(v * (v + tau2) / tau2 * (2 * math.log(1 / alpha) + math.log((v + tau2) / v)))
    return difference - half, difference + half


def sequential_p(difference: float, variance: float, tau2: float) -> float:
    """The always-valid p-value of a zero difference at this look (``1 / likelihood
    ratio``, at most 1)."""
    if variance <= 0 or tau2 <= 0:
        return 1.0 if difference == 0 or variance < 0 else 0.0
    v = variance
    log_ratio = 0.5 * math.log(v / (v + tau2)) + tau2 * difference**2 / (2 * v * (v + tau2))
    return float(min(1.0, math.exp(-log_ratio)))


def beta_binomial(successes: list[int], trials: list[int]) -> tuple[list[float], list[float]]:
    """With a flat Beta(1, 1) prior on each arm's rate: the probability each arm's rate is
    the highest, and the expected loss of choosing it (``E[max rate - its rate]``, in
    points of rate). Computed by quadrature over the posteriors, not by sampling: the same
    counts always give the same figures. ``P(i best) = ∫ f_i Π_{j≠i} F_j`` and
    ``E[max] = hi - ∫ Π_j F_j`` over ``[lo, hi]`` holding every posterior."""
    from scipy.special import betainc, betaincinv, betaln

    if len(successes) != len(trials) or not successes:
        raise ArgumentError("beta_binomial: one count of successes per arm, at least one arm")
    for x, n in zip(successes, trials, strict=True):
        _check_counts(x, n)
    posts = [(1.0 + x, 1.0 + n - x) for x, n in zip(successes, trials, strict=True)]
    # a grid dense in each posterior's own range, so that narrow ones far apart are resolved
    parts = []
    for a, b in posts:
        low, high = (float(v) for v in betaincinv(a, b, np.array([1e-10, 1 - 1e-10])))
        parts.append(np.linspace(low, high, 2001))
    grid = np.unique(np.concatenate([np.array([0.0, 1.0]), *parts]))
    grid = grid[(grid >= 0) & (grid <= 1)]
    cdfs = np.array([betainc(a, b, grid) for a, b in posts])
    inner = np.log(grid[1:-1]), np.log1p(-grid[1:-1])  # the grid's ends are 0 and 1
    pdfs = np.zeros((len(posts), len(grid)))
    for i, (a, b) in enumerate(posts):
        pdfs[i, 1:-1] = np.exp((a - 1) * inner[0] + (b - 1) * inner[1] - betaln(a, b))
        # at 0 and 1 the density is 1 / B(a, b) where the exponent is 0, else 0
        pdfs[i, 0] = math.exp(-betaln(a, b)) if a == 1 else 0.0
        pdfs[i, -1] = math.exp(-betaln(a, b)) if b == 1 else 0.0
    all_below = np.prod(cdfs, axis=0)
    best = []
    for i in range(len(posts)):
        others = np.prod(np.delete(cdfs, i, axis=0), axis=0) if len(posts) > 1 else 1.0
        best.append(float(np.trapezoid(pdfs[i] * others, grid)))
    total = sum(best)
    best = [b / total for b in best]  # quadrature error spread evenly: they sum to 1
    e_max = 1.0 - float(np.trapezoid(all_below, grid))
    loss = [max(0.0, e_max - a / (a + b)) for a, b in posts]
    return best, loss


def sample_size(baseline: float, lift: float, *, alpha: float = 0.05, power: float = 0.8) -> int:
    """Recipients per arm for a two-sided two-proportion z-test at ``alpha`` to find a
    relative ``lift`` of the ``baseline`` rate with probability ``power`` (pooled variance
    under the null, the arms' own under the alternative; no continuity correction)::

        n = (z_{1-alpha/2} sqrt(2 p (1-p)) + z_power sqrt(p1 (1-p1) + p2 (1-p2)))² / (p2 - p1)²

    with ``p2 = baseline (1 + lift)`` and ``p`` their mean."""
    if not 0 < baseline < 1:
        raise ArgumentError(f"--baseline: got {baseline}, expected a rate between 0 and 1")
    p2 = baseline * (1 + lift)
    if lift == 0 or not 0 < p2 < 1:
        raise ArgumentError(
            f"--lift: got {lift}, expected a relative change that is not 0 and keeps the rate "
            f"between 0 and 1 (0.1 for +10%: {baseline} -> {baseline * 1.1:.4g})"
        )
    if not 0 < alpha < 1:
        raise ArgumentError(f"--alpha: got {alpha}, expected a number between 0 and 1")
    if not 0 < power < 1:
        raise ArgumentError(f"--power: got {power}, expected a number between 0 and 1")
    from scipy.special import ndtri

    p1 = baseline
    mean = (p1 + p2) / 2
    za = float(ndtri(1 - alpha / 2))
    zb = float(ndtri(power))
    top = za * math.sqrt(2 * mean * (1 - mean)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return math.ceil(top**2 / (p2 - p1) ** 2)


@dataclass(frozen=True)
class Comparison:
    """One arm against a reference arm, on one measure: the difference (arm minus
    reference), its fixed-horizon and always-valid intervals, the p-values, and the
    verdict of the sequential rule (``better``, ``worse`` or ``undecided``).
    ``relative`` is the difference over the reference's rate or mean, None when that is
    not above 0."""

    difference: float
    relative: float | None
    interval: tuple[float, float]
    sequential_interval: tuple[float, float]
    p_value: float
    sequential_p: float
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "difference": self.difference,
            "relative": self.relative,
            "interval": list(self.interval),
            "sequential_interval": list(self.sequential_interval),
            "p_value": self.p_value,
            "sequential_p": self.sequential_p,
            "verdict": self.verdict,
        }


def _verdict(interval: tuple[float, float], n1: int, n2: int) -> str:
    if min(n1, n2) < MIN_PER_ARM:
        return "undecided"
    if interval[0] > 0:
        return "better"
    if interval[1] < 0:
        return "worse"
    return "undecided"


def compare_rates(x_ref: int, n_ref: int, x: int, n: int, alpha: float = 1 - LEVEL) -> Comparison:
    """An arm's rate (``x`` of ``n``) against the reference's (``x_ref`` of ``n_ref``)."""
    p_ref = x_ref / n_ref if n_ref else 0.0
    p = x / n if n else 0.0
    variance = (p_ref * (1 - p_ref) / n_ref if n_ref else math.inf) + (
        p * (1 - p) / n if n else math.inf
    )
    pooled = (x_ref + x) / (n_ref + n) if n_ref + n else 0.0
    tau2 = (TAU_SHARE * pooled) ** 2
    fixed = difference_interval(x_ref, n_ref, x, n, 1 - alpha) if n and n_ref else (-1.0, 1.0)
    seq = (
        sequential_interval(p - p_ref, variance, tau2, alpha)
        if math.isfinite(variance)
        else (
            -1.0,
            1.0,
        )
    )
    if variance == 0:  # no conversions anywhere, or all: nothing tells the arms apart
        seq = (-1.0, 1.0) if p == p_ref else seq
    seq = (max(-1.0, seq[0]), min(1.0, seq[1]))  # a difference of rates lies in [-1, 1]
    return Comparison(
        difference=p - p_ref,
        relative=(p - p_ref) / p_ref if p_ref else None,
        interval=fixed,
        sequential_interval=seq,
        p_value=two_proportion_test(x_ref, n_ref, x, n)[1],
        sequential_p=sequential_p(p - p_ref, variance, tau2) if math.isfinite(variance) else 1.0,
        verdict=_verdict(seq, n_ref, n),
    )


def compare_means(ref: np.ndarray, arm: np.ndarray, alpha: float = 1 - LEVEL) -> Comparison:
    """An arm's mean per recipient (revenue, a change of CLV) against the reference's:
    Welch's interval, and the sequential one on the normal approximation."""
    n_ref, n = len(ref), len(arm)
    m_ref = float(ref.mean()) if n_ref else 0.0
    m = float(arm.mean()) if n else 0.0
    v_ref = float(ref.var(ddof=1)) if n_ref > 1 else math.inf
    v = float(arm.var(ddof=1)) if n > 1 else math.inf
    variance = v_ref / max(n_ref, 1) + v / max(n, 1)
    both = np.concatenate([ref, arm]) if n_ref + n else np.zeros(1)
    scale = float(np.mean(np.abs(both)))
    tau2 = (TAU_SHARE * scale) ** 2
    if math.isfinite(variance):
        seq = sequential_interval(m - m_ref, variance, tau2, alpha)
        seq_p = sequential_p(m - m_ref, variance, tau2)
        if variance == 0 and m == m_ref:
            seq, seq_p = (-math.inf, math.inf), 1.0
    else:
        seq, seq_p = (-math.inf, math.inf), 1.0
    if math.isfinite(variance) and variance > 0:
        z = (m - m_ref) / math.sqrt(variance)
        p_value = math.erfc(abs(z) / math.sqrt(2))
    else:
        p_value = 1.0
    return Comparison(
        difference=m - m_ref,
        # a change relative to a mean at or below 0 (a change of CLV) says nothing
        relative=(m - m_ref) / m_ref if m_ref > 0 else None,
        interval=welch_interval(m_ref, v_ref, n_ref, m, v, n, 1 - alpha),
        sequential_interval=seq,
        p_value=p_value,
        sequential_p=seq_p,
        verdict=_verdict(seq, n_ref, n),
    )
