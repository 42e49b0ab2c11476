"""BdW: the beta-discrete-Weibull model of contract renewals (Fader, Hardie, Liu, Davin
& Steenburgh 2018), the sBG with duration dependence.

A customer with cancellation parameter ``theta ~ Beta(alpha, beta)`` is still active after
period t with probability ``(1 - theta) ** (t ** c)``: with ``c = 1`` this is the sBG (the
chance to cancel the same in every period); ``c < 1`` makes each customer likelier to stay
the longer they have stayed, ``c > 1`` less likely. Over the cohort:

    S(t)     = B(alpha, beta + t**c) / B(alpha, beta)      (still active after t)
    P(T = t) = S(t - 1) - S(t)                             (cancels in period t)

Data, time unit and discount rates as for :class:`~retain.models.ShiftedBetaGeometric`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd
from scipy import special

from retain.errors import ArgumentError
from retain.models._special import dot
from retain.models.base import Array
from retain.models.sbg import ShiftedBetaGeometric, _Survivors

#: the residual lifetime's sum stops where a further payment is worth less than this
#: share of the first (discounted and weighted by the chance to be active)
TAIL = 1e-12
#: the periods summed at a time, and at most (a daily plan's slow decay needs many)
CHUNK = 1200
MAX_PERIODS = 1_200_000
#: t**c is held below this: beyond it every survival is 0 to rounding
LARGEST_POWER = 1e250
#: above this, psi(x) - psi(x + a) is taken from its asymptotic series (the difference
#: of two nearly equal digammas would keep only rounding)
ASYMPTOTIC = 1e4


def _psi_gap(x: Array, a: float) -> Array:
    """``psi(x) - psi(x + a)`` for x > 0, accurate for large x too."""
    x = np.asarray(x, dtype=np.float64)
    big = x > ASYMPTOTIC
    safe = np.where(big, x, 1.0)
    xa = safe + a
    series = (
        -np.log1p(a / safe)
        - 0.5 / safe
        + 0.5 / xa
        - 1.0 / (12.0 * safe**2)
        + 1.0 / (12.0 * xa**2)
        + 1.0 / (120.0 * safe**4)
        - 1.0 / (120.0 * xa**4)
    )
    small = np.where(big, 1.0, x)
    direct = special.digamma(small) - special.digamma(small + a)
    return np.where(big, series, direct)


class BetaDiscreteWeibull(ShiftedBetaGeometric):
    """BdW: parameters ``alpha``, ``beta`` and ``c`` (duration dependence; 1 is the sBG).

    ``fit(survivors)`` takes what :class:`~retain.models.ShiftedBetaGeometric` takes: the
    customers active at the start of period 0 (the cohort), 1, 2, ..., or one such series
    per cohort."""

    name = "bdw"
    param_names: ClassVar[tuple[str, ...]] = ("alpha", "beta", "c")

    def _initial(self, prepared: Any) -> Array:
        return np.ones(3)

    @staticmethod
    def _log_s(alpha: float, beta: float, c: float, t: Array) -> tuple[Array, Array]:
        """log S(t) and its slopes in alpha, beta and c (rows), for whole t >= 0."""
        with np.errstate(divide="ignore", invalid="ignore"):
            log_t = np.where(t > 0, np.log(np.where(t > 0, t, 1.0)), 0.0)
        tc = np.where(t > 0, np.exp(np.minimum(c * log_t, np.log(LARGEST_POWER))), 0.0)
        psi = special.digamma
        value = special.betaln(alpha, beta + tc) - special.betaln(alpha, beta)
        tail = _psi_gap(beta + tc, alpha)  # psi(beta + tc) - psi(alpha + beta + tc)
        slopes = np.stack(
            [
                psi(alpha + beta) - psi(alpha + beta + tc),
                tail - psi(beta) + psi(alpha + beta),
                tail * tc * log_t,
            ]
        )
        return value, slopes

    def _loglik(self, params: Array, prepared: Any) -> tuple[float, Array]:
        d: _Survivors = prepared
        alpha, beta, c = params
        t = d.periods
        now, d_now = self._log_s(alpha, beta, c, t)
        before, d_before = self._log_s(alpha, beta, c, t - 1.0)
        # P(T = t) = S(t-1) (1 - S(t)/S(t-1)); its slope from both survivals'
        gone = -np.expm1(now - before)
        log_p = before + np.log(gone)
        ratio = np.exp(now - before)  # S(t) / S(t-1)
        d_log_p = (d_before - ratio * d_now) / gone
        log_s, d_log_s = self._log_s(alpha, beta, c, d.tau)
        total = dot(d.lost, log_p) + dot(d.remaining, log_s)
        grad = np.array([dot(d.lost, d_log_p[k]) + dot(d.remaining, d_log_s[k]) for k in range(3)])
        return total, grad

    # -- predictions -------------------------------------------------------------------
    def _abc(self) -> tuple[float, float, float]:
        self._require_fitted()
        return self.params_["alpha"], self.params_["beta"], self.params_["c"]

    def _survival_at(self, t: Array) -> Array:
        alpha, beta, c = self._abc()
        return np.exp(self._log_s(alpha, beta, c, t)[0])

    def survival(self, periods: Any) -> pd.Series:
        """Share of a new cohort still active after each of ``periods`` (whole periods)."""
        t = _periods(periods, 0, "periods must be finite numbers >= 0")
        return pd.Series(self._survival_at(t), index=pd.Index(t, name="period"), name="survival")

    def retention_rate(self, periods: Any) -> pd.Series:
        """Share of customers active in period t-1 who renew for period t, t >= 1:
        ``S(t) / S(t - 1)``; with c < 1 it rises faster than the sBG's, with c > 1 it can fall."""
        t = _periods(periods, 1, "retention is defined for periods 1, 2, ...")
        alpha, beta, c = self._abc()
        value = np.exp(self._log_s(alpha, beta, c, t)[0] - self._log_s(alpha, beta, c, t - 1.0)[0])
        return pd.Series(value, index=pd.Index(t, name="period"), name="retention_rate")

    def churn_probability(self, periods: Any) -> pd.Series:
        """P(a new customer cancels in period t), t >= 1."""
        t = _periods(periods, 1, "churn is defined for periods 1, 2, ...")
        value = self._survival_at(t - 1.0) - self._survival_at(t)
        return pd.Series(value, index=pd.Index(t, name="period"), name="churn_probability")

    def expected_residual_lifetime(self, renewals: Any, discount_rate: float) -> pd.Series:
        """Discounted expected residual lifetime of customers who have renewed ``renewals``
        times, as :meth:`ShiftedBetaGeometric.expected_residual_lifetime` defines it:
        ``sum over j >= 0 of S(n + 1 + j) / S(n) / (1 + d) ** j``, summed :data:`CHUNK`
        periods at a time until a term is below :data:`TAIL` of the first (at most
        :data:`MAX_PERIODS`; no closed form when c is not 1)."""
        if not np.isfinite(discount_rate) or discount_rate <= 0:
            raise ArgumentError(
                f"discount_rate (per contract period) must be above 0, got {discount_rate!r}"
            )
        n = _periods(renewals, 0, "renewals must be finite whole numbers >= 0")
        alpha, beta, c = self._abc()
        out = np.empty(n.size)
        step = np.log1p(discount_rate)
        for value in np.unique(n):
            start = self._log_s(alpha, beta, c, np.array([value]))[0]
            total, first, begin = 0.0, None, 0
            while begin < MAX_PERIODS:
                j = np.arange(begin, begin + CHUNK, dtype=np.float64)
                log_terms = self._log_s(alpha, beta, c, value + 1.0 + j)[0] - start - j * step
                terms = np.exp(log_terms)
                first = terms[0] if first is None else first
                kept = terms >= TAIL * first
                total += float(terms[kept].sum())
                if not kept[-1]:
                    break
                begin += CHUNK
            out[n == value] = total
        return pd.Series(out, index=pd.Index(n, name="renewals"), name="derl")


def _periods(values: Any, lowest: int, message: str) -> Array:
    t = np.asarray(values, dtype=np.float64).ravel()
    if np.any(t < lowest) or not np.all(np.isfinite(t)):
        raise ArgumentError(message)
    return t
