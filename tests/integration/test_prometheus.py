"""A real Prometheus scrapes a real gateway and the real vLLM under generated traffic.

The gateway is ``loragate serve`` with two workers on PostgreSQL, in front of the session's
vLLM CPU server, so the metrics go through prometheus_client's multiprocess mode. Traffic
covers chat, streams, a refused request, feedback and a correction, grounded requests (with
and without hits), a canary rollout step, a monitor report, a trainer run's store writes,
a rollback and a promotion. Prometheus (Debian's package) scrapes both every second and evaluates
deploy/prometheus/rules.yml. Then:

* the merged /metrics counts every request exactly once, whichever worker served it, and
  every label set is bounded (no completion ids, plaintext keys or paths; key ids only in the
  capped loragate_key_* metrics);
* every PromQL expression of every dashboard panel and every rule parses and returns data,
  except the few listed in ``EXPECTED_EMPTY`` with the reason;
* the rollback alert fires.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapters.registry import check_alias
from core.store import Database
from tests import prometheus_stack
from tests.conftest import fresh_postgres_database
from tests.integration.conftest import BASE_MODEL, EmbeddedServer
from tests.support import create_keys, free_port, run, wait_until
from trainer.sample import sample_adapter
from trainer.store import TrainerStore
from trainer.tables import EvalScore

REPO = Path(__file__).resolve().parents[2]
COLLECTION = "prom-docs"
CHATS = 12  # alias requests; every other one streams, every third one is grounded

# Expressions that cannot return data in a fresh, minutes-old Prometheus, and why.
EXPECTED_EMPTY = {
    "loragate_rate_limited_total": "no quotas are configured in this test",
    "loragate_upstream_errors_total": "vLLM does not fail in this test (fault tests cover it)",
    "loragate_client_disconnects_total": "every client here reads its answer to the end",
    'outcome="aborted"': "no rollout is aborted here (test_adapters_live aborts one)",
    "loragate_experiment_": "no A/B experiment runs here (test_experiments covers them)",
    "loragate_key_quota_limit": "no key has a quota here (test_usage_dashboard sets some)",
}
# Counted per request, by alias: only what this test's traffic asked for can appear.
PER_REQUEST = {
    "loragate_requests_total", "loragate_request_duration_seconds",
    "loragate_gateway_overhead_seconds", "loragate_time_to_first_token_seconds",
    "loragate_inter_token_latency_seconds", "loragate_tokens_total",
    "loragate_requests_in_flight", "loragate_client_disconnects_total",
    "loragate_groundedness", "loragate_feedback_total",
}  # fmt: skip
# Alert expressions (a comparison with a threshold) are empty while the alert is quiet; the
# quantity each compares is a recording rule or panel checked above, and promtool's unit
# tests (tests/unit/test_alerts_and_dashboards.py) make each one fire.
FIRING_HERE = {"LoragateRollbackHappened", "LoragateTrainingRunFailed", "LoragateAliasDegraded"}


@dataclass
class Stack:
    gateway_url: str
    prometheus_url: str
    database_url: str
    keys: dict[str, str]
    alias: str
    sent: int = 0  # chat requests the gateway answered (2xx) or refused (4xx)
    started_at: float = field(default_factory=time.time)

    def headers(self, scope: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[scope]}"}

    def post(self, path: str, body: dict[str, Any], scope: str = "admin") -> httpx.Response:
        return httpx.post(
            f"{self.gateway_url}{path}", json=body, headers=self.headers(scope), timeout=120
        )

    def query(self, expr: str) -> dict[str, Any]:
        return prometheus_stack.query(self.prometheus_url, expr)

    def query_range(self, expr: str) -> dict[str, Any]:
        """Over the whole test, as a dashboard panel shows it."""
        return prometheus_stack.query_range(self.prometheus_url, expr, self.started_at)

    def metrics_text(self) -> str:
        return httpx.get(f"{self.gateway_url}/metrics", timeout=30).text


@pytest.fixture(scope="module")
def stack(
    embedded_server: EmbeddedServer, prepared_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    # A database of its own: the review items and runs this traffic leaves must not show up
    # in other tests' queues.
    with fresh_postgres_database() as postgres_url:
        yield from _stack(embedded_server, postgres_url, prepared_model, tmp_path_factory)


def _stack(
    embedded_server: EmbeddedServer,
    postgres_url: str,
    prepared_model: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("prometheus")
    port = free_port()
    gateway = _start_gateway(root, port, embedded_server, postgres_url, prepared_model)
    prometheus = _start_prometheus(root, f"127.0.0.1:{port}", embedded_server.engine_url)
    try:
        stack = Stack(
            f"http://127.0.0.1:{port}",
            prometheus[1],
            postgres_url,
            create_keys(postgres_url),
            f"prom{uuid.uuid4().hex[:6]}",
        )
        _generate_traffic(stack, root, prepared_model)
        yield stack
    finally:
        for process in (prometheus[0], gateway):
            prometheus_stack.stop(process)
        embedded_server.unload_adapters()


def _start_gateway(
    root: Path, port: int, engine: EmbeddedServer, database_url: str, model: Path
) -> subprocess.Popen[bytes]:
    env = {
        "LORAGATE_DATA_DIR": str(root / "data"),
        "LORAGATE_PORT": str(port),
        "LORAGATE_WORKERS": "2",
        "LORAGATE_ENGINE_MODE": "external",
        "LORAGATE_ENGINE_URLS": engine.engine_url,
        "LORAGATE_BASE_MODEL_NAME": BASE_MODEL,
        "LORAGATE_BASE_MODEL_PATH": str(model),
        "LORAGATE_DATABASE_URL": database_url,
        "LORAGATE_RECONCILE_INTERVAL_S": "1",
        "LORAGATE_ROLLOUT_INTERVAL_S": "3600",  # the test steps and rolls back by hand
        "LORAGATE_MONITOR_INTERVAL_S": "0",  # the test asks for a report
        "LORAGATE_MONITOR_WINDOW": "5",
        "LORAGATE_MONITOR_MIN_QUERIES": "3",
        "LORAGATE_LOG_FORMAT": "json",
    }
    return prometheus_stack.start_gateway(root, port, env, ready_s=120)


def _start_prometheus(
    root: Path, gateway: str, engine_url: str
) -> tuple[subprocess.Popen[bytes], str]:
    targets = {"loragate": gateway, "vllm": engine_url.split("//")[1]}
    rules = [str(REPO / "deploy/prometheus/rules.yml")]
    return prometheus_stack.start_prometheus(root, targets, rules)


# -- traffic -------------------------------------------------------------------------------
def _generate_traffic(stack: Stack, root: Path, model: Path) -> None:
    v1, v2 = (
        _publish(stack, sample_adapter(root / f"lora{seed}", model, seed=seed)) for seed in range(2)
    )
    _ingest(stack)
    # Before the canary: all answered by v1, the live version, so the monitor has a
    # reference window whatever the sticky split does later.
    warm_up = [_chat(stack, number) for number in range(CHATS, CHATS + 4)]
    started = stack.post(
        "/v1/admin/rollouts", {"alias": stack.alias, "version": v2, "steps": [50, 100]}
    )
    assert started.status_code == 201, started.text
    completions = [_chat(stack, number) for number in range(CHATS)]
    served = {version for _, version in completions}
    assert served == {v1, v2}, "sticky split at 50% should have used both versions"
    unknown = {"model": "no-such-model", "messages": [{"role": "user", "content": "Hi"}]}
    refused = stack.post("/v1/chat/completions", unknown, "chat")
    assert refused.status_code == 404, refused.text
    stack.sent += 1
    # The rows first: a worker finds a completion it has not written yet by flushing its own
    # queue, but not one the other worker still holds, and the monitor reads only written rows.
    _wait_for_conversations(stack, len(warm_up) + CHATS)
    _feedback(stack, [completion for completion, _ in completions])
    report = stack.post(f"/v1/admin/monitor/{stack.alias}", {})
    assert report.status_code == 201, report.text
    _approve_first_review_item(stack)
    rollback = stack.post(f"/v1/admin/rollouts/{stack.alias}/rollback", {})
    assert rollback.status_code in (200, 201), rollback.text
    v3 = _publish(stack, sample_adapter(root / "lora2", model, seed=2))
    _trainer_writes(stack, v3)
    started = stack.post("/v1/admin/rollouts", {"alias": stack.alias, "version": v3})
    assert started.status_code == 201, started.text
    promoted = stack.post(f"/v1/admin/rollouts/{stack.alias}/promote", {})
    assert promoted.status_code in (200, 201), promoted.text
    rolled_back = f'loragate_rollout_outcomes_total{{alias="{stack.alias}",outcome="rolled_back"}}'
    wait_until(
        lambda: stack.query(rolled_back)["data"]["result"], 30, "a scrape after the rollback"
    )
    wait_until(lambda: _active_alerts(stack) >= FIRING_HERE, 30, "the alerts to evaluate")


def _publish(stack: Stack, lora: Path) -> str:
    response = stack.post("/v1/admin/adapters", {"path": str(lora), "alias": stack.alias})
    assert response.status_code == 201, response.text
    name: str = response.json()["name"]
    return name


def _ingest(stack: Stack) -> None:
    documents = {
        "returns": "Bicycles may be returned within 38 days of delivery if unridden.",
        "warranty": "Frames carry a lifetime warranty; components are covered for two years.",
    }
    for document_id, text in documents.items():
        response = stack.post(f"/v1/collections/{COLLECTION}/documents",
                              {"id": document_id, "text": text})  # fmt: skip
        assert response.status_code == 201, response.text


def _chat(stack: Stack, number: int) -> tuple[str, str]:
    body: dict[str, Any] = {
        "model": stack.alias,
        "messages": [{"role": "user", "content": f"How long is the return window? ({number})"}],
        "max_tokens": 4,
        "conversation_id": f"conversation-{number}",
        "stream": number % 2 == 1,
        "stream_options": {"include_usage": True} if number % 2 == 1 else None,
    }
    if number % 3 == 0:  # grounded; one in two of those finds nothing above its min_score
        body["retrieval"] = {"collection": COLLECTION, "min_score": 0.99 if number % 2 else 0.0}
    body = {key: value for key, value in body.items() if value is not None}
    with httpx.stream(
        "POST", f"{stack.gateway_url}/v1/chat/completions", json=body,
        headers=stack.headers("chat"), timeout=120,
    ) as response:  # fmt: skip
        assert response.status_code == 200, response.read()
        text = response.read().decode()
        version = response.headers["x-loragate-version"]
    stack.sent += 1
    if body["stream"]:
        assert text.rstrip().endswith("data: [DONE]")
        completion_id = json.loads(text.split("data: ", 2)[1])["id"]
    else:
        completion_id = json.loads(text)["id"]
    return completion_id, version


def _feedback(stack: Stack, completions: list[str]) -> None:
    half = len(completions) // 2
    for number, completion in enumerate(completions):
        if number == half:
            # A counter's first increments come with its first sample, where increase() cannot
            # see them: let Prometheus scrape all of them before the rest of the feedback.
            wait_until(lambda: _feedback_scraped(stack) >= half, 30, "a scrape of the feedback")
        body: dict[str, Any] = {"completion_id": completion, "score": 1 if number % 3 else -1}
        if number == 0:
            body["correction"] = "Unridden bicycles can be returned within 38 days."
        response = stack.post("/v1/feedback", body, "chat")
        assert response.status_code in (200, 201), response.text


def _feedback_scraped(stack: Stack) -> float:
    """How many ratings Prometheus has scraped so far."""
    result = stack.query("sum(loragate_feedback_total)")["data"]["result"]
    return float(result[0]["value"][1]) if result else 0.0


def _wait_for_conversations(stack: Stack, count: int) -> None:
    """The conversation log writes in batches; the monitor reads what is written."""
    from sqlalchemy import func, select

    from core.store.tables import Conversation

    async def written() -> int:
        db = Database(stack.database_url)
        try:
            async with db.transaction() as session:
                query = select(func.count()).where(Conversation.requested_model == stack.alias)
                return int(await session.scalar(query) or 0)
        finally:
            await db.dispose()

    wait_until(lambda: run(written()) >= count, 30, "the conversation rows", step_s=0.5)


def _approve_first_review_item(stack: Stack) -> None:
    """The operator approves the correction the feedback above put in the review queue."""
    listing = httpx.get(
        f"{stack.gateway_url}/v1/admin/review", params={"alias": stack.alias},
        headers=stack.headers(), timeout=30,
    ).json()  # fmt: skip
    item = listing["data"][0]
    decided = stack.post(
        f"/v1/admin/review/{item['id']}/decision",
        {"decision": "approve", "revision": item["revision"]},
    )
    assert decided.status_code == 200, decided.text


def _trainer_writes(stack: Stack, candidate: str) -> None:
    """What a training worker writes to the store: a run that failed, for a candidate it
    published its eval report, and a scheduled re-evaluation that found the alias degraded
    (training and re-evaluation themselves are test_trainer_loop's and test_reeval's)."""
    from adapters.registry import Registry, ValidationLimits

    async def write() -> None:
        db = Database(stack.database_url)
        try:
            store = TrainerStore(db)
            run_id = await store.start_run(stack.alias, "manual", approved=1)
            await store.finish_run(run_id, "failed", error="out of memory (test)")
            registry = Registry(db.sessions, Path("unused"), ValidationLimits(None, 64))
            report = {"candidate": {"holdout": {"accuracy": 0.6}, "probes": {"accuracy": 0.9}}}
            await registry.set_eval_report(candidate, report)
            await store.add_eval_scores([EvalScore(
                alias=stack.alias, version=candidate, holdout_count=10, holdout_accuracy=0.3,
                probe_accuracy=0.9, reference_accuracy=0.6, degraded=True, report={},
            )])  # fmt: skip
        finally:
            await db.dispose()

    run(write())


# -- the checks ----------------------------------------------------------------------------
def test_every_request_is_counted_once_across_workers(stack: Stack) -> None:
    families = {f.name: f for f in text_string_to_metric_families(stack.metrics_text())}
    requests = families["loragate_requests"].samples
    assert sum(s.value for s in requests if s.name == "loragate_requests_total") == stack.sent
    refused = [s for s in requests if s.labels["alias"] == "-"]
    assert [(s.labels["version"], s.labels["status"], s.value) for s in refused] == [
        ("-", "4xx", 1.0)
    ]


def test_label_sets_are_bounded(stack: Stack) -> None:
    contract = _load_contract()
    served = {stack.alias, BASE_MODEL, "-"}  # what this gateway's traffic asked for
    for family in text_string_to_metric_families(stack.metrics_text()):
        if not family.name.startswith("loragate_"):
            continue
        for sample in family.samples:
            labels = dict(sample.labels)
            labels.pop("le", None)
            name = _exposed_name(family)
            assert name in contract, f"{name} is exported but not in the metrics contract"
            assert set(labels) == set(contract[name]), (name, labels)
            if name in PER_REQUEST:  # counted by this gateway as its requests happen
                assert labels["alias"] in served, (name, labels)
            elif "alias" in labels:  # read from the shared store: any alias it holds
                assert labels["alias"] == BASE_MODEL or check_alias(labels["alias"])
            if name == "loragate_requests_total":
                assert re.fullmatch(r"[1-5]xx", labels["status"]), labels
            for value in labels.values():
                assert not re.search(r"chatcmpl-|lg-|/|conversation-", value), (name, value)


def test_every_dashboard_and_rule_query_returns_data(stack: Stack) -> None:
    dashboards = prometheus_stack.load_dashboards()
    empty, failed, reasons_used = [], [], set()
    queries = dashboards.all_queries()
    for source, expr in queries:
        concrete = dashboards.substitute(expr)
        body = stack.query_range(concrete)
        if body.get("status") != "success":
            failed.append(f"{source}: {body.get('error')}: {concrete}")
        elif not body["data"]["result"]:
            reason = _expected_empty(source, concrete)
            if reason is None:
                empty.append(f"{source}: {concrete}")
            reasons_used.add(reason)
    assert len(queries) > 100
    assert not failed, "queries Prometheus refused:\n" + "\n".join(failed)
    assert not empty, "queries with no data and no listed reason:\n" + "\n".join(empty)
    assert reasons_used >= set(EXPECTED_EMPTY), "a listed reason no longer applies"


def test_the_rollback_failed_run_and_degraded_alerts_fire(stack: Stack) -> None:
    active = _active_alerts(stack)  # pending or firing: each alert has a `for:` period
    assert active >= FIRING_HERE
    quiet = {"LoragateErrorRateHigh", "LoragateStoreDown", "VllmKvCacheNearlyFull"}
    assert not active & quiet, active


def _active_alerts(stack: Stack) -> set[str]:
    body = httpx.get(f"{stack.prometheus_url}/api/v1/alerts", timeout=30).json()
    return {alert["labels"]["alertname"] for alert in body["data"]["alerts"]}


def _expected_empty(source: str, expr: str) -> str | None:
    """The EXPECTED_EMPTY key that explains an empty result, "alert" for a quiet alert."""
    if " / alert " in source:
        return "alert" if source.rsplit(" ", 1)[1] not in FIRING_HERE else None
    return next((marker for marker in EXPECTED_EMPTY if marker in expr), None)


def _exposed_name(family: Any) -> str:
    return f"{family.name}_total" if family.type == "counter" else family.name


def _load_contract() -> dict[str, tuple[str, ...]]:
    from tests.unit.test_alerts_and_dashboards import METRICS

    return {name: labels for name, (_, labels) in METRICS.items()}
