"""A/B experiments: versions (and retrieval settings) of one alias compared on live traffic.

Separate from canary rollouts: a rollout moves traffic step by step towards one candidate
and guards against harm; an experiment splits traffic evenly across two or more arms, sticky
per conversation, to learn which is better. Arms are written ``v3`` (or ``support-v3``),
``base`` (the base model), and either with ``:no-retrieval`` or ``:collection=NAME``.

The leader gateway looks at every running experiment each tick. The first arm is the control;
each other arm is compared with it on the positive-feedback rate by the mixture SPRT of
adapters/sequential.py (alpha split across the comparisons, Bonferroni). The experiment is
``decided`` when one arm beats the control, or the control beats every other arm; it is
``stopped`` with no winner when it reaches ``ends_at`` or every arm has ``max_samples``
ratings. A decided winner is promoted by hand (or at once with ``auto_promote``) when it is
a plain adapter version; its alias then serves it live.

While running, each arm's version is in state ``arm`` (so the reconciler keeps it loaded);
its previous state comes back when the experiment ends.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from adapters.errors import AdapterError
from adapters.locking import lock_alias
from adapters.registry import Registry, UnknownAdapter
from adapters.sequential import SequentialTest, wilson_interval
from adapters.tables import AdapterVersion, Experiment, Rollout, aware, utcnow
from core.sections import ExperimentPolicy

log = logging.getLogger("loragate.experiments")

_ARM = re.compile(r"^(?P<version>[\w.-]+)(?::(?P<option>no-retrieval|collection=[\w.-]+))?\Z")
LOADABLE_STATES = ("live", "candidate", "retired", "rolled_back", "arm")


class ExperimentError(AdapterError):
    """A bad experiment request; the message says what to change."""


class ExperimentConflict(ExperimentError):
    """The alias already has an experiment or a rollout in progress."""


@dataclass(frozen=True)
class ArmCount:
    served: int = 0
    rated: int = 0
    positive: int = 0


# experiment id -> arm name -> counts, read from the conversation and feedback tables
OutcomeSource = Callable[[int], Awaitable[dict[str, ArmCount]]]
LeaderCheck = Callable[[], Awaitable[bool]]


class ExperimentController:
    def __init__(
        self,
        registry: Registry,
        sessions: async_sessionmaker[AsyncSession],
        outcomes: OutcomeSource,
        policy: ExperimentPolicy,
        is_leader: LeaderCheck,
    ) -> None:
        self.registry = registry
        self.sessions = sessions
        self.outcomes = outcomes
        self.policy = policy
        self.is_leader = is_leader

    # -- commands --------------------------------------------------------------------
    async def start(
        self,
        alias: str,
        arms: list[str],
        *,
        max_samples: int | None = None,
        max_duration_s: float | None = None,
        auto_promote: bool = False,
    ) -> Experiment:
        parsed = [parse_arm(alias, spec) for spec in arms]
        if len(parsed) < 2:
            raise ExperimentError("an experiment needs at least two arms")
        if len({arm["name"] for arm in parsed}) < len(parsed):
            raise ExperimentError("each arm must be different")
        async with self.sessions() as session, session.begin():
            if await lock_alias(session, alias) is None:
                raise UnknownAdapter(f"no alias named {alias!r}")
            await self._check_free(session, alias)
            for arm in parsed:
                await self._take_version(session, alias, arm)
            duration = max_duration_s or self.policy.max_duration_s
            experiment = Experiment(
                alias=alias, state="running", arms=parsed,
                max_samples=max_samples or self.policy.max_samples, auto_promote=auto_promote,
                ends_at=utcnow() + timedelta(seconds=duration), min_p_values={},
            )  # fmt: skip
            session.add(experiment)
        self.registry.changed()
        log.info("experiment started", extra={"alias": alias, "arms": arms})
        return experiment

    async def _check_free(self, session: AsyncSession, alias: str) -> None:
        running = await session.scalar(
            select(Experiment.id).where(Experiment.alias == alias, Experiment.state == "running")
        )
        if running is not None:
            raise ExperimentConflict(f"alias {alias} already has experiment {running} running")
        await self._check_no_rollout(session, alias)

    async def _check_no_rollout(self, session: AsyncSession, alias: str) -> None:
        rollout = await session.scalar(
            select(Rollout.id).where(
                Rollout.alias == alias, Rollout.state.in_(("running", "paused"))
            )
        )
        if rollout is not None:
            raise ExperimentConflict(
                f"alias {alias} has rollout {rollout} in progress: finish it first"
            )

    async def _take_version(self, session: AsyncSession, alias: str, arm: dict[str, Any]) -> None:
        if arm["version"] is None:
            return
        version = await session.get(AdapterVersion, arm["version"], with_for_update=True)
        if version is None or version.alias != alias:
            raise UnknownAdapter(f"{arm['version']} is not a version of alias {alias}")
        if version.state not in LOADABLE_STATES:
            raise ExperimentError(f"{version.name} is {version.state}: it cannot serve")
        if not (Path(version.path) / "adapter_config.json").is_file():
            raise ExperimentError(f"{version.name}'s files are missing: it cannot be loaded")
        arm["previous_state"] = version.state
        if version.state != "live":
            version.state = "arm"

    async def stop(self, alias: str, reason: str = "stopped by an operator") -> Experiment:
        return await self._finish(alias, "stopped", None, reason)

    async def promote(self, alias: str) -> Experiment:
        """Make a decided experiment's winning version the alias's live version."""
        async with self.sessions() as session:
            experiment = await self._latest(session, alias)
        if experiment is None or not experiment.winner:
            raise ExperimentError(f"alias {alias} has no decided experiment to promote")
        if experiment.state != "decided":  # promoted already (by another writer, maybe)
            raise ExperimentConflict(
                f"alias {alias}'s experiment {experiment.id} is {experiment.state}; only a "
                "decided one is promoted"
            )
        winner = next(arm for arm in experiment.arms if arm["name"] == experiment.winner)
        if winner["version"] is None or winner.get("retrieval") is not None:
            raise ExperimentError(
                f"the winner {winner['name']} is not a plain adapter version: change the "
                "alias's base model or retrieval settings instead"
            )
        async with self.sessions() as session, session.begin():
            alias_row = await lock_alias(session, alias)
            row = await session.get(Experiment, experiment.id, populate_existing=True)
            assert alias_row is not None and row is not None
            # Decided on what was read before the lock: another promote, or a rollout
            # started since, wins; this one changes nothing.
            if row.state != "decided":
                raise ExperimentConflict(f"alias {alias}'s experiment {row.id} is {row.state}"
                                         " now; nothing was promoted")  # fmt: skip
            await self._check_no_rollout(session, alias)
            if alias_row.live_version != winner["version"]:
                old = await session.get(AdapterVersion, alias_row.live_version or "")
                if old is not None:
                    old.state = "retired"
                new = await session.get(AdapterVersion, winner["version"])
                assert new is not None
                new.state = "live"
                alias_row.live_version = new.name
                alias_row.generation += 1
            row.state = "promoted"
        self.registry.changed()
        log.info("experiment winner promoted", extra={"alias": alias, "version": winner["version"]})
        return row

    # -- reading ---------------------------------------------------------------------
    async def status(self, alias: str) -> Experiment | None:
        """The alias's latest experiment, with results looked at now if it is running."""
        async with self.sessions() as session:
            experiment = await self._latest(session, alias)
        if experiment is not None and experiment.state == "running":
            experiment.results = await self._results(experiment)
        return experiment

    async def _latest(self, session: AsyncSession, alias: str) -> Experiment | None:
        query = (
            select(Experiment)
            .where(Experiment.alias == alias)
            .order_by(Experiment.id.desc())
            .limit(1)
        )
        experiment: Experiment | None = await session.scalar(query)
        return experiment

    async def _results(self, experiment: Experiment) -> dict[str, Any]:
        counts = await self.outcomes(experiment.id)
        names = [arm["name"] for arm in experiment.arms]
        test = self._test(len(names))
        arms = {name: _arm_card(counts.get(name, ArmCount())) for name in names}
        control = counts.get(names[0], ArmCount())
        comparisons = {}
        for name in names[1:]:
            other = counts.get(name, ArmCount())
            result = test.compare((control.positive, control.rated), (other.positive, other.rated))
            seen = min(result.p_value, float(experiment.min_p_values.get(name, 1.0)))
            comparisons[name] = {
                "against": names[0], "difference": result.difference,
                "interval": result.interval, "likelihood_ratio": result.likelihood_ratio,
                "p_value": seen, "significant": test.rejects(result) or seen <= test.alpha,
                "enough_samples": result.enough,
            }  # fmt: skip
        return {"alpha": test.alpha, "tau": test.tau, "min_samples": test.min_samples,
                "control": names[0], "arms": arms, "comparisons": comparisons}  # fmt: skip

    def _test(self, arms: int) -> SequentialTest:
        # Bonferroni: each of the arms-1 comparisons with the control gets alpha/(arms-1).
        return SequentialTest(self.policy.alpha / (arms - 1), self.policy.tau,
                              self.policy.min_samples)  # fmt: skip

    # -- the decision loop -----------------------------------------------------------
    async def tick(self) -> None:
        """Look at every running experiment and end those that are decided (leader only)."""
        if not await self.is_leader():
            return
        async with self.sessions() as session:
            running = list(
                await session.scalars(select(Experiment).where(Experiment.state == "running"))
            )
        for experiment in running:
            await self._look(experiment)

    async def _look(self, experiment: Experiment) -> None:
        results = await self._results(experiment)
        winner, reason = decide(results)
        counts = [arm["rated"] for arm in results["arms"].values()]
        if json.loads(json.dumps(results)) != experiment.results:  # as the JSON column holds it
            await self._save(experiment.id, results)
        if winner is not None:
            if not await self._end_looked(experiment, "decided", winner, reason or ""):
                return
            if experiment.auto_promote:
                try:
                    await self.promote(experiment.alias)
                except ExperimentError as exc:
                    log.warning("winner not promoted", extra={"error": str(exc)})
        elif reason is not None:
            await self._end_looked(experiment, "stopped", None, reason)
        elif min(counts) >= experiment.max_samples:
            await self._end_looked(experiment, "stopped", None, "max_samples")
        elif utcnow() >= aware(experiment.ends_at):
            await self._end_looked(experiment, "stopped", None, "max_duration")

    async def _end_looked(
        self, experiment: Experiment, state: str, winner: str | None, reason: str
    ) -> bool:
        """End the experiment looked at; False when another writer ended it since (an
        operator's stop, another replica's tick): its ending stands, this look is stale."""
        try:
            await self._finish(experiment.alias, state, winner, reason, experiment.id)
        except ExperimentConflict:
            log.info("experiment ended meanwhile", extra={"alias": experiment.alias})
            return False
        return True

    async def _save(self, experiment_id: int, results: dict[str, Any]) -> None:
        """Store new results; written only when the feedback changed them, not every tick,
        and only while it runs (the UPDATE checks it: an ended experiment keeps its last)."""
        p_values = {name: c["p_value"] for name, c in results["comparisons"].items()}
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(Experiment)
                .where(Experiment.id == experiment_id, Experiment.state == "running")
                .values(results=results, min_p_values=p_values)
            )

    async def _finish(
        self,
        alias: str,
        state: str,
        winner: str | None,
        reason: str,
        experiment_id: int | None = None,
    ) -> Experiment:
        """End the alias's running experiment (only if it is ``experiment_id``, when given).
        Of two writers ending it at once, the second finds none running: ExperimentConflict."""
        async with self.sessions() as session, session.begin():
            await lock_alias(session, alias)
            row = await session.scalar(
                select(Experiment).where(Experiment.alias == alias, Experiment.state == "running")
            )
            if row is None or experiment_id not in (None, row.id):
                raise ExperimentConflict(f"alias {alias} has no experiment running")
            for arm in row.arms:
                version = await session.get(AdapterVersion, arm["version"] or "")
                if version is not None and version.state == "arm":
                    version.state = arm.get("previous_state") or "candidate"
            row.state, row.winner, row.reason, row.finished_at = state, winner, reason, utcnow()
        self.registry.changed()
        extra = {"alias": alias, "state": state, "winner": winner, "reason": reason}
        log.info("experiment ended", extra=extra)
        return row


