"""Predictions near the parameters' limits: no heterogeneity in dropout (a, b or s,
beta -> infinity at a fixed ratio), in purchase rate (r, alpha -> infinity) or in
spend (q, gamma -> infinity). References computed with mpmath at 40 digits."""

from __future__ import annotations

import itertools
import warnings
from typing import Any

import mpmath as mp
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import retain
from retain.models import BetaGeo, GammaGamma, ModifiedBetaGeo, ParetoNBD

mp.mp.dps = 40
RTOL = 1e-8


def with_params(cls, **params):
    model = cls()
    model.params_ = {k: float(v) for k, v in params.items()}
    return model


def arr(*values):
    return np.array(values, dtype=np.float64)


# -- mpmath references ------------------------------------------------------------------
def ref_beta_mean(f, a, b):
    a, b = mp.mpf(a), mp.mpf(b)
    m = a / (a + b)
    sd = mp.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
    log_b = mp.log(mp.beta(a, b))
    points = {mp.mpf(0), mp.mpf(1)}
    points |= {
        min(max(m + j * sd, mp.mpf(0)), mp.mpf(1)) for j in (-60, -20, -8, -3, 0, 3, 8, 20, 60)
    }

    def density(p):
        return mp.exp((a - 1) * mp.log(p) + (b - 1) * mp.log1p(-p) - log_b)

    return mp.quad(lambda p: f(p) * density(p), sorted(points))


def ref_bg_expected(r, alpha, a, b, x, T, t, offset):
    k, u = mp.mpf(r) + x, mp.mpf(t) / (mp.mpf(alpha) + T)
    return ref_beta_mean(lambda p: -mp.expm1(-k * mp.log1p(p * u)) / p, a, mp.mpf(b) + x + offset)


def ref_bg_p_alive(r, alpha, a, b, x, tx, T, offset):
    r, alpha, a, b = map(mp.mpf, (r, alpha, a, b))
    beta = b + x + offset
    log_ratio = mp.log(a / (beta - 1)) + (r + x) * mp.log((alpha + T) / (alpha + tx))
    return 1 / (1 + mp.exp(log_ratio))


def ref_bg_pmf(r, alpha, a, b, x, T, t, n, offset):
    r, alpha, a, b = map(mp.mpf, (r, alpha, a, b))
    beta, k, z = b + x + offset, r + x, mp.mpf(t) / (alpha + T + t)
    if n == 0:
        return (1 - z) ** k
    nb = mp.exp(mp.loggamma(k + n) - mp.loggamma(k) - mp.loggamma(n + 1)) * (1 - z) ** k * z**n

    def pi(m):
        return mp.exp(
            mp.loggamma(beta + m)
            - mp.loggamma(beta)
            - mp.loggamma(a + beta + m)
            + mp.loggamma(a + beta)
        )

    at_least = mp.betainc(n, k, 0, z, regularized=True)
    return nb * pi(n) + at_least * pi(n - 1) * a / (a + beta + n - 1)


def ref_pnbd_p_alive(r, alpha, s, beta, x, tx, T):
    r, alpha, s, beta = map(mp.mpf, (r, alpha, s, beta))
    k = r + x

    def ratio(tau):
        return mp.exp(
            k * mp.log((alpha + T) / (alpha + tau)) + s * mp.log((beta + T) / (beta + tau))
        ) / (beta + tau)

    return 1 / (1 + s * mp.quad(ratio, mp.linspace(tx, T, 5)))


def ref_pnbd_pmf(r, alpha, s, beta, x, T, t, n):
    r, alpha, s, beta = map(mp.mpf, (r, alpha, s, beta))
    k, A, B = r + x, alpha + T, beta + T

    def nb(v):
        if v == 0:
            return mp.mpf(1 if n == 0 else 0)
        head = mp.loggamma(k + n) - mp.loggamma(k) - mp.loggamma(n + 1)
        return mp.exp(head - k * mp.log1p(v / A) + n * mp.log(v / (A + v)))

    survive = (B / (B + t)) ** s * nb(mp.mpf(t))
    gone = mp.quad(lambda v: s * B**s * (B + v) ** (-(s + 1)) * nb(v), mp.linspace(0, t, 9))
    return survive + gone


