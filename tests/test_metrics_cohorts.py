"""Cohort tables: activity by months since the first order, and the cohort CLV curve."""

from __future__ import annotations

import numpy as np
import pytest

from metrics_helpers import store_with
from retain.errors import DataError
from retain.metrics import COHORT_COLUMNS, cohort_matrix, cohorts
from retain.store import Store


@pytest.fixture(scope="module")
def store() -> Store:
    # January cohort: a, b; February cohort: c
    return store_with(
        [
            ("a", "2024-01-03", 10),
            ("a", "2024-01-20", 5),
            ("a", "2024-03-02", 30),
            ("b", "2024-01-31 23:59:59", 20),
            ("b", "2024-02-01", 40),
            ("c", "2024-02-10", 100),
            ("c", "2024-03-15", 50),
        ]
    )


def test_cohort_counts_shares_and_curve_by_hand(store: Store) -> None:
    frame = cohorts(store, margin=0.5, as_of="2024-03-31")
    assert list(frame.columns) == COHORT_COLUMNS
    jan = frame[frame["cohort"] == "2024-01"].set_index("age")
    feb = frame[frame["cohort"] == "2024-02"].set_index("age")
    assert list(jan.index) == [0, 1, 2] and list(feb.index) == [0, 1]
    assert jan["cohort_customers"].unique().tolist() == [2]
    assert jan["active_customers"].tolist() == [2, 1, 1]
    assert jan["active_share"].tolist() == [100, 50, 50]
    assert jan["orders"].tolist() == [3, 1, 1]
    assert jan["period"].tolist() == ["2024-01", "2024-02", "2024-03"]
    # per customer: 35 / 2, then + 40 / 2, then + 30 / 2
    assert jan["cumulative_net_revenue_per_customer"].tolist() == [17.5, 37.5, 52.5]
    assert jan["cumulative_clv"].tolist() == [8.75, 18.75, 26.25]
    assert feb["active_share"].tolist() == [100, 100]
    assert feb["cumulative_net_revenue_per_customer"].tolist() == [100, 150]


def test_cohort_cells_with_nobody_active_are_zero() -> None:
    store = store_with([("a", "2024-01-05", 10), ("a", "2024-03-05", 10), ("b", "2024-01-09", 1)])
    jan = cohorts(store, as_of="2024-03-31").set_index("age")
    assert jan["active_customers"].tolist() == [2, 0, 1]
    assert jan["cumulative_net_revenue_per_customer"].tolist() == [5.5, 5.5, 10.5]


def test_quarter_cohorts_and_unfinished_period(store: Store) -> None:
    frame = cohorts(store, "quarter", as_of="2024-03-15")
    assert frame["cohort"].tolist() == ["2024Q1"]
    row = frame.iloc[0]
    assert row["cohort_customers"] == 3 and row["orders"] == 7
    assert not row["complete"]


def test_cohort_matrix_is_the_triangle(store: Store) -> None:
    frame = cohorts(store, as_of="2024-03-31")
    matrix = cohort_matrix(frame)
    assert list(matrix.columns) == ["customers", "0", "1", "2"]
    assert matrix.loc["2024-01"].tolist() == [2, 100, 50, 50]
    assert matrix.loc["2024-02", "customers"] == 1
    assert np.isnan(matrix.loc["2024-02", "2"])  # not reached yet
    with pytest.raises(DataError, match="unknown cohort value"):
        cohort_matrix(frame, "churn")


def test_bad_margin(store: Store) -> None:
    with pytest.raises(DataError, match="margin"):
        cohorts(store, margin=1.5)
