"""Subscriptions: recurring revenue, its movements, retention by cohort, and what a
subscriber is worth under the shifted-beta-geometric model (sBG, Fader & Hardie 2007) or
its generalisation with duration dependence, the beta-discrete-Weibull (BdW, Fader,
Hardie, Liu, Davin & Steenburgh 2018).

From the ``subscriptions`` table (:mod:`retain.ingest.subscriptions`):

- **MRR** at each month's end: every subscription paying then, at ``price x quantity``
  spread over the months its interval spans (a year's price / 12, a week's x 365.25/84).
  A subscription pays from its start, or the end of its free trial, until it is
  cancelled. The last month is measured at the observation day.
- **Movements**, per customer from one month's end to the next: *new* (a customer's
  first recurring revenue), *reactivated* (back after a month at 0), *expansion* and
  *contraction* (more or less, above 0), *churned* (to 0). Each month's MRR is the
  previous month's plus its movements. A subscription that starts and ends within one
  month is in no month's end.
- **Retention by start cohort** (the month a customer's recurring revenue began):
  logo retention, the share of the cohort's customers still paying k months on, and
  revenue retention, their MRR against the cohort's first month's.
- **Survival** of each plan's subscriptions (plan, interval and count): per start
  month, how many are still active after each billing period, as far as every
  subscription of that month has been observed. The sBG and the BdW are fitted per
  plan on all its cohorts together, and the BdW kept when its duration dependence is
  significant (a likelihood-ratio test at 5%; the reason is in ``fit["choice"]``);
  ``tracking`` fits the kept model again on the first two thirds of the periods and
  sets its projection beside what happened in the rest.
- **Value** of each active subscriber: margin x price per period x the discounted
  expected residual lifetime (DERL) of a subscription that has renewed as often as
  theirs, the next payment counted in full
  (:meth:`ShiftedBetaGeometric.expected_residual_lifetime`, the BdW's by its sum).
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any, cast

import numpy as np
import pandas as pd

from retain.errors import ArgumentError, ModelError, StoreError
from retain.store import Store

MONTHS_PER = {"day": 12 / 365.25, "week": 7 * 12 / 365.25, "month": 1.0, "year": 12.0}
"""Months one billing interval spans."""
TRACKING_SHARE = 2 / 3
"""The share of a plan's periods the tracking fit sees."""
MIN_SUBSCRIPTIONS = 20
"""A plan's retention is estimated from this many subscriptions that completed a period."""
ALIKE = 0.1
"""Subscribers are alike when the spread of their chances to cancel (the Beta's standard
deviation) is below this share of its mean."""
FLAT = 1e-5
"""A fit's largest slope (mean log-likelihood per log-parameter) below which it is at its
maximum, converged or not."""
LIKELIHOOD_RATIO_5PCT = 3.841
"""The 5% point of a chi-square with 1 degree of freedom: the BdW's c is kept beyond it."""


def recurring_value(price: float, periods: float, discount_rate: float = 0.0) -> float:
    """What ``periods`` payments of ``price`` are worth, the first in full and each later
    one discounted by ``discount_rate`` per period: 20 a month for 30 months is 600."""
    if not (math.isfinite(price) and math.isfinite(periods) and periods >= 0):
        raise ArgumentError(f"price and periods must be finite, periods >= 0: {price}, {periods}")
    if not math.isfinite(discount_rate) or discount_rate < 0:
        raise ArgumentError(f"discount_rate must be 0 or more, got {discount_rate!r}")
    whole = math.floor(periods)
    if discount_rate == 0:
        return price * periods
    z = 1.0 / (1.0 + discount_rate)
    return price * ((1 - z**whole) / (1 - z) + (periods - whole) * z**whole)


def _as_of(store: Store, as_of: str | dt.date | None) -> dt.date:
    if (
        not store.has_table("subscriptions")
        or not store.con.execute("SELECT count(*) FROM subscriptions").fetchall()[0][0]
    ):
        raise StoreError(
            f"the store {store.path} holds no subscriptions: ingest a subscriptions file "
            "(retain ingest FILE --format subscriptions, or Stripe's export: --format stripe)"
        )
    from retain import config

    # the one rule of every command (config.observation_day) where the store has orders;
    # a store of subscriptions alone: the day given, else its setting, else today
    if store.con.execute("SELECT count(*) FROM orders").fetchall()[0][0]:
        return config.observation_day(store, as_of)
    chosen = config.load_settings(store).as_of if as_of is None else as_of
    if chosen is None or (isinstance(chosen, str) and chosen.strip().lower() == config.LIVE):
        return config.today(store)
    if isinstance(chosen, dt.date) and not isinstance(chosen, dt.datetime):
        return chosen
    return config.parse_as_of(chosen).date()


# each subscription's monthly amount, the instant it starts paying and when it stops
_SUBS_SQL = """
SELECT subscription_id, customer_id, coalesce(plan, '(no plan)') AS plan, billing_interval,
       CAST(interval_count AS BIGINT) AS interval_count, price * quantity AS charge,
       price * quantity / (interval_count * CASE billing_interval {months} END) AS mrr,
       greatest(started_at, coalesce(trial_ends_at, started_at)) AS paying_from,
       cancelled_at
FROM subscriptions
WHERE started_at < $cutoff
""".format(months=" ".join(f"WHEN '{k}' THEN {v!r}" for k, v in MONTHS_PER.items()))


