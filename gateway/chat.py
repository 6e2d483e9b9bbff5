"""Serving one chat completion: validate, route, call the engine, relay, record, measure.

Each request becomes a ``Call`` (the Responses API's too, ``gateway.responses``) that owns
its timing, metrics and conversation record and finishes exactly once, whatever happens
(success, engine failure, client gone).

**What a request is charged** (its conversation row, its metrics and its key's quotas), by
how it ended:

* done: vLLM's usage (the body's, or a stream's last chunk);
* a stream cut short (client gone, upstream broken): vLLM's running count from the last
  chunk relayed (streams ask for ``continuous_usage_stats``, so every chunk carries the
  prompt and the choice's tokens so far), else one token per chunk with content;
* a plain request the client abandoned, or that timed out: nothing came back to count, so
  its hold (the estimated prompt plus ``max_tokens x n``): vLLM may have finished it;
* refused by the engine (a 4xx, a replica down) before anything was generated: nothing.

A prompt vLLM never gave a size for is estimated (``gateway.quota_gate.estimate_tokens``, plus
the model's ``PromptOverhead`` learned from vLLM's earlier counts).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import anyio
import msgspec

from adapters.engine import EngineClient, EngineStream
from adapters.errors import EngineError, EngineTimeout
from adapters.reconciler import Reconciler
from core.store.conversations import ConversationLog, ConversationRecord, Status
from core.store.keys import Principal
from gateway.errors import ContextLengthExceeded, InvalidRequest
from gateway.grounder import Grounder, Grounding
from gateway.http_errors import describe
from gateway.key_labels import NO_KEY
from gateway.metrics import UNROUTED, GatewayMetrics, status_class
from gateway.quota_gate import Admission, PromptOverhead, QuotaGate, estimate_tokens
from gateway.routing import ModelRouter, Route
from gateway.schemas import ChatCompletionRequest, GenerationRequest, RetrievalOptions
from retrieval.grounding import citations, groundedness

log = logging.getLogger("loragate.chat")

_encode = msgspec.json.Encoder().encode
DONE_EVENT = b"data: [DONE]\n\n"
# vLLM-only fields that mean nothing to an OpenAI client unless it asked for them
# (return_token_ids, prompt_logprobs): dropped while null.
_VLLM_ONLY_FIELDS = ("prompt_logprobs", "prompt_token_ids", "prompt_text", "kv_transfer_params",
                     "ec_transfer_params", "metrics")  # fmt: skip


T = TypeVar("T")


@dataclass(frozen=True)
class Served(Generic[T]):
    """A chat answer (a body, or a stream of SSE bytes) and who answered it."""

    route: Route
    body: T
    # What the gateway had added by the time it answered: for a body, everything but the
    # wait on vLLM; for a stream, the work before the upstream stream opened.
    overhead_ms: float


@dataclass(frozen=True)
class ChatLimits:
    context_window: int
    max_messages: int
    max_n: int
    adapter_wait_s: float = 10.0  # how long a request waits for its adapter to be loaded
    default_max_tokens: int | None = 512  # for requests that set no output limit
    # Output tokens held per choice for a request with no output limit (and no default);
    # None: the rest of the context window, the most vLLM can generate.
    reserve_max_tokens: int | None = None


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
        quotas: QuotaGate | None = None,
    ) -> None:
        self.engine = engine
        self.router = router
        self.conversations = conversations
        self.metrics = metrics
        self.limits = limits
        self.grounder = grounder
        self.reconciler = reconciler
        self.quotas = quotas
        self.background: set[asyncio.Task[None]] = set()
        self.prompt_overhead = PromptOverhead()

    async def complete(
        self, request: GenerationRequest, principal: Principal, started: float
    ) -> Served[dict[str, Any]]:
        call = await self._begin(request, principal, started)
        async with call.awaiting_answer():
            body = await self.engine.chat(call.payload, request.endpoint)
        body["id"] = call.record.id
        body["model"] = call.route.served_name
        _drop_unasked(body)
        call.record.response = [_choice_record(choice) for choice in body.get("choices", [])]
        call.add_usage(body.get("usage"))
        if call.grounding is not None:
            body["citations"] = call.cite(
                call.record.response[0]["content"] if call.record.response else ""
            )
        call.finish("ok", 200)
        # Counted before the client has the answer, so its next request sees these tokens,
        # and journaled, so an acknowledged answer is never missing from the log.
        await call.settle_quota()
        await self.conversations.durable()
        return Served(call.route, body, call.overhead_s() * 1000)

    async def stream(
        self, request: GenerationRequest, principal: Principal, started: float
    ) -> Served[AsyncIterator[bytes]]:
        """Open the upstream stream first, so a refusal is still a plain HTTP error."""
        call = await self._begin(request, principal, started)
        overhead_ms = (time.perf_counter() - started) * 1000
        try:
            with call.waiting_upstream():
                upstream = await self.engine.stream_chat(call.payload, request.endpoint)
        except EngineError as exc:
            call.finish_error(exc)
            await call.settle_quota()
            raise
        relay = self._relay(call, upstream, request.include_usage, request.continuous_usage)
        return Served(call.route, relay, overhead_ms)

    async def _relay(
        self, call: Call, upstream: EngineStream, include_usage: bool, continuous_usage: bool
    ) -> AsyncIterator[bytes]:
        texts: dict[int, list[str]] = {}
        finish_reasons: dict[int, str | None] = {}
        outcome: tuple[Status, int, str | None] = ("cancelled", 499, "client went away")
        # Each choice's finishing chunk waits for the end: vLLM puts its system_fingerprint
        # there unless usage was asked for, as the gateway always does; then it comes in
        # the usage chunk, which this client did not ask for, and moves onto them.
        held: list[dict[str, Any]] = []
        calls: dict[int, dict[int, dict[str, Any]]] = {}  # per choice, its tool calls so far
        try:
            async for event in call.timed(upstream.events()):
                choices = event.get("choices") or []
                usage = event.get("usage")
                for choice in choices:
                    piece = _piece(choice)
                    produced = bool(piece or (choice.get("delta") or {}).get("tool_calls"))
                    if produced:
                        call.mark_token()
                    call.count(choice["index"], usage, produced)
                    texts.setdefault(choice["index"], []).append(piece)
                    _add_tool_calls(calls, choice)
                    if choice.get("finish_reason"):
                        finish_reasons[choice["index"]] = choice["finish_reason"]
                if usage:
                    if choices:  # a running count: the client's only if it asked for it
                        if not continuous_usage:
                            event.pop("usage")
                    else:  # the whole request's, in the last chunk
                        call.add_usage(usage)
                        if not include_usage:
                            _take_fingerprint(held, event)
                            continue
                event["id"] = call.record.id
                event["model"] = call.route.served_name
                if not include_usage and any(choice.get("finish_reason") for choice in choices):
                    held.append(event)
                    continue
                yield b"data: " + _encode(event) + b"\n\n"
            for event in held:
                yield b"data: " + _encode(event) + b"\n\n"
            if call.grounding is not None:
                answer = "".join(texts.get(0, []))
                yield b"data: " + _encode(call.citations_chunk(answer)) + b"\n\n"
            # [DONE] acknowledges the answer: the record is journaled before it is sent.
            call.record.response = _stream_response(texts, finish_reasons, calls)
            call.finish("ok", 200)
            await self.conversations.durable()
            yield DONE_EVENT
        except EngineError as exc:
            info = describe(exc)
            outcome = ("error", info.status_code, info.message)
            self.metrics.upstream_errors.labels(type(exc).__name__).inc()
            log.error("stream broke", extra={"completion_id": call.record.id, "error": str(exc)})
            yield b"data: " + _encode(info.body()) + b"\n\n"
        finally:
            with anyio.CancelScope(shield=True):
                await upstream.aclose()  # closing mid-body aborts the request in vLLM
            if not call.finished:
                call.record.response = _stream_response(texts, finish_reasons, calls)
                call.charge_counted()
                call.finish(*outcome)
            with anyio.CancelScope(shield=True):
                await call.settle_quota()

    async def _begin(
        self, request: GenerationRequest, principal: Principal, started: float
    ) -> Call:
        route: Route | None = None
        admission: Admission | None = None
        try:
            self._check_limits(request)
            prompt_estimate = estimate_tokens(*request.prompt_parts())
            overhead = self.prompt_overhead(request.model)
            max_output = self._max_output(request, prompt_estimate + overhead)
            if self.quotas is not None:
                hold = prompt_estimate + overhead + max_output
                admission = await self.quotas.admit(principal, request.stream, hold)
            completion_id = f"{request.id_prefix}{uuid.uuid4().hex}"
            sticky_key = _sticky_key(request.conversation_id, principal.key_id, completion_id)
            route = await self.router.resolve(request.model, sticky_key)
            if route.is_adapter and self.reconciler is not None:
                await self.reconciler.ensure_serving(
                    route.upstream_model, self.limits.adapter_wait_s
                )
            payload = request.upstream_payload(route.upstream_model)
            if request.stream:
                # vLLM's running count in every chunk: what a stream cut short is charged.
                payload["stream_options"] = {"include_usage": True, "continuous_usage_stats": True}
            grounding = await self._ground(request, route, payload)
            if request.output_limit is None:
                self._apply_default_limit(payload, overhead)
        except Exception as exc:  # counted as refused, then handled like any other error
            self.count_refused(route, exc, principal)
            if self.quotas is not None:
                await self.quotas.settle(admission, 0)
            raise
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
            experiment_id=route.experiment_id,
            arm=route.arm,
        )
        call = self.open_call(route, payload, record, started, grounding, admission, principal)
        call.max_output, call.prompt_estimate = max_output, prompt_estimate
        return call

    def open_call(
        self,
        route: Route,
        payload: dict[str, Any],
        record: ConversationRecord,
        started: float,
        grounding: Grounding | None,
        admission: Admission | None,
        principal: Principal,
    ) -> Call:
        """A served request's bookkeeping, labelled for the per-key metrics."""
        call = Call(self, route, payload, record, started, grounding, admission)
        call.key = self.metrics.key_labels.of(principal)
        return call

    def _apply_default_limit(self, payload: dict[str, Any], overhead: int) -> None:
        """``default_max_tokens`` for a request that set no limit, capped by the context:
        measured on the prompt as sent (grounding sources included), and left out when the
        prompt leaves less room than the default, since vLLM's own limit (the rest of the
        window) is then the smaller one and a larger ``max_tokens`` would be refused."""
        default = self.limits.default_max_tokens
        if default is None:
            return
        prompt = estimate_tokens(payload.get("messages"), payload.get("prompt")) + overhead
        if prompt + default <= self.limits.context_window:
            payload["max_tokens"] = default

    def _max_output(self, request: GenerationRequest, prompt_estimate: int) -> int:
        """The most output tokens the request can make: its limit (or the default) x n."""
        limit = request.output_limit or self.limits.default_max_tokens
        if limit is None:
            limit = self.limits.reserve_max_tokens or max(
                self.limits.context_window - prompt_estimate, 1
            )
        return limit * (request.n if isinstance(request.n, int) else 1)

    def count_refused(self, route: Route | None, exc: Exception, principal: Principal) -> None:
        status_code = describe(exc).status_code
        alias, version = route_labels(route) if route else (UNROUTED, UNROUTED)
        self.metrics.requests.labels(alias, version, status_class(status_code)).inc()
        self.metrics.record_key(self.metrics.key_labels.of(principal), status_code)
        if isinstance(exc, EngineError):
            self.metrics.upstream_errors.labels(type(exc).__name__).inc()

    async def _ground(
        self, request: GenerationRequest, route: Route, payload: dict[str, Any]
    ) -> Grounding | None:
        """Retrieve sources and put them into the last user turn, next to the question."""
        if self.grounder is None or not isinstance(request, ChatCompletionRequest):
            return None
        plan = self.grounder.plan(_retrieval(request, route), (route.requested, route.served_name))
        if plan is None:
            return None
        grounding = await self.grounder.ground(plan, payload["messages"])
        payload["messages"] = grounding.apply(payload["messages"])
        return grounding

    def _check_limits(self, request: GenerationRequest) -> None:
        if request.message_count > self.limits.max_messages:
            raise InvalidRequest(
                f"Too many messages: {request.message_count} > {self.limits.max_messages}.",
                param="messages",
            )
        if isinstance(request.n, int) and request.n > self.limits.max_n:
            raise InvalidRequest(f"n must be at most {self.limits.max_n}.", param="n")
        limit = request.output_limit
        if limit is not None and limit >= self.limits.context_window:
            param = request.output_limit_param
            raise ContextLengthExceeded(
                f"{param}={limit} does not fit the model's context window of "
                f"{self.limits.context_window} tokens.",
                param=param,
            )


