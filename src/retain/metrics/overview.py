"""The numbers a business owner asks about first, in one call (the dashboard's overview)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pandas as pd

from retain.config import resolve_discount_rate
from retain.metrics._activity import Activity, activity
from retain.metrics._common import (
    PERIODS,
    AsOf,
    activity_window,
    check_positive_int,
    observation,
    resolve_margin,
)
from retain.metrics.acquisition import cac_and_clv_cac, spend_span
from retain.metrics.clv import _business_clv, customer_metrics
from retain.metrics.retention import (
    _repeat_retention,
    latest_complete,
    period_table,
    pooled_retention,
    retention_table,
)
from retain.store import Store

# One pass per customer: the headline numbers, and the customers behind the blended
# CAC (first order in the months of marketing spend, as in :func:`clv_cac`).
OVERVIEW_SQL = """
SELECT count(*)                                   AS customers,
       sum(orders)                                AS orders,
       sum(net_revenue)                           AS net_revenue,
       avg(net_revenue)                           AS mean_net_revenue,
       median(net_revenue)                        AS median_net_revenue,
       count(*) FILTER (WHERE orders >= 2)        AS repeat_customers,
       count(*) FILTER (WHERE in_span)            AS acquired,
       sum(net_revenue) FILTER (WHERE in_span)    AS acquired_net_revenue,
       count(*) FILTER (WHERE active)             AS active_customers
