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
  dropout chance, ``(1 - exp(-c lam d p t)) / (d p)``). A chance ``d p`` past 1 is outside
  the model, so a raised dropout is refused beyond the change that takes more than
  :data:`OUTSIDE_SHARE` of the active customers there (:attr:`Planner.highest_dropout_change`:
  an active customer's ``p`` is Beta(a, b + x), x the repeat purchases, +1 for MBG/NBD).
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
import numbers
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
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
OUTSIDE_SHARE = 0.01
"""The share of the active customers (weighted by their chance to be active) a raised
dropout may take to a chance to leave past 1 (BG/NBD, MBG/NBD) before it is refused."""
ORDER_FORMATS = ("orders", "shopify", "cdnow")
ACTIVE_POINTS_PER_DECADE = 24
"""Points a decade of time on which the active customers' curve is computed."""
HIGHEST_COST = 1e9
"""The most a campaign may cost per customer reached (the ingest's largest amount)."""


@dataclass(frozen=True)
class Scenario:
    """Relative changes from the observation day on (-0.2: 20% lower); 0 leaves a lever."""

    dropout_change: float = 0.0
    purchase_rate_change: float = 0.0
    spend_change: float = 0.0

    def __post_init__(self) -> None:
        for name in LEVERS:
            value = getattr(self, name)
            number = isinstance(value, numbers.Real) and not isinstance(value, bool)
            if not (number and LOWEST_CHANGE <= float(value) <= HIGHEST_CHANGE):
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
    highest_dropout_change: float = HIGHEST_CHANGE
    """The largest dropout change inside the model (see :data:`OUTSIDE_SHARE`)."""
    notes: list[str] = field(default_factory=list)
    """What differs between the store now and its last ``retain score``."""
    _bases: dict[int, tuple[Any, ...]] = field(default_factory=dict, repr=False, compare=False)
    _active_points: dict[int, float] = field(default_factory=dict, repr=False, compare=False)

    def _active(self, times: np.ndarray) -> np.ndarray:
        """The customers expected active at ``times`` (model units, > 0) from now: every
        group's chance to be active now times its chance to be still active then
        (:meth:`TransactionModel._still_alive`). A lever only runs the clock faster or
        slower, so the sum over the groups is one curve of time: computed at points
        :data:`ACTIVE_POINTS_PER_DECADE` to a decade of time (kept: the next scenario
        reuses them, and computes only the points its times reach anew), and read between
        them by monotone cubic interpolation in log-time."""
        from scipy.interpolate import PchipInterpolator

        per = ACTIVE_POINTS_PER_DECADE
        logs = np.log10(times)
        low, high = int(np.floor(logs.min() * per)) - 2, int(np.ceil(logs.max() * per)) + 2
        points = list(range(low, high + 1))
        missing = [p for p in points if p not in self._active_points]
        if missing:
            grid = 10.0 ** (np.array(missing, dtype=np.float64) / per)

            def part(rows: slice) -> np.ndarray:
                alive = self.model._still_alive(
                    self.x[rows, None], self.T[rows, None], grid[None, :]
                )
                return np.asarray(self.buyers[rows] @ alive)

            half = len(self.x) // 2
            first, second = _pool().map(part, [slice(0, half), slice(half, None)])
            self._active_points.update(zip(missing, (first + second).tolist(), strict=True))
        values = np.array([self._active_points[p] for p in points])
        curve = PchipInterpolator(np.array(points) / per * np.log(10.0), values)
        return np.asarray(curve(logs * np.log(10.0)), dtype=np.float64)

    def limits(self) -> dict[str, list[float]]:
        """Each lever's lowest and highest change for this fit."""
        return {
            name: [
                LOWEST_CHANGE,
                self.highest_dropout_change if name == "dropout_change" else HIGHEST_CHANGE,
            ]
            for name in LEVERS
        }

    def project(self, scenario: Scenario | None = None, months: int = 12) -> dict[str, Any]:
        """Revenue and purchases month by month over ``months`` (of 365.25/12 days) from
        the end of the observation day (``month_ends``: the day each ends on), their
        totals, and ``value``: the revenue discounted at the fit's rate per year and times
        its margin (the CLV of every customer over the months); ``active_now`` and
        ``active``, the customers expected active now and at each month's end (the sum of
        each one's chance to be active, then: :meth:`TransactionModel._still_alive`).
        Without a spend model (no Gamma-Gamma fit) revenue and value are None: purchases
        only."""
        return _rounded(self, self._totals(scenario or Scenario(), months), months)

    def _totals(self, scenario: Scenario, months: Any) -> tuple[Any, ...]:
        """Revenue (None without a spend model) and purchases by month, the value (None
        without one) and the customers expected active at each month's end, unrounded;
        the base's kept per horizon."""
        if (
            not isinstance(months, numbers.Integral)
            or isinstance(months, bool)
            or not 1 <= int(months) <= MAX_MONTHS
        ):
            raise ArgumentError(
                f"months must be a whole number from 1 to {MAX_MONTHS}, got {months!r}"
            )
        months = int(months)
        if scenario.dropout_change > self.highest_dropout_change:
            raise ArgumentError(
                f"dropout-change {scenario.dropout_change:+g} is more than the {self.model.name} "
                f"fit can say: it would take over {OUTSIDE_SHARE:.0%} of the active customers "
                f"past a chance of 1 to leave after a purchase; at most "
                f"{self.highest_dropout_change:+g} for this store"
            )
        base = scenario == Scenario()
        if base and months in self._bases:
            return self._bases[months]
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
            by_month = np.stack([self.spenders[rows] @ per_month, self.buyers[rows] @ per_month])
            if not self.has_spend:
                return by_month, 0.0
            discounted = scale * model._discounted_alive(x, T, speed * horizon, delta / speed)
            return by_month, float(self.spenders[rows] @ discounted)

        # the groups in halves, side by side: the series' arithmetic lets the other run
        half = len(self.x) // 2
        first, second = _pool().map(part, [slice(0, half), slice(half, None)])
        spend = 1.0 + scenario.spend_change
        purchases = first[0][1] + second[0][1]
        active = self._active(speed * ends[1:])
        revenue = value = None
        if self.has_spend:
            revenue = spend * (first[0][0] + second[0][0])
            value = self.margin * spend * (first[1] + second[1])
        totals = (revenue, purchases, value, active)
        if base:
            self._bases[months] = totals
        return totals


def _rounded(plan: Planner, totals: tuple[Any, ...], months: int) -> dict[str, Any]:
    revenue, purchases, value, active = totals
    return {
        # the day each month ends on: it starts at the end of the observation day
        "month_ends": [
            (plan.as_of + dt.timedelta(days=math.ceil(m * DAYS_PER_MONTH))).isoformat()
            for m in range(1, int(months) + 1)
        ],
        "revenue": None if revenue is None else [round(float(v), 2) for v in revenue],
        "purchases": [round(float(v), 2) for v in purchases],
        "revenue_total": None if revenue is None else round(float(revenue.sum()), 2),
        "purchases_total": round(float(purchases.sum()), 2),
        "value": None if value is None else round(float(value), 2),
        # the customers expected active now and at each month's end
        "active_now": round(float(plan.buyers.sum()), 2),
        "active": [round(float(v), 2) for v in active],
        "active_at_end": round(float(active[-1]), 2),
    }


def _highest_dropout_change(model: Any, x: np.ndarray, buyers: np.ndarray) -> float:
    """The largest dropout change (to 0.01) that takes at most :data:`OUTSIDE_SHARE` of
    the active customers to a chance past 1 of leaving: an active customer's chance is
    Beta(a, b + x (+1 for MBG/NBD)), and ``P(d p > 1) = I_(1 - 1/d)(b + x, a)``."""
    if model.name not in CLOCK_MODELS or buyers.sum() <= 0:
        return HIGHEST_CHANGE
    from scipy import special

    values, code = np.unique(x, return_inverse=True)
    weight = np.bincount(code, weights=buyers) / buyers.sum()
    a, beta = model.params_["a"], model.params_["b"] + values + model._offset

    def outside(change: float) -> float:
        return float(weight @ special.betainc(beta, a, 1.0 - 1.0 / (1.0 + change)))

    if outside(HIGHEST_CHANGE) <= OUTSIDE_SHARE:
        return HIGHEST_CHANGE
    low, high = 0.0, HIGHEST_CHANGE
    while high - low > 1e-4:
        middle = (low + high) / 2
        low, high = (middle, high) if outside(middle) <= OUTSIDE_SHARE else (low, middle)
    return math.floor(low * 100) / 100


@functools.cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(2, thread_name_prefix="whatif")


@dataclass
class _Customers:
    """What a planner is built from that no parameter changes: the fit, the scoring's
    settings, the customers' distinct rows and their (purchases, time) pairs."""

    model: Any
    spend: Any
    fit_id: int
    as_of: dt.date
    margin: float
    discount_rate: float
    customers: int
    collapsed: Any
    code: np.ndarray
    counts: np.ndarray
    x: np.ndarray
    T: np.ndarray


def _customers(store: Store) -> _Customers:
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
    collapsed = model._customers(summary)
    x, T, code = model._pairs(collapsed.rows)
    # the rows' weights summed by pair: the customers each row stands for
    counts = np.bincount(collapsed.inverse, minlength=len(collapsed.rows.x)).astype(np.float64)
    return _Customers(
        model=model,
        spend=spend,
        fit_id=basis.fit_id,
        as_of=as_of,
        margin=basis.margin,
        discount_rate=basis.discount_rate,
        customers=len(summary),
        collapsed=collapsed,
        code=code,
        counts=counts,
        x=np.asarray(x, dtype=np.float64),
        T=np.asarray(T, dtype=np.float64),
    )


def _plan(known: _Customers, model: Any, spend: Any, notes: list[str]) -> Planner:
    """The planner of these customers under ``model`` and ``spend`` (the kept fit's, or a
    draw of their parameters)."""
    rows, inverse = known.collapsed.rows, known.collapsed.inverse
    p_alive = np.clip(model._rows_p_alive(rows, None), 0.0, 1.0)
    buyers = np.bincount(known.code, weights=p_alive * known.counts, minlength=len(known.x))
    spenders: np.ndarray = np.zeros(len(known.x))
    if spend is not None:
        per_customer, _ = spend._expected_spend_arrays(known.collapsed.frame, False)
        spenders = np.bincount(
            known.code[inverse], weights=p_alive[inverse] * per_customer, minlength=len(known.x)
        )
    return Planner(
        model=model,
        fit_id=known.fit_id,
        as_of=known.as_of,
        margin=known.margin,
        discount_rate=known.discount_rate,
        customers=known.customers,
        x=known.x,
        T=known.T,
        buyers=buyers,
        spenders=spenders,
        has_spend=spend is not None,
        highest_dropout_change=_highest_dropout_change(model, known.x, buyers),
        notes=notes,
    )


def planner(store: Store) -> Planner:
    """The :class:`Planner` of the store's last ``retain score``: its fit, observation day,
    margin and discount rate, and its customers' summaries."""
    known = _customers(store)
    return _plan(
        known, known.model, known.spend, _since_scoring(store, known.as_of, known.customers)
    )


MAX_DRAWS = 1000
"""The most draws of the parameters an interval takes (each costs about one preparation)."""
PROCESS_RUNS = 20
"""Simulations of every customer's future that measure the spread of their own chance."""


def _process_spread(
    known: _Customers,
    scenario: Scenario,
    months: int,
    rng: np.random.Generator,
    point: Planner | None = None,
) -> tuple[dict[str, float], dict[str, float]]:
    """The mean and the standard deviation, over :data:`PROCESS_RUNS` simulations of every
    customer at the fitted parameters and under ``scenario``, of the totals of purchases,
    revenue and value over ``months`` and of the active customers at the end.

    Each customer is active now with their chance; then (BG/NBD, MBG/NBD) their rate and
    dropout chance are drawn from the posterior their history gives (Gamma(r+x, alpha+T),
    Beta(a, b+x), b+x+1 for MBG/NBD), the purchases of the months are Poisson at the rate
    times the lever, each ending the customer with the chance times its lever; (Pareto/NBD)
    the rate as before and the dropout rate from Gamma(s, beta+T) times its lever, the
    lifetime exponential. Spend per purchase: Gamma(p, nu) with nu from Gamma(q+px,
    gamma+mx), times the spend lever. The value's spread is the revenue's in proportion
    to the value (the discounting within the months aside), read from ``point``, the
    planner at the fitted parameters (built here when not given)."""
    model, spend = known.model, known.spend
    rows, inverse = known.collapsed.rows, known.collapsed.inverse
    p_alive = np.clip(model._rows_p_alive(rows, None), 0.0, 1.0)[inverse]
    x, T = rows.x[inverse], rows.T[inverse]
    t = months * DAYS_PER_MONTH / float(model._unit_days)
    c, d = 1.0 + scenario.purchase_rate_change, 1.0 + scenario.dropout_change
    params = model.params_
    r, alpha = params["r"], params["alpha"]
    monetary = None
    if spend is not None:
        monetary = known.collapsed.frame["monetary"].to_numpy(dtype=np.float64)
        sp, sq, sg = (spend.params_[k] for k in ("p", "q", "gamma"))
    runs: dict[str, list[float]] = {"purchases_total": [], "revenue_total": [], "active_at_end": []}
    for _ in range(PROCESS_RUNS):
        alive = rng.random(x.size) < p_alive
        rate = c * rng.gamma(r + x, 1.0 / (alpha + T))
        if model.name in CLOCK_MODELS:
            offset = 1.0 if model.name == "mbgnbd" else 0.0
            chance = np.clip(d * rng.beta(params["a"], params["b"] + x + offset), 1e-300, 1.0)
            bought = rng.poisson(rate * t)
            last = rng.geometric(chance)  # the purchase that ends it
            count = np.where(alive, np.minimum(bought, last), 0)
            still = alive & (bought < last)
        else:
            lifetime = rng.exponential(
                1.0 / (d * rng.gamma(params["s"], 1.0 / (params["beta"] + T)))
            )
            count = np.where(alive, rng.poisson(rate * np.minimum(lifetime, t)), 0)
            still = alive & (lifetime > t)
        runs["purchases_total"].append(float(count.sum()))
        runs["active_at_end"].append(float(still.sum()))
        if monetary is not None:
            nu = rng.gamma(sp * x + sq, 1.0 / (sg + monetary * x))
            paid = np.where(count > 0, rng.gamma(np.maximum(sp * count, 1e-12), 1.0 / nu), 0.0)
            runs["revenue_total"].append(float((1.0 + scenario.spend_change) * paid.sum()))
    means = {k: float(np.mean(v)) for k, v in runs.items() if v}
    out = {k: float(np.std(v, ddof=1)) for k, v in runs.items() if v}
    if "revenue_total" in out:
        point = point or _plan(known, model, spend, [])
        projected = point._totals(scenario, months)
        revenue, value = float(np.sum(projected[0])), float(projected[2])
        out["value"] = out["revenue_total"] * (value / revenue if revenue > 0 else 0.0)
    return means, out


def intervals(
    store: Store,
    scenario: Scenario | None = None,
    months: int = 12,
    *,
    draws: int = 100,
    level: float = 0.9,
    seed: int = 0,
) -> dict[str, Any]:
    """How sure the projection is, as ``level`` intervals of what will be seen.

    Two parts, added: the kept fit's parameters drawn ``draws`` times from their estimated
    uncertainty (normal in the log-parameters, with the covariance of the fit; the spend
    model's likewise), the base and the scenario projected under each draw; and the
    customers' own chance, the spread of the totals that :data:`PROCESS_RUNS` simulations
    of every customer's future give at the fitted parameters (:func:`_process_spread`;
    the value's, the revenue's in proportion). ``change`` is of the parameters alone: the
    same customers' own chance falls on both sides. Each draw prepares the customers anew:
    about the preparation's time a draw."""
    if not isinstance(draws, numbers.Integral) or not 10 <= int(draws) <= MAX_DRAWS:
        raise ArgumentError(
            f"the draws for intervals must be a whole number from 10 to {MAX_DRAWS:,}, "
            f"got {draws!r}"
        )
    if not 0 < level < 1:
        raise ArgumentError(f"level must be between 0 and 1, got {level!r}")
    scenario = scenario or Scenario()
    known = _customers(store)
    # a stream for each part: the base's own chance is the same whatever the scenario
    draw_rng, base_rng, scenario_rng, base_noise, scenario_noise = (
        np.random.default_rng(stream) for stream in np.random.SeedSequence(seed).spawn(5)
    )
    notes: list[str] = []

    def sampler(fitted: Any, required: bool) -> Any:
        if fitted is None:
            return lambda: None
        cov = fitted._cov_log
        if cov is None:
            why = f"the {fitted.name} fit has no standard errors (its curvature could not be inverted)"
            if required:
                raise ModelError(f"no interval: {why}")
            notes.append(f"{why}: its parameters are held as fitted")
            return lambda: fitted
        theta = fitted._theta
        return lambda: fitted._with_theta(draw_rng.multivariate_normal(theta, cov))

    draw_model, draw_spend = sampler(known.model, True), sampler(known.spend, False)
    point = _plan(known, known.model, known.spend, [])  # the fitted parameters' planner
    spread = {
        side: _process_spread(known, lever, months, stream, point)[1]
        for side, lever, stream in (
            ("base", Scenario(), base_rng),
            ("scenario", scenario, scenario_rng),
        )
    }
    keys = ("revenue_total", "purchases_total", "value", "active_at_end")
    sides: dict[str, dict[str, list[float]]] = {
        side: {k: [] for k in keys} for side in ("base", "scenario", "change")
    }
    for _ in range(int(draws)):
        plan = _plan(known, draw_model(), draw_spend(), [])
        if scenario.dropout_change > plan.highest_dropout_change:
            continue  # this draw's model cannot say; the interval is of those that can
        totals = {
            "base": plan._totals(Scenario(), months),
            "scenario": plan._totals(scenario, months),
        }
        for side, (revenue, purchases, value, active) in totals.items():
            found = {
                "revenue_total": None if revenue is None else float(np.sum(revenue)),
                "purchases_total": float(np.sum(purchases)),
                "value": None if value is None else float(value),
                "active_at_end": float(active[-1]),
            }
            for k, v in found.items():
                if v is not None:
                    sides[side][k].append(v)
        for k in keys:
            if len(sides["base"][k]) == len(sides["scenario"][k]) and sides["base"][k]:
                sides["change"][k].append(sides["scenario"][k][-1] - sides["base"][k][-1])
    # the customers' own chance, on each side's totals
    for side, noise_rng in (("base", base_noise), ("scenario", scenario_noise)):
        for k, values in sides[side].items():
            if values and spread[side].get(k):
                noise = noise_rng.normal(0.0, spread[side][k], size=len(values))
                sides[side][k] = list(np.asarray(values) + noise)
    low, high = (1 - level) / 2, (1 + level) / 2
    used = len(sides["base"]["purchases_total"])
    return {
        "draws": int(draws),
        "used": used,
        "level": level,
        "notes": notes,
        "own_chance_sd": {
            side: {k: round(v, 2) for k, v in values.items()} for side, values in spread.items()
        },
        **{
            side: {
                k: [round(float(np.quantile(v, low)), 2), round(float(np.quantile(v, high)), 2)]
                for k, v in values.items()
                if v
            }
            for side, values in sides.items()
        },
    }


def _since_scoring(store: Store, as_of: dt.date, customers: int) -> list[str]:
    """What the projection leaves out or takes differently from the scores: orders after
    the observation day, customers rescored since, orders files ingested since."""
    after, rescored, scored, ingested = store.con.execute(
        "SELECT (SELECT count(*) FROM orders WHERE ordered_at >= ?), "
        "(SELECT count(*) FROM customer_scores WHERE as_of <> ?), "
        "(SELECT customers FROM score_basis LIMIT 1), "
        "(SELECT count(*) FROM ingested_files WHERE format IN "
        f"({', '.join('?' * len(ORDER_FORMATS))}) "
        "AND ingested_at > (SELECT scored_at FROM score_basis LIMIT 1))",
        [dt.datetime.combine(as_of + dt.timedelta(days=1), dt.time()), as_of, *ORDER_FORMATS],
    ).fetchall()[0]
    notes = []
    if after:
        notes.append(
            f"{after:,} orders after {as_of}, the observation day of the last `retain score`, "
            "are not in the projection: `retain score` on a later day takes them in"
        )
    if rescored:
        notes.append(
            f"{rescored:,} customers were rescored on a later day since (orders through the "
            "service): the sum of the scores' 12-month CLV is not the base's value"
        )
    if ingested or (scored is not None and scored != customers):
        notes.append(
            f"orders were ingested since the last `retain score` ({customers:,} customers "
            f"ordered by {as_of} now, {scored or 0:,} then): the projection takes the orders "
            f"up to {as_of} as they are now, the scores as they were; `retain score` again "
            "to make them agree"
        )
    return notes


@dataclass(frozen=True)
class Campaign:
    """A retention campaign: ``reach``, the share of the customers it reaches (at random
    among them); ``cost_per_customer``, what reaching one costs; ``dropout_change``, its
    effect on those reached (-0.1: their chance to drop out 10% lower; measured by an
    experiment, ``retain experiments report``, or assumed)."""

    reach: float
    cost_per_customer: float
    dropout_change: float

    def __post_init__(self) -> None:
        if not (isinstance(self.reach, numbers.Real) and 0 < float(self.reach) <= 1):
            raise ArgumentError(
                f"campaign reach must be a share above 0 and at most 1, got {self.reach!r}"
            )
        cost = self.cost_per_customer
        if not (isinstance(cost, numbers.Real) and 0 <= cost <= HIGHEST_COST):
            raise ArgumentError(
                f"campaign cost per customer must be from 0 to {HIGHEST_COST:,.0f}, got {cost!r}"
            )
        Scenario(dropout_change=self.dropout_change)  # the lever's own bounds


def campaign(plan: Planner, offer: Campaign, months: int = 12) -> dict[str, Any]:
    """What ``offer`` is worth over ``months``: the value it adds (its reach times the value
    of every customer's dropout moved by its effect, less the base's: customers are
    independent, so the reached share adds that share of it), its cost, the net and the
    return on the cost, and the break-even: the most reaching one customer may cost for
    the campaign to pay for itself. ``customers_retained``: the customers active at the
    horizon's end who would have gone without it; ``value_per_retained_customer``, the
    value added per one of them (customers kept a while who left before the end add value
    too: an upper guide to what keeping one to the end may cost). Needs a
    spend model (value in money)."""
    base_totals = plan._totals(Scenario(), months)
    moved_totals = plan._totals(Scenario(dropout_change=offer.dropout_change), months)
    base, moved = base_totals[2], moved_totals[2]
    if base is None or moved is None:
        raise ModelError(
            "a campaign's worth is in money, and the kept fit has no spend model: refit with "
            "orders that carry their net revenue"
        )
    reached = offer.reach * plan.customers
    added = offer.reach * (float(moved) - float(base))
    cost = reached * offer.cost_per_customer
    per_customer = (float(moved) - float(base)) / plan.customers if plan.customers else 0.0
    # the customers still active at the horizon who would have gone without it
    retained = offer.reach * (float(moved_totals[3][-1]) - float(base_totals[3][-1]))
    return {
        "reach": offer.reach,
        "customers_reached": round(reached, 2),
        "cost_per_customer": offer.cost_per_customer,
        "dropout_change": offer.dropout_change,
        "months": months,
        "value_added": round(added, 2),
        "cost": round(cost, 2),
        "net": round(added - cost, 2),
        "return_on_cost": None if cost == 0 else round((added - cost) / cost, 4),
        "break_even_cost_per_customer": round(per_customer, 4),
        "customers_retained": round(retained, 2),
        "value_per_retained_customer": None if retained <= 0 else round(added / retained, 2),
        "pays": added > cost,
    }


def acquisition(answer: dict[str, Any], table: Any) -> dict[str, Any]:
    """The largest affordable cost of acquiring a customer, by channel: what a customer
    the channel brought has been worth in margin over their first months, as many as the
    projection's (:func:`retain.metrics.clv_cac` with that horizon), beside what one cost
    (CAC, from the marketing spend); and the same times the scenario's relative change of
    value, an estimate for customers who would meet the scenario's levers. Without
    marketing spend, ``channels`` is empty and ``note`` says why. ``table``: that CLV:CAC
    table (:func:`acquisition_table`, which the levers do not change) for ``answer``'s
    months."""
    months = len(answer["base"]["month_ends"])
    change = (answer["change"].get("value") or {}).get("relative")
    channels = []
    for row in table.to_dict(orient="records"):
        worth = row["clv"]
        known = worth is not None and np.isfinite(worth)
        cac = row["cac"] if row["cac"] is not None and np.isfinite(row["cac"]) else None
        channels.append(
            {
                "channel": row["channel"],
                "new_customers": int(row["new_customers"]),
                "cac": None if cac is None else round(float(cac), 2),
                "largest_affordable_cac": round(float(worth), 2) if known else None,
                "headroom": round(float(worth) - cac, 2) if known and cac is not None else None,
                "largest_affordable_cac_in_scenario": round(float(worth) * (1 + change), 2)
                if known and change is not None
                else None,
            }
        )
    note = str(table.attrs.get("note") or "")
    return {"months": months, "channels": channels, "note": note}


def acquisition_table(store: Store, margin: float, months: int, as_of: str) -> Any:
    """:func:`retain.metrics.clv_cac` over the customers' first ``months`` months."""
    from retain.metrics import clv_cac

    return clv_cac(store, margin=margin, horizon_months=months, as_of=as_of)


def _check_share(share: Any) -> None:
    if not (isinstance(share, numbers.Real) and 0 < float(share) <= 1):
        raise ArgumentError(f"subscription share must be above 0 and at most 1, got {share!r}")


def subscriptions(found: dict[str, Any], share: float) -> dict[str, Any]:
    """What converting ``share`` of the subscription candidates ``found``
    (:func:`retain.subscriptions.candidates`, every row: the customers who buy a product
    at a regular rhythm, each with the gain of subscribing) is worth over 12 months:
    offered to every candidate, a share of each accepts, those who would be worth less as
    subscribers too; offered only to those who gain, the share of their gains."""
    _check_share(share)
    gains = np.array([r["gain"] for r in found["rows"]], dtype=np.float64)
    return {
        "share": float(share),
        "months": 12,
        "candidates": found["candidates"],
        "gaining": found["gaining"],
        "retention": found["retention"],
        "discount": found["discount"],
        "added_if_offered_to_all": round(float(share * gains.sum()), 2),
        "added_if_offered_to_those_who_gain": round(float(share * gains[gains > 0].sum()), 2),
    }


def whatif(
    store: Store,
    scenario: Scenario | None = None,
    months: int = 12,
    offer: Campaign | None = None,
    draws: int = 0,
    subscription_share: float | None = None,
    subscription_retention: float | None = None,
) -> dict[str, Any]:
    """``base`` and ``scenario`` projections (:meth:`Planner.project`) of the store's last
    ``retain score``, the scenario's change against the base, the largest affordable
    acquisition cost by channel (:func:`acquisition`), with ``offer`` what a retention
    campaign is worth (:func:`campaign`), with ``draws`` the 90% intervals of the totals
    (:func:`intervals`), and with ``subscription_share`` what converting that share of the
    subscription candidates is worth (:func:`subscriptions`)."""
    plan = planner(store)
    answer = report(plan, scenario, months)
    horizon = len(answer["base"]["month_ends"])  # months, as a plain whole number
    answer["acquisition"] = acquisition(
        answer, acquisition_table(store, plan.margin, horizon, plan.as_of.isoformat())
    )
    if offer is not None:
        answer["campaign"] = campaign(plan, offer, months)
    if draws:
        try:
            answer["intervals"] = intervals(store, scenario, months, draws=draws)
        except ModelError as exc:  # the projection stands; why there is no interval
            answer["intervals"] = {"problem": str(exc)}
    if subscription_share is not None:
        from retain.subscriptions import candidates

        _check_share(subscription_share)  # before the candidates are listed
        found = candidates(store, retention=subscription_retention, limit=None)
        answer["subscriptions"] = subscriptions(found, subscription_share)
    return answer


def report(plan: Planner, scenario: Scenario | None = None, months: int = 12) -> dict[str, Any]:
    """:func:`whatif` from a prepared :class:`Planner`."""
    scenario = scenario or Scenario()
    base_totals = plan._totals(Scenario(), months)
    moved_totals = plan._totals(scenario, months)
    base = _rounded(plan, base_totals, months)
    moved = _rounded(plan, moved_totals, months)
    change = {}
    for key, index in (
        ("revenue_total", 0),
        ("purchases_total", 1),
        ("value", 2),
        ("active_at_end", 3),
    ):
        was, now = base_totals[index], moved_totals[index]
        if was is None or now is None:
            continue
        if key == "active_at_end":
            was, now = float(was[-1]), float(now[-1])
        else:
            was, now = float(np.sum(was)), float(np.sum(now))
        change[key] = {
            "amount": round(now - was, 2),
            "relative": None if was <= 0 else round(now / was - 1.0, 6),
        }
    return {
        "model": plan.model.name,
        "fit_id": plan.fit_id,
        "as_of": plan.as_of.isoformat(),
        "customers": plan.customers,
        "margin": plan.margin,
        "discount_rate": plan.discount_rate,
        "levers": scenario.to_dict(),
        "limits": plan.limits(),
        "notes": plan.notes,
        "base": base,
        "scenario": moved,
        "change": change,
    }
