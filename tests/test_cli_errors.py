"""Bad argument values: one clear line on stderr, exit code 2, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from retain.cli import app
from retain.errors import ArgumentError, RetainError

runner = CliRunner()
DATA = Path(__file__).parent / "data"


def run(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def test_argument_error_is_a_retain_error_and_a_value_error() -> None:
    exc = ArgumentError("--margin must be 0 or more, got -1")
    assert isinstance(exc, RetainError) and isinstance(exc, ValueError)
    with pytest.raises(ValueError, match="margin"):
        raise exc


@pytest.mark.parametrize(
    "rate,message",
    [
        ("EUR=abc", "--rate EUR takes a number"),
        ("EUR=-1", "--rate EUR must be a positive number"),
        ("EUR=nan", "--rate EUR must be a positive number"),
        ("EUR", "--rate takes CODE=RATE"),
    ],
)
def test_a_bad_rate_is_one_line_and_exit_2(tmp_path: Path, rate: str, message: str) -> None:
    db = tmp_path / "s.duckdb"
    result = run("ingest", DATA / "shopify_orders.csv", "--db", db, "--rate", rate)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and message in lines[0]
    assert not db.exists()


def test_any_retain_error_becomes_one_line(tmp_path: Path, monkeypatch) -> None:
    import retain.store

    def refuse(*args, **kwargs):
        raise ArgumentError("--something must be sensible")

    monkeypatch.setattr(retain.store, "status", refuse)
    with retain.store.Store(tmp_path / "s.duckdb"):
        pass
    result = run("status", "--db", tmp_path / "s.duckdb")
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: --something must be sensible"


@pytest.mark.parametrize(
    "args",
    [
        ["score", "--margin", "-0.5"],
        ["score", "--discount-rate", "-0.1"],
        ["metrics", "--margin", "-1"],
    ],
)
def test_negative_margins_and_discount_rates_are_refused(tmp_path: Path, args) -> None:
    db = tmp_path / "s.duckdb"
    assert (
        run("ingest", DATA / "shopify_orders.csv", "--db", db, "--as-of", "2025-12-31").exit_code
        == 0
    )
    result = run(*args, "--db", db)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert args[1].removeprefix("--").replace("-", " ") in lines[0]
