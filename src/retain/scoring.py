"""Fit the models on a store and score every customer: ``retain fit`` and ``retain score``.

:func:`fit_store` fits a repeat-purchase model (BG/NBD, MBG/NBD or Pareto/NBD;
``auto`` picks the one with the lowest holdout error) and a Gamma-Gamma spend
model on the store's orders, and keeps both in the ``model_fits`` table with
the data they were fitted on (time unit, grain, observation end).

:func:`score_store` loads the latest fit (or a chosen one), scores every
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
clv_low, clv_high             interval of clv_12m (default 90%) from the parameters'
                              uncertainty
next_purchase_date            the day by which the next purchase has happened with
                              probability 1/2; NULL when not within 365 days
next_purchase_window_start    the 25th and 75th percentile days of the next
next_purchase_window_end      purchase; NULL when beyond 365 days
model, fit_id, as_of          which fit scored the row, and the observation date
segment, r_score, ...         the segment columns of :func:`retain.segments.segment_scores`
============================  ====================================================

Dates are the observation date plus the predicted time rounded up to whole
days (at least the next day).
"""

from __future__ import annotations

import datetime as dt
import json
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from retain.errors import ModelError, StoreError
from retain.features import summarize
from retain.models import TRANSACTION_MODELS, GammaGamma, Model, TransactionModel
from retain.models.base import UNIT_DAYS
from retain.store import Store

