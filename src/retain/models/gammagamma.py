"""Gamma-Gamma: the value of a customer's purchases (Fader & Hardie 2013).

Each purchase's value is Gamma(p, nu), and each customer's nu is
Gamma(q, gamma) across customers. Fitted on customers with repeat purchases:
``frequency`` x > 0 and ``monetary``, the mean value m of their repeat
purchases. Per customer::

    log L = log G(p x + q) - log G(p x) - log G(q) + q log(gamma)
            + (p x - 1) log(m) + p x log(x) - (p x + q) log(gamma + x m)

The expected value of a customer's next purchases given their history is
``p (gamma + x m) / (p x + q - 1)``: a weighted mean of their own average and the
population mean ``p gamma / (q - 1)``. It is finite only for q > 1, so q is
kept above 1 in the fit.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from scipy import special

from retain.errors import DataError
from retain.models._special import dot
from retain.models.base import (
    SAMPLE_ROWS,
    Array,
    Model,
    as_pandas,
    numeric_column,
    refuse,
    require_columns,
    row_weights,
    z_score,
)


@dataclass
class _Spend:
    """Customers with repeat purchases: frequency x (and its distinct values), mean
    spend m, with log m, x log x and x m kept for the likelihood's passes."""

    x: Array
    m: Array
    weight: Array
    total_weight: float

    def __post_init__(self) -> None:
        codes, values = pd.factorize(self.x, sort=False)
        self.x_code = codes
        self.x_values = np.asarray(values, dtype=np.float64)
        self.x_weight = np.bincount(codes, weights=self.weight, minlength=self.x_values.size)
        self.log_m = np.log(self.m)
        self.xm = self.x * self.m
        # sums that do not depend on the parameters
        self.sum_x_log_xm = dot(self.weight, self.x * (self.log_m + np.log(self.x)))
        self.sum_log_m = dot(self.weight, self.log_m)

    def subsample(self, size: int, rng: np.random.Generator) -> _Spend:
        """About ``size`` customers drawn with probability proportional to their weight
        (at most 1), reweighted by 1/probability."""
        prob = np.minimum(1.0, size * self.weight / self.weight.sum())
        keep = rng.random(prob.size) < prob
        weight = self.weight[keep] / prob[keep]
        return _Spend(self.x[keep], self.m[keep], weight, float(weight.sum()))


