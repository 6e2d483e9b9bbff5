"""The trainer's store logic on SQLite and PostgreSQL: the per-alias lock, the remembered
split, stale runs, and when the worker decides an alias is due."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from core.store import Database
from core.store.tables import Conversation, ReviewItem, utcnow
from trainer.dataset import Example
from trainer.errors import TrainingLocked
from trainer.lock import training_lock
from trainer.store import TrainerStore
from trainer.tables import EvalScore, TrainingRun
from trainer.worker import TrainerWorker


@pytest.fixture
def alias() -> str:
    """Tests share one PostgreSQL database per session: each uses its own alias."""
    return f"support-{uuid.uuid4().hex[:8]}"


async def _approve(db: Database, alias: str, count: int) -> list[str]:
    ids = [f"chatcmpl-{uuid.uuid4().hex}" for _ in range(count)]
    async with db.transaction() as session:
        for completion_id in ids:
            session.add(Conversation(
                id=completion_id, requested_model=alias, served_model="base", stream=False,
                status="ok", request={"messages": [{"role": "user", "content": completion_id}]},
                response=[{"index": 0, "content": "answer", "finish_reason": "stop"}],
            ))  # fmt: skip
            session.add(ReviewItem(
                completion_id=completion_id, alias=alias, served_model="base",
                reasons=[{"reason": "correction", "detail": {}, "at": ""}], state="approved",
                correction=f"fixed {completion_id}", decided_at=utcnow(),
            ))  # fmt: skip
    return ids


async def test_one_training_job_per_alias(alias: str, db: Database, tmp_path: Path) -> None:
    async with training_lock(db, tmp_path, alias):
        with pytest.raises(TrainingLocked, match=alias):
            async with training_lock(db, tmp_path, alias):
                pass
        async with training_lock(db, tmp_path, "billing"):  # other aliases are free
            pass
    async with training_lock(db, tmp_path, alias):  # released on exit
        pass


async def test_approved_examples_come_with_their_correction(alias: str, db: Database) -> None:
    ids = await _approve(db, alias, 3)
    examples = await TrainerStore(db).approved_examples(alias)
    assert [example.id for example in examples] == ids
    assert examples[0].reply == f"fixed {ids[0]}" and examples[0].origin == "correction"
    assert examples[0].messages == [{"role": "user", "content": ids[0]}]
    assert await TrainerStore(db).approved_examples("other") == []


async def test_the_split_is_remembered_and_only_grows(alias: str, db: Database) -> None:
    store = TrainerStore(db)

    def example(name: str, reply: str = "r") -> Example:
        return Example(name, "support", [{"role": "user", "content": name}], reply, "correction",
                       "correction")  # fmt: skip

    await store.remember_split(alias, [example("h1")], [example("t1"), example("t2")])
    # A second call with a changed h1 and t1 moved to the holdout changes nothing.
    await store.remember_split(alias, [example("h1", "changed"), example("t1")],
                               [example("t3")])  # fmt: skip
    holdout = await store.frozen_holdout(alias)
    assert [(item.id, item.reply) for item in holdout] == [("h1", "r")]
    assert await store.trained_ids(alias) == {"t1", "t2", "t3"}


async def test_runs_left_running_are_marked_failed(alias: str, db: Database) -> None:
    store = TrainerStore(db)
    dead = await store.start_run(alias, "manual", 10)
    assert await store.fail_stale_runs(alias) == 1
    runs = await store.runs(alias)
    assert [(run.id, run.state, run.error) for run in runs] == [
        (dead, "failed", "worker died mid-run")
    ]


async def test_the_worker_trains_an_alias_with_enough_new_examples(
    alias: str, db: Database
) -> None:
    store = TrainerStore(db)
    worker = TrainerWorker(job=Any, store=store, min_new_examples=5, schedule_s=60)  # type: ignore[arg-type]

    async def due() -> list[tuple[str, str]]:
        found = await worker.due()
        assert all(name != "Base-Model" for name, _ in found)
        return [entry for entry in found if entry[0] == alias]  # the database is shared

    await _approve(db, alias, 4)
    await _approve(db, "Base-Model", 9)  # not an alias: never trained
    assert await due() == []
    await _approve(db, alias, 1)
    assert await due() == [(alias, "new_examples")]

    run_id = await store.start_run(alias, "new_examples", 5)
    await store.finish_run(run_id, "published")
    assert await due() == []  # the run saw all five
    await _approve(db, alias, 1)
    assert await due() == []  # one new example, schedule not yet due
    async with db.transaction() as session:
        run = await session.get(TrainingRun, run_id)
        assert run is not None
        run.finished_at = utcnow() - timedelta(seconds=61)
    assert await due() == [(alias, "schedule")]


async def test_a_degraded_alias_is_trained_and_reevaluated_on_schedule(
    alias: str, db: Database
) -> None:
    store = TrainerStore(db)
    calls: list[str] = []

    class Reevaluator:  # the scores it would write; the real one is in test_reeval.py
        async def run_once(self) -> list[EvalScore]:
            calls.append("run")
            row = _score(alias, degraded=len(calls) > 1, at=utcnow())
            await store.add_eval_scores([row])
            return [row]

    worker = TrainerWorker(
        job=Any, store=store, min_new_examples=20, monitor_min_new_examples=2,  # type: ignore[arg-type]
        reevaluator=Reevaluator(), reeval_interval_s=3600,  # type: ignore[arg-type]
    )  # fmt: skip
    await _approve(db, alias, 2)
    assert await worker.reevaluate_if_due() and calls == ["run"]  # never evaluated: due
    assert not await worker.reevaluate_if_due()  # an hour has not passed
    assert not await store.degraded(alias)
    assert (alias, "degraded") not in await worker.due()

    async with db.transaction() as session:  # an hour later
        for row in await session.scalars(select(EvalScore).where(EvalScore.alias == alias)):
            row.computed_at = utcnow() - timedelta(seconds=3601)
    assert await worker.reevaluate_if_due() and calls == ["run", "run"]
    assert await store.degraded(alias)
    assert (alias, "degraded") in await worker.due()
    history = await store.eval_history(alias)
    assert [row.degraded for row in history] == [True, False]  # newest first

    # A later re-evaluation that finds every serving version well clears it.
    await store.add_eval_scores([_score(alias, degraded=False, at=utcnow() + timedelta(1))])
    assert not await store.degraded(alias)


def _score(alias: str, *, degraded: bool, at: Any) -> EvalScore:
    return EvalScore(
        alias=alias, version="base", computed_at=at, holdout_count=10,
        holdout_accuracy=0.4 if degraded else 0.9, probe_accuracy=0.9, reference_accuracy=0.9,
        degraded=degraded, report={},
    )  # fmt: skip
