"""Insert-if-missing writes that two writers make at once, on SQLite and PostgreSQL (issue
18, the sweep): each read-then-insert became an insert that a key already taken cannot fail.

* a trainer's dataset split: two runs remembering overlapping examples (the training lock
  keeps one run per alias, so this is the store's own guarantee behind it);
* a retrieval collection: two first uploads to a new collection.

Before, the loser of each raised an IntegrityError (a 500). Run against that code (commit
20b4081) with seed 18, both tests failed on both stores within ``ROUNDS``: in the first
round on PostgreSQL, the second on SQLite (4 writers a round, two replicas); the 4 rounds
give the race several seeded orderings to be met in.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from core.store import Database
from retrieval.service import RetrievalConfig, Retriever
from retrieval.tables import Collection
from tests.own_store import own_database_url  # noqa: F401 (database_url: a store of its own)
from tests.support import session_seed
from trainer.dataset import Example
from trainer.store import TrainerStore
from trainer.tables import SplitItem

SEED = session_seed()
ROUNDS = 4


@pytest.fixture
async def dbs(database_url: str) -> AsyncIterator[list[Database]]:
    built = [Database(database_url) for _ in range(2)]
    await built[0].migrate()
    yield built
    for db in built:
        await db.dispose()


def _example(completion_id: str, alias: str) -> Example:
    return Example(completion_id, alias, [{"role": "user", "content": "q"}], "a", "correction",
                   "correction")  # fmt: skip


async def test_two_runs_remember_one_split(dbs: list[Database]) -> None:
    rng = random.Random(SEED)
    for round_number in range(ROUNDS):
        alias = f"split-{uuid.uuid4().hex[:8]}"
        ids = [f"chatcmpl-{n}" for n in range(6)]
        sides = []
        for _run in range(4):  # each run puts its own pick of the ids in the holdout
            holdout = rng.sample(ids, 2)
            trained = [i for i in ids if i not in holdout]
            sides.append(([_example(i, alias) for i in holdout],
                          [_example(i, alias) for i in trained]))  # fmt: skip
        stores = [TrainerStore(dbs[writer % 2]) for writer in range(4)]
        results = await asyncio.gather(
            *(
                store.remember_split(alias, *side)
                for store, side in zip(stores, sides, strict=True)
            ),
            return_exceptions=True,
        )
        assert not [r for r in results if r is not None], (round_number, SEED, results)
        async with dbs[0].sessions() as session:
            rows = list(await session.scalars(select(SplitItem).where(SplitItem.alias == alias)))
        assert sorted(row.completion_id for row in rows) == ids, round_number
        # One side each, for good, with the frozen example wherever it is the holdout.
        for row in rows:
            assert (row.example is not None) == (row.split == "holdout"), row.completion_id


async def test_two_first_uploads_create_one_collection(dbs: list[Database], tmp_path: Path) -> None:
    services = [Retriever(db.sessions, None, tmp_path / "indexes", RetrievalConfig())  # type: ignore[arg-type]
                for db in dbs]  # fmt: skip
    for round_number in range(ROUNDS):
        name = f"docs-{uuid.uuid4().hex[:8]}"
        results = await asyncio.gather(
            *(services[n % 2].ensure_collection(name) for n in range(4)), return_exceptions=True
        )
        assert not [r for r in results if r is not None], (round_number, results)
        async with dbs[0].sessions() as session:
            query = select(func.count()).select_from(Collection).where(Collection.name == name)
            assert await session.scalar(query) == 1
