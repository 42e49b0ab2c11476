"""The JSON API: one route per dashboard page, plus customer lookups, recommendations and
real-time order ingest. Each route returns what a function of :mod:`retain.service.data`
returns; the dashboard page with the same name renders the same dict.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import threading
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlencode

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

from retain import whatif
from retain.errors import ArgumentError, ModelError
from retain.metrics import MAX_WINDOW_DAYS
from retain.service import data
from retain.service.app import Service
from retain.service.jsonbody import StrictJSONRoute
from retain.service.orders import WriteQueue, WritesBusy
from retain.store import Store

router = APIRouter(prefix="/api", tags=["api"], route_class=StrictJSONRoute)


async def get_service(request: Request) -> Service:
    # async: a plain function would be called in a worker thread on every request
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(get_service)]

Period = Annotated[str, Query(description="Period of rates and tables: month, quarter or year.")]
Margin = Annotated[
    float,
    Query(
        gt=0,
        le=1,
        description="Fraction of net revenue kept, in (0, 1]; CLV is multiplied by it. "
        "Default: the store's margin setting, else the margin of the last `retain score`, else 1.",
    ),
]
DiscountRate = Annotated[
    float, Query(gt=0, lt=1, description="Discount rate a year (default: the store's setting).")
]
AsOfDay = Annotated[
    dt.date,
    Query(description="Observation day (default: the store's as_of setting, else today)."),
]
WindowDays = Annotated[
    int,
    Query(
        ge=1,
        le=MAX_WINDOW_DAYS,
        description="A customer is someone who ordered in the last N days (retention). "
        "Default: the store's window_days setting, else from the store's purchase rhythm.",
    ),
]


class Problem(BaseModel):
    """An error: what was wrong, in words."""

    detail: str | list[str]


ERRORS: dict[int | str, dict[str, Any]] = {
    422: {"model": Problem, "description": "A parameter or value that cannot be used."},
    503: {"model": Problem, "description": "The store holds no orders yet."},
}


# -- shared, cached computations -------------------------------------------------------------
def index_of(service: Service) -> data.CustomerIndex:
    """The service's customer index, built once per store generation."""
    return service.cached("customer_index", data.build_customer_index, stale_ok=True)


def metrics(
    service: Service, period: str, margin: float | None, window_days: int | None
) -> dict[str, Any]:
    return service.cached(
        ("metrics", period, margin, window_days),
        lambda store: data.metrics_payload(
            store, period=period, margin=margin, window_days=window_days
        ),
    )


def cohorts(service: Service, period: str, margin: float | None) -> dict[str, Any]:
    return service.cached(
        ("cohorts", period, margin),
        lambda store: data.cohorts_payload(store, period=period, margin=margin),
    )


def segments(service: Service) -> dict[str, Any]:
    index = index_of(service)
    return service.cached("segments", lambda store: data.segments_payload(store, index))


def at_risk(service: Service, min_risk: str, limit: int) -> dict[str, Any]:
    index = index_of(service)
    return service.cached(
        ("at-risk", min_risk, limit),
        lambda store: data.at_risk_payload(store, index, min_risk=min_risk, limit=limit),
    )


def models(service: Service) -> dict[str, Any]:
    """The models page; after a write, the previous one while it is recomputed (one more
    order barely moves the tracking curve or the churn rate)."""
    return service.cached("models", data.models_payload, stale_ok=True)


def model_health(service: Service, horizon: int | None) -> dict[str, Any]:
    """The Model health page: the model card and the latest backtest, as stored."""
    return service.cached(
        ("model-health", horizon), lambda store: data.model_health_payload(store, horizon)
    )


def alerts(service: Service, period: str, window_days: int | None) -> dict[str, Any]:
    return service.cached(
        ("alerts", period, window_days),
        lambda store: data.alerts_payload(store, period=period, window_days=window_days),
    )


def recommendations(service: Service) -> data.Recommendations:
    """The recommender and the customers' purchases, loaded once: a new order changes
    them too little to relearn them on every write."""
    recs: data.Recommendations = service.cached(
        "recommendations", data.build_recommendations, sticky=True
    )
    return recs


def campaigns(service: Service) -> dict[str, Any]:
    """The Campaigns page, read afresh (the outbox changes without an order being
    written), with the campaigns ``retain serve --campaigns`` runs and its last tick
    (None when it runs none)."""
    payload = data.campaigns_payload(service.store())
    running = service.extras.get("campaigns_file")
    return {
        **payload,
        "definitions": None if running is None else running.summary(),
        "last_run": service.extras.get("campaigns_last"),
    }


def _search_columns(service: Service, index: data.CustomerIndex) -> tuple[Any, Any, dict]:
    """The index's customer ids and e-mails lower-cased, and a map of lower-cased id to the
    id (None when two ids differ only by case): built once per index."""
    held = service.extras.get("search")
    if held is not None and held[0] is index:
        return held[1], held[2], held[3]
    frame = index.frame
    ids = frame.index.astype(str)
    lowered = ids.str.lower()
    emails = frame["email"].fillna("").astype(str).str.lower() if "email" in frame else None
    by_lower: dict[str, str | None] = {}
    for low, cid in zip(lowered.tolist(), ids.tolist(), strict=True):
        by_lower[low] = None if low in by_lower else cid
    service.extras["search"] = (index, lowered, emails, by_lower)
    return lowered, emails, by_lower


def order_key(order_id: str) -> str:
    """The order_id as the store keys it: as ingest stores ids, trimmed of Unicode
    whitespace, without controls (tab, NUL) or zero-width characters (case kept)."""
    import unicodedata

    return "".join(ch for ch in order_id if unicodedata.category(ch) not in ("Cc", "Cf")).strip()


def resolve_customer_id(service: Service, customer_id: str) -> str:
    """The stored id of ``customer_id``: itself when the store has it, else the one id that
    equals it but for case (customers keyed by e-mail are stored lower-cased)."""
    index = index_of(service)
    if customer_id in index.positions or customer_id in index.fresh:
        return customer_id
    _, _, by_lower = _search_columns(service, index)
    return by_lower.get(customer_id.lower()) or customer_id


def customer(service: Service, customer_id: str, history: int) -> dict[str, Any]:
    """One customer's payload, found by id whatever its case; 404 when unknown."""
    from retain.ingest import customer_key

    stored = resolve_customer_id(service, customer_id)
    # only e-mail ids are stored lower-cased: another id is looked up as given
    lowered = customer_key(customer_id)
    candidates = [stored] if stored == lowered else [stored, lowered]
    for cid in candidates:  # a customer new since the index was built: lower-cased e-mail
        found = data.customer_payload(
            service.store(),
            cid,
            index_of(service),
            history=history,
            recs=recommendations(service),
            stale=not service.is_fresh(cid, "customer_index"),
            tier=tier_of(service, cid),
        )
        if found is not None:
            return found
    raise HTTPException(404, f"no customer {customer_id!r} in the store")


def customer_in_memory(service: Service, customer_id: str, history: int) -> dict[str, Any] | None:
    """:func:`customer`'s answer when the service holds all of it in memory: the customer
    index and recommendations loaded and current, the id stored as given, no order
    history asked. Else None (then :func:`customer` reads the store)."""
    if history:
        return None
    index = service.peek(INDEX_KEY)
    recs = service.peek("recommendations")
    if index is None or recs is None or service.generation_of(INDEX_KEY) != service.generation:
        return None
    if customer_id not in index.positions and customer_id not in index.fresh:
        return None
    if not service.is_fresh(customer_id, INDEX_KEY):
        return None
    # the tier from memory: with a loyalty ledger, once the balances are loaded
    rules = service.cached(RULES_KEY, loyalty_rules, sticky=True)  # read once
    if rules and service.peek(BALANCES_KEY) is None:
        return None
    tier = tier_of(service, customer_id)
    return data.customer_payload(service.store(), customer_id, index, recs=recs, tier=tier)


