"""Per-key metrics (issue 22): request and token counters per API key with a capped ``key``
label, quota usage per key read from the store, and ``process_*`` in the scrape."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from core.store import Database
from core.store.keys import KeyStore, Principal, Quota
from core.store.tables import Conversation
from gateway.chat import ChatLimits, ChatService
from gateway.key_labels import KeyLabels
from gateway.key_usage import KeyUsage
from gateway.metrics import Exposition, GatewayMetrics
from gateway.process_metrics import ProcessTreeCollector, tree_of
from gateway.schemas import ChatCompletionRequest
from tests.unit.test_charging import MODEL, PROMPT_TOKENS, Records, Router, StandIn, served


def _samples(registry: CollectorRegistry, name: str) -> dict[tuple[str, ...], float]:
    """{label values: value} of the samples called ``name`` on the registry."""
    found = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sample.labels.values())] = sample.value
    return found


# -- the cap ---------------------------------------------------------------------------------
def test_keys_beyond_the_limit_are_counted_as_other() -> None:
    labels = KeyLabels(limit=2)
    a, b, c = (Principal(f"key_{n}", "chat", name=f"team-{n}") for n in "abc")
    assert labels.of(a) == ("key_a", "team-a")
    assert labels.of(b) == ("key_b", "team-b")
    assert labels.of(c) == ("other", "other")
    assert labels.of(a) == ("key_a", "team-a")  # a labelled key keeps its label
    assert labels.of(Principal(None, "admin")) == ("-", "-")  # auth off
    assert KeyLabels(limit=0).of(a) == ("other", "other")
    with pytest.raises(ValueError, match="limit"):
        KeyLabels(limit=-1)


# -- the counters, through ChatService --------------------------------------------------------
@pytest.fixture
async def chat() -> AsyncIterator[tuple[ChatService, CollectorRegistry]]:
    async with served(StandIn(ending="done")) as engine:
        registry = CollectorRegistry()
        metrics = GatewayMetrics(registry, key_limit=1)
        limits = ChatLimits(2048, 100, 8, default_max_tokens=16)
        service = ChatService(engine, Router(), Records(), metrics, limits)  # type: ignore[arg-type]
        yield service, registry


async def _ask(service: ChatService, principal: Principal, turns: int = 1) -> None:
    messages = [{"role": "user", "content": "Hi"}] * turns
    body = {"model": MODEL, "messages": messages, "max_tokens": 4}
    request = msgspec.convert(body, ChatCompletionRequest)
    await service.complete(request, principal, time.perf_counter())


async def test_requests_and_tokens_are_counted_per_key_with_the_cap(chat: Any) -> None:
    service, registry = chat
    first, second = Principal("key_a", "chat", name="web"), Principal("key_b", "chat", name="cli")
    for principal in (first, first, second):
        await _ask(service, principal)
    requests = _samples(registry, "loragate_key_requests_total")
    assert requests == {("key_a", "web", "2xx"): 2.0, ("other", "other", "2xx"): 1.0}
    tokens = _samples(registry, "loragate_key_tokens_total")
    assert tokens[("key_a", "web", "prompt")] == 2 * PROMPT_TOKENS
    assert tokens[("other", "other", "prompt")] == PROMPT_TOKENS
    assert tokens[("key_a", "web", "completion")] > 0


async def test_a_refused_request_is_counted_for_its_key(chat: Any) -> None:
    service, registry = chat
    principal = Principal("key_a", "chat", name="web")
    with pytest.raises(Exception, match="messages"):
        await _ask(service, principal, turns=101)  # over max_messages: refused before routing
    requests = _samples(registry, "loragate_key_requests_total")
    assert list(requests) == [("key_a", "web", "4xx")]
    assert _samples(registry, "loragate_key_tokens_total") == {}


async def test_the_key_store_gives_the_name_to_the_principal(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'keys.db'}")
    await db.migrate()
    try:
        store = KeyStore(db)
        created = await store.create("chat", "billing-team")
        principal = await store.find(created.key)
        assert principal is not None and principal.name == "billing-team"
    finally:
        await db.dispose()


# -- quota usage from the store ---------------------------------------------------------------
async def test_usage_gauges_keep_the_top_keys_and_fold_the_rest(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'usage.db'}")
    await db.migrate()
    try:
        store = KeyStore(db)
        keys = [await store.create("chat", name) for name in ("big", "mid", "small")]
        await store.set_quota(keys[0].id, Quota(monthly_tokens=10_000))
        now = datetime.now(UTC)
        rows = [  # (key, tokens, age): the last one is from before this month
            (keys[0].id, 600, timedelta(seconds=5)),
            (keys[0].id, 400, timedelta(minutes=5)),
            (keys[1].id, 300, timedelta(seconds=10)),
            (keys[2].id, 100, timedelta(minutes=5)),
            (keys[2].id, 9_999, timedelta(days=40)),
        ]
        async with db.transaction() as session:
            for number, (key, tokens, age) in enumerate(rows):
                session.add(_conversation(f"c{number}", key, tokens, now - age))
        clock = [0.0]
        usage = KeyUsage(db, Quota(tokens_per_minute=5_000), limit=2, clock=lambda: clock[0])
        families = {f.name: f for f in await usage.families(now=now)}
        # A new row: the last minute shows it at once, the month's sum after its refresh.
        async with db.transaction() as session:
            session.add(_conversation("late", keys[1].id, 50, now))
        again = {f.name: f for f in await usage.families(now=now)}
        clock[0] = 61.0
        refreshed = {f.name: f for f in await usage.families(now=now)}
    finally:
        await db.dispose()
    assert _values(again["loragate_key_minute_tokens"])[(keys[1].id, "mid")] == 350
    assert _values(again["loragate_key_month_tokens"])[(keys[1].id, "mid")] == 300
    assert _values(refreshed["loragate_key_month_tokens"])[(keys[1].id, "mid")] == 350
    month = _values(families["loragate_key_month_tokens"])
    assert month == {(keys[0].id, "big"): 1000, (keys[1].id, "mid"): 300, ("other", "other"): 100}
    minute = _values(families["loragate_key_minute_tokens"])
    assert minute == {(keys[0].id, "big"): 600, (keys[1].id, "mid"): 300}
    limits = _values(families["loragate_key_quota_limit"])
    assert limits == {
        (keys[0].id, "big", "monthly_tokens"): 10_000,
        (keys[0].id, "big", "tokens_per_minute"): 5_000,  # the default
        (keys[1].id, "mid", "tokens_per_minute"): 5_000,
    }


def _conversation(id_: str, key: str, tokens: int, at: datetime) -> Conversation:
    return Conversation(
        id=id_, api_key_id=key, requested_model=MODEL, served_model=MODEL, status="ok",
        request={}, response=[], prompt_tokens=tokens // 2, completion_tokens=tokens - tokens // 2,
        created_at=at,
    )  # fmt: skip


def _values(family: Any) -> dict[tuple[str, ...], float]:
    return {tuple(s.labels.values()): s.value for s in family.samples}


# -- process_* --------------------------------------------------------------------------------
PROCESS_FAMILIES = {
    "process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds",
    "process_max_fds", "process_start_time_seconds", "process_virtual_memory_bytes",
}  # fmt: skip


def _exposed(body: bytes) -> dict[str, float]:
    families = text_string_to_metric_families(body.decode())
    return {s.name: s.value for f in families for s in f.samples}


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="process metrics read /proc")
def test_one_process_scrape_has_process_metrics() -> None:
    exposition = Exposition(CollectorRegistry(), None)
    exposed = _exposed(exposition.render()[0])
    assert set(exposed) >= PROCESS_FAMILIES
    assert exposed["process_resident_memory_bytes"] > 0


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="process metrics read /proc")
def test_a_multiprocess_scrape_adds_up_the_worker_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    exposed = _exposed(Exposition(CollectorRegistry(), tmp_path).render()[0])
    assert set(exposed) >= PROCESS_FAMILIES
    # The tree of this process's parent holds this process: at least its memory.
    own = _exposed(Exposition(CollectorRegistry(), None).render()[0])
    assert exposed["process_resident_memory_bytes"] >= own["process_resident_memory_bytes"]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="process metrics read /proc")
def test_the_tree_sums_memory_and_keeps_the_earliest_start() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert child.pid in tree_of(os.getpid())
        one = _tree_values(lambda: [os.getpid()])
        both = _tree_values(lambda: [os.getpid(), child.pid])
        assert both["process_resident_memory_bytes"] > one["process_resident_memory_bytes"]
        assert both["process_open_fds"] >= one["process_open_fds"]
        assert both["process_start_time_seconds"] == one["process_start_time_seconds"]
        assert both["process_max_fds"] <= one["process_max_fds"]
    finally:
        child.kill()
        child.wait()


def _tree_values(pids: Any) -> dict[str, float]:
    return {s.name: s.value for f in ProcessTreeCollector(pids).collect() for s in f.samples}
