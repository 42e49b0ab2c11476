"""Backtests on the store's own history: how well each model would have forecast.

:func:`backtest` goes back to several past days (the *origins*), fits every model on
the orders up to the end of each, and scores its forecast of the next H days (the
*horizons*) against what the customers then did:

- "buys again within H" (at least one purchase, on a distinct day, in (origin, origin
  + H days]): AUC, log-loss, Brier score and the reliability table with its expected
  calibration error (:mod:`retain.accuracy`). A repeat-purchase model's probability is
  1 - P(X(H) = 0);
- purchase counts: the holdout log-likelihood (the sum over customers of log P(X(H) =
  n), n what they did), the total predicted against actual (bias, %), MAE and RMSE;
- value: predicted revenue (E[X(H)] x the Gamma-Gamma expected spend, both fitted on
  the same calibration summary) against the net revenue of the customers' orders in
  the window: decile lift and normalised Gini;
- the next-purchase window figures of :func:`retain.validate.holdout`.

The customers scored at an origin are those with a purchase on or before it. Every
origin reads the orders once (one query: the calibration summary shared by every
model and horizon, the calibration spend and every horizon's window), fits each
repeat-purchase model and the Gamma-Gamma model once, and scores them at every
horizon; the longest horizon is scored as :func:`retain.validate.compare_data`
scores its holdout (the same fit, predicted total and log-likelihood). The learned model (:mod:`retain.models.learned`, when it is
installed) is fitted per origin on the orders up to it alone and scored the same
way. Runs are kept in the ``backtests`` table (:func:`save_backtest`,
:func:`latest_backtest`).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import duckdb
import numpy as np
import pandas as pd
from numpy.typing import NDArray

from retain import config
from retain.accuracy import (
    Outcomes,
    Ranked,
    _lift_of,
    _normalized_gini_of,
    buy_scores,
    outcomes,
    ranked,
)
from retain.errors import ArgumentError, DataError, RetainError
from retain.models import transaction_model
from retain.models.base import UNIT_DAYS, TransactionModel, _Customers
from retain.models.gammagamma import GammaGamma
from retain.schema import BACKTESTS
from retain.store import Store
from retain.validate import (
    WINDOW_REACH,
    HoldoutData,
    _collapse,
    _log_scores,
    _next_purchase,
    _p_buy_rows,
    _score,
    _windows,
)

#: horizons in days tried when none are given (those the history cannot hold dropped)
DEFAULT_HORIZONS = (30, 90, 365)
#: the repeat-purchase models a backtest compares, and the learned model's name
BTYD_MODELS = ("bgnbd", "mbgnbd", "pnbd")
LEARNED = "learned"
MODEL_NAMES = (*BTYD_MODELS, LEARNED)
#: default origins per horizon: this many of the latest quarter ends that fit
ORIGINS_PER_HORIZON = 4
#: an origin needs this many days of orders before it (from the first order's day)
MIN_HISTORY_DAYS = 90
#: the repeat-purchase models' time unit and how purchases are merged (one per day)
UNIT = "W"
GRAIN = "D"
#: the metrics averaged over origins in the summary
SUMMARY_METRICS = ("auc", "log_loss", "brier", "ece", "bias_pct", "gini")

Progress = Callable[[str], None]


@dataclass
class Backtest:
    """What :func:`backtest` found (see :meth:`to_dict`). Horizons in days, origins
    the calibration ends (the whole day counts)."""

    as_of: dt.date
    unit: str
    grain: str
    horizons: list[int]
    origins: list[dt.date]
    results: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    best: list[dict[str, Any]]
    warnings: list[str] = field(default_factory=list)
    backtest_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``as_of``, ``unit``, ``grain``, ``horizons``, ``origins``,
        ``results`` (one per origin, horizon and model: the metrics, or ``error``
        for a model that could not be fitted), ``summary`` (per model and horizon,
        the means over origins of :data:`SUMMARY_METRICS`), ``best`` (per horizon,
        the model of the lowest mean log-loss), ``warnings`` and ``backtest_id``."""
        return {
            "backtest_id": self.backtest_id,
            "as_of": self.as_of.isoformat(),
            "unit": self.unit,
            "grain": self.grain,
            "horizons": list(self.horizons),
            "origins": [day.isoformat() for day in self.origins],
            "results": self.results,
            "summary": self.summary,
            "best": self.best,
            "warnings": list(self.warnings),
        }


