"""The Jinja2 environment the pages and the report share, with number formats."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import jinja2
from markupsafe import Markup

from retain.service.app import STATIC_DIR, TEMPLATES_DIR

VENDOR_SCRIPTS = (
    "vendor/chart.umd.min.js",
    "vendor/chartjs-chart-matrix.min.js",
    "vendor/chartjs-chart-treemap.min.js",
)
SCRIPTS = (*VENDOR_SCRIPTS, "retain.js")

NAV = (
    ("overview", "/", "Overview"),
    ("cohorts", "/cohorts", "Cohorts"),
    ("segments", "/segments", "Segments"),
    ("models", "/models", "Models"),
    ("model-health", "/model-health", "Model health"),
    ("at-risk", "/at-risk", "At risk"),
    ("feedback", "/feedback", "Feedback"),
    ("campaigns", "/campaigns", "Campaigns"),
    ("loyalty", "/loyalty", "Loyalty"),
    ("subscriptions", "/subscriptions", "Subscriptions"),
    ("whatif", "/whatif", "What if"),
    ("customers", "/customers", "Customers"),
)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


#: symbols of the common reporting currencies; any other is shown by its code
CURRENCY_SYMBOLS = {
    "USD": "$",
    "EUR": "€",
    "GBP": "£",
    "JPY": "¥",
    "CNY": "¥",
    "INR": "₹",
    "KRW": "₩",
    "THB": "฿",
    "RUB": "₽",
    "VND": "₫",
    "TRY": "₺",
    "ILS": "₪",
    "NGN": "₦",
    "UAH": "₴",
    "PHP": "₱",
}


def money(value: Any, digits: int = 2, currency: str | None = None) -> str:
    """$12,345.68 in the reporting ``currency`` (its symbol, else "12,345.68 AED"; no
    currency: the number alone); a dash when missing."""
    if _missing(value):
        return "–"
    text = f"{abs(value):,.{digits}f}"
    sign = "-" if value < 0 and text.strip("0.,") else ""
    symbol = CURRENCY_SYMBOLS.get(currency or "")
    if symbol:
        return f"{sign}{symbol}{text}"
    return f"{sign}{text} {currency}" if currency else f"{sign}{text}"


@jinja2.pass_context
def _money_filter(context: Any, value: Any, digits: int = 2) -> str:
    """The ``money`` filter of the templates: in the page's ``currency``."""
    return money(value, digits, context.get("currency"))


def count(value: Any) -> str:
    return "–" if _missing(value) else f"{value:,.0f}"


def percent(value: Any, digits: int = 1) -> str:
    """A percentage given in percent: 12.3%."""
    return "–" if _missing(value) else f"{value:.{digits}f}%"


def share(value: Any, digits: int = 1) -> str:
    """A fraction shown as a percentage: 0.123 -> 12.3%."""
    return "–" if _missing(value) else f"{100 * value:.{digits}f}%"


def chance(value: Any) -> str:
    """A probability: 97%, "<1%", ">99%" (:func:`retain.experiments.analysis.chance`)."""
    from retain.experiments.analysis import chance as text

    return "–" if _missing(value) else text(value)


def number(value: Any, digits: int = 2) -> str:
    return "–" if _missing(value) else f"{value:,.{digits}f}"


def day(value: Any) -> str:
    """The date part of an ISO timestamp."""
    return "–" if _missing(value) else str(value)[:10]


