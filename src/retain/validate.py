"""Out-of-sample checks of the repeat-purchase models, and the choice between them.

:func:`holdout` fits a model on the purchases up to the end of a calibration
day and compares its forecasts with what the same customers did afterwards, up
to the end of the holdout's last day (orders are cut on their timestamps before
they are merged by day or week): total repeat purchases, per-customer errors,
the holdout log-likelihood of each customer's purchase count (a proper score:
the log of the probability the model gave to what happened), the weekly
cumulative tracking curve (the classic "tracking plot" of Fader, Hardie & Lee
2005), and how well ``next_purchase`` placed the first purchase after the
calibration end: of the customers whose whole predicted 25th-75th percentile
window lies inside the holdout, the shares before, inside and after it.

:func:`compare` does it for several models at once and chooses one by the
holdout log-likelihood (:func:`choose_model`): the best unless it is not
clearly better (a paired bootstrap interval of the mean per-customer
difference with the runner-up includes 0) and is BG/NBD, which assumes every
one-time buyer is still alive; then MBG/NBD or Pareto/NBD if not clearly worse.
RMSE and MAE of the counts are reported as context, not used to choose.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from retain.errors import ArgumentError, DataError
from retain.features import summarize_split
from retain.models import TRANSACTION_MODELS, TransactionModel, transaction_model
from retain.models.base import UNIT_DAYS, _Customers, collapse_rows, transaction_arrays
from retain.store import Store

if TYPE_CHECKING:
    from retain.backtest import Backtest

#: probabilities are floored here before the log: one impossible count does not
#: make a model's score minus infinity
PROBABILITY_FLOOR = 1e-300
#: purchase windows are computed out to this many holdout lengths, so that the cap
#: does not cut the windows that are judged (those ending inside the holdout)
WINDOW_REACH = 10


@dataclass
class HoldoutResult:
    """What :func:`holdout` found. Times are in days unless said otherwise.

    - ``actual`` / ``predicted``: total repeat purchases (distinct ``grain``
      periods with a purchase) in the holdout by the calibration customers.
    - ``mae`` / ``rmse``: per-customer mean absolute and root mean squared error
      of those counts.
    - ``log_score``: the holdout log-likelihood, the sum over customers of
      log P(X(t) = n | history), n the customer's holdout purchase count and t
      the holdout's length (probabilities floored at 1e-300): the proper score
      :func:`compare` chooses by. Higher is better.
    - ``tracking``: one row per holdout week: ``week``, ``date`` (end of the
      week), ``actual_cumulative``, ``predicted_cumulative``.
    - ``next_purchase``: ``buyers`` (customers who bought in the holdout);
      ``window_customers``, the customers whose whole predicted 25th-75th
      percentile window of the time to their next purchase lies inside the
      holdout (buyers or not: for them a purchase after the window would have
      been seen), and among them the shares whose first holdout purchase fell
      ``window_before``, ``window_inside`` or ``window_after`` the window (no
      holdout purchase counts as after); ``window_coverage`` is
      ``window_inside``, about 0.5 for a well calibrated model. Also
      ``median_error_days`` (median distance between predicted median and
      actual day, over buyers given a date), ``buyers_given_a_date`` (share of
      buyers whose predicted median fell inside the holdout) and
      ``non_buyers_given_a_date`` (the same share for customers who did not
      buy: false alarms); None where there is nobody to count.
    - ``per_customer``: ``actual``, ``predicted`` and ``log_score`` per customer.
    """

    model: str
    calibration_end: str
    holdout_end: str
    unit: str
    grain: str
    holdout_days: int
    customers: int
    actual: float
    predicted: float
    mae: float
    rmse: float
    log_score: float
    tracking: pd.DataFrame
    next_purchase: dict[str, float | None]
    fitted: TransactionModel = field(repr=False)
    per_customer: pd.DataFrame = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (tracking as records, no per-customer rows)."""
        return {
            "model": self.model,
            "calibration_end": self.calibration_end,
            "holdout_end": self.holdout_end,
            "unit": self.unit,
            "grain": self.grain,
            "holdout_days": self.holdout_days,
            "customers": self.customers,
            "actual": self.actual,
            "predicted": self.predicted,
            "mae": self.mae,
            "rmse": self.rmse,
            "log_score": self.log_score,
            "params": self.fitted.params_,
            "log_likelihood": self.fitted.log_likelihood_,
            "next_purchase": self.next_purchase,
            "tracking": [
                {
                    "week": int(week),
                    "date": str(date),
                    "actual_cumulative": float(actual),
                    "predicted_cumulative": float(predicted),
                }
                for week, date, actual, predicted in zip(
                    self.tracking["week"].tolist(),
                    self.tracking["date"].tolist(),
                    self.tracking["actual_cumulative"].tolist(),
                    self.tracking["predicted_cumulative"].tolist(),
                    strict=True,
                )
            ],
        }


