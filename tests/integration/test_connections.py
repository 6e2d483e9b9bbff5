"""The gateway's client connections: how long an idle one is kept (``keep_alive_s``) and what
a request still open at shutdown gets (``graceful_shutdown_s``), on in-process gateways that
take uvicorn's options from gateway/serve.py as ``loragate serve`` does."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import httpx
import openai

from tests.integration.conftest import BASE_MODEL, sdk_client
from tests.support import ThreadedGateway, count_conversations, create_keys

HEALTH = b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n"


def _ask_health(connection: socket.socket) -> bytes:
    """One request on an open connection; the whole response, read to the end of its body
    (the head and the body can arrive in separate reads)."""
    connection.sendall(HEALTH)
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = connection.recv(65536)
        assert chunk, f"the gateway closed the connection; got {response[:200]!r}"
        response += chunk
    head, body = response.split(b"\r\n\r\n", 1)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += connection.recv(65536)
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    return head + b"\r\n\r\n" + body


def _connect(gateway: ThreadedGateway) -> socket.socket:
    host, port = gateway.base_url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=20)


def test_an_idle_connection_is_closed_after_keep_alive_s(
    gateway_factory: Callable[..., ThreadedGateway],
) -> None:
    gateway = gateway_factory(keep_alive_s=1)
    with _connect(gateway) as connection:
        _ask_health(connection)
        # The gateway hangs up (an empty read) well before the socket's own 20 s timeout.
        assert connection.recv(1) == b""


def test_a_connection_is_reused_within_keep_alive_s(
    gateway_factory: Callable[..., ThreadedGateway],
) -> None:
    """What a proxy that pools connections relies on: at the default (5 s) an idle
    connection would be gone after 6 s; at 60 s it still serves."""
    gateway = gateway_factory(keep_alive_s=60)
    with _connect(gateway) as connection:
        _ask_health(connection)
        time.sleep(6)
        _ask_health(connection)


def _stream_across_shutdown(
    gateway: ThreadedGateway, key: str, tokens: int
) -> tuple[str | None, int]:
    """Streams ``tokens`` tokens, asks the gateway to stop after the first chunk; the finish
    reason the client saw (None when the stream was cut) and the chunks it got."""
    client = sdk_client(gateway.base_url, key)
    stopping = threading.Thread(target=gateway.stop)
    finish, chunks = None, 0
    try:
        stream = client.chat.completions.create(
            model=BASE_MODEL,
            messages=[{"role": "user", "content": "Tell me about the sea."}],
            max_tokens=tokens,
            temperature=0,
            stream=True,
            extra_body={"ignore_eos": True},
        )
        for chunk in stream:
            chunks += 1
            if chunks == 1:
                stopping.start()
            if chunk.choices and chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
    except (openai.APIError, httpx.HTTPError):
        pass  # cut mid-stream: the client sees a broken connection
    stopping.join(timeout=60)
    return finish, chunks


def test_a_stream_open_at_shutdown_finishes_within_graceful_shutdown_s(
    gateway_factory: Callable[..., ThreadedGateway],
) -> None:
    gateway = gateway_factory(graceful_shutdown_s=60)
    database_url = gateway.settings.resolved_database_url
    key = create_keys(database_url)["chat"]
    finish, chunks = _stream_across_shutdown(gateway, key, tokens=48)
    assert finish == "length"
    assert chunks > 2
    assert count_conversations(database_url, "ok") == 1  # recorded before the exit


def test_a_stream_open_at_shutdown_is_cut_when_graceful_shutdown_s_is_0(
    gateway_factory: Callable[..., ThreadedGateway],
) -> None:
    """Cut, the conversation is not lost: it is recorded as cancelled, as when the client
    goes away."""
    gateway = gateway_factory(graceful_shutdown_s=0)
    database_url = gateway.settings.resolved_database_url
    key = create_keys(database_url)["chat"]
    # Long enough that it cannot end before shutdown acts (uvicorn looks every 0.1 s): seen,
    # a stream of 48 tokens on a loaded host finished first.
    finish, _ = _stream_across_shutdown(gateway, key, tokens=2000)
    assert finish is None
    assert count_conversations(database_url) == count_conversations(database_url, "cancelled") == 1