RULES_KEY = "loyalty_rules"


def loyalty_rules(store: Store) -> Any:
    """The rules of the latest loyalty build, or False before one. Kept for the service's
    life: a build needs the store, which the service holds."""
    from retain.loyalty.build import current_rules

    built = store.has_table("loyalty_builds") and bool(
        store.scalar("SELECT count(*) FROM loyalty_builds")
    )
    return current_rules(store) if built else False


def tier_of(service: Service, customer_id: str) -> Any:
    """The loyalty tier the customer holds (:class:`retain.loyalty.rules.Tier`), or None:
    from the balances in memory once the service holds them, else from the store."""
    rules = service.cached(RULES_KEY, loyalty_rules, sticky=True)
    if not rules:
        return None
    held = service.peek(BALANCES_KEY)
    if held is not None:
        member = held[0].member(customer_id)
        return None if member is None else rules.tier(member[1])
    found = (
        service.store()
        .con.execute("SELECT tier FROM loyalty_members WHERE customer_id = ?", [customer_id])
        .fetchall()
    )
    return rules.tier(found[0][0]) if found else None


def segment_name(name: str) -> str:
    """The segment called ``name`` (case, spaces and dashes ignored), or 404 naming the
    segments there are."""
    from retain.errors import SchemaError
    from retain.segments import load_rules

    try:
        return load_rules().segment(name).name
    except SchemaError as exc:
        raise HTTPException(404, str(exc)) from None


def customer_list(service: Service, **filters: Any) -> dict[str, Any]:
    """A page of customers; ``q`` matches anywhere in the id or e-mail, ignoring case."""
    index = index_of(service)
    q = filters.pop("q", None)
    text = q.strip().lower() if q else ""
    if not text:
        return data.customers_payload(service.store(), index, q=q or None, **filters)
    lowered, emails, _ = _search_columns(service, index)
    hit = np.asarray(lowered.str.contains(text, regex=False), dtype=bool)
    if emails is not None:
        hit |= np.asarray(emails.str.contains(text, regex=False), dtype=bool)
    subset = dataclasses.replace(index, frame=index.frame[hit])
    payload = data.customers_payload(service.store(), subset, q=None, **filters)
    payload["q"] = q
    for side in ("next", "previous"):
        if payload[side]:
            parts = dict(parse_qsl(payload[side]))
            offset = parts.pop("offset")
            payload[side] = urlencode({**parts, "q": q, "offset": offset})
    return payload


INDEX_KEY = "customer_index"
FOLD_EVERY_S = 60.0
"""Seconds between foldings of the customers rescored after orders into the customer
index's table (lists, sorts, counts and search read it; a customer's own page reads the
rescored row at once)."""
_WRITER_LOCK = threading.Lock()


def write_queue(service: Service) -> WriteQueue:
    """The service's writer (:class:`~retain.service.orders.WriteQueue`), started on the
    first order."""
    with _WRITER_LOCK:
        if service.writer is None:
            if service.closed:
                raise WritesBusy("not stored: the service is shutting down", retry_after=5)
            service.writer = WriteQueue(lambda orders: ingest_batch(service, orders))
        writer: WriteQueue = service.writer
        return writer


def ingest(service: Service, order: dict[str, Any]) -> dict[str, Any]:
    """Store one order (or quarantine it), rescore its customer, and say what happened."""
    result = ingest_batch(service, [order])[0]
    if isinstance(result, Exception):
        raise result
    return result


def rescore_written(
    service: Service, store: Store, written: list[str]
) -> tuple[data.CustomerIndex | None, dict[str, str], Any]:
    """After a write for the customers ``written``: rescore them in one pass and put their
    new rows in the customer index (other cached results are stale now). Returns the
    rescoring (None when it failed), a note per customer not rescored, and the index."""
    try:
        rescored, notes = data.rescore_customers(store, written)
    except Exception as exc:  # stored all the same: say so rather than answer 500
        rescored = None
        notes = dict.fromkeys(written, f"not rescored: {type(exc).__name__}")
    index = service.peek(INDEX_KEY)
    current = rescored is not None and not notes and index is not None
    if rescored is not None and current:
        for customer_id in written:
            index.fresh[customer_id] = rescored.frame.iloc[rescored.positions[customer_id]]
    if written:
        service.wrote_batch(written, INDEX_KEY, index if current else None)
    return rescored, notes, index


def ingest_batch(
    service: Service, orders: list[dict[str, Any]]
) -> list[dict[str, Any] | Exception]:
    """Store the orders in one pass (or quarantine them: :func:`~retain.service.orders.
    ingest_orders`), then rescore their customers in one pass and put their new rows in
    the customer index; one result (or the exception that order raised, nothing of it
    stored) per order, in order."""
    from retain.ingest import customer_key
    from retain.service.orders import ingest_orders, quarantined_rows

    store = service.store()
    done: list[tuple[dict[str, Any], str, Any, list[dict[str, Any]], bool, int]] = []
    results: list[dict[str, Any] | Exception] = []
    with service.write_lock:
        reports = ingest_orders(store, orders)
        for order, report in zip(orders, reports, strict=True):
            # the id as the store keys it (an e-mail in any case is one customer)
            customer_id = customer_key(str(order["customer_id"]))
            if isinstance(report, Exception):  # rolled back: this order is not stored
                results.append(report)
                continue
            problems = quarantined_rows(store, report.file) if report.quarantined else []
            excluded = sum(report.excluded.values())
            # a purchase, a refund of a stored order, or an order kept as no purchase
            # (cancelled, refunded, unpaid): each is stored and changes the customer
            stored = report.orders > 0 or report.refunds > 0 or excluded > 0
            done.append((order, customer_id, report, problems, stored, excluded))
            results.append({})
        written = list(dict.fromkeys(d[1] for d in done if d[4]))
        rescored, notes, index = rescore_written(service, store, written)
    recs = service.peek("recommendations")
    answers = iter(done)
    for i, result in enumerate(results):
        if isinstance(result, Exception):
            continue
        order, customer_id, report, problems, stored, excluded = next(answers)
        results[i] = _ingested(
            service, order, customer_id, report, problems, stored, excluded, notes, rescored, recs
        )
    if index is not None and index.fresh:
        _fold_later(service)
    return results


def _ingested(
    service: Service,
    order: dict[str, Any],
    customer_id: str,
    report: Any,
    problems: list[dict[str, Any]],
    stored: bool,
    excluded: int,
    notes: dict[str, str],
    rescored: data.CustomerIndex | None,
    recs: data.Recommendations | None,
) -> dict[str, Any]:
    """What POST /api/orders answers for one order of a batch."""
    note = notes.get(customer_id) if stored else None
    result: dict[str, Any] = {
        "stored": stored,
        "as": (
            "purchase"
            if report.orders
            else "refund"
            if report.refunds
            else "not a purchase"
            if excluded
            else None
        ),
        "order_id": order_key(str(order["order_id"])),
        "customer_id": customer_id,
        "source": report.file,
        "quarantined": problems,
        "rescored": stored and note is None,
        "notes": [note] if note else [],
    }
    if excluded:
        statuses = ", ".join(sorted(report.excluded))
        result["notes"].append(
            f"kept in excluded_orders as {statuses}: not a purchase and not revenue"
        )
    if not stored:
        result["detail"] = [p["reason"] for p in problems if p["target"] == "orders"]
        return result
    if rescored is not None and customer_id in rescored.positions:
        # the rows just measured: no second pass over the customer's orders
        one = dataclasses.replace(
            rescored, fresh={customer_id: rescored.frame.iloc[rescored.positions[customer_id]]}
        )
        result["customer"] = data.customer_payload(
            service.store(), customer_id, one, recs=recs, tier=tier_of(service, customer_id)
        )
        return result
    try:
        result["customer"] = customer(service, customer_id, 0)
    except HTTPException:  # their only order is no purchase: no customer yet
        result["customer"] = None
    return result


