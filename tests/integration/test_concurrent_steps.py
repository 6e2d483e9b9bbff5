"""Concurrent steps on one alias, on SQLite and on PostgreSQL (issue 18, the sweep).

Every change to how an alias is served reads its state, decides, then writes: publishing
a version, a rollout's start, advance, gate failure, pause, promote and rollback, an
experiment's start, decision, stop and promotion. Here they race from two replicas (two
``Database`` handles with their own pools, as two gateway processes or the CLI beside the
server have), and the analysis loops of both replicas tick at once (the leader lock changing
hands). Whatever the interleaving:

* exactly one of the competing writers acts; every other gets its package's conflict error,
  which the gateway answers with an OpenAI-shaped 409 (never a 500), or, for a tick, does
  nothing;
* nothing is half-applied: the rollout, the versions' states and the alias's live version
  agree, and each step is in the history once.

The writers start in a seeded random order, each after a seeded random pause of up to a few
milliseconds (``LORAGATE_TEST_SEED`` replays them). Sizing: run against the code before the
alias lock (commit 20b4081), 20 of these 24 tests failed (the other four: PostgreSQL's two
start races, which its FOR UPDATE on the alias row already serialised, and the lock's own
test). Over seed 18 and seeds 1-5, 33 (test, seed) runs failed, 30 of them in their first
round and the others in the second or third: about 33 failures in 37 rounds tried, a
reproduction rate near 0.9 per round. ``ROUNDS`` = 6 rounds then miss a race with
probability about 0.1 ** 6; even at a pessimistic rate of 0.5 per round, 1.6 %.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from adapters.experiments import ArmCount, ExperimentController, ExperimentPolicy
from adapters.registry import Registry, ValidationLimits
from adapters.rollout import RolloutController, RolloutPolicy, VersionStats
from adapters.tables import AdapterVersion, Alias, Experiment, Rollout, RolloutEvent
from core.store import Database
from gateway.http_errors import describe
from tests.own_store import own_database_url  # noqa: F401 (database_url: a store of its own)
from tests.support import session_seed, tiny_lora

SEED = session_seed()
ROUNDS = 6
GOOD = VersionStats(requests=40, feedback=20, negative=1)
BAD = VersionStats(requests=40, feedback=20, negative=15)
TERMINAL = {"promoted", "rolled_back", "aborted"}


@dataclass
class Replica:
    db: Database
    registry: Registry
    rollouts: RolloutController
    experiments: ExperimentController


@dataclass
class Stats:
    """The scripted stats source: the live version (v1) is always good, the canary (v2)
    ``value``."""

    value: VersionStats = GOOD

    async def __call__(self, version: str | None, since: datetime, until: datetime) -> VersionStats:
        await asyncio.sleep(0)  # a real source reads the store: let the other writer in
        return self.value if version and version.endswith("-v2") else GOOD


@pytest.fixture
def stats() -> Stats:
    return Stats()


@pytest.fixture
async def replicas(database_url: str, tmp_path: Path, stats: Stats) -> AsyncIterator[list[Replica]]:
    dbs = [Database(database_url) for _ in range(2)]
    await dbs[0].migrate()
    built = [_replica(db, tmp_path / "adapters", stats) for db in dbs]
    yield built
    for db in dbs:
        await db.dispose()


def _replica(db: Database, store_dir: Path, stats: Stats) -> Replica:
    async def leader() -> bool:
        return True  # both think they lead: the moment the leader lock changes hands

    async def outcomes(experiment_id: int) -> dict[str, ArmCount]:
        return {}

    registry = Registry(db.sessions, store_dir, ValidationLimits(None, max_rank=16))
    # A microsecond, the shortest interval the policy allows: every analysis is due.
    policy = RolloutPolicy(steps=(25, 50, 100), interval_s=1e-6, min_samples=10,
                           failure_threshold=2)  # fmt: skip
    rollouts = RolloutController(registry, db.sessions, stats, policy, leader)
    experiments = ExperimentController(registry, db.sessions, outcomes, ExperimentPolicy(), leader)
    return Replica(db, registry, rollouts, experiments)


def _lora(root: Path, seed: int) -> Path:
    return tiny_lora(root, seed)


async def _race(rng: random.Random, *writers: Callable[[], Awaitable[Any]]) -> list[Any]:
    """Run the writers at once, in a seeded order with seeded small head starts."""

    async def start(writer: Callable[[], Awaitable[Any]], pause: float) -> Any:
        await asyncio.sleep(pause)
        return await writer()

    order = list(writers)
    rng.shuffle(order)
    pauses = [rng.uniform(0, 0.004) for _ in order]
    results = await asyncio.gather(*(start(w, p) for w, p in zip(order, pauses, strict=True)),
                                   return_exceptions=True)  # fmt: skip
    by_writer = dict(zip(map(id, order), results, strict=True))
    return [by_writer[id(writer)] for writer in writers]


def _losers_are_409(results: list[Any], where: str) -> list[Any]:
    """The results that did not fail; every failure must be a conflict the gateway answers
    with 409 (anything else, a 500 included, fails the test)."""
    for result in results:
        if isinstance(result, BaseException):
            info = describe(result) if isinstance(result, Exception) else None
            assert info is not None and info.status_code == 409, f"{where}: {result!r}"
            assert info.body()["error"]["type"] == "invalid_request_error"
    return [result for result in results if not isinstance(result, BaseException)]


async def _two_versions(replica: Replica, root: Path, seed: int) -> tuple[str, str, str]:
    alias = f"a{uuid.uuid4().hex[:10]}"
    await replica.registry.publish(_lora(root, seed), alias)
    await replica.registry.publish(_lora(root, seed + 1), alias)
    return alias, f"{alias}-v1", f"{alias}-v2"


async def _states(db: Database, alias: str) -> tuple[str | None, dict[str, str], list[Rollout]]:
    """The alias's live version, its versions' states, and its rollouts."""
    async with db.sessions() as session:
        row = await session.get(Alias, alias)
        versions = await session.scalars(
            select(AdapterVersion).where(AdapterVersion.alias == alias)
        )
        rollouts = await session.scalars(select(Rollout).where(Rollout.alias == alias))
        return (row.live_version if row else None, {v.name: v.state for v in versions},
                list(rollouts))  # fmt: skip


async def _events(db: Database, rollout_id: int) -> list[str]:
    async with db.sessions() as session:
        query = select(RolloutEvent.kind).where(RolloutEvent.rollout_id == rollout_id)
        return list(await session.scalars(query.order_by(RolloutEvent.id)))


def _consistent(live: str | None, states: dict[str, str], rollout: Rollout, old: str,
                new: str, where: str) -> None:  # fmt: skip
    """Versions and alias agree with how the rollout ended."""
    if rollout.state == "promoted":
        assert (live, states[new], states[old]) == (new, "live", "retired"), where
    else:
        assert (live, states[new], states[old]) == (old, "rolled_back", "live"), where


# -- publishing ------------------------------------------------------------------------------
async def test_one_content_published_at_once_is_one_version(
    replicas: list[Replica], tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    for round_number in range(ROUNDS):
        where = f"round {round_number}, seed {SEED}"
        alias, same = f"p{uuid.uuid4().hex[:10]}", _lora(tmp_path, round_number)
        other = _lora(tmp_path, 1000 + round_number)
        same_content = [partial(r.registry.publish, same, alias) for r in replicas * 2]
        results = await _race(rng, *same_content,
                              partial(replicas[1].registry.publish, other, alias))  # fmt: skip
        published = _losers_are_409(results, where)
        assert len(published) == len(results), where  # publishing never refuses a racer
        names = {p.version.name for p in published[:4]}
        assert len(names) == 1 and sum(p.created for p in published[:4]) == 1, where
        live, states, _ = await _states(replicas[0].db, alias)
        # Two versions whatever the order; the first recorded is live, the other a candidate.
        assert sorted(states.values()) == ["candidate", "live"] and states[live or ""] == "live"
        # Numbered under the alias lock: no racer's copy ever held a number it did not keep.
        assert sorted(states) == [f"{alias}-v1", f"{alias}-v2"], where
        left = sorted(p.name for p in (tmp_path / "adapters").iterdir() if p.name.startswith(alias))
        assert left == sorted(states), f"{where}: a loser's copy stayed behind: {left}"


# -- rollouts --------------------------------------------------------------------------------
async def test_two_starts_make_one_rollout(replicas: list[Replica], tmp_path: Path) -> None:
    rng = random.Random(SEED)
    for round_number in range(ROUNDS):
        where = f"round {round_number}, seed {SEED}"
        alias, old, new = await _two_versions(replicas[0], tmp_path, 10 * round_number)
        results = await _race(rng, *(partial(r.rollouts.start, alias, new) for r in replicas))
        assert len(_losers_are_409(results, where)) == 1, where
        live, states, rollouts = await _states(replicas[0].db, alias)
        assert len(rollouts) == 1 and rollouts[0].state == "running", where
        assert (live, states[new]) == (old, "canary"), where


async def test_an_operator_racing_another_ends_the_rollout_once(
    replicas: list[Replica], tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    for round_number in range(ROUNDS):
        where = f"round {round_number}, seed {SEED}"
        alias, old, new = await _two_versions(replicas[0], tmp_path, 10 * round_number)
        await replicas[0].rollouts.start(alias, new)
        a, b = replicas
        results = await _race(rng, partial(a.rollouts.promote, alias),
                              partial(b.rollouts.rollback, alias),
                              partial(b.rollouts.pause, alias),
                              partial(a.rollouts.resume, alias))  # fmt: skip
        ended = [r for r in _losers_are_409(results[:2], where)]
        assert len(ended) == 1, where
        _losers_are_409(results[2:], where)  # pause and resume may come before or after
        live, states, [rollout] = await _states(replicas[0].db, alias)
        assert rollout.state in {"promoted", "rolled_back"}, (where, rollout.state)
        _consistent(live, states, rollout, old, new, where)
        events = await _events(replicas[0].db, rollout.id)
        assert [e for e in events if e in TERMINAL] == [rollout.state], (where, events)


async def test_two_ticks_take_a_step_once(
    replicas: list[Replica], tmp_path: Path, stats: Stats
) -> None:
    """Each window is analysed once however the ticks interleave: a tick that read the
    window before the other applied its step finds it gone; one that reads after finds the
    new window not due yet (a 60 s interval here; each round backdates the window due)."""
    rng = random.Random(SEED)
    policy = dataclasses.replace(replicas[0].rollouts.policy, interval_s=60.0)
    ticks = [RolloutController(r.registry, r.db.sessions, stats, policy, r.rollouts.is_leader)
             for r in replicas]  # fmt: skip
    for round_number in range(ROUNDS):
        where = f"round {round_number}, seed {SEED}"
        stats.value = GOOD
        alias, _old, new = await _two_versions(replicas[0], tmp_path, 10 * round_number)
        await replicas[0].rollouts.start(alias, new, (25, 50, 75, 100))
        await _window_due(replicas[0].db, alias)
        await _race(rng, *(controller.tick for controller in ticks))
        _, _, [rollout] = await _states(replicas[0].db, alias)
        assert (rollout.state, rollout.step, rollout.weight) == ("running", 1, 0.5), where
        stats.value = BAD
        await _window_due(replicas[0].db, alias)
        await _race(rng, *(controller.tick for controller in ticks))
        _, _, [rollout] = await _states(replicas[0].db, alias)
        # One failure counted, not two: two failures would have rolled it back.
        assert (rollout.state, rollout.failures) == ("running", 1), where
        events = await _events(replicas[0].db, rollout.id)
        assert events == ["started", "gates_passed", "gate_failed"], (where, events)


async def _window_due(db: Database, alias: str) -> None:
    """Move the alias's running step window back 10 minutes: due for analysis now."""
    async with db.transaction() as session:
        await session.execute(
            update(Rollout)
            .where(Rollout.alias == alias, Rollout.state == "running")
            .values(step_started_at=datetime.now(UTC) - timedelta(minutes=10))
        )


