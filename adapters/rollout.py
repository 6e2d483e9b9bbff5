"""Canary rollouts: step weights, metric gates, automatic promotion or rollback.

A rollout sends a growing share of an alias's traffic (``steps``, in percent) to a
candidate version. At each analysis interval the canary's own traffic is compared with the
live version's traffic over the same window:

* negative-feedback rate, mean groundedness, error rate, p95 latency;
* each gate has a margin and needs ``min_samples`` on both sides, otherwise the step waits
  (a gate with no samples at all, say groundedness without retrieval, does not apply);
* a failed analysis counts toward ``failure_threshold``; reaching it rolls back (weight 0,
  state ``rolled_back``); passing the last step below 100% promotes (the alias points at
  the candidate, the old version is retired and unloaded by the reconciler once requests
  drain). At 100% nothing is left to compare with, so that step is never analysed.

All state lives in the store, so a restarted gateway resumes where it was. With several
gateways only the holder of the leader lock acts; all of them read the same weights.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from adapters.errors import AdapterError
from adapters.locking import lock_alias
from adapters.registry import Registry
from adapters.tables import AdapterVersion, Alias, Experiment, Rollout, RolloutEvent, aware, utcnow
from core.sections import RolloutPolicy

log = logging.getLogger("loragate.rollout")

ACTIVE = ("running", "paused")


class RolloutError(AdapterError):
    """A rollout command that does not fit the current state."""


@dataclass(frozen=True)
class VersionStats:
    """One version's traffic over an analysis window."""

    requests: int = 0
    errors: int = 0
    p95_latency_ms: float = 0.0
    feedback: int = 0
    negative: int = 0
    grounded: int = 0
    mean_groundedness: float = 0.0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def negative_rate(self) -> float:
        return self.negative / self.feedback if self.feedback else 0.0


StatsSource = Callable[[str | None, datetime, datetime], Awaitable[VersionStats]]
LeaderCheck = Callable[[], Awaitable[bool]]


@dataclass(frozen=True)
class GateResult:
    gate: str
    passed: bool | None  # None: not decided
    canary: float
    live: float
    # Some samples exist but fewer than min_samples on a side: the step waits for more.
    # (No samples on either side, e.g. no grounded answers at all, means the gate does not
    # apply to this traffic and does not hold the step.)
    waiting: bool = False


def _gate(
    name: str,
    samples: tuple[int, int],
    policy: RolloutPolicy,
    ok: bool,
    values: tuple[float, float],
) -> GateResult:
    if min(samples) >= policy.min_samples:
        return GateResult(name, ok, *values)
    return GateResult(name, None, *values, waiting=max(samples) > 0)


def analyse(canary: VersionStats, live: VersionStats, policy: RolloutPolicy) -> list[GateResult]:
    traffic = (canary.requests, live.requests)
    return [
        _gate("negative_feedback_rate", (canary.feedback, live.feedback), policy,
              canary.negative_rate <= live.negative_rate + policy.max_negative_rate_increase,
              (canary.negative_rate, live.negative_rate)),
        _gate("groundedness", (canary.grounded, live.grounded), policy,
              canary.mean_groundedness >= live.mean_groundedness - policy.max_groundedness_drop,
              (canary.mean_groundedness, live.mean_groundedness)),
        _gate("error_rate", traffic, policy,
              canary.error_rate <= live.error_rate + policy.max_error_rate_increase,
              (canary.error_rate, live.error_rate)),
        _gate("p95_latency", traffic, policy,
              canary.p95_latency_ms <= live.p95_latency_ms * policy.max_p95_latency_ratio,
              (canary.p95_latency_ms, live.p95_latency_ms)),
    ]  # fmt: skip


