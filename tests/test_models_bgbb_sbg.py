"""BG/BB and sBG against their papers.

BG/BB: Fader, Hardie & Shang (2010), "Customer-base analysis in a discrete-time
noncontractual setting", Marketing Science 29(6): 11,104 first-time donors of
1995, six later yearly opportunities (1996-2001). Published estimates alpha =
1.204, beta = 0.750, gamma = 0.657, delta = 2.783, LL = -33,225.6; Table 6
P(alive in 2002); Hardie's BG/BB spreadsheet (note 010) for the conditional
expectations and the in-sample frequency histogram.

sBG: Fader & Hardie (2007), "How to project customer retention", Journal of
Interactive Marketing 21(1): the "regular" and "high end" cohorts, fitted on
years 1-7: alpha = 0.704, beta = 1.182 and alpha = 0.668, beta = 3.806.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pandas as pd
import pytest
from scipy import special

from retain.errors import DataError
from retain.models import (
    BetaDiscreteWeibull,
    BetaGeoBetaBinom,
    ConvergenceWarning,
    Model,
    ShiftedBetaGeometric,
)

# (frequency, recency, donors): FHS (2010) Table 1 / the paper's data
DONATIONS = [
    (0, 0, 3464), (1, 1, 1091), (1, 2, 277), (1, 3, 129), (1, 4, 78), (1, 5, 119),
    (1, 6, 129), (2, 2, 613), (2, 3, 255), (2, 4, 155), (2, 5, 173), (2, 6, 234),
    (3, 3, 322), (3, 4, 181), (3, 5, 225), (3, 6, 357), (4, 4, 240), (4, 5, 284),
    (4, 6, 512), (5, 5, 335), (5, 6, 728), (6, 6, 1203),
]  # fmt: skip
REGULAR = [1000, 631, 468, 382, 326, 289, 262, 241]
HIGH_END = [1000, 869, 743, 653, 593, 551, 517, 491]


def donations() -> pd.DataFrame:
    frame = pd.DataFrame(DONATIONS, columns=["frequency", "recency", "weight"])
    frame["n_periods"] = 6
    return frame


@cache
def bgbb() -> BetaGeoBetaBinom:
    return BetaGeoBetaBinom().fit(donations())


def test_bgbb_matches_the_published_estimates():
    model = bgbb()
    assert donations()["weight"].sum() == 11104
    published = {"alpha": 1.204, "beta": 0.750, "gamma": 0.657, "delta": 2.783}
    for name, value in published.items():
        assert model.params_[name] == pytest.approx(value, abs=6e-4), name
    assert model.log_likelihood_ == pytest.approx(-33225.6, abs=0.05)
    assert model.converged_


def test_bgbb_p_alive_matches_table_6():
    """P(alive in 2002): 0.11 for (x=0), 0.59 for (x=2, t_x=4), 0.93 for (x=6, t_x=6)."""
    frame = donations()
    p_alive = bgbb().p_alive(frame)
    pick = {(0, 0): 0.11, (2, 4): 0.59, (6, 6): 0.93}
    for (x, t_x), value in pick.items():
        row = (frame["frequency"] == x) & (frame["recency"] == t_x)
        assert p_alive[row].iloc[0] == pytest.approx(value, abs=0.005)


def test_bgbb_expectations_match_hardies_sheet():
    """Conditional expectations (II), total over 2002-2006: 12,884.2; in-sample fit:
    3,454.9 donors with no repeat and 1,253.1 with six."""
    frame = donations()
    total = (bgbb().expected_purchases(frame, 5) * frame["weight"]).sum()
    assert total == pytest.approx(12884.2, abs=0.05)
    histogram = bgbb().purchase_distribution(6) * 11104
    assert histogram[0] == pytest.approx(3454.9, abs=0.05)
    assert histogram[6] == pytest.approx(1253.1, abs=0.05)
    assert histogram.sum() == pytest.approx(11104)


def test_bgbb_expectation_by_brute_force_and_at_gamma_one():
    """E[purchases in the next N] = sum_j P(alive at n+j | data) E[p | data]."""
    model = BetaGeoBetaBinom()
    model.params_ = {"alpha": 1.2, "beta": 0.75, "gamma": 0.66, "delta": 2.78}
    frame = donations().iloc[[0, 8, 21]]
    alpha, beta, gamma, delta = 1.2, 0.75, 0.66, 2.78
    B = special.beta
    likelihood = np.exp(
        model._log_terms(
            (alpha, beta, gamma, delta),
            *(frame[c].to_numpy(float) for c in ("frequency", "recency", "n_periods")),
        )[0]
    )
    likelihood = likelihood.sum(axis=1)
    x, n = frame["frequency"].to_numpy(float), 6.0
    expected = (
        sum(
            B(alpha + x + 1, beta + n - x)
            / B(alpha, beta)
            * B(gamma, delta + n + j)
            / B(gamma, delta)
            for j in range(1, 11)
        )
        / likelihood
    )
    np.testing.assert_allclose(model.expected_purchases(frame, 10), expected, rtol=1e-12)
    near = BetaGeoBetaBinom()
    near.params_ = {"alpha": 1.2, "beta": 0.75, "gamma": 1.0, "delta": 2.78}
    off = BetaGeoBetaBinom()
    off.params_ = {"alpha": 1.2, "beta": 0.75, "gamma": 1.0 + 1e-5, "delta": 2.78}
    np.testing.assert_allclose(
        near.expected_purchases(frame, 10), off.expected_purchases(frame, 10), rtol=1e-4
    )


def test_bgbb_refuses_impossible_histories():
    bad = donations().head(2).copy()
    bad.loc[1, "frequency"] = 3  # three purchases by opportunity 1
    with pytest.raises(DataError, match="frequency"):
        BetaGeoBetaBinom().fit(bad)


def test_bgbb_json_round_trip():
    loaded = Model.from_json(bgbb().to_json())
    pd.testing.assert_series_equal(loaded.p_alive(donations()), bgbb().p_alive(donations()))


@pytest.mark.parametrize(
    ("survivors", "alpha", "beta"), [(REGULAR, 0.704, 1.182), (HIGH_END, 0.668, 3.806)]
)
def test_sbg_matches_the_published_estimates(survivors, alpha, beta):
    model = ShiftedBetaGeometric().fit(survivors)
    assert model.params_["alpha"] == pytest.approx(alpha, abs=6e-4)
    assert model.params_["beta"] == pytest.approx(beta, abs=6e-4)
    assert model.converged_
    # the fitted survival curve passes near the data
    fitted = model.survival(range(len(survivors))) * survivors[0]
    np.testing.assert_allclose(fitted, survivors, rtol=0.03)


def test_sbg_retention_rises_and_residual_lifetime_is_a_discounted_sum():
    model = ShiftedBetaGeometric().fit(REGULAR)
    retention = model.retention_rate(range(1, 13)).to_numpy()
    assert np.all(np.diff(retention) > 0)
    survival = model.survival(range(1, 13)).to_numpy()
    np.testing.assert_allclose(survival, np.cumprod(retention), rtol=1e-12)
    churn = model.churn_probability(range(1, 13)).to_numpy()
    np.testing.assert_allclose(churn, np.concatenate([[1.0], survival[:-1]]) - survival, rtol=1e-10)
    alpha, beta = model.params_["alpha"], model.params_["beta"]
    for renewals in (0, 4):
        j = np.arange(0, 200_000)
        terms = np.exp(
            special.betaln(alpha, beta + renewals + 1 + j) - special.betaln(alpha, beta + renewals)
        )
        brute = float(np.sum(terms * 1.1**-j))
        assert model.expected_residual_lifetime([renewals], 0.1).iloc[0] == pytest.approx(
            brute, rel=1e-10
        )
    with pytest.raises(ValueError, match="above 0"):
        model.expected_residual_lifetime([0], 0.0)


def test_sbg_refuses_counts_that_grow():
    with pytest.raises(DataError, match="never increase"):
        ShiftedBetaGeometric().fit([100, 80, 90])


# Fader & Hardie (2007), Table 1: the customers still active in years 8 to 12
LATER = {"regular": [223, 207, 194, 183, 173], "high end": [468, 445, 427, 409, 394]}


@pytest.mark.parametrize(("survivors", "name"), [(REGULAR, "regular"), (HIGH_END, "high end")])
def test_sbg_projects_years_8_to_12_as_published(survivors, name):
    """Fitted on years 0-7, the projection of years 8-12 lands within 1.3-4.1% of the
    survivors (the paper's figure for these two cohorts)."""
    model = ShiftedBetaGeometric().fit(survivors)
    projected = 1000 * model.survival(range(8, 13)).to_numpy()
    error = np.abs(projected / np.array(LATER[name]) - 1)
    assert error.max() < 0.042 and error.min() > 0.005, error


def test_sbg_fits_cohorts_together():
    """Cohorts share the parameters: two copies of a cohort fit as the cohort alone, and a
    younger cohort's likelihood adds its own periods (checked against the sum by hand)."""
    alone = ShiftedBetaGeometric().fit(REGULAR)
    twice = ShiftedBetaGeometric().fit([REGULAR, REGULAR])
    assert twice.params_["alpha"] == pytest.approx(alone.params_["alpha"], rel=1e-6)
    assert twice.params_["beta"] == pytest.approx(alone.params_["beta"], rel=1e-6)
    young = [500, 300, 230]
    both = ShiftedBetaGeometric().fit([REGULAR, young])

    def loglik(alpha, beta, counts):
        counts = np.asarray(counts, dtype=float)
        t = np.arange(1, counts.size)
        lost = -np.diff(counts)
        log_p = special.betaln(alpha + 1, beta + t - 1) - special.betaln(alpha, beta)
        log_s = special.betaln(alpha, beta + t[-1]) - special.betaln(alpha, beta)
        return float(lost @ log_p + counts[-1] * log_s)

    a, b = both.params_["alpha"], both.params_["beta"]
    total = loglik(a, b, REGULAR) + loglik(a, b, young)
    for da, db in ((0.01, 0), (-0.01, 0), (0, 0.01), (0, -0.01)):  # the sum's maximum
        assert loglik(a + da, b + db, REGULAR) + loglik(a + da, b + db, young) < total
    assert both.params_["beta"] != pytest.approx(alone.params_["beta"], rel=1e-3)
    with pytest.raises(DataError, match="cohort 2: survivor counts must never increase"):
        ShiftedBetaGeometric().fit([REGULAR, [10, 12]])


# -- BdW: the sBG with duration dependence (Fader, Hardie, Liu, Davin & Steenburgh 2018)


def test_bdw_with_c_1_is_the_sbg():
    """At c = 1 the BdW's likelihood, survival, churn and residual lifetime are the sBG's."""
    sbg = ShiftedBetaGeometric().fit(REGULAR)
    alpha, beta = sbg.params_["alpha"], sbg.params_["beta"]
    bdw = BetaDiscreteWeibull()
    prepared = bdw._prepare(REGULAR, None)
    value, _ = bdw._loglik(np.array([alpha, beta, 1.0]), prepared)
    assert value == pytest.approx(sbg.log_likelihood_, rel=1e-12)
    bdw.params_ = {"alpha": alpha, "beta": beta, "c": 1.0}
    periods = range(1, 30)
    for method in ("survival", "retention_rate", "churn_probability"):
        np.testing.assert_allclose(
            getattr(bdw, method)(periods), getattr(sbg, method)(periods), rtol=1e-10
        )
    np.testing.assert_allclose(
        bdw.expected_residual_lifetime([0, 3, 10], 0.1),
        sbg.expected_residual_lifetime([0, 3, 10], 0.1),
        rtol=1e-9,
    )


def test_bdw_gradient_is_the_likelihoods_slope():
    bdw = BetaDiscreteWeibull()
    prepared = bdw._prepare([REGULAR, [500, 300, 230]], None)
    point = np.array([0.6, 1.3, 0.8])
    _, grad = bdw._loglik(point, prepared)
    for k in range(3):
        step = np.zeros(3)
        step[k] = 1e-6
        up, _ = bdw._loglik(point + step, prepared)
        down, _ = bdw._loglik(point - step, prepared)
        assert grad[k] == pytest.approx((up - down) / 2e-6, rel=1e-6), k


@pytest.mark.parametrize(("survivors", "name"), [(REGULAR, "regular"), (HIGH_END, "high end")])
def test_bdw_fits_at_least_as_well_and_projects_years_8_to_12(survivors, name):
    """On both published cohorts the fitted c is above 1 (each customer's chance to cancel
    grows with tenure once the sBG's sorting is taken out), the likelihood is at least the
    sBG's (the models are nested), and years 8-12 land within 2.6% (the sBG: 4.1%)."""
    sbg = ShiftedBetaGeometric().fit(survivors)
    bdw = BetaDiscreteWeibull().fit(survivors)
    assert bdw.converged_
    assert bdw.params_["c"] > 1.2
    assert bdw.log_likelihood_ >= sbg.log_likelihood_
    projected = 1000 * bdw.survival(range(8, 13)).to_numpy()
    error = np.abs(projected / np.array(LATER[name]) - 1)
    assert error.max() < 0.026, error


def test_bdw_recovers_simulated_parameters():
    rng = np.random.default_rng(3)
    theta = rng.beta(0.8, 2.5, size=200_000)
    u = rng.random(theta.size)
    # still active after t while (1 - theta) ** (t ** c) > u
    lifetimes = np.floor((np.log(u) / np.log1p(-theta)) ** (1 / 0.7)).astype(int)
    survivors = [int((lifetimes >= t).sum()) for t in range(0, 13)]
    model = BetaDiscreteWeibull().fit(survivors)
    assert model.params_["alpha"] == pytest.approx(0.8, rel=0.1)
    assert model.params_["beta"] == pytest.approx(2.5, rel=0.15)
    assert model.params_["c"] == pytest.approx(0.7, rel=0.05)
    renewals = model.expected_residual_lifetime([0], 0.01).iloc[0]
    j = np.arange(0, 20_000)
    by_sum = float(np.sum(model.survival(1 + j).to_numpy() / 1.01**j))
    assert renewals == pytest.approx(by_sum, rel=1e-9)


def test_bdw_survives_extreme_duration_dependence():
    """A trial that nearly everyone keeps and then almost everyone leaves: c in the
    hundreds, where t**c overflows and two digammas of huge arguments cancel; the slope
    stays the likelihood's (the fit converges) and the residual lifetime of a daily
    plan is summed to its end, as the sBG's closed form says at c = 1."""
    cliff = [[100, 95, 5, 5, 5], [100, 96, 4, 4]]
    bdw = BetaDiscreteWeibull()
    prepared = bdw._prepare(cliff, None)
    point = np.array([0.118, 2.33, 32.0])
    _, grad = bdw._loglik(point, prepared)
    for k in range(3):
        step = np.zeros(3)
        step[k] = 1e-5 * point[k]
        up, _ = bdw._loglik(point + step, prepared)
        down, _ = bdw._loglik(point - step, prepared)
        assert grad[k] == pytest.approx((up - down) / (2 * step[k]), rel=1e-5), k
    # c = 1000: every survival past period 1 is 0 to rounding, so a cancellation in
    # period 3 is impossible; the optimiser is told to look elsewhere, not crashed
    value, grad = bdw._objective(prepared)(np.log([0.5, 1.0, 1000.0]))
    assert value == 1e300 and not grad.any()
    fitted = BetaDiscreteWeibull().fit(cliff)
    assert fitted.converged_ and fitted.params_["c"] > 50
    with pytest.warns(ConvergenceWarning, match="ran to a bound"):  # the sBG cannot bend so
        sbg_cliff = ShiftedBetaGeometric().fit(cliff)
    assert fitted.log_likelihood_ > sbg_cliff.log_likelihood_ + 100
    sbg = ShiftedBetaGeometric().fit(REGULAR)
    same = BetaDiscreteWeibull()
    same.params_ = {"alpha": sbg.params_["alpha"], "beta": sbg.params_["beta"], "c": 1.0}
    daily = 1.1 ** (1 / 365.25) - 1
    assert same.expected_residual_lifetime([0], daily).iloc[0] == pytest.approx(
        sbg.expected_residual_lifetime([0], daily).iloc[0], rel=1e-8
    )