def decide(results: dict[str, Any]) -> tuple[str | None, str | None]:
    """(winner, reason): an arm that beats the control, or the control when it beats all."""
    comparisons = results["comparisons"]
    better = [name for name, c in comparisons.items() if c["significant"] and c["difference"] > 0]
    if better:
        best = max(better, key=lambda name: comparisons[name]["difference"])
        return best, f"{best} beats {results['control']}"
    worse = [name for name, c in comparisons.items() if c["significant"] and c["difference"] < 0]
    if comparisons and len(worse) == len(comparisons):
        return results["control"], f"{results['control']} beats every other arm"
    return None, None


def parse_arm(alias: str, spec: str) -> dict[str, Any]:
    """``v3``, ``support-v3``, ``base``, each optionally ``:no-retrieval`` or
    ``:collection=NAME``, into an arm record."""
    match = _ARM.match(spec.strip())
    if match is None:
        raise ExperimentError(
            f"arm {spec!r}: write VERSION, base, VERSION:no-retrieval or VERSION:collection=NAME"
        )
    version, option = match["version"], match["option"]
    if version != "base" and re.fullmatch(r"v\d+", version):
        version = f"{alias}-{version}"
    retrieval: bool | dict[str, str] | None = None
    if option == "no-retrieval":
        retrieval = False
    elif option:
        retrieval = {"collection": option.split("=", 1)[1]}
    return {"name": spec.strip(), "version": None if version == "base" else version,
            "retrieval": retrieval, "previous_state": None}  # fmt: skip


def _arm_card(count: ArmCount) -> dict[str, Any]:
    rate = count.positive / count.rated if count.rated else None
    return {"served": count.served, "rated": count.rated, "positive": count.positive,
            "rate": rate, "interval": wilson_interval(count.positive, count.rated)}  # fmt: skip
