"""The learned model against the chosen BTYD model (retain.challenge): kept only when it
wins on the fit's holdout; its scores and reasons once kept."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from retain.challenge import REASON_CUSTOMERS, challenge, score_learned
from retain.store import Store
from retain.validate import holdout_data
from store_helpers import insert_frames

START = pd.Timestamp("2023-01-01")
END = dt.date(2024, 6, 30)
CALIBRATION_END = dt.date(2024, 3, 31)


def orders(n: int, seed: int, *, regular: bool) -> pd.DataFrame:
    """Orders of ``n`` customers from 2023-01-01 to :data:`END`. ``regular``: every
    customer buys every 14 +- 2 days and leaves after an exponential time (mean 150
    days), so that a silence longer than the rhythm says they left (what the BTYD
    models, with their Poisson purchases, read slowly); otherwise the BG/NBD story:
    exponential gaps (mean 30 days) and a 20% chance of leaving after each purchase."""
    rng = np.random.default_rng(seed)
    first = rng.integers(0, 120, n)
    if regular:
        gaps = rng.integers(12, 17, (n, 60)).astype(float)
        life = rng.exponential(150.0, n)
    else:
        gaps = np.ceil(rng.exponential(30.0, (n, 60)))
        life = np.full(n, np.inf)
    offsets = np.concatenate([np.zeros((n, 1)), np.cumsum(gaps, axis=1)], axis=1)
    keep = offsets <= life[:, None]
    if not regular:  # leaves after each purchase with probability 0.2
        keep &= np.cumprod(rng.random(offsets.shape) >= 0.2, axis=1) > 0
        keep[:, 0] = True
    who, k = np.nonzero(keep)
    when = START + pd.to_timedelta(first[who] + offsets[who, k], unit="D")
    frame = pd.DataFrame(
        {
            "order_id": [f"o{i}-{j}" for i, j in zip(who, k, strict=True)],
            "customer_id": [f"c{i:04d}" for i in who],
            "ordered_at": when + pd.Timedelta(hours=12),
            "net_revenue": np.round(rng.gamma(4.0, 10.0, who.size), 2),
        }
    )
    return frame[frame["ordered_at"] < pd.Timestamp(END) + pd.Timedelta(days=1)]


def _store(path: Path, frame: pd.DataFrame) -> Store:
    store = Store(path)
    customers = pd.DataFrame({"customer_id": frame["customer_id"].unique()})
    return insert_frames(store, {"customers": customers, "orders": frame})


def _verdict(tmp_path: Path, *, regular: bool) -> tuple[object, dict]:
    store = _store(tmp_path / "s.duckdb", orders(800, 3, regular=regular))
    try:
        held = holdout_data(store, CALIBRATION_END, holdout_end=END, unit="D", grain="D")
        return challenge(store, held, "pnbd", END)
    finally:
        store.close()


def test_the_learned_model_is_kept_where_it_wins(tmp_path: Path) -> None:
    model, verdict = _verdict(tmp_path, regular=True)
    assert verdict["kept"] is True and model is not None
    assert verdict["difference_low"] > 0
    assert verdict["learned"]["log_loss"] < verdict["btyd"]["log_loss"]
    assert "beats pnbd" in verdict["reason"]
    assert model.horizons == (30, 90, 365)
    assert verdict["card"]["calibration_end"] == END.isoformat()


def test_the_learned_model_is_not_kept_where_the_btyd_story_holds(tmp_path: Path) -> None:
    model, verdict = _verdict(tmp_path, regular=False)
    assert model is None and verdict["kept"] is False
    assert verdict["difference_low"] <= 0  # not clearly better: the BTYD model stays
    assert "pnbd stays" in verdict["reason"]
    # the figures behind the verdict are there either way
    assert verdict["learned"]["log_loss"] > 0 and verdict["btyd"]["log_loss"] > 0
    assert verdict["customers"] > verdict["buyers"] > 0


def test_a_learned_model_that_cannot_train_is_not_kept(tmp_path: Path) -> None:
    # four weeks of history: no monthly cut-off before the calibration end
    frame = orders(300, 5, regular=True)
    frame = frame[frame["ordered_at"] >= pd.Timestamp("2024-03-05")]
    store = _store(tmp_path / "s.duckdb", frame)
    try:
        held = holdout_data(store, CALIBRATION_END, holdout_end=END, unit="D", grain="D")
        model, verdict = challenge(store, held, "bgnbd", END)
    finally:
        store.close()
    assert model is None and verdict["kept"] is False
    assert "could not be trained" in verdict["reason"]
    assert "learned" not in verdict and verdict["btyd"]["auc"] is not None


def test_scores_and_reasons_of_a_kept_model(tmp_path: Path) -> None:
    store = _store(tmp_path / "s.duckdb", orders(800, 3, regular=True))
    try:
        held = holdout_data(store, CALIBRATION_END, holdout_end=END, unit="D", grain="D")
        model, _ = challenge(store, held, "pnbd", END)
        assert model is not None
        written = score_learned(store, model.to_json(), 7, END)
        table = store.query("SELECT * FROM learned_scores ORDER BY customer_id")
        customers = store.scalar("SELECT count(DISTINCT customer_id) FROM orders")
    finally:
        store.close()
    assert written["customers"] == len(table) == customers
    assert (table["fit_id"] == 7).all()
    assert (pd.to_datetime(table["as_of"]).dt.date == END).all()
    for h in (30, 90, 365):
        assert table[f"p_buy_{h}d"].between(0, 1).all()
        assert (table[f"expected_purchases_{h}d"] >= 0).all()
    # a longer window cannot make a purchase less likely
    assert (table["p_buy_90d"] >= table["p_buy_30d"] - 1e-12).all()
    assert (table["p_buy_365d"] >= table["p_buy_90d"] - 1e-12).all()
    reasons = table["reasons"].dropna()
    assert written["reasons"] == len(reasons)
    # without customer_scores, the customers least likely to buy within 90 days
    assert 0 < len(reasons) <= REASON_CUSTOMERS
    assert table.loc[reasons.index, "p_buy_90d"].max() < 0.5
    assert not reasons.str.contains("base model").any()
    assert not reasons.str.contains("lowers risk").any()


@pytest.mark.parametrize("same_day", [True, False])
def test_the_win_back_list_carries_the_learned_reasons(tmp_path: Path, same_day: bool) -> None:
    from retain.segments import winback_list

    store = _store(tmp_path / "s.duckdb", orders(400, 9, regular=True))
    try:
        listed = winback_list(store, as_of=END, limit=5)
        ids = list(listed["customer_id"])
        assert ids
        as_of = END if same_day else END - dt.timedelta(days=1)
        store.con.execute(
            "CREATE TABLE learned_scores AS SELECT unnest(?) AS customer_id, "
            "CAST(? AS DATE) AS as_of, 'silent for 99 days' AS reasons",
            [ids, as_of],
        )
        again = winback_list(store, as_of=END, limit=5)
    finally:
        store.close()
    if same_day:
        assert list(again["reason"]) == [
            f"{r}; the learned model: silent for 99 days" for r in listed["reason"]
        ]
    else:  # scores of another day say nothing of this one
        assert list(again["reason"]) == list(listed["reason"])


def test_a_rescored_customer_loses_the_learned_figures_of_before(tmp_path: Path) -> None:
    """After an order (the service rescores its customer), that customer's learned
    figures and reasons are from before it: they go until the next full scoring; the
    other customers keep theirs."""
    from retain.scoring import fit_store, rescore_customers, score_store

    store = _store(tmp_path / "s.duckdb", orders(800, 3, regular=True))
    try:
        report = fit_store(store, as_of=END, learned=True)
        assert report.learned and report.learned["kept"], report.learned
        score_store(store, as_of=END)
        before = store.query("SELECT customer_id FROM learned_scores ORDER BY customer_id")
        ids = list(before["customer_id"][:3])
        rescore_customers(store, ids)
        after = store.query("SELECT customer_id FROM learned_scores ORDER BY customer_id")
    finally:
        store.close()
    assert set(after["customer_id"]) == set(before["customer_id"]) - set(ids)
