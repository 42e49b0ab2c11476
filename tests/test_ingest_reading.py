"""Reading files as they arrive: blank lines, encodings, delimiters, odd column names,
short lines, Shopify exports, damaged gzip and Parquet files.

Every case goes through the real CLI (`retain ingest`) into a real store file: a
loaded file accounts for every line with data (rows read = rows loaded + rows
quarantined), each row keeps the line a text editor shows, and a refused file
exits 2 with one line naming the file and leaves the store as it was.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from retain.cli import app
from retain.errors import DataError

runner = CliRunner()
HEADER = "order_id,customer_id,ordered_at,net_revenue"
TABLES = ("orders", "customers", "quarantine", "ingested_files")


def ingest(db: Path, path: Path, *options: str):
    return runner.invoke(
        app, ["ingest", str(path), "--db", str(db), "--as-of", "2030-01-01", *options]
    )


def query(db: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def snapshot(db: Path) -> dict[str, list[tuple]]:
    return {t: query(db, f"SELECT * FROM {t} ORDER BY ALL") for t in TABLES}


def loaded(db: Path, path: Path, *options: str) -> dict[str, object]:
    """Ingest a file that must load; return what the store holds of it."""
    result = ingest(db, path, *options)
    assert result.exit_code == 0, result.output
    read, stored, quarantined = query(
        db,
        "SELECT rows_read, rows_loaded, rows_quarantined FROM ingested_files "
        f"WHERE source_file = '{path.resolve()}'",
    )[0]
    excluded = query(db, "SELECT count(*) FROM excluded_orders")[0][0]
    # every line with data is loaded or quarantined
    assert read == stored + quarantined + excluded, result.output
    return {
        "output": result.output,
        "read": read,
        "orders": dict(query(db, "SELECT order_id, customer_id FROM orders")),
        "quarantine": query(
            db,
            "SELECT row_number, reason FROM quarantine "
            f"WHERE source_file = '{path.resolve()}' ORDER BY row_number",
        ),
    }


def refused(db: Path, path: Path, *options: str) -> str:
    """Ingest a file that must be refused; return the message."""
    before = snapshot(db)
    result = ingest(db, path, *options)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert snapshot(db) == before
    return result.output


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A store file holding one order already, so a refusal can be seen to change nothing."""
    path = tmp_path / "store.duckdb"
    first = tmp_path / "first.csv"
    first.write_text(f"{HEADER}\nfirst,c0,2024-01-01,5\n")
    assert ingest(path, first).exit_code == 0
    return path


@pytest.mark.parametrize(
    "body",
    [
        "o1,c1,2024-01-05,10\no2,c2,2024-01-06,20\n\n",  # trailing
        "o1,c1,2024-01-05,10\n\n\n\no2,c2,2024-01-06,20\n",  # several in the middle
        "o1,c1,2024-01-05,10\n   \t\no2,c2,2024-01-06,20\n",  # spaces only
        "o1,c1,2024-01-05,10\r\n\r\n\r\no2,c2,2024-01-06,20\r\n",  # CRLF
    ],
)
def test_blank_lines_are_skipped(db: Path, tmp_path: Path, body: str):
    path = tmp_path / "orders.csv"
    path.write_bytes(f"{HEADER}\n{body}".encode())
    got = loaded(db, path)
    assert got["read"] == 2
    assert {"o1", "o2"} <= set(got["orders"])
    assert got["quarantine"] == []


def test_rows_after_blank_lines_keep_their_line_numbers(db: Path, tmp_path: Path):
    path = tmp_path / "orders.csv"
    # line 1 header, 2 o1, 3-4 blank, 5 o2 (short), 6 blank, 7 o3 (bad amount)
    path.write_text(f"{HEADER}\no1,c1,2024-01-05,10\n\n\no2,c2\n\no3,c3,2024-01-07,abc\n")
    got = loaded(db, path)
    assert [row for row, _ in got["quarantine"]] == [5, 7]


