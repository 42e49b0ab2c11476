"""The `retain` command line: Typer commands that call the public API, nothing more.

Every command that reports takes ``--json``; every error retain raises on purpose
becomes one clear line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from retain.errors import ArgumentError, RetainError

if TYPE_CHECKING:
    import pandas as pd

# What --help shows for an option's value: by option, else by type.
OPTION_METAVARS = {
    "--as-of": "YYYY-MM-DD",
    "--from": "YYYY-MM-DD",
    "--to": "YYYY-MM-DD",
    "--period": "month|quarter|year",
    "--rate": "CODE=RATE",
    "--map": "FIELD=COLUMN",
    "--currency": "CODE",
    "--format": "FORMAT",
    "--scheme": "quintiles|quartiles",
    "--min-risk": "medium|high|lost",
    "--unit": "D|W",
    "--model": "auto|bgnbd|mbgnbd|pnbd",
    "--host": "ADDRESS",
    "--sort": "COLUMN",
    "--value": "CELL",
    "--sku": "SKU",
    "--fit": "FIT_ID",
    "--origin": "YYYY-MM-DD",
}
METAVARS: dict[Any, str] = {int: "N", float: "NUMBER", str: "TEXT", Path: "FILE"}


class _NamedArgument(TyperArgument):
    """An argument whose help shows its name (SEGMENT, FILE) and no ``<str>`` beside it."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None

    def _usage_display_name(self) -> str:
        name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
        return name + ("..." if self.nargs != 1 else "")


def _name_values(params: list[Any]) -> None:
    """Give every parameter a metavar a person can read instead of ``<str>`` or
    ``<bool>``: flags show none, arguments their name in capitals, options one by type."""
    for param in params:
        if isinstance(param, TyperArgument):
            if param.metavar is None:
                param.metavar = (param.name or "value").upper()
            param.__class__ = _NamedArgument
        elif isinstance(param, TyperOption) and param.metavar is None:
            if param.is_flag:
                param.metavar = ""
            else:
                named = next((OPTION_METAVARS[o] for o in param.opts if o in OPTION_METAVARS), None)
                param.metavar = named or METAVARS.get(param.type_descriptor.annotation, "VALUE")


class RetainCommand(TyperCommand):
    """A command whose --help names each value (see :func:`_name_values`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _name_values(self.params)

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option


class RetainGroup(TyperGroup):
    """A command group whose --help shows no ``<bool>`` for --help itself."""

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option


class RetainTyper(typer.Typer):
    """typer.Typer whose commands are :class:`RetainCommand` unless told otherwise."""

    def command(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("cls", RetainCommand)
        return super().command(*args, **kwargs)


app = RetainTyper(
    cls=RetainGroup,
    name="retain",
    help="Customer lifetime value and retention: load orders, see what customers are worth.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DbOption = Annotated[
    Path,
    typer.Option("--db", help="The store, a DuckDB file.", envvar="RETAIN_DB", metavar="FILE"),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
# retain.store.DEFAULT_PATH, named here so that retain --help loads neither DuckDB nor pandas
DEFAULT_DB = Path("retain.duckdb")

F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(func: F) -> F:
    """Turn any RetainError (ArgumentError, DataError, StoreError, ...) into one
    line on stderr and exit code 2."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except RetainError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def to_jsonable(value: Any) -> Any:
    """Plain JSON types from DataFrames, numpy scalars and timestamps; NaN becomes null."""
    pd = sys.modules.get("pandas")  # a frame exists only where pandas was loaded
    if pd is not None and isinstance(value, pd.DataFrame):
        return json.loads(value.to_json(orient="records", date_format="iso"))
    if pd is not None and isinstance(value, pd.Series):
        return json.loads(value.to_json(date_format="iso"))
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # NaN and infinity are not JSON: null, as pandas writes them
    return value


def plural(count: int, word: str, many: str | None = None) -> str:
    """``1 row``, ``2 rows``, ``12,345 customers``: a count with its noun."""
    return f"{count:,} {word if count == 1 else (many or word + 's')}"


MONEY_COLUMNS = ("revenue", "clv", "value", "price", "aov", "spend", "cac", "amount", "monetary")
"""Columns whose name holds one of these are money: two decimals and thousands separators."""


def _cell(value: Any, money: bool) -> str:
    import pandas as pd

    if isinstance(value, list | tuple):
        return ", ".join(map(str, value))
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, pd.Timestamp) or hasattr(value, "strftime"):
        return value.strftime("%Y-%m-%d")
    if isinstance(value, int) or (hasattr(value, "dtype") and value.dtype.kind in "iu"):
        return f"{value:,}"
    if isinstance(value, float) or (hasattr(value, "dtype") and value.dtype.kind == "f"):
        return f"{value:,.2f}" if money else f"{value:,.3f}"
    return str(value)


def aligned(head: list[str], rows: list[list[str]]) -> list[str]:
    """Rows of text cells as lines of columns two spaces apart, each as wide as its widest
    cell: the first column left-aligned, the others (numbers) right-aligned."""
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return [
        "  ".join(
            [r[0].ljust(widths[0]), *(v.rjust(w) for v, w in zip(r[1:], widths[1:], strict=True))]
        )
        for r in [head, *rows]
    ]


def people_table(frame: pd.DataFrame) -> str:
    """A DataFrame as text for people: money with two decimals and thousands
    separators, counts with thousands separators, dates as YYYY-MM-DD, gaps as '-'."""
    import pandas as pd

    if frame.empty:
        return "(no rows)"
    shown = pd.DataFrame(
        {
            column: [
                _cell(v, any(word in str(column).lower() for word in MONEY_COLUMNS))
                for v in frame[column].astype(object)
            ]
            for column in frame.columns
        }
    )
    return shown.to_string(index=False)


def emit(value: Any, as_json: bool, table: Callable[[], str] | None = None) -> None:
    """Print a result as JSON or as text for people."""
    pd = sys.modules.get("pandas")  # a frame exists only where pandas was loaded
    if as_json:
        typer.echo(json.dumps(to_jsonable(value), indent=2, default=str, allow_nan=False))
    elif table is not None:
        typer.echo(table())
    elif pd is not None and isinstance(value, pd.DataFrame):
        typer.echo(people_table(value))
    else:
        typer.echo(str(value))


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # no stderr, or a closed one
        return False


@contextmanager
def progress(message: str, as_json: bool = False) -> Iterator[None]:
    """A spinner, the step and the time elapsed on stderr while a long step runs.

    Only when stderr is a terminal and never with ``--json``: piped, redirected or
    scripted runs see nothing of it, and it is cleared when the step ends.
    """
    if as_json or not _stderr_is_terminal():
        yield
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    console = Console(file=sys.stderr, force_terminal=True)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(
        *columns, console=console, transient=True, redirect_stdout=False, redirect_stderr=False
    ) as bar:
        bar.add_task(message, total=None)
        yield


# --- foundation: ingest, status, customers --------------------------------------------


def _pairs(values: list[str] | None, option: str, form: str = "KEY=VALUE") -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ArgumentError(f"{option} takes {form}, got {item!r}")
        pairs[key.strip()] = value.strip()
    return pairs


def _rates(values: list[str] | None) -> dict[str, float]:
    """``--rate CODE=RATE`` options as numbers, each finite and above 0."""
    rates: dict[str, float] = {}
    for code, text in _pairs(values, "--rate", "CODE=RATE, e.g. EUR=1.08").items():
        try:
            rate = float(text)
        except ValueError:
            raise ArgumentError(
                f"--rate {code} takes a number (reporting-currency units per {code}), got {text!r}"
            ) from None
        if not math.isfinite(rate) or rate <= 0:
            raise ArgumentError(f"--rate {code} must be a positive number, got {text!r}")
        rates[code] = rate
    return rates


