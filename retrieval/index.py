"""One collection's FAISS index: exact while small, IVF when large.

* Below ``exact_max_vectors``: ``IndexIDMap2(IndexFlatIP)``, exact inner product.
* Above it: ``IndexIVFFlat`` (inner product) with ``nlist ≈ 4·sqrt(n)`` lists, searched with
  ``nprobe`` lists. IVF rather than HNSW because documents are deleted and replaced: IVF
  removes ids natively, HNSW cannot remove at all. ``bench/retrieval.py`` measures the
  recall@10 this buys against exact search.

The index is a cache of the store (which keeps every chunk's vector): it is persisted with
an atomic swap and rebuilt from the store whenever it disagrees with it. Callers serialise
writes; searches may run in parallel with each other (FAISS releases the GIL).
"""

from __future__ import annotations

import math
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from core.sections import IndexConfig
from retrieval.errors import MissingDependency


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
        self._trained_size = self._index.ntotal if self.kind == "ivf" else 0

    # -- facts -----------------------------------------------------------------------
    @property
    def kind(self) -> str:
        return "ivf" if "IVF" in type(self._index).__name__ else "exact"

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
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (len(queries), k); missing results have id -1."""
        if len(self) == 0:
            empty = np.full((len(queries), k), -1, dtype=np.int64)
            return np.zeros((len(queries), k), dtype=np.float32), empty
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        scores, ids = self._index.search(queries, k)
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

    @classmethod
    def load(cls, path: Path, dimension: int, config: IndexConfig) -> VectorIndex:
        index = _faiss().read_index(str(path))
        if index.d != dimension:
            raise ValueError(f"{path} holds {index.d}-d vectors, expected {dimension}")
        loaded = cls(dimension, config, index)
        if loaded.kind == "ivf":
            loaded._prepare_ivf()
        return loaded

    @classmethod
    def build(
        cls, dimension: int, config: IndexConfig, ids: np.ndarray, vectors: np.ndarray
    ) -> VectorIndex:
        index = cls(dimension, config)
        if len(ids) > config.exact_max_vectors:
            index._index = index._new_ivf(vectors)
            index._trained_size = len(ids)
        index.add(ids, vectors)
        return index

    # -- internals -------------------------------------------------------------------
    def _new_exact(self) -> Any:
        faiss = _faiss()
        return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dimension))

    def _new_ivf(self, training: np.ndarray) -> Any:
        faiss = _faiss()
        lists = self._list_count(len(training))
        index = faiss.IndexIVFFlat(
            faiss.IndexFlatIP(self.dimension), self.dimension, lists, faiss.METRIC_INNER_PRODUCT
        )
        sample = training
        # k-means needs some 40-256 points a list; 64 trains 1M vectors in a quarter of the
        # time of using them all, with the same recall (bench/retrieval.py).
        if len(training) > lists * 64:
            picks = np.random.default_rng(0).choice(len(training), lists * 64, replace=False)
            sample = training[picks]
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
        self._index = index
        self._prepare_ivf()
        return index

    def _prepare_ivf(self) -> None:
        faiss = _faiss()
        self._index.nprobe = self.config.ivf_nprobe
        # A hash-table direct map lets ids be reconstructed and removed.
        self._index.set_direct_map_type(faiss.DirectMap.Hashtable)
        if not self._trained_size:
            self._trained_size = self._index.ntotal

    def _list_count(self, size: int) -> int:
        return int(min(65536, max(16, self.config.ivf_lists_per_sqrt * math.sqrt(size))))

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
        size = len(self)
        grow_exact = self.kind == "exact" and size > self.config.exact_max_vectors
        retrain = self.kind == "ivf" and size > self._trained_size * self.config.ivf_retrain_growth
        shrink = self.kind == "ivf" and size <= self.config.exact_max_vectors // 2
        if not (grow_exact or retrain or shrink):
            return
        ids = self.ids() if self.kind == "exact" else self._ivf_ids()
        vectors = self._vectors(ids)
        rebuilt = VectorIndex.build(self.dimension, self.config, ids, vectors)
        self._index, self._trained_size = rebuilt._index, rebuilt._trained_size
