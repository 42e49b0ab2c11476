"""Who a campaign is due for at a moment, each firing with a stable key.

:func:`customer_fields` reads every customer's row once (segment and churn risk from
:func:`retain.segments.customer_segments`, the kept model's scores, the contact
columns); :func:`due` gives, for one campaign, the customers its trigger fires for at
``today`` and the key of each firing. A key names the occurrence (``order:1001``,
``birthday:2025``, ``overdue:2025-10-02``, the day of the last order the customer is
overdue after), so a rerun, or a run a minute later, finds the same keys and sends
nothing new.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd

from retain.campaigns.definitions import Audience, Campaign
from retain.feedback import COMPLAINT_SQL
from retain.store import Store

SCORE_FIELDS = (
    "clv_12m",
    "expected_purchases_90d",
    "next_purchase_date",
    "next_purchase_window_start",
    "next_purchase_window_end",
)
CONTACT_FIELDS = ("email", "name", "birthday", "timezone", "locale", "accepts_marketing")
LOYALTY_FIELDS = (
    "tier",
    "points",
    "referral_code",
    "tier_discount",
    "free_shipping",
    "early_access",
)
"""From the latest ``retain loyalty build`` (empty before one): the tier and its benefits,
the spendable points, the referral code."""


def customer_fields(store: Store) -> pd.DataFrame:
    """One row per customer with an order: the segment columns, the kept scores
    (:data:`SCORE_FIELDS`, when ``retain score`` ran) and the contact columns
    (:data:`CONTACT_FIELDS`), indexed by customer_id."""
    from retain.schema import CUSTOMERS
    from retain.segments import customer_segments

    store.require_orders()
    frame = customer_segments(store)
    if store.has_table("customer_scores"):
        held = set(store.query("SELECT * FROM customer_scores LIMIT 0").columns)
        wanted = [c for c in SCORE_FIELDS if c in held and c not in frame]
        if wanted:
            scores = store.query(
                f"SELECT customer_id, {', '.join(wanted)} FROM customer_scores"
            ).set_index("customer_id")
            frame = frame.join(scores, how="left")
    contact = [c for c in CONTACT_FIELDS if c in CUSTOMERS.column_names]
    people = store.query(f"SELECT customer_id, {', '.join(contact)} FROM customers").set_index(
        "customer_id"
    )
    frame = frame.join(people[[c for c in people.columns if c not in frame]], how="left")
    frame = frame.join(_loyalty(store), how="left")
    for column in SCORE_FIELDS + CONTACT_FIELDS + LOYALTY_FIELDS:
        if column not in frame:
            frame[column] = pd.NA
    frame.index.name = "customer_id"
    return frame


def _loyalty(store: Store) -> pd.DataFrame:
    """:data:`LOYALTY_FIELDS` per customer, from ``loyalty_members`` and the rules."""
    if not store.has_table("loyalty_members") or not store.scalar(
        "SELECT count(*) FROM loyalty_builds"
    ):
        return pd.DataFrame(index=pd.Index([], name="customer_id"))
    from retain.loyalty.build import current_rules

    frame = store.query(
        "SELECT customer_id, tier, balance AS points, code AS referral_code FROM loyalty_members"
    ).set_index("customer_id")
    benefits = {t.name: t.benefits() for t in current_rules(store).tiers}
    for key, column in (
        ("discount", "tier_discount"),
        ("free_shipping", "free_shipping"),
        ("early_access", "early_access"),
    ):
        frame[column] = frame["tier"].map({name: b[key] for name, b in benefits.items()})
    return frame


def _numbers(values: pd.Series) -> pd.Series:
    """A column as floats, a missing value (no scores yet) as NaN."""
    return pd.to_numeric(values, errors="coerce").astype("float64")


def in_audience(frame: pd.DataFrame, audience: Audience) -> np.ndarray:
    """Which rows of :func:`customer_fields` the audience holds (every condition)."""
    keep = np.ones(len(frame), dtype=bool)
    if audience.segments:
        keep &= frame["segment"].isin(audience.segments).to_numpy()
    if audience.churn_risk:
        keep &= frame["churn_risk"].isin(audience.churn_risk).to_numpy()
    if audience.min_p_alive is not None:
        keep &= (_numbers(frame["p_alive"]) >= audience.min_p_alive).fillna(False).to_numpy()
    if audience.min_clv is not None:
        clv = _numbers(frame["clv_12m"])
        keep &= (clv >= audience.min_clv).fillna(False).to_numpy()
    if audience.min_orders is not None:
        keep &= (frame["orders"] >= audience.min_orders).to_numpy()
    if audience.max_orders is not None:
        keep &= (frame["orders"] <= audience.max_orders).to_numpy()
    return keep


def due(
    store: Store,
    frame: pd.DataFrame,
    campaign: Campaign,
    today: dt.date,
    now_local: dt.datetime,
    previous: pd.Series | None = None,
) -> pd.DataFrame:
    """The customers ``campaign`` fires for on ``today`` (the store's day) and in its
    audience: columns ``customer_id`` and ``trigger_key``, one row per firing. A firing
    up to ``catch_up_days`` old still counts, so a run missed for a day or two sends it
    late rather than never; its key is the same whichever day it is found.
    ``previous``: each customer's segment as the previous run saw it (:func:`segment_history`;
    None before the first run, when the segment triggers fire for no one)."""
    kind, options = campaign.trigger.kind, campaign.trigger.options
    first = today - dt.timedelta(days=campaign.catch_up_days)
    audience = frame[in_audience(frame, campaign.audience)]
    ids = audience.index
    if kind == "post_purchase":
        return _post_purchase(store, audience, int(options["days"]), first, today)
    if kind == "broadcast":
        at = options["at"]
        if at.tzinfo is not None:
            at = at.astimezone(now_local.tzinfo).replace(tzinfo=None)
        local = now_local.replace(tzinfo=None)
        if not at <= local <= at + dt.timedelta(days=campaign.catch_up_days or 1):
            return _rows([], [])
        return _rows(list(ids), [f"broadcast:{at.isoformat(timespec='minutes')}"] * len(ids))
    if kind in ("segment_entered", "segment_left"):
        if previous is None:
            return _rows([], [])
        target = options["segment"]
        before = previous.reindex(ids)
        now_in = audience["segment"] == target
        was_in = before == target
        moved = (now_in & ~was_in) if kind == "segment_entered" else (~now_in & was_in)
        hit = moved.fillna(False).to_numpy(dtype=bool)
        word = "into" if kind == "segment_entered" else "out-of"
        return _rows(ids[hit], [f"segment:{word}:{target}:{today}"] * int(hit.sum()))
    if kind in ("tier_entered", "tier_left"):
        return _tier_moves(store, ids, kind, options["tier"], first, today)
    if kind in FEEDBACK_TRIGGERS:
        return feedback_firings(store, ids, kind, options.get("topics", ()), first, today)
    if kind in EVENT_TRIGGERS:
        now = now_local
        if now.tzinfo is not None:  # events are dated in UTC
            now = now.astimezone(dt.UTC).replace(tzinfo=None)
        return event_firings(store, ids, kind, float(options["hours"]), first, now)
    last = _days(audience["last_order_at"])
    day, earliest = pd.Timestamp(today), pd.Timestamp(first)
    if kind == "next_purchase_window":
        start = _days(audience["next_purchase_window_start"])
        hit = ((start >= earliest) & (start <= day)).to_numpy()
        return _rows(ids[hit], "window:" + start[hit].dt.strftime("%Y-%m-%d"))
    if kind == "overdue":
        gap = audience["typical_gap_days"].astype("float64")
        waited = (day - last).dt.days
        hit = ((gap > 0) & (waited >= options["factor"] * gap)).fillna(False).to_numpy()
        return _rows(ids[hit], "overdue:" + last[hit].dt.strftime("%Y-%m-%d"))
    if kind == "churn_risk":
        risk = audience["churn_risk"]
        hit = risk.isin(options["levels"]).fillna(False).to_numpy()
        keys = "risk:" + risk[hit].astype(str) + ":" + last[hit].dt.strftime("%Y-%m-%d")
        return _rows(ids[hit], keys)
    if kind in ("birthday", "anniversary"):
        born = _days(audience["birthday"] if kind == "birthday" else audience["first_order_at"])
        parts = []
        for year in sorted({first.year, today.year}):
            when = _in_year(born, year)
            inside = (when >= earliest) & (when <= day)
            if kind == "anniversary":
                inside &= born.dt.year < year
            chosen = inside.fillna(False).to_numpy(dtype=bool)
            parts.append(_rows(ids[chosen], [f"{kind}:{year}"] * int(chosen.sum())))
        return pd.concat(parts, ignore_index=True)
    raise AssertionError(f"unknown trigger {kind}")  # definitions checks the kinds


def _tier_moves(
    store: Store, ids: pd.Index, kind: str, tier: str, first: dt.date, today: dt.date
) -> pd.DataFrame:
    """The customers of ``ids`` a loyalty build moved into (or out of) ``tier`` between
    ``first`` and ``today``; one firing per move, keyed by its day."""
    if not store.has_table("loyalty_tier_changes"):
        return _rows([], [])
    column = "to_tier" if kind == "tier_entered" else "from_tier"
    moves = store.query(
        f"SELECT customer_id, CAST(changed_at AS DATE) AS day FROM loyalty_tier_changes "
        f"WHERE {column} = ? AND CAST(changed_at AS DATE) BETWEEN ? AND ?",
        [tier, first, today],
    )
    moves = moves[moves["customer_id"].isin(ids)].drop_duplicates()
    word = "into" if kind == "tier_entered" else "out-of"
    keys = [f"tier:{word}:{tier}:{day}" for day in moves["day"]]
    return _rows(moves["customer_id"].tolist(), keys)


FEEDBACK_TRIGGERS = ("detractor", "complaint")
EVENT_TRIGGERS = ("cart_abandoned", "browse_abandoned")
#: the events that make a firing of each, and later ones that cancel it (beside an order)
_EVENT_KINDS = {
    "cart_abandoned": (("add_to_cart", "checkout_started"), ()),
    "browse_abandoned": (("product_view",), ("add_to_cart", "checkout_started")),
}
_EVENT_FIRINGS = """
WITH latest AS (
    SELECT customer_id, max(occurred_at) AS at FROM events
    WHERE customer_id IS NOT NULL AND list_contains($kinds, kind)
    GROUP BY customer_id
)
SELECT l.customer_id, l.at FROM latest l
WHERE l.at <= $ripe AND l.at >= $first
  AND NOT EXISTS (SELECT 1 FROM orders o
                  WHERE o.customer_id = l.customer_id AND o.ordered_at >= l.at)
  AND NOT EXISTS (SELECT 1 FROM events e WHERE e.customer_id = l.customer_id
                  AND e.occurred_at > l.at AND list_contains($later, e.kind))