@app.command()
@friendly_errors
def ingest(
    path: Annotated[
        Path, typer.Argument(help="CSV, Parquet, Shopify export or CDNOW file.", metavar="FILE")
    ],
    format: Annotated[
        str,
        typer.Option(
            "--format",
            help="auto, orders, shopify, cdnow, customers, lines, spend, subscriptions, stripe, "
            "feedback or events.",
        ),
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
    currency: Annotated[
        str | None,
        typer.Option(
            metavar="CODE",
            help="Reporting currency (ISO 4217). Default: the store's currency setting, USD "
            "for a new store.",
        ),
    ] = None,
    rate: Annotated[
        list[str] | None,
        typer.Option("--rate", help="CODE=RATE: reporting-currency units per unit of CODE."),
    ] = None,
    date_format: Annotated[
        str | None,
        typer.Option(
            "--date-format",
            metavar="FORMAT",
            help="How the file writes dates when not YYYY-MM-DD, e.g. MM/DD/YYYY, "
            "DD/MM/YYYY or %d.%m.%Y.",
        ),
    ] = None,
    pending_revenue: Annotated[
        bool,
        typer.Option(
            "--pending-revenue",
            help="Count orders awaiting payment (pending, authorized, unpaid) as purchases; "
            "by default they wait in excluded_orders until paid.",
        ),
    ] = False,
    encoding: Annotated[
        str | None,
        typer.Option(
            "--encoding",
            metavar="NAME",
            help="The text file's encoding, e.g. cp1252 (Windows-1252) or latin-1. "
            "Default: by its byte-order mark (UTF-8, UTF-16), else UTF-8.",
        ),
    ] = None,
    db: DbOption = DEFAULT_DB,
    as_json: JsonOption = False,
) -> None:
    """Load a file into the store; bad rows are quarantined with the reason."""
    from retain.errors import StoreLocked
    from retain.ingest import ingest as run_ingest
    from retain.store import Store

    rates = _rates(rate)
    created = not db.exists()
    options: dict[str, Any] = {
        "format": format,
        "mapping": _pairs(map, "--map"),
        "as_of": as_of,
        "currency": currency,
        "rates": rates,
        "pending_revenue": pending_revenue,
        "date_format": date_format,
        "encoding": encoding,
    }
    try:
        with Store(db) as store, progress(f"reading {path.name} ...", as_json):
            report = run_ingest(store, path, **options)
    except StoreLocked:
        from retain.service.handoff import ingest_through, running_service

        url = running_service(db)
        if url is None:  # another process, but no service of this store: its error stands
            raise
        with progress(f"handing {path.name} to the service at {url} ...", as_json):
            report = ingest_through(url, path, options, db)
        if not as_json:
            typer.echo(f"the store is held by the running service at {url}: it ingested the file")
    except Exception:
        if created:  # a failed first ingest leaves no empty store behind
            for leftover in (db, db.with_name(db.name + ".wal")):
                leftover.unlink(missing_ok=True)
        raise
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
        def shown(key: str, value: Any) -> str:
            if key in ("first_order", "last_order") and isinstance(value, str):
                return value[:10]  # the day: YYYY-MM-DD
            return _cell(value, any(word in key for word in MONEY_COLUMNS))

        return "\n".join(f"{k.replace('_', ' '):>20}: {shown(k, v)}" for k, v in result.items())

    emit(result, as_json, table)


@app.command()
@friendly_errors
def erase(
    customer: Annotated[str, typer.Argument(help="The customer's id or e-mail.")],
    remove_orders: Annotated[
        bool | None,
        typer.Option(
            "--remove-orders/--unlink-orders",
            help="Delete their orders too, or keep them for the revenue totals under an "
            "anonymous id (default: the erase_orders setting, unlink unless set).",
        ),
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", help="Erase; without it, only say what would go.")
    ] = False,
    db: DbOption = DEFAULT_DB,
    as_json: JsonOption = False,
) -> None:
    """Erase a customer from every table on their request (right to erasure)."""
    from retain.erase import erase_customer
    from retain.store import Store

    _require_store(db)
    orders = None if remove_orders is None else "remove" if remove_orders else "unlink"
    with Store(db) as store:
        report = erase_customer(store, customer, orders=orders, dry_run=not yes)

    def text() -> str:
        said = report.summary()
        return said + ("" if yes else ". Nothing was changed: add --yes to erase")

    emit(report.__dict__, as_json, text)


@app.command()
@friendly_errors
def settings(
    action: Annotated[
        str | None, typer.Argument(help="set, to change a setting; none to show them all.")
    ] = None,
    name: Annotated[str | None, typer.Argument(help="The setting to change.")] = None,
    value: Annotated[str | None, typer.Argument(help="Its new value; default removes it.")] = None,
    db: DbOption = DEFAULT_DB,
    as_json: JsonOption = False,
) -> None:
    """The store's settings, the defaults of every command: `retain settings set NAME VALUE`
    changes one (currency, margin, discount_rate per year, as_of or live, window_days or
    auto, time_zone)."""
    from retain.config import SETTINGS, set_setting, settings_table
    from retain.store import Store

    if action is None:
        with Store(db, read_only=True) as store:
            rows = settings_table(store)

        def table() -> str:
            return "\n".join(
                f"{r['name']:>13}: {r['shown']}"
                + ("" if r["source"] == "default" else f"  ({r['source']})")
                + f"\n{'':>15}{r['help']}; takes {r['expected']}"
                for r in rows
            )

        emit(rows, as_json, table)
        return
    if action != "set" or name is None or value is None:
        raise ArgumentError(
            "retain settings takes no argument (show them) or: set NAME VALUE, with NAME one "
            f"of {', '.join(SETTINGS)}"
        )
    with Store(db) as store:
        set_setting(store, name, value)
        row = next(r for r in settings_table(store) if r["name"] == name)
    emit(row, as_json, lambda: f"{name} = {row['shown']}")


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
    limit: Annotated[int, typer.Option(help="How many rows.", min=0)] = 50,
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
        total = int(store.scalar("SELECT count(*) FROM quarantine"))

    def table() -> str:
        if total == 0:
            return "no rows in quarantine"
        if len(frame) < total:
            head = (
                f"showing {len(frame):,} of {plural(total, 'quarantined row')} "
                f"(--limit {total} shows them all)"
            )
        else:
            head = f"{plural(total, 'quarantined row')}:"
        # the raw row is long: JSON carries it, the table leaves it out
        return head if frame.empty else f"{head}\n{people_table(frame.drop(columns='raw'))}"

    emit(frame, as_json, table)


# --- metrics (retain.metrics) ---------------------------------------------------------

PeriodOption = Annotated[
    str, typer.Option("--period", help="Period of the rates and tables: month, quarter or year.")
]
MarginOption = Annotated[
    float | None,
    typer.Option(
        "--margin",
        help="Fraction of net revenue kept, e.g. 0.3 for 30%. Default: the store's margin "
        "setting, else the margin of the last `retain score`, else 1.",
    ),
]
WindowDaysOption = Annotated[
    int | None,
    typer.Option(
        "--window-days",
        help="A customer is someone who ordered in the last N days (retention). Default: the "
        "store's window_days setting, else from the store's purchase rhythm.",
    ),
]
MetricsAsOfOption = Annotated[
    str | None,
    typer.Option(
        "--as-of",
        help="Observation date YYYY-MM-DD; later orders are ignored. Default: last order.",
    ),
]


def _fmt_number(value: Any, spec: str = ",.2f", empty: str = "-") -> str:
    import pandas as pd

    return empty if value is None or pd.isna(value) else format(value, spec)


def _fmt_table(frame: pd.DataFrame, specs: dict[str, str]) -> str:
    """A DataFrame as text, numbers formatted per column, empty cells as '-'."""
    import pandas as pd

    if frame.empty:
        return "(no rows)"
    shown = frame.copy()
    for column in shown.columns:
        if column in specs:
            shown[column] = [_fmt_number(v, specs[column]) for v in shown[column]]
        elif pd.api.types.is_integer_dtype(shown[column]) or pd.api.types.is_datetime64_any_dtype(
            shown[column]
        ):  # counts with thousands separators, dates as YYYY-MM-DD
            shown[column] = [_cell(v, False) for v in shown[column].astype(object)]
    return shown.astype(object).where(shown.notna(), "-").to_string(index=False)


@app.command()
@friendly_errors
def metrics(
    period: PeriodOption = "month",
    margin: MarginOption = None,
    discount_rate: Annotated[
        float | None,
        typer.Option(
            "--discount-rate",
            help="Discount rate per year of the formula CLV, e.g. 0.1 (applied per period as "
            "the equivalent rate). Default: the store's discount_rate setting.",
        ),
    ] = None,
    window_days: WindowDaysOption = None,
    top: Annotated[int, typer.Option("--top", help="Most valuable customers to list.")] = 10,
    as_of: MetricsAsOfOption = None,
    db: DbOption = DEFAULT_DB,
    as_json: JsonOption = False,
) -> None:
    """CLV, AOV, repeat rate, retention and churn per period, formula CLV, top customers."""
    from retain.metrics import metrics_report
    from retain.store import Store

    with Store(db, read_only=True) as store:
        store.require_orders()
        report = metrics_report(
            store,
            period,
            margin=margin,
            discount_rate=discount_rate,
            window_days=window_days,
            top=top,
            as_of=as_of,
        )

    def table() -> str:
        o, f = report["overview"], report["formula_clv"]
        lines = [
            f"as of {o['as_of']}: {period}s, margin {o['margin']:g}, a customer is someone "
            f"who ordered in the last {o['window_days']} days",
            f"{'customers':>24}: {o['customers']:,}",
            f"{'orders':>24}: {o['orders']:,}",
            f"{'net revenue':>24}: {o['net_revenue']:,.2f}",
            f"{'AOV':>24}: {o['aov']:,.2f}",
            f"{'average historical CLV':>24}: {o['average_historical_clv']:,.2f}",
            f"{'median historical CLV':>24}: {o['median_historical_clv']:,.2f}",
            f"{'repeat purchase rate':>24}: {o['repeat_purchase_rate']:.1f}%",
        ]
        if o["retention_period"]:
            lines.append(
                f"{'retention ' + o['retention_period']:>24}: {o['retention_rate']:.1f}% "
                f"(churn {o['churn_rate']:.1f}%)"
            )
        if o["cac"] is not None:
            lines.append(
                f"{'blended CAC':>24}: {o['cac']:,.2f} (CLV:CAC {_fmt_number(o['clv_cac'])})"
            )
        if f["clv"] is not None:
            discount = (
                f", discounted at {f['discount_rate']:g} per year "
                f"({f['discount_rate_per_period']:.4g} per {period})"
                if f["discount_rate"]
                else ""
            )
            lines.append(
                f"{'formula CLV':>24}: {f['clv']:,.2f} = AOV {f['aov']:,.2f} x "
                f"{f['purchase_frequency']:.3f} purchases per {period} x "
                f"{f['lifespan']:.1f} {period}s (churn {f['churn_rate']:.1f}% per {period}) "
                f"x margin {f['margin']:g}{discount}; over {f['periods'][0]} to {f['periods'][-1]}"
            )
        elif f["note"]:
            lines.append(f"{'formula CLV':>24}: - ({f['note']})")
        periods = _fmt_table(
            report["periods"],
            {
                "customers_at_start": ",.0f",
                "new_customers": ",.0f",
                "customers_at_end": ",.0f",
                "retention_rate": ".1f",
                "churn_rate": ".1f",
                "customers": ",.0f",
                "orders": ",.0f",
                "net_revenue": ",.0f",
                "aov": ",.2f",
                "purchase_frequency": ".3f",
                "returning_revenue_share": ".1f",
            },
        )
        lines += ["", f"per {period} (rates and shares in %):", periods]
        top_customers = report["top_customers"]
        if len(top_customers):
            columns = ["customer_id", "orders", "net_revenue", "aov", "days_since_last_order"]
            shown = top_customers[[*columns, "historical_clv"]]
            lines += [
                "",
                f"top {len(shown)} customers by historical CLV:",
                _fmt_table(shown, {"net_revenue": ",.2f", "aov": ",.2f", "historical_clv": ",.2f"}),
            ]
        return "\n".join(lines)

    emit(report, as_json, table)


@app.command()
@friendly_errors
def cohorts(
    period: PeriodOption = "month",
    margin: MarginOption = None,
    value: Annotated[
        str,
        typer.Option(
            "--value",
            help="Cells of the table: active_share (%), active_customers, net_revenue, "
            "cumulative_net_revenue_per_customer or cumulative_clv.",
        ),
    ] = "active_share",
    as_of: MetricsAsOfOption = None,
    db: DbOption = DEFAULT_DB,
    as_json: JsonOption = False,
) -> None:
    """Cohorts by first-order period: who is still buying, and the cohort CLV curve."""
    from retain.metrics import cohort_matrix
    from retain.metrics import cohorts as build_cohorts
    from retain.store import Store

    with Store(db, read_only=True) as store:
        store.require_orders()
        frame = build_cohorts(store, period, margin=margin, as_of=as_of)
    matrix = cohort_matrix(frame, value)

    def table() -> str:
        spec = {"active_share": ".1f", "net_revenue": ",.0f", "active_customers": ",.0f"}.get(
            value, ",.2f"
        )
        shown = matrix.copy()
        shown[shown.columns[0]] = [_fmt_number(v, ",.0f", "") for v in shown[shown.columns[0]]]
        for column in shown.columns[1:]:
            shown[column] = [_fmt_number(v, spec, "") for v in shown[column]]
        return (
            f"{value} by cohort (rows, first-order {period}) and {period}s since "
            f"(columns), as of {frame.attrs['as_of']}\n{shown.to_string()}"
        )

    emit(frame, as_json, table)


@app.command()
@friendly_errors
def acquisition(
    period: PeriodOption = "month",
    margin: MarginOption = None,
    horizon_months: Annotated[
        int | None,
        typer.Option(
            "--horizon-months",
            help="CLV over each customer's first N months (default: all history to date).",
        ),
    ] = None,
    as_of: MetricsAsOfOption = None,
    db: DbOption = DEFAULT_DB,
    as_json: JsonOption = False,
) -> None:
    """CAC per channel and period, CLV:CAC and payback; flags channels whose CLV < CAC."""
    from retain.config import resolve_margin
    from retain.metrics import acquisition_report
    from retain.store import Store

    with Store(db, read_only=True) as store:
        store.require_orders()
        margin = resolve_margin(store, margin)
        report = acquisition_report(
            store, period, margin=margin, horizon_months=horizon_months, as_of=as_of
        )
    channels, per_period = report["channels"], report["cac"]
    result = {"channels": channels, "cac": per_period, **channels.attrs}

    def table() -> str:
        if channels.empty:
            return (
                f"{channels.attrs['note']}: load it with "
                "`retain ingest spend.csv --format spend` (date, channel, amount)\n\n"
                f"new customers per {period} and channel:\n"
                + _fmt_table(per_period.drop(columns=["period_start", "spend", "cac"]), {})
            )
        money = {
            "spend": ",.2f",
            "new_customers": ",.0f",
            "cac": ",.2f",
            "clv": ",.2f",
            "clv_cac": ".2f",
        }
        flagged = channels[channels["below_cac"]]
        lines = [
            f"channels, customers acquired {channels.attrs['spend_from']} to "
            f"{channels.attrs['spend_to']}, margin {margin:g}:",
            _fmt_table(channels.drop(columns="note"), money),
        ]
        lines += [
            f"warning: {c}: {n}" for c, n in zip(flagged["channel"], flagged["note"], strict=True)
        ]
        lines += [
            "",
            f"CAC per {period}:",
            _fmt_table(per_period.drop(columns="period_start"), money),
        ]
        return "\n".join(lines)

    emit(result, as_json, table)


@app.command()
@friendly_errors
def alerts(
    period: PeriodOption = "month",
    baseline: Annotated[
        int,
        typer.Option("--baseline", help="Periods before each checked one that form its baseline."),
    ] = 6,
    recent: Annotated[int, typer.Option("--recent", help="Last complete periods to check.")] = 3,
    alpha: Annotated[float, typer.Option("--alpha", help="One-sided significance level.")] = 0.01,
    window_days: WindowDaysOption = None,
    as_of: MetricsAsOfOption = None,
    db: DbOption = DEFAULT_DB,
    as_json: JsonOption = False,
) -> None:
    """Recent drops in retention, AOV, frequency, new customers or repeat revenue share."""
    from retain.metrics import alerts as find_alerts
    from retain.store import Store

    with Store(db, read_only=True) as store:
        store.require_orders()
        frame = find_alerts(
            store,
            period,
            baseline_periods=baseline,
            recent_periods=recent,
            alpha=alpha,
            window_days=window_days,
            as_of=as_of,
        )
    result = {"alerts": frame, **frame.attrs}

    def table() -> str:
        from retain.metrics.alerts import DRIFT_METRICS

        attrs = frame.attrs
        lines = [f"alert: {reason}" for reason in frame["reason"]]
        if not (~frame["metric"].isin(DRIFT_METRICS)).any():
            lines.append(
                f"no trend alerts: {attrs['note']}"
                if attrs["note"]
                else f"no trend alerts: {attrs['checked']} checks of the last {recent} complete "
                f"{period}s against their {baseline}-{period} baselines found no drop at "
                f"p < {alpha:g}"
            )
        drift = attrs.get("drift") or {}
        if not drift.get("checked"):
            lines.append(f"no drift check: {drift.get('note')}")
        elif not frame["metric"].isin(DRIFT_METRICS).any():
            lines.append(_no_drift_text(drift))
        elif drift.get("note"):
            lines.append(f"drift check: {drift['note']}")
        return "\n".join(lines)

    emit(result, as_json, table)


def _no_drift_text(drift: dict[str, Any]) -> str:
    """The drift check's figures when it found nothing."""
    ece, baseline = drift.get("ece"), drift.get("ece_baseline")
    bias = drift.get("bias_pct")
    return (
        f"no drift: backtest {drift['backtest_id']}, {drift['model']} over the "
        f"{drift['horizon_days']} days after {drift['origin']}: forecast bias "
        + ("-" if bias is None else f"{bias:+.1f}%")
        + ", calibration error "
        + ("-" if ece is None else f"{ece:.3f}")
        + ("" if baseline is None else f" (earlier origins {baseline:.3f})")
        + (f"; {drift['note']}" if drift.get("note") else "")
    )


# --- models (retain.models): fit, score -----------------------------------------------


def _warn_all(messages: list[str]) -> None:
    for message in messages:
        typer.echo(f"warning: {message}", err=True)


def _require_store(db: Path) -> None:
    """A command that reads a fitted store: a clear error when there is no store at all."""
    if not db.exists():
        from retain.errors import StoreError

        raise StoreError(
            f"no store at {db}: ingest some orders first (retain ingest FILE --db {db})"
        )


@app.command()
@friendly_errors
def fit(
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="bgnbd, mbgnbd, pnbd, or auto (the best holdout log-likelihood of the three "
            "that passes the fit guard).",
        ),
    ] = "auto",
    holdout_weeks: Annotated[
        int | None,
        typer.Option(
            "--holdout-weeks",
            help="Weeks held out to score the models (auto: default a quarter of the history).",
            min=1,
        ),
    ] = None,
    unit: Annotated[
        str, typer.Option("--unit", help="Time unit of the parameters: D (days) or W (weeks).")
    ] = "D",
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="Observation date YYYY-MM-DD or live. Default: the store's as_of setting, "
            "else the last order's day.",
        ),
    ] = None,
    learned: Annotated[
        bool,
        typer.Option(
            "--learned",
            help="Also train the learned churn model (gradient-boosted trees on the store's "
            "own past) and keep it only if it beats the chosen model on the holdout.",
        ),
    ] = False,
    db: DbOption = DEFAULT_DB,
    as_json: JsonOption = False,
) -> None:
    """Fit the repeat-purchase and spend models on the store and keep them."""
    from retain.scoring import MODEL_CHOICES, FitRefused, fit_store, model_card
    from retain.store import Store

    if model not in MODEL_CHOICES:
        raise typer.BadParameter(f"--model must be one of {', '.join(MODEL_CHOICES)}")
    if unit not in ("D", "W"):
        raise typer.BadParameter("--unit must be D or W")
    _require_store(db)
    step = "comparing BG/NBD, MBG/NBD and Pareto/NBD" if model == "auto" else f"fitting {model}"
    if learned:
        step += ", then the learned model against the choice"
    card: dict[str, Any] = {}
    try:
        with Store(db) as store, progress(f"{step} ...", as_json):
            try:
                report = fit_store(
                    store,
                    model=model,
                    holdout_weeks=holdout_weeks,
                    unit=unit,
                    as_of=as_of,
                    learned=learned,
                )
            except FitRefused as refused:
                card = model_card(store, refused.report.fit_id)
                raise
            card = model_card(store, report.fit_id)
    except FitRefused as refused:
        # the checks that refused it, as JSON or as text, before the one-line error
        refusal = refused.report
        _warn_all(refusal.warnings)
        emit(
            {**refusal.to_dict(), "card": card},
            as_json,
            lambda: "\n".join([_card_data_text(card), _guard_text(refusal)]),
        )
        raise
    _warn_all(report.warnings)

    def table() -> str:
        unit_name = "days" if report.unit == "D" else "weeks"
        lines = [
            f"fit {report.fit_id}: {report.model} on {report.customers:,} customers to "
            f"{report.observation_end} (time in {unit_name}), log-likelihood "
            f"{report.log_likelihood:,.2f}{'' if report.converged else ' (not converged)'}",
            _card_data_text(card),
            "  "
            + ", ".join(
                f"{k} = {v:.4g}{_se_text(report.standard_errors[k])}"
                for k, v in report.params.items()
            ),
        ]
        if report.spend_params:
            lines.append(
                "  spend (Gamma-Gamma): "
                + ", ".join(f"{k} = {v:.4g}" for k, v in report.spend_params.items())
            )
        if report.candidates is not None:
            columns = ["model", "holdout_log_likelihood_mean", "actual", "predicted", "rmse", "mae"]
            # "buys again in the holdout", where the comparison scored it
            columns += [c for c in ("auc", "log_loss") if c in report.candidates]
            shown = report.candidates[columns].rename(
                columns={"holdout_log_likelihood_mean": "log-lik/customer"}
            )
            holdout = card.get("holdout") or {}
            lines += [
                "",
                f"holdout: the last {report.holdout_weeks} weeks (calibration to "
                f"{holdout.get('calibration_end')}); models compared by the "
                "log-likelihood of each customer's holdout purchase count (higher is better; "
                "RMSE and MAE of the counts"
                + (", AUC and log-loss of buying again" if len(columns) > 6 else "")
                + " for context)",
                _fmt_table(
                    shown,
                    {
                        "log-lik/customer": ".5f",
                        "actual": ",.0f",
                        "predicted": ",.1f",
                        "mae": ".3f",
                        "rmse": ".3f",
                        "auc": ".3f",
                        "log_loss": ".4f",
                    },
                ),
            ]
            if report.choice:
                lines.append(f"chosen: {report.choice['reason']}")
        lines += ["", _guard_text(report)]
        if report.learned is not None:
            lines += ["", f"learned model: {report.learned['reason']}"]
        lines += ["", _card_backtest_text(card, db)]
        lines.append(f"\nnext: retain score --db {db}")
        return "\n".join(lines)

    emit({**report.to_dict(), "card": card}, as_json, table)


