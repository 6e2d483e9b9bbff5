"""What a request is charged, however it ends, and who shares a conversation id (issue 19).

``ChatService`` against a stand-in vLLM: a real aiohttp server on loopback that streams
chunks as vLLM does (with ``continuous_usage_stats`` when asked for it), then stops, fails or
holds the request until the test lets it go. The quota gate counts in memory. The real vLLM
is in tests/integration/test_charging_live.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from adapters.engine import EngineClient, EngineClientConfig
from core.sections import FlagRules
from core.store.conversations import ConversationLog, ConversationRecord
from core.store.db import Database
from core.store.keys import Principal, Quota
from gateway.chat import ChatLimits, ChatService
from gateway.errors import QuotaExhausted, RateLimited
from gateway.flagging import Flagger
from gateway.metrics import GatewayMetrics
from gateway.quota_counters import MemoryCounters
from gateway.quota_gate import QuotaGate, estimate_tokens
from gateway.routing import Route
from gateway.schemas import ChatCompletionRequest
from tests.support import free_port

MODEL = "SmolLM2-135M-Instruct"
PROMPT_TOKENS = 20  # what the stand-in says the prompt was


@dataclass
class StandIn:
    """vLLM's chat endpoint, scripted: ``chunks`` content chunks, then ``ending``."""

    chunks: int = 3
    ending: str = "hold"  # hold (until released) | error | done
    counts: bool = True  # honours continuous_usage_stats, as vLLM does
    release: asyncio.Event = field(default_factory=asyncio.Event)
    entered: int = 0  # requests that reached it
    bodies: list[dict[str, Any]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        self.entered += 1
        if not body.get("stream"):
            if self.ending == "hold":
                await self.release.wait()
            return web.json_response(_completion(body))
        asked = (body.get("stream_options") or {}).get("continuous_usage_stats")
        continuous = self.counts and bool(asked)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(_chunk({"role": "assistant", "content": ""}, 0, continuous))
        for index in range(self.chunks):
            await response.write(_chunk({"content": f"w{index} "}, index + 1, continuous))
        if self.ending == "error":
            await response.write(_event({"error": {"message": "engine died", "code": 500}}))
        elif self.ending == "hold":
            await self.release.wait()
        else:
            usage = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": self.chunks}
            await response.write(_event({"choices": [], "usage": usage}) + b"data: [DONE]\n\n")
        return response


def _event(event: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(event).encode() + b"\n\n"


def _chunk(delta: dict[str, Any], generated: int, continuous: bool) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": None}
    event: dict[str, Any] = {"object": "chat.completion.chunk", "choices": [choice]}
    if continuous:  # vLLM: the prompt and this choice's tokens so far, in every chunk
        event["usage"] = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": generated,
                          "total_tokens": PROMPT_TOKENS + generated}  # fmt: skip
    return _event(event)


@asynccontextmanager
async def served(stand_in: StandIn) -> AsyncIterator[EngineClient]:
    """An engine client of ``stand_in``, served on a free loopback port and marked healthy;
    both closed on the way out."""
    app = web.Application()
    app.router.add_route("POST", "/v1/chat/completions", stand_in.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    engine = EngineClient(EngineClientConfig(urls=(f"http://127.0.0.1:{port}",)))
    engine.replicas[0].healthy = True
    try:
        yield engine
    finally:
        await engine.close()
        await runner.cleanup()


def _completion(body: dict[str, Any]) -> dict[str, Any]:
    n = body.get("n") or 1
    return {
        "object": "chat.completion",
        "choices": [{"index": i, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "Hi."}} for i in range(n)],
        "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": 2 * n},
    }  # fmt: skip


class Usage:
    """Monthly usage without a store: what the test says key_a used, plus what was settled."""

    def __init__(self, stored: int = 0) -> None:
        self.by_key = {"key_a": stored}

    @property
    def stored(self) -> int:
        return self.by_key["key_a"]

    async def tokens(self, key_id: str) -> int:
        return self.by_key.get(key_id, 0)

    def add(self, key_id: str, tokens: int) -> None:
        self.by_key[key_id] = self.by_key.get(key_id, 0) + tokens


class Router:
    """Every model is the base model; remembers the sticky keys it was given."""

    def __init__(self) -> None:
        self.sticky_keys: list[str] = []

    async def resolve(self, requested: str, sticky_key: str) -> Route:
        self.sticky_keys.append(sticky_key)
        return Route(requested, requested, requested)


class Records:
    """The conversation log, in a list."""

    def __init__(self) -> None:
        self.records: list[ConversationRecord] = []

    def record(self, record: ConversationRecord) -> None:
        self.records.append(record)

    async def durable(self) -> None:
        pass


@dataclass
class Harness:
    service: ChatService
    stand_in: StandIn
    usage: Usage
    records: Records
    router: Router

    @property
    def gate(self) -> QuotaGate:
        assert self.service.quotas is not None
        return self.service.quotas

    async def tokens_last_minute(self, key: str = "key_a") -> int:
        return await self.gate.counters.used(f"tokens:{key}", 60)


