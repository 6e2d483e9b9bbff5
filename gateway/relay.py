"""vLLM routes the gateway relays as they are: ``/tokenize``, ``/detokenize`` and
``/v1/responses``, behind the gateway's keys and model names.

The ``model`` a client names is resolved like chat's (an alias to the version it serves)
before vLLM sees it. Responses also go through the key's quotas (charged vLLM's usage) and
the request metrics, but are not written to the conversation log: its rows, the review
queue and the trainer read chat messages, which the Responses API does not have.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import msgspec

from adapters.engine import EngineClient, EngineStream
from core.store.keys import Principal
from gateway.errors import InvalidRequest
from gateway.http_errors import describe
from gateway.metrics import GatewayMetrics, status_class
from gateway.quota_gate import Admission, QuotaGate, estimate_tokens
from gateway.routing import ModelRouter, Route

_decode = msgspec.json.Decoder().decode


class EngineRelay:
    def __init__(
        self,
        engine: EngineClient,
        router: ModelRouter,
        metrics: GatewayMetrics,
        quotas: QuotaGate | None = None,
    ) -> None:
        self.engine = engine
        self.router = router
        self.metrics = metrics
        self.quotas = quotas

    async def tokenizer(self, path: str, body: dict[str, Any], principal: Principal) -> Any:
        """``/tokenize`` or ``/detokenize``: the model's tokenizer, through vLLM."""
        payload = dict(body)
        if isinstance(payload.get("model"), str):
            payload["model"] = (await self._route(payload, principal)).upstream_model
        return await self.engine.post_json(path, payload, self.engine.pick())

    async def responses(
        self, body: dict[str, Any], principal: Principal
    ) -> dict[str, Any] | AsyncIterator[bytes]:
        """``POST /v1/responses``: a body, or (``stream: true``) vLLM's SSE bytes as sent."""
        started = time.perf_counter()
        route = await self._route(body, principal)
        payload = {**body, "model": route.upstream_model}
        admission: Admission | None = None
        if self.quotas is not None:
            hold = estimate_tokens(body.get("input"), body.get("instructions"))
            hold += int(body.get("max_output_tokens") or 0)
            admission = await self.quotas.admit(principal, bool(body.get("stream")), hold)
        try:
            if body.get("stream"):
                stream = await self.engine.stream_chat(payload, "/v1/responses")
                return self._relay(stream, route, admission, started)
            answer: dict[str, Any] = await self.engine.chat(payload, "/v1/responses")
        except Exception as exc:
            await self._finish(route, admission, started, describe(exc).status_code, 0)
            raise
        answer["model"] = route.served_name
        await self._finish(route, admission, started, 200, _tokens(answer.get("usage")))
        return answer

    async def _relay(
        self, stream: EngineStream, route: Route, admission: Admission | None, started: float
    ) -> AsyncIterator[bytes]:
        tokens, status = 0, 499
        try:
            async for line in stream.lines():
                if line.startswith(b"data:") and b'"response.completed"' in line:
                    event = _decode(line[5:])
                    tokens = _tokens((event.get("response") or {}).get("usage"))
                yield line
            status = 200
        finally:
            with anyio.CancelScope(shield=True):
                await stream.aclose()
                await self._finish(route, admission, started, status, tokens)

    async def _route(self, body: dict[str, Any], principal: Principal) -> Route:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise InvalidRequest("model: a model name is required.", param="model")
        return await self.router.resolve(model, principal.key_id or uuid.uuid4().hex)

    async def _finish(
        self, route: Route, admission: Admission | None, started: float, status: int, tokens: int
    ) -> None:
        alias, version = route.alias or route.served_name, route.served_name
        self.metrics.requests.labels(alias, version, status_class(status)).inc()
        self.metrics.latency.labels(alias, version).observe(time.perf_counter() - started)
        if self.quotas is not None:
            await self.quotas.settle(admission, tokens)


def _tokens(usage: Any) -> int:
    return int(usage.get("total_tokens") or 0) if isinstance(usage, dict) else 0