ORDER BY l.at, l.customer_id
"""


def event_firings(
    store: Store,
    ids: pd.Index,
    kind: str,
    hours: float,
    first: dt.date,
    now: dt.datetime,
) -> pd.DataFrame:
    """The customers of ``ids`` whose cart (``cart_abandoned``) or product view
    (``browse_abandoned``) is ``hours`` old with no order since (and, for a view, no cart
    since), from ``first`` on: one firing per cart or view, keyed by its time, so a new
    cart fires again."""
    if not store.has_table("events"):
        return _rows([], [])
    kinds, later = _EVENT_KINDS[kind]
    found = store.con.execute(
        _EVENT_FIRINGS,
        {
            "kinds": list(kinds),
            "later": list(later) or [""],
            "ripe": now - dt.timedelta(hours=hours),
            "first": dt.datetime.combine(first, dt.time()),
        },
    ).fetchall()
    wanted = set(map(str, ids))
    hits = [(str(c), at) for c, at in found if str(c) in wanted]
    word = "cart" if kind == "cart_abandoned" else "browse"
    return _rows([c for c, _ in hits], [f"{word}:{at:%Y-%m-%dT%H:%M:%S}" for _, at in hits])


_FEEDBACK_FIRINGS = f"""
SELECT CAST(f.customer_id AS VARCHAR) AS customer_id, 'feedback:' || f.feedback_id AS trigger_key
FROM feedback f JOIN feedback_tags t USING (feedback_id)
WHERE CAST(f.created_at AS DATE) BETWEEN $first AND $today
  AND ($customer IS NULL OR f.customer_id = $customer)
  AND CASE WHEN $kind = 'detractor' THEN f.nps <= 6
           ELSE {COMPLAINT_SQL}
                AND (len($topics) = 0 OR len(list_intersect(t.topics, $topics)) > 0) END
