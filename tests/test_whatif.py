"""The what-if planner: no change is the base, the base is `retain score`'s, and each
lever moves each model's projection as its future would (checked by simulating the
customers' rates and dropout given their histories)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from retain.cli import app
from retain.errors import ArgumentError
from retain.scoring import fit_store, score_store
from retain.store import Store
from retain.whatif import Scenario, planner, whatif


def _scored(source: Path, path: Path, model: str, unit: str, as_of: str = "1998-06-30") -> Path:
    """``source`` copied, fitted and scored as of ``as_of``."""
    shutil.copy(source, path)
    with Store(path) as store:
        fit_store(store, model=model, unit=unit, as_of=as_of)
        score_store(store, margin=0.4, discount_rate=0.12, as_of=as_of)
    return path


# BG/NBD calls every one-time buyer active, which the fit guard refuses after a year of
# their silence: it is fitted before one
@pytest.fixture(
    scope="module",
    params=[
        ("bgnbd", "D", "1997-09-30"),
        ("mbgnbd", "W", "1998-06-30"),
        ("pnbd", "D", "1998-06-30"),
    ],
)
def scored(
    request: pytest.FixtureRequest, cdnow_sample_db: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    model, unit, as_of = request.param
    path = tmp_path_factory.mktemp(model) / "s.duckdb"
    return _scored(cdnow_sample_db, path, model, unit, as_of)


def test_no_change_is_the_base_and_the_base_is_the_scores(scored: Path) -> None:
    """With no lever moved the scenario is the base; the base's value over 12 months is
    the sum of the customers' 12-month CLV (same margin and discount rate)."""
    with Store(scored, read_only=True) as store:
        answer = whatif(store, months=12)
        clv, customers = store.con.execute(
            "SELECT sum(clv_12m), count(*) FROM customer_scores"
        ).fetchall()[0]
    assert answer["scenario"] == answer["base"]
    assert answer["customers"] == customers == 2357
    assert answer["base"]["value"] == pytest.approx(clv, abs=0.006)
    assert answer["margin"] == 0.4 and answer["discount_rate"] == 0.12
    assert len(answer["base"]["revenue"]) == 12
    first = {"1998-06-30": "1998-07-31", "1997-09-30": "1997-10-31"}[answer["as_of"]]
    assert answer["base"]["month_ends"][0] == first
    assert answer["change"]["revenue_total"] == {"amount": 0.0, "relative": 0.0}


def _simulated_purchases(plan, scenario: Scenario, months: int, draws: int = 4000) -> float:
    """Expected purchases over ``months`` by drawing each group's rates and dropout
    given its history and given it is active (the model's posterior), the levers
    applied to what is drawn; weighted by the groups' chances to be active."""
    rng = np.random.default_rng(5)
    model = plan.model
    params = model.params_
    t = months * (365.25 / 12) / model._unit_days
    c = 1 + scenario.purchase_rate_change
    d = 1 + scenario.dropout_change
    total = 0.0
    for x, T, weight in zip(plan.x, plan.T, plan.buyers, strict=True):
        lam = rng.gamma(params["r"] + x, 1 / (params["alpha"] + T), draws)
        if model.name == "pnbd":
            mu = rng.gamma(params["s"], 1 / (params["beta"] + T), draws)
            each = c * lam * -np.expm1(-d * mu * t) / (d * mu)
        else:
            p = rng.beta(params["a"], params["b"] + x + model._offset, draws)
            each = -np.expm1(-c * lam * d * p * t) / (d * p)
        total += weight * each.mean()
    return total


@pytest.mark.parametrize(
    "levers",
    [
        {"purchase_rate_change": 0.25},
        {"dropout_change": -0.3},
        {"dropout_change": 0.2, "purchase_rate_change": -0.1},
    ],
)
def test_the_levers_move_each_model_as_its_customers_would(scored: Path, levers: dict) -> None:
    scenario = Scenario(**levers)
    with Store(scored, read_only=True) as store:
        plan = planner(store)
    projected = plan.project(scenario, 24)["purchases_total"]
    simulated = _simulated_purchases(plan, scenario, 24)
    base = plan.project(Scenario(), 24)["purchases_total"]
    assert projected == pytest.approx(simulated, rel=0.01)
    assert abs(projected - base) > 0.03 * base  # the lever moved it: the check can fail


def test_spend_and_value_follow_the_levers(scored: Path) -> None:
    """+10% spend per order is +10% revenue and value, the purchases unchanged; a lower
    dropout raises every later month's revenue more than the first's."""
    with Store(scored, read_only=True) as store:
        plan = planner(store)
    base = plan.project(Scenario(), 36)
    richer = plan.project(Scenario(spend_change=0.1), 36)
    loyal = plan.project(Scenario(dropout_change=-0.5), 36)
    assert richer["purchases"] == base["purchases"]
    assert richer["revenue_total"] == pytest.approx(1.1 * base["revenue_total"], abs=0.05)
    assert richer["value"] == pytest.approx(1.1 * base["value"], abs=0.05)
    gain = np.array(loyal["revenue"]) / np.array(base["revenue"])
    assert gain[-1] > gain[0] > 1.0


@pytest.mark.parametrize(
    "levers, words",
    [
        ({"dropout_change": -1.0}, "dropout-change must be a relative change from -0.99"),
        ({"spend_change": 11}, "spend-change must be"),
        ({"purchase_rate_change": float("nan")}, "purchase-rate-change must be"),
    ],
)
def test_a_lever_out_of_range_is_refused(levers: dict, words: str) -> None:
    with pytest.raises(ArgumentError, match=words):
        Scenario(**levers)


def test_the_cli_answers_base_and_scenario(cdnow_sample_db: Path, tmp_path: Path) -> None:
    db = _scored(cdnow_sample_db, tmp_path / "s.duckdb", "pnbd", "D")
    runner = CliRunner()
    same = runner.invoke(app, ["whatif", "--db", str(db), "--months", "6", "--json"])
    assert same.exit_code == 0, same.output
    plain = json.loads(same.output)
    assert plain["scenario"]["revenue"] == plain["base"]["revenue"]
    assert len(plain["base"]["revenue"]) == 6
    moved = runner.invoke(
        app,
        [
            "whatif",
            "--db",
            str(db),
            "--months",
            "6",
            "--dropout-change",
            "-0.2",
            "--spend-change",
            "0.05",
            "--json",
        ],
    )
    answer = json.loads(moved.output)
    assert answer["scenario"]["revenue_total"] > answer["base"]["revenue_total"]
    assert answer["levers"] == {
        "dropout_change": -0.2,
        "purchase_rate_change": 0.0,
        "spend_change": 0.05,
    }
    text = runner.invoke(app, ["whatif", "--db", str(db), "--purchase-rate-change", "0.1"])
    assert text.exit_code == 0 and "revenue" in text.output and "+10" in text.output
    bad = runner.invoke(app, ["whatif", "--db", str(db), "--months", "0"])
    assert bad.exit_code != 0 and "months must be a whole number from 1 to 120" in bad.output
    unscored = tmp_path / "u.duckdb"
    shutil.copy(cdnow_sample_db, unscored)
    none = runner.invoke(app, ["whatif", "--db", str(unscored)])
    assert none.exit_code != 0 and "retain score" in none.output
