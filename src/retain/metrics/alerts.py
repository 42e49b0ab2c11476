"""Trend alerts: a recent period that dropped further than its own past explains.

Checked per complete period: retention rate, AOV, purchase frequency, new
customers and the returning customers' share of revenue (definitions in
:mod:`retain.metrics.retention`). Each of the last ``recent_periods`` complete
periods is compared with the ``baseline_periods`` complete periods before it.

The retention rate is a proportion (customers at the start of the period still
customers at its end, over customers at its start), and is tested as one: a
two-proportion z-test of the period against its baseline periods pooled. With x
of n customers kept in the period, X of N over the baseline periods, the
baseline rate is p0 = X / N, the pooled rate p = (x + X) / (n + N) and
z = (x / n - p0) / sqrt(p (1 - p) (1 / n + 1 / N) + tau^2 (1 + 1 / k)), where
tau^2 is the spread of the k baseline rates beyond their sampling noise (their
sample variance less the mean of p0 (1 - p0) / n_i, never below 0): with many
customers, periods differ by more than sampling, and a test that ignored it
would flag every wobble. The one-sided p-value is P(Z <= z), Z standard normal;
when tau^2 > 0 it is estimated from only k periods, and z is referred to Student's t
with k - 1 degrees of freedom instead.
Periods whose retention is empty (not complete, or ended before anyone could
have lapsed: see :mod:`retain.metrics.retention`) are neither checked nor part
of a baseline.

The other metrics: with baseline values x_1 .. x_n (n >= 3), mean m and sample standard
deviation s, a new value under the baseline's own behaviour is distributed
around m with the prediction standard error s x sqrt(1 + 1/n); the statistic
t = (value - m) / that error follows Student's t with n - 1 degrees of freedom.
Because a flat baseline would make any wobble look significant, the error is
never taken below the value's own sampling error: the standard error of the mean for
AOV (order values) and for frequency (orders per customer), Poisson for new
customers (sqrt(m)), and binomial over the period's customers for the revenue
share (an approximation). A drop is flagged when its one-sided p-value,
P(T <= t), is below ``alpha`` (a drop from a baseline and a period without any
spread at all has p = 0). Only drops are flagged: a rise is good news.

The drift alert (:func:`drift_alerts`) reads the latest ``retain backtest`` run
(:mod:`retain.backtest`): its latest completed window is the latest origin of its
shortest horizon, scored for the model in use (:func:`models_in_use`: the learned
model when the fit in use kept one, else its repeat-purchase model; the horizon's
best model by log-loss when the run scored neither there). It is flagged when that window's total forecast purchases are more than
:data:`DRIFT_BIAS_PCT` percent from those made and further than chance alone takes a
total (at least :data:`DRIFT_Z` Poisson standard deviations of the forecast: on a
small store 39 forecast against 33 made is +17% and nothing to act on), or when its
expected calibration error is at least :data:`DRIFT_ECE_RATIO` times the mean of the
earlier origins' at the same horizon. The ratio is a threshold, not a test: a
backtest has a few origins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from retain.config import observation_day
from retain.errors import DataError, RetainError
from retain.metrics._activity import Activity, activity
from retain.metrics._common import (
    AsOf,
    activity_window,
    check_period,
    check_positive_int,
    observation,
)
from retain.metrics.retention import period_table, retention_table
from retain.store import Store

ALERT_COLUMNS = [
    "metric",
    "period",
    "value",
    "baseline",
    "change",
    "change_pct",
    "test",
    "statistic",
    "p_value",
    "reason",
]


@dataclass(frozen=True)
class _Metric:
    name: str  # column and alert name
    label: str  # in words
    unit: str  # "pct", "money" or "count" or "rate"


METRICS = (
    _Metric("retention_rate", "retention rate", "pct"),
    _Metric("aov", "AOV", "money"),
    _Metric("purchase_frequency", "purchase frequency", "rate"),
    _Metric("new_customers", "new customers", "count"),
    _Metric("returning_revenue_share", "returning customers' revenue share", "pct"),
)
METRIC_NAMES = tuple(m.name for m in METRICS)
#: the drift alert's metrics (see :func:`drift_alerts`)
DRIFT_METRICS = ("forecast_bias", "calibration_error")
#: a forecast total further than this from the purchases made (percent) is drift
DRIFT_BIAS_PCT = 10.0
#: ... and at least this many Poisson standard deviations (the square root of the
#: forecast total) from it: what chance alone gives a total is no drift
DRIFT_Z = 2.0
#: the defaults of :func:`alerts`: complete periods in each baseline, recent periods
#: checked, one-sided significance level
BASELINE_PERIODS, RECENT_PERIODS, ALPHA = 6, 3, 0.01
#: a calibration error this many times the earlier origins' mean is drift
DRIFT_ECE_RATIO = 2.0


def alerts(
    store: Store,
    period: str = "month",
    *,
    baseline_periods: int = BASELINE_PERIODS,
    recent_periods: int = RECENT_PERIODS,
    alpha: float = ALPHA,
    window_days: int | None = None,
    as_of: AsOf = None,
) -> pd.DataFrame:
    """Drops in the recent periods that are unlikely under the trailing baseline.

    ``period``: "month", "quarter" or "year"; ``baseline_periods``: complete
    periods before each checked one that form its baseline (at least 3 with a
    value are needed); ``recent_periods``: how many of the last complete periods
    to check; ``alpha``: one-sided significance level in (0, 0.5);
    ``window_days``: activity window of the retention rate (default: from the
    store's purchase rhythm, see :mod:`retain.metrics.retention`); ``as_of``:
    observation day (default: the store's ``as_of`` setting, else
    the day of the last order).

    One row per alert, the most significant first, then the drift alerts of the
    latest backtest (:func:`drift_alerts`). Columns: ``metric``
    (retention_rate, aov, purchase_frequency, new_customers,
    returning_revenue_share, or forecast_bias and calibration_error), ``period``,
    ``value``, ``baseline`` (mean of the
    baseline periods), ``change`` (value - baseline, in the metric's unit:
    percentage points for rates), ``change_pct`` (change / baseline x 100),
    ``t_statistic``, ``p_value``, ``reason`` (one line). ``attrs["checked"]``
    says how many (metric, period) pairs were tested; ``attrs["drift"]`` what the
    drift check looked at (:func:`drift_alerts`' attrs).
    """
    check_period(period)
    check_positive_int("baseline_periods", baseline_periods, least=3)
    check_positive_int("recent_periods", recent_periods)
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha < 0.5:
        raise DataError(
            "alpha is a significance level", value=alpha, expected="a number in (0, 0.5)"
        )
    window = observation(store, as_of, period)
    act = activity(store, window, activity_window(store, window, window_days))
    return alerts_over(
        store, act, baseline_periods=baseline_periods, recent_periods=recent_periods, alpha=alpha
    )


def alerts_over(
    store: Store,
    act: Activity,
    *,
    baseline_periods: int = BASELINE_PERIODS,
    recent_periods: int = RECENT_PERIODS,
    alpha: float = ALPHA,
) -> pd.DataFrame:
    """:func:`alerts` over activity aggregates already computed (the overview's, which
    the service's overview page shows beside them: the one pass over the orders is
    then made once), with arguments :func:`alerts` has checked."""
    window = act.window
    period = window.period
    kept = retention_table(act)
    bought = period_table(act)
    table = bought.assign(
        retention_rate=kept["retention_rate"],
        customers_at_start=kept["customers_at_start"],
    )
    table = table[table["complete"]].reset_index(drop=True)
    found, checked = _find_drops(table, baseline_periods, recent_periods, alpha, period)
    frame = pd.DataFrame(found, columns=ALERT_COLUMNS)
    if not frame.empty:
        frame = frame.sort_values(["p_value", "metric"]).reset_index(drop=True)
    drift = drift_alerts(store)
    if not drift.empty:
        frame = drift.copy() if frame.empty else pd.concat([frame, drift], ignore_index=True)
        frame.attrs = {}  # the drift check's are under "drift"
    note = ""
    if checked == 0:
        note = (
            f"not enough history: each checked {period} needs at least 3 complete "
            f"{period}s with a value before it ({len(table)} complete so far)"
        )
    frame.attrs.update(
        {
            "period": period,
            "as_of": window.as_of.isoformat(),
            "baseline_periods": baseline_periods,
            "recent_periods": recent_periods,
            "alpha": alpha,
            "window_days": act.window_days,
            "window_rule": act.window_rule,
            "checked": checked,
            "note": note,
            "drift": dict(drift.attrs),
        }
    )
    return frame


def models_in_use(store: Store) -> list[str]:
    """The models whose forecasts the customer scores use, first the one a drift check
    reads: "learned" when the fit in use kept a learned model (``retain fit --learned``),
    then its repeat-purchase model. The fit in use is the one the customer scores use,
    else the latest the fit guard kept; none when nothing is fitted."""
    if not store.has_table("model_fits"):
        return []
    columns = {
        row[0]
        for row in store.con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'model_fits'"
        ).fetchall()
    }
    learned = "learned IS NOT NULL" if "learned" in columns else "false"
    row: list[Any] = []
    if store.has_table("score_basis"):
        scored = {
            found[0]
            for found in store.con.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = 'score_basis'"
            ).fetchall()
        }
        if "fit_id" in scored:
            row = store.con.execute(
                f"SELECT f.model, {learned} FROM score_basis b JOIN model_fits f USING (fit_id) "
                "LIMIT 1"
            ).fetchall()
    if not row:
        row = store.con.execute(
            f"SELECT model, {learned} FROM model_fits WHERE kept IS NOT false "
            "ORDER BY fit_id DESC LIMIT 1"
        ).fetchall()
    if not row:
        return []
    model, has_learned = row[0]
    return ["learned", str(model)] if has_learned else [str(model)]


def model_in_use(store: Store) -> str | None:
    """The first of :func:`models_in_use`, or None when nothing is fitted."""
    found = models_in_use(store)
    return found[0] if found else None


def _observation_day(store: Store) -> str | None:
    """The store's observation day (ISO), None when it has none (no orders)."""
    if not store.has_table("orders"):
        return None
    try:
        return observation_day(store).isoformat()
    except RetainError:
        return None


def _poisson_z(actual: Any, predicted: Any) -> float:
    """(made - forecast) / sqrt(forecast): how far the total made lies from the
    forecast in Poisson standard deviations (infinite when nothing was forecast but
    something was made; 0 when either is missing)."""
    if actual is None or predicted is None:
        return 0.0
    made, forecast = float(actual), float(predicted)
    if forecast <= 0:
        return math.inf if made > 0 else 0.0
    return (made - forecast) / math.sqrt(forecast)


def drift_alerts(store: Store, run: dict[str, Any] | None = None) -> pd.DataFrame:
    """The drift alert of the latest backtest (``run``: a backtest's ``to_dict``, default
    the latest kept in the store): see the module notes.

    Rows as :func:`alerts`' (``metric`` forecast_bias: ``value`` the window's bias in
    percent, ``baseline`` 0; calibration_error: ``value`` its expected calibration error,
    ``baseline`` the earlier origins' mean; ``test`` "threshold and Poisson z" for the
    bias, with the z of the total made against the forecast and its two-sided p-value,
    "threshold" with neither for the calibration error), none
    when nothing drifted or no backtest exists. ``attrs``:
    ``backtest_id``, ``model``, ``horizon_days``, ``origin``, ``bias_pct``,
    ``predicted_total``, ``actual_total``, ``ece``, ``ece_baseline``, ``checked``
    (whether a window was checked) and ``note`` (why not, or which model stood in).
    """
    frame = pd.DataFrame([], columns=ALERT_COLUMNS)
    attrs: dict[str, Any] = {"backtest_id": None, "checked": False, "note": ""}
    frame.attrs.update(attrs)
    if run is None and store.has_table("backtests"):
        from retain.backtest import latest_backtest  # models and all: only when there is one

        run = latest_backtest(store)
    if run is None:
        frame.attrs["note"] = "no backtest yet: `retain backtest` scores the models' forecasts"
        return frame
    attrs["backtest_id"] = run.get("backtest_id")
    results = [r for r in run.get("results", []) if "error" not in r]
    horizons = sorted({int(r["horizon_days"]) for r in results})
    if not horizons:
        frame.attrs.update(attrs, note="the latest backtest scored no model")
        return frame
    horizon = horizons[0]
    at_horizon = [r for r in results if r["horizon_days"] == horizon]
    latest = max(str(r["origin"]) for r in at_horizon)
    scored = {r["model"] for r in at_horizon if str(r["origin"]) == latest}
    in_use = models_in_use(store)
    model = next((name for name in in_use if name in scored), None)
    note = ""
    if model is None:
        best = next((b["model"] for b in run.get("best", []) if b["horizon_days"] == horizon), None)
        model = best if best in scored else sorted(scored)[0]
        note = (
            f"the backtest did not score the model in use ({in_use[0]}) at {latest}: "
            f"{model} stands in"
            if in_use
            else f"nothing is fitted: {model}, the backtest's best at {horizon} days, stands in"
        )
    elif model != in_use[0]:
        note = (
            f"the backtest did not score the model in use ({in_use[0]}) at {latest}: the "
            f"fit's repeat-purchase model, {model}, is checked"
        )
    rows = sorted(
        (r for r in at_horizon if r["model"] == model and str(r["origin"]) <= latest),
        key=lambda r: str(r["origin"]),
    )
    last, earlier = rows[-1], rows[:-1]
    past = [float(r["ece"]) for r in earlier if r.get("ece") is not None]
    baseline = float(np.mean(past)) if past else None
    bias, ece = last.get("bias_pct"), last.get("ece")
    now = _observation_day(store)
    if now is not None and run.get("as_of") and str(run["as_of"]) < now:
        stale = (
            f"backtest {attrs['backtest_id']} ran with orders to {run['as_of']}; the store's "
            f"observation day is now {now}: rerun `retain backtest` to check the latest windows"
        )
        note = f"{note}; {stale}" if note else stale
    attrs.update(
        model=model,
        horizon_days=horizon,
        origin=str(last["origin"]),
        bias_pct=bias,
        predicted_total=last.get("predicted_total"),
        actual_total=last.get("actual_total"),
        ece=ece,
        ece_baseline=baseline,
        checked=True,
        note=note,
    )
    window = f"the {horizon} days after {last['origin']}"
    advice = "refit (`retain fit`, then `retain score`) and rerun `retain backtest`"
    source = f"backtest {attrs['backtest_id']}: "
    found: list[dict[str, Any]] = []
    z = _poisson_z(last.get("actual_total"), last.get("predicted_total"))
    if bias is not None and abs(bias) > DRIFT_BIAS_PCT and abs(z) < DRIFT_Z:
        chance = (
            f"the {bias:+.1f}% bias over {window} ({float(last['actual_total']):,.0f} "
            f"purchases made) is within what chance alone gives a total that small "
            f"(z = {z:.1f}; at least {DRIFT_Z:g} is drift)"
        )
        attrs["note"] = f"{attrs['note']}; {chance}" if attrs["note"] else chance
    elif bias is not None and abs(bias) > DRIFT_BIAS_PCT:
        found.append(
            {
                "metric": "forecast_bias",
                "period": window,
                "value": float(bias),
                "baseline": 0.0,
                "change": float(bias),
                "change_pct": float("nan"),
                "test": "threshold and Poisson z",
                "statistic": z if math.isfinite(z) else float("nan"),  # JSON has no inf
                "p_value": math.erfc(abs(z) / math.sqrt(2.0)),
                "reason": (
                    f"{source}{model} forecast {float(last['predicted_total']):,.0f} purchases over "
                    f"{window} against {float(last['actual_total']):,.0f} made "
                    f"({bias:+.1f}%, outside +/-{DRIFT_BIAS_PCT:g}%; z = {z:.1f}); {advice}"
                ),
            }
        )
    if ece is not None and baseline is not None and 0 < DRIFT_ECE_RATIO * baseline <= ece:
        found.append(
            {
                "metric": "calibration_error",
                "period": window,
                "value": float(ece),
                "baseline": baseline,
                "change": float(ece) - baseline,
                "change_pct": 100.0 * (float(ece) - baseline) / baseline,
                "test": "threshold",
                "statistic": float("nan"),
                "p_value": float("nan"),
                "reason": (
                    f"{source}{model}'s calibration error of buying again within {horizon} days "
                    f"was {ece:.3f} over {window}, {ece / baseline:.1f}x the mean "
                    f"{baseline:.3f} of the {len(past)} earlier origin"
                    f"{'s' if len(past) != 1 else ''} (at least "
                    f"{DRIFT_ECE_RATIO:g}x); {advice}"
                ),
            }
        )
    frame = pd.DataFrame(found, columns=ALERT_COLUMNS)
    frame.attrs.update(attrs)
    return frame


def retention_z_test(
    kept: float, customers: float, baseline_kept: np.ndarray, baseline_customers: np.ndarray
) -> tuple[float, float, float]:
    """Two-proportion z-test of a period's retention against its baseline periods pooled
    (see the module notes). Returns the baseline rate (fraction), z and P(Z <= z)."""
    n, x = float(customers), min(float(kept), float(customers))
    ns = baseline_customers.astype("float64")
    xs = np.minimum(baseline_kept.astype("float64"), ns)
    big_n, big_x = float(ns.sum()), float(xs.sum())
    p0, p1 = big_x / big_n, x / n
    pooled = (x + big_x) / (n + big_n)
    rates = xs / ns
    noise = float(np.mean(p0 * (1 - p0) / ns))
    tau2 = max(float(rates.var(ddof=1)) - noise, 0.0) if rates.size > 1 else 0.0
    variance = pooled * (1 - pooled) * (1 / n + 1 / big_n) + tau2 * (1 + 1 / rates.size)
    if variance <= 0:
        z = 0.0 if p1 == p0 else float("-inf") if p1 < p0 else float("inf")
    else:
        z = (p1 - p0) / float(np.sqrt(variance))
    # scipy.stats' own t and normal distributions (its import takes a second)
    from scipy.special import ndtr, stdtr

    # the extra spread is estimated from k periods: refer z to Student's t then
    if tau2 > 0:
        return p0, z, float(stdtr(rates.size - 1, z))
    return p0, z, float(ndtr(z))


def _sampling_error(metric: _Metric, row: pd.Series, baseline: float) -> float:
    """The value's own sampling error, the least spread the test allows."""
    if metric.name == "aov":
        var = row["order_value_var"]
        return float(np.sqrt(var / row["orders"])) if pd.notna(var) else 0.0
    if metric.name == "purchase_frequency":
        var = row["orders_per_customer_var"]
        return float(np.sqrt(var / row["customers"])) if pd.notna(var) else 0.0
    if metric.name == "new_customers":
        return float(np.sqrt(max(baseline, 0.0)))
    n = float(row["customers"])
    p = min(max(baseline / 100.0, 0.5 / n), 1 - 0.5 / n)
    return 100.0 * float(np.sqrt(p * (1 - p) / n))


def _find_drops(
    table: pd.DataFrame, baseline_periods: int, recent_periods: int, alpha: float, period: str
) -> tuple[list[dict[str, object]], int]:
    found: list[dict[str, object]] = []
    checked = 0
    first_checked = max(len(table) - recent_periods, 0)
    # a few metrics times a few recent periods: small loops over periods, not rows
    starts = table["customers_at_start"].to_numpy(dtype="float64")
    for metric in METRICS:
        values = table[metric.name].to_numpy(dtype="float64")
        for i in range(first_checked, len(table)):
            value = values[i]
            lo = max(i - baseline_periods, 0)
            usable = np.isfinite(values[lo:i])
            past = values[lo:i][usable]
            if not np.isfinite(value) or past.size < 3:
                continue
            row = table.iloc[i]
            if metric.name == "retention_rate":
                if starts[i] <= 0:
                    continue
                checked += 1
                past_n = starts[lo:i][usable]
                p0, stat, p_value = retention_z_test(
                    value / 100 * starts[i], starts[i], past / 100 * past_n, past_n
                )
                mean, test = 100.0 * p0, "z"
            else:
                if metric.name != "new_customers" and row["customers"] == 0:
                    continue
                checked += 1
                mean, test = float(past.mean()), "t"
                spread = float(past.std(ddof=1)) * np.sqrt(1 + 1 / past.size)
                error = max(spread, _sampling_error(metric, row, mean))
                # no spread at all: a drop from a constant is certain, not chance
                stat = (value - mean) / error if error > 0 else float("-inf")
                from scipy.special import stdtr  # see retention_z_test

                p_value = float(stdtr(past.size - 1, stat))
            if value >= mean or p_value >= alpha:
                continue
            change = value - mean
            found.append(
                {
                    "metric": metric.name,
                    "period": str(row["period"]),
                    "value": value,
                    "baseline": mean,
                    "change": change,
                    "change_pct": 100.0 * (change / abs(mean)) if mean else float("nan"),
                    "test": test,
                    "statistic": stat,
                    "p_value": p_value,
                    "reason": _reason(
                        metric,
                        row,
                        value,
                        mean,
                        past.size,
                        period,
                        stat,
                        p_value,
                    ),
                }
            )
    return found, checked


def _fmt(metric: _Metric, value: float) -> str:
    if metric.unit == "pct":
        return f"{value:.1f}%"
    if metric.unit == "money":
        return f"{value:,.2f}"
    if metric.unit == "count":
        return f"{value:,.0f}"
    return f"{value:.3f} orders per customer"


def _reason(
    metric: _Metric,
    row: pd.Series,
    value: float,
    mean: float,
    n: int,
    period: str,
    stat: float,
    p_value: float,
) -> str:
    label = str(row["period"])
    change = value - mean
    if metric.unit == "pct":
        size = f"{-change:.1f} points"
    elif metric.unit == "money":
        size = f"{-change:,.2f}"
    elif metric.unit == "count":
        size = f"{-change:,.0f}"
    else:
        size = f"{-change:.3f}"
    relative = f", {100 * change / abs(mean):+.1f}%" if mean and metric.unit != "pct" else ""
    if metric.name == "retention_rate":
        return (
            f"{metric.label} fell to {_fmt(metric, value)} in {label} (customers active at "
            f"its start, {int(row['customers_at_start']):,}, still active at its end), down "
            f"{size} from a baseline of {_fmt(metric, mean)} (the {n} {period}s before, "
            f"pooled); two-proportion z-test: z = {stat:.1f}, p = {p_value:.2g}"
        )
    return (
        f"{metric.label} fell to {_fmt(metric, value)} in {label}, down {size}{relative} "
        f"from a baseline of {_fmt(metric, mean)} (mean of the {n} {period}s before); "
        f"t = {stat:.1f}, p = {p_value:.2g}"
    )
