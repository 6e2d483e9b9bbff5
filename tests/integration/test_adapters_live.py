"""Adapters on the real vLLM CPU server: publish, hot swap, sticky canary split, feedback,
and rollouts that promote or roll back on live traffic and feedback."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.routing import sticky_bucket
from tests.integration.conftest import EmbeddedServer
from tests.support import (
    ThreadedGateway,
    create_keys,
    metric_value,
    wait_for_conversation,
    wait_until,
)


@pytest.fixture(autouse=True)
def unload_adapters_afterwards(embedded_server: EmbeddedServer) -> Iterator[None]:
    """Each test has its own store; leave the shared vLLM without its adapters."""
    yield
    embedded_server.unload_adapters()


class Admin:
    def __init__(self, gateway: ThreadedGateway) -> None:
        self.gateway = gateway
        self.keys = create_keys(gateway.settings.resolved_database_url)
        self.alias = f"t{uuid.uuid4().hex[:8]}"

    def headers(self, scope: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[scope]}"}

    def publish(self, lora: Path) -> dict[str, Any]:
        response = self.gateway.post(
            "/v1/admin/adapters",
            headers=self.headers(),
            json={"path": str(lora), "alias": self.alias},
        )
        assert response.status_code == 201, response.text
        return dict(response.json())

    def rollout(self, version: str, steps: list[int]) -> dict[str, Any]:
        response = self.gateway.post(
            "/v1/admin/rollouts",
            headers=self.headers(),
            json={"alias": self.alias, "version": version, "steps": steps},
        )
        assert response.status_code == 201, response.text
        return dict(response.json())

    def rollout_state(self) -> dict[str, Any]:
        return dict(
            self.gateway.get(f"/v1/admin/rollouts/{self.alias}", headers=self.headers()).json()
        )

    def chat(self, model: str, conversation_id: str) -> httpx.Response:
        return self.gateway.post(
            "/v1/chat/completions",
            headers=self.headers("chat"),
            json={
                "model": model,
                "messages": [{"role": "user", "content": "Hi"}],
                "max_tokens": 1,
                "conversation_id": conversation_id,
            },
        )

    def feedback(self, completion_id: str, score: int, scope: str = "chat") -> httpx.Response:
        return self.gateway.post(
            "/v1/feedback",
            headers=self.headers(scope),
            json={"completion_id": completion_id, "score": score},
        )


@pytest.fixture
def admin_factory(
    gateway_factory: Callable[..., ThreadedGateway], prepared_model: Path
) -> Callable[..., Admin]:
    def make(**overrides: Any) -> Admin:
        settings = {"base_model_path": prepared_model, "reconcile_interval_s": 2.0, **overrides}
        return Admin(gateway_factory(**settings))

    return make


def test_alias_split_is_sticky_and_matches_the_weight(
    admin_factory: Callable[..., Admin], loras: list[Path]
) -> None:
    admin = admin_factory(rollout_interval_s=3600)
    v1, v2 = admin.publish(loras[0])["name"], admin.publish(loras[1])["name"]
    pinned = admin.chat(v1, "pinned")
    assert pinned.headers["x-loragate-version"] == v1
    db_url = admin.gateway.settings.resolved_database_url
    key_id = wait_for_conversation(db_url, pinned.json()["id"]).api_key_id

    admin.rollout(v2, [50, 100])
    conversations = [f"c{n}" for n in range(40)]
    with ThreadPoolExecutor(4) as pool:
        served = dict(
            zip(
                conversations,
                pool.map(
                    lambda cid: admin.chat(admin.alias, cid).headers["x-loragate-version"],
                    conversations,
                ),
                strict=True,
            )
        )
    # A conversation is its key's own (gateway/chat.py): the key's id is part of the hash.
    expected = {
        cid: v2 if sticky_bucket(f"{admin.alias}:{key_id}/{cid}") < 0.5 else v1
        for cid in conversations
    }
    assert served == expected  # every request went where its sticky hash says
    share = Counter(served.values())[v2] / len(conversations)
    assert 0.25 <= share <= 0.75  # 50% weight, n=40: within ~3 standard deviations
    assert admin.chat(admin.alias, "c7").headers["x-loragate-version"] == served["c7"]


def _drive(admin: Admin, versions: dict[str, int], requests: int) -> None:
    """Chat with the alias and give each answer the score its version should get."""
    for n in range(requests):
        response = admin.chat(admin.alias, f"conversation-{uuid.uuid4().hex}-{n}")
        assert response.status_code == 200
        body = response.json()
        assert admin.feedback(body["id"], versions[body["model"]]).status_code == 200


def _split_evenly(admin: Admin, weight: float, per_side: int) -> list[str]:
    """Conversation ids whose sticky hash sends exactly ``per_side`` to each side of a
    canary at ``weight``: with random ids, 16 requests leave one side under min_samples
    about once in 240 runs, and the step then rightly waits for samples that never come."""
    first = admin.chat(admin.alias, "find-the-key")
    db_url = admin.gateway.settings.resolved_database_url
    key_id = wait_for_conversation(db_url, first.json()["id"]).api_key_id
    sides: dict[bool, list[str]] = {True: [], False: []}
    while min(len(ids) for ids in sides.values()) < per_side:
        cid = f"conversation-{uuid.uuid4().hex}"
        side = sides[sticky_bucket(f"{admin.alias}:{key_id}/{cid}") < weight]
        if len(side) < per_side:
            side.append(cid)
    return sides[True] + sides[False]


def test_negative_feedback_on_the_canary_rolls_it_back(
    admin_factory: Callable[..., Admin], loras: list[Path]
) -> None:
    admin = admin_factory(rollout_interval_s=4, rollout_min_samples=3, rollout_failure_threshold=1)
    v1, v2 = admin.publish(loras[0])["name"], admin.publish(loras[1])["name"]
    admin.rollout(v2, [50, 100])
    for cid in _split_evenly(admin, weight=0.5, per_side=8):
        body = admin.chat(admin.alias, cid).json()
        assert admin.feedback(body["id"], {v1: 1, v2: -1}[body["model"]]).status_code == 200
    try:
        state = wait_until(
            lambda: (s := admin.rollout_state())["state"] != "running" and s,
            60,
            "the rollout to decide",
        )
    except AssertionError as exc:  # the last analysis says what it waited for
        last_events = admin.rollout_state()["history"][-2:]
        raise AssertionError(f"{exc}; last events: {last_events}") from None
    assert state["state"] == "rolled_back"
    assert "negative_feedback_rate" in state["reason"]
    assert admin.chat(admin.alias, "after").headers["x-loragate-version"] == v1
    metrics = admin.gateway.get("/metrics").text
    outcome = {"alias": admin.alias, "outcome": "rolled_back", "reason": "gate_failed"}
    assert metric_value(metrics, "loragate_rollout_outcomes_total", **outcome) == 1.0


def test_positive_feedback_promotes_the_canary(
    admin_factory: Callable[..., Admin], loras: list[Path], embedded_server: EmbeddedServer
) -> None:
    admin = admin_factory(rollout_interval_s=4, rollout_min_samples=3, adapter_drain_s=1)
    v1, v2 = admin.publish(loras[0])["name"], admin.publish(loras[1])["name"]
    admin.rollout(v2, [50, 100])
    deadline = time.monotonic() + 90
    while admin.rollout_state()["state"] == "running" and time.monotonic() < deadline:
        _drive(admin, {v1: 1, v2: 1}, requests=8)
    state = admin.rollout_state()
    assert state["state"] == "promoted", state
    assert [event["kind"] for event in state["history"]][-1] == "promoted"
    assert admin.chat(admin.alias, "after").headers["x-loragate-version"] == v2

    # The retired version leaves vLLM once drained, and the reconciler counts the unload.
    def unloaded() -> bool:
        served = httpx.get(f"{embedded_server.engine_url}/v1/models", timeout=10).json()
        return v1 not in {model["id"] for model in served["data"]}

    wait_until(unloaded, 30, f"{v1} unloaded from vLLM")
    metrics = admin.gateway.get("/metrics").text
    assert (metric_value(metrics, "loragate_reconciler_actions_total", action="unload") or 0) >= 1


def test_a_hot_swap_under_load_fails_no_request(
    admin_factory: Callable[..., Admin], loras: list[Path]
) -> None:
    admin = admin_factory(rollout_interval_s=3600)
    v1 = admin.publish(loras[0])["name"]
    failures: list[str] = []
    served: Counter[str] = Counter()
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            body = {
                "model": admin.alias,
                "messages": [{"role": "user", "content": "Hi"}],
                "max_tokens": 4,
                "stream": True,
                "conversation_id": uuid.uuid4().hex,
            }
            url = f"{admin.gateway.base_url}/v1/chat/completions"
            try:
                with httpx.stream(
                    "POST", url, json=body, headers=admin.headers("chat"), timeout=120
                ) as response:
                    lines = [line for line in response.iter_lines() if line]
            except httpx.HTTPError as exc:
                failures.append(repr(exc))
                continue
            complete = lines[-1:] == ["data: [DONE]"] and not any('"error"' in x for x in lines)
            if response.status_code != 200 or not complete:
                failures.append(f"{response.status_code}: {lines[-3:]}")
            served[response.headers.get("x-loragate-version", "?")] += 1

    threads = [threading.Thread(target=load) for _ in range(3)]
    for thread in threads:
        thread.start()
    wait_until(lambda: served[v1] >= 3, 120, "traffic on the first version")
    v2 = admin.publish(loras[1])["name"]
    admin.rollout(v2, [100])
    assert (
        admin.gateway.post(
            f"/v1/admin/rollouts/{admin.alias}/promote", headers=admin.headers()
        ).status_code
        == 200
    )
    wait_until(lambda: served[v2] >= 3, 120, "traffic on the new version")
    stop.set()
    for thread in threads:
        thread.join(timeout=120)
    assert failures == []
    assert served[v1] >= 3 and served[v2] >= 3


def test_feedback_rules(admin_factory: Callable[..., Admin], loras: list[Path]) -> None:
    admin = admin_factory()
    admin.publish(loras[0])
    completion = admin.chat(admin.alias, "fb").json()["id"]

    first = admin.feedback(completion, -1)
    assert first.status_code == 200 and first.json()["created"] is True
    assert first.json()["flagged"] == ["negative_feedback"]
    again = admin.feedback(completion, 1)  # same key, same completion: an update
    assert again.json() == {**first.json(), "polarity": "positive", "created": False,
                            "flagged": []}  # fmt: skip

    unknown = admin.feedback("chatcmpl-does-not-exist", 1)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "completion_not_found"
    other_key = create_keys(admin.gateway.settings.resolved_database_url)["chat"]
    stranger = admin.gateway.post(
        "/v1/feedback",
        headers={"Authorization": f"Bearer {other_key}"},
        json={"completion_id": completion, "score": 1},
    )
    assert stranger.status_code == 404  # someone else's completion looks like a missing one
    assert admin.feedback(completion, 7).status_code == 400
    stars = admin.gateway.post(
        "/v1/feedback",
        headers=admin.headers(),
        json={"completion_id": completion, "score": 2, "scale": "stars", "correction": "Hello!"},
    )
    assert stars.json()["polarity"] == "negative"  # an admin may rate any completion
    metrics = admin.gateway.get("/metrics").text
    labels = {"alias": admin.alias, "version": f"{admin.alias}-v1", "polarity": "negative"}
    assert metric_value(metrics, "loragate_feedback_total", **labels) == 2.0


def test_a_version_vllm_cannot_load_aborts_its_rollout(
    admin_factory: Callable[..., Admin], loras: list[Path]
) -> None:
    admin = admin_factory(rollout_interval_s=3600)
    v1, v2 = admin.publish(loras[0])["name"], admin.publish(loras[1])["name"]
    stored = admin.gateway.settings.data_dir / "adapters" / v2
    (stored / "adapter_model.safetensors").write_bytes(b"damaged after publishing")
    admin.rollout(v2, [50, 100])
    state = wait_until(
        lambda: (s := admin.rollout_state())["state"] != "running" and s, 60, "the abort"
    )
    assert state["state"] == "aborted" and state["reason"].startswith("load_failed")
    versions = admin.gateway.get("/v1/admin/adapters", headers=admin.headers()).json()["data"]
    assert {v["name"]: v["state"] for v in versions} == {v1: "live", v2: "rolled_back"}
    for n in range(6):  # the alias keeps answering from the live version
        assert admin.chat(admin.alias, f"after-{n}").headers["x-loragate-version"] == v1
