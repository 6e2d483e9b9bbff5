"""The conversation log read back: a key's own conversations (the chat page's history) and,
for operators, the whole log searched (the console's Conversations tab).

The log keeps one row per served completion; a conversation is the rows that share a client's
``conversation_id`` *and* the calling key. Everything here is filtered by the key first: a key
never sees, or learns of, a conversation another key had under the same id (an id it does not
have is 404, whoever else used it).

Turns are rebuilt from the rows, not from the last request's history: each row knows its own
answer, completion id, served version and sources. A regenerated answer was sent with the same
history as the one it replaces, so the newest row for a history length is the one shown. The
question is the user's own text, without the sources grounding added to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, String, cast, func, or_, select

from core.store.db import Database
from core.store.tables import Conversation
from gateway.errors import NotFound
from retrieval.grounding import answer_sources, asked_question
from retrieval.tables import StoredChunk, StoredDocument

TITLE_CHARS = 80
ANSWER_PREVIEW_CHARS = 2000


@dataclass(frozen=True)
class Summary:
    id: str
    title: str
    model: str
    answers: int
    created_at: str
    updated_at: str


class ConversationHistory:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def summaries(self, key_id: str | None, limit: int, offset: int = 0) -> list[Summary]:
        """The key's conversations, the most recently active first."""
        latest = func.max(Conversation.created_at).label("latest")
        query = (
            select(Conversation.conversation_id, func.count().label("answers"),
                   func.min(Conversation.created_at).label("first"), latest)
            .where(_owned_by(key_id), Conversation.conversation_id.is_not(None))
            .group_by(Conversation.conversation_id)
            .order_by(latest.desc()).limit(limit).offset(offset)
        )  # fmt: skip
        async with self.db.sessions() as session:
            groups = (await session.execute(query)).all()
            firsts = await self._first_rows(session, key_id, [str(group[0]) for group in groups])
        return [
            Summary(
                id=conversation_id,
                title=_title(firsts.get(conversation_id)),
                model=firsts[conversation_id].requested_model if conversation_id in firsts else "",
                answers=answers,
                created_at=first.isoformat(),
                updated_at=last.isoformat(),
            )
            for conversation_id, answers, first, last in groups
            if conversation_id is not None
        ]

    async def conversation(self, key_id: str | None, conversation_id: str) -> dict[str, Any]:
        """The conversation's turns as the chat page draws them; 404 when the key has none."""
        query = (
            select(Conversation)
            .where(_owned_by(key_id), Conversation.conversation_id == conversation_id)
            .order_by(Conversation.created_at, Conversation.id)
        )
        async with self.db.sessions() as session:
            rows = list((await session.execute(query)).scalars())
            if not rows:
                raise NotFound(f"No conversation '{conversation_id}' for this key.",
                               param="conversation_id")  # fmt: skip
            shown = _shown_rows(rows)
            sources = await _sources(session, [row.context or [] for row in shown])
        last = rows[-1]
        return {
            "object": "conversation",
            "id": conversation_id,
            "model": last.requested_model,
            "system": _system_prompt(last.request.get("messages") or []),
            "turns": [_turn(row, sources) for row in shown],
        }

    async def search(self, where: LogQuery) -> tuple[list[dict[str, Any]], int]:
        """The whole log (every key's), for operators: a page of rows and the total."""
        return await search_log(self.db, where)

    async def _first_rows(
        self, session: Any, key_id: str | None, conversation_ids: list[str]
    ) -> dict[str, Conversation]:
        if not conversation_ids:
            return {}
        query = (
            select(Conversation)
            .where(_owned_by(key_id), Conversation.conversation_id.in_(conversation_ids))
            .order_by(Conversation.created_at.desc())
        )
        firsts: dict[str, Conversation] = {}
        for row in (await session.execute(query)).scalars():
            firsts[str(row.conversation_id)] = row  # the oldest one wins: it comes last
        return firsts


@dataclass(frozen=True)
class LogQuery:
    """What an operator looks for: text anywhere in the request or answer (or an exact
    completion or conversation id), narrowed by key, model and status."""

    text: str | None = None
    key_id: str | None = None
    model: str | None = None
    status: str | None = None
    limit: int = 50
    offset: int = 0


