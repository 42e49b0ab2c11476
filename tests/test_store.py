"""The store: migrations, transactions, status."""

from __future__ import annotations

from pathlib import Path

import pytest

from retain.errors import StoreError
from retain.store import MIGRATIONS, Store, status


def test_new_store_is_at_the_latest_version(tmp_path: Path):
    with Store(tmp_path / "a.duckdb") as store:
        assert store.schema_version == len(MIGRATIONS)
        for table in ("orders", "order_lines", "customers", "marketing_spend", "quarantine"):
            assert store.has_table(table)
    # reopening applies nothing twice
    with Store(tmp_path / "a.duckdb") as store:
        assert store.scalar("SELECT count(*) FROM schema_version") == len(MIGRATIONS)


def test_transaction_rolls_back_on_error(store: Store):
    with pytest.raises(ZeroDivisionError), store.transaction() as con:
        con.execute("INSERT INTO marketing_spend VALUES ('2025-01-01', 'search', 1)")
        1 / 0  # noqa: B018
    assert store.scalar("SELECT count(*) FROM marketing_spend") == 0


def test_missing_store_is_a_clear_error(tmp_path: Path):
    with pytest.raises(StoreError, match="retain ingest"):
        Store(tmp_path / "nope.duckdb", read_only=True)


def test_status_of_the_cdnow_sample(cdnow_sample_db: Path):
    with Store(cdnow_sample_db, read_only=True) as store:
        facts = status(store)
    assert facts["customers"] == 2357
    assert facts["orders"] == 6919
    assert facts["quarantined_rows"] == 0
    assert facts["files_ingested"] == 1
    assert facts["first_order"] == "1997-01-01T00:00:00"
    assert facts["last_order"] == "1998-06-30T00:00:00"
