"""A campaign as an experiment: its arms, what each arm's customers did, and what the
campaign added (``retain experiments report NAME``).

**Arms.** Each customer a campaign decided on falls in one arm, fixed by a hash of the
campaign and the customer (:func:`retain.campaigns.outbox.pick_variant`), recorded in the
outbox at the moment of sending or of being held out: a variant, ``control`` (the
campaign's ``control_share``, sent nothing) or ``global control`` (the store's
``global_control`` setting, sent no marketing at all). Customers who could not be sent
the message (opted out, no address, capped) are in no arm: the control groups are drawn
after them (:func:`retain.campaigns.outbox._decide`), so every arm holds the same kind of
customer. A variant's arm counts every customer assigned to it, delivered or not (intent
to treat): leaving out failed deliveries would compare unlike groups.

**Outcomes** per customer, over the attribution window: from the customer's first
message (or hold-out) to ``window`` days after their last, cut at the end of the data:
orders and net revenue, converted (an order at all), clicks on tracked links, coupons
redeemed, unsubscribes, and the change of the predicted 12-month CLV between the start and
the end of the window, both computed with the store's current fit (the one ``retain
score`` used), so that only the customers' own orders differ.

**Analysis** (:mod:`retain.experiments.stats`): each arm against the reference (the
campaign's control, else the global control, else the first variant) with fixed-horizon
and always-valid intervals; the decision is the sequential rule's, safe to read every day.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np
import pandas as pd

from retain.errors import DataError, StoreError
from retain.experiments import stats
from retain.store import Store

WINDOW_DAYS = 7
"""The attribution window: days after a customer's last message (as the campaign report)."""
ASSIGNED = ("sent", "unconfirmed", "failed", "control")
"""The outbox rows that put a customer in an arm (held, queued and waiting ones have not
been sent yet; suppressed and capped ones were never eligible)."""
CONTROL_ARMS = ("control", "global control")

# One row per customer and arm of a campaign: when the arm began and its window ends,
# and what the customer did in between. $end: the end of the data (orders stop there).
UNITS_SQL = """
WITH assigned AS (
    SELECT customer_id,
           CASE WHEN status = 'control' AND variant = 'global control' THEN 'global control'
                WHEN status = 'control' THEN 'control'
                ELSE variant END AS arm,
           min(created_at) AS started,
           least(max(created_at) + to_days(CAST($window AS INTEGER)), $end) AS ends,
           max(created_at) + to_days(CAST($window AS INTEGER)) > $end AS open,
           count(*) FILTER (WHERE status = 'sent') AS delivered
    FROM campaign_outbox
    WHERE campaign = $name AND status IN (SELECT unnest($assigned))
    GROUP BY customer_id, arm
),
bought AS (
    SELECT a.customer_id, a.arm, count(o.order_id) AS orders,
           coalesce(sum(o.net_revenue), 0) AS revenue
    FROM assigned a JOIN orders o
      ON o.customer_id = a.customer_id AND o.ordered_at >= a.started AND o.ordered_at < a.ends
    GROUP BY ALL
),
clicked AS (
    SELECT c.customer_id, count(*) AS clicks
    FROM campaign_clicks c JOIN assigned a
      ON c.customer_id = a.customer_id AND c.clicked_at >= a.started AND c.clicked_at < a.ends
    WHERE c.campaign = $name
    GROUP BY ALL
),
redeemed AS (
    SELECT customer_id, count(*) AS coupons
    FROM campaign_coupons WHERE campaign = $name AND redeemed_at IS NOT NULL
    GROUP BY ALL
),
left_list AS (
    SELECT a.customer_id, a.arm, count(*) AS unsubscribed
    FROM contact_suppressions s JOIN assigned a
      ON s.customer_id = a.customer_id AND s.created_at >= a.started AND s.created_at < a.ends
    WHERE s.scope IN ('marketing', 'all')
    GROUP BY ALL
)
SELECT a.customer_id, a.arm, a.started, a.ends, a.open, a.delivered > 0 AS delivered,
       coalesce(b.orders, 0) AS orders, coalesce(b.revenue, 0.0) AS revenue,
       coalesce(k.clicks, 0) AS clicks, coalesce(r.coupons, 0) AS coupons,
       coalesce(u.unsubscribed, 0) > 0 AS unsubscribed
FROM assigned a
LEFT JOIN bought b USING (customer_id, arm)
LEFT JOIN clicked k USING (customer_id)
LEFT JOIN redeemed r USING (customer_id)
LEFT JOIN left_list u USING (customer_id, arm)
"""

