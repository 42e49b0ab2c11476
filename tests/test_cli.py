"""The command line: clear one-line errors, exit codes, JSON twins."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from retain.cli import app
from retain.store import Store

runner = CliRunner()
DATA = Path(__file__).parent / "data"


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_ingest_status_customers(tmp_path: Path):
    db = tmp_path / "s.duckdb"
    result = run("ingest", DATA / "shopify_orders.csv", "--db", db, "--as-of", "2025-12-31")
    assert result.exit_code == 0, result.output
    assert "2 rows quarantined" in result.output
    assert "row 7, column 'Email': no customer identity" in result.output

    facts = json.loads(run("status", "--db", db, "--json").output)
    for key in (
        "customers",
        "orders",
        "net_revenue",
        "quarantined_rows",
        "first_order",
        "last_order",
    ):
        assert key in facts
    assert facts["orders"] == 3 and facts["quarantined_rows"] == 2
    assert facts["net_revenue"] == 90 + 30 + 80

    rows = json.loads(run("customers", "--db", db, "--json", "--limit", "1").output)
    assert rows == [
        {
            "customer_id": "ana@example.com",
            "email": "ana@example.com",
            "orders": 2,
            "net_revenue": 170.0,
            "first_order": "2025-10-02T20:09:30.000",
            "last_order": "2025-10-10T11:00:00.000",
        }
    ]
    quarantined = json.loads(run("quarantine", "--db", db, "--json").output)
    assert [q["row_number"] for q in quarantined] == [7, 8]


def test_missing_columns_exit_2_and_store_nothing(tmp_path: Path):
    db = tmp_path / "s.duckdb"
    bad = tmp_path / "bad.csv"
    bad.write_text("id,who\n1,2\n")
    result = run("ingest", bad, "--db", db, "--format", "orders")
    assert result.exit_code == 2
    assert "missing required column(s) order_id, customer_id, ordered_at" in result.output
    assert "Found: id, who" in result.output
    # a failed first ingest leaves no empty store behind to confuse later commands
    assert not db.exists() and not Path(f"{db}.wal").exists()
    for failing in (("nope.csv",), (bad, "--as-of", "soon"), (bad, "--format", "xml")):
        assert run("ingest", *failing, "--db", db).exit_code == 2
        assert not db.exists()
    # an existing store is left as it was
    assert (
        run("ingest", DATA / "shopify_orders.csv", "--db", db, "--as-of", "2025-12-31").exit_code
        == 0
    )
    assert run("ingest", bad, "--db", db, "--format", "orders").exit_code == 2
    facts = json.loads(run("status", "--db", db, "--json").output)
    assert facts["orders"] == 3 and facts["files_ingested"] == 1


def test_errors_are_one_line_without_traceback(tmp_path: Path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "retain.cli",
            "ingest",
            str(empty),
            "--db",
            str(tmp_path / "x.duckdb"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: ")
    assert "empty" in proc.stderr and "Traceback" not in proc.stderr
    result = run("status", "--db", tmp_path / "none.duckdb")
    assert result.exit_code == 2 and "no store at" in result.output


def test_bad_option_values(tmp_path: Path):
    result = run("ingest", DATA / "shopify_orders.csv", "--db", tmp_path / "s.duckdb", "--map", "x")
    assert result.exit_code == 2 and "KEY=VALUE" in result.output


def _strict_json(text: str):
    """JSON as json.loads reads it, refusing NaN and Infinity (not JSON)."""

    def refuse(constant: str):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def _three_customers(tmp_path: Path) -> Path:
    db = tmp_path / "three.duckdb"
    orders = tmp_path / "orders.csv"
    orders.write_text(
        "order_id,customer_id,ordered_at,net_revenue\n"
        "1,a,2025-01-02,10.50\n2,b,2025-01-03,22\n3,a,2025-02-03,1234.50\n4,d,2025-03-01,5\n"
    )
    assert run("ingest", orders, "--db", db, "--as-of", "2025-12-31").exit_code == 0
    return db


def test_json_has_no_nan_when_a_fit_has_no_standard_errors(tmp_path: Path):
    db = _three_customers(tmp_path)
    # to the last order: with three customers the likelihood pins down no parameter
    result = run("fit", "--db", db, "--model", "bgnbd", "--as-of", "2025-03-01", "--json")
    assert result.exit_code == 0, result.output
    doc = _strict_json(result.stdout)
    assert doc["customers"] == 3
    assert all(v is None for v in doc["standard_errors"].values())
    # the text says so in words, not with a "nan"
    text = run("fit", "--db", db, "--model", "bgnbd", "--as-of", "2025-03-01")
    assert text.exit_code == 0, text.output
    assert "(no se)" in text.stdout and not re.search(r"\bnan\b", text.stdout, re.IGNORECASE)


def test_negative_limits_are_refused(tmp_path: Path):
    db = _three_customers(tmp_path)
    for command in ("quarantine", "customers"):
        result = run(command, "--db", db, "--limit", "-1")
        assert result.exit_code == 2, result.output
        assert "--limit" in result.output or "limit must be" in result.output


def test_ingest_reads_month_first_dates_and_pending_orders_when_told(tmp_path: Path) -> None:
    orders = tmp_path / "us.csv"
    orders.write_text(
        "order_id,customer_id,ordered_at,net_revenue,status\n"
        "1,a,03/04/2025,10,\n2,b,03/05/2025,20,pending\n3,a,04/01/2025,15,\n"
    )
    refused = run("ingest", orders, "--db", tmp_path / "a.duckdb", "--as-of", "2025-12-31")
    assert "--date-format" in refused.output and "3 rows quarantined" in refused.output
    read = run(
        "ingest", orders, "--db", tmp_path / "b.duckdb", "--as-of", "2025-12-31",
        "--date-format", "MM/DD/YYYY", "--json",
    )  # fmt: skip
    assert read.exit_code == 0, read.output
    doc = json.loads(read.stdout)
    assert doc["orders"] == 2 and doc["excluded"] == {"pending": 1}
    paid = run(
        "ingest", orders, "--db", tmp_path / "c.duckdb", "--as-of", "2025-12-31",
        "--date-format", "MM/DD/YYYY", "--pending-revenue", "--json",
    )  # fmt: skip
    assert json.loads(paid.stdout)["orders"] == 3
    with Store(tmp_path / "b.duckdb", read_only=True) as store:
        first = store.scalar("SELECT min(ordered_at) FROM orders")
    assert str(first)[:10] == "2025-03-04"  # March 4th, month first


def test_ingest_keeps_the_currency_set_for_the_store(tmp_path: Path) -> None:
    db = tmp_path / "eur.duckdb"
    orders = tmp_path / "eur.csv"
    orders.write_text(
        "order_id,customer_id,ordered_at,net_revenue,currency\n1,a,2025-01-02,10,EUR\n"
    )
    assert run("settings", "set", "currency", "EUR", "--db", db).exit_code == 0
    result = run("ingest", orders, "--db", db, "--as-of", "2025-12-31", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["orders"] == 1  # EUR is the store's own currency