# subscriptions of one customer to one plan chained into spells: one that starts while
# an earlier one is open or within a day of its end (a change of seats or price)
# continues it
_SPELLS_SQL = f"""
WITH subs AS ({_SUBS_SQL}),
earlier AS (
    SELECT *, max(cancelled_at) OVER w AS earlier_end,
           coalesce(bool_or(cancelled_at IS NULL) OVER w, false) AS earlier_open
    FROM subs
    WINDOW w AS (PARTITION BY customer_id, plan, billing_interval, interval_count
                 ORDER BY paying_from, subscription_id
                 ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)),
ordered AS (
    -- a spell goes on while an earlier subscription is open or ended a day or less ago
    SELECT *, CASE WHEN earlier_open OR paying_from <= earlier_end + INTERVAL 1 DAY
                   THEN 0 ELSE 1 END AS fresh
    FROM earlier),
chained AS (
    SELECT *, sum(fresh) OVER (PARTITION BY customer_id, plan, billing_interval, interval_count
                               ORDER BY paying_from, subscription_id
                               ROWS UNBOUNDED PRECEDING) AS spell
    FROM ordered)
SELECT customer_id, plan, billing_interval, interval_count, min(paying_from) AS paying_from,
       CASE WHEN bool_or(cancelled_at IS NULL) THEN NULL ELSE max(cancelled_at) END
           AS cancelled_at,
       arg_max(charge, paying_from) AS charge
FROM chained
GROUP BY customer_id, plan, billing_interval, interval_count, spell
"""


def _month_ends(store: Store, as_of: dt.date) -> list[dt.datetime]:
    """The instants each month is measured at: the first moment of the next month, the
    last the end of the observation day."""
    first = store.con.execute(
        f"SELECT min(paying_from) FROM ({_SUBS_SQL})", {"cutoff": _cutoff(as_of)}
    ).fetchall()[0][0]
    if first is None:
        raise StoreError(f"no subscription started by {as_of}")
    year, month = first.year, first.month
    ends = []
    while (year, month) < (as_of.year, as_of.month):
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        ends.append(dt.datetime(year, month, 1))
    ends.append(_cutoff(as_of))
    return ends


def _cutoff(as_of: dt.date) -> dt.datetime:
    return dt.datetime.combine(as_of + dt.timedelta(days=1), dt.time())


def _customer_months(store: Store, as_of: dt.date) -> tuple[pd.DataFrame, list[dt.datetime]]:
    """Each customer's MRR at each month's end from their first paying month to the month
    after their last (0 where they paid nothing), with the movement it makes."""
    ends = _month_ends(store, as_of)
    frame = store.con.execute(
        f"""
        WITH subs AS ({_SUBS_SQL}),
        months AS (SELECT unnest($ends) AS snap, generate_subscripts($ends, 1) - 1 AS idx),
        paying AS (
            SELECT m.idx, s.customer_id, sum(s.mrr) AS mrr
            FROM months m JOIN subs s
              ON s.paying_from < m.snap AND (s.cancelled_at IS NULL OR s.cancelled_at >= m.snap)
            GROUP BY ALL HAVING sum(s.mrr) > 0),
        bounds AS (SELECT customer_id, min(idx) AS lo, max(idx) AS hi FROM paying GROUP BY ALL),
        grid AS (
            SELECT customer_id, lo, unnest(range(lo, least(hi + 2, $months))) AS idx
            FROM bounds),
        filled AS (
            SELECT g.customer_id, g.lo, g.idx, round(coalesce(p.mrr, 0), 9) AS mrr
            FROM grid g LEFT JOIN paying p USING (customer_id, idx)),
        lagged AS (
            SELECT *, lag(mrr, 1, 0) OVER w AS prev,
                   coalesce(max(mrr > 0) OVER (w ROWS BETWEEN UNBOUNDED PRECEDING AND
                                                1 PRECEDING), false) AS had
            FROM filled WINDOW w AS (PARTITION BY customer_id ORDER BY idx))
        SELECT customer_id, lo AS cohort, idx, mrr, prev,
               CASE WHEN mrr > 0 AND prev = 0 AND NOT had THEN 'new'
                    WHEN mrr > 0 AND prev = 0 THEN 'reactivated'
                    WHEN prev > 0 AND mrr = 0 THEN 'churned'
                    WHEN prev > 0 AND mrr > prev THEN 'expansion'
                    WHEN prev > 0 AND mrr < prev THEN 'contraction'
               END AS movement
        FROM lagged
        """,
        {"cutoff": _cutoff(as_of), "ends": ends, "months": len(ends)},
    ).df()
    return frame, ends


MOVEMENTS = ("new", "reactivated", "expansion", "contraction", "churned")


def _label(ends: list[dt.datetime], idx: int) -> str:
    """The month measured at ``ends[idx]``: YYYY-MM."""
    end = ends[idx] - dt.timedelta(microseconds=1)
    return f"{end.year:04d}-{end.month:02d}"


def mrr_movements(store: Store, as_of: str | dt.date | None = None) -> pd.DataFrame:
    """Per month: ``mrr`` at its end, paying ``customers``, the MRR each movement brought
    (``new``, ``reactivated``, ``expansion`` positive; ``contraction``, ``churned``
    negative), ``new_customers`` and ``churned_customers``, and ``arpa`` (MRR per paying
    customer). ``mrr`` is the previous month's plus the movements."""
    day = _as_of(store, as_of)
    return _movements(*_customer_months(store, day), day)


