"""``retain loyalty build``: the ledger from the store's orders, under the rules.

Each build adds what the orders, refunds, birthdays and referrals up to the clock
(:func:`retain.loyalty.ledger.clock`) call for and the ledger does not hold yet, keyed
so that a second build adds nothing (the ledger is append-only: entries written under
earlier rules stay). Then it writes the expiries due, and each customer's balance, tier
and referral code (``loyalty_members``), and the tier changes since the last build.

- **Earn** (``earn/ORDER``): ``per_unit`` points per unit of the order's net revenue
  before refunds, rounded down, plus ``per_order``; pending for ``pending_days`` (the
  return window), then spendable for ``expire_months``. An order refunded in full (kept
  out of ``orders`` as not a purchase) earns nothing; one refunded in full after it
  earned loses what is left of its points, if within its window.
- **Reverse** (``reverse/ORDER/to-N``: N points taken back in all): a refund within the
  order's return window takes back points in proportion (the order's points times the
  share of its net revenue refunded so far, rounded, less what was taken back before). A
  refund after the window takes nothing back: those points were confirmed. A refund
  counts at its own time when the ledger learns of it with the order, else from the
  build that learns of it: one ingested after the window takes nothing back, so no
  refund can take back points the customer may have spent.
- **Birthday** (``birthday/CUSTOMER/YEAR``): ``bonus.birthday`` points on each birthday
  after the customer's first order.
- **Referrals** (:mod:`retain.loyalty.referrals`).
- **Tiers**: the highest tier whose threshold the customer's trailing-12-month net
  spend (or points earned, ``basis = "points"``) reached at any moment of the last
  ``grace_days``: a customer who falls below keeps the tier that long.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import time
from dataclasses import dataclass, field
from typing import Any

from retain.errors import DataError
from retain.loyalty.ledger import clock, expire_due
from retain.loyalty.rules import LoyaltyRules, load_rules, parse_rules
from retain.store import Store

EPSILON = 1e-9  # 29.999999999 of net revenue is 30 points, not 29

# What an order was worth before its refunds: the purchases, and the orders refunded in
# full since (kept out of orders as not purchases)
PURCHASES_SQL = """
SELECT order_id, customer_id, ordered_at, net_revenue + coalesce(refunded, 0) AS base
FROM orders WHERE ordered_at <= $now
UNION ALL
SELECT order_id, customer_id, ordered_at, net_revenue + coalesce(refunded, 0)
FROM excluded_orders WHERE status = 'refunded' AND ordered_at <= $now
"""

# The orders that earn: purchases, and orders refunded in full only after their return
# window (their points were confirmed before the refund)
EARN_SQL = f"""
INSERT INTO loyalty_ledger
SELECT 'earn/' || p.order_id, p.customer_id, 'earn', p.points, p.ordered_at,
       p.ordered_at + to_days(CAST($pending AS INTEGER)),
       CASE WHEN $expire > 0 THEN p.ordered_at + to_days(CAST($pending AS INTEGER))
                                  + to_months(CAST($expire AS INTEGER)) END,
       NULL, p.order_id, NULL, now()::TIMESTAMP, 'build'
FROM (
    SELECT *, CAST(floor($per_unit * greatest(base, 0) + {EPSILON}) AS BIGINT)
              + CAST($per_order AS BIGINT) AS points
    FROM (
        SELECT order_id, customer_id, ordered_at, net_revenue + coalesce(refunded, 0) AS base
        FROM orders WHERE ordered_at <= $now
        UNION ALL
        SELECT x.order_id, x.customer_id, x.ordered_at,
               x.net_revenue + coalesce(x.refunded, 0)
        FROM excluded_orders x
        JOIN (SELECT order_id, min(refunded_at) AS first FROM order_refunds GROUP BY ALL) r
            USING (order_id)
        WHERE x.status = 'refunded' AND x.ordered_at <= $now
          AND r.first >= x.ordered_at + to_days(CAST($pending AS INTEGER))
    )
) p
WHERE p.points > 0 AND NOT EXISTS (
    SELECT 1 FROM loyalty_ledger l WHERE l.entry_id = 'earn/' || p.order_id)
