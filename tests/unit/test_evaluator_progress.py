"""The evaluator's connection to vLLM (trainer/evaluate.py): its answers are progress steps
(on vLLM's CPU build a scoring set with an adapter takes minutes, and `loragate train` or
`eval compare` must show it moving), and a pooled connection vLLM dropped is asked again
rather than failing the run. The real path (vLLM scoring a candidate) runs in
tests/integration/test_trainer_loop.py."""

from __future__ import annotations

import json
import logging

import httpx
import numpy as np
import pytest

from trainer.evaluate import Evaluator


def _engine(request: httpx.Request) -> httpx.Response:
    prompt = json.loads(request.content)["messages"][-1]["content"]
    return httpx.Response(200, json={"choices": [{"message": {"content": prompt.upper()}}]})


async def test_each_answer_is_a_progress_step(caplog: pytest.LogCaptureFixture) -> None:
    evaluator = Evaluator(
        "http://engine", embed=lambda texts: np.zeros((len(texts), 4)), concurrency=2
    )
    evaluator._client = httpx.AsyncClient(
        base_url="http://engine", transport=httpx.MockTransport(_engine)
    )
    prompts = [[{"role": "user", "content": f"question {n}"}] for n in range(5)]
    with caplog.at_level(logging.INFO, logger="loragate.progress"):
        answers = await evaluator.answers("candidate", prompts)
    await evaluator.close()

    assert answers == [f"QUESTION {n}" for n in range(5)]  # in the prompts' order
    steps = [r for r in caplog.records if r.getMessage() == "progress"]
    assert [(r.task, r.done, r.total) for r in steps] == [  # type: ignore[attr-defined]
        ("answers candidate", done, 5) for done in range(1, 6)
    ]
    assert [r.getMessage() for r in caplog.records][-1] == "finished"


async def test_a_connection_the_engine_dropped_is_retried_on_a_fresh_one() -> None:
    """vLLM (uvicorn) closes a connection idle for 5 s; one reused at that moment fails
    with no response. Seen once: a benchmark's training run failed at its gate with
    "ReadError" after all its training. The evaluator keeps idle connections 4 s and asks
    once more on a fresh connection; this server answers one request per connection and
    hangs up on the next, as uvicorn does at the keep-alive's end."""
    import asyncio

    connections = 0

    async def one_request_per_connection(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        nonlocal connections
        connections += 1
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length"))  # fmt: skip
        await reader.readexactly(length)
        body = json.dumps({"choices": [{"message": {"content": f"answer {connections}"}}]})
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body.encode()))  # fmt: skip
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")  # the next request on this connection: dropped
        writer.close()

    server = await asyncio.start_server(one_request_per_connection, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    evaluator = Evaluator(f"http://127.0.0.1:{port}", embed=lambda texts: np.zeros((1, 4)))
    question = [{"role": "user", "content": "hi"}]
    try:
        assert await evaluator.answer("base", question) == "answer 1"
        assert await evaluator.answer("base", question) == "answer 2"  # on a new connection
    finally:
        await evaluator.close()
        server.close()
    assert connections == 2
