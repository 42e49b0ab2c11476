"""The what-if planner: no change is the base, the base is `retain score`'s, and each
lever moves each model's projection as its future would (checked by simulating the
customers' rates and dropout given their histories)."""

from __future__ import annotations

import json
import re
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


def test_a_raised_dropout_stops_where_the_model_does(scored: Path) -> None:
    """BG/NBD and MBG/NBD: a chance to leave after a purchase past 1 is outside the model.
    At the planner's highest dropout change at most 1% of the active customers (drawn from
    their posterior Beta) pass 1, a little above it more do, and beyond it the projection
    is refused, naming the limit; Pareto/NBD's dropout is a rate and takes the whole range."""
    with Store(scored, read_only=True) as store:
        plan = planner(store)
    highest = plan.highest_dropout_change
    assert plan.limits()["dropout_change"] == [-0.99, highest]
    if plan.model.name == "pnbd":
        assert highest == 10.0
        plan.project(Scenario(dropout_change=10.0), 12)
        return
    assert 0.05 < highest < 1.0
    rng = np.random.default_rng(11)
    params = plan.model.params_

    def outside(change: float) -> float:
        passed = [
            (
                rng.beta(params["a"], params["b"] + x + plan.model._offset, 4000) * (1 + change) > 1
            ).mean()
            for x in plan.x
        ]
        return float(np.dot(passed, plan.buyers) / plan.buyers.sum())

    assert outside(highest) <= 0.0115
    assert outside(highest + 0.1) > 0.0125
    plan.project(Scenario(dropout_change=highest), 12)
    with pytest.raises(ArgumentError, match=rf"at most \+{highest:g} for this store"):
        plan.project(Scenario(dropout_change=highest + 0.01), 12)


def test_levers_and_months_of_numpy_types_and_no_booleans() -> None:
    assert Scenario(dropout_change=np.float64(-0.2)).dropout_change == -0.2
    with pytest.raises(ArgumentError, match="purchase-rate-change must be"):
        Scenario(purchase_rate_change=True)  # type: ignore[arg-type]


def test_the_relative_change_is_of_the_unrounded_totals(scored: Path) -> None:
    with Store(scored, read_only=True) as store:
        answer = whatif(store, Scenario(spend_change=0.001), np.int64(3))  # type: ignore[arg-type]
    assert answer["change"]["revenue_total"]["relative"] == pytest.approx(0.001, abs=1e-9)
    assert answer["change"]["purchases_total"]["relative"] == 0.0


def test_without_a_spend_model_there_is_no_revenue(cdnow_sample_db: Path, tmp_path: Path) -> None:
    """No repeat purchase with positive net revenue: no Gamma-Gamma, so the projection is
    of purchases; revenue and value are None (not 0), and the CLI says so."""
    path = tmp_path / "free.duckdb"
    shutil.copy(cdnow_sample_db, path)
    with Store(path) as store:
        store.con.execute("UPDATE orders SET net_revenue = 0")
        report = fit_store(store, model="pnbd", as_of="1998-06-30")
        assert report.spend_params is None
        score_store(store, as_of="1998-06-30")
    with Store(path, read_only=True) as store:
        answer = whatif(store, Scenario(purchase_rate_change=0.2), 6)
    for side in ("base", "scenario"):
        assert answer[side]["revenue"] is None and answer[side]["revenue_total"] is None
        assert answer[side]["value"] is None
    assert set(answer["change"]) == {"purchases_total", "active_at_end"}
    assert answer["change"]["purchases_total"]["relative"] == pytest.approx(0.2, abs=1e-6)
    text = CliRunner().invoke(app, ["whatif", "--db", str(path), "--months", "2"])
    assert text.exit_code == 0, text.output
    assert "purchases only" in text.output and "revenue" not in text.output