def _movements(frame: pd.DataFrame, ends: list[dt.datetime], day: dt.date) -> pd.DataFrame:
    months = pd.RangeIndex(len(ends), name="idx")
    frame = frame.assign(change=frame["mrr"] - frame["prev"], paying=frame["mrr"] > 0)
    by_month = frame.groupby("idx")
    moved = frame.pivot_table(
        index="idx", columns="movement", values="change", aggfunc=["sum", "count"]
    )
    result = pd.DataFrame(
        {
            "month": [_label(ends, idx) for idx in months],
            "mrr": by_month["mrr"].sum().reindex(months, fill_value=0.0),
            "customers": by_month["paying"].sum().reindex(months, fill_value=0),
        }
    )
    for name in MOVEMENTS:
        column = ("sum", name)
        result[name] = moved[column].reindex(months) if column in moved else np.nan
    for name in ("new", "churned"):
        column = ("count", name)
        result[f"{name}_customers"] = moved[column].reindex(months) if column in moved else 0
    result = result.fillna(0.0).astype(
        {"customers": "int64", "new_customers": "int64", "churned_customers": "int64"}
    )
    result["mrr"] = result["mrr"].astype("float64")
    result["arpa"] = [
        m / c if c else None for m, c in zip(result["mrr"], result["customers"], strict=True)
    ]
    result.attrs["as_of"] = day.isoformat()
    return result


def _pooled(cohorts: pd.DataFrame, ages: tuple[int, ...] = (1, 3, 6, 12)) -> list[dict[str, Any]]:
    """Logo and revenue retention ``age`` months on, of every cohort measured that long
    taken together (their customers and first months' MRR summed)."""
    if cohorts.empty:
        return []
    first = cohorts[cohorts["age"] == 0].set_index("cohort")
    pooled = []
    for age in ages:
        at = cohorts[cohorts["age"] == age]
        size, base = (
            first.loc[at["cohort"], "customers"].sum(),
            first.loc[at["cohort"], "mrr"].sum(),
        )
        if len(at) and size and base:
            pooled.append(
                {
                    "age": age,
                    "cohorts": len(at),
                    "logo_retention": float(at["customers"].sum() / size),
                    "revenue_retention": float(at["mrr"].sum() / base),
                }
            )
    return pooled


def cohort_retention(store: Store, as_of: str | dt.date | None = None) -> pd.DataFrame:
    """Per start cohort (the month a customer's recurring revenue began) and months since
    (``age``, 0 the cohort's month): ``customers`` still paying, ``logo_retention`` (of
    the cohort's customers), ``mrr`` and ``revenue_retention`` (of the cohort's first
    month's MRR: above 1 when expansion outweighs churn)."""
    day = _as_of(store, as_of)
    return _cohorts(*_customer_months(store, day), day)


COHORT_COLUMNS = ["cohort", "age", "customers", "logo_retention", "mrr", "revenue_retention"]


def _cohorts(frame: pd.DataFrame, ends: list[dt.datetime], day: dt.date) -> pd.DataFrame:
    frame = frame[frame["idx"] < len(ends)]
    if frame.empty:  # no customer paid at any month's end
        empty = pd.DataFrame(columns=COHORT_COLUMNS)
        empty.attrs["as_of"] = day.isoformat()
        return empty
    frame = frame.assign(age=frame["idx"] - frame["cohort"], paying=frame["mrr"] > 0)
    table = frame.groupby(["cohort", "age"]).agg(customers=("paying", "sum"), mrr=("mrr", "sum"))
    table = table.reset_index()
    first = table[table["age"] == 0].set_index("cohort")
    table["logo_retention"] = table["customers"] / table["cohort"].map(first["customers"])
    table["revenue_retention"] = table["mrr"] / table["cohort"].map(first["mrr"])
    # the whole of each cohort's ages up to the last month measured, 0 where none pay
    full = []
    for key, part in table.groupby("cohort"):
        cohort: Any = key
        ages = pd.DataFrame({"age": np.arange(len(ends) - int(cohort))})
        merged = ages.merge(part, on="age", how="left")
        merged["cohort"] = cohort
        for column in ("customers", "mrr", "logo_retention", "revenue_retention"):
            merged[column] = merged[column].fillna(0.0)
        full.append(merged)
    result = pd.concat(full, ignore_index=True)
    result["customers"] = result["customers"].astype("int64")
    result["cohort"] = [_label(ends, int(c)) for c in result["cohort"]]
    result.attrs["as_of"] = day.isoformat()
    return result[COHORT_COLUMNS]


# whole billing periods between two days: calendar months for month and year plans (a
# 31st to the last day of a shorter month is a whole month), days for day and week
_PERIODS_SQL = """
CASE WHEN {interval} IN ('month', 'year') THEN
    (date_diff('month', {a}, {b}) - CASE WHEN day({b}) < day({a}) AND {b} <> last_day({b})
                                         THEN 1 ELSE 0 END)
    // (interval_count * CASE WHEN {interval} = 'year' THEN 12 ELSE 1 END)
ELSE date_diff('day', {a}, {b})
    // (interval_count * CASE WHEN {interval} = 'week' THEN 7 ELSE 1 END)
END
"""


def _periods(a: str, b: str) -> str:
    return _PERIODS_SQL.format(interval="billing_interval", a=a, b=b)


