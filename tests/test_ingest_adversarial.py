"""Ingest as a demanding user meets it: files that go back and forth, ordinary files that
look like an export, amounts with separators in odd places, and stores of older retains."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from retain.cli import app
from retain.ingest import ingest
from retain.ingest.detect import detect_format
from retain.store import MIGRATIONS, Store, status

runner = CliRunner()
HEADER = "order_id,customer_id,ordered_at,net_revenue\n"


def write(tmp_path: Path, text: str, name: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def cli(*args: object):
    return runner.invoke(app, [str(a) for a in args])


# -- idempotency: the same content again after another write ---------------------------------
def test_an_order_moved_to_another_customer_and_back_by_two_files(tmp_path: Path):
    """a.csv gives order 1 to x, b.csv to y, a.csv again to x: the third ingest is not a
    no-op, though a.csv's content and options were ingested before."""
    first = write(tmp_path, HEADER + "1,x,2025-01-02,10\n", "a.csv")
    moved = write(tmp_path, HEADER + "1,y,2025-01-02,10\n", "b.csv")
    with Store(tmp_path / "s.duckdb") as store:
        ingest(store, first, as_of="2025-10-01")
        ingest(store, moved, as_of="2025-10-01")
        back = ingest(store, first, as_of="2025-10-01")
        assert back.same_as is None and back.orders == 1
        assert store.query("SELECT customer_id FROM orders")["customer_id"].tolist() == ["x"]
        assert store.query("SELECT customer_id FROM customers")["customer_id"].tolist() == ["x"]
        # nothing written since: now the same content is a no-op
        assert ingest(store, first, as_of="2025-10-01").same_as is not None


def test_a_customers_file_again_after_another_wins_again(tmp_path: Path):
    first = write(tmp_path, "customer_id,email\nx,first@example.org\n", "c1.csv")
    second = write(tmp_path, "customer_id,email\nx,second@example.org\n", "c2.csv")
    with Store(tmp_path / "s.duckdb") as store:
        ingest(store, first)
        ingest(store, second)
        assert ingest(store, first).same_as is None
        assert store.scalar("SELECT email FROM customers") == "first@example.org"


def test_an_order_written_by_another_path_since_is_not_skipped_over(tmp_path: Path):
    """A write that records no file (the service's POST /api/orders goes through the same
    Loader transaction) also ends the no-op of an earlier file."""
    from retain.ingest import load_orders
    from retain.ingest.load import IngestReport, Loader

    path = write(tmp_path, HEADER + "1,x,2025-01-02,10\n", "a.csv")
    other = write(tmp_path, HEADER + "1,y,2025-01-02,10\n", "api.csv")
    with Store(tmp_path / "s.duckdb") as store:
        ingest(store, path, as_of="2025-10-01")
        import datetime as dt

        loader = Loader(store, other, as_of=dt.datetime(2025, 10, 1), currency="USD", rates={})
        columns = loader.stage_file()
        report = IngestReport(file=str(other), format="orders")
        with loader.transaction():
            load_orders(loader, columns, None, report)
        assert store.scalar("SELECT customer_id FROM orders") == "y"
        assert ingest(store, path, as_of="2025-10-01").same_as is None
        assert store.scalar("SELECT customer_id FROM orders") == "x"


def test_a_copy_read_again_after_another_file_sets_its_rows_aside_once(tmp_path: Path):
    text = HEADER + "1,x,2025-01-02,10\n2,x,not a date,10\n"
    first, copy = write(tmp_path, text, "a.csv"), write(tmp_path, text, "copy.csv")
    other = write(tmp_path, HEADER + "3,y,2025-01-02,10\n", "b.csv")
    with Store(tmp_path / "s.duckdb") as store:
        ingest(store, first, as_of="2025-10-01")
        ingest(store, other, as_of="2025-10-01")
        assert ingest(store, copy, as_of="2025-10-01").same_as is None
        rows = store.query("SELECT source_file, row_number FROM quarantine")
        assert rows.values.tolist() == [[str(copy), 3]]


