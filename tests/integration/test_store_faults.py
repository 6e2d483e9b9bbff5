"""Faults of the store and of the gateway process, on the real stack.

What each fault gets, from the client's side and in the store afterwards:
* PostgreSQL unreachable for seconds (connections dropped and refused, through a TCP proxy):
  chat goes on (keys, routes and quota usage last read are used); feedback is answered
  202 ``queued``; admin routes answer 503 ``store_unavailable`` with Retry-After. When the
  database is back every conversation and every feedback is written: counted before/after.
* the gateway SIGKILLed under load: every completion the client saw finish, and every
  feedback it saw accepted, is in the store after the restart (replayed from the journal).
* both at once (killed while the database is down): the same, all from the journal.
* the disk full (a 16 MB tmpfs, filled): publishing gets 507 ``insufficient_storage`` and the
  earlier version's files are untouched; a document is still stored and searchable (from
  memory) while its index file stays the old, whole one; chat goes on; once space is freed
  both work again.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from core.store import Database
from core.store.journal import SUFFIX
from core.store.tables import Conversation, Feedback
from tests.conftest import fresh_postgres_database
from tests.faults import TcpProxy
from tests.integration.conftest import BASE_MODEL, EmbeddedServer
from tests.support import (
    ThreadedGateway,
    count_conversations,
    create_keys,
    free_port,
    run,
    wait_until,
)
from trainer.sample import sample_adapter

pytestmark = pytest.mark.vllm

PG_PORT = 5432


@dataclass
class ProxiedStore:
    direct_url: str  # for the test's own reads
    proxied_url: str  # what the gateway is given
    proxy: TcpProxy


@pytest.fixture
def proxied_postgres() -> Iterator[ProxiedStore]:
    with fresh_postgres_database() as url:
        proxy = TcpProxy(PG_PORT).start()
        try:
            proxied = url.replace(f":{PG_PORT}/", f":{proxy.port}/")
            yield ProxiedStore(url, proxied, proxy)
        finally:
            proxy.close()


def _count(database_url: str, table: Any, **where: Any) -> int:
    async def read() -> int:
        db = Database(database_url)
        try:
            query = select(func.count()).select_from(table).filter_by(**where)
            async with db.sessions() as session:
                return int(await session.scalar(query) or 0)
        finally:
            await db.dispose()

    result: int = run(read())
    return result


def _ids_present(database_url: str, table: Any, column: Any, ids: list[str]) -> set[str]:
    async def read() -> set[str]:
        db = Database(database_url)
        try:
            async with db.sessions() as session:
                return set(await session.scalars(select(column).where(column.in_(ids))))
        finally:
            await db.dispose()

    result: set[str] = run(read())
    return result


def _chat(base_url: str, key: str, stream: bool, text: str = "Say hi.") -> str:
    """One completion, read to the end; its id once the client has it all (acknowledged)."""
    body = {"model": BASE_MODEL, "max_tokens": 8, "temperature": 0, "stream": stream,
            "messages": [{"role": "user", "content": text}]}  # fmt: skip
    headers = {"Authorization": f"Bearer {key}"}
    url = f"{base_url}/v1/chat/completions"
    if not stream:
        response = httpx.post(url, json=body, headers=headers, timeout=60)
        assert response.status_code == 200, response.text
        return str(response.json()["id"])
    with httpx.stream("POST", url, json=body, headers=headers, timeout=60) as response:
        assert response.status_code == 200
        events = [line[5:].strip() for line in response.iter_lines() if line.startswith("data:")]
    assert events[-1] == "[DONE]", events[-3:]
    return str(json.loads(events[0])["id"])


def _feedback(base_url: str, key: str, completion_id: str) -> httpx.Response:
    return httpx.post(f"{base_url}/v1/feedback", timeout=30,
                      headers={"Authorization": f"Bearer {key}"},
                      json={"completion_id": completion_id, "score": -1,
                            "correction": "Hello there."})  # fmt: skip


def test_chat_goes_on_while_postgres_is_down_and_nothing_is_lost(
    gateway_factory: Callable[..., ThreadedGateway], proxied_postgres: ProxiedStore
) -> None:
    store = proxied_postgres
    keys = create_keys(store.direct_url)
    gateway = gateway_factory(database_url=store.proxied_url, key_cache_seconds=0.5)
    before_outage = _chat(gateway.base_url, keys["chat"], stream=False)  # keys, routes cached
    wait_until(lambda: _count(store.direct_url, Conversation) == 1, 30, "the first row")

    store.proxy.cut()
    during = [_chat(gateway.base_url, keys["chat"], stream=n % 2 == 0) for n in range(6)]
    rated = [before_outage, during[0], during[1]]
    answers = [_feedback(gateway.base_url, keys["chat"], completion) for completion in rated]
    assert [answer.status_code for answer in answers] == [202] * 3
    assert all(answer.json()["queued"] for answer in answers)
    admin = gateway.get("/v1/admin/keys", headers={"Authorization": f"Bearer {keys['admin']}"})
    assert admin.status_code == 503
    assert admin.json()["error"]["code"] == "store_unavailable"
    assert admin.headers["retry-after"]
    assert _count(store.direct_url, Conversation) == 1  # nothing could be written yet

    store.proxy.restore()
    wait_until(lambda: _count(store.direct_url, Conversation) == 7, 60, "the rows to be written")
    wait_until(lambda: _count(store.direct_url, Feedback) == 3, 60, "the feedback to be written")
    assert _ids_present(store.direct_url, Conversation, Conversation.id, during) == set(during)
    rows = _ids_present(store.direct_url, Feedback, Feedback.completion_id, rated)
    assert rows == set(rated)
    # Once everything is in the database, the journal keeps nothing.
    segments = list(gateway.settings.resolved_journal_dir.glob(f"*{SUFFIX}"))
    wait_until(lambda: all(path.stat().st_size == 0 for path in segments), 10, "an empty journal")


# -- a killed gateway ------------------------------------------------------------------------
@dataclass
class Acknowledged:
    completions: list[str] = field(default_factory=list)
    feedback: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class ServeProcess:
    """``loragate serve`` in external engine mode, as operators run it, killable."""

    def __init__(self, embedded: EmbeddedServer, data_dir: Path, database_url: str) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "LORAGATE_DATA_DIR": str(data_dir),
                    "LORAGATE_PORT": str(self.port), "LORAGATE_ENGINE_MODE": "external",
                    "LORAGATE_ENGINE_URLS": embedded.engine_url,
                    "LORAGATE_BASE_MODEL_NAME": BASE_MODEL,
                    "LORAGATE_DATABASE_URL": database_url, "LORAGATE_LOG_FORMAT": "json",
                    "LORAGATE_MONITOR_INTERVAL_S": "0"}  # fmt: skip
        self.log_path = data_dir / "serve.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ServeProcess:
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve"],
                                            env=self.env, stdout=log_file,
                                            stderr=subprocess.STDOUT)  # fmt: skip
        wait_until(self._ready, 120, "loragate serve to be ready")
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(self.log_path.read_text()[-3000:])
        try:
            return httpx.get(f"{self.base_url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=60)


def _load(base_url: str, key: str, acked: Acknowledged, stop: threading.Event) -> None:
    """Chat and rate in a loop, noting only what the gateway acknowledged."""
    number = 0
    while not stop.is_set():
        number += 1
        try:
            completion = _chat(base_url, key, stream=number % 2 == 0, text=f"Count to {number}.")
            with acked.lock:
                acked.completions.append(completion)
            if number % 3 == 0 and _feedback(base_url, key, completion).status_code in (200, 202):
                with acked.lock:
                    acked.feedback.append(completion)
        except (httpx.HTTPError, AssertionError, ValueError) as exc:
            with acked.lock:
                acked.errors.append(repr(exc))  # the kill cuts requests off: expected
            stop.wait(0.2)


def _kill_under_load(
    gateway: ServeProcess, key: str, before_kill: Callable[[], None] | None = None
) -> Acknowledged:
    acked, stop = Acknowledged(), threading.Event()
    workers = [threading.Thread(target=_load, args=(gateway.base_url, key, acked, stop))
               for _ in range(4)]  # fmt: skip
    for worker in workers:
        worker.start()
    try:
        wait_until(lambda: len(acked.completions) >= 12, 120, "some acknowledged completions")
        if before_kill is not None:
            before_kill()
            count = len(acked.completions)
            wait_until(lambda: len(acked.completions) >= count + 8, 120, "more completions")
        gateway.kill()
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=90)
    return acked


def _assert_nothing_acknowledged_is_missing(database_url: str, acked: Acknowledged) -> None:
    found = _ids_present(database_url, Conversation, Conversation.id, acked.completions)
    assert found == set(acked.completions), f"lost {set(acked.completions) - found}"
    rated = _ids_present(database_url, Feedback, Feedback.completion_id, acked.feedback)
    assert rated == set(acked.feedback), f"lost feedback on {set(acked.feedback) - rated}"


def test_sigkill_under_load_loses_nothing_acknowledged(
    embedded_server: EmbeddedServer, tmp_path: Path
) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'loragate.db'}"
    keys = create_keys(database_url)
    gateway = ServeProcess(embedded_server, tmp_path, database_url).start()
    try:
        acked = _kill_under_load(gateway, keys["chat"])
        gateway.start()  # replays what the killed one journaled
        _assert_nothing_acknowledged_is_missing(database_url, acked)
    finally:
        gateway.stop()


def test_sigkill_while_postgres_is_down_loses_nothing_acknowledged(
    embedded_server: EmbeddedServer, proxied_postgres: ProxiedStore, tmp_path: Path
) -> None:
    store = proxied_postgres
    keys = create_keys(store.direct_url)
    gateway = ServeProcess(embedded_server, tmp_path, store.proxied_url).start()
    try:
        acked = _kill_under_load(gateway, keys["chat"], before_kill=store.proxy.cut)
        written_before = _count(store.direct_url, Conversation)
        assert written_before < len(acked.completions)  # some are only in the journal
        store.proxy.restore()
        gateway.start()
        _assert_nothing_acknowledged_is_missing(store.direct_url, acked)
        replayed = [json.loads(line) for line in gateway.log_path.read_text().splitlines()
                    if '"journal replayed"' in line]  # fmt: skip
        assert sum(line["conversations_written"] for line in replayed) >= (
            len(acked.completions) - written_before
        )
    finally:
        gateway.stop()


# -- a full disk ----------------------------------------------------------------------------
@contextmanager
def small_disk(path: Path, megabytes: int) -> Iterator[Path]:
    """A real filesystem of ``megabytes`` at ``path`` (tmpfs; the tests run as root)."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(path)],
                   check=True)  # fmt: skip
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(directory: Path) -> Path:
    """Write until the disk refuses: ENOSPC for whoever writes next."""
    filler = directory / "filler"
    with filler.open("wb") as file:
        try:
            while True:
                file.write(b"\0" * 65536)
                file.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def _tree_digest(directory: Path) -> dict[str, str]:
    return {str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(directory.rglob("*")) if path.is_file()}  # fmt: skip


