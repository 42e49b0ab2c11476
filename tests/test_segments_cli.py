"""`retain segments`, `retain at-risk`, `retain audience`, `retain migration`."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from retain.cli import app
from retain.segments import load_rules
from retain.store import Store
from segments_helpers import build_store, random_orders

runner = CliRunner()


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("segments") / "s.duckdb"
    orders = random_orders(300, seed=4)
    ids = sorted(orders["customer_id"].unique())
    customers = pd.DataFrame(
        {
            "customer_id": ids,
            "email": [f"{c}@example.com" for c in ids],
            "name": [f"Customer {c}" for c in ids],
            # every third opted out, every third unknown
            "accepts_marketing": [[True, False, None][i % 3] for i in range(len(ids))],
        }
    )
    build_store(orders, customers=customers, path=path).close()
    return path


def run(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def test_segments_json(db: Path) -> None:
    result = run("segments", "--db", db, "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["segment"] for r in rows] == load_rules().names
    for row in rows:
        assert {"segment", "customers", "net_revenue", "action"} <= set(row)
    assert sum(r["customers"] for r in rows) == 300
    with Store(db, read_only=True) as store:
        total = store.scalar("SELECT sum(net_revenue) FROM orders")
    assert sum(r["net_revenue"] for r in rows) == pytest.approx(total)
    assert "no model scores" in result.stderr


def test_segments_table_and_quartiles(db: Path) -> None:
    result = run("segments", "--db", db, "--scheme", "quartiles")
    assert result.exit_code == 0, result.output
    assert "Can't Lose Them" in result.stdout and "quartiles" in result.stdout


def test_at_risk_json(db: Path) -> None:
    result = run("at-risk", "--db", db, "--json", "--limit", "7")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 7
    for row in rows:
        assert {"customer_id", "risk", "reason", "value_at_stake", "segment"} <= set(row)
        assert row["risk"] in ("high", "lost")
        assert "email" not in row


def test_audience_csv_to_file_respects_consent(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "lost.csv"
    result = run("audience", "Lost", "--db", db, "--format", "csv", "--out", out)
    assert result.exit_code == 0, result.output
    exported = pd.read_csv(out)
    assert list(exported.columns)[:3] == ["customer_id", "email", "name"]
    assert (exported["segment"] == "Lost").all()
    with Store(db, read_only=True) as store:
        consent = store.query("SELECT customer_id, accepts_marketing FROM customers")
    allowed = set(consent.loc[consent["accepts_marketing"].eq(True), "customer_id"])
    assert set(exported["customer_id"]) <= allowed
    assert "opted out" in result.stderr and "--consent unknown-ok" in result.stderr
    assert "consent rule: required (the default)" in result.stderr

    wider = run("audience", "lost", "--db", db, "--format", "json", "--consent", "unknown-ok")
    assert wider.exit_code == 0, wider.output
    records = json.loads(wider.stdout)
    ids = {r["customer_id"] for r in records}
    opted_out = set(consent.loc[consent["accepts_marketing"].eq(False), "customer_id"])
    assert len(ids) > len(exported) and not ids & opted_out


@pytest.fixture(scope="module")
def unknown_consent_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store from a plain orders file: nobody's marketing consent is known."""
    path = tmp_path_factory.mktemp("segments") / "unknown.duckdb"
    build_store(random_orders(300, seed=4), path=path).close()
    return path


def test_an_empty_export_is_never_silent(unknown_consent_db: Path, tmp_path: Path) -> None:
    # the README's command on a store whose consent is unknown exports nobody
    out = tmp_path / "reactivate.csv"
    result = run("audience", "Can't Lose Them", "--db", unknown_consent_db, "--out", out)
    assert result.exit_code == 1, result.output
    wider = run(
        "audience",
        "Can't Lose Them",
        "--db",
        unknown_consent_db,
        "--format",
        "json",
        "--consent",
        "unknown-ok",
    )
    in_segment = len(json.loads(wider.stdout))
    assert in_segment > 0
    summary = result.stderr.strip().splitlines()[-1]
    assert summary.startswith("exported no customers")
    assert f"{in_segment:,} whose consent is unknown" in summary
    assert "--consent unknown-ok" in summary
    assert out.read_text().startswith("customer_id,")  # the header, as before


def test_consent_unknown_ok_exports_them(unknown_consent_db: Path) -> None:
    result = run(
        "audience", "Can't Lose Them", "--db", unknown_consent_db, "--consent", "unknown-ok"
    )
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(io.StringIO(result.stdout))
    assert len(rows) > 0 and (rows["segment"] == "Can't Lose Them").all()
    assert f"exported {len(rows):,} customers" in result.stderr
    assert "consent rule: unknown-ok" in result.stderr
    # the old flag still works, and says what it means
    old = run(
        "audience", "Can't Lose Them", "--db", unknown_consent_db, "--include-unknown-consent"
    )
    assert old.exit_code == 0 and old.stdout == result.stdout


def test_consent_takes_two_values(unknown_consent_db: Path) -> None:
    result = run("audience", "Lost", "--db", unknown_consent_db, "--consent", "yes")
    assert result.exit_code == 2
    assert "required" in result.output and "unknown-ok" in result.output


def test_migration_json(db: Path) -> None:
    result = run("migration", "--db", db, "--from", "2024-01-31", "--to", "2024-11-30", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["from"] == "2024-01-31" and data["to"] == "2024-11-30"
    assert set(data) >= {"counts", "percent", "moved_down"}
    table = run("migration", "--db", db, "--from", "2024-01-31", "--to", "2024-11-30")
    assert table.exit_code == 0 and "moved from a valuable segment" in table.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (["audience", "VIP"], "no segment called 'VIP'"),
        (["audience", "Lost", "--format", "xml"], "csv or json"),
        (["segments", "--scheme", "deciles"], "quintiles or quartiles"),
        (["segments", "--as-of", "yesterday"], "YYYY-MM-DD"),
        (["at-risk", "--min-risk", "severe"], "risk level"),
        (["segments", "--rules", "/nonexistent.toml"], "no segment rule file"),
        (["migration", "--from", "2024-06-01", "--to", "2024-01-01"], "must be before"),
    ],
)
def test_bad_input_gives_one_line_and_exit_code_2(db: Path, args: list[str], message: str) -> None:
    result = run(*args, "--db", db)
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_missing_store(tmp_path: Path) -> None:
    result = run("segments", "--db", tmp_path / "none.duckdb")
    assert result.exit_code == 2 and "no store" in result.stderr


def test_at_risk_says_how_long_the_whole_list_is(db: Path) -> None:
    from retain.segments import winback_list
    from retain.store import Store

    result = run("at-risk", "--db", db, "--limit", "3")
    assert result.exit_code == 0, result.output
    with Store(db, read_only=True) as store:
        listed = winback_list(store, limit=3)
    total = listed.attrs["total"]
    assert f"win-back list: {total:,} customers at high risk or worse" in result.output
    assert ("the first 3 (--limit)" in result.output) == (total > 3)