def test_live_an_order_dated_after_the_clock_is_read_when_its_day_comes(tmp_path: Path):
    """Without as_of the observation date is the wall clock: a file with tomorrow's order
    (a time zone ahead) ingested again later is read again, not skipped."""
    import datetime as dt

    soon = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(seconds=2)
    path = write(tmp_path, HEADER + f"1,x,2025-01-02,10\n2,y,{soon:%Y-%m-%d %H:%M:%S},5\n", "a.csv")
    with Store(tmp_path / "s.duckdb") as store:
        assert ingest(store, path).quarantined == 1
        import time

        time.sleep(
            max(0.0, (soon - dt.datetime.now(dt.UTC).replace(tzinfo=None)).total_seconds()) + 1.1
        )
        again = ingest(store, path)
        assert again.same_as is None and again.quarantined == 0
        assert store.scalar("SELECT count(*) FROM orders") == 2
        assert ingest(store, path).same_as is not None  # nothing due now: a no-op


@pytest.mark.parametrize(
    "options",
    [
        {"as_of": "2025-11-01"},
        {"rates": {"EUR": 2.0}},
        {"mapping": {"net_revenue": "amount"}},
        {"date_format": "%d/%m/%Y"},
        {"encoding": "cp1252"},
    ],
)
def test_the_same_content_with_another_option_is_ingested_again(tmp_path: Path, options):
    path = write(
        tmp_path,
        "order_id,customer_id,ordered_at,net_revenue,amount,currency\n"
        "1,x,2025-01-02,10,12,EUR\n2,y,2025-01-03,5,6,USD\n",
        "a.csv",
    )
    with Store(tmp_path / "s.duckdb") as store:
        ingest(store, path, as_of="2025-10-01", rates={"EUR": 1.0})
        base = {"as_of": "2025-10-01", "rates": {"EUR": 1.0}}
        again = ingest(store, path, **{**base, **options})
        assert again.same_as is None and again.orders == 2


def test_a_file_changed_by_one_byte_is_ingested(tmp_path: Path):
    path = write(tmp_path, HEADER + "1,x,2025-01-02,10\n", "a.csv")
    with Store(tmp_path / "s.duckdb") as store:
        ingest(store, path, as_of="2025-10-01")
        path.write_text(HEADER + "1,x,2025-01-02,11\n", encoding="utf-8")
        assert ingest(store, path, as_of="2025-10-01").same_as is None
        assert store.scalar("SELECT net_revenue FROM orders") == 11.0


# -- detection: an ordinary orders file is an orders file ------------------------------------
@pytest.mark.parametrize(
    "header",
    [
        "order_id,customer_id,ordered_at,net_revenue,name,email,financial status",
        "order_id,customer_id,ordered_at,net_revenue,lineitem name,email",
        "Order ID,Customer ID,Ordered At,Net Revenue,Name,Email,Subtotal,Created at",
    ],
)
def test_an_orders_file_with_shopify_like_columns_is_read_as_orders(tmp_path: Path, header):
    cells = {"order id": "1", "customer id": "x", "ordered at": "2025-01-02", "email": "x@a.org"}
    row = [
        cells.get(c.lower().replace("_", " "), "10" if "revenue" in c.lower() else "v")
        for c in header.split(",")
    ]
    path = write(tmp_path, header + "\n" + ",".join(row) + "\n", "orders.csv")
    from retain.ingest.load import first_line_columns

    assert detect_format(path, first_line_columns(path)) == "orders"
    db = tmp_path / "s.duckdb"
    result = cli("ingest", path, "--db", db, "--as-of", "2025-10-01")
    assert result.exit_code == 0, result.output
    with Store(db, read_only=True) as store:
        assert store.query("SELECT order_id, customer_id FROM orders").values.tolist() == [
            ["1", "x"]
        ]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Customer ID,Email,Name", "customers"),
        ("Order ID,SKU,Quantity", "lines"),
    ],
)
def test_names_with_spaces_and_capitals_are_recognised(tmp_path: Path, header, expected):
    path = write(tmp_path, header + "\n", "f.csv")
    from retain.ingest.load import first_line_columns

    assert detect_format(path, first_line_columns(path)) == expected


