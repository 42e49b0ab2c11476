"""The fit guard: fits whose predictions contradict the store's history are not kept."""

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
from retain.guard import check_fit, failed, store_history
from retain.ingest import ingest
from retain.models import ConvergenceWarning, GammaGamma, ModifiedBetaGeo
from retain.scoring import FitRefused, fit_store, load_fit, score_store
from retain.store import Store

runner = CliRunner()
pytestmark = pytest.mark.filterwarnings("ignore", category=ConvergenceWarning)


def geometric_orders(customers: int, seed: int, stop: float, gap_days: float) -> pd.DataFrame:
    """A small shop: each customer buys a geometric number of times (leaving after each
    order with probability ``stop``), exponential gaps, over 700 days from 2024-01-01."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2024-01-01")
    first = rng.uniform(0, 700, customers)
    orders = rng.geometric(stop, customers)
    rows = []
    for c in range(customers):
        gaps = np.concatenate([[first[c]], rng.exponential(gap_days, orders[c] - 1)])
        for day in np.cumsum(gaps):
            if day <= 700:
                rows.append((f"c{c}", start + pd.Timedelta(days=float(day))))
    frame = pd.DataFrame(rows, columns=["customer_id", "ordered_at"])
    frame["order_id"] = [f"o{i}" for i in range(len(frame))]
    frame["net_revenue"] = np.round(rng.gamma(4.0, 60.0, len(frame)), 2)
    frame["ordered_at"] = frame["ordered_at"].dt.floor("s")
    return frame


@pytest.mark.parametrize(("seed", "stop", "gap_days"), [(0, 0.5, 45.0), (1, 0.3, 20.0)])
def test_a_small_geometric_store_gets_plausible_value_or_a_clear_refusal(
    tmp_path: Path, seed: int, stop: float, gap_days: float
) -> None:
    orders = geometric_orders(400, seed, stop, gap_days)
    path = tmp_path / "orders.csv"
    orders.to_csv(path, index=False)
    with Store(tmp_path / "small.duckdb") as store:
        ingest(store, path, as_of="2025-12-01")
        try:
            fit = fit_store(store)
        except FitRefused as refused:
            assert not refused.report.kept and "check" in str(refused)
            return
        report = score_store(store)
        scores = store.query("SELECT * FROM customer_scores")
        last_year = store.scalar(
            "SELECT sum(net_revenue) FROM orders WHERE ordered_at > TIMESTAMP '2024-11-30'"
        )
    assert fit.kept and all(c["passed"] for c in fit.guard[-1]["checks"])
    assert report.clv_12m is not None and 0 < report.clv_12m <= 3 * last_year
    # nobody is expected to buy much faster than anybody in the shop ever did
    fastest = orders.groupby("customer_id").size().max()
    assert scores["expected_purchases_365d"].max() <= fastest


def _absurd_model(summary: pd.DataFrame) -> ModifiedBetaGeo:
    """A model whose customers buy about once a day for ever: what the guard is for."""
    model = ModifiedBetaGeo().fit(summary)
    model.params_ = {"r": 50.0, "alpha": 50.0, "a": 0.01, "b": 100.0}
    return model


def test_the_guard_flags_absurd_predictions(cdnow_sample_db: Path) -> None:
    with Store(cdnow_sample_db, read_only=True) as store:
        summary = retain.summarize(store, unit="D", observation_end="1998-06-30")
        history = store_history(store, pd.Timestamp("1998-06-30").date())
    spend = GammaGamma().fit(summary)
    good = ModifiedBetaGeo().fit(summary)
    assert failed(check_fit(good, spend, summary, history, good.fit_message_)) == []
    absurd = _absurd_model(summary)
    names = {c.name for c in failed(check_fit(absurd, spend, summary, history, "converged"))}
    assert {"tracking", "customer_purchases", "store_value"} <= names


def test_a_model_that_calls_every_one_time_buyer_alive_is_refused(
    tmp_path: Path, cdnow_sample_db: Path
) -> None:
    path = tmp_path / "forced.duckdb"
    shutil.copy(cdnow_sample_db, path)
    result = runner.invoke(app, ["fit", "--db", str(path), "--unit", "W", "--model", "bgnbd"])
    assert result.exit_code == 2
    assert "check 'one_time_buyers' failed" in result.output
    assert "FAIL one_time_buyers" in result.output and "Traceback" not in result.output
    result = runner.invoke(
        app, ["fit", "--db", str(path), "--unit", "W", "--model", "bgnbd", "--json"]
    )
    assert result.exit_code == 2
    doc = json.loads(result.stdout)
    assert doc["kept"] is False and doc["guard"][0]["model"] == "bgnbd"
    with Store(path) as store:
        kept = store.query("SELECT fit_id, kept FROM model_fits ORDER BY fit_id")
        assert list(kept["kept"]) == [False, False]
        with pytest.raises(StoreError, match="failed the fit guard"):
            load_fit(store)
        with pytest.raises(StoreError, match="failed the fit guard"):
            score_store(store, fit_id=1)
        assert not store.has_table("customer_scores")
        # auto passes BG/NBD over and keeps a model that lets one-time buyers leave
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = fit_store(store, unit="W")
        assert fit.kept and fit.model in ("mbgnbd", "pnbd")
        assert load_fit(store)[2]["fit_id"] == fit.fit_id
        assert fit.choice is not None and "log-likelihood" in fit.choice["criterion"]


def test_cdnow_master_one_time_buyers_silent_for_a_year_are_probably_gone(
    tmp_path: Path,
) -> None:
    """What `make demo` runs: after retain fit and retain score, customers who bought once
    and not in over 365 days are, on average, more likely gone than not (BG/NBD called
    them all alive: mean P(alive) 1)."""
    from retain.datasets import cdnow_path

    with Store(tmp_path / "master.duckdb") as store:
        ingest(store, cdnow_path(sample=False), format="cdnow", as_of="1998-06-30")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = fit_store(store, unit="W")
        score_store(store)
        silent = store.query(
            """
            SELECT s.p_alive
            FROM customer_scores s JOIN (
                SELECT customer_id, count(DISTINCT CAST(ordered_at AS DATE)) AS days,
                       max(ordered_at) AS last
                FROM orders GROUP BY customer_id) o USING (customer_id)
            WHERE o.days = 1 AND o.last < DATE '1998-06-30' - INTERVAL 365 DAY
            """
        )["p_alive"]
    assert fit.kept and fit.model != "bgnbd"
    assert len(silent) > 10_000 and silent.mean() < 0.5
