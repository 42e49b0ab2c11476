"""Fit the models on a store and score every customer: ``retain fit`` and ``retain score``.

:func:`fit_store` fits a repeat-purchase model (BG/NBD, MBG/NBD or Pareto/NBD;
``auto`` chooses by the holdout log-likelihood, see :func:`retain.validate.compare`)
and a Gamma-Gamma spend model on the store's orders, checks what they predict
against the store's own history (:mod:`retain.guard`; a model that fails gives way
to the next), and keeps both in the ``model_fits`` table with the data they were
fitted on (time unit, grain, observation end) and the checks.

:func:`score_store` loads the latest kept fit (or a chosen one), scores every
customer and replaces the ``customer_scores`` table:

============================  ====================================================
column                        meaning
============================  ====================================================
customer_id                   the customer
p_alive                       P(still a customer) at ``as_of``, 0-1
expected_purchases_30d        expected purchases (distinct days, or weeks with
expected_purchases_90d        grain W) in the 30, 90, 365 days after ``as_of``
expected_purchases_365d
expected_spend                expected net revenue per purchase (Gamma-Gamma)
clv_12m                       expected discounted net revenue over the next 12 months
                              (x ``margin``, default 1: revenue, not profit),
                              discounted at ``discount_rate`` per year
clv_if_retained               clv_12m if the customer is still a customer
                              (``clv_12m = p_alive x clv_if_retained``)
purchases_365d_low,           the range of the customer's purchases in the next 365
purchases_365d_high           days: the central 90% (default) of the model's count
                              distribution given their history (whole purchases)
clv_low, clv_high             the range of the customer's value over the next 12
                              months: the central 90% of the distribution of their
                              spend (count distribution x Gamma-Gamma spend)
clv_mean_low, clv_mean_high   the uncertainty of clv_12m itself (90%) from the
                              parameters' standard errors; not a range for the customer
next_purchase_date            the day by which the next purchase has happened with
                              probability 1/2; NULL when not within 365 days
next_purchase_window_start    the 25th and 75th percentile days of the next
next_purchase_window_end      purchase; NULL when beyond 365 days
model, fit_id, as_of          which fit scored the row, and the observation date
segment, r_score, ...         the segment columns of :func:`retain.segments.segment_scores`
============================  ====================================================

Dates are the observation date plus the predicted time rounded up to whole
days (at least the next day).

:func:`score_customers` recomputes the rows of a few customers (the service
calls it after each new order) through the same code, with the fit and
settings of the last :func:`score_store`, which keeps them, and the RFM
boundaries its segments were scored against, in the one-row table
``score_basis``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from retain import config
from retain.errors import ArgumentError, ModelError, StoreError
from retain.features import GRAINS, SUMMARY_SQL, summarize
from retain.guard import Check, check_fit, failed, store_history
from retain.models import TRANSACTION_MODELS, GammaGamma, Model, TransactionModel
from retain.models.base import UNIT_DAYS
from retain.store import Store, memory_at_most

if TYPE_CHECKING:
    from retain.segments.rfm import RfmBoundaries
    from retain.validate import HoldoutData

MODEL_CHOICES = ("auto", *TRANSACTION_MODELS)
SCORE_COLUMNS = [
    "customer_id",
    "p_alive",
    "expected_purchases_30d",
    "expected_purchases_90d",
    "expected_purchases_365d",
    "purchases_365d_low",
    "purchases_365d_high",
    "expected_spend",
    "clv_12m",
    "clv_if_retained",
    "clv_low",
    "clv_high",
    "clv_mean_low",
    "clv_mean_high",
    "next_purchase_date",
    "next_purchase_window_start",
    "next_purchase_window_end",
    "model",
    "fit_id",
    "as_of",
]
"""The model columns of ``customer_scores``, in order (segment columns follow)."""


@dataclass
class FitReport:
    """What :func:`fit_store` did: the fit kept (``fit_id``), its parameters and the
    holdout comparison that chose it (``candidates``: one row per model tried)."""

    fit_id: int
    model: str
    params: dict[str, float]
    standard_errors: dict[str, float]
    log_likelihood: float
    converged: bool
    customers: int
    unit: str
    grain: str
    observation_end: str
    spend_params: dict[str, float] | None
    holdout_weeks: int | None
    candidates: pd.DataFrame | None
    warnings: list[str] = field(default_factory=list)
    #: why the model was chosen (``validate.compare``'s ``attrs["choice"]``), or None
    choice: dict[str, Any] | None = None
    #: the fit guard on every model tried, in order: ``model``, ``kept``, ``checks``
    guard: list[dict[str, Any]] = field(default_factory=list)
    #: whether the fit passed the guard and is the one ``retain score`` uses
    kept: bool = True
    #: with ``learned``: the learned model's verdict (:func:`retain.challenge.challenge`)
    learned: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        doc = {k: v for k, v in self.__dict__.items() if k != "candidates"}
        doc["candidates"] = (
            None
            if self.candidates is None
            else json.loads(self.candidates.to_json(orient="records"))
        )
        return doc


@dataclass
class ScoreReport:
    """What :func:`score_store` wrote: ``customers`` rows of ``customer_scores`` as of
    ``as_of`` with fit ``fit_id``; totals for a glance."""

    fit_id: int
    model: str
    as_of: str
    customers: int
    expected_purchases_365d: float
    clv_12m: float | None
    mean_p_alive: float
    with_next_purchase_date: int
    segments: bool
    warnings: list[str] = field(default_factory=list)
    #: with a kept learned model: ``customers`` in ``learned_scores``, ``reasons`` given
    learned: dict[str, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# model_fits' columns in order; the last two are the model card's (see model_card)
_FIT_COLUMNS = (
    "fit_id",
    "model",
    "params",
    "spend_params",
    "unit",
    "grain",
    "observation_end",
    "fitted_at",
    "customers",
    "log_likelihood",
    "converged",
    "holdout_weeks",
    "holdout_actual",
    "holdout_predicted",
    "holdout_mae",
    "holdout_rmse",
    "candidates",
    "kept",
    "guard",
    "choice",
    "data_range",
    "warnings",
    "learned",
    "learned_verdict",
)
_CARD_COLUMNS = ("data_range", "warnings", "learned", "learned_verdict")

# The orders a fit to $end reads (the whole observation day counts)
DATA_RANGE_SQL = """
SELECT CAST(min(ordered_at) AS DATE), CAST(max(ordered_at) AS DATE), count(*)
FROM orders
WHERE customer_id IS NOT NULL AND ordered_at < CAST($end AS DATE) + INTERVAL 1 DAY
"""


# The customers of a fit to $end and those who bought again on a later $grain period
REPEAT_BUYERS_SQL = """
SELECT count(*), count(*) FILTER (WHERE periods > 1)
FROM (
    SELECT customer_id, count(DISTINCT date_trunc($grain, ordered_at)) AS periods
    FROM orders
    WHERE customer_id IS NOT NULL AND ordered_at < CAST($end AS DATE) + INTERVAL 1 DAY
    GROUP BY customer_id
)
"""


def _data_range(
    store: Store, end: dt.date, summary: pd.DataFrame | None, grain: str = "D"
) -> dict[str, Any]:
    """What a fit to ``end`` was fitted on: the first and last order day, the orders, the
    customers and the repeat buyers (a purchase on a later day, or week with grain W,
    than their first: ``frequency > 0``); from ``summary`` when given, else counted."""
    first, last, orders = store.con.execute(DATA_RANGE_SQL, {"end": end}).fetchall()[0]
    if summary is not None:
        customers, repeat = len(summary), int((summary["frequency"] > 0).sum())
    else:
        customers, repeat = store.con.execute(
            REPEAT_BUYERS_SQL, {"end": end, "grain": GRAINS[grain]}
        ).fetchall()[0]
    return {
        "first_order_day": None if first is None else first.isoformat(),
        "last_order_day": None if last is None else last.isoformat(),
        "observation_end": end.isoformat(),
        "customers": int(customers),
        "orders": int(orders),
        "repeat_buyers": int(repeat),
    }


def _first_order_day(store: Store) -> dt.date:
    return pd.Timestamp(store.scalar("SELECT min(ordered_at) FROM orders")).date()


def _as_of(as_of: str | dt.date | None, observation_end: str | dt.date | None) -> Any:
    """``as_of``, or the deprecated keyword ``observation_end`` that named it before."""
    if observation_end is None:
        return as_of
    warnings.warn(
        "observation_end= is deprecated: the observation date is as_of= everywhere",
        DeprecationWarning,
        stacklevel=3,
    )
    if as_of is not None:
        raise ArgumentError("give as_of or observation_end (its old name), not both")
    return observation_end


def fit_store(
    store: Store,
    *,
    model: str = "auto",
    holdout_weeks: int | None = None,
    unit: str = "D",
    grain: str = "D",
    as_of: str | dt.date | None = None,
    penalizer: float = 0.0,
    observation_end: str | dt.date | None = None,
    learned: bool = False,
) -> FitReport:
    """Fit the models on the store's orders and keep the fit in ``model_fits``.

    ``model``: "bgnbd", "mbgnbd", "pnbd", or "auto" (each is scored on a
    holdout of the last ``holdout_weeks`` weeks, default a quarter of the
    history, by the log-likelihood of each customer's holdout purchase count;
    the choice and its reason are in ``FitReport.choice``). With a named model
    and ``holdout_weeks``, its holdout errors are recorded too. The chosen model
    is then refitted on all orders up to ``as_of`` (default: the store's ``as_of``
    setting, else the last order's day: :func:`retain.config.observation_day`;
    ``observation_end`` is its deprecated old name), with a Gamma-Gamma model of net revenue per purchase, and
    checked by the fit guard (:func:`retain.guard.check_fit`); with "auto", a
    model that fails gives way to the next in the comparison's order. When none
    passes, the fit is recorded as not kept and :class:`FitRefused` (a
    :class:`~retain.errors.ModelError`) is raised, naming the check that failed.
    ``unit`` ("D" or "W") is the time unit of the parameters, ``grain`` how
    purchases are merged (one per day by default). ``learned``: also train the
    learned model and keep it only when it beats the chosen model on the same holdout
    (:func:`retain.challenge.challenge`; the verdict is ``FitReport.learned``, and
    ``retain score`` then adds its predictions and reasons).
    """
    check_fit_arguments(model, unit, grain, holdout_weeks)
    store.require_orders()
    end = config.observation_day(store, _as_of(as_of, observation_end))
    weeks, calibration_end = holdout_split(end, _first_order_day(store), model, holdout_weeks)
    held: HoldoutData | None = None
    if calibration_end is not None:
        from retain.validate import holdout_data

        # one pass over the orders: the holdout's data and the summary of all of them
        held = holdout_data(
            store, calibration_end, holdout_end=end, unit=unit, grain=grain, amount="net_revenue"
        )
        summary = held.full
    else:
        summary = summarize(store, observation_end=end, unit=unit, grain=grain)
    picked = choose_fit(
        summary,
        held,
        lambda: store_history(store, end),
        model=model,
        penalizer=penalizer,
        grain=grain,
        end=end,
    )
    fitted, chosen, spend, candidates, choice, tried, caught = (
        picked.fitted,
        picked.model,
        picked.spend,
        picked.candidates,
        picked.choice,
        picked.guard,
        picked.warnings,
    )
    kept = bool(tried[-1]["kept"])
    best = None if candidates is None else candidates.iloc[0]
    used = _data_range(store, end, summary)
    learned_json, verdict = (
        _challenge(store, held, chosen, end) if learned and kept else (None, None)
    )
    with store.transaction() as con:
        # the card's columns, added here rather than by a migration: a store fitted
        # before them has NULLs, and model_card reads the rest from the orders
        for column in _CARD_COLUMNS:
            con.execute(f"ALTER TABLE model_fits ADD COLUMN IF NOT EXISTS {column} VARCHAR")
        fit_id = int(
            con.execute("SELECT coalesce(max(fit_id), 0) + 1 FROM model_fits").fetchall()[0][0]
        )
        con.execute(
            f"INSERT INTO model_fits ({', '.join(_FIT_COLUMNS)}) VALUES "
            "(?, ?, ?, ?, ?, ?, ?, now()::TIMESTAMP, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                fit_id,
                chosen,
                fitted.to_json(),
                spend.to_json() if spend is not None else None,
                unit,
                grain,
                end,
                len(summary),
                fitted.log_likelihood_,
                fitted.converged_,
                weeks if candidates is not None else None,
                None if best is None else float(best["actual"]),
                None if best is None else float(best["predicted"]),
                None if best is None else float(best["mae"]),
                None if best is None else float(best["rmse"]),
                None if candidates is None else candidates.to_json(orient="records"),
                kept,
                json.dumps(tried),
                None if choice is None else json.dumps(choice),
                json.dumps(used),
                json.dumps(caught),
                learned_json,
                None if verdict is None else json.dumps(verdict),
            ],
        )
    report = FitReport(
        fit_id=fit_id,
        model=chosen,
        params=fitted.params_,
        standard_errors=fitted.standard_errors_,
        log_likelihood=fitted.log_likelihood_,
        converged=fitted.converged_,
        customers=len(summary),
        unit=unit,
        grain=grain,
        observation_end=end.isoformat(),
        spend_params=None if spend is None else spend.params_,
        holdout_weeks=weeks if candidates is not None else None,
        candidates=candidates,
        warnings=caught,
        choice=choice,
        guard=tried,
        kept=kept,
        learned=verdict,
    )
    if not kept:
        raise FitRefused(report, forced=model != "auto")
    return report


def check_fit_arguments(model: str, unit: str, grain: str, holdout_weeks: int | None) -> None:
    """Refuse what :func:`fit_store` (and Spark's fit) cannot fit with."""
    if model not in MODEL_CHOICES:
        raise ArgumentError(f"model must be one of {', '.join(MODEL_CHOICES)}, got {model!r}")
    if unit not in UNIT_DAYS or grain not in UNIT_DAYS:
        raise ArgumentError("unit and grain must each be 'D' or 'W'")
    if holdout_weeks is not None and holdout_weeks < 1:
        raise ArgumentError(f"holdout_weeks must be 1 or more, got {holdout_weeks}")


def holdout_split(
    end: dt.date, first_day: dt.date, model: str, holdout_weeks: int | None
) -> tuple[int | None, dt.date | None]:
    """The holdout a fit to ``end`` compares its models on: its weeks and the calibration
    end (both None when the models are not compared: a named model and no
    ``holdout_weeks``). By default a quarter of the history from ``first_day``, the first
    order's day; a :class:`~retain.errors.ModelError` when it leaves no history before it."""
    if model != "auto" and holdout_weeks is None:
        return None, None
    weeks = holdout_weeks if holdout_weeks is not None else max(1, (end - first_day).days // 28)
    calibration_end = end - dt.timedelta(weeks=weeks)
    if calibration_end <= first_day:
        raise ModelError(
            f"a {weeks}-week holdout leaves no history before it: the orders start "
            f"{first_day}; use fewer --holdout-weeks"
        )
    return weeks, calibration_end


def refusal(guard: list[dict[str, Any]], *, forced: bool, fit_id: int | None = None) -> str:
    """Why no fit is kept, from the fit guard's ``guard`` (every model tried, in turn):
    the first check failed and what to try (``forced``: a model was named)."""
    first = next((c, t["model"]) for t in guard for c in t["checks"] if not c["passed"])
    models = ", ".join(t["model"] for t in guard)
    recorded = "" if fit_id is None else f" (fit {fit_id} is recorded, not used)"
    advice = (
        "try `retain fit --model auto`, which falls back through every model"
        if forced
        else "check the orders for bad or duplicated rows, give the models more history "
        "(a later --as-of), or fit in weeks (--unit W)"
    )
    return (
        f"no fit kept: {models} failed the fit guard{recorded}. {first[1]}: check "
        f"{first[0]['name']!r} failed: {first[0]['message']}. {advice[0].upper()}{advice[1:]}"
    )


@dataclass
class ChosenFit:
    """What :func:`choose_fit` chose: the repeat-purchase model ``fitted`` (named
    ``model``; the first tried when none passed the guard), the spend model, the holdout
    comparison (``candidates``, ``choice``; None without one), the fit guard on every model
    tried (``guard``: ``model``, ``kept``, ``checks``) and the warnings met."""

    fitted: TransactionModel
    model: str
    spend: GammaGamma | None
    candidates: pd.DataFrame | None
    choice: dict[str, Any] | None
    guard: list[dict[str, Any]]
    warnings: list[str]


def choose_fit(
    summary: pd.DataFrame,
    held: HoldoutData | None,
    history_of: Callable[[], dict[str, float]],
    *,
    model: str,
    penalizer: float,
    grain: str,
    end: dt.date,
) -> ChosenFit:
    """The fits of :func:`fit_store` on data already summarised, wherever they were
    summarised (the store, or Spark: :mod:`retain.spark`): ``summary`` of every customer
    to ``end`` (with ``monetary``), ``held`` the holdout's data when the models are
    compared on it (None: ``model`` alone is fitted), ``history_of()`` the store's recent
    net revenue (:func:`retain.guard.store_history`). The candidates are compared on the
    holdout (``model`` "auto": every model), the spend model is fitted, and each
    candidate in the comparison's order is fitted on ``summary`` and checked by the fit
    guard until one passes."""
    if not (summary["frequency"] > 0).any():
        # the likelihood is flat: every fit would call every customer lost
        raise ModelError(
            f"none of the {len(summary):,} customers bought again (on a later "
            f"{'day' if grain == 'D' else 'week'}) by {end}: the repeat-purchase models learn "
            "from repeat buyers; ingest more history or fit at a later --as-of"
        )
    candidates: pd.DataFrame | None = None
    choice: dict[str, Any] | None = None
    chosen = model
    spend: GammaGamma | None = None
    history: dict[str, float] | None = None
    # the model likely to come first, fitted on every order and checked while the
    # comparison's bootstrap decides, with the warnings it gave set aside until its turn
    ready: dict[str, tuple[tuple[TransactionModel, list[Check]] | Exception, list[Any]]] = {}

    def fit_spend() -> None:
        nonlocal spend, history
        if ((summary["frequency"] > 0) & (summary["monetary"] > 0)).any():
            spend = GammaGamma(penalizer=penalizer).fit(summary)
        else:
            warnings.warn(
                "no customer has repeat purchases with positive net revenue: no spend "
                "model, so no CLV",
                UserWarning,
                stacklevel=3,
            )
        history = history_of()

    def fit_checked(name: str) -> tuple[TransactionModel, list[Check]]:
        assert history is not None
        candidate = TRANSACTION_MODELS[name](penalizer=penalizer).fit(summary)
        return candidate, check_fit(candidate, spend, summary, history, candidate.fit_message_)

    def get_ready(ranked: list[str]) -> None:
        # after every candidate's scoring, beside the bootstrap alone (which warns of
        # nothing): the warnings from here on are these fits'
        fit_spend()
        start = len(seen)
        outcome: tuple[TransactionModel, list[Check]] | Exception
        try:
            outcome = fit_checked(ranked[0])
        except Exception as exc:  # raised in its turn, if it comes
            outcome = exc
        ready[ranked[0]] = (outcome, seen[start:])
        del seen[start:]

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        if held is not None:
            from retain.validate import compare_data

            names = tuple(TRANSACTION_MODELS) if model == "auto" else (model,)
            candidates = compare_data(held, models=names, meanwhile=get_ready)
            choice = dict(candidates.attrs.get("choice") or {}) or None
        if history is None:
            fit_spend()
        order = [model] if candidates is None or model != "auto" else list(candidates["model"])
        tried: list[dict[str, Any]] = []
        fitted: TransactionModel | None = None
        for name in order:
            if name in ready:
                outcome, caught_then = ready.pop(name)
                seen.extend(caught_then)  # where they would have come, had it been fitted now
                if isinstance(outcome, Exception):
                    raise outcome
                candidate, checks = outcome
            else:
                candidate, checks = fit_checked(name)
            passed = not failed(checks)
            tried.append({"model": name, "kept": passed, "checks": [c.to_dict() for c in checks]})
            if fitted is None:
                fitted, chosen = candidate, name  # recorded even when refused
            if passed:
                fitted, chosen = candidate, name
                break
    assert fitted is not None
    return ChosenFit(
        fitted=fitted,
        model=chosen,
        spend=spend,
        candidates=candidates,
        choice=choice,
        guard=tried,
        warnings=list(dict.fromkeys(str(w.message) for w in seen)),
    )


def _challenge(
    store: Store, held: HoldoutData | None, chosen: str, end: dt.date
) -> tuple[str | None, dict[str, Any]]:
    """The learned model's JSON (None unless kept) and its verdict against ``chosen``."""
    if held is None:
        return None, {
            "kept": False,
            "base": chosen,
            "reason": "the learned model is judged on the holdout, and this fit has none: "
            "fit with --model auto or --holdout-weeks",
        }
    from retain.challenge import challenge

    model, verdict = challenge(store, held, chosen, end)
    return (None if model is None else model.to_json()), verdict


class FitRefused(ModelError):
    """No model tried passed the fit guard (:mod:`retain.guard`): the fit is recorded,
    refused (``kept`` false), and ``retain score`` will not use it. ``report`` holds the
    :class:`FitReport` with every check."""

    def __init__(self, report: FitReport, *, forced: bool) -> None:
        self.report = report
        super().__init__(refusal(report.guard, forced=forced, fit_id=report.fit_id))


def load_fit(
    store: Store, fit_id: int | None = None
) -> tuple[TransactionModel, GammaGamma | None, dict[str, Any]]:
    """The repeat-purchase model, the spend model (or None) and the ``model_fits`` row
    of fit ``fit_id`` (default: the latest fit the fit guard kept). A fit the guard
    refused is a :class:`~retain.errors.StoreError`: nothing scores with it."""
    if not store.has_table("model_fits"):
        raise StoreError(f"the store {store.path} has no fitted model: run `retain fit` first")
    where, params = (
        ("WHERE fit_id = ?", [fit_id]) if fit_id is not None else ("WHERE kept IS NOT false", [])
    )
    frame = store.query(f"SELECT * FROM model_fits {where} ORDER BY fit_id DESC LIMIT 1", params)
    if frame.empty:
        refused = store.scalar("SELECT count(*) FROM model_fits WHERE kept = false")
        which = f"fit {fit_id}" if fit_id is not None else "kept fit" if refused else "fitted model"
        hint = (
            f" ({refused} fit(s) failed the fit guard: `retain fit --json` shows why)"
            if refused and fit_id is None
            else ""
        )
        raise StoreError(f"the store {store.path} has no {which}{hint}: run `retain fit` first")
    row = {str(k): v for k, v in frame.iloc[0].to_dict().items()}
    if _refused(row.get("kept")):
        raise StoreError(
            f"fit {row['fit_id']} ({row['model']}) failed the fit guard and is not used for "
            "scores; `retain fit --json` or the Models page shows the check that failed"
        )
    model = Model.from_json(row["params"])
    if not isinstance(model, TransactionModel):
        raise ModelError(
            f"fit {row['fit_id']} holds a {model.name} model, not a repeat-purchase one"
        )
    spend = None
    if row.get("spend_params"):
        loaded = Model.from_json(row["spend_params"])
        spend = loaded if isinstance(loaded, GammaGamma) else None
    return model, spend, row


# the candidates' holdout figures a card shows, by their names in ``model_fits.candidates``
_CARD_CANDIDATE_KEYS = {
    "model": "model",
    "holdout_log_likelihood_mean": "log_likelihood_mean",
    "holdout_log_likelihood": "log_likelihood",
    "actual": "actual",
    "predicted": "predicted",
    "mae": "mae",
    "rmse": "rmse",
    "auc": "auc",
    "log_loss": "log_loss",
    "brier": "brier",
    "ece": "ece",
}


def model_card(store: Store, fit_id: int | None = None) -> dict[str, Any]:
    """The model card of fit ``fit_id`` (default: the latest fit, kept or refused), from
    ``model_fits`` and the latest ``backtests`` run. Keys:

    - ``fit_id``, ``model``, ``fitted_at``, ``kept``, ``converged``, ``unit``, ``grain``;
    - ``data``: ``first_order_day``, ``last_order_day``, ``observation_end``,
      ``customers``, ``orders``, ``repeat_buyers`` and ``recorded`` (false for a fit
      made before cards: counted from the orders stored now, up to its observation end);
    - ``holdout``: ``calibration_end``, ``holdout_end`` and ``weeks``, or None when the
      models were not compared;
    - ``candidates``: per model compared, best first, its holdout scores:
      ``log_likelihood_mean`` (per customer) and ``log_likelihood``, ``actual`` and
      ``predicted`` holdout purchases with ``bias_pct``, ``mae``, ``rmse`` and, for fits
      that recorded them, ``auc``, ``log_loss``, ``brier``, ``ece`` of "buys again in
      the holdout" (else None);
    - ``choice`` (``model_fits.choice``: criterion, scores, ``reason``) and ``reason``;
    - ``guard``: the fit guard's checks of every model tried;
    - ``warnings``: what the fit warned of (None for a fit made before cards);
    - ``learned``: with ``retain fit --learned``, the learned model's verdict against the
      chosen model on the holdout (:func:`retain.challenge.challenge`: ``kept``,
      ``reason``, both models' AUC, log-loss, Brier and ECE, what it was trained on);
      None otherwise;
    - ``backtest``: from the latest ``retain backtest`` run, None without one:
      ``backtest_id``, ``created_at``, ``as_of``, ``horizons``, ``origins``,
      ``summary`` (its rows for the fit's models and the learned model: means over
      origins of auc, log_loss, brier, ece, bias_pct, gini), ``best`` (per horizon,
      by log-loss) and ``learned`` (per horizon where the learned model was scored at
      every origin: its mean log-loss against the best repeat-purchase model's);
    - ``notes``: sentences for people (a backtest made at another observation day, ...).
    """
    if not store.has_table("model_fits"):
        raise StoreError(f"the store {store.path} has no fitted model: run `retain fit` first")
    where, params = ("WHERE fit_id = ?", [fit_id]) if fit_id is not None else ("", [])
    frame = store.query(f"SELECT * FROM model_fits {where} ORDER BY fit_id DESC LIMIT 1", params)
    if frame.empty:
        which = f"no fit {fit_id}" if fit_id is not None else "no fitted model"
        raise StoreError(f"the store {store.path} has {which}: run `retain fit` first")
    row = {str(k): v for k, v in frame.iloc[0].to_dict().items()}
    end = pd.Timestamp(row["observation_end"]).date()
    notes: list[str] = []

    def loaded(name: str) -> Any:
        value = row.get(name)
        missing = value is None or (isinstance(value, float) and np.isnan(value))
        return None if missing else json.loads(str(value))

    data = loaded("data_range")
    if data is None:
        data = _data_range(store, end, None, str(row["grain"]))
        data["recorded"] = False
        notes.append(
            f"fit {row['fit_id']} was made before model cards: its data range is counted "
            "from the orders stored now up to its observation end"
        )
    else:
        data["recorded"] = True
    weeks = row.get("holdout_weeks")
    holdout = None
    if weeks is not None and not pd.isna(weeks):
        holdout = {
            "calibration_end": (end - dt.timedelta(weeks=int(weeks))).isoformat(),
            "holdout_end": end.isoformat(),
            "weeks": int(weeks),
        }
    candidates = []
    for found in loaded("candidates") or []:
        shown = {card: found.get(stored) for stored, card in _CARD_CANDIDATE_KEYS.items()}
        actual, predicted = shown["actual"], shown["predicted"]
        shown["bias_pct"] = (
            100.0 * (predicted - actual) / actual if actual and predicted is not None else None
        )
        candidates.append(shown)
    choice = loaded("choice")
    kept = not _refused(row.get("kept"))
    card: dict[str, Any] = {
        "fit_id": int(row["fit_id"]),
        "model": str(row["model"]),
        "fitted_at": pd.Timestamp(row["fitted_at"]).isoformat(),
        "kept": kept,
        "converged": None if pd.isna(row.get("converged")) else bool(row["converged"]),
        "unit": str(row["unit"]),
        "grain": str(row["grain"]),
        "data": data,
        "holdout": holdout,
        "candidates": candidates,
        "choice": choice,
        "reason": None if not choice else choice.get("reason"),
        "guard": loaded("guard") or [],
        "warnings": loaded("warnings"),
        "learned": loaded("learned_verdict"),
        "backtest": None,
        "notes": notes,
    }
    models = [c["model"] for c in candidates] or [card["model"]]
    card["backtest"] = _card_backtest(store, models, end, notes)
    return card


def _card_backtest(
    store: Store, models: list[str], end: dt.date, notes: list[str]
) -> dict[str, Any] | None:
    """The latest backtest as a model card shows it (see :func:`model_card`)."""
    from retain.backtest import LEARNED, latest_backtest

    run = latest_backtest(store)
    if run is None:
        return None
    shown = [*models, LEARNED]
    summary = [r for r in run.get("summary", []) if r.get("model") in shown]
    learned = []
    for h in run.get("horizons", []):
        rows = [r for r in run.get("summary", []) if r.get("horizon_days") == h]
        origins = max((r.get("origins") or 0 for r in rows), default=0)
        complete = [
            r for r in rows if r.get("origins") == origins and r.get("log_loss") is not None
        ]
        mine = [r for r in complete if r["model"] == LEARNED]
        others = [r for r in complete if r["model"] != LEARNED]
        if mine and others:
            rival = min(others, key=lambda r: (r["log_loss"], r["model"]))
            learned.append(
                {
                    "horizon_days": h,
                    "log_loss": mine[0]["log_loss"],
                    "best_btyd": rival["model"],
                    "best_btyd_log_loss": rival["log_loss"],
                    "better": mine[0]["log_loss"] < rival["log_loss"],
                }
            )
    if run.get("as_of") != end.isoformat():
        notes.append(
            f"the latest backtest ({run.get('backtest_id')}) ran with orders to "
            f"{run.get('as_of')}; this fit is to {end.isoformat()}"
        )
    return {
        "backtest_id": run.get("backtest_id"),
        "created_at": run.get("created_at"),
        "as_of": run.get("as_of"),
        "horizons": run.get("horizons", []),
        "origins": run.get("origins", []),
        "summary": summary,
        "best": run.get("best", []),
        "learned": learned,
    }


def _refused(kept: Any) -> bool:
    """Whether a ``model_fits.kept`` value says the fit failed the guard (NULL: a fit
    from before the guard, kept)."""
    return kept is not None and not pd.isna(kept) and not bool(kept)


def _dates(as_of: dt.date, time: np.ndarray, within: np.ndarray, unit_days: float) -> np.ndarray:
    """The observation day plus ``time`` (data's unit) rounded up to whole days, at
    least one; NaT where not ``within`` the horizon."""
    days = np.maximum(np.ceil(np.where(within, time, 0.0) * unit_days - 1e-9), 1.0)
    dates = np.datetime64(as_of, "D") + days.astype("timedelta64[D]")
    return np.where(within, dates, np.datetime64("NaT", "D"))


def score_store(
    store: Store,
    *,
    fit_id: int | None = None,
    as_of: str | dt.date | None = None,
    discount_rate: float | None = None,
    margin: float | None = None,
    interval: float = 0.9,
    segments: bool = True,
    observation_end: str | dt.date | None = None,
) -> ScoreReport:
    """Score every customer with a stored fit and replace ``customer_scores``.

    ``fit_id``: the fit to use (default: the latest). ``as_of``: the day to score
    as of (default: the store's ``as_of`` setting, else the last order's day, so
    orders that arrived after the fit count; the data are summarised in the fit's
    unit and grain; ``observation_end`` is its deprecated old name).
    ``discount_rate`` is per year (default: the store's setting, 0.1 unless set);
    ``margin`` multiplies net revenue (default: the store's setting, else the
    margin of the last scoring, else 1: CLV in revenue). ``interval``:
    probability of the ranges of each customer's purchases and value, and of the
    uncertainty band of the mean CLV (see the module docstring). ``segments``: add
    the segment columns of :func:`retain.segments.segment_scores` (RFM, segment,
    churn risk, reason).
    See the module docstring for the columns. The settings and the RFM
    boundaries are kept in ``score_basis`` for :func:`score_customers`.
    """
    margin = config.resolve_margin(store, margin)
    discount_rate = config.resolve_discount_rate(store, discount_rate)
    store.require_orders()
    end = config.observation_day(store, _as_of(as_of, observation_end))
    model, spend, row = load_fit(store, fit_id)
    basis = ScoreBasis(
        fit_id=int(row["fit_id"]),
        as_of=end.isoformat(),
        discount_rate=discount_rate,
        margin=margin,
        interval=interval,
        segments=segments,
        boundaries=None,
    )
    with memory_at_most(store, SCORE_MEMORY):
        scored = _score(store, model, spend, row, end, basis, customer_ids=None)
        basis.boundaries = scored.boundaries
        report = _report(scored, row, end, spend is not None)
        customers = len(scored)
        with store.transaction() as con:
            # each column let go once it is in Arrow: a store's worth of columns, not two
            with _scores_source(con, scored, row, end, consume=True) as (source, params):
                con.execute(f"CREATE OR REPLACE TABLE customer_scores AS {source}", params)
            _write_basis(con, basis, customers)
            # a learned model's scores are those of this fit's, or none
            con.execute("DROP TABLE IF EXISTS learned_scores")
    learned = row.get("learned")
    if isinstance(learned, str) and learned:
        from retain.challenge import score_learned

        report.learned = score_learned(store, learned, basis.fit_id, end)
    return report


def score_customers(
    store: Store,
    customer_ids: Iterable[str],
    *,
    as_of: str | dt.date | None = None,
    observation_end: str | dt.date | None = None,
) -> ScoreReport:
    """Rescore some customers now: replace their rows of ``customer_scores``.

    For a customer whose orders just changed (``POST /api/orders`` calls it
    after each order). The rows are computed exactly as :func:`score_store`
    computes every row, with the fit, discount rate, margin and interval of
    the last ``retain score`` (kept in ``score_basis``), as of
    ``as_of`` (default as :func:`score_store`; ``observation_end`` is its
    deprecated old name). A customer new to the table gets a row. The segment
    columns (when the table has them) place the customers' RFM values against
    the boundaries of that full scoring: see :mod:`retain.segments.rfm` for
    what that approximates. Customers with no order on or before the observation
    day are left as they are (named in ``warnings``).

    Raises :class:`~retain.errors.StoreError` when the store has no full
    scoring yet (run ``retain fit`` and ``retain score``).
    """
    return rescore_customers(store, customer_ids, as_of=_as_of(as_of, observation_end))[0]


def rescore_customers(
    store: Store, customer_ids: Iterable[str], *, as_of: str | dt.date | None = None
) -> tuple[ScoreReport, pd.DataFrame | None]:
    """:func:`score_customers`, and the customers' rows of
    :func:`retain.segments.customer_segments` measured on the way (RFM measures,
    segment, action, churn risk...: indexed by customer_id; None when the scores have
    no segment columns), so that a caller that shows them need not measure them again."""
    ids = list(dict.fromkeys(str(c) for c in customer_ids))
    store.require_orders()
    basis, model, spend, row = _scoring_inputs(store)
    end = config.observation_day(store, as_of)
    scored = _score(store, model, spend, row, end, basis, customer_ids=ids)
    if len(scored):
        with store.transaction() as con, _scores_source(con, scored, row, end) as source:
            con.execute(
                "DELETE FROM customer_scores WHERE customer_id IN "
                "(SELECT customer_id FROM scores_input)"
            )
            con.execute(f"INSERT INTO customer_scores BY NAME {source[0]}", source[1])
            learned = row.get("learned")
            if (
                isinstance(learned, str)
                and learned
                and con.execute(
                    "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'learned_scores'"
                ).fetchall()[0][0]
            ):
                # the learned model's figures and reasons predate these customers' new
                # orders: none until the next full scoring, rather than stale ones
                con.execute(
                    "DELETE FROM learned_scores WHERE customer_id IN "
                    "(SELECT customer_id FROM scores_input)"
                )
    return _report(scored, row, end, spend is not None), scored.customer_rows


_INPUTS: dict[tuple[str, str], tuple[Any, ...]] = {}


def _scoring_inputs(
    store: Store,
) -> tuple[ScoreBasis, TransactionModel, GammaGamma | None, dict[str, Any]]:
    """:func:`load_score_basis` and :func:`load_fit` of its fit, read and parsed once per
    full scoring: one statement reads the ``score_basis`` row, and the same row (same
    store, same fit, same ``scored_at``) gives the same basis and models (a fit's row of
    ``model_fits`` is never changed)."""
    key_row: str | None = None
    if store.path != ":memory:":
        with contextlib.suppress(duckdb.Error):
            found = store.con.execute(
                "SELECT b.*, (SELECT count(*) FROM information_schema.tables "
                "WHERE table_name = 'customer_scores') AS has_scores FROM score_basis AS b LIMIT 1"
            ).fetchall()
            if found and found[0][-1]:
                key_row = repr(found[0])  # the boundaries are lists: key on the text
    if key_row is None:  # no full scoring, or nothing to key on: the errors of the long way
        basis = load_score_basis(store)
        return (basis, *load_fit(store, basis.fit_id))
    key = (str(store.path), key_row)
    hit = _INPUTS.get(key)
    if hit is None:
        basis = load_score_basis(store)
        hit = (basis, *load_fit(store, basis.fit_id))
        if len(_INPUTS) >= 8:
            _INPUTS.clear()
        _INPUTS[key] = hit
    basis, model, spend, row = hit
    return basis, model, spend, row


@dataclass
class ScoreBasis:
    """What the last full scoring (:func:`score_store`) used, for :func:`score_customers`:
    the fit, the observation day, the CLV settings (discount rate per year, margin,
    interval probability), whether segment columns were written and their RFM boundaries."""

    fit_id: int
    as_of: str
    discount_rate: float
    margin: float
    interval: float
    segments: bool
    boundaries: RfmBoundaries | None


BASIS_DDL = """
CREATE OR REPLACE TABLE score_basis (
    fit_id INTEGER NOT NULL, as_of DATE NOT NULL, scored_at TIMESTAMP NOT NULL,
    customers BIGINT NOT NULL, discount_rate DOUBLE, margin DOUBLE, clv_interval DOUBLE,
    segments BOOLEAN, scheme VARCHAR, population_gap_days DOUBLE,
    recency_bounds DOUBLE[], frequency_bounds DOUBLE[], monetary_bounds DOUBLE[])
"""


def _write_basis(con: Any, basis: ScoreBasis, customers: int) -> None:
    bounds = basis.boundaries
    con.execute(BASIS_DDL)
    con.execute(
        "INSERT INTO score_basis VALUES (?, ?, now()::TIMESTAMP, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            basis.fit_id,
            basis.as_of,
            customers,
            basis.discount_rate,
            basis.margin,
            basis.interval,
            bounds is not None,
            None if bounds is None else bounds.scheme,
            None if bounds is None else bounds.population_gap_days,
            None if bounds is None else list(bounds.recency),
            None if bounds is None else list(bounds.frequency),
            None if bounds is None else list(bounds.monetary),
        ],
    )


def load_score_basis(store: Store) -> ScoreBasis:
    """The :class:`ScoreBasis` of the last ``retain score``; a
    :class:`~retain.errors.StoreError` when there was none."""
    if not store.has_table("score_basis") or not store.has_table("customer_scores"):
        raise StoreError(
            f"the store {store.path} has no customer scores yet: run `retain fit` and "
            "`retain score` first"
        )
    frame = store.query("SELECT * FROM score_basis LIMIT 1")
    if frame.empty:
        raise StoreError(f"the store {store.path} has no record of its last `retain score`")
    row = frame.iloc[0]
    boundaries = None
    if bool(row["segments"]):
        from retain.segments.rfm import RfmBoundaries

        boundaries = RfmBoundaries(
            scheme=str(row["scheme"]),
            as_of=pd.Timestamp(row["as_of"]).date().isoformat(),
            customers=int(row["customers"]),
            population_gap_days=(
                None if pd.isna(row["population_gap_days"]) else float(row["population_gap_days"])
            ),
            recency=tuple(float(v) for v in row["recency_bounds"]),
            frequency=tuple(float(v) for v in row["frequency_bounds"]),
            monetary=tuple(float(v) for v in row["monetary_bounds"]),
        )
    return ScoreBasis(
        fit_id=int(row["fit_id"]),
        as_of=pd.Timestamp(row["as_of"]).date().isoformat(),
        discount_rate=float(row["discount_rate"]),
        margin=float(row["margin"]),
        interval=float(row["clv_interval"]),
        segments=boundaries is not None,
        boundaries=boundaries,
    )


@dataclass
class _Scored:
    """Rows of ``customer_scores``: the customers' ids (Arrow, in the summary's order), the
    model's columns as arrays in that order (:data:`SCORE_COLUMNS` but the id and the
    fit's constants), the segment columns (Arrow, with ``customer_id``; or None), the
    RFM boundaries a full scoring measured, and the warnings met."""

    ids: pa.Array
    columns: dict[str, np.ndarray]
    segments: pa.Table | None
    boundaries: RfmBoundaries | None
    warnings: list[str]
    customer_rows: pd.DataFrame | None = None

    def __len__(self) -> int:
        return len(self.ids)


def _summary(
    store: Store, end: dt.date, row: dict[str, Any], customer_ids: list[str] | None
) -> pd.DataFrame | None:
    """The customers' summaries in the fit's unit and grain; None when none ordered by ``end``."""
    unit, grain = row["unit"], row["grain"]
    if customer_ids is None:
        return summarize(store, observation_end=end, unit=unit, grain=grain)
    # summarize's own query over these customers' orders, on the store's connection: one
    # statement, not a connection of its own and the checks of a frame it was handed
    cutoff = dt.datetime.combine(end + dt.timedelta(days=1), dt.time())
    result = store.con.execute(
        CUSTOMERS_SUMMARY_SQL,
        {
            "ids": customer_ids,
            "grain": GRAINS[grain],
            "observation_end": dt.datetime.combine(end, dt.time()),
            "cutoff": cutoff,
            "unit_days": float(UNIT_DAYS[unit]),
        },
    ).df()
    if result.empty:
        return None
    result = result.set_index("customer_id")
    result["frequency"] = result["frequency"].astype("int64")
    result.attrs.update({"unit": unit, "grain": grain, "observation_end": end.isoformat()})
    return result


# The summaries of the customers $ids (features.SUMMARY_SQL over their orders alone).
CUSTOMERS_SUMMARY_SQL = f"""
WITH src AS (
    SELECT customer_id, ordered_at AS ts, net_revenue AS amount
    FROM orders
    WHERE customer_id IN (SELECT unnest($ids)) AND ordered_at < $cutoff
)
SELECT * FROM ({SUMMARY_SQL}) ORDER BY customer_id
"""


#: DuckDB's memory for a full scoring, at most (the segments' queries over every order
#: spill to disk beyond it rather than add to the model's arrays in memory)
SCORE_MEMORY = "1GB"


def _score(
    store: Store,
    model: TransactionModel,
    spend: GammaGamma | None,
    row: dict[str, Any],
    end: dt.date,
    basis: ScoreBasis,
    *,
    customer_ids: list[str] | None,
) -> _Scored:
    """Score ``customer_ids`` (None: every customer) as of ``end``: the one computation
    behind :func:`score_store` and :func:`score_customers`. The customers are carried by
    their row in the summary; their text ids are only taken along to be written."""
    unsure = _unsure(model, spend)
    confidence = None if unsure and spend is not None else basis.interval
    seen: list[warnings.WarningMessage] = []

    def model_scores(
        read: Callable[[], None] | None = None,
    ) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
        """The customers' summaries and the model's arrays; the warnings kept in ``seen``.
        ``read`` is called once the summaries are read."""
        with warnings.catch_warnings(record=True) as met:
            warnings.simplefilter("always")
            summary = _summary(store, end, row, customer_ids)
            if read is not None:
                read()
            if summary is None:
                return pd.DataFrame(
                    {"frequency": [], "recency": [], "T": [], "monetary": []},
                    index=pd.Index([], name="customer_id", dtype="object"),
                ), {}
            scores = _model_arrays(model, spend, summary, basis)
        seen.extend(met)
        return summary, scores

    seg: pa.Table | None = None
    rows: pd.DataFrame | None = None
    boundaries: RfmBoundaries | None = None
    held: dict[str, Any] = {}
    if customer_ids is None and basis.segments and spend is not None:
        from retain.segments.assign import segment_score_table

        def model_table(read: Callable[[], None]) -> pa.Table:
            summary, scores = model_scores(read)
            ids = _id_array(summary.index)
            columns = _score_columns(len(summary), scores, True, row, end)
            # not the summaries: a full scoring is done with them
            held.update(ids=ids, columns=columns)
            return pa.table(
                {
                    "customer_id": ids,
                    "p_alive": pa.array(columns["p_alive"], from_pandas=True),
                    "clv_if_retained": pa.array(columns["clv_if_retained"], from_pandas=True),
                    "_row": pa.array(np.arange(len(ids), dtype=np.int64)),
                }
            )

        # the segments' measures of the orders are taken while the models compute
        seg, boundaries = segment_score_table(store, as_of=end, scores=model_table)
        ids, columns = held["ids"], held["columns"]
        known: pd.Index | None = None
    else:
        summary, scores = model_scores()
        known = summary.index
        ids = _id_array(known)
        columns = _score_columns(len(summary), scores, spend is not None, row, end)
        del summary, scores
    caught = list(dict.fromkeys(str(w.message) for w in seen))
    if confidence is None and spend is not None:
        caught.append(
            f"no uncertainty of the mean CLV: no standard errors for the {' and '.join(unsure)} "
            f"fit{'s' if len(unsure) > 1 else ''} (the data do not pin down the parameters); "
            "clv_mean_low and clv_mean_high are left empty"
        )
    if customer_ids is not None and known is not None:
        absent = [c for c in customer_ids if c not in known]
        if absent:
            caught.append(f"no orders on or before {end} for: {', '.join(absent[:20])}")
    if basis.segments and spend is None:
        caught.append("no spend model: segment columns left out (they need a CLV)")
    elif basis.segments and len(ids) and customer_ids is not None and known is not None:
        # the same rows with every column of customer_segments: the service shows them
        from retain.segments import SEGMENT_SCORE_COLUMNS, customer_segments

        index = pd.Index(known.astype(str), name="customer_id")
        model_scores_frame = pd.DataFrame(
            {"p_alive": columns["p_alive"], "clv_if_retained": columns["clv_if_retained"]},
            index=index,
        )
        rows = customer_segments(
            store,
            as_of=end,
            scores=model_scores_frame,
            customers=list(index),
            boundaries=basis.boundaries,
        )
        boundaries = rows.attrs.get("boundaries")
        picked = rows[SEGMENT_SCORE_COLUMNS].rename_axis("customer_id").reset_index()
        seg = pa.Table.from_pandas(picked, preserve_index=False)
    return _Scored(ids, columns, seg, boundaries, caught, rows)


def _unsure(model: TransactionModel, spend: GammaGamma | None) -> list[str]:
    """The models without a covariance (a fit whose likelihood is flat): scored, but
    without the band of the mean CLV."""
    return [m.name for m in (model, spend) if m is not None and m.covariance_ is None]


def _model_arrays(
    model: TransactionModel, spend: GammaGamma | None, summary: pd.DataFrame, basis: ScoreBasis
) -> dict[str, np.ndarray]:
    """``TransactionModel.score``'s arrays for the customers of ``summary``, with the
    horizons and settings of ``customer_scores``."""
    confidence = None if _unsure(model, spend) and spend is not None else basis.interval
    return model._score_arrays(
        model._customers(summary),
        gamma_gamma=spend,
        horizons=("30D", "90D", "365D"),
        clv_horizon="12M",
        discount_rate=basis.discount_rate,
        margin=basis.margin,
        interval=basis.interval,
        confidence=confidence,
        next_horizon="365D",
    )


def score_summary(
    model: TransactionModel,
    spend: GammaGamma | None,
    summary: pd.DataFrame,
    row: dict[str, Any],
    end: dt.date,
    basis: ScoreBasis,
) -> dict[str, np.ndarray]:
    """The model's columns of ``customer_scores`` (``p_alive`` to
    ``next_purchase_window_end``; dates as ``datetime64[D]``, NaT for none) of customers
    already summarised as of ``end``, in ``summary``'s order: the rows :func:`score_store`
    writes for them. ``row`` holds the fit's ``unit``; ``basis`` the CLV settings. For
    customers summarised elsewhere, a batch at a time (Spark: :mod:`retain.spark`)."""
    scores = _model_arrays(model, spend, summary, basis) if len(summary) else {}
    return _score_columns(len(summary), scores, spend is not None, row, end)


def _id_array(index: pd.Index) -> pa.Array:
    """The customer ids of a summary's index as one Arrow text array (no copy for the
    Arrow-backed text pandas reads from DuckDB)."""
    ids = pa.array(index.astype(str).array)
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    if ids.type == pa.large_string() and ids.nbytes < 2**31 - 2**24:
        ids = ids.cast(pa.string())  # DuckDB's own text type, as the segment rows come
    return ids


def _score_columns(
    n: int, scores: dict[str, np.ndarray], has_spend: bool, row: dict[str, Any], end: dt.date
) -> dict[str, np.ndarray]:
    """The model's columns of ``customer_scores`` (:data:`SCORE_COLUMNS` from
    ``p_alive`` to ``next_purchase_window_end``) from ``TransactionModel.score``'s arrays;
    dates as ``datetime64[D]`` (NaT: none)."""
    unit_days = UNIT_DAYS[row["unit"]]
    missing = np.full(n, np.nan)

    def column(name: str, needs_spend: bool = False) -> np.ndarray:
        if n == 0 or (needs_spend and not has_spend) or name not in scores:
            return missing
        return scores[name]

    def dates(time: str, within: str) -> np.ndarray:
        if n == 0:
            return np.array([], dtype="datetime64[D]")
        return _dates(end, scores[time], scores[within], unit_days)

    return {
        "p_alive": column("p_alive"),
        "expected_purchases_30d": column("expected_purchases_30d"),
        "expected_purchases_90d": column("expected_purchases_90d"),
        "expected_purchases_365d": column("expected_purchases_365d"),
        "purchases_365d_low": column("purchases_365d_low"),
        "purchases_365d_high": column("purchases_365d_high"),
        "expected_spend": column("expected_spend", True),
        "clv_12m": column("clv", True),
        "clv_if_retained": column("clv_if_alive", True),
        "clv_low": column("clv_low", True),
        "clv_high": column("clv_high", True),
        "clv_mean_low": column("clv_mean_low", True),
        "clv_mean_high": column("clv_mean_high", True),
        "next_purchase_date": dates("next_purchase", "next_purchase_within"),
        "next_purchase_window_start": dates("window_start", "window_start_within"),
        "next_purchase_window_end": dates("window_end", "window_end_within"),
    }


@contextlib.contextmanager
def _scores_source(
    con: Any, scored: _Scored, row: dict[str, Any], end: dt.date, *, consume: bool = False
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Register the scored rows as ``scores_input`` (one Arrow table: ids, the model's
    columns and, when they are the same customers in the same order, the segment
    columns beside them; else ``segments_input`` too) and yield the query and parameters
    giving the rows of ``customer_scores``: model columns, then segment columns, by
    customer_id. Missing numbers (NaN) are written NULL."""
    seg = scored.segments
    ids = scored.ids
    arrays: dict[str, Any] = {"customer_id": ids}
    for name in list(scored.columns):
        # NaN and NaT: null; with ``consume`` the NumPy column is dropped from ``scored``
        values = scored.columns.pop(name) if consume else scored.columns[name]
        arrays[name] = pa.array(values, from_pandas=True)
        del values
    beside = seg is not None and _same_ids(seg.column("customer_id"), ids)
    if beside:
        assert seg is not None
        for name in seg.column_names:
            if name != "customer_id":
                arrays[name] = seg.column(name)
    table = pa.table(arrays)
    select = ", ".join(
        [
            *(f's."{c}"' for c in SCORE_COLUMNS[:-3]),
            'CAST($model AS VARCHAR) AS "model"',
            'CAST($fit_id AS BIGINT) AS "fit_id"',
            'CAST($as_of AS DATE) AS "as_of"',
        ]
    )
    params = {"model": str(row["model"]), "fit_id": int(row["fit_id"]), "as_of": end}
    # the summary comes sorted by customer_id (DuckDB compares text byte by byte, as Arrow)
    ordered = len(ids) < 2 or bool(pc.all(pc.less(ids[:-1], ids[1:])).as_py())
    order = "" if ordered else " ORDER BY s.customer_id"
    con.register("scores_input", table)
    if seg is not None and not beside:
        con.register("segments_input", seg)
    try:
        if seg is None:
            yield f"SELECT {select} FROM scores_input s{order}", params
        elif beside:
            extra = ", ".join(f's."{c}"' for c in seg.column_names if c != "customer_id")
            yield f"SELECT {select}, {extra} FROM scores_input s{order}", params
        else:
            extra = ", ".join(f'g."{c}"' for c in seg.column_names if c != "customer_id")
            yield (
                f"SELECT {select}, {extra} FROM scores_input s LEFT JOIN segments_input g "
                "ON CAST(g.customer_id AS VARCHAR) = s.customer_id ORDER BY s.customer_id",
                params,
            )
    finally:
        con.unregister("scores_input")
        if seg is not None and not beside:
            con.unregister("segments_input")


def _same_ids(found: pa.ChunkedArray, ids: pa.Array) -> bool:
    """Whether ``found`` holds ``ids``, in the same order."""
    if len(found) != len(ids):
        return False
    if found.type != ids.type:
        found = found.cast(ids.type)
    return bool(found.equals(pa.chunked_array([ids])))


def _report(scored: _Scored, row: dict[str, Any], end: dt.date, has_spend: bool) -> ScoreReport:
    columns = scored.columns
    n = len(scored)
    # pandas' sums and mean (NaN left out), as the report has always added them up
    expected = pd.Series(columns["expected_purchases_365d"], dtype="float64")
    return ScoreReport(
        fit_id=int(row["fit_id"]),
        model=str(row["model"]),
        as_of=end.isoformat(),
        customers=n,
        expected_purchases_365d=float(expected.sum()),
        clv_12m=float(pd.Series(columns["clv_12m"], dtype="float64").sum()) if has_spend else None,
        mean_p_alive=float(pd.Series(columns["p_alive"], dtype="float64").mean()) if n else 0.0,
        with_next_purchase_date=int(np.count_nonzero(~np.isnat(columns["next_purchase_date"]))),
        segments=scored.segments is not None,
        warnings=scored.warnings,
    )
