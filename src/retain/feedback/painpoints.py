"""The pain points: each topic customers complain of, ranked by the value at risk.

A customer *raises* a topic when a text of theirs speaks of it in a tone that is not
positive ("delivery was quick" praises delivery; it raises nothing). Per topic:

- ``mentions`` (texts raising it), ``customers`` (distinct), ``praise`` (positive texts
  on it), ``negative_share`` (negative texts among all on it), ``detractors`` (the share of
  its raisers' NPS answers from 0 to 6, None without any);
- ``trend``: its share of all feedback in the last :data:`TREND_DAYS` days against the
  :data:`TREND_DAYS` before: ``rising`` when at least 1.25 times as high (with at least
  :data:`TREND_MIN` mentions lately), ``falling`` when at most 0.8, else ``steady``;
- ``churn_ratio``: how much more its raisers churn than comparable customers who did not
  raise it, measured on the store's own history. A raiser churned when they ordered
  nothing in the activity window (the store's ``window_days``, else its rhythm) after the
  day they first raised it; the comparison is every order day of a customer who had not
  raised it by then (did they order again within the window?), but for the order a
  raiser spoke after, whose outcome is theirs: customers who raise it later count until
  then, as anyone who lives longer has more chances to complain. Both sides within strata of how
  many order days the customer had by then (1, 2, 3, 4-5, 6-9, 10+), combined as a
  Mantel-Haenszel risk ratio with the Greenland-Robins 95% interval. Only days at least a
  window before the observation day count (the outcome must be known). With fewer than
  :data:`MIN_RAISERS` raisers so measured, the ratio is not said, and ``why`` says so;
- ``value_at_risk``: over its raisers, their predicted 12-month CLV (``retain score``)
  times their excess churn, ``(churn_ratio - 1)`` times the comparable customers' churn
  rate at their stage, within 0 and 1; with ``value_at_risk_low``/``_high`` from the
  interval. Topics are ranked by it, then by mentions.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from retain.errors import DataError

if TYPE_CHECKING:
    from retain.store import Store

TREND_DAYS = 90
TREND_MIN = 5
MIN_RAISERS = 10
Z95 = 1.959963984540054
STAGES = "CASE WHEN k <= 3 THEN k WHEN k <= 5 THEN 4 WHEN k <= 9 THEN 6 ELSE 10 END"
STAGE_NAMES = {1: "1", 2: "2", 3: "3", 4: "4-5", 6: "6-9", 10: "10+"}

_POINTS = f"""
WITH days AS (
    SELECT DISTINCT customer_id, CAST(ordered_at AS DATE) AS day FROM orders
    WHERE ordered_at < $end
), numbered AS (
    SELECT customer_id, day,
           row_number() OVER (PARTITION BY customer_id ORDER BY day) AS k,
           lead(day) OVER (PARTITION BY customer_id ORDER BY day) AS next_day
    FROM days
)
SELECT customer_id, day, {STAGES} AS stage,
       (next_day IS NULL OR date_diff('day', day, next_day) > $w)::INTEGER AS churned
FROM numbered
WHERE day + CAST($w AS INTEGER) <= $as_of
"""

_RAISERS = f"""
WITH days AS (
    SELECT DISTINCT customer_id, CAST(ordered_at AS DATE) AS day FROM orders
    WHERE ordered_at < $end
), counted AS (
    SELECT r.topic, r.customer_id, r.raised,
           count(d.day) FILTER (WHERE d.day <= r.raised) AS k,
           count(d.day) FILTER (
               WHERE d.day > r.raised AND d.day <= r.raised + CAST($w AS INTEGER)) AS later
    FROM _raisers r LEFT JOIN days d USING (customer_id)
    GROUP BY r.topic, r.customer_id, r.raised
)
SELECT topic, customer_id, raised, {STAGES} AS stage, k, later = 0 AS churned,
       raised + CAST($w AS INTEGER) <= $as_of AS known
