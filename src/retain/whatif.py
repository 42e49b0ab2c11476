"""The what-if planner: what the kept models project for the coming months, and the same
under a scenario of levers.

The levers act from the observation day on; each is a relative change (-0.2 = 20% lower):

- ``purchase_rate_change``: customers buy that much more (or less) often while active;
- ``dropout_change``: the chance of dropping out that much higher or lower (BG/NBD and
  MBG/NBD: after each purchase; Pareto/NBD: per unit of time);
- ``spend_change``: each order's value that much higher or lower.

What a customer did before stays as it is (their chance to be active now, the spend their
orders show), and each model's own projection of the future is rescaled exactly:

- BG/NBD and MBG/NBD: purchases at a rate ``c`` times as high, each followed by dropout
  with a chance ``d`` times as high, are the base future with its clock run ``c d`` times
  as fast and ``1/d`` as many purchases: ``E'[Y(t)] = E[Y(c d t)] / d`` (for each rate and
  dropout chance, ``(1 - exp(-c lam d p t)) / (d p)``). A dropout raised past 1 for a
  customer whose chance is near 1 is outside the model; below that it is exact.
- Pareto/NBD: a purchase rate ``c`` times and a dropout rate ``d`` times as high give
  ``E'[Y(t)] = (c / d) E[Y(d t)]`` (for each rate, ``c lam (1 - exp(-d mu t)) / (d mu)``).

Discounted value follows the same way (:meth:`Planner.project`): the base's discounted
purchases over the stretched horizon at the rescaled discount rate. With no lever moved
the scenario is the base, and the base's value over 12 months is the sum of ``retain
score``'s 12-month CLV: the same model, customers, margin and discount rate.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from retain.errors import ArgumentError, ModelError
from retain.models.base import DAYS_PER_YEAR
from retain.store import Store

DAYS_PER_MONTH = DAYS_PER_YEAR / 12
MAX_MONTHS = 120
LEVERS = ("dropout_change", "purchase_rate_change", "spend_change")
LOWEST_CHANGE = -0.99
HIGHEST_CHANGE = 10.0
CLOCK_MODELS = ("bgnbd", "mbgnbd")
"""Models whose dropout comes with a purchase: a rate change runs their clock faster."""
RATE_MODELS = ("pnbd",)


@dataclass(frozen=True)
class Scenario:
    """Relative changes from the observation day on (-0.2: 20% lower); 0 leaves a lever."""

    dropout_change: float = 0.0
    purchase_rate_change: float = 0.0
    spend_change: float = 0.0

    def __post_init__(self) -> None:
        for name in LEVERS:
            value = getattr(self, name)
            if not (isinstance(value, int | float) and LOWEST_CHANGE <= value <= HIGHEST_CHANGE):
                raise ArgumentError(
                    f"{name.replace('_', '-')} must be a relative change from "
                    f"{LOWEST_CHANGE} to {HIGHEST_CHANGE:g} (-0.2 = 20% lower), got {value!r}"
                )

    def to_dict(self) -> dict[str, float]:
        return {name: float(getattr(self, name)) for name in LEVERS}


@dataclass
class Planner:
    """The kept fit's customers, grouped by what its projection depends on (their purchase
    count and time observed): prepared once by :func:`planner`, each :meth:`project` is
    then a pass over the groups, not over the customers."""

    model: Any
    fit_id: int
    as_of: dt.date
    margin: float
    discount_rate: float
    customers: int
    x: np.ndarray
    T: np.ndarray
    buyers: np.ndarray
    """Per group: the customers' summed chance to be active now (purchases' weight)."""
    spenders: np.ndarray
    """Per group: the summed chance to be active times the expected spend per order."""
    has_spend: bool

    def project(self, scenario: Scenario | None = None, months: int = 12) -> dict[str, Any]:
        """Revenue and purchases month by month over ``months`` (of 365.25/12 days) from the
        end of the observation day (``month_ends``: the day each ends on), their totals, and ``value``: the revenue discounted at the fit's
        rate per year and times its margin (the CLV of every customer over the months)."""
        scenario = scenario or Scenario()
        if not isinstance(months, int) or isinstance(months, bool) or not 1 <= months <= MAX_MONTHS:
            raise ArgumentError(
                f"months must be a whole number from 1 to {MAX_MONTHS}, got {months!r}"
            )
        model = self.model
        unit_days = float(model._unit_days)
        c = 1.0 + scenario.purchase_rate_change
        d = 1.0 + scenario.dropout_change
        if model.name in CLOCK_MODELS:
            speed, scale = c * d, 1.0 / d
        else:
            speed, scale = d, c / d
        ends = np.arange(months + 1) * DAYS_PER_MONTH / unit_days
        delta = np.log1p(self.discount_rate) * unit_days / DAYS_PER_YEAR
        horizon = float(ends[-1])

        def part(rows: slice) -> tuple[np.ndarray, float]:
            """Revenue (before the spend lever) and purchases by month, and the discounted
            spend, of some of the groups."""
            x, T = self.x[rows], self.T[rows]
            cumulative = model._expected_alive(x[:, None], T[:, None], speed * ends[None, :])
            per_month = scale * np.diff(cumulative, axis=1)
            discounted = scale * model._discounted_alive(x, T, speed * horizon, delta / speed)
            by_month = np.stack([self.spenders[rows] @ per_month, self.buyers[rows] @ per_month])
            return by_month, float(self.spenders[rows] @ discounted)

        # the groups in halves, side by side: the series' arithmetic lets the other run
        half = len(self.x) // 2
        first, second = _pool().map(part, [slice(0, half), slice(half, None)])
        spend = 1.0 + scenario.spend_change
        revenue, purchases = spend * (first[0][0] + second[0][0]), first[0][1] + second[0][1]
        value = self.margin * spend * (first[1] + second[1])
        return {
            # the day each month ends on: it starts at the end of the observation day
            "month_ends": [
                (self.as_of + dt.timedelta(days=math.ceil(m * DAYS_PER_MONTH))).isoformat()
                for m in range(1, months + 1)
            ],
            "revenue": [round(float(v), 2) for v in revenue],
            "purchases": [round(float(v), 2) for v in purchases],
            "revenue_total": round(float(revenue.sum()), 2),
            "purchases_total": round(float(purchases.sum()), 2),
            "value": round(value, 2) if self.has_spend else None,
        }


@functools.cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(2, thread_name_prefix="whatif")


def planner(store: Store) -> Planner:
    """The :class:`Planner` of the store's last ``retain score``: its fit, observation day,
    margin and discount rate, and its customers' summaries."""
    from retain.scoring import _summary, load_fit, load_score_basis

    basis = load_score_basis(store)
    model, spend, row = load_fit(store, basis.fit_id)
    if model.name not in CLOCK_MODELS + RATE_MODELS:
        raise ModelError(
            f"the what-if planner projects BG/NBD, MBG/NBD and Pareto/NBD fits; fit "
            f"{basis.fit_id} is {model.name}"
        )
    as_of = dt.date.fromisoformat(basis.as_of)
    summary = _summary(store, as_of, row, None)
    if summary is None or summary.empty:
        raise ModelError(f"no customer ordered by {as_of}: nothing to project")
    customers = model._customers(summary)
    rows = customers.rows
    p_alive = np.clip(model._rows_p_alive(rows, None), 0.0, 1.0)
    x, T, code = model._pairs(rows)
    # the rows' weights summed by pair: the customers each row stands for
    counts = np.bincount(customers.inverse, minlength=len(p_alive)).astype(np.float64)
    buyers = np.bincount(code, weights=p_alive * counts, minlength=len(x))
    spenders: np.ndarray = np.zeros(len(x))
    if spend is not None:
        per_customer, _ = spend._expected_spend_arrays(customers.frame, False)
        alive_by_customer = p_alive[customers.inverse]
        spenders = np.bincount(
            code[customers.inverse], weights=alive_by_customer * per_customer, minlength=len(x)
        )
    return Planner(
        model=model,
        fit_id=basis.fit_id,
        as_of=as_of,
        margin=basis.margin,
        discount_rate=basis.discount_rate,
        customers=len(summary),
        x=np.asarray(x, dtype=np.float64),
        T=np.asarray(T, dtype=np.float64),
        buyers=buyers,
        spenders=spenders,
        has_spend=spend is not None,
    )


def whatif(store: Store, scenario: Scenario | None = None, months: int = 12) -> dict[str, Any]:
    """``base`` and ``scenario`` projections (:meth:`Planner.project`) of the store's last
    ``retain score``, and the scenario's change against the base."""
    return report(planner(store), scenario, months)


def report(plan: Planner, scenario: Scenario | None = None, months: int = 12) -> dict[str, Any]:
    """:func:`whatif` from a prepared :class:`Planner`."""
    scenario = scenario or Scenario()
    base = plan.project(Scenario(), months)
    moved = plan.project(scenario, months)
    change = {
        key: {
            "amount": round(moved[key] - base[key], 2),
            "relative": None if not base[key] else round(moved[key] / base[key] - 1.0, 6),
        }
        for key in ("revenue_total", "purchases_total", "value")
        if base[key] is not None and moved[key] is not None
    }
    return {
        "model": plan.model.name,
        "fit_id": plan.fit_id,
        "as_of": plan.as_of.isoformat(),
        "customers": plan.customers,
        "margin": plan.margin,
        "discount_rate": plan.discount_rate,
        "levers": scenario.to_dict(),
        "base": base,
        "scenario": moved,
        "change": change,
    }
