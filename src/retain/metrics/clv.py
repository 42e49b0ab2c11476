"""Customer lifetime value, descriptive: historical, formula and subscription CLV.

- Historical CLV of a customer = their net revenue to date x margin.
- Formula CLV = AOV x purchases per period x lifespan in periods, with
  lifespan = 1 / churn rate per period, times the margin. With a discount rate d
  per period it is the sum over periods t = 0, 1, 2, ... of
  margin x AOV x frequency x retention^t / (1 + d)^t, which is
  margin x AOV x frequency x (1 + d) / (1 + d - retention); with d = 0 this is
  the undiscounted formula again.
- Subscription CLV = margin x revenue per account per period / churn rate per
  period, with the churn measured from the cohorts.

Money is in the store's reporting currency, net of discounts, refunds and fees.
Rates in tables are percentages; :func:`lifespan` and :func:`formula_clv` take
rates as fractions (0.05 for 5%).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from retain.config import per_period_rate, resolve_discount_rate
from retain.errors import DataError
from retain.metrics._activity import Activity, activity
from retain.metrics._common import (
    PERIOD_DAYS,
    PERIODS,
    AsOf,
    activity_window,
    check_margin,
    check_positive_int,
    observation,
    period_labels,
    resolve_margin,
)
from retain.metrics.retention import period_table, pooled_retention, retention_table
from retain.store import Store

CUSTOMER_COLUMNS = [
    "customer_id",
    "orders",
    "net_revenue",
    "aov",
    "first_order_at",
    "last_order_at",
    "tenure_days",
    "days_since_last_order",
    "purchase_frequency",
    "historical_clv",
]

SUBSCRIPTION_COLUMNS = [
    "cohort",
    "accounts",
    "account_periods",
    "revenue_per_account",
    "churned",
    "churn_rate",
    "lifespan",
    "subscription_clv",
]


def _fraction(name: str, value: float, *, low_open: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DataError(f"{name} must be a number", value=value, expected="a fraction per period")
    if (value <= 0 if low_open else value < 0) or value > 1:
        hint = f" (for {value}% write {value / 100:g})" if value > 1 else ""
        interval = "(0, 1]" if low_open else "[0, 1]"
        raise DataError(
            f"{name} must be a fraction per period{hint}",
            value=value,
            expected=f"a number in {interval}",
        )
    return float(value)


def lifespan(churn_rate: float) -> float:
    """Expected customer lifespan in periods: 1 / churn rate per period.

    ``churn_rate`` is the share of customers lost per period as a fraction in
    (0, 1]: 0.10 gives 10 periods, 0.05 gives 20, 0.90 gives 1.11.
    """
    return 1.0 / _fraction("churn_rate", churn_rate)


def formula_clv(
    aov: float,
    frequency: float,
    churn_rate: float | None = None,
    lifespan: float | None = None,
    margin: float = 1.0,
    discount_rate: float = 0.0,
) -> float:
    """CLV = margin x AOV x purchases per period x lifespan in periods.

    ``aov``: average order value (money); ``frequency``: purchases per customer
    per period; give either ``churn_rate`` (fraction lost per period, in (0, 1])
    or ``lifespan`` (periods; 1 / churn rate). ``margin``: fraction of revenue
    kept, in (0, 1]. ``discount_rate``: per period, in [0, 1) (the one place retain
    takes a rate per period: :func:`business_clv` and the commands take it per
    year and pass the period's equivalent here); with it the value
    is the discounted sum over periods t >= 0 of
    margin x AOV x frequency x (1 - churn)^t / (1 + discount_rate)^t.

    >>> formula_clv(aov=20, frequency=1, lifespan=30)  # $20 a month for 2.5 years
    600.0
    """
    for name, value in (("aov", aov), ("frequency", frequency)):
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise DataError(f"{name} must be a number", value=value)
    if frequency < 0:
        raise DataError("frequency must not be negative", value=frequency, expected="0 or more")
    check_margin(margin)
    if (
        isinstance(discount_rate, bool)
        or not isinstance(discount_rate, int | float)
        or not 0 <= discount_rate < 1
    ):
        hint = (
            f" (for {discount_rate}% write {discount_rate / 100:g})"
            if isinstance(discount_rate, int | float) and discount_rate >= 1
            else ""
        )
        raise DataError(
            f"discount_rate must be a fraction per period{hint}",
            value=discount_rate,
            expected="a number in [0, 1)",
        )
    if (churn_rate is None) == (lifespan is None):
        raise DataError("give either churn_rate or lifespan, not both and not neither")
    if churn_rate is not None:
        churn = _fraction("churn_rate", churn_rate)
        periods = 1.0 / churn
    else:
        assert lifespan is not None
        if (
            isinstance(lifespan, bool)
            or not isinstance(lifespan, int | float)
            or not math.isfinite(lifespan)
            or lifespan <= 0
        ):
            raise DataError("lifespan must be a positive number of periods", value=lifespan)
        periods = float(lifespan)
        churn = 1.0 / periods
    per_period = margin * aov * frequency
    if discount_rate == 0:
        return float(per_period * periods)
    if churn > 1:
        raise DataError(
            "a lifespan under one period has no retention to discount",
            value=lifespan,
            expected="a lifespan of at least 1 period when discount_rate > 0",
        )
    retention = 1.0 - churn
    return float(per_period * (1 + discount_rate) / (1 + discount_rate - retention))


CUSTOMERS_SQL = """
SELECT customer_id,
       count(*)                                               AS orders,
       sum(net_revenue)                                       AS net_revenue,
       sum(net_revenue) / count(*)                            AS aov,
       min(ordered_at)                                        AS first_order_at,
       max(ordered_at)                                        AS last_order_at,
       date_diff('day', CAST(min(ordered_at) AS DATE), $as_of) AS tenure_days,
       date_diff('day', CAST(max(ordered_at) AS DATE), $as_of) AS days_since_last_order,
       count(*) / greatest(date_diff('day', CAST(min(ordered_at) AS DATE), $as_of)
                           / $period_days, 1.0)               AS purchase_frequency,
       sum(net_revenue) * $margin                             AS historical_clv
FROM orders
WHERE ordered_at < $end
GROUP BY customer_id
ORDER BY historical_clv DESC, customer_id
LIMIT $limit
"""


def customer_metrics(
    store: Store,
    period: str = "month",
    *,
    margin: float | None = None,
    as_of: AsOf = None,
    limit: int | None = None,
) -> pd.DataFrame:
    """One row per customer, the most valuable first.

    ``period``: "month", "quarter" or "year", the unit of ``purchase_frequency``;
    ``margin``: fraction of net revenue kept, in (0, 1]; ``as_of``: observation
    day (default: the store's ``as_of`` setting, else
    the day of the last order), later orders ignored; ``limit``: rows.

    Columns: ``customer_id``, ``orders``, ``net_revenue`` (reporting currency),
    ``aov`` (net revenue / orders), ``first_order_at``, ``last_order_at`` (UTC),
    ``tenure_days`` (first order's day to ``as_of``), ``days_since_last_order``,
    ``purchase_frequency`` (orders per period of tenure; a tenure under one period
    counts as one), ``historical_clv`` (net revenue x margin).
    """
    margin = resolve_margin(store, margin)
    window = observation(store, as_of, period)
    if limit is not None:
        check_positive_int("limit", limit, least=0)
    params = {
        "end": window.end,
        "as_of": window.as_of,
        "period_days": PERIOD_DAYS[period],
        "margin": margin,
        "limit": 2**62 if limit is None else limit,
    }
    # through Arrow: a million customer ids convert to pandas much faster than with .df()
    frame = store.con.sql(CUSTOMERS_SQL, params=params).to_arrow_table().to_pandas()
    frame.attrs.update({"period": period, "as_of": window.as_of.isoformat(), "margin": margin})
    return frame


def business_clv(
    store: Store,
    period: str = "month",
    *,
    margin: float | None = None,
    discount_rate: float | None = None,
    window_days: int | None = None,
    lookback: int | None = None,
    as_of: AsOf = None,
) -> dict[str, Any]:
    """The formula CLV of the business, measured over the trailing complete periods.

    Over the last ``lookback`` complete periods (default: a year's worth, 12
    months, 4 quarters or 1 year): AOV = net revenue / orders; purchase frequency
    = orders per customer per period, over the average of the customers at start
    and end (customers as in :func:`~retain.metrics.retention`, activity window
    ``window_days`` days, by default from the store's purchase rhythm); churn rate
    = 1 - pooled retention, where the pooled retention is the sum of (customers at
    end - new) / the sum of customers at start, over the complete periods with a
    retention rate (:func:`~retain.metrics.retention.pooled_retention`: the same
    figure as the overview's). Then CLV = :func:`formula_clv`. ``margin`` in (0, 1]
    (default: the store's setting, else the margin of the last ``retain score``,
    else 1); ``discount_rate`` per year in [0, 1) (default: the store's setting), as
    every discount rate of retain: :func:`formula_clv` gets the period's rate
    equivalent to it, (1 + rate)^(months per period / 12) - 1.

    Keys: ``period``, ``periods`` (labels used), ``aov``, ``purchase_frequency``,
    ``retention_rate`` and ``churn_rate`` (percent per period), ``lifespan``
    (periods), ``margin``, ``discount_rate`` (per year), ``discount_rate_per_period``,
    ``window_days`` and ``window_rule``
    (the activity window and how it was chosen), ``clv`` (reporting currency per
    customer; None when no churn was measured), ``note``.
    """
    margin = resolve_margin(store, margin)
    discount_rate = resolve_discount_rate(store, discount_rate)
    window = observation(store, as_of, period)
    chosen_window = activity_window(store, window, window_days)
    if lookback is None:
        lookback = 12 // PERIODS[period]
    check_positive_int("lookback", lookback)
    act = activity(store, window, chosen_window)
    return _business_clv(
        retention_table(act), period_table(act), period, margin, discount_rate, lookback
    )


def _business_clv(
    kept: pd.DataFrame,
    periods: pd.DataFrame,
    period: str,
    margin: float,
    discount_rate: float,
    lookback: int,
) -> dict[str, Any]:
    """The formula CLV from the retention and period tables of the same activity;
    ``discount_rate`` per year."""
    pooled = pooled_retention(kept, lookback)
    chosen = kept[kept["period"].isin(pooled.periods)]
    result: dict[str, Any] = {
        "period": period,
        "periods": chosen["period"].tolist(),
        "aov": None,
        "purchase_frequency": None,
        "retention_rate": None,
        "churn_rate": None,
        "lifespan": None,
        "margin": margin,
        "discount_rate": discount_rate,
        "discount_rate_per_period": per_period_rate(discount_rate, PERIODS[period]),
        "window_days": kept.attrs.get("window_days"),
        "window_rule": kept.attrs.get("window_rule"),
        "clv": None,
        "note": "",
    }
    if chosen.empty:
        result["note"] = (
            f"no complete {period} with customers at its start who could have lapsed yet "
            f"(a customer lapses {kept.attrs.get('window_days')} days after their last "
            "order): the formula needs a measured churn rate"
        )
        return result
    bought = periods.loc[chosen.index]
    orders = int(bought["orders"].sum())
    base = float(
        ((chosen["customers_at_start"] + chosen["customers_at_end"].astype("float64")) / 2).sum()
    )
    # customers at end less the new ones among them = retained + reactivated
    retention = pooled.kept / pooled.customers_at_start
    churn = 1.0 - retention
    aov = float(bought["net_revenue"].sum() / orders) if orders else 0.0
    frequency = orders / base if base else 0.0
    result.update(
        {
            "aov": aov,
            "purchase_frequency": frequency,
            "retention_rate": 100.0 * retention,
            "churn_rate": 100.0 * churn,
        }
    )
    if churn <= 0:
        result["note"] = (
            "no churn measured in these periods (retention at or above 100%): "
            "the lifespan is unbounded"
        )
        return result
    result["lifespan"] = lifespan(min(churn, 1.0))
    result["clv"] = formula_clv(
        aov,
        frequency,
        churn_rate=min(churn, 1.0),
        margin=margin,
        discount_rate=result["discount_rate_per_period"],
    )
    return result


def subscription_clv(
    store: Store, period: str = "month", *, margin: float | None = None, as_of: AsOf = None
) -> pd.DataFrame:
    """Subscription CLV per cohort and overall: margin x revenue per account / churn rate.

    For subscription data, where an account pays every period while subscribed:
    an account is active in a period when it has an order (a payment) in it. Over
    the complete periods, per cohort (first payment period):
    ``revenue_per_account`` = net revenue / active account-periods (reporting
    currency per account per period); ``churn_rate`` = accounts active in a
    period but not in the next / accounts active in it (percent per period, over
    the pairs of complete periods); ``lifespan`` = 1 / churn (periods);
    ``subscription_clv`` = margin x revenue per account x lifespan. The last row,
    cohort ``all``, pools every cohort. Empty values: no churn observed yet.

    Columns: ``cohort``, ``accounts``, ``account_periods``,
    ``revenue_per_account``, ``churned``, ``churn_rate``, ``lifespan``,
    ``subscription_clv``.
    """
    margin = resolve_margin(store, margin)
    window = observation(store, as_of, period)
    return _subscription_clv(activity(store, window), margin)


def _subscription_clv(act: Activity, margin: float) -> pd.DataFrame:
    cells = act.cells
    complete = act.complete(cells["idx"])
    # a churn is observed in k only when k + 1 is complete too
    next_complete = act.complete(cells["idx"] + 1)
    measured = cells.assign(
        active=np.where(complete, cells["customers"], 0),
        revenue=np.where(complete, cells["net_revenue"], 0.0),
        at_risk=np.where(next_complete, cells["customers"], 0),
        churned=np.where(next_complete, cells["customers"] - cells["continuing"], 0),
        accounts=np.where(cells["cohort"] == cells["idx"], cells["customers"], 0),
    )
    sums = measured.groupby("cohort")[["accounts", "active", "revenue", "at_risk", "churned"]].sum()
    sums.loc["all"] = sums.sum()
    labels = period_labels(act.period_starts(sums.index[:-1].to_numpy()), act.window.period)
    revenue_per_account = sums["revenue"] / sums["active"].where(sums["active"] > 0)
    churn = sums["churned"] / sums["at_risk"].where(sums["at_risk"] > 0)
    periods = 1.0 / churn.where(churn > 0)
    frame = pd.DataFrame(
        {
            "cohort": [*labels.tolist(), "all"],
            "accounts": sums["accounts"].astype("int64").to_numpy(),
            "account_periods": sums["active"].astype("int64").to_numpy(),
            "revenue_per_account": revenue_per_account.to_numpy(),
            "churned": sums["churned"].astype("int64").to_numpy(),
            "churn_rate": (100.0 * churn).to_numpy(),
            "lifespan": periods.to_numpy(),
            "subscription_clv": (margin * revenue_per_account * periods).to_numpy(),
        }
    )
    frame.attrs.update(
        {"period": act.window.period, "as_of": act.window.as_of.isoformat(), "margin": margin}
    )
    return frame
