"""A scripted stand-in for vLLM's OpenAI server, for tests that need an engine's answers but
not a model: the gateway's own bookkeeping, its pages, and its relay of vLLM's APIs.

It serves what the gateway asks of vLLM: ``/health``, ``/metrics``, ``/v1/models`` (the base
model and the LoRA adapters loaded), loading and unloading adapters, and
``/v1/chat/completions``, streamed as vLLM streams (with usage) or not. Every question is
answered with ``answer_text`` word by word; a question with ``SLOW_WORD`` in it is answered
slowly and at length, so a test can stop it mid-stream. It keeps every body it was sent,
counts the chats it answered and the streams its client went away from.

It also serves vLLM's Responses API (``tests/standin_responses.py``): ``POST /v1/responses``
(streamed with vLLM's named events), ``GET /v1/responses/{id}`` and ``.../cancel``, with
vLLM's store off unless ``store_responses`` (``VLLM_ENABLE_RESPONSES_API_STORE=1``).

Two ways to run it: :meth:`StandInVllm.start` serves from a thread of the test's process, so
a test can read and change its state; :class:`StandInVllmProcess` serves it from a child
process, for tests that send many concurrent requests through a gateway in their own
process (there its answers would wait on the gateway's threads for the GIL, and a health
probe answered late, 2 s, marks the engine down).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from tests.standin_responses import PROMPT_TOKENS, ResponseStore, responses_get, responses_post

ANSWER = "Purple teapots can be returned within 47 days of purchase [1]."
SLOW_WORD = "slowly"
SLOW_CHUNKS = 600
SLOW_DELAY_S = 0.05
FAST_DELAY_S = 0.02
NOT_FOUND = {"detail": "Not Found"}  # vLLM's (FastAPI's) answer to an unknown path


@dataclass
class StandInVllm:
    model: str
    max_model_len: int = 2048
    answer_text: str = ANSWER
    bodies: list[dict[str, Any]] = field(default_factory=list)
    abandoned: int = 0  # streams the client closed before the end
    chats: int = 0  # chat completions answered
    adapters: set[str] = field(default_factory=set)  # LoRA adapters loaded
    server: ThreadingHTTPServer | None = None
    store_responses: bool = False  # vLLM's VLLM_ENABLE_RESPONSES_API_STORE
    responses: ResponseStore = field(default_factory=ResponseStore)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> StandInVllm:
        """Serve from a daemon thread on a free port."""
        threading.Thread(target=self.listen().serve_forever, daemon=True).start()
        return self

    def listen(self, port: int = 0) -> ThreadingHTTPServer:
        stand_in = self

        class Handler(_Handler):
            owner = stand_in

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        return self.server

    def answer(self, question: str) -> tuple[list[str], float]:
        """The answer's words and the delay between them when streamed."""
        if SLOW_WORD in question:
            return [f"word{n} " for n in range(SLOW_CHUNKS)], SLOW_DELAY_S
        return _words(self.answer_text), FAST_DELAY_S

    def models(self) -> dict[str, Any]:
        with self.lock:
            loaded = sorted(self.adapters)
        card = {"id": self.model, "object": "model", "root": "/models/stand-in",
                "max_model_len": self.max_model_len, "parent": None}  # fmt: skip
        cards = [card] + [{"id": name, "object": "model", "parent": self.model} for name in loaded]
        return {"object": "list", "data": cards}

    def load_adapter(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        name = body["lora_name"]
        with self.lock:
            if name in self.adapters:
                return 400, _error(f"The lora adapter '{name}' has already been loaded.")
            self.adapters.add(name)
        return 200, {}

    def unload_adapter(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.adapters.discard(body["lora_name"])
        return 200, {}

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


class StandInVllmProcess:
    """A :class:`StandInVllm` served by a child process (see the module's docstring)."""

    def __init__(self, process: subprocess.Popen[str], url: str) -> None:
        self.process = process
        self.url = url

    @classmethod
    def start(cls, model: str, answer_text: str = ANSWER) -> StandInVllmProcess:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.standin_vllm", model, answer_text],
            cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert process.stdout is not None
        ready = process.stdout.readline().split()  # "ready <port>"
        if ready[:1] != ["ready"]:
            process.kill()
            raise AssertionError(f"the stand-in vLLM did not start: {ready}")
        return cls(process, f"http://127.0.0.1:{ready[1]}")

    @property
    def chats(self) -> int:
        """Chat completions answered so far."""
        return int(httpx.get(f"{self.url}/stats", timeout=10).json()["chats"])

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


class _Handler(BaseHTTPRequestHandler):
    owner: StandInVllm
    protocol_version = "HTTP/1.1"
    # Headers and body go out as two writes; with Nagle the body waits for the client's
    # delayed ACK, 40 ms a request on a kept-alive connection (test_grounded_burst saw it).
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the gateway logs what matters; a line per request would drown it

    def do_GET(self) -> None:
        if self.path == "/v1/models":
            self._json(self.owner.models())
        elif self.path in ("/health", "/metrics"):
            self._json({})
        elif self.path == "/stats":
            self._json({"chats": self.owner.chats})
        elif self.path.startswith("/v1/responses/"):
            responses_get(self, self.owner)
        else:
            self._json(NOT_FOUND, status=404)

    def do_DELETE(self) -> None:
        # vLLM (FastAPI) has no DELETE on /v1/responses/{id}: the path exists, the method not.
        self._json({"detail": "Method Not Allowed"}, status=405)

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        body = json.loads(raw) if raw else {}
        self.owner.bodies.append(body)
        if self.path.startswith("/v1/responses"):
            responses_post(self, self.owner, body)
        elif self.path == "/v1/load_lora_adapter":
            status, answer = self.owner.load_adapter(body)
            self._json(answer, status)
        elif self.path == "/v1/unload_lora_adapter":
            status, answer = self.owner.unload_adapter(body)
            self._json(answer, status)
        elif self.path == "/v1/chat/completions":
            self._chat(body)
        else:
            self._json(NOT_FOUND, status=404)

    def _chat(self, body: dict[str, Any]) -> None:
        with self.owner.lock:
            self.owner.chats += 1
        messages = body["messages"]
        last: dict[str, Any] = next((m for m in reversed(messages) if m["role"] == "user"), {})
        words, delay_s = self.owner.answer(str(last.get("content", "")))
        if body.get("stream"):
            self._stream(words, delay_s)
        else:
            self._json(_completion(body.get("model", self.owner.model), words))

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
            usage = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": len(words)}
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


def _words(text: str) -> list[str]:
    parts = text.split(" ")
    return [part + " " for part in parts[:-1]] + [parts[-1]]


def _usage(generated: int) -> dict[str, int]:
    return {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": generated,
            "total_tokens": PROMPT_TOKENS + generated}  # fmt: skip


def _completion(model: str, words: list[str]) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-standin-{uuid.uuid4().hex}", "object": "chat.completion",
        "created": 0, "model": model,
        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                     "message": {"role": "assistant", "content": "".join(words)}}],
        "usage": _usage(len(words)),
    }  # fmt: skip


def _chunk(delta: dict[str, Any], generated: int) -> dict[str, Any]:
    return {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
        "usage": _usage(generated),
    }  # fmt: skip


def _error(message: str) -> dict[str, Any]:
    return {"object": "error", "message": message, "type": "BadRequestError", "code": 400}


def main() -> None:
    """Serve ``StandInVllm(model, answer_text=...)`` on a free port of 127.0.0.1; print
    ``ready <port>`` once listening."""
    model, answer_text = sys.argv[1], sys.argv[2]
    server = StandInVllm(model, answer_text=answer_text).listen()
    print("ready", server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
