"""The stopping rule of A/B experiments: a mixture sequential probability ratio test (mSPRT)
on the difference of two positive-feedback rates.

An experiment looks at its results again and again (every rollout interval) and stops as soon
as they are conclusive; a fixed-sample test looked at that way would declare winners far more
often than its alpha says. The mSPRT (Robbins 1970; Johari, Pekelis & Walsh, "Always valid
inference", 2017, as in Optimizely's Stats Engine) keeps the false-positive rate at most alpha
however often it is looked at:

* the difference ``d = rate_B - rate_A`` is estimated with variance
  ``V = p(1-p) (1/n_A + 1/n_B)`` (pooled rate ``p``, the normal approximation);
* the likelihood ratio of "d ~ N(0, tau^2)" (a mixture of effects of about ``tau``) against
  "d = 0" is ``L = sqrt(V / (V + tau^2)) * exp(tau^2 d^2 / (2 V (V + tau^2)))``;
* the test rejects "no difference" the first time ``L >= 1 / alpha``. The always-valid p-value
  is ``min over looks of 1 / L``; the always-valid confidence interval for the difference is
  every ``d0`` that ``L`` (re-centred on ``d0``) would not reject.

Each arm needs ``min_samples`` rated answers before the normal approximation is trusted.
tests/unit/test_sequential.py measures the false-positive rate of this rule by simulation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class SequentialTest:
    alpha: float = 0.05
    tau: float = 0.1  # the size of effect the mixture expects: 10 points of positive rate
    min_samples: int = 20

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError("alpha must be in (0, 1)")
        if self.tau <= 0:
            raise ValueError("tau must be positive")

    def compare(self, a: tuple[int, int], b: tuple[int, int]) -> Comparison:
        """Arm B against arm A, each given as (positive, rated)."""
        (pos_a, n_a), (pos_b, n_b) = a, b
        if min(n_a, n_b) < self.min_samples:
            return Comparison(None, 1.0, 1.0, None, enough=False)
        rate_a, rate_b = pos_a / n_a, pos_b / n_b
        difference = rate_b - rate_a
        pooled = (pos_a + pos_b) / (n_a + n_b)
        # A pooled rate of 0 or 1 has no spread; a tiny floor keeps the ratio finite (and 1).
        variance = max(pooled * (1 - pooled), 1e-9) * (1 / n_a + 1 / n_b)
        ratio = self.likelihood_ratio(difference, variance)
        half_width = self._half_width(variance)
        return Comparison(
            difference,
            ratio,
            min(1.0, 1 / ratio),
            (difference - half_width, difference + half_width),
            enough=True,
        )

    def likelihood_ratio(self, difference: float, variance: float) -> float:
        tau2 = self.tau**2
        exponent = tau2 * difference**2 / (2 * variance * (variance + tau2))
        return math.sqrt(variance / (variance + tau2)) * math.exp(min(exponent, 700.0))

    def _half_width(self, variance: float) -> float:
        tau2 = self.tau**2
        log_term = 2 * math.log(1 / self.alpha) + math.log((variance + tau2) / variance)
        return math.sqrt(variance * (variance + tau2) / tau2 * log_term)

    def rejects(self, comparison: Comparison) -> bool:
        return comparison.enough and comparison.likelihood_ratio >= 1 / self.alpha


@dataclass(frozen=True)
class Comparison:
    difference: float | None  # rate of B minus rate of A
    likelihood_ratio: float
    p_value: float  # this look's 1/L; the experiment keeps the minimum over its looks
    interval: tuple[float, float] | None  # always-valid interval for the difference
    enough: bool  # both arms have min_samples ratings


def wilson_interval(positive: int, rated: int, z: float = 1.96) -> tuple[float, float] | None:
    """A 95% interval for one arm's rate (a fixed-sample interval, for display)."""
    if rated == 0:
        return None
    rate = positive / rated
    denominator = 1 + z**2 / rated
    centre = (rate + z**2 / (2 * rated)) / denominator
    spread = z * math.sqrt(rate * (1 - rate) / rated + z**2 / (4 * rated**2)) / denominator
    return (max(0.0, centre - spread), min(1.0, centre + spread))
