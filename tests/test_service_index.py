"""The customer index: its scores and contact columns set beside the segments when they
hold the same customers in the same order, joined on customer_id otherwise; the same
table either way."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recommend_helpers import generated_store
from retain.segments import customer_segments
from retain.service import data
from retain.store import Store
from store_helpers import insert_frames, scored_copy


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("index")
    # customers who differ in how often they buy and how soon they leave: a maximum
    # of the likelihood inside the parameters, on any machine (the seeded shop's
    # customers are alike, and its maximum lies at a limit the optimiser nears more or
    # less closely by the machine's rounding)
    with generated_store(folder / "shop.duckdb", n_customers=300, seed=5):
        pass
    return scored_copy(folder / "shop.duckdb", folder / "scored.duckdb")


def joined_index(store: Store) -> pd.DataFrame:
    """The index by its definition: the segments' rows, each joined on customer_id with
    its other columns of customer_scores and its contact columns of customers."""
    segments = customer_segments(store)
    columns = [c for c in data.table_columns(store, "customer_scores") if c != "customer_id"]
    columns = [c for c in columns if c not in segments]
    scores = store.query(f"SELECT customer_id, {', '.join(columns)} FROM customer_scores")
    people = store.query(f"SELECT customer_id, {', '.join(data.CONTACT_COLUMNS)} FROM customers")
    frame = segments.join(scores.set_index("customer_id"), how="left")
    frame = frame.join(people.set_index("customer_id"), how="left")
    # text as the index keeps every text column (.df() gives the customers' as objects),
    # and a flag with gaps as pandas' nullable one (the join leaves objects when all are)
    frame = frame.astype({c: "str" for c in ("email", "name", "acquisition_channel")})
    if frame["accepts_marketing"].dtype == object:
        frame["accepts_marketing"] = frame["accepts_marketing"].astype("boolean")
    return frame


@pytest.mark.parametrize("customers", ["every one", "shuffled", "one more", "one fewer", "none"])
@pytest.mark.parametrize("scores", ["every one", "one fewer"])
def test_the_index_is_the_joined_one(
    scored: Path, tmp_path: Path, customers: str, scores: str
) -> None:
    path = tmp_path / "store.duckdb"
    shutil.copy(scored, path)
    with Store(path) as store:
        store.con.execute("DELETE FROM customers")
        held = store.query("SELECT DISTINCT customer_id FROM orders ORDER BY customer_id")
        ids: list[str] = held["customer_id"].astype(str).tolist()
        if customers == "shuffled":
            ids = list(np.random.default_rng(1).permutation(ids))
        elif customers == "one more":
            ids = [*ids, "no-orders-yet"]
        elif customers == "one fewer":
            ids = ids[1:]
        elif customers == "none":
            ids = []
        if ids:
            people = pd.DataFrame(
                {
                    "customer_id": ids,
                    "email": [f"{c}@shop.example" for c in ids],
                    "name": [None if i % 3 else f"Name {i}" for i in range(len(ids))],
                }
            )
            insert_frames(store, {"customers": people})
        if scores == "one fewer":
            store.con.execute(
                "DELETE FROM customer_scores WHERE customer_id = "
                "(SELECT max(customer_id) FROM customer_scores)"
            )
        index = data.build_customer_index(store)
        expected = joined_index(store)
        assert_index_is(index.frame, expected)
        assert index.positions == data.index_positions(index.frame)


def assert_index_is(frame: pd.DataFrame, expected: pd.DataFrame) -> None:
    """``frame`` holds ``expected``'s values, its few-valued text columns as categoricals
    (:data:`retain.service.data.CATEGORY_COLUMNS`) and every other column as it is."""
    texts = [c for c in data.CATEGORY_COLUMNS if c in frame]
    assert {"segment", "action", "churn_reason"} <= set(texts)
    for name in texts:
        assert isinstance(frame[name].dtype, pd.CategoricalDtype), name
    pd.testing.assert_frame_equal(frame.astype({c: "str" for c in texts}), expected)


def test_folding_rescored_rows_keeps_texts_new_to_a_column(scored: Path) -> None:
    """Folded rows with a churn reason, action and segment the index has not held yet keep
    them: the folded table is the old one's rows, read as text, with the fresh rows in place
    of the old and new customers at the end."""
    with Store(scored, read_only=True) as store:
        index = data.build_customer_index(store)
    texts = [c for c in data.CATEGORY_COLUMNS if c in index.frame]
    old = index.frame.astype({c: "str" for c in texts})
    changed = old.iloc[3].copy()
    changed["churn_reason"] = "a reason no customer had before"
    changed["orders"] = int(changed["orders"]) + 1
    new = old.iloc[5].copy()
    new["action"], new["segment"], new["churn_reason"] = "Call them", "Brand new", None
    fresh = {str(old.index[3]): changed, "someone-new": new}

    folded = data.fold_fresh(index, fresh)

    rows = pd.DataFrame(list(fresh.values()), index=pd.Index(list(fresh), name="customer_id"))
    rows = rows.reindex(columns=old.columns).astype(old.dtypes.to_dict())
    expected = pd.concat([old[~old.index.isin(rows.index)], rows])
    assert_index_is(folded.frame, expected)
    assert folded.positions == data.index_positions(folded.frame)
    assert folded.row(folded.positions["someone-new"])["churn_reason"] is None
    assert folded.row(folded.positions["someone-new"])["segment"] == "Brand new"
    assert (
        folded.row(folded.positions[str(old.index[3])])["churn_reason"] == changed["churn_reason"]
    )
    for name in texts:  # no category left that no customer holds
        values = folded.frame[name]
        assert set(values.cat.categories) == set(values.dropna().unique())


@pytest.mark.parametrize(
    "texts",
    [["b", None, "a", "b", "Ünï", ""], [], [None, None], ["x"] * 5],
)
@pytest.mark.parametrize("dtype", ["str", object])
def test_a_text_column_made_categorical_holds_its_values(texts: list, dtype: str) -> None:
    column = pd.Series(texts, dtype=dtype, index=pd.Index(range(len(texts))) + 10, name="t")
    found = data._categorical(column)
    assert isinstance(found.dtype, pd.CategoricalDtype)
    assert found.index.equals(column.index) and found.name == "t"
    assert found.isna().tolist() == column.isna().tolist()
    assert found.astype(object).where(found.notna(), None).tolist() == [
        None if pd.isna(v) else v for v in column
    ]
    assert found.cat.categories.is_unique
