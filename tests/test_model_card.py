"""The model card of a fit: what it was fitted on, the candidates, the choice, the
guard, the warnings and the latest backtest (retain.scoring.model_card, retain fit)."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from retain.cli import app
from retain.datasets import load_cdnow
from retain.errors import StoreError
from retain.scoring import FitRefused, fit_store, model_card
from retain.store import Store

runner = CliRunner()


@pytest.fixture(scope="module")
def fitted_db(cdnow_sample_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CDNOW sample with one `retain fit` (auto: the three models compared)."""
    path = tmp_path_factory.mktemp("card") / "fitted.duckdb"
    shutil.copy(cdnow_sample_db, path)
    with Store(path) as store:
        fit_store(store)
    return path


def copy_of(db: Path, folder: Path) -> Path:
    path = folder / "copy.duckdb"
    shutil.copy(db, path)
    return path


def by_hand() -> dict[str, object]:
    """The CDNOW sample's data range counted with pandas from the shipped file."""
    orders = load_cdnow(sample=True)
    days = orders.assign(day=pd.to_datetime(orders["ordered_at"]).dt.normalize())
    per_customer = days.groupby("customer_id")["day"].nunique()
    return {
        "first_order_day": days["day"].min().date().isoformat(),
        "last_order_day": days["day"].max().date().isoformat(),
        "customers": int(per_customer.size),
        "orders": len(orders),
        "repeat_buyers": int((per_customer > 1).sum()),
    }


def test_the_card_holds_the_data_the_holdout_the_candidates_and_the_choice(fitted_db: Path):
    with Store(fitted_db, read_only=True) as store:
        card = model_card(store)
        row = store.query("SELECT model, choice, guard, candidates FROM model_fits").iloc[0]
    expected = by_hand()
    assert expected["customers"] == 2357 and expected["orders"] == 6919
    assert {k: card["data"][k] for k in expected} == expected
    assert card["data"]["observation_end"] == "1998-06-30" and card["data"]["recorded"]
    # a quarter of the 545 days of history, in whole weeks: 19 weeks before 1998-06-30
    assert card["holdout"] == {
        "calibration_end": (dt.date(1998, 6, 30) - dt.timedelta(weeks=19)).isoformat(),
        "holdout_end": "1998-06-30",
        "weeks": 19,
    }
    stored = json.loads(row["candidates"])
    assert [c["model"] for c in card["candidates"]] == [c["model"] for c in stored]
    assert sorted(c["model"] for c in card["candidates"]) == ["bgnbd", "mbgnbd", "pnbd"]
    for shown, kept in zip(card["candidates"], stored, strict=True):
        assert shown["log_likelihood_mean"] == kept["holdout_log_likelihood_mean"]
        assert shown["bias_pct"] == pytest.approx(
            100 * (kept["predicted"] - kept["actual"]) / kept["actual"]
        )
        assert 0.5 < shown["auc"] <= 1 and shown["log_loss"] > 0  # recorded by this fit
    assert card["model"] == row["model"] == card["candidates"][0]["model"]
    assert card["choice"] == json.loads(row["choice"])
    assert card["reason"] == card["choice"]["reason"] and card["model"] in card["reason"]
    assert card["guard"] == json.loads(row["guard"]) and card["kept"]
    assert card["warnings"] == []
    assert card["backtest"] is None and card["notes"] == []


def test_a_fit_made_before_cards_is_read_from_the_orders(fitted_db: Path, tmp_path: Path):
    path = copy_of(fitted_db, tmp_path)
    with Store(path) as store:
        new = model_card(store)
        store.con.execute("ALTER TABLE model_fits DROP COLUMN data_range")
        store.con.execute("ALTER TABLE model_fits DROP COLUMN warnings")
        old = model_card(store)
        # the next fit adds the columns back and fills them, refused by the guard or not
        with pytest.raises(FitRefused):
            fit_store(store, model="bgnbd")  # calls every one-time buyer alive
        refused = model_card(store)
        fit_store(store, model="pnbd")
        third = model_card(store)
        first_again = model_card(store, 1)
    assert old["data"] == {**new["data"], "recorded": False}
    assert old["warnings"] is None and "before model cards" in old["notes"][0]
    assert refused["fit_id"] == 2 and not refused["kept"] and refused["model"] == "bgnbd"
    assert [c["passed"] for c in refused["guard"][0]["checks"]].count(False) == 1
    assert third["fit_id"] == 3 and third["kept"] and third["data"] == new["data"]
    assert third["holdout"] is None and third["candidates"] == []  # a named model
    assert third["reason"] is None
    assert first_again["fit_id"] == 1 and not first_again["data"]["recorded"]


def summary_row(model: str, horizon: int, log_loss: float, origins: int = 2) -> dict:
    return {
        "model": model,
        "horizon_days": horizon,
        "origins": origins,
        "auc": 0.8,
        "log_loss": log_loss,
        "brier": 0.1,
        "ece": 0.02,
        "bias_pct": 1.0,
        "gini": 0.5,
    }


