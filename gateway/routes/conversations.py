"""The calling key's own conversations, from the conversation log: what the chat page lists
and reopens after a reload. Chat scope; never another key's (gateway.history)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from litestar import Request, Router, get
from litestar.di import Provide
from litestar.params import Parameter

from gateway.history import ConversationHistory

ConversationId = Annotated[str, Parameter(min_length=1, max_length=200)]


@get("/v1/conversations", opt={"scope": "chat"}, tags=["conversations"])
async def list_conversations(
    request: Request[Any, Any, Any],
    history: ConversationHistory,
    limit: Annotated[int, Parameter(ge=1, le=200)] = 50,
    offset: Annotated[int, Parameter(ge=0, le=2**31 - 1)] = 0,
) -> dict[str, Any]:
    """The calling key's conversations (by ``conversation_id``), the most recent first."""
    summaries = await history.summaries(request.state.principal.key_id, limit, offset)
    return {"object": "list", "data": [asdict(summary) for summary in summaries]}


@get("/v1/conversations/{conversation_id:str}", opt={"scope": "chat"}, tags=["conversations"])
async def read_conversation(
    request: Request[Any, Any, Any], conversation_id: ConversationId, history: ConversationHistory
) -> dict[str, Any]:
    """One of the calling key's conversations, turn by turn, with each answer's sources;
    404 ``not_found`` for an id the key never used (another key's included)."""
    return await history.conversation(request.state.principal.key_id, conversation_id)


def conversation_routes(history: ConversationHistory) -> Router:
    """The routes with their one dependency, to be mounted under the guarded API router."""
    return Router(
        path="/",
        route_handlers=[list_conversations, read_conversation],
        dependencies={"history": Provide(lambda: history, use_cache=True, sync_to_thread=False)},
    )
