"""The review queue: flagged completions, pending → approved | rejected, by an operator.

Approving is what turns a flagged conversation into a training example: with the
(possibly edited) correction as the reply to learn, or with no correction when the answer as
served was judged good. Rejected items never reach the trainer.

A pending item's correction changes whenever its user posts a newer one, so a decision names
the ``revision`` of the item it was made on (every card carries it) and is refused with 409
``review_item_changed`` when the item is no longer that revision: an approval stores exactly
the text the reviewer saw. Without a revision, a decision is accepted only where nothing the
reviewer did not see can be stored: a rejection, or an approval that sends its own
correction.

A decided item is history: deciding it again is refused with 409 ``review_item_decided``
(an approved item could once be flipped to rejected and back). An admin who must change a
decision reopens the item first (``reopen``, logged with who, why and what it was), which
makes it pending again; whatever a past training run took from it stays in that run.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import ColumnElement, TextClause, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.store.conversations import ConversationLog
from core.store.db import Database, storable_text
from core.store.tables import Conversation, ReviewItem, utcnow
from gateway.errors import Conflict, InvalidRequest, NotFound
from gateway.flagging import REASONS, Flag, Flagger, alias_of

log = logging.getLogger("loragate.review")

State = Literal["pending", "approved", "rejected"]
STATES: tuple[State, ...] = ("pending", "approved", "rejected")
MAX_CORRECTION_CHARS = 32_768


@dataclass(frozen=True)
class ReviewFilter:
    state: str | None = None
    alias: str | None = None
    reason: str | None = None
    limit: int = 100
    offset: int = 0

    def check(self) -> ReviewFilter:
        if self.state is not None and self.state not in STATES:
            raise InvalidRequest(f"state must be one of {', '.join(STATES)}", param="state")
        if self.reason is not None and self.reason not in REASONS:
            raise InvalidRequest(f"reason must be one of {', '.join(REASONS)}", param="reason")
        if not 1 <= self.limit <= 1000:
            raise InvalidRequest("limit must be 1..1000", param="limit")
        if self.offset < 0:
            raise InvalidRequest("offset must be 0 or more", param="offset")
        return self


def revision(item: ReviewItem) -> str:
    """The item as a reviewer decides on it: its state and correction, hashed. Derived from
    the content, so no writer can forget to bump it (the flagging upsert is one SQL
    statement) and no column is needed; SHA-256 in full, because whoever posts corrections
    chooses both texts and must not find two with the same revision."""
    seen = json.dumps([item.id, item.state, item.correction], ensure_ascii=False)
    return hashlib.sha256(seen.encode()).hexdigest()


class ReviewQueue:
    def __init__(self, db: Database, flagger: Flagger, conversations: ConversationLog) -> None:
        self.db = db
        self.flagger = flagger
        self.conversations = conversations

    async def list(
        self, where: ReviewFilter, *, with_conversations: bool = False
    ) -> tuple[list[tuple[ReviewItem, Conversation | None]], int]:
        """The page of items asked for, each with its conversation if asked, and the total."""
        where.check()
        # Filtered, counted and paged in SQL: a queue flooded with items costs one page.
        conditions: list[ColumnElement[bool] | TextClause] = []
        if where.state:
            conditions.append(ReviewItem.state == where.state)
        if where.alias:
            conditions.append(ReviewItem.alias == where.alias)
        if where.reason:
            conditions.append(self._has_reason(where.reason))
        page_query = (
            select(ReviewItem).where(*conditions).order_by(ReviewItem.id)
            .offset(where.offset).limit(where.limit)
        )  # fmt: skip
        async with self.db.sessions() as session:
            total = int(await session.scalar(select(func.count()).where(*conditions)
                                             .select_from(ReviewItem)) or 0)  # fmt: skip
            page = list(await session.scalars(page_query))
        conversations = await self._conversations(page) if with_conversations else {}
        return [(item, conversations.get(item.completion_id)) for item in page], total

    def _has_reason(self, reason: str) -> TextClause:
        """The item's JSON list of reasons holds ``reason`` (each database its own way, as
        the flagging upsert does)."""
        sql = _HAS_REASON_SQLITE if self.db.is_sqlite else _HAS_REASON_POSTGRESQL
        return text(sql).bindparams(reason=reason)

    async def _conversations(self, items: Sequence[ReviewItem]) -> dict[str, Conversation]:
        ids = [item.completion_id for item in items]
        async with self.db.sessions() as session:
            rows = await session.scalars(select(Conversation).where(Conversation.id.in_(ids)))
            return {row.id: row for row in rows}

    async def show(self, item_id: int) -> tuple[ReviewItem, Conversation | None]:
        async with self.db.sessions() as session:
            item = await session.get(ReviewItem, item_id)
            if item is None:
                raise NotFound(f"No review item {item_id}.", param="id", code="review_not_found")
            conversation = await session.get(Conversation, item.completion_id)
        return item, conversation

    async def decide(
        self,
        item_id: int,
        state: Literal["approved", "rejected"],
        *,
        reviewer: str,
        seen: str | None = None,
        correction: str | None = None,
        note: str | None = None,
    ) -> ReviewItem:
        """Approve or reject the item as it was at revision ``seen``; an approval may replace
        the correction with an edited one. Raises ``Conflict`` if the item changed since."""
        _check_correction(correction)
        _check_named(state, seen, correction)
        async with self.db.transaction() as session:
            item = await session.get(ReviewItem, item_id, with_for_update=True)
            if item is None:
                raise NotFound(f"No review item {item_id}.", param="id", code="review_not_found")
            if item.state != "pending":
                raise _decided(item)
            if seen is not None and seen != revision(item):
                raise _changed(item)
            values: dict[str, Any] = {
                "state": state,
                "reviewer": reviewer,
                "note": storable_text(note),
                "decided_at": utcnow(),
            }
            if correction is not None:
                values["correction"] = storable_text(correction) or None
            await _update_unless_changed(session, item, values)
            decided = await session.get(ReviewItem, item_id, populate_existing=True)
        assert decided is not None  # updated just now, in this transaction
        return decided

    async def reopen(self, item_id: int, *, reviewer: str, note: str) -> ReviewItem:
        """Make a decided item pending again, so that it can be decided anew; logged."""
        async with self.db.transaction() as session:
            item = await session.get(ReviewItem, item_id)
            if item is None:
                raise NotFound(f"No review item {item_id}.", param="id", code="review_not_found")
            if item.state == "pending":
                raise Conflict(f"Review item {item_id} is pending already.", param="id",
                               code="review_item_pending")  # fmt: skip
            was = {"state": item.state, "reviewer": item.reviewer, "correction": item.correction}
            # Conditioned on the state just read, as decisions are (SQLite has no FOR UPDATE).
            changed = await session.execute(
                update(ReviewItem)
                .where(ReviewItem.id == item_id, ReviewItem.state == item.state)
                .values(state="pending", decided_at=None, reviewer=None,
                        note=storable_text(f"reopened by {reviewer}: {note}"))
                .execution_options(synchronize_session=False)
            )  # fmt: skip
            if not changed.rowcount:  # type: ignore[attr-defined]
                raise _changed(item)
            reopened = await session.get(ReviewItem, item_id, populate_existing=True)
        assert reopened is not None
        log.warning("review item reopened", extra={
            "item_id": item_id, "by": reviewer, "reason": note, "was_state": was["state"],
            "was_reviewer": was["reviewer"], "was_correction": was["correction"]})  # fmt: skip
        return reopened

    async def edit(self, item_id: int, correction: str, note: str | None = None) -> ReviewItem:
        """Change the correction while the item waits; decided items are history."""
        _check_correction(correction)
        values: dict[str, Any] = {"correction": storable_text(correction) or None}
        if note is not None:
            values["note"] = storable_text(note)
        async with self.db.transaction() as session:
            # The state is checked by the UPDATE itself: a decision committed after a read
            # would otherwise be overwritten on SQLite, which has no SELECT ... FOR UPDATE.
            changed = await session.execute(
                update(ReviewItem)
                .where(ReviewItem.id == item_id, ReviewItem.state == "pending")
                .values(**values)
            )
            item = await session.get(ReviewItem, item_id, populate_existing=True)
        if item is None:
            raise NotFound(f"No review item {item_id}.", param="id", code="review_not_found")
        if not changed.rowcount:  # type: ignore[attr-defined]
            raise InvalidRequest(
                f"Review item {item_id} is {item.state}; only pending items are edited.",
                param="id",
            )
        return item

    async def flag(self, completion_id: str, note: str, correction: str | None = None) -> int:
        """An operator flags a completion by hand (the ``operator_flag`` reason)."""
        _check_correction(correction)
        row = await self.conversations.find(completion_id)
        if row is None:
            raise NotFound(
                f"No completion '{completion_id}'.",
                param="completion_id",
                code="completion_not_found",
            )
        alias = alias_of(row.requested_model, row.served_model)
        await self.flagger.add(
            [Flag(completion_id, alias, row.served_model, "operator_flag", {"note": note})],
            correction,
        )
        async with self.db.sessions() as session:
            item_id = await session.scalar(
                select(ReviewItem.id).where(ReviewItem.completion_id == completion_id)
            )
        return int(item_id or 0)

    async def counts(self) -> dict[tuple[str, str], int]:
        """Items by (alias, state), for the queue-size gauge."""
        query = select(ReviewItem.alias, ReviewItem.state, func.count()).group_by(
            ReviewItem.alias, ReviewItem.state
        )
        async with self.db.sessions() as session:
            rows = (await session.execute(query)).all()
        return {(alias, state): int(count) for alias, state, count in rows}


_HAS_REASON_SQLITE = """EXISTS (
    SELECT 1 FROM json_each(review_items.reasons) AS r
    WHERE json_extract(r.value, '$.reason') = :reason)"""
_HAS_REASON_POSTGRESQL = """EXISTS (
    SELECT 1 FROM json_array_elements(review_items.reasons) AS r(value)
    WHERE r.value ->> 'reason' = :reason)"""


def _check_named(state: str, seen: str | None, correction: str | None) -> None:
    """An approval that names no revision and sends no correction would store whatever the
    item holds at that moment, which a user may just have replaced: refused."""
    if state == "approved" and seen is None and correction is None:
        raise InvalidRequest(
            "An approval must name the revision of the item it approves (the 'revision' of "
            "its card) or send the correction to store; read the item and approve again.",
            param="revision",
            code="revision_required",
        )


async def _update_unless_changed(
    session: AsyncSession, item: ReviewItem, values: dict[str, Any]
) -> None:
    """Write ``values`` to ``item`` if it still has the state and correction just read.

    The read is a condition of the UPDATE because SQLite has no SELECT ... FOR UPDATE: a
    correction committed between the read and this write fails it instead of being approved.
    """
    changed = await session.execute(
        update(ReviewItem)
        .where(
            ReviewItem.id == item.id,
            ReviewItem.state == item.state,
            ReviewItem.correction.is_not_distinct_from(item.correction),
        )
        .values(**values)
        .execution_options(synchronize_session=False)  # the caller reads the row back
    )
    if not changed.rowcount:  # type: ignore[attr-defined]
        raise _changed(item)


def _changed(item: ReviewItem) -> Conflict:
    return Conflict(
        f"Review item {item.id} changed since it was read (its correction or state); nothing "
        "was decided. Read it again and decide on what it says now.",
        param="revision",
        code="review_item_changed",
    )


def _decided(item: ReviewItem) -> Conflict:
    return Conflict(
        f"Review item {item.id} is {item.state} already; a decision is final. An admin may "
        f"reopen it (POST /v1/admin/review/{item.id}/reopen) to decide it anew.",
        param="id",
        code="review_item_decided",
    )


def _check_correction(correction: str | None) -> None:
    if correction is not None and len(correction) > MAX_CORRECTION_CHARS:
        raise InvalidRequest(
            f"The correction is {len(correction)} characters; the limit is {MAX_CORRECTION_CHARS}.",
            param="correction",
            code="correction_too_long",
        )