def test_what_the_scores_do_not_hold_is_said(scored: Path, tmp_path: Path) -> None:
    """Orders ingested after the last `retain score` (here a new customer's, on the
    observation day) change the projection's customers but not the scores: the answer
    says so, as it says when orders after the observation day are left out."""
    path = tmp_path / "later.duckdb"
    shutil.copy(scored, path)
    with Store(path, read_only=True) as store:
        before = whatif(store)
    day = before["as_of"]
    late = tmp_path / "late.csv"
    late.write_text(f"order_id,customer_id,ordered_at,net_revenue\nlate-1,newcomer,{day},25\n")
    with Store(path) as store:
        from retain.ingest import ingest

        ingest(store, late, format="orders")
    with Store(path, read_only=True) as store:
        after = whatif(store)
    assert after["customers"] == before["customers"] + 1
    assert any("ingested since the last `retain score`" in note for note in after["notes"])
    assert not any("ingested since" in note for note in before["notes"])
    left_out = [note for note in before["notes"] if "are not in the projection" in note]
    assert bool(left_out) == (day == "1997-09-30")  # the BG/NBD fixture stops early


def test_the_cli_table_keeps_its_columns_apart(scored: Path) -> None:
    text = CliRunner().invoke(
        app, ["whatif", "--db", str(scored), "--months", "2", "--spend-change", "9.5"]
    )
    assert text.exit_code == 0, text.output
    rows = [line for line in text.output.splitlines() if line[:2] in ("19", "re", "pu", "va")]
    table = [line for line in rows if not line.startswith("value:")]
    assert len(table) == 5
    for line in table:
        assert len(line.split("  ")) >= 4 and len([c for c in line.split("  ") if c]) == 4
    assert "spend change +950%" in text.output


def test_the_page_holds_what_it_was_given(scored: Path, tmp_path: Path) -> None:
    """The page keeps every lever and horizon the API accepts (a slider reaches +300%, 60
    months is offered), puts back at rest only the one it cannot read, and the API
    answers a dropout beyond the fit with 422 and the limit."""
    import html
    import warnings

    warnings.filterwarnings("ignore", message=".*httpx.*starlette.testclient.*")
    from fastapi.testclient import TestClient

    from retain.service import create_app

    path = tmp_path / "served.duckdb"
    shutil.copy(scored, path)
    with TestClient(create_app(path, None, warm=False), client=("127.0.0.1", 5000)) as client:
        page = client.get("/whatif?months=60&spend_change=3&dropout_change=abc")
        assert page.status_code == 200
        text = html.unescape(page.text)
        assert "dropout-change must be a relative change from -0.99 to 10" in text
        assert "got 'abc': it is at rest" in text
        assert '<option value="60" selected>' in text
        spend = re.search(r'<input type="range" name="spend_change"[^>]*>', text)
        assert spend and 'value="3.0"' in spend[0] and 'max="3.0"' in spend[0]
        api = client.get("/api/whatif?months=60&spend_change=3").json()
        assert api["scenario"]["revenue_total"] == pytest.approx(
            4 * api["base"]["revenue_total"], abs=0.05
        )
        highest = api["limits"]["dropout_change"][1]
        dropout = re.search(r'<input type="range" name="dropout_change"[^>]*>', text)
        assert dropout and f'max="{min(1.0, highest)}"' in dropout[0]
        if highest < 10:
            beyond = client.get(f"/api/whatif?dropout_change={highest + 0.05:.2f}")
            assert beyond.status_code == 422
            assert f"at most +{highest:g}" in beyond.json()["detail"]
            shown = html.unescape(client.get(f"/whatif?dropout_change={highest + 0.05:.2f}").text)
            assert f"at most +{highest:g} for this store: it is at rest" in shown


