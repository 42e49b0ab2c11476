"""Values and keys at ingest: implausible amounts, invisible ids, 7-digit dates, typed
columns, idempotency by content, a unique order_id, and errors instead of tracebacks."""

from __future__ import annotations

import math
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from retain import config
from retain.cli import app
from retain.errors import ArgumentError, DataError, SchemaError
from retain.features import customer_table, summarize
from retain.ingest import cdnow, customer_key, ingest, load_orders
from retain.ingest.load import IngestReport, Loader
from retain.store import MIGRATIONS, Store, status

runner = CliRunner()
HEADER = "order_id,customer_id,ordered_at,net_revenue\n"


def write(tmp_path: Path, text: str, name: str = "orders.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def cli(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def quarantine(store: Store) -> pd.DataFrame:
    return store.query(
        "SELECT source_file, row_number, column_name, reason FROM quarantine ORDER BY row_number"
    )


# -- 1. amounts ------------------------------------------------------------------------------
def test_huge_amounts_are_quarantined_and_status_stays_finite(tmp_path: Path):
    path = write(
        tmp_path,
        HEADER + "a,c1,2024-06-01,10\nb,c2,2024-06-01,1e32\nc,c3,2024-06-01,1e300\n"
        "d,c4,2024-06-01,Infinity\ne,c5,2024-06-01,nan\n",
    )
    with Store(tmp_path / "s.duckdb") as store:
        report = ingest(store, path, as_of="2025-01-01")
        assert report.orders == 1 and report.quarantined == 4
        q = quarantine(store).set_index("row_number")
        assert q.loc[3, "reason"].startswith("implausible amount: got 1e32")
        assert "max_amount" in q.loc[4, "reason"] and q.loc[4, "column_name"] == "net_revenue"
        facts = status(store)
    assert facts["net_revenue"] == 10.0 and math.isfinite(facts["net_revenue"])


def test_amounts_are_bounded_after_currency_conversion(tmp_path: Path):
    path = write(
        tmp_path,
        "order_id,customer_id,ordered_at,gross,currency\n"
        "a,c1,2024-06-01,5e8,EUR\nb,c2,2024-06-01,5e8,USD\n",
    )
    with Store(tmp_path / "s.duckdb") as store:
        report = ingest(store, path, as_of="2025-01-01", rates={"EUR": 3})
        assert report.orders == 1
        reason = quarantine(store)["reason"].iloc[0]
    assert "5e8 (1500000000.0 USD after conversion)" in reason


def test_the_bound_is_a_setting(tmp_path: Path):
    path = write(tmp_path, HEADER + "a,c1,2024-06-01,2e10\n")
    db = tmp_path / "s.duckdb"
    with Store(db) as store:
        assert config.load_settings(store).max_amount == config.DEFAULT_MAX_AMOUNT
        assert ingest(store, path, as_of="2025-01-01").orders == 0
    assert cli("settings", "set", "max_amount", "1e12", "--db", db).exit_code == 0
    bad = cli("settings", "set", "max_amount", "inf", "--db", db)
    assert bad.exit_code == 2 and "max_amount" in bad.output
    with Store(db) as store:
        assert config.load_settings(store).max_amount == 1e12
        report = ingest(store, path, as_of="2025-01-01")  # a new setting: read again
        assert report.orders == 1 and status(store)["net_revenue"] == 2e10


def test_line_prices_and_quantities_are_bounded(tmp_path: Path):
    path = write(
        tmp_path,
        "order_id,sku,quantity,unit_price\no1,s1,1,2.5\no1,s2,1e12,1\no2,s3,1,1e40\n",
        "lines.csv",
    )
    with Store(tmp_path / "s.duckdb") as store:
        report = ingest(store, path, format="lines")
        assert report.order_lines == 1
        assert quarantine(store)["column_name"].tolist() == ["quantity", "unit_price"]


def test_net_revenue_totals_are_exact(tmp_path: Path):
    # 1.005 as a float is 1.00499999999999989..., which rounds to 1.0; in DECIMAL to 1.01
    path = write(tmp_path, HEADER + "a,c1,2024-06-01,1.005\n")
    with Store(tmp_path / "s.duckdb") as store:
        ingest(store, path, as_of="2025-01-01")
        assert status(store)["net_revenue"] == 1.01
        assert customer_table(store)["net_revenue"].tolist() == [1.01]


def test_cli_status_and_customers_after_a_huge_amount(tmp_path: Path):
    db = tmp_path / "s.duckdb"
    path = write(tmp_path, HEADER + "a,c1,2024-06-01,10\nb,c1,2024-07-01,1e300\n")
    assert cli("ingest", path, "--db", db, "--as-of", "2025-01-01").exit_code == 0
    shown = cli("status", "--db", db)
    assert shown.exit_code == 0 and "inf" not in shown.output and "10.00" in shown.output


# -- 2. ids ----------------------------------------------------------------------------------
def test_invisible_and_blank_ids(tmp_path: Path):
    path = write(
        tmp_path,
        HEADER + "k1,\t,2024-06-01,10\n"
        "k2,\u200b,2024-06-01,10\n"
        "k3, \x00 ,2024-06-01,10\n"
        "k4,\u00a0\u3000,2024-06-01,10\n"
        "\u200bk5\t,c\x00x\u2060,2024-06-01,10\n"
        "\ufeff\t,c6,2024-06-01,10\n",
    )
    with Store(tmp_path / "s.duckdb") as store:
        report = ingest(store, path, as_of="2025-01-01")
        assert report.orders == 1
        q = quarantine(store)
        assert q["column_name"].tolist() == ["customer_id"] * 4 + ["order_id"]
        assert all(
            r.startswith(f"{c} is blank")
            for r, c in zip(q["reason"], q["column_name"], strict=True)
        )
        stored = store.query("SELECT order_id, customer_id FROM orders")
        assert stored.values.tolist() == [["k5", "cx"]]
        assert store.query("SELECT customer_id FROM customers")["customer_id"].tolist() == ["cx"]
    assert customer_key("\u200bcx\t") == "cx"
    assert customer_key("c\x00x") == "cx"


# -- 3. dates --------------------------------------------------------------------------------
def test_a_seven_digit_date_is_quarantined(tmp_path: Path):
    path = write(tmp_path, HEADER + "a,c1,2025012,10\nb,c1,20250102,10\n")
    with Store(tmp_path / "s.duckdb") as store:
        report = ingest(store, path, as_of="2025-12-31")
        assert report.orders == 1
        assert "exactly 8 digits" in quarantine(store)["reason"].iloc[0]
        assert str(store.scalar("SELECT ordered_at FROM orders")) == "2025-01-02 00:00:00"


def test_a_seven_digit_cdnow_date_is_quarantined(tmp_path: Path):
    path = write(
        tmp_path, "00001 19970101 1 11.77\n00002 1997013 1 12.00\n00003 19970103 2 20.76\n", "c.txt"
    )
    with Store(tmp_path / "s.duckdb") as store:
        report = ingest(store, path, format="cdnow", as_of="1998-06-30")
        assert report.orders == 2
        q = quarantine(store)
        assert q["row_number"].tolist() == [2] and "8 digits" in q["reason"].iloc[0]
    with pytest.raises(DataError, match=r"row 2.*1997013"):
        cdnow.read_cdnow(path)


# -- 4. typed columns ------------------------------------------------------------------------
def test_a_boolean_amount_column_is_refused(tmp_path: Path):
    path = tmp_path / "orders.parquet"
    table = pa.table(
        {
            "order_id": ["a", "b"],
            "customer_id": ["c1", "c2"],
            "ordered_at": ["2024-06-01", "2024-06-02"],
            "net_revenue": [True, False],
        }
    )
    pq.write_table(table, path)
    db = tmp_path / "s.duckdb"
    with Store(db) as store:
        with pytest.raises(SchemaError, match="'net_revenue' is of type BOOLEAN"):
            ingest(store, path, as_of="2025-01-01")
        assert store.scalar("SELECT count(*) FROM orders") == 0
    result = cli("ingest", path, "--db", db)
    assert result.exit_code == 2 and "BOOLEAN" in result.output


# -- 5. idempotency by content, orphan customers --------------------------------------------
def test_the_same_content_at_another_path_changes_nothing(tmp_path: Path):
    text = HEADER + "a,c1,2024-06-01,10\nb,c2,not a date,10\n"
    first, second = write(tmp_path, text, "a.csv"), write(tmp_path, text, "copy.csv")
    db = tmp_path / "s.duckdb"
    with Store(db) as store:
        ingest(store, first, as_of="2025-01-01")
        again = ingest(store, second, as_of="2025-01-01")
        assert again.same_as is not None and str(first) in again.same_as
        assert "nothing to do" in again.summary()
        assert store.scalar("SELECT count(*) FROM quarantine") == 1
        assert store.scalar("SELECT count(*) FROM orders") == 1
        # other options are another ingest: with a date format the row is read again
        changed = ingest(store, second, as_of="2025-02-01")
        assert changed.same_as is None
    # the latest ingest's content and options again (an earlier one is read again: a write
    # came after it)
    result = cli("ingest", first, "--db", db, "--as-of", "2025-02-01")
    assert result.exit_code == 0 and "nothing to do" in result.output


def test_an_order_moved_to_another_customer_leaves_no_orphan(tmp_path: Path):
    path = write(tmp_path, HEADER + "1,alice,2024-01-02,10\n2,bob,2024-01-03,5\n")
    listed = write(tmp_path, "customer_id,email\ncarol,c@example.org\n", "customers.csv")
    with Store(tmp_path / "s.duckdb") as store:
        ingest(store, path, as_of="2025-01-01")
        ingest(store, listed)
        write(tmp_path, HEADER + "1,bob,2024-01-02,10\n2,carol,2024-01-03,5\n")
        ingest(store, path, as_of="2025-01-01")
        ids = store.query("SELECT customer_id FROM customers ORDER BY 1")["customer_id"]
        assert ids.tolist() == ["bob", "carol"]
        write(tmp_path, HEADER + "1,bob,2024-01-02,10\n2,bob,2024-01-03,5\n")
        ingest(store, path, as_of="2025-01-01")
        ids = store.query("SELECT customer_id FROM customers ORDER BY 1")["customer_id"]
        assert ids.tolist() == ["bob", "carol"]  # carol came from a customers file


# -- 6. order_id unique (every write path: tests/test_ingest_unique.py) --------------------------
def test_a_changed_order_replaces_its_stored_version(tmp_path: Path):
    with Store(tmp_path / "s.duckdb") as store:
        ingest(store, write(tmp_path, HEADER + "a,c1,2024-06-01,10\n"), as_of="2025-01-01")
        ingest(store, write(tmp_path, HEADER + "a,c1,2024-06-01,12\n"), as_of="2025-01-01")
        assert store.query("SELECT order_id, net_revenue FROM orders").values.tolist() == [
            ["a", 12.0]
        ]


def test_a_store_with_duplicate_order_ids_is_upgraded(tmp_path: Path):
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, description VARCHAR, "
        "applied_at TIMESTAMP)"
    )
    before = [d for d, _ in MIGRATIONS].index("settings") + 1
    for version, (description, statements) in enumerate(MIGRATIONS[:before], start=1):
        for statement in statements:
            con.execute(statement)
        con.execute("INSERT INTO schema_version VALUES (?, ?, now())", [version, description])
    con.execute(
        "INSERT INTO orders (order_id, customer_id, ordered_at, net_revenue, source_file) VALUES "
        "('a', 'c1', '2024-01-01', 1, 'old.csv'), ('a', 'c1', '2024-01-02', 2, 'new.csv'), "
        "('b', 'c2', '2024-01-01', 3, 'old.csv')"
    )
    con.execute("INSERT INTO customers (customer_id) VALUES ('c1'), ('c2'), ('listed')")
    con.close()
    with Store(path) as store:
        assert store.schema_version == len(MIGRATIONS)
        kept = store.query("SELECT order_id, net_revenue FROM orders ORDER BY 1")
        assert kept.values.tolist() == [["a", 2.0], ["b", 3.0]]
        q = store.query("SELECT source_file, reason, raw FROM quarantine")
        assert q["source_file"].tolist() == ["old.csv"] and "stored twice" in q["reason"][0]
        assert store.query("SELECT customer_id FROM listed_customers")["customer_id"].tolist() == [
            "listed"
        ]


