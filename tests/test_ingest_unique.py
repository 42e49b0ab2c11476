"""order_id is unique in the store by the ingest's own logic: every path that writes
orders keeps one row per order_id in ``orders`` and ``excluded_orders`` together, and a
changed order replaces its stored version."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from retain.ingest import ingest
from retain.service.orders import ingest_order, ingest_orders
from retain.store import MIGRATIONS, Store

HEADER = "order_id,customer_id,ordered_at,net_revenue,status,refund_of\n"
AS_OF = "2025-01-01"


def write(tmp_path: Path, text: str, name: str) -> Path:
    path = tmp_path / name
    path.write_text(HEADER + text, encoding="utf-8")
    return path


def assert_unique(store: Store) -> None:
    """No order_id twice in orders, excluded_orders, or the two together."""
    for table in ("orders", "excluded_orders"):
        assert store.scalar(f"SELECT count(*) - count(DISTINCT order_id) FROM {table}") == 0
    both = store.scalar("SELECT count(*) FROM orders o JOIN excluded_orders e USING (order_id)")
    assert both == 0


def stored(store: Store) -> dict[str, tuple[str, float]]:
    """order_id -> (table, net revenue) over both tables."""
    rows = store.con.execute(
        "SELECT order_id, 'orders', net_revenue FROM orders UNION ALL "
        "SELECT order_id, 'excluded', net_revenue FROM excluded_orders"
    ).fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


@pytest.fixture
def store(tmp_path: Path):
    with Store(tmp_path / "s.duckdb") as s:
        yield s


def test_the_store_keeps_no_index_on_order_id(store: Store) -> None:
    assert store.schema_version == len(MIGRATIONS)
    names = [r[0] for r in store.con.execute("SELECT index_name FROM duckdb_indexes()").fetchall()]
    assert "orders_order_id" not in names


def test_a_file_twice_and_a_changed_file(store: Store, tmp_path: Path) -> None:
    text = "a,c1,2024-06-01,10,,\nb,c1,2024-06-02,20,,\nc,c2,2024-06-03,30,,\n"
    path = write(tmp_path, text, "orders.csv")
    ingest(store, path, as_of=AS_OF)
    assert ingest(store, path, as_of=AS_OF).same_as is not None
    assert_unique(store)
    # the same path with changed orders: each replaces its stored version
    write(
        tmp_path,
        "a,c1,2024-06-01,11,,\nb,c3,2024-06-02,20,,\nc,c2,2024-06-03,30,cancelled,\n",
        "orders.csv",
    )
    ingest(store, path, as_of=AS_OF)
    assert_unique(store)
    assert stored(store) == {"a": ("orders", 11.0), "b": ("orders", 20.0), "c": ("excluded", 30.0)}
    assert store.scalar("SELECT customer_id FROM orders WHERE order_id = 'b'") == "c3"


def test_overlapping_files_and_orders_moving_between_tables(store: Store, tmp_path: Path) -> None:
    first = write(tmp_path, "a,c1,2024-06-01,10,,\nb,c1,2024-06-02,20,pending,\n", "first.csv")
    second = write(
        tmp_path,
        "b,c1,2024-06-02,25,,\nc,c2,2024-06-03,30,,\na,c1,2024-06-01,10,refunded,\n",
        "second.csv",
    )
    ingest(store, first, as_of=AS_OF)
    ingest(store, second, as_of=AS_OF)
    assert_unique(store)
    assert stored(store) == {"a": ("excluded", 10.0), "b": ("orders", 25.0), "c": ("orders", 30.0)}
    # the first file again (a write came after it): its versions win again
    ingest(store, first, as_of=AS_OF)
    assert_unique(store)
    assert stored(store) == {"a": ("orders", 10.0), "b": ("excluded", 20.0), "c": ("orders", 30.0)}


def test_an_order_id_twice_in_one_file_is_stored_once(store: Store, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "a,c1,2024-06-01,10,,\na,c2,2024-06-02,20,,\n a\t,c3,2024-06-03,30,,\n",
        "dups.csv",
    )
    report = ingest(store, path, as_of=AS_OF)
    assert report.orders == 1 and report.quarantined == 2
    assert_unique(store)
    assert stored(store) == {"a": ("orders", 10.0)}


def test_refunds_in_full_and_withdrawn_move_orders_once(store: Store, tmp_path: Path) -> None:
    orders = write(tmp_path, "a,c1,2024-06-01,10,,\nb,c1,2024-06-02,20,,\n", "orders.csv")
    ingest(store, orders, as_of=AS_OF)
    refunds = write(tmp_path, "r1,c1,2024-06-05,-10,,a\nr2,c1,2024-06-05,-5,,b\n", "refunds.csv")
    ingest(store, refunds, as_of=AS_OF)
    assert_unique(store)
    assert stored(store) == {"a": ("excluded", 0.0), "b": ("orders", 15.0)}
    # the refunds withdrawn: a is a purchase again, b whole again
    write(tmp_path, "r3,c1,2024-06-05,-1,,b\n", "refunds.csv")
    ingest(store, refunds, as_of=AS_OF)
    assert_unique(store)
    assert stored(store) == {"a": ("orders", 10.0), "b": ("orders", 19.0)}


def test_a_parquet_file_and_a_csv_file_of_the_same_orders(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "orders.parquet"
    pq.write_table(
        pa.table(
            {
                "order_id": ["a", "b"],
                "customer_id": ["c1", "c2"],
                "ordered_at": [dt.datetime(2024, 6, 1), dt.datetime(2024, 6, 2)],
                "net_revenue": [10.0, 20.0],
            }
        ),
        path,
    )
    ingest(store, path, as_of=AS_OF)
    ingest(store, write(tmp_path, "a,c1,2024-06-01,12,,\n", "a.csv"), as_of=AS_OF)
    assert_unique(store)
    assert stored(store) == {"a": ("orders", 12.0), "b": ("orders", 20.0)}


def order(order_id: str, amount: float, **extra: object) -> dict[str, object]:
    return {
        "order_id": order_id,
        "customer_id": "c1",
        "ordered_at": "2024-06-01T12:00:00",
        "net_revenue": amount,
        **extra,
    }


def test_api_orders_with_the_same_id_in_a_batch_and_across_batches(store: Store) -> None:
    as_of = dt.datetime(2025, 1, 1)
    ingest_orders(store, [order("a", 10), order("b", 20), order("a", 30)], as_of=as_of)
    assert_unique(store)
    assert stored(store) == {"a": ("orders", 30.0), "b": ("orders", 20.0)}
    ingest_orders(store, [order("a", 40), order("b", 5, status="cancelled")], as_of=as_of)
    ingest_order(store, order("a", 50), as_of=as_of)
    ingest_order(store, order(" a\u200b", 60), as_of=as_of)  # stored as "a"
    assert_unique(store)
    assert stored(store) == {"a": ("orders", 60.0), "b": ("excluded", 5.0)}
