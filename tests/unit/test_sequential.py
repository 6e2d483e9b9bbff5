"""The experiments' stopping rule (adapters/sequential.py), checked by simulation: looked at
after every batch of ratings, it declares a difference between two equal arms at most alpha
of the time, while a fixed-sample z-test looked at the same way does so far more often; and
it finds a real difference of 20 points within the sample budget."""

from __future__ import annotations

import math

import numpy as np
import pytest

from adapters.sequential import SequentialTest, wilson_interval

RUNS = 2000
MAX_PER_ARM = 600
LOOK_EVERY = 10  # ratings per arm between looks, as an experiment re-checks on a timer


def _decided_runs(test: SequentialTest, rate_a: float, rate_b: float, seed: int) -> np.ndarray:
    """For each simulated experiment, whether the rule stopped it with a difference."""
    rng = np.random.default_rng(seed)
    a = np.cumsum(rng.random((RUNS, MAX_PER_ARM)) < rate_a, axis=1)
    b = np.cumsum(rng.random((RUNS, MAX_PER_ARM)) < rate_b, axis=1)
    decided = np.zeros(RUNS, dtype=bool)
    for n in range(LOOK_EVERY, MAX_PER_ARM + 1, LOOK_EVERY):
        for run in np.flatnonzero(~decided):
            result = test.compare((int(a[run, n - 1]), n), (int(b[run, n - 1]), n))
            decided[run] = test.rejects(result)
    return decided


def _naive_peeking(rate: float, seed: int) -> float:
    """A two-proportion z-test at 5%, looked at as often: the error the mSPRT avoids."""
    rng = np.random.default_rng(seed)
    a = np.cumsum(rng.random((RUNS, MAX_PER_ARM)) < rate, axis=1)
    b = np.cumsum(rng.random((RUNS, MAX_PER_ARM)) < rate, axis=1)
    decided = np.zeros(RUNS, dtype=bool)
    for n in range(20, MAX_PER_ARM + 1, LOOK_EVERY):
        pooled = (a[:, n - 1] + b[:, n - 1]) / (2 * n)
        spread = np.sqrt(np.maximum(pooled * (1 - pooled), 1e-9) * 2 / n)
        z = np.abs(b[:, n - 1] - a[:, n - 1]) / n / spread
        decided |= z > 1.96
    return float(decided.mean())


@pytest.mark.parametrize("rate", [0.3, 0.6, 0.85])
def test_false_positive_rate_stays_under_alpha_with_continuous_looks(rate: float) -> None:
    test = SequentialTest(alpha=0.05, tau=0.1, min_samples=20)
    false_positives = _decided_runs(test, rate, rate, seed=int(rate * 100)).mean()
    peeking = _naive_peeking(rate, seed=int(rate * 100))
    print(f"rate {rate}: mSPRT false positives {false_positives:.4f}, naive peeking {peeking:.4f}")
    assert false_positives <= 0.05
    assert peeking > 2 * 0.05  # the trap the sequential rule is there for


def test_a_real_difference_is_found_within_the_budget() -> None:
    test = SequentialTest(alpha=0.05, tau=0.1, min_samples=20)
    found = _decided_runs(test, 0.5, 0.7, seed=7).mean()
    print(f"0.5 vs 0.7: decided in {found:.3f} of runs within {MAX_PER_ARM} ratings per arm")
    assert found >= 0.8


def test_nothing_is_decided_before_each_arm_has_min_samples() -> None:
    test = SequentialTest(min_samples=20)
    lopsided = test.compare((0, 19), (19, 19))
    assert not lopsided.enough and not test.rejects(lopsided)
    clear = test.compare((2, 40), (38, 40))
    assert clear.enough and test.rejects(clear) and clear.difference == pytest.approx(0.9)
    assert clear.interval is not None and clear.interval[0] > 0  # B better, for sure
    assert clear.p_value == pytest.approx(1 / clear.likelihood_ratio)


def test_the_interval_covers_zero_exactly_when_the_test_does_not_reject() -> None:
    test = SequentialTest()
    for positive_b in range(0, 101, 5):
        result = test.compare((50, 100), (positive_b, 100))
        assert result.interval is not None
        low, high = result.interval
        covers_zero = low <= 0 <= high
        assert covers_zero is not test.rejects(result), positive_b


def test_wilson_interval_and_bad_settings() -> None:
    assert wilson_interval(0, 0) is None
    low, high = wilson_interval(7, 10) or (0.0, 0.0)
    assert 0.39 < low < 0.7 < high < 0.92
    assert math.isclose(sum(wilson_interval(5, 10) or ()), 1.0)
    with pytest.raises(ValueError, match="alpha"):
        SequentialTest(alpha=1.5)
    with pytest.raises(ValueError, match="tau"):
        SequentialTest(tau=0)
