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


def cached_mb(store: Store) -> float:
    return float(
        store.scalar(
            "SELECT coalesce(sum(memory_usage_bytes), 0) / 2^20 FROM duckdb_memory() "
            "WHERE tag = 'BASE_TABLE'"
        )
    )


@pytest.mark.parametrize("limit", [None, "3.0 GiB"])
def test_dropping_cached_blocks_keeps_the_limit_and_the_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: str | None
):
    import retain.store
    from retain.store import drop_cached_blocks

    monkeypatch.setattr(retain.store, "CACHE_ROOM_BYTES", 8 * 2**20)
    path = tmp_path / "big.duckdb"
    with Store(path) as store:
        store.con.execute(
            "CREATE TABLE wide AS SELECT range AS i, random() AS x, random() AS y FROM range(8000000)"
        )
    with Store(path, read_only=True) as store:
        if limit:
            store.con.execute(f"SET memory_limit = '{limit}'")
        shown = store.scalar("SELECT current_setting('memory_limit')")
        answer = store.con.execute("SELECT sum(i), max(x), min(y) FROM wide").fetchall()
        assert cached_mb(store) > 50  # the table's blocks, kept after its query
        drop_cached_blocks(store)
        assert cached_mb(store) <= 8
        assert store.scalar("SELECT current_setting('memory_limit')") == shown
        assert store.con.execute("SELECT sum(i), max(x), min(y) FROM wide").fetchall() == answer


def test_a_store_in_memory_keeps_its_blocks():
    from retain.store import drop_cached_blocks

    with Store(":memory:") as store:
        store.con.execute("CREATE TABLE wide AS SELECT range AS i FROM range(3000000)")
        held = cached_mb(store)
        drop_cached_blocks(store)
        assert cached_mb(store) == held
        assert store.scalar("SELECT sum(i) FROM wide") == 3000000 * 2999999 // 2
