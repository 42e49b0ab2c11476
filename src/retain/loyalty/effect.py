"""Does the programme pay? Members against comparable non-members, referred customers
against organic ones, beside what the programme cost.

**Members** are the customers who redeemed points, from the month of their first
redemption. Each is compared with the customers who never redeemed and stood where the
member stood at the start of that month: the same number of orders before (1, 2, 3-5,
6 or more), the same time since the last order (up to 30 days, 90, 180, more) and the same
tenure (under 180 days, under a year, more). Outcomes over the ``horizon`` days after the
month began: retained (an order at all), orders, net revenue; and the predicted
12-month CLV of the latest ``retain score``.

**Referred** customers (whose first order carried another customer's code, self-referrals
left out) are compared with organic customers who first ordered in the same month.
Outcomes over the ``horizon`` days after the first order: retained (another order),
orders after the first, net revenue after the first, and the predicted 12-month CLV of
the latest ``retain score``.

Within each stratum the groups' means are compared; the strata are weighted by the
members (or the referred) in them, and the interval of the weighted difference is
normal with the strata's variances added (95%). Customers whose horizon has not passed
by the clock are left out. These are comparisons of alike customers, not experiments:
members chose to redeem, and whatever made them choose may also make them buy.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from retain.store import Store

HORIZON_DAYS = 180
Z = 1.959963984540054

# Each member by the month of their first redemption, and every customer who never
# redeemed, at the start of each such month: their stratum and what they did next.
MEMBERS_SQL = """
WITH joined AS (
    SELECT customer_id, date_trunc('month', min(happened_at)) AS month
    FROM loyalty_ledger WHERE kind = 'redeem' GROUP BY ALL
),
months AS (
    SELECT DISTINCT month FROM joined
    WHERE month + to_days(CAST($horizon AS INTEGER)) <= $now
),
people AS (
    SELECT m.month, o.customer_id, j.customer_id IS NOT NULL AS member
    FROM months m
    JOIN (SELECT DISTINCT customer_id FROM orders) o ON true
    LEFT JOIN joined j ON j.customer_id = o.customer_id
    WHERE j.customer_id IS NULL OR j.month = m.month
),
described AS (
    SELECT p.month, p.customer_id, p.member,
           count(*) FILTER (WHERE o.ordered_at < p.month) AS before,
           date_diff('day', max(o.ordered_at) FILTER (WHERE o.ordered_at < p.month), p.month)
               AS since,
           date_diff('day', min(o.ordered_at), p.month) AS tenure,
           count(*) FILTER (WHERE o.ordered_at >= p.month
                            AND o.ordered_at < p.month + to_days(CAST($horizon AS INTEGER)))
               AS orders,
           coalesce(sum(o.net_revenue) FILTER (
               WHERE o.ordered_at >= p.month
                 AND o.ordered_at < p.month + to_days(CAST($horizon AS INTEGER))), 0) AS revenue
    FROM people p JOIN orders o USING (customer_id)
    GROUP BY p.month, p.customer_id, p.member
)
SELECT d.month,
       CASE WHEN d.before >= 6 THEN 4 WHEN d.before >= 3 THEN 3 ELSE d.before END AS f,
       CASE WHEN d.since <= 30 THEN 1 WHEN d.since <= 90 THEN 2 WHEN d.since <= 180 THEN 3
            ELSE 4 END AS r,
       CASE WHEN d.tenure < 180 THEN 1 WHEN d.tenure < 365 THEN 2 ELSE 3 END AS t,
       d.member, d.orders > 0 AS retained, d.orders, d.revenue, {clv} AS clv
FROM described d {join} WHERE d.before > 0
"""

# Each customer's first order: referred (with a code of another customer's, not a
# self-referral) or organic (no referral), and what they did in the horizon after it.
REFERRED_SQL = """
WITH firsts AS (
    SELECT customer_id, min(ordered_at) AS first FROM orders GROUP BY ALL
),
referred AS (
    SELECT friend_id AS customer_id FROM loyalty_referrals
    WHERE reason IS NULL OR reason NOT LIKE 'self-referral%'
),
any_code AS (SELECT friend_id AS customer_id FROM loyalty_referrals),
described AS (
    SELECT f.customer_id, date_trunc('month', f.first) AS month,
           r.customer_id IS NOT NULL AS member,
           count(*) FILTER (WHERE o.ordered_at > f.first
                            AND o.ordered_at < f.first + to_days(CAST($horizon AS INTEGER)))
               AS orders,
           coalesce(sum(o.net_revenue) FILTER (
               WHERE o.ordered_at > f.first
                 AND o.ordered_at < f.first + to_days(CAST($horizon AS INTEGER))), 0) AS revenue
    FROM firsts f JOIN orders o USING (customer_id)
    LEFT JOIN referred r USING (customer_id)
    WHERE f.first + to_days(CAST($horizon AS INTEGER)) <= $now
      AND (r.customer_id IS NOT NULL OR f.customer_id NOT IN (SELECT customer_id FROM any_code))
    GROUP BY f.customer_id, f.first, r.customer_id
)
SELECT d.month, 0 AS f, 0 AS r, 0 AS t, d.member, d.orders > 0 AS retained, d.orders,
       d.revenue, {clv} AS clv