# customer_scores columns in words, with how to show the value
SCORE_LABELS: dict[str, tuple[str, str]] = {
    "p_alive": ("Chance the customer is still active, P(alive)", "probability"),
    "expected_purchases_30d": ("Expected purchases, next 30 days", "purchases"),
    "expected_purchases_90d": ("Expected purchases, next 90 days", "purchases"),
    "expected_purchases_365d": ("Expected purchases, next 365 days", "purchases"),
    "expected_purchases": ("Expected purchases", "purchases"),
    "purchases_365d_low": ("Purchases in the next year, 90% range: from", "purchases"),
    "purchases_365d_high": ("Purchases in the next year, 90% range: to", "purchases"),
    "expected_spend": ("Expected spend per order", "money"),
    "clv_12m": ("Predicted CLV, next 12 months", "money"),
    "clv": ("Predicted CLV", "money"),
    "predicted_clv": ("Predicted CLV", "money"),
    "clv_low": ("CLV, 90% of outcomes: from", "money"),
    "clv_high": ("CLV, 90% of outcomes: to", "money"),
    "clv_mean_low": ("Expected CLV itself, 90% range: from", "money"),
    "clv_mean_high": ("Expected CLV itself, 90% range: to", "money"),
    "next_purchase_date": ("Next purchase expected on", "date"),
    "next_purchase_at": ("Next purchase expected on", "date"),
    "next_purchase_window_start": ("Next purchase window opens", "date"),
    "next_purchase_window_end": ("Next purchase window closes", "date"),
    "next_purchase_low": ("Next purchase window opens", "date"),
    "next_purchase_high": ("Next purchase window closes", "date"),
    "model": ("Model", "model"),
    "fit_id": ("Model fit number", "text"),
    "as_of": ("Scored as of", "date"),
}
MODEL_LABELS = {"bgnbd": "BG/NBD", "mbgnbd": "MBG/NBD", "pnbd": "Pareto/NBD", "bgbb": "BG/BB"}


def score_rows(scores: dict[str, Any] | None, currency: str | None = None) -> list[tuple[str, str]]:
    """A customer's model scores as (label in words, value with its unit; money in
    ``currency``), in the order of :data:`SCORE_LABELS`, then any other column under its
    own name."""
    if not scores:
        return []
    known = [k for k in SCORE_LABELS if k in scores]
    others = [k for k in scores if k not in SCORE_LABELS]
    rows = []
    for key in known + others:
        value = scores[key]
        label, kind = SCORE_LABELS.get(key, (key.replace("_", " ").capitalize(), "text"))
        if _missing(value):
            shown = "–"
        elif kind == "probability":
            shown = f"{value:.3f} ({100 * value:.1f}%)"
        elif kind == "purchases":
            shown = f"{value:,.2f} " + ("purchase" if value == 1 else "purchases")
        elif kind == "money":
            shown = money(value, 2, currency)
        elif kind == "date":
            shown = day(value)
        elif kind == "model":
            shown = MODEL_LABELS.get(str(value), str(value))
        elif isinstance(value, float):
            shown = number(value, 3)
        else:
            shown = str(value)
        rows.append((label, shown))
    return rows


def chart_data(charts: dict[str, Any]) -> Markup:
    """The chart specs as JSON safe inside a <script> element."""
    text = json.dumps(charts, separators=(",", ":"), allow_nan=False)
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=jinja2.select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(
        money=_money_filter,
        count=count,
        percent=percent,
        share=share,
        number=number,
        day=day,
        chance=chance,
    )
    env.globals["nav"] = NAV
    env.globals["score_rows"] = score_rows
    env.globals["scripts"] = SCRIPTS
    return env


@cache
def inline_assets() -> dict[str, Markup]:
    """The stylesheet and every script as text, for a self-contained file."""
    css = (STATIC_DIR / "retain.css").read_text(encoding="utf-8")
    scripts = "\n".join(
        (STATIC_DIR / name).read_text(encoding="utf-8").replace("</script", "<\\/script")
        for name in SCRIPTS
    )
    return {"css": Markup(css), "js": Markup(scripts)}


def render(template: str, **context: Any) -> str:
    """Render a template; ``inline=True`` in the context embeds CSS and scripts."""
    context.setdefault("inline", False)
    context.setdefault("assets", inline_assets() if context["inline"] else None)
    context.setdefault("json_url", None)
    context.setdefault("active", "")
    return environment().get_template(template).render(**context)
