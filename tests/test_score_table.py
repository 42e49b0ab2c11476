"""``retain score`` writes what the public predictions say, row for row.

``score_store`` carries the customers by their row in the summary and writes the
model's arrays and the segment columns side by side; these tests rebuild the table
the plain way (``summarize``, ``TransactionModel.score``, ``segment_scores``, joined
on customer_id in pandas) and compare every row and value.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import retain.scoring as scoring
import retain.segments.assign as assign
from retain.features import summarize
from retain.scoring import SCORE_COLUMNS, load_fit, load_score_basis, score_store
from retain.segments import SEGMENT_SCORE_COLUMNS, segment_scores
from retain.store import Store
from store_helpers import scored_copy


@pytest.fixture(scope="module")
def scored_db(cdnow_sample_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return scored_copy(cdnow_sample_db, tmp_path_factory.mktemp("table") / "scored.duckdb")


def written(store: Store) -> pd.DataFrame:
    """customer_scores in the order it is stored."""
    return store.con.execute("SELECT * FROM customer_scores").df()


def plain_table(store: Store) -> pd.DataFrame:
    """customer_scores as the public predictions give it, by customer_id."""
    model, spend, row = load_fit(store)
    basis = load_score_basis(store)
    end = dt.date.fromisoformat(basis.as_of)
    summary = summarize(store, observation_end=end, unit=row["unit"], grain=row["grain"])
    scores = model.score(
        summary,
        gamma_gamma=spend,
        horizons=("30D", "90D", "365D"),
        clv_horizon="12M",
        discount_rate=basis.discount_rate,
        margin=basis.margin,
        interval=basis.interval,
        confidence=basis.interval,
        next_horizon="365D",
    )
    unit_days = 7.0 if row["unit"] == "W" else 1.0

    def day(time: str, within: str) -> pd.Series:
        days = np.maximum(np.ceil(scores[time] * unit_days - 1e-9), 1.0)
        dates = pd.Timestamp(end) + pd.to_timedelta(days, unit="D")
        return dates.where(scores[within]).dt.date

    table = pd.DataFrame(
        {
            "p_alive": scores["p_alive"],
            "expected_purchases_30d": scores["expected_purchases_30d"],
            "expected_purchases_90d": scores["expected_purchases_90d"],
            "expected_purchases_365d": scores["expected_purchases_365d"],
            "purchases_365d_low": scores["purchases_365d_low"],
            "purchases_365d_high": scores["purchases_365d_high"],
            "expected_spend": scores["expected_spend"],
            "clv_12m": scores["clv"],
            "clv_if_retained": scores["clv_if_alive"],
            "clv_low": scores["clv_low"],
            "clv_high": scores["clv_high"],
            "clv_mean_low": scores["clv_mean_low"],
            "clv_mean_high": scores["clv_mean_high"],
            "next_purchase_date": day("next_purchase", "next_purchase_within"),
            "next_purchase_window_start": day("window_start", "window_start_within"),
            "next_purchase_window_end": day("window_end", "window_end_within"),
        }
    )
    segments = segment_scores(
        store,
        as_of=end,
        scores=pd.DataFrame(
            {"p_alive": scores["p_alive"], "clv_if_retained": scores["clv_if_alive"]}
        ),
    )
    table = table.join(segments[SEGMENT_SCORE_COLUMNS])
    table["model"], table["fit_id"], table["as_of"] = row["model"], int(row["fit_id"]), end
    return table.sort_index()


def assert_same_rows(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert list(got["customer_id"]) == sorted(got["customer_id"])  # stored by customer_id
    got = got.set_index("customer_id")
    assert list(got.index) == list(expected.index)
    for name in [*SCORE_COLUMNS[1:], *SEGMENT_SCORE_COLUMNS]:
        mine, theirs = got[name], expected[name]
        if pd.api.types.is_float_dtype(mine):
            # DuckDB adds a customer's amounts in no fixed order, so the summaries differ
            # in their last digit from one query to the next; the band of the mean CLV
            # takes forward differences (step 1e-5) and carries that about 1e5-fold
            rtol = 1e-9 if name.startswith("clv_mean") else 1e-12
            np.testing.assert_allclose(
                mine.to_numpy(), theirs.to_numpy(dtype="float64"), rtol=rtol, err_msg=name
            )
        else:
            dates = name == "as_of" or name.startswith("next_purchase")
            assert plain(mine, dates) == plain(theirs, dates), name


def plain(values: pd.Series, dates: bool) -> list[Any]:
    """The values as Python objects, None where missing, dates as dates."""
    return [None if pd.isna(v) else pd.Timestamp(v).date() if dates else v for v in values.tolist()]


def test_the_written_scores_are_the_public_predictions(scored_db: Path, tmp_path: Path) -> None:
    path = tmp_path / "copy.duckdb"
    shutil.copy(scored_db, path)
    with Store(path) as store:
        table = written(store)
        assert list(table.columns) == [*SCORE_COLUMNS, *SEGMENT_SCORE_COLUMNS]
        assert table["clv_mean_low"].notna().all() and table["next_purchase_date"].isna().any()
        assert_same_rows(table, plain_table(store))


def test_segments_in_another_order_are_joined_by_customer(
    scored_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "copy.duckdb"
    shutil.copy(scored_db, path)
    with Store(path) as store:
        before = written(store)
        real = assign.segment_score_table

        def reversed_rows(*args: Any, **kwargs: Any) -> tuple[pa.Table, Any]:
            table, boundaries = real(*args, **kwargs)
            return table.take(pa.array(np.arange(table.num_rows)[::-1])), boundaries

        monkeypatch.setattr(assign, "segment_score_table", reversed_rows)
        score_store(store)
        after = written(store)
        pd.testing.assert_frame_equal(
            after.drop(columns=["clv_mean_low", "clv_mean_high"]),
            before.drop(columns=["clv_mean_low", "clv_mean_high"]),
            rtol=1e-12,
        )
        pd.testing.assert_frame_equal(
            after[["clv_mean_low", "clv_mean_high"]],
            before[["clv_mean_low", "clv_mean_high"]],
            rtol=1e-9,
        )


def test_segment_rows_come_back_by_customer_whether_or_not_all_were_scored() -> None:
    result = pa.table({"_row": [0, 1, 2], "customer_id": ["a", "b", "c"], "r_score": [1, 2, 3]})
    assert assign._in_order(result, 3).to_pydict() == {
        "customer_id": ["a", "b", "c"],
        "r_score": [1, 2, 3],
    }
    # a customer the model did not score (no row), or a row missing: sorted by customer_id
    partial = pa.table(
        {"_row": [None, 0, 1], "customer_id": ["c", "a", "b"], "r_score": [3, 1, 2]},
        schema=pa.schema(
            [("_row", pa.int64()), ("customer_id", pa.string()), ("r_score", pa.int64())]
        ),
    )
    assert assign._in_order(partial, 3)["customer_id"].to_pylist() == ["a", "b", "c"]
    assert assign._in_order(result.slice(1), 3)["customer_id"].to_pylist() == ["b", "c"]


def test_the_segment_columns_are_written_beside_the_scores_by_row(
    scored_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The segment rows come in the scores' order: no join on customer_id is needed."""
    path = tmp_path / "copy.duckdb"
    shutil.copy(scored_db, path)
    found: list[bool] = []
    real = scoring._same_ids

    def same_ids(*args: Any) -> bool:
        found.append(real(*args))
        return found[-1]

    monkeypatch.setattr(scoring, "_same_ids", same_ids)
    with Store(path) as store:
        score_store(store)
    assert found == [True]


