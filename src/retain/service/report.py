"""One self-contained HTML file: overview, cohorts, segments, models and model health.

The report renders the dashboard's own page parts from the same payloads as the
API, with the stylesheet, Chart.js and the chart data inlined: it opens in any
browser, offline, and can be mailed around.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from retain import __version__
from retain.config import load_settings
from retain.service import charts, data
from retain.service.render import chart_data, render
from retain.store import Store, open_store


def report_html(
    store: Store | str | Path, *, period: str = "month", margin: float | None = None
) -> str:
    """The report as one HTML string. ``period``: month, quarter or year for the rates,
    revenue split and cohorts; ``margin``: fraction of net revenue kept, in (0, 1]
    (default: the store's margin setting, else the margin of the last ``retain score``,
    else 1, as the overview page)."""
    opened = not isinstance(store, Store)
    db = open_store(store, read_only=True)
    try:
        db.require_orders()
        index = data.build_customer_index(db)
        metrics = data.metrics_payload(db, period=period, margin=margin)
        cohorts = data.cohorts_payload(db, period=period, margin=margin)
        segments = data.segments_payload(db, index)
        models = data.models_payload(db)
        health = data.model_health_payload(db)
        currency = load_settings(db).currency
    finally:
        if opened:
            db.close()
    specs = {
        **charts.overview_charts(metrics),
        **charts.cohort_charts(cohorts),
        **charts.segment_charts(segments),
        **charts.model_charts(models),
        **charts.model_health_charts(health),
    }
    return render(
        "report.html",
        inline=True,
        charts=specs,
        charts_json=chart_data(specs),
        metrics=metrics,
        currency=currency,
        cohorts=cohorts,
        segments=segments,
        models=models,
        health=health,
        version=__version__,
        store_path=None,
        store_name=Path(db.path).name,
        written=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        query="",
    )


def write_report(
    store: Store | str | Path,
    out: str | Path = "report.html",
    *,
    period: str = "month",
    margin: float | None = None,
) -> Path:
    """Write :func:`report_html` to ``out`` and return its path."""
    path = Path(out)
    html = report_html(store, period=period, margin=margin)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return path