@pytest.fixture
async def harness() -> AsyncIterator[Callable[..., Awaitable[Harness]]]:
    servers = AsyncExitStack()
    stand_ins: list[StandIn] = []

    async def build(stand_in: StandIn | None = None, stored: int = 0) -> Harness:
        stand_in = stand_in or StandIn()
        stand_ins.append(stand_in)
        engine = await servers.enter_async_context(served(stand_in))
        usage, records, router = Usage(stored), Records(), Router()
        metrics = GatewayMetrics(CollectorRegistry())
        gate = QuotaGate(MemoryCounters(), usage, Quota(), metrics)  # type: ignore[arg-type]
        service = ChatService(
            engine, router, records, metrics, ChatLimits(2048, 100, 8), quotas=gate,  # type: ignore[arg-type]
        )  # fmt: skip
        return Harness(service, stand_in, usage, records, router)

    yield build
    for stand_in in stand_ins:
        stand_in.release.set()
    await servers.aclose()


def _request(**fields: Any) -> ChatCompletionRequest:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Say hi."}], **fields}
    return msgspec.convert(body, ChatCompletionRequest)


def _key(key_id: str = "key_a", **quota: int) -> Principal:
    return Principal(key_id, "chat", Quota(**(quota or {"tokens_per_minute": 100_000})))


async def _read(stream: AsyncIterator[bytes], events: int) -> None:
    """Read ``events`` SSE events, then go away as a client does (the relay is closed)."""
    read = 0
    async for _ in stream:
        read += 1
        if read == events:
            break
    await stream.aclose()  # type: ignore[attr-defined]


async def _until(check: Callable[[], object]) -> None:
    """Wait (not time) until ``check()`` holds."""
    for _ in range(3000):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("gave up waiting")


# -- charged, however it ends ---------------------------------------------------------------
async def test_a_stream_the_client_drops_is_charged_what_it_produced(harness) -> None:
    h = await harness(StandIn(chunks=12, ending="hold"))
    request = _request(stream=True, max_tokens=64)
    served = await h.service.stream(request, _key(), time.perf_counter())
    await _read(served.body, 1 + 5)  # the role chunk and 5 content chunks
    (record,) = h.records.records
    assert record.status == "cancelled"
    assert h.stand_in.bodies[0]["stream_options"]["continuous_usage_stats"] is True
    # vLLM's running count of the last chunk relayed: the prompt and 5 tokens.
    assert (record.prompt_tokens, record.completion_tokens) == (PROMPT_TOKENS, 5)
    assert await h.tokens_last_minute() == PROMPT_TOKENS + 5
    assert h.usage.stored == PROMPT_TOKENS + 5


async def test_without_vllms_count_a_dropped_stream_is_charged_a_token_per_chunk(
    harness,
) -> None:
    # An engine that ignores continuous_usage_stats (an older vLLM, another server).
    h = await harness(StandIn(chunks=12, ending="hold", counts=False))
    request = _request(stream=True, max_tokens=64)
    served = await h.service.stream(request, _key(), time.perf_counter())
    await _read(served.body, 1 + 4)
    (record,) = h.records.records
    estimate = estimate_tokens(h.stand_in.bodies[0]["messages"])
    assert (record.prompt_tokens, record.completion_tokens) == (estimate, 4)
    assert h.usage.stored == estimate + 4


async def test_a_stream_broken_upstream_is_charged_what_it_produced(harness) -> None:
    h = await harness(StandIn(chunks=7, ending="error"))
    request = _request(stream=True, max_tokens=64)
    served = await h.service.stream(request, _key(), time.perf_counter())
    events = [event async for event in served.body]
    assert b"engine died" in events[-1]
    (record,) = h.records.records
    assert record.status == "error"
    assert (record.prompt_tokens, record.completion_tokens) == (PROMPT_TOKENS, 7)
    assert h.usage.stored == PROMPT_TOKENS + 7


async def test_an_abandoned_plain_request_is_charged_its_hold(harness) -> None:
    h = await harness(StandIn(ending="hold"))
    request = _request(max_tokens=16, n=2)
    task = asyncio.create_task(h.service.complete(request, _key(), time.perf_counter()))
    await _until(lambda: h.stand_in.entered)  # vLLM has it; the client goes before the answer
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.gather(*h.service.background)
    (record,) = h.records.records
    assert record.status == "cancelled"
    estimate = estimate_tokens(h.stand_in.bodies[0]["messages"])
    assert (record.prompt_tokens, record.completion_tokens) == (estimate, 16 * 2)
    assert h.usage.stored == estimate + 32
    assert await h.tokens_last_minute() == estimate + 32


async def test_a_finished_request_is_charged_vllms_usage(harness) -> None:
    h = await harness(StandIn(chunks=3, ending="done"))
    served = await h.service.stream(_request(stream=True), _key(), time.perf_counter())
    events = [event async for event in served.body]
    assert not any(b'"usage"' in event for event in events)  # not asked for: not sent
    (record,) = h.records.records
    assert record.status == "ok" and record.completion_tokens == 3
    assert h.usage.stored == PROMPT_TOKENS + 3


