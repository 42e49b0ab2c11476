"""Chart specifications from page payloads: what to draw, not how.

Each function takes the dict a page's API twin returns and gives a mapping of
chart id -> spec. A spec is plain JSON that ``static/retain.js`` turns into a
Chart.js chart: ``type`` (bar, line, heatmap, treemap), ``labels``,
``datasets`` (each a ``label`` and ``data``), and hints: ``stacked``, ``x``
and ``y`` (axis titles), ``format`` (money, percent, count, probability).
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import re
from typing import Any

Spec = dict[str, Any]

# what a CLV column of customer_scores means, in words
CLV_WORDS = {
    "clv_12m": "predicted CLV, next 12 months",
    "clv": "predicted CLV",
    "predicted_clv": "predicted CLV",
}

PALETTE = ["#2563eb", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#06b6d4", "#ec4899", "#84cc16"]


def overview_charts(payload: dict[str, Any]) -> dict[str, Spec]:
    """CLV distribution and revenue from new vs returning customers."""
    charts: dict[str, Spec] = {}
    dist = payload["clv_distribution"]
    if dist["bins"]:
        digits = _digits(dist["bins"])
        charts["clv-distribution"] = {
            "type": "bar",
            "title": f"Customers by {clv_words(dist['basis'])}",
            "labels": [_bin_label(b, digits) for b in dist["bins"]],
            "datasets": [{"label": "customers", "data": [b["customers"] for b in dist["bins"]]}],
            "x": "CLV",
            "y": "customers",
            "format": "count",
        }
    periods = payload["overview"]["revenue_by_period"]
    if periods:
        charts["revenue-new-returning"] = {
            "type": "bar",
            "title": "Net revenue from new and returning customers",
            "labels": [p["period"] for p in periods],
            "datasets": [
                {"label": "new customers", "data": [p["new_customer_revenue"] for p in periods]},
                {
                    "label": "returning customers",
                    "data": [p["returning_customer_revenue"] for p in periods],
                },
            ],
            "stacked": True,
            "x": payload["overview"]["period"],
            "y": "net revenue",
            "format": "money",
        }
    return charts


def clv_words(basis: str) -> str:
    """The basis of a CLV figure in plain words: "predicted CLV (clv_12m)" becomes
    "predicted CLV, next 12 months"; a column name never shows."""
    found = re.fullmatch(r"\s*predicted CLV \((\w+)\)\s*", basis)
    if found:
        return CLV_WORDS.get(found.group(1), "predicted CLV")
    return basis


def _digits(bins: list[dict[str, Any]]) -> int:
    """Decimals that show every bin's edges exactly enough for equal widths to read as
    equal (20.56 wide: 0-20.6, 20.6-41.1, ... rather than 0-21, 21-41, 41-62)."""
    closed = [b for b in bins if not b.get("open_ended")]
    if not closed:
        return 0
    width = float(closed[0]["high"]) - float(closed[0]["low"])
    if width <= 0:
        return 0
    for digits in range(4):
        edges = [round(float(b["low"]), digits) for b in closed] + [
            round(float(closed[-1]["high"]), digits)
        ]
        steps = [b - a for a, b in itertools.pairwise(edges)]
        if max(steps) - min(steps) <= 0.5 * 10**-digits and min(steps) > 0:
            return digits
    return max(0, 1 - math.floor(math.log10(width)))


def _bin_label(b: dict[str, Any], digits: int = 0) -> str:
    if b.get("open_ended"):
        return f"{b['low']:,.{digits}f}+"
    return f"{b['low']:,.{digits}f}–{b['high']:,.{digits}f}"


def cohort_charts(payload: dict[str, Any], max_curves: int = 12) -> dict[str, Spec]:
    """Retention heatmap (share of each cohort buying at each age) and cohort CLV curves."""
    if not payload["cohorts"]:
        return {}
    period = payload["period"]
    charts: dict[str, Spec] = {
        "cohort-heatmap": {
            "type": "heatmap",
            "title": f"Share of each cohort buying, by {period}s since the first order (%)",
            "xLabels": [str(a) for a in payload["ages"]],
            "yLabels": [
                f"{c} ({n:,})" for c, n in zip(payload["cohorts"], payload["sizes"], strict=True)
            ],
            "values": payload["active_share"],
            "skipFirst": True,
            "x": f"{period}s since first order",
            "y": "cohort (customers)",
            "format": "percent",
        }
    }
    cohorts = payload["cohorts"]
    step = max(1, -(-len(cohorts) // max_curves))
    shown = list(range(0, len(cohorts), step))
    charts["cohort-clv"] = {
        "type": "line",
        "title": "Cumulative CLV per customer by cohort"
        + (f" (every {step}th cohort)" if step > 1 else ""),
        "labels": [str(a) for a in payload["ages"]],
        "datasets": [{"label": cohorts[i], "data": payload["cumulative_clv"][i]} for i in shown],
        "x": f"{period}s since first order",
        "y": "cumulative CLV per customer",
        "format": "money",
    }
    return charts


def segment_charts(payload: dict[str, Any]) -> dict[str, Spec]:
    """Treemap of segments by customers (coloured by revenue share) and the R x F grid."""
    rows = [s for s in payload["segments"] if s["customers"]]
    charts: dict[str, Spec] = {}
    if rows:
        charts["segment-treemap"] = {
            "type": "treemap",
            "title": "Segments by number of customers; darker = larger share of revenue",
            "items": [
                {
                    "label": s["segment"],
                    "value": s["customers"],
                    "share": (s["share_of_revenue"] or 0.0) / 100,  # 0-1 for the shade
                    "detail": f"{s['customers']:,} customers, "
                    f"{s['share_of_revenue'] or 0:.1f}% of revenue",
                    "short": f"{s['customers']:,} · {s['share_of_revenue'] or 0:.0f}% rev.",
                }
                for s in rows
            ],
        }
    levels = payload.get("levels") or 0
    if payload["grid"] and levels:
        values = [[None] * levels for _ in range(levels)]
        labels = [[""] * levels for _ in range(levels)]
        for cell in payload["grid"]:
            r, f = int(cell["r_score"]), int(cell["f_score"])
            values[levels - f][r - 1] = cell["customers"]
            labels[levels - f][r - 1] = cell["segment"]
        charts["rfm-grid"] = {
            "type": "heatmap",
            "title": "Customers by recency score (across) and frequency score (up)",
            "xLabels": [f"R{r}" for r in range(1, levels + 1)],
            "yLabels": [f"F{f}" for f in range(levels, 0, -1)],
            "values": values,
            "cellLabels": labels,
            "x": "recency score (5 = most recent)",
            "y": "frequency score",
            "format": "count",
        }
    return charts


def at_risk_charts(payload: dict[str, Any]) -> dict[str, Spec]:
    """Customers per churn-risk level."""
    levels = payload["by_risk"]
    return {
        "risk-levels": {
            "type": "bar",
            "title": "Customers by churn risk",
            "labels": list(levels),
            "datasets": [{"label": "customers", "data": list(levels.values())}],
            "colors": ["#10b981", "#f59e0b", "#ef4444", "#6b7280"],
            "x": "churn risk",
            "y": "customers",
            "format": "count",
        }
    }


def pain_point_charts(payload: dict[str, Any] | None) -> dict[str, Spec]:
    """The value at risk per topic, its 95% range beside it."""
    rows = [r for r in (payload or {}).get("topics", []) if r.get("value_at_risk") is not None]
    if not rows:
        return {}
    return {
        "pain-value": {
            "type": "bar",
            "title": "Value at risk by pain point (12-month CLV; low and high ends of the 95% range)",
            "labels": [r["name"] for r in rows],
            "datasets": [
                {"label": "value at risk", "data": [r["value_at_risk"] for r in rows]},
                {"label": "low", "data": [r["value_at_risk_low"] for r in rows]},
                {"label": "high", "data": [r["value_at_risk_high"] for r in rows]},
            ],
            "x": "pain point",
            "y": "value at risk",
            "format": "money",
        }
    }


def loyalty_charts(payload: dict[str, Any] | None) -> dict[str, Spec]:
    """The points outstanding by the month they expire."""
    if not payload or not payload["liability"]["expiring"]:
        return {}
    months = payload["liability"]["expiring"]
    return {
        "loyalty-expiring": {
            "type": "bar",
            "title": "Points outstanding by the month they expire",
            "labels": [m["month"] for m in months],
            "datasets": [{"label": "points", "data": [m["points"] for m in months]}],
            "x": "month",
            "y": "points",
            "format": "count",
        }
    }


def customer_charts(payload: dict[str, Any]) -> dict[str, Spec]:
    """The customer's orders on a time axis (days between orders show as gaps); the
    title says when only the latest of their orders are drawn."""
    history = payload.get("history") or []
    if not history:
        return {}
    ordered = list(reversed(history))
    total = int((payload.get("orders") or {}).get("orders") or len(history))
    shown = (
        f"the latest {len(history):,} of {total:,} orders"
        if total > len(history)
        else f"all {total:,} orders"
        if total > 1
        else "their one order"
    )
    return {
        "customer-history": {
            "type": "bar",
            "xType": "time",
            "title": f"Net revenue per order: {shown}",
            "labels": [str(h["ordered_at"])[:10] for h in ordered],
            "datasets": [
                {
                    "label": "net revenue",
                    "data": [
                        {"x": _epoch_ms(h["ordered_at"]), "y": h["net_revenue"]} for h in ordered
                    ],
                }
            ],
            "x": "order date",
            "y": "net revenue",
            "format": "money",
        }
    }


def _epoch_ms(value: Any) -> int:
    """Milliseconds since 1970-01-01 UTC of an ISO date or timestamp (naive: UTC)."""
    stamp = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return int(stamp.timestamp() * 1000)


def model_charts(payload: dict[str, Any]) -> dict[str, Spec]:
    """Tracking of actual vs predicted repeat purchases and P(alive) by frequency and time
    since the last purchase (when a model is fitted), and the churn-lifespan curve."""
    charts: dict[str, Spec] = {}
    tracking = payload.get("tracking")
    if tracking and tracking["dates"]:
        fit = payload.get("fit") or {}
        charts["model-tracking"] = {
            "type": "line",
            "title": f"Cumulative repeat purchases, actual and {fit.get('label', 'model')} "
            f"(fitted on purchases to {tracking['fit_observation_end']})",
            "labels": tracking["dates"],
            "datasets": [
                {"label": "actual", "data": tracking["actual_cumulative"], "pointRadius": 0},
                {
                    "label": "model",
                    "data": tracking["predicted_cumulative"],
                    "dashed": True,
                    "pointRadius": 0,
                },
            ],
            "x": "week ending",
            "y": "cumulative repeat purchases",
            "format": "count",
        }
    grid = payload.get("p_alive")
    if grid:
        unit = grid["unit"]
        charts["p-alive-matrix"] = {
            "type": "heatmap",
            "title": f"P(alive) by repeat purchases and {unit} since the last purchase, "
            f"for a customer first seen {grid['T']:g} {unit} ago",
            "xLabels": [f"{v:g}" for v in grid["since_last"]],
            "yLabels": [str(f) for f in reversed(grid["frequencies"])],
            "values": list(reversed(grid["values"])),
            "x": f"{unit} since the last purchase",
            "y": "repeat purchases",
            "format": "probability",
        }
    life = payload["lifespan"]
    rates = [float(c) for c in life["churn_rates"]]
    values = list(life["lifespan"])
    mine = life.get("store_churn_rate")
    marker: list[float | None] = [None] * len(rates)
    if mine is not None:
        at = next((i for i, c in enumerate(rates) if c >= mine), len(rates))
        if at == len(rates) or rates[at] != mine:
            rates.insert(at, mine)
            values.insert(at, life["store_lifespan"])
            marker.insert(at, None)
        marker[at] = life["store_lifespan"]
    datasets: list[dict[str, Any]] = [
        {"label": "lifespan = 1 / churn", "data": values, "pointRadius": 0}
    ]
    if mine is not None:
        datasets.append(
            {
                "label": f"this store: {mine:.1f}% a month, {life['store_lifespan']:.1f} months",
                "data": marker,
                "pointRadius": 6,
                "showLine": False,
            }
        )
    charts["churn-lifespan"] = {
        "type": "line",
        "title": "Expected customer lifespan (months) by monthly churn rate",
        "labels": [f"{c:g}%" if c == int(c) else f"{c:.1f}%" for c in rates],
        "datasets": datasets,
        "x": "churn rate per month",
        "y": "lifespan (months)",
        "format": "number",
    }
    return charts


def model_health_charts(payload: dict[str, Any]) -> dict[str, Spec]:
    """From the latest backtest at the horizon shown: the calibration of each model
    (observed against predicted share buying again, per bin, with the diagonal), the
    actual share of the window's revenue by decile of predicted revenue, and the
    forecast against actual purchases at every origin."""
    charts: dict[str, Spec] = {}
    horizon, origin = payload.get("horizon"), payload.get("origin")
    calibration = [c for c in payload.get("calibration") or [] if c["rows"]]
    if calibration:
        top = max(
            max(float(r["predicted"] or 0), float(r["observed"] or 0))
            for c in calibration
            for r in c["rows"]
        )
        top = min(1.0, math.ceil(max(top, 0.01) * 10) / 10)
        datasets: list[dict[str, Any]] = [
            {
                "label": c["label"],
                "data": [
                    {"x": r["predicted"], "y": r["observed"]}
                    for r in c["rows"]
                    if r["predicted"] is not None and r["observed"] is not None
                ],
                "pointRadius": 3,
            }
            for c in calibration
        ]
        datasets.append(
            {
                "label": "perfect calibration",
                "data": [{"x": 0.0, "y": 0.0}, {"x": top, "y": top}],
                "dashed": True,
                "pointRadius": 0,
            }
        )
        charts["backtest-calibration"] = {
            "type": "line",
            "xType": "linear",
            "title": f"Calibration: who bought again within {horizon} days of {origin}, "
            "observed against predicted (equal-count bins)",
            "datasets": datasets,
            "xMin": 0,
            "xMax": top,
            "xFormat": "probability",
            "x": f"predicted P(buys within {horizon} days)",
            "y": "observed share who bought",
            "format": "probability",
        }
    lift = payload.get("lift") or []
    if lift:
        deciles = [r["decile"] for r in lift[0]["rows"]]
        charts["backtest-deciles"] = {
            "type": "bar",
            "title": f"Share of the revenue of the {horizon} days after {origin}, by decile "
            "of predicted revenue (1 = highest)",
            "labels": [str(d) for d in deciles],
            "datasets": [
                {
                    "label": m["label"],
                    "data": [
                        None if r["actual_share"] is None else 100.0 * r["actual_share"]
                        for r in m["rows"]
                    ],
                }
                for m in lift
            ],
            "x": "decile of predicted revenue",
            "y": "share of actual revenue (%)",
            "format": "percent",
        }
    bias = payload.get("bias") or []
    if bias:
        origins = sorted({b["origin"] for b in bias})
        models = list(dict.fromkeys(b["model"] for b in bias))
        at = {(b["origin"], b["model"]): b for b in bias}
        actual = [
            next((b["actual_total"] for b in bias if b["origin"] == o), None) for o in origins
        ]
        sets: list[dict[str, Any]] = [{"label": "actual", "data": actual, "pointRadius": 4}]
        for name in models:
            label = next(b["label"] for b in bias if b["model"] == name)
            sets.append(
                {
                    "label": f"{label} forecast",
                    "data": [
                        at[(o, name)]["predicted_total"] if (o, name) in at else None
                        for o in origins
                    ],
                    "dashed": True,
                    "pointRadius": 3,
                }
            )
        charts["backtest-bias"] = {
            "type": "line",
            "title": f"Purchases in the {horizon} days after each origin: forecast and actual",
            "labels": origins,
            "datasets": sets,
            "x": "origin (calibration end)",
            "y": "purchases",
            "format": "count",
        }
    return charts


def whatif_charts(payload: dict[str, Any] | None) -> dict[str, Spec]:
    """Revenue month by month as the kept model projects it, and under the scenario
    (purchases when no spend model was fitted); the customers expected active likewise."""
    if not payload:
        return {}
    series = "revenue" if payload["base"]["revenue"] is not None else "purchases"
    return {
        "whatif-revenue": {
            "type": "line",
            "title": f"{series.capitalize()} by month: as it stands and under the scenario",
            "labels": payload["base"]["month_ends"],
            "datasets": [
                {"label": "as it stands", "data": payload["base"][series], "dashed": True},
                {"label": "scenario", "data": payload["scenario"][series]},
            ],
            "x": "month ending",
            "y": series,
            "format": "money" if series == "revenue" else "count",
        },
        "whatif-active": {
            "type": "line",
            "title": "Customers expected active at each month's end",
            "labels": payload["base"]["month_ends"],
            "datasets": [
                {"label": "as it stands", "data": payload["base"]["active"], "dashed": True},
                {"label": "scenario", "data": payload["scenario"]["active"]},
            ],
            "x": "month ending",
            "y": "active customers",
            "format": "count",
        },
    }


def subscriptions_charts(payload: dict[str, Any] | None) -> dict[str, Spec]:
    """MRR by month and its movements (stacked: what came in above 0, what went below),
    and per fitted plan its survivors, actual and projected by a fit on the earlier
    periods (the tracking chart)."""
    if not payload:
        return {}
    months = payload["mrr"][-24:]
    labels = [m["month"] for m in months]
    charts: dict[str, Spec] = {
        "subscriptions-mrr": {
            "type": "line",
            "title": "MRR at each month's end",
            "labels": labels,
            "datasets": [{"label": "MRR", "data": [m["mrr"] for m in months]}],
            "x": "month",
            "y": "MRR",
            "format": "money",
        },
        "subscriptions-movements": {
            "type": "bar",
            "title": "MRR movements by month",
            "labels": labels,
            "datasets": [
                {"label": name, "data": [m[name] for m in months]}
                for name in ("new", "reactivated", "expansion", "contraction", "churned")
            ],
            "stacked": True,
            "x": "month",
            "y": "MRR",
            "format": "money",
        },
    }
    for index, plan in enumerate(payload["plans"]):
        track = plan.get("tracking")
        if not track:
            continue
        periods = track["periods"]
        charts[f"subscriptions-tracking-{index}"] = {
            "type": "line",
            "title": f"{plan['plan']}: subscriptions still active, actual and projected by "
            f"the fit on periods 0-{track['fitted_through']}",
            "labels": [str(r["period"]) for r in periods],
            "datasets": [
                {"label": "actual", "data": [r["actual"] for r in periods]},
                {"label": "projected", "data": [r["projected"] for r in periods], "dashed": True},
            ],
            "x": f"{plan['billing_interval']}s since the start",
            "y": "active",
            "format": "count",
        }
    return charts