def _fold_later(service: Service) -> None:
    """Fold the customer index's rescored rows into its table in a background thread,
    :data:`FOLD_EVERY_S` seconds after the first write not yet folded (one thread at a
    time, which folds again while writes keep adding rows)."""
    import time

    with service.write_lock:
        if service.extras.get("folding"):
            return  # the thread at work takes these rows too
        service.extras["folding"] = True
        service.extras.setdefault("folded_at", time.monotonic())

    def work() -> None:
        try:
            while not service.closed:
                due = service.extras["folded_at"] + FOLD_EVERY_S
                while time.monotonic() < due and not service.closed:
                    time.sleep(min(0.25, max(0.0, due - time.monotonic())))
                index = service.peek(INDEX_KEY)
                with service.write_lock:
                    if service.closed or index is None or not index.fresh:
                        service.extras["folding"] = False
                        return
                    snapshot = dict(index.fresh)
                service.extras["folded_at"] = time.monotonic()
                folded = data.fold_fresh(index, snapshot)
                with service.write_lock:  # no row is added to index.fresh meanwhile
                    # rows rescored again while it folded stay in front of the table
                    folded.fresh.update(
                        {k: v for k, v in index.fresh.items() if snapshot.get(k) is not v}
                    )
                    service.replace_cached(INDEX_KEY, index, folded)
        finally:
            service.extras["folding"] = False

    service.background(work)


# -- routes ------------------------------------------------------------------------------------
@router.get("/metrics", responses=ERRORS, summary="Headline metrics (the overview page)")
def get_metrics(
    service: ServiceDep,
    period: Period = "month",
    margin: Margin | None = None,
    window_days: WindowDays | None = None,
) -> dict[str, Any]:
    """Customers, orders, net revenue, AOV, average and median CLV, repeat rate, retention
    and churn rate of the last complete period, blended CAC and CLV:CAC, revenue from new
    vs returning customers per period, the CLV distribution and the alerts. Money is in the
    store's reporting currency; rates are percentages."""
    return metrics(service, period, margin, window_days)


@router.get("/cohorts", responses=ERRORS, summary="Cohort retention and CLV curves")
def get_cohorts(
    service: ServiceDep, period: Period = "month", margin: Margin | None = None
) -> dict[str, Any]:
    """Customers grouped by the period of their first order: the share still buying at each
    age (``active_share``, percent) and the cumulative CLV per customer
    (``cumulative_clv``, reporting currency x margin)."""
    return cohorts(service, period, margin)


@router.get("/segments", responses=ERRORS, summary="RFM segments with their actions")
def get_segments(service: ServiceDep) -> dict[str, Any]:
    """One row per named segment (customers, revenue, at-risk count, value at stake, action,
    offer) and the recency x frequency grid."""
    return segments(service)


@router.get("/campaigns", summary="What each campaign sent, held, capped and suppressed")
def get_campaigns(service: ServiceDep) -> dict[str, Any]:
    """Per campaign, the outbox's messages by status and the orders and net revenue of
    those sent a message in the 7 days after it; opt-outs by reason; the latest messages."""
    return campaigns(service)


class Definitions(BaseModel):
    """Campaign definitions to check: the text of a campaign file."""

    model_config = ConfigDict(extra="forbid")
    definitions: str = Field(max_length=1_000_000, description="a campaign file's TOML text")


@router.post(
    "/campaigns/validate",
    responses={422: {"model": Problem, "description": "The line and field of a mistake."}},
    summary="Check campaign definitions",
)
def post_campaigns_validate(body: Definitions) -> dict[str, Any]:
    """The campaigns the TOML text defines, checked as ``retain campaigns validate``
    checks a file; a mistake is answered 422 with its line and field."""
    from retain.campaigns.definitions import parse_campaigns

    checked = parse_campaigns(body.definitions, "definitions")
    return {"valid": True, "campaigns": checked.summary()}


Change = Annotated[
    float,
    Query(
        ge=whatif.LOWEST_CHANGE,
        le=whatif.HIGHEST_CHANGE,
        description="A relative change from now on: -0.2 = 20% lower.",
    ),
]


@router.get("/whatif", responses=ERRORS, summary="Revenue and value projected under a scenario")
def get_whatif(
    service: ServiceDep,
    months: Annotated[
        int, Query(ge=1, le=whatif.MAX_MONTHS, description="Months to project.")
    ] = 12,
    dropout_change: Change = 0.0,
    purchase_rate_change: Change = 0.0,
    spend_change: Change = 0.0,
    campaign_reach: Annotated[
        float | None,
        Query(gt=0, le=1, description="A retention campaign's share of customers reached."),
    ] = None,
    campaign_cost: Annotated[
        float | None,
        Query(ge=0, le=whatif.HIGHEST_COST, description="What reaching one customer costs."),
    ] = None,
    campaign_dropout_change: Annotated[
        float | None,
        Query(
            ge=whatif.LOWEST_CHANGE,
            le=whatif.HIGHEST_CHANGE,
            description="The campaign's effect on the dropout of those reached.",
        ),
    ] = None,
    subscription_share: Annotated[
        float | None,
        Query(gt=0, le=1, description="Share of the subscription candidates who subscribe."),
    ] = None,
    subscription_retention: Annotated[
        float | None,
        Query(gt=0, le=1, description="Share of subscribers renewing at each delivery."),
    ] = None,
    draws: Annotated[
        int,
        Query(
            ge=0,
            le=whatif.MAX_DRAWS,
            description="Draws of the fitted parameters for 90% intervals (0: none; each "
            "costs about one preparation of the customers).",
        ),
    ] = 0,
) -> dict[str, Any]:
    """``retain whatif``: the kept model's revenue and purchases month by month and the
    value (CLV) over ``months``, as it stands (``base``) and under the levers
    (``scenario``), and the change; with the three ``campaign_`` parameters, what a
    retention campaign adds against its cost (``campaign``). The customers are prepared
    once per store version; a scenario is then a pass over their groups (about 0.1 s at
    1M customers)."""
    from retain.errors import ArgumentError
    from retain.whatif import (
        Campaign,
        Scenario,
        acquisition,
        acquisition_table,
        campaign,
        planner,
        report,
        subscriptions,
    )

    plan = service.cached("whatif_planner", planner, stale_ok=True)
    scenario = Scenario(
        dropout_change=dropout_change,
        purchase_rate_change=purchase_rate_change,
        spend_change=spend_change,
    )
    answer = report(plan, scenario, months)
    fit = (plan.fit_id, plan.margin, plan.as_of)
    table = service.cached(
        ("whatif_acquisition", fit, months),
        lambda store: acquisition_table(store, plan.margin, months, plan.as_of.isoformat()),
    )
    answer["acquisition"] = acquisition(answer, table)
    if subscription_share is not None:
        from retain.subscriptions import candidates

        found = service.cached(  # the share only scales the candidates' gains
            ("whatif_candidates", fit, subscription_retention),
            lambda store: candidates(store, retention=subscription_retention, limit=None),
        )
        answer["subscriptions"] = subscriptions(found, subscription_share)
    given = (campaign_reach, campaign_cost, campaign_dropout_change)
    if any(v is not None for v in given):
        if campaign_reach is None or campaign_cost is None or campaign_dropout_change is None:
            raise ArgumentError(
                "a campaign needs campaign_reach, campaign_cost and campaign_dropout_change"
            )
        offer = Campaign(campaign_reach, campaign_cost, campaign_dropout_change)
        answer["campaign"] = campaign(plan, offer, months)
    if draws:
        from retain.whatif import intervals

        def sure(store: Store) -> dict[str, Any]:
            try:
                return intervals(store, scenario, months, draws=draws)
            except ModelError as exc:  # the projection stands; why there is no interval
                return {"problem": str(exc)}

        answer["intervals"] = service.cached(
            ("whatif_intervals", fit, scenario, months, draws), sure
        )
    return answer


