"""The Usage & cost per key dashboard and the process panels against a real Prometheus
scraping a real gateway (issue 22).

``loragate serve`` with two workers on PostgreSQL (so prometheus_client's multiprocess mode and
the worker-tree process collector are what is scraped), in front of the stand-in vLLM
(tests/standin_vllm.py, in a child process: no vLLM needed). Three chat keys send different
amounts of traffic, one has quotas, and ``metrics_key_limit`` is 1, so both the labelled keys
and ``other`` appear.
Then every query of the usage dashboard, and the gateway dashboard's process panels, return
data, also with ``$instance`` set to the gateway's instance; the label sets stay within the cap.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from core.store import Database
from core.store.keys import KeyStore, Quota
from tests import prometheus_stack
from tests.conftest import fresh_postgres_database
from tests.standin_vllm import StandInVllmProcess
from tests.support import free_port, run, wait_until

BASE = "standin-base"
WORKERS = 2
KEY_LIMIT = 1
TRAFFIC = {"heavy": 6, "light": 2, "once": 1}  # chat requests per key name


@dataclass
class Stack:
    gateway_url: str
    prometheus_url: str
    keys: dict[str, tuple[str, str]]  # name -> (id, plaintext)
    gateway_pid: int = 0  # `loragate serve`: uvicorn's supervisor of the workers
    sent: int = 0
    started_at: float = field(default_factory=time.time)

    def chat(self, name: str, model: str = BASE) -> int:
        body = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8}
        headers = {"Authorization": f"Bearer {self.keys[name][1]}"}
        response = httpx.post(
            f"{self.gateway_url}/v1/chat/completions", json=body, headers=headers, timeout=60
        )
        self.sent += 1
        return response.status_code

    def query_range(self, expr: str) -> dict[str, Any]:
        return prometheus_stack.query_range(self.prometheus_url, expr, self.started_at)

    def query(self, expr: str) -> list[dict[str, Any]]:
        body = prometheus_stack.query(self.prometheus_url, expr)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("usage")
    engine = StandInVllmProcess.start(BASE)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with fresh_postgres_database() as database_url:
            keys = run(_make_keys(database_url))
            port = free_port()
            processes.append(_start_gateway(root, port, engine.url, database_url))
            prometheus, prometheus_url = prometheus_stack.start_prometheus(
                root, {"loragate": f"127.0.0.1:{port}"}
            )
            processes.append(prometheus)
            stack = Stack(f"http://127.0.0.1:{port}", prometheus_url, keys, processes[0].pid)
            _traffic(stack)
            yield stack
            for process in processes:
                prometheus_stack.stop(process)
    finally:
        for process in processes:
            prometheus_stack.stop(process)
        engine.stop()


async def _make_keys(database_url: str) -> dict[str, tuple[str, str]]:
    db = Database(database_url)
    try:
        await db.migrate()
        store = KeyStore(db)
        keys = {name: await store.create("chat", name) for name in TRAFFIC}
        await store.set_quota(keys["heavy"].id, Quota(monthly_tokens=1_000_000))
        return {name: (key.id, key.key) for name, key in keys.items()}
    finally:
        await db.dispose()


def _start_gateway(
    root: Path, port: int, engine_url: str, database_url: str
) -> subprocess.Popen[bytes]:
    env = {
        "LORAGATE_DATA_DIR": str(root / "data"),
        "LORAGATE_PORT": str(port),
        "LORAGATE_WORKERS": str(WORKERS),
        "LORAGATE_ENGINE_MODE": "external",
        "LORAGATE_ENGINE_URLS": engine_url,
        "LORAGATE_BASE_MODEL_NAME": BASE,
        "LORAGATE_DATABASE_URL": database_url,
        "LORAGATE_METRICS_KEY_LIMIT": str(KEY_LIMIT),
        "LORAGATE_QUOTA_DEFAULT_TOKENS_PER_MINUTE": "100000",
        "LORAGATE_QUOTA_USAGE_REFRESH_S": "1",  # the month's usage, re-read every second
        "LORAGATE_MONITOR_INTERVAL_S": "0",
        "LORAGATE_LOG_FORMAT": "json",
    }
    return prometheus_stack.start_gateway(root, port, env, ready_s=180)


def _traffic(stack: Stack) -> None:
    # One request first, scraped, then the rest: increase() cannot see a counter's first
    # increments, which come with its first sample.
    assert stack.chat("heavy") == 200
    wait_until(lambda: stack.query("loragate_key_requests_total"), 30, "a first scrape")
    for name, count in TRAFFIC.items():
        for _ in range(count - (name == "heavy")):
            assert stack.chat(name) == 200
    assert stack.chat("light", model="no-such-model") == 404
    total = "sum(loragate_key_requests_total)"

    def counted() -> bool:
        result = stack.query(total)
        return bool(result) and float(result[0]["value"][1]) == stack.sent

    wait_until(counted, 30, "every request in a scrape")
    # The usage gauges read the conversation rows, which the writer stores in batches.
    month = 'sum(loragate_key_month_tokens{key!="other"}) > 0 and sum(loragate_key_month_tokens)'
    wait_until(lambda: stack.query(month), 30, "the month's usage in a scrape")
    time.sleep(3)  # a few more samples, for the rates


# -- the checks ----------------------------------------------------------------------------
def _panel_queries(dashboards: ModuleType) -> list[tuple[str, str]]:
    usage = [(s, e) for s, e in dashboards.dashboard_queries() if s.startswith("dashboard usage")]
    process = [
        (s, e)
        for s, e in dashboards.dashboard_queries()
        if s.startswith("dashboard gateway") and "process_" in e
    ]
    assert len(usage) >= 9 and len(process) >= 3
    return usage + process


def test_every_usage_and_process_panel_returns_data(stack: Stack) -> None:
    dashboards = prometheus_stack.load_dashboards()
    instance = stack.gateway_url.split("//")[1]
    failed, empty = [], []
    for source, expr in _panel_queries(dashboards):
        for value in (".*", instance):  # $instance at All, and at this gateway
            concrete = dashboards.substitute(expr, instance=value)
            body = stack.query_range(concrete)
            if body.get("status") != "success":
                failed.append(f"{source}: {body.get('error')}: {concrete}")
            elif not body["data"]["result"]:
                empty.append(f"{source}: {concrete}")
    assert not failed, "queries Prometheus refused:\n" + "\n".join(failed)
    assert not empty, "queries with no data:\n" + "\n".join(empty)


def test_the_instance_variable_lists_the_gateway(stack: Stack) -> None:
    response = httpx.get(
        f"{stack.prometheus_url}/api/v1/label/instance/values",
        params={"match[]": "loragate_store_up"}, timeout=30,
    )  # fmt: skip
    assert response.json()["data"] == [stack.gateway_url.split("//")[1]]


def test_per_key_series_stay_within_the_cap(stack: Stack) -> None:
    text = httpx.get(f"{stack.gateway_url}/metrics", timeout=30).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    ids = {key_id: name for name, (key_id, _) in stack.keys.items()}
    labelled = set()
    for sample in families["loragate_key_requests"].samples:
        key, name = sample.labels["key"], sample.labels["name"]
        assert (key, name) == ("other", "other") or ids.get(key) == name, sample.labels
        labelled.add(key)
    # Each worker labels its first KEY_LIMIT keys, the rest are "other".
    assert len(labelled - {"other"}) <= WORKERS * KEY_LIMIT
    assert "other" in labelled
    requests = families["loragate_key_requests"].samples
    assert sum(s.value for s in requests if s.name.endswith("_total")) == stack.sent


def test_usage_gauges_label_the_heaviest_key_and_fold_the_rest(stack: Stack) -> None:
    heavy_id = stack.keys["heavy"][0]
    month = {r["metric"]["key"]: float(r["value"][1]) for r in stack.query(
        "loragate_key_month_tokens")}  # fmt: skip
    assert set(month) == {heavy_id, "other"}
    assert month[heavy_id] > month["other"] > 0
    limits = {(r["metric"]["key"], r["metric"]["limit"]): float(r["value"][1])
              for r in stack.query("loragate_key_quota_limit")}  # fmt: skip
    assert limits == {
        (heavy_id, "monthly_tokens"): 1_000_000,
        (heavy_id, "tokens_per_minute"): 100_000,
    }


def test_process_metrics_cover_the_worker_tree(stack: Stack) -> None:
    text = httpx.get(f"{stack.gateway_url}/metrics", timeout=30).text
    exposed = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes",
                 "process_open_fds", "process_start_time_seconds"):  # fmt: skip
        assert name in exposed, name
    # Whichever worker answered, the memory is the whole tree's: the supervisor and both
    # workers, well over any one of them.
    supervisor = psutil.Process(stack.gateway_pid)
    tree = [supervisor, *supervisor.children()]
    assert len(tree) >= 1 + WORKERS
    largest = max(process.memory_info().rss for process in tree)
    assert exposed["process_resident_memory_bytes"] > 1.5 * largest
    assert exposed["process_start_time_seconds"] == pytest.approx(supervisor.create_time(), abs=1)
