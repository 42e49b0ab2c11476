"""The numerics under the models, against independent computations (SciPy quadrature
of the defining integrals, SciPy's hyp2f1 where it is reliable, finite differences)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, special, stats

from retain.models import BetaGeo, BetaGeoBetaBinom, GammaGamma, ModifiedBetaGeo, ParetoNBD
from retain.models import ShiftedBetaGeometric as SBG
from retain.models._special import (
    expm1_ratio,
    hyper_series,
    hyper_series_by_group,
    log1mexp,
    log_poch,
)
from retain.models.base import collapse_rows
from retain.models.bgbb import _Opportunities
from retain.models.gammagamma import _Spend


@pytest.mark.parametrize(
    ("a", "b", "c", "z"),
    [(1.5, 2.0, 3.5, 0.3), (0.2, 7.0, 9.0, 0.9), (30.0, 1.0, 40.0, 0.5), (-2.5, 1.2, 3.0, 0.7)],
)
def test_series_matches_scipy_hyp2f1(a, b, c, z):
    # sum (a)_n (b)_n / ((c)_n (1)_n) z^n is 2F1(a, b; c; z)
    assert hyper_series(a, b, c, 1.0, z).value == pytest.approx(
        special.hyp2f1(a, b, c, z), rel=1e-13
    )


def test_series_derivatives_match_finite_differences():
    p1, p2, q1, z = 2.3, 1.0, 4.1, 0.8
    res = hyper_series(p1, p2, q1, 1.0, z, derivatives=True)
    h = 1e-6
    for got, shift in ((res.d_p1, (h, 0, 0)), (res.d_q1, (0, h, 0)), (res.d_z, (0, 0, h))):
        up = hyper_series(p1 + shift[0], p2, q1 + shift[1], 1.0, z + shift[2]).value
        down = hyper_series(p1 - shift[0], p2, q1 - shift[1], 1.0, z - shift[2]).value
        assert got == pytest.approx((up - down) / (2 * h), rel=1e-7)


def test_series_close_to_one_stays_finite_and_accurate():
    """Near z = 1 the series needs millions of terms; after 4,000 the rest is integrated.
    Closed forms: 2F1(1, 1; 2; z) = -log(1 - z)/z and 2F1(a, b; b; z) = (1 - z)^-a."""
    for z, rel in (
        (0.99, 1e-13),
        (0.999, 1e-7),
        (0.9999, 1e-7),
        (1 - 1e-6, 1e-7),
        (1 - 1e-9, 1e-7),
    ):
        got = hyper_series(1.0, 1.0, 2.0, 1.0, z).value
        assert got == pytest.approx(-np.log1p(-z) / z, rel=rel)
        for a in (0.5, 2.5):
            got = hyper_series(a, 1.7, 1.7, 1.0, z).value
            assert got == pytest.approx((1 - z) ** -a, rel=rel)


@pytest.mark.parametrize(("p2", "q2"), [(1.7, 2.0), (2.0, 2.0), (0.3, 1.0)])
def test_series_by_group_gives_the_numbers_of_the_series(p2, q2):
    """Each element with its group's p1, q1: the same numbers as hyper_series, z = 0,
    alternating terms (p1 < 0) and z so near 1 that the tail is closed included."""
    rng = np.random.default_rng(3)
    p1 = np.array([-3.5, 0.4, 2.0, 5.0])
    q1 = np.array([1.2, 3.0, 2.5, 9.0])
    group = rng.integers(0, 4, size=(300, 5))
    z = rng.uniform(0.0, 0.97, size=(300, 5))
    z[0, :3] = (0.0, 0.999, 1 - 1e-6)
    got = hyper_series_by_group(p1, p2, q1, q2, z, group)
    want = hyper_series(p1[group], p2, q1[group], q2, z).value
    assert got.shape == z.shape
    np.testing.assert_array_equal(got, want)
    assert got[0, 0] == 1.0


def test_log_poch_of_mixed_sizes_is_each_elements_own():
    """x below and above the switch to Stirling's series in one array: each element gets
    the number it gets alone, and both agree with gammaln where it is exact enough."""
    x = np.array([0.3, 2.0, 29.5, 30.0, 31.0, 400.0, 1e9])
    n = np.array([4.0, 0.0, 7.0, 3.0, 50.0, 12.0, 2.0])
    mixed = log_poch(x, n)
    alone = np.array([float(log_poch(xi, ni)) for xi, ni in zip(x, n, strict=True)])
    np.testing.assert_array_equal(mixed, alone)
    exact = special.gammaln(x[:-1] + n[:-1]) - special.gammaln(x[:-1])
    np.testing.assert_allclose(mixed[:-1], exact, rtol=1e-12, atol=1e-14)
    assert log_poch(x[:, None], n[None, :3]).shape == (7, 3)


def test_small_helpers():
    x = np.array([-1e-20, -1e-5, -0.5, -1.0, -50.0, 0.0])
    with np.errstate(divide="ignore"):
        np.testing.assert_allclose(log1mexp(x)[:-2], np.log(-np.expm1(x[:-2])), rtol=1e-14)
    # log(1 - e^-50) = -e^-50 to double precision, where the naive formula gives 0
    assert log1mexp(np.array([-50.0]))[0] == pytest.approx(-np.exp(-50.0), rel=1e-12)
    assert log1mexp(np.array([0.0]))[0] == -np.inf
    assert expm1_ratio(np.array([2.0]), 0.0)[0] == 2.0
    assert expm1_ratio(np.array([2.0]), 0.5)[0] == pytest.approx(np.expm1(1.0) / 0.5)


@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")
@pytest.mark.parametrize(
    ("x", "T", "t"), [(0, 0, 52), (0, 0, 5000), (3, 20, 10), (200, 30, 52), (5000, 6000, 52)]
)
@pytest.mark.parametrize("a", [0.793, 1.0, 3.5])
def test_bgnbd_expected_purchases_if_alive_match_the_integral(x, T, t, a):
    """E[Y(t) | alive] = E_p[(1 - (1 + p t/(alpha+T))^-(r+x)) / p], p ~ Beta(a, b+x)."""
    r, alpha, b = 0.243, 4.414, 2.426
    model = BetaGeo()
    model.params_ = {"r": r, "alpha": alpha, "a": a, "b": b}
    got = model._expected_alive(np.array([x], float), np.array([T], float), np.array([t], float))[0]

    def integrand(p: float) -> float:
        return (1 - (1 + p * t / (alpha + T)) ** -(r + x)) / p * stats.beta.pdf(p, a, b + x)

    # split where the posterior of p has its mass
    mode = a / (a + b + x)
    points = [p for p in (mode / 10, mode, 10 * mode) if p < 1]
    expected = integrate.quad(integrand, 0, 1, points=points, limit=400, epsrel=1e-11)[0]
    assert got == pytest.approx(expected, rel=1e-8)


def pareto_log_likelihood_by_quadrature(r, alpha, s, beta, x, t_x, T):
    """The Pareto/NBD likelihood's definition, its integral taken numerically in
    log(alpha + tau) so that sharp peaks (large x, small alpha) are resolved."""
    head = special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha) + s * np.log(beta)
    alive = -(r + x) * np.log(alpha + T) - s * np.log(beta + T)

    def log_g(tau: float) -> float:
        return -(r + x) * np.log(alpha + tau) - (s + 1) * np.log(beta + tau)

    if t_x == T:
        return head + alive
    c0 = log_g(t_x)
    integral = integrate.quad(
        lambda u: np.exp(log_g(np.exp(u) - alpha) - c0 + u),
        np.log(alpha + t_x),
        np.log(alpha + T),
        epsrel=1e-12,
        limit=400,
    )[0]
    return head + np.logaddexp(alive, np.log(s) + c0 + np.log(integral))


@pytest.mark.parametrize(
    "params",
    [
        (0.55, 10.6, 0.61, 11.7),
        (0.55, 30.6, 0.61, 2.7),
        (2.55, 3.6, 1.61, 40.7),
        (10.465, 0.008, 3.05, 2.82),
    ],
)
@pytest.mark.parametrize(
    ("x", "t_x", "T"),
    [
        (221, 103.43, 103.57),
        (0, 0, 50),
        (3, 2, 40),
        (10000, 9999, 10000),
        (0, 0, 10000),
        (400, 5, 6),
        (0, 0, 0),
        (7, 12, 12),
    ],
)
def test_pareto_nbd_likelihood_matches_the_integral(params, x, t_x, T):
    model = ParetoNBD()
    rows, _ = collapse_rows(np.array([x], float), np.array([t_x], float), np.array([T], float))
    got, grad = model._loglik(np.array(params), model._prepare_rows(rows))
    assert np.isfinite(got) and np.all(np.isfinite(grad))
    assert got == pytest.approx(pareto_log_likelihood_by_quadrature(*params, x, t_x, T), abs=1e-9)


def test_bgbb_and_sbg_and_gamma_gamma_likelihoods_by_hand():
    # BG/BB, one customer with x = 1, t_x = 1, n = 2: alive through 2 and silent in 2,
    # or gone before opportunity 2 (i = 0 term)
    a, b, g, d = 1.2, 0.7, 0.6, 2.8
    B = special.beta
    by_hand = B(a + 1, b + 1) / B(a, b) * B(g, d + 2) / B(g, d) + B(a + 1, b) / B(a, b) * B(
        g + 1, d + 1
    ) / B(g, d)
    data = _Opportunities(np.array([1.0]), np.array([1.0]), np.array([2.0]), np.ones(1), 1.0)
    ll, _ = BetaGeoBetaBinom()._loglik(np.array([a, b, g, d]), data)
    assert ll == pytest.approx(np.log(by_hand), rel=1e-12)
    # sBG: 100 customers, 30 leave in period 1, 20 in period 2, 50 stay
    al, be = 0.7, 1.2
    p1 = al / (al + be)
    p2 = be / (al + be) * al / (al + be + 1)
    by_hand = 30 * np.log(p1) + 20 * np.log(p2) + 50 * np.log(1 - p1 - p2)
    ll, _ = SBG()._loglik(np.array([al, be]), SBG()._prepare([100, 70, 50], None))
    assert ll == pytest.approx(by_hand, rel=1e-12)
    # Gamma-Gamma: density of the mean of x = 2 gamma(p, nu) values, nu ~ gamma(q, gamma)
    p, q, gam, x, m = 6.0, 3.7, 15.0, 2.0, 20.0

    def density(mean: float) -> float:
        def inner(nu: float) -> float:
            return stats.gamma.pdf(mean, p * x, scale=1 / (nu * x)) * stats.gamma.pdf(
                nu, q, scale=1 / gam
            )

        return integrate.quad(inner, 0, np.inf, epsrel=1e-12)[0]

    ll, _ = GammaGamma()._loglik(
        np.array([p, q, gam]), _Spend(np.array([x]), np.array([m]), np.ones(1), 1.0)
    )
    assert ll == pytest.approx(np.log(density(m)), rel=1e-9)


def finite_difference(model, params, prepared):
    grads = []
    for j in range(params.size):
        h = 1e-6 * params[j]
        up, down = params.copy(), params.copy()
        up[j] += h
        down[j] -= h
        grads.append((model._loglik(up, prepared)[0] - model._loglik(down, prepared)[0]) / (2 * h))
    return np.array(grads)


@pytest.mark.parametrize(
    ("model", "params"),
    [
        (BetaGeo(), [0.24, 4.4, 0.79, 2.4]),
        (ModifiedBetaGeo(), [0.5, 6.2, 0.9, 1.6]),
        (ParetoNBD(), [0.55, 10.6, 0.61, 11.7]),
        (ParetoNBD(), [0.55, 30.6, 0.61, 2.7]),
        (ParetoNBD(), [2.55, 3.6, 1.61, 40.7]),
    ],
)
def test_transaction_model_gradients_match_finite_differences(model, params):
    rng = np.random.default_rng(1)
    n = 300
    x = rng.integers(0, 30, n).astype(float)
    T = rng.uniform(0, 60, n)
    t_x = np.where(x > 0, rng.uniform(0, 1, n) * T, 0.0)
    x[:3], t_x[:3], T[:3] = [221, 0, 5], [103.43, 0, 7], [103.57, 0, 7]
    rows, _ = collapse_rows(x, t_x, T)
    prepared = model._prepare_rows(rows)
    params = np.array(params)
    _, grad = model._loglik(params, prepared)
    expected = finite_difference(model, params, prepared)
    np.testing.assert_allclose(grad, expected, rtol=2e-6, atol=1e-6)


def test_other_gradients_match_finite_differences():
    spend = _Spend(
        np.array([1.0, 3.0, 10.0]), np.array([12.0, 40.0, 25.0]), np.array([2.0, 1.0, 1.0]), 4.0
    )
    bgbb = _Opportunities(
        np.array([0.0, 2.0, 3.0]),
        np.array([0.0, 4.0, 3.0]),
        np.array([6.0, 6.0, 6.0]),
        np.array([5.0, 2.0, 1.0]),
        8.0,
    )
    sbg = SBG()._prepare([1000, 631, 468, 382, 326], None)
    for model, params, prepared in (
        (GammaGamma(), np.array([6.2, 3.7, 15.4]), spend),
        (BetaGeoBetaBinom(), np.array([1.2, 0.75, 0.66, 2.8]), bgbb),
        (SBG(), np.array([0.7, 1.2]), sbg),
    ):
        _, grad = model._loglik(params, prepared)
        np.testing.assert_allclose(grad, finite_difference(model, params, prepared), rtol=1e-6)
