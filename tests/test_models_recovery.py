"""Self-consistency: the models recover the parameters of data simulated from them
(fixed seeds), and a fit on many distinct rows (a weighted sample first, then all
rows) lands on the same optimum as a fit on all rows from the start."""

from __future__ import annotations

from functools import cache

import numpy as np
import pandas as pd
import pytest

from retain.models import BetaGeo, ModifiedBetaGeo, ParetoNBD

N = 150_000


def summary_frame(x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> pd.DataFrame:
    """In weeks, times rounded to whole days as retain.summarize gives them."""
    T = np.ceil(T * 7) / 7
    t_x = np.minimum(np.floor(t_x * 7) / 7, T)
    frame = pd.DataFrame({"frequency": x, "recency": t_x, "T": T})
    frame.attrs.update({"unit": "W", "grain": "D"})
    return frame


@cache
def simulate_bg(modified: bool, seed: int = 7) -> pd.DataFrame:
    """BG/NBD (or MBG/NBD) histories: Poisson purchases at rate lambda ~ Gamma(r, alpha),
    dropout with probability p ~ Beta(a, b) after each purchase (MBG: also after the
    first). Loops run over purchase numbers, vectorised over customers."""
    rng = np.random.default_rng(seed)
    r, alpha, a, b = 0.5, 8.0, 0.8, 2.5
    lam = rng.gamma(r, 1 / alpha, N)
    p = rng.beta(a, b, N)
    T = rng.uniform(1.0, 150.0, N)
    alive = np.ones(N, dtype=bool) if not modified else rng.random(N) > p
    now = np.zeros(N)
    x = np.zeros(N)
    t_x = np.zeros(N)
    while alive.any():
        now = now + rng.exponential(1.0, N) / lam
        bought = alive & (now <= T)
        x[bought] += 1
        t_x[bought] = now[bought]
        alive = bought & (rng.random(N) > p)
    return summary_frame(x, t_x, T)


@cache
def simulate_pareto(seed: int = 11) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    r, alpha, s, beta = 0.6, 10.0, 0.7, 12.0
    lam = rng.gamma(r, 1 / alpha, N)
    death = rng.exponential(1.0, N) / rng.gamma(s, 1 / beta, N)
    T = rng.uniform(1.0, 150.0, N)
    end = np.minimum(death, T)
    now = np.zeros(N)
    x = np.zeros(N)
    t_x = np.zeros(N)
    active = np.ones(N, dtype=bool)
    while active.any():
        now = now + rng.exponential(1.0, N) / lam
        active = active & (now <= end)
        x[active] += 1
        t_x[active] = now[active]
    return summary_frame(x, t_x, T)


TRUTH = {
    BetaGeo: {"r": 0.5, "alpha": 8.0, "a": 0.8, "b": 2.5},
    ModifiedBetaGeo: {"r": 0.5, "alpha": 8.0, "a": 0.8, "b": 2.5},
    ParetoNBD: {"r": 0.6, "alpha": 10.0, "s": 0.7, "beta": 12.0},
}


def data_for(model_class: type) -> pd.DataFrame:
    if model_class is ParetoNBD:
        return simulate_pareto()
    return simulate_bg(model_class is ModifiedBetaGeo)


@pytest.mark.parametrize("model_class", [BetaGeo, ModifiedBetaGeo, ParetoNBD])
def test_parameters_are_recovered_within_their_standard_errors(model_class):
    model = model_class().fit(data_for(model_class))
    assert model.converged_
    for name, truth in TRUTH[model_class].items():
        estimate, se = model.params_[name], model.standard_errors_[name]
        assert abs(estimate - truth) < 4 * se, (name, estimate, truth, se)


@pytest.mark.parametrize("model_class", [BetaGeo, ParetoNBD])
def test_the_sampled_start_reaches_the_same_optimum(model_class):
    data = data_for(model_class)
    assert len(data.drop_duplicates()) > 60_000  # enough distinct rows for the sampled start
    staged = model_class().fit(data)
    direct = model_class()
    direct._subsample = lambda prepared, rng: None  # type: ignore[method-assign]
    direct.fit(data)
    assert staged.log_likelihood_ == pytest.approx(direct.log_likelihood_, abs=1e-6)
    for name, value in direct.params_.items():
        assert staged.params_[name] == pytest.approx(value, rel=1e-5)
        assert staged.standard_errors_[name] == pytest.approx(
            direct.standard_errors_[name], rel=1e-3
        )