def _card_data_text(card: dict[str, Any]) -> str:
    """The model card's data range, one line."""
    data = card.get("data") or {}
    if not data:
        return "  data: -"
    counted = "" if data.get("recorded") else " (counted from the orders stored now)"
    return (
        f"  data: orders {data.get('first_order_day')} to {data.get('last_order_day')} "
        f"(observation end {data.get('observation_end')}): {data.get('customers', 0):,} "
        f"customers, {data.get('orders', 0):,} orders, {data.get('repeat_buyers', 0):,} "
        f"repeat buyers{counted}"
    )


def _card_backtest_text(card: dict[str, Any], db: Path) -> str:
    """The model card's backtest lines: the latest run's means over origins per model and
    horizon, or how to make one."""
    import pandas as pd

    run = card.get("backtest")
    if not run:
        return "\n".join(
            [
                f"backtest: none yet (retain backtest --db {db} scores every model on past "
                "origins)",
                *(f"note: {n}" for n in card.get("notes", [])),
            ]
        )
    best = ", ".join(f"{b['horizon_days']}d {b['model']}" for b in run.get("best", []))
    lines = [
        f"backtest {run['backtest_id']} (orders to {run['as_of']}; "
        f"{len(run.get('origins', []))} origins), means over origins; best by log-loss: "
        f"{best or '-'}"
    ]
    if run.get("summary"):
        frame = pd.DataFrame(run["summary"])
        keep = [
            c
            for c in ("model", "horizon_days", "origins", "auc", "log_loss", "ece", "bias_pct")
            if c in frame
        ]
        lines.append(
            _fmt_table(
                frame[keep].rename(columns={"horizon_days": "days"}),
                {"auc": ".3f", "log_loss": ".4f", "ece": ".4f", "bias_pct": "+.1f"},
            )
        )
    for row in run.get("learned", []):
        verdict = "better" if row["better"] else "not better"
        lines.append(
            f"learned model at {row['horizon_days']} days: log-loss {row['log_loss']:.4f} "
            f"against {row['best_btyd_log_loss']:.4f} for {row['best_btyd']} ({verdict})"
        )
    lines += [f"note: {n}" for n in card.get("notes", [])]
    return "\n".join(lines)


@app.command()
@friendly_errors
def backtest(
    origins: Annotated[
        list[str] | None,
        typer.Option(
            "--origin",
            help="A calibration end YYYY-MM-DD (repeatable). Default: per horizon the last 4 "
            "quarter ends that leave the whole horizon before the observation day.",
        ),
    ] = None,
    horizons: Annotated[
        list[int] | None,
        typer.Option(
            "--horizon",
            help="Days forecast after each origin (repeatable). Default: 30, 90 and 365, "
            "those the history can hold.",
            min=1,
        ),
    ] = None,
    models: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            help="bgnbd, mbgnbd, pnbd or learned (repeatable). Default: all.",
            metavar="bgnbd|mbgnbd|pnbd|learned",
        ),
    ] = None,
    no_learned: Annotated[
        bool, typer.Option("--no-learned", help="Leave the learned model out.")
    ] = False,
    db: DbOption = DEFAULT_DB,
    as_json: JsonOption = False,
) -> None:
    """Score every model's past forecasts on the store's own history and keep the run."""
    from contextlib import ExitStack

    from retain.backtest import backtest as run_backtest
    from retain.store import Store

    _require_store(db)
    with Store(db) as store, ExitStack() as shown:

        def step(message: str) -> None:
            shown.close()  # the previous step's spinner
            shown.enter_context(progress(message + " ...", as_json))

        run = run_backtest(
            store,
            origins=origins or None,
            horizons=horizons or None,
            models=models or None,
            learned=not no_learned,
            progress=step,
        )
        shown.close()
    result = run.to_dict()
    _warn_all(result["warnings"])
    emit(result, as_json, lambda: _backtest_text(result))


def _backtest_text(result: dict[str, Any]) -> str:
    """A backtest for people: the means per model and horizon, then each origin."""
    import pandas as pd

    origins = result["origins"]
    lines = [
        f"backtest {result['backtest_id']} as of {result['as_of']}: "
        f"{plural(len(origins), 'origin')} ({', '.join(origins)}), horizons "
        f"{', '.join(str(h) for h in result['horizons'])} days (buying again: a purchase "
        "within the horizon)",
        "",
    ]
    best = {(b["horizon_days"], b["model"]) for b in result["best"]}
    frame = pd.DataFrame(
        [
            {
                "horizon": f"{row['horizon_days']} d",
                "model": row["model"],
                "origins": row["origins"],
                "AUC": row["auc"],
                "log-loss": row["log_loss"],
                "Brier": row["brier"],
                "ECE": row["ece"],
                "bias %": row["bias_pct"],
                "Gini": row["gini"],
                "best": "best" if (row["horizon_days"], row["model"]) in best else "",
            }
            for row in result["summary"]
        ]
    )
    specs = {"AUC": ".3f", "log-loss": ".4f", "Brier": ".4f", "ECE": ".3f", "Gini": ".3f"}
    lines.append(_fmt_table(frame, {**specs, "bias %": "+.1f"}))
    lines += [
        "",
        "means over the origins; best: the lowest mean log-loss",
        "",
        "by origin: log-loss/bias of the purchases forecast, per horizon",
    ]
    for origin in origins:
        rows = [r for r in result["results"] if r["origin"] == origin]
        parts = []
        for h in sorted({r["horizon_days"] for r in rows}):
            at = [r for r in rows if r["horizon_days"] == h]
            scores = ", ".join(
                f"{r['model']} "
                + (
                    "failed"
                    if "error" in r
                    else f"{_fmt_number(r['log_loss'], '.4f')}/{_fmt_number(r['bias_pct'], '+.1f')}%"
                )
                for r in at
            )
            parts.append(f"{h} d ({at[0]['buyers']:,} of {at[0]['customers']:,} bought): {scores}")
        lines.append(f"{origin}  " + "; ".join(parts))
    for r in result["results"]:
        if "error" in r:
            lines.append(f"  {r['origin']} {r['horizon_days']} d {r['model']}: {r['error']}")
    return "\n".join(lines)


def _se_text(se: float | None) -> str:
    """A parameter's standard error as ``retain fit`` prints it beside the value: none
    where the data do not pin the parameter down (NaN, or missing)."""
    return " (no se)" if se is None or not math.isfinite(se) else f" (se {se:.2g})"


def _guard_text(report: Any) -> str:
    """The fit guard's checks of every model tried, one line each."""
    lines = []
    for tried in report.guard:
        verdict = "kept" if tried["kept"] else "refused"
        lines.append(f"fit guard, {tried['model']}: {verdict}")
        for check in tried["checks"]:
            mark = "ok  " if check["passed"] else "FAIL"
            lines.append(f"  {mark} {check['name']}: {check['message']}")
    return "\n".join(lines)


@app.command()
@friendly_errors
def score(
    fit_id: Annotated[
        int | None, typer.Option("--fit", help="The fit to use (default: the latest).")
    ] = None,
    discount_rate: Annotated[
        float | None,
        typer.Option(
            "--discount-rate",
            help="Discount rate per year of the CLV, e.g. 0.1. Default: the store's "
            "discount_rate setting.",
        ),
    ] = None,
    margin: MarginOption = None,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="Observation date YYYY-MM-DD or live. Default: the store's as_of setting, "
            "else the last order's day.",
        ),
    ] = None,
    db: DbOption = DEFAULT_DB,
    as_json: JsonOption = False,
) -> None:
    """Score every customer (P(alive), purchases, CLV, next purchase) into customer_scores."""
    from retain.scoring import load_score_basis, score_store
    from retain.store import Store

    _require_store(db)
    with Store(db) as store, progress("scoring every customer ...", as_json):
        report = score_store(
            store, fit_id=fit_id, as_of=as_of, discount_rate=discount_rate, margin=margin
        )
        basis = load_score_basis(store)
    _warn_all(report.warnings)

    def table() -> str:
        clv = "-" if report.clv_12m is None else f"{report.clv_12m:,.2f}"
        return "\n".join(
            [
                f"scored {plural(report.customers, 'customer')} as of {report.as_of} with fit "
                f"{report.fit_id} ({report.model}) into customer_scores",
                f"{'mean P(alive)':>28}: {report.mean_p_alive:.3f}",
                f"{'purchases, next 365 days':>28}: {report.expected_purchases_365d:,.1f}",
                f"{'CLV, next 12 months':>28}: {clv} (margin {basis.margin:g}, discounted "
                f"{basis.discount_rate:g} per year)",
                f"{'next purchase within a year':>28}: {report.with_next_purchase_date:,} customers",
                *(
                    [
                        f"{'learned model':>28}: {report.learned['customers']:,} customers "
                        f"into learned_scores, reasons for {report.learned['reasons']:,} at "
                        "risk (retain at-risk shows them)"
                    ]
                    if report.learned
                    else []
                ),
            ]
        )

    emit(report.to_dict(), as_json, table)


# --- segments (retain.segments) -------------------------------------------------------

SegmentAsOfOption = Annotated[
    str | None,
    typer.Option(
        "--as-of", help="Observation date YYYY-MM-DD. Default: the day of the last order."
    ),
]
SegmentSchemeOption = Annotated[
    str, typer.Option("--scheme", help="quintiles (scores 1-5) or quartiles (scores 1-4).")
]
SegmentRulesOption = Annotated[
    Path | None,
    typer.Option("--rules", help="Segment rule file (TOML). Default: the one shipped with retain."),
]


def _no_model_note(attrs: dict[Any, Any]) -> None:
    if attrs.get("model") == "none":
        typer.echo(
            "note: no model scores in the store (run `retain score`): risk rests on how overdue "
            "customers are, and value at stake is unknown",
            err=True,
        )


@app.command()
@friendly_errors
def segments(
    as_of: SegmentAsOfOption = None,
    scheme: SegmentSchemeOption = "quintiles",
    rules: SegmentRulesOption = None,
    db: DbOption = DEFAULT_DB,
    as_json: JsonOption = False,
) -> None:
    """Customers by RFM segment: how many, their revenue, who is at risk, what to do."""
    from retain.segments import segment_summary
    from retain.store import Store

    with Store(db, read_only=True) as store:
        store.require_orders()
        frame = segment_summary(store, as_of=as_of, scheme=scheme, rules=rules)
    _no_model_note(frame.attrs)

    def table() -> str:
        import pandas as pd

        shown = pd.DataFrame(
            {
                "segment": frame["segment"],
                "customers": frame["customers"].map("{:,}".format),
                "share": frame["share_of_customers"].map("{:.1%}".format),
                "net_revenue": frame["net_revenue"].map("{:,.0f}".format),
                "revenue_share": frame["share_of_revenue"].map("{:.1%}".format),
                "at_risk": frame["at_risk"].map("{:,}".format),
                "value_at_stake": frame["value_at_stake"].map(
                    lambda v: "-" if pd.isna(v) else f"{v:,.0f}"
                ),
            }
        )
        actions = "\n".join(
            f"  {s}: {a}" for s, a in zip(frame["segment"], frame["action"], strict=True)
        )
        return (
            f"segments on {frame.attrs['as_of']} ({frame.attrs['scheme']})\n"
            f"{shown.to_string(index=False)}\n\nwhat to do:\n{actions}"
        )

    emit(frame, as_json, table)


