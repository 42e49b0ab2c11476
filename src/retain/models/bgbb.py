"""BG/BB: beta-geometric / beta-Bernoulli (Fader, Hardie & Shang 2010).

For discrete purchase opportunities (yearly donations, annual events, one
issue a week): while alive, a customer buys at each opportunity with
probability ``p ~ Beta(alpha, beta)``; before each opportunity they drop out
with probability ``theta ~ Beta(gamma, delta)``.

Data: ``frequency`` x (purchases in the n opportunities after the first),
``recency`` t_x (the opportunity of the last purchase, 0 if none), and
``n_periods`` n, with an optional ``weight`` column (customers per row).
Per row::

    L = B(alpha+x, beta+n-x)/B(alpha, beta) * B(gamma, delta+n)/B(gamma, delta)
        + sum_{i=0}^{n-t_x-1} B(alpha+x, beta+t_x-x+i)/B(alpha, beta)
                               * B(gamma+1, delta+t_x+i)/B(gamma, delta)

evaluated as a log-sum-exp of its terms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import special

from retain.errors import ArgumentError
from retain.models._special import dot
from retain.models.base import (
    Array,
    Model,
    as_pandas,
    numeric_column,
    refuse,
    require_columns,
    row_weights,
)


@dataclass
class _Opportunities:
    x: Array
    recency: Array
    n: Array
    weight: Array
    total_weight: float


def _bgbb_arrays(frame: pd.DataFrame) -> tuple[Array, Array, Array]:
    require_columns(frame, ("frequency", "recency", "n_periods"), "the BG/BB data")
    x = numeric_column(frame, "frequency")
    tx = numeric_column(frame, "recency")
    n = numeric_column(frame, "n_periods")
    for name, values in (("frequency", x), ("recency", tx), ("n_periods", n)):
        refuse(
            frame,
            (values < 0) | (np.abs(values - np.round(values)) > 1e-9),
            name,
            "a whole number >= 0",
        )
    x, tx, n = np.round(x), np.round(tx), np.round(n)
    refuse(frame, tx > n, "recency", "at most n_periods")
    refuse(frame, x > tx, "frequency", "at most recency (one purchase per opportunity)")
    refuse(frame, (x == 0) & (tx > 0), "recency", "0 for customers with no purchase")
    return x, tx, n


def _log_beta_ratio(a: Array | float, b: Array | float, a0: float, b0: float) -> Array:
    return special.betaln(a, b) - special.betaln(a0, b0)


class BetaGeoBetaBinom(Model):
    """BG/BB (Fader, Hardie & Shang 2010): parameters ``alpha``, ``beta``
    (purchase probability) and ``gamma``, ``delta`` (dropout probability)."""

    name = "bgbb"
    param_names = ("alpha", "beta", "gamma", "delta")

    def _prepare(self, data: Any, weights: Any) -> _Opportunities:
        frame = as_pandas(data)
        x, tx, n = _bgbb_arrays(frame)
        if weights is None and "weight" in frame.columns:
            weights = "weight"
        w = row_weights(frame, weights)
        w = np.ones(x.size) if w is None else w
        grouped = (
            pd.DataFrame({"x": x, "tx": tx, "n": n, "w": w})
            .groupby(["x", "tx", "n"], sort=False)["w"]
            .sum()
        )
        idx = grouped.index
        return _Opportunities(
            x=idx.get_level_values(0).to_numpy(dtype=np.float64),
            recency=idx.get_level_values(1).to_numpy(dtype=np.float64),
            n=idx.get_level_values(2).to_numpy(dtype=np.float64),
            weight=grouped.to_numpy(dtype=np.float64),
            total_weight=float(grouped.sum()),
        )

    def _initial(self, prepared: Any) -> Array:
        return np.ones(4)

    @staticmethod
    def _log_terms(
        params: Array | tuple[float, ...], x: Array, tx: Array, n: Array
    ) -> tuple[Array, Array, Array]:
        """Log of each term of the likelihood: (rows, 1 + max(n - t_x)); -inf where absent.
        Also the 'm' argument (beta + m) and 'j' argument (delta + j) of each term."""
        alpha, beta, gamma, delta = params
        width = int(np.max(n - tx)) if n.size else 0
        i = np.arange(width, dtype=np.float64)[None, :]
        m = np.concatenate([(n - x)[:, None], tx[:, None] - x[:, None] + i], axis=1)
        j = np.concatenate([n[:, None], tx[:, None] + i], axis=1)
        present = np.concatenate([np.ones((x.size, 1), dtype=bool), i < (n - tx)[:, None]], axis=1)
        first = np.zeros_like(m, dtype=bool)
        first[:, 0] = True
        log_purchase = _log_beta_ratio(alpha + x[:, None], beta + m, alpha, beta)
        log_drop = np.where(
            first,
            _log_beta_ratio(gamma, delta + j, gamma, delta),
            _log_beta_ratio(gamma + 1.0, delta + j, gamma, delta),
        )
        terms = np.where(present, log_purchase + log_drop, -np.inf)
        return terms, m, j

    def _loglik(self, params: Array, prepared: Any) -> tuple[float, Array]:
        d: _Opportunities = prepared
        alpha, beta, gamma, delta = params
        terms, m, j = self._log_terms(params, d.x, d.recency, d.n)
        ll = special.logsumexp(terms, axis=1)
        share = np.exp(terms - ll[:, None])  # 0 where a term is absent
        x = d.x[:, None]
        psi = special.digamma
        d_alpha = psi(alpha + x) - psi(alpha + beta + x + m) - psi(alpha) + psi(alpha + beta)
        d_beta = psi(beta + m) - psi(alpha + beta + x + m) - psi(beta) + psi(alpha + beta)
        first = np.zeros_like(m, dtype=bool)
        first[:, 0] = True
        g1 = np.where(first, 0.0, 1.0)  # gamma + 1 in the 'dropped out' terms
        d_gamma = psi(gamma + g1) - psi(gamma + delta + g1 + j) - psi(gamma) + psi(gamma + delta)
        d_delta = psi(delta + j) - psi(gamma + delta + g1 + j) - psi(delta) + psi(gamma + delta)
        grads = [
            dot(d.weight, np.sum(share * np.where(share > 0, g, 0.0), axis=1))
            for g in (d_alpha, d_beta, d_gamma, d_delta)
        ]
        return dot(d.weight, ll), np.array(grads)

    # -- predictions -------------------------------------------------------------------
    def _rows(self, data: Any) -> tuple[pd.DataFrame, Array, Array, Array, Array]:
        self._require_fitted()
        frame = as_pandas(data)
        x, tx, n = _bgbb_arrays(frame)
        params = tuple(self.params_[k] for k in self.param_names)
        terms, _, _ = self._log_terms(params, x, tx, n)
        return frame, x, tx, n, special.logsumexp(terms, axis=1)

    def p_alive(self, data: Any) -> pd.Series:
        """P(alive at the next opportunity, n + 1 | history), per row."""
        frame, x, _, n, ll = self._rows(data)
        alpha, beta, gamma, delta = (self.params_[k] for k in self.param_names)
        log_alive = _log_beta_ratio(alpha + x, beta + n - x, alpha, beta) + _log_beta_ratio(
            gamma, delta + n + 1.0, gamma, delta
        )
        return pd.Series(np.clip(np.exp(log_alive - ll), 0, 1), index=frame.index, name="p_alive")

    def expected_purchases(self, data: Any, n_future: int) -> pd.Series:
        """Expected purchases in the next ``n_future`` opportunities, given the history."""
        if isinstance(n_future, bool) or not isinstance(n_future, int | np.integer) or n_future < 0:
            raise ArgumentError(
                f"n_future must be a whole number of opportunities >= 0, got {n_future!r}"
            )
        frame, x, _, n, ll = self._rows(data)
        alpha, beta, gamma, delta = (self.params_[k] for k in self.param_names)
        log_buy = _log_beta_ratio(alpha + x + 1.0, beta + n - x, alpha, beta)
        # sum_{j=1..N} B(gamma, delta+n+j)/B(gamma, delta), telescoped:
        # G(g+d)/G(d) [G(1+d+n)/G(g+d+n) - G(1+d+n+N)/G(g+d+n+N)] / (g-1)
        head = special.gammaln(gamma + delta) - special.gammaln(delta)
        f0 = special.gammaln(1.0 + delta + n) - special.gammaln(gamma + delta + n)
        fN = special.gammaln(1.0 + delta + n + n_future) - special.gammaln(
            gamma + delta + n + n_future
        )
        if abs(gamma - 1.0) < 1e-7:
            psi = special.digamma
            ratio = psi(delta + n + n_future + 1.0) - psi(delta + n + 1.0)
            alive_sum = np.exp(head + f0) * ratio
        else:
            alive_sum = np.exp(head + f0) * (-np.expm1(fN - f0)) / (gamma - 1.0)
        value = np.exp(log_buy - ll) * alive_sum
        return pd.Series(np.maximum(value, 0.0), index=frame.index, name="expected_purchases")

    def purchase_distribution(self, n_periods: int) -> pd.Series:
        """P(x purchases in the first ``n_periods`` opportunities) for a new customer,
        x = 0..n_periods (the model's fit to a cohort's frequency histogram)."""
        self._require_fitted()
        if (
            isinstance(n_periods, bool)
            or not isinstance(n_periods, int | np.integer)
            or n_periods < 0
        ):
            raise ArgumentError(f"n_periods must be a whole number >= 0, got {n_periods!r}")
        alpha, beta, gamma, delta = (self.params_[k] for k in self.param_names)
        n = float(n_periods)
        x = np.arange(n_periods + 1, dtype=np.float64)
        log_choose_n = special.gammaln(n + 1) - special.gammaln(x + 1) - special.gammaln(n - x + 1)
        alive = np.exp(
            log_choose_n
            + _log_beta_ratio(alpha + x, beta + n - x, alpha, beta)
            + _log_beta_ratio(gamma, delta + n, gamma, delta)
        )
        i = np.arange(n_periods, dtype=np.float64)[None, :]
        xx = x[:, None]
        valid = i >= xx
        with np.errstate(invalid="ignore"):
            log_choose_i = (
                special.gammaln(i + 1)
                - special.gammaln(xx + 1)
                - special.gammaln(np.where(valid, i - xx, 0.0) + 1)
            )
            gone = np.where(
                valid,
                np.exp(
                    log_choose_i
                    + _log_beta_ratio(alpha + xx, beta + np.where(valid, i - xx, 0.0), alpha, beta)
                    + _log_beta_ratio(gamma + 1.0, delta + i, gamma, delta)
                ),
                0.0,
            )
        return pd.Series(
            alive + gone.sum(axis=1),
            index=pd.Index(x.astype(int), name="frequency"),
            name="probability",
        )
