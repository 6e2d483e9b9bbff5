"""A scripted stand-in for vLLM's OpenAI server, for tests of the pages that need answers but
not a model: the browser tests of the chat page run against it, on a real gateway.

It serves ``/health``, ``/v1/models`` and ``/v1/chat/completions`` (streamed as vLLM streams,
with usage), answers every question with ``ANSWER`` word by word, and answers a question with
``SLOW_WORD`` in it slowly and at length, so a test can stop it mid-stream. It keeps every body
it was sent and counts the streams its client went away from.

It also serves vLLM's Responses API (``tests/standin_responses.py``): ``POST /v1/responses``
(streamed with vLLM's named events), ``GET /v1/responses/{id}`` and ``.../cancel``, with
vLLM's store off unless ``store_responses`` (``VLLM_ENABLE_RESPONSES_API_STORE=1``).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.standin_responses import ResponseStore, responses_get, responses_post
from tests.support import free_port

ANSWER = "Purple teapots can be returned within 47 days of purchase [1]."
SLOW_WORD = "slowly"
SLOW_CHUNKS = 600
SLOW_DELAY_S = 0.05
FAST_DELAY_S = 0.02


@dataclass
class StandInVllm:
    model: str
    max_model_len: int = 2048
    bodies: list[dict[str, Any]] = field(default_factory=list)
    abandoned: int = 0  # streams the client closed before the end
    server: ThreadingHTTPServer | None = None
    store_responses: bool = False  # vLLM's VLLM_ENABLE_RESPONSES_API_STORE
    responses: ResponseStore = field(default_factory=ResponseStore)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> StandInVllm:
        stand_in = self

        class Handler(_Handler):
            owner = stand_in

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def answer(self, question: str) -> tuple[list[str], float]:
        return answer_words(question)

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


class _Handler(BaseHTTPRequestHandler):
    owner: StandInVllm
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/v1/models":
            card = {"id": self.owner.model, "object": "model", "root": "/models/stand-in",
                    "max_model_len": self.owner.max_model_len, "parent": None}  # fmt: skip
            self._json({"object": "list", "data": [card]})
        elif self.path in ("/health", "/metrics"):
            self._json({})
        elif self.path.startswith("/v1/responses/"):
            responses_get(self, self.owner)
        else:
            self._json({"error": {"message": "not found"}}, status=404)

    def do_DELETE(self) -> None:
        # vLLM (FastAPI) has no DELETE on /v1/responses/{id}: the path exists, the method not.
        self._json({"detail": "Method Not Allowed"}, status=405)

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        body = json.loads(raw) if raw else {}
        self.owner.bodies.append(body)
        if self.path.startswith("/v1/responses"):
            responses_post(self, self.owner, body)
            return
        if self.path != "/v1/chat/completions":
            self._json({"error": {"message": "not found"}}, status=404)
            return
        last = next((m for m in reversed(body["messages"]) if m["role"] == "user"), {})
        words, delay_s = answer_words(str(last.get("content", "")))
        if body.get("stream"):
            self._stream(words, delay_s)
        else:
            self._json({
                "object": "chat.completion", "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "".join(words)}}],
                "usage": {"prompt_tokens": 10, "completion_tokens": len(words)},
            })  # fmt: skip

    def _stream(self, words: list[str], delay_s: float) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        try:
            self._event(_chunk({"role": "assistant", "content": ""}, 0))
            for n, word in enumerate(words, start=1):
                time.sleep(delay_s)
                self._event(_chunk({"content": word}, n))
            usage = {"prompt_tokens": 10, "completion_tokens": len(words)}
            self._event({"object": "chat.completion.chunk", "choices": [], "usage": usage})
            self._write(b"data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.owner.abandoned += 1
        self.close_connection = True

    def _event(self, event: dict[str, Any]) -> None:
        self._write(b"data: " + json.dumps(event).encode() + b"\n\n")

    def _write(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _json(self, value: Any, status: int = 200) -> None:
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def answer_words(question: str) -> tuple[list[str], float]:
    """The answer's words and the delay between them: ``ANSWER``, or slowly at length."""
    if SLOW_WORD in question:
        return [f"word{n} " for n in range(SLOW_CHUNKS)], SLOW_DELAY_S
    return _words(ANSWER), FAST_DELAY_S


def _words(text: str) -> list[str]:
    parts = text.split(" ")
    return [part + " " for part in parts[:-1]] + [parts[-1]]


def _chunk(delta: dict[str, Any], generated: int) -> dict[str, Any]:
    return {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
        "usage": {"prompt_tokens": 10, "completion_tokens": generated,
                  "total_tokens": 10 + generated},
    }  # fmt: skip
