"""The query batcher: concurrent queries share one embedder call, repeats come from the
cache, failures and cancellations reach only the waiters they concern."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from retrieval.errors import RetrievalBusy
from retrieval.query_batcher import QueryBatcher
from retrieval.service import RetrievalConfig, Retriever


class _Recorder:
    """A stand-in embedder: a vector per text that names it, each call's batch recorded;
    ``gate`` holds the first call until released, so the next queries pile up behind it."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.batches: list[list[str]] = []
        self.gate = gate
        self.threads: set[str] = set()

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        self.threads.add(threading.current_thread().name)
        self.batches.append(list(texts))
        if self.gate is not None and len(self.batches) == 1:
            self.gate.wait(5)
        return np.array([[len(text), 1.0] for text in texts], dtype=np.float32)


async def test_queries_arriving_during_a_call_share_the_next_one() -> None:
    gate = threading.Event()
    encode = _Recorder(gate)
    batcher = QueryBatcher(encode, max_batch=8)
    first = asyncio.create_task(batcher.embed("a"))
    await asyncio.sleep(0.05)  # the first call is running, held by the gate
    rest = [asyncio.create_task(batcher.embed("q" * n)) for n in range(2, 12)]
    await asyncio.sleep(0.05)
    gate.set()
    vectors = await asyncio.gather(first, *rest)
    assert [len(batch) for batch in encode.batches] == [1, 8, 2]  # bounded by max_batch
    assert [float(v[0]) for v in vectors] == [1.0, *range(2, 12)]  # each its own vector
    assert encode.threads == {"query-embed_0"}  # its own thread, not anyio's pool
    assert batcher.stats.largest_batch == 8
    batcher.close()


async def test_repeats_come_from_the_cache_and_the_oldest_leaves_first() -> None:
    encode = _Recorder()
    batcher = QueryBatcher(encode, cache_size=2)
    for text in ("one", "two", "one", "three", "two"):
        await batcher.embed(text)
    # "one" was a hit; "three" pushed out "two" ("one" had been used since).
    assert encode.batches == [["one"], ["two"], ["three"], ["two"]]
    assert batcher.stats.cache_hits == 1
    vector = await batcher.embed("three")
    with pytest.raises(ValueError):
        vector[0] = 0  # shared with the cache: read-only
    batcher.close()


async def test_the_same_text_twice_in_a_batch_is_embedded_once() -> None:
    gate = threading.Event()
    encode = _Recorder(gate)
    batcher = QueryBatcher(encode, cache_size=0)
    first = asyncio.create_task(batcher.embed("warm"))
    await asyncio.sleep(0.05)
    twins = [asyncio.create_task(batcher.embed("same")) for _ in range(3)]
    await asyncio.sleep(0.02)
    gate.set()
    await first
    assert [float(v[0]) for v in await asyncio.gather(*twins)] == [4.0] * 3
    assert encode.batches == [["warm"], ["same"]]
    batcher.close()


async def test_a_failure_reaches_its_batch_and_the_next_batch_still_runs() -> None:
    calls = []

    def flaky(texts: Sequence[str]) -> np.ndarray:
        calls.append(list(texts))
        if len(calls) == 1:
            raise RuntimeError("model gone")
        return np.ones((len(texts), 2), dtype=np.float32)

    batcher = QueryBatcher(flaky)
    with pytest.raises(RuntimeError, match="model gone"):
        await batcher.embed("x")
    assert (await batcher.embed("x"))[0] == 1.0  # not cached as a failure
    batcher.close()


async def test_a_cancelled_waiter_is_not_embedded() -> None:
    gate = threading.Event()
    encode = _Recorder(gate)
    batcher = QueryBatcher(encode)
    first = asyncio.create_task(batcher.embed("warm"))
    await asyncio.sleep(0.05)
    gone = asyncio.create_task(batcher.embed("client left"))
    kept = asyncio.create_task(batcher.embed("kept"))
    await asyncio.sleep(0.02)
    gone.cancel()
    gate.set()
    await first
    await kept
    assert encode.batches == [["warm"], ["kept"]]
    batcher.close()


async def test_a_wait_gathers_a_batch_from_an_idle_start() -> None:
    encode = _Recorder()
    batcher = QueryBatcher(encode, wait_s=0.05)
    await asyncio.gather(*(batcher.embed(text) for text in ("a", "bb", "ccc")))
    assert encode.batches == [["a", "bb", "ccc"]]
    batcher.close()


async def test_past_max_pending_a_new_query_is_shed_at_once() -> None:
    """Admission control: the queries waiting behind a running batch are bounded; one more
    distinct query is refused at once (a 503 with Retry-After at the HTTP layer), the same
    text joins its waiting twin, and once the queue drains queries are taken again."""
    gate = threading.Event()
    encode = _Recorder(gate)
    batcher = QueryBatcher(encode, max_pending=2)
    running = asyncio.create_task(batcher.embed("in flight"))
    await asyncio.sleep(0.05)
    waiting = [asyncio.create_task(batcher.embed(text)) for text in ("a", "b", "a")]
    await asyncio.sleep(0.02)
    with pytest.raises(RetrievalBusy, match="2 queries are waiting"):
        await batcher.embed("c")
    assert batcher.stats.shed == 1
    gate.set()
    await asyncio.gather(running, *waiting)
    assert (await batcher.embed("c"))[0] == 1.0
    assert encode.batches == [["in flight"], ["a", "b"], ["c"]]
    batcher.close()


async def test_a_retriever_closed_leaves_no_embedder_thread(tmp_path: Path) -> None:
    embedder = _Recorder()
    embedder.embed_queries = embedder  # type: ignore[attr-defined]
    retriever = Retriever(None, embedder, tmp_path, RetrievalConfig())  # type: ignore[arg-type]
    await retriever.queries.embed("a question")
    (name,) = embedder.threads
    thread = next(t for t in threading.enumerate() if t.name == name)
    retriever.close()
    thread.join(5)
    assert not thread.is_alive()