# -- BG/NBD and MBG/NBD ---------------------------------------------------------------------
X, TX, T, H = 3.0, 150.0, 200.0, 365.0


@pytest.mark.parametrize("a", [43.0, 430.0])
@pytest.mark.parametrize("r, alpha", [(0.45, 10.7), (4.5e5, 1.07e7)])
def test_bg_gauss_rule_agrees_with_the_general_formula_at_moderate_a(a, r, alpha):
    model = with_params(BetaGeo, r=r, alpha=alpha, a=a, b=a / 0.43)
    b = a / 0.43
    general = model._expected_alive(arr(X), arr(T), arr(H))
    # the general path at this a: series, or exp-sinh quadrature when the series is unstable
    gauss = model._expected_alive_by_gauss(arr(r + X), arr(b + X), arr(H / (alpha + T)))
    np.testing.assert_allclose(gauss, general, rtol=1e-12)
    np.testing.assert_allclose(
        general[0], float(ref_bg_expected(r, alpha, a, b, X, T, H, 0)), rtol=1e-12
    )


@pytest.mark.parametrize("cls", [BetaGeo, ModifiedBetaGeo])
def test_bg_expected_purchases_converge_to_the_point_mass_of_the_dropout(cls):
    r, alpha = 0.45, 10.7
    k, u = r + X, H / (alpha + T)
    gaps = []
    for b in [1e3, 1e4, 1e5, 1e7, 1e9]:
        a = 0.43 * b
        beta = b + X + cls._offset
        p = a / (a + beta)
        limit = -np.expm1(-k * np.log1p(p * u)) / p
        value = with_params(cls, r=r, alpha=alpha, a=a, b=b)._expected_alive(
            arr(X), arr(T), arr(H)
        )[0]
        gaps.append(abs(value / limit - 1.0))
        assert gaps[-1] < 5.0 / b  # the Beta's variance is O(1/(a+b))
    assert all(later < earlier for earlier, later in itertools.pairwise(gaps[:4]))
    assert gaps[-1] < 1e-8


@pytest.mark.parametrize("cls", [BetaGeo, ModifiedBetaGeo])
@pytest.mark.parametrize("scale", [1e7, 1e9])
@pytest.mark.parametrize("rate_scale", [1.0, 1e8])
def test_bg_predictions_at_extreme_parameters_match_mpmath(cls, scale, rate_scale):
    params = dict(r=0.45 * rate_scale, alpha=10.7 * rate_scale, a=0.43 * scale, b=scale)
    model = with_params(cls, **params)
    off = cls._offset
    values = tuple(params.values())
    np.testing.assert_allclose(
        model._expected_alive(arr(X), arr(T), arr(H))[0],
        float(ref_bg_expected(*values, X, T, H, off)),
        rtol=RTOL,
    )
    np.testing.assert_allclose(
        model._p_alive(arr(X), arr(TX), arr(T))[0],
        float(ref_bg_p_alive(*values, X, TX, T, off)),
        rtol=RTOL,
    )
    for n in (0, 1, 5):
        np.testing.assert_allclose(
            model._pmf_alive(n, H, arr(X), arr(T))[0],
            float(ref_bg_pmf(*values, X, T, H, n, off)),
            rtol=RTOL,
        )