@router.get("/alerts", responses=ERRORS, summary="Recent drops in key metrics")
def get_alerts(
    service: ServiceDep, period: Period = "month", window_days: WindowDays | None = None
) -> dict[str, Any]:
    """Drops in retention, AOV, purchase frequency, new customers or returning revenue share
    in the last complete periods that are unlikely under the trailing baseline, and the
    drift of the latest backtest (its latest window's forecast bias outside +/-10%, or
    its calibration error at least double the earlier origins')."""
    return alerts(service, period, window_days)


@router.get("/at-risk", responses=ERRORS, summary="The win-back list")
def get_at_risk(
    service: ServiceDep,
    min_risk: Annotated[
        str, Query(description="low, medium, high or lost: this or worse.")
    ] = "high",
    limit: Annotated[int, Query(ge=1, le=10_000, description="Customers to list.")] = 100,
) -> dict[str, Any]:
    """Customers whose churn risk is ``min_risk`` or worse, most value at stake first, with
    the reason, their segment's action and their most bought products."""
    return at_risk(service, min_risk, limit)


@router.get("/models", responses=ERRORS, summary="Fitted models and their diagnostics")
def get_models(service: ServiceDep) -> dict[str, Any]:
    """The fitted parameters, fit diagnostics, the model card (``card``: data range,
    holdout, candidates and their scores, choice, warnings, latest backtest), tracking of
    actual vs predicted repeat purchases, P(alive) by frequency and recency, and the
    churn-lifespan curve, as stored by ``retain fit``."""
    return models(service)


@router.get("/model-health", responses=ERRORS, summary="The model card and the latest backtest")
def get_model_health(
    service: ServiceDep,
    horizon: Annotated[
        int | None,
        Query(ge=1, description="Days of the backtest window shown (default: the shortest)."),
    ] = None,
) -> dict[str, Any]:
    """The model card of the fit in use (data range, holdout, candidates and their scores,
    choice, fit guard, warnings) and, from the latest ``retain backtest`` run, the
    reliability table and decile lift of each model at the latest origin of the horizon,
    the forecast against actual purchases at every origin, the summary over origins and
    the drift alert."""
    return model_health(service, horizon)


