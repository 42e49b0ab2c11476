"""Load a file into the store: read, map, validate, quarantine, upsert in one transaction.

Every reader brings its rows into a staging table of text (or typed Parquet)
columns with ``_retain_row``, the 1-based row number a spreadsheet shows (the header
is row 1 in a CSV file). The validator parses each canonical column, sets aside
rows it cannot use with the file, row, column, value and what was expected, and
the rest is written to the store in one transaction: all of it or none.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from retain import config
from retain.errors import ArgumentError, DataError, SchemaError
from retain.ingest import parse, purchases, text
from retain.ingest.detect import (
    header_columns,
    is_parquet,
    looks_like_shopify,
    sniff_delimiter,
)
from retain.schema import MONEY_COLUMNS, Table
from retain.store import Store


@dataclass
class IngestReport:
    """What one ingest did. ``examples`` holds the first quarantined rows' messages;
    ``same_as`` names the earlier ingest of the same content with the same options when
    this one was skipped, as it would change nothing."""

    file: str
    format: str
    rows_read: int = 0
    orders: int = 0
    order_lines: int = 0
    customers: int = 0
    spend_rows: int = 0
    subscriptions: int = 0
    feedback: int = 0
    events: int = 0
    quarantined: int = 0
    skipped_cancelled: int = 0
    refunds: int = 0
    excluded: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    same_as: str | None = None

    def summary(self) -> str:
        if self.same_as:
            return (
                f"{self.file}: the same content was ingested with the same options from "
                f"{self.same_as}; nothing to do, the store is unchanged"
            )
        loaded = [
            _count(n, what)
            for n, what in (
                (self.orders, "order"),
                (self.order_lines, "order line"),
                (self.customers, "customer"),
                (self.spend_rows, "spend row"),
                (self.subscriptions, "subscription"),
                (self.feedback, "feedback row"),
                (self.events, "event"),
            )
            if n
        ]
        text = f"{self.file} ({self.format}): read {_count(self.rows_read, 'row')}; loaded " + (
            ", ".join(loaded) if loaded else "nothing"
        )
        if self.refunds:
            text += f"; {_count(self.refunds, 'refund row')} subtracted from their orders"
        if self.excluded:
            parts = ", ".join(f"{n:,} {status}" for status, n in sorted(self.excluded.items()))
            total = sum(self.excluded.values())
            text += (
                f"; {_count(total, 'order')} "
                f"{'is not a purchase' if total == 1 else 'are not purchases'} ({parts}): "
                "kept in excluded_orders, out of every metric"
            )
        if self.quarantined:
            text += f"\n{_count(self.quarantined, 'row')} quarantined (see `retain quarantine`):"
            for reason, n in sorted(self.reasons.items(), key=lambda kv: -kv[1]):
                text += f"\n  {n:,} x {reason}"
            for example in self.examples:
                text += f"\n  e.g. {example}"
        else:
            text += "; no rows quarantined"
        return text


# What each canonical column parses as, from its SQL type.
def _kind(sql_type: str) -> str:
    base = sql_type.split()[0]
    return {"TIMESTAMP": "timestamp", "DOUBLE": "number", "DATE": "date", "BOOLEAN": "boolean"}.get(
        base, "text"
    )


_PARSERS = {
    "timestamp": (parse.timestamp, parse.TIMESTAMP_EXPECTED, "unreadable date"),
    "date": (parse.date, parse.DATE_EXPECTED, "unreadable date"),
    "number": (parse.number, parse.NUMBER_EXPECTED, "unreadable amount"),
    "boolean": (parse.boolean, parse.BOOLEAN_EXPECTED, "unreadable yes/no value"),
}

# Columns where a negative number is a mistake, per table.
_NON_NEGATIVE = {
    "orders": ("gross", "discount", "shipping", "tax", "fees"),
    "order_lines": ("quantity", "unit_price"),
    "marketing_spend": ("amount",),
    "subscriptions": ("price", "quantity"),
}

# Dates before this are typing mistakes (0000-01-01, 0202-05-01), not history.
EARLIEST_DATE = "1900-01-01"

# A customer_id that is an e-mail address is one customer whatever its case:
# Shopify keys customers by the lower-cased e-mail.
CUSTOMER_KEY = "CASE WHEN customer_id LIKE '%_@_%' THEN lower(customer_id) ELSE customer_id END"

_REQUIRED_MESSAGE = {"customer_id": "no customer identity", "order_id": "missing order_id"}

# Columns read as ids: trimmed of Unicode whitespace, controls and zero-width characters.
IDENTIFIERS = ("customer_id", "order_id", "refund_of")
_BLANK_MESSAGE = (
    "%s is blank: it holds only whitespace or invisible characters (tab, NUL, "
    "zero-width space), expected an id"
)
# The reason of an order dated after the observation date (the start of it).
AFTER_AS_OF = "dated after the observation date"
_MAX_AMOUNT_HINT = "the max_amount setting: retain settings set max_amount VALUE"


def _unreadable_parquet(exc: duckdb.Error, file: str) -> DataError:
    first = str(exc).strip().splitlines()[0]
    return DataError(f"cannot read as Parquet: {first}", file=file)


def _as_text(column: str) -> str:
    """SQL: the value of ``column`` as read (``_t_<column>``, see :meth:`Loader.validate`)
    as text, for a message."""
    return f"CAST(_t_{column} AS VARCHAR)"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class Loader:
    """One ingest of one file into one store."""

    def __init__(
        self,
        store: Store,
        path: Path,
        *,
        as_of: dt.datetime,
        currency: str,
        rates: Mapping[str, float],
        given_as_of: dt.datetime | None = None,
        pending_revenue: bool = False,
        date_format: str | None = None,
        encoding: str | None = None,
    ) -> None:
        self.store = store
        self.con: duckdb.DuckDBPyConnection = store.con
        self.path = path
        self.file = str(path)
        self.as_of = as_of
        # recorded in ingested_files: the observation date the user gave, None for live
        self.given_as_of = given_as_of
        self.pending_revenue = pending_revenue
        self.date_format = parse.strptime_format(date_format) if date_format else None
        self.currency = currency.upper()
        self.rates = {k.upper(): float(v) for k, v in rates.items()}
        self.rates[self.currency] = 1.0
        self.quarantine_parts: list[str] = []
        self.sources: dict[str, tuple[str, str, list[str]]] = {}
        # the encoding the user gave (None: by the byte-order mark, else UTF-8), and the
        # one the file was read in
        self.encoding_given = text.check_encoding(encoding) if encoding else None
        self.encoding = "utf-8"
        self.rejected = 0  # lines set aside because they could not be read as rows
        # SQL over a staged row's _retain_row: the source its stored and quarantined rows
        # name, and the row number a quarantine row gives (a file: its own name and row;
        # a batch of API orders: each order's own source, its row 1 the order)
        self.source_sql = _lit(self.file)
        self.row_sql = "_retain_row"
        self.parquet_view = False  # _raw is a view over a Parquet file (_stage_parquet)

    # -- staging ---------------------------------------------------------------------
    def stage_file(self) -> list[str]:
        """Read a CSV or Parquet file into ``_raw``; return its column names.

        Each row keeps ``_retain_row``, the line it starts on (a Parquet file's
        first row is row 1). Blank lines are not rows: skipped, not counted.
        A line that cannot be a row (too few or too many fields, a stray quote,
        bytes that are not valid UTF-8, longer than 2 MiB) is set aside in the
        quarantine, one line one reason. A quote opened and never closed, which
        runs the rest of the file together, refuses the file.
        """
        if is_parquet(self.path):
            return self._stage_parquet()
        if is_json_lines(self.path):
            return self._stage_json_lines()
        encoding = text.file_encoding(self.path, self.encoding_given)
        header = text.decode_header(self.path, encoding)
        if header is None:
            raise DataError("the file holds only blank lines: nothing to ingest", file=self.file)
        line, header_line = header
        delim = sniff_delimiter(line) or ","
        columns = header_columns(line, delim)
        check_columns(columns, self.file, header_line)
        records = text.prepare(self.path, encoding, delim)
        try:
            self._read_csv(records.path, delim, columns, header_line)
            if self._single_byte_file(encoding):
                # not one row holds UTF-8 beyond ASCII: the whole file is Windows-1252
                # (Latin-1's superset), or Latin-1 when it holds bytes Windows-1252 lacks
                encoding = "cp1252" if not self._has_bytes(b"\x81\x8d\x8f\x90\x9d") else "latin-1"
                records.remove()
                records = text.prepare(self.path, encoding, delim)
                self._read_csv(records.path, delim, columns, header_line)
            self.encoding = encoding
            # the copy is kept until the rows are numbered: that may read it again
            self._number_rows(records, header_line, columns)
        finally:
            records.remove()
        return columns

    def _stage_parquet(self) -> list[str]:
        """A Parquet file as ``_raw``, typed as stored; row 1 is the first row.

        ``_raw`` is a view over the file, not a copy: the validator reads the file once,
        and a copy of millions of rows would cost its time and memory."""
        columns = first_line_columns(self.path) or []
        check_columns(columns, self.file, None)
        # file_row_number is exact, but only when the file has no column of that name
        numbered = "file_row_number" not in columns
        query = (
            "SELECT * EXCLUDE (file_row_number), file_row_number + 1 AS _retain_row "
            f"FROM read_parquet({_lit(self.file)}, file_row_number = true)"
            if numbered
            else f"SELECT *, row_number() OVER () AS _retain_row FROM read_parquet({_lit(self.file)})"
        )
        self.drop_raw()
        try:
            self.con.execute(f"CREATE TEMP VIEW _raw AS {query}")
        except duckdb.Error as exc:
            raise _unreadable_parquet(exc, self.file) from None
        self.parquet_view = True
        return columns

    def _stage_json_lines(self) -> list[str]:
        """A JSON lines file (one object a line) as ``_raw``, every value as text (a list
        joined by commas); row N is line N. A line that is not a JSON object is set aside
        in the quarantine with its reason; blank lines are not rows."""
        import pandas as pd

        columns = json_lines_columns(self.path)
        if not columns:
            raise DataError(
                "no line is a JSON object with keys: JSON lines hold one object a line (a "
                "JSON array or an object printed over several lines is not read; write one "
                "object per line)",
                file=self.file,
            )
        check_columns(columns, self.file, None)
        rows: list[dict[str, str | None]] = []
        numbers: list[int] = []
        bad: list[tuple[int, str, str]] = []
        for number, record in _json_records(self.path):
            if isinstance(record, dict):
                numbers.append(number)
                rows.append({c: json_cell(record.get(c)) for c in columns})
            elif isinstance(record, tuple):
                bad.append((number, "malformed row: not JSON", record[0][:500]))
            else:
                bad.append(
                    (
                        number,
                        "malformed row: a JSON value but not an object",
                        json.dumps(record)[:500],
                    )
                )
        self.drop_raw()
        stage_rows(self.store, "_raw", rows, columns, numbers)
        self.rejected = len(bad)
        if bad:
            self.con.register(
                "_json_bad", pd.DataFrame(bad, columns=["_retain_row", "why", "line"])
            )
            try:
                self.add_quarantine(
                    "SELECT _retain_row, NULL AS col, why, "
                    "CAST(to_json(struct_pack(line := line)) AS VARCHAR) AS _raw_json "
                    "FROM _json_bad",
                    "orders",
                )
            finally:
                self.con.unregister("_json_bad")
        return columns

    def _read_csv(self, path: Path, delim: str, columns: list[str], header_line: int) -> None:
        """The records of the (UTF-8) file after its header (on ``header_line``) into
        ``_raw``, numbered as if each were one line (``_retain_row``, corrected by
        :meth:`_number_rows`); lines that do not parse go to ``_rejects``."""
        for name in ("_rejects", "_reject_scans"):
            self.con.execute(f"DROP TABLE IF EXISTS {name}")
        self.drop_raw()
        try:
            self.con.execute(
                "CREATE OR REPLACE TEMP TABLE _raw AS SELECT *, "
                "row_number() OVER () + ? AS _retain_row FROM read_csv(?, auto_detect = false, "
                "columns = ?, header = true, delim = ?, quote = '\"', escape = '\"', skip = ?, "
                "store_rejects = true, rejects_table = '_rejects', "
                "rejects_scan = '_reject_scans')",
                [header_line, str(path), {c: "VARCHAR" for c in columns}, delim, header_line - 1],
            )
        except duckdb.Error as exc:
            first = str(exc).strip().splitlines()[0]
            raise DataError(f"cannot read as CSV: {first}", file=self.file) from None

    def _number_rows(self, records: text.Records, header_line: int, columns: list[str]) -> None:
        """Give each row read its line in the file (``_raw``), drop blank rows, and set
        the lines that did not parse aside, one quarantine row each."""
        import pandas as pd

        # one line, one reason: DuckDB reports a short line once per missing field
        self.con.execute(
            "CREATE OR REPLACE TEMP TABLE _bad_lines AS SELECT line, "
            "arg_min(error_type, coalesce(column_idx, 0)) AS error_type, "
            "arg_min(error_message, coalesce(column_idx, 0)) AS error_message, "
            "any_value(csv_line) AS csv_line FROM _rejects GROUP BY line"
        )
        # DuckDB's line numbers count records (a quoted value's line breaks do not count)
        # from the top of the file; record i of the scan is DuckDB's line i + 1
        rejected = np.asarray(
            [int(r[0]) - 1 for r in self.con.execute("SELECT line FROM _bad_lines").fetchall()],
            dtype=np.int64,
        )
        first = int(np.searchsorted(records.lines, header_line, side="right"))
        kept = np.ones(len(records.lines), dtype=bool)
        kept[:first] = False
        kept[rejected[(rejected >= 0) & (rejected < len(kept))]] = False
        if len(columns) > 1:  # DuckDB skips empty lines (one column reads them as NULL)
            kept &= ~records.empty
        lines = records.lines[kept]
        read = self.count("_raw")
        if len(lines) != read and not records.exact:
            # a quote inside a value (5" screen) paired with one that opens a value over
            # several lines: find the records by the CSV rules and number them again
            records.rescan()
            self._number_rows(records, header_line, columns)
            return
        if len(lines) != read:
            raise DataError(
                f"cannot tell which line each row comes from ({read:,} rows parsed, "
                f"{len(lines):,} expected): quotes in the file do not follow the CSV rules "
                '(a value that opens with " must close with " before the next delimiter)',
                file=self.file,
            )
        # rows were numbered as if every record were one line: correct those after a
        # blank line, a line set aside or a value spanning lines
        guessed = np.arange(1, read + 1, dtype=np.int64) + header_line
        moved = lines != guessed
        if moved.any():
            frame = pd.DataFrame({"guessed": guessed[moved], "line": lines[moved]})
            self.con.register("_line_map", frame)
            try:
                self.con.execute(
                    "UPDATE _raw SET _retain_row = m.line FROM _line_map m "
                    "WHERE _raw._retain_row = m.guessed"
                )
            finally:
                self.con.unregister("_line_map")
        blank = " AND ".join(f"coalesce(trim({_q(c)}), '') = ''" for c in columns)
        self.con.execute(f"DELETE FROM _raw WHERE {blank}")
        # DuckDB's line -> the line the record starts on in the file
        numbered = [(int(k) + 1, int(records.lines[k])) for k in rejected if 0 <= k < len(kept)]
        if numbered:
            self.con.execute(
                "UPDATE _bad_lines SET line = m.file_line FROM (SELECT unnest(?) AS line, "
                "unnest(?) AS file_line) m WHERE _bad_lines.line = m.line",
                [[d for d, _ in numbered], [f for _, f in numbered]],
            )
        self._refuse_unclosed_quote()
        # a line of spaces is blank too, not a malformed row
        self.con.execute("DELETE FROM _bad_lines WHERE trim(csv_line, ' \t\r\n') = ''")
        self.rejected = self.count("_bad_lines")
        if self.rejected:
            self.add_quarantine(
                f"SELECT line AS _retain_row, NULL AS col, {_REJECT_REASON} AS why, "
                "CAST(to_json(struct_pack(line := csv_line)) AS VARCHAR) AS _raw_json "
                "FROM _bad_lines",
                "orders",
            )

    def _has_bytes(self, wanted: bytes) -> bool:
        """Whether the file holds any of the ``wanted`` bytes."""
        table = bytes(range(256)).translate(None, wanted)
        return any(block.translate(None, table) for block in text.read_blocks(self.path))

    def _single_byte_file(self, encoding: str) -> bool:
        """Whether a file read as UTF-8 is in a single-byte encoding instead: some rows do
        not decode and none of those that do holds a character beyond ASCII."""
        if encoding not in ("utf-8", "utf-8-sig"):
            return False
        bad = self.con.execute(
            "SELECT count(*) FROM _rejects WHERE error_type = 'INVALID ENCODING'"
        ).fetchall()[0][0]
        if not bad:
            return False
        columns = [c for c in self.columns("_raw") if c != "_retain_row"]
        joined = " || ".join(f"coalesce({_q(c)}, '')" for c in columns)
        wide = self.con.execute(
            f"SELECT count(*) FROM (SELECT 1 FROM _raw WHERE NOT ({joined}) SIMILAR TO "
            "'[\\x00-\\x7F]*' LIMIT 1)"
        ).fetchall()[0][0]
        return not wide

    def _refuse_unclosed_quote(self) -> None:
        """Refuse the file when a quote opened on some line is never closed: the lines
        after it ran together into one value."""
        found = self.con.execute(
            "SELECT line, length(csv_line) - length(replace(csv_line, chr(10), '')) "
            "FROM _bad_lines WHERE error_type = 'UNQUOTED VALUE' "
            "AND contains(rtrim(csv_line, chr(13) || chr(10)), chr(10)) ORDER BY line LIMIT 1"
        ).fetchall()
        if not found:
            return
        start, after = int(found[0][0]), int(found[0][1])
        raise DataError(
            f'a quote (") opened on line {start:,} is not closed, so the '
            f"{_count(after, 'line')} after it run together. Close the quote or remove it, "
            "then ingest again; nothing was stored",
            file=self.file,
            row=start,
        )

    def columns(self, table: str) -> list[str]:
        return [r[0] for r in self.con.execute(f"DESCRIBE {table}").fetchall()]

    def column_types(self, table: str) -> dict[str, str]:
        return {r[0]: r[1] for r in self.con.execute(f"DESCRIBE {table}").fetchall()}

    def count(self, table: str) -> int:
        row = self.con.execute(f"SELECT count(*) FROM {table}").fetchall()[0]
        return int(row[0]) if row else 0

    # -- validation ------------------------------------------------------------------
    def validate(
        self,
        table: Table,
        source: str,
        mapping: Mapping[str, str],
        extra_checks: list[tuple[str, str, str]] | None = None,
        layers: list[list[tuple[str, str]]] | None = None,
        raw_columns: list[str] | None = None,
        labels: Mapping[str, str] | None = None,
        negative_ok: str | None = None,
    ) -> str:
        """Parse ``source`` into ``table``'s columns; quarantine bad rows; return the clean view.

        One pass over the rows, materialised once. ``mapping`` maps canonical
        column -> column of ``source``. ``layers`` compute columns from the
        parsed ones, in order: each is a list of (column, SQL) that replace a
        column or add one. ``extra_checks`` are (condition, column, reason SQL),
        tested after the per-column ones; the first that fails names the row's
        problem. Each canonical column's value as read is there as ``_t_<column>``
        for blank tests and messages (NULL when blank): its text trimmed, or the value
        itself when the file's column is a number, date or boolean type (Parquet), so a
        message reads it as text with :func:`_as_text`. ``labels`` names, per canonical
        column, the file's column to
        cite (default: the mapped column when it is one of the file's). ``negative_ok``
        is a condition under which negative amounts are allowed (a refund row).
        """
        types = self.column_types(source)
        self._check_typed_columns(table, mapping, types)
        # first the values as read (_t_), then each column parsed from its _t_: text is
        # trimmed once, and typed values are not written as text at all
        read = ["_retain_row"]
        select = ["_retain_row"]
        text_cols = []
        for col in table.columns:
            src = mapping.get(col.name)
            kind = _kind(col.sql_type)
            bare = col.sql_type.split()[0]
            t = f"_t_{col.name}"
            if src is None:
                select.append(f"CAST(NULL AS {bare}) AS {col.name}")
                select.append(f"CAST(NULL AS VARCHAR) AS {t}")
                if col.name in IDENTIFIERS:
                    select.append(f"false AS _b_{col.name}")
                continue
            src_sql = _q(src)
            src_type = types.get(src, "VARCHAR")
            read.append(f"{parse.as_read(src_sql, src_type)} AS {t}")
            t_type = src_type if parse.is_plain_type(src_type) else "VARCHAR"  # _t_'s type
            select.append(t)
            if col.name in IDENTIFIERS:
                # tabs, NULs and zero-width characters are no part of an id; a value whose
                # trimmed text is empty holds nothing else (blank)
                read.append(f"length(CAST({src_sql} AS VARCHAR)) > 0 AS _n_{col.name}")
                select.append(f"{parse.identifier(t, t_type)} AS {col.name}")
                select.append(f"({t} IS NULL AND _n_{col.name}) AS _b_{col.name}")
            elif kind == "text":
                value = t if t_type == "VARCHAR" else parse.text(t, t_type)
                select.append(f"{value} AS {col.name}")
            elif kind in ("timestamp", "date"):
                parsed = parse.timestamp(t, t_type, self.date_format)
                if kind == "date":
                    parsed = f"CAST({parsed} AS DATE)"
                select.append(f"{parsed} AS {col.name}")
            else:
                parser = _PARSERS[kind][0]
                select.append(f"{parser(t, t_type)} AS {col.name}")
            text_cols.append(col.name)
        query = f"SELECT {', '.join(select)} FROM (SELECT {', '.join(read)} FROM {source})"
        known = {c.name for c in table.columns}
        for layer in layers or []:
            replace = [f"{sql} AS {name}" for name, sql in layer if name in known]
            add = [f"{sql} AS {name}" for name, sql in layer if name not in known]
            known.update(name for name, _ in layer)
            star = f"* REPLACE ({', '.join(replace)})" if replace else "*"
            query = f"SELECT {', '.join([star, *add])} FROM ({query})"

        checks: list[tuple[str, str, str]] = []
        for col in table.columns:
            if col.name in IDENTIFIERS:
                checks.append((f"_b_{col.name}", col.name, _lit(_BLANK_MESSAGE % col.name)))
            if col.required:
                reason = _REQUIRED_MESSAGE.get(col.name, f"missing {col.name}")
                checks.append((f"_t_{col.name} IS NULL", col.name, _lit(reason)))
            kind = _kind(col.sql_type)
            if kind != "text" and col.name in text_cols:
                _, expected, what = _PARSERS[kind]
                unread = f"{col.name} IS NULL"
                if kind == "number":  # NaN, inf and 1e400 are not amounts
                    unread = f"({unread} OR NOT isfinite({col.name}))"
                why = (
                    f"{_lit(what + ': got ')} || '''' || {_as_text(col.name)} || '''' || "
                    f"{_lit(', expected ' + expected)}"
                )
                if kind in ("timestamp", "date"):
                    why = parse.date_problem(_as_text(col.name), self.date_format)
                checks.append((f"_t_{col.name} IS NOT NULL AND {unread}", col.name, why))
                if kind in ("timestamp", "date"):
                    checks.append(
                        (
                            f"{col.name} < DATE '{EARLIEST_DATE}'",
                            col.name,
                            f"{_lit('implausible date: got ')} || '''' || {_as_text(col.name)} || '''' "
                            f"|| {_lit(', expected a date on or after ' + EARLIEST_DATE)}",
                        )
                    )
        checks.extend(self._amount_checks(table, converted="_rate" in known))
        for name in _NON_NEGATIVE.get(table.name, ()):
            negative = f"{name} < 0"
            what = "negative amount"
            if negative_ok:  # a refund row may be negative
                negative += f" AND NOT coalesce({negative_ok}, false)"
                what += " that is not a refund"
            checks.append(
                (
                    negative,
                    name,
                    f"'{what}: got ' || {_as_text(name)} || ', expected 0 or more'",
                )
            )
        checks.extend(extra_checks or [])
        raw_cols = (
            raw_columns if raw_columns is not None else [c for c in types if c != "_retain_row"]
        )
        cite = {k: v for k, v in mapping.items() if v in raw_cols}
        cite.update(labels or {})
        case = " ".join(
            f"WHEN {cond} THEN struct_pack(col := {_lit(cite.get(col, col))}, why := {why})"
            for cond, col, why in checks
        )
        names = ", ".join(table.column_names)
        checked = f"_checked_{table.name}"
        try:
            self.con.execute(
                f"CREATE OR REPLACE TEMP TABLE {checked} AS "
                f"SELECT _retain_row, {names}, CASE {case} END AS _problem FROM ({query})"
            )
        except duckdb.Error as exc:
            if source == "_raw" and self.parquet_view:  # the file is read here, first
                raise _unreadable_parquet(exc, self.file) from None
            raise
        self.add_quarantine(
            f"SELECT c._retain_row, c._problem.col AS col, c._problem.why AS why, "
            f"{self.raw_json(raw_cols, 's')} AS _raw_json "
            f"FROM {checked} c JOIN {source} s USING (_retain_row) WHERE c._problem IS NOT NULL",
            table.name,
        )
        clean = f"_clean_{table.name}"
        self.con.execute(
            f"CREATE OR REPLACE TEMP VIEW {clean} AS "
            f"SELECT _retain_row, {names} FROM {checked} WHERE _problem IS NULL"
        )
        self.sources[clean] = (checked, source, raw_cols)
        return clean

    def _check_typed_columns(
        self, table: Table, mapping: Mapping[str, str], types: Mapping[str, str]
    ) -> None:
        """Refuse a typed column (Parquet) that cannot hold what its canonical column
        needs: a boolean amount is no number (DuckDB would read true as 1.0)."""
        for col in table.columns:
            src = mapping.get(col.name)
            source_type = types.get(src, "VARCHAR") if src is not None else "VARCHAR"
            if source_type in ("VARCHAR", '"NULL"', "NULL"):  # text, or a column of NULLs
                continue
            kind = _kind(col.sql_type)
            numeric = parse.is_numeric_type(source_type)
            if kind == "number" and not numeric:
                expected = "a number column (integer, decimal or floating point)"
            elif kind in ("timestamp", "date") and not (
                numeric or parse.is_temporal_type(source_type)
            ):
                expected = "a date or timestamp column, or text such as 2025-10-02"
            elif kind == "boolean" and not (numeric or source_type == "BOOLEAN"):
                expected = f"a boolean column, or text ({parse.BOOLEAN_EXPECTED})"
            else:
                continue
            raise SchemaError(
                f"{self.file}: column {src!r} is of type {source_type}, which cannot hold "
                f"{col.name}: expected {expected}. Convert the column or map another one "
                f"(--map {col.name}=COLUMN); nothing was stored"
            )

    def max_amount(self) -> float:
        """The largest absolute amount accepted, reporting currency: the store's
        ``max_amount`` setting (see :mod:`retain.config`)."""
        return config.load_settings(self.store).max_amount

    def _amount_checks(self, table: Table, converted: bool) -> list[tuple[str, str, str]]:
        """Checks that every amount of ``table``, after currency conversion, is finite and
        within the ``max_amount`` setting: 1e32 is a typing or export mistake, and summed
        with other amounts it breaks exact (DECIMAL) sums or overflows to inf. ``converted``:
        the rows carry ``_rate``, the rate their amounts were converted at."""
        bound = self.max_amount()
        expected = f", expected at most {bound:,.0f} in absolute value ({_MAX_AMOUNT_HINT})"
        checks = []
        for col in table.columns:
            if _kind(col.sql_type) != "number":
                continue
            name = col.name
            got = f"coalesce({_as_text(name)}, CAST({name} AS VARCHAR))"
            if converted:  # amounts are checked in the reporting currency
                got += (
                    f" || CASE WHEN coalesce(_rate, 1) <> 1 THEN ' (' || CAST({name} AS VARCHAR)"
                    f" || {_lit(' ' + self.currency + ' after conversion)')} ELSE '' END"
                )
            checks.append(
                (
                    f"{name} IS NOT NULL AND NOT (isfinite({name}) AND abs({name}) <= {bound!r})",
                    name,
                    f"'implausible amount: got ' || {got} || {_lit(expected)}",
                )
            )
        return checks

    @staticmethod
    def raw_json(columns: list[str], alias: str) -> str:
        """SQL for the row as read, as JSON text."""
        pairs = ", ".join(f"{_q(c)} := {alias}.{_q(c)}" for c in columns)
        return f"CAST(to_json(struct_pack({pairs})) AS VARCHAR)"

    def add_quarantine(self, query: str, target: str) -> None:
        """``query`` yields (_retain_row, col, why, _raw_json) rows to set aside."""
        name = f"_q{len(self.quarantine_parts)}"
        self.con.execute(
            f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT {self.source_sql} AS source_file, "
            f"{self.row_sql} AS row_number, {_lit(target)} AS target, col AS column_name, "
            f"why AS reason, _raw_json AS raw FROM ({query})"
        )
        self.quarantine_parts.append(name)

    def quarantine_duplicates(self, clean: str, key: str, target: str) -> None:
        """Keep the first row of each key in a file; set the later ones aside, naming the first."""
        checked, source, raw_cols = self.sources[clean]
        repeated = self.con.execute(
            f"SELECT count(*) FROM (SELECT {key} FROM {clean} GROUP BY {key} HAVING count(*) > 1)"
        ).fetchall()[0]
        if not repeated or not repeated[0]:
            return
        self.con.execute(
            f"CREATE OR REPLACE TEMP TABLE _dups AS SELECT _retain_row, {key}, _first FROM "
            f"(SELECT _retain_row, {key}, min(_retain_row) OVER (PARTITION BY {key}) AS _first FROM {clean}) "
            "WHERE _retain_row <> _first"
        )
        self.add_quarantine(
            f"SELECT d._retain_row, {_lit(key)} AS col, "
            f"'{key} ''' || d.{key} || ''' appears again; first at row ' || d._first AS why, "
            f"{self.raw_json(raw_cols, 's')} AS _raw_json "
            f"FROM _dups d JOIN {source} s USING (_retain_row)",
            target,
        )
        self.con.execute(
            f"UPDATE {checked} SET _problem = struct_pack(col := {_lit(key)}, why := 'duplicate') "
            "WHERE _retain_row IN (SELECT _retain_row FROM _dups)"
        )

    # -- orders ----------------------------------------------------------------------
    def order_layers(self, has_net: bool) -> list[list[tuple[str, str]]]:
        """Complete parsed orders: defaults, net revenue, the reporting currency."""
        for code, value in self.rates.items():  # a rate of nan or inf would convert to nan
            if not math.isfinite(value) or value <= 0:
                raise ArgumentError(
                    f"rate {code}={value!r}: expected a finite number above 0, the "
                    f"reporting-currency units per {code}"
                )
        rate = " ".join(f"WHEN {_lit(k)} THEN {v!r}" for k, v in self.rates.items())
        # a blank amount is 0; an unreadable one stays NULL for its check to name it
        defaults = [
            (m, f"CASE WHEN _t_{m} IS NULL THEN 0 ELSE {m} END")
            for m in MONEY_COLUMNS
            if m != "refunded"
        ]
        computed_net = "gross - discount - refunded - fees"
        # computed only where net_revenue is blank: an unreadable one stays NULL for its check
        net = (
            f"CASE WHEN _t_net_revenue IS NULL THEN {computed_net} ELSE net_revenue END"
            if has_net
            else computed_net
        )
        money = [*MONEY_COLUMNS, "net_revenue"]
        return [
            [
                ("customer_id", CUSTOMER_KEY),
                ("email", "lower(email)"),
                ("currency", f"coalesce(upper(currency), {_lit(self.currency)})"),
                *defaults,
                ("refunded", "abs(CASE WHEN _t_refunded IS NULL THEN 0 ELSE refunded END)"),
            ],
            [("net_revenue", net), ("_rate", f"CASE currency {rate} END")],
            # rows without a rate are quarantined; leave their amounts as read
            [(m, f"{m} * coalesce(_rate, 1)") for m in money],
        ]

    def order_checks(self, refund_rows: bool = True) -> list[tuple[str, str, str]]:
        """Checks that orders must pass beyond their columns' types. With ``refund_rows``
        a negative amount makes a refund row (see :mod:`retain.ingest.purchases`)
        instead of a quarantined one."""
        as_of = _lit(self.as_of.isoformat(sep=" "))
        checks: list[tuple[str, str, str]] = [
            (
                "_t_net_revenue IS NULL AND _t_gross IS NULL",
                "net_revenue",
                "'no amount: net_revenue or gross is needed'",
            ),
            (
                f"ordered_at > TIMESTAMP {as_of}",
                "ordered_at",
                f"'{AFTER_AS_OF} {self.as_of.date()}: got ' || {_as_text('ordered_at')}",
            ),
            (
                "_rate IS NULL",
                "currency",
                f"'unknown currency without a rate: got ''' || currency || ''', expected "
                f"{self.currency} or a currency given a rate (--rate CODE=RATE)'",
            ),
            (
                "net_revenue < 0 AND refunded = 0",
                "net_revenue",
                # without a net_revenue in the file, name the net computed from gross
                f"'negative amount that is not a refund: got ' || coalesce({_as_text('net_revenue')}, "
                "CAST(net_revenue AS VARCHAR) || ' (gross less discount, refunds and fees)') || "
                "', expected 0 or more, or a refunded amount'",
            ),
            purchases.status_check(),
        ]
        if refund_rows:  # a refund row is negative on purpose
            condition, column, why = checks[3]
            checks[3] = (f"{condition} AND NOT {purchases.REFUND_ROW}", column, why)
        return checks

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Write all of the block's changes or none, then drop the staging tables either way.

        Any exception in the block (or in the commit) rolls everything back: nothing of
        an ingest that raised is stored. Inside the caller's :meth:`Store.transaction`
        the block joins it, and the caller's commit or rollback decides."""
        try:
            with self.store.transaction():
                # whatever this block writes, no earlier ingest is the latest write any more
                # (record_file marks this one's): only the latest is skipped as a no-op
                self.con.execute("UPDATE ingested_files SET latest = false WHERE latest")
                yield
        except BaseException:
            # in the caller's transaction that a failed statement aborted, the drops fail
            # too: the error that matters is the first
            with contextlib.suppress(duckdb.Error):
                self.drop_staging()
            raise
        self.drop_staging()

    def drop_raw(self) -> None:
        """Drop the staged rows ``_raw``, a view over a Parquet file or a table."""
        view = self.con.execute(
            "SELECT count(*) FROM duckdb_views() WHERE view_name = '_raw' AND temporary"
        ).fetchall()[0][0]
        self.con.execute(f"DROP {'VIEW' if view else 'TABLE'} IF EXISTS _raw")

    def drop_staging(self) -> None:
        for view in self.sources:
            self.con.execute(f"DROP VIEW IF EXISTS {view}")
        for view in ("_order_rows", "_refund_rows", "_written", "_purchases"):
            self.con.execute(f"DROP VIEW IF EXISTS {view}")
        self.drop_raw()
        tables = ["_dups", "_cust", "_spend", "_shop", "_shop_orders", "_shop_lines"]
        tables += ["_orphan_refunds", "_refund_old", "_refund_delta", "_moved_from"]
        tables += ["_rejects", "_reject_scans"]
        tables += [*self.quarantine_parts, *(checked for checked, _, _ in self.sources.values())]
        for name in tables:
            self.con.execute(f"DROP TABLE IF EXISTS {name}")

    # -- writing ---------------------------------------------------------------------
    def write_orders(
        self, order_rows: str, report: IngestReport, refund_rows: str | None = None
    ) -> str:
        """Store the validated ``order_rows`` (and ``refund_rows``) by the rules of
        :mod:`retain.ingest.purchases`; return the view of those that are purchases."""
        return purchases.write(self, order_rows, refund_rows, report)

    def write_customers_from_orders(
        self, clean: str, extra: str | None = None, join: str = ""
    ) -> int:
        """Create or update the customers seen in these orders (purchases).

        Identity from orders (``email``, ``name``: the latest order's that has one)
        fills in what the store lacks and never replaces a stored value: a customers
        file stays the authority. ``accepts_marketing``, when given, is the latest."""
        extra_cols = extra or (
            "arg_max(email, ordered_at) FILTER (WHERE email IS NOT NULL) AS email, "
            "arg_max(name, ordered_at) FILTER (WHERE name IS NOT NULL) AS name, "
            "CAST(NULL AS BOOLEAN) AS accepts_marketing"
        )
        self.con.execute(
            "CREATE OR REPLACE TEMP TABLE _cust AS SELECT customer_id, "
            "min(ordered_at) AS first_seen, arg_min(channel, ordered_at) AS acquisition_channel, "
            f"{extra_cols} FROM {clean} {join} GROUP BY customer_id"
        )
        insert = (
            "INSERT INTO customers (customer_id, email, name, first_seen, acquisition_channel, "
            "accepts_marketing) SELECT customer_id, email, name, first_seen, acquisition_channel, "
            "accepts_marketing FROM _cust"
        )
        # no stored customer (a first ingest): nothing to conflict with, as _cust holds one
        # row a customer, and a plain insert skips the conflict look-up of every row
        if self.con.execute("SELECT EXISTS (SELECT 1 FROM customers)").fetchall()[0][0]:
            insert += (
                " ON CONFLICT (customer_id) DO UPDATE SET "
                "email = coalesce(customers.email, excluded.email), "
                "name = coalesce(customers.name, excluded.name), "
                "first_seen = least(customers.first_seen, excluded.first_seen), "
                "acquisition_channel = coalesce(customers.acquisition_channel, "
                "excluded.acquisition_channel), "
                "accepts_marketing = coalesce(excluded.accepts_marketing, customers.accepts_marketing)"
            )
        self.con.execute(insert)
        self.drop_orphans()
        return self.count("_cust")

    def drop_orphans(self) -> None:
        """Remove the customers whose last order this ingest gave to another customer
        (a re-ingest with a changed customer_id): made from orders, they have no order,
        excluded order or refund left. A customer a customers file gave stays."""
        if not self.con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = '_moved_from'"
        ).fetchall()[0][0]:
            return
        # no order moved: skip the look-ups over every stored order (a third of a second
        # on a store of millions, paid by every POST /api/orders)
        if not self.count("_moved_from"):
            return
        self.con.execute(
            "DELETE FROM customers WHERE customer_id IN (SELECT customer_id FROM _moved_from) "
            "AND customer_id NOT IN (SELECT customer_id FROM orders) "
            "AND customer_id NOT IN (SELECT customer_id FROM excluded_orders) "
            "AND customer_id NOT IN (SELECT customer_id FROM order_refunds "
            "WHERE customer_id IS NOT NULL) "
            "AND customer_id NOT IN (SELECT customer_id FROM listed_customers)"
        )

    def write_quarantine(self, report: IngestReport, digest: str | None = None) -> None:
        """Replace the file's quarantine rows with this ingest's. With ``digest`` (the
        file's SHA-256), the rows of an earlier ingest of the same content at another
        path go too: the content is read again here, and its rows are set aside once."""
        self.con.execute("DELETE FROM quarantine WHERE source_file = ?", [self.file])
        if digest is not None:
            self.con.execute(
                "DELETE FROM quarantine WHERE source_file IN (SELECT source_file FROM "
                "ingested_files WHERE sha256 = ? AND source_file <> ?)",
                [digest, self.file],
            )
        for part in self.quarantine_parts:
            self.con.execute(
                "INSERT INTO quarantine SELECT source_file, row_number, target, column_name, "
                f"reason, raw, now()::TIMESTAMP FROM {part}"
            )
        if not self.quarantine_parts:
            return
        union = " UNION ALL ".join(f"SELECT * FROM {p}" for p in self.quarantine_parts)
        rows = self.con.execute(
            f"SELECT row_number, column_name, reason FROM ({union}) ORDER BY row_number"
        ).fetchall()
        report.quarantined = len(rows)
        for _, _, reason in rows:
            key = reason.split(":")[0]
            report.reasons[key] = report.reasons.get(key, 0) + 1
        report.examples = [
            f"row {r}" + (f", column '{c}'" if c else "") + f": {why}" for r, c, why in rows[:3]
        ]

    def record_file(
        self, fmt: str, report: IngestReport, *, digest: str | None = None, options: str = ""
    ) -> None:
        """Record the file in ``ingested_files``: its content hash (``digest``, computed
        when not given), the ``options`` of the ingest (JSON), its counts, and that it is
        the store's latest write (``latest``, cleared by the next :meth:`transaction`)."""
        if digest is None:
            sha = hashlib.sha256()
            with self.path.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    sha.update(block)
            digest = sha.hexdigest()
        loaded = (
            report.orders
            + report.order_lines
            + report.spend_rows
            + report.subscriptions
            + report.feedback
        )
        if fmt == "customers":
            loaded = report.customers
        self.con.execute(
            "INSERT OR REPLACE INTO ingested_files (source_file, format, sha256, rows_read, "
            "rows_loaded, rows_quarantined, ingested_at, as_of, options, latest) "
            "VALUES (?, ?, ?, ?, ?, ?, now()::TIMESTAMP, ?, ?, true)",
            [
                self.file,
                fmt,
                digest,
                report.rows_read,
                loaded,
                report.quarantined,
                self.given_as_of,
                options or None,
            ],
        )


