"""A stand-in for vLLM's OpenAI server, for tests of the gateway's own bookkeeping.

It answers what the gateway asks of an engine (``/health``, ``/v1/models``, loading and
unloading LoRA adapters, non-streamed chat completions) at once, without a model: every
answer is the same short text with a token count, so a test can run many concurrent chats
on two CPU cores. Whatever needs real generation (streams, tokenization, the answer's
content) is tested against vLLM itself (tests/integration/conftest.py's embedded_server).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

ANSWER = "I don't know."


class StandInEngine:
    """The stand-in, served by a child process: in the test's own process its answers would
    wait on the gateway's threads for the GIL, and a health probe answered late (2 s) marks
    the engine down."""

    def __init__(self, process: subprocess.Popen[str], url: str) -> None:
        self.process = process
        self.url = url

    @classmethod
    def start(cls, base_model: str) -> StandInEngine:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.standin_engine", base_model],
            cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert process.stdout is not None
        ready = process.stdout.readline().split()  # "ready <port>"
        if ready[:1] != ["ready"]:
            process.kill()
            raise AssertionError(f"the stand-in engine did not start: {ready}")
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


@dataclass
class _Engine:
    """What the child process serves."""

    base_model: str
    adapters: set[str] = field(default_factory=set)
    chats: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if path == "/v1/chat/completions":
            if body.get("stream"):
                return 400, _error("the stand-in engine does not stream")
            with self.lock:
                self.chats += 1
            return 200, _completion(body.get("model", self.base_model))
        with self.lock:
            if path == "/v1/load_lora_adapter":
                if body["lora_name"] in self.adapters:
                    return 400, _error(f"The lora adapter '{body['lora_name']}' has already "
                                       "been loaded.")  # fmt: skip
                self.adapters.add(body["lora_name"])
                return 200, {}
            if path == "/v1/unload_lora_adapter":
                self.adapters.discard(body["lora_name"])
                return 200, {}
        return 404, _error(f"no route {path}")

    def models(self) -> dict[str, Any]:
        with self.lock:
            loaded = sorted(self.adapters)
        cards = [{"id": self.base_model, "object": "model", "parent": None}]
        cards += [{"id": name, "object": "model", "parent": self.base_model} for name in loaded]
        return {"object": "list", "data": cards}


def _completion(model: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-standin-{uuid.uuid4().hex}", "object": "chat.completion",
        "created": 0, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER},
                     "finish_reason": "stop", "logprobs": None}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
    }  # fmt: skip


def _error(message: str) -> dict[str, Any]:
    return {"object": "error", "message": message, "type": "BadRequestError", "code": 400}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out as two writes; with Nagle the body waits for the client's
    # delayed ACK, 40 ms a request on a kept-alive connection (test_grounded_burst saw it).
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        engine: _Engine = self.server.engine  # type: ignore[attr-defined]
        if self.path == "/health":
            self._send(200, {})
        elif self.path == "/v1/models":
            self._send(200, engine.models())
        elif self.path == "/stats":
            self._send(200, {"chats": engine.chats})
        else:
            self._send(404, _error(f"no route {self.path}"))

    def do_POST(self) -> None:
        engine: _Engine = self.server.engine  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        self._send(*engine.answer(self.path, body))

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the gateway logs what matters; a line per request would drown it


def main() -> None:
    """Serve on a free port of 127.0.0.1; print ``ready <port>`` once listening."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.engine = _Engine(sys.argv[1])  # type: ignore[attr-defined]
    print("ready", server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
