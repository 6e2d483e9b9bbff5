"""Helpers shared by the tests: ports, a gateway in a thread, store reads."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import random
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import uvicorn
from prometheus_client import CollectorRegistry

from core.settings import Settings
from core.store import Database
from core.store.keys import KeyStore, Scope
from core.store.tables import Conversation, ReviewItem, utcnow
from gateway.app import create_app
from gateway.serve import server_options
from gateway.wiring import embedder
from retrieval.embeddings import Embedder

T = TypeVar("T")


@functools.cache
def session_seed() -> int:
    """The seed of this test run: drawn anew per run, so that each run meets new generated
    data and another interleaving of concurrent writers; ``LORAGATE_TEST_SEED=N`` replays a
    run. Shown in pytest's header and in the assertion messages that depend on it."""
    fixed = os.environ.get("LORAGATE_TEST_SEED")
    return int(fixed) if fixed else random.SystemRandom().randrange(1_000_000)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    check: Callable[[], T | None], timeout_s: float, what: str, step_s: float = 0.2
) -> T:
    """Poll until ``check`` returns something truthy. Waiting, not timing: no speed asserted."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what} after {timeout_s:.0f}s")
        time.sleep(step_s)


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def sqlite_error(*statements: str) -> sqlite3.Error:
    """The error SQLite raises for ``statements`` on a table ``t (a INTEGER UNIQUE NOT
    NULL)``: a store's conflicts and refusals, real, without a store."""
    connection = sqlite3.connect(":memory:")
    connection.execute("CREATE TABLE t (a INTEGER UNIQUE NOT NULL)")
    try:
        for statement in statements:
            connection.execute(statement)
    except sqlite3.Error as error:
        return error
    finally:
        connection.close()
    raise AssertionError("no error")


def create_keys(database_url: str, scopes: Mapping[str, Scope] | None = None) -> dict[str, str]:
    """Keys in the store at ``database_url``, one per name in ``scopes`` (name -> scope, the
    key stored under that name), as name -> key; by default an admin and a chat key."""
    wanted = dict(scopes or {"admin": "admin", "chat": "chat"})

    async def make() -> dict[str, str]:
        db = Database(database_url)
        try:
            await db.migrate()
            store = KeyStore(db)
            return {name: (await store.create(scope, name)).key for name, scope in wanted.items()}
        finally:
            await db.dispose()

    result: dict[str, str] = run(make())
    return result


def approve_examples(database_url: str, alias: str, pairs: list[tuple[str, str]]) -> None:
    """Conversations of ``alias`` (question, a useless answer), flagged and approved with the
    reference as their correction: what the review queue hands the trainer."""

    async def write() -> None:
        db = Database(database_url)
        try:
            await db.migrate()
            async with db.transaction() as session:
                for question, reference in pairs:
                    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
                    session.add(Conversation(
                        id=completion_id, requested_model=alias, served_model="base",
                        stream=False, status="ok",
                        request={"messages": [{"role": "user", "content": question}]},
                        response=[{"index": 0, "content": "?", "finish_reason": "stop"}],
                    ))  # fmt: skip
                    session.add(ReviewItem(
                        completion_id=completion_id, alias=alias, served_model="base",
                        reasons=[{"reason": "correction", "detail": {}, "at": ""}],
                        state="approved", correction=reference, decided_at=utcnow(),
                    ))  # fmt: skip
        finally:
            await db.dispose()

    run(write())


def read_conversation(database_url: str, completion_id: str) -> Conversation | None:
    async def read() -> Conversation | None:
        db = Database(database_url)
        try:
            async with db.sessions() as session:
                return await session.get(Conversation, completion_id)
        finally:
            await db.dispose()

    row: Conversation | None = run(read())
    return row


def count_conversations(database_url: str, status: str | None = None) -> int:
    from core.store.conversations import ConversationLog

    async def count() -> int:
        db = Database(database_url)
        try:
            return await ConversationLog(db).count(status)  # type: ignore[arg-type]
        finally:
            await db.dispose()

    result: int = run(count())
    return result