class GammaGamma(Model):
    """Gamma-Gamma spend model (Fader & Hardie 2013): parameters ``p``, ``q``, ``gamma``.

    ``fit(summary)`` uses the customers with ``frequency > 0`` and ``monetary > 0``
    (others are left out, with a warning counting them when monetary is not
    positive). Money is in the currency of ``monetary``.
    """

    name = "gamma_gamma"
    param_names = ("p", "q", "gamma")
    lower_bounds: ClassVar[dict[str, float]] = {"q": 1.0 + 1e-6}

    def _prepare(self, data: Any, weights: Any) -> _Spend:
        frame = as_pandas(data)
        require_columns(frame, ("frequency", "monetary"), "the customer summaries")
        x = numeric_column(frame, "frequency")
        m = numeric_column(frame, "monetary")
        refuse(
            frame, (x < 0) | (np.abs(x - np.round(x)) > 1e-9), "frequency", "a whole number >= 0"
        )
        w = row_weights(frame, weights)
        w = np.ones(x.size) if w is None else w
        repeat = x > 0
        usable = repeat & (m > 0)
        skipped = int(np.sum(repeat & ~usable))
        if skipped:
            warnings.warn(
                f"{skipped} customer(s) with repeat purchases but a monetary value of 0 or less "
                "were left out of the Gamma-Gamma fit",
                UserWarning,
                stacklevel=4,
            )
        if not usable.any():
            raise DataError(
                "no customer with repeat purchases and a positive monetary value: the "
                "Gamma-Gamma model needs some"
            )
        # in one order whatever the rows' order (by frequency, then monetary value): the
        # sums of the likelihood are then added alike, and a fit where it is flat (a
        # ridge of near-equal fits) stops at the same point for the same customers
        order = np.lexsort((m[usable], x[usable]))
        weight = w[usable][order]
        return _Spend(np.round(x[usable][order]), m[usable][order], weight, float(weight.sum()))

    def _subsample(self, prepared: Any, rng: np.random.Generator) -> Any:
        spend: _Spend = prepared
        if spend.weight.size <= 3 * SAMPLE_ROWS:
            return None
        return spend.subsample(SAMPLE_ROWS, rng)

    def _initial(self, prepared: Any) -> Array:
        spend: _Spend = prepared
        mean = float(np.average(spend.m, weights=spend.weight))
        return np.array([1.0, 2.0, max(mean, 1e-6)])

    def _loglik(self, params: Array, prepared: Any) -> tuple[float, Array]:
        # the gamma functions depend on x only: once per distinct frequency
        d: _Spend = prepared
        p, q, gamma = params
        ux, wx = d.x_values, d.x_weight
        pux = p * ux
        head = special.gammaln(pux + q) - special.gammaln(pux) - special.gammaln(q)
        psi_pxq = special.digamma(pux + q)
        w = d.weight
        log_gxm = np.log(gamma + d.xm)
        pxq = p * d.x + q
        total = (
            dot(wx, head)
            + q * np.log(gamma) * d.total_weight
            + p * d.sum_x_log_xm
            - d.sum_log_m
            - dot(w, pxq * log_gxm)
        )
        wlog = w * log_gxm
        d_p = dot(wx, ux * (psi_pxq - special.digamma(pux))) + d.sum_x_log_xm - dot(wlog, d.x)
        d_q = (
            dot(wx, psi_pxq - special.digamma(q))
            + np.log(gamma) * d.total_weight
            - float(wlog.sum())
        )
        d_gamma = q * d.total_weight / gamma - dot(w, pxq / (gamma + d.xm))
        return float(total), np.array([d_p, d_q, d_gamma])

    # -- predictions -------------------------------------------------------------------
    def _spend_values(self, x: Array, m: Array) -> Array:
        p, q, gamma = (self.params_[k] for k in self.param_names)
        m = np.where(x > 0, np.maximum(m, 0.0), 0.0)
        return p * (gamma + x * m) / (p * x + q - 1.0)

    def _expected_spend_arrays(self, frame: pd.DataFrame, with_sd: bool) -> tuple[Array, Array]:
        self._require_fitted()
        require_columns(frame, ("frequency", "monetary"), "the customer summaries")
        x = numeric_column(frame, "frequency")
        m = numeric_column(frame, "monetary")
        refuse(
            frame, (x < 0) | (np.abs(x - np.round(x)) > 1e-9), "frequency", "a whole number >= 0"
        )
        value = self._spend_values(x, m)
        if not with_sd:
            return value, np.zeros(value.size)
        sd = self._delta_log_sd(
            lambda model: model._spend_values(x, m),  # type: ignore[attr-defined]
            value,
        )
        return value, sd

    def expected_spend(
        self, data: Any, *, interval: float | None = None
    ) -> pd.Series | pd.DataFrame:
        """Expected value of each customer's future purchases, given their history:
        ``p (gamma + x m) / (p x + q - 1)``; the population mean ``p gamma / (q - 1)``
        for customers without repeat purchases. A ``monetary`` of 0 or less (refunds)
        counts as 0. In the currency of ``monetary``.

        With ``interval`` (e.g. 0.9): a DataFrame ``expected_spend``, ``low``,
        ``high`` from the parameters' uncertainty (delta method, log scale).
        """
        frame = as_pandas(data)
        value, sd = self._expected_spend_arrays(frame, interval is not None)
        series = pd.Series(value, index=frame.index, name="expected_spend")
        if interval is None:
            return series
        z = z_score(interval)
        return pd.DataFrame(
            {
                "expected_spend": series,
                "low": pd.Series(value * np.exp(-z * sd), index=frame.index),
                "high": pd.Series(value * np.exp(z * sd), index=frame.index),
            }
        )

    @property
    def mean_spend(self) -> float:
        """The population mean value of a purchase, ``p gamma / (q - 1)``."""
        self._require_fitted()
        p, q, gamma = (self.params_[k] for k in self.param_names)
        return p * gamma / (q - 1.0)
