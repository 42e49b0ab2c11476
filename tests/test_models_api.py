"""The models' common API: units, JSON, weights, validation, predictions' consistency."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import polars as pl
import pytest

import retain
from models_helpers import (
    CALIBRATION_END,
    bgnbd,
    cdnow_summary,
    cdnow_transactions,
    customers,
    gamma_gamma,
    pnbd,
)
from retain.errors import DataError, ModelError, SchemaError
from retain.models import BetaGeo, GammaGamma, Model, ModifiedBetaGeo, ParetoNBD
from retain.models.base import to_periods


def daily_summary() -> pd.DataFrame:
    return retain.summarize(cdnow_transactions(), unit="D", observation_end=CALIBRATION_END)


# -- units ---------------------------------------------------------------------------


def test_durations_convert_to_the_data_unit():
    assert to_periods(39, "W") == 39.0
    assert to_periods("39W", "W") == 39.0
    assert to_periods("14D", "W") == 2.0
    assert to_periods("1Y", "D") == 365.25
    assert to_periods("12M", "D") == pytest.approx(365.25)
    assert to_periods(pd.Timedelta(days=7), "W") == 1.0
    with pytest.raises(ValueError, match="not a duration"):
        to_periods("12 fortnights", "D")
    with pytest.raises(ValueError, match="0 or more"):
        to_periods(-3, "D")
    with pytest.raises(ModelError, match="time unit"):
        to_periods("90D", None)


def test_daily_and_weekly_fits_give_the_same_predictions():
    """The same customers summarised in days or weeks: alpha scales by 7, and every
    prediction asked for in calendar terms is the same. Unit slips cannot change CLV."""
    weekly, daily = cdnow_summary(), daily_summary()
    w_model, d_model = bgnbd(), BetaGeo().fit(daily)
    assert d_model.params_["alpha"] == pytest.approx(7 * w_model.params_["alpha"], rel=1e-4)
    assert d_model.params_["r"] == pytest.approx(w_model.params_["r"], rel=1e-4)
    pd.testing.assert_series_equal(w_model.p_alive(weekly), d_model.p_alive(daily), rtol=1e-4)
    pd.testing.assert_series_equal(
        w_model.expected_purchases(weekly, "90D"),
        d_model.expected_purchases(daily, 90),
        rtol=1e-4,
    )
    spend = gamma_gamma()
    w_clv = w_model.clv(weekly, gamma_gamma=spend, horizon="12M", discount_rate=0.1)
    d_clv = d_model.clv(daily, gamma_gamma=spend, horizon="12M", discount_rate=0.1)
    pd.testing.assert_series_equal(w_clv, d_clv, rtol=1e-4)
    w_next = w_model.next_purchase(weekly)
    d_next = d_model.next_purchase(daily)
    assert (w_next["within_horizon"] == d_next["within_horizon"]).all()
    np.testing.assert_allclose(w_next["next_purchase"] * 7, d_next["next_purchase"], rtol=1e-4)


def test_data_in_another_unit_or_grain_is_refused():
    with pytest.raises(ModelError, match=r"time unit is 'D'.*unit='W'"):
        bgnbd().p_alive(daily_summary())
    weekly_grain = retain.summarize(
        cdnow_transactions(), unit="W", grain="W", observation_end=CALIBRATION_END
    )
    with pytest.raises(ModelError, match="grain"):
        pnbd().expected_purchases(weekly_grain, 10)


# -- JSON ----------------------------------------------------------------------------


def test_json_round_trip_keeps_predictions_and_is_small():
    summary = cdnow_summary()
    for model in (bgnbd(), pnbd(), gamma_gamma()):
        text = model.to_json()
        assert len(text) < 2000
        doc = json.loads(text)
        assert doc["unit"] == "W" and doc["grain"] == "D"
        assert doc["observation_end"] == CALIBRATION_END
        loaded = Model.from_json(text)
        assert type(loaded) is type(model)
        assert loaded.params_ == model.params_
        assert loaded.standard_errors_ == pytest.approx(model.standard_errors_)
        if isinstance(model, GammaGamma):
            pd.testing.assert_series_equal(
                loaded.expected_spend(summary), model.expected_spend(summary)
            )
        else:
            pd.testing.assert_series_equal(loaded.p_alive(summary), model.p_alive(summary))


def test_from_json_refuses_other_models_and_garbage():
    with pytest.raises(ModelError, match="holds a bgnbd model"):
        ParetoNBD.from_json(bgnbd().to_json())
    with pytest.raises(ModelError, match="not a retain model"):
        Model.from_json("{}")
    doc = json.loads(bgnbd().to_json())
    doc["params"]["r"] = -1
    with pytest.raises(ModelError, match="positive"):
        Model.from_json(json.dumps(doc))


def test_unfitted_model_says_so():
    with pytest.raises(ModelError, match="not fitted"):
        BetaGeo().p_alive(cdnow_summary())


# -- fitting ---------------------------------------------------------------------------


def test_weights_give_the_same_fit_as_repeated_rows():
    summary = cdnow_summary()
    counted = (
        summary.groupby(["frequency", "recency", "T"]).size().rename("customers").reset_index()
    )
    assert len(counted) < len(summary)
    weighted = BetaGeo().fit(counted, weights="customers", unit="W", grain="D")
    for name, value in bgnbd().params_.items():
        assert weighted.params_[name] == pytest.approx(value, rel=1e-6)
    assert weighted.log_likelihood_ == pytest.approx(bgnbd().log_likelihood_, abs=1e-6)


def test_polars_input_works():
    summary = cdnow_summary()
    frame = pl.from_pandas(summary.reset_index())
    model = BetaGeo().fit(frame, unit="W", grain="D")
    assert model.params_["r"] == pytest.approx(bgnbd().params_["r"], rel=1e-6)
    assert model.p_alive(frame).shape == (len(summary),)


def test_standard_errors_are_positive_and_penalizer_shrinks_towards_one():
    model = bgnbd()
    assert all(
        0 < se < value
        for value, se in zip(model.params_.values(), model.standard_errors_.values(), strict=True)
    )
    summary = model.summary()
    assert (summary["lower_95"] < summary["estimate"]).all()
    assert (summary["estimate"] < summary["upper_95"]).all()
    penalized = BetaGeo(penalizer=0.5).fit(cdnow_summary())
    far = {k: abs(np.log(v)) for k, v in model.params_.items()}
    near = {k: abs(np.log(v)) for k, v in penalized.params_.items()}
    assert sum(near.values()) < sum(far.values())
    assert penalized.log_likelihood_ < model.log_likelihood_


def test_degenerate_data_gives_finite_parameters_and_a_warning():
    nobody_returns = customers([(0, 0.0, float(t)) for t in range(1, 40)])
    with pytest.warns(Warning, match="did not converge"):
        model = BetaGeo().fit(nobody_returns)
    assert not model.converged_
    assert all(np.isfinite(v) and v > 0 for v in model.params_.values())
    assert np.isfinite(model.log_likelihood_)
    assert np.isfinite(model.p_alive(nobody_returns)).all()


@pytest.mark.parametrize(
    ("rows", "column", "message"),
    [
        ([(-1, 0.0, 3.0)], "frequency", "whole number"),
        ([(1.5, 1.0, 3.0)], "frequency", "whole number"),
        ([(1, 4.0, 3.0)], "recency", "at most T"),
        ([(0, 2.0, 3.0)], "recency", "frequency 0"),
        ([(1, 1.0, float("nan"))], "T", "missing or infinite"),
        ([(1, -1.0, 3.0)], "recency", ">= 0"),
    ],
)
def test_bad_summaries_are_refused_with_the_customer_named(rows, column, message):
    frame = customers([(1, 1.0, 3.0), *rows])
    frame.index = ["ok", "bad"]
    with pytest.raises(DataError, match=message) as info:
        BetaGeo().fit(frame)
    assert column in str(info.value) and "'bad'" in str(info.value)


def test_missing_columns_are_refused():
    with pytest.raises(SchemaError, match="recency"):
        BetaGeo().fit(pd.DataFrame({"frequency": [1], "T": [3.0]}))
    with pytest.raises(SchemaError, match="monetary"):
        GammaGamma().fit(pd.DataFrame({"frequency": [1], "T": [3.0]}))


# -- predictions -----------------------------------------------------------------------

SOME = [
    (0, 0.0, 0.0),
    (0, 0.0, 38.0),
    (1, 2.0, 30.0),
    (5, 30.0, 31.0),
    (5, 3.0, 35.0),
    (25, 36.0, 38.0),
]


@pytest.mark.parametrize("model", [bgnbd, pnbd, lambda: ModifiedBetaGeo().fit(cdnow_summary())])
def test_purchase_probabilities_add_up_and_match_the_expectation(model):
    m = model()
    data = customers(SOME)
    probs = np.stack([m.probability_of_purchases(data, n, 26).to_numpy() for n in range(0, 150)])
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-7)
    mean = (np.arange(150)[:, None] * probs).sum(axis=0)
    np.testing.assert_allclose(mean, m.expected_purchases(data, 26).to_numpy(), rtol=1e-6)


@pytest.mark.parametrize("model", [bgnbd, pnbd])
def test_next_purchase_is_the_quantile_of_the_time_to_the_next_purchase(model):
    """The next purchase falls within s exactly when at least one purchase does:
    P(no purchase in next_purchase(q)) must be 1 - q (an independent code path)."""
    m = model()
    data = customers(SOME)
    for q in (0.1, 0.25, 0.5):
        result = m.next_purchase(data, q, horizon=1000)
        assert not result.isna().any().any()
        for i, (time, within) in enumerate(result.itertuples(index=False)):
            if not within:
                # then even by the horizon the chance is below q
                p_none = m.probability_of_purchases(data.iloc[[i]], 0, 1000).iloc[0]
                assert 1 - p_none <= q + 1e-9
                assert time == 1000
                continue
            p_none = m.probability_of_purchases(data.iloc[[i]], 0, time).iloc[0]
            assert 1 - p_none == pytest.approx(q, abs=1e-8)


def test_next_purchase_never_returns_nan_or_inf_and_caps_at_the_horizon():
    data = customers([(1, 1.0, 38.0), (20, 2.0, 38.0), (0, 0.0, 38.0)])
    result = bgnbd().next_purchase(data, 0.9, horizon="26W")
    assert np.isfinite(result["next_purchase"]).all()
    assert (result["next_purchase"] <= 26).all()
    # a once-frequent buyer silent for 36 weeks is probably gone: no 90% date
    assert not result["within_horizon"].iloc[1]
    assert result["next_purchase"].iloc[1] == 26


@pytest.mark.parametrize("model", [bgnbd, pnbd])
def test_purchase_window_brackets_the_median(model):
    m = model()
    data = customers(SOME)
    window = m.purchase_window(data, horizon=500)
    median = m.next_purchase(data, 0.5, horizon=500)["next_purchase"]
    assert (window["window_start"] <= median + 1e-12).all()
    assert (median <= window["window_end"] + 1e-12).all()
    opens = window["start_within_horizon"]
    assert (window["window_start"][opens] < window["window_end"][opens]).all()
    # a customer probably gone has no window: both ends at the horizon, flagged
    assert (window.loc[~opens, ["window_start", "window_end"]] == 500).all().all()
    assert (~opens).sum() >= 1


@pytest.mark.parametrize("model", [bgnbd, pnbd])
def test_clv_discounting_matches_a_fine_sum(model):
    """Continuous discounting at 10% a year: compare with a sum over days of the
    expected purchases in each day, discounted at its middle."""
    m = model()
    data = customers(SOME)
    data["monetary"] = [0.0, 0.0, 20.0, 35.0, 50.0, 30.0]
    spend = gamma_gamma().expected_spend(data).to_numpy()
    clv = m.clv(data, gamma_gamma=gamma_gamma(), horizon="52W", discount_rate=0.1, margin=0.3)
    days = np.arange(0, 365)
    cumulative = np.stack([m.expected_purchases(data, f"{d}D").to_numpy() for d in range(365)])
    increments = np.diff(cumulative, axis=0)
    factor = 1.1 ** (-(days[:-1] + 0.5) / 365.25)
    expected = 0.3 * spend * (factor[:, None] * increments).sum(axis=0)
    np.testing.assert_allclose(clv.to_numpy(), expected, rtol=2e-4)
    undiscounted = m.clv(data, gamma_gamma=gamma_gamma(), horizon="52W", margin=0.3)
    np.testing.assert_allclose(
        undiscounted.to_numpy(), 0.3 * spend * m.expected_purchases(data, 52).to_numpy()
    )
    assert (clv < undiscounted).all() or (clv == undiscounted).all()


def test_bands_of_the_mean_contain_the_estimate_and_widen_with_the_level():
    summary = cdnow_summary().head(300)
    narrow = bgnbd().clv(summary, gamma_gamma=gamma_gamma(), confidence=0.5)
    wide = bgnbd().clv(summary, gamma_gamma=gamma_gamma(), confidence=0.9)
    assert list(wide.columns) == ["clv", "mean_low", "mean_high"]
    assert np.isfinite(wide.to_numpy()).all()
    assert (wide["mean_low"] <= wide["clv"]).all() and (wide["clv"] <= wide["mean_high"]).all()
    assert (wide["mean_low"] <= narrow["mean_low"]).all()
    assert (narrow["mean_high"] <= wide["mean_high"]).all()
    purchases = pnbd().expected_purchases(summary, 39, confidence=0.9)
    assert (purchases["mean_low"] < purchases["expected_purchases"]).all()
    assert (purchases["expected_purchases"] < purchases["mean_high"]).all()
    spend = gamma_gamma().expected_spend(summary, interval=0.9)
    assert (spend["low"] < spend["expected_spend"]).all()


@pytest.mark.parametrize("model", [bgnbd, pnbd])
def test_purchase_ranges_are_the_central_quantiles_of_the_count_distribution(model):
    """low and high are the 5% and 95% points of P(X(39 weeks) = n | history): the
    range holds at least 90%, and is the narrowest such in the quantile sense."""
    summary = cdnow_summary().iloc[::7]
    result = model().expected_purchases(summary, 39, interval=0.9)
    low, high = result["low"].to_numpy(), result["high"].to_numpy()
    assert (low == np.round(low)).all() and (low <= high).all()
    top = int(high.max())
    pmf = np.stack(
        [model().probability_of_purchases(summary, n, 39).to_numpy() for n in range(top + 1)]
    )
    cdf = np.cumsum(pmf, axis=0)
    rows = np.arange(len(summary))
    below_high = cdf[high.astype(int), rows]
    below_low = np.where(low > 0, cdf[np.maximum(low.astype(int) - 1, 0), rows], 0.0)
    assert (below_high >= 0.95 - 1e-9).all()
    assert (below_low <= 0.05 + 1e-9).all()
    # one purchase fewer at the top would leave more than 5% above
    fewer = cdf[np.maximum(high.astype(int) - 1, 0), rows]
    assert (fewer[high > 0] < 0.95).all()
    wide = model().expected_purchases(summary, 39, interval=0.98)
    assert (wide["low"] <= result["low"]).all() and (result["high"] <= wide["high"]).all()


@pytest.mark.parametrize(("grain", "horizon"), [("D", 39.0), ("W", 2.5)])
def test_count_distribution_by_blocks_of_counts_is_the_one_count_by_count(grain, horizon):
    """BG/NBD's counts taken 16 at a time: the same entries (pair, count) as one count at
    a time, the same probabilities to rounding; with grain W the 2.5 weeks allow at most
    3 purchases, and the last holds the mass left."""
    summary = retain.summarize(
        cdnow_transactions(), unit="W", grain=grain, observation_end=CALIBRATION_END
    )
    model = BetaGeo().fit(summary)
    rows = model._customers(summary).rows
    blocks = model._count_distribution(rows, horizon)
    model.pmf_block = 1
    single = model._count_distribution(rows, horizon)
    for name in ("row_pair", "pair", "n", "start", "size"):
        np.testing.assert_array_equal(getattr(blocks, name), getattr(single, name))
    np.testing.assert_allclose(blocks.pmf, single.pmf, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(blocks.cdf, single.cdf, rtol=1e-12)
    if grain == "W":
        assert blocks.n.max() == 3  # the cap, in the first block
    else:
        assert blocks.n.max() > 16  # past the first block
    last = blocks.start + blocks.size - 1
    np.testing.assert_allclose(blocks.cdf[last], 1.0, atol=1e-6)


def test_quantile_searches_give_the_same_ranges_in_any_order_of_the_rows():
    """The count and spend quantiles look the rows' targets up in the order given (one
    sort shared by the scoring's searches): the order changes nothing."""
    from retain.models.base import _search_order

    model, gg = bgnbd(), gamma_gamma()
    rows = model._customers(cdnow_summary()).rows
    p_alive = np.clip(model._p_alive(rows.x, rows.recency, rows.T), 0.0, 1.0)
    dist = model._count_distribution(rows, 39.0)
    spend = tuple(gg.params_[k] for k in ("p", "q", "gamma"))
    shared = _search_order(dist.row_pair, p_alive)
    shuffled = np.random.default_rng(5).permutation(p_alive.size)
    for level in (0.05, 0.5, 0.95):
        alone = model._count_quantile(dist, p_alive, level)
        assert alone.max() > 0
        for order in (shared, shuffled):
            np.testing.assert_array_equal(model._count_quantile(dist, p_alive, level, order), alone)
    alone = model._spend_quantiles(dist, p_alive, spend, (0.05, 0.95))
    for order in (shared, shuffled):
        for got, want in zip(
            model._spend_quantiles(dist, p_alive, spend, (0.05, 0.95), order), alone, strict=True
        ):
            np.testing.assert_array_equal(got, want)