@app.command()
@friendly_errors
def whatif(
    months: Annotated[
        int, typer.Option("--months", help="How many months to project (of 365.25/12 days).")
    ] = 12,
    dropout_change: Annotated[
        float,
        typer.Option(
            "--dropout-change", help="Relative change of the chance to drop out: -0.2 = 20% lower."
        ),
    ] = 0.0,
    purchase_rate_change: Annotated[
        float,
        typer.Option(
            "--purchase-rate-change", help="Relative change of how often active customers buy."
        ),
    ] = 0.0,
    spend_change: Annotated[
        float, typer.Option("--spend-change", help="Relative change of the spend per order.")
    ] = 0.0,
    campaign_reach: Annotated[
        float | None,
        typer.Option(
            "--campaign-reach",
            help="A retention campaign: the share of customers it reaches (with "
            "--campaign-cost and --campaign-dropout-change).",
        ),
    ] = None,
    campaign_cost: Annotated[
        float | None,
        typer.Option("--campaign-cost", help="What reaching one customer costs."),
    ] = None,
    campaign_dropout_change: Annotated[
        float | None,
        typer.Option(
            "--campaign-dropout-change",
            help="The campaign's effect on those reached: -0.1 = their dropout 10% lower.",
        ),
    ] = None,
    subscription_share: Annotated[
        float | None,
        typer.Option(
            "--subscription-share",
            help="The share of subscription candidates (retain subscriptions candidates) "
            "who subscribe: what that adds over 12 months.",
        ),
    ] = None,
    subscription_retention: Annotated[
        float | None,
        typer.Option(
            "--subscription-retention",
            help="Share of subscribers renewing at each delivery, for a store without "
            "subscriptions (default: the store's plan's retention curve).",
        ),
    ] = None,
    draws: Annotated[
        int,
        typer.Option(
            "--intervals",
            help="Draws of the fitted parameters for 90% intervals of the totals (e.g. "
            "100; each draw costs about one preparation). 0: none.",
        ),
    ] = 0,
    db: DbOption = DEFAULT_DB,
    as_json: JsonOption = False,
) -> None:
    """What the kept model projects for the coming months (revenue, purchases, value) and
    the same under a scenario: a lower dropout, more frequent purchases, larger orders;
    what a retention campaign is worth against its cost, and its break-even; and, with
    --intervals, how sure the totals are."""
    from retain.store import Store
    from retain.whatif import Campaign, Scenario
    from retain.whatif import whatif as project

    scenario = Scenario(
        dropout_change=dropout_change,
        purchase_rate_change=purchase_rate_change,
        spend_change=spend_change,
    )
    given = {
        "--campaign-reach": campaign_reach,
        "--campaign-cost": campaign_cost,
        "--campaign-dropout-change": campaign_dropout_change,
    }
    offer = None
    if any(v is not None for v in given.values()):
        missing = [k for k, v in given.items() if v is None]
        if missing:
            raise typer.BadParameter(
                f"a campaign needs {', '.join(given)}; missing {', '.join(missing)}"
            )
        offer = Campaign(
            reach=float(campaign_reach or 0),
            cost_per_customer=float(campaign_cost or 0),
            dropout_change=float(campaign_dropout_change or 0),
        )
    with (
        Store(db, read_only=True) as store,
        progress(f"drawing the parameters {draws} times ...", as_json or not draws),
    ):
        answer = project(
            store,
            scenario,
            months,
            offer,
            draws,
            subscription_share=subscription_share,
            subscription_retention=subscription_retention,
        )

    def table() -> str:
        base, moved = answer["base"], answer["scenario"]
        levers = ", ".join(
            f"{k.replace('_', ' ')} {100 * v:+g}%" for k, v in answer["levers"].items() if v
        )
        series = "revenue" if base["revenue"] is not None else "purchases"
        rows = [
            [day, f"{a:,.2f}", f"{b:,.2f}", f"{b / a - 1:+.1%}" if a else "-"]
            for day, a, b in zip(base["month_ends"], base[series], moved[series], strict=True)
        ]
        for key, label in (
            ("revenue_total", "revenue"),
            ("purchases_total", "purchases"),
            ("value", "value"),
        ):
            if key in answer["change"]:
                rel = answer["change"][key]["relative"]
                shown = "-" if rel is None else f"{rel:+.1%}"
                rows.append([f"{label} in all", f"{base[key]:,.2f}", f"{moved[key]:,.2f}", shown])
        head = ["month ends", series, "scenario", "change"]
        lines = [
            f"{answer['model']} fit {answer['fit_id']}, {answer['customers']:,} customers, "
            f"from {answer['as_of']}; levers: {levers or 'none'}",
            *aligned(head, rows),
        ]
        if base["value"] is not None:
            clv = " (the sum of the customers' 12-month CLV)" if months == 12 else ""
            lines.append(
                f"value: revenue times margin {answer['margin']:g}, discounted "
                f"{answer['discount_rate']:g} a year{clv}"
            )
        else:
            lines.append("no spend model (Gamma-Gamma) was fitted: purchases only")
        lines.append(
            f"active customers: {base['active_now']:,.0f} now; at the end "
            f"{base['active'][-1]:,.0f} as it stands, {moved['active'][-1]:,.0f} in the scenario"
        )
        sure = answer.get("intervals")
        if sure and "problem" in sure:
            lines.append(sure["problem"])
        elif sure:
            pct = f"{sure['level']:.0%}"
            for key, label in (
                ("value", "value"),
                ("revenue_total", "revenue"),
                ("purchases_total", "purchases"),
                ("active_at_end", "active at the end"),
            ):
                if key in sure["base"]:
                    (b0, b1), (s0, s1) = sure["base"][key], sure["scenario"][key]
                    c0, c1 = sure["change"][key]
                    d = 0 if key == "active_at_end" else 2  # customers are whole
                    lines.append(
                        f"{pct} interval of {label}: {b0:,.{d}f} to {b1:,.{d}f} as it stands, "
                        f"{s0:,.{d}f} to {s1:,.{d}f} in the scenario, change "
                        f"{c0:+,.{d}f} to {c1:+,.{d}f}"
                    )
            lines.append(
                f"  from {sure['used']} of {sure['draws']} draws of the fitted parameters and "
                "simulations of the customers' own chance; the change's, of the estimates alone"
            )
            lines.extend(f"  note: {note}" for note in sure["notes"])
        bought = answer.get("acquisition") or {}
        for channel in bought.get("channels", []):
            if channel["largest_affordable_cac"] is None:
                continue
            cac = "-" if channel["cac"] is None else f"{channel['cac']:,.2f}"
            moved_cac = channel["largest_affordable_cac_in_scenario"]
            lines.append(
                f"acquisition {channel['channel']}: largest affordable CAC "
                f"{channel['largest_affordable_cac']:,.2f} (its customers' margin over their first "
                f"{bought['months']} months; "
                f"{'-' if moved_cac is None else f'{moved_cac:,.2f}'} in the scenario), CAC {cac}"
            )
        offer = answer.get("campaign")
        if offer:
            verdict = "pays" if offer["pays"] else "does not pay"
            even = offer["break_even_cost_per_customer"]
            breaks = (
                f"break-even at {even:,.4g} a customer reached"
                if even > 0
                else "no cost pays for it: its effect takes value away"
            )
            lines.append(
                f"campaign: reaching {offer['reach']:.0%} ({offer['customers_reached']:,.0f} "
                f"customers) at {offer['cost_per_customer']:,.4g} each, their dropout "
                f"{100 * offer['dropout_change']:+g}%: adds {offer['value_added']:,.2f} of "
                f"value over {offer['months']} months for {offer['cost']:,.2f}, net "
                f"{offer['net']:+,.2f}: it {verdict}; {breaks}"
            )
            if offer["value_per_retained_customer"] is not None:
                lines.append(
                    f"  it keeps {offer['customers_retained']:,.1f} more customers active at the "
                    f"end; its value added is {offer['value_per_retained_customer']:,.2f} per one "
                    "of them (those kept for a while who left before the end add to it too)"
                )
        converted = answer.get("subscriptions")
        if converted:
            lines.append(
                f"subscriptions: if {converted['share']:.0%} of the {converted['candidates']:,} "
                f"candidates subscribe, over 12 months: {converted['added_if_offered_to_all']:+,.2f} "
                f"offered to all, {converted['added_if_offered_to_those_who_gain']:+,.2f} offered "
                f"to the {converted['gaining']:,} who gain (retention: {converted['retention']})"
            )
        lines.extend(f"note: {note}" for note in answer["notes"])
        return "\n".join(lines)

    emit(answer, as_json, table)


@app.command("at-risk")
@friendly_errors
def at_risk(
    min_risk: Annotated[
        str,
        typer.Option(
            "--min-risk", help="List customers at this risk or worse: medium, high, lost."
        ),
    ] = "high",
    limit: Annotated[int, typer.Option(help="How many rows, most value at stake first.")] = 20,
    as_of: SegmentAsOfOption = None,
    scheme: SegmentSchemeOption = "quintiles",
    rules: SegmentRulesOption = None,
    db: DbOption = DEFAULT_DB,
    as_json: JsonOption = False,
) -> None:
    """Customers slipping away, why, and the value at stake: the win-back list."""
    from retain.segments import winback_list
    from retain.store import Store

    with Store(db, read_only=True) as store:
        store.require_orders()
        frame = winback_list(
            store, as_of=as_of, min_risk=min_risk, limit=limit, scheme=scheme, rules=rules
        )
    _no_model_note(frame.attrs)
    frame = frame.drop(columns=["email", "name", "accepts_marketing"])
    columns = ["customer_id", "risk", "value_at_stake", "segment", "reason"]

    def table() -> str:
        total, stake = frame.attrs.get("total", len(frame)), frame.attrs.get("value_at_stake")
        head = f"win-back list: {total:,} customer{'' if total == 1 else 's'} at {min_risk} risk or worse"
        if stake is not None:
            head += f", {stake:,.2f} at stake in all"
        if total > len(frame):
            head += f"; the first {len(frame):,} (--limit)"
        return head + "\n" + _fmt_table(frame[columns], {"value_at_stake": ",.2f"})

    emit(frame, as_json, table)


CONSENT_RULES = {
    "required": "only customers who accepted marketing",
    "unknown-ok": "customers who accepted marketing or whose consent is unknown",
}
"""``retain audience --consent``: who may be exported. Opted-out customers never are."""


@app.command()
@friendly_errors
def audience(
    segment: Annotated[
        str,
        typer.Argument(
            help='A segment name, e.g. "Can\'t Lose Them", or win-back.', metavar="SEGMENT"
        ),
    ],
    format: Annotated[str, typer.Option("--format", help="csv or json.")] = "csv",
    out: Annotated[
        Path | None, typer.Option("--out", help="File to write. Default: standard output.")
    ] = None,
    consent: Annotated[
        str,
        typer.Option(
            "--consent",
            help="required: only customers who accepted marketing; unknown-ok: also those "
            "whose consent is unknown (files without an accepts_marketing column). "
            "Opted-out customers are never exported.",
            metavar="required|unknown-ok",
        ),
    ] = "required",
    include_unknown_consent: Annotated[
        bool,
        typer.Option(
            "--include-unknown-consent", hidden=True, help="The same as --consent unknown-ok."
        ),
    ] = False,
    top_n: Annotated[int, typer.Option("--top-products", help="Products listed per customer.")] = 3,
    as_of: SegmentAsOfOption = None,
    scheme: SegmentSchemeOption = "quintiles",
    rules: SegmentRulesOption = None,
    db: DbOption = DEFAULT_DB,
) -> None:
    """Export who to contact in a segment, with the action, value at stake and their products.

    A summary on stderr says how many were exported, under which consent rule, and
    how many were left out and why. Exit code 1 when nobody is exported (the file
    then holds the header only), 0 otherwise, 2 on an error.
    """
    from retain.segments import audience as build_audience
    from retain.segments import write_audience
    from retain.store import Store

    if consent not in CONSENT_RULES:
        raise ArgumentError(f"--consent takes required or unknown-ok, got {consent!r}")
    if include_unknown_consent:
        consent = "unknown-ok"
    with Store(db, read_only=True) as store:
        store.require_orders()
        frame = build_audience(
            store,
            segment,
            as_of=as_of,
            include_unknown_consent=consent == "unknown-ok",
            top_n=top_n,
            scheme=scheme,
            rules=rules,
        )
    text = write_audience(frame, format, out)
    if out is None:
        typer.echo(text, nl=False)
    typer.echo(_audience_summary(frame, segment, consent, out), err=True)
    if frame.empty:
        raise typer.Exit(1)


def _audience_summary(frame: pd.DataFrame, segment: str, consent: str, out: Path | None) -> str:
    """One line: how many exported, under which consent rule, who was left out and why."""
    opted_out, unknown = frame.attrs["opted_out"], frame.attrs["unknown_consent"]
    default = " (the default)" if consent == "required" else ""
    rule = f"consent rule: {consent}{default}, {CONSENT_RULES[consent]}"
    reasons = []
    if opted_out:
        reasons.append(f"{opted_out:,} who opted out")
    if unknown:
        reasons.append(f"{unknown:,} whose consent is unknown (--consent unknown-ok adds them)")
    left_out = f"left out {' and '.join(reasons)}" if reasons else "nobody left out"
    where = f" to {out}" if out is not None else ""
    if frame.empty:
        found = opted_out + unknown
        why = (
            f"{segment!r} has {plural(found, 'customer')}, all left out: {' and '.join(reasons)}"
            if found
            else f"{segment!r} has no customers on this date"
        )
        return f"exported no customers{where}: {why}; {rule}"
    return f"exported {plural(len(frame), 'customer')}{where}; {left_out}; {rule}"


@app.command()
@friendly_errors
def migration(
    start: Annotated[str, typer.Option("--from", help="First date, YYYY-MM-DD.")],
    end: Annotated[str, typer.Option("--to", help="Second date, YYYY-MM-DD.")],
    limit: Annotated[int, typer.Option(help="Customers who moved down to show.", min=0)] = 20,
    scheme: SegmentSchemeOption = "quintiles",
    rules: SegmentRulesOption = None,
    db: DbOption = DEFAULT_DB,
    as_json: JsonOption = False,
) -> None:
    """How customers moved between segments from one date to another."""
    from retain.segments import segment_migration
    from retain.store import Store

    with Store(db, read_only=True) as store:
        result = segment_migration(store, start, end, scheme=scheme, rules=rules)

    def table() -> str:
        names = list(result.counts.columns)
        legend = "  ".join(f"{i}={name}" for i, name in enumerate(names, start=1))
        counts = result.counts.set_axis(range(1, len(names) + 1), axis=1)
        percent = result.percent.round(0).astype(int).set_axis(range(1, len(names) + 1), axis=1)
        moved = result.moved_down.head(limit)
        return (
            f"segments on {result.start} (rows) -> {result.end} (columns)\n{legend}\n\n"
            f"customers:\n{counts.to_string()}\n\n% of each row:\n{percent.to_string()}\n\n"
            f"{plural(len(result.moved_down), 'customer')} moved from a valuable segment to a worse one"
            + (f"; the first {len(moved)}:\n{moved.to_string(index=False)}" if len(moved) else "")
        )

    emit(result.to_dict(), as_json, table)


# --- recommendations (retain.recommend) -----------------------------------------------

recommend_app = RetainTyper(
    cls=RetainGroup,
    help="Cross-sell, upsell, bundles and personal recommendations, learned from order lines.",
    no_args_is_help=True,
)
app.add_typer(recommend_app, name="recommend")

RecommendK = Annotated[int, typer.Option("--k", help="How many products to suggest.")]
MinSupportOption = Annotated[
    float, typer.Option("--min-support", help="Least share of orders holding the itemset.")
]
MinCountOption = Annotated[
    int, typer.Option("--min-count", help="Least number of orders holding the itemset.")
]


def _recommender(db: Path) -> tuple[Any, Any]:
    """The store (read-only) and its recommender: the saved tables when they are
    current, else tables learned now (`retain recommend build` saves them)."""
    from retain.recommend import load_or_build
    from retain.store import Store

    store = Store(db, read_only=True)
    try:
        store.require_orders()
        return store, load_or_build(store)
    except BaseException:
        store.close()
        raise


def _recommendations_table(rows: list[dict]) -> str:
    if not rows:
        return "(no recommendations)"
    return "\n".join(
        f"{i:>3}. {r['name']} ({r['sku']})  score {r['score']:.3f}\n     {r['reason']}"
        for i, r in enumerate(rows, start=1)
    )


@recommend_app.command("build")
@friendly_errors
def recommend_build(db: DbOption = DEFAULT_DB, as_json: JsonOption = False) -> None:
    """Learn the recommendation tables and save them in the store for fast loading."""
    import time

    from retain.recommend import build
    from retain.store import Store

    with Store(db) as store, progress("learning the recommendation tables ...", as_json):
        started = time.perf_counter()
        rec = build(store, save=True)
        seconds = time.perf_counter() - started
    result = {
        "items": rec.n_items,
        "baskets": rec.n_baskets,
        "customers": rec.n_customers,
        "also_bought_pairs": int(rec.basket.other.size),
        "bought_later_pairs": int(rec.later.other.size),
        "upsell_pairs": int(rec.upsell_table.other.size),
        "bundles": len(rec.bundle_list),
        "consumables": int((rec.items["product_type"] == "consumable").sum()),
        "durables": int((rec.items["product_type"] == "durable").sum()),
        "seconds": round(seconds, 2),
    }
    emit(
        result,
        as_json,
        lambda: (
            f"learned from {rec.n_baskets:,} orders of {rec.n_customers:,} customers "
            f"({rec.n_items:,} products) in {seconds:.1f} s and saved in {db}: "
            f"{result['also_bought_pairs']:,} also-bought and {result['bought_later_pairs']:,} "
            f"bought-later links, {result['upsell_pairs']:,} upsells, {result['bundles']:,} bundles; "
            f"{result['consumables']:,} consumables, {result['durables']:,} durable goods"
        ),
    )