"""

# When a refund counts: at its own time when the ledger learns of it with the order (the
# same build), else at the build that learns of it (a refund ingested late cannot take
# back points the customer may have spent since)
COUNTED_AT = (
    "CASE WHEN {earn}.recorded_at < now()::TIMESTAMP THEN greatest({at}, $now) ELSE {at} END"
)

# The refunds that count within an order's return window take back its share of the
# order's points: round(points x refunded so far / base) in all, less what was taken back
# before. Keyed by that total, so the same refunds read again (a file ingested again, its
# rows moved) take nothing more. A refund given in the order row without a refund row of
# its own is dated at the order's time.
REVERSE_SQL = f"""
INSERT INTO loyalty_ledger
WITH purchases AS ({PURCHASES_SQL}),
refunds AS (
    SELECT r.order_id, r.refunded_at AS happened_at, r.amount,
           r.source_file || ':' || r.row_number AS refund
    FROM order_refunds r
    UNION ALL
    SELECT p.order_id, p.ordered_at, p.refunded - coalesce(k.amount, 0), ''
    FROM (SELECT order_id, ordered_at, coalesce(refunded, 0) AS refunded FROM orders
          UNION ALL
          SELECT order_id, ordered_at, coalesce(refunded, 0) FROM excluded_orders
          WHERE status = 'refunded') p
    LEFT JOIN (SELECT order_id, sum(amount) AS amount FROM order_refunds GROUP BY ALL) k
        USING (order_id)
    WHERE p.refunded - coalesce(k.amount, 0) > {EPSILON}
),
earned AS (
    SELECT e.entry_id AS lot, e.customer_id, e.order_id, e.points, e.available_at,
           e.recorded_at, coalesce(sum(v.points), 0) AS taken
    FROM loyalty_ledger e
    LEFT JOIN loyalty_ledger v ON v.lot = e.entry_id AND v.kind = 'reverse'
    WHERE e.kind = 'earn' AND e.order_id IN (SELECT order_id FROM refunds)
    GROUP BY e.entry_id, e.customer_id, e.order_id, e.points, e.available_at, e.recorded_at
),
steps AS (
    SELECT d.*, p.base,
           {COUNTED_AT.format(earn="d", at="f.happened_at")} AS counted_at,
           sum(f.amount) OVER (PARTITION BY f.order_id ORDER BY f.happened_at, f.refund
                               ROWS UNBOUNDED PRECEDING) AS so_far
    FROM refunds f JOIN purchases p USING (order_id) JOIN earned d USING (order_id)
    WHERE p.base > 0
),
targets AS (
    SELECT lot, customer_id, order_id, available_at, taken,
           max(CAST(round(points * least(1, so_far / base)) AS BIGINT)) AS target,
           max(counted_at) AS counted_at
    FROM steps WHERE counted_at < available_at AND counted_at <= $now
    GROUP BY ALL
)
SELECT 'reverse/' || order_id || '/to-' || target, customer_id, 'reverse', -(target + taken),
       counted_at, available_at, NULL, lot, order_id, 'refund', now()::TIMESTAMP, 'build'
FROM targets t
WHERE target + taken > 0 AND NOT EXISTS (
    SELECT 1 FROM loyalty_ledger l WHERE l.entry_id = 'reverse/' || t.order_id || '/to-' || t.target)