async def test_a_tick_racing_an_operator_ends_the_rollout_once(
    replicas: list[Replica], tmp_path: Path, stats: Stats
) -> None:
    rng = random.Random(SEED)
    for round_number in range(ROUNDS):
        where = f"round {round_number}, seed {SEED}"
        # Passing the step before 100% promotes; failing twice rolls back: the tick ends the
        # rollout either way, racing the operator's own promote.
        stats.value = GOOD if round_number % 2 else BAD
        alias, old, new = await _two_versions(replicas[0], tmp_path, 10 * round_number)
        await replicas[0].rollouts.start(alias, new, (50, 100))
        if stats.value is BAD:
            await replicas[0].rollouts.tick()  # the first failure: the next one rolls back
        a, b = replicas
        results = await _race(rng, a.rollouts.tick, b.rollouts.tick,
                              partial(b.rollouts.promote, alias, "operator"))  # fmt: skip
        _losers_are_409(results, where)
        live, states, [rollout] = await _states(replicas[0].db, alias)
        assert rollout.state in {"promoted", "rolled_back"}, (where, rollout.state)
        _consistent(live, states, rollout, old, new, where)
        events = await _events(replicas[0].db, rollout.id)
        assert [e for e in events if e in TERMINAL] == [rollout.state], (where, events)
        assert events.count("gate_failed") <= 2 and events.count("gates_passed") <= 1, events