def survival(store: Store, as_of: str | dt.date | None = None) -> pd.DataFrame:
    """Per plan (``plan``, ``billing_interval``, ``interval_count``) and start month
    (``cohort``): ``period`` 0, 1, ... and ``active``, how many of the cohort's
    subscriptions were still active at that period's start (``period`` renewals), as far
    as every one of them has been observed; ``price`` is the plan's median charge per
    period."""
    day = _as_of(store, as_of)
    frame = store.con.execute(
        f"""
        WITH spells AS ({_SPELLS_SQL}),
        lived AS (
            SELECT plan, billing_interval, interval_count,
                   median(charge) OVER (PARTITION BY plan, billing_interval, interval_count)
                       AS plan_charge,
                   strftime(paying_from, '%Y-%m') AS cohort,
                   {_periods("CAST(paying_from AS DATE)", "$day")} AS observable,
                   CASE WHEN cancelled_at IS NULL OR cancelled_at >= $cutoff THEN NULL
                        ELSE greatest({
            _periods(
                "CAST(paying_from AS DATE)",
                "CAST(cancelled_at - INTERVAL 1 DAY AS DATE)",
            )
        }, 0) END AS renewals
            FROM spells
            WHERE paying_from < $cutoff AND (cancelled_at IS NULL OR cancelled_at > paying_from)),
        cohorts AS (
            SELECT plan, billing_interval, interval_count, cohort, min(observable) AS tau,
                   list(renewals) AS renewals, count(*) AS size, any_value(plan_charge) AS price
            FROM lived GROUP BY ALL)
        SELECT plan, billing_interval, interval_count, cohort, size, price, tau, renewals
        FROM cohorts ORDER BY plan, billing_interval, interval_count, cohort
        """,
        {"cutoff": _cutoff(day), "day": day},
    ).fetchall()
    rows = []
    for plan, interval, count, cohort, size, price, tau, renewals in frame:
        ended = np.array([r for r in renewals if r is not None], dtype=np.int64)
        for period in range(int(tau) + 1):
            active = int(size) - int((ended < period).sum())
            rows.append((plan, interval, int(count), cohort, period, active, float(price)))
    result = pd.DataFrame(
        rows,
        columns=[
            "plan",
            "billing_interval",
            "interval_count",
            "cohort",
            "period",
            "active",
            "price",
        ],
    )
    result.attrs["as_of"] = day.isoformat()
    return result


def _series(table: pd.DataFrame, cut: int | None = None) -> list[list[float]]:
    """Each cohort's active counts by period (up to ``cut``)."""
    out = []
    for _, part in table.groupby("cohort"):
        counts = part.sort_values("period")["active"].to_numpy(dtype=np.float64)
        if cut is not None:
            counts = counts[: cut + 1]
        if counts.size >= 2:
            out.append(counts.tolist())
    return out


def _period_years(interval: str, count: int) -> float:
    return MONTHS_PER[interval] * count / 12.0


def report(
    store: Store,
    *,
    as_of: str | dt.date | None = None,
    margin: float | None = None,
    discount_rate: float | None = None,
) -> dict[str, Any]:
    """The subscriptions in one answer: ``mrr`` (month by month, with movements),
    ``cohorts`` (retention by start month), and ``plans``: per plan its retention model
    (sBG or BdW) fitted on the survival table, projected survival, ``tracking`` against a
    holdout of its later periods, and the value of its active subscribers (margin and
    ``discount_rate`` a year: the store's settings unless given; each one's in
    :func:`subscribers`). A plan with too few subscriptions, no cancellation or a fit that
    does not converge is not fitted, and says so."""
    day, margin, discount_rate = _valuation(store, as_of, margin, discount_rate)
    months, ends = _customer_months(store, day)
    movements = _movements(months, ends, day)
    cohorts = _cohorts(months, ends, day)
    plans, _ = _plans(store, day, margin, discount_rate)
    last = movements.iloc[-1]
    return {
        "as_of": day.isoformat(),
        "margin": margin,
        "discount_rate": discount_rate,
        "mrr_now": float(last["mrr"]),
        "paying_customers": int(last["customers"]),
        "mrr": movements.to_dict(orient="records"),
        "cohorts": cohorts.to_dict(orient="records"),
        "retention": _pooled(cohorts),
        "plans": plans,
    }


def subscribers(
    store: Store,
    *,
    as_of: str | dt.date | None = None,
    margin: float | None = None,
    discount_rate: float | None = None,
    limit: int | None = 100,
) -> pd.DataFrame:
    """Each active subscriber's value, most first (``limit`` of them; None: all): the
    customer, plan, interval and count, charge, ``paying_since``, ``renewals`` so far,
    ``payments_to_come`` (the discounted expected residual lifetime of their plan's model,
    or the payments left before an end already known: ``end_known``), ``value`` (margin x
    charge x payments to come) and the ``model`` that valued them; the same figures whose
    sums per plan :func:`report` gives. Subscribers of a plan that is not fitted have no
    value and are not listed."""
    if limit is not None and limit < 1:
        raise ArgumentError(f"the rows to show must be 1 or more, got {limit!r}")
    day, margin, discount_rate = _valuation(store, as_of, margin, discount_rate)
    _, valued = _plans(store, day, margin, discount_rate)
    valued = valued.sort_values(["value", "customer_id"], ascending=[False, True])
    valued = valued if limit is None else valued.head(limit)
    return valued.reset_index(drop=True)


