"""Progress on long commands: on stderr when it is a terminal, never in pipes or --json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import retain.cli
from retain.cli import app

runner = CliRunner()
DATA = Path(__file__).parent / "data"
STEPS = ("reading", "comparing", "fitting", "scoring", "writing", "learning")


def run(*args: object):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the commands believe stderr is a terminal."""
    monkeypatch.setattr(retain.cli, "_stderr_is_terminal", lambda: True)


def _ingest(db: Path, *extra: str):
    return run("ingest", DATA / "shopify_orders.csv", "--db", db, "--as-of", "2025-12-31", *extra)


def test_progress_shows_on_a_terminal(tmp_path: Path, terminal: None) -> None:
    result = _ingest(tmp_path / "s.duckdb")
    assert result.exit_code == 0, result.output
    assert "reading shopify_orders.csv" in result.stderr
    assert "reading" not in result.stdout  # the summary on stdout stays as it was
    assert result.stdout.startswith(str(DATA / "shopify_orders.csv"))


def test_json_stays_clean_on_a_terminal(tmp_path: Path, terminal: None) -> None:
    db = tmp_path / "s.duckdb"
    for args in (
        ("ingest", DATA / "shopify_orders.csv", "--as-of", "2025-12-31"),
        ("fit", "--model", "bgnbd"),
        ("score",),
        ("recommend", "build"),
    ):
        result = run(*args, "--db", db, "--json")
        assert result.exit_code in (0, 2), result.output
        if result.exit_code == 0:
            json.loads(result.stdout)
        assert not any(step in result.stderr for step in STEPS), (args, result.stderr)
        assert "\x1b" not in result.stdout + result.stderr


def test_no_progress_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    db = tmp_path / "s.duckdb"
    orders = tmp_path / "orders.csv"
    orders.write_text(
        "order_id,customer_id,ordered_at,net_revenue\n"
        "1,a,2025-01-02,10.50\n2,b,2025-01-03,22\n3,a,2025-02-03,1234.50\n4,d,2025-03-01,5\n"
    )
    for args in (
        ("ingest", orders, "--as-of", "2025-12-31"),
        ("fit", "--model", "bgnbd"),
        ("score",),
        ("report", "--out", tmp_path / "r.html"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "retain.cli", *map(str, args), "--db", str(db)],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, (args, proc.stderr)
        assert not any(step in proc.stderr for step in STEPS), (args, proc.stderr)
        assert "\x1b" not in proc.stdout + proc.stderr