async def test_a_load_failure_racing_an_operator_ends_the_rollout_once(
    replicas: list[Replica], tmp_path: Path
) -> None:
    """The reconciler's abort (vLLM refused the candidate) meets an operator's promote."""
    rng = random.Random(SEED)
    for round_number in range(ROUNDS):
        where = f"round {round_number}, seed {SEED}"
        alias, old, new = await _two_versions(replicas[0], tmp_path, 10 * round_number)
        a, b = replicas
        await a.rollouts.start(alias, new)
        results = await _race(rng, partial(a.rollouts.abort_for, new, "load refused"),
                              partial(b.rollouts.promote, alias))  # fmt: skip
        _losers_are_409(results, where)  # the abort never raises: it finds nothing to end
        live, states, [rollout] = await _states(replicas[0].db, alias)
        assert rollout.state in {"promoted", "aborted"}, (where, rollout.state)
        _consistent(live, states, rollout, old, new, where)
        events = await _events(replicas[0].db, rollout.id)
        assert [e for e in events if e in TERMINAL] == [rollout.state], (where, events)


async def test_the_trainers_rollout_meeting_an_operators_leaves_the_run_published(
    replicas: list[Replica], tmp_path: Path
) -> None:
    """A training run publishes its version, then starts its rollout: an operator's rollout
    started meanwhile owns the alias, so the trainer's start is refused (under the lock),
    and the run still ends published with its version a candidate, the refusal in its report."""
    import dataclasses

    from core.settings import load_settings
    from gateway.wiring import job_config
    from trainer.evaluate import Verdict
    from trainer.job import TrainingJob
    from trainer.qlora import TrainResult

    alias, old, new = await _two_versions(replicas[0], tmp_path, 77)
    a, b = replicas
    config = job_config(load_settings(data_dir=tmp_path, log_format="text"))
    job = TrainingJob(dataclasses.replace(config, auto_rollout=True), b.db, b.registry,
                      b.rollouts, embedder=None)  # type: ignore[arg-type]  # fmt: skip
    trained = TrainResult(_lora(tmp_path, 79), 1, 1.0, 0.5, None, None, False, 0, 1.0, 10, 10.0,
                          0.0, "cpu", 512)  # fmt: skip
    await a.rollouts.start(alias, new)  # the operator's, just before the trainer's
    outcome = await job._publish(alias, 0, trained, Verdict(True, [], 0.1, 0.0), {})
    assert outcome.state == "published" and "refused" in outcome.report["rollout"]
    _, states, [rollout] = await _states(a.db, alias)
    assert (rollout.candidate, states[outcome.candidate or ""]) == (new, "candidate")
    assert (states[old], states[new]) == ("live", "canary")