def test_a_full_disk_keeps_the_previous_adapter_and_index_whole(
    gateway_factory: Callable[..., ThreadedGateway], prepared_model: Path, tmp_path: Path
) -> None:
    with small_disk(tmp_path / "data", megabytes=16) as data_dir:
        database_url = f"sqlite+aiosqlite:///{tmp_path / 'loragate.db'}"  # the store has room
        keys = create_keys(database_url)
        gateway = gateway_factory(data_dir=data_dir, database_url=database_url)
        admin = {"Authorization": f"Bearer {keys['admin']}"}

        def publish(seed: int) -> httpx.Response:
            lora = sample_adapter(tmp_path / f"lora{seed}", prepared_model, seed=seed)
            return gateway.post("/v1/admin/adapters", headers=admin,
                                json={"path": str(lora), "alias": "full"})  # fmt: skip

        def add(document_id: str, text: str) -> httpx.Response:
            return gateway.post("/v1/collections/notes/documents", headers=admin,
                                json={"id": document_id, "text": text})  # fmt: skip

        def search(query: str) -> list[str]:
            found = gateway.get("/v1/collections/notes/search", params={"q": query, "k": 3},
                                headers=admin).json()["data"]  # fmt: skip
            return [hit["document_id"] for hit in found]

        assert publish(1).status_code == 201
        assert add("kettles", "Our kettles boil a litre in two minutes.").status_code == 201
        adapters_before = _tree_digest(data_dir / "adapters")
        index_before = _tree_digest(data_dir / "indexes")

        filler = _fill(data_dir)
        refused = publish(2)
        assert refused.status_code == 507, refused.text
        assert refused.json()["error"]["code"] == "insufficient_storage"
        # The document is in the store; its index file could not be rewritten, so search
        # serves from memory and the old file stays whole.
        assert add("toasters", "Toasters have a crumb tray that slides out.").status_code == 201
        assert search("crumb tray")[0] == "toasters"
        assert _tree_digest(data_dir / "adapters") == adapters_before
        assert _tree_digest(data_dir / "indexes") == index_before  # no temp files either
        versions = gateway.get("/v1/admin/adapters", headers=admin).json()["data"]
        assert [version["name"] for version in versions if version["alias"] == "full"] == [
            "full-v1"
        ]
        chat = {"model": BASE_MODEL, "max_tokens": 2,
                "messages": [{"role": "user", "content": "Hi"}]}  # fmt: skip
        reply = gateway.post("/v1/chat/completions", json=chat,
                             headers={"Authorization": f"Bearer {keys['chat']}"})  # fmt: skip
        assert reply.status_code == 200  # chat goes on; its row still reaches the store
        wait_until(lambda: count_conversations(database_url) == 1, 30, "the row")

        filler.unlink()
        assert publish(2).json()["name"] == "full-v2"
        assert add("irons", "Irons have a steam button.").status_code == 201
        assert _tree_digest(data_dir / "indexes") != index_before