@pytest.mark.parametrize("cls", [BetaGeo, ModifiedBetaGeo])
@pytest.mark.parametrize(
    "params",
    [
        dict(r=0.45, alpha=10.7, a=0.79, b=2.4),
        dict(r=0.45, alpha=10.7, a=0.43e9, b=1e9),
        dict(r=0.45e8, alpha=10.7e8, a=0.43, b=1.0),
        dict(r=0.24, alpha=4.4, a=1e-4, b=2.4),
    ],
    ids=["plain", "ab-1e9", "r-alpha-1e8", "a-1e-4"],
)
def test_bg_counts_in_blocks_match_them_one_by_one_and_mpmath(cls, params):
    """_pmf_alive_block's P(N >= n), summed down from the block's top count, against an
    incomplete beta function per count and mpmath: blocks from 0 and further out, short
    and long horizons, customers with few and many purchases. (With r of 1e8 SciPy's
    incomplete beta function itself is good to about 1e-9, whichever count it is at.)"""
    model = with_params(cls, **params)
    x, T_ = arr(0.0, 2.0, 30.0), arr(5.0, 40.0, 300.0)
    rtol = 1e-8 if params["r"] > 1e3 else 1e-12
    for t in (3.0, 39.0, 400.0):
        for start in (0, 1, 20):
            got = model._pmf_alive_block(start, 16, t, x, T_)
            want = np.stack([model._pmf_alive(start + i, t, x, T_) for i in range(16)], axis=1)
            np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-300)
    got = model._pmf_alive_block(0, 16, 400.0, x, T_)
    for i in (0, 1, 8, 15):
        for j in range(x.size):
            ref = float(ref_bg_pmf(*params.values(), x[j], T_[j], 400.0, i, cls._offset))
            assert got[j, i] == pytest.approx(ref, rel=RTOL, abs=1e-300)


def pmf_moments(model, x, T, t, top=400):
    probs = np.array([model._pmf_alive(n, t, arr(x), arr(T))[0] for n in range(top)])
    return probs.sum(), float(np.arange(top) @ probs)


@pytest.mark.parametrize(
    "model",
    [
        with_params(ModifiedBetaGeo, r=0.45, alpha=10.7, a=4.3e8, b=1e9),
        with_params(BetaGeo, r=4.5e8, alpha=1.07e10, a=4.3e8, b=1e9),
        with_params(ParetoNBD, r=0.55, alpha=10.6, s=6e8, beta=1.2e10),
        with_params(ParetoNBD, r=5.5e8, alpha=1.06e10, s=6e7, beta=1.2e9),
    ],
    ids=["mbg-ab", "bg-all", "pnbd-s-beta", "pnbd-all"],
)
def test_purchase_count_distribution_sums_to_one_and_has_the_expected_mean(model):
    total, mean = pmf_moments(model, X, T, H)
    assert total == pytest.approx(1.0, abs=1e-9)
    assert mean == pytest.approx(model._expected_alive(arr(X), arr(T), arr(H))[0], rel=1e-8)


def ref_bg_expected_small_a(r, alpha, a, b, x, T, t, offset):
    """The BG/NBD expectation where a or beta is small: in s = -log p over p < 1/2 and
    s = -log(1-p) over p > 1/2, broken at powers of 2 up to 100/a (100/beta), so the
    mass the Beta piles up at p of e^(-1/a) is integrated too."""
    a, beta = mp.mpf(a), mp.mpf(b) + x + offset
    k, u = mp.mpf(r) + x, mp.mpf(t) / (mp.mpf(alpha) + T)
    log_b = mp.log(mp.beta(a, beta))

    def g(p):
        return -mp.expm1(-k * mp.log1p(p * u)) / p

    def near0(s):
        p = mp.exp(-s)
        return g(p) * mp.exp(-a * s + (beta - 1) * mp.log1p(-p) - log_b)

    def near1(s):
        q = mp.exp(-s)
        return g(1 - q) * mp.exp(-beta * s + (a - 1) * mp.log1p(-q) - log_b)

    def points(c):
        top = max(int(mp.log(100 / c, 2)) + 2, 2)
        return [mp.log(2)] + [mp.mpf(2) ** j for j in range(top)] + [mp.inf]

    return mp.quad(near0, points(a)) + mp.quad(near1, points(beta))


SMALL_A = [
    dict(r=20.0, alpha=1.0, a=1.2e-4, b=1.0),
    dict(r=300.0, alpha=2.0, a=1e-5, b=40.0),
    dict(r=173.0, alpha=0.12, a=0.115, b=3.5e-3),
]