# The prefix of every column retain adds while staging a file; a file's own column may
# not start with it, so the two can never be confused.
RESERVED_PREFIX = "_retain_"

# Why DuckDB could not read a line as a row, in words (over ``_bad_lines``).
_REJECT_REASON = """CASE
    WHEN contains(csv_line, chr(0)) THEN
        'malformed row: a NUL byte in the line (text holds none: damaged, or not text)'
    WHEN error_type = 'INVALID ENCODING' THEN
        'not valid UTF-8; pass --encoding cp1252 if the file is Windows-1252 '
        || '(or the encoding it was saved in)'
    WHEN error_type = 'MISSING COLUMNS' THEN
        'malformed row: too few columns: expected '
        || regexp_extract(error_message, 'Expected Number of Columns: (\\d+)', 1)
        || ', found ' || regexp_extract(error_message, 'Found: (\\d+)', 1)
    WHEN error_type = 'TOO MANY COLUMNS' THEN
        'malformed row: too many columns: expected '
        || regexp_extract(error_message, 'Expected Number of Columns: (\\d+)', 1)
        || ', found ' || regexp_extract(error_message, 'Found: (\\d+)', 1)
        || ' (a value holding the delimiter needs quotes)'
    WHEN error_type = 'UNQUOTED VALUE' THEN
        'malformed row: stray quote: a value that opens with a quote (") must close with one '
        || 'right before the next delimiter'
    WHEN error_type = 'LINE SIZE OVER MAXIMUM' THEN
        'malformed row: line longer than 2 MiB'
    ELSE 'malformed row: ' || lower(error_type) || ': ' || error_message
END"""


