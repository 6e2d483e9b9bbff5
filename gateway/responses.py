"""vLLM's Responses API behind the gateway: ``POST /v1/responses`` with the keys, model
names, quotas, conversation log and metrics of chat, and ``GET /v1/responses/{id}`` and
``POST /v1/responses/{id}/cancel`` for the key that created the response only.

**Ids.** The gateway draws each response's id (``resp_<32 hex>``) and sends it to vLLM as
``request_id``, vLLM's extension that becomes the response's ``id``: the id a client sees is
the one vLLM keeps, so nothing needs mapping back and forth. A client cannot choose it (a
body with ``request_id`` is refused): an id chosen to be another key's would overwrite that
response in vLLM's store.

**Ownership.** Before vLLM sees a request, its id, key and replica are written to the store
(``core.store.response_owners``). A read or cancel of an id this key did not create, and a
``previous_response_id`` naming one, gets vLLM's own 404 for an unknown id
(``ResponseNotFound``) without vLLM being asked: another key's ids cannot be told from
unknown ones. The replica matters because vLLM keeps stored responses in its memory.

**Log and charging** as chat (``gateway.chat.Call``): a row per response in the chat shape
(``gateway.responses_record``), charged vLLM's usage. A stream settles on its final event
(``response.completed``), which is journaled before it is relayed; one cut short (client
gone, upstream broken) is charged its prompt's estimate and a token per delta relayed, and
logged ``cancelled`` or ``error``. A background response is logged when it is queued,
charged its hold: its text is vLLM's to keep (read it with ``GET``).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import msgspec

from adapters.engine import EngineStream, Replica
from adapters.errors import EngineError, EngineStreamBroken
from core.store.conversations import ConversationRecord
from core.store.keys import Principal
from core.store.response_owners import Owner, ResponseOwners
from gateway.chat import Call, ChatService, Served
from gateway.errors import InvalidRequest, ResponseNotFound
from gateway.http_errors import describe
from gateway.quota_gate import Admission, estimate_tokens
from gateway.responses_record import (
    chat_usage,
    log_status,
    partial_record,
    request_record,
    response_record,
)
from gateway.routing import Route

RESPONSES_PATH = "/v1/responses"
# An id as the gateway draws them (vLLM's own are alike); anything else is unknown at once,
# without a query (a NUL or a 10 kB path would only trouble the store).
_ID = re.compile(r"resp_[0-9A-Za-z_-]{1,59}")
# Stream events that end a response, with the response in its final state.
_FINAL_EVENTS = ("response.completed", "response.incomplete", "response.failed")

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


class ResponsesService:
    def __init__(self, chat: ChatService, owners: ResponseOwners) -> None:
        self.chat = chat  # its engine, router, quotas, log and metrics serve responses too
        self.owners = owners

    # -- create --------------------------------------------------------------------
    async def create(
        self, body: dict[str, Any], principal: Principal, started: float
    ) -> Served[dict[str, Any]] | Served[AsyncIterator[bytes]]:
        call, replica = await self._begin(body, principal, started)
        if body.get("stream"):
            return await self._open_stream(call, replica, started)
        return await self._complete(call, replica)

    async def _complete(self, call: Call, replica: Replica) -> Served[dict[str, Any]]:
        async with call.awaiting_answer():
            answer = await self.chat.engine.chat(call.payload, RESPONSES_PATH, replica)
        answer["model"] = call.route.served_name
        _settle(call, answer)
        await call.settle_quota()
        await self.chat.conversations.durable()  # an acknowledged answer is in the log
        return Served(call.route, answer, call.overhead_s() * 1000)

    async def _open_stream(
        self, call: Call, replica: Replica, started: float
    ) -> Served[AsyncIterator[bytes]]:
        """Open the upstream stream first, so a refusal is still a plain HTTP error."""
        overhead_ms = (time.perf_counter() - started) * 1000
        try:
            with call.waiting_upstream():
                upstream = await self.chat.engine.stream_chat(call.payload, RESPONSES_PATH, replica)
        except EngineError as exc:
            call.finish_error(exc)
            await call.settle_quota()
            raise
        return Served(call.route, self._relay(call, upstream), overhead_ms)

    async def _relay(self, call: Call, upstream: EngineStream) -> AsyncIterator[bytes]:
        """vLLM's events as sent (``event:`` lines too), the model renamed to the served
        version; the final event is journaled before the client has it."""
        outcome: tuple[Any, int, str | None] = ("cancelled", 499, "client went away")
        served = call.route.served_name
        sequence = 0
        texts: list[str] = []  # the text so far, for a stream cut short
        try:
            async for line in _timed(call, upstream.lines()):
                event = _event(line)
                if event is not None:
                    number = event.get("sequence_number")
                    sequence = number if isinstance(number, int) else sequence
                    line = _renamed(line, event, served)
                    await self._follow(call, event, texts)
                yield line
            if not call.finished:
                raise EngineStreamBroken("engine stream ended before response.completed")
        except EngineError as exc:
            info = describe(exc)
            outcome = ("error", info.status_code, info.message)
            self.chat.metrics.upstream_errors.labels(type(exc).__name__).inc()
            yield _error_event(info.message, info.code, sequence + 1)
        finally:
            with anyio.CancelScope(shield=True):
                await upstream.aclose()  # closing mid-body aborts the request in vLLM
            if not call.finished:
                call.record.response = partial_record(texts)
                call.charge_counted()
                call.finish(*outcome)
            with anyio.CancelScope(shield=True):
                await call.settle_quota()

    async def _follow(self, call: Call, event: dict[str, Any], texts: list[str]) -> None:
        """Count what an event produced; on the final one, record and journal the answer."""
        kind = event.get("type")
        if kind in ("response.output_text.delta", "response.function_call_arguments.delta"):
            call.mark_token()
            call.count(0, None, True)
            if kind == "response.output_text.delta":
                texts.append(str(event.get("delta") or ""))
        elif kind in _FINAL_EVENTS and isinstance(event.get("response"), dict):
            _settle(call, event["response"])
            await self.chat.conversations.durable()
        elif kind == "error":
            message = str(event.get("message") or "the engine reported an error")
            call.record.response = partial_record(texts)
            call.charge_counted()
            call.finish("error", 500, message)

    async def _begin(
        self, body: dict[str, Any], principal: Principal, started: float
    ) -> tuple[Call, Replica]:
        """Check, admit, route and claim the id, as chat's ``_begin`` does for a completion
        (a refusal on the way is counted in the request metrics, as chat's)."""
        chat = self.chat
        route: Route | None = None
        admission: Admission | None = None
        response_id = f"resp_{uuid.uuid4().hex}"
        try:
            _check(body)
            previous = await self._previous(body, principal)
            prompt = estimate_tokens(body.get("input"), body.get("instructions"), body.get("tools"))
            overhead = chat.prompt_overhead(body["model"])
            max_output = self._max_output(body, prompt + overhead)
            if chat.quotas is not None:
                hold = prompt + overhead + max_output
                admission = await chat.quotas.admit(principal, bool(body.get("stream")), hold)
            route = await self._route(body["model"], principal, response_id)
            replica = self._replica(route, previous)
            payload = {**body, "model": route.upstream_model, "request_id": response_id}
            self._apply_default_limit(payload, prompt + overhead)
            await self.owners.claim(
                Owner(response_id, principal.key_id, replica.url, route.served_name)
            )
        except Exception as exc:
            chat.count_refused(route, exc, principal)
            if chat.quotas is not None:
                await chat.quotas.settle(admission, 0)
            raise
        record = _record(response_id, body, route, principal, payload)
        call = chat.open_call(route, payload, record, started, None, admission, principal)
        call.max_output, call.prompt_estimate = max_output, prompt
        return call, replica

    async def _route(self, model: str, principal: Principal, response_id: str) -> Route:
        route = await self.chat.router.resolve(model, principal.key_id or response_id)
        if route.is_adapter and self.chat.reconciler is not None:
            await self.chat.reconciler.ensure_serving(
                route.upstream_model, self.chat.limits.adapter_wait_s
            )
        return route

    def _replica(self, route: Route, previous: Owner | None) -> Replica:
        """A follow-up goes where its previous response is kept; others where chat would."""
        if previous is not None:
            return self._kept_at(previous)
        return self.chat.engine.pick(route.upstream_model)

    def _max_output(self, body: dict[str, Any], prompt: int) -> int:
        """The most output tokens the response can make, as chat's ``_max_output``."""
        limit = body.get("max_output_tokens")
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            limit = self.chat.limits.default_max_tokens
        if limit is None:
            limits = self.chat.limits
            limit = limits.reserve_max_tokens or max(limits.context_window - prompt, 1)
        return limit

    def _apply_default_limit(self, payload: dict[str, Any], prompt: int) -> None:
        """``default_max_tokens`` for a response that set no limit, where the prompt leaves
        room for it (else vLLM's own limit, the rest of the window, is the smaller)."""
        default = self.chat.limits.default_max_tokens
        if payload.get("max_output_tokens") is not None or default is None:
            return
        if prompt + default <= self.chat.limits.context_window:
            payload["max_output_tokens"] = default

    async def _previous(self, body: dict[str, Any], principal: Principal) -> Owner | None:
        previous_id = body.get("previous_response_id")
        if previous_id is None:
            return None
        if not isinstance(previous_id, str):
            raise InvalidRequest(
                "previous_response_id must be a string.", param="previous_response_id"
            )
        return await self._owned(previous_id, principal)

    # -- retrieve, cancel ------------------------------------------------------------
    async def retrieve(
        self, response_id: str, principal: Principal, stream: bool, starting_after: int | None
    ) -> dict[str, Any] | AsyncIterator[bytes]:
        """A stored response, or (``stream``) a background one's events, as vLLM has them."""
        owner = await self._owned(response_id, principal)
        replica = self._kept_at(owner)
        query = "?stream=true" if stream else ""
        if stream and starting_after is not None:
            query += f"&starting_after={starting_after}"
        path = f"{RESPONSES_PATH}/{response_id}{query}"
        if stream:
            upstream = await self.chat.engine.open_stream(replica, "GET", path)
            return _renamed_lines(upstream, owner.served_model)
        answer: dict[str, Any] = await self.chat.engine.get_json(path, replica)
        answer["model"] = owner.served_model
        return answer

    async def cancel(self, response_id: str, principal: Principal) -> dict[str, Any]:
        owner = await self._owned(response_id, principal)
        path = f"{RESPONSES_PATH}/{response_id}/cancel"
        answer: dict[str, Any] = await self.chat.engine.post_json(path, None, self._kept_at(owner))
        answer["model"] = owner.served_model
        return answer

    async def _owned(self, response_id: str, principal: Principal) -> Owner:
        owner = None
        if _ID.fullmatch(response_id):
            owner = await self.owners.find(response_id, principal.key_id)
        if owner is None:
            raise ResponseNotFound(response_id)
        return owner

    def _kept_at(self, owner: Owner) -> Replica:
        # A replica no longer configured took its stored responses with it.
        replica = self.chat.engine.replica_at(owner.engine_url)
        if replica is None:
            raise ResponseNotFound(owner.response_id)
        return replica


def _check(body: dict[str, Any]) -> None:
    """Only what the gateway needs itself; vLLM checks the rest and its 400s are relayed."""
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise InvalidRequest("model: a model name is required.", param="model")
    if not isinstance(body.get("stream"), bool | None):  # 1 == True: a tuple test passes it
        raise InvalidRequest("stream must be a boolean.", param="stream")
    if "request_id" in body:
        raise InvalidRequest(
            "request_id is not accepted: the gateway gives each response its id.",
            param="request_id",
        )


def _record(
    response_id: str,
    body: dict[str, Any],
    route: Route,
    principal: Principal,
    payload: dict[str, Any],
) -> ConversationRecord:
    return ConversationRecord(
        id=response_id,
        requested_model=body["model"],
        served_model=route.served_name,
        stream=bool(body.get("stream")),
        request=request_record(payload),
        api_key_id=principal.key_id,
        experiment_id=route.experiment_id,
        arm=route.arm,
    )


def _settle(call: Call, response: dict[str, Any]) -> None:
    """Record a response in its final (or, in the background, queued) state and finish."""
    call.record.response = response_record(response)
    usage = chat_usage(response)
    if usage is not None:
        call.add_usage(usage)
    else:
        call.charge_hold()  # queued in the background: nothing to count yet
    status, error = log_status(response)
    call.finish(status, 200, error)


async def _timed(call: Call, lines: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The upstream lines, with the wait for each one counted as upstream time."""
    while True:
        with call.waiting_upstream():
            try:
                line = await anext(lines)
            except StopAsyncIteration:
                return
        yield line


def _event(line: bytes) -> dict[str, Any] | None:
    if not line.startswith(b"data:"):
        return None
    try:
        event = _decode(line[5:])
    except msgspec.DecodeError as exc:
        raise EngineStreamBroken(f"engine sent an unreadable event: {exc}") from exc
    return event if isinstance(event, dict) else None


def _renamed(line: bytes, event: dict[str, Any], served: str) -> bytes:
    """The event with its response's ``model`` the served version, as the client asked it."""
    response = event.get("response")
    if not isinstance(response, dict) or response.get("model") in (None, served):
        return line
    response["model"] = served
    return b"data: " + _encode(event) + b"\n"


async def _renamed_lines(upstream: EngineStream, served: str) -> AsyncIterator[bytes]:
    try:
        async for line in upstream.lines():
            event = _event(line)
            yield line if event is None else _renamed(line, event, served)
    finally:
        with anyio.CancelScope(shield=True):
            await upstream.aclose()


def _error_event(message: str, code: str | None, sequence: int) -> bytes:
    """OpenAI's stream error event, which the SDKs raise."""
    event = {"type": "error", "code": code, "message": message, "param": None,
             "sequence_number": sequence}  # fmt: skip
    return b"event: error\ndata: " + _encode(event) + b"\n\n"