FROM described d {join}
"""


def _stratified(frame: pd.DataFrame, column: str) -> dict[str, Any] | None:
    """The members' mean of ``column``, the matched others' (weighted to the members'
    strata), the difference and its 95% interval; None without a stratum holding both."""
    keys = KEYS
    values = frame[column].astype("float64")
    grouped = pd.DataFrame(
        frame.assign(_v=values)
        .groupby([*keys, "member"])["_v"]
        .agg(["mean", "var", "count"])
        .unstack("member")
    )
    if True not in grouped.columns.get_level_values(1) or False not in (
        grouped.columns.get_level_values(1)
    ):
        return None
    both = grouped.dropna(subset=[("count", True), ("count", False)])
    if both.empty:
        return None
    weights = both[("count", True)].to_numpy(dtype="float64")
    weights = weights / weights.sum()
    m1 = both[("mean", True)].to_numpy()
    m0 = both[("mean", False)].to_numpy()
    v1 = np.nan_to_num(both[("var", True)].to_numpy()) / both[("count", True)].to_numpy()
    v0 = np.nan_to_num(both[("var", False)].to_numpy()) / both[("count", False)].to_numpy()
    difference = float(np.sum(weights * (m1 - m0)))
    half = Z * math.sqrt(float(np.sum(weights**2 * (v1 + v0))))
    return {
        "members": float(np.sum(weights * m1)),
        "matched": float(np.sum(weights * m0)),
        "difference": difference,
        "interval": [difference - half, difference + half],
    }


MIN_COMPARED = 30
"""Fewer members (or referred customers) with comparable customers: too few to tell."""
KEYS = ["month", "f", "r", "t"]


def _compare(frame: pd.DataFrame, measures: list[str], label: str) -> dict[str, Any]:
    """The group (``member``) against the others of the same strata: how many of each
    the comparison holds (the strata holding both), and each measure."""
    sizes = frame.groupby([*KEYS, "member"]).size().unstack("member", fill_value=0)
    for side in (True, False):
        if side not in sizes.columns:
            sizes[side] = 0
    both = sizes[(sizes[True] > 0) & (sizes[False] > 0)]
    out: dict[str, Any] = {
        label: int(frame["member"].sum()),
        "compared": int(both[True].sum()),
        "compared_with": int(both[False].sum()),
        "measures": {},
    }
    if out["compared"] < MIN_COMPARED:
        return out
    for measure in measures:
        found = _stratified(frame, measure)
        if found is not None:
            if measure == "retained":  # a difference of shares lies in [-1, 1]
                found["interval"] = [
                    max(-1.0, found["interval"][0]),
                    min(1.0, found["interval"][1]),
                ]
            out["measures"][measure] = found
    return out


def programme_effect(store: Store, horizon: int = HORIZON_DAYS) -> dict[str, Any]:
    """Members against matched non-members, and referred against organic customers (see
    the module), each with ``measures`` (``retained``, ``orders``, ``revenue``, and
    ``clv`` once the store is scored): the group's mean, the matched mean, the difference and its
    interval; and a sentence."""
    from retain.loyalty.ledger import clock

    now = clock(store)
    params = {"now": now, "horizon": horizon}
    has_scores = store.has_table("customer_scores")
    scores = {
        "clv": "s.clv_12m" if has_scores else "NULL",
        "join": "LEFT JOIN customer_scores s USING (customer_id)" if has_scores else "",
    }
    members = store.con.execute(MEMBERS_SQL.format(**scores), params).df()
    referred = store.con.execute(REFERRED_SQL.format(**scores), params).df()
    measures = ["retained", "orders", "revenue"] + (["clv"] if has_scores else [])
    result: dict[str, Any] = {"horizon_days": horizon}
    result["members"] = _compare(members, measures, "members") if not members.empty else None
    result["referred"] = (
        _compare(referred, measures, "referred")
        if not referred.empty and referred["member"].any()
        else None
    )
    result["sentences"] = _sentences(result)
    return result


def _sentences(result: dict[str, Any]) -> list[str]:
    days = result["horizon_days"]
    out = []
    for group, noun, since in (
        ("members", "Members", "after their first redemption"),
        ("referred", "Referred customers", "after their first order"),
    ):
        found = result.get(group) or {}
        revenue = found.get("measures", {}).get("revenue")
        if revenue is None:
            what = "redeemed points" if group == "members" else "came with a referral code"
            if found.get(group):
                out.append(
                    f"Too few {noun.lower()} to tell: {found['compared']:,} of {found[group]:,} "
                    f"have comparable customers, at least {MIN_COMPARED} needed."
                )
            else:
                out.append(
                    f"No {noun.lower()} to compare yet: no customer who {what} has {days} "
                    "days behind them."
                )
            continue
        low, high = revenue["interval"]
        verb = "more" if revenue["difference"] >= 0 else "less"
        out.append(
            f"{noun} spent {abs(revenue['difference']):,.2f} {verb} ({low:,.2f} to "
            f"{high:,.2f}) in the {days} days {since} than comparable customers "
            f"({found['compared']:,} of {found[group]:,} against {found['compared_with']:,} "
            "comparable)."
        )
    return out
