"""Special functions the models need, evaluated stably and vectorised.

- :func:`hyper_series`: the hypergeometric-type series
  ``sum_n (p1)_n (p2)_n / ((q1)_n (q2)_n) z**n`` for many rows at once, summed
  term by term only for the rows that have not converged yet, with the
  derivatives with respect to ``p1``, ``q1`` and ``z`` when asked. Every Gauss
  hypergeometric function the models use is one of these with ``0 <= z < 1``,
  after a transformation that keeps the terms small (see the models).
- :func:`log1mexp`: ``log(1 - exp(x))`` for ``x <= 0`` without cancellation.
- :func:`gauss_legendre`: cached Gauss-Legendre nodes and weights on [0, 1].
- :func:`log_poch`: ``log G(x+n) - log G(x)`` without the cancellation of two
  large ``gammaln`` values when x is large.
- :func:`beta_gauss_expectation`: ``E[f(p)]`` for a concentrated ``p ~ Beta(a, b)``
  (a, b up to 1e9 and beyond) by the Gauss rule of the Beta distribution itself.
- :func:`beta_expectation`: ``E[f(p)]`` for any ``p ~ Beta(a, b)``, the mass piled
  up at 0 or 1 by a small a or b taken by Gauss rules of ``p^(a-1)``, ``(1-p)^(b-1)``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray
from scipy import special

Array = NDArray[np.float64]

#: relative accuracy at which a series stops
SERIES_TOL = 1e-15
#: terms after which a series that has still not converged (z within about 1e-2
#: of 1) is closed with the integral of its asymptotic tail (relative error < 1e-7)
MAX_TERMS = 4_000


class SeriesResult(NamedTuple):
    value: Array
    d_p1: Array | None
    d_q1: Array | None
    d_z: Array | None


def _converged(
    n: int,
    settle: Array,
    ratio_last: Array,
    z: Array,
    term: Array,
    total: Array,
    tol: float,
) -> NDArray[Any]:
    """Which series are done after ``n`` terms: past ``settle``, with the geometric bound
    on what is left (later ratios stay below max(|ratio|, z)) within ``tol`` of the total,
    or with a last term of 0 or not finite."""
    rho = np.maximum(np.abs(ratio_last), z)
    tail = np.abs(term) * rho / np.maximum(1.0 - rho, 1e-300)
    done = (n > settle) & (rho < 1.0) & (tail <= tol * np.abs(total))
    done |= (term == 0.0) | ~np.isfinite(term)
    return done


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
    p1f, p2f, q1f, q2f, zf = (np.ravel(v) for v in (p1b, p2b, q1b, q2b, zb))
    size = p1f.size
    total = np.ones(size)
    d_p1 = np.zeros(size) if derivatives else None
    d_q1 = np.zeros(size) if derivatives else None
    d_z = np.zeros(size) if derivatives else None

    # state of the active rows: index, last term, running harmonic sums
    idx = np.flatnonzero(zf != 0.0)
    term = np.ones(idx.size)
    h_p1 = np.zeros(idx.size)  # sum_{j<n} 1/(p1+j)
    h_q1 = np.zeros(idx.size)  # sum_{j<n} 1/(q1+j)
    a1, a2, b1, b2, zz = p1f[idx], p2f[idx], q1f[idx], q2f[idx], zf[idx]
    # no stopping before the terms have stopped changing sign
    settle = np.maximum(np.maximum(-a1, -a2), 0.0)
    n = 0
    # p2 = q2 (the models' case, both 1): their factors cancel, and with p1 <= q1 the
    # ratio of terms never exceeds z, so the terms needed are known from z: the first
    # block covers nine rows in ten at once
    cancel = bool(np.ndim(p2) == 0 and np.ndim(q2) == 0 and np.all(p2b == q2b))
    block = 8
    if cancel and idx.size and np.all(a1 <= b1):
        z_high = float(np.percentile(zz, 90))
        if 0.0 < z_high < 1.0:
            needed = np.log(tol * (1.0 - z_high)) / np.log(z_high)
            block = int(np.clip(np.ceil(needed), 8, 256))
    ratio_last = np.zeros(idx.size)
    # terms are summed in blocks (cumulative products), the block doubling as long
    # as rows remain: few passes of Python even for series of thousands of terms
    with np.errstate(over="ignore", invalid="ignore"):
        while idx.size and n < max_terms:
            j = n + np.arange(block, dtype=np.float64)[None, :]
            up = a1[:, None] + j
            down = b1[:, None] + j
            ratio = up / down if cancel else up * (a2[:, None] + j) / (down * (b2[:, None] + j))
            ratio *= zz[:, None]
            ratio_last = ratio[:, -1].copy()
            # the terms, in place of the ratios
            terms = np.cumprod(ratio, axis=1, out=ratio)
            terms *= term[:, None]
            total[idx] += terms.sum(axis=1)
            if derivatives:
                assert d_p1 is not None and d_q1 is not None and d_z is not None
                # running harmonic sums, in place of the factors
                hp = np.cumsum(np.reciprocal(up, out=up), axis=1, out=up)
                hp += h_p1[:, None]
                hq = np.cumsum(np.reciprocal(down, out=down), axis=1, out=down)
                hq += h_q1[:, None]
                d_p1[idx] += np.einsum("ij,ij->i", terms, hp)
                d_q1[idx] -= np.einsum("ij,ij->i", terms, hq)
                d_z[idx] += np.einsum("ij,j->i", terms, j[0] + 1.0) / zz
                h_p1, h_q1 = hp[:, -1], hq[:, -1]
            n += block
            term = terms[:, -1]
            done = _converged(n, settle, ratio_last, zz, term, total[idx], tol)
            if done.any():
                keep = ~done
                idx, term, a1, a2, b1, b2, zz, settle = (
                    v[keep] for v in (idx, term, a1, a2, b1, b2, zz, settle)
                )
                h_p1, h_q1 = h_p1[keep], h_q1[keep]
            block = min(2 * block, 512, max(max_terms - n, 1))
    if idx.size:
        # rows with z so near 1 that max_terms did not suffice: far out the terms
        # behave as C n^nu z^n (nu = p1 + p2 - q1 - q2), so the tail is close to
        # integral_{N+1/2}^inf C j^nu z^j dj
        # (with the next order of the terms' expansion, n^nu (1 + c/n))
        nu = a1 + a2 - b1 - b2
        c = (a1 * (a1 - 1) + a2 * (a2 - 1) - b1 * (b1 - 1) - b2 * (b2 - 1)) / 2.0
        with np.errstate(over="ignore", invalid="ignore"):
            tail = _power_geometric_tail(n, nu, zz)
            tail += c / n * _power_geometric_tail(n, nu - 1.0, zz)
            total[idx] += term * tail / (1.0 + c / n)
    value = total.reshape(shape)
    if not derivatives:
        return SeriesResult(value, None, None, None)
    assert d_p1 is not None and d_q1 is not None and d_z is not None
    return SeriesResult(value, d_p1.reshape(shape), d_q1.reshape(shape), d_z.reshape(shape))


def hyper_series_by_group(
    p1: Array,
    p2: float,
    q1: Array,
    q2: float,
    z: Array,
    group: NDArray[np.intp],
    *,
    tol: float = SERIES_TOL,
    max_terms: int = MAX_TERMS,
) -> Array:
    """:func:`hyper_series`'s value where each element's ``p1``, ``q1`` are those of its
    group (``p1[group]``, ``q1[group]``) and ``p2``, ``q2`` are shared: the ratios of
    successive terms but for the factor z are then the group's, built once per group
    and term instead of once per element (a model's many times per customer share a
    few distinct frequencies). The same operations in the same order as
    :func:`hyper_series`, so the same numbers; ``z`` of any shape, ``group`` alike."""
    p1 = np.asarray(p1, dtype=np.float64).ravel()
    q1 = np.asarray(q1, dtype=np.float64).ravel()
    zb = np.asarray(z, dtype=np.float64)
    shape = zb.shape
    zf = zb.ravel()
    total = np.ones(zf.size)
    idx = np.flatnonzero(zf != 0.0)
    code = np.asarray(group, dtype=np.intp).ravel()[idx]
    zz = zf[idx]
    term = np.ones(idx.size)
    settle = np.maximum(np.maximum(-p1, -p2), 0.0)[code]
    n = 0
    cancel = p2 == q2
    block = 8
    if cancel and idx.size and np.all(p1[code] <= q1[code]):
        z_high = float(np.percentile(zz, 90))
        if 0.0 < z_high < 1.0:
            needed = np.log(tol * (1.0 - z_high)) / np.log(z_high)
            block = int(np.clip(np.ceil(needed), 8, 256))
    # the ratios (z aside) of terms 0 .. built - 1 of each group
    ratios = np.empty((p1.size, 0))
    with np.errstate(over="ignore", invalid="ignore"):
        while idx.size and n < max_terms:
            if n + block > ratios.shape[1]:
                j = np.arange(ratios.shape[1], n + block, dtype=np.float64)[None, :]
                up = p1[:, None] + j
                down = q1[:, None] + j
                more = up / down if cancel else up * (p2 + j) / (down * (q2 + j))
                ratios = np.concatenate([ratios, more], axis=1)
            ratio = ratios[code, n : n + block]
            ratio *= zz[:, None]
            ratio_last = ratio[:, -1].copy()
            terms = np.cumprod(ratio, axis=1, out=ratio)
            terms *= term[:, None]
            total[idx] += terms.sum(axis=1)
            n += block
            term = terms[:, -1]
            done = _converged(n, settle, ratio_last, zz, term, total[idx], tol)
            if done.any():
                keep = ~done
                idx, code = idx[keep], code[keep]
                term, zz, settle = term[keep], zz[keep], settle[keep]
            block = min(2 * block, 512, max(max_terms - n, 1))
    if idx.size:  # as hyper_series closes the rows that max_terms did not reach
        a1, b1 = p1[code], q1[code]
        nu = a1 + p2 - b1 - q2
        c = (a1 * (a1 - 1) + p2 * (p2 - 1) - b1 * (b1 - 1) - q2 * (q2 - 1)) / 2.0
        with np.errstate(over="ignore", invalid="ignore"):
            tail = _power_geometric_tail(n, nu, zz)
            tail += c / n * _power_geometric_tail(n, nu - 1.0, zz)
            total[idx] += term * tail / (1.0 + c / n)
    return total.reshape(shape)


def _power_geometric_tail(n: int, nu: Array, z: Array) -> Array:
    """``sum_{j>n} (j/n)^nu z^(j-n)``, approximated by ``integral_{n+1/2}^inf``.

    The integral is ``e^(eps n) n^-nu eps^-(nu+1) Gamma(nu+1, eps (n+1/2))`` with
    ``eps = -log z``: by Gauss-Laguerre where ``eps (n+1/2) >= 1``, else through the
    upper incomplete gamma function (recurrence down from a positive order).
    """
    eps = -np.log(z)
    start = n + 0.5
    scale = eps * start
    out = np.empty(z.size)
    far = (scale >= 1.0) | (nu < -60.0)
    if far.any():
        nodes, weights = _gauss_laguerre(24)
        sc, nv, ep = scale[far], nu[far], eps[far]
        inner = np.sum(
            weights[None, :] * (1.0 + nodes[None, :] / sc[:, None]) ** nv[:, None], axis=1
        )
        out[far] = np.exp(-ep * 0.5 + nv * np.log(start / n)) / ep * inner
    near = ~far
    if near.any():
        a, c, ep, nv = nu[near] + 1.0, scale[near], eps[near], nu[near]
        log_gamma = np.log(_upper_gamma(a, c))
        out[near] = np.exp(ep * n - nv * np.log(n) - a * np.log(ep) + log_gamma)
    return out


@lru_cache(maxsize=4)
def _gauss_laguerre(n: int) -> tuple[Array, Array]:
    """Gauss-Laguerre nodes and weights (weight e^-x on [0, inf)), built once."""
    nodes, weights = np.polynomial.laguerre.laggauss(n)
    return nodes, weights


def _upper_gamma(a: Array, x: Array) -> Array:
    """The (non-regularised) upper incomplete gamma function for 0 < x < 1, any a > -61."""
    steps = np.where(a > 0, 0, np.floor(-a) + 1).astype(int)
    b = a + steps
    value = special.gammaincc(b, x) * special.gamma(b)
    for k in range(int(steps.max(initial=0)), 0, -1):
        moving = steps >= k
        order = b - (steps - k + 1)  # the order reached after this step
        order = np.where(moving, order, 1.0)
        at_zero = moving & (np.abs(order) < 1e-12)
        stepped = (value - x**order * np.exp(-x)) / np.where(at_zero, 1.0, order)
        value = np.where(at_zero, special.exp1(x), np.where(moving, stepped, value))
    return value


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


#: Stirling's series for log G(y) - (y - 1/2) log y + y - log(2 pi)/2, in powers of 1/y
_STIRLING = (1.0 / 12.0, -1.0 / 360.0, 1.0 / 1260.0, -1.0 / 1680.0)
#: from this x on, log_poch uses Stirling's series (truncation error below 1e-16)
_STIRLING_FROM = 30.0


def _stirling_rest(y: Array) -> Array:
    inv = 1.0 / y
    inv2 = inv * inv
    c0, c1, c2, c3 = _STIRLING
    return inv * (c0 + inv2 * (c1 + inv2 * (c2 + inv2 * c3)))


def log_poch(x: Array | float, n: Array | float) -> Array:
    """``log G(x+n) - log G(x)`` (the log of the rising factorial) for ``x > 0``,
    ``n >= 0``, element-wise: accurate also for x near 1e9, where the difference of
    two ``gammaln`` values (each about x log x) would lose most of its digits."""
    xb, nb = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(n, dtype=np.float64))
    large = xb >= _STIRLING_FROM
    if not large.any():
        return _log_poch_direct(xb, nb)
    if large.all():
        return _log_poch_stirling(xb, nb)
    # each element by its own formula only (the models' counts mix both)
    out = np.empty(xb.shape)
    out[large] = _log_poch_stirling(xb[large], nb[large])
    small = ~large
    out[small] = _log_poch_direct(xb[small], nb[small])
    return out


def _log_poch_stirling(x: Array, n: Array) -> Array:
    # Stirling: (x - 1/2) log(1 + n/x) + n log(x + n) - n + rest(x + n) - rest(x)
    value = (
        (x - 0.5) * np.log1p(n / x)
        + n * np.log(x + n)
        - n
        + (_stirling_rest(x + n) - _stirling_rest(x))
    )
    return np.asarray(value, dtype=np.float64)


def _log_poch_direct(x: Array, n: Array) -> Array:
    with np.errstate(invalid="ignore"):
        return np.asarray(special.gammaln(x + n) - special.gammaln(x), dtype=np.float64)


def beta_gauss_rule(a: Array, b: Array, nodes: int = 16) -> tuple[Array, Array]:
    """The ``nodes``-point Gauss rule of the Beta(a, b) distribution, per row: nodes
    in (0, 1) and weights summing to 1, exact for polynomials of degree < 2 nodes.

    Golub-Welsch on the Jacobi matrix of the Beta's orthogonal polynomials, whose
    entries are written so that no difference of nearly equal numbers occurs (the
    rule stays exact for a, b of 1e9, where p's spread is 1e-5 of its mean).
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 1)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 1)
    j = np.arange(nodes, dtype=np.float64)[None, :]
    # in Jacobi's notation on [-1, 1]: weight (1-x)^al (1+x)^be, p = (1 + x)/2
    al, be = b - 1.0, a - 1.0
    s = al + be
    two = 2.0 * j + s
    # diagonal (1 + d_j)/2 = [2j(j+1) + s(2j+1+be)] / ((2j+s)(2j+s+2)); j = 0: a/(a+b)
    with np.errstate(invalid="ignore", divide="ignore"):
        diag = (2.0 * j * (j + 1.0) + s * (2.0 * j + 1.0 + be)) / (two * (two + 2.0))
    diag[:, 0] = (a / (a + b))[:, 0]
    # off-diagonal: sqrt(e_j)/2 with e_j = 4j(j+al)(j+be)(j+al+be) / ((2j+s)^2 (2j+s+1)(2j+s-1))
    jj = j[:, 1:]
    t2 = two[:, 1:]
    # (j+s)/(2j+s-1) is exactly 1 at j = 1: taken as such, so that a + b = 1 (s = -1)
    # gives no 0/0
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(jj == 1.0, 1.0, (jj + s) / (t2 - 1.0))
    off = np.sqrt(jj * (jj + al) * (jj + be) * ratio / (t2 * t2 * (t2 + 1.0)))
    size = a.shape[0]
    mat = np.zeros((size, nodes, nodes))
    idx = np.arange(nodes)
    mat[:, idx, idx] = diag
    mat[:, idx[1:], idx[:-1]] = off
    mat[:, idx[:-1], idx[1:]] = off
    values, vectors = np.linalg.eigh(mat)
    weights = vectors[:, 0, :] ** 2
    return np.clip(values, 0.0, 1.0), weights / weights.sum(axis=1, keepdims=True)


