"""retain.backtest: the plan of origins and horizons, the scores against what happened,
the kept runs and `retain backtest`."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import retain.backtest as bt
from retain.backtest import backtest, latest_backtest, plan
from retain.cli import app
from retain.errors import ArgumentError, DataError, ModelError
from retain.store import Store
from retain.validate import compare
from store_helpers import insert_frames

D = dt.date


def _orders(customers: int = 400, seed: int = 5) -> pd.DataFrame:
    """Customers who join in 2023's first quarter and buy at their own rate until they
    leave, to 2024-06-30; some orders share a day (one purchase that day)."""
    rng = np.random.default_rng(seed)
    rows = []
    end = pd.Timestamp("2024-06-30 23:00")
    for c in range(customers):
        t = pd.Timestamp("2023-01-01") + pd.Timedelta(days=int(rng.integers(0, 90)))
        rate = rng.gamma(2.0, 1 / 40)  # purchases per day
        leaves = t + pd.Timedelta(days=float(rng.exponential(400)))
        spend = rng.gamma(4.0, 10.0)
        while t <= min(end, leaves):
            rows.append((f"c{c:04d}", t + pd.Timedelta(hours=int(rng.integers(0, 20))), spend))
            if rng.random() < 0.05:  # a second order on the same day
                rows.append((f"c{c:04d}", t + pd.Timedelta(hours=21), spend / 2))
            t += pd.Timedelta(days=float(rng.exponential(1 / rate)) + 1)
    frame = pd.DataFrame(rows, columns=["customer_id", "ordered_at", "net_revenue"])
    frame.insert(0, "order_id", [f"o{i}" for i in range(len(frame))])
    return frame[frame["ordered_at"] <= end]


@pytest.fixture(scope="module")
def orders() -> pd.DataFrame:
    return _orders()


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory, orders: pd.DataFrame) -> Path:
    path = tmp_path_factory.mktemp("backtest") / "store.duckdb"
    with Store(path) as store:
        insert_frames(store, {"orders": orders})
    return path


def test_default_plan_the_last_four_quarter_ends_per_horizon() -> None:
    scored = plan(D(2023, 1, 1), D(2024, 6, 30))
    # 30 and 90 days fit the four quarter ends to 2024-03-31; 365 days fit only 2023-06-30
    # (2023-03-31 leaves less than 90 days of history)
    assert scored == {
        D(2023, 6, 30): [30, 90, 365],
        D(2023, 9, 30): [30, 90],
        D(2023, 12, 31): [30, 90],
        D(2024, 3, 31): [30, 90],
    }
    # a short history keeps the horizons it can hold
    assert plan(D(2024, 1, 1), D(2024, 6, 30)) == {D(2024, 3, 31): [30, 90]}
    # an origin + horizon ending on the observation day fits
    assert plan(D(2023, 1, 1), D(2024, 6, 30), horizons=[91]) == {
        D(2023, 12, 31): [91],
        D(2023, 9, 30): [91],
        D(2023, 6, 30): [91],
        D(2024, 3, 31): [91],
    }


def test_given_origins_and_horizons() -> None:
    assert plan(D(2023, 1, 1), D(2024, 6, 30), origins=["2024-01-15"], horizons=[30, 60]) == {
        D(2024, 1, 15): [30, 60]
    }
    # default horizons: those that fit the origin
    assert plan(D(2023, 1, 1), D(2024, 6, 30), origins=["2024-02-01"]) == {D(2024, 2, 1): [30, 90]}


def test_plans_that_cannot_be_kept_say_why() -> None:
    with pytest.raises(ArgumentError, match=r"2024-03-31 with a horizon of 365 days .*2024-06-30"):
        plan(D(2023, 1, 1), D(2024, 6, 30), origins=["2024-03-31"], horizons=[365])
    with pytest.raises(ArgumentError, match="less than 90 days of orders"):
        plan(D(2023, 1, 1), D(2024, 6, 30), origins=["2023-02-01"])
    with pytest.raises(DataError, match="too short a history"):
        plan(D(2024, 4, 1), D(2024, 6, 30))
    with pytest.raises(ArgumentError, match="too short for that horizon"):
        plan(D(2024, 1, 1), D(2024, 6, 30), horizons=[365])
    with pytest.raises(ArgumentError, match="YYYY-MM-DD"):
        plan(D(2023, 1, 1), D(2024, 6, 30), origins=["June"])
    with pytest.raises(ArgumentError, match="whole number of days"):
        plan(D(2023, 1, 1), D(2024, 6, 30), horizons=[0])


def _by_hand(orders: pd.DataFrame, origin: str, days: int) -> tuple[pd.Series, pd.Series]:
    """Purchases (distinct days) and net revenue in (origin, origin + days] of the
    customers who bought on or before the origin."""
    day = orders["ordered_at"].dt.normalize()
    split = pd.Timestamp(origin) + pd.Timedelta(days=1)
    before = orders.loc[day < split, "customer_id"].unique()
    inside = orders[(day >= split) & (day < split + pd.Timedelta(days=days))]
    inside = inside[inside["customer_id"].isin(before)]
    purchases = inside.groupby("customer_id")["ordered_at"].apply(
        lambda s: s.dt.normalize().nunique()
    )
    revenue = inside.groupby("customer_id")["net_revenue"].sum()
    index = pd.Index(sorted(before))
    return purchases.reindex(index, fill_value=0), revenue.reindex(index, fill_value=0.0)


def test_scores_against_what_the_customers_did(db: Path, orders: pd.DataFrame) -> None:
    messages: list[str] = []
    with Store(db) as store:
        run = backtest(
            store,
            origins=["2023-12-31"],
            horizons=[30, 120],
            learned=False,
            progress=messages.append,
            save=False,
        )
    result = run.to_dict()
    assert result["horizons"] == [30, 120] and result["origins"] == ["2023-12-31"]
    assert (result["as_of"], result["unit"], result["grain"]) == ("2024-06-30", "W", "D")
    assert {r["model"] for r in result["results"]} == {"bgnbd", "mbgnbd", "pnbd"}
    for h in (30, 120):
        purchases, revenue = _by_hand(orders, "2023-12-31", h)
        for r in (r for r in result["results"] if r["horizon_days"] == h):
            assert r["customers"] == purchases.size
            assert r["buyers"] == int((purchases > 0).sum())
            assert r["actual_total"] == purchases.sum()
            assert r["actual_revenue"] == pytest.approx(revenue.sum())
            assert 0.5 < r["auc"] <= 1 and r["log_loss"] > 0 and 0 < r["brier"] < 0.25
            assert sum(b["customers"] for b in r["calibration"]) == purchases.size
            assert r["bias_pct"] == pytest.approx(
                100 * (r["predicted_total"] - r["actual_total"]) / r["actual_total"]
            )
            assert r["log_likelihood_mean"] == pytest.approx(r["log_likelihood"] / purchases.size)
            assert sum(d["actual_share"] for d in r["lift"]) == pytest.approx(1.0)
            assert r["next_purchase"]["buyers"] == (purchases > 0).sum()
    # forecasts over a longer horizon are larger, model by model
    totals = {(r["model"], r["horizon_days"]): r["predicted_total"] for r in result["results"]}
    assert all(totals[(m, 120)] > totals[(m, 30)] for m in ("bgnbd", "mbgnbd", "pnbd"))
    assert any("pnbd" in m for m in messages) and "2023-12-31" in messages[0]
    # the summary is the mean over origins (here one) and the best has the lowest log-loss
    for h in (30, 120):
        rows = [s for s in result["summary"] if s["horizon_days"] == h]
        best = next(b for b in result["best"] if b["horizon_days"] == h)
        assert best["model"] == min(rows, key=lambda s: s["log_loss"])["model"]
    json.dumps(result, allow_nan=False)


def test_the_longest_horizon_is_the_holdout_of_compare(cdnow_sample_db: Path) -> None:
    """CDNOW sample, calibrated to 1997-09-30, 39 weeks of holdout: the predicted totals
    and holdout log-likelihoods of compare (benchmarks/ACCURACY.md: BG/NBD 1,653, MBG/NBD
    1,577, Pareto/NBD 1,666 against 1,882), and compare's buy-again scores."""
    with Store(cdnow_sample_db) as store:
        run = backtest(store, origins=["1997-09-30"], horizons=[273], learned=False, save=False)
        compared = compare(store, "1997-09-30", holdout_end="1998-06-30", unit="W")
    rows = {r["model"]: r for r in run.results}
    for candidate in compared.to_dict("records"):
        r = rows[candidate["model"]]
        assert r["actual_total"] == candidate["actual"] == 1882
        assert r["predicted_total"] == pytest.approx(candidate["predicted"], rel=1e-12)
        assert r["log_likelihood"] == pytest.approx(candidate["holdout_log_likelihood"], rel=1e-12)
        for key in ("auc", "log_loss", "brier", "ece"):
            assert r[key] == pytest.approx(candidate[key], rel=1e-12), key
    assert rows["bgnbd"]["predicted_total"] == pytest.approx(1653, abs=0.5)
    assert rows["pnbd"]["predicted_total"] == pytest.approx(1666, abs=0.5)


