"""The compressed index (IVF, 4-bit scalar codes, exact re-ranking): chosen by size, recall
on a generated clustered set above its threshold, a fraction of the flat memory, its kind
and parameters recorded beside the file, and a rebuild asked for rather than done from
codes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from retrieval.index import IndexConfig, VectorIndex, kind_for, read_facts

DIMENSION = 64
SIZE = 20_000
RECALL_THRESHOLD = 0.95
CONFIG = IndexConfig(exact_max_vectors=1000, compressed_min_vectors=10_000, ivf_nprobe=16)


def _clustered(count: int, seed: int, centres: np.ndarray) -> np.ndarray:
    """Unit vectors around random centres, as sentence embeddings cluster by topic."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(centres), count)
    noise = rng.standard_normal((count, DIMENSION), dtype=np.float32) / np.sqrt(DIMENSION)
    vectors = centres[picks] + noise.astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    centres = np.random.default_rng(0).standard_normal((200, DIMENSION)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    return _clustered(SIZE, 1, centres), _clustered(100, 2, centres)


@pytest.fixture(scope="module")
def index(data: tuple[np.ndarray, np.ndarray]) -> VectorIndex:
    vectors, _ = data
    return VectorIndex.build(DIMENSION, CONFIG, np.arange(SIZE, dtype=np.int64), vectors)


def test_the_kind_follows_the_size() -> None:
    assert [kind_for(n, CONFIG) for n in (1000, 1001, 10_000, 10_001)] == [
        "exact",
        "ivf",
        "ivf",
        "ivfsq",
    ]


def test_recall_after_re_ranking_stays_above_its_threshold(
    index: VectorIndex, data: tuple[np.ndarray, np.ndarray]
) -> None:
    vectors, queries = data
    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    scores, found = index.search(queries, 10, exact=lambda ids: vectors[ids])
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth, strict=True)])
    assert index.kind == "ivfsq" and recall >= RECALL_THRESHOLD
    # Re-ranked scores are the exact inner products, best first.
    exact = np.einsum("qd,qkd->qk", queries, vectors[found])
    np.testing.assert_allclose(scores, exact, rtol=1e-5, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-6).all()
    # Without re-ranking the codes alone do worse: the exact vectors earn their keep.
    _, rough = index.search(queries, 10)
    rough_recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rough, truth, strict=True)])
    assert rough_recall < recall


def test_codes_take_a_fraction_of_the_floats(index: VectorIndex) -> None:
    facts = index.describe()
    assert facts["kind"] == "ivfsq" and facts["code_bytes"] == DIMENSION // 2  # 4 bits
    assert facts["rerank_factor"] == CONFIG.rerank_factor and facts["nprobe"] == 16
    flat = SIZE * (4 * DIMENSION + 8)
    assert index.memory_bytes() < flat / 3


def test_saved_with_its_facts_and_loaded_as_it_was(index: VectorIndex, tmp_path: Path) -> None:
    path = tmp_path / "big.faiss"
    index.save(path)
    recorded = read_facts(path)
    assert recorded is not None and recorded["kind"] == "ivfsq"
    assert recorded["vectors"] == SIZE and recorded["nlist"] == index.describe()["nlist"]
    loaded = VectorIndex.load(path, DIMENSION, CONFIG)
    assert loaded.kind == "ivfsq" and np.array_equal(loaded.ids(), np.arange(SIZE))
    assert read_facts(tmp_path / "missing.faiss") is None


def test_removal_and_a_rebuild_request_instead_of_reshaping(
    data: tuple[np.ndarray, np.ndarray],
) -> None:
    vectors, _ = data
    index = VectorIndex.build(DIMENSION, CONFIG, np.arange(SIZE, dtype=np.int64), vectors)
    assert index.remove(np.arange(100, dtype=np.int64)) == 100
    _, found = index.search(vectors[:5], 10, exact=lambda ids: vectors[ids])
    assert not set(found.ravel()) & set(range(100))
    assert not index.needs_rebuild
    # Shrunk past half the threshold: an IVF-flat would do, but codes cannot make one.
    index.remove(np.arange(100, SIZE - 4000, dtype=np.int64))
    assert index.needs_rebuild and index.kind == "ivfsq"