# -- experiments -----------------------------------------------------------------------------
async def test_an_experiment_and_a_rollout_started_at_once_leave_one(
    replicas: list[Replica], tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    for round_number in range(ROUNDS):
        where = f"round {round_number}, seed {SEED}"
        alias, old, new = await _two_versions(replicas[0], tmp_path, 10 * round_number)
        a, b = replicas
        results = await _race(rng, partial(a.experiments.start, alias, ["v1", "v2"]),
                              partial(b.experiments.start, alias, ["v1", "v2"]),
                              partial(b.rollouts.start, alias, new))  # fmt: skip
        assert len(_losers_are_409(results, where)) == 1, where
        live, states, rollouts = await _states(replicas[0].db, alias)
        experiments = await _experiments(replicas[0].db, alias)
        if rollouts:
            assert not experiments and states[new] == "canary", where
        else:
            assert [e.state for e in experiments] == ["running"] and states[new] == "arm", where
        assert live == old and states[old] == "live", where


async def test_an_experiment_ends_once(replicas: list[Replica], tmp_path: Path) -> None:
    rng = random.Random(SEED)
    for round_number in range(ROUNDS):
        where = f"round {round_number}, seed {SEED}"
        alias, old, new = await _two_versions(replicas[0], tmp_path, 10 * round_number)
        a, b = replicas
        # Past its end at the first look: both ticks stop it, racing an operator's stop.
        await a.experiments.start(alias, ["v1", "v2"], max_duration_s=0.001)
        await asyncio.sleep(0.01)
        results = await _race(rng, a.experiments.tick, b.experiments.tick,
                              partial(b.experiments.stop, alias),
                              partial(a.experiments.stop, alias))  # fmt: skip
        _losers_are_409(results, where)  # the ticks never raise; an operator may get 409
        assert sum(not isinstance(result, BaseException) for result in results[2:]) <= 1
        [experiment] = await _experiments(replicas[0].db, alias)
        assert experiment.state == "stopped", where
        assert experiment.reason in {"max_duration", "stopped by an operator"}, where
        _, states, _ = await _states(replicas[0].db, alias)
        assert (states[old], states[new]) == ("live", "candidate"), where  # restored once


async def test_a_decided_winner_is_promoted_once(replicas: list[Replica], tmp_path: Path) -> None:
    rng = random.Random(SEED)
    for round_number in range(ROUNDS):
        where = f"round {round_number}, seed {SEED}"
        alias, old, new = await _two_versions(replicas[0], tmp_path, 10 * round_number)
        a, b = replicas
        await a.experiments.start(alias, ["v1", "v2"])
        await a.experiments._finish(alias, "decided", "v2", "v2 beats v1")
        results = await _race(rng, partial(a.experiments.promote, alias),
                              partial(b.experiments.promote, alias),
                              partial(b.rollouts.start, alias, new))  # fmt: skip
        done = _losers_are_409(results, where)
        [experiment] = await _experiments(replicas[0].db, alias)
        live, states, rollouts = await _states(replicas[0].db, alias)
        assert len(done) == 1, where  # a promotion or the rollout, never both
        if experiment.state == "promoted":
            assert not rollouts, where
            assert (live, states[new], states[old]) == (new, "live", "retired"), where
        else:  # the rollout came first: it owns the alias now
            assert experiment.state == "decided" and len(rollouts) == 1, where
            assert (live, states[new]) == (old, "canary"), where


async def test_results_saved_late_do_not_touch_an_ended_experiment(
    replicas: list[Replica], tmp_path: Path
) -> None:
    alias, _old, _new = await _two_versions(replicas[0], tmp_path, 7)
    await replicas[0].experiments.start(alias, ["v1", "v2"])
    running = (await _experiments(replicas[0].db, alias))[0]
    await replicas[1].experiments.stop(alias)
    results = {"comparisons": {"v2": {"p_value": 0.5}}}
    await replicas[0].experiments._save(running.id, results)  # a look that read it running
    [stopped] = await _experiments(replicas[0].db, alias)
    assert stopped.state == "stopped" and stopped.results is None


async def _experiments(db: Database, alias: str) -> list[Experiment]:
    async with db.sessions() as session:
        query = select(Experiment).where(Experiment.alias == alias).order_by(Experiment.id)
        return list(await session.scalars(query))


async def test_the_alias_lock_serialises_two_read_then_write_transactions(
    replicas: list[Replica],
) -> None:
    """The lock itself: two transactions that read a counter after ``lock_alias`` and write
    it back one higher never lose an increment (without the lock SQLite loses some:
    Python's driver begins the transaction only at the write, after the read)."""
    from adapters.locking import lock_alias

    alias = f"l{uuid.uuid4().hex[:10]}"
    await replicas[0].registry.create_alias(alias)

    async def increment(db: Database) -> None:
        async with db.sessions() as session, session.begin():
            row = await lock_alias(session, alias)
            assert row is not None
            seen = row.generation
            await asyncio.sleep(0.01)  # let the other one read, if it can
            await session.execute(update(Alias).where(Alias.name == alias)
                                  .values(generation=seen + 1))  # fmt: skip

    await asyncio.gather(*(increment(r.db) for r in replicas * 3))
    async with replicas[0].db.sessions() as session:
        row = await session.get(Alias, alias)
        assert row is not None and row.generation == 6
