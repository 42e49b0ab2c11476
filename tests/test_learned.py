"""The learned churn and value model (retain.models.learned) on small generated stores."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from retain.errors import ArgumentError, DataError
from retain.models import ConvergenceWarning
from retain.models.learned import (
    ISOTONIC_PRIOR,
    LearnedModel,
    SharedCutoffs,
    _reason,
    isotonic_apply,
    isotonic_fit,
)
from retain.store import Store
from store_helpers import insert_frames

START = pd.Timestamp("2023-01-01")
CALIBRATION_END = "2023-12-31"
OBSERVED_TO = pd.Timestamp("2024-03-31")


def population(n: int, seed: int) -> pd.DataFrame:
    """Orders of ``n`` customers: half regular (every 14 +- 2 days), half irregular
    (exponential gaps, mean 30 days); each leaves after a random time (mean 200 days)."""
    rng = np.random.default_rng(seed)
    first = START + pd.to_timedelta(rng.integers(0, 90, n), unit="D")
    regular = np.arange(n) % 2 == 0
    gaps = np.where(
        regular[:, None],
        rng.integers(12, 17, (n, 40)),
        np.ceil(rng.exponential(30.0, (n, 40))),
    )
    offsets = np.concatenate([np.zeros((n, 1)), np.cumsum(gaps, axis=1)], axis=1)
    life = rng.exponential(200.0, n)
    keep = offsets <= life[:, None]
    who, k = np.nonzero(keep)
    when = first[who] + pd.to_timedelta(offsets[who, k], unit="D")
    frame = pd.DataFrame(
        {
            "order_id": [f"o{i}-{j}" for i, j in zip(who, k, strict=True)],
            "customer_id": [f"c{i:04d}" for i in who],
            "ordered_at": when,
            "net_revenue": np.round(rng.gamma(4.0, 10.0, who.size), 2),
            "channel": np.where(regular[who], "email", "search"),
        }
    )
    return frame[frame["ordered_at"] <= OBSERVED_TO].reset_index(drop=True)


#: a hand-made customer: purchases on days 0, 10 (two orders) and 30 after 2023-06-01,
#: then silent; the last order discounted
HAND = pd.DataFrame(
    {
        "order_id": ["h1", "h2", "h3", "h4"],
        "customer_id": ["hand"] * 4,
        "ordered_at": pd.to_datetime(
            ["2023-06-01 10:00", "2023-06-11 09:00", "2023-06-11 18:00", "2023-07-01 12:00"]
        ),
        "net_revenue": [10.0, 5.0, 15.0, 30.0],
        "gross": [np.nan, np.nan, np.nan, 35.0],
        "discount": [np.nan, np.nan, np.nan, 5.0],
        "channel": ["shop", None, None, None],
    }
)

#: a regular customer (every 14 days, ten purchase days) silent for 140 days at the
#: calibration end: ten times the usual gap
SILENT = pd.DataFrame(
    {
        "order_id": [f"s{i}" for i in range(10)],
        "customer_id": ["silent"] * 10,
        "ordered_at": pd.Timestamp("2023-12-31") - pd.to_timedelta(140 + 14 * np.arange(10), "D"),
        "net_revenue": [40.0] * 10,
        "channel": ["email"] * 10,
    }
)


def build(path: Path, *frames: pd.DataFrame) -> Path:
    with Store(path) as store:
        for frame in frames:
            insert_frames(store, {"orders": frame})
    return path


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("learned")
    return build(folder / "store.duckdb", population(800, 1), HAND, SILENT)


@pytest.fixture(scope="module")
def fitted(store_path: Path) -> LearnedModel:
    with Store(store_path, read_only=True) as store, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return LearnedModel(horizons=(30, 90), seed=3, base="bgnbd").fit(store, CALIBRATION_END)


def test_predict_has_the_contract_columns(fitted: LearnedModel, store_path: Path) -> None:
    with Store(store_path, read_only=True) as store:
        predicted = fitted.predict(store, CALIBRATION_END)
        known = store.scalar(
            "SELECT count(DISTINCT customer_id) FROM orders WHERE ordered_at < '2024-01-01'"
        )
    assert list(predicted.columns) == [
        f"{kind}_{h}d"
        for h in (30, 90)
        for kind in ("p_buy", "expected_purchases", "expected_revenue")
    ]
    assert predicted.index.name == "customer_id"
    assert len(predicted) == known
    values = predicted.to_numpy()
    assert np.all(np.isfinite(values)) and np.all(values >= 0)
    assert np.all(predicted["p_buy_30d"] <= 1) and np.all(predicted["p_buy_90d"] <= 1)
    # more time, more purchases expected on the whole
    assert predicted["expected_purchases_90d"].sum() > predicted["expected_purchases_30d"].sum()


def test_features_of_a_hand_made_customer(fitted: LearnedModel, store_path: Path) -> None:
    with Store(store_path, read_only=True) as store:
        row = fitted.features(store, "2023-07-10").loc["hand"]
    # purchase days 06-01, 06-11, 07-01 (two orders on 06-11); as of 07-10
    expected = {
        "recency_days": 9.0,
        "frequency": 2.0,
        "tenure_days": 39.0,
        "span_days": 30.0,
        "mean_gap_days": 15.0,
        "std_gap_days": 5.0,
        "gap_cv": 5.0 / 15.0,
        "silent_over_gap": 9.0 / 15.0,
        "last_gap_over_gap": 20.0 / 15.0,
        "mean_spend": 15.0,
        "total_spend": 60.0,
        "spend_trend": (5.0 + 15.0 + 30.0) / 3 / 15.0,
        "discount_share": 5.0 / 35.0,
        "orders_30d": 3.0,  # 06-11 (twice) and 07-01 are within the 30 days to 07-10
        "orders_90d": 4.0,
        "orders_365d": 4.0,
    }
    for name, value in expected.items():
        assert row[name] == pytest.approx(value), name
    assert np.isnan(row["refund_share"])  # no refunded column filled: missing, not an error
    assert fitted.channels_ == ["email", "search", "shop"]
    assert row["first_channel"] == 2.0  # the first order's channel, "shop", as its code
    assert 0 < row["btyd_p_alive"] <= 1


def test_a_planted_order_after_the_calibration_end_changes_nothing(
    fitted: LearnedModel, store_path: Path, tmp_path: Path
) -> None:
    planted = tmp_path / "planted.duckdb"
    shutil.copy(store_path, planted)
    later = pd.DataFrame(
        {
            "order_id": ["late1", "late2"],
            "customer_id": ["c0001", "newcomer"],
            "ordered_at": pd.to_datetime(["2024-01-01 00:00", "2024-01-02 08:00"]),
            "net_revenue": [999.0, 50.0],
            "channel": ["email", "email"],
        }
    )
    with Store(planted) as store:
        insert_frames(store, {"orders": later})
    with Store(planted, read_only=True) as store, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = LearnedModel(horizons=(30, 90), seed=3, base="bgnbd").fit(store, CALIBRATION_END)
        features = again.features(store, CALIBRATION_END)
        predicted = again.predict(store, CALIBRATION_END)
    with Store(store_path, read_only=True) as store:
        pd.testing.assert_frame_equal(features, fitted.features(store, CALIBRATION_END))
        pd.testing.assert_frame_equal(predicted, fitted.predict(store, CALIBRATION_END))
    assert again.card()["horizons"] == fitted.card()["horizons"]


def test_deterministic_with_a_seed_and_json_round_trip(
    fitted: LearnedModel, store_path: Path
) -> None:
    with Store(store_path, read_only=True) as store, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = LearnedModel(horizons=(30, 90), seed=3, base="bgnbd").fit(store, CALIBRATION_END)
        first = fitted.predict(store, CALIBRATION_END)
        pd.testing.assert_frame_equal(again.predict(store, CALIBRATION_END), first)
        loaded = LearnedModel.from_json(fitted.to_json())
        pd.testing.assert_frame_equal(loaded.predict(store, CALIBRATION_END), first)
        assert loaded.card() == fitted.card()


def test_cut_offs_shared_between_fits_give_the_same_models(store_path: Path) -> None:
    # two origins a quarter apart (as a backtest fits them) train on some of the same
    # cut-offs; shared, each is prepared once, and every prediction is as when alone
    # (a third with other horizons: other features, so nothing of the others' is used)
    fits = (("2023-09-30", (30, 90)), (CALIBRATION_END, (30, 90)), (CALIBRATION_END, (60,)))
    shared = SharedCutoffs()
    with Store(store_path, read_only=True) as store, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for origin, horizons in fits:
            alone = LearnedModel(horizons=horizons, seed=3, base="bgnbd").fit(store, origin)
            reused = LearnedModel(horizons=horizons, seed=3, base="bgnbd", shared=shared)
            reused.fit(store, origin)
            pd.testing.assert_frame_equal(
                reused.predict(store, origin), alone.predict(store, origin)
            )
            assert reused.card() == {**alone.card(), "fitted_at": reused.card()["fitted_at"]}
    assert 0 < len(shared._entries) <= shared.size


def test_card_says_what_it_was_trained_on(fitted: LearnedModel, store_path: Path) -> None:
    with Store(store_path, read_only=True) as store, warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        card = (
            LearnedModel(horizons=(30, 90), seed=3, base="bgnbd").fit(store, CALIBRATION_END).card()
        )
    # the base fits' convergence warnings go to the card, not to the caller
    assert not [w for w in seen if issubclass(w.category, ConvergenceWarning)]
    assert card == fitted.card() | {"fitted_at": card["fitted_at"]}
    assert isinstance(card["warnings"], list)
    by_horizon = {h["horizon_days"]: h for h in card["horizons"]}
    # monthly cut-offs: for 30 days the latest (11-30) calibrates, 10-31 and 09-30 train
    assert by_horizon[30]["calibration_cutoff"] == "2023-11-30"
    assert by_horizon[30]["cutoffs"] == ["2023-10-31", "2023-09-30"]
    assert by_horizon[30]["calibrated"]
    assert by_horizon[90]["cutoffs"] == ["2023-08-31", "2023-07-31"]
    assert all(h["label_window_days"] == h["horizon_days"] for h in card["horizons"])
    assert "silent_over_gap" in card["features"] and "btyd_p_alive" in card["features"]


def test_a_horizon_longer_than_the_history_uses_the_longest_window(store_path: Path) -> None:
    with Store(store_path, read_only=True) as store, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = LearnedModel(horizons=(400,), seed=0, base="bgnbd").fit(store, CALIBRATION_END)
        predicted = model.predict(store, CALIBRATION_END)
    (entry,) = model.card()["horizons"]
    # the first order is on 2023-01-01: the earliest cut-off 60 days on is 2023-03-31
    assert entry["cutoffs"] == ["2023-03-31"]
    assert entry["label_window_days"] == 275
    assert "400-day" in entry["assumption"] and not entry["calibrated"]
    # its rounds chosen out of time: the latest cut-off holding half its window or more
    assert entry["rounds_chosen_on"] == "the 153 days after 2023-07-31"
    assert np.all(np.isfinite(predicted.to_numpy()))


def test_explain_names_recency_for_a_long_silent_regular_buyer(
    fitted: LearnedModel, store_path: Path
) -> None:
    with Store(store_path, read_only=True) as store:
        reasons = fitted.explain(store, CALIBRATION_END, ["silent"], top=3, horizon=90)
    top = reasons["silent"]
    assert len(top) == 3
    silence = [r for r in top if r["feature"] in ("recency_days", "silent_over_gap")]
    assert silence, top
    assert silence[0]["contribution"] < 0
    assert "orders every 14 days; silent for 140" in silence[0]["text"]
    assert silence[0]["text"].endswith("(raises risk)")


def test_bad_input_is_refused(fitted: LearnedModel, store_path: Path) -> None:
    with pytest.raises(ArgumentError, match="horizons"):
        LearnedModel(horizons=(0,))
    with pytest.raises(ArgumentError, match="base model"):
        LearnedModel(base="nope")
    with Store(store_path, read_only=True) as store:
        with pytest.raises(DataError, match="nobody"):
            fitted.explain(store, CALIBRATION_END, ["nobody"])
        with pytest.raises(ArgumentError, match="as_of"):
            fitted.predict(store, "not a date")


def test_isotonic_is_the_pooled_monotone_fit() -> None:
    knots, values = isotonic_fit(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.0, 1.0, 0.0, 1.0]))
    # 1 then 0 pool to 0.5; each block's share drawn towards its mean chance by
    # ISOTONIC_PRIOR customers: (0 + 0.1 m) / (1 + m), (1 + 0.25 * 2 m) / (2 + 2 m)...
    m = ISOTONIC_PRIOR
    assert knots.tolist() == [0.1, 0.3, 0.4]
    expected = [0.1 * m / (1 + m), (1 + 0.25 * m) / (2 + m), (1 + 0.4 * m) / (1 + m)]
    assert values == pytest.approx(expected)
    applied = isotonic_apply(np.array([0.0, 0.35, 1.0]), knots, values)
    assert applied == pytest.approx([expected[0], (expected[1] + expected[2]) / 2, expected[2]])


def test_a_small_silent_block_does_not_calibrate_a_chance_to_zero() -> None:
    # eight customers the model gives 20-30%, none of whom bought: a chance of 0 for
    # everyone there (and an infinite log-loss for the next who buys) was the pooled fit
    p = np.concatenate([np.linspace(0.2, 0.3, 8), np.linspace(0.5, 0.9, 400)])
    y = np.concatenate([np.zeros(8), (np.arange(400) % 10 < 7).astype(float)])
    _, values = isotonic_fit(p, y)
    assert values[0] == pytest.approx(0.25 * ISOTONIC_PRIOR / (8 + ISOTONIC_PRIOR))
    assert np.all(np.diff(values) >= 0) and values[-1] == pytest.approx(0.7, abs=0.05)


def test_reasons_read_the_customers_numbers() -> None:
    row = {"spend_trend": 0.6, "mean_gap_days": 21.0, "recency_days": 64.0, "frequency": 3.0}
    assert _reason("spend_trend", row, -0.4, []) == (
        "the last 3 orders 40% below the usual spend (raises risk)"
    )
    assert _reason("silent_over_gap", row, -0.9, []) == (
        "orders every 21 days; silent for 64 (raises risk)"
    )
    assert _reason("frequency", row, 0.2, []) == "bought on 4 days (lowers risk)"
    assert _reason("first_channel", {"first_channel": 1.0}, 0.1, ["email", "shop"]) == (
        "first ordered through shop (lowers risk)"
    )
