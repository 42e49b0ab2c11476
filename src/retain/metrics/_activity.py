"""One pass over the orders that the period and retention tables read; one for cohorts.

The orders are grouped per customer and period; a window over each customer's
periods gives their cohort (first period), their next period with an order, and
how far each purchase keeps them a customer. Three small aggregates come back,
whose size depends on the number of periods, not on the number of customers:

- ``cells``: per cohort and period, customers who ordered, their orders, net
  revenue, sums of squares (for sampling noise), how many also ordered in the
  next period and how many are still customers at its start;
- ``reach``: per period ``idx`` and ``last_k``, customers whose purchases in
  ``idx`` make them a customer at the starts of periods ``idx + 1 .. last_k``
  (up to their next period with an order, which takes over from there);
- ``bridges``: per period ``k``, customers who were customers at the start of
  ``k`` through an earlier purchase and at the start of ``k + 1`` through a
  purchase in ``k``.

A customer "at the start of period k" ordered within the activity window before
the period's first instant: an order at time t counts for period starts s with
t < s <= t + window, that is for periods idx(t) + 1 .. idx(t + window).

The cohort table needs only the customers, orders and net revenue of each cell:
:func:`cohort_cells` gets them without the window, from each customer's first
order joined back to their orders, in about half the time.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from retain.metrics._common import ActivityWindow, Window
from retain.store import Store

ACTIVITY_SQL = """
WITH buys AS (
    SELECT customer_id,
           (year(ordered_at) * 12 + month(ordered_at) - 1) // $p  AS idx,
           count(*)                                                AS orders,
           sum(net_revenue)                                        AS net_revenue,
           sum(net_revenue * net_revenue)                          AS net_revenue_sq,
           -- the last period whose start still lies within the window after these orders
           (year(max(ordered_at) + to_days($window)) * 12
            + month(max(ordered_at) + to_days($window)) - 1) // $p AS hi
    FROM orders
    WHERE ordered_at < $end
    GROUP BY ALL
),
linked AS (
    SELECT idx, orders, net_revenue, net_revenue_sq, hi,
           first_value(idx) OVER w AS cohort,
           lead(idx)        OVER w AS next_idx,
           lead(hi)         OVER w AS next_hi
    FROM buys
    WINDOW w AS (PARTITION BY customer_id ORDER BY idx)
),
spans AS (
    SELECT cohort, idx, orders, net_revenue, net_revenue_sq,
           next_idx = idx + 1                      AS continues,
           hi > idx                                AS reaches_next,
           least(hi, coalesce(next_idx, hi))       AS last_k,
           CASE WHEN hi >= next_idx AND next_hi > next_idx THEN next_idx END AS bridge_k
    FROM linked
),
-- one pass over the customer-periods into a few thousand groups, rolled up below
grouped AS (
    SELECT cohort, idx, last_k, bridge_k,
           count(*)                             AS customers,
           sum(orders)                          AS orders,
           sum(net_revenue)                     AS net_revenue,
           sum(net_revenue_sq)                  AS net_revenue_sq,
           sum(orders * orders)                 AS orders_sq,
           count(*) FILTER (WHERE continues)    AS continuing,
           count(*) FILTER (WHERE reaches_next) AS reaching_next
    FROM spans
    GROUP BY ALL
)
SELECT GROUPING(cohort, idx, last_k, bridge_k) AS grouping_id,
       cohort, idx, last_k, bridge_k,
       sum(customers)      AS customers,
       sum(orders)         AS orders,
       sum(net_revenue)    AS net_revenue,
       sum(net_revenue_sq) AS net_revenue_sq,
       sum(orders_sq)      AS orders_sq,
       sum(continuing)     AS continuing,
       sum(reaching_next)  AS reaching_next
FROM grouped
GROUP BY GROUPING SETS ((cohort, idx), (idx, last_k), (bridge_k))
"""

# GROUPING() sets a bit for each column left out, the first column highest
CELLS, REACH, BRIDGES = 0b0011, 0b1001, 0b1110


COHORT_SQL = """
WITH firsts AS (
    SELECT customer_id,
           (year(min(ordered_at)) * 12 + month(min(ordered_at)) - 1) // $p AS cohort
    FROM orders
    WHERE ordered_at < $end
    GROUP BY customer_id
)
SELECT cohort,
       (year(ordered_at) * 12 + month(ordered_at) - 1) // $p AS idx,
       count(DISTINCT customer_id)                            AS customers,
       count(*)                                               AS orders,
       sum(net_revenue)                                       AS net_revenue
