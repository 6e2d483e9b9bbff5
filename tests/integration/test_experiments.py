"""A/B experiments on the real stack: an even split, sticky per conversation, across two
adapter versions (and a retrieval-off arm) served by the real vLLM; thumbs per arm; the
sequential test deciding; the winner promoted.

What each bad input gets: an arm naming no version 404 ``adapter_not_found``; a rejected or
file-less version 400 ``invalid_experiment``; fewer than two arms or a malformed arm 400; a
second experiment, or an experiment while a rollout runs, 409 ``experiment_conflict``; a
rollout while an experiment runs 409 ``rollout_conflict``; promoting with no decision 400.
Nothing is changed by any of them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.store import Database
from core.store.tables import Conversation
from tests.integration.conftest import BASE_MODEL, EmbeddedServer
from tests.support import ThreadedGateway, create_keys, metric_value, run, wait_until

pytestmark = pytest.mark.vllm

COLLECTION = "exp-docs"


@pytest.fixture(autouse=True)
def unload_adapters_afterwards(embedded_server: EmbeddedServer) -> Iterator[None]:
    yield
    embedded_server.unload_adapters()


class Lab:
    def __init__(self, gateway: ThreadedGateway, alias: str) -> None:
        self.gateway = gateway
        self.alias = alias
        self.keys = create_keys(gateway.settings.resolved_database_url)

    def admin(self, method: str, path: str, body: Any = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.keys['admin']}"}
        return httpx.request(method, f"{self.gateway.base_url}{path}", json=body,
                             headers=headers, timeout=120)  # fmt: skip

    def publish(self, lora: Path) -> str:
        response = self.admin(
            "POST", "/v1/admin/adapters", {"path": str(lora), "alias": self.alias}
        )
        assert response.status_code == 201, response.text
        return str(response.json()["name"])

    def chat(self, conversation: str) -> httpx.Response:
        response = self.gateway.post(
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {self.keys['chat']}"},
            json={"model": self.alias, "max_tokens": 1, "conversation_id": conversation,
                  "messages": [{"role": "user", "content": "How long do returns take?"}]},
        )  # fmt: skip
        assert response.status_code == 200, response.text
        return response

    def thumbs(self, completion_id: str, score: int) -> None:
        response = self.gateway.post(
            "/v1/feedback", headers={"Authorization": f"Bearer {self.keys['chat']}"},
            json={"completion_id": completion_id, "score": score},
        )  # fmt: skip
        assert response.status_code in (200, 202), response.text

    def start(self, arms: list[str], **extra: Any) -> httpx.Response:
        return self.admin("POST", "/v1/admin/experiments",
                          {"alias": self.alias, "arms": arms, **extra})  # fmt: skip

    def status(self) -> dict[str, Any]:
        response = self.admin("GET", f"/v1/admin/experiments/{self.alias}")
        assert response.status_code == 200, response.text
        return dict(response.json())


@pytest.fixture
def lab(gateway_factory: Callable[..., ThreadedGateway], prepared_model: Path) -> Lab:
    alias = f"x{uuid.uuid4().hex[:8]}"
    gateway = gateway_factory(
        base_model_path=prepared_model, reconcile_interval_s=2.0,
        rollout_interval_s=4,  # the experiment loop looks every second
        experiment_min_samples=6,
        retrieval_models={alias: {"collection": COLLECTION, "min_score": 0.0}},
    )  # fmt: skip
    lab = Lab(gateway, alias)
    document = {"id": "returns", "text": "Returns are accepted within 47 days."}
    added = lab.admin("POST", f"/v1/collections/{COLLECTION}/documents", document)
    assert added.status_code == 201, added.text
    return lab


def _rows(lab: Lab, experiment_id: int) -> list[Conversation]:
    async def read() -> list[Conversation]:
        from sqlalchemy import select

        db = Database(lab.gateway.settings.resolved_database_url)
        try:
            async with db.sessions() as session:
                query = select(Conversation).where(Conversation.experiment_id == experiment_id)
                return list(await session.scalars(query))
        finally:
            await db.dispose()

    return list(run(read()))


def test_an_experiment_splits_sticky_decides_and_promotes_its_winner(
    lab: Lab, loras: list[Path]
) -> None:
    v1, v2 = lab.publish(loras[0]), lab.publish(loras[1])
    started = lab.start(["v1", "v2", "v2:no-retrieval"])
    assert started.status_code == 201, started.text
    experiment = started.json()
    assert [arm["version"] for arm in experiment["arms"]] == [v1, v2, v2]

    served: dict[str, set[str]] = {}
    completions: dict[str, list[str]] = {}
    for n in range(36):
        conversation = f"c{n}"
        for _ in range(2):  # the same conversation twice: the same arm both times
            response = lab.chat(conversation)
            served.setdefault(conversation, set()).add(response.headers["x-loragate-version"])
        completions.setdefault(conversation, []).append(response.json()["id"])
    assert all(len(versions) == 1 for versions in served.values())  # sticky
    assert {next(iter(versions)) for versions in served.values()} == {v1, v2}

    def recorded() -> list[Conversation]:
        rows = _rows(lab, experiment["id"])
        return rows if len(rows) == 72 else []

    rows = wait_until(recorded, 30, "every answer recorded with its arm")
    by_arm: dict[str, list[Conversation]] = {}
    for row in rows:
        by_arm.setdefault(row.arm or "", []).append(row)
    assert set(by_arm) == {"v1", "v2", "v2:no-retrieval"}  # an even split: every arm served
    assert all(row.context for row in by_arm["v2"])  # the alias's retrieval
    assert not any(row.context for row in by_arm["v2:no-retrieval"])  # retrieval off

    # v2 (with retrieval) pleases, the others do not.
    for row in rows:
        lab.thumbs(row.id, 1 if row.arm == "v2" else -1)
    decided = wait_until(
        lambda: (s := lab.status())["state"] != "running" and s, 60, "the experiment to decide"
    )
    assert decided["state"] == "decided" and decided["winner"] == "v2", decided
    results = decided["results"]
    assert results["arms"]["v2"]["rate"] == 1.0 and results["arms"]["v1"]["rate"] == 0.0
    assert results["comparisons"]["v2"]["significant"]
    low, high = results["comparisons"]["v2"]["interval"]
    assert 0 < low < high

    cli = _cli(lab, "experiment", "status", lab.alias)
    assert json.loads(cli.stdout)["winner"] == "v2"
    promoted = lab.admin("POST", f"/v1/admin/experiments/{lab.alias}/promote")
    assert promoted.status_code == 200, promoted.text
    assert lab.chat("after").headers["x-loragate-version"] == v2
    versions = {
        v["name"]: v["state"] for v in lab.admin("GET", "/v1/admin/adapters").json()["data"]
    }
    assert versions[v1] == "retired" and versions[v2] == "live"


def test_bad_experiments_are_refused_and_change_nothing(lab: Lab, loras: list[Path]) -> None:
    v1, v2 = lab.publish(loras[0]), lab.publish(loras[1])
    missing = lab.start(["v1", "v9"])
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "adapter_not_found"
    for arms in (["v1"], ["v1", "v1"], ["v1", "v2:retrieval"]):
        bad = lab.start(arms)
        assert bad.status_code == 400, (arms, bad.text)
        assert bad.json()["error"]["type"] == "invalid_request_error"
    not_decided = lab.admin("POST", f"/v1/admin/experiments/{lab.alias}/promote")
    assert not_decided.status_code in (400, 404)

    assert lab.start(["v1", "base"]).status_code == 201
    again = lab.start(["v1", "v2"])
    assert again.status_code == 409 and again.json()["error"]["code"] == "experiment_conflict"
    rollout = lab.admin("POST", "/v1/admin/rollouts", {"alias": lab.alias, "version": v2})
    assert rollout.status_code == 409 and "experiment" in rollout.json()["error"]["message"]
    stopped = lab.admin("POST", f"/v1/admin/experiments/{lab.alias}/stop")
    assert stopped.status_code == 200 and stopped.json()["state"] == "stopped"
    metrics = lab.gateway.get("/metrics").text
    assert metric_value(metrics, "loragate_experiment_running", alias=lab.alias) is None

    # A version whose files are gone cannot be an arm.
    v3 = lab.publish(loras[2])
    (lab.gateway.settings.data_dir / "adapters" / v3 / "adapter_config.json").unlink()
    gone = lab.start(["v1", "v3"])
    assert gone.status_code == 400 and "cannot be loaded" in gone.json()["error"]["message"]

    # A rollout in progress blocks experiments.
    assert lab.admin("POST", "/v1/admin/rollouts", {"alias": lab.alias, "version": v2}).is_success
    during = lab.start(["v1", "v2"])
    assert during.status_code == 409 and "rollout" in during.json()["error"]["message"]
    assert _states(lab) == {v1: "live", v2: "canary", v3: "candidate"}


def _states(lab: Lab) -> dict[str, str]:
    versions = lab.admin("GET", "/v1/admin/adapters").json()["data"]
    return {version["name"]: version["state"] for version in versions}


def _cli(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LORAGATE_DATA_DIR": str(lab.gateway.settings.data_dir),
           "LORAGATE_DATABASE_URL": lab.gateway.settings.resolved_database_url,
           "LORAGATE_BASE_MODEL_NAME": BASE_MODEL}  # fmt: skip
    result = subprocess.run([sys.executable, "-m", "gateway.cli", *args], env=env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result