# --- the plan: which origins and horizons -----------------------------------------------


def _quarter_ends(first: dt.date, last: dt.date) -> list[dt.date]:
    """The calendar quarter ends (Mar 31, Jun 30, Sep 30, Dec 31) from ``first`` to
    ``last``, both included, latest first."""
    ends = []
    for year in range(last.year, first.year - 1, -1):
        for month, day in ((12, 31), (9, 30), (6, 30), (3, 31)):
            end = dt.date(year, month, day)
            if first <= end <= last:
                ends.append(end)
    return ends


def _day(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value).strip())
    except ValueError:
        raise ArgumentError(f"an origin must be a date as YYYY-MM-DD, got {value!r}") from None


def _horizon(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer | float):
        raise ArgumentError(f"a horizon must be a whole number of days, got {value!r}")
    if float(value) != int(value) or int(value) < 1:
        raise ArgumentError(f"a horizon must be a whole number of days of 1 or more, got {value!r}")
    return int(value)


def plan(
    first: dt.date,
    as_of: dt.date,
    origins: Iterable[Any] | None = None,
    horizons: Iterable[Any] | None = None,
) -> dict[dt.date, list[int]]:
    """The horizons (days) scored at each origin, origins in increasing order, for a
    store whose orders start on ``first`` and are observed to the end of ``as_of``.

    An origin needs :data:`MIN_HISTORY_DAYS` days of orders before it (``first`` +
    90 days at the earliest) and the whole horizon after it (origin + horizon on or
    before ``as_of``). Without ``origins``, each horizon gets the latest
    :data:`ORIGINS_PER_HORIZON` calendar quarter ends that fit it; without
    ``horizons`` the horizons are :data:`DEFAULT_HORIZONS`, dropping those no origin
    fits. Given origins take every given horizon (an origin and a horizon that do
    not fit are an :class:`~retain.errors.ArgumentError` naming both), or every
    default horizon that fits them."""
    earliest = first + dt.timedelta(days=MIN_HISTORY_DAYS)
    given_horizons = None if horizons is None else sorted({_horizon(h) for h in horizons})
    if given_horizons is not None and not given_horizons:
        given_horizons = None
    given_origins = None if origins is None else sorted({_day(o) for o in origins})
    if given_origins is not None and not given_origins:
        given_origins = None
    scored: dict[dt.date, list[int]] = {}
    if given_origins is not None:
        for origin in given_origins:
            if origin < earliest:
                raise ArgumentError(
                    f"the origin {origin} leaves less than {MIN_HISTORY_DAYS} days of orders "
                    f"before it (the first order is on {first}); use an origin on or after "
                    f"{earliest}"
                )
            room = (as_of - origin).days
            if given_horizons is not None:
                too_long = [h for h in given_horizons if h > room]
                if too_long:
                    raise ArgumentError(
                        f"the origin {origin} with a horizon of {too_long[0]} days reaches "
                        f"{origin + dt.timedelta(days=too_long[0])}, past the observation day "
                        f"{as_of}; at that origin a horizon can be at most {max(room, 0)} days"
                    )
                scored[origin] = list(given_horizons)
            else:
                fitting = [h for h in DEFAULT_HORIZONS if h <= room]
                if not fitting:
                    raise ArgumentError(
                        f"the origin {origin} leaves {max(room, 0)} days before the observation "
                        f"day {as_of}: too few for the shortest default horizon "
                        f"({min(DEFAULT_HORIZONS)} days); give a shorter --horizon or an "
                        "earlier --origin"
                    )
                scored[origin] = fitting
        return scored
    for h in given_horizons or DEFAULT_HORIZONS:
        latest = as_of - dt.timedelta(days=h)
        ends = _quarter_ends(earliest, latest)[:ORIGINS_PER_HORIZON]
        if not ends:
            if given_horizons is not None:
                raise ArgumentError(
                    f"no quarter end leaves {h} days after it before the observation day "
                    f"{as_of} and {MIN_HISTORY_DAYS} days of orders before it (the first "
                    f"order is on {first}): the history is too short for that horizon"
                )
            continue
        for origin in ends:
            scored.setdefault(origin, []).append(h)
    if not scored:
        raise DataError(
            f"the orders from {first} to {as_of} are too short a history to backtest: an "
            f"origin (a quarter end) needs {MIN_HISTORY_DAYS} days of orders before it and "
            f"{min(DEFAULT_HORIZONS)} days after it; give --origin and --horizon to choose "
            "others"
        )
    return {origin: sorted(scored[origin]) for origin in sorted(scored)}