@recommend_app.command("rules")
@friendly_errors
def recommend_rules(
    min_support: MinSupportOption = 1e-5,
    min_count: MinCountOption = 5,
    min_confidence: Annotated[
        float, typer.Option("--min-confidence", help="Least confidence of a rule, 0 to 1.")
    ] = 0.0,
    min_lift: Annotated[float, typer.Option("--min-lift", help="Least lift of a rule.")] = 1.0,
    max_size: Annotated[
        int, typer.Option("--max-size", help="2 for pair rules only, 3 to add triples.")
    ] = 3,
    limit: Annotated[int, typer.Option(help="How many rules, highest lift first.")] = 50,
    db: DbOption = DEFAULT_DB,
    as_json: JsonOption = False,
) -> None:
    """Association rules A -> B and {A, B} -> C with support, confidence and lift."""
    from retain.recommend import association_rules
    from retain.store import Store

    with Store(db, read_only=True) as store:
        store.require_orders()
        frame = association_rules(
            store,
            min_support=min_support,
            min_count=min_count,
            min_confidence=min_confidence,
            min_lift=min_lift,
            max_size=max_size,
            limit=limit,
        )

    def table() -> str:
        import pandas as pd

        if frame.empty:
            return (
                f"no rules: no itemset in {frame.attrs['min_basket_count']:,} orders or more "
                "passes the thresholds (lower --min-support, --min-count or --min-lift)"
            )
        shown = pd.DataFrame(
            {
                "if bought": [" + ".join(map(str, names)) for names in frame["antecedent_names"]],
                "then": frame["consequent_name"],
                "orders": frame["count"].map("{:,}".format),
                "support": frame["support"].map("{:.4%}".format),
                "confidence": frame["confidence"].map("{:.1%}".format),
                "lift": frame["lift"].map("{:.2f}".format),
            }
        )
        return (
            f"{plural(len(frame), 'rule')} from {plural(frame.attrs['baskets'], 'order')}\n"
            + shown.to_string(index=False)
        )

    emit(frame, as_json, table)


@recommend_app.command("also-bought")
@friendly_errors
def recommend_also_bought(
    sku: Annotated[str, typer.Argument(help="The product's SKU.")],
    k: RecommendK = 10,
    db: DbOption = DEFAULT_DB,
    as_json: JsonOption = False,
) -> None:
    """Products bought in the same order as SKU, beyond chance, best first."""
    store, rec = _recommender(db)
    with store:
        frame = rec.also_bought(sku, k)
    emit(frame, as_json)


@recommend_app.command("bought-later")
@friendly_errors
def recommend_bought_later(
    sku: Annotated[str, typer.Argument(help="The product's SKU.")],
    k: RecommendK = 10,
    db: DbOption = DEFAULT_DB,
    as_json: JsonOption = False,
) -> None:
    """Products that buyers of SKU bought in a later order, beyond chance."""
    store, rec = _recommender(db)
    with store:
        frame = rec.bought_later(sku, k)
    emit(frame, as_json)


@recommend_app.command("bundles")
@friendly_errors
def recommend_bundles(
    sku: Annotated[
        str | None, typer.Option("--sku", help="Only bundles holding this product.")
    ] = None,
    discount: Annotated[
        float, typer.Option("--discount", help="Share off the summed price, e.g. 0.1 for 10%.")
    ] = 0.1,
    min_lift: Annotated[
        float, typer.Option("--min-lift", help="Least lift: the affinity a bundle needs.")
    ] = 2.0,
    min_support: MinSupportOption = 1e-5,
    min_count: MinCountOption = 5,
    limit: Annotated[int, typer.Option(help="How many bundles, most frequent first.")] = 20,
    db: DbOption = DEFAULT_DB,
    as_json: JsonOption = False,
) -> None:
    """Products often bought together (2 or 3), with a bundle price below their sum."""
    from retain.recommend import bundles
    from retain.store import Store

    with Store(db, read_only=True) as store:
        store.require_orders()
        frame = bundles(
            store,
            min_support=min_support,
            min_count=min_count,
            min_lift=min_lift,
            discount=discount,
            limit=limit,
            sku=sku,
        )

    def table() -> str:
        import pandas as pd

        if frame.empty:
            return "no bundles pass the thresholds (lower --min-lift, --min-count or --min-support)"
        shown = pd.DataFrame(
            {
                "bundle": [" + ".join(map(str, names)) for names in frame["names"]],
                "orders": frame["count"].map("{:,}".format),
                "lift": frame["lift"].map("{:.1f}".format),
                "price": frame["total_price"].map("{:,.2f}".format),
                "bundle_price": frame["bundle_price"].map("{:,.2f}".format),
            }
        )
        return shown.to_string(index=False)

    emit(frame, as_json, table)


@recommend_app.command("upsell")
@friendly_errors
def recommend_upsell(
    sku: Annotated[str, typer.Argument(help="The product's SKU.")],
    k: RecommendK = 10,
    db: DbOption = DEFAULT_DB,
    as_json: JsonOption = False,
) -> None:
    """Pricier products of SKU's category that its buyers later bought or upgraded to."""
    store, rec = _recommender(db)
    with store:
        frame = rec.upsell(sku, k)
    emit(frame, as_json, None if len(frame) else lambda: f"no upsell found for {sku}")


@recommend_app.command("cart")
@friendly_errors
def recommend_cart(
    skus: Annotated[list[str], typer.Argument(help="SKUs in the cart.")],
    k: RecommendK = 10,
    db: DbOption = DEFAULT_DB,
    as_json: JsonOption = False,
) -> None:
    """What to add to a cart: products bought with it, best first, each with its reason."""
    store, rec = _recommender(db)
    with store:
        _, unknown = rec.known(skus)
        rows = rec.recommend_for_cart(skus, k)
    if unknown:
        typer.echo(f"note: unknown SKU(s) ignored: {', '.join(unknown)}", err=True)
    emit(rows, as_json, lambda: _recommendations_table(rows))


@recommend_app.command("customer")
@friendly_errors
def recommend_customer(
    customer_id: Annotated[str, typer.Argument(help="The customer's id.")],
    k: RecommendK = 10,
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="Recommend as on this date, YYYY-MM-DD. Default: last order."),
    ] = None,
    db: DbOption = DEFAULT_DB,
    as_json: JsonOption = False,
) -> None:
    """What to offer a customer next, from their history, each with its reason."""
    from retain.recommend import recommend_for_customer

    store, rec = _recommender(db)
    with store:
        rows = recommend_for_customer(store, customer_id, k, recommender=rec, as_of=as_of)
    emit(rows, as_json, lambda: _recommendations_table(rows))


@recommend_app.command("evaluate")
@friendly_errors
def recommend_evaluate(
    k: RecommendK = 10,
    sample: Annotated[
        int, typer.Option("--sample", help="Customers to score (0: all of them).")
    ] = 20_000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the sample and held-out items.")] = 0,
    db: DbOption = DEFAULT_DB,
    as_json: JsonOption = False,
) -> None:
    """Hide each customer's last order: hit rate@k and coverage against most popular."""
    from retain.recommend import evaluate
    from retain.store import Store

    with Store(db, read_only=True) as store:
        store.require_orders()
        result = evaluate(store, k=k, sample=sample or None, seed=seed)

    def table() -> str:
        lines = [
            f"{result['evaluated']:,} of {result['customers']:,} customers with two orders or "
            f"more, last order hidden; learned from {result['training_baskets']:,} orders",
            f"{'':<38}{'hit rate@' + str(k):>12}{'recall':>10}{'coverage':>10}",
        ]
        for task, label in (("next_basket", "next order"), ("cart", "cart (one item hidden)")):
            part = result[task]
            if "model" not in part:
                lines.append(f"{label}: {part.get('note', 'not evaluated')}")
                continue
            for who in ("model", "most_popular"):
                m = part[who]
                name = f"{label}, {'retain' if who == 'model' else 'most popular'}"
                lines.append(
                    f"{name:<38}{m['hit_rate']:>12.1%}{m['recall']:>10.1%}{m['coverage']:>10.1%}"
                )
            verdict = "beats" if part["beats_baseline"] else "does not beat"
            lines.append(f"  {verdict} the baseline ({part['hit_rate_ratio']:.2f}x its hit rate)")
        return "\n".join(lines)

    emit(result, as_json, table)


# --- campaigns (retain.campaigns): init, validate, list, preview, run, report ----------

campaigns_app = RetainTyper(
    cls=RetainGroup,
    help="Triggered campaigns: the right message at the predicted moment, with caps, "
    "quiet hours and opt-outs, each message sent once at most.",
    no_args_is_help=True,
)
app.add_typer(campaigns_app, name="campaigns")

CampaignsOption = Annotated[
    Path,
    typer.Option(
        "--campaigns",
        help="The campaign file (TOML; retain campaigns init writes one).",
        envvar="RETAIN_CAMPAIGNS",
        metavar="FILE",
    ),
]
DEFAULT_CAMPAIGNS = Path("campaigns.toml")


def _campaign_file(path: Path) -> Any:
    from retain.campaigns import load_campaigns

    return load_campaigns(path)


def _write_new(out: Path, text: str, force: bool) -> None:
    """Write a starting file for the user to edit: not over an existing one (unless
    ``force``), and a folder that is not there is a clear error."""
    if out.exists() and not force:
        raise ArgumentError(f"{out} exists: pass --force to replace it")
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ArgumentError(f"cannot write {out}: {exc.strerror or exc}") from None


@campaigns_app.command("init")
@friendly_errors
def campaigns_init(
    out: Annotated[Path, typer.Option("--out", help="File to write.")] = DEFAULT_CAMPAIGNS,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing file.")] = False,
) -> None:
    """Write the example campaigns (next purchase, win-back, post-purchase, overdue,
    birthday, anniversary, newsletter) to a file to edit."""
    from retain.campaigns import example_path

    _write_new(out, example_path().read_text(encoding="utf-8"), force)
    typer.echo(f"wrote {out}; check it with: retain campaigns validate {out}")


@campaigns_app.command("validate")
@friendly_errors
def campaigns_validate(
    file: Annotated[Path | None, typer.Argument(help="The campaign file.")] = None,
    campaigns: CampaignsOption = DEFAULT_CAMPAIGNS,
    as_json: JsonOption = False,
) -> None:
    """Check a campaign file: every mistake is named with its line and field."""
    checked = _campaign_file(file or campaigns)
    emit(
        {"file": checked.path, "valid": True, "campaigns": checked.summary()},
        as_json,
        lambda: f"{checked.path}: {plural(len(checked.campaigns), 'campaign')}, all valid",
    )


@campaigns_app.command("list")
@friendly_errors
def campaigns_list(
    campaigns: CampaignsOption = DEFAULT_CAMPAIGNS, as_json: JsonOption = False
) -> None:
    """The campaigns of the file: trigger, audience, channel, variants, caps."""
    rows = _campaign_file(campaigns).summary()

    def table() -> str:
        return "\n".join(
            f"{r['name']:<16} {'on ' if r['enabled'] else 'off'} {r['trigger']:<21} "
            f"{r['channel']:<8} variants {', '.join(r['variants'])}"
            + (f"  control {r['control_share']:.0%}" if r["control_share"] else "")
            for r in rows
        )

    emit(rows, as_json, table)


@campaigns_app.command("preview")
@friendly_errors
def campaigns_preview(
    name: Annotated[str, typer.Argument(help="The campaign.")],
    customer: Annotated[str, typer.Option("--customer", help="The customer's id.")],
    campaigns: CampaignsOption = DEFAULT_CAMPAIGNS,
    db: DbOption = DEFAULT_DB,
    as_json: JsonOption = False,
) -> None:
    """The message one customer would get from a campaign (every variant), whether or
    not its trigger fires for them today."""
    from retain.campaigns import preview
    from retain.store import Store

    _require_store(db)
    checked = _campaign_file(campaigns)
    with Store(db, read_only=True) as store:
        shown = preview(store, checked, name, customer)

    def table() -> str:
        return "\n\n".join(
            f"--- variant {m['variant']}\nTo: {m['address'] or '(no e-mail address)'}\n"
            f"Subject: {m['subject']}\n\n{m['body_text']}"
            for m in shown
        )

    emit(shown, as_json, table)


