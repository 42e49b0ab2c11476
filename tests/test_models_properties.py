"""Property tests: for any valid summary, however extreme, the models give finite
parameters, likelihoods and predictions, and probabilities in [0, 1].

Extremes drawn: up to 10,000 repeat purchases, ages T up to 10,000 periods,
T = 0, recency = T, everyone without a repeat purchase.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retain.models import BetaGeo, GammaGamma, ModifiedBetaGeo, ParetoNBD

MODELS = [BetaGeo, ModifiedBetaGeo, ParetoNBD]
FITS = settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
CHEAP = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)


@st.composite
def customer(draw: st.DrawFn) -> tuple[int, float, float]:
    T = draw(st.one_of(st.just(0.0), st.floats(0.0, 10_000.0), st.sampled_from([1.0, 10_000.0])))
    x = draw(st.one_of(st.just(0), st.integers(0, 10_000), st.integers(0, 20)))
    if x == 0 or T == 0:
        return 0, 0.0, T
    recency = draw(st.one_of(st.just(T), st.floats(0.0, T), st.just(0.0)))
    return x, recency, T


@st.composite
def summaries(draw: st.DrawFn) -> pd.DataFrame:
    rows = draw(st.lists(customer(), min_size=1, max_size=25))
    if draw(st.booleans()):
        rows = [(0, 0.0, T) for _, _, T in rows]  # nobody came back
    frame = pd.DataFrame(rows, columns=["frequency", "recency", "T"])
    frame.attrs.update({"unit": "D", "grain": "D"})
    return frame


@st.composite
def parameters(draw: st.DrawFn) -> list[float]:
    return [10 ** draw(st.floats(-3, 3)) for _ in range(4)]


def spend_model() -> GammaGamma:
    model = GammaGamma()
    model.params_ = {"p": 6.0, "q": 3.7, "gamma": 15.0}
    return model


def assert_predictions_are_sane(model, data: pd.DataFrame) -> None:
    p_alive = model.p_alive(data)
    assert np.isfinite(p_alive).all() and ((p_alive >= 0) & (p_alive <= 1)).all()
    for t in (0.0, 1.0, 365.0, 10_000.0):
        expected = model.expected_purchases(data, t)
        assert np.isfinite(expected).all() and (expected >= 0).all()
    for n in (0, 1, 7):
        prob = model.probability_of_purchases(data, n, 30.0)
        assert np.isfinite(prob).all() and ((prob >= 0) & (prob <= 1)).all()
    nxt = model.next_purchase(data, 0.5, horizon=365)
    assert np.isfinite(nxt["next_purchase"]).all()
    assert ((nxt["next_purchase"] >= 0) & (nxt["next_purchase"] <= 365)).all()
    window = model.purchase_window(data, horizon=365)
    assert (window["window_start"] <= window["window_end"] + 1e-9).all()
    clv = model.clv(
        data.assign(monetary=25.0), gamma_gamma=spend_model(), horizon=365, discount_rate=0.1
    )
    assert np.isfinite(clv).all() and (clv >= 0).all()


@pytest.mark.parametrize("model_class", MODELS)
@FITS
@given(data=summaries())
def test_fits_are_finite_on_any_valid_summary(model_class, data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = model_class().fit(data, n_starts=2)
    values = np.array(list(model.params_.values()))
    assert np.all(np.isfinite(values)) and np.all(values > 0)
    assert np.isfinite(model.log_likelihood_)
    assert_predictions_are_sane(model, data)


@pytest.mark.parametrize("model_class", MODELS)
@CHEAP
@given(data=summaries(), params=parameters())
def test_predictions_are_finite_for_any_parameters(model_class, data, params):
    model = model_class()
    model.params_ = dict(zip(model.param_names, params, strict=True))
    model.unit_, model.grain_ = "D", "D"
    assert_predictions_are_sane(model, data)


@pytest.mark.parametrize("model_class", MODELS)
@CHEAP
@given(data=summaries(), params=parameters())
def test_likelihood_and_gradient_are_finite_for_any_parameters(model_class, data, params):
    model = model_class()
    prepared = model._prepare(data, None)
    ll, grad = model._loglik(np.array(params), prepared)
    assert np.isfinite(ll)
    assert np.all(np.isfinite(grad))
