"""The drift alert of the latest backtest and the Model health page (its JSON twin
/api/model-health), on small simulated stores backtested for real: one whose buying
doubles in its last quarter, one whose buying stays as it was."""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import markupsafe
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

warnings.filterwarnings("ignore", message=".*httpx.*starlette.testclient.*")

from fastapi.testclient import TestClient  # noqa: E402

from retain.backtest import backtest, latest_backtest  # noqa: E402
from retain.cli import app  # noqa: E402
from retain.metrics import alerts  # noqa: E402
from retain.metrics.alerts import drift_alerts, model_in_use, models_in_use  # noqa: E402
from retain.service import create_app  # noqa: E402
from retain.service.charts import model_health_charts  # noqa: E402
from retain.store import Store  # noqa: E402
from store_helpers import insert_frames  # noqa: E402

LOOPBACK = ("127.0.0.1", 50000)
ORIGINS = ["2023-12-31", "2024-03-31"]
runner = CliRunner()


def simulated_orders(boost: float, customers: int = 250, seed: int = 3) -> pd.DataFrame:
    """Customers who join in 2023's first quarter and buy at their own steady rate (one
    order a day at most) to 2024-06-30; from 2024-04-01 at ``boost`` times that rate."""
    rng = np.random.default_rng(seed)
    rows = []
    end, change = pd.Timestamp("2024-06-30 23:00"), pd.Timestamp("2024-04-01")
    for c in range(customers):
        t = pd.Timestamp("2023-01-01") + pd.Timedelta(days=int(rng.integers(0, 90)))
        rate = rng.gamma(2.0, 1 / 40)  # purchases per day
        while t <= end:
            rows.append((f"c{c:03d}", t + pd.Timedelta(hours=10), 20.0))
            now = rate * (boost if t >= change else 1.0)
            t += pd.Timedelta(days=float(rng.exponential(1 / now)) + 1)
    frame = pd.DataFrame(rows, columns=["customer_id", "ordered_at", "net_revenue"])
    frame = frame[frame["ordered_at"] <= end].reset_index(drop=True)
    frame.insert(0, "order_id", [f"o{i}" for i in range(len(frame))])
    return frame


def backtested(path: Path, boost: float) -> Path:
    with Store(path) as store:
        insert_frames(store, {"orders": simulated_orders(boost)})
        backtest(store, origins=ORIGINS, horizons=[30], models=["bgnbd"], learned=False)
    return path