def _valuation(
    store: Store, as_of: str | dt.date | None, margin: float | None, discount_rate: float | None
) -> tuple[dt.date, float, float]:
    """The observation day, margin and yearly discount rate a valuation uses."""
    from retain.config import resolve_discount_rate, resolve_margin

    day = _as_of(store, as_of)
    margin = resolve_margin(store, margin)
    discount_rate = resolve_discount_rate(store, discount_rate)
    if discount_rate <= 0:
        raise ArgumentError(
            "a subscriber's value needs a discount rate above 0 a year (undiscounted, the "
            "sBG lifetime can be endless): give --discount-rate or set discount_rate"
        )
    return day, margin, discount_rate


_VALUED_COLUMNS = [
    "customer_id", "plan", "billing_interval", "interval_count", "charge", "paying_since",
    "renewals", "payments_to_come", "end_known", "value", "model",
]  # fmt: skip


def _plans(
    store: Store, day: dt.date, margin: float, discount_rate: float
) -> tuple[list[dict[str, Any]], pd.DataFrame]:
    """Per plan its fit, tracking and the value of its active subscribers; and each
    active subscriber of a fitted plan with their value (:data:`_VALUED_COLUMNS`)."""
    table = survival(store, day)
    # the spells paying at the observation day: renewals so far, and for one whose end is
    # known (cancelled at the period's end) the payments left before it
    active = store.con.execute(
        f"""
        WITH spells AS ({_SPELLS_SQL})
        SELECT customer_id, plan, billing_interval, interval_count, charge,
               CAST(paying_from AS DATE) AS paying_since,
               {_periods("CAST(paying_from AS DATE)", "$day")} AS renewals,
               CASE WHEN cancelled_at IS NOT NULL THEN greatest(0, {
            _periods("CAST(paying_from AS DATE)", "CAST(cancelled_at - INTERVAL 1 DAY AS DATE)")
        } - {_periods("CAST(paying_from AS DATE)", "$day")}) END AS left_before_end
        FROM spells
        WHERE paying_from < $cutoff AND (cancelled_at IS NULL OR cancelled_at >= $cutoff)
        """,
        {"cutoff": _cutoff(day), "day": day},
    ).df()
    plans = []
    valued: list[pd.DataFrame] = []
    for key, part in table.groupby(["plan", "billing_interval", "interval_count"], sort=True):
        plan, interval, count = cast(tuple[str, str, int], key)
        entry: dict[str, Any] = {
            "plan": plan,
            "billing_interval": interval,
            "interval_count": int(count),
            "subscriptions": int(part.loc[part["period"] == 0, "active"].sum()),
            "cohorts": int(part["cohort"].nunique()),
            "periods_observed": int(part["period"].max()),
        }
        mine = active[
            (active["plan"] == plan)
            & (active["billing_interval"] == interval)
            & (active["interval_count"] == count)
        ]
        entry["active"] = len(mine)
        chosen, problem = _fit_plan(part)
        if chosen is None:
            entry["fit"], entry["problem"] = None, problem
            plans.append(entry)
            continue
        model, candidates, reason = chosen
        per_period = (1 + discount_rate) ** _period_years(interval, int(count)) - 1
        horizon = (1, 2, 3, 6, 12, 24, 36)
        entry["fit"] = {
            "model": model.name,
            **model.params_,
            "log_likelihood": float(model.log_likelihood_),
            "converged": bool(model.converged_),
            "choice": reason,
            "candidates": candidates,
            # the mean chance to cancel after a period, among new subscribers
            "mean_churn": float(model.churn_probability([1]).iloc[0]),
            # every subscriber alike, each as likely to cancel
            "alike": _alike(model),
            "survival": {str(p): float(model.survival([p]).iloc[0]) for p in horizon},
            "retention_next": float(model.retention_rate([1]).iloc[0]),
            "discount_rate_per_period": per_period,
        }
        entry["tracking"] = _tracking(part, type(model))
        if len(mine):
            payments = np.array(
                model.expected_residual_lifetime(mine["renewals"].to_numpy(), per_period),
                dtype=np.float64,
            )
            # an end already known: the payments left before it, not the model's
            known = mine["left_before_end"].astype("float64").to_numpy()
            ends_known = np.isfinite(known)
            payments[ends_known] = [recurring_value(1.0, k, per_period) for k in known[ends_known]]
            value = margin * mine["charge"].to_numpy() * payments
            valued.append(
                mine.assign(
                    payments_to_come=payments, end_known=ends_known, value=value, model=model.name
                )[_VALUED_COLUMNS]
            )
            charge = float(part["price"].iloc[0])  # the plan's median charge
            entry["value"] = {
                "subscribers": len(mine),
                "ending": int(ends_known.sum()),
                "total": float(value.sum()),
                "mean": float(value.mean()),
                "mean_residual_periods": float(payments.mean()),
                # a subscriber starting now: the first payment, then the renewals
                "new_subscriber": float(
                    margin
                    * charge
                    * (1.0 + model.expected_residual_lifetime([0], per_period).iloc[0])
                ),
                "plan_charge": charge,
            }
        plans.append(entry)
    frame = (
        pd.concat(valued, ignore_index=True)
        if valued
        else pd.DataFrame({c: [] for c in _VALUED_COLUMNS})
    )
    frame["paying_since"] = [pd.Timestamp(d).date().isoformat() for d in frame["paying_since"]]
    return plans, frame


