"""Acquisition: customer acquisition cost (CAC), CLV:CAC and payback, per channel.

- A customer's acquisition channel is ``customers.acquisition_channel``, or
  else the channel of their first order (``orders.channel``), or else
  ``unknown``. Channel names are compared trimmed and lower-cased, in spend and
  customers alike.
- A customer is acquired in the period of their first order.
- CAC of a channel and period = marketing spend / new customers acquired via
  that channel in that period.
- Over the whole spend history (the months from the first to the last day in
  ``marketing_spend``, whole months so that spend booked once a month covers
  the customers of that month), per channel: CAC = spend / new customers acquired in that
  span; CLV = mean historical CLV (net revenue to the observation day x margin)
  of those customers, or their mean cumulative margin over their first
  ``horizon_months`` months; CLV:CAC = CLV / CAC; payback = months after the
  acquisition month until the mean cumulative margin per customer covers the CAC
  (0: the first month's margin covers it). A channel whose CLV is below its CAC
  is flagged, however small the gap, and so is spend that acquired nobody.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from retain.metrics._common import (
    AsOf,
    Window,
    check_positive_int,
    has_spend,
    observation,
    period_labels,
    resolve_margin,
)
from retain.store import Store

CAC_COLUMNS = ["period", "period_start", "complete", "channel", "spend", "new_customers", "cac"]

CHANNEL_COLUMNS = [
    "channel",
    "spend",
    "new_customers",
    "cac",
    "clv",
    "clv_cac",
    "payback_months",
    "below_cac",
    "note",
]

# One query for both tables. Per channel and acquisition month: how many customers,
# split by whether they were acquired in the spend span; and, for those in the span,
# net revenue per month of age (0 = the acquisition month), enough to average each
# age over the customers observed at it. Outside a span (none given) no order is
# joined, so the CAC table alone costs one pass over the orders. The channel names
# are cleaned after grouping: a few distinct names rather than one per customer.
ACQUISITION_SQL = """
WITH firsts AS (
    SELECT customer_id,
           min(ordered_at)               AS first_at,
           arg_min(channel, ordered_at)  AS first_channel
    FROM orders
    WHERE ordered_at < $end
    GROUP BY customer_id
),
acquired AS (
    SELECT f.customer_id,
           year(f.first_at) * 12 + month(f.first_at) - 1 AS cohort,
           f.first_at >= $span_start AND f.first_at < $span_end AS in_span,
           c.acquisition_channel,
           f.first_channel
    FROM firsts f LEFT JOIN customers c USING (customer_id)
),
ages AS (
    SELECT a.acquisition_channel, a.first_channel, a.cohort,
           year(o.ordered_at) * 12 + month(o.ordered_at) - 1 - a.cohort AS age,
           sum(o.net_revenue) AS net_revenue
    FROM orders o JOIN (SELECT * FROM acquired WHERE in_span) a USING (customer_id)
    WHERE o.ordered_at < $end
    GROUP BY ALL
),
sizes AS (
    SELECT acquisition_channel, first_channel, cohort, in_span, count(*) AS customers
    FROM acquired
    GROUP BY ALL
),
both_kinds AS (
    SELECT 'revenue' AS kind, acquisition_channel, first_channel, cohort, age,
           NULL AS in_span, net_revenue AS value
    FROM ages
    UNION ALL
    SELECT 'size' AS kind, acquisition_channel, first_channel, cohort, NULL AS age,
           in_span, customers AS value
    FROM sizes
)
SELECT kind,
       coalesce(lower(trim(nullif(trim(acquisition_channel), ''))),
                lower(trim(nullif(trim(first_channel), ''))),
                'unknown') AS channel,
       cohort, age, in_span, sum(value) AS value
FROM both_kinds
GROUP BY ALL
"""

SPEND_SQL = """
SELECT lower(trim(channel)) AS channel,
       year(date) * 12 + month(date) - 1 AS month,
       sum(amount) AS spend