def _day(value: Any, name: str) -> pd.Timestamp:
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise DataError(
            f"{name} is not a date ({exc})", value=value, expected="YYYY-MM-DD"
        ) from None
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return stamp.normalize()


def _last_day(transactions: Any, timestamp: str) -> pd.Timestamp:
    if isinstance(transactions, Store):
        value = transactions.scalar(f'SELECT max("{timestamp}") FROM orders')
    else:
        frame = transactions.to_pandas() if hasattr(transactions, "to_pandas") else transactions
        value = pd.to_datetime(frame[timestamp]).max()
    if value is None or pd.isna(value):
        raise DataError("no transactions")
    return _day(value, "the last transaction")


@dataclass
class HoldoutData:
    """The calibration summary and what the customers did in the holdout, shared by
    every model a comparison fits (:func:`holdout_data`), and the summary of every
    customer to the holdout's end (``full``, with ``monetary`` when read with an
    amount)."""

    calibration_end: pd.Timestamp
    holdout_end: pd.Timestamp
    unit: str
    grain: str
    summary: pd.DataFrame
    actual: pd.Series  # holdout purchases per calibration customer
    first: pd.Series  # days from the calibration end to the first holdout purchase, NaN if none
    offset: np.ndarray  # days from the calibration end of every holdout purchase
    full: pd.DataFrame  # the summary of every customer to the holdout's end

    @property
    def days(self) -> int:
        return int((self.holdout_end - self.calibration_end).days)


def holdout_data(
    transactions: Any,
    calibration_end: str | dt.date | pd.Timestamp,
    *,
    holdout_end: str | dt.date | pd.Timestamp | None = None,
    unit: str = "W",
    grain: str = "D",
    customer_id: str = "customer_id",
    timestamp: str = "ordered_at",
    amount: str | None = None,
) -> HoldoutData:
    """What :func:`compare` reads, from one pass over ``transactions``: the calibration
    summary to ``calibration_end``, what its customers did in the holdout (to
    ``holdout_end``, default the last transaction's day) and the summary of every
    customer to the holdout's end, with the net revenue column ``amount`` when given.
    Arguments as for :func:`holdout`; compare its models with :func:`compare_data`."""
    return _holdout_data(
        transactions, calibration_end, holdout_end, unit, grain, customer_id, timestamp, amount
    )


def _holdout_data(
    transactions: Any,
    calibration_end: str | dt.date | pd.Timestamp,
    holdout_end: str | dt.date | pd.Timestamp | None,
    unit: str,
    grain: str,
    customer_id: str,
    timestamp: str,
    amount: str | None = None,
) -> HoldoutData:
    cal_end = _day(calibration_end, "calibration_end")
    hold_end = (
        _last_day(transactions, timestamp)
        if holdout_end is None
        else _day(holdout_end, "holdout_end")
    )
    if hold_end <= cal_end:
        raise DataError(
            f"the holdout must end after the calibration end {cal_end.date()}, "
            f"got {hold_end.date()}"
        )
    if unit not in UNIT_DAYS or grain not in UNIT_DAYS:
        raise ArgumentError("unit and grain must each be 'D' or 'W'")
    # one pass: the calibration summary, what its customers did in the holdout and the
    # summary to the holdout's end; offsets are days from the calibration end to each
    # period's first holdout purchase (not to the period's start, which may precede the
    # calibration end under grain "W")
    split = summarize_split(
        transactions,
        cal_end,
        observation_end=hold_end,
        customer_id=customer_id,
        timestamp=timestamp,
        amount=amount,
        unit=unit,
        grain=grain,
    )
    summary = split.calibration
    return HoldoutData(
        cal_end,
        hold_end,
        unit,
        grain,
        summary,
        pd.Series(split.holdout_purchases, index=summary.index),
        pd.Series(split.first_holdout_day, index=summary.index),
        np.repeat(split.holdout_days, split.holdout_day_purchases),
        split.full,
    )