def _model_names(models: Iterable[str] | None, learned: bool) -> list[str]:
    if models is None:
        return [*BTYD_MODELS, *([LEARNED] if learned else [])]
    names = list(dict.fromkeys(str(m).strip().lower() for m in models))
    unknown = [name for name in names if name not in MODEL_NAMES]
    if unknown:
        raise ArgumentError(
            f"unknown model {unknown[0]!r}: expected one of {', '.join(MODEL_NAMES)}"
        )
    if not names:
        raise ArgumentError(f"no models to backtest: name some of {', '.join(MODEL_NAMES)}")
    return [name for name in names if learned or name != LEARNED]


# --- what the customers did in each window ----------------------------------------------


def _origin_sql(horizons: list[int]) -> str:
    """Per customer with a purchase on or before the origin (the end of the day before
    ``$split``), purchases merged by day: the calibration summary as
    :func:`retain.features.summarize_split` gives it (``frequency``, ``recency``, ``T``
    in ``$unit_days`` days; the first holdout purchase's day), the calibration's mean
    repeat-day value as :func:`retain.summarize` computes ``monetary``, and per horizon
    the days with a purchase and the net revenue in (origin, origin + horizon]."""
    windows = "".join(
        f",\n           count(*) FILTER (WHERE day >= $split AND day < $split + INTERVAL {h} DAY)"
        f" AS purchases_{h}"
        f",\n           coalesce(sum(revenue) FILTER (WHERE day >= $split AND day < $split + "
        f"INTERVAL {h} DAY), 0.0) AS revenue_{h}"
        for h in horizons
    )
    selected = "".join(f", purchases_{h}, revenue_{h}" for h in horizons)
    return f"""
WITH days AS (
    SELECT CAST(customer_id AS VARCHAR) AS customer_id,
           date_trunc('day', ordered_at) AS day,
           sum(net_revenue) AS revenue
    FROM orders
    WHERE ordered_at < $cutoff
    GROUP BY 1, 2
),
customers AS (
    SELECT customer_id,
           count(*) FILTER (WHERE day < $split)            AS periods,
           min(day)                                         AS first_day,
           max(day) FILTER (WHERE day < $split)             AS last_day,
           sum(revenue) FILTER (WHERE day < $split) - arg_min(revenue, day) AS repeat_revenue,
           min(day) FILTER (WHERE day >= $split)            AS first_holdout{windows}
    FROM days
    GROUP BY customer_id
    HAVING count(*) FILTER (WHERE day < $split) > 0
)
SELECT customer_id,
       periods - 1                                                  AS frequency,
       date_diff('day', first_day, last_day) / $unit_days           AS recency,
       date_diff('day', first_day, $origin) / $unit_days            AS T,
       CASE WHEN periods > 1 THEN repeat_revenue / (periods - 1) ELSE 0.0 END AS monetary,
       CAST(date_diff('day', $origin, first_holdout) AS DOUBLE)     AS first_holdout_day{selected}
FROM customers
ORDER BY customer_id
"""


