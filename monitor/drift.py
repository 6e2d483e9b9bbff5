"""Has the traffic moved? Two-sample tests on query embeddings.

Two windows of unit-length query embeddings are compared:

* **centroid distance**: the cosine distance between the windows' mean embeddings. Cheap and
  easy to read ("the average question moved by 0.08"), but blind to a change in spread or a
  new cluster that leaves the mean in place.
* **MMD** (maximum mean discrepancy) with a Gaussian kernel whose bandwidth is the median
  pairwise distance of the pooled sample (the usual median heuristic). It sees any change of
  distribution, and a permutation test turns it into a p-value: the windows' labels are
  shuffled ``permutations`` times and the p-value is the share of shuffles whose MMD is at
  least the observed one.

Drift is declared when the shift is both significant (p below a threshold) and large enough
to matter (centroid distance above a floor): with hundreds of queries a tiny, harmless shift
is already significant.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class DriftResult:
    centroid_distance: float
    mmd: float
    p_value: float
    n_reference: int
    n_current: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def centroid_distance(reference: np.ndarray, current: np.ndarray) -> float:
    a, b = reference.mean(axis=0), current.mean(axis=0)
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    return 0.0 if norms == 0 else float(1.0 - np.dot(a, b) / norms)


def gaussian_kernel(points: np.ndarray) -> np.ndarray:
    squared = np.sum(points**2, axis=1)
    distances = np.maximum(squared[:, None] + squared[None, :] - 2 * points @ points.T, 0.0)
    off_diagonal = distances[~np.eye(len(points), dtype=bool)]
    bandwidth = float(np.median(off_diagonal)) or 1.0
    result: np.ndarray = np.exp(-distances / bandwidth)
    return result


def mmd_squared(kernel: np.ndarray, first: np.ndarray, second: np.ndarray) -> float:
    """Unbiased MMD² between two index sets of one pooled kernel matrix."""

    def within(indices: np.ndarray) -> float:
        block = kernel[np.ix_(indices, indices)]
        n = len(indices)
        return float((block.sum() - np.trace(block)) / (n * (n - 1)))

    between = float(kernel[np.ix_(first, second)].mean())
    return within(first) + within(second) - 2 * between


def drift_test(
    reference: np.ndarray, current: np.ndarray, permutations: int = 200, seed: int = 0
) -> DriftResult:
    if len(reference) < 2 or len(current) < 2:
        raise ValueError("each window needs at least two embeddings")
    pooled = np.vstack([reference, current]).astype(np.float64)
    kernel = gaussian_kernel(pooled)
    n = len(reference)
    indices = np.arange(len(pooled))
    observed = mmd_squared(kernel, indices[:n], indices[n:])
    rng = np.random.default_rng(seed)
    at_least = 0
    for _ in range(permutations):
        shuffled = rng.permutation(indices)
        at_least += mmd_squared(kernel, shuffled[:n], shuffled[n:]) >= observed
    return DriftResult(
        centroid_distance=centroid_distance(reference, current),
        mmd=max(observed, 0.0),
        p_value=(1 + at_least) / (1 + permutations),
        n_reference=len(reference),
        n_current=len(current),
    )
