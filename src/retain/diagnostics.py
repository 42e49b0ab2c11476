"""What a fitted repeat-purchase model says about the store it was fitted on, for charts.

- :func:`tracking`: actual and predicted cumulative repeat purchases week by week
  over the store's whole history, the "tracking plot" of Fader, Hardie & Lee
  (2005). The prediction sums, over the customers, the expected repeat purchases
  of a new customer (:meth:`~retain.models.base.TransactionModel.expected_repeat_purchases`)
  at each customer's age: customers who first bought in the same period share
  one age, so the cost grows with the number of days and weeks, not customers.
- :func:`p_alive_matrix`: P(alive) by number of repeat purchases and time since
  the last purchase, for a customer first seen ``T`` ago.

Out-of-sample checks are in :mod:`retain.validate`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
import pandas as pd

from retain.errors import StoreError
from retain.models import TransactionModel
from retain.models.base import UNIT_DAYS
from retain.store import Store

GRAINS = {"D": "day", "W": "week"}

# Per grain period (a day, or a week from Monday) up to the last day: customers who
# first bought then, and repeat purchases (periods with a purchase after a customer's first).
TRACKING_SQL = """
WITH periods AS (
    SELECT DISTINCT customer_id, CAST(date_trunc($grain, ordered_at) AS DATE) AS period
    FROM orders
    WHERE ordered_at < $end_exclusive
),
firsts AS (
    SELECT customer_id, min(period) AS first FROM periods GROUP BY customer_id
)
SELECT
    p.period,
    count(*) FILTER (WHERE p.period = f.first)  AS new_customers,
    count(*) FILTER (WHERE p.period > f.first)  AS repeat_purchases
FROM periods AS p JOIN firsts AS f USING (customer_id)
GROUP BY p.period
ORDER BY p.period
"""


def tracking(store: Store, model: TransactionModel, *, end: dt.date | None = None) -> pd.DataFrame:
    """Actual vs predicted cumulative repeat purchases at the end of each week.

    Purchases are merged per period of the model's grain (one a day, or a week) as
    the model counts them. Week 1 starts on the day (grain W: the week) of the
    first purchase in the store; the last week ends on ``end`` (default: the last
    order's day). A customer's age at a week's end is the time since their first
    purchase; the prediction is the sum over customers of
    ``model.expected_repeat_purchases(age)``, including customers who first bought
    after the fit's observation end (so the curve there is a forecast).

    Columns: ``week`` (1, 2, ...), ``date`` (last day of the week), ``actual`` and
    ``predicted`` (repeat purchases that week), ``actual_cumulative``,
    ``predicted_cumulative``. ``attrs``: ``start``, ``end``, ``grain``,
    ``customers``, ``repeat_purchases``.
    """
    grain = model.grain_ or "D"
    unit_days = UNIT_DAYS[model.unit_ or "D"]
    if end is None:
        last = store.scalar("SELECT max(ordered_at) FROM orders")
        if last is None:
            raise StoreError(f"the store {store.path} holds no orders yet")
        end = pd.Timestamp(last).date()
    per_period = store.con.execute(
        TRACKING_SQL,
        {"grain": GRAINS[grain], "end_exclusive": end + dt.timedelta(days=1)},
    ).df()
    if per_period.empty:
        raise StoreError(f"the store {store.path} holds no orders on or before {end}")
    periods = pd.to_datetime(per_period["period"]).to_numpy(dtype="datetime64[D]")
    start = periods[0]
    day = (periods - start).astype(np.int64)  # days from the start
    span = int((np.datetime64(end, "D") - start).astype(np.int64))
    weeks = span // 7 + 1
    week_end = np.minimum(7 * np.arange(1, weeks + 1) - 1, span)
    # the model sees a customer as of the start of the grain period holding the week's end
    observed = week_end - week_end % 7 if grain == "W" else week_end

    repeat = per_period["repeat_purchases"].to_numpy(dtype=np.float64)
    actual = np.bincount(day // 7, weights=repeat, minlength=weeks)[:weeks]

    new = per_period["new_customers"].to_numpy(dtype=np.float64)
    cohort_day, cohort_size = day[new > 0], new[new > 0]
    age = observed[:, None] - cohort_day[None, :]  # weeks x cohorts, days
    ages, position = np.unique(np.maximum(age, 0), return_inverse=True)
    expected = model.expected_repeat_purchases(ages / unit_days)[position.reshape(age.shape)]
    predicted_cumulative = np.where(age >= 0, expected, 0.0) @ cohort_size

    frame = pd.DataFrame(
        {
            "week": np.arange(1, weeks + 1),
            "date": (start + week_end.astype("timedelta64[D]")).astype("datetime64[s]"),
            "actual": actual,
            "predicted": np.diff(predicted_cumulative, prepend=0.0),
            "actual_cumulative": np.cumsum(actual),
            "predicted_cumulative": predicted_cumulative,
        }
    )
    frame["date"] = frame["date"].dt.date
    frame.attrs.update(
        {
            "start": pd.Timestamp(start).date().isoformat(),
            "end": end.isoformat(),
            "grain": grain,
            "customers": int(cohort_size.sum()),
            "repeat_purchases": int(repeat.sum()),
        }
    )
    return frame


def p_alive_matrix(
    model: TransactionModel,
    *,
    T: float,
    frequencies: Sequence[int],
    since_last: Sequence[float],
) -> pd.DataFrame:
    """P(alive) of a customer first seen ``T`` ago, by repeat purchases and time since
    the last purchase.

    ``T`` and ``since_last`` are in the model's time unit. One row per number of
    repeat purchases in ``frequencies``, one column per time since the last purchase
    in ``since_last`` (recency = ``T`` - since last); a cell is missing where no
    customer can be: a time since the last purchase beyond ``T``, or, for a customer
    with no repeat purchase, any other time than ``T`` (their last purchase is the first).
    """
    x = np.asarray(frequencies, dtype=np.float64)
    since = np.asarray(since_last, dtype=np.float64)
    grid_x, grid_since = np.meshgrid(x, since, indexing="ij")
    recency = T - grid_since
    possible = (recency >= 0) & ((grid_x > 0) | np.isclose(grid_since, T))
    customers = pd.DataFrame(
        {
            "frequency": grid_x.ravel(),
            "recency": np.where(possible, np.maximum(recency, 0.0), 0.0).ravel(),
            "T": np.full(grid_x.size, float(T)),
        }
    )
    customers.attrs.update({"unit": model.unit_, "grain": model.grain_})
    values = model.p_alive(customers).to_numpy().reshape(grid_x.shape)
    return pd.DataFrame(
        np.where(possible, values, np.nan),
        index=pd.Index([int(v) for v in frequencies], name="frequency"),
        columns=pd.Index(list(since), name="since_last"),
    )