@pytest.fixture(scope="module")
def doubled_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Buying doubles in the last quarter: the window after 2024-03-31 is under-forecast."""
    return backtested(tmp_path_factory.mktemp("health") / "doubled.duckdb", 2.0)


@pytest.fixture(scope="module")
def steady_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return backtested(tmp_path_factory.mktemp("health") / "steady.duckdb", 1.0)


def latest_row(path: Path) -> dict[str, Any]:
    with Store(path, read_only=True) as store:
        run = latest_backtest(store)
    assert run is not None
    return next(r for r in run["results"] if r["origin"] == ORIGINS[-1])


# -- the drift alert ---------------------------------------------------------------------


def test_a_doubling_of_the_last_quarter_is_flagged_with_its_figures(doubled_db: Path):
    row = latest_row(doubled_db)
    # the model is fitted on a year of steady buying: it expects the old rate
    assert row["actual_total"] > 1.3 * row["predicted_total"]
    with Store(doubled_db, read_only=True) as store:
        found = drift_alerts(store)
        every = alerts(store)
    assert found["metric"].tolist() == ["forecast_bias"]
    alert = found.iloc[0]
    assert alert["value"] == pytest.approx(row["bias_pct"]) and alert["value"] < -10
    assert alert["period"] == "the 30 days after 2024-03-31"
    reason = alert["reason"]
    assert f"{row['predicted_total']:,.0f} purchases" in reason
    assert f"against {row['actual_total']:,.0f} made" in reason
    assert "outside +/-10%" in reason and "`retain fit`" in reason
    assert "`retain backtest`" in reason
    assert found.attrs["model"] == "bgnbd" and "stands in" in found.attrs["note"]  # no fit
    # retain alerts and the overview carry it beside the trend checks
    assert "forecast_bias" in every["metric"].tolist()
    assert every.attrs["drift"]["bias_pct"] == pytest.approx(row["bias_pct"])
    assert "checked" in every.attrs and every.attrs["period"] == "month"


def test_steady_buying_raises_no_drift_alert(steady_db: Path):
    row = latest_row(steady_db)
    assert abs(row["bias_pct"]) <= 10
    with Store(steady_db, read_only=True) as store:
        found = drift_alerts(store)
    assert found.empty and found.attrs["checked"]
    assert found.attrs["bias_pct"] == pytest.approx(row["bias_pct"])
    assert found.attrs["origin"] == "2024-03-31" and found.attrs["horizon_days"] == 30


def result(
    origin: str, model: str, bias: float, ece: float, horizon: int = 30, made: float = 10_000.0
) -> dict:
    return {
        "origin": origin,
        "horizon_days": horizon,
        "model": model,
        "bias_pct": bias,
        "predicted_total": made * (1 + bias / 100),
        "actual_total": made,
        "ece": ece,
    }


def run_of(results: list[dict], best: str = "bgnbd") -> dict:
    return {
        "backtest_id": 7,
        "horizons": sorted({r["horizon_days"] for r in results}),
        "results": results,
        "best": [{"horizon_days": 30, "model": best, "by": "log_loss"}],
    }


def fitted(store: Store, model: str) -> Store:
    """A model_fits row for ``model`` (what the drift check reads of it: the name)."""
    store.con.execute(
        "INSERT INTO model_fits (fit_id, model, params, unit, grain, observation_end, "
        "fitted_at, customers, kept) VALUES (1, ?, '{}', 'D', 'D', DATE '2024-06-30', "
        "now()::TIMESTAMP, 10, true)",
        [model],
    )
    return store


@pytest.mark.parametrize(
    ("bias", "flagged"), [(10.0, False), (-10.0, False), (10.5, True), (-12.0, True)]
)
def test_the_bias_threshold_is_plus_or_minus_ten_percent(store: Store, bias, flagged):
    run = run_of(
        [result("2024-01-31", "bgnbd", 0.0, 0.02), result("2024-03-31", "bgnbd", bias, 0.02)]
    )
    found = drift_alerts(store, run)
    assert found["metric"].tolist() == (["forecast_bias"] if flagged else [])


@pytest.mark.parametrize(
    ("made", "bias", "flagged"),
    [(33.0, 18.0, False), (33.0, -20.0, False), (33.0, 60.0, True), (3_000.0, 12.0, True)],
)
def test_a_bias_that_chance_alone_gives_a_small_total_is_no_drift(
    store: Store, made, bias, flagged
):
    # 33 purchases made against 39 forecast is +18% and z = -1.0: a small store's noise
    run = run_of(
        [
            result("2024-01-31", "bgnbd", 0.0, 0.02, made=made),
            result("2024-03-31", "bgnbd", bias, 0.02, made=made),
        ]
    )
    found = drift_alerts(store, run)
    assert found["metric"].tolist() == (["forecast_bias"] if flagged else [])
    z = (made - made * (1 + bias / 100)) / (made * (1 + bias / 100)) ** 0.5
    if flagged:
        assert found.iloc[0]["statistic"] == pytest.approx(z)
        assert f"z = {z:.1f}" in found.iloc[0]["reason"]
    else:
        assert "within what chance alone gives" in found.attrs["note"]
        assert f"z = {z:.1f}" in found.attrs["note"]


@pytest.mark.parametrize(("ece", "flagged"), [(0.0499, False), (0.05, True), (0.08, True)])
def test_a_calibration_error_doubling_the_earlier_mean_is_flagged(store: Store, ece, flagged):
    run = run_of(
        [
            result("2023-12-31", "bgnbd", 1.0, 0.02),
            result("2024-01-31", "bgnbd", 1.0, 0.03),  # mean of the earlier two: 0.025
            result("2024-03-31", "bgnbd", 1.0, ece),
            result("2024-03-31", "bgnbd", 50.0, 0.5, horizon=90),  # not the shortest horizon
        ]
    )
    found = drift_alerts(store, run)
    assert found["metric"].tolist() == (["calibration_error"] if flagged else [])
    assert found.attrs["ece_baseline"] == pytest.approx(0.025)
    if flagged:
        assert f"{ece / 0.025:.1f}x the mean 0.025 of the 2 earlier origins" in found["reason"][0]


def test_the_model_in_use_is_checked_not_the_best(store: Store):
    fitted(store, "pnbd")
    assert model_in_use(store) == "pnbd"
    run = run_of(
        [
            result("2024-01-31", "pnbd", 0.0, 0.02),
            result("2024-03-31", "pnbd", 3.0, 0.02),
            result("2024-01-31", "bgnbd", 0.0, 0.02),
            result("2024-03-31", "bgnbd", 30.0, 0.02),
        ]
    )
    found = drift_alerts(store, run)
    assert found.empty and found.attrs["model"] == "pnbd" and found.attrs["note"] == ""
    # a model that could not be fitted at the origins gives way to the horizon's best
    failed = [r if r["model"] != "pnbd" else {**r, "error": "no fit"} for r in run["results"]]
    found = drift_alerts(store, run_of(failed))
    assert found.attrs["model"] == "bgnbd" and "(pnbd)" in found.attrs["note"]
    assert found["metric"].tolist() == ["forecast_bias"]


def test_no_backtest_no_drift_check(store: Store):
    found = drift_alerts(store)
    assert found.empty and not found.attrs["checked"]
    assert "retain backtest" in found.attrs["note"]


def test_retain_alerts_prints_the_drift_alert_or_its_figures(doubled_db: Path, steady_db: Path):
    result = runner.invoke(app, ["alerts", "--db", str(doubled_db)])
    assert result.exit_code == 0, result.output
    assert "alert: backtest 1: bgnbd forecast" in result.output
    result = runner.invoke(app, ["alerts", "--db", str(steady_db)])
    assert result.exit_code == 0, result.output
    assert "no drift: backtest 1, bgnbd over the 30 days after 2024-03-31" in result.output
    doc = json.loads(runner.invoke(app, ["alerts", "--db", str(doubled_db), "--json"]).output)
    assert [a["metric"] for a in doc["alerts"]][-1] == "forecast_bias"
    assert doc["drift"]["model"] == "bgnbd"


# -- the Model health page ---------------------------------------------------------------


@pytest.fixture
def client_of() -> Iterator[Any]:
    def make(path: Path) -> TestClient:
        return TestClient(create_app(path, warm=False), client=LOOPBACK)

    yield make


def test_the_api_twin_holds_the_latest_backtest_at_the_shortest_horizon(
    doubled_db: Path, client_of: Any
):
    with Store(doubled_db, read_only=True) as store:
        run = latest_backtest(store)
    assert run is not None
    with client_of(doubled_db) as client:
        health = client.get("/api/model-health").json()
        page = client.get("/model-health")
        overview = client.get("/")
        wrong = client.get("/api/model-health?horizon=7")
    assert health["horizon"] == 30 and health["origin"] == "2024-03-31"
    assert health["backtest"]["backtest_id"] == 1
    assert health["backtest"]["summary"][0]["log_loss"] == run["summary"][0]["log_loss"]
    latest = next(r for r in run["results"] if r["origin"] == "2024-03-31")
    assert health["calibration"] == [
        {"model": "bgnbd", "label": "BG/NBD", "rows": latest["calibration"]}
    ]
    assert health["lift"][0]["rows"] == latest["lift"]
    assert [(b["origin"], b["predicted_total"], b["actual_total"]) for b in health["bias"]] == [
        (r["origin"], r["predicted_total"], r["actual_total"]) for r in run["results"]
    ]
    assert health["drift"]["alerts"][0]["metric"] == "forecast_bias"
    assert health["card"] is None and "retain fit" in health["notes"][0]
    # the page shows what its twin holds, and the overview the drift alert
    assert page.status_code == 200
    text = page.text
    assert health["drift"]["alerts"][0]["reason"].split("`")[0] in text
    assert 'href="/api/model-health"' in text and 'aria-current="page"' in text
    for chart in ("backtest-calibration", "backtest-deciles", "backtest-bias"):
        assert f'data-chart="{chart}"' in text
    assert f"{latest['predicted_total']:.1f}" in text  # the bias table
    note = health["drift"]["note"]  # who stood in for the model in use, as the page says
    assert note and str(markupsafe.escape(note[1:])) in text
    assert health["drift"]["alerts"][0]["reason"].split("`")[0] in overview.text
    assert wrong.status_code == 422 and "30 (days)" in wrong.json()["detail"]


def test_the_charts_draw_the_diagonal_the_deciles_and_every_origin(doubled_db: Path, client_of):
    with client_of(doubled_db) as client:
        health = client.get("/api/model-health").json()
    charts = model_health_charts(health)
    calibration = charts["backtest-calibration"]
    rows = health["calibration"][0]["rows"]
    assert calibration["datasets"][0]["data"] == [
        {"x": r["predicted"], "y": r["observed"]} for r in rows
    ]
    diagonal = calibration["datasets"][-1]["data"]
    assert diagonal[0] == {"x": 0.0, "y": 0.0} and diagonal[1]["x"] == diagonal[1]["y"]
    assert diagonal[1]["x"] >= max(max(r["predicted"], r["observed"]) for r in rows)
    shares = charts["backtest-deciles"]["datasets"][0]["data"]
    assert shares == pytest.approx([100 * r["actual_share"] for r in health["lift"][0]["rows"]])
    bias = charts["backtest-bias"]
    assert bias["labels"] == ORIGINS
    assert [d["label"] for d in bias["datasets"]] == ["actual", "BG/NBD forecast"]


def test_the_page_shows_the_card_and_says_how_to_backtest(
    steady_db: Path, tmp_path: Path, client_of
):
    from retain.scoring import fit_store

    path = tmp_path / "fitted.duckdb"
    shutil.copy(steady_db, path)
    with Store(path) as store:
        fit_store(store, model="bgnbd")
        store.con.execute("DELETE FROM backtests")
    with client_of(path) as client:
        health = client.get("/api/model-health").json()
        page = client.get("/model-health").text
        models = client.get("/api/models").json()
    assert health["backtest"] is None and health["card"]["fit_id"] == 1
    assert "retain backtest" in health["notes"][-1]
    assert 'id="no-backtest"' in page and "<code>retain backtest</code>" in page
    assert 'id="card-data"' in page and f"{health['card']['data']['orders']:,}" in page
    assert models["card"] == health["card"]  # /api/models serves the same card


def test_a_backtest_older_than_the_orders_says_to_rerun_it(steady_db: Path):
    old = run_of([result("2024-01-31", "bgnbd", 0.0, 0.02), result("2024-03-31", "bgnbd", 1, 0.02)])
    with Store(steady_db, read_only=True) as store:
        stale = drift_alerts(store, {**old, "as_of": "2024-05-31"})
        current = drift_alerts(store, {**old, "as_of": "2024-06-30"})
    assert "ran with orders to 2024-05-31" in stale.attrs["note"]
    assert "observation day is now 2024-06-30" in stale.attrs["note"]
    assert "`retain backtest`" in stale.attrs["note"]
    assert "ran with orders" not in current.attrs["note"]


def test_the_card_shows_the_learned_models_verdict_when_the_fit_has_one(
    steady_db: Path, tmp_path: Path
):
    from retain.service.data import model_health_payload
    from retain.service.render import render

    path = tmp_path / "fitted.duckdb"
    shutil.copy(steady_db, path)
    with Store(path) as store:
        from retain.scoring import fit_store

        fit_store(store, model="bgnbd")
        health = model_health_payload(store)
    verdict = {
        "kept": False,
        "base": "bgnbd",
        "reason": "the learned model is worse than bgnbd on the 45-day holdout; bgnbd stays",
        "holdout_days": 45,
        "customers": 250,
        "buyers": 200,
        "learned": {
            "auc": 0.61,
            "log_loss": 0.52,
            "brier": 0.2,
            "ece": 0.03,
            "predicted_buyers": 190.0,
        },
        "btyd": {
            "auc": 0.66,
            "log_loss": 0.48,
            "brier": 0.18,
            "ece": 0.02,
            "predicted_buyers": 201.5,
        },
    }
    verdict["card"] = {
        "base": "bgnbd",
        "calibration_end": "2024-05-17",
        "features": ["recency_days", "frequency"],
        "horizons": [
            {
                "horizon_days": 45,
                "label_window_days": 30,
                "cutoffs": ["2024-03-17", "2024-02-17"],
                "rows": 480,
                "calibrated": False,
                "assumption": "the correction learned on 30 days is applied to 45",
            }
        ],
    }
    html = render(
        "model_health.html",
        health={**health, "card": {**health["card"], "learned": verdict}},
        charts={},
        charts_json="{}",
        version="x",
        store_path="s",
        query="",
        currency=None,
    )
    assert "not kept: bgnbd stays" in html and verdict["reason"] in html
    assert 'id="card-verdict-scores"' in html and "0.5200" in html and "201.5" in html
    assert "200 of 250 customers bought in the 45-day holdout" in html
    assert "Trained on the orders to 2024-05-17 over bgnbd, with 2 features" in html
    assert "2024-03-17, 2024-02-17" in html and "applied to 45" in html
    without = render(
        "model_health.html",
        health=health,
        charts={},
        charts_json="{}",
        version="x",
        store_path="s",
        query="",
        currency=None,
    )
    assert 'id="card-verdict"' not in without


def test_the_fit_in_use_is_the_one_the_scores_use(steady_db: Path, tmp_path: Path, client_of):
    from retain.scoring import fit_store, score_store

    path = tmp_path / "scored.duckdb"
    shutil.copy(steady_db, path)
    with Store(path) as store:
        fit_store(store, model="bgnbd")
        score_store(store)
        fit_store(store, model="pnbd")  # later, but the scores still use fit 1
        assert model_in_use(store) == "bgnbd"
        assert drift_alerts(store).attrs["model"] == "bgnbd"
        store.con.execute("DROP TABLE score_basis")
        assert model_in_use(store) == "pnbd"  # without scores: the latest kept fit
        score_store(store)
    with client_of(path) as client:
        health = client.get("/api/model-health").json()
        models = client.get("/api/models").json()
    assert health["card"]["fit_id"] == models["card"]["fit_id"] == 2
    assert health["card"]["model"] == "pnbd" and health["card"]["label"] == "Pareto/NBD"
    assert not any("is newer" in n for n in health["notes"])
    with Store(path) as store:
        fit_store(store, model="bgnbd")
    with client_of(path) as client:
        health = client.get("/api/model-health").json()
    assert health["card"]["fit_id"] == 2
    assert "the customer scores use fit 2, shown here; fit 3 is newer" in health["notes"][0]


def test_a_fit_that_kept_the_learned_model_is_checked_by_its_learned_rows(store: Store):
    fitted(store, "pnbd")
    store.con.execute("ALTER TABLE model_fits ADD COLUMN IF NOT EXISTS learned VARCHAR")
    store.con.execute("UPDATE model_fits SET learned = '{}'")
    assert models_in_use(store) == ["learned", "pnbd"]
    both = [
        result("2024-01-31", "pnbd", 0.0, 0.02),
        result("2024-03-31", "pnbd", 3.0, 0.02),
        result("2024-01-31", "learned", 0.0, 0.02),
        result("2024-03-31", "learned", 25.0, 0.02),
    ]
    found = drift_alerts(store, run_of(both))
    assert found.attrs["model"] == "learned" and found["metric"].tolist() == ["forecast_bias"]
    assert found["reason"][0].startswith("backtest 7: learned forecast 12,500 purchases")
    # not scored at the latest origin: the fit's own repeat-purchase model is checked
    found = drift_alerts(store, run_of(both[:3]))
    assert found.attrs["model"] == "pnbd" and found.empty
    assert "did not score the model in use (learned) at 2024-03-31" in found.attrs["note"]