def test_value_ranges_widen_with_the_level_and_scale_with_the_margin():
    summary = cdnow_summary().head(400)
    kwargs = {"gamma_gamma": gamma_gamma(), "horizon": 39}
    narrow = pnbd().clv(summary, interval=0.5, **kwargs)
    wide = pnbd().clv(summary, interval=0.9, **kwargs)
    assert list(wide.columns) == ["clv", "low", "high"]
    assert np.isfinite(wide.to_numpy()).all()
    assert ((wide["low"] >= 0) & (wide["low"] <= wide["high"])).all()
    assert (wide["low"] <= narrow["low"] + 1e-9).all()
    assert (narrow["high"] <= wide["high"] + 1e-9).all()
    half = pnbd().clv(summary, interval=0.9, margin=0.5, **kwargs)
    np.testing.assert_allclose(half[["low", "high"]], 0.5 * wide[["low", "high"]])
    discounted = pnbd().clv(summary, interval=0.9, discount_rate=0.2, **kwargs)
    assert (discounted["high"] <= wide["high"] + 1e-9).all()


def test_value_range_of_one_sure_purchase_is_the_spend_distribution():
    """A customer certain to buy exactly once: S / (gamma + x m) is beta-prime(p, q + p x),
    so its 5% and 95% points are known in closed form."""
    from scipy import stats

    model = bgnbd()
    gg = gamma_gamma()
    p, q, g = (gg.params_[k] for k in ("p", "q", "gamma"))
    summary = cdnow_summary().head(50)
    c = model._customers(summary)
    x = c.rows.x
    dist = model._count_distribution(c.rows, 39.0)
    # replace the counts by "exactly one purchase" for every pair
    one = dist.n == 1
    dist.pmf = np.where(one, 1.0, 0.0)
    dist.cdf = np.where(dist.n >= 1, 1.0, 0.0)
    v_low, v_high = model._spend_quantiles(dist, np.ones(x.size), (p, q, g), (0.05, 0.95))
    expected_low = stats.betaprime.ppf(0.05, p, q + p * x)
    expected_high = stats.betaprime.ppf(0.95, p, q + p * x)
    np.testing.assert_allclose(v_low, expected_low, rtol=2e-3)
    np.testing.assert_allclose(v_high, expected_high, rtol=2e-3)


