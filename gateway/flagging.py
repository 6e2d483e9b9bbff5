"""Flagging rules: which served completions go to the review queue, and why.

Two moments decide. When a completion has been written to the log, the conversation rules
look at it (low groundedness, "I don't know" despite good sources, a retry of the same turn).
When feedback arrives, the feedback rules do (negative verdict, correction, operator flag).
Every flag records its reason; a completion flagged twice is still one review item.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.registry import version_alias
from gateway.settings import FlagRules
from gateway.store.conversations import ConversationRecord
from gateway.store.db import Database, storable_text
from gateway.store.tables import Conversation, ReviewItem, utcnow

log = logging.getLogger("loragate.flagging")

REASONS = (
    "negative_feedback",
    "correction",
    "operator_flag",
    "low_groundedness",
    "idk_with_sources",
    "retry",
)
_IDK = re.compile(
    r"\b(i (?:do not|don't|dont) know|i'?m not sure|i am not sure|i cannot (?:find|answer)"
    r"|i can't (?:find|answer)|no information|not (?:mentioned|provided|stated) in the sources"
    r"|the sources do not (?:say|contain|mention))\b",
    re.IGNORECASE,
)
_RECENT_TURNS = 20  # earlier turns of a conversation looked at for a retry


@dataclass(frozen=True)
class Flag:
    completion_id: str
    alias: str
    served_model: str
    reason: str
    detail: dict[str, Any]


def alias_of(requested_model: str, served_model: str) -> str:
    """The alias a completion belongs to: its version's alias, else what was asked for."""
    return version_alias(served_model) or version_alias(requested_model) or requested_model


def says_idk(answer: str) -> bool:
    return bool(_IDK.search(answer))


def last_user_text(request: dict[str, Any]) -> str:
    for message in reversed(request.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else str(content)
    return ""


class Flagger:
    def __init__(
        self,
        db: Database,
        default_rules: FlagRules,
        rules_by_alias: dict[str, FlagRules] | None = None,
        trust_corrections: bool = False,
        on_flag: Callable[[str], None] | None = None,
    ) -> None:
        self.db = db
        self.default_rules = default_rules
        self.rules_by_alias = rules_by_alias or {}
        self.trust_corrections = trust_corrections
        self.on_flag = on_flag  # called with the reason of every new flag (metrics)

    def rules(self, alias: str) -> FlagRules:
        return self.rules_by_alias.get(alias, self.default_rules)

    # -- conversation rules ----------------------------------------------------------
    def conversation_flags(self, record: ConversationRecord) -> list[Flag]:
        """Rules that need only the record itself (the retry rule needs the store)."""
        if record.status != "ok" or not record.response:
            return []
        alias = alias_of(record.requested_model, record.served_model)
        rules, flags = self.rules(alias), []
        answer = record.response[0].get("content") or ""

        def flag(reason: str, **detail: Any) -> None:
            flags.append(Flag(record.id, alias, record.served_model, reason, detail))

        threshold = rules.groundedness_below
        grounded = record.groundedness
        if threshold is not None and grounded is not None and grounded < threshold:
            flag("low_groundedness", groundedness=record.groundedness, threshold=threshold)
        min_score = rules.idk_min_source_score
        top = record.top_score
        if min_score is not None and top is not None and top >= min_score and says_idk(answer):
            flag("idk_with_sources", top_score=record.top_score, threshold=min_score)
        return flags

    async def examine(self, records: Sequence[ConversationRecord]) -> None:
        """Called once the records are committed: apply every conversation rule."""
        flags = [flag for record in records for flag in self.conversation_flags(record)]
        for record in records:
            retried = await self._retried_turn(record)
            if retried is not None:
                flags.append(retried)
        if flags:
            await self.add(flags)

    async def _retried_turn(self, record: ConversationRecord) -> Flag | None:
        """The same user turn asked again in the same conversation flags the earlier answer."""
        if not record.conversation_id or record.status != "ok":
            return None
        alias = alias_of(record.requested_model, record.served_model)
        if not self.rules(alias).retry:
            return None
        question = last_user_text(record.request)
        async with self.db.sessions() as session:
            earlier = list(
                await session.scalars(
                    select(Conversation)
                    .where(
                        Conversation.conversation_id == record.conversation_id,
                        Conversation.id != record.id,
                        Conversation.status == "ok",
                    )
                    .order_by(Conversation.created_at.desc())
                    .limit(_RECENT_TURNS)
                )
            )
        for row in earlier:
            turns = len(row.request.get("messages") or [])
            if last_user_text(row.request) == question and turns == len(
                record.request.get("messages") or []
            ):
                return Flag(row.id, alias, row.served_model, "retry", {"retried_by": record.id})
        return None

    # -- feedback rules --------------------------------------------------------------
    def feedback_flags(
        self,
        row: Conversation,
        *,
        polarity: str | None,
        correction: str | None,
        flag: str | None,
        by_admin: bool,
    ) -> list[Flag]:
        alias = alias_of(row.requested_model, row.served_model)
        rules, flags = self.rules(alias), []

        def add(reason: str, **detail: Any) -> None:
            flags.append(Flag(row.id, alias, row.served_model, reason, detail))

        if correction and rules.correction:
            add("correction")
        elif polarity == "negative" and rules.negative_feedback:
            add("negative_feedback")
        if flag and by_admin and rules.operator_flag:
            add("operator_flag", flag=flag)
        return flags

    # -- the queue ------------------------------------------------------------------
    async def add(self, flags: Sequence[Flag], correction: str | None = None) -> None:
        """Create or extend review items; a trusted correction is approved at once."""
        async with self.db.transaction() as session:
            for flag in flags:
                await self._add_one(session, flag, correction)
        for flag in flags:
            if self.on_flag is not None:
                self.on_flag(flag.reason)
            log.info(
                "completion flagged",
                extra={
                    "completion_id": flag.completion_id,
                    "alias": flag.alias,
                    "reason": flag.reason,
                },
            )

    async def _add_one(self, session: AsyncSession, flag: Flag, correction: str | None) -> None:
        item = await session.scalar(
            select(ReviewItem).where(ReviewItem.completion_id == flag.completion_id)
        )
        entry = {"reason": flag.reason, "detail": flag.detail, "at": utcnow().isoformat()}
        if item is None:
            item = ReviewItem(
                completion_id=flag.completion_id,
                alias=flag.alias,
                served_model=flag.served_model,
                reasons=[],
                state="pending",
            )
            session.add(item)
        if flag.reason not in {reason["reason"] for reason in item.reasons}:
            item.reasons = [*item.reasons, entry]
        if correction is not None and item.state == "pending":
            item.correction = storable_text(correction)
            if self.trust_corrections:
                item.state, item.reviewer, item.decided_at = "approved", "trusted-user", utcnow()