def _read_origin_on(
    store: Store, origin: dt.date, horizons: list[int]
) -> tuple[HoldoutData, _Windows]:
    """:func:`_read_origin` on a cursor of ``store``'s own (another thread may use its
    connection meanwhile)."""
    cursor = store.con.cursor()
    try:
        cursor.execute("SET TimeZone = 'UTC'")
        return _read_origin(cursor, origin, horizons)
    finally:
        cursor.close()


@dataclass
class _Windows:
    monetary: NDArray[np.float64]
    purchases: dict[int, NDArray[np.float64]]
    revenue: dict[int, NDArray[np.float64]]
    best_revenue: dict[int, Ranked]


def _read_origin(
    con: duckdb.DuckDBPyConnection, origin: dt.date, horizons: list[int]
) -> tuple[HoldoutData, _Windows]:
    """What every model is scored on at ``origin``, from one pass over the orders: the
    calibration summary and the holdout to the longest horizon (a
    :class:`~retain.validate.HoldoutData`, as :func:`~retain.validate.holdout_data`
    reads it, without the holdout's purchase days, which only its tracking curve
    reads, nor the summary to the holdout's end), and each horizon's window."""
    longest = max(horizons)
    split = dt.datetime.combine(origin + dt.timedelta(days=1), dt.time())
    params = {
        "split": split,
        "cutoff": split + dt.timedelta(days=longest),
        "origin": dt.datetime.combine(origin, dt.time()),
        "unit_days": UNIT_DAYS[UNIT],
    }
    frame = con.execute(_origin_sql(horizons), params).df().set_index("customer_id")
    if frame.empty:
        raise DataError(f"no customer bought on or before the origin {origin}")
    summary = pd.DataFrame(
        {
            "frequency": frame["frequency"].astype("int64"),
            "recency": frame["recency"].astype(np.float64),
            "T": frame["T"].astype(np.float64),
        }
    )
    summary.attrs.update({"unit": UNIT, "grain": GRAIN, "observation_end": origin.isoformat()})
    purchases = {h: frame[f"purchases_{h}"].to_numpy(dtype=np.float64) for h in horizons}
    revenue = {h: frame[f"revenue_{h}"].to_numpy(dtype=np.float64) for h in horizons}
    data = HoldoutData(
        pd.Timestamp(origin),
        pd.Timestamp(origin + dt.timedelta(days=longest)),
        UNIT,
        GRAIN,
        summary,
        pd.Series(purchases[longest], index=summary.index),
        pd.Series(frame["first_holdout_day"].to_numpy(dtype=np.float64), index=summary.index),
        np.zeros(0),
        summary,
    )
    windows = _Windows(
        frame["monetary"].to_numpy(dtype=np.float64),
        purchases,
        revenue,
        {h: ranked(revenue[h], revenue[h]) for h in horizons},
    )
    return data, windows


# --- scores ------------------------------------------------------------------------------


def _number(value: float | None) -> float | None:
    if value is None or not np.isfinite(value):
        return None
    return float(value)