ORDER BY f.created_at, f.feedback_id
"""


def feedback_firings(
    store: Store,
    ids: pd.Index | None,
    kind: str,
    topics: tuple[str, ...],
    first: dt.date,
    today: dt.date,
) -> pd.DataFrame:
    """The survey answers, reviews and tickets dated ``first`` to ``today`` that fire a
    detractor or complaint trigger, of the customers ``ids`` (one of them when it holds
    one; everyone's when None): one firing per text, keyed by its id."""
    if not store.has_table("feedback_tags"):
        return _rows([], [])
    one = str(ids[0]) if ids is not None and len(ids) == 1 else None
    found = store.con.execute(
        _FEEDBACK_FIRINGS,
        {"first": first, "today": today, "kind": kind, "topics": list(topics), "customer": one},
    ).fetch_df()
    if ids is not None and one is None:
        found = found[found["customer_id"].isin(ids)]
    return _rows(found["customer_id"].tolist(), found["trigger_key"].tolist())


def feedback_context(store: Store, keys: dict[str, str]) -> dict[str, dict[str, Any]]:
    """For messages keyed by firing (``keys``: message key -> trigger key ``feedback:ID``):
    what the template's ``feedback`` shows (:func:`retain.feedback.said`)."""
    from retain.feedback import said

    ids = {k: v.removeprefix("feedback:") for k, v in keys.items() if v.startswith("feedback:")}
    if not ids:
        return {}
    rows = store.con.execute(
        "SELECT f.*, coalesce(f.csat, f.stars) AS rating, t.topics, t.sentiment "
        "FROM feedback f LEFT JOIN feedback_tags t USING (feedback_id) "
        "WHERE f.feedback_id IN (SELECT unnest($ids))",
        {"ids": sorted(set(ids.values()))},
    ).fetch_df()
    by_id = {str(r["feedback_id"]): said(r) for r in rows.to_dict(orient="records")}
    return {key: by_id[fid] for key, fid in ids.items() if fid in by_id}


def segment_history(store: Store) -> pd.Series | None:
    """Each customer's segment as the latest campaign run saw it (None before the first)."""
    if not store.has_table("campaign_segments") or not store.scalar(
        "SELECT count(*) FROM campaign_segments"
    ):
        return None
    kept = store.query("SELECT customer_id, segment FROM campaign_segments")
    return kept.set_index("customer_id")["segment"]


def keep_segments(store: Store, frame: pd.DataFrame, today: dt.date) -> int:
    """Keep each customer's segment of ``frame`` with the day it was first seen there, for
    the next run's segment triggers; returns how many customers moved (or are new)."""
    current = pd.DataFrame(
        {"customer_id": frame.index.astype(str), "segment": frame["segment"].astype(str)}
    )
    with store.transaction() as con:
        con.register("_segments_now", current)
        try:
            moved = con.execute(
                """SELECT count(*) FROM _segments_now n LEFT JOIN campaign_segments k
                   USING (customer_id) WHERE k.segment IS DISTINCT FROM n.segment"""
            ).fetchall()[0][0]
            con.execute(
                """
                INSERT OR REPLACE INTO campaign_segments
                SELECT n.customer_id, n.segment, $today
                FROM _segments_now n LEFT JOIN campaign_segments k USING (customer_id)
                WHERE k.segment IS DISTINCT FROM n.segment
                """,
                {"today": today},
            )
        finally:
            con.unregister("_segments_now")
    return int(moved)


def _rows(ids: Any, keys: Any) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": np.asarray(ids, dtype=object).astype(str),
            "trigger_key": np.asarray(keys, dtype=object).astype(str),
        }
    )


