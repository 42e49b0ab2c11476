"""The `retain` command line: Typer commands that call the public API, nothing more.

Every command that reports takes ``--json``; every error retain raises on purpose
becomes one clear line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import pandas as pd
import typer

from retain.errors import RetainError
from retain.store import DEFAULT_PATH

app = typer.Typer(
    name="retain",
    help="Customer lifetime value and retention: load orders, see what customers are worth.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DbOption = Annotated[
    Path, typer.Option("--db", help="The store, a DuckDB file.", envvar="RETAIN_DB")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
DEFAULT_DB = Path(DEFAULT_PATH)

F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(func: F) -> F:
    """Turn RetainError into one line on stderr and exit code 2."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except RetainError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def to_jsonable(value: Any) -> Any:
    """Plain JSON types from DataFrames, numpy scalars and timestamps."""
    if isinstance(value, pd.DataFrame):
        return json.loads(value.to_json(orient="records", date_format="iso"))
    if isinstance(value, pd.Series):
        return json.loads(value.to_json(date_format="iso"))
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):
        return value.item()
    return value


def emit(value: Any, as_json: bool, table: Callable[[], str] | None = None) -> None:
    """Print a result as JSON or as text for people."""
    if as_json:
        typer.echo(json.dumps(to_jsonable(value), indent=2, default=str))
    elif table is not None:
        typer.echo(table())
    elif isinstance(value, pd.DataFrame):
        typer.echo(value.to_string(index=False) if not value.empty else "(no rows)")
    else:
        typer.echo(str(value))


# --- foundation: ingest, status, customers --------------------------------------------


# --- metrics (retain.metrics) ---------------------------------------------------------


# --- models (retain.models): fit, score -----------------------------------------------


# --- segments (retain.segments) -------------------------------------------------------


# --- recommendations (retain.recommend) -----------------------------------------------


# --- service (retain.service): serve, report ------------------------------------------


def main() -> None:
    """Entry point of the `retain` console script."""
    app(prog_name="retain")


if __name__ == "__main__":
    sys.exit(main())