def _metrics(
    buy: Outcomes,
    expected: NDArray[np.float64],
    predicted_revenue: NDArray[np.float64] | None,
    purchases: NDArray[np.float64],
    revenue: NDArray[np.float64],
    best_revenue: Ranked,
    log_scores: NDArray[np.float64] | None,
) -> dict[str, Any]:
    """The contract's metrics of one model at one origin and horizon: ``buy`` its
    probabilities of buying again (grouped: customers who share a forecast scored as
    one), the rest one value per customer; ``best_revenue`` the actual revenue ranked
    by itself (the Gini's best, shared by the models)."""
    predicted_total = float(expected.sum())
    actual_total = float(purchases.sum())
    errors = expected - purchases
    customers = int(purchases.size)
    log_likelihood = None if log_scores is None else float(log_scores.sum())
    by_value = None if predicted_revenue is None else ranked(predicted_revenue, revenue)
    return {
        "customers": customers,
        "buyers": round(float(buy.positives.sum())),
        **buy_scores(buy),
        "log_likelihood": log_likelihood,
        "log_likelihood_mean": (
            None if log_likelihood is None else log_likelihood / max(customers, 1)
        ),
        "predicted_total": predicted_total,
        "actual_total": actual_total,
        "bias_pct": (
            100.0 * (predicted_total - actual_total) / actual_total if actual_total else None
        ),
        "mae": float(np.mean(np.abs(errors))) if customers else None,
        "rmse": float(np.sqrt(np.mean(errors**2))) if customers else None,
        "predicted_revenue": (
            None if predicted_revenue is None else _number(float(predicted_revenue.sum()))
        ),
        "actual_revenue": float(revenue.sum()),
        "lift": [] if by_value is None else _lift_of(by_value),
        "gini": None if by_value is None else _normalized_gini_of(by_value, best_revenue),
    }


def _btyd_results(
    data: HoldoutData,
    name: str,
    customers: _Customers,
    windows: _Windows,
    spend: NDArray[np.float64] | None,
    horizons: list[int],
) -> dict[int, dict[str, Any]]:
    """One repeat-purchase model fitted on the origin's calibration summary and scored
    at every horizon (the longest through :func:`retain.validate._score`, the holdout of
    ``retain fit``)."""
    result, p_alive = _score(data, transaction_model(name), customers)
    fitted: TransactionModel = result.fitted
    rows, inverse = customers.rows, customers.inverse
    unit_days = UNIT_DAYS[data.unit]
    lengths = np.array([h / unit_days for h in horizons])
    expected_rows = fitted._conditional_expected(rows, lengths, np.clip(p_alive, 0.0, 1.0))
    longest = max(horizons)
    # the purchase windows to the longest horizon, cut to each shorter one (_cut)
    next_rows = [fitted._next_rows(rows, q, reach, p_alive) for q, reach in _windows(data)]
    out: dict[int, dict[str, Any]] = {}
    for j, h in enumerate(horizons):
        purchases = windows.purchases[h]
        expected = expected_rows[:, j][inverse]
        if h == longest:
            log_scores = result.per_customer["log_score"].to_numpy()
            held = data
        else:
            log_scores = _log_scores(fitted, customers, p_alive, purchases, lengths[j])
            end = data.calibration_end + pd.Timedelta(days=h)
            first = data.first.where(data.first <= h)
            held = replace(data, holdout_end=end, first=first, actual=pd.Series(purchases))
        # every customer of a distinct row has its forecast: scored per row
        p_buy = _p_buy_rows(fitted, rows, p_alive, lengths[j])
        figures = _metrics(
            outcomes(p_buy, purchases > 0, inverse),
            expected,
            None if spend is None else expected * spend,
            purchases,
            windows.revenue[h],
            windows.best_revenue[h],
            log_scores,
        )
        figures["next_purchase"] = _next_purchase(held, customers, _cut(next_rows, lengths[j]))
        figures["params"] = dict(fitted.params_)
        figures["converged"] = bool(fitted.converged_)
        out[h] = figures
    return out