@campaigns_app.command("run")
@friendly_errors
def campaigns_run(
    campaigns: CampaignsOption = DEFAULT_CAMPAIGNS,
    now: Annotated[
        str | None,
        typer.Option(
            "--now",
            help="Evaluate as of this moment (ISO date-time, the store's time zone unless "
            "it says otherwise). Default: now.",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Decide and render, write and send nothing.")
    ] = False,
    only: Annotated[str | None, typer.Option("--only", help="Run this campaign alone.")] = None,
    channel: Annotated[
        str | None,
        typer.Option("--channel", help="Send every campaign through this channel (e.g. file)."),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option("--limit", min=0, help="Deliver at most N messages this run (0: queue only)."),
    ] = None,
    db: DbOption = DEFAULT_DB,
    as_json: JsonOption = False,
) -> None:
    """Evaluate the due triggers and deliver: safe to run every minute (cron); a rerun
    sends nothing already sent. SMTP from RETAIN_SMTP_URL."""
    from retain.campaigns import CHANNELS, run_campaigns
    from retain.store import Store

    if channel is not None and channel not in CHANNELS:
        raise ArgumentError(f"--channel: got {channel!r}, expected {' or '.join(CHANNELS)}")
    _require_store(db)
    checked = _campaign_file(campaigns)
    with Store(db, read_only=dry_run) as store, progress("running campaigns ...", as_json):
        result = run_campaigns(
            store, checked, now=now, dry_run=dry_run, only=only, channel=channel, limit=limit
        ).to_dict()

    def table() -> str:
        lines = [f"campaigns as of {result['now']}" + (" (dry run)" if dry_run else "")]
        first = "would_send" if dry_run else "sent"
        names = [first, "held", "capped", "suppressed", "control", "failed", "unconfirmed"]
        for campaign, counts in result["campaigns"].items():
            sent = counts.get("queued", 0) if dry_run else counts.get("sent", 0)
            parts = [f"{sent:,} {first.replace('_', ' ')}"] + [
                f"{counts[k]:,} {k}" for k in names[1:] if counts.get(k)
            ]
            lines.append(f"  {campaign:<16} {', '.join(parts)}")
        if not result["campaigns"]:
            lines.append("  nothing due")
        lines.append(
            "total: " + ", ".join(f"{result.get(k, 0):,} {k.replace('_', ' ')}" for k in names)
        )
        if result["reasons"]:
            lines.append(
                "why not sent: " + "; ".join(f"{n:,} {r}" for r, n in result["reasons"].items())
            )
        for sample in result["samples"]:
            to = sample["address"] or f"customer {sample['customer_id']} (no e-mail address)"
            lines.append(f"\nto {to}: {sample['subject']}\n{sample['body_text']}")
        lines.extend(f"note: {n}" for n in result["notes"])
        return "\n".join(lines)

    emit(result, as_json, table)


@campaigns_app.command("report")
@friendly_errors
def campaigns_report(
    name: Annotated[str | None, typer.Argument(help="One campaign (default: all).")] = None,
    db: DbOption = DEFAULT_DB,
    as_json: JsonOption = False,
) -> None:
    """Per campaign: sent, held, capped, suppressed, failed, control, and the orders and
    net revenue of those sent a message within 7 days after it."""
    from retain.campaigns import campaign_report
    from retain.store import Store

    _require_store(db)
    with Store(db, read_only=True) as store:
        emit(campaign_report(store, name), as_json)


@campaigns_app.command("unsubscribe")
@friendly_errors
def campaigns_unsubscribe(
    customer: Annotated[str, typer.Argument(help="The customer's id.")],
    reason: Annotated[
        str, typer.Option(help="unsubscribed, bounced, complained or do_not_contact.")
    ] = "unsubscribed",
    scope: Annotated[str, typer.Option(help="marketing, transactional or all.")] = "marketing",
    db: DbOption = DEFAULT_DB,
) -> None:
    """Stop messages to a customer, at once (the next send checks it)."""
    from retain.campaigns import suppress
    from retain.store import Store

    _require_store(db)
    with Store(db) as store:
        added = suppress(store, customer, reason=reason, scope=scope, source="cli")
    typer.echo(f"{customer}: {'no' if added else 'already no'} {scope} messages ({reason})")


# --- experiments (retain.experiments): report, size -------------------------------------

experiments_app = RetainTyper(
    cls=RetainGroup,
    help="A campaign as an experiment: each arm against control, the uplift with its "
    "interval, the probability each arm is best; and the sample size a test needs.",
    no_args_is_help=True,
)
app.add_typer(experiments_app, name="experiments")


@experiments_app.command("report")
@friendly_errors
def experiments_report(
    name: Annotated[str, typer.Argument(help="The campaign.")],
    window: Annotated[
        int,
        typer.Option(help="Attribution window: days after a customer's last message.", min=1),
    ] = 7,
    clv: Annotated[
        bool, typer.Option("--clv/--no-clv", help="Measure the change of 12-month CLV.")
    ] = True,
    db: DbOption = DEFAULT_DB,
    as_json: JsonOption = False,
) -> None:
    """What each arm of a campaign did (conversion, revenue, clicks, coupons, unsubscribes,
    change of CLV), against control, with intervals that stay valid however often the
    report is read."""
    from retain.experiments.analysis import experiment_report
    from retain.store import Store

    _require_store(db)
    with Store(db, read_only=True) as store:
        result = experiment_report(store, name, window=window, clv=clv)

    def table() -> str:
        return _experiment_text(result)

    emit(result, as_json, table)


def _experiment_text(result: dict[str, Any]) -> str:
    from retain.experiments.analysis import chance

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f}%"

    def money(value: float | None) -> str:
        return "-" if value is None else f"{value:,.2f}"

    lines = [
        f"{result['campaign']}: window {result['window_days']} days, orders to "
        f"{result['data_end']}, against {result['reference']}",
        f"  {'arm':<16} {'customers':>9} {'delivered':>9} {'clicked':>8} {'converted':>9} "
        f"{'rev/cust':>9} {'CLV change':>10} {'P(best)':>7}",
    ]
    for arm in result["arms"]:
        lines.append(
            f"  {arm['arm']:<16} {arm['customers']:>9,} {arm['delivered']:>9,} "
            f"{pct(arm['click_rate']):>8} {pct(arm['conversion_rate']):>9} "
            f"{money(arm['revenue_per_customer']):>9} {money(arm['clv_change']):>10} "
            f"{chance(arm['probability_best']):>7}"
        )
    for entry in result["comparisons"]:
        conv = entry["conversion"]
        low, high = conv["sequential_interval"]
        lines.append(
            f"  {entry['arm']} vs {entry['against']}: conversion {100 * conv['difference']:+.2f} "
            f"points ({100 * low:+.2f} to {100 * high:+.2f}), {conv['verdict']}; "
            f"p = {conv['p_value']:.3g} at one look"
        )
    added = result.get("added")
    if added:
        low, high = added["revenue_interval"]
        lines.append(
            f"  added over {added['against']}: {money(added['revenue'])} net revenue "
            f"({money(low)} to {money(high)}) across {added['customers']:,} customers"
        )
        if added.get("clv") is not None:
            c_low, c_high = added["clv_interval"]
            lines.append(
                f"  added 12-month CLV: {money(added['clv'])} ({money(c_low)} to {money(c_high)})"
            )
    lines.append(result["sentence"])
    return "\n".join(lines)


@experiments_app.command("size")
@friendly_errors
def experiments_size(
    baseline: Annotated[float, typer.Option(help="The control's rate, e.g. 0.04.")],
    lift: Annotated[float, typer.Option(help="The relative lift to find: 0.1 for +10%.")],
    alpha: Annotated[float, typer.Option(help="Two-sided significance level.")] = 0.05,
    power: Annotated[float, typer.Option(help="Probability of finding the lift.")] = 0.8,
    as_json: JsonOption = False,
) -> None:
    """Customers needed per arm for a two-proportion test to find a relative lift."""
    from retain.experiments import sample_size

    per_arm = sample_size(baseline, lift, alpha=alpha, power=power)
    result = {
        "baseline": baseline,
        "lift": lift,
        "target": round(baseline * (1 + lift), 12),
        "alpha": alpha,
        "power": power,
        "per_arm": per_arm,
        "total": 2 * per_arm,
    }
    emit(
        result,
        as_json,
        lambda: (
            f"{per_arm:,} customers per arm ({2 * per_arm:,} for two arms) to find "
            f"{baseline:.4g} -> {baseline * (1 + lift):.4g} ({lift:+.0%}) with power "
            f"{power:.0%} at alpha {alpha:g}, two-sided"
        ),
    )


# --- service (retain.service): serve, report ------------------------------------------


# --- subscriptions (retain.subscriptions) ----------------------------------------------

subscriptions_app = RetainTyper(
    cls=RetainGroup,
    help="Subscriptions: MRR and its movements, retention by start cohort, each plan's "
    "retention curve (sBG or BdW) and subscriber value, and who to offer one.",
    no_args_is_help=True,
)
app.add_typer(subscriptions_app, name="subscriptions")


@subscriptions_app.command("report")
@friendly_errors
def subscriptions_report(
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="Observation date YYYY-MM-DD. Default: the store's as_of setting, else today.",
        ),
    ] = None,
    margin: MarginOption = None,
    discount_rate: Annotated[
        float | None,
        typer.Option(
            "--discount-rate",
            help="Discount rate a year for subscriber value, in (0, 1). Default: the "
            "store's discount_rate setting (0.1).",
        ),
    ] = None,
    months: Annotated[int, typer.Option("--months", help="Months of MRR to show.")] = 12,
    db: DbOption = DEFAULT_DB,
    as_json: JsonOption = False,
) -> None:
    """MRR month by month with its movements (new, reactivated, expansion, contraction,
    churned), logo and revenue retention by start cohort, and per plan the sBG or BdW fit
    of its survival table, its tracking on a holdout of later periods and its subscribers'
    value."""
    from retain.store import Store
    from retain.subscriptions import report

    _require_store(db)
    with Store(db, read_only=True) as store:
        result = report(store, as_of=as_of, margin=margin, discount_rate=discount_rate)

    def table() -> str:
        lines = [
            f"subscriptions at {result['as_of']}: MRR {result['mrr_now']:,.2f} from "
            f"{result['paying_customers']:,} paying customers",
        ]
        head = [
            "month",
            "mrr",
            "customers",
            "new",
            "reactivated",
            "expansion",
            "contraction",
            "churned",
        ]
        rows = [
            [
                row["month"],
                f"{row['mrr']:,.2f}",
                f"{row['customers']:,}",
                *(f"{row[k]:+,.2f}" if row[k] else "0" for k in head[3:]),
            ]
            for row in result["mrr"][-max(1, months) :]
        ]
        lines.extend("  " + line for line in aligned(head, rows))
        for row in result["retention"]:  # the cohorts measured that long, together
            age = row["age"]
            lines.append(
                f"  after {age:>2} month{'s' if age > 1 else ''}: logo retention "
                f"{row['logo_retention']:.1%}, revenue retention {row['revenue_retention']:.1%} "
                f"({row['cohorts']} cohorts)"
            )
        for plan in result["plans"]:
            n = plan["interval_count"]
            every = plan["billing_interval"] if n == 1 else f"{n} {plan['billing_interval']}s"
            lines.append(
                f"plan {plan['plan']} (every {every}): "
                f"{plan['subscriptions']:,} subscription{'s' if plan['subscriptions'] != 1 else ''}"
                f" in {plan['cohorts']} cohort{'s' if plan['cohorts'] != 1 else ''}, "
                f"{plan['active']:,} active"
            )
            fit = plan["fit"]
            if fit is None:
                lines.append(f"  not fitted: {plan['problem']}")
                continue
            survival = ", ".join(f"{k}: {v:.1%}" for k, v in fit["survival"].items())
            shape = f" c {fit['c']:.3f}" if "c" in fit else ""
            params = (
                f"every subscriber alike, {fit['mean_churn']:.1%} cancelling after each period"
                if fit["alike"]
                else f"alpha {fit['alpha']:.3f} beta {fit['beta']:.3f}{shape}, "
                f"{fit['mean_churn']:.1%} of new subscribers cancelling after the first period"
            )
            lines.append(
                f"  {fit['model'].upper()}: {params}; still active after periods {survival}"
            )
            lines.append(f"  model: {fit['choice']}")
            track = plan.get("tracking")
            if track and track["holdout_mean_abs_error"] is not None:
                lines.append(
                    f"  tracking: fitted on periods to {track['fitted_through']}, the later "
                    f"ones projected within {track['holdout_mean_abs_error']:.1%} on average"
                )
            value = plan.get("value")
            if value:
                lines.append(
                    f"  value of its {value['subscribers']:,} active subscribers: "
                    f"{value['total']:,.2f} ({value['mean']:,.2f} each, "
                    f"{value['mean_residual_periods']:.1f} payments to come, discounted); "
                    f"a new subscriber {value['new_subscriber']:,.2f}"
                )
        lines.append(
            f"value: margin {result['margin']:g}, discounted {result['discount_rate']:g} a year"
        )
        return "\n".join(lines)

    emit(result, as_json, table)


@subscriptions_app.command("subscribers")
@friendly_errors
def subscriptions_subscribers(
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="Observation day. Default: the store's as_of, else today."),
    ] = None,
    margin: Annotated[
        float | None, typer.Option("--margin", help="Fraction of revenue kept, in (0, 1].")
    ] = None,
    discount_rate: Annotated[
        float | None,
        typer.Option("--discount-rate", help="Discount rate a year, in (0, 1)."),
    ] = None,
    top: Annotated[int, typer.Option("--top", min=1, help="Rows to show.")] = 20,
    db: DbOption = DEFAULT_DB,
    as_json: JsonOption = False,
) -> None:
    """Each active subscriber's value, most first: their charge, renewals so far and the
    discounted payments their plan's retention model expects to come."""
    from retain.store import Store
    from retain.subscriptions import subscribers

    _require_store(db)
    with Store(db, read_only=True) as store:
        frame = subscribers(
            store, as_of=as_of, margin=margin, discount_rate=discount_rate, limit=top
        )
    rows = json.loads(frame.to_json(orient="records"))  # plain numbers and booleans

    def table() -> str:
        if not rows:
            return "no active subscriber of a fitted plan"
        head = ["customer", "plan", "charge", "since", "renewals", "to come", "value"]
        cells = [
            [
                str(r["customer_id"]),
                str(r["plan"]),
                f"{r['charge']:,.2f}",
                r["paying_since"],
                str(int(r["renewals"])),
                f"{r['payments_to_come']:.1f}" + (" (ends)" if r["end_known"] else ""),
                f"{r['value']:,.2f}",
            ]
            for r in rows
        ]
        return "\n".join(aligned(head, cells))

    emit(rows, as_json, table)


@subscriptions_app.command("candidates")
@friendly_errors
def subscriptions_candidates(
    discount: Annotated[
        float,
        typer.Option("--discount", help="Discount a subscriber gets on each delivery, 0 to <1."),
    ] = 0.1,
    retention: Annotated[
        float | None,
        typer.Option(
            "--retention",
            help="Share of subscribers who renew at each delivery, for a store without "
            "subscriptions. Default: the retention curve of the store's plan.",
        ),
    ] = None,
    plan: Annotated[
        str | None,
        typer.Option(
            "--plan",
            help="The plan whose retention curve to use. Default: the "
            "fitted plan with the most subscriptions.",
        ),
    ] = None,
    max_irregularity: Annotated[
        float,
        typer.Option(
            "--max-irregularity",
            help="Most spread of a customer's intervals between purchases, as a share of "
            "their mean, for a regular rhythm.",
        ),
    ] = 0.35,
    top: Annotated[int, typer.Option("--top", min=1, help="Rows to show.")] = 20,
    db: DbOption = DEFAULT_DB,
    as_json: JsonOption = False,
) -> None:
    """Who to offer a subscription: customers who buy the same product at regular
    intervals, ranked by how much more their next 12 months are worth as subscribers
    (at their own interval, their usual spend less the discount) than as they are."""
    from retain.store import Store
    from retain.subscriptions import candidates

    _require_store(db)
    with Store(db, read_only=True) as store:
        result = candidates(
            store,
            discount=discount,
            retention=retention,
            plan=plan,
            max_irregularity=max_irregularity,
            limit=top,
        )

    def table() -> str:
        lines = [
            f"subscription candidates at {result['as_of']}: {result['candidates']:,} customer "
            f"and product pairs bought at a regular rhythm ({result['customers']:,} customers); "
            f"{result['gaining']:,} worth more as subscribers, "
            f"{result['gain_total']:,.2f} more in all over 12 months",
            f"offer: each delivery at their mean spend less {result['discount']:.0%}; "
            f"retention: {result['retention']}; margin {result['margin']:g}, discounted "
            f"{result['discount_rate']:g} a year",
        ]
        head = [
            "customer",
            "sku",
            "purchases",
            "every",
            "last",
            "price",
            "now",
            "subscribed",
            "gain",
        ]
        rows = [
            [
                str(r["customer_id"]),
                str(r["sku"]),
                str(r["purchases"]),
                f"{r['every_days']:.0f} d",
                r["last_purchase"],
                f"{r['price_per_delivery']:,.2f}",
                f"{r['value_now']:,.2f}",
                f"{r['value_subscribed']:,.2f}",
                f"{r['gain']:+,.2f}",
            ]
            for r in result["rows"]
        ]
        if rows:
            lines.extend("  " + line for line in aligned(head, rows))
        else:
            lines.append("  no customer buys a product at a regular rhythm")
        return "\n".join(lines)

    emit(result, as_json, table)