def test_predictions_keep_the_callers_index_and_order():
    summary = cdnow_summary().sample(50, random_state=1)
    p_alive = pnbd().p_alive(summary)
    assert list(p_alive.index) == list(summary.index)
    single = pnbd().p_alive(summary.iloc[[7]])
    assert single.iloc[0] == p_alive.iloc[7]


def test_bad_prediction_arguments_are_refused():
    data = customers(SOME)
    with pytest.raises(ValueError, match="quantile"):
        bgnbd().next_purchase(data, 1.5)
    with pytest.raises(ValueError, match="per year"):
        bgnbd().clv(data.assign(monetary=1.0), gamma_gamma=gamma_gamma(), discount_rate=-0.1)
    with pytest.raises(ValueError, match="whole number"):
        bgnbd().probability_of_purchases(data, -1, 10)
    with pytest.raises(TypeError, match="GammaGamma"):
        bgnbd().clv(data, gamma_gamma=bgnbd())


def test_gamma_gamma_skips_non_positive_spend_with_a_warning():
    summary = cdnow_summary().copy()
    first_repeat = summary.index[summary["frequency"] > 0][0]
    summary.loc[first_repeat, "monetary"] = -5.0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = GammaGamma().fit(summary)
    assert any("left out" in str(w.message) for w in caught)
    assert model.n_customers_ == 945
    assert model.expected_spend(summary).loc[first_repeat] > 0