class RolloutController:
    def __init__(
        self,
        registry: Registry,
        sessions: async_sessionmaker[AsyncSession],
        stats: StatsSource,
        policy: RolloutPolicy,
        is_leader: LeaderCheck,
    ) -> None:
        self.registry = registry
        self.sessions = sessions
        self.stats = stats
        self.policy = policy
        self.is_leader = is_leader

    # -- commands --------------------------------------------------------------------
    async def start(
        self,
        alias: str,
        candidate: str,
        steps: tuple[int, ...] | None = None,
        *,
        again: bool = False,
    ) -> Rollout:
        """Start the canary of a candidate version. A rolled-back version rolls out only
        ``again``: an operator who fixed what failed says so, and the history records it."""
        steps = steps or self.policy.steps
        RolloutPolicy(steps=steps)  # validates the steps
        async with self.sessions() as session, session.begin():
            alias_row = await lock_alias(session, alias)
            version = await session.get(AdapterVersion, candidate)
            if alias_row is None or version is None or version.alias != alias:
                raise RolloutError(f"{candidate} is not a version of alias {alias}")
            if await self._active(session, alias) is not None:
                raise RolloutError(f"alias {alias} already has a rollout in progress")
            experiment = await session.scalar(
                select(Experiment.id).where(
                    Experiment.alias == alias, Experiment.state == "running"
                )
            )
            if experiment is not None:
                raise RolloutError(
                    f"alias {alias} has experiment {experiment} running: stop it first"
                )
            if version.state == "rolled_back" and not again:
                raise RolloutError(f"{candidate} was rolled back; roll it out again deliberately "
                                   "(again: true, or 'Roll out again' in the console)")  # fmt: skip
            if version.state not in ("candidate", "rolled_back"):
                raise RolloutError(f"{candidate} is {version.state}; only candidates roll out")
            rollout = Rollout(
                alias=alias, candidate=candidate, baseline=alias_row.live_version,
                state="running", steps=list(steps), step=0, weight=steps[0] / 100,
                failures=0, step_started_at=utcnow(),
            )  # fmt: skip
            session.add(rollout)
            version.state = "canary"
            alias_row.generation += 1
            await session.flush()
            detail: dict[str, Any] = {"steps": list(steps)}
            if again:
                detail["again"] = True
            self._event(session, rollout, "started", detail)
        log.info("rollout started", extra={"alias": alias, "candidate": candidate})
        self.registry.changed()
        return rollout

    async def promote(self, alias: str, reason: str = "manual") -> Rollout:
        return await self._finish(alias, "promoted", reason)

    async def rollback(self, alias: str, reason: str = "manual") -> Rollout:
        return await self._finish(alias, "rolled_back", reason)

    async def abort_for(self, version: str, error: str) -> None:
        """The engine cannot load ``version``: end its rollout, if it has one, cleanly."""
        async with self.sessions() as session:
            rollout = await session.scalar(
                select(Rollout).where(Rollout.candidate == version, Rollout.state.in_(ACTIVE))
            )
        if rollout is not None:
            with contextlib.suppress(RolloutError):  # ended meanwhile: nothing left to abort
                await self._finish(rollout.alias, "aborted", f"load_failed: {error}"[:500],
                                   rollout_id=rollout.id)  # fmt: skip

    async def pause(self, alias: str) -> Rollout:
        return await self._set_running(alias, running=False)

    async def resume(self, alias: str) -> Rollout:
        return await self._set_running(alias, running=True)

    async def status(self, alias: str) -> tuple[Rollout | None, list[RolloutEvent]]:
        async with self.sessions() as session:
            rollout = await session.scalar(
                select(Rollout).where(Rollout.alias == alias).order_by(Rollout.id.desc())
            )
            if rollout is None:
                return None, []
            events = list(
                await session.scalars(
                    select(RolloutEvent)
                    .where(RolloutEvent.rollout_id == rollout.id)
                    .order_by(RolloutEvent.id)
                )
            )
        return rollout, events

    # -- the analysis loop -----------------------------------------------------------
    async def tick(self) -> None:
        """Analyse every running rollout whose interval has passed (leader only)."""
        if not await self.is_leader():
            return
        async with self.sessions() as session:
            running = list(await session.scalars(select(Rollout).where(Rollout.state == "running")))
        for rollout in running:
            now = utcnow()
            started = aware(rollout.step_started_at)
            if now - started >= timedelta(seconds=self.policy.interval_s):
                await self._analyse_step(rollout, started, now)

    async def _analyse_step(self, rollout: Rollout, since: datetime, until: datetime) -> None:
        if rollout.weight >= 1.0:  # started at 100%: nothing to compare, the step has run
            with contextlib.suppress(RolloutError):  # an operator ended it meanwhile
                await self._finish(rollout.alias, "promoted", "full_weight",
                                   rollout_id=rollout.id)  # fmt: skip
            return
        canary = await self.stats(rollout.candidate, since, until)
        # No baseline means the alias served the base model: the stats source knows its name.
        live = await self.stats(rollout.baseline, since, until)
        results = analyse(canary, live, self.policy)
        failed = [result.gate for result in results if result.passed is False]
        waiting = any(result.waiting for result in results)
        decided = [result for result in results if result.passed is not None]
        detail = {"canary": asdict(canary), "live": asdict(live),
                  "gates": [asdict(result) for result in results]}  # fmt: skip
        if failed:
            await self._record_failure(rollout, since, failed, detail)
        elif decided and not waiting:
            await self._advance(rollout, since, detail)
        else:
            await self._log_event(rollout.id, "waiting_for_samples", detail)

    async def _record_failure(
        self, analysed: Rollout, since: datetime, failed: list[str], detail: dict[str, Any]
    ) -> None:
        async with self.sessions() as session, session.begin():
            alias_row, rollout = await self._same_window(session, analysed, since)
            if alias_row is None or rollout is None:
                return
            rollout.failures += 1
            rollout.step_started_at = utcnow()
            self._event(session, rollout, "gate_failed", {**detail, "failed": failed})
            # Rolled back in the same transaction: no other writer can act in between.
            if rollout.failures >= self.policy.failure_threshold:
                await self._end(session, alias_row, rollout, "rolled_back",
                                "gate_failed:" + ",".join(failed))  # fmt: skip
        log.warning("rollout gate failed", extra={"alias": rollout.alias, "gates": failed})
        if rollout.state == "rolled_back":
            self._ended(rollout)

    async def _advance(self, analysed: Rollout, since: datetime, detail: dict[str, Any]) -> None:
        async with self.sessions() as session, session.begin():
            alias_row, rollout = await self._same_window(session, analysed, since)
            if alias_row is None or rollout is None:
                return
            # At 100% the live version gets no traffic left to compare with, so passing the
            # step before it is the last decision: promote instead of moving to 100%.
            last_step = (
                rollout.step >= len(rollout.steps) - 1 or rollout.steps[rollout.step + 1] >= 100
            )
            if not last_step:
                rollout.step += 1
                rollout.weight = rollout.steps[rollout.step] / 100
                rollout.step_started_at = rollout.updated_at = utcnow()
                alias_row.generation += 1
            self._event(session, rollout, "gates_passed", {**detail, "step": rollout.step})
            if last_step:
                await self._end(session, alias_row, rollout, "promoted", "all_steps_passed")
        if last_step:
            self._ended(rollout)
        else:
            self.registry.changed()

    async def _same_window(
        self, session: AsyncSession, analysed: Rollout, since: datetime
    ) -> tuple[Alias | None, Rollout | None]:
        """Lock the alias and return its rollout if it is still running the window that was
        analysed. Otherwise (None) another writer acted since the analysis read it: an
        operator, or another replica's tick that analysed the same window (the leader lock
        changing hands): the analysis is stale and must not be applied a second time."""
        alias_row = await lock_alias(session, analysed.alias)
        rollout = await session.get(Rollout, analysed.id, populate_existing=True)
        if (
            alias_row is None
            or rollout is None
            or rollout.state != "running"
            or aware(rollout.step_started_at) != since
        ):
            return None, None
        return alias_row, rollout

    async def _finish(
        self, alias: str, outcome: str, reason: str, rollout_id: int | None = None
    ) -> Rollout:
        """End the alias's rollout (only if it is still ``rollout_id``, when given). Of two
        writers ending it at once, the second finds none in progress: RolloutError (409)."""
        async with self.sessions() as session, session.begin():
            alias_row = await lock_alias(session, alias)
            rollout = await self._active(session, alias)
            if alias_row is None or rollout is None or rollout_id not in (None, rollout.id):
                raise RolloutError(f"alias {alias} has no rollout in progress")
            await self._end(session, alias_row, rollout, outcome, reason)
        self._ended(rollout)
        return rollout

    async def _end(
        self, session: AsyncSession, alias_row: Alias, rollout: Rollout, outcome: str, reason: str
    ) -> None:
        """Promote, roll back or abort ``rollout``, in the caller's locked transaction."""
        candidate = await session.get(AdapterVersion, rollout.candidate)
        assert candidate is not None
        rollout.state, rollout.reason, rollout.updated_at = outcome, reason, utcnow()
        rollout.weight = 1.0 if outcome == "promoted" else 0.0
        if outcome == "promoted":
            old = await session.get(AdapterVersion, alias_row.live_version or "")
            if old is not None:
                old.state = "retired"
            candidate.state = "live"
            alias_row.live_version = candidate.name
        else:  # rolled_back or aborted: the candidate leaves the traffic either way
            candidate.state = "rolled_back"
        alias_row.generation += 1
        self._event(session, rollout, outcome, {"reason": reason})

    def _ended(self, rollout: Rollout) -> None:
        log.info("rollout %s", rollout.state, extra={"alias": rollout.alias,
                 "version": rollout.candidate, "reason": rollout.reason})  # fmt: skip
        self.registry.changed()

    async def _set_running(self, alias: str, *, running: bool) -> Rollout:
        async with self.sessions() as session, session.begin():
            await lock_alias(session, alias)
            rollout = await self._active(session, alias)
            if rollout is None:
                raise RolloutError(f"alias {alias} has no rollout in progress")
            rollout.state = "running" if running else "paused"
            if running:
                rollout.step_started_at = utcnow()  # a fresh window: paused time is not data
            self._event(session, rollout, "resumed" if running else "paused", {})
        return rollout

    # -- helpers ---------------------------------------------------------------------
    async def _active(self, session: AsyncSession, alias: str) -> Rollout | None:
        result: Rollout | None = await session.scalar(
            select(Rollout).where(Rollout.alias == alias, Rollout.state.in_(ACTIVE))
        )
        return result

    async def _log_event(self, rollout_id: int, kind: str, detail: dict[str, Any]) -> None:
        async with self.sessions() as session, session.begin():
            rollout = await session.get(Rollout, rollout_id)
            if rollout is not None:
                self._event(session, rollout, kind, detail)

    @staticmethod
    def _event(session: AsyncSession, rollout: Rollout, kind: str, detail: dict[str, Any]) -> None:
        session.add(RolloutEvent(rollout_id=rollout.id, kind=kind, detail=detail))
