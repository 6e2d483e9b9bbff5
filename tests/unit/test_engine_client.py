"""The engine client against a stand-in OpenAI upstream: a real aiohttp server on loopback.

The real vLLM server is covered by tests/integration; these pin down edge cases that a
healthy vLLM rarely produces: an error event mid-stream, a stream cut before [DONE], replica
selection, and how upstream statuses become typed errors.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from adapters.engine import EngineClient, EngineClientConfig
from adapters.errors import EngineRejected, EngineStreamBroken, EngineTimeout, EngineUnavailable
from tests.support import free_port

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def upstream() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """Start a loopback server whose every request goes to ``handler``; gives its URL."""
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


def _answer(status: int = 200, body: bytes = b"", **json_body: object) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        if json_body:
            return web.json_response(json_body, status=status)
        return web.Response(status=status, body=body)

    return handler


def _client(*urls: str, timeout_s: float = 300.0) -> EngineClient:
    client = EngineClient(EngineClientConfig(urls=urls, request_timeout_s=timeout_s))
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


async def test_stream_yields_events_until_done(upstream) -> None:
    body = _sse({"choices": [{"index": 0, "delta": {"content": "a"}}]}, {"choices": []})
    client = _client(await upstream(_answer(body=body)))
    events = await _collect(client)
    assert len(events) == 2
    await client.close()


async def test_a_finished_stream_gives_its_connection_back(upstream) -> None:
    peers: set[object] = set()

    async def handler(request: web.Request) -> web.Response:
        peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        return web.Response(body=_sse({"choices": []}))

    client = _client(await upstream(handler))
    for _ in range(3):
        await _collect(client)
    assert len(peers) == 1, "each stream opened a new connection"
    await client.close()


async def test_error_event_mid_stream_raises_rejected(upstream) -> None:
    body = _sse({"choices": []}, {"error": {"message": "boom", "code": 500}}, done=False)
    client = _client(await upstream(_answer(body=body)))
    with pytest.raises(EngineRejected, match="boom"):
        await _collect(client)
    await client.close()


async def test_stream_cut_before_done_is_broken(upstream) -> None:
    client = _client(await upstream(_answer(body=_sse({"choices": []}, done=False))))
    with pytest.raises(EngineStreamBroken):
        await _collect(client)
    await client.close()


async def test_an_event_that_is_not_json_is_broken(upstream) -> None:
    client = _client(await upstream(_answer(body=b"data: {not json\n\ndata: [DONE]\n\n")))
    with pytest.raises(EngineStreamBroken, match="unreadable"):
        await _collect(client)
    await client.close()


async def test_an_upstream_that_stops_answering_times_out(upstream) -> None:
    async def silent(request: web.Request) -> web.Response:
        await asyncio.sleep(1.5)
        return web.Response()

    client = _client(await upstream(silent), timeout_s=0.3)
    with pytest.raises(EngineTimeout):
        await client.chat({"model": "m"})
    assert client.ready, "a slow replica is not a dead one"
    await client.close()


@pytest.mark.parametrize(
    ("status", "error"), [(400, EngineRejected), (404, EngineRejected), (500, EngineUnavailable)]
)
async def test_upstream_status_becomes_typed_error(
    upstream, status: int, error: type[Exception]
) -> None:
    payload = {"message": "nope", "param": "max_tokens", "code": status}
    client = _client(await upstream(_answer(status, error=payload)))
    with pytest.raises(error):
        await client.chat({"model": "m"})
    await client.close()


async def test_rejection_keeps_status_and_param(upstream) -> None:
    payload = {"message": "too long", "param": "max_tokens", "code": 400}
    client = _client(await upstream(_answer(400, error=payload)))
    with pytest.raises(EngineRejected) as caught:
        await client.chat({"model": "m"})
    assert (caught.value.status_code, caught.value.param) == (400, "max_tokens")
    await client.close()


async def test_a_plain_text_error_page_is_kept_readable(upstream) -> None:
    client = _client(await upstream(_answer(502, body=b"<html>bad gateway</html>")))
    with pytest.raises(EngineUnavailable, match="bad gateway"):
        await client.chat({"model": "m"})
    await client.close()


async def test_connection_refused_marks_the_replica_down() -> None:
    client = _client(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    with pytest.raises(EngineUnavailable):
        await client.chat({"model": "m"})
    assert not client.ready
    with pytest.raises(EngineUnavailable, match="no engine replica is healthy"):
        client.pick()
    await client.close()


async def test_requests_go_to_the_least_busy_healthy_replica() -> None:
    client = _client("http://a", "http://b", "http://c")
    a, b, c = client.replicas
    a.in_flight, b.in_flight, c.in_flight = 3, 1, 0
    c.healthy = False
    assert client.pick() is b
    await client.close()


async def test_health_probe_follows_the_health_endpoint(upstream) -> None:
    client = _client(await upstream(_answer(200)), await upstream(_answer(503)))
    await client.check_health()
    assert [replica.healthy for replica in client.replicas] == [True, False]
    await client.close()


async def test_the_request_carries_the_key_and_a_json_body(upstream) -> None:
    seen: dict[str, object] = {}

    async def handler(request: web.Request) -> web.Response:
        seen["auth"] = request.headers.get("Authorization")
        seen["type"] = request.content_type
        seen["body"] = await request.json()
        return web.json_response({"ok": True})

    url = await upstream(handler)
    client = EngineClient(EngineClientConfig(urls=(url,), api_key="sk-up"))
    client.replicas[0].healthy = True
    assert await client.chat({"model": "m", "messages": []}) == {"ok": True}
    assert seen == {"auth": "Bearer sk-up", "type": "application/json",
                    "body": {"model": "m", "messages": []}}  # fmt: skip
    await client.close()