def beta_spread(a: Array | float, b: Array | float) -> Array:
    """The standard deviation of ``p ~ Beta(a, b)``."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    n = a + b
    return np.asarray(np.sqrt(a / n * (b / n) / (n + 1.0)), dtype=np.float64)


def beta_gauss_expectation(
    f: Callable[[Array, NDArray[np.intp]], Array], a: Array, b: Array, nodes: int = 16
) -> Array:
    """``E[f(p)]`` for ``p ~ Beta(a, b)`` element-wise, by the Beta's own Gauss rule:
    exact to rounding when the Beta is concentrated (spread well below the distance
    from its mean to the nearest singularity of ``f``), whatever a and b. The rule is
    built once per distinct (a, b); ``f(p, row)`` takes the nodes (rows, nodes)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    ua, ub, code = _distinct_pairs(a, b)
    p, w = beta_gauss_rule(ua, ub, nodes)
    rows = np.arange(a.size)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        values = f(p[code], rows)
    return np.sum(values * w[code], axis=1)


def _distinct_pairs(a: Array, b: Array) -> tuple[Array, Array, NDArray[np.intp]]:
    pairs, code = np.unique(np.stack([a, b], axis=1), axis=0, return_inverse=True)
    return pairs[:, 0], pairs[:, 1], np.asarray(code, dtype=np.intp).ravel()