FROM marketing_spend
WHERE date < $end
GROUP BY ALL
"""


def cac(store: Store, period: str = "month", *, as_of: AsOf = None) -> pd.DataFrame:
    """CAC per period and channel: spend / new customers acquired via the channel.

    ``period``: "month", "quarter" or "year" (calendar, UTC); ``as_of``:
    observation day (default: the store's ``as_of`` setting, else
    the day of the last order), later orders and spend
    ignored. A period without spend in a channel with spend recorded has CAC 0; a
    channel with no spend recorded at all (organic, say) has no CAC: it is unknown.

    Columns: ``period``, ``period_start`` (date), ``complete``, ``channel``,
    ``spend`` (reporting currency), ``new_customers``, ``cac`` (reporting currency
    per new customer; empty when there was spend but no new customer, or when the
    channel has no spend recorded at all).
    """
    window = observation(store, as_of, period)
    raw, spend = _acquisition_data(store, window, span=None)
    return _cac_table(raw, spend, window)


def clv_cac(
    store: Store,
    *,
    margin: float | None = None,
    horizon_months: int | None = None,
    as_of: AsOf = None,
) -> pd.DataFrame:
    """CAC, CLV, CLV:CAC and payback per acquisition channel, and blended (``all``).

    Counts the customers acquired in the months from the first to the last day
    of marketing spend (to ``as_of``); ``margin``: fraction of net revenue kept,
    in (0, 1]; ``horizon_months``: if given, CLV is the mean cumulative margin per
    customer over the first ``horizon_months`` months (acquisition month
    included, averaged over the customers observed that long), else the mean
    historical CLV to ``as_of``; ``as_of``: observation day (default: day of the
    last order).

    Columns: ``channel``, ``spend``, ``new_customers``, ``cac`` (money per new
    customer; 0 where the spend recorded is 0, empty where none is recorded), ``clv`` (money per customer), ``clv_cac`` (empty
    without spend), ``payback_months`` (months after the acquisition month until
    the mean cumulative margin per customer covers the CAC; empty if not yet),
    ``below_cac`` (CLV < CAC, or spend that acquired nobody), ``note`` (why it is
    flagged). The blended row ``all`` is last. Empty frame when the store holds
    no marketing spend by ``as_of``; ``attrs["note"]`` then says so.
    """
    return acquisition_report(store, margin=margin, horizon_months=horizon_months, as_of=as_of)[
        "channels"
    ]


def acquisition_report(
    store: Store,
    period: str = "month",
    *,
    margin: float | None = None,
    horizon_months: int | None = None,
    as_of: AsOf = None,
) -> dict[str, pd.DataFrame]:
    """Both acquisition tables from one pass: ``channels`` (:func:`clv_cac`) and
    ``cac`` (:func:`cac` per ``period``). Arguments as in those functions."""
    margin = resolve_margin(store, margin)
    if horizon_months is not None:
        check_positive_int("horizon_months", horizon_months)
    window = observation(store, as_of, period)
    span = spend_span(store, window)
    raw, spend = _acquisition_data(store, window, span)
    per_period = _cac_table(raw, spend, window)
    if span is None:
        channels = pd.DataFrame({c: [] for c in CHANNEL_COLUMNS})
        note = "no marketing spend" if spend.empty else "no marketing spend by the as-of day"
        channels.attrs.update({"as_of": window.as_of.isoformat(), "note": note})
        return {"channels": channels, "cac": per_period}
    channels = _channel_table(raw, spend, window, margin, horizon_months)
    channels.attrs.update(
        {
            "as_of": window.as_of.isoformat(),
            "margin": margin,
            "horizon_months": horizon_months,
            "spend_from": span[0].date().isoformat(),
            "spend_to": (span[1] - dt.timedelta(days=1)).date().isoformat(),
            "note": "",
        }
    )
    return {"channels": channels, "cac": per_period}


def spend_span(store: Store, window: Window) -> tuple[dt.datetime, dt.datetime] | None:
    """The whole months from the first to the last day of spend, or None without spend.

    Whole months, so that spend booked once a month covers that month's customers.
    """
    if not has_spend(store):
        return None
    row = store.con.execute(
        "SELECT min(date), max(date) FROM marketing_spend WHERE date < $end", {"end": window.end}
    ).fetchone()
    if row is None or row[0] is None:
        return None
    start = pd.Timestamp(row[0]).to_period("M").to_timestamp().to_pydatetime()
    end = (pd.Timestamp(row[1]).to_period("M") + 1).to_timestamp().to_pydatetime()
    return start, end


def _acquisition_data(
    store: Store, window: Window, span: tuple[dt.datetime, dt.datetime] | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    nowhere = dt.datetime(1, 1, 1)
    start, end = span if span is not None else (nowhere, nowhere)
    raw = store.con.execute(
        ACQUISITION_SQL, {"end": window.end, "span_start": start, "span_end": end}
    ).df()
    spend = store.con.execute(SPEND_SQL, {"end": window.end}).df()
    return raw, spend


def _cac_table(raw: pd.DataFrame, spend: pd.DataFrame, window: Window) -> pd.DataFrame:
    p = window.months_per_period
    sizes = raw[raw["kind"] == "size"]
    new = (
        sizes.assign(idx=sizes["cohort"].astype("int64") // p)
        .groupby(["channel", "idx"])["value"]
        .sum()
        .rename("new_customers")
    )
    paid = (
        spend.assign(idx=spend["month"].astype("int64") // p)
        .groupby(["channel", "idx"])["spend"]
        .sum()
    )
    both = pd.concat([paid, new], axis=1).fillna(0).reset_index().sort_values(["idx", "channel"])
    months = both["idx"].astype("int64") * p
    start = pd.to_datetime(pd.DataFrame({"year": months // 12, "month": months % 12 + 1, "day": 1}))
    end = window.end
    frame = pd.DataFrame(
        {
            "period": period_labels(start.dt.date, window.period),
            "period_start": start.dt.date,
            "complete": (months + p) <= end.year * 12 + end.month - 1,
            "channel": both["channel"].astype(str),
            "spend": both["spend"].astype("float64"),
            "new_customers": both["new_customers"].astype("int64"),
        }
    ).reset_index(drop=True)
    frame["cac"] = frame["spend"] / frame["new_customers"].where(frame["new_customers"] > 0)
    # no spend in a channel whose spend is recorded: free; in one with no spend rows at
    # all: unknown, not 0
    recorded = frame["channel"].isin(set(spend["channel"].astype(str)))
    frame.loc[(frame["spend"] == 0) & recorded, "cac"] = 0.0
    frame.loc[~recorded, "cac"] = np.nan
    frame.attrs.update({"period": window.period, "as_of": window.as_of.isoformat()})
    return frame[CAC_COLUMNS]


def _channel_table(
    raw: pd.DataFrame,
    spend: pd.DataFrame,
    window: Window,
    margin: float,
    horizon_months: int | None,
) -> pd.DataFrame:
    end = window.end
    last_complete = end.year * 12 + end.month - 2  # the month before the end's month
    revenue = raw[raw["kind"] == "revenue"].astype({"cohort": "int64", "age": "int64"})
    sizes = raw[(raw["kind"] == "size") & raw["in_span"].eq(True)].astype({"cohort": "int64"})
    paid_by_channel = spend.groupby("channel")["spend"].sum()
    both = pd.concat(
        [revenue.assign(channel="all"), revenue], ignore_index=True
    )  # the blended curve pools every channel
    all_sizes = pd.concat([sizes.assign(channel="all"), sizes], ignore_index=True)

    channels = sorted(set(sizes["channel"]) | set(paid_by_channel.index))
    rows = []
    for channel in [*channels, "all"]:  # a handful of channels: a loop over channels, not rows
        cohort_sizes = all_sizes[all_sizes["channel"] == channel].groupby("cohort")["value"].sum()
        new = int(cohort_sizes.sum())
        paid = float(
            paid_by_channel.sum() if channel == "all" else paid_by_channel.get(channel, 0.0)
        )
        curve = _margin_curve(both[both["channel"] == channel], cohort_sizes, last_complete, margin)
        ages_observed = curve.index.size
        if horizon_months is None:
            total = float(both.loc[both["channel"] == channel, "value"].sum())
            clv = margin * total / new if new else float("nan")
        else:
            clv = (
                float(curve.iloc[horizon_months - 1])
                if horizon_months <= ages_observed
                else float("nan")
            )
        recorded = channel in paid_by_channel.index or (channel == "all" and paid > 0)
        cost, ratio = cac_and_clv_cac(paid, new, clv)
        payback = float("nan")
        if not recorded:
            cost = float("nan")  # no spend rows: the cost is unknown, not 0
        elif paid == 0:
            payback = 0.0
        elif new:
            covered = np.flatnonzero(curve.to_numpy() >= cost)
            payback = float(covered[0]) if covered.size else float("nan")
        note = ""
        if not recorded:
            below = False
            note = "no marketing spend recorded for this channel: CAC unknown"
        elif paid > 0 and new == 0:
            below = True
            note = f"spent {paid:,.2f} and acquired no customers"
        elif paid > 0 and clv < cost:
            below = True
            note = f"CLV {clv:,.2f} is below CAC {cost:,.2f} ({clv - cost:+,.2f} per customer)"
        else:
            below = False
        rows.append(
            {
                "channel": channel,
                "spend": paid,
                "new_customers": new,
                "cac": cost,
                "clv": clv,
                "clv_cac": ratio,
                "payback_months": payback,
                "below_cac": below,
                "note": note,
            }
        )
    frame = pd.DataFrame(rows, columns=CHANNEL_COLUMNS)
    frame["payback_months"] = frame["payback_months"].astype("Int64")
    return frame


def cac_and_clv_cac(paid: float, new: int, clv: float) -> tuple[float, float]:
    """CAC and CLV:CAC of ``new`` customers acquired for ``paid`` (money), CLV per customer.

    CAC is 0 without spend and empty (NaN) for spend that acquired nobody; CLV:CAC
    is empty without spend or without customers.
    """
    cost = paid / new if new else (0.0 if paid == 0 else float("nan"))
    return cost, clv / cost if paid > 0 and new else float("nan")


def _margin_curve(
    revenue: pd.DataFrame, cohort_sizes: pd.Series, last_complete: int, margin: float
) -> pd.Series:
    """Mean cumulative margin per customer by month of age, over complete months.

    Age a counts only the cohorts that had reached it in a complete month, so that
    young cohorts do not drag the later ages down.
    """
    if cohort_sizes.empty or cohort_sizes.index.min() > last_complete:
        return pd.Series(dtype="float64")
    max_age = last_complete - int(cohort_sizes.index.min())
    ages = np.arange(max_age + 1)
    cohorts = cohort_sizes.index.to_numpy()
    counts = cohort_sizes.to_numpy()
    # customers observed at each age: cohorts with cohort + age <= last complete month
    observed = ((cohorts[None, :] + ages[:, None]) <= last_complete) @ counts
    seen = revenue[revenue["cohort"] + revenue["age"] <= last_complete]
    by_age = seen.groupby("age")["value"].sum().reindex(ages, fill_value=0.0).to_numpy()
    return pd.Series(margin * np.cumsum(by_age / observed), index=ages)
