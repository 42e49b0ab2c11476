"""Pareto/NBD (Schmittlein, Morrison & Colombo 1987).

While alive, a customer buys at a Poisson rate ``lambda ~ Gamma(r, alpha)``;
they drop out at an exponential time with rate ``mu ~ Gamma(s, beta)``.

Likelihood, per customer with x repeat purchases, the last at t_x, observed
for T::

    L = G(r+x) alpha^r beta^s / G(r) * [ (alpha+T)^-(r+x) (beta+T)^-s
                                         + s (F(t_x) - F(T)) ]
    F(y) = integral_y^inf (alpha+tau)^-(r+x) (beta+tau)^-(s+1) dtau

The usual closed form of F is a Gauss hypergeometric function whose terms, for
large x, overflow long before the sum is needed (customers with hundreds of
purchases break other implementations). Here F is written, after an Euler
transformation, as::

    alpha >= beta:  log F = -(r+x) log(alpha+y) - s log(beta+y) - log(m) + log H(r+x, m+1, z)
    alpha <  beta:  log F = -(r+x-1) log(alpha+y) - (s+1) log(beta+y) - log(m) + log H(s+1, m+1, z)

with m = r+s+x, z = |alpha-beta| / (max(alpha, beta) + y) in [0, 1) and
H(e, c, z) = sum_n (e)_n / (c)_n z^n, a series of positive terms whose ratio
never exceeds z: no overflow, no cancellation, and exact gradients from the
same sum. Everything else is in logs; F(t_x) - F(T) is taken as
F(t_x) (1 - exp(log F(T) - log F(t_x))).

Predictions rest on the posterior given alive at T: ``lambda ~ Gamma(r+x,
alpha+T)``, ``mu ~ Gamma(s, beta+T)``, independent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import special

from retain.models._special import expm1_ratio, gauss_legendre, hyper_series, log1mexp
from retain.models.base import Array, TransactionModel, TransactionRows, _first_of

#: Gauss-Legendre nodes for the integrals of the PMF and the next-purchase time
_PMF_NODES = 48
_NEXT_NODES = 24


@dataclass
class _ParetoRows:
    rows: TransactionRows
    total_weight: float
    # unique (x, y) pairs at which F is needed: y is a recency or a T
    pair_x: Array
    pair_y: Array
    pair_recency: NDArray[np.intp]
    pair_T: NDArray[np.intp]


class ParetoNBD(TransactionModel):
    """Pareto/NBD (Schmittlein et al. 1987): parameters ``r``, ``alpha``, ``s``, ``beta``."""

    name = "pnbd"
    param_names = ("r", "alpha", "s", "beta")

    def _prepare_rows(self, rows: TransactionRows) -> _ParetoRows:
        y_values, inverse = np.unique(
            np.concatenate([rows.recency_values, rows.T_values]), return_inverse=True
        )
        n_rec = rows.recency_values.size
        rec_y = inverse[:n_rec][rows.recency_code]
        T_y = inverse[n_rec:][rows.T_code]
        n_y = y_values.size
        keys = np.concatenate(
            [
                rows.x_code.astype(np.int64) * n_y + rec_y,
                rows.x_code.astype(np.int64) * n_y + T_y,
            ]
        )
        code, first = _first_of(keys)
        n = rows.weight.size
        x_codes = np.concatenate([rows.x_code, rows.x_code])[first]
        y_codes = np.concatenate([rec_y, T_y])[first]
        return _ParetoRows(
            rows=rows,
            total_weight=rows.total_weight,
            pair_x=rows.x_values[x_codes],
            pair_y=y_values[y_codes],
            pair_recency=code[:n],
            pair_T=code[n:],
        )

    def _initial(self, prepared: Any) -> Array:
        rows = prepared.rows
        w = rows.weight
        rate = float(np.sum(w * rows.x) + 1.0) / float(np.sum(w * rows.T) + 1.0)
        scale = 1.0 / max(rate, 1e-6)
        return np.array([1.0, scale, 1.0, scale])

    def _unpack(self) -> tuple[float, float, float, float]:
        p = self.params_
        return p["r"], p["alpha"], p["s"], p["beta"]

    # -- F and its gradient ------------------------------------------------------------
    @staticmethod
    def _log_F(
        params: Array | tuple[float, ...], x: Array, y: Array, gradient: bool
    ) -> tuple[Array, Array | None]:
        """log F(y) for each (x, y) and, with ``gradient``, d log F / d(r, alpha, s, beta)."""
        r, alpha, s, beta = params
        m = r + s + x
        log_a, log_b = np.log(alpha + y), np.log(beta + y)
        if alpha >= beta:
            z = (alpha - beta) / (alpha + y)
            res = hyper_series(r + x, 1.0, m + 1.0, 1.0, z, derivatives=gradient)
            log_F = -(r + x) * log_a - s * log_b - np.log(m) + np.log(res.value)
        else:
            z = (beta - alpha) / (beta + y)
            res = hyper_series(s + 1.0, 1.0, m + 1.0, 1.0, z, derivatives=gradient)
            log_F = -(r + x - 1.0) * log_a - (s + 1.0) * log_b - np.log(m) + np.log(res.value)
        if not gradient:
            return log_F, None
        assert res.d_p1 is not None and res.d_q1 is not None and res.d_z is not None
        h_e, h_q, h_z = res.d_p1 / res.value, res.d_q1 / res.value, res.d_z / res.value
        if alpha >= beta:
            d_r = -log_a - 1.0 / m + h_e + h_q
            d_s = -log_b - 1.0 / m + h_q
            d_alpha = (-(r + x) + h_z * (1.0 - z)) / (alpha + y)
            d_beta = -s / (beta + y) - h_z / (alpha + y)
        else:
            d_r = -log_a - 1.0 / m + h_q
            d_s = -log_b - 1.0 / m + h_e + h_q
            d_alpha = -(r + x - 1.0) / (alpha + y) - h_z / (beta + y)
            d_beta = (-(s + 1.0) + h_z * (1.0 - z)) / (beta + y)
        return log_F, np.stack([d_r, d_alpha, d_s, d_beta])

    def _terms(
        self, params: Array | tuple[float, ...], x: Array, recency: Array, T: Array
    ) -> tuple[Array, Array]:
        """The two log-terms of the likelihood's bracket: alive at T, and gone
        between t_x and T (log s + log(F(t_x) - F(T)))."""
        r, alpha, s, beta = params
        l1 = -(r + x) * np.log(alpha + T) - s * np.log(beta + T)
        log_F1, _ = self._log_F(params, x, recency, False)
        log_F2, _ = self._log_F(params, x, T, False)
        l2 = np.log(s) + log_F1 + log1mexp(log_F2 - log_F1)
        return l1, l2

    # -- likelihood --------------------------------------------------------------------
    def _loglik(self, params: Array, prepared: Any) -> tuple[float, Array]:
        pr: _ParetoRows = prepared
        rows = pr.rows
        r, alpha, s, beta = params
        ux = rows.x_values
        head = special.gammaln(r + ux) - special.gammaln(r) + r * np.log(alpha) + s * np.log(beta)
        log_aT = np.log(alpha + rows.T_values)
        log_bT = np.log(beta + rows.T_values)
        xi, ti = rows.x_code, rows.T_code
        kx = (r + ux)[xi]
        l1 = -kx * log_aT[ti] - s * log_bT[ti]

        log_F, d_F = self._log_F(params, pr.pair_x, pr.pair_y, True)
        assert d_F is not None
        f1, f2 = log_F[pr.pair_recency], log_F[pr.pair_T]
        diff = np.minimum(f2 - f1, 0.0)
        l2 = np.log(s) + f1 + log1mexp(diff)
        both = np.logaddexp(l1, l2)
        w = rows.weight
        wx = rows.x_weight
        total = float(wx @ head + w @ both)

        w2 = np.exp(l2 - both)
        w2 = np.where(np.isfinite(l2), w2, 0.0)
        w1 = 1.0 - w2
        rho = np.exp(diff)
        gone = rho < 1.0
        inv = np.where(gone, 1.0 / np.where(gone, 1.0 - rho, 1.0), 0.0)
        ww1, ww2 = w * w1, w * w2
        # d l2 = (d log F1 - rho d log F2) / (1 - rho), weighted by w2
        d_l2 = (d_F[:, pr.pair_recency] - rho * d_F[:, pr.pair_T]) * inv
        grad_l2 = d_l2 @ ww2
        inv_aT = 1.0 / (alpha + rows.T_values)
        inv_bT = 1.0 / (beta + rows.T_values)
        d_r = (
            wx @ (special.digamma(r + ux) - special.digamma(r) + np.log(alpha))
            - ww1 @ log_aT[ti]
            + grad_l2[0]
        )
        d_alpha = r * rows.total_weight / alpha - (ww1 * kx) @ inv_aT[ti] + grad_l2[1]
        d_s = (
            rows.total_weight * np.log(beta)
            - ww1 @ log_bT[ti]
            + grad_l2[2]
            + float(np.sum(ww2)) / s
        )
        d_beta = s * rows.total_weight / beta - s * (ww1 @ inv_bT[ti]) + grad_l2[3]
        return total, np.array([d_r, d_alpha, d_s, d_beta])

    # -- predictions -------------------------------------------------------------------
    def _p_alive(self, x: Array, recency: Array, T: Array) -> Array:
        l1, l2 = self._terms(self._unpack(), x, recency, T)
        with np.errstate(over="ignore"):
            return special.expit(l1 - l2)

    def _time_scale(self, x: Array, T: Array) -> Array:
        return self.params_["alpha"] + T

    def _expected_alive(self, x: Array, T: Array, t: Array) -> Array:
        # (r+x)/(alpha+T) (beta+T) [1 - ((beta+T)/(beta+T+t))^(s-1)] / (s-1), finite at s = 1
        r, alpha, s, beta = self._unpack()
        x, T, t = np.broadcast_arrays(x, T, t)
        log_1p = np.log1p(t / (beta + T))
        return (r + x) * (beta + T) / (alpha + T) * expm1_ratio(log_1p, 1.0 - s)

    def _pmf_alive(self, n: int, t: float, x: Array, T: Array) -> Array:
        # alive through t with probability ((B)/(B+t))^s, else gone at v in (0, t):
        # P = (B/(B+t))^s NB(n; t) + integral_0^t s B^s (B+v)^-(s+1) NB(n; v) dv,
        # NB(n; v) the negative binomial of purchases in v; the integral in
        # y = log(1 + v/B), where its weight is s exp(-s y) dy
        r, alpha, s, beta = self._unpack()
        k = (r + x)[:, None]
        A = (alpha + T)[:, None]
        B = (beta + T)[:, None]

        def log_nb(v: Array) -> Array:
            log_1mz = np.log(A) - np.log(A + v)
            if n == 0:
                return k * log_1mz
            with np.errstate(divide="ignore"):
                log_z = np.log(v) - np.log(A + v)
            return (
                special.gammaln(k + n)
                - special.gammaln(k)
                - special.gammaln(n + 1.0)
                + k * log_1mz
                + n * log_z
            )

        top = np.log1p(t / B)
        survive = np.exp(-s * top + log_nb(np.full_like(A, t)))
        nodes, weights = gauss_legendre(_PMF_NODES)
        y = top * nodes[None, :]
        v = B * np.expm1(y)
        integral = np.sum(s * np.exp(-s * y + log_nb(v)) * weights[None, :], axis=1) * top[:, 0]
        return survive[:, 0] + integral

    def _next_alive(self, u: Array, x: Array, T: Array, horizon: float) -> tuple[Array, np.ndarray]:
        # P(next purchase within s | alive) = integral_0^s E[lambda e^-lambda v] E[e^-mu v] dv,
        # in y = log(1 + v/(alpha+T)): G(Y) = integral_0^Y g, g(y) = k e^-ky
        # (1 + (A/B) expm1(y))^-s, increasing and concave in Y. Newton from the
        # no-dropout answer (left of the root) climbs to the root monotonically.
        r, alpha, s, beta = self._unpack()
        k = r + x
        A = alpha + T
        ratio = A / (beta + T)
        y_cap = np.log1p(horizon / A)
        nodes, weights = gauss_legendre(_NEXT_NODES)

        def g(y: Array, kk: Array, rr: Array) -> Array:
            return kk * np.exp(-kk * y - s * np.log1p(rr * np.expm1(y)))

        Y = -np.log1p(-u) / k
        beyond = y_cap < Y
        active = np.flatnonzero(~beyond)
        for _ in range(60):
            if active.size == 0:
                break
            ya, ka, ra, ua = Y[active], k[active], ratio[active], u[active]
            G = ya * (g(ya[:, None] * nodes[None, :], ka[:, None], ra[:, None]) @ weights)
            gap = ua - G
            with np.errstate(divide="ignore", invalid="ignore"):
                step = np.nan_to_num(gap / g(ya, ka, ra), nan=np.inf)
            ya = ya + np.maximum(step, 0.0)
            Y[active] = ya
            over = ya > y_cap[active]
            beyond[active[over]] = True
            done = over | (np.abs(gap) <= 1e-12 * ua) | (step <= 1e-14 * ya)
            active = active[~done]
        time = A * np.expm1(np.minimum(Y, y_cap))
        return time, ~beyond
