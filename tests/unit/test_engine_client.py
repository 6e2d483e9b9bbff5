"""The engine client against a stand-in OpenAI upstream (httpx MockTransport).

The real vLLM server is covered by tests/integration; these pin down edge cases that a
healthy vLLM rarely produces: an error event mid-stream, a stream cut before [DONE], replica
selection, and how upstream statuses become typed errors.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from adapters.engine import EngineClient, EngineClientConfig
from adapters.errors import EngineRejected, EngineStreamBroken, EngineUnavailable

Handler = Callable[[httpx.Request], httpx.Response]


def _client(handler: Handler, urls: tuple[str, ...] = ("http://a",)) -> EngineClient:
    client = EngineClient(EngineClientConfig(urls=urls), transport=httpx.MockTransport(handler))
    for replica in client.replicas:
        replica.healthy = True
    return client


def _sse(*events: object, done: bool = True) -> bytes:
    lines = [f"data: {json.dumps(event)}\n\n" for event in events]
    if done:
        lines.append("data: [DONE]\n\n")
    return "".join(lines).encode()


async def _collect(client: EngineClient) -> list[dict[str, object]]:
    stream = await client.stream_chat({"model": "m", "messages": []})
    try:
        return [event async for event in stream.events()]
    finally:
        await stream.aclose()


async def test_stream_yields_events_until_done() -> None:
    body = _sse({"choices": [{"index": 0, "delta": {"content": "a"}}]}, {"choices": []})
    client = _client(lambda request: httpx.Response(200, content=body))
    events = await _collect(client)
    assert len(events) == 2
    await client.close()


async def test_error_event_mid_stream_raises_rejected() -> None:
    body = _sse({"choices": []}, {"error": {"message": "boom", "code": 500}}, done=False)
    client = _client(lambda request: httpx.Response(200, content=body))
    with pytest.raises(EngineRejected, match="boom"):
        await _collect(client)
    await client.close()


async def test_stream_cut_before_done_is_broken() -> None:
    body = _sse({"choices": []}, done=False)
    client = _client(lambda request: httpx.Response(200, content=body))
    with pytest.raises(EngineStreamBroken):
        await _collect(client)
    await client.close()


@pytest.mark.parametrize(
    ("status", "error"), [(400, EngineRejected), (404, EngineRejected), (500, EngineUnavailable)]
)
async def test_upstream_status_becomes_typed_error(status: int, error: type[Exception]) -> None:
    payload = {"error": {"message": "nope", "param": "max_tokens", "code": status}}
    client = _client(lambda request: httpx.Response(status, json=payload))
    with pytest.raises(error):
        await client.chat({"model": "m"})
    await client.close()


async def test_rejection_keeps_status_and_param() -> None:
    payload = {"error": {"message": "too long", "param": "max_tokens", "code": 400}}
    client = _client(lambda request: httpx.Response(400, json=payload))
    with pytest.raises(EngineRejected) as caught:
        await client.chat({"model": "m"})
    assert (caught.value.status_code, caught.value.param) == (400, "max_tokens")
    await client.close()


async def test_connection_refused_marks_the_replica_down() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    client = _client(refuse)
    with pytest.raises(EngineUnavailable):
        await client.chat({"model": "m"})
    assert not client.ready
    with pytest.raises(EngineUnavailable, match="no engine replica is healthy"):
        client.pick()
    await client.close()


async def test_requests_go_to_the_least_busy_healthy_replica() -> None:
    client = _client(
        lambda request: httpx.Response(200, json={}), urls=("http://a", "http://b", "http://c")
    )
    a, b, c = client.replicas
    a.in_flight, b.in_flight, c.in_flight = 3, 1, 0
    c.healthy = False
    assert client.pick() is b
    await client.close()


async def test_health_probe_follows_the_health_endpoint() -> None:
    statuses = {"http://a/health": 200, "http://b/health": 503}
    client = _client(
        lambda request: httpx.Response(statuses[str(request.url)]), urls=("http://a", "http://b")
    )
    await client.check_health()
    assert [replica.healthy for replica in client.replicas] == [True, False]
    await client.close()