FROM orders JOIN firsts USING (customer_id)
WHERE ordered_at < $end
GROUP BY ALL
"""


@dataclass(frozen=True)
class CohortCells:
    """Per cohort and period: ``cells``, and the periods they span (``first`` .. ``last``)."""

    window: Window
    first: int
    last: int
    cells: pd.DataFrame

    @property
    def periods(self) -> np.ndarray:
        return np.arange(self.first, self.last + 1)

    def period_starts(self, ks: np.ndarray | pd.Series) -> pd.Series:
        """First day of each period index (as ``datetime.date``)."""
        months = np.asarray(ks, dtype="int64") * self.window.months_per_period
        frame = pd.DataFrame({"year": months // 12, "month": months % 12 + 1, "day": 1})
        return pd.to_datetime(frame).dt.date

    def complete(self, ks: np.ndarray | pd.Series) -> np.ndarray:
        """Whether each period ended by the end of the observation day."""
        next_months = (np.asarray(ks, dtype="int64") + 1) * self.window.months_per_period
        end = self.window.end  # midnight, so a first of the month on or before it counts
        return np.asarray(next_months <= end.year * 12 + end.month - 1, dtype=bool)


@dataclass(frozen=True)
class Activity(CohortCells):
    """The three aggregates: ``cells`` with every column, ``reach`` and ``bridges``;
    the activity window (``window_days``, and ``window_rule``: how it was chosen) and
    the store's first order (``first_order_at``)."""

    window_days: int
    reach: pd.DataFrame
    bridges: pd.DataFrame
    window_rule: str = ""
    first_order_at: dt.datetime | None = None

    def measurable(self, ks: np.ndarray | pd.Series) -> np.ndarray:
        """Whether a customer at the start of each period could have lapsed by its end.

        Until one activity window after the store's first order nobody can have
        lapsed: every customer is still one, and a retention of 100% would say nothing.
        """
        if self.first_order_at is None:
            return np.ones(len(ks), dtype=bool)
        ends = pd.to_datetime(self.period_starts(np.asarray(ks, dtype="int64") + 1))
        lapse_from = pd.Timestamp(self.first_order_at) + pd.Timedelta(days=self.window_days)
        return np.asarray(ends > lapse_from, dtype=bool)


def activity(store: Store, window: Window, window_days: int | ActivityWindow = 365) -> Activity:
    """Run the one pass and split its result into the three aggregates."""
    if isinstance(window_days, ActivityWindow):
        days, rule = window_days.days, window_days.rule
    else:
        days, rule = window_days, f"{window_days} days, as set"
    params = {**window.params, "window": days}
    raw = store.con.execute(ACTIVITY_SQL, params).df()
    first_rows = store.con.execute(
        "SELECT min(ordered_at) FROM orders WHERE ordered_at < $end", {"end": window.end}
    ).fetchall()
    first_order_at = first_rows[0][0] if first_rows else None
    day = window.as_of
    last = (day.year * 12 + day.month - 1) // window.months_per_period
    cells = raw[raw["grouping_id"] == CELLS]
    cells = cells[["cohort", "idx", "customers", "orders", "net_revenue"]].assign(
        net_revenue_sq=raw["net_revenue_sq"],
        orders_sq=raw["orders_sq"],
        continuing=raw["continuing"],
        reaching_next=raw["reaching_next"],
    )
    cells = cells.astype(
        {
            "cohort": "int64",
            "idx": "int64",
            "customers": "int64",
            "orders": "int64",
            "orders_sq": "int64",
            "continuing": "int64",
            "reaching_next": "int64",
            "net_revenue": "float64",
            "net_revenue_sq": "float64",
        }
    )
    reach = raw.loc[raw["grouping_id"] == REACH, ["idx", "last_k", "customers"]].astype("int64")
    bridges = raw.loc[
        (raw["grouping_id"] == BRIDGES) & raw["bridge_k"].notna(), ["bridge_k", "customers"]
    ].astype("int64")
    first = int(cells["cohort"].min())
    return Activity(
        window=window,
        window_days=days,
        window_rule=rule,
        first_order_at=first_order_at,
        first=first,
        last=last,
        cells=cells.sort_values(["cohort", "idx"]).reset_index(drop=True),
        reach=reach.reset_index(drop=True),
        bridges=bridges.reset_index(drop=True),
    )


def steps_to_counts(
    first: int, size: int, starts: np.ndarray, stops: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """Counts over periods ``first .. first + size - 1`` of weighted ranges [start, stop]."""
    diff = np.zeros(size + 1, dtype="int64")
    keep = stops >= starts
    lo = np.clip(starts[keep] - first, 0, size)
    hi = np.clip(stops[keep] + 1 - first, 0, size)
    np.add.at(diff, lo, weights[keep])
    np.add.at(diff, hi, -weights[keep])
    return np.cumsum(diff[:size])


def cohort_cells(store: Store, window: Window) -> CohortCells:
    """Customers who ordered, their orders and net revenue per cohort and period."""
    cells = store.con.execute(COHORT_SQL, window.params).df()
    cells = cells.astype(
        {"cohort": "int64", "idx": "int64", "customers": "int64", "orders": "int64"}
    ).astype({"net_revenue": "float64"})
    day = window.as_of
    return CohortCells(
        window=window,
        first=int(cells["cohort"].min()),
        last=(day.year * 12 + day.month - 1) // window.months_per_period,
        cells=cells.sort_values(["cohort", "idx"]).reset_index(drop=True),
    )
