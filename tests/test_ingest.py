"""Ingest: every bad input is explained, nothing is half-written, re-ingest changes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from retain.errors import DataError, SchemaError
from retain.ingest import ingest
from retain.store import Store, status

DATA = Path(__file__).parent / "data"
HEADER = (
    "order_id,customer_id,ordered_at,gross,discount,refunded,fees,shipping,tax,currency,channel\n"
)


def write(tmp_path: Path, text: str, name: str = "orders.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def table(store: Store, name: str) -> pd.DataFrame:
    return store.query(f"SELECT * FROM {name} ORDER BY ALL")


def test_orders_net_revenue_is_gross_less_discount_refund_and_fees(store: Store, tmp_path: Path):
    path = write(
        tmp_path,
        HEADER + "A1,c1,2025-01-05,100,10,5,3,7.5,8,usd,web\n"
        "A2,c1,2025-02-05 10:00:00 -0300,50,,,,,,,email\n",
    )
    report = ingest(store, path, as_of="2025-12-31")
    assert (report.orders, report.customers, report.quarantined) == (2, 1, 0)
    orders = table(store, "orders").set_index("order_id")
    # shipping and tax are not revenue
    assert orders.loc["A1", "net_revenue"] == pytest.approx(100 - 10 - 5 - 3)
    assert orders.loc["A2", "net_revenue"] == pytest.approx(50)
    assert orders.loc["A1", "currency"] == "USD"
    # the offset is honoured: 10:00 at -03:00 is 13:00 UTC
    assert orders.loc["A2", "ordered_at"] == pd.Timestamp("2025-02-05 13:00:00")
    customers = table(store, "customers").set_index("customer_id")
    assert customers.loc["c1", "first_seen"] == pd.Timestamp("2025-01-05")
    assert customers.loc["c1", "acquisition_channel"] == "web"


def test_net_revenue_column_wins_over_gross(store: Store, tmp_path: Path):
    path = write(tmp_path, "order_id,customer_id,ordered_at,net_revenue\nA1,c1,2025-01-05,42.5\n")
    ingest(store, path, as_of="2025-12-31")
    assert store.scalar("SELECT net_revenue FROM orders") == pytest.approx(42.5)


def test_bad_rows_are_quarantined_with_file_row_column_and_reason(store: Store, tmp_path: Path):
    path = write(
        tmp_path,
        HEADER
        + "A1,c1,2025-01-05,100,0,0,0,0,0,USD,web\n"  # row 2: fine
        + "A2,c2,2025-13-45,100,0,0,0,0,0,USD,web\n"  # row 3: bad date
        + "A3,c3,2025-01-05,ten,0,0,0,0,0,USD,web\n"  # row 4: bad amount
        + "A4,c4,2025-01-05,-20,0,0,0,0,0,USD,web\n"  # row 5: negative, not a refund
        + "A5,c5,2030-01-01,100,0,0,0,0,0,USD,web\n"  # row 6: after the observation date
        + "A6,c6,2025-01-05,100,0,0,0,0,0,XYZ,web\n"  # row 7: unknown currency
        + "A7,,2025-01-05,100,0,0,0,0,0,USD,web\n"  # row 8: no customer
        + "A8,c8,2025-01-05,100,0,-30,0,0,0,USD,web\n",  # row 9: a refund written negative
    )
    report = ingest(store, path, as_of="2025-12-31")
    assert report.orders == 2
    assert report.quarantined == 6
    q = table(store, "quarantine").set_index("row_number")
    assert list(q.index) == [3, 4, 5, 6, 7, 8]
    assert set(q["source_file"]) == {str(path.resolve())}
    assert q.loc[3, "column_name"] == "ordered_at"
    assert "unreadable date" in q.loc[3, "reason"] and "'2025-13-45'" in q.loc[3, "reason"]
    assert q.loc[4, "column_name"] == "gross" and "'ten'" in q.loc[4, "reason"]
    assert "expected a number" in q.loc[4, "reason"]
    assert q.loc[5, "reason"].startswith("negative amount that is not a refund")
    assert "after the observation date 2025-12-31" in q.loc[6, "reason"]
    assert q.loc[7, "column_name"] == "currency" and "'XYZ'" in q.loc[7, "reason"]
    assert q.loc[8, "reason"] == "no customer identity"
    raw = json.loads(q.loc[3, "raw"])
    assert raw["order_id"] == "A2" and raw["ordered_at"] == "2025-13-45"
    # the refund written as a negative number is still a refund
    assert store.scalar("SELECT refunded FROM orders WHERE order_id = 'A8'") == 30
    assert "6 rows quarantined" in report.summary()
    assert "row 3, column 'ordered_at'" in report.summary()


def test_unreadable_net_revenue_is_quarantined_not_counted_as_zero(store: Store, tmp_path: Path):
    path = write(
        tmp_path,
        "order_id,customer_id,ordered_at,net_revenue,gross\n"
        "A1,c1,2025-01-05,abc,\n"  # row 2: unreadable, and no gross to fall back on
        "A2,c2,2025-01-05,n/a,80\n"  # row 3: unreadable even though gross is given
        "A3,c3,2025-01-05,,60\n",  # row 4: blank: computed from gross
    )
    report = ingest(store, path, as_of="2025-12-31")
    assert (report.orders, report.quarantined) == (1, 2)
    q = table(store, "quarantine").set_index("row_number")
    assert list(q.index) == [2, 3]
    assert set(q["column_name"]) == {"net_revenue"}
    assert "unreadable amount: got 'abc'" in q.loc[2, "reason"]
    assert store.scalar("SELECT net_revenue FROM orders WHERE order_id = 'A3'") == 60


def test_currency_with_a_rate_is_converted(store: Store, tmp_path: Path):
    path = write(tmp_path, HEADER + "A1,c1,2025-01-05,100,0,0,0,0,0,EUR,web\n")
    report = ingest(store, path, as_of="2025-12-31", rates={"EUR": 1.1})
    assert report.quarantined == 0
    assert store.scalar("SELECT net_revenue FROM orders") == pytest.approx(110)
    assert store.scalar("SELECT currency FROM orders") == "EUR"


def test_missing_required_columns_stop_everything(store: Store, tmp_path: Path):
    path = write(tmp_path, "order,customer,when\n1,2,2025-01-01\n")
    with pytest.raises(SchemaError) as err:
        ingest(store, path, format="orders")
    message = str(err.value)
    assert "order_id" in message and "customer_id" in message and "ordered_at" in message
    assert "Found: order, customer, when" in message
    assert store.scalar("SELECT count(*) FROM orders") == 0
    assert store.scalar("SELECT count(*) FROM ingested_files") == 0


def test_money_column_required(store: Store, tmp_path: Path):
    path = write(tmp_path, "order_id,customer_id,ordered_at\n1,2,2025-01-01\n")
    with pytest.raises(SchemaError, match="net_revenue or gross"):
        ingest(store, path)


def test_mapping_names_the_source_columns(store: Store, tmp_path: Path):
    path = write(tmp_path, "OrderNo,Client,Date,Amount\n9,k1,2025-03-01,12.5\n")
    ingest(
        store,
        path,
        mapping={
            "order_id": "OrderNo",
            "customer_id": "Client",
            "ordered_at": "Date",
            "net_revenue": "Amount",
        },
        as_of="2025-12-31",
    )
    assert store.query("SELECT order_id, customer_id FROM orders").values.tolist() == [["9", "k1"]]
    with pytest.raises(SchemaError, match="no column 'Nope'"):
        ingest(store, path, mapping={"order_id": "Nope"})


def test_empty_files_are_errors(store: Store, tmp_path: Path):
    with pytest.raises(DataError, match="empty"):
        ingest(store, write(tmp_path, ""))
    with pytest.raises(DataError, match="no data rows"):
        ingest(store, write(tmp_path, HEADER, "header_only.csv"))
    with pytest.raises(DataError, match="no such file"):
        ingest(store, tmp_path / "missing.csv")


def test_reingest_changes_nothing_and_changed_orders_replace_old(store: Store, tmp_path: Path):
    text = HEADER + "A1,c1,2025-01-05,100,0,0,0,0,0,USD,web\nA2,c1,2025-13-01,5,0,0,0,0,0,USD,web\n"
    path = write(tmp_path, text)
    ingest(store, path, as_of="2025-12-31")
    before = {t: table(store, t) for t in ("orders", "customers")}
    q_before = table(store, "quarantine").drop(columns="ingested_at")
    ingest(store, path, as_of="2025-12-31")
    for name, frame in before.items():
        pd.testing.assert_frame_equal(table(store, name), frame)
    pd.testing.assert_frame_equal(table(store, "quarantine").drop(columns="ingested_at"), q_before)
    # a changed order replaces its older version
    path.write_text(HEADER + "A1,c1,2025-01-05,80,0,0,0,0,0,USD,web\n", encoding="utf-8")
    ingest(store, path, as_of="2025-12-31")
    assert store.scalar("SELECT count(*) FROM orders") == 1
    assert store.scalar("SELECT net_revenue FROM orders") == 80
    assert store.scalar("SELECT count(*) FROM quarantine") == 0


def test_duplicate_order_in_one_file_keeps_the_first(store: Store, tmp_path: Path):
    path = write(
        tmp_path,
        HEADER + "A1,c1,2025-01-05,100,0,0,0,0,0,USD,web\nA1,c1,2025-01-06,90,0,0,0,0,0,USD,web\n",
    )
    report = ingest(store, path, as_of="2025-12-31")
    assert report.orders == 1 and report.quarantined == 1
    assert "first at row 2" in store.scalar("SELECT reason FROM quarantine")
    assert store.scalar("SELECT net_revenue FROM orders") == 100


def test_failed_ingest_leaves_the_store_as_it_was(tmp_path: Path, monkeypatch):
    db = tmp_path / "s.duckdb"
    good = write(tmp_path, HEADER + "A1,c1,2025-01-05,100,0,0,0,0,0,USD,web\n", "good.csv")
    with Store(db) as s:
        ingest(s, good, as_of="2025-12-31")
    other = write(tmp_path, HEADER + "B1,c2,2025-01-05,100,0,0,0,0,0,USD,web\n", "other.csv")
    from retain.ingest import load

    def boom(self, *args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(load.Loader, "record_file", boom)
    with Store(db) as s, pytest.raises(RuntimeError):
        ingest(s, other, as_of="2025-12-31")
    with Store(db) as s:
        assert s.query("SELECT order_id FROM orders")["order_id"].tolist() == ["A1"]
        assert s.scalar("SELECT count(*) FROM customers") == 1


def test_parquet_orders(store: Store, tmp_path: Path):
    frame = pd.DataFrame(
        {
            "order_id": ["p1", "p2", "p3"],
            "customer_id": ["c1", "c2", "c2"],
            "ordered_at": pd.to_datetime(["2025-01-01", "2025-02-01", "2025-03-01"]),
            "net_revenue": [10.0, -5.0, 7.0],
        }
    )
    path = tmp_path / "orders.parquet"
    frame.to_parquet(path)
    report = ingest(store, path, as_of="2025-12-31")
    assert report.format == "orders" and report.orders == 2
    # Parquet rows are numbered from 1 (no header row)
    assert store.scalar("SELECT row_number FROM quarantine") == 2


class TestShopify:
    @pytest.fixture
    def loaded(self, store: Store):
        report = ingest(store, DATA / "shopify_orders.csv", as_of="2025-12-31")
        return store, report

    def test_recognised_and_counted(self, loaded):
        _store, report = loaded
        assert report.format == "shopify"
        assert report.rows_read == 8
        assert report.skipped_cancelled == 2  # #1003 voided, #1004 cancelled
        assert report.orders == 3
        assert report.quarantined == 2

    def test_order_rules(self, loaded):
        store, _ = loaded
        orders = table(store, "orders").set_index("order_id")
        assert sorted(orders.index) == ["#1001", "#1002", "#1007"]
        # net = Subtotal - Refunded Amount; gross adds the discount back
        assert orders.loc["#1001", "net_revenue"] == 90
        assert orders.loc["#1001", "gross"] == 100
        assert orders.loc["#1002", "net_revenue"] == 50 - 20
        # customer = lower-cased, trimmed Email
        assert orders.loc["#1001", "customer_id"] == "ana@example.com"
        assert orders.loc["#1001", "ordered_at"] == pd.Timestamp("2025-10-02 20:09:30")

    def test_lines_and_customers(self, loaded):
        store, _ = loaded
        lines = table(store, "order_lines")
        assert lines[lines.order_id == "#1001"]["sku"].tolist() == ["SPAT-01", "WOK-01"]
        assert "#1003" not in set(lines.order_id)
        customers = table(store, "customers").set_index("customer_id")
        assert customers.loc["ana@example.com", "name"] == "Ana Lima"
        assert not customers.loc["bo@example.com", "accepts_marketing"]

    def test_quarantine_cites_shopify_columns(self, loaded):
        store, _ = loaded
        q = table(store, "quarantine").set_index("row_number")
        assert q.loc[7, "reason"] == "no customer identity" and q.loc[7, "column_name"] == "Email"
        assert q.loc[8, "column_name"] == "Subtotal" and "'abc'" in q.loc[8, "reason"]

    def test_columns_reordered_and_extra_ones_ignored(self, store: Store, tmp_path: Path):
        text = (
            "Created at,Vendor,Subtotal,Email,Name,Something New\n"
            "2025-10-02 17:09:34 -0300,V,20.00,X@Y.com,#9,zzz\n"
        )
        report = ingest(store, write(tmp_path, text), as_of="2025-12-31", format="shopify")
        assert report.orders == 1
        assert store.scalar("SELECT customer_id FROM orders") == "x@y.com"

    def test_missing_shopify_columns(self, store: Store, tmp_path: Path):
        with pytest.raises(SchemaError, match="lacks Subtotal"):
            ingest(
                store,
                write(tmp_path, "Name,Email,Financial Status,Paid at\n#1,a@b.c,paid,2025-01-01\n"),
            )

    def test_cancelled_later_removes_the_stored_order(self, store: Store, tmp_path: Path):
        head = "Name,Email,Financial Status,Subtotal,Created at,Cancelled at\n"
        path = write(tmp_path, head + "#1,a@b.c,paid,10,2025-01-01,\n")
        ingest(store, path, as_of="2025-12-31")
        assert store.scalar("SELECT count(*) FROM orders") == 1
        path.write_text(head + "#1,a@b.c,paid,10,2025-01-01,2025-01-02\n", encoding="utf-8")
        ingest(store, path, as_of="2025-12-31")
        assert store.scalar("SELECT count(*) FROM orders") == 0


def test_cdnow_master_loads_whole(store: Store):
    from retain.datasets import cdnow_path

    report = ingest(store, cdnow_path(), as_of="1998-06-30")
    assert report.format == "cdnow"
    facts = status(store)
    assert facts["customers"] == 23_570
    assert facts["orders"] == 69_659
    assert facts["first_order"].startswith("1997-01-01")
    assert facts["last_order"].startswith("1998-06-30")


def test_spend_customers_and_lines_formats(store: Store, tmp_path: Path):
    spend = write(
        tmp_path,
        "date,channel,amount\n2025-01-01,search,10\n2025-01-01,search,5\n2025-01-02,social,-3\n",
        "spend.csv",
    )
    report = ingest(store, spend)
    assert report.format == "spend" and report.quarantined == 1
    assert store.scalar("SELECT amount FROM marketing_spend") == 15
    people = write(
        tmp_path,
        "customer_id,email,accepts_marketing,birthday\nc1,A@B.COM,no,1990-02-03\nc2,,maybe,\n",
        "customers.csv",
    )
    report = ingest(store, people)
    assert report.format == "customers" and report.customers == 1
    assert store.query("SELECT email, accepts_marketing FROM customers").values.tolist() == [
        ["a@b.com", False]
    ]
    assert "yes/no" in store.scalar("SELECT reason FROM quarantine WHERE row_number = 3")
    lines = write(tmp_path, "order_id,sku,quantity,unit_price\nA1,S1,2,3.5\n", "lines.csv")
    assert ingest(store, lines).order_lines == 1


def test_malformed_csv_lines_are_quarantined_with_their_line(store: Store, tmp_path: Path):
    path = write(
        tmp_path,
        "order_id,customer_id,ordered_at,net_revenue\n"
        "1,a,2025-01-01,10\n"
        "2,b,2025-01-02,20,EXTRA\n"
        "3,c,2025-01-03\n"
        "4,d,2025-01-04,40\n",
    )
    report = ingest(store, path, as_of="2025-12-31")
    assert report.rows_read == 4 and report.orders == 2 and report.quarantined == 2
    q = table(store, "quarantine").set_index("row_number")
    assert "too many columns" in q.loc[3, "reason"]
    assert "2,b,2025-01-02,20,EXTRA" in q.loc[3, "raw"]
    assert q.loc[4, "reason"].startswith("malformed row")
    # rows after a rejected line keep their own row numbers
    path.write_text(
        "order_id,customer_id,ordered_at,net_revenue\n1,a,2025-01-01,10\n2,b,x,20,EXTRA\n"
        "3,c,bad-date,30\n",
        encoding="utf-8",
    )
    ingest(store, path, as_of="2025-12-31")
    q = table(store, "quarantine").set_index("row_number")
    assert "unreadable date" in q.loc[4, "reason"]


def test_unclosed_quote_refuses_the_file(store: Store, tmp_path: Path):
    path = write(
        tmp_path,
        'order_id,customer_id,ordered_at,net_revenue\n1,a,2025-01-01,10\n2,"b,2025-01-02,20\n'
        "3,c,2025-01-03,30\n",
    )
    with pytest.raises(DataError, match="not closed"):
        ingest(store, path, as_of="2025-12-31")
    assert store.scalar("SELECT count(*) FROM orders") == 0


def test_quoted_values_spanning_lines_and_semicolons(store: Store, tmp_path: Path):
    path = write(
        tmp_path,
        'order_id;customer_id;ordered_at;net_revenue;note\n1;a;2025-01-01;10;"two\nlines"\n'
        "2;b;2025-01-02;20;x\n",
    )
    report = ingest(store, path, as_of="2025-12-31")
    assert report.orders == 2 and report.quarantined == 0


def test_latin1_file_is_read(store: Store, tmp_path: Path):
    path = tmp_path / "latin1.csv"
    path.write_bytes(
        "order_id,customer_id,ordered_at,net_revenue\n1,José,2025-01-01,10\n".encode("latin-1")
    )
    ingest(store, path, as_of="2025-12-31")
    assert store.scalar("SELECT customer_id FROM orders") == "José"


def test_header_with_a_repeated_column(store: Store, tmp_path: Path):
    path = write(tmp_path, "order_id,customer_id,order_id,ordered_at,gross\n1,a,1,2025-01-01,2\n")
    with pytest.raises(DataError, match="names a column twice: order_id"):
        ingest(store, path)


def test_decimal_commas_are_read_as_decimals(store: Store, tmp_path: Path):
    # European exports: semicolon-separated, 12,50 for twelve and a half
    path = write(
        tmp_path,
        "order_id;customer_id;ordered_at;net_revenue\n"
        "1;a;2025-01-02;12,50\n2;b;2025-01-03;1.234,56\n3;c;2025-01-04;€ 7,5\n"
        "4;d;2025-01-05;1 234,5\n5;e;2025-01-06;0,99\n",
    )
    report = ingest(store, path, as_of="2025-12-31")
    assert report.orders == 5 and report.quarantined == 0, report.summary()
    net = table(store, "orders").set_index("order_id")["net_revenue"]
    assert net.to_dict() == pytest.approx(
        {"1": 12.5, "2": 1234.56, "3": 7.5, "4": 1234.5, "5": 0.99}
    )


def test_thousands_separators_still_read(store: Store, tmp_path: Path):
    path = write(
        tmp_path,
        "order_id,customer_id,ordered_at,net_revenue\n"
        '1,a,2025-01-02,"1,234.50"\n2,b,2025-01-03,"$1,234"\n3,c,2025-01-04,"1,00,000.00"\n'
        "4,d,2025-01-05,1.5\n",
    )
    ingest(store, path, as_of="2025-12-31")
    net = table(store, "orders").set_index("order_id")["net_revenue"]
    assert net.to_dict() == pytest.approx({"1": 1234.5, "2": 1234, "3": 100000, "4": 1.5})


def test_discount_above_gross_is_quarantined_with_the_computed_net(store: Store, tmp_path: Path):
    path = write(tmp_path, HEADER + "A1,c1,2025-01-05,10,12,,,,,,\nA2,c1,2025-01-06,10,2,,,,,,\n")
    report = ingest(store, path, as_of="2025-12-31")
    assert (report.orders, report.quarantined) == (1, 1)
    reason = store.scalar("SELECT reason FROM quarantine")
    assert reason.startswith("negative amount that is not a refund: got -2")
    assert "gross less discount" in reason


def test_unreadable_as_of_is_a_clear_error(store: Store, tmp_path: Path):
    path = write(tmp_path, "order_id,customer_id,ordered_at,net_revenue\n1,a,2025-01-01,10\n")
    with pytest.raises(DataError, match="unreadable observation date: got 'garbage'"):
        ingest(store, path, as_of="garbage")


def test_parquet_ids_stored_as_floats_keep_their_integer_form(store: Store, tmp_path: Path):
    # pandas turns an integer column with a gap into floats: customer 10 becomes 10.0
    frame = pd.DataFrame(
        {
            "order_id": [1.0, 2.0, 3.0],
            "customer_id": [10.0, float("nan"), 10.5],
            "ordered_at": pd.to_datetime(["2025-01-01", "2025-02-01", "2025-03-01"]),
            "net_revenue": [10.0, 5.0, 7.0],
        }
    )
    path = tmp_path / "orders.parquet"
    frame.to_parquet(path)
    report = ingest(store, path, as_of="2025-12-31")
    assert (report.orders, report.quarantined) == (2, 1)
    orders = table(store, "orders")
    assert orders["order_id"].tolist() == ["1", "3"]
    assert orders["customer_id"].tolist() == ["10", "10.5"]


def test_non_finite_amounts_and_implausible_dates_are_quarantined(store: Store, tmp_path: Path):
    path = write(
        tmp_path,
        "order_id,customer_id,ordered_at,net_revenue,gross\n"
        "A1,c1,2025-06-01,NaN,\n"  # row 2
        "A2,c1,2025-06-01,inf,\n"  # row 3
        "A3,c1,2025-06-01,1e400,\n"  # row 4: beyond a double
        "A4,c1,2025-06-01,,-inf\n"  # row 5
        "A5,c1,0000-01-01,5,\n"  # row 6: a typing mistake, not history
        "A6,c1,1900-01-01,5,\n"  # row 7: fine
        "A7,c1,2025-06-02,7,\n",  # row 8: fine
    )
    report = ingest(store, path, as_of="2025-12-31")
    assert (report.orders, report.quarantined) == (2, 5)
    q = table(store, "quarantine").set_index("row_number")
    assert list(q.index) == [2, 3, 4, 5, 6]
    assert "unreadable amount: got 'NaN'" in q.loc[2, "reason"]
    assert "unreadable amount: got '1e400'" in q.loc[4, "reason"]
    assert q.loc[5, "column_name"] == "gross"
    assert q.loc[6, "reason"].startswith("implausible date: got '0000-01-01'")
    assert store.scalar("SELECT count(*) FROM orders WHERE NOT isfinite(net_revenue)") == 0


def test_nan_in_a_parquet_amount_column_is_quarantined(store: Store, tmp_path: Path):
    path = tmp_path / "orders.parquet"
    pd.DataFrame(
        {
            "order_id": ["A1", "A2"],
            "customer_id": ["c1", "c2"],
            "ordered_at": pd.to_datetime(["2025-01-05", "2025-01-06"]),
            "net_revenue": [float("nan"), 12.5],
        }
    ).to_parquet(path)
    report = ingest(store, path, as_of="2025-12-31")
    assert (report.orders, report.quarantined) == (1, 1)
    assert store.scalar("SELECT column_name FROM quarantine") == "net_revenue"


def test_a_file_ingest_bounds_duckdbs_memory_and_restores_the_limit(tmp_path: Path):
    from retain.ingest import INGEST_MEMORY, bounded_memory

    shown = "SELECT current_setting('memory_limit')"
    path = tmp_path / "orders.csv"
    path.write_text("order_id,customer_id,ordered_at,net_revenue\na,c1,2024-06-01,10\n")
    with Store(tmp_path / "s.duckdb") as store:
        store.con.execute("SET memory_limit = '64GB'")  # as DuckDB's default on a big machine
        store.con.execute("RESET memory_limit")
        default = store.scalar(shown)
        store.con.execute("SET memory_limit = '64GB'")
        big = store.scalar(shown)
        with bounded_memory(store):
            during = store.scalar(shown)
        store.con.execute(f"SET memory_limit = '{INGEST_MEMORY}'")
        assert during == store.scalar(shown) != big
        store.con.execute("RESET memory_limit")
        ingest(store, path, as_of="2025-01-01")
        assert store.scalar(shown) == default
        # refused files restore it too, and a limit set by hand is restored as set
        store.con.execute("SET memory_limit = '64GB'")
        path.write_text("order_id,customer_id,ordered_at,net_revenue\n")
        with pytest.raises(DataError):
            ingest(store, path, as_of="2025-01-01")
        assert store.scalar(shown) == big
        # a lower limit is kept
        store.con.execute("SET memory_limit = '500MB'")
        low = store.scalar(shown)
        with bounded_memory(store):
            assert store.scalar(shown) == low
