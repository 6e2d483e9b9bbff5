"""The sticky canary split and the rollout gates, without a database."""

from __future__ import annotations

import pytest

from adapters.rollout import RolloutPolicy, VersionStats, analyse
from core.errors import ConfigError
from core.settings import load_settings
from gateway.routing import sticky_bucket


def test_sticky_bucket_is_stable_and_uniform() -> None:
    assert sticky_bucket("conversation-1") == sticky_bucket("conversation-1")
    buckets = [sticky_bucket(f"conversation-{n}") for n in range(20_000)]
    assert all(0 <= bucket < 1 for bucket in buckets)
    for weight in (0.1, 0.25, 0.5):
        share = sum(bucket < weight for bucket in buckets) / len(buckets)
        assert abs(share - weight) < 0.015  # ~4 standard deviations at n=20k


POLICY = RolloutPolicy(min_samples=10)
GOOD = VersionStats(requests=50, errors=0, p95_latency_ms=100, feedback=20, negative=2,
                    grounded=20, mean_groundedness=0.8)  # fmt: skip


def _gates(canary: VersionStats, live: VersionStats = GOOD) -> dict[str, bool | None]:
    return {result.gate: result.passed for result in analyse(canary, live, POLICY)}


def test_equal_versions_pass_every_gate() -> None:
    assert set(_gates(GOOD).values()) == {True}


@pytest.mark.parametrize(
    ("change", "gate"),
    [
        ({"negative": 10}, "negative_feedback_rate"),
        ({"mean_groundedness": 0.5}, "groundedness"),
        ({"errors": 10}, "error_rate"),
        ({"p95_latency_ms": 400}, "p95_latency"),
    ],
)
def test_each_gate_fails_on_its_own_metric(change: dict[str, float], gate: str) -> None:
    canary = VersionStats(**{**GOOD.__dict__, **change})
    gates = _gates(canary)
    assert gates[gate] is False
    assert all(passed for name, passed in gates.items() if name != gate)


def test_too_few_samples_decide_nothing() -> None:
    thin = VersionStats(requests=3, feedback=2, negative=2, grounded=1, mean_groundedness=0.1)
    assert set(_gates(thin).values()) == {None}


BAD_STEPS = [(), (10, 5, 100), (10, 50), (0, 100), (50, 150), (50, 50, 100)]


@pytest.mark.parametrize("steps", BAD_STEPS)
def test_bad_steps_are_refused(steps: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="steps"):
        RolloutPolicy(steps=steps)


@pytest.mark.parametrize("steps", BAD_STEPS)
def test_the_settings_refuse_the_same_steps(steps: tuple[int, ...]) -> None:
    with pytest.raises(ConfigError, match="rollout_steps"):
        load_settings(rollout_steps=list(steps))


def test_a_gate_with_some_but_too_few_samples_holds_the_step() -> None:
    few_feedback = VersionStats(**{**GOOD.__dict__, "feedback": 2, "negative": 0})
    results = {result.gate: result for result in analyse(few_feedback, GOOD, POLICY)}
    assert results["negative_feedback_rate"].passed is None
    assert results["negative_feedback_rate"].waiting  # decided gates alone must not advance
    assert results["error_rate"].passed is True


def test_a_gate_with_no_samples_at_all_does_not_apply() -> None:
    ungrounded = VersionStats(**{**GOOD.__dict__, "grounded": 0, "mean_groundedness": 0.0})
    results = {result.gate: result for result in analyse(ungrounded, ungrounded, POLICY)}
    assert results["groundedness"].passed is None
    assert not results["groundedness"].waiting
