"""The fit guard: a fitted model is kept only if what it predicts agrees with the
store's own history.

:func:`check_fit` scores every customer with a fitted repeat-purchase model (and
the spend model) and runs these checks, each a :class:`Check`:

=====================  ==========================================================
check                  passes when
=====================  ==========================================================
``maximum``            the optimiser reached a maximum of the likelihood (inside
                       the parameter space, or at a limit such as "every customer
                       has the same dropout probability"): at most a slope of 1e-3
                       per customer left in the free log-parameters
``tracking``           the repeat purchases the model expects over each customer's
                       own history, summed, are within 30% of the actual total
``customer_purchases`` no customer is expected to buy more often than one purchase
                       per period of the grain allows, and at most 1% of customers
                       more than 3x (+1) their own yearly rate so far, over the
                       next 365 days
``one_time_buyers``    customers without a repeat purchase and silent for over 365
                       days (when they are 1% of customers or more) have a mean
                       P(alive) of 0.5 or less: a model that calls them all alive
                       (BG/NBD) fails here
``store_value``        the predicted value of the next 12 months (no discount) is at
                       most 3x the store's net revenue of the last 12 months (its
                       yearly run rate, for a younger store)
=====================  ==========================================================

The limits are module constants; the checks are what ``retain fit --json`` and the
Models page show.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from retain.models import GammaGamma, TransactionModel
from retain.models.base import DAYS_PER_YEAR, UNIT_DAYS
from retain.store import Store

#: largest slope of the mean log-likelihood per customer (log-parameters) still taken
#: as a maximum
GRADIENT_LIMIT = 1e-3
#: largest relative gap between expected and actual in-sample repeat purchases
TRACKING_TOLERANCE = 0.3
#: a customer's expected yearly purchases may reach this multiple of their own rate (+1)
CUSTOMER_RATE_MULTIPLE = 3.0
#: share of customers allowed above that bound
CUSTOMER_RATE_SHARE = 0.01
#: days of silence after which a one-time buyer should not be called alive
SILENT_DAYS = 365
#: share of customers from which silent one-time buyers are checked
SILENT_SHARE = 0.01
#: the highest mean P(alive) of silent one-time buyers
SILENT_P_ALIVE = 0.5
#: the 12-month value may reach this multiple of the last 12 months' net revenue
VALUE_MULTIPLE = 3.0


@dataclass
class Check:
    """One check of a fit: its ``name``, whether it ``passed``, the measured ``value``
    and the ``limit`` it was held to (None where not a number), and a sentence."""

    name: str
    passed: bool
    value: float | None
    limit: float | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def store_history(store: Store, end: dt.date) -> dict[str, float]:
    """The store's net revenue in the 365 days to ``end`` (``revenue_12m``) and the
    days of history those cover (``days``, at most 365)."""
    first = store.scalar("SELECT min(ordered_at) FROM orders")
    recent = store.con.execute(
        "SELECT coalesce(sum(net_revenue), 0) FROM orders "
        "WHERE ordered_at >= $start AND ordered_at < $stop",
        {"start": recent_start(end), "stop": end + dt.timedelta(days=1)},
    ).fetchall()[0][0]
    return history(float(recent), None if first is None else pd.Timestamp(first).date(), end)


def recent_start(end: dt.date) -> dt.date:
    """The first day of the 365 days to ``end`` whose net revenue the guard weighs."""
    return end - dt.timedelta(days=SILENT_DAYS - 1)


def history(revenue_12m: float, first_day: dt.date | None, end: dt.date) -> dict[str, float]:
    """:func:`store_history`'s figures from the net revenue since :func:`recent_start` and
    the first order's day (None: no orders), wherever they were summed."""
    days = SILENT_DAYS if first_day is None else (end - first_day).days + 1
    return {"revenue_12m": float(revenue_12m), "days": float(min(days, SILENT_DAYS))}