def _cut(
    windows: list[tuple[NDArray[np.float64], NDArray[np.bool_]]], length: float
) -> list[tuple[NDArray[np.float64], NDArray[np.bool_]]]:
    """The purchase windows of :func:`retain.validate._windows` for a holdout of
    ``length`` (the fit's unit) from those of a longer one: a time within the shorter
    reach is the same time, one beyond it is capped there, as ``_next_rows`` caps it."""
    (start, start_ok), (end, end_ok), (median, dated) = windows
    reach = WINDOW_REACH * length

    def capped(
        time: NDArray[np.float64], ok: NDArray[np.bool_], top: float
    ) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        within = ok & (time <= top)
        return np.where(within, time, top), within

    return [
        capped(start, start_ok, reach),
        capped(end, end_ok, reach),
        capped(median, dated, length),
    ]


def _learned_results(
    store: Store,
    origin: dt.date,
    index: pd.Index,
    windows: _Windows,
    horizons: list[int],
    model_class: Any,
) -> dict[int, dict[str, Any]]:
    model = model_class(horizons=tuple(horizons)).fit(store, origin)
    frame = model.predict(store, origin)
    frame.index = frame.index.astype(str)
    frame = frame.reindex(index)
    out: dict[int, dict[str, Any]] = {}
    for h in horizons:
        columns = [f"p_buy_{h}d", f"expected_purchases_{h}d", f"expected_revenue_{h}d"]
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise DataError(f"the learned model's predictions lack {missing}")
        values = frame[columns].to_numpy(dtype=np.float64)
        if not np.isfinite(values).all():
            raise DataError(
                f"the learned model gave no finite prediction for some of the {len(index):,} "
                f"customers who bought by {origin}"
            )
        figures = _metrics(
            outcomes(np.clip(values[:, 0], 0.0, 1.0), windows.purchases[h] > 0),
            values[:, 1],
            values[:, 2],
            windows.purchases[h],
            windows.revenue[h],
            windows.best_revenue[h],
            None,
        )
        figures["next_purchase"] = None
        out[h] = figures
    return out


def _learned_class() -> Any:
    """:class:`retain.models.learned.LearnedModel`, or the ImportError that stops it."""
    try:
        from retain.models.learned import LearnedModel
    except ImportError as exc:
        return exc
    return LearnedModel


def _failed(error: str, windows: _Windows, h: int) -> dict[str, Any]:
    """The entry of a model that could not be scored: what the customers did, no scores."""
    purchases = windows.purchases[h]
    return {
        "error": error,
        "customers": int(purchases.size),
        "buyers": int((purchases > 0).sum()),
        **dict.fromkeys(("auc", "log_loss", "brier", "ece")),
        "calibration": [],
        **dict.fromkeys(("log_likelihood", "log_likelihood_mean", "predicted_total")),
        "actual_total": float(purchases.sum()),
        **dict.fromkeys(("bias_pct", "mae", "rmse", "predicted_revenue")),
        "actual_revenue": float(windows.revenue[h].sum()),
        "lift": [],
        "gini": None,
        "next_purchase": None,
    }


def _error(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, RetainError) else f"{type(exc).__name__}: {exc}"


