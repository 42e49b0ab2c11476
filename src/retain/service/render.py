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
    ("at-risk", "/at-risk", "At risk"),
    ("customers", "/customers", "Customers"),
)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def money(value: Any, digits: int = 2) -> str:
    """12,345.68 (reporting currency); a dash when missing."""
    return "–" if _missing(value) else f"{value:,.{digits}f}"


def count(value: Any) -> str:
    return "–" if _missing(value) else f"{value:,.0f}"


def percent(value: Any, digits: int = 1) -> str:
    """A percentage given in percent: 12.3%."""
    return "–" if _missing(value) else f"{value:.{digits}f}%"


def share(value: Any, digits: int = 1) -> str:
    """A fraction shown as a percentage: 0.123 -> 12.3%."""
    return "–" if _missing(value) else f"{100 * value:.{digits}f}%"


def number(value: Any, digits: int = 2) -> str:
    return "–" if _missing(value) else f"{value:,.{digits}f}"


def day(value: Any) -> str:
    """The date part of an ISO timestamp."""
    return "–" if _missing(value) else str(value)[:10]


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
        money=money, count=count, percent=percent, share=share, number=number, day=day
    )
    env.globals["nav"] = NAV
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
