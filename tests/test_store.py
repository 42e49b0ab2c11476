"""The store: migrations, transactions, status."""

from __future__ import annotations

import subprocess
import sys
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


def test_store_held_by_another_process_says_who_and_what_to_do(tmp_path: Path):
    path = tmp_path / "held.duckdb"
    Store(path).close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, duckdb; con = duckdb.connect(sys.argv[1]); print('ready', flush=True);"
            " sys.stdin.read()",
            str(path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(StoreError, match="in use by another process") as caught:
            Store(path)
        assert "POST /api/orders" in str(caught.value)
    finally:
        holder.communicate("", timeout=30)


def test_the_store_prints_no_duckdb_progress_bar(tmp_path) -> None:
    """The CLI reports its own progress; DuckDB's bar would land in its output."""
    with Store(tmp_path / "s.duckdb") as store:
        assert store.scalar("SELECT current_setting('enable_progress_bar')") is False
