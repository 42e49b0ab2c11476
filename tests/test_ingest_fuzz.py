"""Hostile files, generated: whatever arrives, `retain ingest` answers with exit 0 or 2.

For every generated CSV or Parquet file (encodings, blank lines, delimiters,
quotes, extreme numbers, odd ids, dates of every shape, truncation) the CLI
must:

- exit 0 (loaded, perhaps with rows quarantined) or 2 (refused, one line on
  stderr), never a traceback;
- account for every row it read: rows read = orders loaded + refund rows +
  orders set aside as not purchases (cancelled, excluded) + rows quarantined;
- leave the store exactly as it was when it refuses the file;
- store nothing that breaks the next step: `retain status` still answers, and
  every stored net_revenue is finite.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from retain.cli import app

runner = CliRunner()

BASE = (
    "order_id,customer_id,ordered_at,net_revenue\n"
    "base-1,c1,2024-01-05,10.00\n"
    "base-2,c2,2024-02-05,20.50\n"
    "base-3,c1,2024-03-05,7.25\n"
)

TABLES = ("orders", "quarantine", "ingested_files", "customers")

ODD_TEXT = st.sampled_from(
    [
        "",
        " ",
        "\t",
        "\u200b",
        "\x00",
        "josé",
        "Zoë €5 “quoted”",
        "=cmd|' /C calc'!A0",
        '"',
        '""',
        "a,b",
        "a;b",
        "a|b",
        "line\nbreak",
        "\r",
        "_row",
        "ไทย",
        "Привет",
        "مرحبا",
        "x" * 300,
    ]
)
IDS = st.one_of(st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True), ODD_TEXT)
DATES = st.one_of(
    st.dates().map(lambda d: d.isoformat()),
    st.sampled_from(
        [
            "2024-02-30",
            "2025012",
            "1997013",
            "19970101",
            "03/04/2025",
            "2024-01-05T10:00:00Z",
            "2024-01-05 10:00:00+07:00",
            "yesterday",
            "",
            "0000-00-00",
            "9999-12-31",
        ]
    ),
)
AMOUNTS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(10**40), max_value=10**40).map(str),
    st.sampled_from(
        ["1e300", "-1e308", "1e32", "inf", "NaN", "Infinity", "12,345", "1.2.3", "€10", "", "0"]
    ),
)
ROW = st.tuples(IDS, IDS, DATES, AMOUNTS)


def _cli(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def _snapshot(db: Path) -> dict[str, object]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {t: con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in TABLES}
    finally:
        con.close()


def _base_store(tmp: Path) -> Path:
    db = tmp / "s.duckdb"
    base = tmp / "base.csv"
    base.write_text(BASE)
    result = _cli("ingest", base, "--db", db, "--as-of", "2030-01-01")
    assert result.exit_code == 0, result.output
    return db


def _check(db: Path, path: Path, extra: tuple[str, ...] = ()) -> None:
    before = _snapshot(db)
    result = _cli("ingest", path, "--db", db, "--as-of", "2030-01-01", "--json", *extra)
    assert result.exit_code in (0, 2), (result.exit_code, result.output, result.exception)
    if result.exception is not None:
        assert isinstance(result.exception, SystemExit), repr(result.exception)
    if result.exit_code == 2:
        assert "Traceback" not in result.output
        assert _snapshot(db) == before, "a refused file changed the store"
        return
    report = json.loads(result.stdout)
    report = report[0] if isinstance(report, list) else report
    accounted = (
        report["orders"]
        + report["refunds"]
        + report["skipped_cancelled"]
        + sum(report["excluded"].values())
        + report["quarantined"]
    )
    assert report["rows_read"] == accounted, report
    con = duckdb.connect(str(db), read_only=True)
    try:
        bad = con.execute(
            "SELECT count(*) FROM orders WHERE NOT isfinite(net_revenue) "
            "OR trim(customer_id) = '' OR trim(order_id) = ''"
        ).fetchone()
    finally:
        con.close()
    assert bad == (0,)
    status = _cli("status", "--db", db)
    assert status.exit_code == 0, status.output
    assert not re.search(r"\b(inf|nan)\b", status.stdout.lower()), status.stdout


def _csv_text(
    rows: list[tuple[str, ...]], delimiter: str, quote_all: bool, blanks: list[int]
) -> str:
    buffer = io.StringIO()
    writer = csv.writer(
        buffer,
        delimiter=delimiter,
        quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL,
        lineterminator="\n",
    )
    writer.writerow(["order_id", "customer_id", "ordered_at", "net_revenue"])
    lines = buffer.getvalue().splitlines(keepends=True)
    body = []
    for row in rows:
        row_buffer = io.StringIO()
        csv.writer(
            row_buffer,
            delimiter=delimiter,
            quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL,
            lineterminator="\n",
        ).writerow(row)
        body.append(row_buffer.getvalue())
    for at in sorted(blanks, reverse=True):
        body.insert(min(at, len(body)), "\n" if at % 2 else "  \n")
    return "".join(lines + body)


FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(
    rows=st.lists(ROW, min_size=0, max_size=8),
    delimiter=st.sampled_from([",", ";", "\t", "|"]),
    quote_all=st.booleans(),
    blanks=st.lists(st.integers(min_value=0, max_value=9), max_size=3),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "cp1252", "latin-1"]),
    crlf=st.booleans(),
    gz=st.booleans(),
    cut=st.one_of(st.none(), st.integers(min_value=1, max_value=200)),
)
def test_any_csv_is_loaded_or_refused_cleanly(
    tmp_path_factory, rows, delimiter, quote_all, blanks, encoding, crlf, gz, cut
) -> None:
    tmp = tmp_path_factory.mktemp("fuzz")
    db = _base_store(tmp)
    text = _csv_text(rows, delimiter, quote_all, blanks)
    if crlf:
        text = text.replace("\n", "\r\n")
    data = text.encode(encoding, errors="replace")
    if cut is not None:
        data = data[:cut]
    path = tmp / ("orders.csv.gz" if gz else "orders.csv")
    path.write_bytes(gzip.compress(data) if gz else data)
    extra: tuple[str, ...] = ()
    if encoding in ("cp1252", "latin-1"):
        extra = ("--encoding", encoding) if cut is None and not gz else ()
    _check(db, path, extra)


def test_a_utf16_file_numbered_by_the_csv_rules_is_read(tmp_path: Path) -> None:
    """A carriage return inside a value and an unpaired quote in a UTF-16 file: the rows are
    numbered a second time, by the CSV rules, from the UTF-8 copy, which must still be there
    (it was once deleted first, and the ingest failed with FileNotFoundError)."""
    db = _base_store(tmp_path)
    rows = [
        ("", "0", "2024-02-30", "0.0"),
        ("", "=cmd|' /C calc'!A0", "2024-02-30", "0.0"),
        ("", "\r", "2024-02-30", "0.0"),
        ("0", "0", "2000-01-01", "0.0"),
    ]
    path = tmp_path / "orders.csv"
    path.write_bytes(_csv_text(rows, "|", False, []).encode("utf-16"))
    _check(db, path)


PARQUET_COLUMNS = {
    "net_revenue": st.one_of(
        st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=5).map(
            lambda v: pa.array(v, pa.float64())
        ),
        st.lists(st.booleans(), min_size=1, max_size=5).map(lambda v: pa.array(v, pa.bool_())),
        st.lists(AMOUNTS, min_size=1, max_size=5).map(lambda v: pa.array(v, pa.string())),
        st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=5).map(
            lambda v: pa.array(v, pa.int64())
        ),
    ),
    "customer_id": st.lists(IDS, min_size=1, max_size=5).map(lambda v: pa.array(v, pa.string())),
    "ordered_at": st.one_of(
        st.lists(DATES, min_size=1, max_size=5).map(lambda v: pa.array(v, pa.string())),
        st.lists(st.datetimes(), min_size=1, max_size=5).map(
            lambda v: pa.array(v, pa.timestamp("us"))
        ),
    ),
}


@FUZZ
@given(
    columns=st.fixed_dictionaries(PARQUET_COLUMNS),
    extra_column=st.sampled_from([None, "_row", "file_row_number", 'we"ird', "order_id "]),
    cut=st.one_of(st.none(), st.integers(min_value=4, max_value=400)),
)
def test_any_parquet_is_loaded_or_refused_cleanly(
    tmp_path_factory, columns, extra_column, cut
) -> None:
    tmp = tmp_path_factory.mktemp("fuzz")
    db = _base_store(tmp)
    n = min(len(v) for v in columns.values())
    arrays = {name: values.slice(0, n) for name, values in columns.items()}
    arrays["order_id"] = pa.array([f"p-{i}" for i in range(n)])
    if extra_column is not None:
        arrays[extra_column] = pa.array([f"x{i}" for i in range(n)])
    path = tmp / "orders.parquet"
    pq.write_table(pa.table(arrays), path)
    if cut is not None:
        path.write_bytes(path.read_bytes()[:cut])
    _check(db, path)
