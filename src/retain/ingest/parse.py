"""SQL expressions that parse text values the way people write them.

Each function returns a DuckDB expression over a column reference. A value
that cannot be parsed becomes NULL; the validator turns that into a
quarantined row with the reason.

Dates are read as ISO 8601 (2025-10-02, with or without a time and an offset)
or YYYYMMDD, exactly 8 digits: a 7-digit date such as 2025012 could be
2025-01-02 or 2025-10-12 and is quarantined. A day-first or month-first date (03/04/2025) is ambiguous and is
read only when the ingest is given a ``date_format`` ("%m/%d/%Y", or a
shorthand such as "MM/DD/YYYY"); without one it is quarantined with a message
that says so.
"""

from __future__ import annotations

from retain.errors import DataError

# Offsets written as "-0300" or "+02:00", after a time: DuckDB wants "+HH:MM".
_OFFSET = r"(\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?)\s*([+-])(\d{2}):?(\d{2})$"

# Day-first or month-first dates: 03/04/2025, 3.4.25, 03-04-2025 10:00.
_AMBIGUOUS = r"\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}([ T].*)?"

# Shorthands for ``date_format``, read as strptime codes.
_SHORTHAND = (("YYYY", "%Y"), ("YY", "%y"), ("MM", "%m"), ("DD", "%d"))

# Unicode space separators (no-break space, ideographic space...), controls (tab, NUL,
# line breaks) and format characters (zero-width space U+200B, joiners, the BOM U+FEFF):
# trimmed from every text value, and removed from identifiers wherever they are, as
# they are invisible and two ids that look the same must be the same id.
_EDGE = r"^[\p{Z}\p{Cc}\p{Cf}]+|[\p{Z}\p{Cc}\p{Cf}]+$"
_INVISIBLE = r"[\p{Cc}\p{Cf}]"

# Text that needs no cleaning: printable ASCII, no space at either end (most values of
# most files). Tested first, as one match is cheaper than the clean-ups it makes needless.
_PRINTABLE = r"[!-~]([ -~]*[!-~])?"
# A plain decimal (12.50, -3) and an ISO date or time without offset (2025-10-02,
# 2025-10-02 17:09:34): read by a cast alone, as the general rules would read them.
_PLAIN_NUMBER = r"-?[0-9]+(\.[0-9]+)?"
_PLAIN_TIMESTAMP = r"[0-9]{4}-[0-9]{2}-[0-9]{2}([ T][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?)?"

# A compact date: YYYYMMDD, exactly 8 digits.
_COMPACT = r"\d{8}"
_SHORT_COMPACT = r"\d{5,7}"

TIMESTAMP_EXPECTED = "a date or time such as 2025-10-02, 2025-10-02 17:09:34 -0300 or 20251002"
NUMBER_EXPECTED = "a number such as 12.50"
DATE_EXPECTED = "a date such as 2025-10-02"
BOOLEAN_EXPECTED = "yes/no, true/false or 1/0"
COMPACT_EXPECTED = (
    ": expected a compact date of exactly 8 digits, YYYYMMDD (a 7-digit date such as "
    "2025012 could be 2025-01-02 or 2025-10-12), or YYYY-MM-DD"
)
Q = "'"


def _sql(value: str) -> str:
    return Q + value.replace(Q, Q + Q) + Q


def strptime_format(date_format: str) -> str:
    """A ``date_format`` as strptime codes: "%m/%d/%Y" as given, or a shorthand such
    as "MM/DD/YYYY" or "DD.MM.YYYY". Raises :class:`DataError` when it does not name
    a day, a month and a year."""
    fmt = date_format.strip()
    if "%" not in fmt:
        for token, code in _SHORTHAND:
            fmt = fmt.replace(token, code)
    if "%d" not in fmt or "%m" not in fmt or ("%Y" not in fmt and "%y" not in fmt):
        raise DataError(
            "unusable date_format",
            value=date_format,
            expected="a day, a month and a year, e.g. 'MM/DD/YYYY', 'DD/MM/YYYY' or '%d.%m.%Y'",
        )
    return fmt