"""

# An order refunded in full after it earned (now kept out of orders) loses what is left of
# its points, when that refund counts within its return window (its refund rows' last, or,
# without one, its own time; as COUNTED_AT)
IN_FULL_SQL = f"""
INSERT INTO loyalty_ledger
WITH gone AS (
    SELECT x.order_id, coalesce(r.refunded_at, x.ordered_at) AS refunded_at
    FROM excluded_orders x
    LEFT JOIN (SELECT order_id, max(refunded_at) AS refunded_at FROM order_refunds
               GROUP BY ALL) r USING (order_id)
    WHERE x.status = 'refunded'
),
remaining AS (
    SELECT e.entry_id AS lot, e.customer_id, e.available_at, e.order_id, e.recorded_at,
           e.points + coalesce(sum(v.points), 0) AS points
    FROM loyalty_ledger e
    LEFT JOIN loyalty_ledger v ON v.lot = e.entry_id AND v.kind = 'reverse'
    WHERE e.kind = 'earn' AND e.order_id IN (SELECT order_id FROM gone)
    GROUP BY e.entry_id, e.customer_id, e.available_at, e.order_id, e.recorded_at, e.points
),
counted AS (
    SELECT m.*, {COUNTED_AT.format(earn="m", at="g.refunded_at")} AS counted_at
    FROM remaining m JOIN gone g USING (order_id)
)
SELECT 'reverse/' || order_id || '/in-full', customer_id, 'reverse', -points, counted_at,
       available_at, NULL, lot, order_id, 'refunded in full', now()::TIMESTAMP, 'build'
FROM counted c
WHERE points > 0 AND counted_at < available_at AND counted_at <= $now
  AND NOT EXISTS (
      SELECT 1 FROM loyalty_ledger l WHERE l.entry_id = 'reverse/' || c.order_id || '/in-full')
"""

BIRTHDAY_SQL = """
INSERT INTO loyalty_ledger
WITH firsts AS (
    SELECT customer_id, min(ordered_at) AS first FROM orders WHERE ordered_at <= $now GROUP BY ALL
),
days AS (
    SELECT c.customer_id, y.year,
           -- 29 February is kept on 28 February in other years
           make_timestamp(y.year, month(c.birthday),
                          least(day(c.birthday),
                                day(last_day(make_date(y.year, month(c.birthday), 1)))),
                          0, 0, 0) AS happened_at
    FROM customers c JOIN firsts f USING (customer_id),
         LATERAL (SELECT unnest(range(year(f.first), year($now) + 1)) AS year) y
    WHERE c.birthday IS NOT NULL
)
SELECT 'birthday/' || d.customer_id || '/' || d.year, d.customer_id, 'bonus',
       CAST($points AS BIGINT), d.happened_at, d.happened_at,
       CASE WHEN $expire > 0 THEN d.happened_at + to_months(CAST($expire AS INTEGER)) END,
       NULL, NULL, 'birthday', now()::TIMESTAMP, 'build'
FROM days d JOIN firsts f USING (customer_id)
WHERE d.happened_at > f.first AND d.happened_at <= $now AND NOT EXISTS (
    SELECT 1 FROM loyalty_ledger l WHERE l.entry_id = 'birthday/' || d.customer_id || '/' || d.year)
