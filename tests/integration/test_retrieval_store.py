"""The retrieval service on a real store (SQLite and PostgreSQL), real embeddings, real FAISS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from core.store import Database
from retrieval.chunking import ChunkingConfig
from retrieval.documents import Document
from retrieval.embeddings import Embedder
from retrieval.errors import (
    CollectionNotFound,
    InvalidCollectionName,
    InvalidDocument,
    InvalidQuery,
)
from retrieval.service import RetrievalConfig, Retriever

POLICY = Document(
    id="policy.md",
    source="handbook/policy.md",
    text="# Returns\n\n## Teapots\n\nPurple teapots can be returned within 47 days.\n\n"
    "## Spoons\n\nSpoons are never refundable.",
)


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    loaded = Embedder()
    assert loaded.dimension == 384
    return loaded


@pytest.fixture
async def retriever(
    database_url: str, embedder: Embedder, tmp_path: Path
) -> AsyncIterator[Retriever]:
    db = Database(database_url)
    await db.migrate()
    service = Retriever(db.sessions, embedder, tmp_path / "indexes", _config())
    yield service
    await db.dispose()


def _config() -> RetrievalConfig:
    return RetrievalConfig(chunking=ChunkingConfig(chunk_tokens=64, overlap_tokens=8))


def _unique(name: str, tmp_path: Path) -> str:
    # PostgreSQL is shared by the session; keep collection names apart per test.
    return f"{name}-{abs(hash(tmp_path)) % 10**8}"


async def test_search_finds_the_right_section(retriever: Retriever, tmp_path: Path) -> None:
    collection = _unique("handbook", tmp_path)
    result = await retriever.upsert(collection, POLICY)
    assert (result.status, result.chunks) == ("created", 2)

    hits = await retriever.search(collection, "how long can I return a teapot?", k=2)
    assert hits[0].section == "Returns > Teapots"
    assert "47 days" in hits[0].text
    assert hits[0].source == "handbook/policy.md"
    assert hits[0].score > hits[1].score


async def test_unchanged_documents_are_skipped_and_changed_ones_replace(
    retriever: Retriever, tmp_path: Path
) -> None:
    collection = _unique("replace", tmp_path)
    await retriever.upsert(collection, POLICY)
    assert (await retriever.upsert(collection, POLICY)).status == "unchanged"

    changed = Document(id=POLICY.id, source=POLICY.source, text="# Returns\n\nNo returns at all.")
    result = await retriever.upsert(collection, changed)
    assert (result.status, result.chunks) == ("replaced", 1)
    hits = await retriever.search(collection, "teapot returns", k=5)
    assert [hit.text for hit in hits] == ["No returns at all."]


async def test_delete_removes_the_document(retriever: Retriever, tmp_path: Path) -> None:
    collection = _unique("delete", tmp_path)
    await retriever.upsert(collection, POLICY)
    other = Document(id="other", text="Forks are refundable within 3 days.")
    await retriever.upsert(collection, other)

    assert await retriever.delete_document(collection, POLICY.id)
    assert not await retriever.delete_document(collection, POLICY.id)
    hits = await retriever.search(collection, "teapot", k=5)
    assert {hit.document_id for hit in hits} == {"other"}
    listing = {row["name"]: row for row in await retriever.list_collections()}
    assert listing[collection]["documents"] == 1


async def test_index_survives_a_restart_and_a_lost_or_corrupt_file(
    retriever: Retriever, embedder: Embedder, tmp_path: Path
) -> None:
    collection = _unique("restart", tmp_path)
    await retriever.upsert(collection, POLICY)
    index_file = tmp_path / "indexes" / f"{collection}.faiss"
    assert index_file.exists()

    def fresh() -> Retriever:
        return Retriever(retriever.sessions, embedder, tmp_path / "indexes", _config())

    assert (await fresh().search(collection, "teapot", k=1))[0].document_id == POLICY.id
    index_file.write_bytes(b"not a faiss index")  # a crash mid-write cannot do this, a disk can
    assert (await fresh().search(collection, "teapot", k=1))[0].document_id == POLICY.id
    index_file.unlink()
    assert (await fresh().search(collection, "teapot", k=1))[0].document_id == POLICY.id
    assert index_file.exists()  # rebuilt from the store and saved again


async def test_a_second_gateway_sees_writes_of_the_first(
    retriever: Retriever, embedder: Embedder, tmp_path: Path
) -> None:
    collection = _unique("shared", tmp_path)
    await retriever.upsert(collection, Document(id="a", text="Alpha facts about llamas."))
    other = Retriever(retriever.sessions, embedder, tmp_path / "indexes", _config())
    assert len(await other.search(collection, "llamas", k=3)) == 1

    await retriever.upsert(collection, Document(id="b", text="Beta facts about llamas."))
    other._collections[collection].checked_at = float("-inf")  # skip the 2 s recheck wait
    assert len(await other.search(collection, "llamas", k=3)) == 2


async def test_found_chunks_are_cached_until_the_collection_changes(
    retriever: Retriever, embedder: Embedder, tmp_path: Path
) -> None:
    """A repeated search reads no chunk from the store; a write here or on another replica
    empties the cache, so no search returns text the store no longer has."""
    collection = _unique("chunk-cache", tmp_path)
    await retriever.upsert(collection, POLICY)
    first = await retriever.search(collection, "teapot returns", k=2)
    reads = 0
    sessions = retriever.sessions

    def counting() -> object:
        nonlocal reads
        reads += 1
        return sessions()

    retriever.sessions = counting  # type: ignore[assignment]
    retriever._collections[collection].checked_at = float("inf")  # no generation check now
    assert await retriever.search(collection, "teapot returns", k=2) == first
    assert await retriever.search(collection, "are spoons refundable", k=1)
    assert reads == 0
    retriever.sessions = sessions

    replica = Retriever(sessions, embedder, tmp_path / "indexes", _config())
    changed = Document(id=POLICY.id, source=POLICY.source, text="# Returns\n\nTeapots: 9 days.")
    await replica.upsert(collection, changed)
    retriever._collections[collection].checked_at = float("-inf")  # skip the 2 s recheck
    assert [hit.text for hit in await retriever.search(collection, "teapot", k=5)] == [
        "Teapots: 9 days."
    ]
    await retriever.upsert(collection, POLICY)  # a write here empties it at once
    assert "47 days" in (await retriever.search(collection, "teapot returns", k=1))[0].text

    small = RetrievalConfig(chunking=_config().chunking, chunk_cache_size=1)
    bounded = Retriever(sessions, embedder, tmp_path / "indexes", small)
    assert len(await bounded.search(collection, "teapot returns", k=2)) == 2
    assert len(bounded._collections[collection].chunks) == 1


async def test_concurrent_ingest_and_search_never_mix_versions(
    retriever: Retriever, tmp_path: Path
) -> None:
    """Replace one document over and over while searching: every search sees exactly one
    version of it, never chunks of two versions or none at all."""
    collection = _unique("concurrent", tmp_path)

    def version(number: int) -> Document:
        sections = "\n\n".join(
            f"## Part {part}\n\nRelease {number} notes about the zebra feeder, part {part}."
            for part in range(3)
        )
        return Document(id="notes", text=f"# Notes\n\n{sections}")

    await retriever.upsert(collection, version(0))
    seen: list[set[str]] = []

    async def writer() -> None:
        for number in range(1, 8):
            await retriever.upsert(collection, version(number))

    async def reader() -> None:
        for _ in range(25):
            hits = await retriever.search(collection, "zebra feeder notes", k=10)
            seen.append({hit.text.split("Release ", 1)[1].split(" ", 1)[0] for hit in hits})
            await asyncio.sleep(0)

    await asyncio.gather(writer(), reader(), reader())
    assert seen and all(len(versions) == 1 for versions in seen), seen
    final = await retriever.search(collection, "zebra feeder notes", k=10)
    assert {hit.text.split("Release ", 1)[1].split(" ", 1)[0] for hit in final} == {"7"}
    assert len(final) == 3


@pytest.mark.parametrize(
    ("document", "error"),
    [
        (Document(id="empty", text="   \n "), InvalidDocument),
        (Document(id="big", text="x" * (3 * 1024 * 1024)), InvalidDocument),
        (Document(id="", text="no id"), InvalidDocument),
    ],
    ids=["empty", "over-size-limit", "no-id"],
)
async def test_bad_documents_are_refused_and_nothing_is_written(
    retriever: Retriever, tmp_path: Path, document: Document, error: type[Exception]
) -> None:
    collection = _unique("bad", tmp_path)
    await retriever.upsert(collection, Document(id="good", text="A good document."))
    with pytest.raises(error):
        await retriever.upsert(collection, document)
    listing = {row["name"]: row for row in await retriever.list_collections()}
    assert listing[collection]["documents"] == 1


async def test_bad_queries_and_names(retriever: Retriever, tmp_path: Path) -> None:
    collection = _unique("queries", tmp_path)
    await retriever.upsert(collection, POLICY)
    with pytest.raises(InvalidQuery):
        await retriever.search(collection, "teapot", k=0)
    with pytest.raises(InvalidQuery):
        await retriever.search(collection, "teapot", k=1000)
    with pytest.raises(InvalidQuery):
        await retriever.search(collection, "   ", k=3)
    with pytest.raises(CollectionNotFound):
        await retriever.search("no-such-collection", "teapot", k=3)
    for name in ("../etc", "a/b", "UPPER", "", "x" * 65, ".hidden"):
        with pytest.raises(InvalidCollectionName):
            await retriever.upsert(name, POLICY)


def test_switches_to_ivf_past_the_threshold_and_keeps_finding(tmp_path: Path) -> None:
    from retrieval.index import IndexConfig, VectorIndex

    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(3000, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = VectorIndex(32, IndexConfig(exact_max_vectors=1000, ivf_nprobe=64))
    index.add(np.arange(900), vectors[:900])
    assert index.kind == "exact"
    index.add(np.arange(900, 3000), vectors[900:])
    assert index.kind == "ivf" and len(index) == 3000
    _, ids = index.search(vectors[:50], 1)
    assert (ids[:, 0] == np.arange(50)).mean() >= 0.95
    index.save(tmp_path / "x.faiss")
    loaded = VectorIndex.load(tmp_path / "x.faiss", 32, IndexConfig(exact_max_vectors=1000))
    assert loaded.kind == "ivf" and np.array_equal(loaded.ids(), np.arange(3000))