def holdout(
    transactions: Any,
    calibration_end: str | dt.date | pd.Timestamp,
    *,
    model: str | type[TransactionModel] | TransactionModel = "bgnbd",
    holdout_end: str | dt.date | pd.Timestamp | None = None,
    unit: str = "W",
    grain: str = "D",
    customer_id: str = "customer_id",
    timestamp: str = "ordered_at",
) -> HoldoutResult:
    """Fit ``model`` on the purchases up to ``calibration_end`` and score its
    forecast of the holdout, ``calibration_end`` (exclusive) to ``holdout_end``
    (inclusive, default the last transaction's day).

    ``transactions`` is a DataFrame (pandas, polars, Arrow) or a
    :class:`~retain.store.Store`; ``model`` a short name ("bgnbd", "mbgnbd",
    "pnbd"), a model class or an unfitted instance. ``unit`` ("D" or "W") is
    the time unit of the fit, ``grain`` how purchases are merged (one per day by
    default). Only customers who bought by ``calibration_end`` are scored.

    Orders are cut on their timestamps: the calibration takes everything up to
    the end of the ``calibration_end`` day, the holdout everything after it up
    to the end of the ``holdout_end`` day, before purchases are merged by
    ``grain``. Under ``grain="W"`` an order later in the calibration end's week
    is a holdout purchase (in that week), unless the customer had bought in
    that week by the calibration end: the calibration counted the week already.

    The result (:class:`HoldoutResult`) has the count errors (``mae``,
    ``rmse``), the holdout log-likelihood (``log_score``, total, and per
    customer in ``per_customer``), the tracking curve and the next-purchase
    figures.
    """
    data = _holdout_data(
        transactions, calibration_end, holdout_end, unit, grain, customer_id, timestamp
    )
    return _evaluate(data, transaction_model(model), _collapse(data.summary))


def _collapse(summary: pd.DataFrame) -> _Customers:
    """The calibration customers collapsed to their distinct (x, recency, T) rows, once
    for every model of a comparison (validated as a fit validates them)."""
    x, recency, T = transaction_arrays(summary)
    rows, inverse = collapse_rows(x, recency, T)
    return _Customers(summary, rows, inverse)


def _evaluate(data: HoldoutData, fitted: TransactionModel, customers: _Customers) -> HoldoutResult:
    result, p_alive = _score(data, fitted, customers)
    windows = [fitted._next_rows(customers.rows, q, h, p_alive) for q, h in _windows(data)]
    result.next_purchase = _next_purchase(data, customers, windows)
    return result


def _score(
    data: HoldoutData, fitted: TransactionModel, customers: _Customers
) -> tuple[HoldoutResult, NDArray[np.float64]]:
    """``fitted`` fitted on the calibration and scored on the holdout, all but its
    purchase windows (``next_purchase`` empty: :func:`_windows`, :func:`_next_purchase`),
    and the P(alive) of each distinct row of ``customers``."""
    summary, cal_end, days = data.summary, data.calibration_end, data.days
    rows, inverse = customers.rows, customers.inverse
    # fitted on the distinct rows with their counts: the rows a fit on the customers
    # collapses them to, in the same order, so the same fit
    distinct = pd.DataFrame({"frequency": rows.x, "recency": rows.recency, "T": rows.T})
    distinct.attrs.update(summary.attrs)
    fitted.fit(distinct, weights=rows.weight)
    fitted._check_units(summary)
    unit_days = UNIT_DAYS[data.unit]
    length = days / unit_days
    actual = data.actual
    # every figure below from one collapse of the customers to their distinct
    # (x, recency, T) rows and one P(alive) per row: the same values as the public
    # predictions (expected_purchases, probability_of_purchases, purchase_window,
    # next_purchase), each of which would collapse the customers again
    p_alive = fitted._p_alive(rows.x, rows.recency, rows.T)
    expected = fitted._conditional_expected(rows, np.array([length]), np.clip(p_alive, 0.0, 1.0))
    predicted = pd.Series(expected[:, 0][inverse], index=summary.index, name="expected_purchases")
    errors = predicted.to_numpy() - actual.to_numpy()
    log_score = _log_scores(fitted, customers, p_alive, actual.to_numpy(), length)

    # weekly cumulative tracking: all customers, each week's end; the rows' weights
    # summed per distinct (x, T), on which the conditional expectation given alive rests
    weeks = int(np.ceil(days / 7))
    ends = np.minimum(7 * np.arange(1, weeks + 1), days)
    px, pT, code = fitted._pairs(rows)
    alive = fitted._expected_alive(px[:, None], pT[:, None], (ends / unit_days)[None, :])
    pair_weight = np.bincount(code, weights=rows.weight * p_alive, minlength=px.size)
    predicted_cumulative = pair_weight @ alive
    week_of = np.ceil(data.offset / 7).astype(int)
    actual_cumulative = np.cumsum(np.bincount(week_of, minlength=weeks + 1)[1:])
    tracking = pd.DataFrame(
        {
            "week": np.arange(1, weeks + 1),
            "date": [(cal_end + pd.Timedelta(days=int(e))).date() for e in ends],
            "actual_cumulative": actual_cumulative[:weeks].astype(float),
            "predicted_cumulative": predicted_cumulative,
        }
    )
    name = next((k for k, v in TRANSACTION_MODELS.items() if type(fitted) is v), fitted.name)
    result = HoldoutResult(
        model=name,
        calibration_end=cal_end.date().isoformat(),
        holdout_end=data.holdout_end.date().isoformat(),
        unit=data.unit,
        grain=data.grain,
        holdout_days=days,
        customers=len(summary),
        actual=float(actual.to_numpy().sum()),
        predicted=float(predicted.to_numpy().sum()),
        mae=float(np.mean(np.abs(errors))),
        rmse=float(np.sqrt(np.mean(errors**2))),
        log_score=float(log_score.sum()),
        tracking=tracking,
        next_purchase={},
        fitted=fitted,
        per_customer=pd.DataFrame(
            {"actual": actual, "predicted": predicted, "log_score": log_score},
            index=summary.index,
        ),
    )
    return result, p_alive