#: Gauss nodes of each end of :func:`beta_expectation` and of each panel between them
_END_NODES = 16
_PANEL_NODES = 16
#: the most panels between the ends
_MAX_PANELS = 64


def beta_expectation(f: Callable[[Array], Array], a: Array, b: Array, scale: Array) -> Array:
    """``E[f(p)]`` for ``p ~ Beta(a, b)`` element-wise, ``f`` smooth on [0, 1] and
    varying near 0 on the scale ``1/scale`` (per row). ``f`` takes the nodes (rows,
    nodes) and must accept ``p = 0``.

    The integral is cut in three so that no part meets the Beta's singularities:

    - [0, p0], p0 = 1/(2 max(1, scale, |b-1|)): by the Gauss rule of the weight
      ``p^(a-1)`` itself (that of Beta(a, 1), scaled to p0), where the rest,
      ``f(p) (1-p)^(b-1)``, is nearly a polynomial. This holds the mass a small ``a``
      piles up at 0 (down to p of 1e-1000 and beyond), however small.
    - [1 - q1, 1], q1 = 1/(2 max(1, |a-1|)): likewise with ``(1-p)^(b-1)``.
    - between them: Gauss-Legendre panels in ``logit p``, where the density and
      ``f``'s fall from ``f(0)`` to ``1/p`` are smooth on the scale of 1.

    Weights are taken in logs, so a, b up to 1e9 and scales up to 1e300 stay finite.
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    scale = np.asarray(scale, dtype=np.float64).ravel()
    ac, bc = a[:, None], b[:, None]
    log_norm = -special.betaln(ac, bc)
    reach0 = np.maximum(np.maximum(scale, np.abs(b - 1.0)), 1.0)[:, None]
    reach1 = np.maximum(np.abs(a - 1.0), 1.0)[:, None]
    log_p0, log_q1 = -np.log(2.0 * reach0), -np.log(2.0 * reach1)

    # the end at 0: p = p0 v, v ~ Beta(a, 1); int_0^p0 h p^(a-1) dp = p0^a / a E[h(p0 v)]
    v0, w0 = _end_rule(a)
    p_low = np.exp(log_p0) * v0
    with np.errstate(divide="ignore"):
        log_w_low = ac * log_p0 - np.log(ac) + np.log(w0) + (bc - 1.0) * np.log1p(-p_low) + log_norm
    # the end at 1: p = 1 - q1 v, v ~ Beta(b, 1)
    v1, w1 = _end_rule(b)
    q_high = np.exp(log_q1) * v1
    p_high = 1.0 - q_high
    with np.errstate(divide="ignore"):
        log_w_high = (
            bc * log_q1 - np.log(bc) + np.log(w1) + (ac - 1.0) * np.log1p(-q_high) + log_norm
        )

    # between: logit p from log(p0/(1-p0)) to log((1-q1)/q1), kept to where a
    # concentrated Beta has its mass: logit p has mean psi(a) - psi(b) and variance
    # psi'(a) + psi'(b), and tails falling at least at rates a - 1 (f up to 1/p tilts
    # the lower one) and b; panels no wider than 2 nor than twice that spread
    centre = special.digamma(ac) - special.digamma(bc)
    spread = np.sqrt(special.polygamma(1, ac) + special.polygamma(1, bc))
    with np.errstate(divide="ignore"):
        below = 16.0 * spread + 60.0 / np.maximum(ac - 1.0, 0.0)
        above = 16.0 * spread + 60.0 / bc
    lo = np.maximum(log_p0 - log1mexp(log_p0), centre - below)
    hi = np.minimum(log1mexp(log_q1) - log_q1, centre + above)
    span = np.maximum(hi - lo, 0.0)
    need = np.ceil(span / (2.0 * np.minimum(spread, 1.0)))
    panels = int(np.clip(np.max(need, initial=1.0), 1, _MAX_PANELS))
    nodes, weights = gauss_legendre(_PANEL_NODES)
    width = span / panels
    cells = np.arange(panels, dtype=np.float64)[:, None]
    grid = (cells + nodes[None, :]).ravel()[None, :]
    logit = lo + width * grid
    # log p and log(1-p) without cancellation at either end
    log_p = -np.logaddexp(0.0, -logit)
    log_1mp = -np.logaddexp(0.0, logit)
    with np.errstate(divide="ignore"):
        log_w_mid = (
            np.log(width)
            + np.log(np.tile(weights, panels))[None, :]
            + ac * log_p
            + bc * log_1mp
            + log_norm
        )

    p = np.concatenate([p_low, np.exp(log_p), p_high], axis=1)
    log_w = np.concatenate([log_w_low, log_w_mid, log_w_high], axis=1)
    weight = np.exp(log_w)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        values = f(p) * weight
    values = np.where(np.isfinite(values), values, 0.0)
    # divided by the rule's own total mass (1 but for rounding): no error of
    # betaln (1e-12 at a, b near 1e3) reaches the result
    return np.sum(values, axis=1) / np.sum(weight, axis=1)


def _end_rule(c: Array) -> tuple[Array, Array]:
    """The Gauss rule of Beta(c, 1) (weight ``v^(c-1)`` on [0, 1]) per row, built
    once per distinct c."""
    distinct, code = np.unique(c, return_inverse=True)
    v, w = beta_gauss_rule(distinct, np.ones(distinct.size), _END_NODES)
    return v[code.ravel()], w[code.ravel()]


def softplus_sigmoid(d: Array) -> tuple[Array, Array]:
    """``log(1 + e^d)`` and ``1 / (1 + e^-d)`` together, from one exponential
    (NumPy's logaddexp is several times slower); ``d = -inf`` gives (0, 0)."""
    e = np.exp(-np.abs(d))
    one_e = 1.0 + e
    softplus = np.maximum(d, 0.0) + np.log1p(e)
    sigmoid = np.where(d >= 0, 1.0, e) / one_e
    return softplus, sigmoid


def logaddexp(a: Array, b: Array) -> Array:
    """``log(e^a + e^b)`` for arrays where either may be ``-inf`` (not both)."""
    high = np.maximum(a, b)
    return high + np.log1p(np.exp(np.minimum(a, b) - high))


def dot(a: NDArray[Any], b: NDArray[Any]) -> float:
    """Inner product of two vectors without BLAS: the multithreaded BLAS of the
    ``@`` operator leaves its threads spinning after each call, which starves the
    elementwise passes around it on small machines."""
    return float(np.einsum("i,i->", a, b))


def matvec(m: NDArray[Any], v: NDArray[Any]) -> Array:
    """``m @ v`` over the last axis of ``m``, without BLAS (see :func:`dot`)."""
    return np.einsum("...j,j->...", m, v)