def test_a_model_that_cannot_be_fitted_is_reported_not_raised(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = bt.transaction_model

    def failing(name: str) -> Any:
        if name == "mbgnbd":
            raise ModelError("mbgnbd cannot be fitted here")
        return real(name)

    monkeypatch.setattr(bt, "transaction_model", failing)
    with Store(db) as store:
        run = backtest(store, origins=["2023-12-31"], horizons=[30], learned=False, save=False)
    (failed,) = [r for r in run.results if r["model"] == "mbgnbd"]
    (scored,) = [r for r in run.results if r["model"] == "bgnbd"]
    assert failed["error"] == "mbgnbd cannot be fitted here"
    # the same keys as a scored entry, what the customers did, and no scores
    assert set(scored) - set(failed) == {"params", "converged"}
    for key in ("customers", "buyers", "actual_total", "actual_revenue"):
        assert failed[key] == scored[key]
    assert failed["auc"] is None and failed["log_loss"] is None and failed["calibration"] == []
    assert {s["model"]: s["origins"] for s in run.summary} == {"bgnbd": 1, "mbgnbd": 0, "pnbd": 1}
    assert run.best[0]["model"] in ("bgnbd", "pnbd")


class _ConstantModel:
    """A stand-in for retain.models.learned.LearnedModel: the same forecast for all."""

    fitted_at: ClassVar[list[dt.date]] = []

    def __init__(self, horizons: tuple[int, ...] = (30, 90, 365), **_: Any) -> None:
        self.horizons = horizons

    def fit(self, store: Store, calibration_end: dt.date) -> _ConstantModel:
        self.fitted_at.append(calibration_end)
        return self

    def predict(self, store: Store, as_of: dt.date) -> pd.DataFrame:
        ids = store.query(
            "SELECT DISTINCT customer_id FROM orders WHERE CAST(ordered_at AS DATE) <= ? "
            "ORDER BY customer_id DESC",
            [as_of],
        )["customer_id"]
        columns = {}
        for h in self.horizons:
            columns[f"p_buy_{h}d"] = 0.25
            columns[f"expected_purchases_{h}d"] = 0.5
            columns[f"expected_revenue_{h}d"] = 10.0
        return pd.DataFrame(columns, index=pd.Index(ids, name="customer_id"))


def test_the_learned_model_is_scored_like_the_others(
    db: Path, orders: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bt, "_learned_class", lambda: _ConstantModel)
    _ConstantModel.fitted_at = []
    with Store(db) as store:
        run = backtest(store, origins=["2023-12-31"], horizons=[30], save=False)
        without = backtest(store, origins=["2023-12-31"], horizons=[30], learned=False, save=False)
    assert _ConstantModel.fitted_at == [D(2023, 12, 31)]
    learned = next(r for r in run.results if r["model"] == "learned")
    purchases, _ = _by_hand(orders, "2023-12-31", 30)
    bought = (purchases > 0).mean()
    assert learned["auc"] == 0.5  # one forecast for everybody ranks nobody
    assert learned["brier"] == pytest.approx(bought * 0.75**2 + (1 - bought) * 0.25**2)
    assert learned["predicted_total"] == pytest.approx(0.5 * purchases.size)
    assert learned["log_likelihood"] is None and learned["next_purchase"] is None
    assert learned["gini"] == pytest.approx(0.0, abs=1e-12)
    assert {r["model"] for r in without.results} == {"bgnbd", "mbgnbd", "pnbd"}


def test_the_learned_model_when_it_cannot_be_imported(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bt, "_learned_class", lambda: ImportError("no module named lightgbm"))
    with Store(db) as store:
        run = backtest(store, origins=["2023-12-31"], horizons=[30], save=False)
        assert {r["model"] for r in run.results} == {"bgnbd", "mbgnbd", "pnbd"}
        with pytest.raises(ArgumentError, match=r"learned model is not available.*lightgbm"):
            backtest(store, models=["learned"], save=False)


def test_runs_are_kept(db: Path, tmp_path: Path) -> None:
    path = tmp_path / "copy.duckdb"
    path.write_bytes(db.read_bytes())
    with Store(path) as store:
        assert latest_backtest(store) is None
        first = backtest(store, origins=["2024-03-31"], horizons=[30], models=["bgnbd"])
        second = backtest(store, origins=["2024-03-31"], horizons=[90], models=["bgnbd"])
        assert (first.backtest_id, second.backtest_id) == (1, 2)
        kept = latest_backtest(store)
        assert store.scalar("SELECT count(*) FROM backtests") == 2
    assert kept is not None and kept["backtest_id"] == 2 and kept["horizons"] == [90]
    assert kept["results"] == second.to_dict()["results"]


def test_unknown_models_are_refused(db: Path) -> None:
    with Store(db) as store, pytest.raises(ArgumentError, match="unknown model 'bgbb'"):
        backtest(store, models=["bgbb"], save=False)


def test_the_command(db: Path, tmp_path: Path) -> None:
    path = tmp_path / "copy.duckdb"
    path.write_bytes(db.read_bytes())
    runner = CliRunner()
    args = ["backtest", "--db", str(path), "--origin", "2023-12-31", "--horizon", "30"]
    out = runner.invoke(app, [*args, "--json", "--no-learned", "--model", "pnbd"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout)
    assert [r["model"] for r in result["results"]] == ["pnbd"]
    assert {"auc", "log_loss", "calibration"} <= set(result["results"][0])
    text = runner.invoke(app, [*args, "--no-learned"])
    assert text.exit_code == 0, text.output
    assert "best" in text.stdout and "2023-12-31" in text.stdout
    bad = runner.invoke(app, ["backtest", "--db", str(path), "--origin", "2024-06-01"])
    assert bad.exit_code == 2
    assert "2024-06-01" in bad.output and "30 days" in bad.output


def test_a_shorter_horizon_scores_as_if_it_were_the_only_one(db: Path) -> None:
    """The 30-day scores cut from a run to 120 days (its log-likelihoods, purchase
    windows) are those of a run to 30 days alone."""
    with Store(db) as store:
        both = backtest(
            store, origins=["2023-12-31"], horizons=[30, 120], learned=False, save=False
        )
        alone = backtest(store, origins=["2023-12-31"], horizons=[30], learned=False, save=False)
    cut = {r["model"]: r for r in both.results if r["horizon_days"] == 30}
    for r in alone.results:
        other = cut[r["model"]]
        assert other["params"] == r["params"]
        for key in ("log_likelihood", "predicted_total", "auc", "log_loss", "ece", "gini"):
            assert other[key] == pytest.approx(r[key], rel=1e-9), (r["model"], key)
        assert other["next_purchase"] == pytest.approx(r["next_purchase"], rel=1e-9)


def test_retain_validate_backtest_is_the_same_backtest(db: Path) -> None:
    from retain.validate import backtest as from_validate

    with Store(db) as store:
        kwargs: dict[str, Any] = {"origins": ["2024-03-31"], "horizons": [30], "save": False}
        one = from_validate(store, models=["bgnbd"], **kwargs)
        other = backtest(store, models=["bgnbd"], **kwargs)
    assert one.origins == other.origins and one.horizons == other.horizons
    (a,), (b,) = one.results, other.results
    assert a["params"] == b["params"]
    for key in ("predicted_total", "auc", "log_loss", "gini"):
        assert a[key] == pytest.approx(b[key], rel=1e-12)
