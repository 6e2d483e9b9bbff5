"""One collection's FAISS index: exact while small, IVF when large, compressed when huge.

* Up to ``exact_max_vectors``: ``IndexIDMap2(IndexFlatIP)``, exact inner product.
* Up to ``compressed_min_vectors``: ``IndexIVFFlat`` (inner product) with ``nlist ≈ 4·sqrt(n)``
  lists, searched with ``nprobe`` lists. IVF rather than HNSW because documents are deleted
  and replaced: IVF removes ids natively, HNSW cannot remove at all.
* Above: ``IndexIVFScalarQuantizer``, the same lists, each vector a code of ``sq_bits`` per
  dimension (192 bytes at 4 bits for 384 floats of 1,536), so 10M vectors take about 2 GB
  instead of 15 GB. Codes rank roughly; ``rerank_factor·k`` candidates are re-scored on
  their exact vectors (kept in the store, or a memory-mapped file in the benchmark), so the
  top k are exact-scored. Scalar rather than product quantization: on the benchmark's
  clustered vectors PQ (48 or 96 bytes) reached recall@10 0.80-0.87 after re-ranking and
  trained 25 times slower, 4-bit SQ 0.99 (the coarse lists, not the codes, set the recall).
  A compressed index cannot give its vectors back, so when it must change kind or retrain it
  asks to be rebuilt from the store (``needs_rebuild``) instead of reshaping itself.

``bench/retrieval.py`` measures the recall@10 each buys against exact search.

The index is a cache of the store (which keeps every chunk's vector): it is persisted with
an atomic swap and rebuilt from the store whenever it disagrees with it. Callers serialise
writes; searches may run in parallel with each other (FAISS releases the GIL).
"""

from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np

from core.sections import IndexConfig
from retrieval.errors import MissingDependency

IndexKind = Literal["exact", "ivf", "ivfsq"]
# The exact vectors of some ids, in that order: how a compressed index re-ranks.
ExactVectors = Callable[[np.ndarray], np.ndarray]


def kind_for(size: int, config: IndexConfig) -> IndexKind:
    if size > config.compressed_min_vectors:
        return "ivfsq"
    return "ivf" if size > config.exact_max_vectors else "exact"