def _tracking(part: pd.DataFrame, family: type[Any]) -> dict[str, Any] | None:
    """The plan's model (``family``: the sBG or the BdW) fitted on the first
    :data:`TRACKING_SHARE` of the plan's periods, its projected survivors beside the actual
    ones in every period (summed over the cohorts observed that long), the later periods a
    holdout; None with fewer than 3 periods."""
    longest = int(part["period"].max())
    cut = math.floor(longest * TRACKING_SHARE)
    if longest < 3 or cut < 1:
        return None
    early = _series(part, cut)
    if not early or sum(s[0] - s[-1] for s in early) <= 0:
        return None
    model = _fit(early, family)
    if model is None:
        return None
    sizes = part[part["period"] == 0].set_index("cohort")["active"]
    rows = []
    for key, rows_at in part.groupby("period"):
        period = int(cast(int, key))
        cohorts = rows_at["cohort"]
        projected = float(sizes[cohorts].sum() * model.survival([period]).iloc[0])
        rows.append(
            {
                "period": int(period),
                "actual": int(rows_at["active"].sum()),
                "projected": projected,
                "holdout": bool(period > cut),
            }
        )
    # the holdout's error, weighted by the subscriptions in each period: the tail's few
    # survivors do not outweigh the periods most subscriptions are in
    held = [r for r in rows if r["holdout"]]
    actual = sum(r["actual"] for r in held)
    error = sum(abs(r["projected"] - r["actual"]) for r in held) / actual if actual else None
    return {"fitted_through": cut, "periods": rows, "holdout_mean_abs_error": error}


def _fit_plan(part: pd.DataFrame) -> tuple[tuple[Any, dict[str, Any], str] | None, str | None]:
    """A plan's survival table fitted (:func:`_fit_both`), or None and why not: too few
    subscriptions, no cancellation, or no fit that converges."""
    series = _series(part)
    lost = sum(s[0] - s[-1] for s in series)
    observed = sum(s[0] for s in series)
    if not series:
        return None, "no billing period completed yet: nothing to fit"
    if observed < MIN_SUBSCRIPTIONS:
        return None, (
            f"too few subscriptions observed for a whole period ({observed:g}; "
            f"{MIN_SUBSCRIPTIONS} are needed) to estimate retention"
        )
    if lost <= 0:
        return None, "no cancellation observed yet: retention cannot be estimated"
    chosen = _fit_both(series)
    if chosen is None:
        return None, "neither the sBG nor the BdW fit converged on this plan's survival table"
    return chosen, None


def _fit(series: list[list[float]], family: type[Any]) -> Any:
    """``family`` (the sBG or the BdW) fitted on the cohorts' series; None when it does not
    converge. Subscribers who are all alike put the maximum at the limit alpha, beta ->
    infinity (their ratio fixed): a fit that walked that ridge, its slope flat and its
    subscribers alike (:func:`_alike`), is kept."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a fit that does not converge is said, not warned
        try:
            model = family().fit(series)
        except ModelError:
            return None
    ridge = np.isfinite(model.log_likelihood_) and model.max_gradient_ < FLAT and _alike(model)
    return model if model.converged_ or ridge else None


def _alike(model: Any) -> bool:
    """Whether the fitted Beta of the chances to cancel is all but a point: its standard
    deviation below :data:`ALIKE` of its mean, ``sqrt(beta / (alpha (alpha + beta + 1)))``."""
    alpha, beta = model.params_["alpha"], model.params_["beta"]
    return bool(math.sqrt(beta / (alpha * (alpha + beta + 1.0))) < ALIKE)


def _fit_both(series: list[list[float]]) -> tuple[Any, dict[str, Any], str] | None:
    """The sBG and the BdW fitted on the plan's survival table, and the one kept: the BdW
    when its duration dependence is significant (twice the gain in log-likelihood above
    :data:`LIKELIHOOD_RATIO_5PCT`, the 5% point of a chi-square with 1 degree of freedom:
    the BdW is the sBG with c free), else the simpler sBG. Each candidate's parameters and
    log-likelihood, and the reason; None when neither converges."""
    from retain.models import BetaDiscreteWeibull, ShiftedBetaGeometric

    fits = {
        f.name: f
        for f in (_fit(series, ShiftedBetaGeometric), _fit(series, BetaDiscreteWeibull))
        if f
    }
    candidates = {
        name: {**f.params_, "log_likelihood": float(f.log_likelihood_)} for name, f in fits.items()
    }
    if not fits:
        return None
    if len(fits) == 1:
        ((name, model),) = fits.items()
        return model, candidates, f"only the {name.upper()} fit converged"
    sbg, bdw = fits["sbg"], fits["bdw"]
    statistic = 2.0 * (bdw.log_likelihood_ - sbg.log_likelihood_)
    c = bdw.params_["c"]
    trend = "rises" if c > 1 else "falls"
    if statistic > LIKELIHOOD_RATIO_5PCT:
        return (
            bdw,
            candidates,
            (
                f"BdW: its duration dependence c = {c:.3f} is significant (likelihood ratio "
                f"{statistic:.2f} > {LIKELIHOOD_RATIO_5PCT}): a subscriber's own chance to cancel "
                f"{trend} with tenure"
            ),
        )
    return (
        sbg,
        candidates,
        (
            f"sBG: the BdW's duration dependence c = {c:.3f} is not significant (likelihood "
            f"ratio {max(statistic, 0.0):.2f} <= {LIKELIHOOD_RATIO_5PCT}), so the simpler model"
        ),
    )


# -- who to offer a subscription ------------------------------------------------------

REGULAR_CV = 0.35
"""A customer buys a product at regular intervals when the intervals' standard deviation
is at most this share of their mean."""
MIN_PURCHASES = 4
"""Purchases of a product (on different days) that show a rhythm: three intervals (two
can look regular by chance)."""
SHORTEST_INTERVAL = 7
LONGEST_INTERVAL = 366
"""Days between purchases that make a cadence a subscription can deliver at."""
LAPSED = 2.0
"""A rhythm is broken when the last purchase is this many intervals ago."""
DAYS_PER_YEAR = 365.25
OFFER_DAYS = DAYS_PER_YEAR
"""The horizon over which the offer's values are compared: the scores' 12-month CLV."""

_RHYTHM_SQL = """
WITH priced AS (
    -- each line's share of its order's priced lines, times the order's net revenue: what
    -- was paid for it after discounts and refunds, in the units of the CLV
    SELECT o.customer_id, l.sku, l.name, CAST(o.ordered_at AS DATE) AS day,
           o.net_revenue * (l.quantity * l.unit_price)
               / nullif(sum(l.quantity * l.unit_price) OVER (PARTITION BY o.order_id), 0)
               AS spend
    FROM (SELECT order_id, sku, name, coalesce(quantity, 1) AS quantity, unit_price
          FROM order_lines WHERE unit_price IS NOT NULL) l
    JOIN orders o USING (order_id)
    WHERE o.ordered_at < $cutoff
), bought AS (
    SELECT customer_id, sku, any_value(name) AS name, day, sum(spend) AS spend
    FROM priced GROUP BY customer_id, sku, day
), gaps AS (
    SELECT *, date_diff('day', lag(day) OVER (PARTITION BY customer_id, sku ORDER BY day), day)
              AS gap
    FROM bought
), spent AS (
    -- every order's net revenue, with lines or without
    SELECT customer_id, sum(net_revenue) AS spend FROM orders
    WHERE ordered_at < $cutoff GROUP BY customer_id
)
SELECT g.customer_id, g.sku, any_value(g.name) AS name, count(*) AS purchases,
       avg(g.gap) AS every_days, stddev_samp(g.gap) / avg(g.gap) AS irregularity,
       max(g.day) AS last_purchase, avg(g.spend) AS spend_per_purchase,
       least(1.0, sum(g.spend) / nullif(any_value(s.spend), 0)) AS share_of_spend
