"""The query embedders side by side: torch (the reference) and the int8 ONNX copy.

For each: one query at a time, p50/p99 wall time and CPU per query (process CPU time, so
any helper thread counts), and queries/s in batches of 16 (what the query batcher sends
under load). Agreement with torch: the cosine of each query's two vectors, and recall@10
of the fast vectors' neighbours against the torch vectors' neighbours in a corpus of
chunks embedded with torch (documents are always embedded with torch, so only the query
moves). Called by bench/retrieval.py, which prints and writes the table.
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.report import percentile
from retrieval.chunking import ChunkingConfig, chunk_document
from retrieval.embeddings import Embedder

MS = 1000.0


@dataclass
class EmbedderResult:
    backend: str
    p50_ms: float
    p99_ms: float
    cpu_ms: float  # per query, one at a time
    batch_qps: float  # in batches of 16
    min_cosine: float  # to the torch vector
    mean_cosine: float
    recall_at_10: float  # neighbours against the torch query's


def _questions(count: int, words: Sequence[str], seed: int) -> list[str]:
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(words) for _ in range(rng.randint(3, 14))).capitalize() + "?"
        for _ in range(count)
    ]


def _one_at_a_time(embed: Callable[[list[str]], np.ndarray], texts: list[str]) -> tuple:
    for text in texts[:20]:
        embed([text])  # warm-up: allocations, thread pools
    walls, cpu_began = [], time.process_time()
    for text in texts:
        began = time.perf_counter()
        embed([text])
        walls.append(time.perf_counter() - began)
    cpu = (time.process_time() - cpu_began) / len(texts)
    return statistics.median(walls) * MS, percentile(walls, 0.99) * MS, cpu * MS


def _batched_qps(embed: Callable[[list[str]], np.ndarray], texts: list[str]) -> float:
    began = time.perf_counter()
    for start in range(0, len(texts), 16):
        embed(texts[start : start + 16])
    return len(texts) / (time.perf_counter() - began)


def compare_embedders(
    markdown: Callable[[random.Random], str], words: Sequence[str], args: object
) -> list[EmbedderResult]:
    threads = int(getattr(args, "embed_threads", 1))
    seed = int(getattr(args, "seed", 0))
    queries = _questions(int(getattr(args, "embedder_queries", 300)), words, seed + 7)
    reference = Embedder(threads=threads, backend="torch")
    export_dir = Path(tempfile.mkdtemp(prefix="loragate-bench-embedder-"))
    fast = Embedder(threads=threads, backend="onnx", export_dir=export_dir)
    assert fast.query_backend == "onnx-int8"
    rng = random.Random(seed)
    chunks = [
        chunk.embedding_text()
        for _ in range(int(getattr(args, "embedder_documents", 60)))
        for chunk in chunk_document(markdown(rng), reference.token_spans, ChunkingConfig())
    ]
    print(f"… embedder agreement over {len(chunks)} chunks", file=sys.stderr, flush=True)
    corpus = reference.embed(chunks)
    truth_vectors = reference.embed_queries(queries)
    truth = np.argsort(-(truth_vectors @ corpus.T), axis=1)[:, :10]
    results = []
    for embedder in (reference, fast):
        vectors = embedder.embed_queries(queries)
        cosines = (vectors * truth_vectors).sum(axis=1)
        found = np.argsort(-(vectors @ corpus.T), axis=1)[:, :10]
        recall = float(
            np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth, strict=True)])
        )
        p50, p99, cpu = _one_at_a_time(embedder.embed_queries, queries)
        results.append(
            EmbedderResult(
                embedder.query_backend, p50, p99, cpu,
                _batched_qps(embedder.embed_queries, queries),
                float(cosines.min()), float(cosines.mean()), recall,
            )
        )  # fmt: skip
    return results


def embedder_lines(results: list[EmbedderResult], threads: int) -> list[str]:
    lines = [
        "### Query embedder: torch vs int8 ONNX",
        "",
        "| embedder | p50 ms | p99 ms | CPU ms/query | queries/s in batches of 16 | "
        "min cosine to torch | mean cosine | recall@10 vs torch queries |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r.backend} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.cpu_ms:.2f} | "
            f"{r.batch_qps:.0f} | {r.min_cosine:.4f} | {r.mean_cosine:.4f} | "
            f"{r.recall_at_10:.3f} |"
        )
    lines += [
        "",
        f"One generated question (3-14 words) at a time on {threads} thread(s), as the gateway "
        "embeds a grounded request; CPU is the process's CPU time per query. Agreement: the "
        "cosine of each question's vector to the torch one, and recall@10 of its nearest "
        "chunks (a corpus of synthetic-markdown chunks embedded with torch, exact search) "
        "against the torch vector's. The vector-index recall above does not depend on the "
        "embedder.",
    ]
    return lines