MODEL_CHOICES = ("auto", *TRANSACTION_MODELS)
SCORE_COLUMNS = [
    "customer_id",
    "p_alive",
    "expected_purchases_30d",
    "expected_purchases_90d",
    "expected_purchases_365d",
    "expected_spend",
    "clv_12m",
    "clv_if_retained",
    "clv_low",
    "clv_high",
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

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _last_order_day(store: Store) -> dt.date:
    value = store.scalar("SELECT max(ordered_at) FROM orders")
    if value is None:
        raise StoreError(f"the store {store.path} holds no orders yet")
    return pd.Timestamp(value).date()


def _first_order_day(store: Store) -> dt.date:
    return pd.Timestamp(store.scalar("SELECT min(ordered_at) FROM orders")).date()


def fit_store(
    store: Store,
    *,
    model: str = "auto",
    holdout_weeks: int | None = None,
    unit: str = "D",
    grain: str = "D",
    observation_end: str | dt.date | None = None,
    penalizer: float = 0.0,
) -> FitReport:
    """Fit the models on the store's orders and keep the fit in ``model_fits``.

    ``model``: "bgnbd", "mbgnbd", "pnbd", or "auto" (each is scored on a
    holdout of the last ``holdout_weeks`` weeks, default a quarter of the
    history, and the one with the lowest per-customer RMSE of holdout purchases
    wins). With a named model and ``holdout_weeks``, its holdout errors are
    recorded too. The kept model is then refitted on all orders up to
    ``observation_end`` (default: the last order's day), with a Gamma-Gamma
    model of net revenue per purchase. ``unit`` ("D" or "W") is the time unit of
    the parameters, ``grain`` how purchases are merged (one per day by default).
    """
    if model not in MODEL_CHOICES:
        raise ValueError(f"model must be one of {', '.join(MODEL_CHOICES)}, got {model!r}")
    if unit not in UNIT_DAYS or grain not in UNIT_DAYS:
        raise ValueError("unit and grain must each be 'D' or 'W'")
    if holdout_weeks is not None and holdout_weeks < 1:
        raise ValueError(f"holdout_weeks must be 1 or more, got {holdout_weeks}")
    store.require_orders()
    end = pd.Timestamp(observation_end).date() if observation_end else _last_order_day(store)
    caught: list[str] = []
    candidates: pd.DataFrame | None = None
    chosen = model
    weeks = holdout_weeks
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        if model == "auto" or holdout_weeks is not None:
            from retain.validate import compare

            if weeks is None:
                span = (end - _first_order_day(store)).days
                weeks = max(1, span // 28)
            calibration_end = end - dt.timedelta(weeks=weeks)
            if calibration_end <= _first_order_day(store):
                raise ModelError(
                    f"a {weeks}-week holdout leaves no history before it: the orders start "
                    f"{_first_order_day(store)}; use fewer --holdout-weeks"
                )
            names = tuple(TRANSACTION_MODELS) if model == "auto" else (model,)
            candidates = compare(
                store,
                calibration_end,
                models=names,
                holdout_end=end,
                unit=unit,
                grain=grain,
            )
            chosen = str(candidates["model"].iloc[0])
        summary = summarize(store, observation_end=end, unit=unit, grain=grain)
        fitted: TransactionModel = TRANSACTION_MODELS[chosen](penalizer=penalizer).fit(summary)
        spend: GammaGamma | None = None
        if ((summary["frequency"] > 0) & (summary["monetary"] > 0)).any():
            spend = GammaGamma(penalizer=penalizer).fit(summary)
        else:
            warnings.warn(
                "no customer has repeat purchases with positive net revenue: no spend "
                "model, so no CLV",
                UserWarning,
                stacklevel=2,
            )
    caught = list(dict.fromkeys(str(w.message) for w in seen))
    best = None if candidates is None else candidates.iloc[0]
    with store.transaction() as con:
        fit_id = int(
            con.execute("SELECT coalesce(max(fit_id), 0) + 1 FROM model_fits").fetchall()[0][0]
        )
        con.execute(
            "INSERT INTO model_fits VALUES (?, ?, ?, ?, ?, ?, ?, now()::TIMESTAMP, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            ],
        )
    return FitReport(
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
    )


def load_fit(
    store: Store, fit_id: int | None = None
) -> tuple[TransactionModel, GammaGamma | None, dict[str, Any]]:
    """The repeat-purchase model, the spend model (or None) and the ``model_fits`` row
    of fit ``fit_id`` (default: the latest)."""
    if not store.has_table("model_fits"):
        raise StoreError(f"the store {store.path} has no fitted model: run `retain fit` first")
    where, params = ("WHERE fit_id = ?", [fit_id]) if fit_id is not None else ("", [])
    frame = store.query(f"SELECT * FROM model_fits {where} ORDER BY fit_id DESC LIMIT 1", params)
    if frame.empty:
        which = f"fit {fit_id}" if fit_id is not None else "fitted model"
        raise StoreError(f"the store {store.path} has no {which}: run `retain fit` first")
    row = {str(k): v for k, v in frame.iloc[0].to_dict().items()}
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
    observation_end: str | dt.date | None = None,
    discount_rate: float = 0.1,
    margin: float = 1.0,
    interval: float = 0.9,
    segments: bool = True,
) -> ScoreReport:
    """Score every customer with a stored fit and replace ``customer_scores``.

    ``fit_id``: the fit to use (default: the latest). ``observation_end``: the
    day to score as of (default: the last order's day, so orders that arrived
    after the fit count; the data are summarised in the fit's unit and grain).
    ``discount_rate`` is per year; ``margin`` multiplies net revenue (1: CLV in
    revenue; the dashboard and segments apply their own margin). ``interval``:
    probability of the CLV interval. ``segments``: add the segment columns of
    :func:`retain.segments.segment_scores` (RFM, segment, churn risk, reason).
    See the module docstring for the columns.
    """
    store.require_orders()
    model, spend, row = load_fit(store, fit_id)
    end = pd.Timestamp(observation_end).date() if observation_end else _last_order_day(store)
    caught: list[str] = []
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        summary = summarize(store, observation_end=end, unit=row["unit"], grain=row["grain"])
        scores = model.score(
            summary,
            gamma_gamma=spend,
            horizons=("30D", "90D", "365D"),
            clv_horizon="12M",
            discount_rate=discount_rate,
            margin=margin,
            interval=interval,
            next_horizon="365D",
        )
    caught = list(dict.fromkeys(str(w.message) for w in seen))
    unit_days = UNIT_DAYS[row["unit"]]
    n = len(scores)
    missing = np.full(n, np.nan)
    table = pd.DataFrame(
        {
            "customer_id": summary.index.astype(str),
            "p_alive": scores["p_alive"].to_numpy(),
            "expected_purchases_30d": scores["expected_purchases_30d"].to_numpy(),
            "expected_purchases_90d": scores["expected_purchases_90d"].to_numpy(),
            "expected_purchases_365d": scores["expected_purchases_365d"].to_numpy(),
            "expected_spend": scores["expected_spend"].to_numpy() if spend else missing,
            "clv_12m": scores["clv"].to_numpy() if spend else missing,
            "clv_if_retained": scores["clv_if_alive"].to_numpy() if spend else missing,
            "clv_low": scores["clv_low"].to_numpy() if spend else missing,
            "clv_high": scores["clv_high"].to_numpy() if spend else missing,
            "next_purchase_date": _dates(
                end,
                scores["next_purchase"].to_numpy(),
                scores["next_purchase_within"].to_numpy(),
                unit_days,
            ),
            "next_purchase_window_start": _dates(
                end,
                scores["window_start"].to_numpy(),
                scores["window_start_within"].to_numpy(),
                unit_days,
            ),
            "next_purchase_window_end": _dates(
                end,
                scores["window_end"].to_numpy(),
                scores["window_end_within"].to_numpy(),
                unit_days,
            ),
            "model": row["model"],
            "fit_id": int(row["fit_id"]),
            "as_of": end,
        }
    )
    seg: pd.DataFrame | None = None
    if segments:
        from retain.segments import SEGMENT_SCORE_COLUMNS, segment_scores

        if spend is not None:
            model_scores = pd.DataFrame(
                {
                    "p_alive": table["p_alive"].to_numpy(),
                    "clv_if_retained": table["clv_if_retained"].to_numpy(),
                },
                index=pd.Index(table["customer_id"].to_numpy(), name="customer_id"),
            )
            seg = segment_scores(store, as_of=end, scores=model_scores)
            seg = seg[[c for c in SEGMENT_SCORE_COLUMNS if c not in table.columns]]
            seg = seg.rename_axis("customer_id").reset_index()
        else:
            caught.append("no spend model: segment columns left out (they need a CLV)")
    date_columns = {
        "next_purchase_date",
        "next_purchase_window_start",
        "next_purchase_window_end",
        "as_of",
    }
    select = ", ".join(
        f's."{c}"' if c not in date_columns else f'CAST(s."{c}" AS DATE) AS "{c}"'
        for c in table.columns
    )
    with store.transaction() as con:
        con.register("scores_input", table)
        if seg is not None:
            con.register("segments_input", seg)
            extra = ", ".join(f'g."{c}"' for c in seg.columns if c != "customer_id")
            source = (
                f"SELECT {select}, {extra} FROM scores_input s LEFT JOIN segments_input g "
                "ON CAST(g.customer_id AS VARCHAR) = s.customer_id ORDER BY s.customer_id"
            )
        else:
            source = f"SELECT {select} FROM scores_input s ORDER BY s.customer_id"
        try:
            con.execute(f"CREATE OR REPLACE TABLE customer_scores AS {source}")
        finally:
            con.unregister("scores_input")
            if seg is not None:
                con.unregister("segments_input")
    dated = int(table["next_purchase_date"].notna().sum())
    return ScoreReport(
        fit_id=int(row["fit_id"]),
        model=str(row["model"]),
        as_of=end.isoformat(),
        customers=n,
        expected_purchases_365d=float(table["expected_purchases_365d"].sum()),
        clv_12m=float(table["clv_12m"].sum()) if spend else None,
        mean_p_alive=float(table["p_alive"].mean()) if n else 0.0,
        with_next_purchase_date=dated,
        segments=seg is not None,
        warnings=caught,
    )
