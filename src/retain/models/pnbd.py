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

Near the parameters' limits (s, beta -> infinity with s/beta = mu fixed:
exponential dropout at a common rate; r, alpha -> infinity: Poisson purchases)
log F is of order (r+x) log(alpha) + s log(beta), up to 1e10, and the difference
log F(T) - log F(t_x) that P(alive) needs would keep none of its digits. Where
that size passes :data:`_LOG_F_EXACT`, P(alive) = 1 / (1 + s I) is computed from
the integral I = int_{t_x}^T ((alpha+T)/(alpha+tau))^(r+x) ((beta+T)/(beta+tau))^s
dtau / (beta+tau), whose exponent is taken with log1p and which tends to the
exponential-dropout form (mu/(lambda+mu)) (e^{(lambda+mu)(T-t_x)} - 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import special

from retain.models._special import (
    dot,
    expm1_ratio,
    gauss_legendre,
    hyper_series,
    log1mexp,
    log_poch,
    matvec,
    softplus_sigmoid,
)
from retain.models.base import Array, TransactionModel, TransactionRows, _first_of, unique_pairs

#: Gauss-Legendre nodes for the integrals of the PMF and the next-purchase time
_PMF_NODES = 48
_NEXT_NODES = 6
#: cells of the table of P(next purchase within y) per distinct (x, T)
_NEXT_CELLS = 32
#: size of |log F| beyond which P(alive) is taken from the integral between t_x and T
#: (the difference of two log F values would carry an error above 1e-12)
_LOG_F_EXACT = 1e4
#: Gauss-Legendre nodes of that integral (at most: 8 a panel)
_ALIVE_NODES = 64
#: the likelihood takes F from its series where 1 - z at t_x, (min(alpha, beta) + t_x) /
#: (max(alpha, beta) + t_x), is at least this (the series then needs at most ~150 terms),
#: and the integral between t_x and T (:meth:`ParetoNBD._log_gone_integral`, 64 nodes)
#: elsewhere
_SERIES_REACH = 0.35
#: the series for F is left for the integral in log(beta+tau) where
#: 1 - z = (min(alpha, beta) + t_x) / (max(alpha, beta) + t_x) is below this
_Z_NEAR_ONE = 1e-2
#: the most panels of that integral (sharing the _ALIVE_NODES) and how far below its
#: top (in log) it reaches
_LOG_ALIVE_PANELS = 8
_LOG_ALIVE_REACH = 46.0
#: how much log(integrand) may vary over one panel of 8 nodes, and how long (in v) a
#: panel may be; the fewest panels a row takes
_PANEL_SPAN = 1.0
_MIN_PANELS = 2
#: rows of the integral from which rows are grouped by the panels they need
_GROUP_ROWS = 1_000


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
    #: a likelihood row costs 15-60x a BG/NBD row (a series or an integral per row): over
    #: 1,800 distinct rows the search runs on a weighted sample of 600 (a twentieth of
    #: the rows from 12,000, at most 5,000), the finish (Newton steps) on all. On 357,000
    #: rows a sample of 600 left s and beta loose along their ridge (s 6.8 against 1.5):
    #: the finish then started far off, where rows cost the most, and took 2.9 s
    #: instead of about 1 s
    sample_rows = 600
    sample_share = 1 / 20
    sample_most = 5_000

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
        between t_x and T (log s + log(F(t_x) - F(T))); F once per distinct (x, y)."""
        r, alpha, s, beta = params
        l1 = -(r + x) * np.log(alpha + T) - s * np.log(beta + T)
        pair_x, pair_y, code = unique_pairs(np.concatenate([x, x]), np.concatenate([recency, T]))
        log_F, _ = self._log_F(params, pair_x, pair_y, False)
        log_F1, log_F2 = log_F[code[: x.size]], log_F[code[x.size :]]
        l2 = np.log(s) + log_F1 + log1mexp(log_F2 - log_F1)
        return l1, l2

    # -- likelihood --------------------------------------------------------------------
    def _loglik(self, params: Array, prepared: Any) -> tuple[float, Array]:
        pr: _ParetoRows = prepared
        rows = pr.rows
        r, alpha, s, beta = params
        ux = rows.x_values
        ti = rows.T_code
        log_aT = np.log(alpha + rows.T_values)[ti]
        log_bT = np.log(beta + rows.T_values)[ti]
        kx = r + rows.x
        l1 = -kx * log_aT - s * log_bT

        # rows whose F series would converge slowly (z at t_x near 1) or whose log F
        # values are too large to be differenced take the integral between t_x and T
        recency, T = rows.recency, rows.T
        low, high = min(alpha, beta), max(alpha, beta)
        size = kx * np.abs(log_aT) + s * np.abs(log_bT)
        by_integral = ((low + recency) < _SERIES_REACH * (high + recency)) | (size > _LOG_F_EXACT)
        hard = np.flatnonzero(by_integral & (recency < T))
        easy = np.flatnonzero(~by_integral)
        # d = log of "gone between t_x and T" over "alive at T"; -inf where T = t_x
        d = np.full(rows.weight.size, -np.inf)
        n_pairs = pr.pair_x.size
        if easy.size:
            # F once per distinct (x, y) that an easy row needs
            needed = np.zeros(n_pairs, dtype=bool)
            needed[pr.pair_recency[easy]] = True
            needed[pr.pair_T[easy]] = True
            chosen = np.flatnonzero(needed)
            position = np.zeros(n_pairs, dtype=np.intp)
            position[chosen] = np.arange(chosen.size)
            at_recency, at_T = position[pr.pair_recency[easy]], position[pr.pair_T[easy]]
            log_F, d_F = self._log_F(params, pr.pair_x[chosen], pr.pair_y[chosen], True)
            assert d_F is not None
            f1, f2 = log_F[at_recency], log_F[at_T]
            diff = np.minimum(f2 - f1, 0.0)
            d[easy] = np.log(s) + f1 + log1mexp(diff) - l1[easy]
        if hard.size:
            log_i, d_log_i = self._log_gone_integral(
                params, rows.x[hard], recency[hard], T[hard], True
            )
            assert d_log_i is not None
            d[hard] = np.log(s) + log_i
        # log(e^l1 + e^l2) = l1 + softplus(l2 - l1); the slope is the share of l2
        softplus, w2 = softplus_sigmoid(d)
        w = rows.weight
        wx = rows.x_weight
        # the total as log G(r+x)/G(r) - r log(1 + T/alpha) - x log(alpha+T)
        # - s log(1 + T/beta) + softplus(d): r log alpha + s log beta and l1 would cancel
        # to the last digits of sums in the billions as s, beta -> infinity (exponential
        # dropout) or r, alpha -> infinity, and the optimiser would chase that noise
        T_values = rows.T_values
        alive = (
            -r * np.log1p(T_values / alpha)[ti]
            - rows.x * log_aT
            - s * np.log1p(T_values / beta)[ti]
        )
        total = dot(wx, log_poch(r, ux)) + dot(w, alive) + dot(w, softplus)

        ww2 = w * w2
        ww1 = w - ww2
        grad_l2 = np.zeros(4)
        if easy.size:
            assert d_F is not None
            rho = np.exp(diff)
            gone = rho < 1.0
            # d l2 = (d log F(t_x) - rho d log F(T)) / (1 - rho): gather by pair, then
            # one product with the per-pair gradient
            c1 = np.where(gone, ww2[easy] / np.where(gone, 1.0 - rho, 1.0), 0.0)
            by_pair = np.bincount(at_recency, weights=c1, minlength=chosen.size) - np.bincount(
                at_T, weights=c1 * rho, minlength=chosen.size
            )
            grad_l2 += matvec(d_F, by_pair)
        if hard.size:
            # l2 = l1 + log s + log I: the slope of l1 and of log I (log s is added below)
            inv_a, inv_b = 1.0 / (alpha + T[hard]), 1.0 / (beta + T[hard])
            d_l1 = np.stack([-log_aT[hard], -kx[hard] * inv_a, -log_bT[hard], -s * inv_b])
            grad_l2 += matvec(d_l1 + d_log_i, ww2[hard])
        inv_aT = (1.0 / (alpha + rows.T_values))[ti]
        inv_bT = (1.0 / (beta + rows.T_values))[ti]
        n = rows.total_weight
        d_r = (
            dot(wx, special.digamma(r + ux) - special.digamma(r) + np.log(alpha))
            - dot(ww1, log_aT)
            + grad_l2[0]
        )
        d_alpha = r * n / alpha - dot(ww1 * kx, inv_aT) + grad_l2[1]
        d_s = n * np.log(beta) - dot(ww1, log_bT) + grad_l2[2] + float(np.sum(ww2)) / s
        d_beta = s * n / beta - s * dot(ww1, inv_bT) + grad_l2[3]
        return total, np.array([d_r, d_alpha, d_s, d_beta])

    # -- predictions -------------------------------------------------------------------
    def _p_alive(self, x: Array, recency: Array, T: Array) -> Array:
        r, alpha, s, beta = self._unpack()
        x, recency, T = np.broadcast_arrays(x, recency, T)
        size = (r + x) * np.abs(np.log(alpha + T)) + s * np.abs(np.log(beta + T))
        large = size > _LOG_F_EXACT
        out = np.empty(x.shape)
        # the series converges slowly (and is closed by an approximate tail) where z
        # at t_x is near 1: one of alpha, beta far below the other, and t_x too
        low, high = min(alpha, beta), max(alpha, beta)
        near_one = (low + recency) < _Z_NEAR_ONE * (high + recency)
        series = ~(large | near_one)
        if series.any():
            l1, l2 = self._terms((r, alpha, s, beta), x[series], recency[series], T[series])
            with np.errstate(over="ignore", invalid="ignore"):
                out[series] = special.expit(l1 - l2)
            near_one[series] |= ~np.isfinite(out[series])
        large &= ~near_one
        if large.any():
            out[large] = self._p_alive_by_integral(x[large], recency[large], T[large])
        if near_one.any():
            out[near_one] = self._p_alive_by_log_integral(
                x[near_one], recency[near_one], T[near_one]
            )
        return out

    def _p_alive_by_log_integral(self, x: Array, recency: Array, T: Array) -> Array:
        """P(alive) = 1 / (1 + s I), I from :meth:`_log_gone_integral`: the cases the
        series cannot reach, c + t_x far below max(alpha, beta)."""
        s = self.params_["s"]
        log_i, _ = self._log_gone_integral(self._unpack(), x, recency, T, False)
        with np.errstate(over="ignore", invalid="ignore"):
            return np.where(recency < T, special.expit(-(np.log(s) + log_i)), 1.0)

    @staticmethod
    def _log_gone_integral(
        params: Array | tuple[float, ...],
        x: Array,
        recency: Array,
        T: Array,
        gradient: bool,
    ) -> tuple[Array, Array | None]:
        """log I and its gradient as :meth:`_log_gone_panels` gives them, each row with
        the fewest panels that keep it exact: psi' is monotone, so psi varies by at most
        ``span`` = (V - begin) max(|psi'|) over the range, and 8 Gauss-Legendre nodes
        integrate e^psi to rounding on a panel over which psi varies by at most
        :data:`_PANEL_SPAN` and that is at most that long in v (the integrand's
        singularities lie pi off the real axis)."""
        r, alpha, s, beta = params
        c = min(alpha, beta)
        k = r + x
        c_x = c + recency
        V = np.log1p((T - recency) / c_x)
        end_slopes = [
            k * c_tau / (alpha - c + c_tau) + (s * c_tau - (beta - c)) / (beta - c + c_tau)
            for c_tau in (c_x, c + T)
        ]
        low_slope = np.minimum(*end_slopes)
        with np.errstate(divide="ignore", invalid="ignore"):
            begin = np.where(low_slope > 0, np.maximum(V - _LOG_ALIVE_REACH / low_slope, 0.0), 0.0)
            size = (V - begin) * np.maximum(1.0, np.maximum(*np.abs(end_slopes)))
            need = np.ceil(np.nan_to_num(size / _PANEL_SPAN, nan=np.inf))
        # rounded up to a power of 2: at most three groups of rows, each one pass; a few
        # rows take one pass with the most any of them needs (a pass costs ~0.1 ms)
        panels = np.clip(
            2 ** np.ceil(np.log2(np.maximum(need, 1.0))), _MIN_PANELS, _LOG_ALIVE_PANELS
        ).astype(np.intp)
        if panels.size < _GROUP_ROWS:
            panels[:] = np.max(panels, initial=_MIN_PANELS)
        log_i = np.empty(x.size)
        grad = np.empty((4, x.size)) if gradient else None
        for count in np.unique(panels):
            rows = np.flatnonzero(panels == count)
            part, d_part = ParetoNBD._log_gone_panels(
                params, x[rows], recency[rows], T[rows], gradient, int(count)
            )
            log_i[rows] = part
            if grad is not None:
                assert d_part is not None
                grad[:, rows] = d_part
        return log_i, grad

    @staticmethod
    def _log_gone_panels(
        params: Array | tuple[float, ...],
        x: Array,
        recency: Array,
        T: Array,
        gradient: bool,
        panels: int,
    ) -> tuple[Array, Array | None]:
        """log I, I = int_{t_x}^T ((alpha+T)/(alpha+tau))^(r+x) ((beta+T)/(beta+tau))^s
        dtau / (beta+tau), the share of the likelihood of "gone between t_x and T"
        against "alive at T" (per unit s), and with ``gradient`` d log I / d(r, alpha,
        s, beta). Times in the data's unit; rows need T > t_x.

        The integral is taken in v = log((c+T)/(c+tau)) with c = min(alpha, beta),
        where dtau = -(c+tau) dv: I = int_0^V e^psi(v) dv, V = log((c+T)/(c+t_x)) and
        psi(v) = (r+x) log((alpha+T)/(alpha+tau)) + s log((beta+T)/(beta+tau))
        + log((c+tau)/(beta+tau)). The mass that 1/(beta+tau) or (alpha+tau)^-(r+x)
        piles up near tau = t_x when c + t_x is far below max(alpha, beta) is spread
        out by v, and psi' = k (c+tau)/(alpha+tau) + s (c+tau)/(beta+tau) -
        (beta-c)/(beta+tau) is monotone in v. All in logs, at a cost per row that does
        not depend on the parameters (the series for F needs thousands of terms there).
        The gradient is the same rule applied to the derivative of the integrand in tau.
        """
        r, alpha, s, beta = params
        c = min(alpha, beta)
        k = (r + x)[:, None]
        c_T = (c + T)[:, None]
        c_x = (c + recency)[:, None]
        V = np.log1p((T - recency)[:, None] / c_x)

        def slope(c_tau: Array) -> Array:
            return k * c_tau / (alpha - c + c_tau) + (s * c_tau - (beta - c)) / (beta - c + c_tau)

        # psi' monotone: psi(top) - psi(v) >= m |top - v| with m the smaller end slope
        # when that is positive (psi rising to V): below V - 46/m the integrand is under
        # e^-46 of its top and left out; what remains is cut into panels of Gauss-Legendre
        low_slope = np.minimum(slope(c_x), slope(c_T))
        with np.errstate(divide="ignore"):
            begin = np.where(low_slope > 0, np.maximum(V - _LOG_ALIVE_REACH / low_slope, 0.0), 0.0)
        nodes, weights = gauss_legendre(_ALIVE_NODES // _LOG_ALIVE_PANELS)
        cells = np.arange(panels, dtype=np.float64)[:, None]
        grid = (cells + nodes[None, :]).ravel()[None, :] / panels
        h = V - begin
        v = begin + h * grid
        # c + tau = (c + t_x) e^(V-v), T - tau = (c + T)(1 - e^-v): neither cancels
        c_tau = c_x * np.exp(V - v)
        gap = c_T * -np.expm1(-v)
        b_tau = beta - c + c_tau
        # gap / (alpha + tau) and gap / (beta + tau)
        rel_a = gap / (alpha - c + c_tau) if alpha > c else gap / c_tau
        rel_b = gap / b_tau
        log_a = np.log1p(rel_a)
        log_b = np.log1p(rel_b)
        values = k * log_a
        values += s * log_b
        if beta > c:
            values -= np.log1p((beta - c) / c_tau)
        top = np.max(values, axis=1, keepdims=True)
        # the integrand over its top, times the weights, in place
        inner = np.exp(np.subtract(values, top, out=values), out=values)
        inner *= np.tile(weights, panels)[None, :]
        total = np.sum(inner, axis=1)
        with np.errstate(divide="ignore"):
            log_i = top[:, 0] + np.log(h[:, 0] / panels) + np.log(total)
        if not gradient:
            return log_i, None
        # d log(integrand) / d parameter at fixed tau, averaged under the integrand;
        # (alpha + tau) + gap = alpha + T
        d_alpha = rel_a * (-k / (alpha + T)[:, None])
        d_beta = -(rel_b * (s / (beta + T))[:, None] + 1.0 / b_tau)
        grad = np.stack([np.einsum("ij,ij->i", inner, d) for d in (log_a, d_alpha, log_b, d_beta)])
        grad /= total
        return log_i, grad

    def _p_alive_by_integral(self, x: Array, recency: Array, T: Array) -> Array:
        """P(alive) = 1 / (1 + s I), I = int_{t_x}^T e^phi(tau) dtau / (beta+tau) with
        phi(tau) = (r+x) log1p((T-tau)/(alpha+tau)) + s log1p((T-tau)/(beta+tau)).

        phi is convex and falls from c = phi(t_x) to 0, never slower than its slope
        at T; the map tau = t_x + D l(y), e^(-kappa l) = 1 - y (1 - e^-kappa), with
        kappa = D |phi'(T)|, leaves e^(phi - c + kappa l) in [e^(kappa - c), 1] and
        smooth for Gauss-Legendre (flat in the limit, where phi is linear). All in
        logs: exact where c is in the thousands too.
        """
        r, alpha, s, beta = self._unpack()
        k = (r + x)[:, None]
        span = (T - recency)[:, None]
        Tc = T[:, None]

        def phi(tau: Array) -> Array:
            gap = Tc - tau
            return k * np.log1p(gap / (alpha + tau)) + s * np.log1p(gap / (beta + tau))

        c = phi(recency[:, None])
        kappa = np.minimum(span * (k / (alpha + Tc) + s / (beta + Tc)), c)
        q = -np.expm1(-kappa)  # 1 - e^-kappa
        nodes, weights = gauss_legendre(_ALIVE_NODES)
        y = nodes[None, :]
        tiny = kappa < 1e-12
        safe = np.where(tiny, 1.0, kappa)
        # l(y) = -log(1 - y q)/kappa, tending to y as kappa -> 0
        ell = np.where(tiny, y, -np.log1p(-y * q) / safe)
        tau = recency[:, None] + span * ell
        # dtau = D q / (kappa (1 - y q)) dy and 1 - y q = e^(-kappa l)
        ratio = np.where(tiny, 1.0, q / safe)
        inner = np.exp(phi(tau) - c + kappa * ell) / (beta + tau)
        with np.errstate(divide="ignore"):
            log_i = c[:, 0] + np.log(span[:, 0] * ratio[:, 0]) + np.log(matvec(inner, weights))
        with np.errstate(over="ignore"):
            return np.where(span[:, 0] > 0, special.expit(-(np.log(s) + log_i)), 1.0)

    def _time_scale(self, x: Array, T: Array) -> Array:
        return self.params_["alpha"] + T

    def _expected_alive(self, x: Array, T: Array, t: Array) -> Array:
        # (r+x)/(alpha+T) (beta+T) [1 - ((beta+T)/(beta+T+t))^(s-1)] / (s-1), finite at s = 1
        r, alpha, s, beta = self._unpack()
        x, T, t = np.broadcast_arrays(x, T, t)
        log_1p = np.log1p(t / (beta + T))
        return (r + x) * (beta + T) / (alpha + T) * expm1_ratio(log_1p, 1.0 - s)

    def _still_alive(self, x: Array, T: Array, t: Array) -> Array:
        # alive now, the dropout rate is Gamma(s, beta+T): P = ((beta+T)/(beta+T+t))^s
        _, _, s, beta = self._unpack()
        x, T, t = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (x, T, t)))
        return np.exp(-s * np.log1p(t / (beta + T)))

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
            # log1p and rising factorials: k of 1e9 multiplies every rounding error
            log_1mz = -np.log1p(v / A)
            if n == 0:
                return k * log_1mz
            with np.errstate(divide="ignore"):
                log_z = np.log(v) - np.log(A + v)
            return log_poch(k, n) - special.gammaln(n + 1.0) + k * log_1mz + n * log_z

        top = np.log1p(t / B)
        survive = np.exp(-s * top + log_nb(np.full_like(A, t)))
        nodes, weights = gauss_legendre(_PMF_NODES)
        y = top * nodes[None, :]
        v = B * np.expm1(y)
        integral = np.sum(s * np.exp(-s * y + log_nb(v)) * weights[None, :], axis=1) * top[:, 0]
        return survive[:, 0] + integral

    def _next_alive(self, u: Array, x: Array, T: Array, horizon: float) -> tuple[Array, np.ndarray]:
        # P(next purchase within v | alive) = integral_0^v E[lambda e^-lambda w] E[e^-mu w] dw.
        # In y = log(1 + v/(alpha+T)) that is G(Y) = integral_0^Y g, with
        # g(y) = k e^-ky (1 + (A/B) expm1(y))^-s: increasing in Y, smooth. For each
        # distinct (x, T), G is tabulated on a grid up to the horizon (Gauss-Legendre
        # per cell); each customer's target is located in the table, then solved
        # within its cell by Newton steps with the cell's exact integral.
        r, alpha, s, beta = self._unpack()
        px, pT, code = unique_pairs(x, T)
        k, A = r + px, alpha + pT
        ratio = A / (beta + pT)
        cap = np.log1p(horizon / A)
        cells = _NEXT_CELLS
        width = cap / cells
        nodes, weights = gauss_legendre(_NEXT_NODES)

        def g(y: Array, kk: Array, rr: Array) -> Array:
            return kk * np.exp(-kk * y - s * np.log1p(rr * np.expm1(y)))

        edges = width[:, None] * np.arange(cells + 1)[None, :]
        inner = edges[:, :-1, None] + width[:, None, None] * nodes[None, None, :]
        grow = matvec(g(inner, k[:, None, None], ratio[:, None, None]), weights) * width[:, None]
        table = np.concatenate([np.zeros((px.size, 1)), np.cumsum(grow, axis=1)], axis=1)

        within = u <= table[code, -1]
        # the cell of each target: G is increasing within a pair, pairs 2 apart
        keys = (np.arange(px.size, dtype=np.float64)[:, None] * 2.0 + table).ravel()
        flat = np.searchsorted(keys, code * 2.0 + u, side="right") - 1
        cell = np.clip(flat - code * (cells + 1), 0, cells - 1)
        g0, g1 = table[code, cell], table[code, cell + 1]
        y0 = edges[code, cell]
        h = width[code]
        kk, rr = k[code], ratio[code]
        share = np.clip((u - g0) / np.where(g1 > g0, g1 - g0, 1.0), 0.0, 1.0)
        Y = y0 + share * h
        active = np.flatnonzero(within)
        for _ in range(12):
            if active.size == 0:
                break
            ya, base, ka, ra, ua = Y[active], y0[active], kk[active], rr[active], u[active]
            span = ya - base
            inside = g(base[:, None] + span[:, None] * nodes[None, :], ka[:, None], ra[:, None])
            G = g0[active] + span * matvec(inside, weights)
            gap = ua - G
            with np.errstate(divide="ignore", invalid="ignore"):
                step = np.nan_to_num(gap / g(ya, ka, ra), nan=0.0, posinf=0.0, neginf=0.0)
            Y[active] = np.clip(ya + step, base, base + h[active])
            active = active[np.abs(gap) > 1e-13 * np.maximum(ua, 1e-300)]
        time = (alpha + T) * np.expm1(np.where(within, Y, cap[code]))
        return time, within