def _windows(data: HoldoutData) -> list[tuple[float, float]]:
    """The purchase windows a holdout judges, as (quantile, horizon in the fit's unit):
    the 25th and 75th percentile times of the next purchase, computed out to
    :data:`WINDOW_REACH` holdout lengths, and the median, to the holdout's end."""
    length = data.days / UNIT_DAYS[data.unit]
    reach = WINDOW_REACH * length
    return [(0.25, reach), (0.75, reach), (0.5, length)]


def _next_purchase(
    data: HoldoutData,
    customers: _Customers,
    windows: list[tuple[NDArray[np.float64], NDArray[np.bool_]]],
) -> dict[str, float | None]:
    """The next-purchase figures from each distinct row's :func:`_windows` (the model's
    ``_next_rows``, in that order)."""
    # where the first holdout purchase fell relative to the predicted 25th-75th
    # percentile window, over the customers whose whole window lies in the holdout (so
    # that a purchase after it would have been seen), buyers or not
    (start_rows, _), (end_rows, end_ok), (median_rows, dated_rows) = windows
    inverse = customers.inverse
    unit_days = UNIT_DAYS[data.unit]
    return _next_purchase_figures(
        start_rows[inverse],
        end_rows[inverse],
        end_ok[inverse],
        median_rows[inverse],
        dated_rows[inverse],
        data.first.to_numpy(dtype=float) / unit_days,
        data.days / unit_days,
        unit_days,
    )


def _next_purchase_figures(
    start: NDArray[np.float64],
    end: NDArray[np.float64],
    end_ok: NDArray[np.bool_],
    median: NDArray[np.float64],
    dated: NDArray[np.bool_],
    actual_time: NDArray[np.float64],
    length: float,
    unit_days: float = 1.0,
) -> dict[str, float | None]:
    """The next-purchase figures of :class:`HoldoutResult` from each customer's
    predicted window (``start``, ``end``, ``end_ok``: its end within the horizon it
    was computed to), median (``median``, ``dated``: within the holdout) and first
    holdout purchase (``actual_time`` after the calibration end, NaN if none), all
    in the fit's unit (``unit_days`` days); ``length`` is the holdout's."""
    bought = ~np.isnan(actual_time)
    observable = end_ok & (end <= length + 1e-9)
    before = bought & (actual_time < start - 1e-9)
    inside = bought & ~before & (actual_time <= end + 1e-9)
    counted = int(observable.sum())

    def share(hit: NDArray[np.bool_]) -> float | None:
        return float(hit[observable].mean()) if counted else None

    gap_days = np.abs(median - actual_time) * unit_days
    buyers = int(bought.sum())
    non_buyers = bought.size - buyers
    return {
        "buyers": float(buyers),
        "window_customers": float(counted),
        "window_coverage": share(inside),
        "window_before": share(before),
        "window_inside": share(inside),
        "window_after": share(~before & ~inside),
        "median_error_days": (
            float(np.median(gap_days[bought & dated])) if (bought & dated).any() else None
        ),
        "buyers_given_a_date": float(dated[bought].mean()) if buyers else None,
        "non_buyers_given_a_date": float(dated[~bought].mean()) if non_buyers else None,
    }