async def search_log(db: Database, where: LogQuery) -> tuple[list[dict[str, Any]], int]:
    """The page of log rows that match, newest first, and how many match in all."""
    conditions: list[ColumnElement[bool]] = []
    if where.text:
        # The operator's text is matched as written: % and _ are not wildcards.
        literal = where.text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = f"%{literal}%"
        conditions.append(or_(
            Conversation.id == where.text, Conversation.conversation_id == where.text,
            cast(Conversation.request, String).ilike(pattern, escape="\\"),
            cast(Conversation.response, String).ilike(pattern, escape="\\"),
        ))  # fmt: skip
    if where.key_id:
        conditions.append(Conversation.api_key_id == where.key_id)
    if where.model:
        conditions.append(or_(Conversation.requested_model == where.model,
                              Conversation.served_model == where.model))  # fmt: skip
    if where.status:
        conditions.append(Conversation.status == where.status)
    page = (
        select(Conversation).where(*conditions)
        .order_by(Conversation.created_at.desc(), Conversation.id.desc())
        .limit(where.limit).offset(where.offset)
    )  # fmt: skip
    async with db.sessions() as session:
        total = await session.scalar(
            select(func.count()).select_from(Conversation).where(*conditions)
        )
        rows = list((await session.execute(page)).scalars())
    return [_log_card(row) for row in rows], int(total or 0)


def _log_card(row: Conversation) -> dict[str, Any]:
    messages = row.request.get("messages") or []
    answer = str(row.response[0].get("content") or "") if row.response else ""
    return {
        "id": row.id, "conversation_id": row.conversation_id, "api_key_id": row.api_key_id,
        "requested_model": row.requested_model, "served_model": row.served_model,
        "status": row.status, "error": row.error, "stream": row.stream,
        "question": _question(messages) or str(row.request.get("prompt") or ""),
        "answer": answer[:ANSWER_PREVIEW_CHARS],
        "prompt_tokens": row.prompt_tokens, "completion_tokens": row.completion_tokens,
        "latency_ms": row.latency_ms, "groundedness": row.groundedness,
        "created_at": row.created_at.isoformat(),
    }  # fmt: skip


def _owned_by(key_id: str | None) -> ColumnElement[bool]:
    # With auth off every request is anonymous (no key id): its conversations are shared.
    if key_id is None:
        return Conversation.api_key_id.is_(None)
    return Conversation.api_key_id == key_id


def _shown_rows(rows: list[Conversation]) -> list[Conversation]:
    """One row per history length, the newest: a regenerated answer replaces the first."""
    by_length: dict[int, Conversation] = {}
    for row in rows:  # oldest first, so a later row for the same history replaces it
        by_length[len(row.request.get("messages") or [])] = row
    return [by_length[length] for length in sorted(by_length)]


def _question(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return asked_question(_text(message.get("content")))
    return ""


def _system_prompt(messages: list[Any]) -> str | None:
    for message in messages:
        if isinstance(message, dict) and message.get("role") in ("system", "developer"):
            return _text(message.get("content"))
    return None


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI's parts: the text ones, joined
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def _title(row: Conversation | None) -> str:
    if row is None:
        return ""
    question = " ".join(_question(row.request.get("messages") or []).split())
    return question if len(question) <= TITLE_CHARS else question[: TITLE_CHARS - 1] + "…"


def _turn(row: Conversation, sources: dict[int, dict[str, Any]]) -> dict[str, Any]:
    answer = str(row.response[0].get("content") or "") if row.response else ""
    return {
        "completion_id": row.id,
        "created_at": row.created_at.isoformat(),
        "served_model": row.served_model,
        "status": row.status,
        "error": row.error,
        "question": _question(row.request.get("messages") or []),
        "answer": answer,
        "citations": _citations(answer, row.context or [], sources),
    }


def _citations(
    answer: str, context: list[int], sources: dict[int, dict[str, Any]]
) -> list[dict[str, Any]]:
    """As the answer's stream gave them (retrieval.grounding.citations), numbered as the
    model saw them. A chunk deleted since is left out; the others keep their numbers."""
    texts = [_source_text(sources.get(chunk_id)) for chunk_id in context]
    numbers, found_by = answer_sources(answer, texts)
    return [
        {
            "index": number,
            "chunk_id": context[number - 1],
            **sources[context[number - 1]],
            "attribution": found_by,
        }
        for number in numbers
        if context[number - 1] in sources
    ]


def _source_text(source: dict[str, Any] | None) -> str:
    return "" if source is None else f"{source.get('text', '')} {source.get('section', '')}"


async def _sources(session: Any, contexts: list[list[int]]) -> dict[int, dict[str, Any]]:
    """The chunks the answers were grounded in, by id."""
    wanted = {chunk_id for context in contexts for chunk_id in context}
    if not wanted:
        return {}
    query = select(StoredChunk, StoredDocument.source).join(
        StoredDocument,
        (StoredDocument.collection == StoredChunk.collection)
        & (StoredDocument.id == StoredChunk.document_id),
    ).where(StoredChunk.id.in_(wanted))  # fmt: skip
    return {
        chunk.id: {
            "document_id": chunk.document_id,
            "source": source,
            "section": chunk.section,
            "text": chunk.text,
        }
        for chunk, source in (await session.execute(query)).all()
    }