def date_problem(text_col: str, date_format: str | None) -> str:
    """SQL for the reason a date in ``text_col`` could not be read."""
    got = f"{_sql('unreadable date: got ' + Q)} || {text_col} || {_sql(Q)}"
    if date_format:
        expected = f", expected a date as {date_format} (the date_format given) or YYYY-MM-DD"
        return f"{got} || {_sql(expected)}"
    ambiguous = (
        ": expected YYYY-MM-DD (day-first and month-first dates such as 03/04/2025 are "
        "read only with --date-format (date_format=), e.g. MM/DD/YYYY or DD/MM/YYYY)"
    )
    return (
        f"CASE WHEN regexp_full_match({text_col}, {_sql(_AMBIGUOUS)}) "
        f"THEN {got} || {_sql(ambiguous)} "
        f"WHEN regexp_full_match({text_col}, {_sql(_SHORT_COMPACT)}) "
        f"THEN {got} || {_sql(COMPACT_EXPECTED)} "
        f"ELSE {got} || {_sql(', expected ' + TIMESTAMP_EXPECTED)} END"
    )


def is_plain_type(source_type: str) -> bool:
    """Whether a typed column (Parquet) of DuckDB type ``source_type`` holds values whose
    text is never blank and has no space or invisible character at either end: numbers,
    dates and times, booleans."""
    plain = is_numeric_type(source_type) or is_temporal_type(source_type)
    return plain or source_type == "BOOLEAN"


def as_read(col: str, source_type: str = "VARCHAR") -> str:
    """SQL: the value as read, for blank tests and messages: the value itself when its
    type is plain (:func:`is_plain_type`; a message casts it to text), else :func:`text`."""
    return col if is_plain_type(source_type) else text(col)


def text(col: str, source_type: str = "VARCHAR") -> str:
    """Text trimmed of Unicode whitespace and invisible characters at either end, NULL
    when nothing is left. A whole number stored as a float (an id column that pandas
    turned into floats because of a gap) is written without ".0"."""
    if source_type in ("DOUBLE", "FLOAT"):
        return (
            f"CASE WHEN abs({col}) < 1e15 AND {col} = trunc({col}) "
            f"THEN CAST(CAST({col} AS BIGINT) AS VARCHAR) ELSE CAST({col} AS VARCHAR) END"
        )
    value = f"CAST({col} AS VARCHAR)"
    if is_plain_type(source_type):
        return value
    return f"CASE WHEN {_printable(value)} THEN {value} ELSE {trimmed(value)} END"


def trimmed(value: str) -> str:
    """SQL: the text ``value`` (VARCHAR) as :func:`text` reads it, by the general rule."""
    return f"nullif(regexp_replace({value}, {_sql(_EDGE)}, '', 'g'), '')"


def _printable(value: str) -> str:
    """SQL: whether ``value`` (VARCHAR) needs no cleaning, see ``_PRINTABLE``."""
    return f"regexp_full_match({value}, {_sql(_PRINTABLE)})"


def identifier(col: str, source_type: str = "VARCHAR") -> str:
    """An id (customer_id, order_id) as :func:`text`, with controls (tab, NUL) and
    zero-width characters removed inside it too; NULL when nothing visible is left."""
    if source_type in ("DOUBLE", "FLOAT") or is_plain_type(source_type):
        return text(col, source_type)
    value = f"CAST({col} AS VARCHAR)"
    return f"CASE WHEN {_printable(value)} THEN {value} ELSE {visible(value)} END"


def visible(value: str) -> str:
    """SQL: the text ``value`` (VARCHAR) as :func:`identifier` reads it, by the general rule."""
    return trimmed(f"regexp_replace({value}, {_sql(_INVISIBLE)}, '', 'g')")


def is_blank(col: str) -> str:
    """SQL: whether ``col`` holds characters but none that :func:`identifier` keeps
    (only whitespace, tabs, NULs or zero-width characters)."""
    return f"(length(CAST({col} AS VARCHAR)) > 0 AND {identifier(col)} IS NULL)"


def timestamp(col: str, source_type: str = "VARCHAR", date_format: str | None = None) -> str:
    """UTC timestamp from ISO 8601 text (with or without offset) or YYYYMMDD. With a
    ``date_format`` (strptime codes), text in that format, optionally followed by a
    time (HH:MM or HH:MM:SS), is read first."""
    if "TIMESTAMP" in source_type:
        return f"CAST({col} AS TIMESTAMP)"
    if source_type == "DATE":
        return f"CAST({col} AS TIMESTAMP)"
    if date_format:  # the format given comes first: 2025-03-04 may be read as it says
        return timestamp_general(col, date_format)
    # no offset to rewrite and not compact: the cast alone reads it, as UTC (the store's
    # time zone), without the time zone arithmetic of TIMESTAMPTZ
    raw = f"CAST({col} AS VARCHAR)"
    return (
        f"CASE WHEN regexp_full_match({raw}, {_sql(_PLAIN_TIMESTAMP)}) "
        f"THEN TRY_CAST({raw} AS TIMESTAMP) ELSE {timestamp_general(col)} END"
    )