# Each unit's summaries (frequency, recency, T, monetary in the fit's unit and grain) at
# the start (columns ending 0) and at the end (1) of its window: features.SUMMARY_SQL with
# one cut-off per row, both from one pass over the orders. A period's amount before the
# start is kept beside its whole amount, since the start may fall within a period; a unit
# with no order before its start has no start summary (NULL).
CUT_SUMMARY_SQL = """
WITH tx AS (
    SELECT u.row, date_trunc($grain, o.ordered_at) AS period, sum(o.net_revenue) AS amount,
           sum(o.net_revenue) FILTER (WHERE o.ordered_at < u.started) AS amount_before,
           count(*) FILTER (WHERE o.ordered_at < u.started) > 0 AS before
    FROM _units AS u JOIN orders o ON o.customer_id = u.customer_id AND o.ordered_at < u.ends
    GROUP BY u.row, period
),
per AS (
    SELECT row,
           count(*) AS n1, min(period) AS first1, max(period) AS last1, sum(amount) AS total1,
           arg_min(amount, period) AS head1,
           count(*) FILTER (WHERE before) AS n0,
           min(period) FILTER (WHERE before) AS first0,
           max(period) FILTER (WHERE before) AS last0,
           sum(amount_before) FILTER (WHERE before) AS total0,
           arg_min(amount_before, period) FILTER (WHERE before) AS head0
    FROM tx GROUP BY row
)
SELECT p.row,
       CASE WHEN n0 > 0 THEN n0 - 1 END AS frequency0,
       date_diff('day', first0, last0) / $unit_days AS recency0,
       date_diff('day', first0, date_trunc($grain, CAST(u.started AS DATE))) / $unit_days AS T0,
       CASE WHEN n0 > 1 THEN (total0 - head0) / (n0 - 1) ELSE 0.0 END AS monetary0,
       n1 - 1 AS frequency1,
       date_diff('day', first1, last1) / $unit_days AS recency1,
       date_diff('day', first1, date_trunc($grain, CAST(u.ends AS DATE))) / $unit_days AS T1,
       CASE WHEN n1 > 1 THEN (total1 - head1) / (n1 - 1) ELSE 0.0 END AS monetary1
FROM per p JOIN _units u USING (row)
"""


def units(store: Store, name: str, window: int = WINDOW_DAYS) -> pd.DataFrame:
    """One row per customer of the campaign ``name``'s arms (see the module): ``arm``,
    ``started``, ``ends`` (the window's end, cut at the end of the data), ``open`` (the
    window is still running), ``delivered``, ``orders``, ``revenue``, ``clicks``,
    ``coupons``, ``unsubscribed``. Raises :class:`DataError` for a campaign with no
    customer in an arm."""
    from retain import config

    if not store.has_table("campaign_outbox"):
        raise DataError("no campaign has run on this store", value=name)
    if not 1 <= window <= 365:
        raise DataError("--window out of range", value=window, expected="1 to 365 days")
    end_day = config.observation_day(store)
    end = dt.datetime.combine(end_day + dt.timedelta(days=1), dt.time())
    frame = store.con.execute(
        UNITS_SQL,
        {"name": name, "window": window, "end": end, "assigned": list(ASSIGNED)},
    ).df()
    if frame.empty:
        known = [
            r[0]
            for r in store.con.execute(
                "SELECT DISTINCT campaign FROM campaign_outbox ORDER BY 1"
            ).fetchall()
        ]
        raise DataError(
            "no customer was sent this campaign or held out of it",
            value=name,
            expected=f"a campaign that has run: {', '.join(known) or 'none yet'}",
        )
    frame.attrs["data_end"] = end_day.isoformat()
    return frame


