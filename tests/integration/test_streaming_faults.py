"""What happens when a stream is cut: by the client, by a dying vLLM, by a stop signal."""

from __future__ import annotations

import json
import os
import signal
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.faults import TcpProxy
from tests.integration.conftest import BASE_MODEL, EmbeddedServer
from tests.support import (
    ThreadedGateway,
    count_conversations,
    create_keys,
    wait_for_conversation,
    wait_until,
)
from trainer.sample import sample_adapter

LONG_ANSWER = {
    "model": BASE_MODEL,
    "messages": [{"role": "user", "content": "Tell me a very long story."}],
    "max_tokens": 1800,
    "ignore_eos": True,  # vLLM extension: keep generating so the request is surely running
    "stream": True,
}


def _open_long_stream(
    server: EmbeddedServer,
) -> tuple[httpx.Client, httpx.Response, Iterator[str], str]:
    """A long stream, with its first event read. Keep the line iterator alive: when httpx
    finalises it, it closes the response, which is a client disconnect."""
    client = httpx.Client(timeout=120)
    request = client.build_request(
        "POST",
        f"{server.base_url}/v1/chat/completions",
        json=LONG_ANSWER,
        headers={"Authorization": f"Bearer {server.keys['chat']}"},
    )
    response = client.send(request, stream=True)
    assert response.status_code == 200
    lines = response.iter_lines()
    first = next(line for line in lines if line.startswith("data:"))
    return client, response, lines, json.loads(first[5:])["id"]


def test_client_disconnect_cancels_the_vllm_request(embedded_server: EmbeddedServer) -> None:
    embedded_server.wait_running_requests(0, 60, "an idle engine")
    client, response, lines, completion_id = _open_long_stream(embedded_server)
    embedded_server.wait_running_requests(1, 30, "vLLM to report the stream as running")

    next(lines)  # the stream is still flowing
    response.close()
    client.close()

    # 1800 tokens take vLLM on CPU far longer than this wait: reaching zero means it aborted.
    embedded_server.wait_running_requests(0, 15, "vLLM to abort the request")
    row = wait_for_conversation(embedded_server.database_url, completion_id)
    assert row.status == "cancelled"
    assert row.response[0]["content"]  # what was streamed before the client left is kept


def test_client_leaving_a_non_streaming_request_cancels_it_too(
    embedded_server: EmbeddedServer,
) -> None:
    embedded_server.wait_running_requests(0, 60, "an idle engine")
    body = {**LONG_ANSWER, "stream": False}
    headers = {"Authorization": f"Bearer {embedded_server.keys['chat']}"}
    with pytest.raises(httpx.ReadTimeout):  # the client gives up and hangs up
        httpx.post(
            f"{embedded_server.base_url}/v1/chat/completions", json=body, headers=headers, timeout=8
        )
    embedded_server.wait_running_requests(0, 15, "vLLM to abort the request")
    assert count_conversations(embedded_server.database_url, "cancelled") >= 1


def test_a_stalled_vllm_gets_a_clean_timeout_then_recovers(
    embedded_server: EmbeddedServer,
    gateway_factory: Callable[..., ThreadedGateway],
    tmp_path: Path,
) -> None:
    """vLLM stops sending without closing (a TCP proxy holds its bytes): a plain request gets
    504 engine_timeout, a stream an SSE error event and no [DONE]; both rows end as errors."""
    engine_port = int(embedded_server.engine_url.rsplit(":", 1)[1])
    proxy = TcpProxy(engine_port).start()
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'stall.db'}"
    keys = create_keys(database_url)
    gateway = gateway_factory(engine_urls=f"http://127.0.0.1:{proxy.port}",
                              engine_request_timeout_s=2, database_url=database_url)  # fmt: skip
    headers = {"Authorization": f"Bearer {keys['chat']}"}
    url = f"{gateway.base_url}/v1/chat/completions"
    try:
        proxy.stall()
        response = httpx.post(url, json={**LONG_ANSWER, "stream": False}, headers=headers,
                              timeout=60)  # fmt: skip
        assert response.status_code == 504
        assert response.json()["error"]["code"] == "engine_timeout"
        wait_until(lambda: count_conversations(database_url, "error") == 1, 30, "its error row")
        # The timeout hangs up on vLLM, which aborts the request: the engine is not left busy.
        embedded_server.wait_running_requests(0, 60, "vLLM to abort the timed-out request")
        proxy.resume()
        # Until the next health probe gets through, the stalled replica stays marked down and
        # a request is refused; each probe refused (or cut by the 2 s timeout) is one more
        # error row, rightly so (CI once saw 8). The stream's is counted once they are written.
        probes: list[bool] = []
        wait_until(lambda: _answers(url, headers, probes), 60, "the engine to answer again")
        wait_until(lambda: count_conversations(database_url) == 1 + len(probes), 30, "probe rows")
        errors_before_the_stream = count_conversations(database_url, "error")
        assert errors_before_the_stream == 1 + probes.count(False)

        with httpx.stream("POST", url, json=LONG_ANSWER, headers=headers, timeout=60) as stream:
            lines = (line for line in stream.iter_lines() if line.startswith("data:"))
            first = json.loads(next(lines)[5:])
            while not json.loads(next(lines)[5:])["choices"][0]["delta"].get("content"):
                pass  # past the role chunk, to some text
            proxy.stall()
            rest = [line[5:].strip() for line in lines]
        assert rest[-1] != "[DONE]"
        assert json.loads(rest[-1])["error"]["code"] == "engine_timeout"
        proxy.resume()
        row = wait_for_conversation(database_url, first["id"])
        assert row.status == "error" and row.response[0]["content"]
        assert count_conversations(database_url, "error") == errors_before_the_stream + 1
        wait_until(lambda: _answers(url, headers), 60, "the engine to answer again")
    finally:
        proxy.close()


