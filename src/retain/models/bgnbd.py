"""BG/NBD: the beta-geometric / negative binomial model (Fader, Hardie & Lee 2005).

While alive, a customer buys at a Poisson rate ``lambda ~ Gamma(r, alpha)``;
after each repeat purchase they drop out with probability
``p ~ Beta(a, b)``. :class:`ModifiedBetaGeo` (MBG/NBD) shares everything here
but also lets customers drop out right after their first purchase.

Likelihood, per customer with x repeat purchases, the last at t_x, observed
for T (``beta = b + x`` for BG/NBD, ``b + x + 1`` for MBG/NBD)::

    log L = log G(r+x) - log G(r) + r log(alpha) + log B(a, beta) - log B(a, b)
            + logaddexp(-(r+x) log(alpha+T),
                        log(a) - log(beta-1) - (r+x) log(alpha+t_x))   [BG: x > 0 only]

Predictions rest on the posterior given alive at T: ``lambda ~ Gamma(r+x,
alpha+T)`` and ``p ~ Beta(a, beta)``, independent. The expected purchases in
the next t, given alive, are ``E_p[(1 - (1 + p t/(alpha+T))^-(r+x)) / p]``; the
paper writes this with 2F1(r+x, beta; a+beta-1; z), z = t/(alpha+T+t). An
Euler transformation turns it into a series whose terms stay small for every
x (see :meth:`_BetaGeoFamily._expected_alive`), finite also at a = 1.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import special

from retain.models._special import (
    MAX_TERMS,
    SERIES_TOL,
    beta_expectation,
    beta_gauss_expectation,
    beta_spread,
    dot,
    expm1_ratio,
    hyper_series_by_group,
    log_poch,
    softplus_sigmoid,
)
from retain.models.base import Array, TransactionModel, TransactionRows


class _BetaGeoFamily(TransactionModel):
    """BG/NBD and MBG/NBD: parameters r, alpha (purchase rate), a, b (dropout)."""

    param_names = ("r", "alpha", "a", "b")
    #: extra dropout opportunities: 0 for BG/NBD, 1 for MBG/NBD (at the first purchase)
    _offset = 0

    def _initial(self, prepared: Any) -> Array:
        rows: TransactionRows = prepared
        w = rows.weight
        rate = float(np.sum(w * rows.x) + 1.0) / float(np.sum(w * rows.T) + 1.0)
        return np.array([1.0, 1.0 / max(rate, 1e-6), 1.0, 1.0])

    def _unpack(self) -> tuple[float, float, float, float]:
        p = self.params_
        return p["r"], p["alpha"], p["a"], p["b"]

    def _second_term(self, x: Array) -> NDArray[np.bool_]:
        """Whether the 'dropped out after the last purchase' term exists."""
        return x > 0 if self._offset == 0 else np.ones(x.shape, dtype=bool)

    # -- likelihood --------------------------------------------------------------------
    def _loglik(self, params: Array, prepared: Any) -> tuple[float, Array]:
        rows: TransactionRows = prepared
        r, alpha, a, b = params
        # terms of each distinct frequency
        ux = rows.x_values
        beta = b + ux + self._offset
        k = r + ux
        has2 = self._second_term(ux)
        beta_m1 = np.where(has2, beta - 1.0, 1.0)
        head = (
            special.gammaln(k)
            - special.gammaln(r)
            + r * np.log(alpha)
            + special.betaln(a, beta)
            - special.betaln(a, b)
        )
        c4 = np.where(has2, np.log(a) - np.log(beta_m1), -np.inf)
        # terms of each distinct T and recency
        xi, ti, ri = rows.x_code, rows.T_code, rows.recency_code
        log_aT = np.log(alpha + rows.T_values)[ti]
        log_atx = np.log(alpha + rows.recency_values)[ri]
        # per row: log L = head + a3 + softplus(a4 - a3), a3 = -(r+x) log(alpha+T),
        # a4 = c4 - (r+x) log(alpha+t_x); the softplus's slope is the share w4 of
        # the 'dropped out after the last purchase' term
        kx = r + rows.x
        gap = log_aT - log_atx
        d = c4[xi] + kx * gap
        w = rows.weight
        wx = rows.x_weight
        softplus, share = softplus_sigmoid(d)
        total = dot(wx, head) - dot(w, kx * log_aT) + dot(w, softplus)
        ww4 = w * share
        by_x = np.bincount(xi, weights=ww4, minlength=ux.size)
        psi_ab = special.digamma(a + b)
        psi_a_beta = special.digamma(a + beta)
        d_r = (
            dot(wx, special.digamma(k) - special.digamma(r) + np.log(alpha))
            - dot(w, log_aT)
            + dot(ww4, gap)
        )
        inv_aT = (1.0 / (alpha + rows.T_values))[ti]
        inv_atx = (1.0 / (alpha + rows.recency_values))[ri]
        d_alpha = (
            r * rows.total_weight / alpha - dot(w * kx, inv_aT) + dot(ww4 * kx, inv_aT - inv_atx)
        )
        d_a = dot(wx, psi_ab - psi_a_beta) + float(by_x.sum()) / a
        d_b = dot(wx, special.digamma(beta) - psi_a_beta - special.digamma(b) + psi_ab) - dot(
            by_x, 1.0 / beta_m1
        )
        return total, np.array([d_r, d_alpha, d_a, d_b])

    # -- predictions -------------------------------------------------------------------
    def _p_alive(self, x: Array, recency: Array, T: Array) -> Array:
        r, alpha, a, b = self._unpack()
        beta = b + x + self._offset
        has2 = self._second_term(x)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_ratio = (
                np.log(a)
                - np.log(np.where(has2, beta - 1.0, 1.0))
                + (r + x) * np.log1p((T - recency) / (alpha + recency))
            )
        return np.where(has2, special.expit(-log_ratio), 1.0)

    def _time_scale(self, x: Array, T: Array) -> Array:
        return self.params_["alpha"] + T

    def _expected_alive(self, x: Array, T: Array, t: Array) -> Array:
        # E = c [expm1((1-a) L)/(1-a) - (1+u)^(1-a) S], with u = t/(alpha+T),
        # L = log(1+u), z = u/(1+u), c = a+beta-1, k = r+x, A = c-k and
        # S = sum_{n>=1} (A)_n (a)_(n-1) z^n / ((c)_n n!)  (Euler's transformation of
        # the paper's 2F1; its terms decay at least like z^n, and a = 1 is harmless).
        # Where the terms alternate in sign and grow first (A << 0: r >> a + b) or the
        # bracket cancels, the expectation over p is integrated numerically instead.
        r, alpha, a, b = self._unpack()
        # the series' parameters depend on x alone: its distinct values, before x is
        # broadcast against the times
        x_given = np.asarray(x, dtype=np.float64)
        x_values, x_code = np.unique(x_given, return_inverse=True)
        x, T, t = np.broadcast_arrays(x, T, t)
        shape = x.shape
        x_code = np.broadcast_to(x_code.reshape(x_given.shape), shape).ravel()
        x, T, t = x.ravel(), T.ravel(), t.ravel()
        beta = b + x + self._offset
        k = r + x
        c = a + beta - 1.0
        big_a = c - k
        u = t / (alpha + T)
        log1pu = np.log1p(u)
        z = u / (1.0 + u)
        unstable = -big_a * z > 8.0
        # a concentrated Beta whose series terms would grow (a z > 1): its Gauss rule
        concentrated = self._concentrated(k, beta, u)
        unstable |= concentrated & (a * z > 1.0)
        # the same numbers as hyper_series(big_a + 1, a, c + 1, 2, z), per distinct x
        c_values = a + (b + x_values + self._offset) - 1.0
        a_values = c_values - (r + x_values)
        series = hyper_series_by_group(
            a_values + 1.0, a, c_values + 1.0, 2.0, np.where(unstable, 0.0, z), x_code
        )
        s = big_a * z / c * series
        first = expm1_ratio(log1pu, 1.0 - a)
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            second = np.exp((1.0 - a) * log1pu) * s
            value = c * (first - second)
            amplification = c * (np.abs(first) + np.abs(second)) / np.abs(value)
        # past MAX_TERMS terms (z this close to 1) the series ends in an estimate of its
        # tail, good to about 1e-7: a bracket that cancels more than 1e2 is redone
        closed = z > np.exp(np.log(SERIES_TOL) / MAX_TERMS)
        redo = unstable | ~np.isfinite(value) | ~(amplification < np.where(closed, 1e2, 1e6))
        redo &= t > 0
        gauss = redo & concentrated
        redo &= ~concentrated
        if redo.any():
            value[redo] = self._expected_alive_by_quadrature(k[redo], beta[redo], u[redo])
        if gauss.any():
            value[gauss] = self._expected_alive_by_gauss(k[gauss], beta[gauss], u[gauss])
        return np.maximum(np.where(t > 0, value, 0.0), 0.0).reshape(shape)

    def _still_alive(self, x: Array, T: Array, t: Array) -> Array:
        # alive now, the rate is Gamma(r+x, alpha+T) and p Beta(a, b+x(+1)); each later
        # purchase ends it with chance p: P = E[exp(-lambda p t)] = E_p[(1 + p u)^-k],
        # u = t/(alpha+T), k = r+x: 2F1(k, a; c; -u), c = a+beta. By Pfaff's
        # transformation it is (1+u)^-a 2F1(c-k, a; c; z), z = u/(1+u), whose c-k =
        # a+b(+1)-r is the same for every customer: summed per distinct x, a series of
        # positive terms when c-k >= 0; else (1+u)^-k 2F1(k, beta; c; z), positive too
        r, alpha, a, b = self._unpack()
        x, T, t = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (x, T, t)))
        shape = x.shape
        x, T, t = x.ravel(), T.ravel(), t.ravel()
        beta = b + x + self._offset
        u = t / (alpha + T)
        z = u / (1.0 + u)
        shared = a + b + self._offset - r
        if shared >= 0:
            x_values, code = np.unique(x, return_inverse=True)
            c_values = a + b + x_values + self._offset
            series = hyper_series_by_group(
                np.full(x_values.size, shared), a, c_values, 1.0, z, code.ravel()
            )
            value = np.exp(-a * np.log1p(u)) * series
        else:  # r above a + b(+1): the expectation over p by quadrature, whose integrand
            # (1 + p u)^-k falls on the scale 1/(u k) near 0
            k = r + x
            value = np.ones(x.size)
            later = u > 0
            if later.any():
                kk, uu = k[later], u[later]

                def f(p: Array) -> Array:
                    return np.exp(-kk[:, None] * np.log1p(p * uu[:, None]))

                value[later] = beta_expectation(
                    f, np.full(kk.size, a), beta[later], uu * np.maximum(kk, 1.0)
                )
        return np.clip(value, 0.0, 1.0).reshape(shape)

    def _concentrated(self, k: Array, beta: Array, u: Array) -> NDArray[np.bool_]:
        """Where p ~ Beta(a, beta) is concentrated enough for its Gauss rule: spread
        below 1/6 of the scale on which the integrand varies about the Beta's mean m,
        (m + 1/u) / max(k, 1) (the distance to its singularity -1/u, shortened by the
        power k: (1 + p u)^-k changes by a factor e over that scale). For a < 1 the
        spread is that of Beta(1, beta): the Beta's mass away from its spike at 0,
        small but not negligible, lies as far out as 1/beta; likewise for beta < 1 and
        its spike at 1 (Beta(0.37, 0.0009) is no point mass: its Gauss rule gave a
        ten-year expectation of 1.27 for 2.40)."""
        a = self.params_["a"]
        mean = a / (a + beta)
        with np.errstate(divide="ignore"):
            reach = (mean + 1.0 / u) / np.maximum(k, 1.0)
        return np.asarray(beta_spread(max(a, 1.0), np.maximum(beta, 1.0)) < reach / 6.0)

    def _expected_alive_by_quadrature(self, k: Array, beta: Array, u: Array) -> Array:
        """E_p[(1 - (1 + p u)^-k) / p], p ~ Beta(a, beta), integrated numerically.

        The integrand falls from k u at p = 0 to about 1/p beyond p = 1/(u max(k, 1)),
        the scale handed to the quadrature; a small a puts most of the mass far
        below that (p of e^(-1/a)), where the integrand is k u to rounding."""
        a = self.params_["a"]
        kk, uu = k[:, None], u[:, None]

        def f(p: Array) -> Array:
            # u k (log1p(w)/w) ((1 - e^-y)/y), w = p u, y = k log1p(w): finite at p = 0
            w = p * uu
            y = kk * np.log1p(w)
            ratio_w = np.where(w > 0, np.log1p(w) / np.where(w > 0, w, 1.0), 1.0)
            ratio_y = np.where(y > 0, -np.expm1(-y) / np.where(y > 0, y, 1.0), 1.0)
            return uu * kk * ratio_w * ratio_y

        return beta_expectation(f, np.full(k.size, a), beta, u * np.maximum(k, 1.0))

    def _expected_alive_by_gauss(self, k: Array, beta: Array, u: Array) -> Array:
        """E_p[(1 - (1 + p u)^-k) / p] for a concentrated p ~ Beta(a, beta), by the
        Beta's Gauss rule (the limit a, b -> infinity is its point mass)."""
        a = self.params_["a"]

        def f(p: Array, row: NDArray[np.intp]) -> Array:
            kk, uu = k[row, None], u[row, None]
            return -np.expm1(-kk * np.log1p(p * uu)) / p

        return beta_gauss_expectation(f, np.full(k.size, a), beta)

    def _pmf_alive(self, n: int, t: float, x: Array, T: Array) -> Array:
        # Y = min(N(t), G): N ~ NBD(r+x, z) given alive, G ~ geometric(p) the purchase
        # after which the customer drops out; pi_m = E[(1-p)^(m-1)] = B(a, beta+m-1)/B(a, beta)
        r, alpha, a, b = self._unpack()
        beta = b + x + self._offset
        k = r + x
        z = t / (alpha + T + t)
        log_1mz = np.log1p(-z)
        if n == 0:
            return np.exp(k * log_1mz)
        # ratios of gamma functions as rising factorials: no cancellation of two
        # gammaln values of order 1e10 when r or a, b near their bounds;
        # pi_m = (beta)_(m-1) / (a+beta)_(m-1)
        log_nb = log_poch(k, n) - special.gammaln(n + 1.0) + k * log_1mz + n * np.log(z)
        log_pi_n = log_poch(beta, n - 1.0) - log_poch(a + beta, n - 1.0)
        log_pi_next = log_pi_n + np.log(beta + n - 1.0) - np.log(a + beta + n - 1.0)
        at_least_n = special.betainc(n, k, z)
        return np.exp(log_nb + log_pi_next) + at_least_n * np.exp(log_pi_n) * a / (
            a + beta + n - 1.0
        )

    #: counts taken together: P(N >= n) for the counts of a block from the top one's
    pmf_block = 16

    def _pmf_alive_block(self, n: int, size: int, t: float, x: Array, T: Array) -> Array:
        # _pmf_alive's terms for counts n .. n+size-1, but P(N >= m) = I_z(m, k): one
        # incomplete beta function at the block's top count, P(N >= n+size), and the
        # others down from it by adding the NB probabilities (positive terms: no
        # cancellation), instead of one incomplete beta function per count
        r, alpha, a, b = self._unpack()
        beta = (b + x + self._offset)[:, None]
        k = (r + x)[:, None]
        z = (t / (alpha + T + t))[:, None]
        log_1mz = np.log1p(-z)
        counts = n + np.arange(size, dtype=np.float64)[None, :]
        m = np.maximum(counts, 1.0)  # count 0 has its own formula
        log_nb = log_poch(k, m) - special.gammaln(m + 1.0) + k * log_1mz + m * np.log(z)
        log_pi_n = log_poch(beta, m - 1.0) - log_poch(a + beta, m - 1.0)
        log_pi_next = log_pi_n + np.log(beta + m - 1.0) - np.log(a + beta + m - 1.0)
        nb = np.exp(log_nb)
        top = special.betainc(n + size, k, z)
        # P(N >= m) = P(N >= top) + P(N = m) + ... + P(N = top - 1), summed from the top
        at_least = np.cumsum(np.concatenate([top, nb[:, ::-1]], axis=1), axis=1)[:, :0:-1]
        pmf = np.exp(log_nb + log_pi_next) + at_least * np.exp(log_pi_n) * a / (a + beta + m - 1.0)
        if n == 0:
            pmf[:, 0] = np.exp(k * log_1mz)[:, 0]
        return pmf

    def _next_alive(self, u: Array, x: Array, T: Array, horizon: float) -> tuple[Array, np.ndarray]:
        # given alive, the next purchase comes at rate lambda ~ Gamma(r+x, alpha+T):
        # P(within s) = 1 - (1 + s/(alpha+T))^-(r+x), inverted in closed form
        r, alpha, _, _ = self._unpack()
        log_growth = -np.log1p(-u) / (r + x)
        cap = np.log1p(horizon / (alpha + T))
        within = log_growth <= cap
        time = (alpha + T) * np.expm1(np.minimum(log_growth, cap))
        return time, within


class BetaGeo(_BetaGeoFamily):
    """BG/NBD (Fader, Hardie & Lee 2005): parameters ``r``, ``alpha``, ``a``, ``b``.

    >>> import retain
    >>> from retain.datasets import load_cdnow
    >>> summary = retain.summarize(load_cdnow(sample=True), unit="W",
    ...                            observation_end="1997-09-30")
    >>> model = BetaGeo().fit(summary)
    >>> round(model.params_["alpha"], 2)
    4.41
    """

    name = "bgnbd"
    _offset = 0