def test_values_spanning_lines_keep_later_rows_on_their_lines(db: Path, tmp_path: Path):
    path = tmp_path / "orders.csv"
    path.write_text(
        f"{HEADER},note\n"
        'o1,c1,2024-01-05,10,"two\nlines\n\nand a blank one"\n'  # lines 2-5
        "\n"  # 6
        "o2,c2,2024-01-06,20,plain\n"  # 7
        "o3,c3\n"  # 8
        'o4,c4,2024-01-08,x,"a ""quoted"" word"\n'  # 9
    )
    got = loaded(db, path)
    assert got["read"] == 4
    assert [row for row, _ in got["quarantine"]] == [8, 9]
    assert query(db, "SELECT count(*) FROM orders WHERE order_id IN ('o1', 'o2')")[0][0] == 2


def test_a_short_line_is_one_quarantined_row_with_one_reason(db: Path, tmp_path: Path):
    path = tmp_path / "orders.csv"
    path.write_text(f"{HEADER}\no1,c1,2024-01-05,10\no2\no3,c3,2024-01-07,30,extra\n")
    got = loaded(db, path)
    assert got["read"] == 3
    assert got["quarantine"] == [
        (3, "malformed row: too few columns: expected 4, found 1"),
        (
            4,
            "malformed row: too many columns: expected 4, found 5 "
            "(a value holding the delimiter needs quotes)",
        ),
    ]
    assert "read 3 rows" in got["output"] and "2 rows quarantined" in got["output"]


def test_valid_utf8_stays_right_beside_a_row_that_is_not(db: Path, tmp_path: Path):
    path = tmp_path / "orders.csv"
    path.write_bytes(
        f"{HEADER}\no1,josé,2024-01-05,10\n".encode() + b"o2,\xe9t\xe9,2024-01-06,20\n"
    )
    got = loaded(db, path)
    assert got["orders"]["o1"] == "josé"
    assert "o2" not in got["orders"]
    ((row, reason),) = got["quarantine"]
    assert row == 3 and "not valid UTF-8" in reason and "--encoding cp1252" in reason


def test_a_file_with_no_utf8_at_all_is_read_as_windows_1252(db: Path, tmp_path: Path):
    path = tmp_path / "orders.csv"
    path.write_bytes(f"{HEADER}\no1,Zoë “quoted”,2024-01-05,10\n".encode("cp1252"))
    assert loaded(db, path)["orders"]["o1"] == "Zoë “quoted”"


@pytest.mark.parametrize("codec", ["cp1252", "latin-1"])
def test_encoding_option_reads_single_byte_files(db: Path, tmp_path: Path, codec: str):
    path = tmp_path / "orders.csv"
    name = "Zoë “€”" if codec == "cp1252" else "Zoë ¤"
    # a row of UTF-8-looking bytes would be mojibake without the option
    path.write_bytes(f"{HEADER}\no1,{name},2024-01-05,10\no2,Ã©,2024-01-06,5\n".encode(codec))
    got = loaded(db, path, "--encoding", codec)
    assert got["orders"]["o1"] == name and got["orders"]["o2"] == "Ã©"


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be", "utf-8-sig", "utf-32"])
def test_byte_order_marks_name_the_encoding(db: Path, tmp_path: Path, codec: str):
    path = tmp_path / "orders.csv"
    text = f"{HEADER}\r\no1,josé,2024-01-05,10\r\n\r\no2,ไทย,2024-01-06,20\r\n"
    bom = {"utf-16-le": b"\xff\xfe", "utf-16-be": b"\xfe\xff"}.get(codec, b"")
    path.write_bytes(bom + text.encode(codec))
    got = loaded(db, path)
    assert got["orders"]["o1"] == "josé" and got["orders"]["o2"] == "ไทย"


def test_utf16_without_a_mark_and_unknown_encodings_are_refused(db: Path, tmp_path: Path):
    path = tmp_path / "orders.csv"
    path.write_bytes(f"{HEADER}\no1,c1,2024-01-05,10\n".encode("utf-16-le"))
    assert "--encoding utf-16-le" in refused(db, path)
    assert loaded(db, path, "--encoding", "utf-16-le")["orders"]["o1"] == "c1"
    assert "unknown encoding" in refused(db, path, "--encoding", "klingon")


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_delimiters(db: Path, tmp_path: Path, delimiter: str):
    path = tmp_path / "orders.csv"
    rows = [HEADER.split(","), ["o1", "c1", "2024-01-05", "10"], ["o2", "c2", "2024-01-06", "2"]]
    path.write_text("\n".join(delimiter.join(r) for r in rows) + "\n")
    got = loaded(db, path)
    assert got["read"] == 2 and {"o1", "o2"} <= set(got["orders"])