@router.get("/customers", responses=ERRORS, summary="Customers, filtered and paged")
def get_customers(
    service: ServiceDep,
    segment: Annotated[str | None, Query(description="Segment name, e.g. Champions.")] = None,
    risk: Annotated[str | None, Query(description="Churn risk: low, medium, high or lost.")] = None,
    q: Annotated[
        str | None, Query(description="Part of a customer id or e-mail, in any case.")
    ] = None,
    sort: Annotated[
        str, Query(description="One of: " + ", ".join(data.CUSTOMER_SORTS) + ".")
    ] = "value_at_stake",
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """A page of customers with their segment, risk, P(alive), CLV and value at stake;
    ``next`` and ``previous`` give the neighbouring pages' query strings."""
    return customer_list(
        service, segment=segment, risk=risk, q=q, sort=sort, limit=limit, offset=offset
    )


@router.get(
    "/customers/{customer_id:path}",
    responses={404: {"model": Problem, "description": "No such customer."}, **ERRORS},
    summary="One customer: profile, scores, segment, risk, recommendations",
)
async def get_customer(
    service: ServiceDep,
    customer_id: str,
    history: Annotated[
        int, Query(ge=0, le=1000, description="How many of the latest orders to list.")
    ] = 0,
) -> JSONResponse:
    """Profile, orders summary, model scores (P(alive), expected purchases and the range
    of the customer's purchases in a year, ``purchases_365d_low``/``_high``; 12-month
    CLV, the range of the customer's value, ``clv_low``/``clv_high`` (the central 90% of
    outcomes), and the uncertainty of the expected value itself,
    ``clv_mean_low``/``clv_mean_high``; next purchase date and window), RFM scores,
    segment and action, churn risk and reason, value at stake and recommendations."""
    # from memory, answered at once; what needs the store is read in a worker thread
    found = customer_in_memory(service, customer_id, history)
    if found is None:
        found = await run_in_threadpool(customer, service, customer_id, history)
    return JSONResponse(found)


TEXT_CHARS = 200
"""The longest value (characters) a field of a request may hold, but for the ones in
:data:`FIELD_CHARS`: ids, SKUs, dates, amounts, statuses, channels."""
FIELD_CHARS = {"name": 1000, "email": 254}
"""The longest name (a customer's or a product's) and e-mail address, in characters."""
NUMBER_FIELDS = frozenset(
    {"net_revenue", "gross", "discount", "shipping", "tax", "fees", "refunded"}
    | {"quantity", "unit_price", "k"}
)


BOOLEAN_FIELDS = frozenset({"accepts_marketing"})
"""The fields of a request that take true or false; in any other, a boolean is refused
(JSON's true is no amount, id or count, though Python reads it as 1)."""


def within_lengths(values: Any) -> Any:
    """``values`` (a request's fields) when no text or whole number in them is longer than
    its field takes (:data:`TEXT_CHARS`, :data:`FIELD_CHARS`) and no field but those of
    :data:`BOOLEAN_FIELDS` holds true or false; else an ArgumentError naming the field."""
    if isinstance(values, dict):
        for field, value in values.items():
            if isinstance(value, bool) and field not in BOOLEAN_FIELDS:
                raise ArgumentError(
                    f"{field} is {str(value).lower()}, a boolean: it takes "
                    + ("a number" if field in NUMBER_FIELDS else "a text or a whole number")
                )
            limit = FIELD_CHARS.get(field, TEXT_CHARS)
            text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
            if isinstance(text, str) and len(text) > limit:
                kind = "characters" if isinstance(value, str) else "digits"
                raise ArgumentError(
                    f"{field} is {len(text):,} {kind} long; it takes at most {limit:,}"
                )
    return values


class Cart(BaseModel):
    """A shopping cart: the SKUs in it, and who is shopping (their recent views count)."""

    model_config = ConfigDict(extra="forbid")
    skus: list[Annotated[str, Field(max_length=TEXT_CHARS)]] = Field(
        default_factory=list, max_length=500, description="SKUs in the cart."
    )
    k: int = Field(5, ge=1, le=100, description="How many products to suggest.")
    customer_id: str | None = Field(
        None, min_length=1, max_length=500, description="Who: their recent views count too."
    )
    anonymous_id: str | None = Field(
        None, min_length=1, max_length=200, description="A visitor not known yet: the same."
    )

    @model_validator(mode="before")
    @classmethod
    def check_lengths(cls, values: Any) -> Any:
        return within_lengths(values)

    @model_validator(mode="after")
    def needs_something(self) -> Cart:
        if not self.skus and self.customer_id is None and self.anonymous_id is None:
            raise ArgumentError("give skus, or a customer_id or anonymous_id whose views count")
        return self


VIEWED_DAYS = 7
"""How far back a shopper's product views and cart adds count for their suggestions."""
VIEWED_MOST = 20

_VIEWED_SQL = """
SELECT sku FROM events
WHERE sku IS NOT NULL AND kind IN ('product_view', 'add_to_cart')
  AND (customer_id = $customer OR anonymous_id = $anonymous)
  AND occurred_at >= now()::TIMESTAMP - to_days($days)
GROUP BY sku ORDER BY max(occurred_at) DESC LIMIT $most
"""


@router.post("/recommendations", responses=ERRORS, summary="Products to suggest for a cart")
def post_recommendations(service: ServiceDep, cart: Cart) -> dict[str, Any]:
    """Products that go with the cart, each with the reason (bought together, ...). With a
    ``customer_id`` or ``anonymous_id``, the products they viewed or put in a cart in the
    last 7 days (events: ``POST /api/events``) count beside the cart, newest first (at
    most 20); they are listed in ``viewed``."""
    viewed: list[str] = []
    if cart.customer_id is not None or cart.anonymous_id is not None:
        from retain.ingest import customer_key

        customer = None if cart.customer_id is None else customer_key(cart.customer_id)
        found = service.store().con.execute(
            _VIEWED_SQL,
            {"customer": customer, "anonymous": cart.anonymous_id, "days": VIEWED_DAYS,
             "most": VIEWED_MOST},
        ).fetchall()  # fmt: skip
        viewed = [str(r[0]) for r in found if str(r[0]) not in cart.skus]
    result = data.cart_recommendations(recommendations(service), [*cart.skus, *viewed], cart.k)
    result["skus"], result["viewed"] = cart.skus, viewed
    return result


class OrderLineIn(BaseModel):
    """One product line of an order. Values are read as a file's cells are."""

    model_config = ConfigDict(extra="forbid")
    sku: str | int
    name: str | None = None
    category: str | None = None
    quantity: float | str | None = None
    unit_price: float | str | None = None

    @model_validator(mode="before")
    @classmethod
    def check_lengths(cls, values: Any) -> Any:
        return within_lengths(values)


class OrderIn(BaseModel):
    """An order, in the canonical columns. Values are checked by the same rules as
    ``retain ingest``: dates as ISO 8601 (with offset) or YYYYMMDD, amounts as numbers.
    Give ``net_revenue``, or ``gross`` (net = gross - discount - refunded - fees)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "order_id": "A-1001",
                "customer_id": "C-42",
                "ordered_at": "2025-10-02T17:09:34-03:00",
                "gross": 59.90,
                "discount": 5.0,
                "currency": "USD",
                "channel": "web",
                "email": "ana@example.com",
                "lines": [{"sku": "SKU-1", "name": "Tea", "quantity": 2, "unit_price": 29.95}],
            }
        },
    )
    order_id: str | int
    customer_id: str | int
    ordered_at: str
    net_revenue: float | str | None = None
    gross: float | str | None = None
    discount: float | str | None = None
    shipping: float | str | None = None
    tax: float | str | None = None
    fees: float | str | None = None
    refunded: float | str | None = None
    refund_of: str | int | None = Field(
        None, description="The order this row refunds (then its amount is the refund)."
    )
    status: str | None = Field(
        None,
        description="paid (default), refunded, cancelled, voided, failed, pending, ...: "
        "only paid orders are purchases",
    )
    currency: str | None = None
    channel: str | None = None
    discount_code: str | None = None
    email: str | None = None
    name: str | None = None
    accepts_marketing: bool | str | None = None
    lines: list[OrderLineIn] = Field(default_factory=list, max_length=1000)

    @model_validator(mode="before")
    @classmethod
    def check_lengths(cls, values: Any) -> Any:
        return within_lengths(values)

    @model_validator(mode="after")
    def needs_amount(self) -> OrderIn:
        if self.net_revenue is None and self.gross is None:
            raise ArgumentError("give net_revenue or gross: an order needs an amount")
        return self


def require_writer(service: ServiceDep, request: Request) -> None:
    """Refuse a write before its body is looked at: 403 when the service is read-only,
    401 without the right API key."""
    if not service.writes:
        raise HTTPException(403, "this service was started read-only (--read-only)")
    service.check_key(request)


@router.post(
    "/orders",
    status_code=201,
    dependencies=[Depends(require_writer)],
    responses={
        401: {"model": Problem, "description": "Missing or wrong API key."},
        403: {"model": Problem, "description": "The service was started read-only."},
        422: {"description": "The order was quarantined: the reasons, as ingest gives them."},
        503: {
            "model": Problem,
            "description": "Too many orders waiting: not stored; send it again after "
            "Retry-After seconds.",
        },
    },
    summary="Ingest one order now (needs the API key)",
)
async def post_order(service: ServiceDep, order: OrderIn) -> JSONResponse:
    """Validate the order with the file ingest's rules and store it, or quarantine it with
    the reason (422). The customer's scores are updated at once from the fitted model
    parameters; the response carries the customer as ``GET /api/customers/{id}`` now
    returns it.

    Orders are written one batch at a time by one writer. When it is behind (64 orders
    waiting, or more than 1 s of work waiting at the pace measured, or an order not
    started within 1 s) the answer is 503, with ``Retry-After``, and the order is **not
    stored**. An order answered 201 is stored; one whose request is given up before it
    starts is not. Sending the same ``order_id`` again is safe: it replaces the stored
    order with itself, so retry an order whose answer never came, or look it up with
    ``GET /api/orders/{order_id}``."""
    try:
        future = write_queue(service).submit(order.model_dump(exclude_none=True))
        result = await asyncio.wrap_future(future)
    except WritesBusy as exc:
        return JSONResponse(
            {"detail": str(exc), "stored": False},
            status_code=503,
            headers={"Retry-After": str(exc.retry_after)},
        )
    status = 201 if result["stored"] else 422
    return JSONResponse(result, status_code=status)


class IngestIn(BaseModel):
    """A file on this machine to ingest, with the options of ``retain ingest``."""

    model_config = ConfigDict(extra="forbid")
    path: str = Field(min_length=1, max_length=4096, description="the file's absolute path")
    format: str = Field("auto", max_length=32)
    mapping: dict[str, str] | None = None
    as_of: str | None = Field(None, max_length=64)
    currency: str | None = Field(None, max_length=8)
    rates: dict[str, float] | None = None
    pending_revenue: bool = False
    date_format: str | None = Field(None, max_length=64)
    encoding: str | None = Field(None, max_length=64)


@router.post(
    "/ingest",
    dependencies=[Depends(require_writer)],
    responses={
        401: {"model": Problem, "description": "Missing or wrong API key."},
        403: {"model": Problem, "description": "The service was started read-only."},
    },
    summary="Ingest a file of this machine into the store (needs the API key)",
)
def post_ingest(service: ServiceDep, body: IngestIn) -> JSONResponse:
    """What ``retain ingest`` does, done by the service that holds the store: the file at
    ``path`` (on this machine) is read, checked and stored under the service's write lock
    (orders sent meanwhile wait, or are answered 503), and the report of ``retain ingest
    --json`` is returned. ``retain ingest`` sends a file here by itself when the store is
    held by this service. A file that cannot be read is answered 422 with the reason."""
    from retain.ingest import ingest as run_ingest

    if not Path(body.path).is_absolute():
        raise ArgumentError(
            f"path must be absolute (the service's own directory may differ): {body.path!r}"
        )
    store = service.store()
    with service.write_lock:
        try:
            report = run_ingest(
                store,
                body.path,
                format=body.format,
                mapping=body.mapping,
                as_of=body.as_of,
                currency=body.currency,
                rates=body.rates,
                pending_revenue=body.pending_revenue,
                date_format=body.date_format,
                encoding=body.encoding,
            )
        finally:
            service.invalidate()  # the pages read the store anew
    return JSONResponse(jsonable_encoder(report.__dict__))


class FeedbackIn(BaseModel):
    """One survey answer, review or ticket, with the columns of a feedback file."""

    model_config = ConfigDict(extra="forbid")
    feedback_id: str = Field(min_length=1, max_length=500)
    customer_id: str = Field(min_length=1, max_length=500, description="id or e-mail")
    created_at: str = Field(min_length=1, max_length=64, description="date or time, UTC")
    kind: str | None = Field(default=None, max_length=32)
    nps: float | None = None
    csat: float | None = None
    stars: float | None = None
    text: str | None = Field(default=None, max_length=100_000)
    subject: str | None = Field(default=None, max_length=2_000)
    sku: str | None = Field(default=None, max_length=500)
    status: str | None = Field(default=None, max_length=64)
    tags: list[str] | str | None = None


class FeedbackBatch(BaseModel):
    """Feedback to store: one record or many (at most 1,000)."""

    model_config = ConfigDict(extra="forbid")
    feedback: list[FeedbackIn] = Field(min_length=1, max_length=1_000)


@router.post(
    "/feedback",
    status_code=201,
    dependencies=[Depends(require_writer)],
    responses={
        401: {"model": Problem, "description": "Missing or wrong API key."},
        403: {"model": Problem, "description": "The service was started read-only."},
        422: {"description": "Every record was quarantined: the reasons, as ingest gives them."},
    },
    summary="Store survey answers, reviews or tickets (needs the API key)",
)
def post_feedback(service: ServiceDep, body: FeedbackBatch) -> JSONResponse:
    """Check the records by a feedback file's rules and store them in one transaction
    (a ``feedback_id`` stored before is replaced); a record that breaks a rule is
    quarantined with its reason (``record`` is its place in the batch, from 1). 201 when
    any was stored, 422 when none was."""
    from retain.ingest import customer_key
    from retain.ingest.feedback import ingest_records

    records = [r.model_dump(exclude_none=True) for r in body.feedback]
    store = service.store()
    with service.write_lock:  # one writer at a time, as for orders
        result = ingest_records(store, records)
        if result["stored"]:
            # what they said changes the pain points and may open a complaint that their
            # churn reason cites: their rows, and the pages, are stale now
            refused = {q["record"] for q in result["quarantined"]}
            known = store.query("SELECT DISTINCT customer_id FROM orders WHERE customer_id IN "
                                "(SELECT unnest(?))", [[customer_key(str(r["customer_id"]))
                                                        for r in records]])  # fmt: skip
            ordered = set(known["customer_id"].astype(str))
            written = [
                key
                for n, r in enumerate(records, start=1)
                if n not in refused and (key := customer_key(str(r["customer_id"]))) in ordered
            ]
            _, _, index = rescore_written(service, store, list(dict.fromkeys(written)))
            if not written:
                service.wrote_batch([], INDEX_KEY, index)
            elif index is not None and index.fresh:
                _fold_later(service)
    return JSONResponse(result, status_code=201 if result["stored"] else 422)


class EventIn(BaseModel):
    """One browse or cart event, with the columns of an events file."""

    model_config = ConfigDict(extra="forbid")
    event_id: str | None = Field(None, min_length=1, max_length=200)
    kind: str = Field(
        min_length=1,
        max_length=64,
        description="page_view, product_view, add_to_cart or checkout_started",
    )
    customer_id: str | None = Field(None, min_length=1, max_length=500, description="id or e-mail")
    anonymous_id: str | None = Field(None, min_length=1, max_length=200)
    sku: str | None = Field(None, min_length=1, max_length=200)
    occurred_at: str = Field(min_length=1, max_length=64, description="date or time (UTC)")


class EventBatch(BaseModel):
    """Events to store: at most 1,000."""

    model_config = ConfigDict(extra="forbid")
    events: list[EventIn] = Field(min_length=1, max_length=1_000)


@router.post(
    "/events",
    status_code=201,
    dependencies=[Depends(require_writer)],
    responses={
        401: {"model": Problem, "description": "Missing or wrong API key."},
        403: {"model": Problem, "description": "The service was started read-only."},
        422: {"description": "Every event was quarantined: the reasons, as ingest gives them."},
    },
    summary="Store browse and cart events, one or many (needs the API key)",
)
def post_events(service: ServiceDep, body: EventIn | EventBatch) -> JSONResponse:
    """Check the events by an events file's rules and store them in one transaction (an
    ``event_id`` stored before is replaced; without one, the same event sent again is
    stored once). An event with both a ``customer_id`` and an ``anonymous_id`` makes every
    event of that visitor the customer's. A record that breaks a rule is quarantined with
    its reason (``record``: its place in the batch, from 1). 201 when any was stored, 422
    when none was."""
    from retain.ingest.events import ingest_records

    events = body.events if isinstance(body, EventBatch) else [body]
    records = [e.model_dump(exclude_none=True) for e in events]
    with service.write_lock:  # one writer at a time, as for orders
        result = ingest_records(service.store(), records)
    return JSONResponse(result, status_code=201 if result["stored"] else 422)


STORED_ORDER_SQL = """
SELECT order_id, customer_id, ordered_at, net_revenue, currency, 'purchase' AS stored_as,
       source_file
