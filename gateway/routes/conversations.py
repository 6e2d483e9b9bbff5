"""The conversation log over HTTP: a chat key's own conversations (what the chat page lists
and reopens after a reload; never another key's, gateway.history), and the whole log,
searched and paged, for operators."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, Literal

from litestar import Controller, Request, get
from litestar.params import Parameter

from gateway.history import ConversationHistory, LogQuery

ConversationId = Annotated[str, Parameter(min_length=1, max_length=200)]
Limit = Annotated[int, Parameter(ge=1, le=200)]
Offset = Annotated[int, Parameter(ge=0, le=2**31 - 1)]


class ConversationRoutes(Controller):
    """The calling key's own conversations (chat)."""

    path = "/v1/conversations"
    opt = {"scope": "chat"}
    tags = ["conversations"]

    @get("/")
    async def list_conversations(
        self,
        request: Request[Any, Any, Any],
        history: ConversationHistory,
        limit: Limit = 50,
        offset: Offset = 0,
    ) -> dict[str, Any]:
        """The calling key's conversations (by ``conversation_id``), the most recent first."""
        summaries = await history.summaries(request.state.principal.key_id, limit, offset)
        return {"object": "list", "data": [asdict(summary) for summary in summaries]}

    @get("/{conversation_id:str}")
    async def read_conversation(
        self,
        request: Request[Any, Any, Any],
        conversation_id: ConversationId,
        history: ConversationHistory,
    ) -> dict[str, Any]:
        """One of the calling key's conversations, turn by turn, with each answer's sources;
        404 ``not_found`` for an id the key never used (another key's included)."""
        return await history.conversation(request.state.principal.key_id, conversation_id)


class ConversationLogRoutes(Controller):
    """The whole conversation log, searched (admin)."""

    path = "/v1/admin/conversations"
    opt = {"scope": "admin"}
    tags = ["admin"]

    @get("/")
    async def search_conversations(
        self,
        history: ConversationHistory,
        q: Annotated[str | None, Parameter(max_length=500)] = None,
        key_id: Annotated[str | None, Parameter(max_length=32)] = None,
        model: Annotated[str | None, Parameter(max_length=200)] = None,
        status: Literal["ok", "error", "cancelled"] | None = None,
        limit: Limit = 50,
        offset: Offset = 0,
    ) -> dict[str, Any]:
        """The conversation log, newest first: ``q`` matches text in the messages or the
        answer, or a completion or conversation id exactly."""
        query = LogQuery(q or None, key_id, model, status, limit, offset)
        rows, total = await history.search(query)
        return {"object": "list", "total": total, "data": rows}
