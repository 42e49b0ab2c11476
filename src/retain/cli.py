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


def _pairs(values: list[str] | None, option: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise typer.BadParameter(f"{option} takes KEY=VALUE, got {item!r}")
        pairs[key.strip()] = value.strip()
    return pairs


@app.command()
@friendly_errors
def ingest(
    path: Annotated[Path, typer.Argument(help="CSV, Parquet, Shopify export or CDNOW file.")],
    format: Annotated[
        str,
        typer.Option("--format", help="auto, orders, shopify, cdnow, customers, lines or spend."),
    ] = "auto",
    map: Annotated[
        list[str] | None,
        typer.Option("--map", help="canonical=source column, e.g. --map order_id=OrderNo."),
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of", help="Observation date; later orders are quarantined. Default: now."
        ),
    ] = None,
    currency: Annotated[str, typer.Option(help="Reporting currency.")] = "USD",
    rate: Annotated[
        list[str] | None,
        typer.Option("--rate", help="CODE=RATE: reporting-currency units per unit of CODE."),
    ] = None,
    db: DbOption = DEFAULT_DB,
    as_json: JsonOption = False,
) -> None:
    """Load a file into the store; bad rows are quarantined with the reason."""
    from retain.ingest import ingest as run_ingest
    from retain.store import Store

    rates = {k: float(v) for k, v in _pairs(rate, "--rate").items()}
    with Store(db) as store:
        report = run_ingest(
            store,
            path,
            format=format,
            mapping=_pairs(map, "--map"),
            as_of=as_of,
            currency=currency,
            rates=rates,
        )
    emit(report.__dict__, as_json, report.summary)


@app.command()
@friendly_errors
def status(db: DbOption = DEFAULT_DB, as_json: JsonOption = False) -> None:
    """What the store holds: customers, orders, revenue, dates, quarantined rows."""
    from retain.store import Store
    from retain.store import status as store_status

    with Store(db, read_only=True) as store:
        result = store_status(store)

    def table() -> str:
        return "\n".join(
            f"{k.replace('_', ' '):>20}: {v:,}"
            if isinstance(v, int | float)
            else f"{k.replace('_', ' '):>20}: {v}"
            for k, v in result.items()
        )

    emit(result, as_json, table)


@app.command()
@friendly_errors
def customers(
    limit: Annotated[int, typer.Option(help="How many rows.")] = 20,
    sort: Annotated[
        str, typer.Option(help="net_revenue, orders, last_order, first_order or customer_id.")
    ] = "net_revenue",
    db: DbOption = DEFAULT_DB,
    as_json: JsonOption = False,
) -> None:
    """One row per customer: orders, net revenue, first and last order."""
    from retain.features import customer_table
    from retain.store import Store

    with Store(db, read_only=True) as store:
        store.require_orders()
        try:
            frame = customer_table(store, sort=sort, limit=limit)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    emit(frame, as_json)


@app.command()
@friendly_errors
def quarantine(
    limit: Annotated[int, typer.Option(help="How many rows.")] = 50,
    db: DbOption = DEFAULT_DB,
    as_json: JsonOption = False,
) -> None:
    """Rows set aside at ingest: file, row, column and reason."""
    from retain.store import Store

    with Store(db, read_only=True) as store:
        frame = store.query(
            "SELECT source_file, row_number, column_name, reason, raw FROM quarantine "
            "ORDER BY source_file, row_number LIMIT ?",
            [limit],
        )
    # the raw row is long: JSON carries it, the table leaves it out
    emit(frame, as_json, lambda: frame.drop(columns="raw").to_string(index=False))


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