def settled_conversation_count(database_url: str, quiet_s: float = 0.5) -> int:
    """The conversation count once it has stopped changing for ``quiet_s``: the gateway's
    writer batches rows a moment after the answer, so an earlier request's row may still be
    on its way. Counting bad requests against a settled number keeps that row out of it."""
    last, stable_since = count_conversations(database_url), time.monotonic()
    while time.monotonic() - stable_since < quiet_s:
        time.sleep(0.2)
        now = count_conversations(database_url)
        if now != last:
            last, stable_since = now, time.monotonic()
    return last


def wait_for_conversation(
    database_url: str, completion_id: str, timeout_s: float = 30
) -> Conversation:
    return wait_until(
        lambda: read_conversation(database_url, completion_id),
        timeout_s,
        f"conversation row {completion_id}",
    )


@dataclass
class ThreadedGateway:
    """A real gateway (uvicorn + Litestar) on a free port, in a background thread."""

    settings: Settings
    registry: CollectorRegistry
    base_url: str
    server: uvicorn.Server
    thread: threading.Thread

    @classmethod
    def start(cls, settings: Settings) -> ThreadedGateway:
        registry = CollectorRegistry()
        port = free_port()
        app = create_app(settings, metrics_registry=registry, shared_embedder=_embedder(settings))
        options = {**server_options(settings), "host": "127.0.0.1", "port": port}
        config = uvicorn.Config(app, lifespan="on", **options)
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name=f"gateway-{port}", daemon=True)
        thread.start()
        wait_until(lambda: server.started, 60, "the gateway to start")
        return cls(settings, registry, f"http://127.0.0.1:{port}", server, thread)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(f"{self.base_url}{path}", timeout=60, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.post(f"{self.base_url}{path}", timeout=120, **kwargs)


# The test session's embedders, one per embedding configuration: every in-process gateway
# loading its own kept about 100 MB more of the tests' process each time (13 GB by the end
# of the suite).
_EMBEDDERS: dict[str, Embedder] = {}


def _embedder(settings: Settings) -> Embedder:
    made = embedder(settings)
    key = repr((made.model_dir, made.batch_size, made.threads, made.backend, made.export_dir))
    return _EMBEDDERS.setdefault(key, made)


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """The sample ``name{labels}`` in a Prometheus exposition (label order does not matter)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


def tiny_lora(root: Any, seed: int) -> Any:
    """A small PEFT LoRA directory that validation accepts, without a base model to check it
    on (made in milliseconds, for tests of the store's bookkeeping; a unique name per call)."""
    import json

    import numpy as np
    from safetensors.numpy import save_file

    directory = root / f"lora-{seed}-{uuid.uuid4().hex[:6]}"
    directory.mkdir(parents=True)
    weights = np.random.default_rng(seed)
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    save_file({f"{prefix}.lora_A.weight": weights.standard_normal((4, 64), dtype=np.float32),
               f"{prefix}.lora_B.weight": weights.standard_normal((64, 4), dtype=np.float32)},
              str(directory / "adapter_model.safetensors"))  # fmt: skip
    config = {"peft_type": "LORA", "r": 4, "target_modules": ["q_proj"]}
    (directory / "adapter_config.json").write_text(json.dumps(config))
    return directory


def settings_env(values: Mapping[str, Any]) -> dict[str, str]:
    """This process's environment with ``values`` (settings by flat name) as a ``loragate``
    command reads them: what a test passes to the CLI it runs in its own process."""

    def text(value: Any) -> str:
        if isinstance(value, dict):
            return json.dumps(value)
        if isinstance(value, bool):
            return str(value).lower()
        return str(value)

    return {**os.environ, **{f"LORAGATE_{name.upper()}": text(value)
                             for name, value in values.items()}}  # fmt: skip
