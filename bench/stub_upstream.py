"""A fast stand-in for vLLM's OpenAI server, to isolate a gateway's own overhead.

Answers /v1/chat/completions at once with a fixed completion (a body, or ``--chunks`` SSE
chunks then [DONE]), /v1/models, /health and /metrics, as LiteLLM's own overhead benchmark
does with its fake OpenAI endpoint. It also takes vLLM's runtime LoRA calls
(/v1/load_lora_adapter, /v1/unload_lora_adapter) and lists the loaded names in /v1/models,
so a gateway's adapter bookkeeping can be measured without an engine (bench/cost.py).
A raw ASGI app under uvicorn (httptools, uvloop): no framework cost in the measurement.
Only for bench/; never a stand-in in the tests.

    .venv/bin/python bench/stub_upstream.py --port 9999 [--chunks 8] [--delay-ms 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import uvicorn

MODEL = "SmolLM2-135M-Instruct"


def completion(model: str) -> bytes:
    return json.dumps({
        "id": "chatcmpl-stub", "object": "chat.completion", "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "Red, orange and yellow."}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20},
    }).encode()  # fmt: skip


def chunk(model: str, content: str | None, finish: str | None = None, usage: bool = False) -> bytes:
    event: dict[str, Any] = {
        "id": "chatcmpl-stub", "object": "chat.completion.chunk", "created": int(time.time()),
        "model": model,
        "choices": [] if usage else [{"index": 0, "finish_reason": finish,
                                      "delta": {"content": content} if content else {}}],
    }  # fmt: skip
    if usage:
        event["usage"] = {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20}
    return b"data: " + json.dumps(event).encode() + b"\n\n"


class Stub:
    def __init__(self, chunks: int, delay_s: float) -> None:
        self.chunks = chunks
        self.delay_s = delay_s
        self.loras: set[str] = set()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path = scope["path"]
        if path.endswith("/chat/completions"):
            request = json.loads(body or b"{}")
            await self._chat(send, request.get("model", MODEL), bool(request.get("stream")))
        elif path.endswith("/models"):
            data = [{"id": MODEL, "object": "model"}]
            data += [{"id": name, "object": "model", "parent": MODEL} for name in self.loras]
            models = {"object": "list", "data": data}
            await _send(send, 200, json.dumps(models).encode(), b"application/json")
        elif path.endswith("_lora_adapter"):
            name = json.loads(body or b"{}").get("lora_name", "")
            if path.endswith("/load_lora_adapter"):
                self.loras.add(name)
            else:
                self.loras.discard(name)
            await _send(send, 200, b"Success", b"text/plain")
        else:  # /health, /metrics
            await _send(send, 200, b"", b"text/plain")

    async def _chat(self, send: Any, model: str, stream: bool) -> None:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if not stream:
            await _send(send, 200, completion(model), b"application/json")
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})  # fmt: skip
        for index in range(self.chunks):
            last = index == self.chunks - 1
            piece = chunk(model, f"w{index} ", "stop" if last else None)
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        tail = chunk(model, None, usage=True) + b"data: [DONE]\n\n"
        await send({"type": "http.response.body", "body": tail, "more_body": False})


async def _send(send: Any, status: int, body: bytes, content_type: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type),
                            (b"content-length", str(len(body)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunks", type=int, default=8, help="content chunks per stream")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="wait before answering")
    args = parser.parse_args()
    uvicorn.run(Stub(args.chunks, args.delay_ms / 1000), host="127.0.0.1", port=args.port,
                log_level="warning", access_log=False, http="httptools",
                loop="uvloop")  # fmt: skip


if __name__ == "__main__":
    main()
