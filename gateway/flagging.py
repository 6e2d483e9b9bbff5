"""Flagging rules: which served completions go to the review queue, and why.

Two moments decide. When a completion has been written to the log, the conversation rules
look at it (low groundedness, "I don't know" despite good sources, a retry of the same turn).
When feedback arrives, the feedback rules do (negative verdict, correction, operator flag).
Every flag records its reason; a completion flagged twice is still one review item.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, case, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import Executable
from sqlalchemy.sql.base import ReadOnlyColumnCollection

from adapters.registry import version_alias
from core.answers import says_idk
from core.sections import FlagRules
from core.store.conversations import ConversationRecord
from core.store.db import Database, retry_conflicts, storable_text
from core.store.tables import Conversation, ReviewItem, utcnow
from retrieval.grounding import asked_question

log = logging.getLogger("loragate.flagging")

REASONS = (
    "negative_feedback",
    "correction",
    "operator_flag",
    "low_groundedness",
    "idk_with_sources",
    "retry",
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


def last_user_text(request: dict[str, Any]) -> str:
    """The user's last question, without the sources the gateway put next to it (they may
    differ between two askings of the same question)."""
    for message in reversed(request.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content")
            return asked_question(content) if isinstance(content, str) else str(content)
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
        """The same user turn asked again in the same conversation flags the earlier answer.

        A conversation is its key's own: another key reusing the id starts its own, so it
        cannot flag someone else's answer as retried."""
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
                        Conversation.api_key_id == record.api_key_id,  # IS NULL with auth off
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

        async def transaction() -> None:
            async with self.db.transaction() as session:
                await self.write(session, flags, correction)

        await retry_conflicts(transaction, "flag")
        self.announce(flags)

    async def write(
        self, session: AsyncSession, flags: Sequence[Flag], correction: str | None = None
    ) -> None:
        """Upsert the flags' review items in the caller's transaction (``add`` without the
        commit, for a caller that writes more in the same transaction)."""
        # One lock order for every writer, so two transactions flagging the same completions
        # cannot deadlock on PostgreSQL (the sort keeps each completion's reasons in order).
        for flag in sorted(flags, key=lambda flag: flag.completion_id):
            await session.execute(self._upsert(flag, correction))

    def announce(self, flags: Sequence[Flag]) -> None:
        """Count and log flags once they are committed."""
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

    def _upsert(self, flag: Flag, correction: str | None) -> Executable:
        """One statement, so no other writer can come between a check and its insert: the
        item is created, or the existing one gains the reason (once) and, while it is
        pending, the newest correction (and a trusted one's approval)."""
        entry = {"reason": flag.reason, "detail": flag.detail, "at": utcnow().isoformat()}
        trusted = correction is not None and self.trust_corrections
        insert = self.db.insert(ReviewItem).values(
            completion_id=flag.completion_id,
            alias=flag.alias,
            served_model=flag.served_model,
            reasons=[entry],
            correction=storable_text(correction),
            state="approved" if trusted else "pending",
            reviewer="trusted-user" if trusted else None,
            decided_at=utcnow() if trusted else None,
        )
        return insert.on_conflict_do_update(
            index_elements=[ReviewItem.completion_id],
            set_=_merge(insert.excluded, self.db.is_sqlite),
        )


# The existing item's reasons with the new one (the insert's only entry) appended, unless a
# reason of that name is there already. JSON is merged in SQL, inside the upsert, because a
# merge read into Python and written back is the race this replaces.
_MERGE_REASONS_SQLITE = """CASE WHEN EXISTS (
    SELECT 1 FROM json_each(review_items.reasons) AS r
    WHERE json_extract(r.value, '$.reason') = json_extract(excluded.reasons, '$[0].reason'))
  THEN review_items.reasons
  ELSE json_insert(review_items.reasons, '$[#]', json(json_extract(excluded.reasons, '$[0]')))
END"""
_MERGE_REASONS_POSTGRESQL = """CASE WHEN EXISTS (
    SELECT 1 FROM json_array_elements(review_items.reasons) AS r(value)
    WHERE r.value ->> 'reason' = excluded.reasons -> 0 ->> 'reason')
  THEN review_items.reasons
  ELSE (review_items.reasons::jsonb || excluded.reasons::jsonb)::json
END"""


def _merge(new: ReadOnlyColumnCollection[str, ColumnElement[Any]], sqlite: bool) -> dict[str, Any]:
    """SET of the upsert: ``review_items.*`` is the item as stored, ``new`` the insert's row.

    A decided item's state, reviewer, decision time and correction never change: the
    operator decided on what they saw (and the trainer may have used it already)."""
    old = ReviewItem.__table__.c
    pending = old.state == "pending"
    decides = and_(pending, new.state != "pending")  # a trusted correction approves at once
    reasons = _MERGE_REASONS_SQLITE if sqlite else _MERGE_REASONS_POSTGRESQL
    return {
        "reasons": literal_column(reasons),
        "correction": case(
            (and_(pending, new.correction.is_not(None)), new.correction), else_=old.correction
        ),
        "state": case((pending, new.state), else_=old.state),
        "reviewer": case((decides, new.reviewer), else_=old.reviewer),
        "decided_at": case((decides, new.decided_at), else_=old.decided_at),
    }