def check_columns(columns: list[str], file: str, row: int | None) -> None:
    """Refuse a header with a blank or repeated column name, or a name that starts with
    :data:`RESERVED_PREFIX`. ``row``: the header's line (None for Parquet)."""
    if not columns or any(not c for c in columns):
        raise DataError(
            "the header row has a blank column name; every column needs a name",
            file=file,
            row=row,
        )
    if len(set(columns)) < len(columns):
        repeated = sorted({c for c in columns if columns.count(c) > 1})
        raise DataError(
            f"the header row names a column twice: {', '.join(repeated)}", file=file, row=row
        )
    reserved = [c for c in columns if c.lower().startswith(RESERVED_PREFIX)]
    if reserved:
        raise SchemaError(
            f"{file}: column {reserved[0]!r}: names starting with {RESERVED_PREFIX} are kept for "
            "retain's own staging columns; rename the column and ingest again"
        )


def resolve_mapping(
    table: Table, columns: list[str], mapping: Mapping[str, str] | None, file: str
) -> dict[str, str]:
    """Canonical column -> file column: explicit mapping first, then names that match
    ignoring case, spaces and dashes."""
    mapping = dict(mapping or {})
    for canonical, source in mapping.items():
        if canonical not in table.column_names:
            raise SchemaError(
                f"--map {canonical}={source}: {canonical!r} is not a column of {table.name}; "
                f"its columns are {', '.join(table.column_names)}"
            )
        if source not in columns:
            raise SchemaError(
                f"{file}: --map {canonical}={source}: the file has no column {source!r}; "
                f"found {', '.join(columns)}"
            )
    norm = {c.strip().lower().replace(" ", "_").replace("-", "_"): c for c in columns}
    resolved = dict(mapping)
    for name in table.column_names:
        if name not in resolved and name in norm:
            resolved[name] = norm[name]
    return resolved


