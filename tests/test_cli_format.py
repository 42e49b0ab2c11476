"""What the commands print for people: money, dates, counts, empty and truncated tables, --help."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from retain.cli import app, plural

runner = CliRunner()
DATA = Path(__file__).parent / "data"


def run(*args: object):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    """Two customers of the Shopify sample (two rows quarantined) and a third with 1,234.50."""
    db = tmp_path / "s.duckdb"
    assert (
        run("ingest", DATA / "shopify_orders.csv", "--db", db, "--as-of", "2025-12-31").exit_code
        == 0
    )
    more = tmp_path / "more.csv"
    more.write_text("order_id,customer_id,ordered_at,net_revenue\nx1,zoe,2025-11-03,1234.5\n")
    assert run("ingest", more, "--db", db, "--as-of", "2025-12-31").exit_code == 0
    return db


def test_customers_show_money_and_dates(shop: Path) -> None:
    result = run("customers", "--db", shop)
    assert result.exit_code == 0, result.output
    assert "1,234.50" in result.stdout and "170.00" in result.stdout
    assert "2025-10-02" in result.stdout and "2025-11-03" in result.stdout
    assert "00:00:00" not in result.stdout and "20:09:30" not in result.stdout
    assert "170.0 " not in result.stdout


def test_status_shows_money_and_dates(shop: Path) -> None:
    result = run("status", "--db", shop)
    assert result.exit_code == 0, result.output
    assert re.search(r"net revenue: 1,434\.50$", result.stdout, re.M)
    assert re.search(r"first order: 2025-10-02$", result.stdout, re.M)


def test_quarantine_says_how_many_of_how_many(shop: Path) -> None:
    full = run("quarantine", "--db", shop)
    assert full.exit_code == 0 and "2 quarantined rows" in full.stdout
    cut = run("quarantine", "--db", shop, "--limit", "1")
    assert cut.exit_code == 0
    assert "showing 1 of 2 quarantined rows" in cut.stdout and "--limit" in cut.stdout
    assert "row 8" not in cut.stdout


def test_an_empty_quarantine_says_so(tmp_path: Path) -> None:
    db = tmp_path / "clean.duckdb"
    clean = tmp_path / "clean.csv"
    clean.write_text("order_id,customer_id,ordered_at,net_revenue\n1,a,2025-01-02,10\n")
    assert run("ingest", clean, "--db", db, "--as-of", "2025-12-31").exit_code == 0
    result = run("quarantine", "--db", db)
    assert result.exit_code == 0
    assert result.stdout.strip() == "no rows in quarantine"
    assert "Empty DataFrame" not in result.stdout


def test_plural() -> None:
    assert plural(1, "row") == "1 row"
    assert plural(0, "row") == "0 rows"
    assert plural(12_345, "customer") == "12,345 customers"


def _commands(group, path=()):
    for name, command in group.commands.items():
        yield (*path, name), command
        if hasattr(command, "commands"):
            yield from _commands(command, (*path, name))


def test_help_has_meaningful_metavars() -> None:
    root = typer.main.get_command(app)
    commands = [()] + [path for path, _ in _commands(root)]
    assert len(commands) > 20
    for path in commands:
        result = run(*path, "--help")
        assert result.exit_code == 0, (path, result.output)
        raw = re.findall(r"<(?:bool|str|int|float|path|list\[str\])>", result.stdout)
        assert not raw, (path, raw, result.stdout)
        usage = result.stdout.split("Usage:")[1].splitlines()[0]
        assert "{" not in usage, (path, usage)
    ingest = run("ingest", "--help").stdout
    for shown in ("FILE", "YYYY-MM-DD", "CODE=RATE"):
        assert shown in ingest


def test_counts_have_thousands_separators(cdnow_sample_db: Path) -> None:
    for command in ("cohorts", "acquisition"):
        result = run(command, "--db", cdnow_sample_db, "--period", "quarter")
        assert result.exit_code == 0, result.output
        assert "2,357" in result.stdout and " 2357" not in result.stdout, command
