"""The drift test and the quality KPIs on synthetic data whose answer is known.

The two-sample test must stay quiet on two samples of one distribution, see a moved mean
(both measures), and see a change of spread that leaves the mean in place (MMD only: the
reason the monitor does not rely on the centroid alone)."""

from __future__ import annotations

import numpy as np
import pytest

from monitor.drift import centroid_distance, drift_test
from monitor.quality import StoredCompletion, quality_by_version
from monitor.service import MonitorConfig, QualityMonitor


def _unit(points: np.ndarray) -> np.ndarray:
    result: np.ndarray = points / np.linalg.norm(points, axis=1, keepdims=True)
    return result


def _cloud(rng: np.random.Generator, center: np.ndarray, spread: float, n: int) -> np.ndarray:
    return _unit(center + spread * rng.standard_normal((n, len(center))))


@pytest.fixture
def center() -> np.ndarray:
    return _unit(np.ones((1, 32)))[0]


def test_two_samples_of_one_distribution_do_not_drift(center: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    p_values = [
        drift_test(_cloud(rng, center, 0.3, 60), _cloud(rng, center, 0.3, 60), 100, seed).p_value
        for seed in range(10)
    ]
    # A p-value is uniform under no drift: about one in a hundred falls below 0.01.
    assert sum(p < 0.01 for p in p_values) <= 1
    assert np.median(p_values) > 0.1


def test_a_moved_mean_is_seen_by_both_measures(center: np.ndarray) -> None:
    rng = np.random.default_rng(2)
    moved = _unit(center + 0.4 * _unit(rng.standard_normal((1, 32)))[0][None, :])[0]
    result = drift_test(_cloud(rng, center, 0.3, 60), _cloud(rng, moved, 0.3, 60), 100)
    assert result.p_value == pytest.approx(1 / 101)  # no shuffle came close
    assert result.centroid_distance > 0.02
    assert (result.n_reference, result.n_current) == (60, 60)


def test_a_wider_spread_with_the_same_mean_is_seen_by_mmd_only(center: np.ndarray) -> None:
    rng = np.random.default_rng(3)
    narrow, wide = _cloud(rng, center, 0.1, 80), _cloud(rng, center, 0.6, 80)
    result = drift_test(narrow, wide, 100)
    assert result.p_value < 0.02
    assert centroid_distance(narrow, wide) < result.centroid_distance + 1e-9
    assert result.centroid_distance < 0.05  # the means barely differ


def test_a_window_needs_two_points(center: np.ndarray) -> None:
    with pytest.raises(ValueError, match="at least two"):
        drift_test(center[None, :], np.vstack([center, center]))


def test_quality_per_version() -> None:
    served = [
        StoredCompletion("v1", True, "Paris.", 0.8, "positive"),
        StoredCompletion("v1", True, "I don't know.", 0.2, "negative"),
        StoredCompletion("v1", True, "It is 42.", None, "neutral"),  # neutral: not a thumb
        StoredCompletion("v1", False, "", None, None),  # errors count as requests, not answers
        StoredCompletion("v2", True, "Yes.", None, "positive"),
    ]
    quality = quality_by_version(served)
    v1 = quality["v1"].as_dict()
    assert (v1["requests"], v1["errors"], v1["feedback"]) == (4, 1, 2)
    assert v1["positive_ratio"] == 0.5
    assert v1["groundedness"] == pytest.approx(0.5)
    assert v1["idk_rate"] == pytest.approx(1 / 3)
    assert quality["v2"].positive_ratio == 1.0 and quality["v2"].groundedness is None


def test_what_asks_for_training() -> None:
    config = MonitorConfig(min_feedback=4, min_queries=4, min_positive_ratio=0.5, max_idk_rate=0.5)
    monitor = QualityMonitor(None, lambda texts: np.zeros((0, 1)), config, "base")  # type: ignore[arg-type]
    unhappy = quality_by_version(
        [StoredCompletion("v1", True, "I don't know", None, "negative")] * 3
        + [StoredCompletion("v1", True, "Yes", None, "positive")]
    )["v1"]
    assert monitor._triggers(False, unhappy) == ["low_positive_ratio", "high_idk_rate"]
    assert monitor._triggers(True, None) == ["drift"]
    too_little = quality_by_version(
        [StoredCompletion("v1", True, "I don't know", None, "negative")]
    )["v1"]
    assert monitor._triggers(False, too_little) == []  # below min_feedback and min_queries
