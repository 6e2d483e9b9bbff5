"""The OpenAI-compatible surface: chat and text completions, the models, embeddings, and
vLLM's tokenizer and Responses routes relayed."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

from litestar import Controller, Request, Response, get, post
from litestar.response import Stream

from adapters.engine import EngineClient
from gateway.chat import ChatService, Served
from gateway.embeddings import EmbeddingRequest, EmbeddingService
from gateway.errors import ClientDisconnected
from gateway.model_cards import model_card, model_cards
from gateway.relay import EngineRelay
from gateway.responses import ResponsesService
from gateway.routing import ModelRouter
from gateway.schemas import ChatCompletionRequest, CompletionRequest, GenerationRequest

VERSION_HEADER = "x-loragate-version"
# Milliseconds the gateway added (see gateway.chat.Served.overhead_ms).
OVERHEAD_HEADER = "x-loragate-overhead-ms"
T = TypeVar("T")
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def _generate(
    request: Request[Any, Any, Any], data: GenerationRequest, chat: ChatService
) -> Response[Any] | Stream:
    started = time.perf_counter()
    data.keep_body(await request.body())  # its undeclared fields go to vLLM too
    principal = request.state.principal
    if data.stream:
        stream = await chat.stream(data, principal, started)
        headers = {**SSE_HEADERS, **_served_headers(stream)}
        return Stream(stream.body, media_type="text/event-stream", headers=headers)
    answer = await _cancel_on_disconnect(request, chat.complete(data, principal, started))
    return Response(answer.body, headers=_served_headers(answer))


def _served_headers(served: Served[Any]) -> dict[str, str]:
    return {
        VERSION_HEADER: served.route.served_name,
        OVERHEAD_HEADER: f"{served.overhead_ms:.3f}",
    }


async def _cancel_on_disconnect(request: Request[Any, Any, Any], work: Awaitable[T]) -> T:
    """Run ``work`` but cancel it if the client hangs up first, so vLLM stops generating an
    answer nobody will read. (Streams get this from Litestar already.)"""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise ClientDisconnected("The client closed the connection before the answer.")
    return task.result()


async def _disconnected(request: Request[Any, Any, Any]) -> None:
    # The body has been read, so the next ASGI message can only be the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


class OpenAIRoutes(Controller):
    """The OpenAI-compatible API (chat)."""

    path = "/v1"
    opt = {"scope": "chat"}
    tags = ["openai"]

    @post("/chat/completions", status_code=200)
    async def chat_completions(
        self, request: Request[Any, Any, Any], data: ChatCompletionRequest, chat: ChatService
    ) -> Response[Any] | Stream:
        """Create a chat completion; `stream: true` answers with server-sent events."""
        return await _generate(request, data, chat)

    @post("/completions", status_code=200)
    async def completions(
        self, request: Request[Any, Any, Any], data: CompletionRequest, chat: ChatService
    ) -> Response[Any] | Stream:
        """Create a text completion (the prompt as is, no chat template): the same keys, quotas,
        routing, log and metrics as chat; `stream: true` answers with server-sent events."""
        return await _generate(request, data, chat)

    @get("/models")
    async def list_models(
        self, router: ModelRouter, engine: EngineClient, embeddings: EmbeddingService
    ) -> dict[str, Any]:
        """The base model, every alias and adapter version, and the embedding model."""
        cards = await model_cards(router, engine, [await embeddings.card()])
        return {"object": "list", "data": cards}

    @get("/models/{model_id:path}")
    async def retrieve_model(
        self, model_id: str, router: ModelRouter, engine: EngineClient, embeddings: EmbeddingService
    ) -> dict[str, Any]:
        """One model's card, as listed by `/v1/models`; 404 when there is no such model."""
        return await model_card(model_id.lstrip("/"), router, engine, [await embeddings.card()])

    @post("/embeddings", status_code=200)
    async def create_embeddings(
        self, request: Request[Any, Any, Any], data: EmbeddingRequest, embeddings: EmbeddingService
    ) -> dict[str, Any]:
        """Embed text with the gateway's own sentence embedder (not vLLM); float or base64."""
        return await embeddings.create(data, request.state.principal)

    @post("/responses", status_code=200)
    async def create_response(
        self, request: Request[Any, Any, Any], data: dict[str, Any], responses: ResponsesService
    ) -> Response[Any] | Stream:
        """vLLM's Responses API: logged, charged and measured like chat; the id is the
        gateway's, readable and cancellable by this key only; `stream: true` answers with
        vLLM's server-sent events."""
        started = time.perf_counter()
        principal = request.state.principal
        if data.get("stream") is True:
            stream = await responses.create(data, principal, started)
            headers = {**SSE_HEADERS, **_served_headers(stream)}
            return Stream(stream.body, media_type="text/event-stream", headers=headers)
        answer = await _cancel_on_disconnect(request, responses.create(data, principal, started))
        return Response(answer.body, headers=_served_headers(answer))

    @get("/responses/{response_id:str}")
    async def retrieve_response(
        self,
        request: Request[Any, Any, Any],
        response_id: str,
        responses: ResponsesService,
        stream: bool = False,
        starting_after: int | None = None,
    ) -> Response[Any] | Stream:
        """A response this key created, as vLLM keeps it (vLLM stores responses only when
        started with `VLLM_ENABLE_RESPONSES_API_STORE=1`); another key's id is 404."""
        answer = await responses.retrieve(
            response_id, request.state.principal, stream, starting_after
        )
        if isinstance(answer, dict):
            return Response(answer)
        return Stream(answer, media_type="text/event-stream", headers=SSE_HEADERS)

    @post("/responses/{response_id:str}/cancel", status_code=200)
    async def cancel_response(
        self, request: Request[Any, Any, Any], response_id: str, responses: ResponsesService
    ) -> dict[str, Any]:
        """Cancel a background response this key created; another key's id is 404."""
        return await responses.cancel(response_id, request.state.principal)


class VllmRoutes(Controller):
    """vLLM extensions relayed to the engine (chat)."""

    path = "/"
    opt = {"scope": "chat"}
    tags = ["vllm"]

    @post("/tokenize", status_code=200)
    async def tokenize(
        self, request: Request[Any, Any, Any], data: dict[str, Any], relay: EngineRelay
    ) -> Any:
        """vLLM's `/tokenize` (a `prompt` or chat `messages`), relayed."""
        return await relay.tokenizer("/tokenize", data, request.state.principal)

    @post("/detokenize", status_code=200)
    async def detokenize(
        self, request: Request[Any, Any, Any], data: dict[str, Any], relay: EngineRelay
    ) -> Any:
        """vLLM's `/detokenize` (`tokens` back to text), relayed."""
        return await relay.tokenizer("/detokenize", data, request.state.principal)