def _log_scores(
    fitted: TransactionModel,
    customers: Any,
    p_alive: NDArray[np.float64],
    counts: NDArray[np.float64],
    length: float,
) -> NDArray[np.float64]:
    """log P(X(length) = n | history) per customer, n their holdout count (what
    ``probability_of_purchases`` gives): per distinct count (there are few), once per
    distinct (x, T) of the rows of the customers with that count."""
    rows, inverse = customers.rows, customers.inverse
    px, pT, code = fitted._pairs(rows)
    scores = np.empty(inverse.size)
    for n in np.unique(counts):
        mask = counts == n
        held = _present(inverse[mask], rows.weight.size)  # these customers' distinct rows
        pairs = _present(code[held], px.size)
        pair_of = np.empty(px.size, dtype=np.intp)
        pair_of[pairs] = np.arange(pairs.size)
        pair_of = pair_of[code[held]]
        if length == 0:
            alive = np.full(pairs.size, 1.0 if n == 0 else 0.0)
        else:
            alive = fitted._pmf_alive(int(n), length, px[pairs], pT[pairs])
        gone = 1.0 if n == 0 else 0.0
        value = np.clip(p_alive[held] * alive[pair_of] + (1.0 - p_alive[held]) * gone, 0.0, 1.0)
        row_score = np.zeros(rows.weight.size)
        row_score[held] = np.log(np.fmax(value, PROBABILITY_FLOOR))
        scores[mask] = row_score[inverse[mask]]
    return scores


def _p_buy_rows(
    fitted: TransactionModel,
    rows: Any,
    p_alive: NDArray[np.float64],
    length: float,
) -> NDArray[np.float64]:
    """P(at least one purchase in the next ``length``, in the fit's unit | history) of
    each distinct row of ``rows``: 1 - P(X(length) = 0), the complement of the
    probability :func:`_log_scores` gives a count of 0."""
    if length == 0:
        return np.zeros(p_alive.size)
    px, pT, code = fitted._pairs(rows)
    none_if_alive = fitted._pmf_alive(0, length, px, pT)
    return np.clip(np.clip(p_alive, 0.0, 1.0) * (1.0 - none_if_alive[code]), 0.0, 1.0)


def _buy_again_scores(
    data: HoldoutData,
    fitted: TransactionModel,
    customers: _Customers,
    p_alive: NDArray[np.float64],
) -> dict[str, float | None]:
    """How well ``fitted`` forecast who buys again in the holdout: ``auc``, ``log_loss``,
    ``brier`` and ``ece`` (of its :func:`retain.accuracy.reliability` table, ten bins)
    of 1 - P(X = 0) against a holdout purchase."""
    from retain import accuracy

    length = data.days / UNIT_DAYS[data.unit]
    # the customers of a distinct row share its forecast: scored per row
    p = _p_buy_rows(fitted, customers.rows, p_alive, length)
    scores = accuracy.buy_scores(
        accuracy.outcomes(p, data.actual.to_numpy() > 0, customers.inverse)
    )
    return {key: scores[key] for key in ("auc", "log_loss", "brier", "ece")}


def _present(codes: NDArray[np.intp], size: int) -> NDArray[np.intp]:
    """The distinct values of ``codes`` (each in ``range(size)``), in increasing order."""
    seen = np.zeros(size, dtype=bool)
    seen[codes] = True
    return np.flatnonzero(seen)


def backtest(store: Store, **kwargs: Any) -> Backtest:
    """The holdout at several past calibration ends and horizons at once: see
    :func:`retain.backtest.backtest` (the same keyword arguments)."""
    from retain.backtest import backtest as rolling

    return rolling(store, **kwargs)


def compare(
    transactions: Any,
    calibration_end: str | dt.date | pd.Timestamp,
    *,
    models: tuple[str, ...] = tuple(TRANSACTION_MODELS),
    **kwargs: Any,
) -> pd.DataFrame:
    """:func:`holdout` for each of ``models`` (the data read and summarised once),
    and the choice between them by a proper score.

    One row per model with ``actual``, ``predicted``, ``mae``, ``rmse``,
    ``log_likelihood`` (of the calibration fit), ``converged``, the
    next-purchase figures (``next_...``), and ``holdout_log_likelihood`` (the
    sum over customers of log P(X(t) = n | history), n each customer's holdout
    purchase count) with ``holdout_log_likelihood_mean`` (per customer), and
    how well each forecast who buys again in the holdout (1 - P(X(t) = 0)
    against a holdout purchase): ``auc``, ``log_loss``, ``brier`` and ``ece``
    (:mod:`retain.accuracy`; context, not used to choose). The
    chosen model comes first, the others follow best score first: the order
    in which to try them should the chosen one fail. ``attrs["choice"]`` holds
    the decision and its reasons (see :func:`choose_model`); RMSE and MAE are
    context only (MAE rewards forecasting too few purchases). Keyword arguments
    as for :func:`holdout`."""
    data = _holdout_data(
        transactions,
        calibration_end,
        kwargs.pop("holdout_end", None),
        kwargs.pop("unit", "W"),
        kwargs.pop("grain", "D"),
        kwargs.pop("customer_id", "customer_id"),
        kwargs.pop("timestamp", "ordered_at"),
    )
    if kwargs:
        raise TypeError(f"unexpected argument(s): {', '.join(kwargs)}")
    return compare_data(data, models=models)