def check_fit(
    model: TransactionModel,
    spend: GammaGamma | None,
    summary: pd.DataFrame,
    history: dict[str, float],
    message: str,
) -> list[Check]:
    """Every check of the module docstring for ``model`` (fitted on ``summary``) and
    ``spend``; ``history`` from :func:`store_history`; ``message`` the optimiser's
    word on the fit (``Model.fit_message_``)."""
    unit_days = UNIT_DAYS[model.unit_ or "D"]
    grain_days = UNIT_DAYS[model.grain_ or "D"]
    scores = model.score(
        summary,
        gamma_gamma=spend,
        horizons=("365D",),
        clv_horizon="12M",
        interval=None,
        next_horizon=None,
    )
    checks = [_maximum(model, message)]

    x = summary["frequency"].to_numpy(dtype=np.float64)
    T = summary["T"].to_numpy(dtype=np.float64)
    times, count = np.unique(T, return_counts=True)
    expected = float(count @ model.expected_repeat_purchases(times))
    actual = float(x.sum())
    gap = abs(expected - actual) / actual if actual > 0 else 0.0
    checks.append(
        Check(
            "tracking",
            gap <= TRACKING_TOLERANCE,
            gap,
            TRACKING_TOLERANCE,
            f"the model expects {expected:,.0f} repeat purchases over the customers' own "
            f"histories against {actual:,.0f} made ({gap:.0%} apart; at most "
            f"{TRACKING_TOLERANCE:.0%})",
        )
    )

    purchases = scores["expected_purchases_365d"].to_numpy()
    periods_per_year = SILENT_DAYS / grain_days
    own_rate = (x + 1.0) / (T + grain_days / unit_days) * (DAYS_PER_YEAR / unit_days)
    over = purchases > CUSTOMER_RATE_MULTIPLE * own_rate + 1.0
    impossible = int(np.sum(purchases > periods_per_year + 1.0))
    share = float(over.mean()) if over.size else 0.0
    top = int(np.argmax(purchases)) if purchases.size else 0
    checks.append(
        Check(
            "customer_purchases",
            impossible == 0 and share <= CUSTOMER_RATE_SHARE,
            share,
            CUSTOMER_RATE_SHARE,
            f"{int(over.sum()):,} customers ({share:.1%}) are expected to buy over "
            f"{CUSTOMER_RATE_MULTIPLE:g}x their own yearly rate in the next 365 days "
            f"(at most {CUSTOMER_RATE_SHARE:.0%}); {impossible:,} more often than once a "
            f"{'day' if grain_days == 1 else 'week'}; the most: "
            f"{purchases[top] if purchases.size else 0:,.1f} purchases for customer "
            f"{summary.index[top] if purchases.size else '-'}",
        )
    )

    silent = (x == 0) & (T * unit_days > SILENT_DAYS)
    n_silent = int(silent.sum())
    if n_silent and n_silent >= SILENT_SHARE * x.size:
        mean = float(scores["p_alive"].to_numpy()[silent].mean())
        checks.append(
            Check(
                "one_time_buyers",
                mean <= SILENT_P_ALIVE,
                mean,
                SILENT_P_ALIVE,
                f"{n_silent:,} customers bought once and not in over {SILENT_DAYS} days; "
                f"the model gives them a mean P(alive) of {mean:.2f} (at most "
                f"{SILENT_P_ALIVE:g})"
                + (
                    "; BG/NBD lets a customer leave only after a repeat purchase, so it "
                    "calls every one-time buyer alive"
                    if model.name == "bgnbd"
                    else ""
                ),
            )
        )

    if spend is not None:
        value = float(scores["clv"].sum())
        run_rate = history["revenue_12m"] * SILENT_DAYS / max(history["days"], 1.0)
        if run_rate > 0:
            ratio = value / run_rate
            checks.append(
                Check(
                    "store_value",
                    bool(np.isfinite(ratio)) and ratio <= VALUE_MULTIPLE,
                    ratio,
                    VALUE_MULTIPLE,
                    f"predicted value of the next 12 months {value:,.0f} (undiscounted) is "
                    f"{ratio:.2f}x the net revenue of the last 12 months ({run_rate:,.0f}; at most "
                    f"{VALUE_MULTIPLE:g}x)",
                )
            )
    return checks


def _maximum(model: TransactionModel, message: str) -> Check:
    slope = model.max_gradient_
    if model.converged_:
        return Check("maximum", True, slope, GRADIENT_LIMIT, "the optimiser converged")
    if not np.isfinite(slope) or slope > GRADIENT_LIMIT:
        return Check(
            "maximum",
            False,
            slope if np.isfinite(slope) else None,
            GRADIENT_LIMIT,
            f"the optimiser did not reach a maximum: {message}",
        )
    if "bound" in message:
        why = (
            f"a limit of the model: {message} (a real maximum where the data show no "
            "difference between customers in that respect)"
        )
    else:
        why = f"close to a maximum ({message}; at most {GRADIENT_LIMIT:g} per customer)"
    return Check(
        "maximum", True, slope, GRADIENT_LIMIT, f"{why}; the predictions are checked below"
    )


def failed(checks: list[Check]) -> list[Check]:
    """The checks that did not pass."""
    return [c for c in checks if not c.passed]
