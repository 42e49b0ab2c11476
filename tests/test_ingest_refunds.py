"""Refund rows adjust their orders; refunded, cancelled, failed and unpaid orders are not
purchases: they wait in excluded_orders, out of every metric."""

from __future__ import annotations

from pathlib import Path

import pytest

from retain.ingest import ingest
from retain.store import Store

HEAD = "order_id,customer_id,ordered_at,gross,refunded,fees\n"


def write(tmp_path: Path, text: str, name: str = "orders.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def net(store: Store, order_id: str) -> float | None:
    rows = store.con.execute(
        "SELECT net_revenue FROM orders WHERE order_id = ?", [order_id]
    ).fetchall()
    return rows[0][0] if rows else None


def excluded(store: Store) -> dict[str, tuple[str, str]]:
    rows = store.con.execute("SELECT order_id, status, reason FROM excluded_orders").fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def test_a_refund_row_with_the_orders_id_adjusts_the_order(store: Store, tmp_path: Path):
    path = write(
        tmp_path,
        HEAD + "A1,c1,2025-01-05,500,0,0\n"
        "A1,c1,2025-01-20,-346.91,346.91,0\n"  # the refund: one amount written twice
        "A2,c1,2025-01-06,40,0,0\n",
    )
    report = ingest(store, path, as_of="2025-12-31")
    assert report.quarantined == 0
    assert (report.orders, report.refunds) == (2, 1)
    assert net(store, "A1") == pytest.approx(500 - 346.91)
    assert store.scalar("SELECT refunded FROM orders WHERE order_id = 'A1'") == pytest.approx(
        346.91
    )
    assert store.scalar("SELECT count(*) FROM orders") == 2
    assert "1 refund row subtracted from their orders" in report.summary()
    # the same file again changes nothing: its refund is replaced, not added twice
    ingest(store, path, as_of="2025-12-31")
    assert net(store, "A1") == pytest.approx(500 - 346.91)


def test_a_refund_row_in_a_later_file_refunds_a_stored_order(store: Store, tmp_path: Path):
    ingest(store, write(tmp_path, HEAD + "A1,c1,2025-01-05,100,0,0\nA2,c2,2025-01-05,80,0,0\n"))
    refunds = write(
        tmp_path,
        "order_id,customer_id,ordered_at,gross,refund_of\n"
        "R1,c1,2025-02-01,-30,A1\n"  # partly: A1 stays a purchase
        "R2,c2,2025-02-01,-80,A2\n",  # in full: A2 is no purchase any more
        "refunds.csv",
    )
    report = ingest(store, refunds, as_of="2025-12-31")
    assert (report.quarantined, report.refunds, report.orders) == (0, 2, 0)
    assert net(store, "A1") == pytest.approx(70)
    assert net(store, "A2") is None
    status, reason = excluded(store)["A2"]
    assert status == "refunded" and reason.startswith("refunded in full")
    # a refund file that no longer holds R2 gives A2 back
    refunds.write_text("order_id,customer_id,ordered_at,gross,refund_of\nR1,c1,2025-02-01,-30,A1\n")
    ingest(store, refunds, as_of="2025-12-31")
    assert net(store, "A2") == pytest.approx(80) and "A2" not in excluded(store)
    # the order's own file again keeps its refunds
    ingest(store, write(tmp_path, HEAD + "A1,c1,2025-01-05,100,0,0\n", "again.csv"))
    assert net(store, "A1") == pytest.approx(70)


def test_a_negative_row_that_refunds_no_order_is_quarantined(store: Store, tmp_path: Path):
    path = write(tmp_path, HEAD + "A1,c1,2025-01-05,100,0,0\nX9,c1,2025-01-06,-20,0,0\n")
    report = ingest(store, path, as_of="2025-12-31")
    assert (report.orders, report.quarantined) == (1, 1)
    row, column, reason = store.con.execute(
        "SELECT row_number, column_name, reason FROM quarantine"
    ).fetchall()[0]
    assert (row, column) == (3, "gross")
    assert reason.startswith("negative amount that is not a refund: got -20")
    assert "no order 'X9' in the file or the store" in reason


def test_a_fully_refunded_order_is_not_a_purchase(store: Store, tmp_path: Path):
    # refunded in full, the fees kept by the payment provider: net -4.81
    path = write(tmp_path, HEAD + "A1,c1,2025-01-05,120,120,4.81\nA2,c1,2025-02-05,30,0,0\n")
    report = ingest(store, path, as_of="2025-12-31")
    assert (report.orders, report.quarantined, report.excluded) == (1, 0, {"refunded": 1})
    assert store.scalar("SELECT count(*) FROM orders") == 1
    assert store.scalar("SELECT min(ordered_at) FROM orders").month == 2
    status, reason = excluded(store)["A1"]
    assert status == "refunded" and "net -4.81" in reason
    assert "1 order is not a purchase (1 refunded)" in report.summary()


def test_statuses_decide_what_is_a_purchase(store: Store, tmp_path: Path):
    text = (
        "order_id,customer_id,ordered_at,gross,status\n"
        "A1,c1,2025-01-05,10,paid\n"
        "A2,c1,2025-01-06,10,Pending\n"
        "A3,c1,2025-01-07,10,cancelled\n"
        "A4,c1,2025-01-08,10,voided\n"
        "A5,c1,2025-01-09,10,refunded\n"
        "A6,c1,2025-01-10,10,\n"
        "A7,c1,2025-01-11,10,lost in the post\n"
    )
    report = ingest(store, write(tmp_path, text), as_of="2025-12-31")
    assert sorted(store.query("SELECT order_id FROM orders")["order_id"]) == ["A1", "A6"]
    assert report.excluded == {"cancelled": 2, "pending": 1, "refunded": 1}
    status, reason = excluded(store)["A2"]
    assert status == "pending" and reason == "status 'Pending': not revenue until paid"
    assert excluded(store)["A4"] == ("cancelled", "status 'voided'")
    row, column, why = store.con.execute(
        "SELECT row_number, column_name, reason FROM quarantine"
    ).fetchall()[0]
    assert (row, column) == (8, "status")
    assert why.startswith("unknown order status: got 'lost in the post', expected one of")
    # once paid, the order is a purchase
    paid = write(
        tmp_path, "order_id,customer_id,ordered_at,gross,status\nA2,c1,2025-01-06,10,paid\n"
    )
    ingest(store, paid, as_of="2025-12-31")
    assert net(store, "A2") == 10 and "A2" not in excluded(store)


def test_pending_orders_count_when_asked(store: Store, tmp_path: Path):
    text = "order_id,customer_id,ordered_at,gross,status\nA1,c1,2025-01-05,10,pending\n"
    report = ingest(store, write(tmp_path, text), as_of="2025-12-31", pending_revenue=True)
    assert report.orders == 1 and net(store, "A1") == 10


def test_shopify_refunded_and_pending_orders_are_not_purchases(store: Store, tmp_path: Path):
    text = (
        "Name,Email,Financial Status,Subtotal,Refunded Amount,Created at,Lineitem name\n"
        "#1,a@b.c,paid,10,0,2025-01-01,Cup\n"
        "#2,a@b.c,refunded,20,20,2025-01-02,Pot\n"
        "#3,a@b.c,pending,30,0,2025-01-03,Pan\n"
        "#4,a@b.c,partially_refunded,40,10,2025-01-04,Lid\n"
    )
    report = ingest(store, write(tmp_path, text), as_of="2025-12-31", format="shopify")
    assert report.quarantined == 0
    assert sorted(store.query("SELECT order_id FROM orders")["order_id"]) == ["#1", "#4"]
    assert net(store, "#4") == 30
    assert {k: v[0] for k, v in excluded(store).items()} == {"#2": "refunded", "#3": "pending"}
    assert set(store.query("SELECT order_id FROM order_lines")["order_id"]) == {"#1", "#4"}
    assert report.excluded == {"pending": 1, "refunded": 1}


def test_the_summary_counts_in_the_singular_and_the_plural(tmp_path: Path) -> None:
    path = tmp_path / "one.csv"
    path.write_text("order_id,customer_id,ordered_at,net_revenue\n1,a,2025-01-02,10\n")
    with Store(":memory:") as store:
        text = ingest(store, path, as_of="2025-12-31").summary()
    assert "read 1 row;" in text and "loaded 1 order, 1 customer" in text


def test_a_refund_file_without_refund_rows_any_more_gives_the_refunds_back(
    store: Store, tmp_path: Path
):
    ingest(store, write(tmp_path, HEAD + "A1,c1,2025-01-05,100,0,0\nA2,c2,2025-01-05,80,0,0\n"))
    head = "order_id,customer_id,ordered_at,gross,refund_of\n"
    refunds = write(tmp_path, head + "R1,c1,2025-02-01,-30,A1\nR2,c2,2025-02-01,-80,A2\n", "r.csv")
    ingest(store, refunds, as_of="2025-12-31")
    assert (net(store, "A1"), net(store, "A2")) == (pytest.approx(70), None)
    # the same file now holds an order and no refund row: both orders are whole again
    refunds.write_text(head + "A3,c3,2025-02-02,15,\n")
    report = ingest(store, refunds, as_of="2025-12-31")
    assert (report.refunds, report.orders) == (0, 1)
    assert (net(store, "A1"), net(store, "A2")) == (pytest.approx(100), pytest.approx(80))
    assert excluded(store) == {}
    assert store.scalar("SELECT count(*) FROM order_refunds") == 0