def test_a_campaign_adds_its_reach_of_the_lever_and_breaks_even_at_it(scored: Path) -> None:
    """A campaign reaching 30% of the customers with their dropout 20% lower adds 30% of
    what the lever adds for everyone; it pays exactly while a customer reached costs less
    than the lever's value per customer (the break-even)."""
    from retain.whatif import Campaign, campaign

    with Store(scored, read_only=True) as store:
        plan = planner(store)
    everyone = plan._totals(Scenario(dropout_change=-0.2), 12)[2] - plan._totals(Scenario(), 12)[2]
    offer = campaign(plan, Campaign(reach=0.3, cost_per_customer=0.5, dropout_change=-0.2))
    assert offer["value_added"] == pytest.approx(0.3 * everyone, abs=0.006)
    assert offer["customers_reached"] == pytest.approx(0.3 * 2357)
    assert offer["cost"] == pytest.approx(0.3 * 2357 * 0.5, abs=0.006)
    assert offer["net"] == pytest.approx(offer["value_added"] - offer["cost"], abs=0.011)
    even = offer["break_even_cost_per_customer"]
    assert even == pytest.approx(everyone / 2357, abs=5e-5) and even > 0
    above = campaign(plan, Campaign(0.3, even * 1.01, -0.2))
    below = campaign(plan, Campaign(0.3, even * 0.99, -0.2))
    assert not above["pays"] and above["net"] < 0
    assert below["pays"] and below["net"] > 0
    # a campaign that raises dropout loses value at any cost
    harm = campaign(plan, Campaign(0.5, 0.0, 0.1))
    assert harm["value_added"] < 0 and not harm["pays"] and harm["return_on_cost"] is None
    with pytest.raises(ArgumentError, match="reach must be a share"):
        Campaign(0.0, 1.0, -0.1)
    with pytest.raises(ArgumentError, match="cost per customer must be from 0 to 1,000,000,000"):
        Campaign(0.5, -1.0, -0.1)


def test_the_cli_and_api_price_a_campaign(cdnow_sample_db: Path, tmp_path: Path) -> None:
    import warnings

    warnings.filterwarnings("ignore", message=".*httpx.*starlette.testclient.*")
    from fastapi.testclient import TestClient

    from retain.service import create_app

    db = _scored(cdnow_sample_db, tmp_path / "s.duckdb", "pnbd", "D")
    runner = CliRunner()
    args = ["whatif", "--db", str(db), "--campaign-reach", "0.5", "--campaign-cost", "0.2"]
    missing = runner.invoke(app, args)
    assert missing.exit_code != 0 and "missing --campaign-dropout-change" in missing.output
    done = runner.invoke(app, [*args, "--campaign-dropout-change", "-0.1", "--json"])
    assert done.exit_code == 0, done.output
    offer = json.loads(done.output)["campaign"]
    text = runner.invoke(app, [*args, "--campaign-dropout-change", "-0.1"])
    assert "campaign: reaching 50%" in text.output and "break-even at" in text.output
    with TestClient(create_app(db, None, warm=False), client=("127.0.0.1", 5000)) as client:
        served = client.get(
            "/api/whatif?campaign_reach=0.5&campaign_cost=0.2&campaign_dropout_change=-0.1"
        )
        partial = client.get("/api/whatif?campaign_reach=0.5")
    assert served.status_code == 200 and served.json()["campaign"] == offer
    assert partial.status_code == 422 and "campaign_dropout_change" in partial.text


def test_the_active_customers_are_each_ones_chance_to_be_active(scored: Path) -> None:
    """Now, the sum of the scores' P(alive); later, each one's chance to be still active
    given their history (checked by hand for Pareto/NBD, whose closed form is
    ((beta+T)/(beta+T+t))^s, the lever's d running its clock d times as fast); falling
    month by month, and higher with a lower dropout."""
    with Store(scored, read_only=True) as store:
        plan = planner(store)
        answer = whatif(store, Scenario(dropout_change=-0.3), 24)
        alive = store.con.execute("SELECT sum(p_alive) FROM customer_scores").fetchall()[0][0]
    base, moved = answer["base"], answer["scenario"]
    assert base["active_now"] == pytest.approx(alive, abs=0.01)
    assert len(base["active"]) == 24
    assert np.all(np.diff(base["active"]) <= 0) and base["active"][0] <= base["active_now"]
    assert all(m >= b for m, b in zip(moved["active"], base["active"], strict=True))
    assert moved["active"][-1] > base["active"][-1]
    end = answer["change"]["active_at_end"]
    assert end["amount"] == pytest.approx(moved["active"][-1] - base["active"][-1], abs=0.011)
    if plan.model.name == "pnbd":
        s_, beta = plan.model.params_["s"], plan.model.params_["beta"]
        t = 24 * 365.25 / 12 / plan.model._unit_days
        by_hand = plan.buyers @ ((beta + plan.T) / (beta + plan.T + t)) ** s_
        assert base["active"][-1] == pytest.approx(by_hand, abs=0.006)
        faster = plan.buyers @ ((beta + plan.T) / (beta + plan.T + 0.7 * t)) ** s_
        assert moved["active"][-1] == pytest.approx(faster, abs=0.006)