def put_backtest(store: Store, run: dict) -> None:
    from retain.schema import BACKTESTS

    store.con.execute(BACKTESTS.ddl())
    store.con.execute(
        "INSERT INTO backtests VALUES ((SELECT coalesce(max(backtest_id), 0) + 1 FROM "
        "backtests), now()::TIMESTAMP, ?, ?)",
        [run["as_of"], json.dumps(run)],
    )


def test_the_card_shows_the_latest_backtest_for_its_models(fitted_db: Path, tmp_path: Path):
    path = copy_of(fitted_db, tmp_path)
    summary = [
        summary_row("bgnbd", 30, 0.36),
        summary_row("pnbd", 30, 0.35),
        summary_row("learned", 30, 0.30),
        summary_row("bgnbd", 90, 0.50),
        summary_row("learned", 90, 0.55),
        summary_row("other", 90, 0.10),  # not a model of this fit: left out
    ]
    run = {
        "as_of": "1998-05-31",
        "unit": "W",
        "grain": "D",
        "horizons": [30, 90],
        "origins": ["1997-12-31", "1998-01-31"],
        "results": [],
        "summary": summary,
        "best": [{"horizon_days": 30, "model": "learned", "by": "log_loss"}],
    }
    with Store(path) as store:
        put_backtest(store, {**run, "as_of": "1998-01-31"})  # an older run, not shown
        put_backtest(store, run)
        card = model_card(store)
    shown = card["backtest"]
    assert shown["backtest_id"] == 2 and shown["as_of"] == "1998-05-31"
    assert [(r["model"], r["horizon_days"]) for r in shown["summary"]] == [
        ("bgnbd", 30),
        ("pnbd", 30),
        ("learned", 30),
        ("bgnbd", 90),
        ("learned", 90),
    ]
    assert shown["best"] == run["best"]
    # the learned model against the best repeat-purchase model scored at every origin
    assert shown["learned"] == [
        {
            "horizon_days": 30,
            "log_loss": 0.30,
            "best_btyd": "pnbd",
            "best_btyd_log_loss": 0.35,
            "better": True,
        },
        {
            "horizon_days": 90,
            "log_loss": 0.55,
            "best_btyd": "other",
            "best_btyd_log_loss": 0.10,
            "better": False,
        },
    ]
    assert any("1998-05-31" in n and "1998-06-30" in n for n in card["notes"])


def test_no_fit_is_a_clear_error(store: Store):
    with pytest.raises(StoreError, match="run `retain fit` first"):
        model_card(store)


def test_retain_fit_prints_the_card_and_its_json_holds_it(cdnow_sample_db: Path, tmp_path: Path):
    path = copy_of(cdnow_sample_db, tmp_path)
    result = runner.invoke(app, ["fit", "--db", str(path)])
    assert result.exit_code == 0, result.output
    text = result.output
    assert (
        "data: orders 1997-01-01 to 1998-06-30 (observation end 1998-06-30): 2,357 customers, "
        "6,919 orders, 1,139 repeat buyers" in text
    )
    assert "holdout: the last 19 weeks (calibration to 1998-02-17)" in text
    assert "auc" in text and "log_loss" in text and "chosen: " in text
    assert "backtest: none yet (retain backtest --db" in text
    result = runner.invoke(app, ["fit", "--db", str(path), "--model", "pnbd", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["card"]["fit_id"] == doc["fit_id"] == 2
    assert doc["card"]["data"]["repeat_buyers"] == 1139 and doc["card"]["model"] == "pnbd"


def test_a_refused_fit_prints_its_card_and_a_backtest_its_summary(fitted_db: Path, tmp_path: Path):
    path = copy_of(fitted_db, tmp_path)
    refused = runner.invoke(app, ["fit", "--db", str(path), "--model", "bgnbd", "--json"])
    assert refused.exit_code == 2
    doc = json.loads(refused.stdout)
    assert doc["kept"] is False and doc["card"]["fit_id"] == 2 and not doc["card"]["kept"]
    assert doc["card"]["data"]["orders"] == 6919
    run = {
        "as_of": "1998-06-30",
        "horizons": [30],
        "origins": ["1998-03-31"],
        "results": [],
        "summary": [summary_row("pnbd", 30, 0.35, 1), summary_row("learned", 30, 0.37, 1)],
        "best": [{"horizon_days": 30, "model": "pnbd", "by": "log_loss"}],
    }
    with Store(path) as store:
        put_backtest(store, run)
    result = runner.invoke(app, ["fit", "--db", str(path), "--model", "pnbd"])
    assert result.exit_code == 0, result.output
    text = result.output
    assert "backtest 1 (orders to 1998-06-30; 1 origins), means over origins" in text
    assert "best by log-loss: 30d pnbd" in text
    assert "learned model at 30 days: log-loss 0.3700 against 0.3500 for pnbd (not better)" in text
