"""Cohort tables: customers grouped by the period of their first order.

For each cohort and each age (periods since acquisition, 0 = the acquisition
period): how many of the cohort's customers ordered in that period (count and
percent of the cohort) and the cohort's cumulative net revenue per customer to
that age (the cohort CLV curve). By definition every customer orders at age 0,
so ``active_share`` is 100 there.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from retain.errors import DataError
from retain.metrics._activity import CohortCells, cohort_cells
from retain.metrics._common import AsOf, observation, period_labels, resolve_margin
from retain.store import Store

COHORT_COLUMNS = [
    "cohort",
    "cohort_start",
    "age",
    "period",
    "complete",
    "cohort_customers",
    "active_customers",
    "active_share",
    "orders",
    "net_revenue",
    "cumulative_net_revenue_per_customer",
    "cumulative_clv",
]

MATRIX_VALUES = (
    "active_share",
    "active_customers",
    "net_revenue",
    "cumulative_net_revenue_per_customer",
    "cumulative_clv",
)


def cohorts(
    store: Store, period: str = "month", *, margin: float | None = None, as_of: AsOf = None
) -> pd.DataFrame:
    """One row per cohort and age, every age from 0 to the observation day.

    ``period``: "month", "quarter" or "year" (calendar, UTC) for both the cohort
    and the age; ``margin``: fraction of net revenue kept, in (0, 1]; ``as_of``:
    observation day (default: the store's ``as_of`` setting, else
    the day of the last order).

    Columns: ``cohort`` (label of the first-order period), ``cohort_start`` (date),
    ``age`` (periods since acquisition), ``period`` (the calendar period at that
    age), ``complete`` (that period ended by ``as_of``), ``cohort_customers``,
    ``active_customers`` (ordered in that period), ``active_share`` (percent of the
    cohort), ``orders``, ``net_revenue`` (reporting currency),
    ``cumulative_net_revenue_per_customer`` (net revenue from age 0 to this age /
    cohort customers), ``cumulative_clv`` (the same times ``margin``).
    """
    margin = resolve_margin(store, margin)
    window = observation(store, as_of, period)
    return cohort_table(cohort_cells(store, window), margin)


def cohort_table(act: CohortCells, margin: float = 1.0) -> pd.DataFrame:
    """The cohort table from the cells per cohort and period."""
    cells = act.cells
    sizes = cells.loc[cells["cohort"] == cells["idx"], ["cohort", "customers"]].rename(
        columns={"customers": "cohort_customers"}
    )
    # every (cohort, age) up to the last period, with zeros where nobody ordered
    firsts = sizes["cohort"].to_numpy()
    lengths = act.last - firsts + 1
    cohort_k = np.repeat(firsts, lengths)
    ages = np.arange(cohort_k.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    grid = pd.DataFrame({"cohort": cohort_k, "idx": cohort_k + ages, "age": ages})
    grid = grid.merge(sizes, on="cohort").merge(
        cells[["cohort", "idx", "customers", "orders", "net_revenue"]],
        on=["cohort", "idx"],
        how="left",
    )
    grid[["customers", "orders"]] = grid[["customers", "orders"]].fillna(0).astype("int64")
    grid["net_revenue"] = grid["net_revenue"].fillna(0.0).astype("float64")
    grid = grid.sort_values(["cohort", "age"]).reset_index(drop=True)
    cumulative = grid.groupby("cohort")["net_revenue"].cumsum() / grid["cohort_customers"]
    cohort_start = act.period_starts(grid["cohort"])
    frame = pd.DataFrame(
        {
            "cohort": period_labels(cohort_start, act.window.period),
            "cohort_start": cohort_start,
            "age": grid["age"].astype("int64"),
            "period": period_labels(act.period_starts(grid["idx"]), act.window.period),
            "complete": act.complete(grid["idx"]),
            "cohort_customers": grid["cohort_customers"].astype("int64"),
            "active_customers": grid["customers"],
            "active_share": 100.0 * (grid["customers"] / grid["cohort_customers"]),
            "orders": grid["orders"],
            "net_revenue": grid["net_revenue"],
            "cumulative_net_revenue_per_customer": cumulative,
            "cumulative_clv": cumulative * margin,
        }
    )
    frame.attrs.update(
        {"period": act.window.period, "as_of": act.window.as_of.isoformat(), "margin": margin}
    )
    return frame


def cohort_matrix(frame: pd.DataFrame, value: str = "active_share") -> pd.DataFrame:
    """The classic triangle: one row per cohort, one column per age, cells ``value``.

    ``frame`` is the result of :func:`cohorts`; ``value`` is one of
    :data:`MATRIX_VALUES`. Cells past the observation day are empty. A column
    ``customers`` (cohort size) comes first.
    """
    if value not in MATRIX_VALUES:
        raise DataError("unknown cohort value", value=value, expected=", ".join(MATRIX_VALUES))
    matrix = frame.pivot(index="cohort", columns="age", values=value)
    sizes = frame.groupby("cohort")["cohort_customers"].first()
    matrix.insert(0, "customers", sizes)
    matrix.columns = [str(c) for c in matrix.columns]
    return matrix
