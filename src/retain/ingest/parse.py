"""SQL expressions that parse text values the way people write them.

Each function returns a DuckDB expression over a column reference. A value
that cannot be parsed becomes NULL; the validator turns that into a
quarantined row with the reason.
"""

from __future__ import annotations

# Offsets written as "-0300" or "+02:00", after a time: DuckDB wants "+HH:MM".
_OFFSET = r"(\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?)\s*([+-])(\d{2}):?(\d{2})$"

TIMESTAMP_EXPECTED = "a date or time such as 2025-10-02, 2025-10-02 17:09:34 -0300 or 20251002"
NUMBER_EXPECTED = "a number such as 12.50"
DATE_EXPECTED = "a date such as 2025-10-02"
BOOLEAN_EXPECTED = "yes/no, true/false or 1/0"


def text(col: str, source_type: str = "VARCHAR") -> str:
    """Trimmed text, NULL when empty. A whole number stored as a float (an id column
    that pandas turned into floats because of a gap) is written without ".0"."""
    if source_type in ("DOUBLE", "FLOAT"):
        return (
            f"CASE WHEN abs({col}) < 1e15 AND {col} = trunc({col}) "
            f"THEN CAST(CAST({col} AS BIGINT) AS VARCHAR) ELSE CAST({col} AS VARCHAR) END"
        )
    return f"nullif(trim(CAST({col} AS VARCHAR)), '')"


def timestamp(col: str, source_type: str = "VARCHAR") -> str:
    """UTC timestamp from ISO 8601 text (with or without offset) or YYYYMMDD."""
    if "TIMESTAMP" in source_type:
        return f"CAST({col} AS TIMESTAMP)"
    if source_type == "DATE":
        return f"CAST({col} AS TIMESTAMP)"
    value = text(col)
    return (
        f"coalesce("
        f"CAST(TRY_CAST(regexp_replace({value}, '{_OFFSET}', '\\1\\4\\5:\\6') AS TIMESTAMPTZ)"
        f" AS TIMESTAMP), "
        f"try_strptime({value}, '%Y%m%d'))"
    )


def number(col: str, source_type: str = "VARCHAR") -> str:
    """A number; currency symbols, spaces and thousands separators are ignored.

    A comma is a decimal comma where it cannot separate thousands: 12,50 and
    1.234,56 (European exports) read as 12.5 and 1234.56; 1,234 and 1,234.50
    keep reading as one thousand and more.
    """
    if source_type != "VARCHAR":
        return f"TRY_CAST({col} AS DOUBLE)"
    value = f"regexp_replace({text(col)}, '[$€£¥\\s]', '', 'g')"
    return (
        f"CASE WHEN regexp_full_match({value}, '[+-]?\\d+,(\\d{{1,2}}|\\d{{4,}})') "
        f"THEN TRY_CAST(replace({value}, ',', '.') AS DOUBLE) "
        f"WHEN regexp_full_match({value}, '[+-]?\\d{{1,3}}(\\.\\d{{3}})+,\\d+') "
        f"THEN TRY_CAST(replace(replace({value}, '.', ''), ',', '.') AS DOUBLE) "
        f"ELSE TRY_CAST(replace({value}, ',', '') AS DOUBLE) END"
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
