"""Registry and rollout controller on a real store (SQLite and PostgreSQL) with real PEFT
adapters. Gate inputs come from a scripted stats source here; the real one, fed by live
traffic and feedback through vLLM, is exercised in test_adapters_live.py."""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path

import pytest

from adapters.registry import Registry, ValidationLimits
from adapters.rollout import RolloutController, RolloutError, RolloutPolicy, VersionStats
from adapters.validation import InvalidAdapter
from core.store import Database

GOOD = VersionStats(requests=40, feedback=20, negative=1, grounded=0)
BAD = VersionStats(requests=40, feedback=20, negative=15, grounded=0)


@pytest.fixture
def registry(db: Database, prepared_model: Path, tmp_path: Path) -> Registry:
    return Registry(db.sessions, tmp_path / "adapters", ValidationLimits(prepared_model, 16))


def _alias() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


async def test_versions_are_immutable_numbered_and_idempotent(
    registry: Registry, loras: list[Path]
) -> None:
    alias = _alias()
    first = await registry.publish(loras[0], alias)
    again = await registry.publish(loras[0], alias)
    second = await registry.publish(loras[1], alias)

    assert (first.version.name, first.version.state, first.created) == (f"{alias}-v1", "live", True)
    assert (again.version.name, again.created) == (f"{alias}-v1", False)
    assert (second.version.name, second.version.state) == (f"{alias}-v2", "candidate")
    assert second.version.parent == f"{alias}-v1"
    assert second.version.rank == 4 and second.version.target_modules == ["q_proj", "v_proj"]
    stored = Path(second.version.path)
    assert sorted(p.name for p in stored.iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors"
    ]  # fmt: skip
    assert not [p for p in stored.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left
    routes = await registry.routes()
    assert (routes[alias].live, routes[alias].canary) == (f"{alias}-v1", None)


async def test_refused_adapters_leave_nothing_behind(registry: Registry, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 4}')
    (bad / "adapter_model.bin").write_bytes(b"pickle")
    alias = _alias()
    with pytest.raises(InvalidAdapter):
        await registry.publish(bad, alias)
    assert await registry.versions(alias) == []
    assert alias not in await registry.routes()
    assert not (tmp_path / "adapters").exists()


def _controller(registry: Registry, db: Database, stats: dict[str, VersionStats],
                **policy: object) -> RolloutController:  # fmt: skip
    async def source(version: str, since: datetime, until: datetime) -> VersionStats:
        return stats.get(version, VersionStats())  # other tests share the PostgreSQL store

    async def leader() -> bool:
        return True

    # A microsecond, the shortest interval the policy allows: every analysis is due.
    settings = {"steps": (25, 50, 100), "interval_s": 1e-6, "min_samples": 10,
                "failure_threshold": 2, **policy}  # fmt: skip
    return RolloutController(registry, db.sessions, source, RolloutPolicy(**settings), leader)  # type: ignore[arg-type]


async def _two_versions(registry: Registry, loras: list[Path]) -> tuple[str, str, str]:
    alias = _alias()
    await registry.publish(loras[0], alias)
    await registry.publish(loras[1], alias)
    return alias, f"{alias}-v1", f"{alias}-v2"


async def test_bad_canary_rolls_back_after_the_failure_threshold(
    registry: Registry, db: Database, loras: list[Path]
) -> None:
    alias, live, canary = await _two_versions(registry, loras)
    controller = _controller(registry, db, {live: GOOD, canary: BAD})
    await controller.start(alias, canary)
    assert (await registry.routes())[alias].weight == 0.25

    await controller.tick()
    rollout, _ = await controller.status(alias)
    assert rollout is not None and (rollout.state, rollout.failures) == ("running", 1)
    await controller.tick()
    rollout, events = await controller.status(alias)
    assert rollout is not None and rollout.state == "rolled_back"
    assert rollout.reason == "gate_failed:negative_feedback_rate"
    assert [event.kind for event in events] == ["started", "gate_failed", "gate_failed",
                                                "rolled_back"]  # fmt: skip
    assert (await registry.get(canary)).state == "rolled_back"
    route = (await registry.routes())[alias]
    assert (route.live, route.canary) == (live, None)


async def test_good_canary_is_promoted_step_by_step(
    registry: Registry, db: Database, loras: list[Path]
) -> None:
    alias, live, canary = await _two_versions(registry, loras)
    controller = _controller(registry, db, {live: GOOD, canary: GOOD})
    await controller.start(alias, canary)
    assert (await registry.routes())[alias].weight == 0.25
    await controller.tick()
    assert (await registry.routes())[alias].weight == 0.5
    await controller.tick()  # passing the step below 100% promotes
    rollout, _ = await controller.status(alias)
    assert rollout is not None and rollout.state == "promoted"
    assert (await registry.get(canary)).state == "live"
    assert (await registry.get(live)).state == "retired"
    assert (await registry.routes())[alias].live == canary


async def test_too_little_traffic_waits_instead_of_deciding(
    registry: Registry, db: Database, loras: list[Path]
) -> None:
    alias, live, canary = await _two_versions(registry, loras)
    thin = VersionStats(requests=2, feedback=1)
    controller = _controller(registry, db, {live: thin, canary: thin})
    await controller.start(alias, canary)
    await controller.tick()
    rollout, events = await controller.status(alias)
    assert rollout is not None and (rollout.state, rollout.step) == ("running", 0)
    assert events[-1].kind == "waiting_for_samples"


async def test_manual_commands_and_a_restart_resume_from_the_store(
    registry: Registry, db: Database, loras: list[Path]
) -> None:
    alias, live, canary = await _two_versions(registry, loras)
    controller = _controller(registry, db, {live: GOOD, canary: BAD})
    await controller.start(alias, canary)
    with pytest.raises(RolloutError, match="already has a rollout"):
        await controller.start(alias, canary)
    await controller.pause(alias)
    await controller.tick()  # paused: nothing happens
    rollout, _ = await controller.status(alias)
    assert rollout is not None and (rollout.state, rollout.failures) == ("paused", 0)

    # A new controller (a restarted gateway) sees the same rollout and can go on.
    restarted = _controller(registry, db, {live: GOOD, canary: GOOD})
    await restarted.resume(alias)
    await restarted.promote(alias)
    assert (await registry.routes())[alias].live == canary
    with pytest.raises(RolloutError, match="no rollout in progress"):
        await restarted.rollback(alias)


async def test_only_candidates_of_the_alias_roll_out(
    registry: Registry, db: Database, loras: list[Path]
) -> None:
    alias, live, _ = await _two_versions(registry, loras)
    controller = _controller(registry, db, {})
    with pytest.raises(RolloutError, match="only candidates"):
        await controller.start(alias, live)
    with pytest.raises(RolloutError, match="not a version"):
        await controller.start(_alias(), live)


async def test_a_rolled_back_version_rolls_out_again_only_deliberately(
    registry: Registry, db: Database, loras: list[Path]
) -> None:
    alias, live, canary = await _two_versions(registry, loras)
    controller = _controller(registry, db, {live: GOOD, canary: BAD}, failure_threshold=1)
    await controller.start(alias, canary)
    await controller.tick()
    assert (await registry.get(canary)).state == "rolled_back"

    with pytest.raises(RolloutError, match="rolled back; roll it out again deliberately"):
        await controller.start(alias, canary)
    again = await controller.start(alias, canary, (50, 100), again=True)
    assert (again.state, again.weight) == ("running", 0.5)
    assert (await registry.get(canary)).state == "canary"
    assert (await registry.routes())[alias].canary == canary
    _, events = await controller.status(alias)
    assert events[0].kind == "started" and events[0].detail == {"steps": [50, 100], "again": True}
    await controller.rollback(alias)
    with pytest.raises(RolloutError, match="only candidates"):
        await controller.start(alias, live, again=True)  # again is for rolled-back ones only