# --- loyalty (retain.loyalty): the points ledger, tiers, referrals ---------------------

loyalty_app = RetainTyper(
    cls=RetainGroup,
    help="The loyalty programme: points earned on orders (pending through the return "
    "window, expiring oldest first), redemptions, VIP tiers and capped referral rewards.",
    no_args_is_help=True,
)
app.add_typer(loyalty_app, name="loyalty")
RulesOption = Annotated[
    Path | None,
    typer.Option("--rules", help="The loyalty rules (TOML); default: the last build's."),
]
KeyOption = Annotated[
    str,
    typer.Option(
        "--idempotency-key",
        help="This request's own key: the same request again changes the ledger once.",
    ),
]


@loyalty_app.command("init")
@friendly_errors
def loyalty_init(
    out: Annotated[Path, typer.Option("--out", help="File to write.")] = Path("loyalty.toml"),
    force: Annotated[bool, typer.Option("--force", help="Replace an existing file.")] = False,
) -> None:
    """Write the default loyalty rules to a file to edit."""
    from retain.loyalty import DEFAULT_RULES_PATH

    _write_new(out, DEFAULT_RULES_PATH.read_text(encoding="utf-8"), force)
    typer.echo(f"wrote {out}; check it with: retain loyalty validate {out}")


@loyalty_app.command("validate")
@friendly_errors
def loyalty_validate(
    file: Annotated[Path, typer.Argument(help="The rules file.")],
    as_json: JsonOption = False,
) -> None:
    """Check a rules file: every mistake is named with its line and key."""
    from retain.loyalty import load_rules

    rules = load_rules(file)
    emit(
        {"file": str(file), "valid": True, "tiers": [t.name for t in rules.tiers]},
        as_json,
        lambda: f"{file}: valid; tiers {', '.join(t.name for t in rules.tiers) or 'none'}",
    )


@loyalty_app.command("build")
@friendly_errors
def loyalty_build(
    rules: RulesOption = None, db: DbOption = DEFAULT_DB, as_json: JsonOption = False
) -> None:
    """Add to the ledger what the orders, refunds, birthdays and referrals up to the
    store's clock call for; then expiries, balances, tiers and codes. Run it after
    every ingest: a second run adds nothing."""
    from retain.loyalty import build, load_rules
    from retain.store import Store

    _require_store(db)
    chosen = load_rules(rules) if rules is not None else None
    with Store(db) as store:
        result = build(store, chosen).to_dict()

    def table() -> str:
        added = ", ".join(f"{k} {v:,}" for k, v in result["added"].items())
        tiers = ", ".join(f"{k} {v:,}" for k, v in result["tiers"].items())
        referrals = ", ".join(f"{k} {v:,}" for k, v in result["referrals"].items()) or "none"
        return (
            f"ledger built to {result['clock']} with {result['rules']} in "
            f"{result['seconds']:.1f} s\n  added: {added}\n  {result['members']:,} members: "
            f"{tiers}; {result['tier_changes']:,} tier changes\n  referrals: {referrals}"
        )

    emit(result, as_json, table)


@loyalty_app.command("report")
@friendly_errors
def loyalty_report(db: DbOption = DEFAULT_DB, as_json: JsonOption = False) -> None:
    """The liability (points outstanding, their value, what expires when), the flows of
    points, the programme's cost, the tiers and the referrals."""
    from retain.loyalty.report import loyalty_report as report
    from retain.store import Store

    _require_store(db)
    with Store(db, read_only=True) as store:
        result = report(store)

    def table() -> str:
        debt = result["liability"]
        lines = [
            f"loyalty at {result['clock']} ({result['rules']}), a point worth "
            f"{result['point_value']:g}",
            f"  liability: {debt['points']:,} points ({debt['spendable']:,} spendable, "
            f"{debt['pending']:,} pending), worth {debt['value']:,.2f}",
        ]
        for row in debt["expiring"][:6]:
            lines.append(f"    expiring {row['month']}: {row['points']:,} points")
        for row in result["flows"]:
            lines.append(
                f"  {row['flow']:<16} {row['points']:>14,} ({row['last_12_months']:,} "
                "in the last 12 months)"
            )
        cost = result["cost"]
        lines.append(
            f"  cost: {cost['redeemed_value']:,.2f} redeemed + {cost['outstanding_value']:,.2f} "
            f"outstanding = {cost['total']:,.2f} (referral rewards given: "
            f"{cost['referral_value_given']:,.2f} of it)"
        )
        for tier in result["tiers"]:
            lines.append(
                f"  {tier['tier']} (from {tier['threshold']:,g}): {tier['members']:,} members, "
                f"{tier['in_grace']:,} in grace"
            )
        ref = result["referrals"]
        lines.append(
            f"  referrals: {ref['rewarded']:,} rewarded, {ref['waiting']:,} waiting, "
            f"{ref['refused']:,} refused"
        )
        for reason, n in ref["reasons"].items():
            lines.append(f"    refused, {reason}: {n:,}")
        return "\n".join(lines)

    emit(result, as_json, table)


@loyalty_app.command("balance")
@friendly_errors
def loyalty_balance(
    customer: Annotated[str, typer.Argument(help="The customer's id.")],
    db: DbOption = DEFAULT_DB,
    as_json: JsonOption = False,
) -> None:
    """A customer's points (spendable and pending), tier, referral code, what expires
    next and their latest entries."""
    from retain.loyalty import balance
    from retain.store import Store

    _require_store(db)
    with Store(db, read_only=True) as store:
        result = balance(store, customer).to_dict()

    def table() -> str:
        tier = result["tier"]["name"] if result["tier"] else "no tier"
        lines = [
            f"{customer}: {result['balance']:,} points to spend (worth {result['value']:,.2f}), "
            f"{result['pending']:,} pending; {tier}; code {result['referral_code'] or '-'}"
        ]
        for row in result["expiring"]:
            lines.append(f"  {row['points']:,} expire at {row['expires_at']}")
        for e in result["entries"][:15]:
            lines.append(f"  {e['at'][:19]}  {e['kind']:<8} {e['points']:>+8,}  {e['entry_id']}")
        return "\n".join(lines)

    emit(result, as_json, table)


def _ledger_write(
    db: Path, customer: str, points: int, kind: str, key: str, reason: str | None, as_json: bool
) -> None:
    from retain.loyalty import write_entry
    from retain.store import Store

    _require_store(db)
    with Store(db) as store:
        result = write_entry(
            store, customer, points, kind=kind, key=key, reason=reason, source="cli"
        )
    emit(
        result,
        as_json,
        lambda: (
            f"{customer}: {result['points']:+,} points ({kind}"
            f"{', already recorded' if result['replayed'] else ''}); "
            f"{result['balance']:,} to spend"
        ),
    )


@loyalty_app.command("redeem")
@friendly_errors
def loyalty_redeem(
    customer: Annotated[str, typer.Argument(help="The customer's id.")],
    points: Annotated[int, typer.Argument(help="Points to spend.", min=1)],
    idempotency_key: KeyOption,
    reason: Annotated[str | None, typer.Option(help="What they were spent on.")] = None,
    db: DbOption = DEFAULT_DB,
    as_json: JsonOption = False,
) -> None:
    """Spend a customer's points; refused above the spendable balance."""
    _ledger_write(db, customer, -points, "redeem", idempotency_key, reason, as_json)


@loyalty_app.command("adjust", context_settings={"ignore_unknown_options": True})
@friendly_errors
def loyalty_adjust(
    customer: Annotated[str, typer.Argument(help="The customer's id.")],
    points: Annotated[int, typer.Argument(help="Points to give (or, below 0, to take).")],
    reason: Annotated[str, typer.Option(help="Why: kept in the ledger.")],
    idempotency_key: KeyOption,
    db: DbOption = DEFAULT_DB,
    as_json: JsonOption = False,
) -> None:
    """Give or take points by hand, with a reason (never below a balance of 0): ``retain
    loyalty adjust C123 -50 --reason "..."`` takes 50."""
    _ledger_write(db, customer, points, "adjust", idempotency_key, reason, as_json)


@loyalty_app.command("refer")
@friendly_errors
def loyalty_refer(
    code: Annotated[str, typer.Argument(help="The referrer's code.")],
    friend: Annotated[str, typer.Argument(help="The id of the customer it brought.")],
    db: DbOption = DEFAULT_DB,
    as_json: JsonOption = False,
) -> None:
    """Record a referral made outside checkout (a sign-up link): the next build decides
    the reward as for a code on the friend's first order."""
    from retain.loyalty.referrals import record_referral
    from retain.store import Store

    _require_store(db)
    with Store(db) as store:
        result = record_referral(store, code, friend, source="cli")
    emit(
        result,
        as_json,
        lambda: (
            f"{result['friend_id']}: referred by {result['referrer_id']} ({result['code']})"
            + ("" if result["new"] else ", already recorded")
        ),
    )


@loyalty_app.command("referral")
@friendly_errors
def loyalty_referral(
    code: Annotated[str, typer.Argument(help="A referral code, e.g. REF-3FA9C01B7D2E.")],
    db: DbOption = DEFAULT_DB,
    as_json: JsonOption = False,
) -> None:
    """Whose code it is, and the friends who came with it."""
    from retain.loyalty.referrals import referral_code
    from retain.store import Store

    _require_store(db)
    with Store(db, read_only=True) as store:
        result = referral_code(store, code)

    def table() -> str:
        lines = [f"{result['code']}: {result['customer_id']}'s code"]
        for f in result["friends"]:
            lines.append(
                f"  {f['friend_id']} ({f['ordered_at'][:10]}): {f['status']}"
                + (f", {f['reason']}" if f["reason"] else "")
            )
        return "\n".join(lines)

    emit(result, as_json, table)


