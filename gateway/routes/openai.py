"""The OpenAI-compatible surface: chat completions and the model list."""

from __future__ import annotations

import time
from typing import Any

from litestar import Request, Response, get, post
from litestar.response import Stream

from gateway.chat import ChatService
from gateway.routing import ModelRouter
from gateway.schemas import ChatCompletionRequest

VERSION_HEADER = "x-loragate-version"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@post("/v1/chat/completions", opt={"scope": "chat"}, status_code=200, tags=["openai"])
async def chat_completions(
    request: Request[Any, Any, Any], data: ChatCompletionRequest, chat: ChatService
) -> Response[Any] | Stream:
    """Create a chat completion; `stream: true` answers with server-sent events."""
    started = time.perf_counter()
    principal = request.state.principal
    if data.stream:
        route, events = await chat.stream(data, principal, started)
        headers = {**SSE_HEADERS, VERSION_HEADER: route.served_name}
        return Stream(events, media_type="text/event-stream", headers=headers)
    route, body = await chat.complete(data, principal, started)
    return Response(body, headers={VERSION_HEADER: route.served_name})


@get("/v1/models", opt={"scope": "chat"}, tags=["openai"])
async def list_models(router: ModelRouter) -> dict[str, Any]:
    """The base model and every adapter version that can be asked for."""
    return {"object": "list", "data": await router.list_models()}
