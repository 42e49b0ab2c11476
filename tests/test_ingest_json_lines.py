"""JSON lines, one object a line, for every format: orders and feedback read as their CSV
would be (a list a comma-separated value), row N line N, blank lines skipped, and a line
that is not a JSON object set aside with its reason; gzip too."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from retain.ingest import ingest
from retain.store import Store

FEEDBACK = [
    {
        "feedback_id": "j1",
        "customer_id": "c1",
        "created_at": "2025-01-05",
        "nps": 9,
        "text": "Great",
    },
    {
        "feedback_id": "j2",
        "customer_id": "C2@Example.com",
        "created_at": "2025-01-06",
        "stars": 2,
        "text": "Хуже не бывает",
        "tags": ["quality", "size"],
        "sku": "s1",
    },
    {"feedback_id": "j3", "customer_id": "c3", "created_at": "2025-01-07", "subject": "Refund?"},
    {"feedback_id": "j4", "customer_id": "c4", "created_at": "2025-01-08", "nps": 12},
]


def _lines(records: list[object], extra: dict[int, str]) -> str:
    out = [json.dumps(r, ensure_ascii=False) for r in records]
    for at, line in sorted(extra.items()):
        out.insert(at - 1, line)
    return "\n".join(out) + "\n"


def test_feedback_as_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "feedback.jsonl"
    path.write_text(_lines(FEEDBACK, {2: "", 4: "not json at all", 5: "[1, 2]"}), encoding="utf-8")
    with Store(tmp_path / "s.duckdb") as store:
        done = ingest(store, path, as_of="2025-06-30")
        rows = store.con.execute(
            "SELECT feedback_id, customer_id, kind, nps, stars, text, tags FROM feedback ORDER BY 1"
        ).fetchall()
        set_aside = store.con.execute(
            "SELECT row_number, column_name, reason FROM quarantine ORDER BY 1"
        ).fetchall()
    assert done.format == "feedback" and done.feedback == 3 and done.rows_read == 6
    assert rows == [
        ("j1", "c1", "survey", 9.0, None, "Great", None),
        ("j2", "c2@example.com", "review", None, 2.0, "Хуже не бывает", "quality,size"),
        ("j3", "c3", "ticket", None, None, None, None),
    ]
    # lines 4 and 5 are not objects; j4 is on line 7 (line 2 blank, 4 and 5 inserted)
    assert set_aside == [
        (4, None, "malformed row: not JSON"),
        (5, None, "malformed row: a JSON value but not an object"),
        (7, "nps", "nps: got 12, expected a whole number from 0 to 10"),
    ]


def test_orders_as_gzipped_json_lines(tmp_path: Path) -> None:
    orders = [
        {"order_id": "o1", "customer_id": "a", "ordered_at": "2025-01-01", "net_revenue": 10.5},
        {"order_id": "o2", "customer_id": "a", "ordered_at": "2025-02-01", "net_revenue": 20},
        {"order_id": "o3", "customer_id": "b", "ordered_at": "2025-13-01", "net_revenue": 5},
    ]
    path = tmp_path / "orders.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write(_lines(orders, {}))
    with Store(tmp_path / "s.duckdb") as store:
        done = ingest(store, path, as_of="2025-06-30")
        stored = store.con.execute("SELECT order_id, net_revenue FROM orders ORDER BY 1").fetchall()
        reason = store.con.execute("SELECT row_number, column_name FROM quarantine").fetchall()
    assert done.format == "orders" and done.orders == 2
    assert stored == [("o1", 10.5), ("o2", 20.0)]
    assert reason == [(3, "ordered_at")]


def test_json_that_is_not_one_object_a_line_is_refused(tmp_path: Path) -> None:
    import pytest

    from retain.errors import DataError

    path = tmp_path / "pretty.json"
    path.write_text('{\n  "feedback_id": "x",\n  "customer_id": "c"\n}\n')
    with Store(tmp_path / "s.duckdb") as store:
        with pytest.raises(DataError, match="one object a line"):
            ingest(store, path, as_of="2025-06-30")
        assert store.con.execute("SELECT count(*) FROM quarantine").fetchall()[0][0] == 0