def clv_change(store: Store, frame: pd.DataFrame) -> pd.Series:
    """Each unit's predicted 12-month CLV at the end of its window minus at its start,
    both with the store's current fit and CLV settings (NaN where the window has not
    begun within the data, or without a fit with a spend model)."""
    from retain.features import GRAINS, UNIT_DAYS
    from retain.scoring import load_fit, load_score_basis

    out = pd.Series(np.nan, index=frame.index, dtype="float64")
    try:
        basis = load_score_basis(store)
    except StoreError:  # no full scoring: no CLV to compare
        return out
    model, spend, row = load_fit(store, basis.fit_id)
    if spend is None:
        return out
    begun = frame["started"] < frame["ends"]
    if not begun.any():
        return out
    cut = pd.DataFrame(
        {
            "row": np.flatnonzero(begun.to_numpy()),
            "customer_id": frame.loc[begun, "customer_id"].to_numpy(),
            "started": frame.loc[begun, "started"].to_numpy(),
            "ends": frame.loc[begun, "ends"].to_numpy(),
        }
    )
    store.con.register("_units", cut)
    try:
        summaries = store.con.execute(
            CUT_SUMMARY_SQL,
            {"grain": GRAINS[row["grain"]], "unit_days": float(UNIT_DAYS[row["unit"]])},
        ).df()
    finally:
        store.con.unregister("_units")
    summaries = summaries.set_index("row")
    values = []
    for which in "01":  # the start, the end
        summary = summaries[summaries[f"frequency{which}"].notna()]
        summary = summary[[f"{c}{which}" for c in ("frequency", "recency", "T", "monetary")]]
        summary.columns = ["frequency", "recency", "T", "monetary"]
        summary = summary.astype({"frequency": "int64"})
        summary.attrs.update({"unit": row["unit"], "grain": row["grain"]})
        clv = model.clv(
            summary,
            gamma_gamma=spend,
            horizon="12M",
            discount_rate=basis.discount_rate,
            margin=basis.margin,
        )
        values.append(pd.Series(np.asarray(clv, dtype="float64"), index=summary.index))
    change = values[1] - values[0]
    filled = out.to_numpy(copy=True)
    filled[change.index.to_numpy(dtype="int64")] = change.to_numpy()
    return pd.Series(filled, index=frame.index, dtype="float64")


def _mean_interval(values: np.ndarray) -> tuple[float | None, float | None]:
    n = len(values)
    if n < 2:
        return None, None
    from scipy.special import stdtrit

    half = float(stdtrit(n - 1, 0.5 + stats.LEVEL / 2)) * float(values.std(ddof=1)) / math.sqrt(n)
    mean = float(values.mean())
    return mean - half, mean + half


