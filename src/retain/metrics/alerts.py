"""Trend alerts: a recent period that dropped further than its own past explains.

Checked per complete period: retention rate, AOV, purchase frequency, new
customers and the returning customers' share of revenue (definitions in
:mod:`retain.metrics.retention`). Each of the last ``recent_periods`` complete
periods is compared with the ``baseline_periods`` complete periods before it.

The test: with baseline values x_1 .. x_n (n >= 3), mean m and sample standard
deviation s, a new value under the baseline's own behaviour is distributed
around m with the prediction standard error s x sqrt(1 + 1/n); the statistic
t = (value - m) / that error follows Student's t with n - 1 degrees of freedom.
Because a flat baseline would make any wobble look significant, the error is
never taken below the value's own sampling error: binomial for retention
(sqrt(p (1 - p) / customers at start)), the standard error of the mean for
AOV (order values) and for frequency (orders per customer), Poisson for new
customers (sqrt(m)), and binomial over the period's customers for the revenue
share (an approximation). A drop is flagged when its one-sided p-value,
P(T <= t), is below ``alpha`` (a drop from a baseline and a period without any
spread at all has p = 0). Only drops are flagged: a rise is good news.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from retain.errors import DataError
from retain.metrics._activity import activity
from retain.metrics._common import (
    AsOf,
    check_period,
    check_positive_int,
    check_window_days,
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
    "t_statistic",
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


def alerts(
    store: Store,
    period: str = "month",
    *,
    baseline_periods: int = 6,
    recent_periods: int = 3,
    alpha: float = 0.01,
    window_days: int = 365,
    as_of: AsOf = None,
) -> pd.DataFrame:
    """Drops in the recent periods that are unlikely under the trailing baseline.

    ``period``: "month", "quarter" or "year"; ``baseline_periods``: complete
    periods before each checked one that form its baseline (at least 3 with a
    value are needed); ``recent_periods``: how many of the last complete periods
    to check; ``alpha``: one-sided significance level in (0, 0.5);
    ``window_days``: activity window of the retention rate; ``as_of``:
    observation day (default: day of the last order).

    One row per alert, the most significant first. Columns: ``metric``
    (retention_rate, aov, purchase_frequency, new_customers,
    returning_revenue_share), ``period``, ``value``, ``baseline`` (mean of the
    baseline periods), ``change`` (value - baseline, in the metric's unit:
    percentage points for rates), ``change_pct`` (change / baseline x 100),
    ``t_statistic``, ``p_value``, ``reason`` (one line). ``attrs["checked"]``
    says how many (metric, period) pairs were tested.
    """
    check_period(period)
    check_positive_int("baseline_periods", baseline_periods, least=3)
    check_positive_int("recent_periods", recent_periods)
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha < 0.5:
        raise DataError(
            "alpha is a significance level", value=alpha, expected="a number in (0, 0.5)"
        )
    check_window_days(window_days, period)
    window = observation(store, as_of, period)
    act = activity(store, window, window_days)
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
            "checked": checked,
            "note": note,
        }
    )
    return frame


def _sampling_error(metric: _Metric, row: pd.Series, baseline: float) -> float:
    """The value's own sampling error, the least spread the test allows."""
    if metric.name == "retention_rate":
        n = float(row["customers_at_start"])
        p = min(max(baseline / 100.0, 0.5 / n), 1 - 0.5 / n)
        return 100.0 * float(np.sqrt(p * (1 - p) / n))
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
    for metric in METRICS:
        values = table[metric.name].to_numpy(dtype="float64")
        for i in range(first_checked, len(table)):
            value = values[i]
            past = values[max(i - baseline_periods, 0) : i]
            past = past[np.isfinite(past)]
            if not np.isfinite(value) or past.size < 3:
                continue
            row = table.iloc[i]
            if metric.name != "new_customers" and row["customers"] == 0:
                continue
            checked += 1
            mean = float(past.mean())
            spread = float(past.std(ddof=1)) * np.sqrt(1 + 1 / past.size)
            error = max(spread, _sampling_error(metric, row, mean))
            if value >= mean:
                continue
            # no spread at all: a drop from a constant is certain, not chance
            t_stat = (value - mean) / error if error > 0 else float("-inf")
            p_value = float(stats.t.cdf(t_stat, df=past.size - 1))
            if p_value >= alpha:
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
                    "t_statistic": t_stat,
                    "p_value": p_value,
                    "reason": _reason(
                        metric,
                        str(row["period"]),
                        value,
                        mean,
                        past.size,
                        period,
                        t_stat,
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
    label: str,
    value: float,
    mean: float,
    n: int,
    period: str,
    t_stat: float,
    p_value: float,
) -> str:
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
    return (
        f"{metric.label} fell to {_fmt(metric, value)} in {label}, down {size}{relative} "
        f"from a baseline of {_fmt(metric, mean)} (mean of the {n} {period}s before); "
        f"t = {t_stat:.1f}, p = {p_value:.2g}"
    )