# -- held at admission ----------------------------------------------------------------------
async def test_concurrent_requests_cannot_overrun_a_small_budget(harness) -> None:
    """The issue's repro: 40 tokens left, 8 requests at once; all 8 were let in."""
    h = await harness(StandIn(ending="done"), stored=960)
    key = _key(monthly_tokens=1000)
    request = _request(max_tokens=10)
    # One answer from another key shows the model's prompts are 10 tokens over the estimate
    # of their text (the stand-in's chat template): later holds include them.
    await h.service.complete(request, _key("key_w"), time.perf_counter())
    h.stand_in.ending = "hold"
    hold = estimate_tokens(request.messages) + 10 + 10
    assert hold == 30  # the test's arithmetic: one hold fits in the 40 left, two do not
    tasks = [
        asyncio.create_task(h.service.complete(request, key, time.perf_counter())) for _ in range(8)
    ]
    await _until(lambda: sum(task.done() for task in tasks) + h.stand_in.entered == 1 + 8)
    assert h.stand_in.entered == 1 + 1
    assert (await h.gate.usage("key_a"))["tokens_held"] == hold
    h.stand_in.release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    refused = [result for result in results if isinstance(result, RateLimited)]
    assert len(refused) == 7 and all(exc.limit == "budget" for exc in refused)
    assert h.usage.stored == 960 + PROMPT_TOKENS + 2 <= 1000  # settled to the real count
    assert (await h.gate.usage("key_a"))["tokens_held"] == 0
    with pytest.raises(QuotaExhausted):  # 18 left: less than another request may use
        await h.service.complete(request, key, time.perf_counter())


async def test_the_hold_is_max_tokens_times_n_or_the_rest_of_the_context(harness) -> None:
    h = await harness(StandIn(ending="done"))
    held: list[int] = []
    admit = h.gate.admit

    async def spy(principal: Principal, stream: bool, hold: int = 0) -> Any:
        held.append(hold)
        return await admit(principal, stream, hold)

    h.gate.admit = spy  # type: ignore[method-assign]
    request = _request(max_tokens=16, n=3)
    await h.service.complete(request, _key(), time.perf_counter())
    await h.service.complete(_request(), _key(), time.perf_counter())
    h.service.limits = replace(h.service.limits, default_max_tokens=None)
    await h.service.complete(_request(), _key(), time.perf_counter())
    estimate = estimate_tokens(request.messages)
    overhead = h.service.prompt_overhead(MODEL)  # learnt from vLLM's count of the first
    assert held == [
        estimate + 48,
        estimate + overhead + 512,  # no max_tokens: the default output limit
        2048,  # and without a default: all the context window
    ]


async def test_a_tokens_per_minute_hold_is_settled_to_its_real_size(harness) -> None:
    h = await harness(StandIn(ending="done"))
    key = _key(tokens_per_minute=120)
    big, small = _request(max_tokens=60), _request(max_tokens=40)
    assert estimate_tokens(big.messages) == 10  # the test's arithmetic
    await h.service.complete(big, key, time.perf_counter())  # holds 70, uses 22
    await h.service.complete(big, key, time.perf_counter())  # holds 80 (the prompt was 20)
    assert await h.tokens_last_minute() == 2 * (PROMPT_TOKENS + 2)
    with pytest.raises(RateLimited) as refused:  # 44 used + 80 held > 120
        await h.service.complete(big, key, time.perf_counter())
    assert refused.value.limit == "tpm"
    await h.service.complete(small, key, time.perf_counter())  # 44 + 60 fits


# -- conversation ids belong to their key ---------------------------------------------------
async def test_another_key_reusing_a_conversation_id_gets_its_own_arm(harness) -> None:
    h = await harness(StandIn(ending="done"))
    request = _request(conversation_id="shared-1")
    for key in ("key_a", "key_b", "key_a"):
        await h.service.complete(request, _key(key), time.perf_counter())
    first, other, again = h.router.sticky_keys
    assert first == again and first != other
    assert "shared-1" in first and "shared-1" in other


async def test_another_key_asking_again_does_not_flag_a_retry(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'retry.db'}")
    await db.migrate()
    log = ConversationLog(db)
    log.start()
    try:
        turn = {"messages": [{"role": "user", "content": "Tell me about owls."}]}

        def asked(completion_id: str, key_id: str) -> ConversationRecord:
            record = ConversationRecord(
                completion_id, MODEL, MODEL, False, turn, conversation_id="c-1", api_key_id=key_id,
                response=[{"index": 0, "content": "Owls hoot."}],
            )  # fmt: skip
            log.record(record)
            return record

        asked("cmpl-a", "key_a")
        by_b = asked("cmpl-b", "key_b")
        again_by_a = asked("cmpl-a2", "key_a")
        await log.flush()
        flagger = Flagger(db, FlagRules())
        assert await flagger._retried_turn(by_b) is None  # B's own conversation
        retried = await flagger._retried_turn(again_by_a)
        assert retried is not None and retried.completion_id == "cmpl-a"
    finally:
        await log.close()
        await db.dispose()