# -- numbers ----------------------------------------------------------------------------------
def test_separators_out_of_place_are_quarantined_not_dropped(tmp_path: Path):
    """1,234,5 and 12,345,67 are no numbers: dropping their commas read them as 12345 and
    1234567. Thousands (1,234,567.50) and Indian grouping (12,34,567) still read."""
    path = write(
        tmp_path,
        HEADER + '1,x,2025-01-02,"1,234,5"\n2,x,2025-01-02,"12,345,67"\n'
        '3,x,2025-01-02,"1,234,567.50"\n4,x,2025-01-02,"12,34,567"\n'
        '6,x,2025-01-02,"12,5"\n',
        "a.csv",
    )
    with Store(tmp_path / "s.duckdb") as store:
        report = ingest(store, path, as_of="2025-10-01")
        assert report.quarantined == 2
        bad = store.query("SELECT row_number, reason FROM quarantine ORDER BY 1")
        assert bad["row_number"].tolist() == [2, 3]
        assert bad["reason"].str.startswith("unreadable amount").all()
        got = dict(store.query("SELECT order_id, net_revenue FROM orders").values.tolist())
    assert got["3"] == 1234567.5 and got["4"] == 1234567.0 and got["6"] == 12.5


def test_negative_zero_is_stored_as_zero(tmp_path: Path):
    path = write(tmp_path, HEADER + "1,x,2025-01-02,-0\n2,x,2025-01-03,-0.00\n", "a.csv")
    with Store(tmp_path / "s.duckdb") as store:
        assert ingest(store, path, as_of="2025-10-01").orders == 2
        text = store.query("SELECT CAST(net_revenue AS VARCHAR) AS v FROM orders")["v"]
        assert text.tolist() == ["0.0", "0.0"]


def test_a_lower_max_amount_and_a_reingest(tmp_path: Path):
    """The bound is an option of the ingest: raised, a file is read again and its large
    order loads; 1e9 is at the bound, just above it is not."""
    path = write(tmp_path, HEADER + "1,x,2025-01-02,1e9\n2,x,2025-01-02,1000000000.01\n", "a.csv")
    db = tmp_path / "s.duckdb"
    assert cli("ingest", path, "--db", db, "--as-of", "2025-10-01").exit_code == 0
    with Store(db, read_only=True) as store:
        assert store.scalar("SELECT count(*) FROM orders") == 1
    assert cli("settings", "set", "max_amount", "2e9", "--db", db).exit_code == 0
    result = cli("ingest", path, "--db", db, "--as-of", "2025-10-01")
    assert result.exit_code == 0 and "nothing to do" not in result.output
    with Store(db, read_only=True) as store:
        assert store.scalar("SELECT count(*) FROM orders") == 2
        assert status(store)["net_revenue"] == 2000000000.01
    # lowered again: the file's rows above it are set aside, the stored orders stay
    assert cli("settings", "set", "max_amount", "1e6", "--db", db).exit_code == 0
    result = cli("ingest", path, "--db", db, "--as-of", "2025-10-01")
    assert result.exit_code == 0 and "2 rows quarantined" in result.output
    with Store(db, read_only=True) as store:
        assert store.scalar("SELECT count(*) FROM orders") == 2


# -- upgrade of a store an older retain wrote -------------------------------------------------
def old_store(db: Path) -> duckdb.DuckDBPyConnection:
    """A store at the last version before the unique order_id, as an older retain left it."""
    old = next(i for i, (d, _) in enumerate(MIGRATIONS) if d.startswith("orders: one row per"))
    con = duckdb.connect(str(db))
    con.execute(
        "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, description VARCHAR, "
        "applied_at TIMESTAMP)"
    )
    for version, (description, statements) in enumerate(MIGRATIONS[:old], start=1):
        for statement in statements:
            con.execute(statement)
        con.execute("INSERT INTO schema_version VALUES (?, ?, now())", [version, description])
    return con


def test_a_store_with_a_repeated_order_id_upgrades_without_losing_it(tmp_path: Path):
    """An order_id stored twice (as a file with a `_row` column could store it): the
    store opens, keeps the later copy, sets the earlier aside, and takes new files."""
    db = tmp_path / "old.duckdb"
    con = old_store(db)
    con.execute(
        "INSERT INTO orders (order_id, customer_id, ordered_at, net_revenue, source_file) "
        "VALUES ('d1', 'c1', '2025-05-01', 10, 'old.csv'), ('d1', 'c1', '2025-05-02', 20, "
        "'old.csv'), ('d2', 'c2', '2025-05-03', 30, 'old.csv')"
    )
    con.execute("INSERT INTO customers (customer_id) VALUES ('c1'), ('c2'), ('lonely')")
    con.close()
    new = write(tmp_path, HEADER + "d3,c3,2025-06-01,5\nd1,c1,2025-05-02,21\n", "new.csv")
    with Store(db) as store:
        assert store.schema_version == len(MIGRATIONS)
        assert store.scalar("SELECT count(*) FROM orders") == 2
        assert store.scalar("SELECT count(*) FROM quarantine WHERE column_name = 'order_id'") == 1
        ingest(store, new, as_of="2025-10-01")
        facts = status(store)
        assert facts["orders"] == 3 and facts["net_revenue"] == 56.0
        assert store.scalar("SELECT count(*) FROM customers WHERE customer_id = 'lonely'") == 1


