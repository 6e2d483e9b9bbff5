"""The trainer's view of the shared store: approved examples, the frozen holdout, run records
and re-evaluation scores."""

from __future__ import annotations

import os
import socket
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update

from core.store.db import Database, retry_conflicts
from core.store.tables import Conversation, ReviewItem
from monitor.tables import MonitorReport
from trainer.dataset import Example
from trainer.tables import EvalScore, SplitItem, TrainingRun, utcnow

WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"


def example_from(item: ReviewItem, conversation: Conversation) -> Example:
    """The example a decided review item teaches: its correction, or the answer as served
    (text, tool calls or both) when approved as it was; the request's tools kept."""
    served = conversation.response[0] if conversation.response else {}
    stratum = item.reasons[0]["reason"] if item.reasons else "unknown"
    messages = list(conversation.request.get("messages") or [])
    tools = conversation.request.get("tools") or None
    if item.correction:
        reply, calls, origin = item.correction, None, "correction"
    else:
        reply, calls = served.get("content") or "", served.get("tool_calls") or None
        origin = "approved_answer"
    return Example(conversation.id, item.alias, messages, reply, origin, stratum, tools, calls)


class TrainerStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- examples ----------------------------------------------------------------------
    async def approved_examples(self, alias: str) -> list[Example]:
        query = (
            select(ReviewItem, Conversation)
            .join(Conversation, Conversation.id == ReviewItem.completion_id)
            .where(ReviewItem.alias == alias, ReviewItem.state == "approved")
            .order_by(ReviewItem.decided_at, ReviewItem.id)
        )
        async with self.db.sessions() as session:
            rows = (await session.execute(query)).all()
        return [example_from(item, conversation) for item, conversation in rows]

    async def approved_count(self, alias: str) -> int:
        query = select(func.count()).where(
            ReviewItem.alias == alias, ReviewItem.state == "approved"
        )
        async with self.db.sessions() as session:
            return int(await session.scalar(query) or 0)

    async def aliases_with_approved(self) -> dict[str, int]:
        query = (
            select(ReviewItem.alias, func.count())
            .where(ReviewItem.state == "approved")
            .group_by(ReviewItem.alias)
        )
        async with self.db.sessions() as session:
            return {alias: int(count) for alias, count in (await session.execute(query)).all()}

    async def frozen_holdout(self, alias: str) -> list[Example]:
        query = (
            select(SplitItem)
            .where(SplitItem.alias == alias, SplitItem.split == "holdout")
            .order_by(SplitItem.added_at, SplitItem.completion_id)
        )
        async with self.db.sessions() as session:
            return [Example.from_json(row.example or {}) for row in await session.scalars(query)]

    async def trained_ids(self, alias: str) -> set[str]:
        query = select(SplitItem.completion_id).where(
            SplitItem.alias == alias, SplitItem.split == "train"
        )
        async with self.db.sessions() as session:
            return set(await session.scalars(query))

    async def remember_split(
        self, alias: str, new_holdout: list[Example], new_trained: list[Example]
    ) -> None:
        """Record new members of each side; existing rows are never touched."""
        rows = [("holdout", example) for example in new_holdout]
        rows += [("train", example) for example in new_trained]
        if not rows:
            return
        # In key order, so two writers wait on each other's rows in one order, never in a
        # cycle (PostgreSQL's deadlock); stable, so an id on both sides stays a holdout.
        rows.sort(key=lambda row: row[1].id)
        values = [
            {"alias": alias, "completion_id": example.id, "split": split,
             "stratum": example.stratum,
             "example": example.to_json() if split == "holdout" else None}
            for split, example in rows
        ]  # fmt: skip
        insert = self.db.insert(SplitItem).on_conflict_do_nothing(
            index_elements=["alias", "completion_id"]
        )

        async def transaction() -> None:
            # Insert-or-nothing, not read-then-insert: a row another writer added meanwhile
            # stays as it is (a side once taken is for good) instead of failing the write.
            async with self.db.transaction() as session:
                await session.execute(insert, values)

        await retry_conflicts(transaction, "dataset split")

    # -- runs --------------------------------------------------------------------------
    async def start_run(self, alias: str, trigger: str, approved: int) -> int:
        async with self.db.transaction() as session:
            run = TrainingRun(
                alias=alias,
                state="running",
                trigger=trigger,
                worker=WORKER_ID,
                approved_examples=approved,
            )
            session.add(run)
            await session.flush()
            return int(run.id)

    async def update_run(self, run_id: int, **values: Any) -> None:
        async with self.db.transaction() as session:
            await session.execute(
                update(TrainingRun)
                .where(TrainingRun.id == run_id)
                .values(heartbeat_at=utcnow(), **values)
            )

    async def finish_run(self, run_id: int, state: str, **values: Any) -> None:
        await self.update_run(run_id, state=state, finished_at=utcnow(), **values)

    async def fail_stale_runs(self, alias: str) -> int:
        """Mark runs left ``running`` by a crashed worker as failed.

        Called with the alias's training lock held, so no live worker owns any of them.
        """
        async with self.db.transaction() as session:
            result = await session.execute(
                update(TrainingRun)
                .where(TrainingRun.alias == alias, TrainingRun.state == "running")
                .values(state="failed", error="worker died mid-run", finished_at=utcnow())
            )
            return int(getattr(result, "rowcount", 0) or 0)

    async def runs(self, alias: str | None = None, limit: int = 20) -> list[TrainingRun]:
        query = select(TrainingRun).order_by(TrainingRun.id.desc()).limit(limit)
        if alias is not None:
            query = query.where(TrainingRun.alias == alias)
        async with self.db.sessions() as session:
            return list(await session.scalars(query))

    async def last_finished(self, alias: str) -> TrainingRun | None:
        query = (
            select(TrainingRun)
            .where(TrainingRun.alias == alias, TrainingRun.state != "running")
            .order_by(TrainingRun.id.desc())
            .limit(1)
        )
        async with self.db.sessions() as session:
            run: TrainingRun | None = await session.scalar(query)
            return run

    async def monitor_triggers(self, alias: str) -> list[str]:
        """What the alias's latest monitor report asks training for (empty: nothing)."""
        query = (
            select(MonitorReport.triggers)
            .where(MonitorReport.alias == alias)
            .order_by(MonitorReport.id.desc())
            .limit(1)
        )
        async with self.db.sessions() as session:
            triggers = list(await session.scalar(query) or [])
        if await self.degraded(alias):
            triggers.append("degraded")
        return triggers

    # -- scheduled re-evaluation ------------------------------------------------------
    async def add_eval_scores(self, rows: list[EvalScore]) -> None:
        async with self.db.transaction() as session:
            session.add_all(rows)

    async def eval_history(self, alias: str, limit: int = 50) -> list[EvalScore]:
        query = (
            select(EvalScore)
            .where(EvalScore.alias == alias)
            .order_by(EvalScore.id.desc())
            .limit(limit)
        )
        async with self.db.sessions() as session:
            return list(await session.scalars(query))

    async def first_eval_accuracy(self, alias: str, version: str) -> float | None:
        query = (
            select(EvalScore.holdout_accuracy)
            .where(EvalScore.alias == alias, EvalScore.version == version)
            .order_by(EvalScore.id)
            .limit(1)
        )
        async with self.db.sessions() as session:
            return await session.scalar(query)

    async def degraded(self, alias: str) -> bool:
        """Whether the alias's newest re-evaluation found a serving version degraded."""
        last = select(func.max(EvalScore.computed_at)).where(EvalScore.alias == alias)
        query = select(func.count()).where(
            EvalScore.alias == alias,
            EvalScore.computed_at == last.scalar_subquery(),
            EvalScore.degraded.is_(True),
        )
        async with self.db.sessions() as session:
            return bool(await session.scalar(query))

    async def last_eval_at(self) -> datetime | None:
        async with self.db.sessions() as session:
            return await session.scalar(select(func.max(EvalScore.computed_at)))
