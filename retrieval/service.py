"""Collections of documents, searchable by meaning.

``Retriever`` owns one ``VectorIndex`` per collection. Writes go to the store first (chunk
text and vector), then to the index, then the index file is swapped in atomically. A
per-collection reader/writer lock spans the store read and the index search, so a search
sees a document either before or after an update, never half of it. Embedding and FAISS
work run in worker threads, off the event loop, so chat is not blocked by a large ingest.
Query vectors come from a ``QueryBatcher`` (batched, cached, on its own thread), document
vectors from the embedder's torch model behind ``_embed_limiter``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import anyio
import numpy as np
from sqlalchemy import bindparam, delete, func, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.store.db import begin_writing
from retrieval.chunking import ChunkingConfig, chunk_document
from retrieval.documents import Document
from retrieval.embeddings import Embedder
from retrieval.errors import (
    CollectionNotFound,
    InvalidCollectionName,
    InvalidDocument,
    InvalidQuery,
    RetrievalError,
)
from retrieval.index import IndexConfig, VectorIndex, read_facts, rerank
from retrieval.lru import LruCache
from retrieval.query_batcher import QueryBatcher
from retrieval.tables import Collection, StoredChunk, StoredDocument, utcnow

log = logging.getLogger("loragate.retrieval")

_COLLECTION_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}\Z")  # \Z: "$" lets "name\n" pass
MAX_K = 100
# Hears (stage, seconds) for the stages of one search: how metrics see retrieval.
StageTimer = Callable[[str, float], None]


# Built once: constructing the expression cost 0.7 ms of event-loop CPU per grounded request
# (a profile of loragate serve); its compiled form is cached by SQLAlchemy either way.
_CHUNKS_BY_ID = (
    select(StoredChunk, StoredDocument.source)
    .join(
        StoredDocument,
        (StoredDocument.collection == StoredChunk.collection)
        & (StoredDocument.id == StoredChunk.document_id),
    )
    .where(StoredChunk.id.in_(bindparam("ids", expanding=True)))
)


@dataclass(frozen=True)
class RetrievalConfig:
    chunking: ChunkingConfig = field(default_factory=ChunkingConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    max_document_bytes: int = 2 * 1024 * 1024
    reload_check_s: float = 2.0
    query_batch_size: int = 16
    query_batch_wait_ms: float = 0.0
    query_cache_size: int = 4096
    query_max_pending: int = 1024
    chunk_cache_size: int = 4096


@dataclass(frozen=True)
class Hit:
    chunk_id: int
    score: float
    document_id: str
    source: str
    section: str
    text: str


@dataclass(frozen=True)
class UpsertResult:
    document_id: str
    status: str  # created | replaced | unchanged
    chunks: int


@dataclass(frozen=True)
class _ChunkRow:
    """What a search needs of a stored chunk, kept after its session closes."""

    id: int
    document_id: str
    source: str
    section: str
    text: str
    vector: bytes


@dataclass
class _LoadedCollection:
    index: VectorIndex
    generation: int
    checked_at: float
    lock: _ReadWriteLock
    # Chunks recent searches found (LRU). A write to the collection empties it, under the
    # write lock; another replica's write loads a new _LoadedCollection, with an empty one.
    chunks: LruCache[int, _ChunkRow]


def check_collection_name(name: str) -> str:
    if not _COLLECTION_NAME.match(name):
        raise InvalidCollectionName(
            f"invalid collection name {name!r}: use 1-64 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return name


class Retriever:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        embedder: Embedder,
        index_dir: Path,
        config: RetrievalConfig,
    ) -> None:
        self.sessions = sessions
        self.embedder = embedder
        self.index_dir = index_dir
        self.config = config
        self._collections: dict[str, _LoadedCollection] = {}
        self._load_lock = asyncio.Lock()
        self._embed_limiter = anyio.CapacityLimiter(1)
        self.queries = QueryBatcher(
            lambda texts: self.embedder.embed_queries(texts),
            max_batch=config.query_batch_size,
            wait_s=config.query_batch_wait_ms / 1000,
            cache_size=config.query_cache_size,
            max_pending=config.query_max_pending,
        )
        # "warming" until warm_up() ends; readiness waits for it (see gateway.routes.ops).
        self.warm_up_state: Literal["warming", "ready", "failed"] = "warming"

    def close(self) -> None:
        """Stops the query embedder's thread: an app that stops (a test's, a reload) would
        otherwise leave one behind each time."""
        self.queries.close()

    # -- collections -----------------------------------------------------------------
    async def list_collections(self) -> list[dict[str, object]]:
        async with self.sessions() as session:
            rows = await session.execute(
                select(
                    Collection.name,
                    func.count(StoredDocument.id),
                    func.coalesce(func.sum(StoredDocument.chunk_count), 0),
                    func.max(StoredDocument.updated_at),
                )
                .outerjoin(StoredDocument, StoredDocument.collection == Collection.name)
                .group_by(Collection.name)
                .order_by(Collection.name)
            )
            return [
                {"name": name, "documents": int(documents), "chunks": int(chunks),
                 "updated_at": updated.isoformat() if updated else None,
                 "vectors_loaded": self._vectors_loaded(name), "index": self._index_facts(name)}
                for name, documents, chunks, updated in rows
            ]  # fmt: skip

    def _vectors_loaded(self, name: str) -> int | None:
        """Vectors in this process's index, or None until the collection's first search."""
        loaded = self._collections.get(name)
        return len(loaded.index) if loaded else None

    def _index_facts(self, name: str) -> dict[str, object] | None:
        """The index's kind and parameters: from this process's index, else as recorded
        beside its file when it was last saved (None: never built here)."""
        loaded = self._collections.get(name)
        if loaded is not None:
            return loaded.index.describe()
        return read_facts(self._index_path(name))

    async def warm_up(self) -> None:
        """Load the embedding model and every index now rather than in the first grounded
        request. A failure is recorded (and surfaces again on first use), never raised."""
        try:
            await anyio.to_thread.run_sync(lambda: self.embedder.dimension)
            # Makes the int8 ONNX copy on a first start (seconds), not in a first request.
            await anyio.to_thread.run_sync(lambda: self.embedder.query_backend)
            await self.preload()
        except (RetrievalError, OSError, SQLAlchemyError) as exc:
            self.warm_up_state = "failed"
            log.warning("retrieval warm-up failed", extra={"error": str(exc)})
        else:
            self.warm_up_state = "ready"

    async def preload(self) -> None:
        """Load (or rebuild) every collection's index now rather than on its first search."""
        async with self.sessions() as session:
            names = list(await session.scalars(select(Collection.name)))
        for name in names:
            await self._loaded(name)

    async def ensure_collection(self, name: str) -> None:
        check_collection_name(name)
        try:
            async with self.sessions() as session, session.begin():
                if await session.get(Collection, name) is None:
                    session.add(Collection(name=name, generation=0))
        except IntegrityError:
            pass  # created meanwhile by a concurrent first upload: it exists, as asked

    async def document_hashes(self, collection: str) -> dict[str, str]:
        async with self.sessions() as session:
            rows = await session.execute(
                select(StoredDocument.id, StoredDocument.content_hash).where(
                    StoredDocument.collection == collection
                )
            )
            return {doc_id: content_hash for doc_id, content_hash in rows}

    # -- writes ----------------------------------------------------------------------
    async def upsert(self, collection: str, document: Document) -> UpsertResult:
        """Add or replace one document. Re-posting an id replaces its chunks."""
        await self.ensure_collection(collection)
        self._check_document(document)
        existing = await self.document_hashes(collection)
        if existing.get(document.id) == document.content_hash:
            return UpsertResult(document.id, "unchanged", 0)
        chunks = await anyio.to_thread.run_sync(
            lambda: chunk_document(document.text, self.embedder.token_spans, self.config.chunking),
            limiter=self._embed_limiter,
        )
        if not chunks:
            raise InvalidDocument(f"document {document.id!r} has no text to index")
        vectors = await self._embed([chunk.embedding_text() for chunk in chunks])
        loaded = await self._loaded(collection)
        async with loaded.lock.writing():
            async with self.sessions() as session, session.begin():
                stored = await self._lock(session, collection)
                old_ids = await self._delete_chunks(session, collection, document.id)
                await session.merge(
                    StoredDocument(
                        collection=collection, id=document.id, source=document.source,
                        content_hash=document.content_hash, meta=document.metadata,
                        chunk_count=len(chunks), updated_at=utcnow(),
                    )
                )  # fmt: skip
                await session.flush()
                rows = [
                    StoredChunk(
                        collection=collection, document_id=document.id, ordinal=chunk.ordinal,
                        section=chunk.section[:1024], text=chunk.text, vector=vector.tobytes(),
                    )
                    for chunk, vector in zip(chunks, vectors, strict=True)
                ]  # fmt: skip
                session.add_all(rows)
                await session.flush()
                new_ids = np.array([row.id for row in rows], dtype=np.int64)
                stored.generation += 1
                generation = stored.generation
            await self._apply(collection, loaded, old_ids, new_ids, vectors, generation)
        status = "replaced" if document.id in existing else "created"
        return UpsertResult(document.id, status, len(chunks))

    async def delete_document(self, collection: str, document_id: str) -> bool:
        loaded = await self._loaded(collection)
        async with loaded.lock.writing():
            async with self.sessions() as session, session.begin():
                stored = await self._lock(session, collection)
                old_ids = await self._delete_chunks(session, collection, document_id)
                deleted = await session.execute(
                    delete(StoredDocument).where(
                        StoredDocument.collection == collection, StoredDocument.id == document_id
                    )
                )
                if not deleted.rowcount:  # type: ignore[attr-defined]
                    return False
                stored.generation += 1
                generation = stored.generation
            empty = np.zeros((0, self.embedder.dimension), dtype=np.float32)
            await self._apply(collection, loaded, old_ids, old_ids[:0], empty, generation)
        return True

    # -- search ----------------------------------------------------------------------
    async def search(
        self,
        collection: str,
        query: str,
        k: int,
        min_score: float = -1.0,
        on_stage: StageTimer | None = None,
    ) -> list[Hit]:
        """The ``k`` best chunks scoring at least ``min_score``; ``on_stage(stage, seconds)``
        hears how long the ``embed`` and ``search`` (FAISS plus chunk fetch) stages took."""
        if not 1 <= k <= MAX_K:
            raise InvalidQuery(f"k must be between 1 and {MAX_K}", param="k")
        if not query.strip():
            raise InvalidQuery("the query is empty", param="q")
        loaded = await self._loaded(collection)
        began = time.perf_counter()
        vector = (await self.queries.embed(query))[None, :]
        if on_stage is not None:
            on_stage("embed", time.perf_counter() - began)
            began = time.perf_counter()
        try:
            return await self._nearest(loaded, vector, k, min_score)
        finally:
            if on_stage is not None:
                on_stage("search", time.perf_counter() - began)

    async def _nearest(
        self, loaded: _LoadedCollection, vector: np.ndarray, k: int, min_score: float
    ) -> list[Hit]:
        async with loaded.lock.reading():
            index = loaded.index  # under the lock: a write may replace it (a rebuild)
            scores, ids = await anyio.to_thread.run_sync(index.search, vector, index.candidates(k))
            found = {int(i): float(s) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0}
            if not index.compressed:  # a compressed index's scores are rough until re-ranked
                found = {i: s for i, s in found.items() if s >= min_score}
            if not found:
                return []
            rows = await self._chunk_rows(loaded, list(found))
        if index.compressed:
            found = self._reranked(vector, rows, k, min_score)
        hits = [
            Hit(row.id, found[row.id], row.document_id, row.source, row.section, row.text)
            for row in rows
            if row.id in found
        ]
        return sorted(hits, key=lambda hit: hit.score, reverse=True)

    async def _chunk_rows(self, loaded: _LoadedCollection, ids: list[int]) -> list[_ChunkRow]:
        """The chunks, from the collection's cache where it has them, else from the store
        (a grounded request's one store read, some 1-2 ms of event-loop CPU)."""
        missing = [chunk_id for chunk_id in ids if chunk_id not in loaded.chunks]
        fetched: dict[int, _ChunkRow] = {}
        if missing:
            async with self.sessions() as session:
                result = await session.execute(_CHUNKS_BY_ID, {"ids": missing})
                for chunk, source in result.all():
                    fetched[chunk.id] = _ChunkRow(
                        chunk.id, chunk.document_id, source, chunk.section, chunk.text,
                        chunk.vector,
                    )  # fmt: skip
        rows = []
        for chunk_id in ids:
            row = fetched.get(chunk_id) or loaded.chunks.get(chunk_id)
            if row is None:
                continue  # deleted since the index was read: not a hit
            rows.append(row)
            loaded.chunks.put(chunk_id, row)
        return rows

    def _reranked(
        self, vector: np.ndarray, rows: Sequence[_ChunkRow], k: int, min_score: float
    ) -> dict[int, float]:
        """The best k candidates by their exact vectors, which the store keeps anyway."""
        if not rows:
            return {}
        ids = np.array([row.id for row in rows], dtype=np.int64)
        vectors = np.frombuffer(b"".join(row.vector for row in rows), dtype=np.float32)
        scores, best = rerank(vector, ids, vectors.reshape(len(rows), -1), k)
        return {int(i): float(s) for i, s in zip(best, scores, strict=True) if s >= min_score}

    # -- internals -------------------------------------------------------------------
    def _check_document(self, document: Document) -> None:
        if not document.text.strip():
            raise InvalidDocument(f"document {document.id!r} is empty")
        size = len(document.text.encode())
        if size > self.config.max_document_bytes:
            raise InvalidDocument(
                f"document {document.id!r} is {size} bytes; the limit is "
                f"{self.config.max_document_bytes}"
            )
        if not document.id or len(document.id) > 512:
            raise InvalidDocument("document id must be 1-512 characters", param="id")

    async def _embed(self, texts: Sequence[str]) -> np.ndarray:
        return await anyio.to_thread.run_sync(
            self.embedder.embed, texts, limiter=self._embed_limiter
        )

    async def _delete_chunks(
        self, session: AsyncSession, collection: str, document_id: str
    ) -> np.ndarray:
        ids = list(
            await session.scalars(
                select(StoredChunk.id).where(
                    StoredChunk.collection == collection, StoredChunk.document_id == document_id
                )
            )
        )
        if ids:
            await session.execute(delete(StoredChunk).where(StoredChunk.id.in_(ids)))
        return np.array(ids, dtype=np.int64)

    async def _lock(self, session: AsyncSession, collection: str) -> Collection:
        """Lock the collection for the rest of the transaction, before its chunks are read:
        two replicas replacing one document at once then run one after the other, and the
        second deletes the first's chunks instead of keeping both sets."""
        await begin_writing(session)
        row = await session.get(
            Collection, collection, with_for_update=True, populate_existing=True
        )
        if row is None:
            raise CollectionNotFound(f"collection {collection!r} does not exist")
        return row

    async def _apply(
        self,
        collection: str,
        loaded: _LoadedCollection,
        remove: np.ndarray,
        add: np.ndarray,
        vectors: np.ndarray,
        generation: int,
    ) -> None:
        loaded.chunks.clear()  # under the write lock: no search is reading it

        def work() -> None:
            loaded.index.remove(remove)
            loaded.index.add(add, vectors)

        try:
            await anyio.to_thread.run_sync(work)
        except BaseException:
            # The store has the change; drop the in-memory index so the next use rebuilds it
            # from the store instead of serving a half-applied update.
            self._collections.pop(collection, None)
            raise
        if loaded.index.needs_rebuild:  # a compressed index that must change: from the store
            ids, all_vectors = await self._stored_vectors(collection)
            loaded.index = await self._built(ids, all_vectors)
        loaded.generation = generation
        await self._save(loaded.index, collection)

    async def _save(self, index: VectorIndex, collection: str) -> None:
        """Write the index file. It is a cache of the store: when it cannot be written (disk
        full), the old file stays whole, search goes on from memory, and the next start
        rebuilds from the store."""
        try:
            await anyio.to_thread.run_sync(index.save, self._index_path(collection))
        except OSError as exc:
            log.error("index file not saved; serving from memory",
                      extra={"collection": collection, "error": str(exc)})  # fmt: skip

    def _index_path(self, collection: str) -> Path:
        return self.index_dir / f"{check_collection_name(collection)}.faiss"

    async def _loaded(self, collection: str) -> _LoadedCollection:
        """The collection's index, (re)loaded when the store has moved past it."""
        check_collection_name(collection)
        loaded = self._collections.get(collection)
        now = time.monotonic()
        if loaded is not None and now - loaded.checked_at < self.config.reload_check_s:
            return loaded
        generation = await self._generation(collection)
        if loaded is not None and loaded.generation >= generation:
            loaded.checked_at = now
            return loaded
        async with self._load_lock:
            loaded = self._collections.get(collection)
            if loaded is None or loaded.generation < generation:
                index = await self._load_index(collection)
                lock = loaded.lock if loaded else _ReadWriteLock()
                chunks = LruCache[int, _ChunkRow](self.config.chunk_cache_size)
                loaded = _LoadedCollection(index, generation, now, lock, chunks)
                self._collections[collection] = loaded
        return loaded

    async def _generation(self, collection: str) -> int:
        async with self.sessions() as session:
            generation = await session.scalar(
                select(Collection.generation).where(Collection.name == collection)
            )
        if generation is None:
            raise CollectionNotFound(f"collection {collection!r} does not exist")
        return int(generation)

    async def _load_index(self, collection: str) -> VectorIndex:
        """The saved file if it matches the store exactly; otherwise rebuilt from the store."""
        ids, vectors = await self._stored_vectors(collection)
        path = self._index_path(collection)
        dimension = self.embedder.dimension
        if path.exists():
            try:
                index = await anyio.to_thread.run_sync(
                    VectorIndex.load, path, dimension, self.config.index
                )
                if np.array_equal(index.ids(), ids):
                    return index
                log.warning("index out of date; rebuilding", extra={"collection": collection})
            except (RuntimeError, ValueError) as exc:  # faiss raises RuntimeError on bad files
                log.warning(
                    "index unreadable; rebuilding",
                    extra={"collection": collection, "error": str(exc)},
                )
        index = await self._built(ids, vectors)
        if len(index):
            await self._save(index, collection)
        return index

    async def _built(self, ids: np.ndarray, vectors: np.ndarray) -> VectorIndex:
        """A new index of the kind the size calls for, timed for the listing."""

        def build() -> VectorIndex:
            began = time.perf_counter()
            index = VectorIndex.build(self.embedder.dimension, self.config.index, ids, vectors)
            index.build_s = round(time.perf_counter() - began, 3)
            return index

        return await anyio.to_thread.run_sync(build)

    async def _stored_vectors(self, collection: str) -> tuple[np.ndarray, np.ndarray]:
        async with self.sessions() as session:
            rows = (
                await session.execute(
                    select(StoredChunk.id, StoredChunk.vector)
                    .where(StoredChunk.collection == collection)
                    .order_by(StoredChunk.id)
                )
            ).all()
        ids = np.array([row[0] for row in rows], dtype=np.int64)
        dimension = self.embedder.dimension
        if not rows:
            return ids, np.zeros((0, dimension), dtype=np.float32)
        vectors = np.frombuffer(b"".join(row[1] for row in rows), dtype=np.float32)
        return ids, vectors.reshape(len(rows), dimension)


class _ReadWriteLock:
    """Many readers or one writer; a waiting writer holds off new readers."""

    def __init__(self) -> None:
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0
        self._condition = asyncio.Condition()

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[None]:
        async with self._condition:
            await self._condition.wait_for(lambda: not self._writer and not self._writers_waiting)
            self._readers += 1
        try:
            yield
        finally:
            async with self._condition:
                self._readers -= 1
                self._condition.notify_all()

    @asynccontextmanager
    async def writing(self) -> AsyncIterator[None]:
        async with self._condition:
            self._writers_waiting += 1
            try:
                await self._condition.wait_for(lambda: not self._writer and not self._readers)
            finally:
                self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            async with self._condition:
                self._writer = False
                self._condition.notify_all()