FROM orders WHERE order_id = $id
UNION ALL
SELECT order_id, customer_id, ordered_at, net_revenue, currency, 'not a purchase: ' || status,
       source_file
FROM excluded_orders WHERE order_id = $id
"""


@router.get(
    "/orders/{order_id:path}",
    responses={404: {"model": Problem, "description": "No order with this id is stored."}},
    summary="Whether an order is stored (after a POST whose answer never came)",
)
def get_order(service: ServiceDep, order_id: str) -> dict[str, Any]:
    """The stored order: its customer, date, net revenue, currency, whether it is a
    purchase and where it came from (``source_file``); 404 when it is not stored."""
    store = service.store()
    frame = store.con.execute(STORED_ORDER_SQL, {"id": order_key(order_id)}).df()
    if frame.empty:
        raise HTTPException(404, f"no order {order_id!r} is stored")
    row: dict[str, Any] = data.records(frame)[0]
    return row


# -- loyalty ---------------------------------------------------------------------------------
class LedgerWrite(BaseModel):
    """A write to a customer's points: its idempotency key (the same request again
    changes the ledger once) and, for a redemption, the points."""

    model_config = ConfigDict(extra="forbid")
    idempotency_key: str = Field(min_length=1, max_length=200)
    points: StrictInt | None = Field(
        default=None, ge=1, le=10**12, description="Points to spend (redeem)."
    )
    reason: str | None = Field(
        default=None,
        max_length=500,
        description="redeem: what they were spent on; earn: the bonus (review).",
    )


LEDGER_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing or wrong API key."},
    403: {"model": Problem, "description": "The service was started read-only."},
    409: {
        "model": Problem,
        "description": "Not enough points to spend, or the key was used for another request.",
    },
    422: {"model": Problem, "description": "No such customer, or a value that cannot be used."},
}


def pain_points(service: Service, window_days: int | None) -> dict[str, Any] | None:
    """The Feedback page: the pain points, most value at risk first; None before any
    feedback is stored (the page then says how to ingest some)."""
    from retain.feedback.painpoints import pain_points as ranked

    def compute(store: Store) -> dict[str, Any] | None:
        if not store.has_table("feedback") or not store.scalar("SELECT count(*) FROM feedback"):
            return None
        return ranked(store, window_days=window_days)

    # a pass over every text and order: after a write, the previous answer meanwhile
    return service.cached(("pain-points", window_days), compute, stale_ok=True)


def pain_point(service: Service, topic: str, limit: int) -> dict[str, Any]:
    """One pain point drilled down; 404 for a topic the store's taxonomy lacks."""
    from retain.feedback import store_taxonomy
    from retain.feedback.painpoints import pain_point as drill

    def compute(store: Store) -> dict[str, Any]:
        if topic not in store_taxonomy(store).topics:
            raise HTTPException(404, f"no topic {topic!r} in the store's taxonomy")
        return drill(store, topic, limit=limit)

    return service.cached(("pain-point", topic, limit), compute)


