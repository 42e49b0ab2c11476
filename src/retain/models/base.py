"""What every model shares: fitting, standard errors, intervals, JSON, units.

A model states its parameters, how to prepare data and its log-likelihood with
gradient (:class:`Model`); the base fits it by maximum likelihood with
L-BFGS-B in log-parameters (bounded), from further starts when the first fails
(until one converges, or two end at the same objective: a maximum at a limit of the
parameters), polishes with Newton steps, and takes standard errors from the Hessian.
On many distinct rows the search runs on a weighted sample of them, and all rows are
only used to finish: Newton steps from the sample's maximum (its curvature corrected
by BFGS updates), or one L-BFGS-B run from it where that maximum lies at a limit.

:class:`TransactionModel` adds the per-customer predictions that the
"buy till you die" models (BG/NBD, MBG/NBD, Pareto/NBD) share: P(alive),
expected purchases, the probability of n purchases, CLV with a Gamma-Gamma
spend model, and the time of the next purchase. A model only supplies the
pieces that differ (see the ``_`` hooks).

Time units
----------
A model remembers the time unit of the summary it was fitted on
(``retain.summarize(..., unit="W")`` sets ``attrs["unit"]``), and refuses data
summarised in another unit or grain. Every duration argument (``t``,
``horizon``) is either a number, in that unit, or a string or timedelta with
its own unit, which is converted: ``"90D"`` (days), ``"13W"`` (weeks),
``"6M"`` (months of 30.4375 days), ``"1Y"`` (365.25 days). Discount rates are
per year, whatever the data's unit.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy import sparse, special

from retain.errors import ArgumentError, DataError, ModelError, SchemaError
from retain.models._special import gauss_legendre

Array = NDArray[np.float64]

UNIT_DAYS: dict[str, float] = {"D": 1.0, "W": 7.0}
UNIT_NAMES: dict[str, str] = {"D": "days", "W": "weeks"}
DAYS_PER_YEAR = 365.25
_DURATION_UNITS: dict[str, float] = {
    "d": 1.0,
    "day": 1.0,
    "days": 1.0,
    "w": 7.0,
    "week": 7.0,
    "weeks": 7.0,
    "m": DAYS_PER_YEAR / 12,
    "month": DAYS_PER_YEAR / 12,
    "months": DAYS_PER_YEAR / 12,
    "y": DAYS_PER_YEAR,
    "year": DAYS_PER_YEAR,
    "years": DAYS_PER_YEAR,
}
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]+)\s*$")

#: log-parameters live in [-LOG_BOUND, LOG_BOUND] (about 1e-9 to 1e9)
LOG_BOUND = 20.7
#: L-BFGS-B stops where no slope of the mean log-likelihood (log-parameters) exceeds
#: this; Newton steps then polish to full precision. A tighter stop only repeats line
#: searches that cannot improve an objective already flat to rounding
_GTOL = 1e-7
#: a log-parameter this close to its bound (within 1% of it) counts as at it: a fit
#: that walks a ridge towards a limit (s, beta -> infinity) stops somewhere short of the
#: bound, where depends on the machine's arithmetic (within 1e-5 of it on one machine,
#: 3.6e-4 on another for the same data), and is not told "converged" for stopping short
_AT_BOUND = 1e-2
#: a log-parameter whose standard error exceeds this (a factor of e^10, about 22,000,
#: either way) is not pinned down by the data: whether the Hessian's smallest
#: eigenvalue passes as positive at such a point depends on the machine's arithmetic
_LOOSE_LOG_SE = 10.0
FORMAT_VERSION = 1

Duration = float | int | str | dt.timedelta | pd.Timedelta


class ConvergenceWarning(UserWarning):
    """The optimiser stopped short of a clean maximum; the parameters are finite but
    may be poorly determined (``converged_`` is False)."""


def duration_days(value: Duration, name: str = "duration") -> float:
    """Days in a duration given as a string ("90D", "13W", "6M", "1Y") or timedelta."""
    if isinstance(value, dt.timedelta | pd.Timedelta):
        days = pd.Timedelta(value) / pd.Timedelta(days=1)
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if not match or match.group(2).lower() not in _DURATION_UNITS:
            raise ArgumentError(
                f"{name} {value!r} is not a duration: write a number and a unit, e.g. "
                "'90D' (days), '13W' (weeks), '6M' (months), '1Y' (years)"
            )
        days = float(match.group(1)) * _DURATION_UNITS[match.group(2).lower()]
    else:
        raise TypeError(f"{name} must be a string or timedelta here, got {value!r}")
    if not np.isfinite(days) or days < 0:
        raise ArgumentError(f"{name} must be a finite duration of 0 or more, got {value!r}")
    return float(days)


def to_periods(value: Duration, unit: str | None, name: str = "duration") -> float:
    """A duration in the data's time ``unit`` ("D" or "W").

    A plain number is taken to be in that unit already; a string ("90D",
    "13W", "6M", "1Y") or timedelta is converted.
    """
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number or a duration, got {value!r}")
    if isinstance(value, int | float | np.integer | np.floating):
        number = float(value)
        if not np.isfinite(number) or number < 0:
            raise ArgumentError(f"{name} must be a finite number of 0 or more, got {value!r}")
        return number
    days = duration_days(value, name)
    if unit is None:
        raise ModelError(
            f"{name} {value!r} has a calendar unit but the model does not know the time unit "
            "of its data: fit it on retain.summarize() output, or pass fit(..., unit='D'|'W'), "
            "or give the duration as a number in the data's unit"
        )
    return days / UNIT_DAYS[unit]


def as_pandas(data: Any, what: str = "data") -> pd.DataFrame:
    """A pandas DataFrame from pandas, polars or Arrow input (attrs kept)."""
    if isinstance(data, pd.DataFrame):
        return data
    if hasattr(data, "to_pandas"):
        return data.to_pandas()
    raise TypeError(f"{what} must be a pandas or polars DataFrame or an Arrow table, got {data!r}")


def require_columns(frame: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise SchemaError(
            f"{what} lack the column(s) {missing}; found {list(frame.columns)}. "
            "Use retain.summarize() to build frequency, recency, T and monetary."
        )


def numeric_column(frame: pd.DataFrame, column: str) -> Array:
    """A column as float64, refusing missing and non-finite values with the row named."""
    try:
        values = pd.to_numeric(frame[column], errors="raise").to_numpy(dtype=np.float64)
    except (ValueError, TypeError) as exc:
        raise DataError(f"non-numeric values ({exc})", column=column) from None
    bad = ~np.isfinite(values)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{int(bad.sum())} missing or infinite value(s); the first at customer "
            f"{frame.index[first]!r}",
            column=column,
            value=frame[column].iloc[first],
            expected="a finite number",
        )
    return values


def refuse(frame: pd.DataFrame, bad: NDArray[np.bool_], column: str, expected: str) -> None:
    """Raise a DataError naming the first row where ``bad`` holds."""
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{int(bad.sum())} invalid value(s); the first at customer {frame.index[first]!r}",
            column=column,
            value=frame[column].iloc[first],
            expected=expected,
        )


@dataclass
class TransactionRows:
    """Unique (frequency, recency, T) rows with their counts, and the unique values of
    each column (models compute per-value terms once and gather them)."""

    x_values: Array
    recency_values: Array
    T_values: Array
    x_code: NDArray[np.intp]
    recency_code: NDArray[np.intp]
    T_code: NDArray[np.intp]
    weight: Array
    total_weight: float

    @cached_property
    def x(self) -> Array:
        return self.x_values[self.x_code]

    @property
    def recency(self) -> Array:
        return self.recency_values[self.recency_code]

    @property
    def T(self) -> Array:
        return self.T_values[self.T_code]

    @cached_property
    def pairs(self) -> tuple[Array, Array, NDArray[np.intp]]:
        """The distinct (x, T) pairs and each row's pair: found once, as every prediction
        of a scoring asks for them (not to be changed in place)."""
        key = self.x_code.astype(np.int64) * self.T_values.size + self.T_code
        code, first = _first_of(key)
        return self.x[first], self.T[first], code

    @cached_property
    def x_weight(self) -> Array:
        """Customers per distinct frequency."""
        return np.asarray(
            np.bincount(self.x_code, weights=self.weight, minlength=self.x_values.size),
            dtype=np.float64,
        )

    def subsample(self, size: int, rng: np.random.Generator) -> TransactionRows:
        """About ``size`` rows drawn with probability proportional to their count
        (at most 1), reweighted by 1/probability: an unbiased smaller likelihood."""
        prob = np.minimum(1.0, size * self.weight / self.weight.sum())
        keep = rng.random(prob.size) < prob
        weight = self.weight[keep] / prob[keep]
        return TransactionRows(
            x_values=self.x_values,
            recency_values=self.recency_values,
            T_values=self.T_values,
            x_code=self.x_code[keep],
            recency_code=self.recency_code[keep],
            T_code=self.T_code[keep],
            weight=weight,
            total_weight=float(weight.sum()),
        )


def _factorize(values: Array) -> tuple[NDArray[np.intp], Array]:
    codes, uniques = pd.factorize(values, sort=False)
    return codes.astype(np.intp), np.asarray(uniques, dtype=np.float64)


def collapse_rows(
    x: Array, recency: Array, T: Array, weight: Array | None = None
) -> tuple[TransactionRows, NDArray[np.intp]]:
    """Collapse customers to unique (x, recency, T) rows; also return each customer's row."""
    xc, xu = _factorize(x)
    rc, ru = _factorize(recency)
    tc, tu = _factorize(T)
    n_r, n_t = ru.size, tu.size
    if xu.size * n_r * n_t < 2**62:
        key = (xc.astype(np.int64) * n_r + rc) * n_t + tc
        inverse, first = _first_of(key)
    else:  # pragma: no cover - only with astronomically many distinct values
        stacked = np.stack([xc, rc, tc], axis=1)
        _, first, inverse = np.unique(stacked, axis=0, return_index=True, return_inverse=True)
        inverse = inverse.ravel()
    w = np.ones(x.size) if weight is None else weight
    counts = np.asarray(np.bincount(inverse, weights=w, minlength=first.size), dtype=np.float64)
    rows = TransactionRows(
        x_values=xu,
        recency_values=ru,
        T_values=tu,
        x_code=xc[first],
        recency_code=rc[first],
        T_code=tc[first],
        weight=counts,
        total_weight=float(w.sum()),
    )
    return rows, inverse