@pytest.mark.parametrize("cls", [BetaGeo, ModifiedBetaGeo])
@pytest.mark.parametrize("params", SMALL_A, ids=["a-1e-4", "a-1e-5-b-40", "b-3e-3"])
def test_bg_expected_purchases_with_a_or_b_near_zero_match_mpmath(cls, params):
    # far horizons (u = t/(alpha+T) up to 1800): most of the Beta's mass lies at p of
    # e^(-1/a), where the integrand is k u; the quadrature once lost it there (E(90)
    # at 77 instead of 899 for the first row)
    model = with_params(cls, **params)
    x, T_ = arr(0, 3, 20), arr(1, 20, 200)
    times = arr(1, 30, 90, 365, 3650)
    got = model._expected_alive(x[:, None], T_[:, None], times[None, :])
    ref = [
        [float(ref_bg_expected_small_a(*params.values(), xi, Ti, t, cls._offset)) for t in times]
        for xi, Ti in zip(x, T_, strict=True)
    ]
    np.testing.assert_allclose(got, ref, rtol=1e-12)
    assert np.all(np.diff(got, axis=1) > 0)


@pytest.mark.parametrize("cls", [BetaGeo, ModifiedBetaGeo])
@pytest.mark.parametrize("params", SMALL_A[:2], ids=["a-1e-4", "a-1e-5-b-40"])
def test_bg_count_distribution_with_a_near_zero_sums_to_one_with_the_expected_mean(cls, params):
    # the predictive intervals sum this pmf over n: with a << 1 and t >> alpha + T
    # the count given alive reaches the thousands
    model = with_params(cls, **params)
    for x, T_, t in [(0.0, 1.0, 90.0), (3.0, 20.0, 365.0)]:
        expected = model._expected_alive(arr(x), arr(T_), arr(t))[0]
        top = int(expected * 3 + 200)
        probs = np.array([model._pmf_alive(n, t, arr(x), arr(T_))[0] for n in range(top)])
        assert probs.sum() == pytest.approx(1.0, abs=1e-9)
        assert float(np.arange(top) @ probs) == pytest.approx(expected, rel=1e-9)
        for n in (0, 1, 50):
            ref = float(ref_bg_pmf(*params.values(), x, T_, t, n, cls._offset))
            assert probs[n] == pytest.approx(ref, rel=1e-9)


# -- Pareto/NBD --------------------------------------------------------------------------
@pytest.mark.parametrize("scale", [1e7, 1e9])
@pytest.mark.parametrize("rate_scale", [1.0, 1e3, 1e8])
def test_pnbd_predictions_at_extreme_parameters_match_mpmath(scale, rate_scale):
    params = dict(
        r=0.55 * rate_scale, alpha=10.6 * rate_scale, s=0.6 * scale / 10, beta=12 * scale / 10
    )
    model = with_params(ParetoNBD, **params)
    values = tuple(params.values())
    np.testing.assert_allclose(
        model._p_alive(arr(X), arr(TX), arr(T))[0],
        float(ref_pnbd_p_alive(*values, X, TX, T)),
        rtol=RTOL,
    )
    for n in (0, 2):
        np.testing.assert_allclose(
            model._pmf_alive(n, H, arr(X), arr(T))[0],
            float(ref_pnbd_pmf(*values, X, T, H, n)),
            rtol=RTOL,
        )
    # exponential dropout at rate mu = s/beta, Poisson at lambda = (r+x)/(alpha+T)
    r, alpha, s, beta = values
    mu = s / (beta + T)
    lam = (r + X) / (alpha + T)
    limit = lam * -np.expm1(-mu * H) / mu
    expected = model._expected_alive(arr(X), arr(T), arr(H))[0]
    assert expected == pytest.approx(
        limit, rel=max(10.0 / s, 1e-12) + (H / (alpha + T) if r > 1e3 else 1.0)
    )