def compare_data(
    data: HoldoutData,
    *,
    models: tuple[str, ...] = tuple(TRANSACTION_MODELS),
    meanwhile: Callable[[list[str]], None] | None = None,
) -> pd.DataFrame:
    """:func:`compare` on the data of :func:`holdout_data`.

    ``meanwhile``, when given, is called in this thread with the model names best
    holdout score first (the choice's order unless the choice falls back from BG/NBD)
    once every model is scored, while the choice's bootstrap runs in another thread."""
    customers = _collapse(data.summary)
    names = list(dict.fromkeys(models))
    # the candidates are independent: evaluated side by side (NumPy and SciPy leave
    # the interpreter while they compute), each on the one shared summary; the slowest
    # first (Pareto/NBD: its likelihood costs several times the others'), so that the
    # others share the other worker; each model's purchase windows, a task each, as
    # soon as it is scored, so that the slowest's are shared out too
    slow_first = sorted(names, key=lambda name: name != "pnbd")
    with ThreadPoolExecutor(max_workers=min(len(names), os.cpu_count() or 1)) as pool:
        scoring = {
            name: pool.submit(_score, data, transaction_model(name), customers)
            for name in slow_first
        }
        windows: dict[str, list[Future[tuple[NDArray[np.float64], NDArray[np.bool_]]]]] = {}
        buy_again: dict[str, Future[dict[str, float | None]]] = {}
        for future in as_completed(scoring.values()):
            if future.exception() is None:
                result, p_alive = future.result()
                windows[result.model] = [
                    pool.submit(result.fitted._next_rows, customers.rows, q, h, p_alive)
                    for q, h in _windows(data)
                ]
                buy_again[result.model] = pool.submit(
                    _buy_again_scores, data, result.fitted, customers, p_alive
                )
        results = [scoring[name].result()[0] for name in names]
        scores = {result.model: result.per_customer["log_score"].to_numpy() for result in results}
        # every model scores the customers of one distinct row and holdout count alike
        same, _ = pd.factorize(
            customers.inverse * (int(data.actual.max()) + 1) + data.actual.to_numpy(dtype=np.int64)
        )
        choosing = pool.submit(_choose_model, scores, same=same)
        for result in results:
            result.next_purchase = _next_purchase(
                data, customers, [job.result() for job in windows[result.model]]
            )
        if meanwhile is not None:
            meanwhile(_ranked(scores))
        choice = choosing.result()
    rows = [
        {
            "model": result.model,
            "actual": result.actual,
            "predicted": result.predicted,
            "mae": result.mae,
            "rmse": result.rmse,
            "holdout_log_likelihood": result.log_score,
            "holdout_log_likelihood_mean": result.log_score / max(result.customers, 1),
            "log_likelihood": result.fitted.log_likelihood_,
            "converged": result.fitted.converged_,
            **{f"next_{k}": v for k, v in result.next_purchase.items()},
            **buy_again[result.model].result(),
        }
        for result in results
    ]
    frame = pd.DataFrame(rows)
    rank = frame["model"].map({name: i for i, name in enumerate(_ranked(scores, choice["model"]))})
    frame = frame.iloc[np.argsort(rank.to_numpy(), kind="stable")].reset_index(drop=True)
    frame.attrs["choice"] = choice
    return frame


CRITERION = "holdout log-likelihood of each customer's purchase count"
#: the models that let a one-time buyer have left (BG/NBD assumes every one is alive)
PREFERRED_TO_BGNBD = ("mbgnbd", "pnbd")
#: above this many distinct rows of score differences the bootstrap rounds them
MAX_BOOTSTRAP_GROUPS = 20_000


def _ranked(scores: dict[str, np.ndarray], first: str | None = None) -> list[str]:
    """Model names best mean score first (ties by name), ``first`` moved to the front."""
    means = {name: float(np.mean(values)) for name, values in scores.items()}
    order = sorted(means, key=lambda name: (-means[name], name))
    if first is not None:
        order.remove(first)
        order.insert(0, first)
    return order