# -- 7. errors, not tracebacks ---------------------------------------------------------------
@pytest.mark.parametrize("rate", ["EUR=abc", "EUR=", "=1", "EUR=nan", "EUR=inf", "EUR=1e400"])
def test_bad_rates_are_one_line_and_exit_2(tmp_path: Path, rate: str):
    path = write(
        tmp_path, "order_id,customer_id,ordered_at,net_revenue,currency\na,c,2024-06-01,1,EUR\n"
    )
    result = cli("ingest", path, "--db", tmp_path / "s.duckdb", "--rate", rate)
    assert result.exit_code == 2 and "--rate" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("value", ["abc", math.nan, math.inf, 0, -1, True])
def test_bad_rates_in_the_library(tmp_path: Path, value: object):
    path = write(tmp_path, HEADER + "a,c,2024-06-01,1\n")
    with Store(tmp_path / "s.duckdb") as store, pytest.raises(ArgumentError, match="EUR"):
        ingest(store, path, rates={"EUR": value})  # type: ignore[dict-item]


def test_summarize_names_a_text_amount_and_a_text_date():
    frame = pd.DataFrame(
        {"customer_id": ["a", "a"], "ordered_at": pd.to_datetime(["2024-01-01", "2024-02-01"])}
    )
    with pytest.raises(DataError, match=r"column 'net_revenue'.*'ten'.*a number"):
        summarize(frame.assign(net_revenue=["10", "ten"]))
    with pytest.raises(DataError, match=r"column 'when'.*'soon'.*a date"):
        summarize(
            frame.assign(net_revenue=[1.0, 2.0], when=["2024-01-01", "soon"]), timestamp="when"
        )
    with pytest.raises(SchemaError, match="'net_revenue' is of type BOOLEAN"):
        summarize(frame.assign(net_revenue=[True, False]))
    with pytest.raises(DataError, match="not finite"):
        summarize(frame.assign(net_revenue=[1.0, math.inf]))
    # text that reads as numbers and dates is read
    ok = summarize(
        frame.assign(net_revenue=["10", "12.5"], ordered_at=["2024-01-01", "2024-02-01"])
    )
    assert ok.loc["a", "monetary"] == 12.5