def require(
    table: Table,
    resolved: Mapping[str, str],
    columns: list[str],
    file: str,
    needed: list[str] | None = None,
) -> None:
    needed = needed if needed is not None else [c.name for c in table.columns if c.required]
    missing = [c for c in needed if c not in resolved]
    if missing:
        hint = (
            " This looks like a Shopify orders export: pass --format shopify."
            if looks_like_shopify(columns)
            else ""
        )
        raise SchemaError(
            f"{file}: missing required column(s) {', '.join(missing)} for {table.name}. "
            f"Found: {', '.join(columns) or 'no columns'}. Needed: {', '.join(needed)}. "
            "Rename them in the file or map them with --map canonical=source." + hint
        )


def first_line_columns(path: Path, encoding: str | None = None) -> list[str] | None:
    """Column names of a Parquet file or the header of a delimited text file (its first
    non-blank line, split by the delimiter it uses most: comma, semicolon, tab or pipe);
    None when a text file has no such header, [] when it holds only blank lines.
    ``encoding`` as in :func:`retain.ingest.text.file_encoding`."""
    if is_parquet(path):
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return list(pq.read_schema(path).names)
        except (pa.ArrowException, OSError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(
                f"not a readable Parquet file ({reason}); it may be damaged or cut short",
                file=str(path),
            ) from None
    if is_json_lines(path):
        return json_lines_columns(path)
    header = text.decode_header(path, text.file_encoding(path, encoding))
    if header is None:
        return []
    delim = sniff_delimiter(header[0])
    return None if delim is None else header_columns(header[0], delim)


def stage_rows(
    store: Store,
    name: str,
    rows: list[dict[str, str | None]],
    columns: list[str],
    numbers: list[int] | None = None,
) -> None:
    """Create the temp table ``name`` from records (an API's, not a file's): text columns
    plus ``_retain_row`` (``numbers``, else 1-based, as in a file)."""
    import pandas as pd

    frame = pd.DataFrame({c: pd.Series([r.get(c) for r in rows], dtype="object") for c in columns})
    frame["_retain_row"] = numbers if numbers is not None else range(1, len(rows) + 1)
    view = f"{name}_frame"
    store.con.register(view, frame)
    try:
        casts = ", ".join(f"CAST({_q(c)} AS VARCHAR) AS {_q(c)}" for c in columns)
        store.con.execute(
            f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT {casts}, "
            f"CAST(_retain_row AS BIGINT) AS _retain_row FROM {view}"
        )
    finally:
        store.con.unregister(view)


def is_json_lines(path: Path) -> bool:
    """Whether a text file is JSON lines: its first character but spaces is ``{``."""
    return text.head(path, 4096).lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{")


def json_lines_columns(path: Path) -> list[str]:
    """The keys of a JSON lines file's objects, in the order they first appear (the
    lines that are not objects are the stage's to set aside)."""
    keys: dict[str, None] = {}
    for _, record in _json_records(path):
        if isinstance(record, dict):
            keys.update(dict.fromkeys(str(k) for k in record))
    return list(keys)


def _json_records(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, the line's JSON value, or the line's text when it does not parse
    as JSON: a :class:`str` in a 1-tuple) of each non-blank line."""
    with text.open_binary(path) as fh:
        for number, raw in enumerate(fh, start=1):
            line = raw.decode("utf-8", errors="replace").strip().lstrip("\ufeff")
            if not line:
                continue
            try:
                yield number, json.loads(line)
            except ValueError:
                yield number, (line,)


def json_cell(value: Any) -> str | None:
    """A JSON value as the text a CSV cell would hold: a list joined by commas, an object
    as JSON, true and false as such, null as blank."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(json_cell(v) or "") for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def load_json_raw(raw: str | None) -> dict[str, object]:
    return json.loads(raw) if raw else {}


def _count(n: int, noun: str) -> str:
    """``n`` with its noun in the singular or the plural: "1 row", "2,000 rows"."""
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def api_loader(store: Store, source: str) -> Loader:
    """A :class:`Loader` for records sent through the service, not read from a file: its
    source is ``source``, the time and a random tag (what the quarantine names), and rows
    are checked against the store's observation time (its ``as_of`` setting), else now."""
    import uuid

    from retain.config import observation_time, resolve_currency

    wall = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    label = f"{source} {wall:%Y-%m-%dT%H:%M:%S} {uuid.uuid4().hex[:8]}"
    loader = Loader(
        store,
        Path(label),
        as_of=observation_time(store) or wall,
        currency=resolve_currency(store, None),
        rates={},
    )
    loader.file = label  # the label exactly as written, not a path
    loader.source_sql = _lit(label)
    return loader


def ingest_api_records(
    store: Store,
    records: Sequence[Mapping[str, Any]],
    *,
    route: str,
    table: Table,
    load: Callable[[Loader, list[str], Mapping[str, str] | None, IngestReport], None],
    stored: Callable[[IngestReport], int],
) -> dict[str, Any]:
    """Records sent to ``route`` (``POST /api/feedback``, ``POST /api/events``), checked by
    the rules of ``table``'s file (``load``, its reader) in one transaction: row N of the
    quarantine is the N-th record. Dated after the store's observation day (its ``as_of``
    setting), else after now, a record is set aside. The answer: how many were
    ``stored`` (``stored(report)``), the ``source`` they are stored under, and each record
    ``quarantined`` with its reason."""
    loader = api_loader(store, f"api:POST {route}")
    label = loader.file
    fields = [c.name for c in table.columns if c.name != "source_file"]
    required = [c.name for c in table.columns if c.required]
    given = [c for c in fields if any(r.get(c) is not None for r in records)]
    columns = list(dict.fromkeys([*required, *given]))  # a missing one: each row says so
    rows = [{c: json_cell(r.get(c)) for c in columns} for r in records]  # as JSON lines
    report = IngestReport(file=label, format=table.name, rows_read=len(records))
    stage_rows(store, "_raw", rows, columns)
    with loader.transaction():
        load(loader, columns, None, report)
        loader.write_quarantine(report)
    problems = store.con.execute(
        "SELECT row_number, column_name, reason FROM quarantine WHERE source_file = ? "
        "ORDER BY row_number",
        [label],
    ).fetchall()
    return {
        "stored": stored(report),
        "source": label,
        "quarantined": [{"record": r, "column": c, "reason": why} for r, c, why in problems],
    }
