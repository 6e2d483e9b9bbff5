"""Feedback on served completions: thumbs, stars, corrections and flags.

Idempotent per completion and API key: posting again updates the earlier verdict. A key may
only rate its own completions (admin keys may rate any, for operator flags).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from sqlalchemy import select

from gateway.errors import InvalidRequest, NotFound
from gateway.flagging import Flagger, alias_of
from gateway.metrics import GatewayMetrics
from gateway.store.conversations import ConversationLog
from gateway.store.db import Database
from gateway.store.keys import Principal
from gateway.store.tables import Conversation, Feedback, utcnow

Polarity = Literal["positive", "negative", "neutral"]


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


class FeedbackService:
    def __init__(
        self,
        db: Database,
        conversations: ConversationLog,
        metrics: GatewayMetrics,
        flagger: Flagger | None = None,
    ) -> None:
        self.db = db
        self.conversations = conversations
        self.metrics = metrics
        self.flagger = flagger

    async def submit(self, data: FeedbackIn, principal: Principal) -> dict[str, object]:
        if data.score is None and not (data.correction or data.flag or data.comment):
            raise InvalidRequest("give a score, a correction, a flag or a comment")
        polarity = data.polarity()
        conversation = await self._conversation(data.completion_id, principal)
        key_id = principal.key_id or ""
        async with self.db.transaction() as session:
            row = await session.scalar(
                select(Feedback).where(
                    Feedback.completion_id == data.completion_id, Feedback.api_key_id == key_id
                )
            )
            created = row is None
            if row is None:
                row = Feedback(completion_id=data.completion_id, api_key_id=key_id,
                               served_model=conversation.served_model)  # fmt: skip
                session.add(row)
            row.score, row.polarity, row.correction = data.score, polarity, data.correction
            row.flag, row.comment, row.updated_at = data.flag, data.comment, utcnow()
        if created and polarity is not None:
            alias = alias_of(conversation.requested_model, conversation.served_model)
            self.metrics.feedback.labels(alias, conversation.served_model, polarity).inc()
        flagged = await self._flag(conversation, data, polarity, principal)
        return {"completion_id": data.completion_id, "model": conversation.served_model,
                "polarity": polarity, "created": created, "flagged": flagged}  # fmt: skip

    async def _flag(
        self,
        conversation: Conversation,
        data: FeedbackIn,
        polarity: Polarity | None,
        principal: Principal,
    ) -> list[str]:
        if self.flagger is None:
            return []
        flags = self.flagger.feedback_flags(
            conversation, polarity=polarity, correction=data.correction, flag=data.flag,
            by_admin=principal.scope == "admin",
        )  # fmt: skip
        if flags:
            await self.flagger.add(flags, data.correction)
        return [flag.reason for flag in flags]

    async def _conversation(self, completion_id: str, principal: Principal) -> Conversation:
        row = await self.conversations.get(completion_id)
        if row is None:
            # The row may still sit in this gateway's write queue.
            await self.conversations.flush()
            row = await self.conversations.get(completion_id)
        if row is None or (principal.scope != "admin" and row.api_key_id != principal.key_id):
            # Someone else's completion is reported exactly like a missing one.
            raise NotFound(f"No completion '{completion_id}'.", param="completion_id",
                           code="completion_not_found")  # fmt: skip
        return row