"""

# Each customer's trailing-12-month amount (net spend, or points earned) at the clock and
# its highest at any moment of the grace period: at its start, or just after an order.
QUALIFIED_SQL = """
WITH amounts AS (
    SELECT * FROM ({amounts}) WHERE happened_at > $start - INTERVAL 12 MONTH
),
sums AS (
    SELECT customer_id,
           coalesce(sum(amount) FILTER (WHERE happened_at > $now - INTERVAL 12 MONTH), 0)
               AS current,
           coalesce(sum(amount) FILTER (WHERE happened_at <= $start), 0) AS at_start
    FROM amounts GROUP BY ALL
),
peaks AS (
    SELECT customer_id, max(trailing_sum) AS peak FROM (
        SELECT customer_id, happened_at,
               sum(amount) OVER (PARTITION BY customer_id ORDER BY happened_at
                                 RANGE BETWEEN INTERVAL 12 MONTH PRECEDING AND CURRENT ROW)
                   AS trailing_sum
        FROM amounts
    ) WHERE happened_at > $start GROUP BY ALL
)
SELECT customer_id, current, greatest(current, at_start, coalesce(peak, 0)) AS qualified
FROM sums LEFT JOIN peaks USING (customer_id)
"""
SPEND_AMOUNTS = "SELECT customer_id, ordered_at AS happened_at, net_revenue AS amount FROM orders WHERE ordered_at <= $now"
POINT_AMOUNTS = (
    "SELECT customer_id, happened_at, points AS amount FROM loyalty_ledger "
    "WHERE kind IN ('earn', 'bonus', 'referral', 'reverse') AND happened_at <= $now"
)


@dataclass
class BuildReport:
    """What a build added, by kind, and where the programme stands after it."""

    clock: str
    rules: str
    added: dict[str, int] = field(default_factory=dict)
    members: int = 0
    tiers: dict[str, int] = field(default_factory=dict)
    tier_changes: int = 0
    referrals: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "clock": self.clock,
            "rules": self.rules,
            "added": self.added,
            "members": self.members,
            "tiers": self.tiers,
            "tier_changes": self.tier_changes,
            "referrals": self.referrals,
            "seconds": round(self.seconds, 2),
        }


def current_rules(store: Store, *, required: bool = False) -> LoyaltyRules:
    """The rules of the latest build (the defaults before any; ``required``: refused
    before any, as there is no ledger to read)."""
    found = store.con.execute(
        "SELECT rules, source FROM loyalty_builds ORDER BY built_at DESC LIMIT 1"
    ).fetchall()
    if found:
        return _parsed(found[0][0], found[0][1])
    if required:
        raise DataError(
            "no loyalty ledger in this store yet",
            expected=f"`retain loyalty build --db {store.path}` first",
        )
    return load_rules()


@functools.lru_cache(maxsize=8)
def _parsed(text: str, source: str) -> LoyaltyRules:
    return parse_rules(text, source)


def check_clock(store: Store, now: dt.datetime) -> None:
    """Refuse to write at a clock before the latest build's: the ledger already holds
    what happened up to then, and reading it from an earlier moment would count points
    spent later as still there."""
    last = store.con.execute("SELECT max(clock) FROM loyalty_builds").fetchall()[0][0]
    if last is not None and now < last:
        raise DataError(
            f"the loyalty ledger was built to {last:%Y-%m-%d %H:%M}, after the store's clock "
            f"({now:%Y-%m-%d %H:%M}): it cannot be written at an earlier moment",
            expected=f"the as_of setting on or after {last:%Y-%m-%d} (retain settings set as_of)",
        )


def _count(con: Any, sql: str, params: dict[str, Any]) -> int:
    rows = con.execute(sql, params).fetchall()
    return int(rows[0][0]) if rows else 0


def build(store: Store, rules: LoyaltyRules | None = None) -> BuildReport:
    """Build the ledger up to the clock with ``rules`` (default: those of the last build,
    else the shipped defaults); one transaction: all of it or nothing. A clock before the
    latest build's is refused (:func:`check_clock`)."""
    from retain.loyalty.referrals import decide_referrals, member_codes

    started = time.perf_counter()
    store.require_orders()
    rules = rules or current_rules(store)
    now = clock(store)
    check_clock(store, now)
    report = BuildReport(clock=now.isoformat(sep=" ", timespec="seconds"), rules=rules.source)
    common = {"now": now, "expire": rules.expire_months}
    with store.transaction() as con:
        report.added["earn"] = _count(
            con,
            EARN_SQL,
            {
                **common,
                "pending": rules.pending_days,
                "per_unit": rules.per_unit,
                "per_order": rules.per_order,
            },
        )
        report.added["reverse"] = _count(con, REVERSE_SQL, {"now": now})
        report.added["reverse"] += _count(con, IN_FULL_SQL, {"now": now})
        report.added["birthday"] = (
            _count(con, BIRTHDAY_SQL, {**common, "points": rules.birthday}) if rules.birthday else 0
        )
        codes = member_codes(con, rules, now)
        referred = decide_referrals(con, rules, now)
        report.added["referral"] = referred.pop("added", 0)
        report.referrals = referred
        report.added["expire"] = expire_due(con, now, None)
        _members(con, rules, now, codes)
        report.tier_changes = _tier_changes(con, now)
        report.members = _count(con, "SELECT count(*) FROM loyalty_members", {})
        report.tiers = {
            str(name): int(n)
            for name, n in con.execute(
                "SELECT coalesce(tier, '(none)'), count(*) FROM loyalty_members GROUP BY 1 "
                "ORDER BY 2 DESC"
            ).fetchall()
        }
        report.seconds = time.perf_counter() - started
        con.execute(
            "INSERT INTO loyalty_builds VALUES (now()::TIMESTAMP, ?, ?, ?, ?, ?)",
            [
                now,
                rules.text,
                rules.source,
                sum(report.added.values()),
                json.dumps(report.to_dict()),
            ],
        )
    report.seconds = time.perf_counter() - started  # the commit included
    return report