def test_a_campaign_counts_the_customers_it_keeps(scored: Path) -> None:
    from retain.whatif import Campaign, campaign

    with Store(scored, read_only=True) as store:
        plan = planner(store)
    offer = campaign(plan, Campaign(reach=0.4, cost_per_customer=0.1, dropout_change=-0.25), 12)
    base = plan.project(Scenario(), 12)["active"][-1]
    moved = plan.project(Scenario(dropout_change=-0.25), 12)["active"][-1]
    assert offer["customers_retained"] == pytest.approx(0.4 * (moved - base), abs=0.02)
    assert offer["customers_retained"] > 0
    assert offer["value_per_retained_customer"] == pytest.approx(
        offer["value_added"] / offer["customers_retained"], rel=1e-3
    )


@pytest.mark.parametrize("model_name", ["bgnbd", "mbgnbd"])
@pytest.mark.parametrize("r", [0.6, 4.0])  # a + b - r above 0 (summed per x) and below
def test_still_alive_is_the_chance_no_later_purchase_ends_it(model_name: str, r: float) -> None:
    """BG/NBD and MBG/NBD: alive now, the chance to be still active t later is
    E[exp(-lambda p t)] over the posterior of the rate and of p: by simulation."""
    from retain.models import transaction_model

    model = transaction_model(model_name)
    model.params_ = {"r": r, "alpha": 8.0, "a": 0.7, "b": 2.5}
    offset = 1 if model_name == "mbgnbd" else 0
    rng = np.random.default_rng(4)
    cases = [(0, 30.0, 10.0), (3, 40.0, 52.0), (20, 60.0, 200.0), (1, 5.0, 500.0)]
    got = model._still_alive(*(np.array(c) for c in zip(*cases, strict=True)))
    for (x, T, t), value in zip(cases, got, strict=True):
        lam = rng.gamma(r + x, 1 / (8.0 + T), 400_000)
        p = rng.beta(0.7, 2.5 + x + offset, 400_000)
        assert value == pytest.approx(np.mean(np.exp(-lam * p * t)), abs=3e-3), (x, T, t)


def test_the_active_curve_is_read_between_exact_points(scored: Path) -> None:
    """The active customers come from a curve of time computed at points and read between
    them: at any time within 1e-5 of the exact sum over the groups."""
    with Store(scored, read_only=True) as store:
        plan = planner(store)
    times = np.array([0.37, 3.1, 29.9, 180.0, 1234.5, 9000.0]) / plan.model._unit_days
    exact = plan.buyers @ plan.model._still_alive(plan.x[:, None], plan.T[:, None], times)
    np.testing.assert_allclose(plan._active(times), exact, rtol=1e-5)


def test_intervals_from_the_parameters_uncertainty(scored: Path) -> None:
    """Drawn from the fit's covariance, the intervals hold the projection, are wider for
    longer horizons, give the same numbers for the same seed, and a lower dropout's change
    is above 0 throughout."""
    from retain.whatif import intervals

    with Store(scored, read_only=True) as store:
        lever = Scenario(dropout_change=-0.2)
        answer = whatif(store, lever, 12)
        sure = intervals(store, lever, 12, draws=60)
        again = intervals(store, lever, 12, draws=60)
        longer = intervals(store, lever, 36, draws=60)
        other = intervals(store, Scenario(purchase_rate_change=0.5), 12, draws=60)
        with pytest.raises(ArgumentError, match="draws for intervals must be a whole number"):
            intervals(store, lever, 12, draws=3)
    assert sure == again and sure["used"] == 60 and sure["level"] == 0.9
    assert other["base"] == sure["base"]  # as it stands, whatever the scenario
    for side in ("base", "scenario"):
        for key in ("value", "revenue_total", "purchases_total"):
            low, high = sure[side][key]
            assert low < answer[side][key] < high, (side, key)
        low, high = sure[side]["active_at_end"]
        assert low < answer[side]["active"][-1] < high
    low, high = sure["change"]["value"]
    assert 0 < low < answer["change"]["value"]["amount"] < high
    width = sure["base"]["value"][1] - sure["base"]["value"][0]
    assert longer["base"]["value"][1] - longer["base"]["value"][0] > width


