"""`retain fit` and `retain score`: fits kept in the store, scores per customer."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import retain
from retain.cli import app
from retain.errors import StoreError
from retain.models import Model
from retain.scoring import (
    SCORE_COLUMNS,
    FitReport,
    ScoreReport,
    fit_store,
    load_fit,
    load_score_basis,
    score_customers,
    score_store,
)
from retain.store import Store

runner = CliRunner()


@pytest.fixture(scope="module")
def scored(cdnow_sample_db: Path, tmp_path_factory: pytest.TempPathFactory):
    """A copy of the CDNOW sample store, fitted (auto, weeks) and scored once."""
    path = tmp_path_factory.mktemp("scoring") / "scored.duckdb"
    shutil.copy(cdnow_sample_db, path)
    with Store(path) as store:
        fitted = fit_store(store, model="auto", unit="W")
        report = score_store(store)
        table = store.query("SELECT * FROM customer_scores ORDER BY customer_id")
    return path, fitted, report, table


def test_auto_fit_compares_the_models_on_a_holdout_and_keeps_the_best(scored):
    path, fitted, _, _ = scored
    assert isinstance(fitted, FitReport)
    candidates = fitted.candidates
    assert set(candidates["model"]) == {"bgnbd", "mbgnbd", "pnbd"}
    assert candidates["rmse"].is_monotonic_increasing
    assert fitted.model == candidates["model"].iloc[0]
    assert fitted.observation_end == "1998-06-30"
    assert (
        fitted.holdout_weeks == (pd.Timestamp("1998-06-30") - pd.Timestamp("1997-01-01")).days // 28
    )
    with Store(path, read_only=True) as store:
        row = store.query("SELECT * FROM model_fits WHERE fit_id = ?", [fitted.fit_id]).iloc[0]
        model, spend, _ = load_fit(store)
    assert row["model"] == fitted.model and row["unit"] == "W" and row["grain"] == "D"
    assert row["holdout_rmse"] == pytest.approx(candidates["rmse"].iloc[0])
    assert len(row["params"]) < 2000
    assert model.params_ == fitted.params
    assert spend is not None and spend.params_ == fitted.spend_params
    assert str(row["observation_end"])[:10] == "1998-06-30"


def test_scores_have_every_column_and_hold_together(scored):
    _, fitted, report, table = scored
    assert isinstance(report, ScoreReport)
    assert list(table.columns[: len(SCORE_COLUMNS)]) == SCORE_COLUMNS
    assert {"segment", "churn_risk", "value_at_stake"} <= set(table.columns)
    assert len(table) == report.customers == 2357
    assert table["customer_id"].is_unique
    assert ((table["p_alive"] >= 0) & (table["p_alive"] <= 1)).all()
    e30, e90, e365 = (table[f"expected_purchases_{d}d"] for d in (30, 90, 365))
    assert ((e30 <= e90) & (e90 <= e365)).all()
    # the band of the mean holds the mean; the customer's range is a range of outcomes
    assert (table["clv_mean_low"] <= table["clv_12m"]).all()
    assert (table["clv_12m"] <= table["clv_mean_high"]).all()
    assert ((table["clv_low"] >= 0) & (table["clv_low"] <= table["clv_high"])).all()
    low, high = table["purchases_365d_low"], table["purchases_365d_high"]
    assert ((low >= 0) & (low <= high) & (high == np.round(high))).all()
    assert ((high == 0) == (table["clv_high"] == 0)).mean() > 0.99
    np.testing.assert_allclose(table["clv_12m"], table["p_alive"] * table["clv_if_retained"])
    numeric = table.select_dtypes("number")
    assert np.isfinite(numeric.to_numpy()).all()
    as_of = pd.Timestamp("1998-06-30")
    dated = table["next_purchase_date"].notna()
    assert dated.sum() == report.with_next_purchase_date > 0
    assert (table.loc[dated, "next_purchase_date"] > as_of).all()
    start, end = table["next_purchase_window_start"], table["next_purchase_window_end"]
    both = dated & end.notna()
    assert (start[both] <= table.loc[both, "next_purchase_date"]).all()
    assert (table.loc[both, "next_purchase_date"] <= end[both]).all()
    assert (table["model"] == fitted.model).all() and (table["fit_id"] == fitted.fit_id).all()


def test_scores_are_the_librarys_predictions(scored):
    path, _, _, table = scored
    with Store(path, read_only=True) as store:
        model, spend, row = load_fit(store)
        summary = retain.summarize(store, unit=row["unit"], grain=row["grain"])
    indexed = table.set_index("customer_id").loc[summary.index]
    np.testing.assert_allclose(indexed["p_alive"], model.p_alive(summary))
    np.testing.assert_allclose(
        indexed["expected_purchases_90d"], model.expected_purchases(summary, "90D")
    )
    clv = model.clv(summary, gamma_gamma=spend, horizon="12M", discount_rate=0.1)
    np.testing.assert_allclose(indexed["clv_12m"], clv)
    # a next purchase date is the observation day plus the median time, rounded up
    nxt = model.next_purchase(summary, 0.5, horizon="365D")
    within = nxt["within_horizon"].to_numpy()
    days = np.maximum(np.ceil(nxt["next_purchase"].to_numpy()[within] * 7 - 1e-9), 1)
    expected = pd.Timestamp("1998-06-30") + pd.to_timedelta(days, unit="D")
    np.testing.assert_array_equal(
        pd.to_datetime(indexed["next_purchase_date"]).to_numpy()[within], expected.to_numpy()
    )


def test_a_named_model_with_a_holdout_records_its_errors(tmp_path, cdnow_sample_db):
    path = tmp_path / "named.duckdb"
    shutil.copy(cdnow_sample_db, path)
    with Store(path) as store:
        report = fit_store(store, model="pnbd", holdout_weeks=13, unit="W")
        plain = fit_store(store, model="mbgnbd", unit="W")
        rows = store.query("SELECT fit_id, model, holdout_weeks, holdout_rmse FROM model_fits")
        older = score_store(store, fit_id=report.fit_id, segments=False)
        columns = store.query("DESCRIBE customer_scores")["column_name"].tolist()
    assert list(rows["model"]) == ["pnbd", "mbgnbd"]
    assert rows["holdout_weeks"].iloc[0] == 13 and rows["holdout_rmse"].iloc[0] > 0
    assert pd.isna(rows["holdout_weeks"].iloc[1]) and plain.candidates is None
    assert older.model == "pnbd" and columns == SCORE_COLUMNS


def test_scoring_without_a_fit_says_what_to_do(store):
    store.con.execute(
        "INSERT INTO orders (order_id, customer_id, ordered_at, net_revenue) "
        "VALUES ('o1', 'c1', TIMESTAMP '2024-01-01', 10)"
    )
    with pytest.raises(StoreError, match="retain fit"):
        score_store(store)
    with pytest.raises(ValueError, match="model must be one of"):
        fit_store(store, model="arima")


def test_cli_fit_and_score(tmp_path, cdnow_sample_db):
    path = tmp_path / "cli.duckdb"
    shutil.copy(cdnow_sample_db, path)
    result = runner.invoke(
        app, ["fit", "--db", str(path), "--model", "mbgnbd", "--unit", "W", "--json"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["model"] == "mbgnbd" and doc["unit"] == "W" and doc["customers"] == 2357
    assert doc["kept"] is True and {c["name"] for c in doc["guard"][0]["checks"]} >= {
        "maximum",
        "tracking",
        "customer_purchases",
        "one_time_buyers",
        "store_value",
    }
    result = runner.invoke(app, ["score", "--db", str(path)])
    assert result.exit_code == 0, result.output
    assert "scored 2,357 customers as of 1998-06-30" in result.output
    result = runner.invoke(app, ["fit", "--db", str(path), "--model", "arima"])
    assert result.exit_code == 2
    result = runner.invoke(app, ["score", "--db", str(tmp_path / "missing.duckdb")])
    assert result.exit_code == 2 and "no store" in result.output
    assert not (tmp_path / "missing.duckdb").exists()
    with Store(path, read_only=True) as store:
        model = Model.from_json(store.scalar("SELECT params FROM model_fits"))
    assert model.unit_ == "W"


def _rows(store: Store, ids: list[str]) -> pd.DataFrame:
    return store.query(
        "SELECT * FROM customer_scores WHERE customer_id IN (SELECT unnest(?)) "
        "ORDER BY customer_id",
        [ids],
    ).set_index("customer_id")


def test_rescoring_some_customers_reproduces_their_rows(scored, tmp_path):
    path, fitted, _, table = scored
    copy = tmp_path / "copy.duckdb"
    shutil.copy(path, copy)
    ids = ["10002", "1012", "16217", "23408", "9987"]
    with Store(copy) as store:
        basis = load_score_basis(store)
        report = score_customers(store, [*ids, "1012", "nobody"])
        rows = _rows(store, ids)
        total = store.scalar("SELECT count(*) FROM customer_scores")
    assert basis.fit_id == fitted.fit_id and basis.discount_rate == 0.1
    assert basis.boundaries is not None and basis.boundaries.customers == 2357
    assert report.customers == 5 and report.segments and total == 2357
    assert report.warnings == ["no orders on or before 1998-06-30 for: nobody"]
    pd.testing.assert_frame_equal(rows, table.set_index("customer_id").loc[ids], rtol=1e-12)


def test_rescoring_after_an_order_matches_a_full_scoring(scored, tmp_path):
    path, _, _, table = scored
    copy = tmp_path / "copy.duckdb"
    shutil.copy(path, copy)
    with Store(copy) as store:
        store.con.execute(
            "INSERT INTO orders (order_id, customer_id, ordered_at, net_revenue) VALUES "
            "('x1', '1012', TIMESTAMP '1998-06-20 10:00', 50.0), "
            "('x2', 'fresh', TIMESTAMP '1998-06-25 10:00', 20.0)"
        )
        score_customers(store, ["1012", "fresh"])
        one_by_one = _rows(store, ["1012", "fresh"])
        score_store(store)
        full = _rows(store, ["1012", "fresh"])
    before = table.set_index("customer_id").loc["1012"]
    assert one_by_one.loc["1012", "p_alive"] > before["p_alive"]
    assert one_by_one.loc["1012", "expected_purchases_365d"] > before["expected_purchases_365d"]
    # the model's columns do not depend on the other customers: the same as a full scoring
    pd.testing.assert_frame_equal(one_by_one[SCORE_COLUMNS[1:]], full[SCORE_COLUMNS[1:]], rtol=1e-9)
    assert one_by_one.loc["fresh", "segment"] is not None


def test_rescoring_needs_a_full_scoring(tmp_path, cdnow_sample_db):
    path = tmp_path / "fitted.duckdb"
    shutil.copy(cdnow_sample_db, path)
    with Store(path) as store:
        with pytest.raises(StoreError, match="retain fit"):
            score_customers(store, ["1012"])
        fit_store(store, model="mbgnbd", unit="W")
        with pytest.raises(StoreError, match="retain score"):
            score_customers(store, ["1012"])


def test_unreadable_or_early_observation_dates_are_clear_errors(tmp_path, cdnow_sample_db):
    path = tmp_path / "dates.duckdb"
    shutil.copy(cdnow_sample_db, path)
    for args, message in (
        (["fit", "--as-of", "garbage"], "unreadable observation date: got 'garbage'"),
        (["fit", "--as-of", "1990-01-01"], "before the first order (1997-01-01)"),
        (["score", "--as-of", "1998-13-45"], "unreadable observation date: got '1998-13-45'"),
    ):
        result = runner.invoke(app, [*args, "--db", str(path)])
        assert result.exit_code == 2, result.output
        assert message in result.output and "Traceback" not in result.output


def test_bad_score_and_fit_options_are_refused(tmp_path, cdnow_sample_db):
    path = tmp_path / "options.duckdb"
    shutil.copy(cdnow_sample_db, path)
    assert runner.invoke(app, ["fit", "--db", str(path), "--model", "mbgnbd"]).exit_code == 0
    for args, message in (
        (["score", "--margin", "-1"], "margin must be a fraction of net revenue"),
        (["score", "--margin", "30"], "margin must be a fraction of net revenue"),
        (["score", "--discount-rate", "-0.5"], "discount rate must be a fraction per year"),
        (["fit", "--holdout-weeks", "0"], "--holdout-weeks"),
    ):
        result = runner.invoke(app, [*args, "--db", str(path)])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "Traceback" not in result.output
    with Store(path, read_only=True) as store:
        assert not store.has_table("customer_scores")


def test_a_fit_without_standard_errors_scores_without_the_band_of_the_mean(tmp_path):
    orders = tmp_path / "orders.csv"
    orders.write_text(
        "order_id,customer_id,ordered_at,net_revenue\n"
        "1,a,2025-01-02,10.50\n2,b,2025-01-03,22\n3,a,2025-02-03,1234.50\n4,d,2025-03-01,5\n"
    )
    with Store(tmp_path / "three.duckdb") as store:
        retain.ingest.ingest(store, orders, as_of="2025-12-31")
        fit_store(store, model="bgnbd")
        report = score_store(store)
        table = store.query("SELECT * FROM customer_scores")
    assert report.customers == 3
    assert any("no uncertainty of the mean CLV" in w for w in report.warnings)
    assert table["clv_12m"].notna().all()
    assert table["clv_mean_low"].isna().all() and table["clv_mean_high"].isna().all()
    # the range of each customer's value needs no standard errors
    assert table["clv_low"].notna().all() and table["clv_high"].notna().all()


def test_fit_refuses_a_store_of_one_time_buyers(tmp_path):
    orders = tmp_path / "orders.csv"
    orders.write_text(
        "order_id,customer_id,ordered_at,net_revenue\n"
        + "".join(
            f"{i},c{i},2025-{1 + i % 12:02d}-{1 + i % 28:02d},{10 + i % 7}\n" for i in range(60)
        )
    )
    path = tmp_path / "once.duckdb"
    with Store(path) as store:
        retain.ingest.ingest(store, orders, as_of="2025-12-31")
    result = runner.invoke(app, ["fit", "--db", str(path)])
    assert result.exit_code == 2, result.output
    assert "none of the 60 customers bought again" in result.output
    with Store(path, read_only=True) as store:
        assert store.scalar("SELECT count(*) FROM model_fits") == 0


@pytest.mark.parametrize("guess", ["best", "worst", "failing"])
def test_the_fit_made_beside_the_bootstrap_is_the_fit_made_after_it(
    tmp_path, cdnow_sample_db, monkeypatch, guess
):
    """fit_store fits the model of the best holdout score on every order while the
    choice is bootstrapped; a wrong guess (or one whose fit fails) changes nothing."""
    import retain.validate as validate

    original_fit = Model.fit

    def fit(self, data, *, weights=None, **kwargs):
        if weights is None and self.name != "gg":  # a fit on every customer, not on rows
            warnings.warn(f"{self.name} fitted on every order", UserWarning, stacklevel=2)
            if guess == "failing" and self.name == "pnbd":
                raise RuntimeError("no pnbd today")
        return original_fit(self, data, weights=weights, **kwargs)

    monkeypatch.setattr(Model, "fit", fit)
    original_compare = validate.compare_data
    reports = {}
    for how in ("after", guess):

        def compare_data(data, *, models, meanwhile=None, how=how):
            if how == "after":  # nothing beside the bootstrap: every fit after the choice
                return original_compare(data, models=models)
            if how == "best":
                return original_compare(data, models=models, meanwhile=meanwhile)
            # a guess the choice does not take
            return original_compare(
                data, models=models, meanwhile=lambda ranked: meanwhile(["pnbd"])
            )

        monkeypatch.setattr(validate, "compare_data", compare_data)
        path = tmp_path / f"{how}.duckdb"
        shutil.copy(cdnow_sample_db, path)
        with Store(path) as store:
            reports[how] = fit_store(store, model="auto", unit="W")
    after, beside = reports["after"], reports[guess]
    assert beside.model == after.model != "pnbd"
    assert beside.params == after.params
    assert beside.standard_errors == after.standard_errors
    # the same checks; the store's revenue is a DuckDB sum, its last bit not repeatable
    for a, b in zip(beside.guard[0]["checks"], after.guard[0]["checks"], strict=True):
        assert {**a, "value": None} == {**b, "value": None}
        assert a["value"] == pytest.approx(b["value"], rel=1e-12)
    assert [t["model"] for t in beside.guard] == [t["model"] for t in after.guard]
    assert beside.choice == after.choice
    assert f"{after.model} fitted on every order" in after.warnings
    assert beside.warnings == after.warnings
    pd.testing.assert_frame_equal(beside.candidates, after.candidates)