@pytest.mark.parametrize(
    "s, alpha, beta", [(1.0, 1e8, 1e-9), (0.1, 1e8, 1e-9), (10.0, 1e6, 1e-9), (1.0, 1e-9, 1e8)]
)
@pytest.mark.parametrize("r", [0.1, 1e3])
def test_pnbd_p_alive_with_alpha_and_beta_far_apart_matches_mpmath(r, s, alpha, beta):
    # z = |alpha - beta| / (max + t_x) within rounding of 1: the series once gave
    # 7.6e-5 for the first row at s = 1 (true 5e-12)
    model = with_params(ParetoNBD, r=r, alpha=alpha, s=s, beta=beta)
    x, tx, T_ = arr(0, 1, 3, 20, 5), arr(0, 10, 150, 199, 2), arr(200, 200, 200, 200, 400)
    got = model._p_alive(x, tx, T_)
    ref = [
        float(ref_pnbd_p_alive(r, alpha, s, beta, xi, ti, Ti))
        for xi, ti, Ti in zip(x, tx, T_, strict=True)
    ]
    np.testing.assert_allclose(got, ref, rtol=1e-9)


def test_pnbd_integral_form_agrees_with_the_series_where_both_hold():
    # rows whose exponent phi(t_x) is moderate; with a strongly curved exponent at
    # moderate parameters (t_x far from T) the integral form is only good to ~1e-5,
    # which is why it is used only where |log F| > 1e4 (and phi is nearly linear)
    model = with_params(ParetoNBD, r=55.0, alpha=1060.0, s=60.0, beta=1200.0)
    x, tx, T_ = arr(1, 3, 10, 40), arr(180, 150, 190, 199), arr(200, 200, 200, 200)
    l1, l2 = model._terms(model._unpack(), x, tx, T_)
    series = 1.0 / (1.0 + np.exp(l2 - l1))
    np.testing.assert_allclose(model._p_alive_by_integral(x, tx, T_), series, rtol=1e-12)


# -- Gamma-Gamma -------------------------------------------------------------------------
@pytest.mark.parametrize("scale", [1e3, 1e7, 1e9])
def test_gamma_gamma_spend_at_large_q_and_gamma_is_the_common_mean(scale):
    p, q, gamma = 4.0, 150.0 * scale, 1400.0 * scale
    model = with_params(GammaGamma, p=p, q=q, gamma=gamma)
    x, m = arr(0, 1, 5, 200), arr(0, 30, 50, 1000)
    got = model._spend_values(x, m)
    ref = [
        float(mp.mpf(p) * (mp.mpf(gamma) + xi * mi) / (mp.mpf(p) * xi + q - 1))
        for xi, mi in zip(x, m, strict=True)
    ]
    np.testing.assert_allclose(got, ref, rtol=1e-13)
    # no heterogeneity in spend: everyone's expected spend is the population mean
    np.testing.assert_allclose(got, model.mean_spend, rtol=300.0 * 1000 / gamma + 1e-12)


# -- every prediction finite and in range, over the whole parameter box -----------------
LOG = st.floats(min_value=-20.0, max_value=20.0, allow_nan=False)


def model_of(kind: str, *logs: float) -> Any:
    """A BG/NBD ("bg"), MBG/NBD ("mbg") or Pareto/NBD ("pnbd") with these log-parameters."""
    e = np.exp(logs)
    if kind == "pnbd":
        return with_params(ParetoNBD, r=e[0], alpha=e[1], s=e[2], beta=e[3])
    cls = BetaGeo if kind == "bg" else ModifiedBetaGeo
    return with_params(cls, r=e[0], alpha=e[1], a=e[2], b=e[3])


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(["bg", "mbg", "pnbd"]), LOG, LOG, LOG, LOG)
def test_predictions_are_finite_and_in_range_for_any_parameters(kind, l1, l2, l3, l4):
    model = model_of(kind, l1, l2, l3, l4)
    x = arr(0, 1, 3, 20, 0, 5)
    tx = arr(0, 10, 150, 199, 0, 2)
    T_ = arr(200, 200, 200, 200, 1, 400)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        alive = model._p_alive(x, tx, T_)
        assert np.all(np.isfinite(alive)) and np.all((alive >= 0) & (alive <= 1))
        times = arr(0, 1, 30, 90, 365, 3650)
        expected = model._expected_alive(x[:, None], T_[:, None], times[None, :])
        assert np.all(np.isfinite(expected)) and np.all(expected >= 0)
        for n in (0, 1, 4):
            pmf = model._pmf_alive(n, 90.0, x, T_)
            assert np.all(np.isfinite(pmf)) and np.all((pmf >= -1e-12) & (pmf <= 1 + 1e-12))
        time, _ = model._next_alive(np.full(x.size, 0.5), x, T_, 365.0)
        assert np.all(np.isfinite(time)) and np.all(time >= 0)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(["bg", "mbg", "pnbd"]), LOG, LOG, LOG, LOG)