FROM gaps g JOIN spent s USING (customer_id)
GROUP BY g.customer_id, g.sku
HAVING count(*) >= $min_purchases
"""


def candidates(
    store: Store,
    *,
    discount: float = 0.1,
    retention: float | None = None,
    plan: str | None = None,
    max_irregularity: float = REGULAR_CV,
    limit: int | None = 100,
) -> dict[str, Any]:
    """Who to offer a subscription: customers who buy the same product at regular
    intervals, ranked by what their next 12 months are worth more as subscribers.

    From the order lines to the last scoring's observation day, a customer and product
    qualify with :data:`MIN_PURCHASES` purchases on different days (what each cost: its
    lines' share of the order's net revenue, after discounts and refunds), intervals of
    :data:`SHORTEST_INTERVAL` to :data:`LONGEST_INTERVAL` days on average whose standard
    deviation is at most ``max_irregularity`` of their mean, and a last purchase less than
    :data:`LAPSED` intervals ago (the rhythm goes on). The offer: the product delivered at
    their own interval for their mean spend on it less ``discount``.

    Over the next 12 months, at the scoring's margin and discount rate:

    - ``value_now``: their 12-month CLV (``retain score``) times the product's share of
      their spend: what the model expects them to spend on it as they are;
    - ``value_subscribed``: each delivery's price, the first when the next purchase is
      due (their interval after the last) and in full, each later one weighted by the
      chance the subscription is still on (the retention curve of the
      store's plan ``plan``, default the fitted plan with the most subscriptions, read at
      the delivery's time in the plan's periods; or ``retention``, the share renewing at
      each delivery, for a store without subscriptions) and discounted;
    - ``gain``: the difference, the rows ranked by it (``limit`` of them; None: all).

    Raises :class:`StoreError` without scores, order lines, or (without ``retention``)
    a fitted plan."""
    from retain.scoring import load_score_basis

    if not (math.isfinite(discount) and 0 <= discount < 1):
        raise ArgumentError(f"discount must be a share from 0 to below 1, got {discount!r}")
    if retention is not None and not (math.isfinite(retention) and 0 < retention <= 1):
        raise ArgumentError(f"retention must be a share above 0 and at most 1, got {retention!r}")
    if not (math.isfinite(max_irregularity) and max_irregularity > 0):
        raise ArgumentError(
            f"max-irregularity must be a finite share above 0, got {max_irregularity!r}"
        )
    if limit is not None and limit < 1:
        raise ArgumentError(f"the rows to show must be 1 or more, got {limit!r}")
    basis = load_score_basis(store)
    day = dt.date.fromisoformat(basis.as_of)
    if not store.con.execute("SELECT count(*) FROM order_lines").fetchall()[0][0]:
        raise StoreError(
            f"the store {store.path} has no order lines: who buys a product again and again "
            "is read from them (retain ingest LINES.csv --format lines)"
        )
    survive, source = _offer_retention(store, day, retention, plan)
    rows = store.con.execute(
        _RHYTHM_SQL, {"cutoff": _cutoff(day), "min_purchases": MIN_PURCHASES}
    ).df()
    rows["days_since"] = [(day - d.date()).days for d in pd.to_datetime(rows["last_purchase"])]
    regular = (
        rows["every_days"].between(SHORTEST_INTERVAL, LONGEST_INTERVAL)
        & (rows["irregularity"] <= max_irregularity)
        & (rows["days_since"] < LAPSED * rows["every_days"])
        & (rows["spend_per_purchase"] > 0)
        & rows["share_of_spend"].notna()
    )
    rows = rows[regular].copy()
    scores = (
        store.con.execute("SELECT customer_id, clv_12m, p_alive FROM customer_scores")
        .df()
        .set_index("customer_id")
    )
    scored = rows["customer_id"].isin(scores.index)
    unscored = int(rows.loc[~scored, "customer_id"].nunique())
    rows = rows[scored].join(scores, on="customer_id")
    if rows["clv_12m"].isna().all() and len(rows):
        raise StoreError(
            "the last scoring has no CLV (no spend model was fitted): the value of an offer "
            "is set against the customer's CLV"
        )
    rows = rows[rows["clv_12m"].notna()]
    margin, rate = float(basis.margin), float(basis.discount_rate)
    price = (1.0 - discount) * rows["spend_per_purchase"].to_numpy()
    every = rows["every_days"].to_numpy()
    since = rows["days_since"].to_numpy(dtype=np.float64)
    subscribed = np.zeros(len(rows))
    for i, interval in enumerate(every):
        # the first delivery when their next purchase is due, then one each interval
        due = max(0.0, interval - since[i])
        times = np.arange(due, OFFER_DAYS, interval)
        on = survive(times - due)
        subscribed[i] = float(np.sum(on * (1.0 + rate) ** (-times / DAYS_PER_YEAR)))
    rows["price_per_delivery"] = price
    rows["value_now"] = rows["clv_12m"].to_numpy() * rows["share_of_spend"].to_numpy()
    rows["value_subscribed"] = margin * price * subscribed
    rows["gain"] = rows["value_subscribed"] - rows["value_now"]
    rows = rows.sort_values(["gain", "customer_id", "sku"], ascending=[False, True, True])
    gaining = rows[rows["gain"] > 0]
    shown = rows if limit is None else rows.head(limit)
    columns = [
        "customer_id", "sku", "name", "purchases", "every_days", "irregularity",
        "last_purchase", "days_since", "spend_per_purchase", "price_per_delivery",
        "share_of_spend", "p_alive", "value_now", "value_subscribed", "gain",
    ]  # fmt: skip
    out = shown[columns].copy()
    out["last_purchase"] = [pd.Timestamp(d).date().isoformat() for d in out["last_purchase"]]
    return {
        "as_of": day.isoformat(),
        "margin": margin,
        "discount_rate": rate,
        "discount": discount,
        "retention": source,
        "max_irregularity": max_irregularity,
        "candidates": len(rows),
        "customers": int(rows["customer_id"].nunique()),
        "not_scored": unscored,
        "gaining": len(gaining),
        "gain_total": float(gaining["gain"].sum()),
        "rows": out.to_dict(orient="records"),
    }


def _offer_retention(
    store: Store, day: dt.date, retention: float | None, plan: str | None
) -> tuple[Any, str]:
    """The chance a subscription is still on after some days, and where it comes from."""
    if retention is not None:
        if plan is not None:
            raise ArgumentError("give a plan or a retention, not both")

        def constant(days: np.ndarray) -> np.ndarray:
            deliveries = np.arange(days.size, dtype=np.float64)
            return np.asarray(retention**deliveries, dtype=np.float64)

        return constant, f"{retention:.0%} of subscribers renewing at each delivery (given)"
    has_subscriptions = store.has_table("subscriptions") and bool(
        store.con.execute("SELECT count(*) FROM subscriptions").fetchall()[0][0]
    )
    if not has_subscriptions:
        raise StoreError(
            f"the store {store.path} holds no subscriptions to learn a subscriber's retention "
            "from: give the share of subscribers who renew at each delivery (--retention, "
            "e.g. 0.9), or ingest subscriptions"
        )
    table = survival(store, day)
    fitted: list[tuple[int, str, Any, float]] = []
    for key, part in table.groupby(["plan", "billing_interval", "interval_count"], sort=True):
        name, interval, count = cast(tuple[str, str, int], key)
        if plan is not None and name != plan:
            continue
        chosen, _ = _fit_plan(part)
        if chosen is not None:
            size = int(part.loc[part["period"] == 0, "active"].sum())
            fitted.append((size, name, chosen[0], MONTHS_PER[interval] * int(count)))
    if not fitted:
        known = sorted(table["plan"].unique())
        which = f"plan {plan!r}" if plan is not None else "any plan"
        raise StoreError(
            f"no retention curve fitted for {which} (plans: {', '.join(known) or 'none'}): "
            "name a fitted plan, or give --retention"
        )
    size, name, model, months = max(fitted, key=lambda f: (f[0], f[1]))
    period_days = months * DAYS_PER_YEAR / 12.0

    def curve(days: np.ndarray) -> np.ndarray:
        return np.asarray(model.survival(days / period_days).to_numpy(), dtype=np.float64)

    return curve, (
        f"the retention of plan {name} ({model.name.upper()}, {size:,} subscriptions), "
        f"read at each delivery's time"
    )
