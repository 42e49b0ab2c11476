"""The models against published results on the CDNOW sample.

Sources: Fader, Hardie & Lee (2005), "Counting your customers the easy way",
Marketing Science 24(2) (BG/NBD and Pareto/NBD on the 2,357-customer sample,
weeks, calibration to 1997-09-30); Fader & Hardie (2013), "The Gamma-Gamma
model of monetary value" (946 repeat buyers); Hardie's spreadsheets that go
with these notes, and the BTYD R package's documentation (same data).
"""

from __future__ import annotations

import numpy as np
import pytest

from models_helpers import bgnbd, cdnow_summary, cdnow_transactions, customers, gamma_gamma, pnbd
from retain.models import BetaGeo, ModifiedBetaGeo, ParetoNBD


def test_the_summary_is_the_papers():
    summary = cdnow_summary()
    assert len(summary) == 2357
    assert summary["frequency"].sum() == 2457
    assert (summary["frequency"] > 0).sum() == 946


def test_bgnbd_parameters_and_log_likelihood_match_the_paper():
    """FHL (2005): r = 0.2426, alpha = 4.414, a = 0.7929, b = 2.426, LL = -9582.43."""
    model = bgnbd()
    published = {"r": 0.2426, "alpha": 4.414, "a": 0.7929, "b": 2.426}
    for name, value in published.items():
        assert model.params_[name] == pytest.approx(value, rel=1e-3), name
    assert model.log_likelihood_ == pytest.approx(-9582.43, abs=0.01)
    assert model.converged_


def test_pareto_nbd_parameters_and_log_likelihood_match_the_paper():
    """FHL (2005): r = 0.5532, alpha = 10.576, s = 0.6062, beta = 11.67, LL = -9594.98."""
    model = pnbd()
    published = {"r": 0.5532, "alpha": 10.576, "s": 0.6062, "beta": 11.67}
    for name, value in published.items():
        assert model.params_[name] == pytest.approx(value, rel=5e-3), name
    assert model.log_likelihood_ == pytest.approx(-9594.98, abs=0.01)
    assert model.converged_


def test_gamma_gamma_parameters_match_the_note():
    """Fader & Hardie (2013): p = 6.249, q = 3.745, gamma = 15.45 on the 946 repeat buyers."""
    model = gamma_gamma()
    published = {"p": 6.249, "q": 3.745, "gamma": 15.45}
    for name, value in published.items():
        assert model.params_[name] == pytest.approx(value, rel=2e-3), name
    assert model.n_customers_ == 946


def test_gamma_gamma_conditional_spend_matches_hardies_sheet():
    """Hardie's Gamma-Gamma sheet (note 025): the first ten customers of the sample file,
    with the fitted parameters (the sheet's, unrounded)."""
    model = gamma_gamma()
    first_ten = list(dict.fromkeys(cdnow_transactions()["customer_id"]))[:10]
    spend = model.expected_spend(cdnow_summary().loc[first_ten])
    expected = [24.65, 18.91, 35.17, 35.17, 35.17, 71.46, 18.91, 35.17, 27.28, 35.17]
    np.testing.assert_allclose(spend.to_numpy(), expected, atol=0.01)


def test_bgnbd_conditional_expectation_matches_the_paper():
    """FHL (2005) and Hardie's sheet: x = 2, t_x = 30.43, T = 38.86 buys 1.226 times in 39 weeks."""
    value = bgnbd().expected_purchases(customers([(2, 30.43, 38.86)]), 39).iloc[0]
    assert value == pytest.approx(1.226, abs=5e-4)


def test_bgnbd_new_customer_expectations_match_hardies_sheet():
    """Hardie's BG/NBD sheet, E[X(t)] for a new customer; at T = 0 the conditional
    expectation is the unconditional one."""
    times = [0.1429, 1.0, 3.0, 31.8571, 32.0, 78.0]
    expected = [0.0078, 0.0532, 0.1506, 1.0405, 1.0437, 1.8576]
    new = customers([(0, 0.0, 0.0)])
    got = [bgnbd().expected_purchases(new, t).iloc[0] for t in times]
    np.testing.assert_allclose(got, expected, atol=1e-3)


def test_bgnbd_purchase_probabilities_match_btyd():
    """BTYD's bgnbd.pmf with r = 0.243, alpha = 4.414, a = 0.793, b = 2.426."""
    model = BetaGeo()
    model.params_ = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
    new = customers([(0, 0.0, 0.0)])
    assert model.probability_of_purchases(new, 10, 2).iloc[0] == pytest.approx(
        1.07869e-07, rel=1e-5
    )
    assert model.probability_of_purchases(new, 0, 39).iloc[0] == pytest.approx(0.5737864, abs=1e-7)
    pmf = [model.probability_of_purchases(new, n, 30).iloc[0] for n in range(11, 21)]
    expected = [
        0.0019995214, 0.0015170236, 0.0011633150, 0.0009003148, 0.0007023638,
        0.0005517902, 0.0004361913, 0.0003467171, 0.0002769613, 0.0002222260,
    ]  # fmt: skip
    np.testing.assert_allclose(pmf, expected, rtol=1e-6)


def test_pareto_nbd_p_alive_and_expectation_match_btyd():
    """BTYD walkthrough: with r = 0.5534, alpha = 10.5802, s = 0.6061, beta = 11.6562, the
    customer x = 26, t_x = 30.86, T = 31 is alive with probability 0.9979; with the
    fitted parameters they buy 25.46 times in the next 52 weeks."""
    model = ParetoNBD()
    model.params_ = {"r": 0.5534, "alpha": 10.5802, "s": 0.6061, "beta": 11.6562}
    one = customers([(26, 30.86, 31.0)])
    assert model.p_alive(one).iloc[0] == pytest.approx(0.9979, abs=1e-4)
    assert pnbd().expected_purchases(one, 52).iloc[0] == pytest.approx(25.46, abs=0.005)


def test_pareto_nbd_handles_the_known_overflow_case():
    """x = 221, t_x = 103.43, T = 103.57 overflows 2F1-based implementations."""
    model = pnbd()
    one = customers([(221, 103.43, 103.57)])
    p_alive = model.p_alive(one).iloc[0]
    expected = model.expected_purchases(one, 52).iloc[0]
    assert 0.99 < p_alive <= 1.0
    # a customer buying twice a week who was just seen keeps buying about that fast
    assert 221 / 103.57 * 52 * 0.8 < expected < 221 / 103.57 * 52 * 1.05


def test_mbgnbd_fits_cdnow_at_least_as_well_as_bgnbd_allows():
    """MBG/NBD nests no model here, but on CDNOW its fit is as good as BG/NBD's
    (Batislam et al. report similar fits); and customers without repeat purchases
    are no longer certainly alive."""
    model = ModifiedBetaGeo().fit(cdnow_summary())
    assert model.converged_
    assert model.log_likelihood_ == pytest.approx(bgnbd().log_likelihood_, abs=5.0)
    p_alive = model.p_alive(customers([(0, 0.0, 30.0)])).iloc[0]
    assert 0.0 < p_alive < 1.0


def test_fitted_models_predict_the_calibration_total():
    """In-sample check: each customer's expected repeat purchases over their own T, as a
    new customer, add up to the observed 2,457 within a few percent."""
    summary = cdnow_summary()
    new = customers([(0, 0.0, 0.0)])
    ages, counts = np.unique(summary["T"], return_counts=True)
    for model in (bgnbd(), pnbd()):
        total = sum(
            count * model.expected_purchases(new, age).iloc[0]
            for age, count in zip(ages, counts, strict=True)
        )
        assert total == pytest.approx(2457, rel=0.03)