# -- encodings ---------------------------------------------------------------------------------
@pytest.mark.parametrize("body", [HEADER + "1,x,2025-01-02,10\n", HEADER + "1,x,2025-01-02,1\n"])
def test_utf16_given_for_a_file_without_a_byte_order_mark_is_a_clear_error(
    tmp_path: Path, body: str
):
    """Python's UTF-16 decoder raises a bare UnicodeError (no byte position) where the
    file has no byte-order mark: exit 2 naming the file, not a traceback."""
    path = write(tmp_path, body, "a.csv")
    db = tmp_path / "s.duckdb"
    result = cli("ingest", path, "--db", db, "--encoding", "utf-16", "--as-of", "2025-10-01")
    assert result.exit_code in (0, 2), result.output
    assert not isinstance(result.exception, UnicodeError)
    if result.exit_code == 2:
        assert str(path) in result.output and "utf-16" in result.output


def test_utf16_given_for_a_file_with_its_mark_reads(tmp_path: Path):
    path = tmp_path / "a.csv"
    path.write_bytes((HEADER + "1,José,2025-01-02,10\n").encode("utf-16"))
    with Store(tmp_path / "s.duckdb") as store:
        assert ingest(store, path, encoding="utf-16", as_of="2025-10-01").orders == 1
        assert store.scalar("SELECT customer_id FROM orders") == "José"


def test_a_mapped_column_counts_when_the_format_is_recognised(tmp_path: Path):
    """An orders file with a sku column and its date under another name is an orders
    file when --map names its ordered_at, not a file of order lines."""
    path = write(
        tmp_path, "order_id,customer_id,order_date,total,sku\n1,a,2025-01-02,10,S1\n", "o.csv"
    )
    db = tmp_path / "s.duckdb"
    result = cli(
        "ingest",
        path,
        "--db",
        db,
        "--map",
        "ordered_at=order_date",
        "--map",
        "net_revenue=total",
        "--as-of",
        "2025-10-01",
    )
    assert result.exit_code == 0, result.output
    with Store(db, read_only=True) as store:
        assert store.scalar("SELECT net_revenue FROM orders WHERE order_id = '1'") == 10.0


@pytest.mark.parametrize("quoted", [False, True])
def test_classic_mac_line_endings_read_as_lines(tmp_path: Path, quoted: bool):
    """Excel's "CSV (Macintosh)" ends each line with a carriage return alone: each row
    keeps its line, a blank line is skipped."""
    name = '"Smith, J"' if quoted else "Smith"
    body = HEADER.replace("\n", ",name\r") + f"1,x,2025-01-02,10,{name}\r\r2,y,x,5,{name}\r"
    path = tmp_path / "mac.csv"
    path.write_bytes(body.encode())
    with Store(tmp_path / "s.duckdb") as store:
        report = ingest(store, path, as_of="2025-10-01")
        assert report.rows_read == 2 and report.orders == 1
        assert store.scalar("SELECT row_number FROM quarantine") == 4


def test_quotes_that_close_on_their_line_take_the_line_scan(tmp_path: Path):
    """Every line's quotes pair up: each line is a record (the fast scan), numbered as the
    CSV scan numbers it; a value over two lines takes the CSV scan."""
    from retain.ingest import text

    body = HEADER.replace("\n", ",name\n") + '1,x,2025-01-02,10,"a, b"\n\n2,y,bad,5,"q ""z"""\n'
    path = write(tmp_path, body, "q.csv")
    records = text.prepare(path, "utf-8-sig")
    assert not records.exact
    fast = (records.lines.tolist(), records.empty.tolist())
    records.rescan()
    assert records.exact and (records.lines.tolist(), records.empty.tolist()) == fast
    with Store(tmp_path / "s.duckdb") as store:
        assert ingest(store, path, as_of="2025-10-01").orders == 1
        assert store.scalar("SELECT row_number FROM quarantine") == 4
    spanning = write(tmp_path, body.replace('"a, b"', '"a\nb"'), "span.csv")
    assert text.prepare(spanning, "utf-8-sig").exact