@pytest.mark.parametrize("column", ["_row", "_line", "_seq", "file_row_number", "_order"])
def test_a_column_named_like_an_internal_one_is_just_a_column(
    db: Path, tmp_path: Path, column: str
):
    csv_path = tmp_path / "orders.csv"
    # were the file's column taken for the row number, the bad row would be row 2
    csv_path.write_text(f"{HEADER},{column}\no1,c1,2024-01-05,10,2\no2,c2,2024-01-06,abc,2\n")
    got = loaded(db, csv_path)
    assert "o1" in got["orders"]
    assert [row for row, _ in got["quarantine"]] == [3]
    raw = query(db, "SELECT raw FROM quarantine")[0][0]
    assert f'"{column}":"2"' in raw
    parquet = tmp_path / "orders.parquet"
    table = pa.table(
        {
            "order_id": ["p1", "p2"],
            "customer_id": ["c1", "c2"],
            "ordered_at": ["2024-01-05", "2024-01-06"],
            "net_revenue": ["1.0", "abc"],
            column: [1, 1],
        }
    )
    pq.write_table(table, parquet)
    got = loaded(db, parquet)
    assert "p1" in got["orders"]
    assert [row for row, _ in got["quarantine"]] == [2]


def test_a_column_with_the_reserved_prefix_is_refused(db: Path, tmp_path: Path):
    path = tmp_path / "orders.csv"
    path.write_text(f"{HEADER},_retain_row\no1,c1,2024-01-05,10,1\n")
    assert "_retain_" in refused(db, path)


@pytest.mark.parametrize("delimiter", [",", ";"])
def test_a_minimal_shopify_export_is_read_as_shopify(db: Path, tmp_path: Path, delimiter: str):
    path = tmp_path / "orders_export.csv"
    rows = [
        ["Name", "Email", "Subtotal", "Created at"],
        ["#1001", "a@example.com", "10.00", "2024-01-05 10:00:00 +0000"],
    ]
    path.write_text("\n".join(delimiter.join(r) for r in rows) + "\n")
    got = loaded(db, path)
    assert "(shopify)" in got["output"]
    assert got["orders"]["#1001"] == "a@example.com"
    # read as an orders file by hand, the message says what to pass
    assert "--format shopify" in refused(db, path, "--format", "orders")


