"""A collection past ``compressed_min_vectors`` is served from a compressed index whose
candidates the Retriever re-ranks on the vectors the store keeps: the hits are the exact
top k with exact scores, and the listing shows the kind and its parameters (SQLite; a
stand-in embedder, so no model is loaded)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import insert

from core.store import Database
from retrieval.index import IndexConfig
from retrieval.service import RetrievalConfig, Retriever
from retrieval.tables import Collection, StoredChunk, StoredDocument

DIMENSION = 32
CHUNKS = 12_000


class _Vectors:
    """Queries are looked up in a table of vectors: the test chooses what each one means."""

    dimension = DIMENSION

    def __init__(self, queries: dict[str, np.ndarray]) -> None:
        self.queries = queries

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return np.vstack([self.queries[text] for text in texts])


@pytest.fixture
async def stored(tmp_path: Path) -> tuple[Database, np.ndarray]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
    await db.migrate()
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((600, DIMENSION)).astype(np.float32)
    vectors = centres[rng.integers(0, 600, CHUNKS)] + rng.standard_normal(
        (CHUNKS, DIMENSION)
    ).astype(np.float32) / np.sqrt(DIMENSION)
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    async with db.sessions() as session, session.begin():
        session.add(Collection(name="big", generation=1))
        session.add(StoredDocument(collection="big", id="all", content_hash="x",
                                   chunk_count=CHUNKS))  # fmt: skip
        await session.flush()
        await session.execute(
            insert(StoredChunk),
            [
                {
                    "id": n + 1,
                    "collection": "big",
                    "document_id": "all",
                    "ordinal": n,
                    "text": f"chunk {n + 1}",
                    "vector": vectors[n].tobytes(),
                }
                for n in range(CHUNKS)
            ],
        )
    return db, vectors


async def test_hits_are_the_exact_top_k_from_a_compressed_index(
    stored: tuple[Database, np.ndarray], tmp_path: Path
) -> None:
    db, vectors = stored
    queries = {f"q{n}": vectors[n * 97] for n in range(20)}
    config = RetrievalConfig(
        index=IndexConfig(exact_max_vectors=1000, compressed_min_vectors=10_000, ivf_nprobe=32)
    )
    retriever = Retriever(db.sessions, _Vectors(queries), tmp_path / "indexes", config)  # type: ignore[arg-type]
    agreed = 0
    for text, query in queries.items():
        hits = await retriever.search("big", text, k=5)
        exact = np.argsort(-(vectors @ query))[:5] + 1  # chunk ids start at 1
        agreed += len({hit.chunk_id for hit in hits} & set(exact.tolist()))
        for hit in hits:  # the scores are exact, not the codes' estimates
            assert hit.score == pytest.approx(float(vectors[hit.chunk_id - 1] @ query), abs=1e-5)
        assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)
    assert agreed / (5 * len(queries)) >= 0.95
    listing = {row["name"]: row for row in await retriever.list_collections()}
    facts = listing["big"]["index"]
    assert isinstance(facts, dict)
    assert facts["kind"] == "ivfsq" and facts["vectors"] == CHUNKS
    assert facts["code_bytes"] == DIMENSION // 2 and facts["rerank_factor"] == 4
    assert isinstance(facts["build_s"], float)
    # Another process, that has not loaded it, lists what was recorded beside the file.
    fresh = Retriever(db.sessions, _Vectors(queries), tmp_path / "indexes", config)  # type: ignore[arg-type]
    recorded = (await fresh.list_collections())[0]["index"]
    assert isinstance(recorded, dict) and recorded["kind"] == "ivfsq"
    retriever.queries.close()
    fresh.queries.close()
    await db.dispose()


async def test_min_score_applies_to_the_exact_scores(
    stored: tuple[Database, np.ndarray], tmp_path: Path
) -> None:
    db, vectors = stored
    query = vectors[5]
    config = RetrievalConfig(
        index=IndexConfig(exact_max_vectors=1000, compressed_min_vectors=10_000)
    )
    retriever = Retriever(db.sessions, _Vectors({"q": query}), tmp_path / "i", config)  # type: ignore[arg-type]
    hits = await retriever.search("big", "q", k=10, min_score=0.999)
    assert [hit.chunk_id for hit in hits] == [6]  # only itself scores 1
    retriever.queries.close()
    await db.dispose()


async def test_a_shrunk_compressed_index_is_rebuilt_from_the_store(
    stored: tuple[Database, np.ndarray], tmp_path: Path
) -> None:
    db, vectors = stored
    async with db.sessions() as session, session.begin():  # a small second document
        session.add(StoredDocument(collection="big", id="small", content_hash="y",
                                   chunk_count=1))  # fmt: skip
        await session.flush()
        small = {"id": CHUNKS + 1, "collection": "big", "document_id": "small", "ordinal": 0,
                 "text": "small", "vector": vectors[0].tobytes()}  # fmt: skip
        await session.execute(insert(StoredChunk), [small])
        (await session.get(Collection, "big")).generation += 1  # type: ignore[union-attr]
    config = RetrievalConfig(
        index=IndexConfig(exact_max_vectors=1000, compressed_min_vectors=10_000)
    )
    retriever = Retriever(db.sessions, _Vectors({"q": vectors[0]}), tmp_path / "i", config)  # type: ignore[arg-type]
    assert {hit.chunk_id for hit in await retriever.search("big", "q", k=2)} == {1, CHUNKS + 1}
    # Codes cannot make a smaller index; the store's vectors can.
    assert await retriever.delete_document("big", "all")
    facts = (await retriever.list_collections())[0]["index"]
    assert isinstance(facts, dict) and facts["kind"] == "exact" and facts["vectors"] == 1
    hits = await retriever.search("big", "q", k=2)
    assert [hit.chunk_id for hit in hits] == [CHUNKS + 1]
    retriever.queries.close()
    await db.dispose()
