"""Query vectors for concurrent searches: batched, cached, on a thread of their own.

Each grounded request needs one query vector. Embedded one by one, a burst of N requests
makes N embedder calls in a row; batched, the queries that arrive while one call runs go
together in the next, so throughput grows with load while a lone query waits for nothing
(unless ``wait_s`` asks an idle batcher to wait a little for company). The same question
asked again (a retry, a popular question) is answered from an LRU cache of recent vectors.
Past ``max_pending`` distinct queries waiting, a new one is refused at once
(``RetrievalBusy``, a 503 with Retry-After): a queue longer than the embedder can clear in a
client's patience only turns every request into a timeout.

The embedder runs on one dedicated thread, not anyio's shared worker pool, so its budget is
its own: a burst of grounded requests queues here instead of taking the threads that the
store and the index use, and the event loop, which serves plain chats, only hands work over.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from retrieval.errors import RetrievalBusy
from retrieval.lru import LruCache

Encode = Callable[[Sequence[str]], np.ndarray]


@dataclass
class BatcherStats:
    calls: int = 0  # embedder calls
    embedded: int = 0  # queries embedded (cache misses, duplicates in a batch once)
    cache_hits: int = 0
    largest_batch: int = 0
    shed: int = 0  # queries refused because too many were waiting


class QueryBatcher:
    def __init__(
        self,
        encode: Encode,
        *,
        max_batch: int = 16,
        wait_s: float = 0.0,
        cache_size: int = 4096,
        max_pending: int = 1024,
    ) -> None:
        self._encode = encode
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._wait_s = wait_s
        self._cache: LruCache[str, np.ndarray] = LruCache(cache_size)
        # Texts waiting for the next call, in arrival order, each with its waiters.
        self._pending: dict[str, list[asyncio.Future[np.ndarray]]] = {}
        self._worker: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="query-embed")
        self.stats = BatcherStats()

    async def embed(self, text: str) -> np.ndarray:
        """(dimension,) float32, unit length, read-only (it may be shared with the cache)."""
        cached = self._cache.get(text)
        if cached is not None:
            self.stats.cache_hits += 1
            return cached
        if text not in self._pending and len(self._pending) >= self._max_pending:
            self.stats.shed += 1
            raise RetrievalBusy(
                f"{len(self._pending)} queries are waiting for the embedder; send it again shortly"
            )
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(text, []).append(future)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await future

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _drain(self) -> None:
        if self._wait_s:
            await asyncio.sleep(self._wait_s)
        while self._pending:
            texts = list(itertools.islice(self._pending, self._max_batch))
            batch = {text: self._pending.pop(text) for text in texts}
            # A request cancelled while it waited (client gone) costs nothing to embed.
            batch = {t: fs for t, fs in batch.items() if any(not f.done() for f in fs)}
            if batch:
                await self._run(batch)

    async def _run(self, batch: dict[str, list[asyncio.Future[np.ndarray]]]) -> None:
        texts = list(batch)
        loop = asyncio.get_running_loop()
        try:
            vectors = await loop.run_in_executor(self._executor, self._encode, texts)
        except BaseException as exc:
            for futures in batch.values():
                _settle(futures, exception=exc)
            if not isinstance(exc, Exception):
                raise  # cancelled (the loop is closing): the waiters were told
            return
        self.stats.calls += 1
        self.stats.embedded += len(texts)
        self.stats.largest_batch = max(self.stats.largest_batch, len(texts))
        for text, vector in zip(texts, vectors, strict=True):
            row = np.array(vector, dtype=np.float32)
            row.setflags(write=False)
            self._cache.put(text, row)
            _settle(batch[text], result=row)


def _settle(
    futures: list[asyncio.Future[np.ndarray]],
    *,
    result: np.ndarray | None = None,
    exception: BaseException | None = None,
) -> None:
    for future in futures:
        if future.done():  # its request was cancelled
            continue
        if isinstance(exception, Exception):
            future.set_exception(exception)
        elif exception is not None:
            future.cancel()
        else:
            future.set_result(result)  # type: ignore[arg-type]
