"""Special functions the models need, evaluated stably and vectorised.

- :func:`hyper_series`: the hypergeometric-type series
  ``sum_n (p1)_n (p2)_n / ((q1)_n (q2)_n) z**n`` for many rows at once, summed
  term by term only for the rows that have not converged yet, with the
  derivatives with respect to ``p1``, ``q1`` and ``z`` when asked. Every Gauss
  hypergeometric function the models use is one of these with ``0 <= z < 1``,
  after a transformation that keeps the terms small (see the models).
- :func:`log1mexp`: ``log(1 - exp(x))`` for ``x <= 0`` without cancellation.
- :func:`gauss_legendre`: cached Gauss-Legendre nodes and weights on [0, 1].
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]

#: relative accuracy at which a series stops
SERIES_TOL = 1e-15
#: terms after which a series that has still not converged is closed with an
#: estimate of its geometric tail (only reached for z within about 1e-3 of 1)
MAX_TERMS = 20_000


class SeriesResult(NamedTuple):
    value: Array
    d_p1: Array | None
    d_q1: Array | None
    d_z: Array | None


def hyper_series(
    p1: Array | float,
    p2: Array | float,
    q1: Array | float,
    q2: Array | float,
    z: Array | float,
    *,
    derivatives: bool = False,
    tol: float = SERIES_TOL,
    max_terms: int = MAX_TERMS,
) -> SeriesResult:
    """``sum_{n>=0} (p1)_n (p2)_n / ((q1)_n (q2)_n) z**n`` element-wise.

    Arguments broadcast together; ``q1, q2 > 0`` and ``0 <= z < 1``. With
    ``derivatives=True`` also the partial derivatives with respect to ``p1``,
    ``q1`` and ``z``. The sum runs term by term over the rows still short of
    ``tol`` relative accuracy, so cheap rows cost little and hard rows (z near
    1) do not slow the others. Terms may change sign a finite number of times
    (``p1`` or ``p2`` negative); the stopping rule waits until they no longer do.
    """
    p1b, p2b, q1b, q2b, zb = np.broadcast_arrays(
        *(np.asarray(v, dtype=np.float64) for v in (p1, p2, q1, q2, z))
    )
    shape = p1b.shape
    p1f, p2f, q1f, q2f, zf = (np.ravel(v).copy() for v in (p1b, p2b, q1b, q2b, zb))
    size = p1f.size
    total = np.ones(size)
    d_p1 = np.zeros(size) if derivatives else None
    d_q1 = np.zeros(size) if derivatives else None
    d_z = np.zeros(size) if derivatives else None

    # state of the active rows: index, current term, running harmonic sums
    idx = np.flatnonzero(zf != 0.0)
    term = np.ones(idx.size)
    h_p1 = np.zeros(idx.size)  # sum_{j<n} 1/(p1+j)
    h_q1 = np.zeros(idx.size)  # sum_{j<n} 1/(q1+j)
    a1, a2, b1, b2, zz = p1f[idx], p2f[idx], q1f[idx], q2f[idx], zf[idx]
    # no stopping before the terms have stopped changing sign
    settle = np.maximum(np.maximum(-a1, -a2), 0.0)
    n = 0
    while idx.size and n < max_terms:
        ratio = zz * (a1 + n) * (a2 + n) / ((b1 + n) * (b2 + n))
        if derivatives:
            h_p1 = h_p1 + 1.0 / (a1 + n)
            h_q1 = h_q1 + 1.0 / (b1 + n)
        term = term * ratio
        n += 1
        total[idx] += term
        if derivatives:
            assert d_p1 is not None and d_q1 is not None and d_z is not None
            d_p1[idx] += term * h_p1
            d_q1[idx] -= term * h_q1
            d_z[idx] += term * (n / zz)
        if n % 4 and n < max_terms:
            continue
        # geometric bound on what is left: later ratios stay below max(|ratio|, z)
        rho = np.maximum(np.abs(ratio), zz)
        tail = np.abs(term) * rho / np.maximum(1.0 - rho, 1e-300)
        done = (n > settle) & (rho < 1.0) & (tail <= tol * np.abs(total[idx]))
        done |= term == 0.0
        if done.any():
            keep = ~done
            idx, term, a1, a2, b1, b2, zz, settle = (
                v[keep] for v in (idx, term, a1, a2, b1, b2, zz, settle)
            )
            h_p1, h_q1 = h_p1[keep], h_q1[keep]
    if idx.size:
        # rows with z so near 1 that MAX_TERMS did not suffice: close with the
        # geometric tail at the last ratio (a lower bound, exact as z -> 1)
        ratio = zz * (a1 + n) * (a2 + n) / ((b1 + n) * (b2 + n))
        rho = np.clip(ratio, 0.0, 1.0 - 1e-12)
        total[idx] += term * rho / (1.0 - rho)
    value = total.reshape(shape)
    if not derivatives:
        return SeriesResult(value, None, None, None)
    assert d_p1 is not None and d_q1 is not None and d_z is not None
    return SeriesResult(value, d_p1.reshape(shape), d_q1.reshape(shape), d_z.reshape(shape))


def log1mexp(x: Array) -> Array:
    """``log(1 - exp(x))`` for ``x <= 0`` (``-inf`` at 0), accurate everywhere."""
    x = np.minimum(np.asarray(x, dtype=np.float64), 0.0)
    with np.errstate(divide="ignore"):
        return np.where(x > -0.6931471805599453, np.log(-np.expm1(x)), np.log1p(-np.exp(x)))


def expm1_ratio(x: Array, c: Array | float) -> Array:
    """``expm1(c * x) / c``, tending to ``x`` as ``c -> 0`` (no 0/0)."""
    x = np.asarray(x, dtype=np.float64)
    c = np.asarray(c, dtype=np.float64)
    small = np.abs(c * x) < 1e-8
    safe_c = np.where(small, 1.0, c)
    exact = np.expm1(safe_c * x) / safe_c
    return np.where(small, x * (1.0 + 0.5 * c * x), exact)


@lru_cache(maxsize=16)
def gauss_legendre(n: int) -> tuple[Array, Array]:
    """Gauss-Legendre nodes and weights for the interval [0, 1]."""
    nodes, weights = np.polynomial.legendre.leggauss(n)
    return (nodes + 1.0) / 2.0, weights / 2.0
