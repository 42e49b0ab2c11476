"""What rescoring a few customers costs, and that the short way gives the long way's rows.

``retain.scoring.rescore_customers`` runs after every batch of ``POST /api/orders``: its
cost is a fixed number of statements, each over the batch's customers only, and its rows
are the ones ``retain score`` writes for those customers with the same fit.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from retain.scoring import rescore_customers, score_store
from retain.segments.assign import SEGMENT_SCORE_COLUMNS
from retain.store import Store
from store_helpers import scored_copy

COMPARED = [
    "p_alive",
    "expected_purchases_365d",
    "clv_12m",
    "clv_if_retained",
    *SEGMENT_SCORE_COLUMNS,
]


@pytest.fixture(scope="module")
def scored_db(cdnow_sample_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return scored_copy(cdnow_sample_db, tmp_path_factory.mktemp("cost") / "scored.duckdb")


@pytest.fixture
def store(scored_db: Path, tmp_path: Path) -> Any:
    path = tmp_path / "copy.duckdb"
    shutil.copy(scored_db, path)
    with Store(path) as opened:
        yield opened


class Counting:
    """A connection that counts the statements run through it (``execute`` and ``sql``)."""

    def __init__(self, con: Any) -> None:
        self._con = con
        self.statements: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)

    def execute(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        self.statements.append(sql)
        return self._con.execute(sql, *args, **kwargs)

    def sql(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        self.statements.append(sql)
        return self._con.sql(sql, *args, **kwargs)


def some_customers(store: Store, n: int) -> list[str]:
    """``n`` customers spread over every segment and risk level."""
    frame = store.query(
        "SELECT customer_id FROM customer_scores "
        "ORDER BY row_number() OVER (PARTITION BY segment, churn_risk ORDER BY customer_id), "
        "customer_id LIMIT ?",
        [n],
    )
    return list(frame["customer_id"])


def rows(store: Store, ids: list[str]) -> pd.DataFrame:
    return store.query(
        f"SELECT customer_id, {', '.join(COMPARED)} FROM customer_scores "
        "WHERE customer_id IN (SELECT unnest(?)) ORDER BY customer_id",
        [ids],
    ).set_index("customer_id")


def test_rescored_rows_are_the_full_scorings_rows(store: Store) -> None:
    """With no new order, rescoring 40 customers of every segment and risk level writes
    back the rows ``retain score`` wrote: RFM scores, segment, churn risk and its reason
    exactly, the model's numbers and value at stake to rounding (the model's vectorised
    arithmetic over 40 rows and over every row can differ in the last bit)."""
    ids = some_customers(store, 40)
    assert len(set(store.query("SELECT segment FROM customer_scores")["segment"])) > 3
    full = rows(store, ids)
    assert full["segment"].nunique() > 3 and full["churn_risk"].nunique() > 2
    report, measured = rescore_customers(store, ids)
    assert report.customers == len(ids)
    again = rows(store, ids)
    pd.testing.assert_frame_equal(again, full, check_exact=False, rtol=1e-12, atol=0)
    # the rows handed back to the service are the same values
    assert measured is not None
    for column in ("segment", "rfm", "churn_risk", "churn_reason"):
        assert list(measured.loc[ids, column]) == list(full.loc[ids, column])
    np.testing.assert_allclose(
        measured.loc[ids, "value_at_stake"].to_numpy(),
        full.loc[ids, "value_at_stake"].to_numpy(),
        rtol=1e-12,
        atol=0,
    )


def test_a_rescoring_runs_a_few_statements_whatever_the_batch(store: Store) -> None:
    """One customer or twenty: the same few statements (reading the basis, the orders'
    summaries, the segments in one query, the write), with no catalog look-up per table."""
    counted = Counting(store.con)
    store.con = counted
    rescore_customers(store, some_customers(store, 1))  # the first reads and parses the fit
    counts = []
    for n in (1, 20):
        ids = some_customers(store, n)
        counted.statements.clear()
        rescore_customers(store, ids)
        counts.append(len(counted.statements))
    assert counts[0] == counts[1]
    # before: 45, of which 9 catalog look-ups and the segments' 20 set-up statements
    assert counts[0] <= 13, counted.statements
    catalog = [s for s in counted.statements if "information_schema" in s]
    assert len(catalog) <= 2, catalog  # the basis's, and the settings' (retain.config)


def test_a_new_full_scoring_is_what_the_next_rescoring_uses(store: Store) -> None:
    """The fit and settings are read once per full scoring, not once per process: after
    ``retain score`` with another margin, a rescoring computes with the new one."""
    ids = some_customers(store, 5)
    rescore_customers(store, ids)
    before = rows(store, ids)["clv_12m"].to_numpy()
    time.sleep(0.01)  # a scoring at another moment
    score_store(store, margin=0.5)
    rescore_customers(store, ids)
    after = rows(store, ids)["clv_12m"].to_numpy()
    np.testing.assert_allclose(after, before * 0.5, rtol=1e-12)