def _origin_results(
    store: Store,
    origin: dt.date,
    horizons: list[int],
    read: Future[tuple[HoldoutData, _Windows]],
    names: list[str],
    learned_class: Any,
    say: Progress,
    step: str,
) -> list[dict[str, Any]]:
    """Every model's scores at ``origin``, from its orders as ``read`` gives them
    (``learned_class``: the learned model's class, when ``names`` hold it)."""
    data, windows = read.result()
    index = data.summary.index
    customers = _collapse(data.summary)
    spend: NDArray[np.float64] | None = None
    spend_error: str | None = None
    frame = pd.DataFrame(
        {"frequency": data.summary["frequency"], "monetary": windows.monetary}, index=index
    )
    try:
        if not ((frame["frequency"] > 0) & (frame["monetary"] > 0)).any():
            raise DataError(f"no customer has a repeat purchase with positive revenue by {origin}")
        spend_model = GammaGamma().fit(frame)
        spend = spend_model.expected_spend(frame).to_numpy(dtype=np.float64)
    except (RetainError, ValueError, FloatingPointError) as exc:
        spend_error = _error(exc)

    by_model: dict[str, dict[int, dict[str, Any]] | str] = {}
    btyd = [name for name in names if name in BTYD_MODELS]
    # the models are independent: fitted side by side on the shared summary (NumPy and
    # SciPy leave the interpreter), Pareto/NBD, the slowest, first; the learned model,
    # which reads the store, in this thread meanwhile
    workers = max(1, min(len(btyd), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        jobs: dict[str, Future[dict[int, dict[str, Any]]]] = {
            name: pool.submit(_btyd_results, data, name, customers, windows, spend, horizons)
            for name in sorted(btyd, key=lambda name: name != "pnbd")
        }
        if LEARNED in names:
            say(f"{step}: fitting the learned model")
            try:
                by_model[LEARNED] = _learned_results(
                    store, origin, index, windows, horizons, learned_class
                )
            except Exception as exc:  # reported with the run, not raised
                by_model[LEARNED] = _error(exc)
        for name in btyd:
            say(f"{step}: fitting and scoring {name}")
            try:
                by_model[name] = jobs[name].result()
            except Exception as exc:  # reported with the run, not raised
                by_model[name] = _error(exc)
    results = []
    for h in horizons:
        for name in names:
            entry: dict[str, Any] = {
                "origin": origin.isoformat(),
                "horizon_days": h,
                "model": name,
            }
            outcome = by_model[name]
            if isinstance(outcome, str):
                entry.update(_failed(outcome, windows, h))
            else:
                entry.update(outcome[h])
                if spend_error is not None and name != LEARNED:
                    entry["revenue_error"] = spend_error
            results.append(entry)
    return results


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def _summaries(
    results: list[dict[str, Any]], scored: dict[dt.date, list[int]], names: list[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    summary = []
    best = []
    horizons = sorted({h for hs in scored.values() for h in hs})
    for h in horizons:
        origins_at = sum(h in hs for hs in scored.values())
        rows = []
        for name in names:
            scored_rows = [
                r
                for r in results
                if r["horizon_days"] == h and r["model"] == name and "error" not in r
            ]
            if not scored_rows and not any(
                r["horizon_days"] == h and r["model"] == name for r in results
            ):
                continue
            row: dict[str, Any] = {"model": name, "horizon_days": h, "origins": len(scored_rows)}
            for metric in SUMMARY_METRICS:
                row[metric] = _mean([r.get(metric) for r in scored_rows])
            rows.append(row)
        summary += rows
        # compared on the same origins: the models scored at every origin of the horizon
        complete = [r for r in rows if r["origins"] == origins_at and r["log_loss"] is not None]
        if complete:
            winner = min(complete, key=lambda r: (r["log_loss"], r["model"]))
            best.append({"horizon_days": h, "model": winner["model"], "by": "log_loss"})
    return summary, best


def backtest(
    store: Store,
    *,
    origins: Iterable[Any] | None = None,
    horizons: Iterable[Any] | None = None,
    models: Iterable[str] | None = None,
    learned: bool = True,
    progress: Progress | None = None,
    save: bool = True,
) -> Backtest:
    """Backtest the models on ``store``'s orders (see the module's docstring) and, with
    ``save``, keep the run in the ``backtests`` table (``Backtest.backtest_id``).

    ``origins``: calibration ends (dates; the whole day counts); ``horizons``: days
    after an origin; the defaults and the rules are :func:`plan`'s (the observation
    day is :func:`retain.config.observation_day`'s). ``models``: some of "bgnbd",
    "mbgnbd", "pnbd" and "learned" (default all; "learned" only where
    :mod:`retain.models.learned` exists, and never with ``learned=False``). A model
    that cannot be fitted at an origin is reported with an ``error`` there, not
    raised. ``progress`` is called with a short message as each origin and model
    starts."""
    store.require_orders()
    names = _model_names(models, learned)
    learned_class = _learned_class() if LEARNED in names else None
    if isinstance(learned_class, ImportError):
        if models is not None:
            raise ArgumentError(
                f"the learned model is not available here ({learned_class}); backtest the "
                f"others ({', '.join(BTYD_MODELS)}) or leave --model out"
            )
        names.remove(LEARNED)  # by default: the models there are
    elif learned_class is not None:
        # consecutive origins train on some of the same cut-offs: prepared once
        from retain.models.learned import SharedCutoffs

        learned_class = functools.partial(learned_class, shared=SharedCutoffs())
    as_of = config.observation_day(store)
    first = pd.Timestamp(store.scalar("SELECT min(ordered_at) FROM orders")).date()
    scored = plan(first, as_of, origins, horizons)
    say: Progress = progress or (lambda message: None)
    results: list[dict[str, Any]] = []
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        # each origin's orders read (DuckDB, on a cursor of its own) while the models of
        # the one before are fitted
        planned = list(scored.items())
        with ThreadPoolExecutor(max_workers=1) as reader:

            def read(origin: dt.date, hs: list[int]) -> Future[tuple[HoldoutData, _Windows]]:
                return reader.submit(_read_origin_on, store, origin, hs)

            pending = read(*planned[0])
            for i, (origin, hs) in enumerate(planned, start=1):
                step = f"origin {i}/{len(planned)} ({origin})"
                say(f"{step}: reading the orders to {origin} and the {max(hs)} days after")
                current = pending
                if i < len(planned):
                    pending = read(*planned[i])  # queued behind this origin's read
                results += _origin_results(
                    store, origin, hs, current, names, learned_class, say, step
                )
    used = [name for name in names if any(r["model"] == name for r in results)]
    summary, best = _summaries(results, scored, used)
    run = Backtest(
        as_of=as_of,
        unit=UNIT,
        grain=GRAIN,
        horizons=sorted({h for hs in scored.values() for h in hs}),
        origins=list(scored),
        results=_jsonable(results),
        summary=_jsonable(summary),
        best=best,
        warnings=list(dict.fromkeys(str(w.message) for w in seen)),
    )
    if save:
        run.backtest_id = save_backtest(store, run)
    return run


def _jsonable(value: Any) -> Any:
    """Plain JSON values: NumPy scalars as Python numbers, NaN and infinity as None."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


# --- the backtests table ------------------------------------------------------------------


def save_backtest(store: Store, run: Backtest) -> int:
    """Keep ``run`` in the ``backtests`` table (its whole :meth:`Backtest.to_dict` in
    ``result``) and return its ``backtest_id``."""
    with store.transaction() as con:
        con.execute(BACKTESTS.ddl())  # a store opened read-write has it; an old one gets it
        backtest_id = int(
            con.execute("SELECT coalesce(max(backtest_id), 0) + 1 FROM backtests").fetchall()[0][0]
        )
        run.backtest_id = backtest_id
        con.execute(
            "INSERT INTO backtests VALUES (?, now()::TIMESTAMP, ?, ?)",
            [backtest_id, run.as_of, json.dumps(run.to_dict(), allow_nan=False)],
        )
    return backtest_id


def latest_backtest(store: Store) -> dict[str, Any] | None:
    """The latest run kept in ``backtests`` (its :meth:`Backtest.to_dict`, with
    ``created_at``), or None when there is none."""
    if not store.has_table("backtests"):
        return None
    rows = store.con.execute(
        "SELECT backtest_id, created_at, result FROM backtests ORDER BY backtest_id DESC LIMIT 1"
    ).fetchall()
    if not rows:
        return None
    backtest_id, created_at, result = rows[0]
    value: dict[str, Any] = json.loads(result)
    value["backtest_id"] = int(backtest_id)
    value["created_at"] = pd.Timestamp(created_at).isoformat()
    return value