def test_a_full_scoring_bounds_duckdbs_memory_and_restores_the_limit(
    scored_db: Path, tmp_path: Path
):
    """The segments' queries and the write spill beyond SCORE_MEMORY instead of adding
    to the model's arrays; the store's own limit is back afterwards (DuckDB's default,
    or a lower one set by hand, kept throughout), and the table is the same."""
    shown = "SELECT current_setting('memory_limit')"
    path = tmp_path / "limit.duckdb"
    shutil.copy(scored_db, path)
    seen: list[str] = []
    with Store(path) as store:
        before = written(store)
        store.con.execute("SET memory_limit = '64GB'")
        big = store.scalar(shown)
        original = scoring._write_basis

        def spy(con: Any, *args: Any) -> None:
            seen.append(str(con.execute(shown).fetchall()[0][0]))
            original(con, *args)

        scoring._write_basis = spy
        try:
            score_store(store)
            assert store.scalar(shown) == big
            store.con.execute("SET memory_limit = '500MB'")
            low = store.scalar(shown)
            score_store(store)
            assert store.scalar(shown) == low
        finally:
            scoring._write_basis = original
        after = written(store)
    store_limit = Store(":memory:")
    store_limit.con.execute(f"SET memory_limit = '{scoring.SCORE_MEMORY}'")
    assert seen == [store_limit.scalar(shown), low]
    store_limit.close()
    pd.testing.assert_frame_equal(before, after, check_exact=False, rtol=1e-9)
