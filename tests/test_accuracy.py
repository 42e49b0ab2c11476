"""retain.accuracy on hand-made cases whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from retain.accuracy import (
    auc,
    brier,
    decile_lift,
    expected_calibration_error,
    log_loss,
    normalized_gini,
    reliability,
)
from retain.errors import ArgumentError


def test_auc_perfect_reversed_constant_and_ties() -> None:
    labels = [0, 0, 1, 1]
    assert auc([0.1, 0.2, 0.8, 0.9], labels) == 1.0
    assert auc([0.9, 0.8, 0.2, 0.1], labels) == 0.0
    assert auc([0.5, 0.5, 0.5, 0.5], labels) == 0.5
    # one positive tied with one negative, above the other: (1 + 0.5) / 2 pairs won
    assert auc([0.1, 0.5, 0.5, 0.9], [0, 0, 1, 1]) == pytest.approx((2 + 1.5) / 4)
    # the order of the customers does not matter
    assert auc([0.5, 0.9, 0.1, 0.5], [1, 1, 0, 0]) == pytest.approx(3.5 / 4)


def test_auc_none_without_one_of_the_labels() -> None:
    assert auc([0.1, 0.9], [1, 1]) is None
    assert auc([0.1, 0.9], [0, 0]) is None


def test_auc_matches_counting_pairs() -> None:
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 5, 200).astype(float)  # many ties
    labels = rng.integers(0, 2, 200)
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert auc(scores, labels) == pytest.approx(wins / (pos.size * neg.size))


def test_log_loss_and_brier_by_hand() -> None:
    assert log_loss([0.8, 0.4], [1, 0]) == pytest.approx(-(np.log(0.8) + np.log(0.6)) / 2)
    assert brier([0.8, 0.4], [1, 0]) == pytest.approx((0.04 + 0.16) / 2)
    # certainty that turns out wrong is clipped, not infinite
    assert log_loss([0.0], [1]) == pytest.approx(-np.log(1e-15))
    assert log_loss([1.0, 0.0], [1, 0]) == pytest.approx(0.0, abs=1e-12)


def test_bad_input_is_refused() -> None:
    with pytest.raises(ArgumentError, match="between 0 and 1"):
        log_loss([1.5], [1])
    with pytest.raises(ArgumentError, match="0 or 1"):
        brier([0.5], [2])
    with pytest.raises(ArgumentError, match="one value per customer"):
        auc([0.5, 0.2], [1])
    with pytest.raises(ArgumentError, match="NaN"):
        auc([np.nan, 0.2], [1, 0])
    with pytest.raises(ArgumentError, match="bins"):
        reliability([0.5], [1], bins=0)


def test_reliability_equal_count_bins_and_ties_kept_together() -> None:
    p = np.arange(100) / 100
    labels = (np.arange(100) % 2).astype(float)
    table = reliability(p, labels, bins=10)
    assert [row["customers"] for row in table] == [10] * 10
    assert table[0]["predicted"] == pytest.approx(0.045)
    assert table[0]["observed"] == pytest.approx(0.5)
    assert (table[0]["low"], table[0]["high"]) == (0.0, 0.09)
    # 60 customers share one probability: they stay in one bin
    tied = np.r_[np.full(60, 0.3), np.linspace(0.5, 0.9, 40)]
    table = reliability(tied, np.zeros(100), bins=10)
    assert table[0]["customers"] == 60 and table[0]["predicted"] == pytest.approx(0.3)
    assert sum(row["customers"] for row in table) == 100
    assert [row["bin"] for row in table] == list(range(1, len(table) + 1))


def test_ece_by_hand() -> None:
    table = [
        {"bin": 1, "customers": 30, "predicted": 0.2, "observed": 0.1},
        {"bin": 2, "customers": 10, "predicted": 0.5, "observed": 0.9},
    ]
    assert expected_calibration_error(table) == pytest.approx(0.75 * 0.1 + 0.25 * 0.4)
    assert expected_calibration_error([]) is None


def test_ece_near_zero_for_a_calibrated_predictor_and_not_for_a_miscalibrated_one() -> None:
    rng = np.random.default_rng(7)
    n = 20_000
    p = rng.beta(1.0, 2.0, n)
    labels = (rng.random(n) < p).astype(float)
    # each bin's observed share is off by sampling noise of sd sqrt(p (1 - p) / 2000) <=
    # 0.011; the weighted mean of absolute gaps is about 0.8 of that
    tolerance = 3 * np.sqrt(0.25 / (n / 10))
    calibrated = expected_calibration_error(reliability(p, labels))
    assert calibrated is not None and calibrated < tolerance
    # the same outcomes forecast 1.5 times too likely: off by about half the mean p (1/3)
    overconfident = expected_calibration_error(reliability(np.minimum(1.5 * p, 1.0), labels))
    assert overconfident is not None and overconfident > 0.1


def test_decile_lift_of_a_perfect_ranking() -> None:
    actual = np.arange(1, 101, dtype=float)
    rows = decile_lift(actual, actual)
    assert [row["decile"] for row in rows] == list(range(1, 11))
    assert rows[0]["customers"] == 10
    top = actual[90:]
    assert rows[0]["actual"] == pytest.approx(top.mean())
    assert rows[0]["actual_share"] == pytest.approx(top.sum() / actual.sum())
    assert rows[0]["lift"] == pytest.approx((top.sum() / actual.sum()) / 0.1)
    assert sum(row["actual_share"] for row in rows) == pytest.approx(1.0)
    # decile 1 holds the highest predictions
    assert rows[0]["predicted"] > rows[-1]["predicted"]


def test_normalized_gini() -> None:
    rng = np.random.default_rng(3)
    actual = rng.gamma(1.0, 10.0, 500)
    assert normalized_gini(actual, actual) == pytest.approx(1.0)
    assert normalized_gini(2 * actual + 5, actual) == pytest.approx(1.0)  # only the order
    assert normalized_gini(-actual, actual) == pytest.approx(-1.0)
    # a constant prediction is chance: its ties are spread evenly
    assert normalized_gini(np.ones(500), actual) == pytest.approx(0.0, abs=1e-12)
    noisy = normalized_gini(actual + rng.normal(0, 10, 500), actual)
    assert noisy is not None and 0 < noisy < 1
    assert normalized_gini([1.0, 2.0], [0.0, 0.0]) is None


def test_grouped_outcomes_score_as_the_customers_one_by_one() -> None:
    from retain.accuracy import _auc_of, _brier_of, _log_loss_of, _reliability_of, outcomes

    rng = np.random.default_rng(11)
    p_groups = np.round(rng.random(40), 2)  # some groups share a probability too
    groups = rng.integers(0, 40, 3000)
    labels = (rng.random(3000) < p_groups[groups]).astype(float)
    p = p_groups[groups]
    grouped = outcomes(p_groups, labels, groups)
    assert _auc_of(grouped) == pytest.approx(auc(p, labels), rel=1e-12)
    assert _log_loss_of(grouped) == pytest.approx(log_loss(p, labels), rel=1e-12)
    assert _brier_of(grouped) == pytest.approx(brier(p, labels), rel=1e-12)
    for mine, theirs in zip(
        _reliability_of(grouped, 7), reliability(p, labels, bins=7), strict=True
    ):
        assert mine == pytest.approx(theirs, rel=1e-12)
