"""The ingest's shortcuts read every value as its general rules do.

Most values of most files are plain (printable ASCII ids and names, 12.50, 2025-10-02
17:09:34) and are read by one match and a cast; the rest by the general rules of
:mod:`retain.ingest.parse`. Whatever the value, the two must agree: a shortcut may only
save time, never change what is stored or quarantined."""

from __future__ import annotations

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retain.ingest import parse

TRICKY = [
    "abc", " abc", "abc ", "a b", "a\tb", "\u200ba", "a\u200b", "", " ", "\t", "\x00", "\x7f",
    "\u00a0x\u00a0", "é", "x\u200by", "A@B.COM", "~", "!", "a\x7fb", "\ufeffid",
    "12.50", "-3", "007", "+5", "-0", "0", "5.", ".5", "1,234", "12,50", "1.234,56", "1e5",
    "$5", " 5 ", "1 234", "99999999999999999999999", "1e400", "nan", "inf", "-", "1,234,5",
    "٣", "１２", "2024-08-20", "2024-08-20 11:47:03", "2024-08-20T11:47:03.123456",
    "2024-08-20 11:47:03.1234567", "2024-13-45", "2024-02-30 10:00:00", "2024-02-29",
    "20240820", "2024082", "2024-08-20 11:47:03 -0300", "2024-08-20 11:47:03+02:00",
    "2024-08-20 11:47", "0001-01-01", "9999-12-31 23:59:59", "03/04/2024", " 2024-08-20 ",
    "2024-8-2", "2024-08-20 24:00:00", "2024-08-20 23:59:60", "10000-01-01",
]  # fmt: skip

PAIRS = [
    ("text", parse.text("v"), parse.trimmed("v")),
    ("identifier", parse.identifier("v"), parse.visible("v")),
    ("number", parse.number("v"), parse.number_general("v")),
    ("timestamp", parse.timestamp("v"), parse.timestamp_general("v")),
]


def disagreements(values: list[str]) -> list[tuple[str, str, object, object]]:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")  # as the store sets it
    con.execute("CREATE TABLE t (v VARCHAR)")
    con.executemany("INSERT INTO t VALUES (?)", [[v] for v in values])
    found = []
    for name, shortcut, general in PAIRS:
        rows = con.execute(
            f"SELECT v, {shortcut}, {general} FROM t WHERE ({shortcut}) IS DISTINCT FROM "
            f"({general})"
        ).fetchall()
        found += [(name, v, a, b) for v, a, b in rows]
    return found


def test_the_shortcuts_agree_with_the_general_rules_on_tricky_values() -> None:
    assert disagreements(TRICKY) == []


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.text(
            alphabet=st.sampled_from(list("0123456789-+.,: T/eE$€ \t\u200b\u00a0aZ~é\x00")),
            max_size=26,
        ),
        min_size=1,
        max_size=40,
    )
)
def test_the_shortcuts_agree_with_the_general_rules_on_any_text(values: list[str]) -> None:
    assert disagreements(values) == []


TYPED = {
    "BIGINT": ["1", "-0", "9223372036854775807"],
    "DECIMAL(10,2)": ["12.50", "-0.01"],
    "TIMESTAMP": ["2024-01-01 10:00:00", "0001-01-01", "2024-01-01 10:00:00.5"],
    "DATE": ["2024-01-01", "0001-01-01"],
    "BOOLEAN": ["true", "false"],
}


@pytest.mark.parametrize("source_type", list(TYPED))
def test_typed_values_are_read_as_their_text(source_type: str) -> None:
    """A number, date or boolean column (Parquet) is read as itself, not trimmed as text:
    its text has nothing to trim."""
    con = duckdb.connect()
    values = ", ".join(f"('{v}')" for v in TYPED[source_type])
    con.execute(
        f"CREATE TABLE t AS SELECT CAST(v AS {source_type}) AS v FROM (VALUES {values}, "
        "(NULL)) x(v)"
    )
    general = parse.trimmed("CAST(v AS VARCHAR)")
    rows = con.execute(f"SELECT {parse.text('v', source_type)}, {general} FROM t").fetchall()
    assert [a for a, _ in rows] == [b for _, b in rows]
