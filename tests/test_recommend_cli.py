"""`retain recommend`: the shop's CSV files ingested, each command as text and as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recommend_helpers import hand_store
from retain.cli import app

runner = CliRunner()


def run(*args: object):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def shop_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seeded shop written as CSV files and loaded with `retain ingest`."""
    from shop import write

    folder = tmp_path_factory.mktemp("shop")
    paths = write(800, folder, seed=2)
    db = folder / "shop.duckdb"
    for path in (paths["orders"], paths["order_lines"]):
        result = run("ingest", path, "--db", db, "--as-of", "2026-01-01")
        assert result.exit_code == 0, result.output
    return db


def test_build_then_cart_as_json(shop_db: Path) -> None:
    built = run("recommend", "build", "--db", shop_db, "--json")
    assert built.exit_code == 0, built.output
    facts = json.loads(built.stdout)
    assert facts["items"] > 100 and facts["consumables"] >= 5
    result = run("recommend", "cart", "DESK-OAK", "--k", "3", "--json", "--db", shop_db)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 3
    assert all({"sku", "name", "score", "reason"} <= set(r) for r in rows)
    assert rows[0]["sku"] == "CHAIR-BASIC"
    assert rows[0]["reason"].startswith("bought together with Desk, oak by ")
    text = run("recommend", "cart", "DESK-OAK", "NOT-A-SKU", "--db", shop_db)
    assert text.exit_code == 0
    assert "1. Office chair, basic (CHAIR-BASIC)" in text.stdout
    assert "unknown SKU(s) ignored: NOT-A-SKU" in text.output


def test_customer_as_json(shop_db: Path) -> None:
    result = run("recommend", "customer", "c000001", "--k", "4", "--json", "--db", shop_db)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert 1 <= len(rows) <= 4
    assert all({"sku", "name", "score", "reason", "kind"} <= set(r) for r in rows)


def test_item_commands(shop_db: Path) -> None:
    also = json.loads(run("recommend", "also-bought", "WOK-CS", "--json", "--db", shop_db).stdout)
    assert also[0]["sku"] == "SPATULA-BAMBOO"
    later = json.loads(
        run("recommend", "bought-later", "DESK-OAK", "--json", "--db", shop_db).stdout
    )
    assert {"MONITOR-27", "MONITOR-ARM"} & {r["sku"] for r in later[:3]}
    up = json.loads(run("recommend", "upsell", "CHAIR-BASIC", "--json", "--db", shop_db).stdout)
    assert up[0]["sku"] == "CHAIR-ERGO" and up[0]["price_increase"] > 0
    bundles = run(
        "recommend", "bundles", "--sku", "DESK-OAK", "--discount", "0.15", "--json", "--db", shop_db
    )
    assert bundles.exit_code == 0, bundles.output
    first = json.loads(bundles.stdout)[0]
    assert "DESK-OAK" in first["skus"]
    assert first["bundle_price"] == pytest.approx(round(first["total_price"] * 0.85, 2))
    rules = run("recommend", "rules", "--min-lift", "3", "--limit", "5", "--json", "--db", shop_db)
    rows = json.loads(rules.stdout)
    assert len(rows) == 5 and all(r["lift"] >= 3 for r in rows)
    assert "if bought" in run("recommend", "rules", "--limit", "3", "--db", shop_db).stdout


def test_evaluate(shop_db: Path) -> None:
    result = run("recommend", "evaluate", "--json", "--db", shop_db)
    assert result.exit_code == 0, result.output
    facts = json.loads(result.stdout)
    assert facts["next_basket"]["beats_baseline"] and facts["cart"]["beats_baseline"]
    text = run("recommend", "evaluate", "--sample", "100", "--db", shop_db).stdout
    assert "most popular" in text and "beats the baseline" in text


def test_errors_are_one_line(shop_db: Path, tmp_path: Path) -> None:
    unknown = run("recommend", "also-bought", "NOPE", "--db", shop_db)
    assert unknown.exit_code == 2
    assert "unknown SKU" in unknown.output and "Traceback" not in unknown.output
    nobody = run("recommend", "customer", "nobody", "--db", shop_db)
    assert nobody.exit_code == 2 and "no orders from this customer" in nobody.output
    bad_k = run("recommend", "cart", "DESK-OAK", "--k", "0", "--db", shop_db)
    assert bad_k.exit_code == 2 and "k is how many" in bad_k.output
    bad_support = run("recommend", "rules", "--min-support", "2", "--db", shop_db)
    assert bad_support.exit_code == 2 and "min_support" in bad_support.output
    missing = run("recommend", "cart", "A", "--db", tmp_path / "none.duckdb")
    assert missing.exit_code == 2 and "no store" in missing.output
    no_lines = tmp_path / "no_lines.duckdb"
    with hand_store(no_lines) as store:
        store.con.execute("DELETE FROM order_lines")
    result = run("recommend", "cart", "A", "--db", no_lines)
    assert result.exit_code == 2 and "no order lines" in result.output
