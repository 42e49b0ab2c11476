"""Retention and churn per period, and the per-period measures of buying.

Definitions (rates and shares are percentages, 0-100):

- A *customer* (an *active* customer) at an instant is someone who ordered
  within the activity window before it: non-subscription data has no
  cancellations, so a customer is one who is still buying. By default the
  window follows the store's purchase rhythm: the 90th percentile of the gaps
  in days between a customer's consecutive order days, within the shortest
  window the period allows (30 days for a month, 90 for a quarter, 365 for a
  year) and 365 days; 365 days when fewer than 30 such gaps exist (see
  :func:`retain.metrics._common.activity_window`). ``window_days`` sets it.
- Retention rate of a period = (customers at end - new customers acquired
  during it) / customers at start x 100; churn rate = 100 - retention rate.
  Customers at start are those who ordered in the window before the period's
  first instant, customers at end those who ordered in the window before the
  next period's first instant. The new customers subtracted are those counted
  among the customers at end: with an activity window at least as long as the
  period that is every new customer; with a shorter one, a new customer who
  already lapsed is neither at the end nor subtracted. A lapsed customer who
  comes back during the period counts at its end (``reactivated_customers``),
  as the formula implies; ``retained_customers`` counts those who were
  customers at both instants, so that customers at end = retained +
  reactivated + new customers still customers at the end.
- Until one activity window after the store's first order nobody can have
  lapsed, so the retention rate of a period that ends by then would be 100% by
  construction: it is left empty (the counts are kept).
- The headline retention (overview, Models page, formula CLV) pools the last
  year's worth of complete periods with a rate: the sum of (customers at end -
  new customers) over the sum of customers at start (:func:`pooled_retention`).
- *Repeat-purchase retention* of a cohort (first-order period): the share of its
  customers who ordered again, on a later day, within 365 days of their first
  order; measured for cohorts whose every customer has had those 365 days
  (:func:`repeat_retention`).
- A *new* customer of a period placed their first order in it; a *returning*
  customer ordered in it and had first ordered in an earlier period.
- Repeat purchase rate = customers with two or more orders / customers x 100.

A period that has not ended by the observation day is ``complete = False``; its
end-of-period figures and rates are left empty.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from retain.metrics._activity import Activity, activity, steps_to_counts
from retain.metrics._common import (
    PERIODS,
    AsOf,
    activity_window,
    observation,
    period_labels,
)
from retain.store import Store

RETENTION_COLUMNS = [
    "period",
    "period_start",
    "complete",
    "customers_at_start",
    "new_customers",
    "customers_at_end",
    "retained_customers",
    "reactivated_customers",
    "retention_rate",
    "churn_rate",
]

PERIOD_COLUMNS = [
    "period",
    "period_start",
    "complete",
    "customers",
    "new_customers",
    "returning_customers",
    "orders",
    "net_revenue",
    "aov",
    "purchase_frequency",
    "new_customer_revenue",
    "returning_customer_revenue",
    "returning_revenue_share",
    "returning_customer_share",
]


def retention(
    store: Store,
    period: str = "month",
    *,
    window_days: int | None = None,
    as_of: AsOf = None,
) -> pd.DataFrame:
    """Retention and churn rate per period, from the first order's period to ``as_of``.

    ``period``: "month", "quarter" or "year" (calendar, UTC). ``window_days``: a
    customer is someone who ordered in the last ``window_days`` days (at least the
    length of the period; default: from the store's purchase rhythm, see the
    module notes; ``attrs["window_rule"]`` says how it was chosen). ``as_of``:
    observation day (default: the store's ``as_of`` setting, else
    the day of the last order); later orders are ignored.

    Columns: ``period`` (label such as 1997-03, 1997Q1, 1997), ``period_start``
    (date), ``complete`` (the period ended by ``as_of``), ``customers_at_start``,
    ``new_customers`` (first order in the period), ``customers_at_end``,
    ``retained_customers`` (customers at start still customers at end),
    ``reactivated_customers`` (lapsed customers who came back: customers at end
    - retained - new customers still customers at end), ``retention_rate`` =
    (customers at end - new customers) / customers at start x 100 (see the module
    notes for a window shorter than the period), ``churn_rate`` = 100 - retention
    rate (percent; empty when there were no customers at start, the period is
    not complete, or it ended before anyone could have lapsed).
    """
    window = observation(store, as_of, period)
    return retention_table(activity(store, window, activity_window(store, window, window_days)))


def retention_table(act: Activity) -> pd.DataFrame:
    """The retention table from the activity aggregates."""
    ks = act.periods
    size = ks.size + 1  # period starts first .. last + 1 (the end of the last period)
    reach, bridges = act.reach, act.bridges
    starts = reach["idx"].to_numpy() + 1
    stops = reach["last_k"].to_numpy()
    weights = reach["customers"].to_numpy()
    at_start = steps_to_counts(act.first, size, starts, stops, weights)
    # customers at both k and k + 1: through one purchase, or handed on to the next
    kept = steps_to_counts(act.first, size, starts, stops - 1, weights) + steps_to_counts(
        act.first,
        size,
        bridges["bridge_k"].to_numpy(),
        bridges["bridge_k"].to_numpy(),
        bridges["customers"].to_numpy(),
    )
    firsts = act.cells[act.cells["cohort"] == act.cells["idx"]].set_index("idx")
    new = firsts["customers"].reindex(ks, fill_value=0).to_numpy()
    # acquired in the period and still a customer at its end (all of them, unless the
    # activity window is shorter than this period)
    new_at_end = pd.Series(firsts["reaching_next"].reindex(ks, fill_value=0).to_numpy())
    complete = act.complete(ks)
    starts_now = pd.Series(at_start[:-1], dtype="int64")
    at_end = pd.Series(at_start[1:], dtype="float64").where(complete)
    retained = pd.Series(kept[:-1], dtype="float64").where(complete)
    new_s = pd.Series(new, dtype="int64")
    measurable = act.measurable(ks)
    rate = 100.0 * ((at_end - new_at_end) / starts_now.where(starts_now > 0)).where(measurable)
    period_start = act.period_starts(ks)
    frame = pd.DataFrame(
        {
            "period": period_labels(period_start, act.window.period),
            "period_start": period_start,
            "complete": complete,
            "customers_at_start": starts_now,
            "new_customers": new_s,
            "customers_at_end": at_end.astype("Int64"),
            "retained_customers": retained.astype("Int64"),
            "reactivated_customers": (at_end - new_at_end - retained).astype("Int64"),
            "retention_rate": rate,
            "churn_rate": 100.0 - rate,
        }
    )
    frame.attrs.update(
        {
            "period": act.window.period,
            "as_of": act.window.as_of.isoformat(),
            "window_days": act.window_days,
            "window_rule": act.window_rule,
            "measurable_from": (
                str(frame["period"][measurable].iloc[0]) if measurable.any() else None
            ),
        }
    )
    return frame


@dataclass(frozen=True)
class PooledRetention:
    """The headline retention: ``periods`` (labels pooled), ``customers_at_start`` and
    ``kept`` (customers at end less new ones) summed over them, ``retention_rate`` and
    ``churn_rate`` (percent per period, None without a usable period)."""

    periods: list[str]
    customers_at_start: int
    kept: int
    retention_rate: float | None
    churn_rate: float | None


def pooled_retention(kept: pd.DataFrame, lookback: int | None = None) -> PooledRetention:
    """The headline retention: the last ``lookback`` complete periods with a retention
    rate (default: a year's worth), pooled: sum of (customers at end - new customers)
    over the sum of customers at start."""
    if lookback is None:
        lookback = 12 // PERIODS[str(kept.attrs.get("period", "month"))]
    usable = kept["complete"] & (kept["customers_at_start"] > 0) & kept["retention_rate"].notna()
    chosen = kept[usable].tail(lookback)
    start = int(chosen["customers_at_start"].sum())
    still = int(
        (chosen["retained_customers"] + chosen["reactivated_customers"]).astype("int64").sum()
    )
    rate = 100.0 * still / start if start else None
    return PooledRetention(
        periods=chosen["period"].astype(str).tolist(),
        customers_at_start=start,
        kept=still,
        retention_rate=rate,
        churn_rate=None if rate is None else 100.0 - rate,
    )


REPEAT_HORIZON_DAYS = 365

REPEAT_SQL = """
WITH firsts AS (
    SELECT customer_id, min(ordered_at) AS first_at,
           (year(min(ordered_at)) * 12 + month(min(ordered_at)) - 1) // $p AS cohort
    FROM orders
    WHERE ordered_at < $end
    GROUP BY customer_id
),
again AS (
    SELECT f.customer_id, f.cohort, f.first_at,
           min(o.ordered_at) FILTER (
               WHERE CAST(o.ordered_at AS DATE) > CAST(f.first_at AS DATE)
           ) AS second_at
    FROM firsts f JOIN orders o USING (customer_id)
    WHERE o.ordered_at < $end
    GROUP BY ALL
)
SELECT cohort,
       max(first_at)                                                      AS last_first,
       count(*)                                                           AS customers,
       count(*) FILTER (WHERE second_at < first_at + to_days($horizon))   AS repeat_customers
FROM again
GROUP BY cohort
ORDER BY cohort
"""


def repeat_retention(store: Store, period: str = "month", *, as_of: AsOf = None) -> pd.DataFrame:
    """Cohort repeat-purchase retention: per cohort (first-order period), the share of its
    customers who ordered again, on a later day, within 365 days of their first order.

    Only cohorts whose last customer's first order is at least 365 days before the end
    of ``as_of`` are listed: their every customer has had the full 365 days. Columns:
    ``cohort`` (label), ``customers``, ``repeat_customers``, ``repeat_retention``
    (percent). ``attrs``: ``horizon_days``, ``period``, ``as_of``.
    """
    window = observation(store, as_of, period)
    return _repeat_retention(store, window.params, window.period, window.as_of.isoformat())


def _repeat_retention(
    store: Store, params: dict[str, object], period: str, as_of: str
) -> pd.DataFrame:
    frame = store.con.execute(REPEAT_SQL, {**params, "horizon": REPEAT_HORIZON_DAYS}).df()
    end = pd.Timestamp(params["end"])  # type: ignore[arg-type]
    horizon = pd.Timedelta(days=REPEAT_HORIZON_DAYS)
    frame = frame[pd.to_datetime(frame["last_first"]) + horizon <= end]
    attrs = {"horizon_days": REPEAT_HORIZON_DAYS, "period": period, "as_of": as_of}
    if frame.empty:
        empty = pd.DataFrame(
            {
                "cohort": pd.Series(dtype="object"),
                "customers": pd.Series(dtype="int64"),
                "repeat_customers": pd.Series(dtype="int64"),
                "repeat_retention": pd.Series(dtype="float64"),
            }
        )
        empty.attrs.update(attrs)
        return empty
    months = PERIODS[period]
    starts = pd.Series(frame["cohort"].astype("int64").to_numpy() * months)
    cohort_start = pd.to_datetime(
        pd.DataFrame({"year": starts // 12, "month": starts % 12 + 1, "day": 1})
    )
    result = pd.DataFrame(
        {
            "cohort": period_labels(cohort_start, period).to_numpy(),
            "customers": frame["customers"].astype("int64").to_numpy(),
            "repeat_customers": frame["repeat_customers"].astype("int64").to_numpy(),
        }
    )
    result["repeat_retention"] = 100.0 * result["repeat_customers"] / result["customers"]
    result.attrs.update(attrs)
    return result


def period_metrics(store: Store, period: str = "month", *, as_of: AsOf = None) -> pd.DataFrame:
    """Buying per period: customers, new and returning, orders, revenue, AOV, frequency.

    ``period``: "month", "quarter" or "year" (calendar, UTC); ``as_of``: observation
    day (default: the store's ``as_of`` setting, else
    the day of the last order). Periods without orders are listed with zeros.

    Columns: ``period``, ``period_start`` (date), ``complete``, ``customers`` (who
    ordered in the period), ``new_customers`` (first order in it),
    ``returning_customers`` (ordered in it, first ordered before it), ``orders``,
    ``net_revenue`` (reporting currency), ``aov`` (net revenue / orders),
    ``purchase_frequency`` (orders / customers who ordered),
    ``new_customer_revenue``, ``returning_customer_revenue``,
    ``returning_revenue_share`` (returning customers' share of net revenue, percent),
    ``returning_customer_share`` (returning / customers who ordered, percent).
    """
    window = observation(store, as_of, period)
    return period_table(activity(store, window))[PERIOD_COLUMNS]


def period_table(act: Activity) -> pd.DataFrame:
    """The period table from the activity aggregates, with the variances the alerts use
    (``order_value_var``: of order net revenue; ``orders_per_customer_var``)."""
    ks = act.periods
    cells = act.cells.assign(
        new_customers=np.where(act.cells["cohort"] == act.cells["idx"], act.cells["customers"], 0),
        new_customer_revenue=np.where(
            act.cells["cohort"] == act.cells["idx"], act.cells["net_revenue"], 0.0
        ),
    )
    sums = (
        cells.groupby("idx")[
            [
                "customers",
                "new_customers",
                "orders",
                "orders_sq",
                "net_revenue",
                "new_customer_revenue",
                "net_revenue_sq",
            ]
        ]
        .sum()
        .reindex(ks, fill_value=0)
    )
    customers = sums["customers"].astype("int64").reset_index(drop=True)
    new = sums["new_customers"].astype("int64").reset_index(drop=True)
    orders = sums["orders"].astype("int64").reset_index(drop=True)
    revenue = sums["net_revenue"].astype("float64").reset_index(drop=True)
    new_revenue = sums["new_customer_revenue"].astype("float64").reset_index(drop=True)
    revenue_sq = sums["net_revenue_sq"].astype("float64").reset_index(drop=True)
    orders_sq = sums["orders_sq"].astype("float64").reset_index(drop=True)
    has_orders = orders.where(orders > 0).astype("float64")
    buyers = customers.where(customers > 0).astype("float64")
    aov = revenue / has_orders
    frequency = orders / buyers
    returning_revenue = revenue - new_revenue
    period_start = act.period_starts(ks)
    frame = pd.DataFrame(
        {
            "period": period_labels(period_start, act.window.period),
            "period_start": period_start,
            "complete": act.complete(ks),
            "customers": customers,
            "new_customers": new,
            "returning_customers": customers - new,
            "orders": orders,
            "net_revenue": revenue,
            "aov": aov,
            "purchase_frequency": frequency,
            "new_customer_revenue": new_revenue,
            "returning_customer_revenue": returning_revenue,
            "returning_revenue_share": 100.0 * (returning_revenue / revenue.where(revenue != 0)),
            "returning_customer_share": 100.0 * ((customers - new) / buyers),
            "order_value_var": (revenue_sq - has_orders * aov**2)
            / (has_orders - 1).where(has_orders > 1),
            "orders_per_customer_var": (orders_sq - buyers * frequency**2)
            / (buyers - 1).where(buyers > 1),
        }
    )
    frame.attrs.update({"period": act.window.period, "as_of": act.window.as_of.isoformat()})
    return frame


def repeat_purchase_rate(store: Store, *, as_of: AsOf = None) -> float:
    """Customers with two or more orders / customers x 100 (percent), orders to ``as_of``."""
    window = observation(store, as_of)
    row = store.con.execute(
        """
        SELECT count(*) FILTER (WHERE orders >= 2), count(*)
        FROM (SELECT customer_id, count(*) AS orders FROM orders
              WHERE ordered_at < $end GROUP BY customer_id)
        """,
        {"end": window.end},
    ).fetchone()
    assert row is not None
    return 100.0 * (row[0] / row[1])


def latest_complete(frame: pd.DataFrame, column: str) -> pd.Series | None:
    """The last complete period's row with a value in ``column``, or None."""
    usable = frame[frame["complete"] & frame[column].notna()]
    return None if usable.empty else usable.iloc[-1]