def timestamp_general(col: str, date_format: str | None = None) -> str:
    """SQL: text in ``col`` as :func:`timestamp` reads it, by the general rules."""
    value = text(col)
    given = ""
    if date_format:
        formats = ", ".join(_sql(date_format + t) for t in ("", " %H:%M", " %H:%M:%S"))
        given = f"try_strptime({value}, [{formats}]), "
    return (
        f"coalesce({given}"
        f"CAST(TRY_CAST(regexp_replace({value}, '{_OFFSET}', '\\1\\4\\5:\\6') AS TIMESTAMPTZ)"
        f" AS TIMESTAMP), "
        f"CASE WHEN regexp_full_match({value}, {_sql(_COMPACT)}) "
        f"THEN try_strptime({value}, '%Y%m%d') END)"
    )


_NUMERIC_TYPES = (
    "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
    "UINTEGER", "UBIGINT", "UHUGEINT", "FLOAT", "REAL", "DOUBLE",
)  # fmt: skip


def is_numeric_type(source_type: str) -> bool:
    """Whether a typed column (Parquet) of DuckDB type ``source_type`` holds numbers."""
    base = source_type.upper().split("(")[0].strip()
    return base in _NUMERIC_TYPES or base in ("DECIMAL", "NUMERIC")


def is_temporal_type(source_type: str) -> bool:
    """Whether a typed column of DuckDB type ``source_type`` holds dates or times."""
    base = source_type.upper()
    return base == "DATE" or base.startswith("TIMESTAMP")


def number(col: str, source_type: str = "VARCHAR") -> str:
    """A number; currency symbols, spaces and thousands separators are ignored.

    A comma is a decimal comma where it cannot separate thousands: 12,50 and
    1.234,56 (European exports) read as 12.5 and 1234.56; 1,234 and 1,234.50
    keep reading as one thousand and more, and so does Indian grouping (12,34,567).
    Commas anywhere else (1,234,5) make no number: NULL, for its check to name it.
    Negative zero is zero.
    """
    if source_type != "VARCHAR":
        if not is_numeric_type(source_type):  # TRY_CAST(true AS DOUBLE) is 1.0
            return "CAST(NULL AS DOUBLE)"
        return f"(TRY_CAST({col} AS DOUBLE) + 0.0)"
    # a plain decimal: the cast alone reads it
    return (
        f"CASE WHEN regexp_full_match({col}, {_sql(_PLAIN_NUMBER)}) "
        f"THEN (TRY_CAST({col} AS DOUBLE) + 0.0) ELSE {number_general(col)} END"
    )


def number_general(col: str) -> str:
    """SQL: text in ``col`` as :func:`number` reads it, by the general rules."""
    value = f"regexp_replace({text(col)}, '[$€£¥\\s]', '', 'g')"
    grouped = "[+-]?(\\d{1,3}(,\\d{3})+|\\d{1,2}(,\\d{2})+,\\d{3})(\\.\\d*)?([eE][+-]?\\d+)?"
    # + 0.0: -0.0 + 0.0 is 0.0, so "-0" is stored (and shown) as 0
    return (
        f"(CASE WHEN regexp_full_match({value}, '[+-]?\\d+,(\\d{{1,2}}|\\d{{4,}})') "
        f"THEN TRY_CAST(replace({value}, ',', '.') AS DOUBLE) "
        f"WHEN regexp_full_match({value}, '[+-]?\\d{{1,3}}(\\.\\d{{3}})+,\\d+') "
        f"THEN TRY_CAST(replace(replace({value}, '.', ''), ',', '.') AS DOUBLE) "
        f"WHEN contains({value}, ',') AND NOT regexp_full_match({value}, '{grouped}') "
        "THEN CAST(NULL AS DOUBLE) "
        f"ELSE TRY_CAST(replace({value}, ',', '') AS DOUBLE) END + 0.0)"
    )


def date(col: str, source_type: str = "VARCHAR") -> str:
    return f"CAST({timestamp(col, source_type)} AS DATE)"


def boolean(col: str, source_type: str = "VARCHAR") -> str:
    if source_type == "BOOLEAN":
        return col
    value = f"lower({text(col)})"
    return (
        f"CASE WHEN {value} IN ('yes', 'y', 'true', 't', '1', 'subscribed', 'opted_in') THEN true "
        f"WHEN {value} IN ('no', 'n', 'false', 'f', '0', 'unsubscribed', 'not_subscribed', "
        f"'opted_out') THEN false END"
    )
