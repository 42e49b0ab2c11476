"""Erasing a customer: after ``retain erase``, no table holds their id, e-mail or name.

The store is the CDNOW sample with one more customer, Mira, given every kind of row the
store keeps (orders and lines, a customers file, feedback, a quarantined row, scores, a
loyalty ledger, an opt-out); every text column of every table is then searched for her.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from retain.campaigns import suppress
from retain.cli import app
from retain.config import set_setting
from retain.erase import erase_customer
from retain.errors import DataError
from retain.ingest import ingest
from retain.store import Store
from store_helpers import scored_copy, store_of

EMAIL = "Mira.Quell@Example.com"
KEY = EMAIL.lower()  # the store keys an e-mail id lower-cased
NAME = "Mira Quellweather"
ORDERS = f"""order_id,customer_id,ordered_at,net_revenue,email
m1,{EMAIL},1997-02-01,40.00,{EMAIL}
m2,{EMAIL},1997-09-01,35.00,{EMAIL}
m3,{EMAIL},1998-03-01,25.00,{EMAIL}
m4,{EMAIL},1998-04-01,not-a-number,{EMAIL}
"""
LINES = """order_id,sku,name,quantity,unit_price
m1,TEA,Green tea,2,20
m2,POT,Teapot,1,35
"""
CUSTOMERS = f"""customer_id,email,name,accepts_marketing
{EMAIL},{EMAIL},{NAME},yes
"""
FEEDBACK = json.dumps(
    {
        "feedback_id": "f-m1",
        "customer_id": EMAIL,
        "created_at": "1998-03-02",
        "kind": "review",
        "stars": 2,
        "text": "The teapot arrived cracked and nobody answered my mails",
    }
)


@pytest.fixture(scope="module")
def mira_db(cdnow_sample_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("erase")
    base = folder / "base.duckdb"
    shutil.copy(cdnow_sample_db, base)
    files = {"orders": ORDERS, "lines": LINES, "customers": CUSTOMERS}
    with Store(base) as store:
        for kind, text in files.items():
            path = folder / f"{kind}.csv"
            path.write_text(text)
            ingest(store, path, format=kind, as_of="1998-06-30" if kind == "orders" else None)
        (folder / "feedback.jsonl").write_text(FEEDBACK + "\n")
        ingest(store, folder / "feedback.jsonl", format="feedback")
    path = scored_copy(base, folder / "mira.duckdb")
    runner = CliRunner()
    result = runner.invoke(app, ["loyalty", "build", "--db", str(path)])
    assert result.exit_code == 0, result.output
    with Store(path) as store:
        suppress(store, KEY, reason="unsubscribed", scope="marketing", source="test")
    return path


@pytest.fixture
def db(mira_db: Path, tmp_path: Path) -> Path:
    path = tmp_path / "store.duckdb"
    shutil.copy(mira_db, path)
    return path


def mentions(store: Store, *needles: str) -> dict[str, int]:
    """Every text column (and list of texts) of every table holding one of ``needles``
    (case-insensitive) or equal to the id: table.column -> rows."""
    found: dict[str, int] = {}
    columns = store.con.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'main' AND table_catalog = current_database()"
    ).fetchall()
    for table, column, kind in columns:
        if kind in ("VARCHAR", "JSON"):
            text = f'lower(CAST("{column}" AS VARCHAR))'
        elif str(kind).endswith("[]"):
            text = f"lower(array_to_string(\"{column}\", ' '))"
        else:
            continue
        hits = store.con.execute(
            f'SELECT count(*) FROM "{table}" WHERE '
            + " OR ".join(f"contains({text}, ?)" for _ in needles)
            + f' OR CAST("{column}" AS VARCHAR) = ?',
            [*(n.lower() for n in needles), KEY],
        ).fetchall()[0][0]
        if hits:
            found[f"{table}.{column}"] = hits
    return found


def revenue(store: Store) -> float:
    return float(store.scalar("SELECT sum(net_revenue) FROM orders"))


def test_the_store_held_her_everywhere_before(db: Path) -> None:
    with Store(db, read_only=True) as store:
        found = mentions(store, KEY, NAME, '"' + KEY + '"')
    for place in (
        "orders.customer_id",
        "customers.name",
        "customer_scores.customer_id",
        "quarantine.raw",
        "feedback.customer_id",
        "loyalty_ledger.customer_id",
        "contact_suppressions.customer_id",
    ):
        assert place in found, (place, found)
    with Store(db, read_only=True) as store:  # the review was tagged as it was stored
        assert store.scalar("SELECT count(*) FROM feedback_tags WHERE feedback_id = 'f-m1'") == 1


def test_after_erasure_no_table_holds_her_and_revenue_stays(db: Path) -> None:
    with Store(db) as store:
        before = revenue(store)
        customers = store.scalar("SELECT count(DISTINCT customer_id) FROM orders")
        report = erase_customer(store, EMAIL, requested_by="test")
        assert report.remaining == {}
        assert mentions(store, KEY, NAME, "quellweather", "mira.quell") == {}
        # her orders stay under an id that names no one: the totals do not move
        assert revenue(store) == pytest.approx(before)
        assert store.scalar("SELECT count(DISTINCT customer_id) FROM orders") == customers
        anonymous = report.anonymous_id
        assert anonymous is not None and anonymous.startswith("erased-")
        assert store.scalar("SELECT count(*) FROM orders WHERE customer_id = ?", [anonymous]) == 3
        assert store.scalar(
            "SELECT count(*) FROM customers WHERE customer_id = ? AND email IS NULL "
            "AND name IS NULL", [anonymous]
        ) == 1  # fmt: skip
        # the feedback's tags went with it, the others' stay
        assert store.scalar("SELECT count(*) FROM feedback_tags WHERE feedback_id = 'f-m1'") == 0
        # the audit row: when, by whom, what went; nothing of who
        audit = store.con.execute("SELECT requested_by, orders, rows_json FROM erasures").fetchall()
        assert audit[0][:2] == ("test", "unlink")
        rows: dict[str, Any] = json.loads(audit[0][2])
        assert rows["customers"] == 1 and rows["orders (unlinked)"] == 3
        assert rows["quarantine"] == 1 and rows["feedback"] == 1
        with pytest.raises(DataError, match="no customer"):
            erase_customer(store, EMAIL)


def test_removing_her_orders_takes_her_revenue_and_lines(db: Path) -> None:
    with Store(db) as store:
        before = revenue(store)
        lines = store.scalar("SELECT count(*) FROM order_lines")
        set_setting(store, "erase_orders", "remove")  # the store's rule, as the webhook uses
        report = erase_customer(store, KEY)
        assert report.anonymous_id is None
        assert revenue(store) == pytest.approx(before - 100.0)
        assert store.scalar("SELECT count(*) FROM order_lines") == lines - 2
        assert mentions(store, KEY, NAME) == {}


def test_the_cli_says_what_would_go_and_erases_with_yes(db: Path) -> None:
    runner = CliRunner()
    shown = runner.invoke(app, ["erase", EMAIL, "--db", str(db)])
    assert shown.exit_code == 0, shown.output
    assert "would erase" in shown.output and "add --yes" in shown.output
    with Store(db, read_only=True) as store:  # nothing changed
        assert store.scalar("SELECT count(*) FROM customers WHERE customer_id = ?", [KEY]) == 1
        assert store.scalar("SELECT count(*) FROM information_schema.tables "
                            "WHERE table_name = 'erasures'") == 0  # fmt: skip
    done = runner.invoke(app, ["erase", EMAIL, "--yes", "--db", str(db)])
    assert done.exit_code == 0 and "erased" in done.output, done.output
    with Store(db, read_only=True) as store:
        assert mentions(store, KEY, NAME) == {}
    again = runner.invoke(app, ["erase", EMAIL, "--yes", "--db", str(db)])
    assert again.exit_code != 0 and "no customer" in again.output


def test_a_short_or_accented_id_erases_its_rows_and_no_others(tmp_path: Path) -> None:
    orders = (
        "order_id,customer_id,ordered_at,net_revenue\n"
        "o1,1,2024-01-10,10\n"
        "o2,zed,2024-01-11,1\n"
        "o3,Zoë Brontë,2024-01-12,7\n"
        "o8,1,not-a-date,5\n"  # quarantined rows: one of each customer
        "o9,zed,also-not,1\n"  # its amount is 1, the other customer's id
        "1,zed,nor-this,2\n"  # its order number is 1
        "o7,Zoë Brontë,never,3\n"
    )
    db = store_of(tmp_path, orders=orders)
    with Store(db) as store:
        assert store.scalar("SELECT count(*) FROM quarantine") == 4
        erase_customer(store, "1")
        kept = store.con.execute(
            "SELECT json_extract_string(raw, '$.order_id') FROM quarantine ORDER BY 1"
        ).fetchall()
        assert kept == [("1",), ("o7",), ("o9",)]  # zed's and Zoë's stay
        assert store.scalar("SELECT count(*) FROM orders WHERE customer_id = 'zed'") == 1
        report = erase_customer(store, "Zoë Brontë", orders="remove")
        assert report.remaining == {}
        assert store.scalar("SELECT count(*) FROM quarantine") == 2
        assert mentions_of(store, "zoë") == {}


def mentions_of(store: Store, text: str) -> dict[str, int]:
    found: dict[str, int] = {}
    for table, column in store.con.execute(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = "
        "'main' AND data_type = 'VARCHAR' AND table_catalog = current_database()"
    ).fetchall():
        n = store.scalar(
            f'SELECT count(*) FROM "{table}" WHERE contains(lower("{column}"), ?)', [text]
        )
        if n:
            found[f"{table}.{column}"] = n
    return found