def test_expected_purchases_never_decrease_with_the_horizon(kind, l1, l2, l3, l4):
    model = model_of(kind, l1, l2, l3, l4)
    x, T_ = arr(0, 1, 3, 20, 0, 5), arr(200, 200, 200, 200, 1, 400)
    times = arr(0, 1, 30, 90, 365, 3650)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = model._expected_alive(x[:, None], T_[:, None], times[None, :])
    assert np.all(np.diff(expected, axis=1) >= -1e-9 * np.maximum(expected[:, 1:], 1e-300))


# -- a store where everyone drops out with the same probability ---------------------------
def geometric_store(n=600, seed=1, rate=0.05, p=0.3, days=400):
    """Customers buying at Poisson rate ~0.05/day (little heterogeneity), each dropping
    out after every purchase with probability 0.3: a geometric number of purchases."""
    rng = np.random.default_rng(seed)
    rates = rng.gamma(50.0, rate / 50.0, n)
    start = pd.Timestamp("2024-01-01")
    first = rng.uniform(0, days * 0.6, n)
    # purchases per customer: geometric, the gaps exponential
    counts = rng.geometric(p, n)
    owner = np.repeat(np.arange(n), counts)
    gaps = rng.exponential(1.0 / rates[owner])
    offset = np.concatenate([[0], np.cumsum(counts)[:-1]])
    gaps[offset] = 0.0
    times = first[owner] + np.add.reduceat(
        np.where(True, gaps, 0), np.arange(gaps.size)
    )  # placeholder
    times = first[owner] + (np.cumsum(gaps) - np.repeat(np.cumsum(gaps)[offset], counts))
    keep = times < days
    tx = pd.DataFrame(
        {
            "customer_id": np.char.add("c", owner[keep].astype(str)),
            "ordered_at": start + pd.to_timedelta(times[keep], unit="D"),
            "net_revenue": rng.gamma(4.0, 10.0, owner.size)[keep],
        }
    )
    return tx, start + pd.Timedelta(days=days)


@pytest.mark.parametrize("cls", [BetaGeo, ModifiedBetaGeo, ParetoNBD])
def test_geometric_store_predictions_stay_plausible(cls):
    tx, end = geometric_store()
    summary = retain.summarize(tx, unit="D", observation_end=end)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = cls().fit(summary)
        spend = GammaGamma().fit(summary)
        scores = model.score(summary, gamma_gamma=spend, interval=None)
    yearly = scores["expected_purchases_365d"].to_numpy()
    repeat = summary[summary["frequency"] > 0]
    fastest = float((repeat["frequency"] / repeat["T"]).max()) * 365.0
    assert np.all(np.isfinite(yearly)) and yearly.max() < 3.0 * fastest
    revenue = tx.loc[tx["ordered_at"] > end - pd.Timedelta(days=365), "net_revenue"].sum()
    assert np.isfinite(scores["clv"]).all() and scores["clv"].sum() < 3.0 * revenue


def test_bgnbd_expectation_where_the_dropout_beta_spikes_at_one():
    # b << 1: nearly everyone leaves after a purchase, p ~ Beta(0.37, 0.0009) piles up
    # at 1 without being a point mass; its Gauss rule gave 1.27 ten years out, below the
    # 1.32 of one year. Values by mpmath (30 digits), E_p[(1 - (1 + p u)^-k) / p] taken
    # as g(1) + E[g(p) - g(1)] so that the spike at p = 1 leaves no singularity
    model = model_of("bg", 2.0, 0.0, -1.0, -7.0)
    expected = model._expected_alive(arr(0.0), arr(1.0), arr(365.0, 3650.0))
    np.testing.assert_allclose(expected, [1.32449254123, 2.39635564158], rtol=1e-9)