def _answers(url: str, headers: dict[str, str], outcomes: list[bool] | None = None) -> bool:
    body = {"model": BASE_MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    answered = httpx.post(url, json=body, headers=headers, timeout=30).status_code == 200
    if outcomes is not None:
        outcomes.append(answered)
    return answered


@pytest.mark.destructive(order=1)
def test_vllm_dying_mid_stream_gives_an_sse_error_then_recovers(
    embedded_server: EmbeddedServer, prepared_model: Path, tmp_path: Path
) -> None:
    admin = {"Authorization": f"Bearer {embedded_server.keys['admin']}"}
    lora = sample_adapter(tmp_path / "lora", prepared_model, seed=11)
    published = httpx.post(
        f"{embedded_server.base_url}/v1/admin/adapters",
        json={"path": str(lora), "alias": "faults"},
        headers=admin,
    ).json()
    client = embedded_server.client(timeout=120)
    ask = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    assert client.chat.completions.create(model="faults", **ask).model == published["name"]
    stream = client.chat.completions.create(
        model=BASE_MODEL,
        messages=LONG_ANSWER["messages"],  # type: ignore[arg-type]
        max_tokens=1800,
        stream=True,
        extra_body={"ignore_eos": True},
    )
    received = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            received.append(chunk)
            if len(received) == 3:
                os.kill(embedded_server.engine_pid(), signal.SIGKILL)
    assert "stream" in caught.value.message.lower()

    row = wait_for_conversation(embedded_server.database_url, received[0].id)
    assert row.status == "error"
    assert row.error

    # The supervisor restarts vLLM; the gateway becomes ready again and serves.
    wait_until(lambda: not embedded_server.ready(), 30, "the gateway to notice the engine is gone")
    # Publishing while vLLM is down is accepted; the version loads when vLLM is back.
    late = httpx.post(
        f"{embedded_server.base_url}/v1/admin/adapters",
        json={
            "path": str(sample_adapter(tmp_path / "late", prepared_model, seed=12)),
            "alias": "late",
        },
        headers=admin,
    )
    assert late.status_code == 201, late.text
    wait_until(embedded_server.ready, 900, "the restarted engine", step_s=2)
    answer = client.chat.completions.create(
        model=BASE_MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    assert answer.choices[0].message.content
    # The reconciler put the adapter back on the new vLLM.
    assert client.chat.completions.create(model="faults", **ask).model == published["name"]
    engine_models = httpx.get(f"{embedded_server.engine_url}/v1/models").json()["data"]
    assert published["name"] in {model["id"] for model in engine_models}
    assert client.chat.completions.create(model="late", **ask).model == late.json()["name"]
    log = embedded_server.log_path.read_text()
    assert "engine exited; restarting" in log


@pytest.mark.destructive(order=2)
def test_sigterm_stops_gateway_and_vllm_cleanly(embedded_server: EmbeddedServer) -> None:
    import psutil

    engine_pid = embedded_server.engine_pid()
    embedded_server.process.send_signal(signal.SIGTERM)
    assert embedded_server.process.wait(timeout=120) == 0
    wait_until(lambda: not psutil.pid_exists(engine_pid), 30, "vLLM to exit")
    engine_port = int(embedded_server.engine_url.rsplit(":", 1)[1])
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", engine_port)) != 0