FROM (
    SELECT customer_id, count(*) AS orders, sum(net_revenue) AS net_revenue,
           min(ordered_at) >= $span_start AND min(ordered_at) < $span_end AS in_span,
           max(ordered_at) >= $end - to_days($window)                   AS active
    FROM orders
    WHERE ordered_at < $end
    GROUP BY customer_id
)
"""

REVENUE_COLUMNS = [
    "period",
    "net_revenue",
    "new_customer_revenue",
    "returning_customer_revenue",
    "returning_revenue_share",
    "complete",
]

OVERVIEW_KEYS = (
    "as_of",
    "period",
    "margin",
    "window_days",
    "window_rule",
    "customers",
    "active_customers",
    "orders",
    "net_revenue",
    "aov",
    "average_historical_clv",
    "median_historical_clv",
    "repeat_purchase_rate",
    "retention_period",
    "retention_periods",
    "retention_rate",
    "churn_rate",
    "retention_definition",
    "latest_retention_period",
    "latest_retention_rate",
    "latest_churn_rate",
    "repeat_retention",
    "repeat_retention_days",
    "repeat_retention_customers",
    "repeat_retention_cohorts",
    "cac",
    "clv_cac",
    "revenue_by_period",
)


def overview(
    store: Store,
    *,
    margin: float | None = None,
    period: str = "month",
    window_days: int | None = None,
    as_of: AsOf = None,
) -> dict[str, Any]:
    """Headline metrics of the store, as plain JSON-ready values.

    ``margin``: fraction of net revenue kept, in (0, 1] (default: the store's
    margin setting, else the margin the store was scored with, else 1); ``period``: "month", "quarter" or "year" for
    the rates and the revenue split; ``window_days``: activity window of the
    retention rate (default: from the store's purchase rhythm, see
    :mod:`retain.metrics.retention`); ``as_of``: observation day (default: day of
    the last order).

    Keys (:data:`OVERVIEW_KEYS`): ``as_of`` (ISO date), ``period``, ``margin``,
    ``window_days`` and ``window_rule`` (how the window was chosen);
    ``customers``, ``active_customers`` (ordered in the window before the end of
    ``as_of``), ``orders``, ``net_revenue`` (reporting currency), ``aov`` (net
    revenue / orders); ``average_historical_clv`` and ``median_historical_clv``
    (net revenue per customer x margin); ``repeat_purchase_rate`` (percent of
    customers with 2+ orders); the headline retention, the one the Models page and
    the formula CLV use: ``retention_rate`` and ``churn_rate`` (percent per
    period, pooled over the last year's worth of complete periods with a rate:
    :func:`~retain.metrics.retention.pooled_retention`), ``retention_periods``
    (their labels), ``retention_period`` (the span in words, or None),
    ``retention_definition`` (in words); the last such period alone:
    ``latest_retention_period``, ``latest_retention_rate``, ``latest_churn_rate``;
    cohort repeat-purchase retention (:func:`~retain.metrics.retention.repeat_retention`,
    pooled over the cohorts measured): ``repeat_retention`` (percent or None),
    ``repeat_retention_days``, ``repeat_retention_customers``,
    ``repeat_retention_cohorts`` (first and last cohort label, or []);
    ``cac`` (blended: all spend / all customers acquired while spending) and
    ``clv_cac`` (blended CLV:CAC), both None without marketing spend;
    ``revenue_by_period``: list of {``period``, ``net_revenue``,
    ``new_customer_revenue``, ``returning_customer_revenue``,
    ``returning_revenue_share`` (percent or None), ``complete``}.
    """
    margin = resolve_margin(store, margin)
    window = observation(store, as_of, period)
    act = activity(store, window, activity_window(store, window, window_days))
    return overview_over(store, act, margin)


def overview_over(store: Store, act: Activity, margin: float) -> dict[str, Any]:
    """:func:`overview` over activity aggregates already computed (which the service's
    alerts read too), with the margin resolved."""
    return _overview(store, act, retention_table(act), period_table(act), margin)


def retention_definition(period: str, window_days: int, periods: list[str]) -> str:
    """The headline retention in words."""
    span = f"pooled over {periods[0]} to {periods[-1]}" if periods else "not measured yet"
    return (
        f"retention per {period}: of the customers active at the start of a {period} "
        f"(ordered in the last {window_days} days), the share still active at its end "
        f"(new customers left out), {span}; churn = 100% - retention"
    )


def _overview(
    store: Store, act: Activity, kept: pd.DataFrame, bought: pd.DataFrame, margin: float
) -> dict[str, Any]:
    """The overview from the activity aggregates and their retention and period tables."""
    window = act.window
    span = spend_span(store, window)
    nowhere = dt.datetime(1, 1, 1)
    start, end = span if span is not None else (nowhere, nowhere)
    row = store.con.execute(
        OVERVIEW_SQL,
        {"end": window.end, "span_start": start, "span_end": end, "window": act.window_days},
    ).fetchone()
    assert row is not None
    customers, orders, net_revenue, mean_revenue, median_revenue, repeaters = row[:6]
    acquired, acquired_revenue, active = row[6:]
    latest = latest_complete(kept, "retention_rate")
    pooled = pooled_retention(kept)
    periods = pooled.periods
    repeat = _repeat_retention(store, window.params, window.period, window.as_of.isoformat())
    cohort_customers = int(repeat["customers"].sum())
    blended_cac = blended_clv_cac = None
    if span is not None:
        # the blended row of clv_cac: all spend over all customers acquired while spending
        paid = float(
            store.scalar("SELECT sum(amount) FROM marketing_spend WHERE date < ?", [window.end])
        )
        clv = margin * float(acquired_revenue) / acquired if acquired else float("nan")
        cost, ratio = cac_and_clv_cac(paid, int(acquired), clv)
        blended_cac, blended_clv_cac = _number(cost), _number(ratio)
    return {
        "as_of": window.as_of.isoformat(),
        "period": window.period,
        "margin": margin,
        "window_days": act.window_days,
        "window_rule": act.window_rule,
        "customers": int(customers),
        "active_customers": int(active),
        "orders": int(orders),
        "net_revenue": float(net_revenue),
        "aov": float(net_revenue) / int(orders),
        "average_historical_clv": float(mean_revenue) * margin,
        "median_historical_clv": float(median_revenue) * margin,
        "repeat_purchase_rate": 100.0 * (int(repeaters) / int(customers)),
        "retention_period": (
            None
            if not periods
            else periods[0]
            if len(periods) == 1
            else f"{periods[0]} to {periods[-1]}"
        ),
        "retention_periods": periods,
        "retention_rate": _number(pooled.retention_rate),
        "churn_rate": _number(pooled.churn_rate),
        "retention_definition": retention_definition(window.period, act.window_days, periods),
        "latest_retention_period": None if latest is None else str(latest["period"]),
        "latest_retention_rate": None if latest is None else _number(latest["retention_rate"]),
        "latest_churn_rate": None if latest is None else _number(latest["churn_rate"]),
        "repeat_retention": (
            100.0 * int(repeat["repeat_customers"].sum()) / cohort_customers
            if cohort_customers
            else None
        ),
        "repeat_retention_days": int(repeat.attrs["horizon_days"]),
        "repeat_retention_customers": cohort_customers,
        "repeat_retention_cohorts": (
            [str(repeat["cohort"].iloc[0]), str(repeat["cohort"].iloc[-1])] if len(repeat) else []
        ),
        "cac": blended_cac,
        "clv_cac": blended_clv_cac,
        # JSON-ready: missing shares become None
        "revenue_by_period": json.loads(bought[REVENUE_COLUMNS].to_json(orient="records")),
    }


REPORT_PERIOD_COLUMNS = [
    "period",
    "complete",
    "customers_at_start",
    "new_customers",
    "customers_at_end",
    "retention_rate",
    "churn_rate",
    "customers",
    "orders",
    "net_revenue",
    "aov",
    "purchase_frequency",
    "returning_revenue_share",
]


def metrics_report(
    store: Store,
    period: str = "month",
    *,
    margin: float | None = None,
    discount_rate: float | None = None,
    window_days: int | None = None,
    top: int = 10,
    as_of: AsOf = None,
) -> dict[str, Any]:
    """Everything ``retain metrics`` shows, from one pass over the orders.

    Arguments as in :func:`overview` and :func:`~retain.metrics.business_clv`
    (``discount_rate`` per year, default the store's setting);
    ``top``: how many of the most valuable customers to list.

    Keys: ``overview`` (the dict of :func:`overview`), ``formula_clv`` (the dict
    of :func:`~retain.metrics.business_clv`), ``periods`` (DataFrame, one row per
    period: :data:`REPORT_PERIOD_COLUMNS`, retention and buying side by side),
    ``top_customers`` (DataFrame of :func:`~retain.metrics.customer_metrics`).
    """
    margin = resolve_margin(store, margin)
    discount_rate = resolve_discount_rate(store, discount_rate)
    window = observation(store, as_of, period)
    chosen_window = activity_window(store, window, window_days)
    check_positive_int("top", top, least=0)
    act = activity(store, window, chosen_window)
    kept = retention_table(act)
    bought = period_table(act)
    periods = pd.concat(
        [kept, bought.drop(columns=["period", "period_start", "complete", "new_customers"])],
        axis=1,
    )[REPORT_PERIOD_COLUMNS]
    return {
        "overview": _overview(store, act, kept, bought, margin),
        "formula_clv": _business_clv(
            kept, bought, period, margin, discount_rate, 12 // PERIODS[period]
        ),
        "periods": periods,
        "top_customers": customer_metrics(
            store, period, margin=margin, as_of=window.as_of, limit=top
        ),
    }


def _number(value: Any) -> float | None:
    """A float, or None for a missing value (JSON has no NaN)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if number != number else number