@app.command()
@friendly_errors
def serve(
    host: Annotated[
        str,
        typer.Option(
            help="Address to listen on. Anything but 127.0.0.1 needs an API key or --read-only."
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 8765,
    api_key_file: Annotated[
        Path | None,
        typer.Option(
            "--api-key-file",
            help="File whose first line is the API key for write endpoints "
            "(or set RETAIN_API_KEY).",
        ),
    ] = None,
    read_only: Annotated[
        bool,
        typer.Option("--read-only", help="No write endpoints; open the store read-only."),
    ] = False,
    campaigns: Annotated[
        Path | None,
        typer.Option(
            "--campaigns",
            help="Run this campaign file every minute inside the service (the store is "
            "the service's while it runs: `retain campaigns run` cannot write it).",
            metavar="FILE",
        ),
    ] = None,
    feedback_routes: Annotated[
        Path | None,
        typer.Option(
            "--feedback-routes",
            help="Send new complaints to their teams' webhooks every minute inside the "
            "service (what `retain feedback route --routes FILE` does; needs "
            "RETAIN_WEBHOOK_SECRET).",
            metavar="FILE",
        ),
    ] = None,
    db: DbOption = DEFAULT_DB,
) -> None:
    """The dashboard and the REST API (JSON, OpenAPI at /docs) over the store."""
    from retain.service import serve as run_server

    run_server(
        db,
        host=host,
        port=port,
        key_file=api_key_file,
        writes=not read_only,
        campaigns=campaigns,
        feedback_routes=feedback_routes,
    )


# --- feedback (retain.feedback) ---------------------------------------------------------

feedback_app = RetainTyper(
    cls=RetainGroup,
    help="The feedback loop: surveys, reviews and tickets tagged by language, topic and "
    "tone; the pain points ranked by the value at risk; themes the taxonomy lacks.",
    no_args_is_help=True,
)
app.add_typer(feedback_app, name="feedback")

TaxonomyOption = Annotated[
    Path | None,
    typer.Option(
        "--taxonomy",
        help="A taxonomy TOML file (see `retain feedback taxonomy`). Default: the store's, "
        "else the shipped one.",
    ),
]


def _taxonomy_file(path: Path) -> Any:
    from retain.errors import DataError
    from retain.feedback import parse_taxonomy

    if not path.exists():
        raise DataError(f"--taxonomy {path}: no such file")
    return parse_taxonomy(path.read_text(encoding="utf-8"), str(path))


@feedback_app.command("tag")
@friendly_errors
def feedback_tag(
    file: Annotated[
        Path,
        typer.Argument(
            help="CSV, JSON lines or Parquet: feedback_id, text, optionally rating (1-5)."
        ),
    ],
    taxonomy: TaxonomyOption = None,
    sentiment_model: Annotated[
        str | None,
        typer.Option(
            "--sentiment-model",
            help="module:function taking texts and their languages and giving each "
            "negative, neutral or positive, in place of the lexicon (a rating still decides).",
        ),
    ] = None,
    db: DbOption = DEFAULT_DB,
    as_json: JsonOption = False,
) -> None:
    """Tag a file's texts without storing them: each one's language, topics and tone.
    Rows set aside are named on stderr with their row, column and reason."""
    from retain.feedback import shipped_taxonomy, store_taxonomy, tag
    from retain.feedback.files import read_texts
    from retain.feedback.tagging import load_model

    found = read_texts(file)
    if taxonomy is not None:
        chosen = _taxonomy_file(taxonomy)
    elif db.exists():
        from retain.store import Store

        with Store(db, read_only=True) as store:
            chosen = store_taxonomy(store)
    else:
        chosen = shipped_taxonomy()
    model = load_model(sentiment_model) if sentiment_model else None
    stars = [
        r if r is not None else s
        for r, s in zip(found.scores["rating"], found.scores["stars"], strict=True)
    ]
    with progress(f"tagging {len(found.texts):,} texts ...", as_json):
        tags = tag(
            found.texts,
            nps=found.scores["nps"],
            csat=found.scores["csat"],
            stars=stars,
            taxonomy=chosen,
            sentiment_model=model,
        )
    rows: list[dict[str, Any]] = [
        {
            "feedback_id": key,
            "language": t.language,
            "topics": list(t.topics),
            "sentiment": t.sentiment,
            "sentiment_from": t.sentiment_from,
        }
        for key, t in zip(found.ids, tags, strict=True)
    ]
    for problem in found.set_aside:
        typer.echo(
            f"{file} row {problem['row']}, column {problem['column']}: set aside: "
            f"{problem['reason']}",
            err=True,
        )

    def table() -> str:
        head = ["feedback_id", "language", "sentiment", "topics"]
        cells = [
            [r["feedback_id"], r["language"] or "?", r["sentiment"], ", ".join(r["topics"]) or "-"]
            for r in rows
        ]
        return "\n".join(aligned(head, cells)) if rows else "no text to tag"

    emit(rows, as_json, table)


@feedback_app.command("retag")
@friendly_errors
def feedback_retag(taxonomy: TaxonomyOption = None, db: DbOption = DEFAULT_DB) -> None:
    """Tag every stored text again: with --taxonomy FILE, which becomes the store's own."""
    from retain.feedback import retag
    from retain.store import Store

    _require_store(db)
    chosen = _taxonomy_file(taxonomy) if taxonomy is not None else None
    with Store(db) as store, progress("tagging the stored feedback ..."):
        count = retag(store, chosen)
    where = (
        f"with {taxonomy} (now the store's taxonomy)" if taxonomy else "with the store's taxonomy"
    )
    typer.echo(f"tagged {count:,} texts {where}")


@feedback_app.command("taxonomy")
@friendly_errors
def feedback_taxonomy(
    out: Annotated[
        Path | None, typer.Option("--out", help="Write it to this file to edit it.")
    ] = None,
    db: DbOption = DEFAULT_DB,
) -> None:
    """The taxonomy that tags the store's feedback (the shipped one until `retain feedback
    retag --taxonomy` sets another): print it, or write it to edit."""
    from retain.feedback import shipped_taxonomy, store_taxonomy

    if db.exists():
        from retain.store import Store

        with Store(db, read_only=True) as store:
            chosen = store_taxonomy(store)
    else:
        chosen = shipped_taxonomy()
    if out is None:
        typer.echo(chosen.text, nl=False)
        return
    out.write_text(chosen.text, encoding="utf-8")
    typer.echo(
        f"wrote {out} ({len(chosen.topics)} topics); edit it, then `retain feedback retag "
        f"--taxonomy {out}`"
    )


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


@feedback_app.command("pain-points")
@friendly_errors
def feedback_pain_points(
    topic: Annotated[
        str | None,
        typer.Option(
            "--topic", help="Drill into one topic: its texts and the customers raising it."
        ),
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of", help="Observation day. Default: the store's as_of, else the last order."
        ),
    ] = None,
    window_days: Annotated[
        int | None,
        typer.Option(
            "--window-days",
            help="Days without an order after raising a topic that count as churn. "
            "Default: the store's window_days, else its purchase rhythm.",
        ),
    ] = None,
    top: Annotated[int, typer.Option("--top", min=1, help="Rows of a drill-down to show.")] = 20,
    db: DbOption = DEFAULT_DB,
    as_json: JsonOption = False,
) -> None:
    """The topics customers complain of, most value at risk first: mentions, customers,
    trend, detractors, how much more its raisers churn (with a 95% interval) and the
    predicted value that extra churn puts at risk."""
    from retain.feedback.painpoints import pain_point, pain_points
    from retain.store import Store

    _require_store(db)
    with Store(db, read_only=True) as store:
        if topic is not None:
            result = pain_point(store, topic, as_of=as_of, limit=top)
        else:
            result = pain_points(store, as_of=as_of, window_days=window_days)

    def drill() -> str:
        lines = [f"{result['name']} ({result['topic']}): {len(result['texts'])} texts shown"]
        for t in result["texts"]:
            lines.append(
                f"  {t['created_at'][:10]}  {t['customer_id']}  {t['sentiment']}: {t['text']}"
            )
        lines.append("customers raising it, most predicted value first:")
        cells = [
            [
                c["customer_id"],
                str(c["mentions"]),
                c["last_raised"][:10],
                "-" if c["clv_12m"] is None else f"{c['clv_12m']:,.2f}",
                c["segment"] or "-",
            ]
            for c in result["customers"]
        ]
        lines += aligned(["customer", "mentions", "last", "clv_12m", "segment"], cells)
        return "\n".join(lines)

    def table() -> str:
        lines = [
            f"pain points at {result['as_of']} from {result['feedback']:,} texts; churn: no order "
            f"within {result['window_rule']}"
        ]
        if result["stale"]:
            lines.append(
                f"note: {result['stale']:,} texts were tagged with another taxonomy: run "
                "`retain feedback retag`"
            )
        if not result["scored"]:
            lines.append(
                "note: no scores yet, so no value at risk: run `retain fit` and `retain score`"
            )
        cells = []
        for r in result["topics"]:
            r = dict[str, Any](r)
            ratio = (
                "-"
                if r["churn_ratio"] is None
                else f"{r['churn_ratio']:.2f} ({r['churn_ratio_low']:.2f}-{r['churn_ratio_high']:.2f})"
            )
            value = "-" if r["value_at_risk"] is None else f"{r['value_at_risk']:,.0f}"
            cells.append(
                [
                    r["topic"],
                    str(r["mentions"]),
                    str(r["customers"]),
                    r["trend"],
                    _share(r["negative_share"]),
                    _share(r["detractors"]),
                    ratio,
                    value,
                ]
            )
        head = [
            "topic",
            "mentions",
            "customers",
            "trend",
            "negative",
            "detractors",
            "churn ratio (95%)",
            "value at risk",
        ]
        lines += aligned(head, cells)
        for r in result["topics"]:
            if r.get("why"):
                lines.append(f"no churn ratio for {r['topic']}: {r['why']}")
        return "\n".join(lines)

    emit(result, as_json, drill if topic is not None else table)


@feedback_app.command("route")
@friendly_errors
def feedback_route(
    routes: Annotated[
        Path,
        typer.Option(
            "--routes",
            help="A TOML file of route tables: name, topics, webhook_url and, optionally, "
            "sentiment (default negative). See docs/feedback.md.",
        ),
    ],
    max_age_days: Annotated[
        int | None,
        typer.Option(
            "--max-age-days",
            min=1,
            max=3650,
            help="Route texts up to this many days old (the backlog stays). Default: 7.",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be sent; send and keep nothing.")
    ] = False,
    db: DbOption = DEFAULT_DB,
    as_json: JsonOption = False,
) -> None:
    """Send each new complaint to the team that owns its topic: one signed webhook POST per
    text and route (RETAIN_WEBHOOK_SECRET signs it), each sent once; failures are retried
    on the next run."""
    import os

    from retain.campaigns.channels import Channel, WebhookChannel
    from retain.errors import ArgumentError
    from retain.feedback import store_taxonomy
    from retain.feedback.routing import MAX_AGE_DAYS, load_routes, route_complaints
    from retain.store import Store

    max_age_days = max_age_days or MAX_AGE_DAYS

    _require_store(db)
    secret = os.environ.get("RETAIN_WEBHOOK_SECRET")
    if not secret and not dry_run:
        raise ArgumentError(
            "set RETAIN_WEBHOOK_SECRET (the key the receivers check the signature with), "
            "or use --dry-run"
        )
    with Store(db, read_only=dry_run) as store:
        found = load_routes(routes, set(store_taxonomy(store).topics))
        channels: dict[str, Channel] = {
            r.name: WebhookChannel(r.webhook_url, secret or "") for r in found
        }
        result = route_complaints(
            store, found, channels=channels, max_age_days=max_age_days, dry_run=dry_run
        )

    def text() -> str:
        word = "would be sent" if dry_run else "sent"
        head = "complaints to route" if dry_run else "complaints routed"
        lines = [f"{head} at {result['as_of']} (texts up to {max_age_days} days old)"]
        for r in result["routes"]:
            count = r["due"] if dry_run else r["sent"]
            line = f"  {r['route']} ({', '.join(r['topics'])}): {count} {word}"
            if r["failed"]:
                line += f"; failed: {r['failed'][0]['reason']}"
            if r["waiting"]:
                line += f"; {r['waiting']} wait for the next run"
            lines.append(line)
        return "\n".join(lines)

    emit(result, as_json, text)
    if any(r["failed"] for r in result["routes"]):
        raise typer.Exit(1)


@feedback_app.command("discover")
@friendly_errors
def feedback_discover(
    themes: Annotated[int, typer.Option("--themes", min=1, max=50, help="Themes to look for.")] = 8,
    promote: Annotated[
        int | None,
        typer.Option(
            "--promote", help="Add this theme's terms to the store's taxonomy (with --topic)."
        ),
    ] = None,
    topic: Annotated[
        str | None,
        typer.Option(
            "--topic", help="The topic id the promoted theme's terms join (new or existing)."
        ),
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="A new topic's name.")] = None,
    db: DbOption = DEFAULT_DB,
    as_json: JsonOption = False,
) -> None:
    """Recurring themes in the stored texts that the taxonomy does not cover: their top
    terms and typical texts. --promote N --topic ID makes theme N a topic and retags."""
    from retain.errors import ArgumentError
    from retain.feedback import parse_taxonomy, retag, store_taxonomy
    from retain.feedback.discovery import discover_stored
    from retain.feedback.discovery import promote as promoted
    from retain.store import Store

    _require_store(db)
    if (promote is None) != (topic is None):
        raise ArgumentError("--promote N and --topic ID go together")
    with Store(db, read_only=promote is None) as store:
        with progress("looking for themes ...", as_json):
            result = discover_stored(store, themes=themes)
        if promote is not None:
            chosen = [t for t in result["themes"] if t["theme"] == promote]
            if not chosen:
                raise ArgumentError(
                    f"--promote {promote}: no such theme; found {len(result['themes'])}"
                )
            assert topic is not None
            text = promoted(store_taxonomy(store), chosen[0], topic, name)
            count = retag(store, parse_taxonomy(text, f"theme {promote} promoted to {topic}"))
            result["promoted"] = {"theme": promote, "topic": topic, "retagged": count}

    def table() -> str:
        lines = [
            f"{len(result['themes'])} themes outside the taxonomy in {result['texts']:,} texts"
        ]
        for t in result["themes"]:
            lines.append(
                f"{t['theme']}. {t['texts']:,} texts ({t['share']:.1%}): {', '.join(t['terms'])}"
            )
            for e in t["examples"]:
                lines.append(f"     {e['feedback_id']}: {e['text'][:100]}")
        if "promoted" in result:
            p = result["promoted"]
            lines.append(
                f"theme {p['theme']} is now topic {p['topic']}; retagged {p['retagged']:,} texts"
            )
        elif result["themes"]:
            lines.append("make one a topic: retain feedback discover --promote N --topic ID")
        return "\n".join(lines)

    emit(result, as_json, table)


# --- spark (retain.spark): the same scores on Apache Spark -------------------------------

spark_app = RetainTyper(
    cls=RetainGroup,
    help="Score on Apache Spark, for stores that outgrow one machine: the summaries in "
    "Spark SQL, the fit on the driver, every customer scored in the executors; the same "
    "rows as retain score. Needs pip install 'retain[spark]' and Java 17 or later.",
    no_args_is_help=True,
)
app.add_typer(spark_app, name="spark")


@spark_app.command("score")
@friendly_errors
def spark_score(
    orders: Annotated[
        str,
        typer.Option(
            "--orders",
            help="The orders: Parquet (a file or a folder, local or a cluster's path) or a "
            "table of the session's catalog, one row per order.",
            metavar="PATH",
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="The folder to write the scores to (Parquet files and _fit.json).",
            metavar="DIR",
        ),
    ],
    master: Annotated[
        str,
        typer.Option(
            "--master", help="Spark's master: local[2], local[*], spark://HOST:7077, yarn..."
        ),
    ] = "local[2]",
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="Observation date YYYY-MM-DD. Default: the last order's day."),
    ] = None,
    db: Annotated[
        Path | None,
        typer.Option(
            "--db",
            help="A store whose latest kept fit and CLV settings score the orders (nothing "
            "is fitted). Default: fit here, as retain fit does.",
            metavar="FILE",
        ),
    ] = None,
    model: Annotated[
        str, typer.Option("--model", help="Without --db: bgnbd, mbgnbd, pnbd or auto.")
    ] = "auto",
    holdout_weeks: Annotated[
        int | None,
        typer.Option(
            "--holdout-weeks", help="Without --db: weeks held out to compare the models.", min=1
        ),
    ] = None,
    unit: Annotated[
        str, typer.Option("--unit", help="Without --db: time unit of the parameters, D or W.")
    ] = "D",
    margin: MarginOption = None,
    customer_id: Annotated[
        str, typer.Option("--customer-id", help="The orders' customer column.", metavar="COLUMN")
    ] = "customer_id",
    timestamp: Annotated[
        str, typer.Option("--timestamp", help="The orders' time column.", metavar="COLUMN")
    ] = "ordered_at",
    amount: Annotated[
        str,
        typer.Option("--amount", help="The orders' net revenue column.", metavar="COLUMN"),
    ] = "net_revenue",
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace what --out holds.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Score every customer of an orders file on Spark and write the scores as Parquet."""
    import time

    started = time.monotonic()
    if db is not None:
        _require_store(db)
    with progress("starting Spark ...", as_json):
        import retain.spark as rs

        spark = rs.session(master, **{"spark.ui.showConsoleProgress": "false"})
        spark.sparkContext.setLogLevel("ERROR")
    with progress("summarising, fitting and scoring ...", as_json):
        frame = rs.read_orders(spark, orders)
        if db is not None:
            from retain.store import Store

            with Store(db, read_only=True) as store:
                result = rs.score(
                    frame, as_of=as_of, store=store, margin=margin, customer_id=customer_id,
                    timestamp=timestamp, amount=amount,
                )  # fmt: skip
        else:
            result = rs.score(
                frame, as_of=as_of, model=model, unit=unit, holdout_weeks=holdout_weeks,
                margin=margin, customer_id=customer_id, timestamp=timestamp, amount=amount,
            )  # fmt: skip
        info = rs.write(result, out, overwrite=overwrite)
    info = {**info, "out": str(out), "seconds": round(time.monotonic() - started, 1)}

    def table() -> str:
        fit = info["fit"]
        which = f"fit {fit['fit_id']} of {db}" if fit.get("fit_id") is not None else "fitted here"
        totals = info["totals"]
        clv = "-" if totals["clv_12m"] is None else f"{totals['clv_12m']:,.2f}"
        lines = [
            f"scored {info['customers']:,} customers as of {info['as_of']} with "
            f"{fit['model']} ({which}) in {info['seconds']:.1f} s",
            f"{'mean P(alive)':>28}: {totals['mean_p_alive']:.3f}",
            f"{'purchases, next 365 days':>28}: {totals['expected_purchases_365d']:,.1f}",
            f"{'CLV, next 12 months':>28}: {clv} (margin {fit['margin']:g}, discounted "
            f"{fit['discount_rate']:g} per year)",
            f"{'next purchase within a year':>28}: {totals['with_next_purchase_date']:,} customers",
            f"  wrote {out}/ (Parquet, and _fit.json with the fit and the RFM boundaries)",
        ]
        choice = fit.get("choice")
        if choice:
            lines.append(f"  chosen: {choice['reason']}")
        lines += [f"  warning: {w}" for w in [*fit.get("warnings", []), *info["warnings"]]]
        return "\n".join(lines)

    emit(info, as_json, table)


@app.command()
@friendly_errors
def report(
    out: Annotated[Path, typer.Option("--out", help="HTML file to write.")] = Path("report.html"),
    period: PeriodOption = "month",
    margin: MarginOption = None,
    db: DbOption = DEFAULT_DB,
) -> None:
    """Write one self-contained HTML report: overview, cohorts, segments, models and model health."""
    from retain.service import write_report

    with progress(f"writing {out} ..."):
        path = write_report(db, out, period=period, margin=margin)
    typer.echo(f"wrote {path} ({path.stat().st_size / 1024:,.0f} KiB); open it in a browser")


def main() -> None:
    """Entry point of the `retain` console script."""
    app(prog_name="retain")


if __name__ == "__main__":
    main()