def test_expected_repeat_purchases_of_a_new_customer_are_the_papers_formulas():
    """E[X(t)] of a customer drawn at random: BG/NBD (Fader, Hardie & Lee 2005, eq. 7)
    and Pareto/NBD (Schmittlein, Morrison & Colombo 1987): the closed forms."""
    from scipy.special import hyp2f1

    t = np.array([0.0, 1.0, 13.0, 39.0, 78.0, 520.0])
    model = bgnbd()
    r, alpha, a, b = (model.params_[k] for k in ("r", "alpha", "a", "b"))
    closed = (
        (a + b - 1)
        / (a - 1)
        * (1 - (alpha / (alpha + t)) ** r * hyp2f1(r, b, a + b - 1, t / (alpha + t)))
    )
    np.testing.assert_allclose(model.expected_repeat_purchases(t), closed, rtol=1e-9, atol=1e-12)
    assert model.expected_repeat_purchases("39W") == pytest.approx(closed[3], rel=1e-9)
    assert model.expected_repeat_purchases(t.reshape(2, 3)).shape == (2, 3)

    pareto = pnbd()
    r, alpha, s, beta = (pareto.params_[k] for k in ("r", "alpha", "s", "beta"))
    closed = r * beta / (alpha * (s - 1)) * (1 - (beta / (beta + t)) ** (s - 1))
    np.testing.assert_allclose(pareto.expected_repeat_purchases(t), closed, rtol=1e-7, atol=1e-12)
    with pytest.raises(ValueError, match="0 or more"):
        model.expected_repeat_purchases([-1.0])


def test_a_spend_fit_does_not_depend_on_the_rows_order() -> None:
    """The same customers in another order give the same Gamma-Gamma fit to the last bit,
    even where the likelihood is flat along a ridge and the optimiser's stop is arbitrary."""
    import warnings

    from retain import summarize
    from retain.datasets import load_cdnow
    from retain.models import GammaGamma

    summary = summarize(load_cdnow(sample=True), unit="W")
    shuffled = summary.sample(frac=1.0, random_state=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a, b = GammaGamma().fit(summary), GammaGamma().fit(shuffled)
    assert a.params_ == b.params_