def test_the_cli_and_api_give_intervals(cdnow_sample_db: Path, tmp_path: Path) -> None:
    import warnings

    warnings.filterwarnings("ignore", message=".*httpx.*starlette.testclient.*")
    from fastapi.testclient import TestClient

    from retain.service import create_app

    db = _scored(cdnow_sample_db, tmp_path / "s.duckdb", "pnbd", "D")
    args = ["whatif", "--db", str(db), "--spend-change", "0.1", "--intervals", "20"]
    done = CliRunner().invoke(app, [*args, "--json"])
    assert done.exit_code == 0, done.output
    sure = json.loads(done.output)["intervals"]
    text = CliRunner().invoke(app, args)
    assert (
        "90% interval of value:" in text.output
        and "from 20 of 20 draws of the fitted parameters and" in text.output
    )
    with TestClient(create_app(db, None, warm=False), client=("127.0.0.1", 5000)) as client:
        served = client.get("/api/whatif?spend_change=0.1&draws=20")
        few = client.get("/api/whatif?draws=5")
    assert served.status_code == 200 and served.json()["intervals"] == sure
    assert few.status_code == 422 and "draws for intervals must be a whole number" in few.text


@pytest.mark.parametrize(
    "lever",
    [
        Scenario(),
        Scenario(purchase_rate_change=0.3),
        Scenario(dropout_change=-0.4, spend_change=0.1),
    ],
)
def test_the_simulated_customers_average_to_the_projection(scored: Path, lever: Scenario) -> None:
    """The customers simulated for their own chance (alive now, rates and dropout from
    their posterior, the levers applied to each) average to the planner's closed forms."""
    from retain.whatif import PROCESS_RUNS, _customers, _process_spread

    with Store(scored, read_only=True) as store:
        known = _customers(store)
        plan = planner(store)
    means, spread = _process_spread(known, lever, 12, np.random.default_rng(1))
    answer = plan.project(lever, 12)
    tolerance = 4 / np.sqrt(PROCESS_RUNS)  # standard errors of the simulated mean
    for key, expected in (
        ("purchases_total", answer["purchases_total"]),
        ("revenue_total", answer["revenue_total"]),
        ("active_at_end", answer["active"][-1]),
    ):
        assert abs(means[key] - expected) < tolerance * spread[key] + 1e-6 * expected, key
        assert spread[key] > 0


def test_the_affordable_acquisition_cost_by_channel(cdnow_sample_db: Path, tmp_path: Path) -> None:
    """With marketing spend, each channel's largest affordable CAC is what its customers
    have been worth in margin over their first months, as many as the projection's (the
    acquisition page's CLV with that horizon), set beside its CAC; under a scenario, that
    worth times the scenario's change of value."""
    from retain.ingest import ingest
    from retain.metrics import clv_cac

    db = _scored(cdnow_sample_db, tmp_path / "s.duckdb", "pnbd", "D")
    spend = tmp_path / "spend.csv"
    spend.write_text(
        "date,channel,amount\n"
        + "".join(f"1997-0{m}-01,search,{300 * m}\n1997-0{m}-01,social,200\n" for m in (1, 2, 3))
    )
    with Store(db) as store:
        store.con.execute(
            "UPDATE orders SET channel = CASE WHEN hash(customer_id) % 2 = 0 THEN 'search' "
            "ELSE 'social' END"
        )
        ingest(store, spend, format="spend")
    with Store(db, read_only=True) as store:
        answer = whatif(store, Scenario(dropout_change=-0.3), 12)
        table = clv_cac(store, margin=0.4, horizon_months=12, as_of="1998-06-30")
    found = {c["channel"]: c for c in answer["acquisition"]["channels"]}
    assert {"search", "social"} <= set(found)
    change = answer["change"]["value"]["relative"]
    for row in table.to_dict(orient="records"):
        mine = found[row["channel"]]
        assert mine["largest_affordable_cac"] == pytest.approx(row["clv"], abs=0.006)
        assert mine["cac"] == pytest.approx(row["cac"], abs=0.006)
        assert mine["headroom"] == pytest.approx(row["clv"] - row["cac"], abs=0.011)
        assert mine["largest_affordable_cac_in_scenario"] == pytest.approx(
            row["clv"] * (1 + change), abs=0.006
        )
    text = CliRunner().invoke(app, ["whatif", "--db", str(db), "--dropout-change", "-0.3"])
    assert "largest affordable CAC" in text.output and "search" in text.output


