"""Serving one chat completion: validate, route, call the engine, relay, record, measure.

Each request becomes a ``_Call`` that owns its timing, metrics and conversation record and
finishes exactly once, whatever happens (success, engine failure, client gone).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import msgspec

from adapters.engine import EngineClient, EngineStream
from adapters.errors import EngineError
from adapters.reconciler import Reconciler
from gateway.errors import ContextLengthExceeded, InvalidRequest
from gateway.grounding import Grounder, Grounding
from gateway.http_errors import describe
from gateway.metrics import GatewayMetrics, status_class
from gateway.routing import ModelRouter, Route
from gateway.schemas import ChatCompletionRequest
from gateway.store.conversations import ConversationLog, ConversationRecord, Status
from gateway.store.keys import Principal
from retrieval.grounding import citations, groundedness

log = logging.getLogger("loragate.chat")

_encode = msgspec.json.Encoder().encode
DONE_EVENT = b"data: [DONE]\n\n"
# vLLM-only fields that mean nothing to an OpenAI client.
_VLLM_ONLY_FIELDS = ("prompt_logprobs", "prompt_token_ids", "prompt_text", "kv_transfer_params",
                     "ec_transfer_params", "metrics")  # fmt: skip


@dataclass(frozen=True)
class ChatLimits:
    context_window: int
    max_messages: int
    max_n: int
    adapter_wait_s: float = 10.0  # how long a request waits for its adapter to be loaded


class ChatService:
    def __init__(
        self,
        engine: EngineClient,
        router: ModelRouter,
        conversations: ConversationLog,
        metrics: GatewayMetrics,
        limits: ChatLimits,
        grounder: Grounder | None = None,
        reconciler: Reconciler | None = None,
    ) -> None:
        self.engine = engine
        self.router = router
        self.conversations = conversations
        self.metrics = metrics
        self.limits = limits
        self.grounder = grounder
        self.reconciler = reconciler

    async def complete(
        self, request: ChatCompletionRequest, principal: Principal, started: float
    ) -> tuple[Route, dict[str, Any]]:
        call = await self._begin(request, principal, started)
        try:
            body = await self.engine.chat(call.payload)
        except EngineError as exc:
            call.finish_error(exc)
            raise
        except asyncio.CancelledError:
            call.finish("cancelled", 499, "client went away")
            raise
        body["id"] = call.record.id
        body["model"] = call.route.served_name
        for name in _VLLM_ONLY_FIELDS:
            body.pop(name, None)
        call.record.response = [_choice_record(choice) for choice in body.get("choices", [])]
        call.add_usage(body.get("usage"))
        if call.grounding is not None:
            body["citations"] = call.cite(
                call.record.response[0]["content"] if call.record.response else ""
            )
        call.finish("ok", 200)
        return call.route, body

    async def stream(
        self, request: ChatCompletionRequest, principal: Principal, started: float
    ) -> tuple[Route, AsyncIterator[bytes]]:
        """Open the upstream stream first, so a refusal is still a plain HTTP error."""
        call = await self._begin(request, principal, started)
        try:
            upstream = await self.engine.stream_chat(call.payload)
        except EngineError as exc:
            call.finish_error(exc)
            raise
        return call.route, self._relay(call, upstream, request.include_usage)

    async def _relay(
        self, call: _Call, upstream: EngineStream, include_usage: bool
    ) -> AsyncIterator[bytes]:
        texts: dict[int, list[str]] = {}
        finish_reasons: dict[int, str | None] = {}
        outcome: tuple[Status, int, str | None] = ("cancelled", 499, "client went away")
        try:
            async for event in upstream.events():
                choices = event.get("choices") or []
                for choice in choices:
                    delta = choice.get("delta") or {}
                    if delta.get("content") or delta.get("tool_calls"):
                        call.mark_first_token()
                    texts.setdefault(choice["index"], []).append(delta.get("content") or "")
                    if choice.get("finish_reason"):
                        finish_reasons[choice["index"]] = choice["finish_reason"]
                if event.get("usage"):
                    call.add_usage(event["usage"])
                    if not choices and not include_usage:
                        continue
                    if not include_usage:
                        event.pop("usage")
                event["id"] = call.record.id
                event["model"] = call.route.served_name
                yield b"data: " + _encode(event) + b"\n\n"
            if call.grounding is not None:
                answer = "".join(texts.get(0, []))
                yield b"data: " + _encode(call.citations_chunk(answer)) + b"\n\n"
            yield DONE_EVENT
            outcome = ("ok", 200, None)
        except EngineError as exc:
            info = describe(exc)
            outcome = ("error", info.status_code, info.message)
            self.metrics.upstream_errors.labels(type(exc).__name__).inc()
            log.error("stream broke", extra={"completion_id": call.record.id, "error": str(exc)})
            yield b"data: " + _encode(info.body()) + b"\n\n"
        finally:
            with anyio.CancelScope(shield=True):
                await upstream.aclose()  # closing mid-body aborts the request in vLLM
            call.record.response = [
                {"index": index, "content": "".join(parts),
                 "finish_reason": finish_reasons.get(index)}
                for index, parts in sorted(texts.items())
            ]  # fmt: skip
            if outcome[0] == "cancelled":
                self.metrics.client_disconnects.labels(call.route.served_name).inc()
            call.finish(*outcome)

    async def _begin(
        self, request: ChatCompletionRequest, principal: Principal, started: float
    ) -> _Call:
        self._check_limits(request)
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        sticky_key = request.conversation_id or principal.key_id or completion_id
        route = await self.router.resolve(request.model, sticky_key)
        if route.is_adapter and self.reconciler is not None:
            await self.reconciler.ensure_serving(route.upstream_model, self.limits.adapter_wait_s)
        payload = request.upstream_payload(route.upstream_model)
        grounding = await self._ground(request, route, payload)
        record = ConversationRecord(
            id=completion_id,
            requested_model=request.model,
            served_model=route.served_name,
            stream=request.stream,
            request={key: value for key, value in payload.items() if key != "model"},
            conversation_id=request.conversation_id,
            api_key_id=principal.key_id,
            context=[hit.chunk_id for hit in grounding.hits] if grounding else None,
            top_score=max((hit.score for hit in grounding.hits), default=None)
            if grounding
            else None,
        )
        return _Call(self, route, payload, record, started, grounding)

    async def _ground(
        self, request: ChatCompletionRequest, route: Route, payload: dict[str, Any]
    ) -> Grounding | None:
        """Retrieve sources and put them in front of the conversation, as a system message."""
        if self.grounder is None:
            return None
        plan = self.grounder.plan(request.retrieval, (route.requested, route.served_name))
        if plan is None:
            return None
        grounding = await self.grounder.ground(plan, payload["messages"])
        payload["messages"] = [grounding.system_message, *payload["messages"]]
        return grounding

    def _check_limits(self, request: ChatCompletionRequest) -> None:
        if len(request.messages) > self.limits.max_messages:
            raise InvalidRequest(
                f"Too many messages: {len(request.messages)} > {self.limits.max_messages}.",
                param="messages",
            )
        if isinstance(request.n, int) and request.n > self.limits.max_n:
            raise InvalidRequest(f"n must be at most {self.limits.max_n}.", param="n")
        limit = request.output_limit
        if limit is not None and limit >= self.limits.context_window:
            param = "max_completion_tokens" if request.max_completion_tokens else "max_tokens"
            raise ContextLengthExceeded(
                f"{param}={limit} does not fit the model's context window of "
                f"{self.limits.context_window} tokens.",
                param=param,
            )


class _Call:
    """The bookkeeping of one request: metrics, timings and the record, finished once."""

    def __init__(
        self,
        service: ChatService,
        route: Route,
        payload: dict[str, Any],
        record: ConversationRecord,
        started: float,
        grounding: Grounding | None = None,
    ) -> None:
        self.service = service
        self.route = route
        self.payload = payload
        self.record = record
        self.started = started
        self.grounding = grounding
        self._finished = False
        service.metrics.in_flight.labels(route.served_name).inc()

    def mark_first_token(self) -> None:
        if self.record.ttft_ms is None:
            seconds = time.perf_counter() - self.started
            self.record.ttft_ms = seconds * 1000
            self.service.metrics.ttft.labels(self.route.served_name).observe(seconds)

    def add_usage(self, usage: dict[str, Any] | None) -> None:
        if usage:
            self.record.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            self.record.completion_tokens = int(usage.get("completion_tokens") or 0)

    def cite(self, answer: str) -> list[dict[str, Any]]:
        """Citations for the answer; also scores its groundedness."""
        assert self.grounding is not None
        hits = self.grounding.hits
        score = groundedness(answer, hits)
        if score is not None:
            self.record.groundedness = score
            self.service.metrics.groundedness.labels(self.route.served_name).observe(score)
        return citations(answer, hits) if hits else []

    def citations_chunk(self, answer: str) -> dict[str, Any]:
        """The last stream chunk before [DONE]: no choices, just the citations."""
        return {
            "id": self.record.id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.route.served_name,
            "choices": [],
            "citations": self.cite(answer),
        }

    def finish_error(self, exc: EngineError) -> None:
        info = describe(exc)
        self.service.metrics.upstream_errors.labels(type(exc).__name__).inc()
        self.finish("error", info.status_code, info.message)

    def finish(self, status: Status, status_code: int, error: str | None = None) -> None:
        if self._finished:
            return
        self._finished = True
        seconds = time.perf_counter() - self.started
        self.record.status = status
        self.record.error = error
        self.record.latency_ms = seconds * 1000
        metrics, model = self.service.metrics, self.route.served_name
        metrics.in_flight.labels(model).dec()
        metrics.requests.labels(model, status_class(status_code)).inc()
        if self.route.alias is not None and self.route.requested == self.route.alias:
            metrics.alias_requests.labels(self.route.alias, model).inc()
        metrics.latency.labels(model).observe(seconds)
        metrics.tokens.labels(model, "prompt").inc(self.record.prompt_tokens)
        metrics.tokens.labels(model, "completion").inc(self.record.completion_tokens)
        self.service.conversations.record(self.record)


def _choice_record(choice: dict[str, Any]) -> dict[str, Any]:
    message = choice.get("message") or {}
    return {
        "index": choice.get("index", 0),
        "content": message.get("content") or "",
        "finish_reason": choice.get("finish_reason"),
    }