@router.get(
    "/feedback/pain-points",
    responses=ERRORS,
    summary="Pain points from surveys, reviews and tickets, ranked by the value at risk",
)
def get_pain_points(service: ServiceDep, window_days: WindowDays | None = None) -> dict[str, Any]:
    """Per topic of the store's taxonomy (``retain feedback pain-points``): mentions,
    customers, praise, the negative share, NPS detractors, the trend (the last 90 days
    against the 90 before), and the churn ratio of those who raised it against comparable
    customers (Mantel-Haenszel, with its 95% interval) with the value at risk it implies.
    ``topics`` is empty before any feedback is stored."""
    found = pain_points(service, window_days)
    if found is None:
        return {"feedback": 0, "topics": []}
    return found


@router.get(
    "/feedback/pain-points/{topic}",
    responses={404: {"model": Problem, "description": "No such topic."}, **ERRORS},
    summary="One pain point: its texts and the customers raising it",
)
def get_pain_point(
    service: ServiceDep,
    topic: str,
    limit: Annotated[int, Query(ge=1, le=10_000, description="Texts and customers to list.")] = 50,
) -> dict[str, Any]:
    """The topic's texts, newest first, and the customers who raised it (not in praise),
    most predicted 12-month value first."""
    return pain_point(service, topic, limit)


@router.get("/subscriptions", responses=ERRORS, summary="MRR, retention and subscriber value")
def get_subscriptions(
    service: ServiceDep,
    margin: Margin | None = None,
    discount_rate: DiscountRate | None = None,
    as_of: AsOfDay | None = None,
) -> dict[str, Any]:
    """``retain subscriptions report``: MRR month by month with its movements, logo and
    revenue retention by start cohort, and per plan the sBG or BdW fit of its survival
    table, its tracking on a holdout of later periods and its subscribers' value."""
    from retain.subscriptions import report

    return service.cached(
        ("subscriptions", margin, discount_rate, as_of),
        lambda store: report(store, as_of=as_of, margin=margin, discount_rate=discount_rate),
    )


@router.get(
    "/subscriptions/subscribers", responses=ERRORS, summary="Each active subscriber's value"
)
def get_subscribers(
    service: ServiceDep,
    margin: Margin | None = None,
    discount_rate: DiscountRate | None = None,
    as_of: AsOfDay | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000, description="Rows to return.")] = 100,
) -> list[dict[str, Any]]:
    """``retain subscriptions subscribers``: each active subscriber of a fitted plan, most
    valuable first: charge, renewals, the discounted payments to come and their value."""
    import json

    from retain.subscriptions import subscribers

    return service.cached(
        ("subscribers", margin, discount_rate, as_of, limit),
        lambda store: json.loads(
            subscribers(
                store, as_of=as_of, margin=margin, discount_rate=discount_rate, limit=limit
            ).to_json(orient="records")
        ),
    )


@router.get("/subscriptions/candidates", responses=ERRORS, summary="Who to offer a subscription")
def get_subscription_candidates(
    service: ServiceDep,
    discount: Annotated[
        float, Query(ge=0, lt=1, description="Discount a subscriber gets on each delivery.")
    ] = 0.1,
    retention: Annotated[
        float | None,
        Query(
            gt=0,
            le=1,
            description="Share of subscribers renewing at each delivery (default: the "
            "retention curve of the store's plan).",
        ),
    ] = None,
    plan: Annotated[str | None, Query(description="The plan whose retention to use.")] = None,
    max_irregularity: Annotated[
        float, Query(gt=0, description="Most spread of the intervals, a share of their mean.")
    ] = 0.35,
    limit: Annotated[int, Query(ge=1, le=10_000, description="Rows to return.")] = 100,
) -> dict[str, Any]:
    """``retain subscriptions candidates``: customers who buy the same product at regular
    intervals, ranked by how much more their next 12 months are worth as subscribers."""
    from retain.subscriptions import candidates

    return service.cached(
        ("subscription-candidates", discount, retention, plan, max_irregularity, limit),
        lambda store: candidates(
            store,
            discount=discount,
            retention=retention,
            plan=plan,
            max_irregularity=max_irregularity,
            limit=limit,
        ),
    )


@router.get("/loyalty", responses=ERRORS, summary="The loyalty programme: liability, cost, tiers")
def get_loyalty(service: ServiceDep) -> dict[str, Any]:
    """``retain loyalty report``: the points outstanding and their value, what expires
    when, the flows of points, the programme's cost, the tiers and the referrals."""
    from retain.loyalty.report import loyalty_report

    # a pass over every lot (4.6 s at 1M customers): kept until a write changes the ledger
    return service.cached("loyalty_report", loyalty_report)


@router.get(
    "/loyalty/customers/{customer_id:path}",
    responses={404: {"model": Problem, "description": "No such customer."}, **ERRORS},
    summary="A customer's points, tier, referral code and latest entries",
)
async def get_points(
    service: ServiceDep,
    customer_id: str,
    history: Annotated[
        int, Query(ge=0, le=1000, description="How many of the latest entries to list.")
    ] = 0,
) -> JSONResponse:
    """``retain loyalty balance``: ``balance`` (points to spend), ``pending`` (in a return
    window), their ``value``, the tier and its benefits, the referral code, what expires
    next, and the latest ``history`` entries."""
    # from memory, answered at once; what needs the store is read in a worker thread
    found = points_in_memory(service, customer_id, history)
    if found is None:
        found = await run_in_threadpool(points, service, customer_id, history)
    return JSONResponse(found)  # plain JSON values: no encoder pass


BALANCES_KEY = "loyalty_balances"


def points_in_memory(service: Service, customer_id: str, history: int) -> dict[str, Any] | None:
    """:func:`points`' answer from every member's balance in memory (the service's
    start-up work loads it), when no entries are asked and no write since has touched the
    customer's points; else None."""
    held = service.peek(BALANCES_KEY)
    basis = service.peek("loyalty_basis")
    # the clock of the store as it is (an order can move it): else the route reads it
    if history or held is None or basis is None:
        return None
    if service.generation_of("loyalty_basis") != service.generation:
        return None
    balances, since = held
    rules, fixed = basis
    now = fixed or dt.datetime.now(dt.UTC).replace(tzinfo=None)  # None: a live store
    if service.ledger_seq - since > RELOAD_AFTER_WRITES or now - balances.at > RELOAD_AFTER:
        load_balances(service, again=True)  # in the background; these answer meanwhile
    if service.ledger_written.get(customer_id, 0) > since:
        return None
    answer: dict[str, Any] | None = balances.answer(customer_id, now, rules)
    return answer


RELOAD_AFTER_WRITES = 1000
"""Ledger writes through the service after which the balances in memory are loaded again
(in the background): until then, each written customer's lookups read the ledger."""
RELOAD_AFTER = dt.timedelta(hours=1)
"""How old the balances in memory may grow on a live store (whose clock moves, so that
members' figures run out as pending points clear and lots expire) before a new load."""


def points(service: Service, customer_id: str, history: int) -> dict[str, Any]:
    """A customer's balance read from the ledger (:func:`retain.loyalty.balance`)."""
    from retain.loyalty import balance
    from retain.loyalty.ledger import UnknownMember, clock

    store = service.store()
    rules, fixed = service.cached("loyalty_basis", loyalty_basis)
    held = service.peek(BALANCES_KEY)
    try:
        found = balance(
            store,
            customer_id,
            history=history,
            now=fixed or clock(store),
            rules=rules,
            members=None if held is None else held[0].member,
        )
    except UnknownMember as exc:
        raise HTTPException(404, str(exc)) from None
    return found.to_dict()