def test_converting_subscription_candidates(tmp_path: Path) -> None:
    """A share of the subscription candidates subscribing: the share of every candidate's
    gain when offered to all, of the positive gains when offered to those who gain."""
    import test_subscription_candidates as shop
    from retain.subscriptions import candidates

    db = shop._shop(tmp_path)
    with Store(db) as store:
        fit_store(store, model="mbgnbd")
        score_store(store)
    with Store(db, read_only=True) as store:
        found = candidates(store, retention=0.96, limit=None)
        answer = whatif(store, months=6, subscription_share=0.25, subscription_retention=0.96)
    converted = answer["subscriptions"]
    gains = np.array([r["gain"] for r in found["rows"]])
    assert converted["candidates"] == found["candidates"] == 60
    assert converted["added_if_offered_to_all"] == pytest.approx(0.25 * gains.sum(), abs=0.006)
    assert converted["added_if_offered_to_those_who_gain"] == pytest.approx(
        0.25 * gains[gains > 0].sum(), abs=0.006
    )
    assert converted["months"] == 12  # the candidates' horizon, whatever the projection's
    text = CliRunner().invoke(
        app,
        [
            "whatif",
            "--db",
            str(db),
            "--subscription-share",
            "0.25",
            "--subscription-retention",
            "0.96",
        ],
    )
    assert text.exit_code == 0 and "if 25% of the 60 candidates subscribe" in text.output
    with (
        pytest.raises(ArgumentError, match="subscription share must be above 0"),
        Store(db, read_only=True) as store,
    ):
        whatif(store, subscription_share=0.0, subscription_retention=0.9)


def test_a_dropout_change_moves_expected_lifetime_as_the_closed_form_says() -> None:
    """Pareto/NBD with s > 1: an active customer's expected remaining lifetime is
    (beta + T) / (s - 1); a dropout d times as high divides it by d. The planner's
    active customers, integrated over time, give both."""
    import datetime as dt

    from retain.models import ParetoNBD
    from retain.whatif import DAYS_PER_MONTH, Planner

    model = ParetoNBD()
    model.params_ = {"r": 0.8, "alpha": 15.0, "s": 2.5, "beta": 10.0}
    model.unit_ = "D"
    x, T = np.array([0.0, 2.0, 5.0]), np.array([30.0, 90.0, 200.0])
    buyers = np.array([40.0, 25.0, 10.0])  # the summed chance to be active of each group
    plan = Planner(
        model=model, fit_id=1, as_of=dt.date(2025, 1, 1), margin=1.0, discount_rate=0.1,
        customers=100, x=x, T=T, buyers=buyers, spenders=np.zeros(3), has_spend=False,
    )  # fmt: skip
    closed = float(buyers @ ((10.0 + T) / 1.5)) / buyers.sum()
    grid = np.geomspace(1e-3, 1e6, 4000)
    for d in (1.0, 0.8, 1.5):
        active = plan._active(d * grid)
        lifetime = float(np.trapezoid(active, grid)) / buyers.sum()
        assert lifetime == pytest.approx(closed / d, rel=2e-3), d
        # the projection's own active customers at month ends are this curve's
        ends = np.arange(1, 13) * DAYS_PER_MONTH
        projected = plan._totals(Scenario(dropout_change=d - 1.0), 12)[3]
        np.testing.assert_allclose(projected, plan._active(d * ends), rtol=1e-12)


