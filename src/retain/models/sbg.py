"""sBG: the shifted beta-geometric model of contract renewals (Fader & Hardie 2007).

Each customer of a cohort cancels at the end of any period with probability
``theta ~ Beta(alpha, beta)``; retention rises over time because the
customers who cancel easily leave first. Data: the number of customers still
active at the start of each period, the cohort's size first (period 0).

    P(T = t) = B(alpha + 1, beta + t - 1) / B(alpha, beta)     (cancels in period t)
    S(t)     = B(alpha, beta + t) / B(alpha, beta)             (still active after t)

The time unit is the contract period (a month, a year): discount rates here
are per contract period.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from scipy import special

from retain.errors import ArgumentError, DataError
from retain.models._special import dot, hyper_series
from retain.models.base import Array, Model


@dataclass
class _Survivors:
    lost: Array  # customers who cancelled in period t = 1..max tau, every cohort's
    periods: Array
    remaining: Array  # each cohort's customers still active after its last period
    tau: Array  # each cohort's last period observed
    total_weight: float


class ShiftedBetaGeometric(Model):
    """sBG (Fader & Hardie 2007): parameters ``alpha``, ``beta``.

    ``fit(survivors)``: customers active at the start of period 0 (the cohort),
    1, 2, ... (a list, array or Series, never increasing); or a list of such lists, one
    per cohort, each as long as that cohort has been observed: the cohorts share the
    parameters, and each adds its own periods to the likelihood.
    """

    name = "sbg"
    param_names: ClassVar[tuple[str, ...]] = ("alpha", "beta")

    def _prepare(self, data: Any, weights: Any) -> _Survivors:
        if weights is not None:
            raise ArgumentError("the sBG model takes survivor counts, not weights")
        if isinstance(data, np.ndarray) and data.ndim == 2:
            data = list(data)  # a row per cohort
        if (
            isinstance(data, list | tuple)
            and data
            and all(isinstance(c, list | tuple | np.ndarray | pd.Series) for c in data)
        ):
            cohorts = [self._cohort(c, f"cohort {i + 1}: ") for i, c in enumerate(data)]
        else:
            cohorts = [self._cohort(data, "")]
        longest = max(c.size for c in cohorts) - 1
        if longest < 1:
            raise DataError("need the cohort size and at least one later count of active customers")
        lost = np.zeros(longest)
        for values in cohorts:
            lost[: values.size - 1] -= np.diff(values)
        return _Survivors(
            lost=lost,
            periods=np.arange(1, longest + 1, dtype=np.float64),
            remaining=np.array([c[-1] for c in cohorts]),
            tau=np.array([c.size - 1 for c in cohorts], dtype=np.float64),
            total_weight=float(sum(c[0] for c in cohorts)),
        )

    @staticmethod
    def _cohort(data: Any, where: str) -> Array:
        values = np.asarray(data, dtype=np.float64).ravel()
        if values.size < 1:
            raise DataError(f"{where}need the cohort size and the later counts of active customers")
        if not np.all(np.isfinite(values)) or np.any(values < 0):
            raise DataError(f"{where}survivor counts must be finite numbers >= 0")
        if values[0] <= 0:
            raise DataError(f"{where}the cohort (first count) must have customers", value=values[0])
        drops = np.diff(values)
        if np.any(drops > 0):
            at = int(np.flatnonzero(drops > 0)[0]) + 1
            raise DataError(
                f"{where}survivor counts must never increase; period {at} has more active "
                "customers than the one before",
                value=float(values[at]),
                expected=f"at most {values[at - 1]:g}",
            )
        return values

    def _loglik(self, params: Array, prepared: Any) -> tuple[float, Array]:
        d: _Survivors = prepared
        alpha, beta = params
        t = d.periods
        lb0 = special.betaln(alpha, beta)
        log_p = special.betaln(alpha + 1.0, beta + t - 1.0) - lb0
        log_s = special.betaln(alpha, beta + d.tau) - lb0
        total = dot(d.lost, log_p) + dot(d.remaining, log_s)
        psi = special.digamma
        base_a = -psi(alpha) + psi(alpha + beta)
        base_b = -psi(beta) + psi(alpha + beta)
        dp_a = psi(alpha + 1.0) - psi(alpha + beta + t) + base_a
        dp_b = psi(beta + t - 1.0) - psi(alpha + beta + t) + base_b
        ds_a = psi(alpha) - psi(alpha + beta + d.tau) + base_a
        ds_b = psi(beta + d.tau) - psi(alpha + beta + d.tau) + base_b
        return total, np.array(
            [dot(d.lost, dp_a) + dot(d.remaining, ds_a), dot(d.lost, dp_b) + dot(d.remaining, ds_b)]
        )

    # -- predictions -------------------------------------------------------------------
    def _ab(self) -> tuple[float, float]:
        self._require_fitted()
        return self.params_["alpha"], self.params_["beta"]

    def survival(self, periods: Any) -> pd.Series:
        """Share of a new cohort still active after each of ``periods`` (whole periods)."""
        alpha, beta = self._ab()
        t = np.asarray(periods, dtype=np.float64).ravel()
        if np.any(t < 0) or not np.all(np.isfinite(t)):
            raise ArgumentError("periods must be finite numbers >= 0")
        value = np.exp(special.betaln(alpha, beta + t) - special.betaln(alpha, beta))
        return pd.Series(value, index=pd.Index(t, name="period"), name="survival")

    def retention_rate(self, periods: Any) -> pd.Series:
        """Share of customers active in period t-1 who renew for period t, t >= 1:
        ``(beta + t - 1) / (alpha + beta + t - 1)``, rising with t."""
        alpha, beta = self._ab()
        t = np.asarray(periods, dtype=np.float64).ravel()
        if np.any(t < 1) or not np.all(np.isfinite(t)):
            raise ArgumentError("retention is defined for periods 1, 2, ...")
        value = (beta + t - 1.0) / (alpha + beta + t - 1.0)
        return pd.Series(value, index=pd.Index(t, name="period"), name="retention_rate")

    def churn_probability(self, periods: Any) -> pd.Series:
        """P(a new customer cancels in period t), t >= 1."""
        alpha, beta = self._ab()
        t = np.asarray(periods, dtype=np.float64).ravel()
        if np.any(t < 1) or not np.all(np.isfinite(t)):
            raise ArgumentError("churn is defined for periods 1, 2, ...")
        value = np.exp(special.betaln(alpha + 1.0, beta + t - 1.0) - special.betaln(alpha, beta))
        return pd.Series(value, index=pd.Index(t, name="period"), name="churn_probability")

    def expected_residual_lifetime(self, renewals: Any, discount_rate: float) -> pd.Series:
        """Discounted expected residual lifetime (Fader & Hardie 2010) of customers
        who have renewed ``renewals`` times (are active in period renewals + 1):
        the expected number of further payments, the next one counted in full and
        each later one discounted by ``discount_rate`` per contract period.

        ``DERL = (beta+n)/(alpha+beta+n) 2F1(1, beta+n+1; alpha+beta+n+1; 1/(1+d))``
        with n = ``renewals`` (Fader & Hardie's expression for n - 1 renewals, shifted),
        summed as a series of positive terms. ``discount_rate`` must be above 0:
        undiscounted, the expectation is infinite when alpha <= 1.
        """
        alpha, beta = self._ab()
        if not np.isfinite(discount_rate) or discount_rate <= 0:
            raise ArgumentError(
                f"discount_rate (per contract period) must be above 0, got {discount_rate!r}"
            )
        n = np.asarray(renewals, dtype=np.float64).ravel()
        if np.any(n < 0) or not np.all(np.isfinite(n)):
            raise ArgumentError("renewals must be finite whole numbers >= 0")
        # active in period n+1: S(n+1+j)/S(n) for j >= 0, discounted (1+d)^-j
        first = (beta + n) / (alpha + beta + n)
        z = 1.0 / (1.0 + discount_rate)
        series = hyper_series(beta + n + 1.0, 1.0, alpha + beta + n + 1.0, 1.0, z).value
        return pd.Series(first * series, index=pd.Index(n, name="renewals"), name="derl")