def _finite(value: Any) -> Any:
    """JSON has no infinity: an unbounded end of an interval is None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


def _arm_row(name: str, group: pd.DataFrame, clv: pd.Series) -> dict[str, Any]:
    n = len(group)
    converted = _hits(group, "orders")[0]
    clickers = _hits(group, "clicks")[0]
    revenue = _values(group, "revenue")
    change = clv.loc[group.index].dropna().to_numpy(dtype="float64")
    low, high = _mean_interval(revenue)
    c_low, c_high = _mean_interval(change)
    return {
        "arm": name,
        "customers": n,
        "delivered": int(group["delivered"].sum()),
        "clicked": clickers,
        "click_rate": clickers / n if n else None,
        "converted": converted,
        "conversion_rate": converted / n if n else None,
        "conversion_interval": list(stats.wilson(converted, n)),
        "orders": int(group["orders"].sum()),
        "revenue": float(revenue.sum()),
        "revenue_per_customer": float(revenue.mean()) if n else None,
        "revenue_interval": [low, high],
        "coupons_redeemed": int(group["coupons"].sum()),
        "unsubscribed": int(group["unsubscribed"].sum()),
        "clv_change": float(change.mean()) if len(change) else None,
        "clv_change_interval": [c_low, c_high],
        "windows_open": int(group["open"].sum()),
    }


def _hits(group: pd.DataFrame, column: str) -> tuple[int, int]:
    """How many of the arm's customers have ``column`` above 0, and the arm's size."""
    return int((group[column] > 0).sum()), len(group)


def _values(group: pd.DataFrame, column: str) -> np.ndarray:
    return group[column].to_numpy(dtype="float64")


def _reference(arms: list[str]) -> str:
    for name in CONTROL_ARMS:
        if name in arms:
            return name
    return arms[0]


def experiment_report(
    store: Store, name: str, *, window: int = WINDOW_DAYS, clv: bool = True
) -> dict[str, Any]:
    """The experiment of campaign ``name``: each arm's outcomes, each arm against the
    reference arm (the difference, its intervals, the p-values and the sequential
    rule's verdict on conversion, revenue per customer, clicks and the change of CLV),
    the probability each arm converts best and the expected loss of choosing it, what
    the campaign added over control, and one sentence saying what it found."""
    frame = units(store, name, window)
    change = clv_change(store, frame) if clv else pd.Series(np.nan, index=frame.index)
    names = _arm_order(frame["arm"].unique().tolist())
    groups = {arm: frame[frame["arm"] == arm] for arm in names}
    rows = [_arm_row(arm, groups[arm], change) for arm in names]
    reference = _reference(names)
    ref = groups[reference]
    others = [a for a in names if a != reference]
    alpha = (1 - stats.LEVEL) / max(1, len(others))  # Bonferroni over the arms compared
    comparisons = []
    for arm in others:
        group = groups[arm]
        entry: dict[str, Any] = {"arm": arm, "against": reference, "alpha": alpha}
        entry["conversion"] = stats.compare_rates(
            *_hits(ref, "orders"), *_hits(group, "orders"), alpha
        ).to_dict()
        for measure, column in (
            ("revenue_per_customer", "revenue"),
            ("orders_per_customer", "orders"),
        ):
            entry[measure] = stats.compare_means(
                _values(ref, column), _values(group, column), alpha
            ).to_dict()
        if reference not in CONTROL_ARMS:  # a control is sent nothing to click
            entry["clicks"] = stats.compare_rates(
                *_hits(ref, "clicks"), *_hits(group, "clicks"), alpha
            ).to_dict()
        ref_change = change.loc[ref.index].dropna().to_numpy(dtype="float64")
        arm_change = change.loc[group.index].dropna().to_numpy(dtype="float64")
        if len(ref_change) > 1 and len(arm_change) > 1:
            entry["clv_change"] = stats.compare_means(ref_change, arm_change, alpha).to_dict()
        comparisons.append(entry)
    counts = [_hits(groups[a], "orders") for a in names]
    best, loss = stats.beta_binomial([x for x, _ in counts], [n for _, n in counts])
    for row, p, expected_loss in zip(rows, best, loss, strict=True):
        row["probability_best"] = p
        row["expected_loss"] = expected_loss
    report = {
        "campaign": name,
        "window_days": window,
        "data_end": frame.attrs["data_end"],
        "reference": reference,
        "arms": rows,
        "comparisons": comparisons,
        "added": _added(groups, reference, change),
        "decision_rule": (
            "mSPRT always-valid intervals at 95% (Bonferroni over the arms compared), "
            f"at least {stats.MIN_PER_ARM} customers an arm: safe to read at every look"
        ),
    }
    report["sentence"] = sentence(report)
    return _finite(report)


def _arm_order(arms: list[str]) -> list[str]:
    """Controls first, then the variants in name order."""
    return [a for a in CONTROL_ARMS if a in arms] + sorted(a for a in arms if a not in CONTROL_ARMS)


def _added(
    groups: dict[str, pd.DataFrame], reference: str, change: pd.Series
) -> dict[str, Any] | None:
    """What the message added over the control, across every customer sent it: the
    difference per customer times the customers (net revenue in the window, and the
    change of 12-month CLV), with the fixed-horizon interval."""
    if reference not in CONTROL_ARMS:
        return None
    treated = pd.concat([g for a, g in groups.items() if a not in CONTROL_ARMS])
    if treated.empty:
        return None
    ref = groups[reference]
    n = len(treated)
    out: dict[str, Any] = {"customers": n, "against": reference}
    revenue = stats.compare_means(_values(ref, "revenue"), _values(treated, "revenue"))
    out["revenue"] = revenue.difference * n
    out["revenue_interval"] = [v * n for v in revenue.interval]
    conversions = stats.compare_rates(*_hits(ref, "orders"), *_hits(treated, "orders"))
    out["customers_converted"] = conversions.difference * n
    out["customers_converted_interval"] = [v * n for v in conversions.interval]
    ref_change = change.loc[ref.index].dropna().to_numpy(dtype="float64")
    arm_change = change.loc[treated.index].dropna().to_numpy(dtype="float64")
    if len(ref_change) > 1 and len(arm_change) > 1:
        clv = stats.compare_means(ref_change, arm_change)
        out["clv"] = clv.difference * len(arm_change)
        out["clv_interval"] = [v * len(arm_change) for v in clv.interval]
    return out


def chance(p: float | None) -> str:
    """A probability as people read it: 97%, and "<1%" or ">99%" rather than a rounded
    0% or 100% that the data cannot show."""
    if p is None:
        return "-"
    if 0 < p < 0.01:
        return "<1%"
    if 0.99 < p < 1:
        return ">99%"
    return f"{p:.0%}"


def _label(arm: str) -> str:
    return arm if arm in CONTROL_ARMS else f"variant {arm}"


def sentence(report: dict[str, Any]) -> str:
    """One plain sentence: the arm with the highest conversion against the reference,
    in points of conversion with its always-valid interval, the verdict and the
    probability it is best; or why there is nothing to say yet."""
    arms = report["arms"]
    if all(a["conversion_rate"] in (0, None) for a in arms) and not any(a["orders"] for a in arms):
        return (
            f"No orders in any arm yet: the data end {report['data_end']}; "
            "ingest newer orders to measure the campaign."
        )
    if not report["comparisons"]:
        return f"Only one arm ({_label(arms[0]['arm'])}): nothing to compare it with."
    by_arm = {a["arm"]: a for a in arms}
    top = max(report["comparisons"], key=lambda c: c["conversion"]["difference"])
    conversion = top["conversion"]
    points = 100 * conversion["difference"]
    low, high = (100 * v for v in conversion["sequential_interval"])
    best = by_arm[top["arm"]]["probability_best"]
    verb = "raised" if points >= 0.05 else "lowered" if points <= -0.05 else "changed"
    text = (
        f"{_label(top['arm']).capitalize()} {verb} orders by {abs(points):.1f} points "
        f"({low:.1f} to {high:.1f}) over {_label(top['against'])}"
    )
    small = min(a["customers"] for a in arms)
    if small < stats.MIN_PER_ARM:
        return (
            f"Too early to tell: {small:,} customers in the smallest arm, at least "
            f"{stats.MIN_PER_ARM} needed. So far: {text[0].lower()}{text[1:]}."
        )
    if conversion["verdict"] == "undecided":
        text += ", not decided yet (the interval still spans 0)"
    return text + f"; probability it is best {chance(best)}."


def pick_winner(
    store: Store, campaign: Any, now: dt.datetime, *, final: bool
) -> tuple[str | None, str]:
    """For a newsletter's test (``auto_winner``): the variant the sequential rule finds
    better than every other on the metric (clicks, or orders since the message), or,
    when ``final`` (the deadline), the best so far. (None, why) when not decided."""
    test = campaign.auto_winner
    found = store.con.execute(
        """
        WITH sent AS (
            SELECT key, customer_id, variant, created_at FROM campaign_outbox
            WHERE campaign = $name AND status IN ('sent', 'unconfirmed', 'failed')
        ),
        hits AS (
            SELECT s.key, CASE WHEN $metric = 'clicks'
                THEN (SELECT count(*) FROM campaign_clicks c WHERE c.outbox_key = s.key)
                ELSE (SELECT count(*) FROM orders o WHERE o.customer_id = s.customer_id
                      AND o.ordered_at >= s.created_at AND o.ordered_at < $now) END AS n
            FROM sent s
        )
        SELECT s.variant, count(*) AS n, count(*) FILTER (WHERE h.n > 0) AS x
        FROM sent s JOIN hits h USING (key) GROUP BY s.variant
        """,
        {"name": campaign.name, "metric": test.metric, "now": now},
    ).fetchall()
    counts = {v.name: (0, 0) for v in campaign.variants}
    for variant, n, x in found:
        if variant in counts:
            counts[variant] = (int(x), int(n))
    names = [v.name for v in campaign.variants]
    rate = {v: (x / n if n else 0.0) for v, (x, n) in counts.items()}
    leader = max(names, key=lambda v: (rate[v], -names.index(v)))
    alpha = (1 - stats.LEVEL) / (len(names) - 1)
    x1, n1 = counts[leader]
    beaten = [
        stats.compare_rates(counts[v][0], counts[v][1], x1, n1, alpha).verdict == "better"
        for v in names
        if v != leader
    ]
    metric = "click" if test.metric == "clicks" else "order"
    if all(beaten):
        return leader, f"the {metric} rate {rate[leader]:.1%} beats every other variant"
    if final:
        return leader, (
            f"the deadline came: best {metric} rate so far, {rate[leader]:.1%}, not a "
            "decided winner"
        )
    return None, "not decided"
