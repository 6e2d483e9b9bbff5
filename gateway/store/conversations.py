"""The conversation log: one row per served chat completion.

Rows are written whole, once the request has ended (ok, error or cancelled), by a background
writer, so the database is off the request's hot path and a client that goes away cannot
interrupt a half-done write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError

from gateway.store.db import Database
from gateway.store.tables import Conversation

log = logging.getLogger("loragate.store")

Status = Literal["ok", "error", "cancelled"]


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


class ConversationLog:
    """Queue of finished records and the task that writes them in batches."""

    def __init__(self, db: Database, *, batch_size: int = 64, retry_s: float = 1.0) -> None:
        self.db = db
        self.batch_size = batch_size
        self.retry_s = retry_s
        self._queue: asyncio.Queue[ConversationRecord] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._listeners: list[Callable[[list[ConversationRecord]], Awaitable[None]]] = []

    def on_written(self, listener: Callable[[list[ConversationRecord]], Awaitable[None]]) -> None:
        """Call ``listener(batch)`` after each committed batch (the flagging rules listen)."""
        self._listeners.append(listener)

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write_forever(), name="conversation-writer")

    def record(self, record: ConversationRecord) -> None:
        """Hand a finished record over; never blocks and cannot be cancelled half-way."""
        self._queue.put_nowait(record)

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
            batch = [await self._queue.get()]
            while len(batch) < self.batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            if await self._write_until_done(batch):
                await self._notify(batch)
            for _ in batch:
                self._queue.task_done()

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
                    session.add_all(Conversation(**asdict(record)) for record in batch)
                return True
            except (OperationalError, InterfaceError, OSError) as exc:
                # Keep the rows in memory and retry: a short database outage loses nothing.
                log.error(
                    "conversation write failed; retrying",
                    extra={"rows": len(batch), "error": str(exc).splitlines()[0]},
                )
                await asyncio.sleep(self.retry_s)
            except SQLAlchemyError as exc:
                # A row the database refuses (say a duplicate id) will not get better by
                # retrying; log it whole so nothing is silently dropped, and move on.
                log.error(
                    "conversation rows refused",
                    extra={"ids": [record.id for record in batch], "error": str(exc)},
                )
                return False

    # -- reads ---------------------------------------------------------------------
    async def get(self, completion_id: str) -> Conversation | None:
        async with self.db.sessions() as session:
            return await session.get(Conversation, completion_id)

    async def count(self, status: Status | None = None) -> int:
        query = select(func.count()).select_from(Conversation)
        if status is not None:
            query = query.where(Conversation.status == status)
        async with self.db.sessions() as session:
            return int(await session.scalar(query) or 0)