def _days(values: pd.Series) -> pd.Series:
    """Midnight of each value's day (a date, a time or missing: NaT)."""
    return pd.to_datetime(values, errors="coerce").dt.normalize()


def _in_year(days: pd.Series, year: int) -> pd.Series:
    """Each day's month and day in ``year`` (29 February on the 28th in other years)."""
    month, day = days.dt.month, days.dt.day
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    if not leap:
        day = day.where(~((month == 2) & (day == 29)), 28)
    return pd.to_datetime(pd.DataFrame({"year": year, "month": month, "day": day}), errors="coerce")


def _post_purchase(
    store: Store, audience: pd.DataFrame, days: int, first: dt.date, today: dt.date
) -> pd.DataFrame:
    """Orders placed ``days`` days before a day from ``first`` to ``today``."""
    from retain.config import load_settings

    zone = load_settings(store).time_zone
    found = store.con.execute(
        """
        SELECT customer_id, order_id
        FROM orders
        WHERE CAST(timezone($zone, CAST(ordered_at AS TIMESTAMPTZ)) AS DATE)
              BETWEEN $first AND $last
        ORDER BY ordered_at, order_id
        """,
        {
            "zone": zone,
            "first": first - dt.timedelta(days=days),
            "last": today - dt.timedelta(days=days),
        },
    ).fetchall()
    members = set(audience.index)
    rows = [(cid, f"order:{oid}") for cid, oid in found if cid in members]
    return _rows([r[0] for r in rows], [r[1] for r in rows])
