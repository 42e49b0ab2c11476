"""The numbers a business owner asks about first, in one call (the dashboard's overview)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pandas as pd

from retain.metrics._activity import Activity, activity
from retain.metrics._common import (
    PERIODS,
    AsOf,
    check_margin,
    check_positive_int,
    check_window_days,
    observation,
)
from retain.metrics.acquisition import cac_and_clv_cac, spend_span
from retain.metrics.clv import _business_clv, customer_metrics
from retain.metrics.retention import latest_complete, period_table, retention_table
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
       sum(net_revenue) FILTER (WHERE in_span)    AS acquired_net_revenue
FROM (
    SELECT customer_id, count(*) AS orders, sum(net_revenue) AS net_revenue,
           min(ordered_at) >= $span_start AND min(ordered_at) < $span_end AS in_span
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
    "customers",
    "orders",
    "net_revenue",
    "aov",
    "average_historical_clv",
    "median_historical_clv",
    "repeat_purchase_rate",
    "retention_period",
    "retention_rate",
    "churn_rate",
    "cac",
    "clv_cac",
    "revenue_by_period",
)


def overview(
    store: Store,
    *,
    margin: float = 1.0,
    period: str = "month",
    window_days: int = 365,
    as_of: AsOf = None,
) -> dict[str, Any]:
    """Headline metrics of the store, as plain JSON-ready values.

    ``margin``: fraction of net revenue kept, in (0, 1]; ``period``: "month",
    "quarter" or "year" for the rates and the revenue split; ``window_days``:
    activity window of the retention rate; ``as_of``: observation day (default:
    day of the last order).

    Keys (:data:`OVERVIEW_KEYS`): ``as_of`` (ISO date), ``period``, ``margin``,
    ``window_days``; ``customers``, ``orders``, ``net_revenue`` (reporting
    currency), ``aov`` (net revenue / orders); ``average_historical_clv`` and
    ``median_historical_clv`` (net revenue per customer x margin);
    ``repeat_purchase_rate`` (percent of customers with 2+ orders);
    ``retention_period`` (label of the last complete period with customers at
    its start, or None), ``retention_rate`` and ``churn_rate`` (percent, that
    period); ``cac`` (blended: all spend / all customers acquired while spending)
    and ``clv_cac`` (blended CLV:CAC), both None without marketing spend;
    ``revenue_by_period``: list of {``period``, ``net_revenue``,
    ``new_customer_revenue``, ``returning_customer_revenue``,
    ``returning_revenue_share`` (percent or None), ``complete``}.
    """
    check_margin(margin)
    window = observation(store, as_of, period)
    check_window_days(window_days, period)
    act = activity(store, window, window_days)
    return _overview(store, act, retention_table(act), period_table(act), margin)


def _overview(
    store: Store, act: Activity, kept: pd.DataFrame, bought: pd.DataFrame, margin: float
) -> dict[str, Any]:
    """The overview from the activity aggregates and their retention and period tables."""
    window = act.window
    span = spend_span(store, window)
    nowhere = dt.datetime(1, 1, 1)
    start, end = span if span is not None else (nowhere, nowhere)
    row = store.con.execute(
        OVERVIEW_SQL, {"end": window.end, "span_start": start, "span_end": end}
    ).fetchone()
    assert row is not None
    customers, orders, net_revenue, mean_revenue, median_revenue, repeaters = row[:6]
    acquired, acquired_revenue = row[6:]
    latest = latest_complete(kept, "retention_rate")
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
        "customers": int(customers),
        "orders": int(orders),
        "net_revenue": float(net_revenue),
        "aov": float(net_revenue) / int(orders),
        "average_historical_clv": float(mean_revenue) * margin,
        "median_historical_clv": float(median_revenue) * margin,
        "repeat_purchase_rate": 100.0 * (int(repeaters) / int(customers)),
        "retention_period": None if latest is None else str(latest["period"]),
        "retention_rate": None if latest is None else _number(latest["retention_rate"]),
        "churn_rate": None if latest is None else _number(latest["churn_rate"]),
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
    margin: float = 1.0,
    discount_rate: float = 0.0,
    window_days: int = 365,
    top: int = 10,
    as_of: AsOf = None,
) -> dict[str, Any]:
    """Everything ``retain metrics`` shows, from one pass over the orders.

    Arguments as in :func:`overview` and :func:`~retain.metrics.business_clv`;
    ``top``: how many of the most valuable customers to list.

    Keys: ``overview`` (the dict of :func:`overview`), ``formula_clv`` (the dict
    of :func:`~retain.metrics.business_clv`), ``periods`` (DataFrame, one row per
    period: :data:`REPORT_PERIOD_COLUMNS`, retention and buying side by side),
    ``top_customers`` (DataFrame of :func:`~retain.metrics.customer_metrics`).
    """
    check_margin(margin)
    window = observation(store, as_of, period)
    check_window_days(window_days, period)
    check_positive_int("top", top, least=0)
    act = activity(store, window, window_days)
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
