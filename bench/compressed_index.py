"""The compressed index at scale (1M and 10M 384-d vectors), built the way it would be.

The vectors come from bench/retrieval.py's mixture generator in batches of 100k and go to a
float32 file (the exact vectors: 15 GB at 10M), never all in memory. The index trains on
the first ``nlist·64`` of them (the generator is i.i.d., so the first rows are a random
sample) and is filled batch by batch through ``VectorIndex.build_in_batches``; the build
time is the whole of that (training and adding, not generating). Search re-ranks on the
file, memory-mapped, as the gateway re-ranks on the store. Ground truth is exact inner
product over the file, block by block.

Memory: the process's anonymous resident memory (RssAnon, which leaves out the mapped
file's pages) after the build, less before it; and the index's own estimate.
"""

from __future__ import annotations

import gc
import multiprocessing
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.report import percentile
from retrieval.index import IndexConfig, VectorIndex, kind_for

DIMENSION = 384
BATCH = 100_000
K = 10
MS = 1000.0


@dataclass
class CompressedResult:
    size: int
    kind: str
    nlist: int
    nprobe: int
    code_bytes: int
    rerank_factor: int
    build_s: float
    rss_anon_gib: float  # measured
    estimate_gib: float  # the index's own
    p50_ms: float
    p99_ms: float
    recall: float
    rough_recall: float  # the codes alone, no re-ranking


def rss_anon_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    return 0


def write_vectors(mixture: Any, size: int, path: Path) -> None:
    vectors = np.lib.format.open_memmap(path, "w+", np.float32, (size, DIMENSION))
    for start in range(0, size, BATCH):
        stop = min(size, start + BATCH)
        vectors[start:stop] = mixture.sample(stop - start, seed=size + start)
    vectors.flush()
    del vectors


def batches(vectors: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for start in range(0, len(vectors), BATCH):
        stop = min(len(vectors), start + BATCH)
        yield np.arange(start, stop, dtype=np.int64), np.asarray(vectors[start:stop])


def exact_truth(vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    best_scores = np.full((len(queries), K), -np.inf, dtype=np.float32)
    best_ids = np.zeros((len(queries), K), dtype=np.int64)
    for ids, block in batches(vectors):
        scores, found = faiss.knn(
            queries, np.ascontiguousarray(block), K, faiss.METRIC_INNER_PRODUCT
        )
        scores = np.hstack([best_scores, scores])
        found = np.hstack([best_ids, found + ids[0]])
        order = np.argsort(-scores, axis=1)[:, :K]
        best_scores = np.take_along_axis(scores, order, axis=1)
        best_ids = np.take_along_axis(found, order, axis=1)
    return best_ids


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(set(row[row >= 0]) & set(true)) for row, true in zip(found, truth, strict=True))
    return hits / truth.size


def measure(
    mixture: Any, size: int, queries: np.ndarray, config: IndexConfig, work: Path
) -> CompressedResult:
    path = work / f"vectors-{size}.npy"
    print(f"… compressed: writing {size:,} vectors to {path}", file=sys.stderr, flush=True)
    write_vectors(mixture, size, path)
    vectors = np.load(path, mmap_mode="r")
    truth = exact_truth(vectors, queries)
    lists = int(min(65536, max(16, config.ivf_lists_per_sqrt * np.sqrt(size))))
    gc.collect()
    before = rss_anon_bytes()  # the training sample is counted until freed below
    training = np.array(vectors[: min(size, lists * 64)])
    print(
        f"… compressed: building {size:,} ({kind_for(size, config)})", file=sys.stderr, flush=True
    )
    began = time.perf_counter()
    index = VectorIndex.build_in_batches(DIMENSION, config, size, training, batches(vectors))
    build_s = time.perf_counter() - began
    del training, vectors
    gc.collect()
    rss = rss_anon_bytes() - before
    exact = np.load(path, mmap_mode="r")  # a fresh mapping: only re-ranked rows are read

    def lookup(ids: np.ndarray) -> np.ndarray:
        return np.asarray(exact[np.sort(ids)])[np.argsort(np.argsort(ids))]

    for query in queries[:20]:
        index.search(query[None, :], K, exact=lookup)
    latencies, found = [], np.empty((len(queries), K), dtype=np.int64)
    for row, query in enumerate(queries):
        began = time.perf_counter()
        _, ids = index.search(query[None, :], K, exact=lookup)
        latencies.append(time.perf_counter() - began)
        found[row] = ids[0]
    _, rough = index.search(queries, K)
    facts = index.describe()
    result = CompressedResult(
        size=size, kind=index.kind, nlist=int(facts.get("nlist", 0)),  # type: ignore[call-overload]
        nprobe=int(facts.get("nprobe", 0)),  # type: ignore[call-overload]
        code_bytes=int(facts.get("code_bytes", 4 * DIMENSION)),  # type: ignore[call-overload]
        rerank_factor=config.rerank_factor if index.compressed else 1,
        build_s=build_s, rss_anon_gib=rss / 2**30, estimate_gib=index.memory_bytes() / 2**30,
        p50_ms=float(np.median(latencies)) * MS, p99_ms=percentile(latencies, 0.99) * MS,
        recall=recall_at_k(found, truth), rough_recall=recall_at_k(rough, truth),
    )  # fmt: skip
    del index
    path.unlink()  # the mapping stays valid until it goes
    return result


def measure_compressed(
    mixture: Any, sizes: list[int], queries: np.ndarray, config: IndexConfig, workdir: str | None
) -> list[CompressedResult]:
    """Each size in a fresh process: in this one, heap that earlier work freed would take
    the index's allocations without growing the resident set (1M measured 0.06 GiB of an
    estimated 0.19 that way)."""
    work = Path(tempfile.mkdtemp(prefix="loragate-bench-compressed-", dir=workdir))
    spawn = multiprocessing.get_context("spawn")
    results = []
    for size in sizes:
        with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
            results.append(pool.submit(measure, mixture, size, queries, config, work).result())
    return results


def compressed_lines(results: list[CompressedResult], config: IndexConfig) -> list[str]:
    lines = [
        "### Compressed index at scale",
        "",
        "| vectors | index | nlist | nprobe | code bytes | re-rank factor | build s | "
        "resident GiB (measured) | GiB (estimate) | p50 ms | p99 ms | recall@10 | "
        "recall@10 without re-ranking |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | "
        "---: |",
    ]
    for r in results:
        lines.append(
            f"| {r.size:,} | {r.kind} | {r.nlist} | {r.nprobe} | {r.code_bytes} | "
            f"{r.rerank_factor} | {r.build_s:.0f} | {r.rss_anon_gib:.2f} | "
            f"{r.estimate_gib:.2f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.recall:.3f} | "
            f"{r.rough_recall:.3f} |"
        )
    lines += [
        "",
        f"`compressed_min_vectors={config.compressed_min_vectors:,}` (`--compressed-min`, so "
        "that 1M is compressed here beside the IVF-flat 1M above; the setting's default is "
        f"1,000,000), `sq_bits="
        f"{config.sq_bits}`, `rerank_factor={config.rerank_factor}`. Built in batches of "
        f"{BATCH:,} from the generator (training on nlist·64 vectors plus adding all; "
        "generating and writing the exact-vector file not counted). Resident: the process's "
        "anonymous memory after the build less before (the memory-mapped exact vectors are "
        "file pages, read only for the candidates). Latency: one query at a time, search "
        "plus re-ranking on the mapped file. Recall@10 against exact search over all vectors.",
    ]
    return lines