def _members(con: Any, rules: LoyaltyRules, now: dt.datetime, codes: str) -> None:
    """``loyalty_members``: each customer's code, tier and spendable balance (for the
    campaign templates; a balance lookup reads the ledger)."""
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _previous AS SELECT customer_id, tier, tier_since "
        "FROM loyalty_members"
    )
    grace_start = now - dt.timedelta(days=rules.grace_days)
    amounts = SPEND_AMOUNTS if rules.basis == "spend" else POINT_AMOUNTS
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _qualified AS " + QUALIFIED_SQL.format(amounts=amounts),
        {"now": now, "start": grace_start},
    )
    tiers = sorted(rules.tiers, key=lambda t: -t.threshold)

    def tier_case(column: str) -> str:
        if not tiers:
            return "NULL"
        whens = " ".join(
            f"WHEN coalesce({column}, 0) >= {t.threshold!r} - {EPSILON} THEN '{_sql_text(t.name)}'"
            for t in tiers
        )
        return f"CASE {whens} END"

    con.execute("DELETE FROM loyalty_members")
    con.execute(
        f"""
        INSERT INTO loyalty_members
        WITH points AS (
            SELECT customer_id, sum(points) AS balance
            FROM loyalty_ledger WHERE happened_at <= $now AND available_at <= $now GROUP BY ALL
        ),
        fresh AS (
            SELECT c.customer_id, c.code, {tier_case("q.qualified")} AS tier,
                   {tier_case("q.current")} AS qualifies_for, coalesce(q.qualified, 0) AS qualified,
                   coalesce(p.balance, 0) AS balance
            FROM {codes} c
            LEFT JOIN _qualified q USING (customer_id)
            LEFT JOIN points p USING (customer_id)
        )
        SELECT f.*,
               CASE WHEN f.tier IS NULL THEN NULL
                    WHEN f.tier IS NOT DISTINCT FROM v.tier THEN v.tier_since ELSE $now END
        FROM fresh f LEFT JOIN _previous v USING (customer_id)
        ORDER BY f.customer_id
        """,
        {"now": now},
    )


def _tier_changes(con: Any, now: dt.datetime) -> int:
    """Record who entered or left a tier since the last build (the first build records
    everyone's entry into their tier)."""
    return _count(
        con,
        """
        INSERT INTO loyalty_tier_changes
        SELECT m.customer_id, p.tier, m.tier, $now
        FROM loyalty_members m LEFT JOIN _previous p USING (customer_id)
        WHERE m.tier IS DISTINCT FROM p.tier AND (m.tier IS NOT NULL OR p.tier IS NOT NULL)
        """,
        {"now": now},
    )


def _sql_text(text: str) -> str:
    return text.replace("'", "''")