def test_summarize_quotes_column_names():
    frame = pd.DataFrame(
        {
            'who "id"': ["a", "a", "b"],
            "when's": pd.to_datetime(["2024-01-01", "2024-02-01", "2024-01-15"]),
            'net") AS x --': [1.0, 2.0, 3.0],
        }
    )
    result = summarize(frame, customer_id='who "id"', timestamp="when's", amount='net") AS x --')
    assert result.loc["a", "frequency"] == 1 and result.loc["a", "monetary"] == 2.0


# -- 8. one transaction ----------------------------------------------------------------------
def test_an_exception_after_the_write_stores_nothing(tmp_path: Path):
    with Store(tmp_path / "s.duckdb") as store:
        store.con.execute(
            "CREATE OR REPLACE TEMP TABLE _raw AS SELECT 'o1' AS order_id, 'c1' AS customer_id, "
            "'2024-06-01' AS ordered_at, '10' AS net_revenue, 2 AS _retain_row"
        )
        loader = Loader(
            store, Path("api"), as_of=pd.Timestamp("2025-01-01"), currency="USD", rates={}
        )
        report = IngestReport(file="api", format="orders")
        columns = ["order_id", "customer_id", "ordered_at", "net_revenue"]
        with pytest.raises(RuntimeError), loader.transaction():
            load_orders(loader, columns, None, report)
            assert store.scalar("SELECT count(*) FROM orders") == 1  # written...
            raise RuntimeError("the response failed")
        assert store.scalar("SELECT count(*) FROM orders") == 0  # ...and rolled back
        assert store.scalar("SELECT count(*) FROM customers") == 0


def test_an_ingest_inside_the_callers_transaction_is_rolled_back_with_it(tmp_path: Path):
    path = write(tmp_path, HEADER + "a,c1,2024-06-01,10\n")
    with Store(tmp_path / "s.duckdb") as store:
        with pytest.raises(RuntimeError), store.transaction():
            assert ingest(store, path, as_of="2025-01-01").orders == 1
            raise RuntimeError("later step failed")
        assert store.scalar("SELECT count(*) FROM orders") == 0
        assert store.scalar("SELECT count(*) FROM ingested_files") == 0
