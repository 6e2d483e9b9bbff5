"""The conversation log: one row per served chat completion (text completions and Responses
API responses too, in the same shape).

Rows are written whole, once the request has ended (ok, error or cancelled), by a background
writer, so the database is off the request's hot path and a client that goes away cannot
interrupt a half-done write. Each record goes to the local journal first, so a database
outage or a killed gateway loses nothing: the writer retries, and the next gateway to start
replays what a dead one left (``replay``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from sqlalchemy import func, insert, select
from sqlalchemy.exc import SQLAlchemyError

from core.store.db import UNAVAILABLE, Database, storable_text
from core.store.journal import Journal, Ticket
from core.store.tables import Conversation

log = logging.getLogger("loragate.store")

Status = Literal["ok", "error", "cancelled"]
# Rows go in through the table itself: the ORM's bulk path cost twice the CPU for nothing.
_CONVERSATIONS = Conversation.metadata.tables[Conversation.__tablename__]


@dataclass
class ConversationRecord:
    id: str
    requested_model: str
    served_model: str
    stream: bool
    request: dict[str, Any]
    conversation_id: str | None = None
    api_key_id: str | None = None
    status: Status = "ok"
    error: str | None = None
    response: list[dict[str, Any]] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    context: list[int] | None = None
    groundedness: float | None = None
    top_score: float | None = None  # best retrieval score, for the "I don't know" rule
    experiment_id: int | None = None
    arm: str | None = None


class ConversationLog:
    """Queue of finished records and the task that writes them in batches."""

    def __init__(
        self,
        db: Database,
        journal: Journal | None = None,
        *,
        batch_size: int = 64,
        linger_s: float = 0.02,
        retry_s: float = 1.0,
    ) -> None:
        self.db = db
        self.journal = journal
        self.batch_size = batch_size
        self.linger_s = linger_s
        self.retry_s = retry_s
        self._queue: asyncio.Queue[tuple[ConversationRecord, Ticket | None]] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._listeners: list[Callable[[list[ConversationRecord]], Awaitable[None]]] = []

    def on_written(self, listener: Callable[[list[ConversationRecord]], Awaitable[None]]) -> None:
        """Call ``listener(batch)`` after each committed batch (the flagging rules listen)."""
        self._listeners.append(listener)

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write_forever(), name="conversation-writer")

    def record(self, record: ConversationRecord) -> None:
        """Hand a finished record over; never blocks and cannot be cancelled half-way.

        It is in the journal when this returns; ``durable()`` waits for the disk as well.
        """
        ticket = None
        if self.journal is not None:
            try:
                # vars(), not asdict(): serialised at once, so no deep copy on the hot path.
                ticket = self.journal.append("conversation", vars(record))
            except OSError as exc:
                # A full disk must not stop chat: the row still goes to the database, it
                # just loses its crash insurance meanwhile.
                log.error("journal append failed; row kept in memory only",
                          extra={"completion_id": record.id, "error": str(exc)})  # fmt: skip
        self._queue.put_nowait((record, ticket))

    async def durable(self) -> None:
        """Wait until every record handed over survives a crash (call before acknowledging)."""
        if self.journal is not None:
            await self.journal.sync()

    async def flush(self) -> None:
        """Wait until everything recorded so far is committed."""
        await self._queue.join()

    async def close(self) -> None:
        if self._writer is None:
            return
        await self.flush()
        self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer

    async def _write_forever(self) -> None:
        while True:
            queued = [await self._queue.get()]
            if self._queue.qsize() < self.batch_size - 1:
                # Let the requests finishing meanwhile share this transaction: one write per
                # request cost more CPU than the request's own bookkeeping at low load. The
                # rows are in the journal already, so the wait risks nothing.
                await asyncio.sleep(self.linger_s)
            while len(queued) < self.batch_size and not self._queue.empty():
                queued.append(self._queue.get_nowait())
            batch = [record for record, _ in queued]
            if await self._write_until_done(batch):
                await self._notify(batch)
            for _, ticket in queued:
                if ticket is not None and self.journal is not None:
                    self.journal.settle(ticket)
                self._queue.task_done()

    async def replay(self, records: list[ConversationRecord]) -> int:
        """Write the journaled records the database lacks (left by a dead gateway)."""
        ids = [record.id for record in records]
        async with self.db.sessions() as session:
            present = set(await session.scalars(select(Conversation.id).where(
                Conversation.id.in_(ids))))  # fmt: skip
        missing = [record for record in records if record.id not in present]
        for start in range(0, len(missing), self.batch_size):
            batch = missing[start : start + self.batch_size]
            if await self._write_until_done(batch):
                await self._notify(batch)
        return len(missing)

    async def _notify(self, batch: list[ConversationRecord]) -> None:
        for listener in self._listeners:
            try:
                await listener(batch)
            except Exception:
                # A listener's failure must not stop the log; the rows are already safe.
                log.exception("conversation listener failed")

    async def _write_until_done(self, batch: list[ConversationRecord]) -> bool:
        while True:
            try:
                async with self.db.transaction() as session:
                    # One executemany, not ORM objects: the unit of work cost more CPU than
                    # the rest of a request's bookkeeping together (py-spy, bench/overhead.py).
                    rows = [_storable(record) for record in batch]
                    await session.execute(insert(_CONVERSATIONS), rows)
                return True
            except UNAVAILABLE as exc:
                # Keep the rows in memory and retry: a short database outage loses nothing.
                log.error(
                    "conversation write failed; retrying",
                    extra={"rows": len(batch), "error": str(exc).splitlines()[0]},
                )
                await asyncio.sleep(self.retry_s)
            except SQLAlchemyError as exc:
                if len(batch) > 1:
                    # One bad row must not take its batch with it: write them one by one.
                    written = [await self._write_until_done([record]) for record in batch]
                    return any(written)
                # A row the database refuses (say a duplicate id) will not get better by
                # retrying; log it whole so nothing is silently dropped, and move on.
                log.error("conversation row refused",
                          extra={"record": asdict(batch[0]), "error": str(exc)})  # fmt: skip
                return False

    # -- reads ---------------------------------------------------------------------
    async def get(self, completion_id: str) -> Conversation | None:
        async with self.db.sessions() as session:
            return await session.get(Conversation, completion_id)

    async def find(self, completion_id: str) -> Conversation | None:
        """Like ``get``, but also sees a row still waiting in this gateway's write queue: a
        client may act on a completion (feedback, a flag) before its batch is committed."""
        row = await self.get(completion_id)
        if row is None:
            await self.flush()
            row = await self.get(completion_id)
        return row

    async def count(self, status: Status | None = None) -> int:
        query = select(func.count()).select_from(Conversation)
        if status is not None:
            query = query.where(Conversation.status == status)
        async with self.db.sessions() as session:
            return int(await session.scalar(query) or 0)


def _storable(record: ConversationRecord) -> dict[str, Any]:
    """The row's columns, with NUL out of the plain text ones (JSON columns keep it escaped)."""
    row = asdict(record)
    for name, value in row.items():
        if isinstance(value, str):
            row[name] = storable_text(value)
    return row