FROM counted WHERE k > 0
"""


def risk_ratio(exposed: pd.DataFrame, unexposed: pd.DataFrame) -> tuple[float, float, float] | None:
    """The Mantel-Haenszel risk ratio and its Greenland-Robins 95% interval over strata:
    each frame has ``stage``, ``n`` and ``churned``; None when it cannot be said."""
    cells = exposed.merge(unexposed, on="stage", suffixes=("1", "0"), how="inner")
    cells = cells[(cells["n1"] > 0) & (cells["n0"] > 0)]
    if cells.empty:
        return None
    a, n1 = cells["churned1"].to_numpy(float), cells["n1"].to_numpy(float)
    c, n0 = cells["churned0"].to_numpy(float), cells["n0"].to_numpy(float)
    total = n1 + n0
    r = float(np.sum(a * n0 / total))
    s = float(np.sum(c * n1 / total))
    if r <= 0 or s <= 0:
        return None
    ratio = r / s
    variance = float(np.sum((n1 * n0 * (a + c) - a * c * total) / total**2)) / (r * s)
    spread = Z95 * math.sqrt(max(variance, 0.0))
    return ratio, ratio * math.exp(-spread), ratio * math.exp(spread)


def pain_points(
    store: Store, *, as_of: Any = None, window_days: int | None = None
) -> dict[str, Any]:
    """Every topic of the store's feedback as the module says, most value at risk first:
    ``{"as_of", "window_days", "window_rule", "feedback", "scored", "stale", "topics"}``."""
    from retain.feedback import store_taxonomy, tags_frame
    from retain.metrics._common import activity_window, observation

    if not store.has_table("feedback") or not store.scalar("SELECT count(*) FROM feedback"):
        raise DataError(
            f"the store {store.path} holds no feedback yet: ingest survey answers, reviews or "
            f"tickets (retain ingest feedback.csv --db {store.path})"
        )
    window = observation(store, as_of)
    active = activity_window(store, window, window_days)
    taxonomy = store_taxonomy(store)
    tags = tags_frame(store)
    stale = int(tags.attrs.get("stale", 0))
    tags = tags[tags["created_at"] < window.end].copy()
    tags["day"] = pd.to_datetime(tags["created_at"]).dt.date
    params = {"end": window.end, "w": active.days, "as_of": window.as_of}
    scored = store.has_table("customer_scores")
    clv = (
        store.con.execute("SELECT customer_id, clv_12m FROM customer_scores").fetch_df()
        if scored
        else pd.DataFrame({"customer_id": [], "clv_12m": []})
    )
    values: pd.Series = clv.set_index("customer_id")["clv_12m"]

    rows = []
    exploded = tags.explode("topics").dropna(subset=["topics"])
    raising = exploded[exploded["sentiment"] != "positive"]
    first = pd.DataFrame(
        raising.groupby(["topics", "customer_id"], as_index=False)["day"].min()
    ).rename(columns={"topics": "topic", "day": "raised"})
    outcomes = pd.DataFrame(columns=["topic", "customer_id", "stage", "churned", "known"])
    comparison = pd.DataFrame(columns=["topic", "stage", "n", "churned"])
    if not first.empty:
        store.con.register("_raisers", first)
        try:
            outcomes = store.con.execute(_RAISERS, params).fetch_df()
            comparison = store.con.execute(
                f"""WITH points AS ({_POINTS}),
                totals AS (SELECT stage, count(*) AS n, sum(churned) AS churned
                           FROM points GROUP BY stage),
                topics AS (SELECT DISTINCT topic FROM _raisers),
                days AS (SELECT DISTINCT customer_id, CAST(ordered_at AS DATE) AS day
                         FROM orders WHERE ordered_at < $end),
                firsts AS (SELECT topic, customer_id, min(raised) AS raised
                           FROM _raisers GROUP BY ALL),
                lasts AS (SELECT f.topic, f.customer_id, max(d.day) AS last
                          FROM firsts f JOIN days d USING (customer_id)
                          WHERE d.day <= f.raised GROUP BY ALL),
                theirs AS (SELECT r.topic, p.stage, count(*) AS n, sum(p.churned) AS churned
                           FROM points p JOIN lasts r USING (customer_id)
                           WHERE p.day >= r.last
                           GROUP BY r.topic, p.stage),
                SELECT t.topic, s.stage, s.n - coalesce(h.n, 0) AS n,
                       s.churned - coalesce(h.churned, 0) AS churned
                FROM topics t CROSS JOIN totals s
                LEFT JOIN theirs h ON h.topic = t.topic AND h.stage = s.stage""",
                params,
            ).fetch_df()
        finally:
            store.con.unregister("_raisers")

    recent_start = window.as_of - pd.Timedelta(days=TREND_DAYS).to_pytimedelta()
    before_start = recent_start - pd.Timedelta(days=TREND_DAYS).to_pytimedelta()
    in_recent = tags["day"] > recent_start
    in_before = (tags["day"] > before_start) & ~in_recent
    all_recent, all_before = int(in_recent.sum()), int(in_before.sum())

    for topic in taxonomy.topics.values():
        on = exploded[exploded["topics"] == topic.id]
        raised = on[on["sentiment"] != "positive"]
        if on.empty:
            continue
        customers = raised["customer_id"].unique()
        nps = raised["nps"].dropna()
        recent = int((raised["day"] > recent_start).sum())
        before = int(((raised["day"] > before_start) & (raised["day"] <= recent_start)).sum())
        trend = _trend(recent, before, all_recent, all_before)
        row: dict[str, Any] = {
            "topic": topic.id,
            "name": topic.name,
            "mentions": len(raised),
            "customers": len(customers),
            "praise": int((on["sentiment"] == "positive").sum()),
            "negative_share": float((on["sentiment"] == "negative").mean()),
            "detractors": float((nps <= 6).mean()) if len(nps) else None,
            "recent": recent,
            "before": before,
            # the trend compares these: the topic's share of all texts in each 90 days
            "recent_share": recent / all_recent if all_recent else None,
            "before_share": before / all_before if all_before else None,
            "trend": trend,
        }
        mine = outcomes[(outcomes["topic"] == topic.id)] if len(outcomes) else outcomes
        known = mine[mine["known"].astype(bool)] if len(mine) else mine
        row.update(_churn(topic.id, known, comparison, values, mine))
        rows.append(row)
    rows.sort(key=lambda r: (-(r["value_at_risk"] or 0.0), -r["mentions"], r["topic"]))
    return {
        "as_of": window.as_of.isoformat(),
        "window_days": active.days,
        "window_rule": active.rule,
        "feedback": len(tags),
        "scored": scored,
        "stale": stale,
        "topics": rows,
    }


def _trend(recent: int, before: int, all_recent: int, all_before: int) -> str:
    if not all_recent or not all_before:
        return "steady"
    now, then = recent / all_recent, before / all_before
    if recent >= TREND_MIN and (then == 0 or now >= 1.25 * then):
        return "rising"
    if before >= TREND_MIN and now <= 0.8 * then:
        return "falling"
    return "steady"


def _churn(
    topic: str,
    known: pd.DataFrame,
    comparison: pd.DataFrame,
    clv: pd.Series,
    raisers: pd.DataFrame,
) -> dict[str, Any]:
    empty: dict[str, Any] = {
        "measured": len(known),
        "churn_rate": None,
        "expected_churn_rate": None,
        "churn_ratio": None,
        "churn_ratio_low": None,
        "churn_ratio_high": None,
        "value_at_risk": None,
        "value_at_risk_low": None,
        "value_at_risk_high": None,
        "clv_of_raisers": None
        if clv.empty
        else float(clv.reindex(raisers["customer_id"].unique()).fillna(0).sum())
        if len(raisers)
        else 0.0,
    }
    if len(known) < MIN_RAISERS:
        empty["why"] = (
            f"{len(known)} of its raisers have a whole window of history after raising it; "
            f"{MIN_RAISERS} are needed to compare their churn"
        )
        return empty
    theirs = (
        known.assign(churned=known["churned"].astype(int))
        .groupby("stage", as_index=False)
        .agg(n=("churned", "size"), churned=("churned", "sum"))
    )
    others = comparison[comparison["topic"] == topic][["stage", "n", "churned"]]
    others = others.astype({"stage": int, "n": float, "churned": float})
    theirs = theirs.astype({"stage": int, "n": float, "churned": float})
    measured = risk_ratio(theirs, others)
    if measured is None:
        empty["why"] = "no comparable customers, or no churn on one side, to compare with"
        return empty
    ratio, low, high = measured
    base = (others["churned"] / others["n"]).where(others["n"] > 0)
    base_by_stage = dict(zip(others["stage"], base.fillna(0.0), strict=True))
    expected = float(
        sum(
            base_by_stage.get(int(s), 0.0) * n
            for s, n in zip(theirs["stage"], theirs["n"], strict=True)
        )
        / theirs["n"].sum()
    )
    # every raiser's stage now: the last time they raised it
    latest = raisers.sort_values("raised").groupby("customer_id").tail(1)
    values = clv.reindex(latest["customer_id"]).fillna(0.0).to_numpy(float)
    stage_base = np.array([base_by_stage.get(int(s), expected) for s in latest["stage"]])

    def at_risk(r: float) -> float | None:
        if clv.empty:  # no scores: no predicted value to put at risk
            return None
        return float(np.sum(values * np.clip((r - 1.0) * stage_base, 0.0, 1.0)))

    return {
        **empty,
        "churn_rate": float(theirs["churned"].sum() / theirs["n"].sum()),
        "expected_churn_rate": expected,
        "churn_ratio": ratio,
        "churn_ratio_low": low,
        "churn_ratio_high": high,
        "value_at_risk": at_risk(ratio),
        "value_at_risk_low": at_risk(low),
        "value_at_risk_high": at_risk(high),
    }


def pain_point(store: Store, topic: str, *, as_of: Any = None, limit: int = 50) -> dict[str, Any]:
    """One topic drilled down: its texts, newest first, and its raisers, most predicted
    value first (``limit`` of each)."""
    from retain.feedback import store_taxonomy, tags_frame
    from retain.metrics._common import observation

    taxonomy = store_taxonomy(store)
    if topic not in taxonomy.topics:
        raise DataError(
            f"no topic {topic!r} in the store's taxonomy: its topics are "
            f"{', '.join(taxonomy.topics)}"
        )
    window = observation(store, as_of)
    tags = tags_frame(store)
    tags = tags[(tags["created_at"] < window.end) & tags["topics"].map(lambda t: topic in t)]
    texts = tags.sort_values(["created_at", "feedback_id"], ascending=False).head(limit)
    raisers = tags[tags["sentiment"] != "positive"]
    people = (
        raisers.groupby("customer_id")
        .agg(mentions=("feedback_id", "size"), last_raised=("created_at", "max"))
        .reset_index()
    )
    if store.has_table("customer_scores") and len(people):
        scores = store.con.execute(
            "SELECT customer_id, clv_12m, p_alive, segment FROM customer_scores"
        ).fetch_df()
        people = people.merge(scores, on="customer_id", how="left")
    else:
        people = people.assign(clv_12m=None, p_alive=None, segment=None)
    people = people.sort_values(["clv_12m", "last_raised"], ascending=False, na_position="last")
    ordered = {
        str(c)
        for (c,) in store.con.execute(
            "SELECT DISTINCT CAST(customer_id AS VARCHAR) FROM orders WHERE customer_id IN "
            "(SELECT unnest(?))",
            [[str(c) for c in people["customer_id"].head(limit)]],
        ).fetchall()
    }
    return {
        "topic": topic,
        "name": taxonomy.topics[topic].name,
        "texts": [
            {
                "feedback_id": r["feedback_id"],
                "customer_id": r["customer_id"],
                "created_at": pd.Timestamp(r["created_at"]).isoformat(),
                "kind": r["kind"],
                "text": r["text"],
                "language": r["language"],
                "sentiment": r["sentiment"],
                "topics": list(r["topics"]),
            }
            for r in _records(texts)
        ],
        "customers": [
            {
                "customer_id": r["customer_id"],
                "mentions": int(r["mentions"]),
                "last_raised": pd.Timestamp(r["last_raised"]).isoformat(),
                "clv_12m": None if pd.isna(r["clv_12m"]) else float(r["clv_12m"]),
                "p_alive": None if pd.isna(r["p_alive"]) else float(r["p_alive"]),
                "segment": None if pd.isna(r["segment"]) else str(r["segment"]),
                "has_orders": str(r["customer_id"]) in ordered,
            }
            for r in _records(people.head(limit))
        ],
    }


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{str(k): v for k, v in r.items()} for r in frame.to_dict(orient="records")]