def loyalty_basis(store: Store) -> tuple[Any, dt.datetime | None]:
    """What every balance lookup reads, kept until a write (two small queries): the rules
    of the latest loyalty build and the ledger's clock (None for a live store: read each
    time)."""
    from retain.config import LIVE, load_settings
    from retain.loyalty.build import current_rules
    from retain.loyalty.ledger import clock

    rules = current_rules(store, required=True)
    return rules, None if load_settings(store).as_of == LIVE else clock(store)


def load_balances(service: Service, *, again: bool = False) -> None:
    """Every member's balance in memory (:func:`retain.loyalty.ledger.balances`, a sweep of
    the ledger: seconds at 1M customers), for :func:`points_in_memory`. Kept across order
    writes, which change no points: a member's figures say how long they hold, and a
    ledger write through the service sends that customer to the ledger. ``again``: load
    them anew in the background, the ones held answering meanwhile."""
    from retain.loyalty.ledger import balances, clock

    def compute(store: Store) -> tuple[Any, int]:
        since = service.ledger_seq  # a write after this is not in what is read
        loaded = balances(store.con, clock(store)), since
        service.forget_ledger_writes(since)
        return loaded

    if again:
        service.refresh(BALANCES_KEY, compute)
    else:
        service.cached(BALANCES_KEY, compute, sticky=True)


def _ledger_write(
    service: Service, customer_id: str, points: int, kind: str, body: LedgerWrite
) -> dict[str, Any]:
    from retain.ingest import customer_key
    from retain.loyalty import write_entry

    try:
        with service.write_lock:  # one write at a time: two cannot spend the same points
            result = write_entry(
                service.store(),
                customer_id,
                points,
                kind=kind,
                key=body.idempotency_key,
                reason=body.reason,
                source="api",
            )
    finally:  # written or not: the customer's balance is read from the ledger from now on
        service.wrote_ledger(customer_key(customer_id))
    service.forget("loyalty_report")
    return result


@router.post(
    "/loyalty/customers/{customer_id:path}/redeem",
    dependencies=[Depends(require_writer)],
    responses=LEDGER_ERRORS,
    summary="Spend a customer's points (needs the API key)",
)
def post_redeem(service: ServiceDep, customer_id: str, body: LedgerWrite) -> dict[str, Any]:
    """Spend ``points`` of the customer's spendable balance: 409 when they have fewer.
    The answer holds the entry and the balance after; the same ``idempotency_key`` again
    answers the same entry with ``replayed`` true."""
    if body.points is None:
        raise HTTPException(422, "points: give the points to spend")
    return _ledger_write(service, customer_id, -body.points, "redeem", body)


@router.post(
    "/loyalty/customers/{customer_id:path}/earn",
    dependencies=[Depends(require_writer)],
    responses=LEDGER_ERRORS,
    summary="Give a customer a bonus of the rules: a review (needs the API key)",
)
def post_earn(service: ServiceDep, customer_id: str, body: LedgerWrite) -> dict[str, Any]:
    """Give the bonus the rules set for ``reason`` (``review``; birthdays are the build's)."""
    from retain.loyalty.build import current_rules

    points = current_rules(service.store()).bonus(body.reason or "")
    if points <= 0:
        raise HTTPException(422, f"the rules give no points for {body.reason!r}")
    return _ledger_write(service, customer_id, points, "bonus", body)


class ReferralIn(BaseModel):
    """A referral to record: the code and the customer it brought."""

    model_config = ConfigDict(extra="forbid")
    code: str = Field(min_length=1, max_length=64)
    friend_id: str = Field(min_length=1, max_length=500)


@router.post(
    "/loyalty/referrals",
    dependencies=[Depends(require_writer)],
    responses=LEDGER_ERRORS,
    summary="Record that a customer came with a referral code (needs the API key)",
)
def post_referral(service: ServiceDep, body: ReferralIn) -> dict[str, Any]:
    """For a friend who signed up through a referral link rather than typing the code at
    checkout: the next ``retain loyalty build`` decides the reward as for a code on the
    friend's first order. The same record again changes nothing (``new`` false)."""
    from retain.loyalty.referrals import record_referral

    with service.write_lock:
        recorded = record_referral(service.store(), body.code, body.friend_id)
    service.forget("loyalty_report")
    return recorded


@router.get(
    "/loyalty/referrals/{code}",
    responses=ERRORS,
    summary="Whose referral code this is, and the friends who came with it",
)
def get_referral(service: ServiceDep, code: str) -> dict[str, Any]:
    """``retain loyalty referral``: the customer whose code it is (any case), and each
    friend whose first order carried it, with the reward's status and reason."""
    from retain.loyalty.referrals import referral_code

    return referral_code(service.store(), code)


@router.get(
    "/audiences/{segment}.csv",
    response_class=PlainTextResponse,
    responses={
        200: {"content": {"text/csv": {}}},
        404: {"model": Problem, "description": "No such segment."},
        **ERRORS,
    },
    summary="Export a segment's audience as CSV",
)
def get_audience(
    service: ServiceDep,
    segment: str,
    consent: Annotated[
        Literal["required", "unknown-ok"],
        Query(
            description="required (default): only customers who accepted marketing; "
            "unknown-ok: also those whose consent is unknown. Opted-out customers never."
        ),
    ] = "required",
    include_unknown_consent: Annotated[
        bool, Query(include_in_schema=False, description="Old name of consent=unknown-ok.")
    ] = False,
) -> PlainTextResponse:
    """Who to contact in a segment (or ``win-back``), with the action, value at stake and
    their products. Opted-out customers are never exported; customers whose consent is
    unknown only with ``consent=unknown-ok`` (as ``retain audience --consent``). The
    headers count who was left out. An unknown segment is a 404 naming the segments."""
    from retain.segments import audience, write_audience

    store: Store = service.store()
    store.require_orders()
    if segment.strip().lower().replace(" ", "-") not in ("win-back", "winback"):
        segment = segment_name(segment)
    unknown_ok = consent == "unknown-ok" or include_unknown_consent
    frame = audience(store, segment, include_unknown_consent=unknown_ok)
    text = write_audience(frame, "csv")
    filename = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in segment.lower())
    return PlainTextResponse(
        text,
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}.csv"',
            "X-Retain-Exported": str(len(frame)),
            "X-Retain-Opted-Out": str(frame.attrs.get("opted_out", 0)),
            "X-Retain-Unknown-Consent": str(frame.attrs.get("unknown_consent", 0)),
        },
    )


def _recommendation_status(service: Service) -> dict[str, Any]:
    recs = recommendations(service)
    return {
        "available": recs.recommender is not None,
        "customers_ranked": recs.done,
        "customers": recs.customers,
        "note": recs.note,
    }


@router.get("/status", summary="What the store holds")
def get_status(service: ServiceDep) -> dict[str, Any]:
    """Counts of customers, orders and lines, net revenue, date range, quarantined rows;
    whether model scores and fits are present; whether writes are enabled; ``warm``:
    whether the service has computed what it computes at start (the customer index,
    recommendations, headline metrics, the loyalty basis), after which no work of its own
    competes with requests."""
    from retain.store import status

    store = service.store()
    return {
        **status(store),
        "has_scores": bool(data.table_columns(store, "customer_scores")),
        "has_model_fits": bool(data.table_columns(store, "model_fits")),
        "recommendations": _recommendation_status(service),
        "writes": service.writes,
        "warm": service.warmed.is_set(),
    }