def choose_model(
    scores: dict[str, np.ndarray],
    *,
    level: float = 0.9,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Which model to keep, from each model's per-customer holdout log scores
    (the same customers, in the same order, for every model; higher is better).

    The best is the model with the highest mean score, the runner-up the next.
    The mean per-customer difference best - runner-up gets a ``level`` (90%)
    paired bootstrap interval: the customers resampled with replacement
    (Poisson(1) weights, ``resamples`` times, ``np.random.default_rng(seed)``),
    the same resample for every model. The best is clearly better when the
    interval excludes 0, and is then kept. When it is not and it is "bgnbd",
    which assumes every one-time buyer is still alive, the best of "mbgnbd" and
    "pnbd" that is not clearly worse (its interval against the best includes 0)
    is kept instead, if there is one; otherwise the best is kept.

    Returns a JSON-ready dict: ``model`` (the choice), ``criterion``,
    ``reason`` (one sentence with the figures), ``best``, ``runner_up``,
    ``difference``, ``difference_low``, ``difference_high`` (None with a single
    model). The order of ``scores`` does not matter.
    """
    return _choose_model(scores, level=level, resamples=resamples, seed=seed)


def _choose_model(
    scores: dict[str, np.ndarray],
    *,
    level: float = 0.9,
    resamples: int = 1000,
    seed: int = 0,
    same: NDArray[np.intp] | None = None,
) -> dict[str, Any]:
    """:func:`choose_model`; ``same``: a code per customer, equal for customers known to
    have the same score in every model (see :func:`_bootstrap_means`)."""
    if not scores:
        raise ArgumentError("no models to choose from")
    if not 0 < level < 1:
        raise ArgumentError(f"level must be between 0 and 1, got {level!r}")
    if resamples < 1:
        raise ArgumentError(f"resamples must be 1 or more, got {resamples!r}")
    arrays = {name: np.asarray(values, dtype=np.float64).ravel() for name, values in scores.items()}
    sizes = {values.size for values in arrays.values()}
    if len(sizes) != 1 or 0 in sizes:
        raise ArgumentError("every model needs a score for each of the same customers")
    order = _ranked(arrays)
    best = order[0]
    if len(order) == 1:
        return {
            "model": best,
            "criterion": CRITERION,
            "reason": "the only model asked for",
            "best": best,
            "runner_up": None,
            "difference": None,
            "difference_low": None,
            "difference_high": None,
        }
    others = order[1:]
    runner_up = others[0]
    # per-customer differences best - other, one column per other model
    differences = np.column_stack([arrays[best] - arrays[name] for name in others])
    boot = _bootstrap_means(differences, resamples, np.random.default_rng(seed), same=same)
    low, high = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2], axis=0)
    observed = differences.mean(axis=0)
    mean = {name: float(arrays[name].mean()) for name in order}
    pct = f"{level:.0%}"

    def interval(j: int) -> str:
        return f"{observed[j]:.4g}, {pct} interval {low[j]:.4g} to {high[j]:.4g}"

    lead = (
        f"{best} has the highest {CRITERION}, {mean[best]:.4f} per customer against "
        f"{mean[runner_up]:.4f} for {runner_up} (difference {interval(0)})"
    )
    chosen = best
    if low[0] > 0:
        reason = f"{lead}: the interval excludes 0, so {best} is clearly better"
    else:
        fallback = [
            j for j, name in enumerate(others) if name in PREFERRED_TO_BGNBD and low[j] <= 0
        ]
        if best == "bgnbd" and fallback:
            j = fallback[0]
            chosen = others[j]
            reason = (
                f"{lead}: the interval includes 0, so bgnbd is not clearly better; as it "
                f"assumes every one-time buyer is still alive, {chosen}, not clearly worse "
                f"(bgnbd - {chosen} {interval(j)}), is preferred"
            )
        elif best == "bgnbd":
            reason = (
                f"{lead}: the interval includes 0, but neither "
                f"{' nor '.join(PREFERRED_TO_BGNBD)} is as good (each is clearly worse or "
                "not compared), so the best is kept"
            )
        else:
            reason = (
                f"{lead}: the interval includes 0, so {best} is not clearly better, "
                "but it is the best and is kept"
            )
    return {
        "model": chosen,
        "criterion": CRITERION,
        "reason": reason,
        "best": best,
        "runner_up": runner_up,
        "difference": float(observed[0]),
        "difference_low": float(low[0]),
        "difference_high": float(high[0]),
    }


def _bootstrap_means(
    values: np.ndarray,
    resamples: int,
    rng: np.random.Generator,
    block: int = 4_000_000,
    same: NDArray[np.intp] | None = None,
) -> np.ndarray:
    """Bootstrap means of each column of ``values`` (customers x columns): each
    customer weighted Poisson(1) in each resample, the same weights for every
    column; ``resamples`` x columns.

    Customers with identical rows share a group whose weight is Poisson(its
    size), the same in distribution and far fewer draws. Where the distinct rows
    are still more than :data:`MAX_BOOTSTRAP_GROUPS` (very many customers), the
    values are first rounded to a step of a small fraction of each column's
    standard deviation (the coarsest of 2**-10 ... 2**-2 that is enough), which
    adds at most step**2 / 12 to the variance, and the resampled means are moved
    by the rounding's shift of the mean.

    ``same`` (optional) codes the customers whose rows are known to be equal (equal
    codes, equal rows; other rows may be equal too): the groups are then searched
    among the rows of distinct codes only, with the same result.
    """
    columns = values.shape[1]
    shift = np.zeros(columns)
    grouped = values
    # the search runs on one row per code, each weighted by its customers; the codes
    # in the order of their first customer, so that the groups come in the order of
    # theirs, as from a search over every customer
    if same is None:
        code_of = np.arange(values.shape[0])
        distinct, multiplicity = values, np.ones(values.shape[0])
    else:
        first = np.full(int(same.max()) + 1, values.shape[0], dtype=np.intp)
        # positions in reverse so that each code's earliest customer is written last
        first[same[::-1]] = np.arange(same.size, dtype=np.intp)[::-1]
        present = np.flatnonzero(first < values.shape[0])
        order = present[np.argsort(first[present], kind="stable")]
        renumber = np.empty(first.size, dtype=np.intp)
        renumber[order] = np.arange(order.size)
        code_of = renumber[same]
        distinct = values[first[order]]
        multiplicity = np.bincount(code_of, minlength=order.size).astype(np.float64)

    def weighted(codes: np.ndarray, groups: int) -> tuple[np.ndarray, np.ndarray]:
        return codes, np.bincount(codes, weights=multiplicity, minlength=groups)

    codes, counts = weighted(*_group_codes(distinct))
    if counts.size > MAX_BOOTSTRAP_GROUPS:
        sd = values.std(axis=0)

        def steps(power: int) -> np.ndarray:
            return np.where(sd > 0, sd * 2.0**-power, 1.0)

        def rounded(power: int) -> tuple[np.ndarray, np.ndarray]:
            # rows equal once rounded are rows of equal multiples of the step: one
            # integer key per row, grouped in the order the rows first appear
            multiples = np.round(distinct / steps(power))
            low = multiples.min(axis=0)
            span = multiples.max(axis=0) - low + 1
            if float(np.prod(span)) >= 2.0**62:  # pragma: no cover - needs a huge spread
                return weighted(*_group_codes(multiples))
            key = np.zeros(distinct.shape[0], dtype=np.int64)
            for j in range(columns):
                key = key * np.int64(span[j]) + (multiples[:, j] - low[j]).astype(np.int64)
            codes, uniques = pd.factorize(key)
            return weighted(codes, len(uniques))

        # the finest step that is few enough groups (a binary search over powers)
        power_used = 2
        codes, counts = rounded(2)
        low_power, high_power = 3, 10
        while low_power <= high_power:
            power = (low_power + high_power) // 2
            attempt = rounded(power)
            if attempt[1].size <= MAX_BOOTSTRAP_GROUPS:
                power_used, (codes, counts) = power, attempt
                low_power = power + 1
            else:
                high_power = power - 1
        step = steps(power_used)
        grouped = np.round(values / step) * step
        shift = values.mean(axis=0) - grouped.mean(axis=0)
    codes = codes[code_of]
    group_values = np.zeros((counts.size, columns))
    for j in range(columns):
        group_values[:, j] = np.bincount(codes, weights=grouped[:, j], minlength=counts.size)
    group_values /= counts[:, None]
    out = np.empty((resamples, columns))
    per_block = max(1, block // counts.size)
    for begin in range(0, resamples, per_block):
        size = min(per_block, resamples - begin)
        weights = rng.poisson(counts, size=(size, counts.size)).astype(np.float64)
        total = np.maximum(weights.sum(axis=1), 1.0)
        out[begin : begin + size] = (weights @ group_values) / total[:, None]
    return out + shift


def _group_codes(values: np.ndarray) -> tuple[np.ndarray, int]:
    """The group of each identical row of ``values`` (groups in the order of their first
    row), and the number of groups."""
    key = np.zeros(values.shape[0], dtype=np.int64)
    for j in range(values.shape[1]):
        column, uniques = pd.factorize(values[:, j])
        key, _ = pd.factorize(key * len(uniques) + column)
        key = key.astype(np.int64)
    codes, uniques = pd.factorize(key)
    return codes, len(uniques)
