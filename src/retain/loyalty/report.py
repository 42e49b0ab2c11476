"""``retain loyalty report``: where the programme stands at the ledger's clock.

- **Liability**: the points outstanding (spendable and pending), their money value at the
  rules' point ``value``, and what expires when (by month, from what is left of each lot:
  :data:`retain.loyalty.ledger.SWEEP_SQL`).
- **Flows**: points earned, reversed by refunds, given as bonuses and referral rewards,
  redeemed, expired and adjusted, all time and over the last 12 months.
- **Cost**: the money value of the points redeemed and of those outstanding (the
  referral rewards given are part of these, not added to them).
- **Tiers** (members in each, with their benefits) and **referrals** (rewarded, waiting
  and refused, with the reasons).
- **Effect** (:mod:`retain.loyalty.effect`): members against matched non-members, and
  referred against organic customers, with intervals.
"""

from __future__ import annotations

from typing import Any

from retain.loyalty.build import current_rules
from retain.loyalty.effect import programme_effect
from retain.loyalty.ledger import UNWRITTEN, clock, swept
from retain.store import Store

FLOWS_SQL = """
SELECT kind || CASE WHEN kind = 'adjust' AND points < 0 THEN ' (taken)'
                    WHEN kind = 'adjust' THEN ' (given)' ELSE '' END AS flow,
       sum(points) AS points,
       sum(points) FILTER (WHERE happened_at > $now - INTERVAL 12 MONTH) AS last_12_months,
       count(*) AS entries
FROM loyalty_ledger WHERE happened_at <= $now GROUP BY 1 ORDER BY 1
"""


def loyalty_report(store: Store) -> dict[str, Any]:
    """The report (see the module) as a dict ready for JSON."""
    rules = current_rules(store, required=True)
    now = clock(store)
    con = store.con
    spendable, pending, customers = con.execute(
        "SELECT coalesce(sum(points) FILTER (WHERE available_at <= $now), 0), "
        "coalesce(sum(points) FILTER (WHERE available_at > $now), 0), count(DISTINCT customer_id) "
        "FROM loyalty_ledger WHERE happened_at <= $now",
        {"now": now},
    ).fetchall()[0]
    # one sweep of every lot: what expires each month (none: never), and the expiries due
    # but not written yet, which the ledger's sum does not show
    schedule, never, unwritten = [], 0, 0
    for month, left, due in swept(
        con,
        now,
        None,
        "SELECT strftime(date_trunc('month', s.expires_at), '%Y-%m'), "
        f"coalesce(sum(s.remaining), 0), coalesce(sum({UNWRITTEN}), 0) "
        "FROM {s} GROUP BY 1 ORDER BY 1 NULLS LAST",
    ):
        unwritten += int(due)
        if month is None:
            never = int(left)
        elif left > 0:
            schedule.append(
                {"month": month, "points": int(left), "value": round(left * rules.value, 2)}
            )
    spendable = int(spendable - unwritten)
    flows = [
        {
            "flow": flow,
            "points": int(points),
            "last_12_months": int(last or 0),
            "entries": int(n),
        }
        for flow, points, last, n in con.execute(FLOWS_SQL, {"now": now}).fetchall()
    ]
    by_flow = {f["flow"]: f for f in flows}
    redeemed = -by_flow.get("redeem", {}).get("points", 0)
    rewards = by_flow.get("referral", {}).get("points", 0)
    tiers = []
    counts = dict(con.execute("SELECT tier, count(*) FROM loyalty_members GROUP BY 1").fetchall())
    graced = dict(
        con.execute(
            "SELECT tier, count(*) FROM loyalty_members "
            "WHERE tier IS DISTINCT FROM qualifies_for AND tier IS NOT NULL GROUP BY 1"
        ).fetchall()
    )
    for tier in rules.tiers:
        tiers.append(
            {
                "tier": tier.name,
                "threshold": tier.threshold,
                "members": int(counts.get(tier.name, 0)),
                "in_grace": int(graced.get(tier.name, 0)),
                **tier.benefits(),
            }
        )
    counted = {"rewarded": 0, "waiting": 0, "refused": 0}
    reasons: dict[str, int] = {}
    for status, reason, n in con.execute(
        "SELECT status, reason, count(*) FROM loyalty_referrals GROUP BY ALL ORDER BY 3 DESC"
    ).fetchall():
        counted[status] = counted.get(status, 0) + int(n)
        if status == "refused":
            reasons[reason] = int(n)
    referrals: dict[str, Any] = {**counted, "reasons": reasons}
    return {
        "clock": now.isoformat(sep=" ", timespec="seconds"),
        "rules": rules.source,
        "point_value": rules.value,
        "customers": int(customers),
        "liability": {
            "points": spendable + int(pending),
            "spendable": spendable,
            "pending": int(pending),
            "value": round((spendable + int(pending)) * rules.value, 2),
            "never_expires": int(never),
            "expiring": schedule,
        },
        "flows": flows,
        "cost": {
            # points turned into money off, and those still to be: a referral reward is
            # counted once, as it is redeemed or while it is outstanding
            "points_redeemed": redeemed,
            "redeemed_value": round(redeemed * rules.value, 2),
            "outstanding_value": round((spendable + int(pending)) * rules.value, 2),
            "total": round((redeemed + spendable + int(pending)) * rules.value, 2),
            "referral_points_given": rewards,
            "referral_value_given": round(rewards * rules.value, 2),
        },
        "tiers": tiers,
        "referrals": referrals,
        "effect": programme_effect(store),
    }
