"""The dashboard: server-rendered pages, each from the same dict as its /api twin."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from retain import __version__
from retain.service import api, charts, data
from retain.service.api import Margin, Period, ServiceDep, WindowDays
from retain.service.render import chart_data, render

router = APIRouter(include_in_schema=False)


def page(
    request: Request,
    template: str,
    *,
    active: str,
    json_url: str,
    chart_specs: dict[str, Any] | None = None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    """Render a dashboard page; ``json_url`` is its API twin."""
    specs = chart_specs or {}
    context.setdefault("currency", _currency(request))
    html = render(
        template,
        active=active,
        json_url=json_url,
        charts=specs,
        charts_json=chart_data(specs),
        version=__version__,
        store_path=Path(request.app.state.service.db_path).name,  # not where it lives
        query=context.pop("query", ""),
        **context,
    )
    return HTMLResponse(html, status_code=status_code)


def _currency(request: Request) -> str | None:
    """The store's reporting currency, for the amounts a page shows (None when the store
    cannot be read: the numbers alone)."""
    from retain.config import load_settings
    from retain.errors import RetainError

    try:
        return load_settings(request.app.state.service.store()).currency
    except (RetainError, AttributeError):
        return None


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    """An error as a page with the message, for people."""
    titles = {404: "Not found", 401: "Not allowed", 422: "Cannot use that", 503: "No data yet"}
    return page(
        request,
        "error.html",
        active="",
        json_url="",
        status_code=status,
        status=status,
        title=titles.get(status, "Something went wrong"),
        message=message,
    )


def _query(request: Request) -> str:
    return f"?{request.url.query}" if request.url.query else ""


@router.get("/", response_class=HTMLResponse)
def overview_page(
    request: Request,
    service: ServiceDep,
    period: Period = "month",
    margin: Margin | None = None,
    window_days: WindowDays | None = None,
) -> Response:
    from retain.errors import StoreError

    try:
        payload = api.metrics(service, period, margin, window_days)
    except StoreError:
        # a store of subscriptions alone: its overview is the Subscriptions page
        if service.cached("has_subscriptions", _has_subscriptions):
            return RedirectResponse("/subscriptions", status_code=303)
        raise
    return page(
        request,
        "overview.html",
        active="overview",
        json_url="/api/metrics" + _query(request),
        chart_specs=charts.overview_charts(payload),
        metrics=payload,
    )


def _has_subscriptions(store: Any) -> bool:
    return bool(
        store.has_table("subscriptions") and store.scalar("SELECT count(*) FROM subscriptions")
    )


@router.get("/cohorts", response_class=HTMLResponse)
def cohorts_page(
    request: Request,
    service: ServiceDep,
    period: Period = "month",
    margin: Margin | None = None,
) -> HTMLResponse:
    payload = api.cohorts(service, period, margin)
    return page(
        request,
        "cohorts.html",
        active="cohorts",
        json_url="/api/cohorts" + _query(request),
        chart_specs=charts.cohort_charts(payload),
        cohorts=payload,
    )


@router.get("/segments", response_class=HTMLResponse)
def segments_page(request: Request, service: ServiceDep) -> HTMLResponse:
    payload = api.segments(service)
    return page(
        request,
        "segments.html",
        active="segments",
        json_url="/api/segments",
        chart_specs=charts.segment_charts(payload),
        segments=payload,
    )


@router.get("/campaigns", response_class=HTMLResponse)
def campaigns_page(request: Request, service: ServiceDep) -> HTMLResponse:
    payload = api.campaigns(service)
    return page(
        request, "campaigns.html", active="campaigns", json_url="/api/campaigns", campaigns=payload
    )


@router.get("/loyalty", response_class=HTMLResponse)
def loyalty_page(request: Request, service: ServiceDep) -> HTMLResponse:
    """The loyalty programme; before a ledger is built, how to build one."""
    from retain.errors import DataError

    try:
        payload: dict[str, Any] | None = api.get_loyalty(service)
    except DataError:  # no ledger yet: the page says how to build one
        payload = None
    return page(
        request,
        "loyalty.html",
        active="loyalty",
        json_url="/api/loyalty",
        chart_specs=charts.loyalty_charts(payload),
        loyalty=payload,
    )


@router.get("/feedback", response_class=HTMLResponse)
def feedback_page(
    request: Request, service: ServiceDep, window_days: Annotated[int | None, Query(ge=1)] = None
) -> HTMLResponse:
    """The pain points; before any feedback, how to bring some in."""
    payload = api.pain_points(service, window_days)
    return page(
        request,
        "feedback.html",
        active="feedback",
        json_url="/api/feedback/pain-points" + _query(request),
        chart_specs=charts.pain_point_charts(payload),
        pains=payload,
        window=window_days,
    )


@router.get("/feedback/{topic}", response_class=HTMLResponse)
def pain_point_page(
    request: Request,
    service: ServiceDep,
    topic: str,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 50,
    window_days: Annotated[int | None, Query(ge=1)] = None,
) -> HTMLResponse:
    payload = api.pain_point(service, topic, limit)
    summary = api.pain_points(service, window_days) or {"topics": []}
    row = next((r for r in summary["topics"] if r["topic"] == topic), None)
    return page(
        request,
        "pain_point.html",
        active="feedback",
        json_url=f"/api/feedback/pain-points/{quote(topic)}" + _query(request),
        pain=payload,
        row=row,
        limit=limit,
        window=window_days,
    )


@router.get("/subscriptions", response_class=HTMLResponse)
def subscriptions_page(request: Request, service: ServiceDep) -> HTMLResponse:
    """MRR and its movements, retention by start cohort, each plan's retention curve and
    subscriber value; without subscriptions, how to add them."""
    from retain.errors import ArgumentError, StoreError

    problem = None
    try:
        payload: dict[str, Any] | None = api.get_subscriptions(service)
    except (
        StoreError,
        ArgumentError,
    ) as exc:  # no subscriptions in the store: the page says how to add them
        payload, problem = None, str(exc)
    cohorts: list[dict[str, Any]] = []
    if payload:
        by_cohort: dict[str, dict[int, float]] = {}
        for row in payload["cohorts"]:
            by_cohort.setdefault(row["cohort"], {})[row["age"]] = row["logo_retention"]
        first = {r["cohort"]: r["customers"] for r in payload["cohorts"] if r["age"] == 0}
        cohorts = [
            {"cohort": c, "customers": first[c], "retention": [ages.get(a) for a in RETENTION_AGES]}
            for c, ages in sorted(by_cohort.items(), reverse=True)[:24]
        ]
    offers: dict[str, Any] | None = None
    offers_problem = None
    if payload:  # who to offer one: needs order lines and scores, which a store may lack
        try:
            offers = api.get_subscription_candidates(
                service, discount=0.1, retention=None, plan=None, max_irregularity=0.35, limit=10
            )
        except (StoreError, ArgumentError) as exc:
            offers_problem = str(exc)
    return page(
        request,
        "subscriptions.html",
        active="subscriptions",
        json_url="/api/subscriptions",
        chart_specs=charts.subscriptions_charts(payload),
        subscriptions=payload,
        problem=problem,
        cohorts=cohorts,
        ages=RETENTION_AGES,
        offers=offers,
        offers_problem=offers_problem,
    )


RETENTION_AGES = (1, 2, 3, 6, 9, 12, 18, 24)


@router.get("/whatif", response_class=HTMLResponse)
def whatif_page(
    request: Request,
    service: ServiceDep,
    months: str = "12",
    dropout_change: str = "0",
    purchase_rate_change: str = "0",
    spend_change: str = "0",
    campaign_reach: str = "",
    campaign_cost: str = "",
    campaign_dropout_change: str = "",
) -> HTMLResponse:
    """The what-if planner: levers on sliders, the projection redrawn as they move (the
    page asks /api/whatif), and a retention campaign priced; before a scoring, how to
    make one. A lever or horizon it cannot read is said, and that one alone put back at
    rest; a campaign it cannot read is said and left out."""
    from retain.errors import ArgumentError, RetainError
    from retain.whatif import HIGHEST_CHANGE, LOWEST_CHANGE, MAX_MONTHS, Campaign, Scenario

    problems: list[str] = []
    levers: dict[str, float] = {}
    given = {
        "dropout_change": dropout_change,
        "purchase_rate_change": purchase_rate_change,
        "spend_change": spend_change,
    }
    for name, text in given.items():
        try:
            levers[name] = float(text)
            Scenario(**{name: levers[name]})
        except (ValueError, ArgumentError):  # the words of Scenario's own check
            problems.append(
                f"{name.replace('_', '-')} must be a relative change from {LOWEST_CHANGE} to "
                f"{HIGHEST_CHANGE:g} (-0.2 = 20% lower), got {text!r}: it is at rest"
            )
            levers[name] = 0.0
    try:
        horizon = int(months)
        if not 1 <= horizon <= MAX_MONTHS:
            raise ValueError(months)
    except ValueError:
        problems.append(f"months must be a whole number from 1 to {MAX_MONTHS}, got {months!r}: 12")
        horizon = 12
    offer: dict[str, float] = {}
    asked = {
        "campaign_reach": campaign_reach,
        "campaign_cost": campaign_cost,
        "campaign_dropout_change": campaign_dropout_change,
    }
    if any(v.strip() for v in asked.values()):
        try:
            offer = {k: float(v) for k, v in asked.items()}
            Campaign(
                offer["campaign_reach"], offer["campaign_cost"], offer["campaign_dropout_change"]
            )
        except (ValueError, ArgumentError) as exc:
            why = (
                str(exc)
                if isinstance(exc, ArgumentError)
                else "each of its three numbers is needed"
            )
            problems.append(f"the campaign is left out: {why}")
            offer = {}
    payload: dict[str, Any] | None = None

    def ask() -> dict[str, Any]:
        return api.get_whatif(
            service,
            months=horizon,
            dropout_change=levers["dropout_change"],
            purchase_rate_change=levers["purchase_rate_change"],
            spend_change=levers["spend_change"],
            campaign_reach=offer.get("campaign_reach"),
            campaign_cost=offer.get("campaign_cost"),
            campaign_dropout_change=offer.get("campaign_dropout_change"),
        )

    try:
        try:
            payload = ask()
        except ArgumentError as exc:
            if offer:  # the campaign's effect beyond what the fit can say: it is left out
                problems.append(f"the campaign is left out: {exc}")
                offer = {}
            else:  # the lever beyond what the fit can say: that lever at rest
                problems.append(f"{exc}: it is at rest")
                levers["dropout_change"] = 0.0
            try:
                payload = ask()
            except ArgumentError as again:  # both: the lever at rest too
                problems.append(f"{again}: it is at rest")
                levers["dropout_change"] = 0.0
                payload = ask()
    except RetainError as exc:  # no scores yet: the page says how to make them
        problems.append(str(exc))
    return page(
        request,
        "whatif.html",
        active="whatif",
        json_url="/api/whatif",
        chart_specs=charts.whatif_charts(payload),
        whatif=payload,
        problem="; ".join(problems) or None,
        months=horizon,
        levers=levers,
        campaign=offer,
    )


@router.get("/segments/{name}", response_class=HTMLResponse)
def segment_page(
    request: Request,
    service: ServiceDep,
    name: str,
    sort: str = "value_at_stake",
    offset: Annotated[int, Query(ge=0)] = 0,
) -> HTMLResponse:
    """Drill-down: the customers of one segment, with its action and export; 404 for a
    segment that does not exist."""
    name = api.segment_name(name)
    payload = api.customer_list(service, segment=name, sort=sort, limit=50, offset=offset)
    info = next(
        (s for s in api.segments(service)["segments"] if s["segment"] == payload["segment"]), None
    )
    return _customers(request, service, payload, f"Segment: {payload['segment']}", info)


@router.get("/models", response_class=HTMLResponse)
def models_page(request: Request, service: ServiceDep) -> HTMLResponse:
    payload = api.models(service)
    specs = charts.model_charts(payload)
    return page(
        request,
        "models.html",
        active="models",
        json_url="/api/models",
        chart_specs=specs,
        models=payload,
    )


@router.get("/model-health", response_class=HTMLResponse)
def model_health_page(
    request: Request, service: ServiceDep, horizon: Annotated[int | None, Query(ge=1)] = None
) -> HTMLResponse:
    payload = api.model_health(service, horizon)
    return page(
        request,
        "model_health.html",
        active="model-health",
        json_url="/api/model-health" + _query(request),
        chart_specs=charts.model_health_charts(payload),
        health=payload,
    )


@router.get("/at-risk", response_class=HTMLResponse)
def at_risk_page(
    request: Request,
    service: ServiceDep,
    min_risk: str = "high",
    limit: Annotated[int, Query(ge=1, le=10_000)] = 50,
) -> HTMLResponse:
    payload = api.at_risk(service, min_risk, limit)
    return page(
        request,
        "at_risk.html",
        active="at-risk",
        json_url="/api/at-risk" + _query(request),
        chart_specs=charts.at_risk_charts(payload),
        risk=payload,
        limit=limit,
    )


@router.get("/customers", response_class=HTMLResponse)
def customers_page(
    request: Request,
    service: ServiceDep,
    segment: str | None = None,
    risk: str | None = None,
    q: str | None = None,
    sort: str = "value_at_stake",
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> HTMLResponse:
    payload = api.customer_list(
        service,
        segment=segment or None,
        risk=risk or None,
        q=q or None,
        sort=sort,
        limit=limit,
        offset=offset,
    )
    info = None
    if payload["segment"]:
        info = next(
            (s for s in api.segments(service)["segments"] if s["segment"] == payload["segment"]),
            None,
        )
    return _customers(request, service, payload, "Customers", info)


def _customers(
    request: Request,
    service: Any,
    payload: dict[str, Any],
    heading: str,
    segment_info: dict[str, Any] | None,
) -> HTMLResponse:
    from retain.segments import load_rules

    filters = {
        k: payload[k] for k in ("segment", "risk", "q", "sort", "limit", "offset") if payload[k]
    }
    return page(
        request,
        "customers.html",
        active="customers",
        json_url="/api/customers?" + urlencode(filters),
        page=payload,
        heading=heading,
        segment_info=segment_info,
        segment_names=list(load_rules().table()["segment"]),
        sorts=data.CUSTOMER_SORTS,
        query=payload["q"] or "",
    )


@router.get("/customers/{customer_id:path}", response_class=HTMLResponse)
def customer_page(request: Request, service: ServiceDep, customer_id: str) -> HTMLResponse:
    payload = api.customer(service, customer_id, 50)
    scores = payload["scores"] or {}

    def first(*names: str) -> str | None:
        return next((n for n in names if n in scores), None)

    return page(
        request,
        "customer.html",
        active="customers",
        json_url=f"/api/customers/{quote(payload['customer_id'], safe='')}?history=50",
        chart_specs=charts.customer_charts(payload),
        c=payload,
        clv_key=first("clv", "clv_12m", "predicted_clv"),
        next_key=first("next_purchase_date", "next_purchase_at"),
        next_low_key=first("next_purchase_low", "next_purchase_window_start"),
        next_high_key=first("next_purchase_high", "next_purchase_window_end"),
    )


@router.get("/search", response_class=HTMLResponse)
def search(
    request: Request, service: ServiceDep, q: Annotated[str, Query(max_length=200)] = ""
) -> Response:
    """A customer id or e-mail: straight to the customer when exactly one matches."""
    text = q.strip()
    if not text:
        return RedirectResponse("/customers", status_code=303)
    index = api.index_of(service)
    stored = api.resolve_customer_id(service, text)
    if stored in index.positions:
        return RedirectResponse(f"/customers/{quote(stored, safe='')}", status_code=303)
    if "email" in index.frame:
        emails = index.frame["email"]
        exact = index.frame.index[(emails == text.lower()).to_numpy()]
        if len(exact) == 1:
            return RedirectResponse(f"/customers/{quote(str(exact[0]), safe='')}", status_code=303)
    payload = api.customer_list(service, q=text, sort="net_revenue", limit=50, offset=0)
    if payload["total"] == 1:
        only = payload["customers"][0]["customer_id"]
        return RedirectResponse(f"/customers/{quote(only, safe='')}", status_code=303)
    return _customers(request, service, payload, "Search", None)


@router.get("/favicon.ico")
def favicon() -> Response:
    return Response(status_code=204)


# -- unsubscribe: the link every marketing message carries (retain.campaigns) ---------------
def _unsubscribe_page(
    status: int, title: str, message: str, token: str = "", confirm: bool = False
) -> HTMLResponse:
    html = render("unsubscribe.html", title=title, message=message, token=token, confirm=confirm)
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})


@router.get("/unsubscribe", response_class=HTMLResponse)
def unsubscribe_confirm(
    service: ServiceDep, token: Annotated[str, Query(max_length=500)] = ""
) -> Response:
    """The page a message's unsubscribe link opens: one button to confirm (a link alone
    changes nothing, so a mail scanner that follows links unsubscribes no one)."""
    from retain.campaigns.outbox import read_unsubscribe_token
    from retain.errors import DataError

    try:
        read_unsubscribe_token(service.store(), token)
    except DataError as exc:
        return _unsubscribe_page(400, "This link cannot be used", str(exc))
    return _unsubscribe_page(
        200,
        "Unsubscribe",
        "Stop marketing e-mails from this shop? Messages about your orders still reach you.",
        token,
        confirm=True,
    )


@router.post("/unsubscribe", response_class=HTMLResponse)
def unsubscribe_now(
    service: ServiceDep, token: Annotated[str, Query(max_length=500)] = ""
) -> Response:
    """Unsubscribe at once: the confirmation's button, and the one-click POST mail
    programs send for ``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` (RFC 8058)."""
    from retain.campaigns import unsubscribe
    from retain.errors import DataError

    if not service.writes:
        return _unsubscribe_page(
            503,
            "Please try again later",
            "This service is read-only and cannot record the request: reply to the message "
            "and ask to be removed.",
        )
    try:
        with service.write_lock:
            unsubscribe(service.store(), token)
    except DataError as exc:
        return _unsubscribe_page(400, "This link cannot be used", str(exc))
    return _unsubscribe_page(
        200, "You are unsubscribed", "You will get no more marketing e-mails from us."
    )


# -- tracked links: each link of a campaign message (retain.campaigns.clicks) ---------------
@router.get("/click")
def click(service: ServiceDep, t: Annotated[str, Query(max_length=4000)] = "") -> Response:
    """Record a click on a message's link and send the customer on to its address (a
    read-only service sends them on and records nothing)."""
    from fastapi.responses import RedirectResponse

    from retain.campaigns.clicks import record_click, target
    from retain.errors import DataError

    try:
        if service.writes:
            with service.write_lock:
                url = record_click(service.store(), t)
        else:
            url = target(service.store(), t)
    except DataError as exc:
        return _unsubscribe_page(400, "This link cannot be used", str(exc))
    return RedirectResponse(url, status_code=302, headers={"Cache-Control": "no-store"})