@pytest.mark.parametrize(
    "params",
    [
        {"r": 0.24, "alpha": 4.4, "a": 0.79, "b": 2.4},  # a + b - r >= 0: the series by x
        {"r": 5.6, "alpha": 4.4, "a": 0.79, "b": 2.4},  # below: by quadrature over p
        {"r": 1.2, "alpha": 30.0, "a": 0.2, "b": 0.6},
    ],
)
def test_still_alive_is_the_hypergeometric_function(params: dict) -> None:
    """BG/NBD's chance to be still active is 2F1(r+x, a; a+b+x; -t/(alpha+T)), to 1e-7
    against mpmath, out to ten years of days and a customer of 100 purchases."""
    import mpmath

    from retain.models import BetaGeo

    model = BetaGeo()
    model.params_ = params
    cases = [(100, 1, 3650), (0, 30, 10), (3, 40, 52), (20, 60, 200), (1, 5, 500), (50, 100, 1000)]
    x, T, t = (np.array(c, dtype=float) for c in zip(*cases, strict=True))
    got = model._still_alive(x, T, t)
    for i, (xi, Ti, ti) in enumerate(cases):
        u = ti / (params["alpha"] + Ti)
        exact = float(
            mpmath.hyp2f1(params["r"] + xi, params["a"], params["a"] + params["b"] + xi, -u)
        )
        assert got[i] == pytest.approx(exact, rel=1e-7), cases[i]


def test_a_campaign_beyond_the_fit_is_left_out_of_the_page(
    cdnow_sample_db: Path, tmp_path: Path
) -> None:
    """BG/NBD says nothing of a dropout much higher than the fit's: a campaign raising it
    that far is left out, with the reason, and the levers' projection still shown."""
    import warnings

    warnings.filterwarnings("ignore", message=".*httpx.*starlette.testclient.*")
    from fastapi.testclient import TestClient

    from retain.service import create_app

    db = _scored(cdnow_sample_db, tmp_path / "s.duckdb", "bgnbd", "D", "1997-09-30")
    with Store(db, read_only=True) as store:
        highest = planner(store).highest_dropout_change
    too_far = round(highest + 0.5, 2)
    with TestClient(create_app(db, None, warm=False), client=("127.0.0.1", 5000)) as client:
        shown = client.get(
            f"/whatif?dropout_change=0.05&campaign_reach=0.3&campaign_cost=0.5"
            f"&campaign_dropout_change={too_far}"
        )
    assert shown.status_code == 200
    assert "the campaign is left out" in shown.text
    assert 'id="whatif-totals"' in shown.text and "it is at rest" not in shown.text
    assert f'max="{highest}"' in shown.text  # the campaign's input stops where the fit does


def test_a_fit_without_standard_errors_keeps_its_projection(
    cdnow_sample_db: Path, tmp_path: Path
) -> None:
    """Intervals asked of a fit whose curvature could not be inverted: the projection is
    answered as ever, and the intervals say why there are none (CLI and API alike)."""
    import warnings

    warnings.filterwarnings("ignore", message=".*httpx.*starlette.testclient.*")
    from fastapi.testclient import TestClient

    from retain.service import create_app

    db = _scored(cdnow_sample_db, tmp_path / "s.duckdb", "pnbd", "D")
    with Store(db) as store:  # the kept fit as one without standard errors is stored
        store.con.execute(
            "UPDATE model_fits SET params = json_merge_patch(params, '{\"covariance_log\": null}')"
        )
    with Store(db, read_only=True) as store:
        answer = whatif(store, Scenario(dropout_change=-0.2), 12, draws=20)
    assert answer["scenario"]["value"] > answer["base"]["value"]
    assert answer["intervals"] == {
        "problem": "no interval: the pnbd fit has no standard errors (its curvature could not "
        "be inverted)"
    }
    text = CliRunner().invoke(app, ["whatif", "--db", str(db), "--intervals", "20"])
    assert text.exit_code == 0 and "no interval: the pnbd fit has no standard errors" in text.output
    with TestClient(create_app(db, None, warm=False), client=("127.0.0.1", 5000)) as client:
        served = client.get("/api/whatif?draws=20")
    assert served.status_code == 200 and "problem" in served.json()["intervals"]