def rerank(
    queries: np.ndarray, ids: np.ndarray, vectors: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact scores of one query's candidates (``ids`` without -1s, ``vectors`` theirs):
    the best k, as (scores, ids) sorted best first."""
    scores = vectors @ queries.reshape(-1)
    order = np.argsort(-scores, kind="stable")[:k]
    return scores[order].astype(np.float32), ids[order]


def read_facts(index_path: Path) -> dict[str, object] | None:
    """What ``VectorIndex.save`` recorded beside ``index_path``; None if nothing readable."""
    try:
        facts = json.loads(_facts_path(index_path).read_text())
    except (OSError, ValueError):
        return None
    return facts if isinstance(facts, dict) else None


def _facts_path(index_path: Path) -> Path:
    return index_path.with_name(index_path.name + ".json")


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:
        raise MissingDependency("faiss") from exc
    return faiss


class VectorIndex:
    def __init__(self, dimension: int, config: IndexConfig, index: Any = None) -> None:
        self.dimension = dimension
        self.config = config
        _faiss().omp_set_num_threads(config.threads)
        self._index = index if index is not None else self._new_exact()
        self._trained_size = self._index.ntotal if self.kind != "exact" else 0
        self.needs_rebuild = False  # see the module docstring
        self.build_s: float | None = None  # set by whoever timed the build

    # -- facts -----------------------------------------------------------------------
    @property
    def kind(self) -> IndexKind:
        name = type(self._index).__name__
        if "IVF" not in name:
            return "exact"
        return "ivfsq" if "ScalarQuantizer" in name else "ivf"

    @property
    def compressed(self) -> bool:
        return self.kind == "ivfsq"

    def candidates(self, k: int) -> int:
        """How many to ask ``search`` for to re-rank down to k (k itself when exact)."""
        return k * self.config.rerank_factor if self.compressed else k

    def describe(self) -> dict[str, object]:
        """The index's kind and parameters, for the collections listing."""
        facts: dict[str, object] = {"kind": self.kind, "vectors": len(self)}
        if self.kind != "exact":
            facts |= {"nlist": int(self._index.nlist), "nprobe": int(self._index.nprobe)}
        if self.compressed:
            facts |= {
                "code_bytes": int(self._index.code_size),
                "rerank_factor": self.config.rerank_factor,
            }
        facts["memory_bytes"] = self.memory_bytes()
        if self.build_s is not None:
            facts["build_s"] = self.build_s
        return facts

    def memory_bytes(self) -> int:
        """Roughly what the index holds: per vector its floats (or code) and id, plus the IVF
        centroids (not the IVF-flat id hash table)."""
        floats = 4 * self.dimension
        if self.kind == "exact":
            return len(self) * (floats + 8)
        centroids = int(self._index.nlist) * floats
        if not self.compressed:
            return len(self) * (floats + 8) + centroids
        return len(self) * (int(self._index.code_size) + 8) + centroids

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def ids(self) -> np.ndarray:
        if self.kind == "exact":
            return _faiss().vector_to_array(self._index.id_map).astype(np.int64)
        return np.sort(self._ivf_ids())

    # -- updates ---------------------------------------------------------------------
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self._index.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))
        self._maybe_reshape()

    def remove(self, ids: np.ndarray) -> int:
        if len(ids) == 0:
            return 0
        removed = self._index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64))
        self._maybe_reshape()
        return int(removed)

    # -- search ----------------------------------------------------------------------
    def search(
        self, queries: np.ndarray, k: int, exact: ExactVectors | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (len(queries), k); missing results have id -1. A compressed
        index given ``exact`` re-ranks ``candidates(k)`` on exact vectors; without it, it
        returns its approximate scores (callers that re-rank themselves ask for more)."""
        if len(self) == 0:
            empty = np.full((len(queries), k), -1, dtype=np.int64)
            return np.zeros((len(queries), k), dtype=np.float32), empty
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if not (self.compressed and exact is not None):
            scores, ids = self._index.search(queries, k)
            return scores, ids
        _, found = self._index.search(queries, self.candidates(k))
        scores = np.zeros((len(queries), k), dtype=np.float32)
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        for row, (query, candidates) in enumerate(zip(queries, found, strict=True)):
            candidates = candidates[candidates >= 0]
            best_scores, best_ids = rerank(query, candidates, exact(candidates), k)
            scores[row, : len(best_ids)], ids[row, : len(best_ids)] = best_scores, best_ids
        return scores, ids

    # -- persistence -----------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Write to a temp file, fsync, rename: a crash leaves the old file or the new one."""
        faiss = _faiss()
        path.parent.mkdir(parents=True, exist_ok=True)
        # Unique across pods that share the directory (their pids may well be equal).
        temp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
        try:
            # Through a Python file: faiss writing to a path only prints a failed close (disk
            # full) and leaves a truncated file behind (seen); Python raises.
            with temp.open("wb") as handle:
                faiss.write_index(self._index, faiss.PyCallbackIOWriter(handle.write))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, path)
        except RuntimeError as exc:  # faiss's own errors
            temp.unlink(missing_ok=True)
            raise OSError(f"could not write {path.name}: {str(exc).splitlines()[0]}") from exc
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        self._record(path)

    def _record(self, path: Path) -> None:
        """The kind and parameters beside the file, for listings by processes that have not
        loaded it; a lost record only hides them there, so no fsync."""
        record = _facts_path(path)
        temp = record.with_name(f".{record.name}.tmp-{uuid.uuid4().hex}")
        try:
            temp.write_text(json.dumps(self.describe()))
            os.replace(temp, record)
        finally:
            temp.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: Path, dimension: int, config: IndexConfig) -> VectorIndex:
        index = _faiss().read_index(str(path))
        if index.d != dimension:
            raise ValueError(f"{path} holds {index.d}-d vectors, expected {dimension}")
        loaded = cls(dimension, config, index)
        if loaded.kind != "exact":
            loaded._prepare_ivf()
        build_s = (read_facts(path) or {}).get("build_s")
        loaded.build_s = float(build_s) if isinstance(build_s, int | float) else None
        return loaded

    @classmethod
    def build(
        cls, dimension: int, config: IndexConfig, ids: np.ndarray, vectors: np.ndarray
    ) -> VectorIndex:
        return cls.build_in_batches(dimension, config, len(ids), vectors, [(ids, vectors)])

    @classmethod
    def build_in_batches(
        cls,
        dimension: int,
        config: IndexConfig,
        size: int,
        training: np.ndarray,
        batches: Iterable[tuple[np.ndarray, np.ndarray]],
    ) -> VectorIndex:
        """The index of the kind ``size`` calls for, trained on ``training`` (a sample of the
        vectors; a few hundred thousand are plenty), filled batch by batch: 10M vectors
        never need to be in memory at once."""
        index = cls(dimension, config)
        kind = kind_for(size, config)
        if kind != "exact":
            index._index = index._new_ivf(training, size, compressed=kind == "ivfsq")
            index._trained_size = size
        for ids, vectors in batches:
            if len(ids):
                index._index.add_with_ids(
                    np.ascontiguousarray(vectors, dtype=np.float32),
                    np.ascontiguousarray(ids, dtype=np.int64),
                )
        return index

    # -- internals -------------------------------------------------------------------
    def _new_exact(self) -> Any:
        faiss = _faiss()
        return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dimension))

    def _new_ivf(self, training: np.ndarray, size: int, *, compressed: bool = False) -> Any:
        faiss = _faiss()
        lists = int(min(65536, max(16, self.config.ivf_lists_per_sqrt * math.sqrt(size))))
        quantizer = faiss.IndexFlatIP(self.dimension)
        if compressed:
            bits = {4: "QT_4bit", 6: "QT_6bit", 8: "QT_8bit"}[self.config.sq_bits]
            index = faiss.IndexIVFScalarQuantizer(
                quantizer,
                self.dimension,
                lists,
                getattr(faiss.ScalarQuantizer, bits),
                faiss.METRIC_INNER_PRODUCT,
            )
        else:
            index = faiss.IndexIVFFlat(quantizer, self.dimension, lists, faiss.METRIC_INNER_PRODUCT)
        sample = training
        # k-means needs some 40-256 points a list; 64 trains 1M vectors in a quarter of the
        # time of using them all, with the same recall (bench/retrieval.py).
        wanted = lists * 64
        if len(training) > wanted:
            picks = np.random.default_rng(0).choice(len(training), wanted, replace=False)
            sample = training[np.sort(picks)]
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
        self._index = index
        self._prepare_ivf()
        return index

    def _prepare_ivf(self) -> None:
        faiss = _faiss()
        self._index.nprobe = self.config.ivf_nprobe
        # A hash-table direct map lets ids be reconstructed and removed. Not for a compressed
        # index: its removal scans the lists instead (rare: a document replaced), and a hash
        # table of 10M ids would cost a quarter of the codes' memory.
        if not self.compressed:
            self._index.set_direct_map_type(faiss.DirectMap.Hashtable)
        if not self._trained_size:
            self._trained_size = self._index.ntotal

    def _ivf_ids(self) -> np.ndarray:
        faiss = _faiss()
        invlists = self._index.invlists
        parts = [
            faiss.rev_swig_ptr(invlists.get_ids(list_no), invlists.list_size(list_no)).copy()
            for list_no in range(invlists.nlist)
            if invlists.list_size(list_no)
        ]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)

    def _vectors(self, ids: np.ndarray) -> np.ndarray:
        if len(ids) == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        if self.kind == "exact":
            return np.asarray(
                self._index.index.reconstruct_n(0, self._index.ntotal), dtype=np.float32
            )
        return np.vstack([self._index.reconstruct(int(i)) for i in ids]).astype(np.float32)

    def _maybe_reshape(self) -> None:
        size, kind, config = len(self), self.kind, self.config
        grow_exact = kind == "exact" and size > config.exact_max_vectors
        grow_ivf = kind == "ivf" and size > config.compressed_min_vectors
        retrain = kind != "exact" and size > self._trained_size * config.ivf_retrain_growth
        shrink = (kind == "ivf" and size <= config.exact_max_vectors // 2) or (
            kind == "ivfsq" and size <= config.compressed_min_vectors // 2
        )
        if not (grow_exact or grow_ivf or retrain or shrink):
            return
        if self.compressed:
            self.needs_rebuild = True  # its vectors are codes: only the store has them
            return
        ids = self.ids() if kind == "exact" else self._ivf_ids()
        vectors = self._vectors(ids)
        rebuilt = VectorIndex.build(self.dimension, self.config, ids, vectors)
        self._index, self._trained_size = rebuilt._index, rebuilt._trained_size