def test_damaged_gzip_files_are_refused(db: Path, tmp_path: Path):
    fake = tmp_path / "orders.csv.gz"
    fake.write_text(f"{HEADER}\no1,c1,2024-01-05,10\n")
    assert "gzip" in refused(db, fake)
    garbage = tmp_path / "garbage.csv.gz"
    garbage.write_bytes(b"\x1f\x8b\x08\x00" + bytes(range(200)))
    assert "gzip" in refused(db, garbage)
    cut = tmp_path / "cut.csv.gz"
    whole = gzip.compress((f"{HEADER}\n" + "o1,c1,2024-01-05,10\n" * 5000).encode())
    cut.write_bytes(whole[: len(whole) // 2])
    assert "gzip" in refused(db, cut)
    good = tmp_path / "good.csv.gz"
    good.write_bytes(gzip.compress(f"{HEADER}\no1,c1,2024-01-05,10\n\n".encode()))
    assert loaded(db, good)["read"] == 1


def test_a_utf16_file_cut_inside_a_character_is_refused(db: Path, tmp_path: Path):
    body = f"{HEADER}\no1,c1,2024-01-05,10\no2,c2,2024-01-06,11\n".encode("utf-16")
    for name, data in (("two.csv", body[:3]), ("cut.csv", body[:-1])):
        path = tmp_path / name
        path.write_bytes(data)
        assert "cut short" in refused(db, path)


def test_damaged_parquet_files_are_refused(db: Path, tmp_path: Path):
    whole = tmp_path / "whole.parquet"
    pq.write_table(pa.table({"order_id": ["o1"], "customer_id": ["c1"]}), whole)
    data = whole.read_bytes()
    for name, body in (
        ("cut.parquet", data[: len(data) // 2]),
        ("zeros.parquet", data[:4] + bytes(len(data) - 8) + data[-4:]),
        ("magic.parquet", b"PAR1 and nothing else"),
    ):
        path = tmp_path / name
        path.write_bytes(body)
        message = refused(db, path)
        assert "Parquet" in message and name in message


def test_a_parquet_file_damaged_inside_is_refused_and_nothing_is_stored(db: Path, tmp_path: Path):
    # the footer (the schema) reads; the rows do not: found as the rows are read
    whole = tmp_path / "whole.parquet"
    n = 20_000
    table = pa.table(
        {
            "order_id": [f"o{i}" for i in range(n)],
            "customer_id": [f"c{i % 700}" for i in range(n)],
            "ordered_at": ["2024-06-01"] * n,
            "net_revenue": [float(i % 97) for i in range(n)],
        }
    )
    pq.write_table(table, whole, compression="snappy")
    assert loaded(db, whole)["read"] == n
    before = snapshot(db)
    data = bytearray(whole.read_bytes())
    footer = int.from_bytes(data[-8:-4], "little") + 8
    for i in range(8, len(data) - footer, 7):
        data[i] = 0xFF
    path = tmp_path / "inside.parquet"
    path.write_bytes(bytes(data))
    message = refused(db, path)
    assert "Parquet" in message and "inside.parquet" in message
    assert snapshot(db) == before


def test_parquet_then_text_files_into_one_store(tmp_path: Path):
    """A Parquet file is staged as a view, a text file as a table: one store takes both,
    in any order, and an empty Parquet file in between."""
    from retain.ingest import ingest as ingest_file
    from retain.store import Store

    parquet = tmp_path / "a.parquet"
    row = {"order_id": ["p1"], "customer_id": ["c1"], "ordered_at": ["2024-06-01"]}
    pq.write_table(pa.table({**row, "net_revenue": [5.0]}), parquet)
    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.table({**row, "net_revenue": [5.0]}).slice(0, 0), empty)
    text = tmp_path / "b.csv"
    text.write_text(f"{HEADER}\nt1,c1,2024-06-02,7\n", encoding="utf-8")
    with Store(tmp_path / "s.duckdb") as store:
        ingest_file(store, parquet, as_of="2025-01-01")
        with pytest.raises(DataError, match="no data rows"):
            ingest_file(store, empty, as_of="2025-01-01")
        ingest_file(store, text, as_of="2025-01-01")
        parquet.unlink()
        pq.write_table(pa.table({**row, "net_revenue": [6.0]}), parquet)
        ingest_file(store, parquet, as_of="2025-01-01")
        rows = store.con.execute("SELECT order_id, net_revenue FROM orders ORDER BY 1").fetchall()
        assert rows == [("p1", 6.0), ("t1", 7.0)]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"", "empty"),
        (f"{HEADER}\n".encode(), "no data rows"),
        (f"{HEADER}\n\n\n".encode(), "no data rows"),
        (b"\n\n   \n\r\n", "only blank lines"),
        (
            f'{HEADER}\no1,c1,2024-01-05,10\no2,"c2,2024-01-06,20\no3,c3,2024-01-07,3\n'.encode(),
            "not closed",
        ),
    ],
)
def test_files_with_nothing_to_load_are_refused(
    db: Path, tmp_path: Path, body: bytes, expected: str
):
    path = tmp_path / "orders.csv"
    path.write_bytes(body)
    assert expected in refused(db, path)


def test_a_folder_is_refused(db: Path, tmp_path: Path):
    folder = tmp_path / "orders.csv"
    folder.mkdir()
    assert "folder" in refused(db, folder)


def test_nul_bytes_long_lines_and_stray_quotes_are_rows_set_aside(db: Path, tmp_path: Path):
    path = tmp_path / "orders.csv"
    path.write_bytes(
        f"{HEADER}\no1,c1,2024-01-05,10\n".encode()
        + b"o2,c2\x00,x\x00y\n"  # 3
        + b"o3,"
        + b"x" * 2_200_000
        + b",2024-01-06,20\n"  # 4
        + b'o4,"c4"x,2024-01-06,20\n'  # 5
        + b"o5,c5,2024-01-07,30\n"  # 6
    )
    got = loaded(db, path)
    assert got["read"] == 5
    assert [row for row, _ in got["quarantine"]] == [3, 4, 5]
    assert {"o1", "o5"} <= set(got["orders"])
    reasons = " ".join(reason for _, reason in got["quarantine"])
    assert "NUL" in reasons and "2 MiB" in reasons and "quote" in reasons
