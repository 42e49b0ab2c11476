"""Who to offer a subscription: a generated shop of regular buyers of one product, regular
buyers who stopped, irregular buyers and one-time buyers; the rhythm found, the value of
the offer worked out by hand, and the inputs the answer needs named when missing."""

from __future__ import annotations

import datetime as dt
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from retain.cli import app
from retain.errors import ArgumentError, StoreError
from retain.ingest import ingest
from retain.scoring import fit_store, score_store
from retain.store import Store
from retain.subscriptions import candidates

AS_OF = dt.date(2025, 12, 31)


def _shop(folder: Path) -> Path:
    """r*: coffee every 30 days (+-2) to December; l*: coffee every 30 days until June;
    i*: coffee on irregular days; o*: one order; everyone also buys other things now
    and then, so that the models see repeat buyers of every kind."""
    rng = np.random.default_rng(5)
    orders = ["order_id,customer_id,ordered_at,net_revenue"]
    lines = ["order_id,sku,name,quantity,unit_price"]
    n = 0

    def buy(customer: str, day: dt.date, sku: str, price: float) -> None:
        nonlocal n
        n += 1
        orders.append(f"o{n},{customer},{day},{price:.2f}")
        lines.append(f"o{n},{sku},{sku.title()},1,{price:.2f}")

    for k in range(60):
        day = AS_OF - dt.timedelta(days=int(rng.integers(5, 25)))
        for _ in range(8):
            buy(f"r{k}", day, "coffee", 18.0)
            day -= dt.timedelta(days=30 + int(rng.integers(-2, 3)))
        buy(f"r{k}", day, "mug", 12.0)
    for k in range(40):
        day = dt.date(2025, 6, 1)
        for _ in range(6):
            buy(f"l{k}", day, "coffee", 18.0)
            day -= dt.timedelta(days=30)
    for k in range(60):
        day = AS_OF - dt.timedelta(days=int(rng.integers(1, 20)))
        for gap in (8, 95, 20, 150):
            buy(f"i{k}", day, "coffee", 18.0)
            day -= dt.timedelta(days=gap)
    for k in range(140):
        buy(f"o{k}", AS_OF - dt.timedelta(days=int(rng.integers(1, 600))), "tea", 9.0)
    (folder / "orders.csv").write_text("\n".join(orders) + "\n")
    (folder / "lines.csv").write_text("\n".join(lines) + "\n")
    db = folder / "shop.duckdb"
    with Store(db) as store:
        ingest(store, folder / "orders.csv", as_of=AS_OF.isoformat())
        ingest(store, folder / "lines.csv", format="lines")
    return db


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("candidates")
    db = _shop(folder)
    with Store(db) as store:
        fit_store(store, model="mbgnbd")
        score_store(store)
    return db


def test_regular_buyers_of_a_product_are_the_candidates(scored: Path) -> None:
    with Store(scored, read_only=True) as store:
        result = candidates(store, retention=0.9, limit=None)
    found = {(r["customer_id"], r["sku"]) for r in result["rows"]}
    assert found == {(f"r{k}", "coffee") for k in range(60)}  # not the lapsed nor irregular
    assert result["candidates"] == result["customers"] == 60
    for row in result["rows"]:
        assert 28 <= row["every_days"] <= 32
        assert row["irregularity"] < 0.1
        assert row["purchases"] == 8
        assert row["price_per_delivery"] == pytest.approx(0.9 * 18.0)
        assert row["share_of_spend"] == pytest.approx(8 * 18 / (8 * 18 + 12))
    gains = [r["gain"] for r in result["rows"]]
    assert gains == sorted(gains, reverse=True)
    assert result["gain_total"] == pytest.approx(sum(g for g in gains if g > 0))


def test_the_offer_is_valued_by_hand(scored: Path) -> None:
    with Store(scored, read_only=True) as store:
        result = candidates(store, retention=0.8, discount=0.2, limit=5)
        clv = dict(store.con.execute("SELECT customer_id, clv_12m FROM customer_scores").fetchall())
        margin, rate = result["margin"], result["discount_rate"]
    assert len(result["rows"]) == 5
    for row in result["rows"]:
        # the first delivery when the next purchase is due, in full
        due = max(0.0, row["every_days"] - row["days_since"])
        times = np.arange(due, 365.25, row["every_days"])
        weights = 0.8 ** np.arange(times.size) * (1 + rate) ** (-times / 365.25)
        price = 0.8 * row["spend_per_purchase"]
        assert row["value_subscribed"] == pytest.approx(margin * price * weights.sum())
        assert row["value_now"] == pytest.approx(clv[row["customer_id"]] * row["share_of_spend"])
        assert row["gain"] == pytest.approx(row["value_subscribed"] - row["value_now"])
    # a loyal monthly buyer is worth more as they are than as a subscriber of whom a
    # fifth cancel at each delivery: no gain, said as such
    assert result["gaining"] == 0 and result["gain_total"] == 0
    assert all(r["gain"] < 0 for r in result["rows"])
    with Store(scored, read_only=True) as store:
        kept = candidates(store, retention=0.97, discount=0.0, limit=5)
    assert kept["gaining"] > 0 and kept["gain_total"] > 0
    assert kept["rows"][0]["value_subscribed"] > result["rows"][0]["value_subscribed"]


