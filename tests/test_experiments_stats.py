"""The statistics of experiments: figures worked out by hand, and simulations with a
known effect (A/A tests read at every look, a planted lift, interval coverage)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from retain.cli import app
from retain.errors import ArgumentError
from retain.experiments import stats


def invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_two_proportion_test_by_hand() -> None:
    """40 of 1,000 against 60 of 1,000: pooled p = 100 / 2000 = 0.05,
    se = sqrt(0.05 * 0.95 * (1/1000 + 1/1000)) = sqrt(0.000095) = 0.0097468,
    z = (0.06 - 0.04) / 0.0097468 = 2.0520, two-sided p = 2 (1 - Phi(2.0520)) = 0.0402."""
    z, p = stats.two_proportion_test(40, 1000, 60, 1000)
    assert z == pytest.approx(2.0520, abs=1e-4)
    assert p == pytest.approx(0.0402, abs=1e-4)


def test_wilson_by_hand() -> None:
    """40 of 1,000, z = 1.96: centre (0.04 + 1.96²/2000) / (1 + 1.96²/1000) = 0.041760,
    half 1.96 sqrt(0.04 * 0.96 / 1000 + 1.96² / 4e6) / 1.003842 = 0.012250."""
    low, high = stats.wilson(40, 1000)
    assert low == pytest.approx(0.041760 - 0.012250, abs=2e-6)
    assert high == pytest.approx(0.041760 + 0.012250, abs=2e-6)


def test_beta_binomial_by_hand() -> None:
    """A: 0 of 1, posterior Beta(1, 2), F_A(p) = 1 - (1-p)²; B: 1 of 1, Beta(2, 1),
    f_B(p) = 2p, F_B(p) = p². P(B best) = ∫ 2p (2p - p²) dp = 4/3 - 1/2 = 5/6.
    E[max] = 1 - ∫ F_A F_B = 1 - (2/4 - 1/5) = 0.7; loss A = 0.7 - 1/3, loss B = 0.7 - 2/3.
    Two flat arms: 1/2 each, loss E[max of two uniforms] - 1/2 = 2/3 - 1/2 = 1/6."""
    best, loss = stats.beta_binomial([0, 1], [1, 1])
    assert best == pytest.approx([1 / 6, 5 / 6], abs=1e-6)
    assert loss == pytest.approx([0.7 - 1 / 3, 0.7 - 2 / 3], abs=1e-6)
    best, loss = stats.beta_binomial([0, 0], [0, 0])
    assert best == pytest.approx([0.5, 0.5], abs=1e-6)
    assert loss == pytest.approx([1 / 6, 1 / 6], abs=1e-6)


def test_beta_binomial_resolves_narrow_posteriors_far_apart() -> None:
    best, loss = stats.beta_binomial([40_000, 46_000, 43_000], [10**6] * 3)
    assert best[1] == pytest.approx(1.0, abs=1e-9)
    assert loss[0] == pytest.approx(0.006, abs=1e-5)
    assert loss[1] < 1e-9


def test_sample_size_by_hand_and_from_the_cli() -> None:
    """baseline 0.04, +10%: p2 = 0.044, mean 0.042; 1.959964 sqrt(2 * 0.042 * 0.958) =
    0.555998, 0.841621 sqrt(0.0384 + 0.042064) = 0.238737; (0.794735)² / 0.004² = 39,474.9
    -> 39,475 per arm."""
    assert stats.sample_size(0.04, 0.1) == 39_475
    # the arcsine form (statsmodels' NormalIndPower) agrees within a percent
    h = 2 * np.arcsin(np.sqrt(0.044)) - 2 * np.arcsin(np.sqrt(0.04))
    assert stats.sample_size(0.04, 0.1) == pytest.approx(
        2 * ((1.959964 + 0.841621) / h) ** 2, rel=0.01
    )
    assert stats.sample_size(0.04, 0.2) < stats.sample_size(0.04, 0.1)
    assert stats.sample_size(0.04, 0.1, power=0.9) > 39_475
    result = invoke("experiments", "size", "--baseline", "0.04", "--lift", "0.1", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["per_arm"] == 39_475
    for args in (["--baseline", "4", "--lift", "0.1"], ["--baseline", "0.5", "--lift", "1.5"]):
        bad = invoke("experiments", "size", *args)
        assert bad.exit_code == 2
        assert "expected" in bad.output
    with pytest.raises(ArgumentError, match="lift"):
        stats.sample_size(0.04, 0.0)


def _looks(rng: np.random.Generator, p_a: float, p_b: float, step: int, looks: int) -> list:
    """Cumulative counts of two arms after each of ``looks`` batches of ``step``."""
    a = rng.binomial(step, p_a, size=looks).cumsum()
    b = rng.binomial(step, p_b, size=looks).cumsum()
    n = step * np.arange(1, looks + 1)
    return list(zip(a.tolist(), b.tolist(), n.tolist(), strict=True))


def test_aa_tests_read_at_every_look_keep_the_false_winner_rate() -> None:
    """1,000 A/A tests, each read after every one of 20 batches of 500 a arm: the
    sequential rule names a winner in at most 5% of them; the fixed-horizon z-test, read
    the same way, does in far more (which is why the report does not decide on it)."""
    rng = np.random.default_rng(7)
    sequential = naive = 0
    for _ in range(1000):
        path = _looks(rng, 0.05, 0.05, 500, 20)
        if any(stats.compare_rates(a, n, b, n).verdict != "undecided" for a, b, n in path):
            sequential += 1
        if any(stats.two_proportion_test(a, n, b, n)[1] < 0.05 for a, b, n in path):
            naive += 1
    assert sequential / 1000 <= 0.05
    assert naive / 1000 > 0.10


def test_a_planted_lift_is_found() -> None:
    """+20% (5% -> 6%) with 40,000 a arm: the rule finds the better arm in nearly every
    run and never the worse one."""
    rng = np.random.default_rng(11)
    verdicts = []
    for _ in range(200):
        a = int(rng.binomial(40_000, 0.05))
        b = int(rng.binomial(40_000, 0.06))
        verdicts.append(stats.compare_rates(a, 40_000, b, 40_000).verdict)
    assert verdicts.count("better") / 200 >= 0.95
    assert "worse" not in verdicts


def test_intervals_cover_the_planted_effect_at_their_rate() -> None:
    """Over 1,000 seeds, Newcombe's interval of a +1 point difference covers it about 95%
    of the time, the always-valid interval at least that; so does Welch's interval of a
    revenue difference."""
    rng = np.random.default_rng(3)
    fixed = seq = welch = 0
    for _ in range(1000):
        a = int(rng.binomial(5000, 0.05))
        b = int(rng.binomial(5000, 0.06))
        c = stats.compare_rates(a, 5000, b, 5000)
        fixed += c.interval[0] <= 0.01 <= c.interval[1]
        seq += c.sequential_interval[0] <= 0.01 <= c.sequential_interval[1]
        r_a = rng.exponential(20.0, 400) * (rng.random(400) < 0.3)
        r_b = rng.exponential(24.0, 400) * (rng.random(400) < 0.3)
        m = stats.compare_means(r_a, r_b)
        welch += m.interval[0] <= 0.3 * 4.0 <= m.interval[1]
    assert 0.93 <= fixed / 1000 <= 0.97
    assert seq / 1000 >= 0.95
    assert 0.93 <= welch / 1000 <= 0.97


@pytest.mark.parametrize(
    ("p", "text"),
    [
        (0.0, "0%"),
        (0.001, "<1%"),
        (0.005, "<1%"),
        (0.01, "1%"),
        (0.42, "42%"),
        (0.996, ">99%"),
        (1.0, "100%"),
    ],
)
def test_a_probability_is_never_rounded_to_a_certainty(p: float, text: str) -> None:
    from retain.experiments.analysis import chance

    assert chance(p) == text
