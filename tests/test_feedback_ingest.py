"""Feedback as a source: survey answers, reviews and support tickets in one file, in any
language; every bad row set aside with its reason, the kind read or inferred, a re-ingest
replacing rather than doubling, and a file that lacks a required column refused whole."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from retain.cli import app
from retain.errors import SchemaError
from retain.ingest import ingest
from retain.store import Store, status

FILE = """feedback_id,customer_id,created_at,kind,nps,csat,stars,text,subject,sku,status,tags
f1,c1,2025-01-05,survey,9,,,"Fast delivery, love it",,,,
f2,C2@Example.com,2025-01-06,,,,2,"Размер не подошёл, вернул",,sku-7,,
f3,c3,2025-01-07,,,,,การจัดส่งช้ามาก,Where is my order?,,Open,"delivery,late"
f4,c4,2025-01-08,review,,,6,too many stars,,sku-1,,
f5,c5,2025-01-09,,11,,,,,,,
f6,c6,2025-01-10,,,,,,,,,
f7,c7,2026-01-10,,,4,,later,,,,
f1,c1,2025-01-05,survey,3,,,again,,,,
f8,c8,2025-01-11,,,,4.5,"Tốt lắm, giao hàng nhanh",,sku-2,,
f9,c9,2025-01-12,praise,,,,?,,,,
f10,c10,2025-01-13,,,,,"رائع جدا، شكرا",,,,
f11,c11,2025-01-14,NPS,0,,,,,,,
f12,c12,2025-01-15,,,3.5,,,,,,
"""


def _store(tmp_path: Path) -> Path:
    (tmp_path / "fb.csv").write_text(FILE, encoding="utf-8")
    db = tmp_path / "s.duckdb"
    with Store(db) as store:
        done = ingest(store, tmp_path / "fb.csv", as_of="2025-06-30")
    assert done.format == "feedback" and done.feedback == 7
    return db


def test_every_kind_is_read_and_every_bad_row_named(tmp_path: Path) -> None:
    db = _store(tmp_path)
    with Store(db, read_only=True) as store:
        rows = {
            r[0]: r[1:]
            for r in store.con.execute(
                "SELECT feedback_id, customer_id, kind, nps, csat, stars, text, status, tags "
                "FROM feedback"
            ).fetchall()
        }
        quarantined = store.con.execute(
            "SELECT row_number, column_name, reason FROM quarantine ORDER BY row_number"
        ).fetchall()
        assert status(store)["feedback"] == 7
    assert rows["f1"] == ("c1", "survey", 9.0, None, None, "Fast delivery, love it", None, None)
    # the e-mail as the customer, lower-cased; stars without a kind: a review
    assert rows["f2"][:2] == ("c2@example.com", "review") and rows["f2"][4] == 2.0
    assert rows["f2"][5] == "Размер не подошёл, вернул"
    # a subject and a status: a ticket, its status lower-cased, its tags kept
    assert rows["f3"][1] == "ticket" and rows["f3"][5:] == ("การจัดส่งช้ามาก", "open", "delivery,late")
    assert rows["f8"][1:] == ("review", None, None, 4.5, "Tốt lắm, giao hàng nhanh", None, None)
    assert rows["f10"][1] == "comment" and rows["f10"][5] == "رائع جدا، شكرا"
    assert rows["f11"][1:3] == ("survey", 0.0)  # "NPS" read as a survey; 0 is a score
    assert rows["f12"][1] == "survey" and rows["f12"][3] == 3.5
    reasons = {row: (column, why) for row, column, why in quarantined}
    assert reasons[5] == ("stars", "stars: got 6, expected 1 to 5 (halves allowed)")
    assert reasons[6] == ("nps", "nps: got 11, expected a whole number from 0 to 10")
    assert reasons[7][1].startswith("nothing said")
    assert reasons[8][1] == "dated after the observation date 2025-06-30: got 2026-01-10"
    assert reasons[9][1] == "feedback_id 'f1' appears again; first at row 2"
    assert reasons[11][1].startswith("unknown kind: got 'praise'")
    assert len(quarantined) == 6


def test_a_second_ingest_replaces_rather_than_doubles(tmp_path: Path) -> None:
    db = _store(tmp_path)
    changed = "feedback_id,customer_id,created_at,nps,text\nf1,c1,2025-01-05,4,slow this time\n"
    (tmp_path / "again.csv").write_text(changed)
    with Store(db) as store:
        ingest(store, tmp_path / "again.csv", as_of="2025-06-30")
        row = store.con.execute(
            "SELECT nps, text FROM feedback WHERE feedback_id = 'f1'"
        ).fetchall()
        total = store.con.execute("SELECT count(*) FROM feedback").fetchall()[0][0]
    assert row == [(4.0, "slow this time")] and total == 7


def test_a_missing_required_column_refuses_the_file(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("feedback_id,created_at,text\nf1,2025-01-01,hello\n")
    with Store(tmp_path / "s.duckdb") as store:
        with pytest.raises(SchemaError, match="customer_id"):
            ingest(store, tmp_path / "bad.csv", as_of="2025-06-30")
        assert store.con.execute("SELECT count(*) FROM feedback").fetchall()[0][0] == 0


def test_the_cli_ingests_and_counts_it(tmp_path: Path) -> None:
    (tmp_path / "fb.csv").write_text(FILE, encoding="utf-8")
    db = tmp_path / "s.duckdb"
    runner = CliRunner()
    done = runner.invoke(
        app, ["ingest", str(tmp_path / "fb.csv"), "--db", str(db), "--as-of", "2025-06-30"]
    )
    assert done.exit_code == 0, done.output
    assert "loaded 7 feedback rows" in done.output and "6 rows quarantined" in done.output
    shown = runner.invoke(app, ["status", "--db", str(db)])
    assert "feedback: 7" in shown.output


def test_post_api_feedback_stores_checks_and_replaces(tmp_path: Path) -> None:
    """POST /api/feedback with the key: the records checked by the file's rules in one
    transaction, a bad one quarantined by its place in the batch, 422 when none is
    stored, 401 without the key, and a feedback_id sent again replacing its row."""
    import warnings

    warnings.filterwarnings("ignore", message=".*httpx.*starlette.testclient.*")
    from fastapi.testclient import TestClient

    from retain.service import create_app

    db = _store(tmp_path)
    key = "a-long-enough-secret-key"
    batch = {
        "feedback": [
            {"feedback_id": "p1", "customer_id": "c1", "created_at": "2025-02-01", "nps": 2,
             "text": "Доставка заняла три недели", "tags": ["delivery", "late"]},
            {"feedback_id": "p2", "customer_id": "c2", "created_at": "2025-02-02", "stars": 9},
            {"feedback_id": "p3", "customer_id": "c3", "created_at": "2025-02-03",
             "subject": "Wrong size", "status": "Open"},
        ]
    }  # fmt: skip
    with TestClient(create_app(db, api_key=key, warm=False), client=("127.0.0.1", 5000)) as client:
        headers = {"X-API-Key": key}
        refused = client.post("/api/feedback", json=batch)
        sent = client.post("/api/feedback", json=batch, headers=headers)
        again = client.post(
            "/api/feedback",
            json={"feedback": [{"feedback_id": "p1", "customer_id": "c1",
                                "created_at": "2025-02-01", "nps": 7}]},
            headers=headers,
        )  # fmt: skip
        nothing = client.post(
            "/api/feedback",
            json={
                "feedback": [{"feedback_id": "p9", "customer_id": "c9", "created_at": "2025-02-09"}]
            },
            headers=headers,
        )
        unknown = client.post(
            "/api/feedback",
            json={"feedback": [{"feedback_id": "x", "colour": "red"}]},
            headers=headers,
        )
    assert refused.status_code == 401
    assert sent.status_code == 201, sent.text
    answer = sent.json()
    assert answer["stored"] == 2 and answer["source"].startswith("api:POST /api/feedback ")
    assert answer["quarantined"] == [
        {
            "record": 2,
            "column": "stars",
            "reason": "stars: got 9.0, expected 1 to 5 (halves allowed)",
        }
    ]
    assert again.status_code == 201 and again.json()["stored"] == 1
    assert nothing.status_code == 422 and nothing.json()["quarantined"][0]["reason"].startswith(
        "nothing said"
    )
    assert unknown.status_code == 422
    with Store(db, read_only=True) as store:
        rows = dict(
            (r[0], r[1:])
            for r in store.con.execute(
                "SELECT feedback_id, kind, nps, tags, status FROM feedback WHERE feedback_id LIKE 'p%'"
            ).fetchall()
        )
    assert rows == {"p1": ("survey", 7.0, None, None), "p3": ("ticket", None, None, "open")}