class Call:
    """The bookkeeping of one request: metrics, timings and the record, finished once."""

    def __init__(
        self,
        service: ChatService,
        route: Route,
        payload: dict[str, Any],
        record: ConversationRecord,
        started: float,
        grounding: Grounding | None = None,
        admission: Admission | None = None,
    ) -> None:
        self.service = service
        self.admission = admission
        self.route = route
        self.payload = payload
        self.record = record
        self.started = started
        self.grounding = grounding
        self.alias, self.version = route_labels(route)
        self.upstream_s = 0.0  # time spent waiting on vLLM
        self._last_token_at: float | None = None
        self.max_output = 0  # output tokens held at admission (max_tokens x n)
        self.prompt_estimate = 0  # of the request's own prompt, before any overhead
        self._prompt_seen: int | None = None  # vLLM's running count of a stream...
        self._generated: dict[int, int] = {}  # ... and each choice's tokens so far
        self.finished = False
        self._usage_known = False
        self.key = NO_KEY  # the per-key metrics' labels (gateway.key_labels)
        service.metrics.in_flight.labels(self.alias).inc()

    @contextlib.asynccontextmanager
    async def awaiting_answer(self) -> AsyncIterator[None]:
        """Waiting for a whole (not streamed) answer: how each way it can fail is recorded
        and charged."""
        try:
            with self.waiting_upstream():
                yield
        except EngineError as exc:
            if isinstance(exc, EngineTimeout):
                self.charge_hold()  # it ran until the gateway gave up on it
            self.finish_error(exc)
            await self.settle_quota()
            raise
        except asyncio.CancelledError:
            self.charge_hold()  # vLLM aborts it when the connection closes, nobody says when
            self.finish("cancelled", 499, "client went away")
            self.settle_quota_soon()  # a cancelled task cannot wait for it
            raise

    @contextlib.contextmanager
    def waiting_upstream(self) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            self.upstream_s += time.perf_counter() - began

    async def timed(self, events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        """The upstream events, with the wait for each one counted as upstream time."""
        while True:
            with self.waiting_upstream():
                try:
                    event = await anext(events)
                except StopAsyncIteration:
                    return
            yield event

    def overhead_s(self) -> float:
        return max(time.perf_counter() - self.started - self.upstream_s, 0.0)

    def mark_token(self) -> None:
        now = time.perf_counter()
        metrics = self.service.metrics
        if self._last_token_at is None:
            self.record.ttft_ms = (now - self.started) * 1000
            metrics.ttft.labels(self.alias, self.version).observe(now - self.started)
        else:
            metrics.inter_token.labels(self.alias, self.version).observe(now - self._last_token_at)
        self._last_token_at = now

    def add_usage(self, usage: dict[str, Any] | None) -> None:
        if usage:
            self.record.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            self.record.completion_tokens = int(usage.get("completion_tokens") or 0)
            self._usage_known = True
            self.service.prompt_overhead.learn(
                self.record.requested_model, self.prompt_estimate, self.record.prompt_tokens
            )

    def count(self, index: int, usage: dict[str, Any] | None, produced: bool) -> None:
        """Follow a stream's tokens: vLLM's running count per choice, else a token a chunk."""
        if usage:
            self._prompt_seen = int(usage.get("prompt_tokens") or 0)
            self._generated[index] = int(usage.get("completion_tokens") or 0)
        elif produced:
            self._generated[index] = self._generated.get(index, 0) + 1

    def charge_counted(self) -> None:
        """A stream that ended without vLLM's usage is charged what was counted on the way."""
        if self._usage_known:
            return
        prompt = self._prompt_seen
        self.record.prompt_tokens = prompt if prompt is not None else self._prompt_estimate()
        self.record.completion_tokens = sum(self._generated.values())

    def charge_hold(self) -> None:
        """A request that ended with nothing to count is charged what it held."""
        if not self._usage_known:
            self.record.prompt_tokens = self._prompt_estimate()
            self.record.completion_tokens = self.max_output

    def _prompt_estimate(self) -> int:
        payload = self.payload
        counted = estimate_tokens(
            payload.get("messages"), payload.get("tools"), payload.get("prompt"),
            payload.get("instructions"), payload.get("input"),  # a Responses API request
        )  # fmt: skip
        return counted + self.service.prompt_overhead(self.record.requested_model)

    def cite(self, answer: str) -> list[dict[str, Any]]:
        """Citations for the answer; also scores its groundedness."""
        assert self.grounding is not None
        hits = self.grounding.hits
        score = groundedness(answer, hits)
        if score is not None:
            self.record.groundedness = score
            self.service.metrics.groundedness.labels(self.alias, self.version).observe(score)
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
        if self.finished:
            return
        self.finished = True
        seconds = time.perf_counter() - self.started
        self.record.status = status
        self.record.error = error
        self.record.latency_ms = seconds * 1000
        metrics, alias, version = self.service.metrics, self.alias, self.version
        metrics.in_flight.labels(alias).dec()
        metrics.requests.labels(alias, version, status_class(status_code)).inc()
        if status == "cancelled":
            metrics.client_disconnects.labels(alias).inc()
        metrics.latency.labels(alias, version).observe(seconds)
        stream = "true" if self.record.stream else "false"
        metrics.overhead.labels(alias, stream).observe(self.overhead_s())
        metrics.tokens.labels(alias, version, "prompt").inc(self.record.prompt_tokens)
        metrics.tokens.labels(alias, version, "completion").inc(self.record.completion_tokens)
        metrics.record_key(
            self.key, status_code, self.record.prompt_tokens, self.record.completion_tokens
        )
        self.service.conversations.record(self.record)

    async def settle_quota(self) -> None:
        """Count the tokens against the key's quota and give back its stream slot; once."""
        admission, self.admission = self.admission, None
        if self.service.quotas is not None and admission is not None:
            tokens = self.record.prompt_tokens + self.record.completion_tokens
            await self.service.quotas.settle(admission, tokens)

    def settle_quota_soon(self) -> None:
        if self.admission is not None:
            task = asyncio.get_running_loop().create_task(self.settle_quota())
            self.service.background.add(task)  # held until done: the loop keeps weak refs
            task.add_done_callback(self.service.background.discard)


def _retrieval(request: ChatCompletionRequest, route: Route) -> RetrievalOptions | bool | None:
    """An experiment arm's retrieval wins over the request's: the arm is what is measured."""
    if route.retrieval is None:
        return request.retrieval
    if route.retrieval is False:
        return False
    return RetrievalOptions(**route.retrieval) if isinstance(route.retrieval, dict) else None


def _sticky_key(conversation_id: str | None, key_id: str | None, completion_id: str) -> str:
    """What picks a canary or an experiment arm: a conversation id is the key's own, so
    another key reusing it is hashed apart and cannot share (or steer) its assignment."""
    if conversation_id is None:
        return key_id or completion_id
    return f"{key_id}/{conversation_id}" if key_id else conversation_id


def route_labels(route: Route) -> tuple[str, str]:
    """(alias, version) metric labels: a request for the base model is its own alias."""
    return route.alias or route.served_name, route.served_name


def _stream_response(
    texts: dict[int, list[str]],
    finish_reasons: dict[int, str | None],
    calls: dict[int, dict[int, dict[str, Any]]] | None = None,
) -> list[dict[str, Any]]:
    response: list[dict[str, Any]] = []
    for index, parts in sorted(texts.items()):
        choice = {
            "index": index,
            "content": "".join(parts),
            "finish_reason": finish_reasons.get(index),
        }
        if calls and calls.get(index):
            choice["tool_calls"] = list(calls[index].values())
        response.append(choice)
    return response


def _add_tool_calls(calls: dict[int, dict[int, dict[str, Any]]], choice: dict[str, Any]) -> None:
    """A stream's tool calls, put together from their deltas (the id and name come once,
    the arguments in pieces), for the conversation row."""
    for delta in (choice.get("delta") or {}).get("tool_calls") or ():
        call = calls.setdefault(choice["index"], {}).setdefault(
            delta.get("index", 0),
            {"id": None, "type": "function", "function": {"name": None, "arguments": ""}},
        )
        call["id"] = delta.get("id") or call["id"]
        function = delta.get("function") or {}
        call["function"]["name"] = function.get("name") or call["function"]["name"]
        call["function"]["arguments"] += function.get("arguments") or ""


def _choice_record(choice: dict[str, Any]) -> dict[str, Any]:
    message = choice.get("message")
    return {
        "index": choice.get("index", 0),
        # A text completion's choice has its text instead of a message.
        "content": (message.get("content") if message else choice.get("text")) or "",
        "finish_reason": choice.get("finish_reason"),
        **({"tool_calls": message["tool_calls"]} if message and message.get("tool_calls") else {}),
    }


def _piece(choice: dict[str, Any]) -> str:
    """The text of one stream choice: a chat delta's content, or a text completion's text."""
    delta = choice.get("delta")
    return (delta.get("content") if delta is not None else choice.get("text")) or ""


def _drop_unasked(body: dict[str, Any]) -> None:
    for name in _VLLM_ONLY_FIELDS:
        if name in body and body[name] is None:
            del body[name]


def _take_fingerprint(held: list[dict[str, Any]], usage_chunk: dict[str, Any]) -> None:
    fingerprint = usage_chunk.get("system_fingerprint")
    if fingerprint is not None:
        for event in held:
            event["system_fingerprint"] = fingerprint