def unique_pairs(a: Array, b: Array) -> tuple[Array, Array, NDArray[np.intp]]:
    """Distinct (a, b) pairs and the pair of each element."""
    a_code, a_values = _factorize(a)
    b_code, b_values = _factorize(b)
    code, first = _first_of(a_code.astype(np.int64) * b_values.size + b_code)
    return a_values[a_code[first]], b_values[b_code[first]], code


def _first_of(key: NDArray[np.int64]) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Codes of ``key`` and the position of the first element of each code."""
    codes, uniques = pd.factorize(key, sort=False)
    first = np.full(len(uniques), -1, dtype=np.intp)
    # positions in reverse so that the earliest position is written last
    positions = np.arange(codes.size, dtype=np.intp)
    first[codes[::-1]] = positions[::-1]
    return codes.astype(np.intp), first


# -- the shared model ---------------------------------------------------------------


class Model:
    """Base of every retain model: maximum likelihood fit, standard errors, JSON.

    ``penalizer`` adds ``penalizer * sum(log(parameter) ** 2)`` to the mean
    negative log-likelihood (0 = plain maximum likelihood): a gentle pull of
    every parameter towards 1 for small or degenerate data.

    Fitted attributes (scikit-learn style, ending in ``_``): ``params_``
    (dict), ``log_likelihood_`` (total over customers), ``standard_errors_``
    (dict, from the inverse Hessian; NaN when the Hessian is singular),
    ``converged_``, ``fit_message_`` (the optimiser's word), ``max_gradient_`` (the
    largest slope left in the mean log-likelihood, log-parameters off their bounds),
    ``n_customers_``, ``unit_``, ``grain_``, ``observation_end_``, ``fitted_at_``.
    """

    name: ClassVar[str] = ""
    param_names: ClassVar[tuple[str, ...]] = ()
    #: lower bounds of the natural parameters (default 0, open)
    lower_bounds: ClassVar[dict[str, float]] = {}
    _registry: ClassVar[dict[str, type[Model]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            Model._registry[cls.name] = cls

    def __init__(self, penalizer: float = 0.0) -> None:
        if not np.isfinite(penalizer) or penalizer < 0:
            raise ArgumentError(f"penalizer must be 0 or more, got {penalizer!r}")
        self.penalizer = float(penalizer)
        self.params_: dict[str, float] = {}
        self.log_likelihood_: float = float("nan")
        self.standard_errors_: dict[str, float] = {}
        self.converged_: bool = False
        #: the optimiser's word on the fit ("converged", or why not)
        self.fit_message_: str = ""
        #: largest slope of the mean log-likelihood in the log-parameters not at a bound
        self.max_gradient_: float = float("nan")
        self.n_customers_: float = 0.0
        self.unit_: str | None = None
        self.grain_: str | None = None
        self.observation_end_: str | None = None
        self.fitted_at_: str | None = None
        self._cov_log: Array | None = None

    # -- hooks a model supplies ----------------------------------------------------
    def _prepare(self, data: Any, weights: Any) -> Any:
        """Validate and compress the data; return what ``_loglik`` reads."""
        raise NotImplementedError

    def _loglik(self, params: Array, prepared: Any) -> tuple[float, Array]:
        """Total weighted log-likelihood and its gradient in the natural parameters."""
        raise NotImplementedError

    def _initial(self, prepared: Any) -> Array:
        """A sensible first start, in natural parameters."""
        return np.ones(len(self.param_names))

    def _total_weight(self, prepared: Any) -> float:
        return float(prepared.total_weight)

    # -- fitting -------------------------------------------------------------------
    def fit(
        self,
        data: Any,
        *,
        weights: Any = None,
        unit: str | None = None,
        grain: str | None = None,
        n_starts: int = 6,
        seed: int = 0,
    ) -> Self:
        """Fit by maximum likelihood and return the model.

        ``weights``: optional count per row (a column name or an array), for data
        already aggregated. ``unit``/``grain``: the data's time unit and grain
        when ``data`` does not carry them in ``attrs`` (as ``retain.summarize``
        output does). ``n_starts``: most starting points tried when a start fails
        to converge.
        """
        attrs = dict(getattr(data, "attrs", {}) or {})
        for label, value in (("unit", unit), ("grain", grain)):
            if value is not None and value not in UNIT_DAYS:
                raise ArgumentError(f"{label} must be 'D' or 'W', got {value!r}")
        prepared = self._prepare(data, weights)
        self.unit_ = unit or attrs.get("unit")
        self.grain_ = grain or attrs.get("grain")
        self.observation_end_ = attrs.get("observation_end")
        self.n_customers_ = self._total_weight(prepared)
        if self.n_customers_ <= 0:
            raise DataError("no customers to fit the model on")
        self._optimize(prepared, n_starts=n_starts, seed=seed)
        self.fitted_at_ = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
        return self

    def _bounds(self) -> list[tuple[float, float]]:
        bounds = []
        for name in self.param_names:
            low = self.lower_bounds.get(name)
            bounds.append((np.log(low) if low else -LOG_BOUND, LOG_BOUND))
        return bounds

    def _objective(self, prepared: Any) -> Callable[[Array], tuple[float, Array]]:
        n = self._total_weight(prepared)
        pen = self.penalizer
        # the last few points evaluated: the optimiser's answer, the polish's last step
        # and the fit's final slope are asked for again at the same theta
        recent: dict[bytes, tuple[float, Array]] = {}

        def objective(theta: Array) -> tuple[float, Array]:
            key = np.asarray(theta, dtype=np.float64).tobytes()
            if key in recent:
                value, gradient = recent[key]
                return value, gradient.copy()
            params = np.exp(theta)
            with np.errstate(all="ignore"):
                ll, grad = self._loglik(params, prepared)
            value = -ll / n + pen * float(theta @ theta)
            gradient = -grad * params / n + 2.0 * pen * theta
            if not np.isfinite(value) or not np.all(np.isfinite(gradient)):
                value, gradient = 1e300, np.zeros_like(theta)
            if len(recent) >= 4:
                recent.pop(next(iter(recent)))
            recent[key] = (value, gradient.copy())
            return value, gradient

        return objective

    def _subsample(self, prepared: Any, rng: np.random.Generator) -> Any:
        """A weighted sample of the prepared rows for a quick first fit, or None."""
        return None

    def _optimize(self, prepared: Any, *, n_starts: int, seed: int) -> None:
        objective = self._objective(prepared)
        bounds = self._bounds()
        rng = np.random.default_rng(seed)
        result = None
        sample = self._subsample(prepared, rng)
        if sample is not None:
            # large data: fit a weighted sample of the rows first, then finish on all
            # rows with the sample's curvature as preconditioner (a handful of passes)
            quick = self._search(self._objective(sample), sample, bounds, n_starts, rng)
            if quick[2] and quick[4] is not None:
                result = self._finish(objective, quick[0], quick[4], bounds)
            elif quick[1] < 1e300:
                # the sample's maximum is at a limit of the parameters or on a flat ridge
                # (its starts agreed there): one run on all rows from it, not a new search
                # from the model's start that walks the same ridge again
                result = self._run(objective, quick[0], bounds)
                if result[1] >= 1e300:
                    result = None
        if result is None or (not result[2] and sample is None):
            result = self._search(objective, prepared, bounds, n_starts, rng)
        theta, value, ok, why, hess = result
        params = np.exp(theta)
        # the objective is -LL/N + penalizer |theta|^2: the total LL without a new pass
        ll = -(value - self.penalizer * float(theta @ theta)) * self._total_weight(prepared)
        if not np.isfinite(ll) or not np.all(np.isfinite(params)):
            raise ModelError(f"cannot fit the {self.name} model to these data: {why}")
        self.params_ = {k: float(v) for k, v in zip(self.param_names, params, strict=True)}
        self.log_likelihood_ = float(ll)
        self.converged_ = ok
        self.fit_message_ = why
        low, high = (np.array([b[i] for b in bounds]) for i in (0, 1))
        free = (theta > low + _AT_BOUND) & (theta < high - _AT_BOUND)
        gradient = objective(theta)[1]
        self.max_gradient_ = float(np.max(np.abs(gradient[free]), initial=0.0))
        if hess is None:
            hess = _hessian(objective, theta)
        self._standard_errors(hess * self._total_weight(prepared), theta)
        if ok and self._cov_log is None:
            ok = self.converged_ = False
            why = self.fit_message_ = "the data do not pin down every parameter (flat likelihood)"
        if not ok:
            warnings.warn(
                f"the {self.name} fit did not converge cleanly ({why}); the parameters are "
                "finite but may be poorly determined by these data",
                ConvergenceWarning,
                stacklevel=3,
            )

    def _search(
        self,
        objective: Callable[[Array], tuple[float, Array]],
        prepared: Any,
        bounds: list[tuple[float, float]],
        n_starts: int,
        rng: np.random.Generator,
    ) -> tuple[Array, float, bool, str, Array | None]:
        """L-BFGS-B from the model's start, then from perturbed starts until one converges
        or two end at the same objective."""
        low = np.array([b[0] for b in bounds])
        high = np.array([b[1] for b in bounds])
        first = np.clip(np.log(np.maximum(self._initial(prepared), 1e-8)), low + 1e-3, high - 1e-3)
        best: tuple[Array, float, bool, str, Array | None] | None = None
        for attempt in range(max(1, n_starts)):
            start = first if attempt == 0 else first + rng.normal(0.0, 1.0, first.size)
            start = np.clip(start, low + 1e-3, high - 1e-3)
            result = self._run(objective, start, bounds)
            # two starts that end at the same objective have found the data's maximum,
            # at a limit of the parameters or along a flat ridge: more starts repeat it
            agree = best is not None and abs(result[1] - best[1]) <= 1e-10 * max(1.0, abs(best[1]))
            if best is None or result[1] < best[1]:
                best = result
            if result[2] or agree:
                break
        assert best is not None
        return best

    def _run(
        self,
        objective: Callable[[Array], tuple[float, Array]],
        start: Array,
        bounds: list[tuple[float, float]],
    ) -> tuple[Array, float, bool, str, Array | None]:
        from scipy import optimize  # the optimiser only fits: scoring does without its import

        result = optimize.minimize(
            objective,
            start,
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={"maxiter": 3000, "ftol": 1e-15, "gtol": _GTOL, "maxcor": 20},
        )
        theta = np.asarray(result.x, dtype=np.float64)
        value, grad = objective(theta)
        if value >= 1e300:
            return theta, value, False, "the likelihood could not be evaluated", None
        hess = _hessian(objective, theta)
        theta, value, grad = self._polish(objective, theta, value, grad, hess, bounds)
        return self._verdict(theta, value, grad, hess, bounds)

    def _finish(
        self,
        objective: Callable[[Array], tuple[float, Array]],
        start: Array,
        hess: Array,
        bounds: list[tuple[float, float]],
    ) -> tuple[Array, float, bool, str, Array | None] | None:
        """Newton steps from ``start`` with ``hess`` (the curvature of a sample's fit,
        close to the full data's) until the slope is small, then with the full data's
        own Hessian."""
        low = np.array([b[0] for b in bounds])
        high = np.array([b[1] for b in bounds])
        theta = start
        value, grad = objective(theta)
        if value >= 1e300:
            return None
        try:
            # until the slope is small, so that the full Hessian (and with it the standard
            # errors) is taken at the maximum; the sample's curvature is close enough that
            # each step cuts the slope several-fold
            for _ in range(8):
                if np.max(np.abs(grad)) < 1e-9:
                    break
                step = np.linalg.solve(hess, grad)
                for _ in range(6):  # halve the step until the objective falls
                    candidate = np.clip(theta - step, low, high)
                    new_value, new_grad = objective(candidate)
                    if _no_worse(value, grad, new_value, new_grad):
                        break
                    step = step / 2
                else:
                    return None
                hess = _bfgs_update(hess, candidate - theta, new_grad - grad)
                theta, value, grad = candidate, new_value, new_grad
        except np.linalg.LinAlgError:
            return None
        full = _hessian(objective, theta, grad)
        theta, value, grad = self._polish(objective, theta, value, grad, full, bounds)
        return self._verdict(theta, value, grad, full, bounds)

    def _verdict(
        self,
        theta: Array,
        value: float,
        grad: Array,
        hess: Array,
        bounds: list[tuple[float, float]],
    ) -> tuple[Array, float, bool, str, Array | None]:
        low = np.array([b[0] for b in bounds])
        high = np.array([b[1] for b in bounds])
        at_bound = (theta <= low + _AT_BOUND) | (theta >= high - _AT_BOUND)
        if at_bound.any():
            names = [n for n, b in zip(self.param_names, at_bound, strict=True) if b]
            return theta, value, False, f"parameter(s) {', '.join(names)} ran to a bound", hess
        if np.max(np.abs(grad)) > 1e-5:
            return theta, value, False, f"gradient still {np.max(np.abs(grad)):.2g}", hess
        eigen = np.linalg.eigvalsh(hess)
        if not np.all(np.isfinite(eigen)) or eigen[0] <= max(1e-9, 1e-12 * eigen[-1]):
            why = "the data do not pin down every parameter (flat likelihood)"
            return theta, value, False, why, hess
        return theta, value, True, "converged", hess

    def _polish(
        self,
        objective: Callable[[Array], tuple[float, Array]],
        theta: Array,
        value: float,
        grad: Array,
        hess: Array,
        bounds: list[tuple[float, float]],
    ) -> tuple[Array, float, Array]:
        """Newton steps from the optimiser's answer with its Hessian: full precision
        for a few more evaluations."""
        low = np.array([b[0] for b in bounds])
        high = np.array([b[1] for b in bounds])
        try:
            if not np.all(np.isfinite(hess)) or np.min(np.linalg.eigvalsh(hess)) <= 0:
                return theta, value, grad
        except np.linalg.LinAlgError:
            return theta, value, grad
        for _ in range(3):
            if np.max(np.abs(grad)) < 1e-12:
                break
            candidate = np.clip(theta - np.linalg.solve(hess, grad), low, high)
            new_value, new_grad = objective(candidate)
            if not _no_worse(value, grad, new_value, new_grad):
                break
            theta, value, grad = candidate, new_value, new_grad
        return theta, value, grad

    def _standard_errors(self, hess: Array, theta: Array) -> None:
        """Standard errors from the Hessian of the total negative log-likelihood
        (log-parameters), carried to the natural parameters."""
        self._cov_log = None
        try:
            if np.all(np.isfinite(hess)) and np.min(np.linalg.eigvalsh(hess)) > 0:
                cov = np.asarray(np.linalg.inv(hess), dtype=np.float64)
                if np.all(np.diag(cov) <= _LOOSE_LOG_SE**2):
                    self._cov_log = cov
        except np.linalg.LinAlgError:
            self._cov_log = None
        params = np.exp(theta)
        if self._cov_log is None:
            se = np.full(params.size, np.nan)
        else:
            se = params * np.sqrt(np.maximum(np.diag(self._cov_log), 0.0))
        self.standard_errors_ = {k: float(v) for k, v in zip(self.param_names, se, strict=True)}

    # -- state -----------------------------------------------------------------------
    def _require_fitted(self) -> None:
        if not self.params_:
            raise ModelError(f"the {self.name} model is not fitted yet: call fit(data) first")

    @property
    def _theta(self) -> Array:
        return np.log(np.array([self.params_[k] for k in self.param_names]))

    def _with_theta(self, theta: Array) -> Self:
        other = self.__class__.__new__(self.__class__)
        other.__dict__.update(self.__dict__)
        other.params_ = {k: float(v) for k, v in zip(self.param_names, np.exp(theta), strict=True)}
        return other

    @property
    def covariance_(self) -> pd.DataFrame | None:
        """Covariance of the natural parameters (from the inverse Hessian), or None."""
        if self._cov_log is None or not self.params_:
            return None
        p = np.exp(self._theta)
        cov = self._cov_log * np.outer(p, p)
        return pd.DataFrame(cov, index=list(self.param_names), columns=list(self.param_names))

    def summary(self) -> pd.DataFrame:
        """Parameters with standard errors and 95% intervals (log-normal, so positive;
        the upper end is infinite where the data hardly pin a parameter down)."""
        self._require_fitted()
        rows = []
        for i, name in enumerate(self.param_names):
            value = self.params_[name]
            se_log = np.sqrt(self._cov_log[i, i]) if self._cov_log is not None else np.nan
            # in logs: a parameter the data hardly pin down has an upper end beyond the
            # largest float, which is then infinite (unbounded), not an overflow
            with np.errstate(over="ignore"):
                upper = float(np.exp(np.log(value) + 1.959963984540054 * se_log))
            rows.append(
                {
                    "parameter": name,
                    "estimate": value,
                    "standard_error": self.standard_errors_.get(name, np.nan),
                    "lower_95": float(np.exp(np.log(value) - 1.959963984540054 * se_log)),
                    "upper_95": upper,
                }
            )
        return pd.DataFrame(rows).set_index("parameter")

    def __repr__(self) -> str:
        if not self.params_:
            return f"{self.__class__.__name__}(penalizer={self.penalizer})"
        shown = ", ".join(f"{k}={v:.4g}" for k, v in self.params_.items())
        return f"{self.__class__.__name__}({shown})"

    # -- JSON ------------------------------------------------------------------------
    def to_json(self) -> str:
        """The fitted model as a small JSON document: parameters, their covariance,
        log-likelihood, the data's unit, grain and observation end, and the fit date."""
        self._require_fitted()
        return json.dumps(
            {
                "model": self.name,
                "format": FORMAT_VERSION,
                "params": self.params_,
                "unit": self.unit_,
                "grain": self.grain_,
                "observation_end": self.observation_end_,
                "fitted_at": self.fitted_at_,
                "log_likelihood": self.log_likelihood_,
                "converged": self.converged_,
                "message": self.fit_message_,
                "max_gradient": self.max_gradient_,
                "customers": self.n_customers_,
                "penalizer": self.penalizer,
                "covariance_log": None if self._cov_log is None else self._cov_log.tolist(),
            }
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Model:
        """A model from :meth:`to_json` output (of this class, or any when called on
        ``Model``)."""
        try:
            doc = json.loads(text)
            name = doc["model"]
            params = doc["params"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"not a retain model file: {exc}") from None
        target = Model._registry.get(name)
        if target is None:
            raise ModelError(f"unknown model {name!r} in the model file")
        if cls is not Model and not issubclass(target, cls):
            raise ModelError(f"the file holds a {name} model, not a {cls.name or cls.__name__}")
        if doc.get("format", 1) > FORMAT_VERSION:
            raise ModelError("the model file was written by a newer retain; upgrade retain")
        model = target(penalizer=float(doc.get("penalizer", 0.0)))
        missing = [k for k in target.param_names if k not in params]
        if missing:
            raise ModelError(f"the model file lacks the parameter(s) {missing}")
        values = np.array([float(params[k]) for k in target.param_names])
        if not np.all(np.isfinite(values)) or np.any(values <= 0):
            raise ModelError("the model file holds parameters that are not positive numbers")
        model.params_ = {k: float(params[k]) for k in target.param_names}
        model.unit_ = doc.get("unit")
        model.grain_ = doc.get("grain")
        model.observation_end_ = doc.get("observation_end")
        model.fitted_at_ = doc.get("fitted_at")
        model.log_likelihood_ = float(doc.get("log_likelihood", float("nan")))
        model.converged_ = bool(doc.get("converged", True))
        model.fit_message_ = str(doc.get("message", ""))
        model.max_gradient_ = float(doc.get("max_gradient", float("nan")))
        model.n_customers_ = float(doc.get("customers", 0.0))
        cov = doc.get("covariance_log")
        model._cov_log = None if cov is None else np.asarray(cov, dtype=np.float64)
        se = (
            np.full(values.size, np.nan)
            if model._cov_log is None
            else values * np.sqrt(np.maximum(np.diag(model._cov_log), 0.0))
        )
        model.standard_errors_ = {k: float(v) for k, v in zip(target.param_names, se, strict=True)}
        return model

    # -- units -----------------------------------------------------------------------
    def _check_units(self, frame: pd.DataFrame) -> None:
        """Refuse data summarised with another time unit or grain than the fit's."""
        attrs = getattr(frame, "attrs", {}) or {}
        for label, mine in (("unit", self.unit_), ("grain", self.grain_)):
            theirs = attrs.get(label)
            if mine and theirs and theirs != mine:
                what = "time unit" if label == "unit" else "grain (purchases merged per period)"
                raise ModelError(
                    f"the data's {what} is {theirs!r} but the {self.name} model was fitted on "
                    f"{label} {mine!r}: summarise with retain.summarize(..., {label}={mine!r}) "
                    "or refit the model"
                )

    def _delta_log_sd(self, evaluate: Callable[[Model], Array], base: Array) -> Array:
        """Delta-method standard deviation of ``log(evaluate(model))`` from the
        parameter covariance (log-parameters, forward differences)."""
        if self._cov_log is None:
            raise ModelError(
                f"no interval: the {self.name} fit has no standard errors (singular Hessian)"
            )
        theta = self._theta
        h = 1e-5
        grads = []
        with np.errstate(divide="ignore", invalid="ignore"):
            log_base = np.log(base)
            for j in range(theta.size):
                shifted = theta.copy()
                shifted[j] += h
                value = evaluate(self._with_theta(shifted))
                grads.append(np.where(base > 0, (np.log(value) - log_base) / h, 0.0))
        g = np.stack(grads, axis=-1)
        var = np.einsum("...i,ij,...j->...", g, self._cov_log, g)
        return np.sqrt(np.maximum(np.nan_to_num(var, nan=0.0, posinf=0.0), 0.0))


def _no_worse(value: float, grad: Array, new_value: float, new_grad: Array) -> bool:
    """Whether a Newton step is taken: the objective falls, or (near the maximum, where
    it is flat to its last digits) stays within rounding while the slope falls. The
    rounding of a mean over many rows reaches ~1e-14 of it."""
    if new_value <= value:
        return True
    flat = new_value <= value + 1e-12 * max(1.0, abs(value))
    return bool(flat and np.max(np.abs(new_grad)) < np.max(np.abs(grad)))


def _bfgs_update(hess: Array, step: Array, change: Array) -> Array:
    """The BFGS update of a curvature ``hess`` after a step ``step`` that changed the
    slope by ``change``: the sample's curvature corrected towards all rows' with each
    Newton step of the finish (superlinear instead of linear convergence). Kept as it
    is where the step shows no positive curvature."""
    curvature = float(step @ change)
    hs = hess @ step
    shs = float(step @ hs)
    if not (curvature > 1e-12 * np.linalg.norm(step) * np.linalg.norm(change) and shs > 0):
        return hess
    return hess + np.outer(change, change) / curvature - np.outer(hs, hs) / shs


def _hessian(
    objective: Callable[[Array], tuple[float, Array]], theta: Array, grad: Array | None = None
) -> Array:
    """Differences of the analytic gradient, symmetrised: central, or forward from
    ``grad`` (the gradient at ``theta``) at half the cost."""
    k = theta.size
    hess = np.empty((k, k))
    h = 1e-5
    for j in range(k):
        up = theta.copy()
        up[j] += h
        if grad is None:
            down = theta.copy()
            down[j] -= h
            hess[:, j] = (objective(up)[1] - objective(down)[1]) / (2 * h)
        else:
            hess[:, j] = (objective(up)[1] - grad) / h
    return (hess + hess.T) / 2


def z_score(level: float) -> float:
    """Two-sided normal quantile for an interval of probability ``level``."""
    if not 0 < level < 1:
        raise ArgumentError(f"interval must be a probability between 0 and 1, got {level!r}")
    return float(special.ndtri(0.5 + level / 2))


# -- the buy-till-you-die models: shared per-customer predictions --------------------

TRANSACTION_COLUMNS = ("frequency", "recency", "T")
#: Gauss-Legendre nodes for the discounting integral of the CLV
CLV_NODES = 16
#: rows of the weighted sample that a fit on more than 3x as many distinct rows starts from
SAMPLE_ROWS = 20_000
#: the count distribution of future purchases stops where the mass left is below this
COUNT_TAIL = 1e-7
#: the most purchases counted in a horizon when the data's grain is unknown
MAX_COUNT = 10_000
#: spacing of the points of log(spend / scale) at which the spend distributions are
#: tabulated (quantiles within about 0.3% of exact)
SPEND_STEP = 0.08
#: the spend table of a pair reaches this quantile of its counts and of their spend
SPEND_TOP = 0.999
#: purchase counts with less probability than this are left out of the spend distribution
SPEND_MASS = 1e-9


def transaction_arrays(frame: pd.DataFrame) -> tuple[Array, Array, Array]:
    """``frequency``, ``recency`` and ``T`` as float arrays, validated.

    Refuses (DataError naming the first bad customer): missing or infinite
    values, negative or fractional frequency, negative recency or T, recency
    after T, and recency above 0 for customers with no repeat purchase.
    """
    require_columns(frame, TRANSACTION_COLUMNS, "the customer summaries")
    x = numeric_column(frame, "frequency")
    recency = numeric_column(frame, "recency")
    T = numeric_column(frame, "T")
    refuse(frame, (x < 0) | (np.abs(x - np.round(x)) > 1e-9), "frequency", "a whole number >= 0")
    refuse(frame, recency < 0, "recency", "a number >= 0")
    refuse(frame, T < 0, "T", "a number >= 0")
    refuse(frame, recency > T * (1 + 1e-12) + 1e-9, "recency", "at most T (the customer's age)")
    refuse(
        frame,
        (x == 0) & (recency > 1e-9),
        "recency",
        "0 for customers with no repeat purchase (frequency 0)",
    )
    return np.round(x), np.minimum(recency, T), T


def row_weights(frame: pd.DataFrame, weights: Any) -> Array | None:
    """Per-row counts from a column name or an array; None for one customer per row."""
    if weights is None:
        return None
    if isinstance(weights, str):
        require_columns(frame, (weights,), "the data")
        w = numeric_column(frame, weights)
        refuse(frame, w < 0, weights, "a count >= 0")
        return w
    w = np.asarray(weights, dtype=np.float64).ravel()
    if w.size != len(frame):
        raise DataError(f"weights has {w.size} values for {len(frame)} rows")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise DataError("weights must be finite counts >= 0")
    return w


@dataclass
class _CountDistribution:
    """P(X = n | alive, history) for n = 0, 1, ... of each distinct (x, T) pair, flat:
    entries sorted by pair then n, each pair's entries from ``start`` (``size`` of them);
    ``row_pair`` maps each unique row to its pair."""

    row_pair: NDArray[np.intp]
    pair_x: Array
    pair: NDArray[np.intp]
    n: Array
    pmf: Array
    cdf: Array
    start: NDArray[np.intp]
    size: NDArray[np.intp]


@dataclass
class _Customers:
    frame: pd.DataFrame
    rows: TransactionRows
    inverse: NDArray[np.intp]

    def expand(self, values: NDArray[Any], name: str) -> pd.Series:
        return pd.Series(values[self.inverse], index=self.frame.index, name=name)


class TransactionModel(Model):
    """A model of repeat purchases in continuous time, fitted on ``frequency``,
    ``recency`` and ``T`` (see :func:`retain.summarize`), with per-customer
    predictions. Predictions accept any customers' summaries (not only those
    fitted) and return pandas objects aligned with the rows given.

    Durations (``t``, ``horizon``): a number is in the data's time unit (the
    ``unit`` of the summary, "D" days or "W" weeks); a string such as "90D",
    "13W", "6M" or "1Y", or a timedelta, is converted. Discount rates are per
    year. Data summarised in another unit or grain than the fit's is refused.
    """

    #: rows of the weighted sample a fit on more than 3x as many distinct rows starts
    #: from (a model whose likelihood costs more per row starts from a smaller one)
    sample_rows: ClassVar[int] = SAMPLE_ROWS
    #: the sample grows to this share of the distinct rows, up to ``sample_most`` rows
    #: (a model whose parameters a small sample leaves loose starts its finish nearer)
    sample_share: ClassVar[float] = 0.0
    sample_most: ClassVar[int] = SAMPLE_ROWS
    #: counts of a count distribution computed together (:meth:`_pmf_alive_block`)
    pmf_block: ClassVar[int] = 1

    # -- hooks -------------------------------------------------------------------------
    def _p_alive(self, x: Array, recency: Array, T: Array) -> Array:
        raise NotImplementedError

    def _expected_alive(self, x: Array, T: Array, t: Array) -> Array:
        """E[purchases in (T, T+t] | alive at T, history], broadcasting x, T against t."""
        raise NotImplementedError

    def _still_alive(self, x: Array, T: Array, t: Array) -> Array:
        """P(alive at T+t | alive at T, history), broadcasting x, T against t."""
        raise NotImplementedError

    def _time_scale(self, x: Array, T: Array) -> Array:
        """The time over which a customer's purchase rate is known (alpha + T)."""
        raise NotImplementedError

    def _pmf_alive(self, n: int, t: float, x: Array, T: Array) -> Array:
        """P(n purchases in (T, T+t] | alive at T, history)."""
        raise NotImplementedError

    def _pmf_alive_block(self, n: int, size: int, t: float, x: Array, T: Array) -> Array:
        """P(n, n+1, ..., n+size-1 purchases in (T, T+t] | alive at T, history), one
        column per count: :meth:`_pmf_alive` count by count, unless a model computes
        several counts at once more cheaply (then it sets :attr:`pmf_block`)."""
        return np.stack([self._pmf_alive(n + i, t, x, T) for i in range(size)], axis=1)

    def _next_alive(
        self, u: Array, x: Array, T: Array, horizon: float
    ) -> tuple[Array, NDArray[np.bool_]]:
        """Time s with P(next purchase within s | alive at T, history) = u, and whether
        s is within ``horizon``."""
        raise NotImplementedError

    # -- data ----------------------------------------------------------------------------
    def _prepare(self, data: Any, weights: Any) -> Any:
        frame = as_pandas(data)
        x, recency, T = transaction_arrays(frame)
        rows, _ = collapse_rows(x, recency, T, row_weights(frame, weights))
        return self._prepare_rows(rows)

    def _prepare_rows(self, rows: TransactionRows) -> Any:
        return rows

    def _subsample(self, prepared: Any, rng: np.random.Generator) -> Any:
        rows: TransactionRows = prepared if isinstance(prepared, TransactionRows) else prepared.rows
        n = rows.weight.size
        if n <= 3 * self.sample_rows:
            return None
        size = min(max(self.sample_rows, int(n * self.sample_share)), self.sample_most)
        return self._prepare_rows(rows.subsample(size, rng))

    def _customers(self, data: Any) -> _Customers:
        self._require_fitted()
        frame = as_pandas(data)
        self._check_units(frame)
        x, recency, T = transaction_arrays(frame)
        rows, inverse = collapse_rows(x, recency, T)
        return _Customers(frame, rows, inverse)

    def _duration(self, value: Duration, name: str) -> float:
        return to_periods(value, self.unit_, name)

    @property
    def _unit_days(self) -> float:
        return UNIT_DAYS.get(self.unit_ or "D", 1.0)

    # -- building blocks on unique rows ------------------------------------------------
    @staticmethod
    def _pairs(rows: TransactionRows) -> tuple[Array, Array, NDArray[np.intp]]:
        """Unique (x, T) pairs (what the alive-part of most predictions depends on)."""
        return rows.pairs

    def _rows_p_alive(self, rows: TransactionRows, p_alive: Array | None) -> Array:
        return self._p_alive(rows.x, rows.recency, rows.T) if p_alive is None else p_alive

    def _conditional_expected(
        self, rows: TransactionRows, times: Array, p_alive: Array | None = None
    ) -> Array:
        """E[purchases in (T, T+t] | history] for each row and each of ``times``."""
        times = np.asarray(times, dtype=np.float64).reshape(1, -1)
        p_alive = self._rows_p_alive(rows, p_alive)
        px, pT, code = self._pairs(rows)
        alive = self._expected_alive(px[:, None], pT[:, None], times)
        return p_alive[:, None] * alive[code]

    def _discounted_alive(self, x: Array, T: Array, horizon: float, delta: float) -> Array:
        """Discounted expected purchases in (T, T+horizon] given alive at T: the
        integral of exp(-delta * s) dE[Y(s)], by parts, with Gauss-Legendre nodes in
        log(1 + s / scale) so that short and long customer histories are both exact."""
        if horizon == 0:
            return np.zeros(x.size)
        if delta == 0:
            return self._expected_alive(x, T, np.full(x.size, horizon))
        scale = self._time_scale(x, T)
        nodes, weights = gauss_legendre(CLV_NODES)
        top = np.log1p(horizon / scale)
        log_s = top[:, None] * nodes[None, :]
        s = scale[:, None] * np.expm1(log_s)
        times = np.concatenate([s, np.full((x.size, 1), horizon)], axis=1)
        expected = self._expected_alive(x[:, None], T[:, None], times)
        ds = scale[:, None] * np.exp(log_s) * top[:, None] * weights[None, :]
        integral = np.sum(np.exp(-delta * s) * expected[:, :-1] * ds, axis=1)
        return np.exp(-delta * horizon) * expected[:, -1] + delta * integral

    def _discounted_expected(
        self, rows: TransactionRows, horizon: float, delta: float, p_alive: Array | None = None
    ) -> Array:
        return self._rows_p_alive(rows, p_alive) * self._discounted_alive_rows(rows, horizon, delta)

    def _discounted_alive_rows(self, rows: TransactionRows, horizon: float, delta: float) -> Array:
        px, pT, code = self._pairs(rows)
        return self._discounted_alive(px, pT, horizon, delta)[code]

    def _next_rows(
        self, rows: TransactionRows, q: float, horizon: float, p_alive: Array | None = None
    ) -> tuple[Array, NDArray[np.bool_]]:
        p_alive = self._rows_p_alive(rows, p_alive)
        possible = p_alive > q
        u = np.where(possible, q / np.where(possible, p_alive, 1.0), 0.5)
        time, within = self._next_alive(u, rows.x, rows.T, horizon)
        within = within & possible & np.isfinite(time) & (time <= horizon)
        return np.where(within, np.clip(time, 0.0, horizon), horizon), within

    # -- predictive distributions ------------------------------------------------------
    def _max_purchases(self, horizon: float) -> int:
        """The most purchases a customer can make in ``horizon`` (data's unit): one per
        grain period when the grain is known, else a generous cap."""
        if self.grain_ in UNIT_DAYS:
            periods = horizon * self._unit_days / UNIT_DAYS[str(self.grain_)]
            return int(np.floor(periods)) + 1
        return MAX_COUNT

    def _count_distribution(self, rows: TransactionRows, horizon: float) -> _CountDistribution:
        """P(n purchases in the ``horizon`` after T | alive at T, history) for n = 0, 1, ...
        per distinct (x, T), until the mass left is below :data:`COUNT_TAIL` (or the
        most purchases the horizon allows, which then takes the rest)."""
        px, pT, code = self._pairs(rows)
        cap = self._max_purchases(horizon)
        parts_pair, parts_n, parts_pmf = [], [], []
        cumulative = np.zeros(px.size)
        active = np.arange(px.size)
        n = 0
        while active.size:
            # counts n .. n + size - 1 of the pairs still short of the mass (the block
            # ends at the cap); each pair keeps them up to the one that completes it
            size = max(1, min(self.pmf_block, cap - n + 1))
            if horizon == 0:
                pmf = np.zeros((active.size, size))
                pmf[:, 0] = 1.0 if n == 0 else 0.0
            else:
                pmf = np.clip(
                    np.nan_to_num(self._pmf_alive_block(n, size, horizon, px[active], pT[active])),
                    0,
                    1,
                )
            # the mass so far after each count, added count by count
            running = np.concatenate([cumulative[active][:, None], pmf], axis=1)
            running = np.cumsum(running, axis=1)
            if n + size - 1 == cap:  # the last possible count holds whatever mass is left
                pmf[:, -1] = np.maximum(1.0 - running[:, -2], 0.0)
                running[:, -1] = running[:, -2] + pmf[:, -1]
            complete = ~(running[:, 1:] < 1.0 - COUNT_TAIL)
            stops = complete.any(axis=1)
            kept = np.where(stops, np.argmax(complete, axis=1) + 1, size)
            pair_of, count = np.nonzero(np.arange(size)[None, :] < kept[:, None])
            parts_pair.append(active[pair_of])
            parts_n.append((n + count).astype(np.float64))
            parts_pmf.append(pmf[pair_of, count])
            cumulative[active] = running[np.arange(active.size), kept]
            active = active[~stops]
            n += size
        pair = np.concatenate(parts_pair)
        order = np.argsort(pair, kind="stable")  # by pair, then n
        pair = pair[order]
        pmf = np.concatenate(parts_pmf)[order]
        counts = np.bincount(pair, minlength=px.size)
        start = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.intp)
        cdf = np.cumsum(pmf)
        cdf -= np.repeat(cdf[start] - pmf[start], counts)
        return _CountDistribution(
            row_pair=code,
            pair_x=px,
            pair=pair,
            n=np.concatenate(parts_n)[order],
            pmf=pmf,
            cdf=cdf,
            start=start,
            size=counts.astype(np.intp),
        )

    @staticmethod
    def _count_quantile(
        dist: _CountDistribution,
        p_alive: Array,
        level: float,
        order: NDArray[np.intp] | None = None,
    ) -> Array:
        """The ``level`` quantile of each row's purchase count, mixing "gone" (no
        purchase) with the count given alive: the least n with P(X <= n) >= level.
        ``order``: :func:`_search_order` of the rows, when several quantiles share it."""
        pair = dist.row_pair
        with np.errstate(divide="ignore", invalid="ignore"):
            target = (level - (1.0 - p_alive)) / p_alive
        zero = ~(target > 0)
        # first entry of the row's pair whose cumulative reaches the target; pairs 4 apart
        keys = dist.pair * 4.0 + dist.cdf
        found = _search_sorted(keys, pair * 4.0 + np.where(zero, 0.0, target) - 1e-12, order)
        last = dist.start[pair] + dist.size[pair] - 1
        found = np.clip(found, dist.start[pair], last)
        return np.where(zero, 0.0, dist.n[found])

    @staticmethod
    def _spend_quantiles(
        dist: _CountDistribution,
        p_alive: Array,
        spend_params: tuple[float, float, float],
        levels: tuple[float, ...],
        order: NDArray[np.intp] | None = None,
    ) -> list[Array]:
        """Quantiles of the total spend over the horizon, per row, as V = S / B, with
        B = gamma + x m each customer's posterior rate scale (so that one row serves
        every customer on it, whatever their mean spend m).

        Given n purchases, S is Gamma(n p, nu) with nu ~ Gamma(q + p x, B) (the
        Gamma-Gamma posterior), so V is beta-prime(n p, q + p x): P(V <= v | n) =
        I_{v/(1+v)}(n p, q + p x). Mixed over the count distribution given alive, that
        is a distribution per (x, T) pair, tabulated every :data:`SPEND_STEP` of log v
        over the range of every pair with that x; each row mixes in "gone"
        (no purchase) with its own P(alive) and reads its quantile off its pair's table
        (linear in log v against the probit of the probability). ``order``: as for
        :meth:`_count_quantile`."""
        p, q, _ = spend_params
        pairs = dist.start.size
        # pairs of the same frequency x share the posterior shape q + p x, hence one grid
        # and one table of I(n p, q + p x) for every n: the betainc calls scale with the
        # distinct (x, n), not with the pairs
        x_code, x_values = pd.factorize(dist.pair_x, sort=True)
        shape_a = q + p * np.asarray(x_values, dtype=np.float64)
        positive = (dist.n > 0) & (dist.pmf > SPEND_MASS)
        # log v from a low quantile of one purchase to a high one of the count that is
        # itself a high quantile of the pair's counts: the levels asked are within
        upper = np.zeros(pairs)
        np.maximum.at(upper, dist.pair, np.where(dist.cdf <= SPEND_TOP, dist.n + 1.0, 0.0))
        upper = np.maximum(np.minimum(upper, dist.n[dist.start + dist.size - 1]), 1.0)
        top = np.ones(x_values.size)
        np.maximum.at(top, x_code, upper)
        lo = np.log(special.gammaincinv(p, 1e-4)) - np.log(special.gammaincinv(shape_a, 1 - 1e-4))
        hi = np.log(special.gammaincinv(p * top, SPEND_TOP)) - np.log(
            special.gammaincinv(shape_a, 1 - SPEND_TOP)
        )
        # points of one lattice in log v (SPEND_STEP apart), from each x's own start: a
        # point's value depends on x alone, so a few customers rescored get exactly the
        # numbers a full scoring gives them
        first = np.floor(lo / SPEND_STEP)
        points = int(np.max(np.ceil(hi / SPEND_STEP) - first)) + 2
        grid_x = (first[:, None] + np.arange(points)[None, :]) * SPEND_STEP
        # the (x, n) rows of the component table: n = 1 .. the most any pair of x needs
        e_pair = dist.pair[positive]
        e_n = dist.n[positive].astype(np.intp)
        most = np.zeros(x_values.size, dtype=np.intp)
        np.maximum.at(most, x_code[e_pair], e_n)
        offset = np.concatenate([[0], np.cumsum(most)[:-1]])
        comp_x = np.repeat(np.arange(x_values.size), most)
        comp_n = np.arange(comp_x.size) - offset[comp_x] + 1.0
        components = special.betainc(
            (p * comp_n)[:, None], shape_a[comp_x][:, None], special.expit(grid_x[comp_x])
        )
        e_comp = offset[x_code[e_pair]] + e_n - 1
        # each pair's table: its count probabilities times the components, one sparse product
        mixing = sparse.csr_matrix(
            (dist.pmf[positive], (e_pair, e_comp)), shape=(pairs, comp_x.size)
        )
        table = np.asarray(mixing @ components)
        grid = grid_x[x_code]
        zero_alive = dist.pmf[dist.start]  # P(no purchase | alive)
        table = zero_alive[:, None] + np.maximum.accumulate(table, axis=1)  # monotone
        # the quantile is read linearly in probit(H), where H is close to a straight line
        table = special.ndtri(np.clip(table, 1e-15, 1.0 - 1e-15))
        row_pair = dist.row_pair
        # probits lie in (-8, 8): pairs 20 apart in one sorted key
        keys = (np.arange(pairs, dtype=np.float64)[:, None] * 20.0 + table).ravel()
        out = []
        for level in levels:
            with np.errstate(divide="ignore", invalid="ignore"):
                target = (level - (1.0 - p_alive)) / p_alive
            solve = target > zero_alive[row_pair] + 1e-12
            target = special.ndtri(np.clip(np.where(solve, target, 0.5), 1e-15, 1.0 - 1e-15))
            flat = _search_sorted(keys, row_pair * 20.0 + target, order)
            cell = np.clip(flat - row_pair * points, 1, points - 1)
            c0, c1 = table[row_pair, cell - 1], table[row_pair, cell]
            share = np.clip((target - c0) / np.where(c1 > c0, c1 - c0, 1.0), 0.0, 1.0)
            g0, g1 = grid[row_pair, cell - 1], grid[row_pair, cell]
            out.append(np.where(solve, np.exp(g0 + share * (g1 - g0)), 0.0))
        return out

    # -- public predictions ------------------------------------------------------------
    def p_alive(self, data: Any) -> pd.Series:
        """P(alive at the observation end | history), per customer, in [0, 1]."""
        c = self._customers(data)
        r = c.rows
        return c.expand(np.clip(self._p_alive(r.x, r.recency, r.T), 0.0, 1.0), "p_alive")

    def expected_purchases(
        self,
        data: Any,
        t: Duration,
        *,
        interval: float | None = None,
        confidence: float | None = None,
    ) -> pd.Series | pd.DataFrame:
        """Expected number of purchases in the ``t`` after the observation end,
        conditional on each customer's history.

        ``t`` is a number in the data's unit or a duration ("90D", "13W", "1Y").
        With ``interval`` (e.g. 0.9) or ``confidence``, a DataFrame with
        ``expected_purchases`` and:

        - ``low``, ``high`` (``interval``): the range of what the customer may do, the
          central ``interval`` of the model's distribution of their purchase count
          (whole numbers; P(low <= X <= high) >= ``interval``);
        - ``mean_low``, ``mean_high`` (``confidence``): the uncertainty of the
          expectation itself from the fit's standard errors (delta method, log
          scale); narrow on large data, and not a range for the customer.
        """
        c = self._customers(data)
        horizon = self._duration(t, "t")
        p_alive = np.clip(self._rows_p_alive(c.rows, None), 0.0, 1.0)
        value = self._conditional_expected(c.rows, np.array([horizon]), p_alive)[:, 0]
        series = c.expand(value, "expected_purchases")
        if interval is None and confidence is None:
            return series
        out = {"expected_purchases": series}
        if interval is not None:
            tail = _tail(interval)
            dist = self._count_distribution(c.rows, horizon)
            out["low"] = c.expand(self._count_quantile(dist, p_alive, tail), "low")
            out["high"] = c.expand(self._count_quantile(dist, p_alive, 1.0 - tail), "high")
        if confidence is not None:
            z = z_score(confidence)
            sd = self._delta_log_sd(
                lambda m: m._conditional_expected(c.rows, np.array([horizon]))[:, 0],  # type: ignore[attr-defined]
                value,
            )
            out["mean_low"] = c.expand(value * np.exp(-z * sd), "mean_low")
            out["mean_high"] = c.expand(value * np.exp(z * sd), "mean_high")
        return pd.DataFrame(out)

    def expected_repeat_purchases(self, t: Any) -> NDArray[np.float64]:
        """Expected repeat purchases in the ``t`` after a new customer's first purchase,
        E[X(t)], for a customer drawn at random: the curve a tracking plot sums over
        cohorts (the prediction given no repeat purchase yet and no time since the first).

        ``t``: a duration ("39W", "90D"), or a number or array of numbers in the fit's
        time unit (vectorised). Returns an array shaped like ``t``.
        """
        self._require_fitted()
        if isinstance(t, str | dt.timedelta | pd.Timedelta):
            times = np.asarray(self._duration(t, "t"), dtype=np.float64)
        else:
            times = np.asarray(t, dtype=np.float64)
        if not np.all(np.isfinite(times)) or np.any(times < 0):
            raise ArgumentError("t must be finite times of 0 or more")
        rows, _ = collapse_rows(np.zeros(1), np.zeros(1), np.zeros(1))
        flat = times.reshape(-1)
        value = self._conditional_expected(rows, flat)[0] if flat.size else flat
        return np.asarray(value, dtype=np.float64).reshape(times.shape)

    def probability_of_purchases(self, data: Any, n: int, t: Duration) -> pd.Series:
        """P(exactly ``n`` purchases in the ``t`` after the observation end | history).

        ``t`` is a number in the data's unit or a duration ("90D", "13W", "1Y").
        """
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise ArgumentError(f"n must be a whole number of purchases >= 0, got {n!r}")
        c = self._customers(data)
        horizon = self._duration(t, "t")
        r = c.rows
        p_alive = self._p_alive(r.x, r.recency, r.T)
        px, pT, code = self._pairs(r)
        if horizon == 0:
            alive = np.full(px.size, 1.0 if n == 0 else 0.0)
        else:
            alive = self._pmf_alive(int(n), horizon, px, pT)
        value = p_alive * alive[code] + (1.0 - p_alive) * (1.0 if n == 0 else 0.0)
        return c.expand(np.clip(value, 0.0, 1.0), "probability")

    def clv(
        self,
        data: Any,
        *,
        gamma_gamma: Any,
        horizon: Duration = "12M",
        discount_rate: float = 0.0,
        margin: float = 1.0,
        interval: float | None = None,
        confidence: float | None = None,
    ) -> pd.Series | pd.DataFrame:
        """Expected discounted value of each customer's purchases over ``horizon``.

        CLV = margin x expected spend per purchase (``gamma_gamma``, a fitted
        :class:`~retain.models.GammaGamma`, needs the ``monetary`` column) x the
        expected purchases in (observation end, + horizon], each discounted
        continuously to the observation end at ``discount_rate`` per year:
        a purchase s years out counts ``(1 + discount_rate) ** -s``. ``horizon``
        is a number in the data's unit or a duration ("12M", "52W", "365D");
        money is in the currency of ``monetary``. The rate is per year whatever
        the data's unit, so daily and weekly data give the same CLV.

        With ``interval`` (e.g. 0.9) or ``confidence``, a DataFrame with ``clv`` and:

        - ``low``, ``high`` (``interval``): the range of the customer's value over
          the horizon: the central ``interval`` of the distribution of their total
          spend, from the model's count distribution and the Gamma-Gamma spend
          distribution given their history (exact, no simulation). With a discount
          rate, both ends are scaled by the customer's ratio of discounted to
          undiscounted expected purchases.
        - ``mean_low``, ``mean_high`` (``confidence``): the uncertainty of the
          expected value from both models' standard errors (delta method, log scale).
        """
        _check_money(discount_rate, margin)
        if not hasattr(gamma_gamma, "_expected_spend_arrays"):
            raise TypeError("gamma_gamma must be a fitted retain.models.GammaGamma")
        frame = self.score(
            data,
            gamma_gamma=gamma_gamma,
            horizons=(),
            clv_horizon=horizon,
            discount_rate=discount_rate,
            margin=margin,
            interval=interval,
            confidence=confidence,
            next_horizon=None,
        )
        series = frame["clv"].rename("clv")
        if interval is None and confidence is None:
            return series
        names = {"clv_low": "low", "clv_high": "high"}
        names.update({"clv_mean_low": "mean_low", "clv_mean_high": "mean_high"})
        return frame[["clv", *(k for k in names if k in frame)]].rename(columns=names)

    def next_purchase(
        self, data: Any, quantile: float = 0.5, *, horizon: Duration = "365D"
    ) -> pd.DataFrame:
        """When each customer's next purchase is expected, with probability ``quantile``.

        The time after the observation end (in the data's unit) by which the
        next purchase has happened with probability ``quantile``, given the
        history: the quantile of the conditional time to the next purchase,
        which mixes "already gone" (never buys again) with the posterior of the
        customer's purchase rate (and, Pareto/NBD, dropout rate) if alive.

        Returns a DataFrame with ``next_purchase`` (float, data's unit) and
        ``within_horizon`` (bool). Where the model does not expect the next
        purchase within ``horizon`` with that probability (P(alive) too low, or
        too slow a buyer), ``within_horizon`` is False and ``next_purchase``
        holds the horizon itself: never NaN or infinite. ``horizon`` is a number
        in the data's unit or a duration ("365D", "52W", "1Y").
        """
        if not 0 < quantile < 1:
            raise ArgumentError(f"quantile must be between 0 and 1, got {quantile!r}")
        c = self._customers(data)
        h = self._duration(horizon, "horizon")
        time, within = self._next_rows(c.rows, quantile, h)
        return pd.DataFrame(
            {
                "next_purchase": c.expand(time, "next_purchase"),
                "within_horizon": c.expand(within, "within_horizon"),
            }
        )

    def purchase_window(
        self,
        data: Any,
        *,
        horizon: Duration = "365D",
        low: float = 0.25,
        high: float = 0.75,
    ) -> pd.DataFrame:
        """The window in which each customer's next purchase is expected: from the
        ``low`` to the ``high`` quantile (default 25th-75th percentile) of the time
        to the next purchase, in the data's unit after the observation end.

        Columns ``window_start``, ``window_end`` (floats, capped at ``horizon``)
        and ``start_within_horizon``, ``end_within_horizon`` (bool); see
        :meth:`next_purchase` for the cap.
        """
        if not 0 < low < high < 1:
            raise ArgumentError(f"need 0 < low < high < 1, got low={low!r}, high={high!r}")
        c = self._customers(data)
        h = self._duration(horizon, "horizon")
        start, start_ok = self._next_rows(c.rows, low, h)
        end, end_ok = self._next_rows(c.rows, high, h)
        return pd.DataFrame(
            {
                "window_start": c.expand(start, "window_start"),
                "window_end": c.expand(end, "window_end"),
                "start_within_horizon": c.expand(start_ok, "start_within_horizon"),
                "end_within_horizon": c.expand(end_ok, "end_within_horizon"),
            }
        )

    def score(
        self,
        data: Any,
        *,
        gamma_gamma: Any = None,
        horizons: tuple[Duration, ...] = ("30D", "90D", "365D"),
        clv_horizon: Duration = "12M",
        discount_rate: float = 0.0,
        margin: float = 1.0,
        interval: float | None = 0.9,
        confidence: float | None = None,
        next_horizon: Duration | None = "365D",
    ) -> pd.DataFrame:
        """Every prediction for every customer in one pass (one collapse of the data,
        P(alive) computed once): what ``retain score`` stores.

        Columns: ``p_alive``; ``expected_purchases_<h>`` for each of ``horizons``
        (label: the duration as given, lower case, e.g. ``expected_purchases_30d``);
        with ``interval``, ``purchases_<h>_low`` and ``purchases_<h>_high`` for the
        last of ``horizons``: the range of the customer's purchase count (see
        :meth:`expected_purchases`). With ``gamma_gamma``, ``expected_spend``,
        ``clv``, ``clv_if_alive`` (the value if the customer is still a customer:
        ``clv = p_alive x clv_if_alive``); with ``interval``, ``clv_low`` and
        ``clv_high``, the range of the customer's value; with ``confidence``,
        ``clv_mean_low`` and ``clv_mean_high``, the uncertainty of the expected value
        (see :meth:`clv`; money in the currency of ``monetary``, discount rate per
        year). Unless ``next_horizon`` is None: ``next_purchase``,
        ``next_purchase_within``, ``window_start``, ``window_end``,
        ``window_start_within``, ``window_end_within`` (see :meth:`next_purchase`
        and :meth:`purchase_window`; times in the data's unit after the observation
        end, capped at ``next_horizon``).
        """
        _check_money(discount_rate, margin)  # the argument errors before the data's
        if interval is not None:
            _tail(interval)
        c = self._customers(data)
        out = self._score_arrays(
            c,
            gamma_gamma=gamma_gamma,
            horizons=horizons,
            clv_horizon=clv_horizon,
            discount_rate=discount_rate,
            margin=margin,
            interval=interval,
            confidence=confidence,
            next_horizon=next_horizon,
        )
        return pd.DataFrame(out, index=c.frame.index)

    def _score_arrays(
        self,
        c: _Customers,
        *,
        gamma_gamma: Any,
        horizons: tuple[Duration, ...],
        clv_horizon: Duration,
        discount_rate: float,
        margin: float,
        interval: float | None,
        confidence: float | None,
        next_horizon: Duration | None,
    ) -> dict[str, NDArray[Any]]:
        """The columns of :meth:`score` as arrays in the customers' order (``retain score``
        writes them without a frame in between)."""
        _check_money(discount_rate, margin)
        tail = None if interval is None else _tail(interval)
        rows = c.rows
        p_alive = np.clip(self._rows_p_alive(rows, None), 0.0, 1.0)
        out: dict[str, NDArray[Any]] = {"p_alive": p_alive[c.inverse]}
        times = np.array([self._duration(h, "horizon") for h in horizons])
        label = ""
        if horizons:
            expected = self._conditional_expected(rows, times, p_alive)
            for j, h in enumerate(horizons):
                label = str(h).replace(" ", "").lower()
                out[f"expected_purchases_{label}"] = expected[c.inverse, j]
        # the quantiles' searches of the rows' targets, all in one order
        order = None if tail is None else _search_order(self._pairs(rows)[2], p_alive)
        if tail is not None and horizons:
            dist = self._count_distribution(rows, float(times[-1]))
            for end, level in (("low", tail), ("high", 1.0 - tail)):
                quantile = self._count_quantile(dist, p_alive, level, order)
                out[f"purchases_{label}_{end}"] = quantile[c.inverse]
        if gamma_gamma is not None:
            spend, spend_sd = gamma_gamma._expected_spend_arrays(c.frame, confidence is not None)
            h = self._duration(clv_horizon, "clv_horizon")
            delta = np.log1p(discount_rate) * self._unit_days / DAYS_PER_YEAR
            if_alive = self._discounted_alive_rows(rows, h, delta)
            det = p_alive * if_alive
            value = margin * spend * det[c.inverse]
            out["expected_spend"] = spend
            out["clv"] = value
            out["clv_if_alive"] = margin * spend * if_alive[c.inverse]
            if tail is not None:
                spend_params = tuple(gamma_gamma.params_[k] for k in ("p", "q", "gamma"))
                dist = self._count_distribution(rows, h)
                v_low, v_high = self._spend_quantiles(
                    dist, p_alive, spend_params, (tail, 1.0 - tail), order
                )
                # the posterior rate scale of each customer's spend: gamma + x m
                x = c.frame["frequency"].to_numpy(dtype=np.float64)
                m = np.maximum(c.frame["monetary"].to_numpy(dtype=np.float64), 0.0)
                scale = margin * (spend_params[2] + np.where(x > 0, x * m, 0.0))
                if delta > 0:
                    plain = self._discounted_alive_rows(rows, h, 0.0)
                    with np.errstate(divide="ignore", invalid="ignore"):
                        factor = np.where(plain > 0, if_alive / plain, 1.0)[c.inverse]
                else:
                    factor = np.ones(x.size)
                out["clv_low"] = factor * scale * v_low[c.inverse]
                out["clv_high"] = factor * scale * v_high[c.inverse]
            if confidence is not None:
                z = z_score(confidence)
                det_sd = self._delta_log_sd(
                    lambda m: m._discounted_expected(rows, h, delta),  # type: ignore[attr-defined]
                    det,
                )
                sd = np.sqrt(det_sd[c.inverse] ** 2 + spend_sd**2)
                out["clv_mean_low"] = value * np.exp(-z * sd)
                out["clv_mean_high"] = value * np.exp(z * sd)
        if next_horizon is not None:
            cap = self._duration(next_horizon, "next_horizon")
            for name, q in (("next_purchase", 0.5), ("window_start", 0.25), ("window_end", 0.75)):
                time, within = self._next_rows(rows, q, cap, p_alive)
                out[name] = time[c.inverse]
                out[f"{name}_within"] = within[c.inverse]
        return out


def _search_sorted(
    keys: Array, values: NDArray[np.floating[Any]], order: NDArray[np.intp] | None = None
) -> NDArray[np.intp]:
    """``np.searchsorted(keys, values)`` (side left), the values searched in their sorted
    order (or in ``order``, a permutation close to it: the result is the same in any
    order): each search then starts near where the last ended, which for hundreds of
    thousands of values over a table of millions is several times faster than in the
    rows' order."""
    if order is None:
        order = np.argsort(values)
    found = np.empty(values.size, dtype=np.intp)
    found[order] = np.searchsorted(keys, values[order])
    return found


def _search_order(row_pair: NDArray[np.intp], p_alive: Array) -> NDArray[np.intp]:
    """The rows by pair, then P(alive): the order of the values that the quantile searches
    look up (a row's target level rises with its P(alive)), sorted once for all of them."""
    return np.argsort(row_pair * 2.0 + np.clip(p_alive, 0.0, 1.0))


def _check_money(discount_rate: float, margin: float) -> None:
    if not np.isfinite(discount_rate) or discount_rate < 0:
        raise ArgumentError(f"discount_rate (per year) must be 0 or more, got {discount_rate!r}")
    if not np.isfinite(margin) or margin < 0:
        raise ArgumentError(f"margin must be a fraction >= 0, got {margin!r}")


def _tail(interval: float) -> float:
    """The probability below a central ``interval``'s low end."""
    if not 0 < interval < 1:
        raise ArgumentError(f"interval must be a probability between 0 and 1, got {interval!r}")
    return (1.0 - interval) / 2.0
