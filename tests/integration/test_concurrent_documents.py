"""Two replicas replacing one document at once, on SQLite and PostgreSQL (issue 18, the
sweep): the store ends with exactly one of the two versions, whole, never both sets of
chunks and never a 500.

Before, each replica read the document's chunk ids, deleted them and added its own in a
transaction that locked nothing until its last statement. Run against that code (seed 18),
SQLite failed in the first round (the second writer's insert of the document row: an
IntegrityError, a 500) and PostgreSQL in the second (both committed, and the document kept
both versions' chunks: search found text it no longer had). Each upsert now locks the
collection first (``begin_writing`` and ``FOR UPDATE``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from core.store import Database
from retrieval.documents import Document
from retrieval.embeddings import Embedder
from retrieval.service import RetrievalConfig, Retriever
from retrieval.tables import StoredChunk, StoredDocument
from tests.own_store import own_database_url  # noqa: F401 (database_url: a store of its own)
from tests.support import session_seed

SEED = session_seed()
ROUNDS = 4


class _MeetingEmbedder:
    """The real embedder, whose replicas wait for each other after embedding: their
    transactions then start together, as two busy replicas' would (alone, the one embedder
    takes turns and the second transaction starts long after the first has committed)."""

    def __init__(self, embedder: Embedder, meeting: threading.Barrier) -> None:
        self._embedder = embedder
        self._meeting = meeting

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self._embedder.embed(texts)
        with contextlib.suppress(threading.BrokenBarrierError):  # the other did not come
            self._meeting.wait(timeout=10)
        return vectors

    def __getattr__(self, name: str) -> Any:
        return getattr(self._embedder, name)


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder(threads=1)


@pytest.fixture
async def replicas(
    database_url: str, embedder: Embedder, tmp_path: Path
) -> AsyncIterator[list[Retriever]]:
    dbs = [Database(database_url) for _ in range(2)]
    await dbs[0].migrate()
    meeting = threading.Barrier(2)
    # Each replica has its own index files, as on its own machine; the store is shared.
    yield [
        Retriever(db.sessions, _MeetingEmbedder(embedder, meeting),  # type: ignore[arg-type]
                  tmp_path / f"replica-{n}", RetrievalConfig())
        for n, db in enumerate(dbs)
    ]  # fmt: skip
    for db in dbs:
        await db.dispose()


def _version(name: str, rng: random.Random) -> str:
    paragraphs = [f"{name} paragraph {n}: " + " ".join(rng.choices(WORDS, k=40)) for n in range(6)]
    return "\n\n".join(paragraphs)


WORDS = [
    "kettle",
    "warranty",
    "refund",
    "parcel",
    "invoice",
    "courier",
    "voucher",
    "ledger",
    "bracket",
    "lantern",
]


async def test_two_replicas_replacing_one_document_leave_one_version(
    replicas: list[Retriever],
) -> None:
    rng = random.Random(SEED)
    await replicas[0].ensure_collection("handbook")
    for round_number in range(ROUNDS):
        texts = {name: _version(f"{name}{round_number}", rng) for name in ("alpha", "beta")}
        order = rng.sample(list(texts), 2)
        results = await asyncio.gather(
            *(
                replica.upsert("handbook", Document("guide", texts[name], "guide.md"))
                for replica, name in zip(replicas, order, strict=True)
            ),
            return_exceptions=True,
        )
        assert not [r for r in results if isinstance(r, BaseException)], (round_number, results)
        await _assert_one_whole_version(replicas[0], texts, round_number)


async def _assert_one_whole_version(
    replica: Retriever, texts: dict[str, str], round_number: int
) -> None:
    async with replica.sessions() as session:
        document = await session.get(StoredDocument, ("handbook", "guide"))
        chunks = list(
            await session.scalars(
                select(StoredChunk).where(
                    StoredChunk.collection == "handbook", StoredChunk.document_id == "guide"
                )
            )
        )
    assert document is not None
    kept = [name for name, text in texts.items() if all(c.text in text for c in chunks)]
    assert len(kept) == 1, (round_number, [c.text[:30] for c in chunks])
    assert len(chunks) == document.chunk_count, round_number
    assert sorted(chunk.ordinal for chunk in chunks) == list(range(len(chunks)))