def test_the_price_is_what_was_paid_and_the_share_is_of_every_order(tmp_path: Path) -> None:
    """A regular buyer whose coffee costs 18 on its lines but 9 after a half-price code,
    and one who also places large orders without lines: the offer is priced at what was
    paid, and the product's share is of all they spent."""
    orders = ["order_id,customer_id,ordered_at,net_revenue"]
    lines = ["order_id,sku,name,quantity,unit_price"]
    for k in range(6):
        day = AS_OF - dt.timedelta(days=10 + 30 * k)
        orders += [f"h{k},half,{day},9.00", f"b{k},big,{day},18.00"]
        lines += [f"h{k},coffee,Coffee,1,18.00", f"b{k},coffee,Coffee,1,18.00"]
        orders.append(f"x{k},big,{day - dt.timedelta(days=3)},500.00")  # no lines
        orders.append(f"y{k},other{k},{day},20.00")
        orders.append(f"z{k},other{k},{day - dt.timedelta(days=40)},25.00")
    (tmp_path / "orders.csv").write_text("\n".join(orders) + "\n")
    (tmp_path / "lines.csv").write_text("\n".join(lines) + "\n")
    with Store(tmp_path / "s.duckdb") as store:
        ingest(store, tmp_path / "orders.csv", as_of=AS_OF.isoformat())
        ingest(store, tmp_path / "lines.csv", format="lines")
        fit_store(store, model="pnbd")
        score_store(store)
        result = candidates(store, retention=0.9, discount=0.0, limit=None)
    rows = {r["customer_id"]: r for r in result["rows"]}
    assert set(rows) == {"half", "big"}
    assert rows["half"]["spend_per_purchase"] == pytest.approx(9.0)
    assert rows["half"]["share_of_spend"] == pytest.approx(1.0)
    assert rows["big"]["spend_per_purchase"] == pytest.approx(18.0)
    assert rows["big"]["share_of_spend"] == pytest.approx(18 / 518)


def test_the_retention_of_a_fitted_plan(scored: Path, tmp_path: Path) -> None:
    """With subscriptions in the store, the offer's retention is the plan's curve."""
    db = tmp_path / "copy.duckdb"
    db.write_bytes(scored.read_bytes())
    rng = np.random.default_rng(2)
    rows = ["subscription_id,customer_id,plan,price,started_at,cancelled_at"]
    for n in range(400):
        start = dt.date(2024, 1, 1) + dt.timedelta(days=int(rng.integers(0, 600)))
        months = int(rng.geometric(0.15))
        end = start + dt.timedelta(days=round(30.44 * months))
        rows.append(f"s{n},x{n},box,20,{start},{end if end <= AS_OF else ''}")
    (tmp_path / "subs.csv").write_text("\n".join(rows) + "\n")
    with Store(db) as store:
        ingest(store, tmp_path / "subs.csv", as_of=AS_OF.isoformat())
        by_plan = candidates(store, limit=3)
        assert "plan box" in by_plan["retention"]
        with pytest.raises(StoreError, match="no retention curve fitted for plan 'tea box'"):
            candidates(store, plan="tea box")
        with pytest.raises(ArgumentError, match="a plan or a retention, not both"):
            candidates(store, plan="box", retention=0.9)
        top = candidates(store, limit=10)
    # the Subscriptions page lists the same ten, most gain first
    warnings.filterwarnings("ignore", message=".*httpx.*starlette.testclient.*")
    from fastapi.testclient import TestClient

    from retain.service import create_app

    with TestClient(create_app(db, None, warm=False), client=("127.0.0.1", 5000)) as client:
        shown = client.get("/subscriptions")
    assert shown.status_code == 200 and 'id="subscription-offers"' in shown.text
    listed = re.findall(r'<tr data-customer="([^"]+)">', shown.text)
    assert listed == [r["customer_id"] for r in top["rows"]]
    assert f"{top['candidates']:,} customers and products bought at a regular rhythm" in shown.text


def test_what_the_answer_needs_is_named(tmp_path: Path, scored: Path) -> None:
    with Store(scored, read_only=True) as store:
        with pytest.raises(StoreError, match="--retention"):
            candidates(store)  # no subscriptions to learn retention from
        with pytest.raises(ArgumentError, match="discount must be a share"):
            candidates(store, retention=0.9, discount=1.0)
        with pytest.raises(ArgumentError, match="retention must be a share"):
            candidates(store, retention=1.5)
    folder = tmp_path / "unscored"
    folder.mkdir()
    with (
        Store(_shop(folder), read_only=True) as store,
        pytest.raises(StoreError, match="no customer scores yet"),
    ):
        candidates(store, retention=0.9)


def test_the_cli_lists_them(scored: Path) -> None:
    out = CliRunner().invoke(
        app,
        ["subscriptions", "candidates", "--db", str(scored), "--retention", "0.9", "--top", "3"],
    )
    assert out.exit_code == 0, out.output
    assert "60 customer and product pairs bought at a regular rhythm" in out.output
    assert "coffee" in out.output and out.output.count(" coffee ") == 3
    bad = CliRunner().invoke(app, ["subscriptions", "candidates", "--db", str(scored)])
    assert bad.exit_code != 0
    assert "--retention" in bad.output


def test_the_api_answers_as_the_function(scored: Path) -> None:
    warnings.filterwarnings("ignore", message=".*httpx.*starlette.testclient.*")
    from fastapi.testclient import TestClient

    from retain.service import create_app

    with Store(scored, read_only=True) as store:
        expected = candidates(store, retention=0.95, limit=4)
    with TestClient(create_app(scored, None, warm=False), client=("127.0.0.1", 5000)) as client:
        served = client.get("/api/subscriptions/candidates?retention=0.95&limit=4")
        missing = client.get("/api/subscriptions/candidates")
        bad = client.get("/api/subscriptions/candidates?retention=2")
    assert served.status_code == 200, served.text
    assert served.json() == expected
    assert missing.status_code >= 400 and "--retention" in missing.text
    assert bad.status_code == 422
