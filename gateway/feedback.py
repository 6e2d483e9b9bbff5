"""Feedback on served completions: thumbs, stars, corrections and flags.

Idempotent per completion and API key: posting again updates the earlier verdict. A key may
only rate its own completions (admin keys may rate any, for operator flags).

While the database is unavailable, feedback is journaled (see core.store.journal) and
answered ``queued``; it is applied, checks included, when the database answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError

from core.errors import StoreBusy
from core.store.conversations import ConversationLog
from core.store.db import UNAVAILABLE, Database, retry_conflicts, storable_text
from core.store.journal import Journal, Ticket
from core.store.keys import Principal
from core.store.tables import Conversation, Feedback, utcnow
from gateway.errors import GatewayError, InvalidRequest, NotFound
from gateway.flagging import Flag, Flagger, alias_of
from gateway.metrics import GatewayMetrics

log = logging.getLogger("loragate.feedback")

Polarity = Literal["positive", "negative", "neutral"]
# What leaves queued feedback in the queue, to be applied on a later try.
_LATER: tuple[type[BaseException], ...] = (*UNAVAILABLE, StoreBusy)


class FeedbackIn(msgspec.Struct, forbid_unknown_fields=False):
    completion_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    score: int | None = None
    # "thumbs": -1 or 1. "stars": 1..5, where 1-2 are negative, 3 neutral and 4-5 positive.
    scale: Literal["thumbs", "stars"] = "thumbs"
    correction: Annotated[str, msgspec.Meta(max_length=32_768)] | None = None
    flag: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    comment: Annotated[str, msgspec.Meta(max_length=4096)] | None = None

    def polarity(self) -> Polarity | None:
        if self.score is None:
            return "negative" if self.correction or self.flag else None
        if self.scale == "thumbs":
            if self.score not in (-1, 1):
                raise InvalidRequest("score must be -1 or 1 on the thumbs scale", param="score")
            return "positive" if self.score == 1 else "negative"
        if not 1 <= self.score <= 5:
            raise InvalidRequest("score must be 1..5 on the stars scale", param="score")
        return "positive" if self.score >= 4 else "negative" if self.score <= 2 else "neutral"


@dataclass
class _Queued:
    data: FeedbackIn
    principal: Principal
    ticket: Ticket | None = None


class FeedbackService:
    def __init__(
        self,
        db: Database,
        conversations: ConversationLog,
        metrics: GatewayMetrics,
        flagger: Flagger | None = None,
        journal: Journal | None = None,
        retry_s: float = 2.0,
    ) -> None:
        self.db = db
        self.conversations = conversations
        self.metrics = metrics
        self.flagger = flagger
        self.journal = journal
        self.retry_s = retry_s
        self._queued: list[_Queued] = []
        self._retrier: asyncio.Task[None] | None = None

    async def submit(self, data: FeedbackIn, principal: Principal) -> dict[str, Any]:
        if data.score is None and not (data.correction or data.flag or data.comment):
            raise InvalidRequest("give a score, a correction, a flag or a comment")
        polarity = data.polarity()
        try:
            return await self._apply(data, principal)
        except UNAVAILABLE as exc:
            if self.journal is None:
                raise
            try:
                await self._queue(data, principal, str(exc).splitlines()[0])
            except OSError:
                raise exc from None  # nowhere to keep it: the client must retry
            return {"completion_id": data.completion_id, "model": None, "polarity": polarity,
                    "created": None, "flagged": [], "queued": True}  # fmt: skip
        except SQLAlchemyError as exc:
            # Refused for another reason: not acknowledged, so the client is told to send it
            # again (not a bare 500), and it is logged whole so an operator can recover it.
            log.error("feedback not recorded", extra={
                **_to_entry(data, principal), "error": str(exc).splitlines()[0]})  # fmt: skip
            raise StoreBusy("The store did not record this feedback; send it again.") from exc

    async def replay(self, entries: list[dict[str, Any]]) -> int:
        """Apply feedback a dead gateway journaled; returns how many were applied."""
        applied = 0
        for entry in entries:
            queued = _from_entry(entry)
            applied += await self._apply_queued(queued)
        return applied

    def start(self) -> None:
        self._retrier = asyncio.create_task(self._retry_forever(), name="feedback-retry")

    async def close(self) -> None:
        if self._retrier is not None:
            self._retrier.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retrier

    async def _apply(self, data: FeedbackIn, principal: Principal) -> dict[str, Any]:
        polarity = data.polarity()
        conversation = await self._conversation(data.completion_id, principal)
        flags = self._flags(conversation, data, polarity, principal)
        created = await retry_conflicts(
            lambda: self._write(data, principal, conversation, polarity, flags), "feedback"
        )
        if created and polarity is not None:
            alias = alias_of(conversation.requested_model, conversation.served_model)
            self.metrics.feedback.labels(alias, conversation.served_model, polarity).inc()
        if self.flagger is not None:
            self.flagger.announce(flags)
        return {"completion_id": data.completion_id, "model": conversation.served_model,
                "polarity": polarity, "created": created,
                "flagged": [flag.reason for flag in flags], "queued": False}  # fmt: skip

    async def _write(
        self,
        data: FeedbackIn,
        principal: Principal,
        conversation: Conversation,
        polarity: Polarity | None,
        flags: list[Flag],
    ) -> bool:
        """The key's verdict and the review items it flags, in one transaction: both are
        written or neither is. True when the verdict is new, not an update of an earlier one."""
        key = {"completion_id": data.completion_id, "api_key_id": principal.key_id or ""}
        verdict = {"score": data.score, "polarity": polarity,
                   "correction": storable_text(data.correction), "flag": storable_text(data.flag),
                   "comment": storable_text(data.comment), "updated_at": utcnow()}  # fmt: skip
        # Insert-or-nothing, then update: after the first statement the row exists whoever
        # made it (a double click, a retrying client), and whether it was ours says if the
        # verdict is new (counted once).
        new = self.db.insert(Feedback).values(
            **key, **verdict, served_model=conversation.served_model
        )
        async with self.db.transaction() as session:
            created = await session.scalar(
                new.on_conflict_do_nothing(index_elements=list(key)).returning(Feedback.id)
            )
            if created is None:
                await session.execute(update(Feedback).filter_by(**key).values(**verdict))
            if self.flagger is not None:
                await self.flagger.write(session, flags, data.correction)
        return created is not None

    async def _queue(self, data: FeedbackIn, principal: Principal, error: str) -> None:
        """Journal the feedback (durably: the client is told it was accepted) for later."""
        assert self.journal is not None
        ticket = self.journal.append("feedback", _to_entry(data, principal))
        await self.journal.sync()
        self._queued.append(_Queued(data, principal, ticket))
        log.warning("store unavailable; feedback queued",
                    extra={"queued": len(self._queued), "error": error})  # fmt: skip

    async def _retry_forever(self) -> None:
        while True:
            await asyncio.sleep(self.retry_s)
            while self._queued:
                queued = self._queued[0]
                try:
                    await self._apply_queued(queued)
                except _LATER:
                    break  # still down or busy: try again later, in the same order
                self._queued.pop(0)
                if queued.ticket is not None and self.journal is not None:
                    self.journal.settle(queued.ticket)

    async def _apply_queued(self, queued: _Queued) -> int:
        """1 when applied; 0 when its checks refuse it now (logged whole, not retried)."""
        try:
            await self._apply(queued.data, queued.principal)
        except StoreBusy:
            raise  # acknowledged already: kept and tried again, never dropped
        except GatewayError as exc:
            log.error("queued feedback refused", extra={
                "completion_id": queued.data.completion_id, "error": exc.message})  # fmt: skip
            return 0
        return 1

    def _flags(
        self,
        conversation: Conversation,
        data: FeedbackIn,
        polarity: Polarity | None,
        principal: Principal,
    ) -> list[Flag]:
        if self.flagger is None:
            return []
        return self.flagger.feedback_flags(
            conversation, polarity=polarity, correction=data.correction, flag=data.flag,
            by_admin=principal.scope == "admin",
        )  # fmt: skip

    async def _conversation(self, completion_id: str, principal: Principal) -> Conversation:
        row = await self.conversations.find(completion_id)
        if row is None or (principal.scope != "admin" and row.api_key_id != principal.key_id):
            # Someone else's completion is reported exactly like a missing one.
            raise NotFound(f"No completion '{completion_id}'.", param="completion_id",
                           code="completion_not_found")  # fmt: skip
        return row


def _to_entry(data: FeedbackIn, principal: Principal) -> dict[str, Any]:
    return {"feedback": msgspec.to_builtins(data), "key_id": principal.key_id,
            "scope": principal.scope}  # fmt: skip


def _from_entry(entry: dict[str, Any]) -> _Queued:
    data = msgspec.convert(entry["feedback"], FeedbackIn)
    return _Queued(data, Principal(key_id=entry["key_id"], scope=entry["scope"]))
