"""The gateway's long-lived services, built once per app by ``gateway.wiring``, and their
lifecycle: start (migrate, replay the journal, background loops) and stop."""

from __future__ import annotations

import asyncio
import gc
import logging
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from adapters.engine import EngineClient
from adapters.experiments import ExperimentController
from adapters.reconciler import Reconciler
from adapters.registry import Registry
from adapters.rollout import RolloutController
from core.settings import Settings
from core.store import Database
from core.store.conversations import ConversationLog, ConversationRecord
from core.store.journal import Journal, orphans
from core.store.keys import KeyStore
from core.store.leader import LeaderLock
from gateway.auth import Authenticator
from gateway.chat import ChatService
from gateway.feedback import FeedbackService
from gateway.metrics import Exposition, GatewayMetrics
from gateway.review import ReviewQueue
from gateway.routing import ModelRouter
from gateway.state_metrics import StateMetrics
from monitor.service import QualityMonitor
from retrieval.service import Retriever

log = logging.getLogger("loragate.app")


@dataclass
class Services:
    """Everything the handlers use, built once per app."""

    settings: Settings
    metrics_registry: CollectorRegistry
    db: Database
    keys: KeyStore
    conversations: ConversationLog
    engine: EngineClient
    router: ModelRouter
    chat: ChatService
    authenticator: Authenticator
    retriever: Retriever
    adapters: Registry
    reconciler: Reconciler
    feedback: FeedbackService
    review: ReviewQueue
    rollouts: RolloutController
    experiments: ExperimentController
    leader: LeaderLock
    metrics: GatewayMetrics
    exposition: Exposition
    state_metrics: StateMetrics
    monitor: QualityMonitor
    monitor_leader: LeaderLock
    journal: Journal
    tasks: list[asyncio.Task[None]] = field(default_factory=list, init=False)

    async def start(self) -> None:
        await self.db.migrate()
        await self.replay_journal()
        self.conversations.start()
        self.feedback.start()
        await self.engine.start()
        await self.reconciler.start()
        self.tasks = [
            asyncio.create_task(self._tick_rollouts(), name="rollouts"),
            asyncio.create_task(self._warm_up_retrieval(), name="retrieval-warm-up"),
        ]
        if self.settings.monitor.interval_s > 0:
            self.tasks.append(asyncio.create_task(self._run_monitor(), name="monitor"))
        if not self.settings.auth.enabled:
            log.warning("auth is OFF: every caller is admin; use only on a trusted machine")
        if self.settings.workers > 1 and self.settings.quotas.backend == "memory":
            log.warning("quotas are counted per worker: set quota_backend=redis to share them")

    async def replay_journal(self) -> None:
        """Write what dead gateways journaled but never got into the database."""
        for orphan in orphans(self.journal.directory):
            try:
                records = [ConversationRecord(**entry.data) for entry in orphan.entries
                           if entry.kind == "conversation"]  # fmt: skip
                written = await self.conversations.replay(records)
                applied = await self.feedback.replay(
                    [entry.data for entry in orphan.entries if entry.kind == "feedback"]
                )
            except BaseException:
                orphan.release()  # kept for the next start
                raise
            orphan.done()
            log.warning("journal replayed", extra={
                "segment": orphan.path.name, "entries": len(orphan.entries),
                "conversations_written": written, "feedback_applied": applied})  # fmt: skip

    async def _warm_up_retrieval(self) -> None:
        await self.retriever.warm_up()
        # The embedder and indexes are millions of long-lived objects that every full
        # garbage collection would walk again, in the middle of some request: frozen, they
        # are skipped (the gateway's p99 overhead was measured with and without).
        gc.collect()
        gc.freeze()

    async def _tick_rollouts(self) -> None:
        # Ticks often; the controller acts only when a step's interval has passed.
        period = min(5.0, self.settings.rollout.interval_s / 4)
        while True:
            try:
                await self.rollouts.tick()
                await self.experiments.tick()
            except Exception:  # the loop must outlive one bad tick; it is logged
                log.exception("rollout or experiment tick failed")
            await asyncio.sleep(period)

    async def _run_monitor(self) -> None:
        # One gateway (the holder of the monitor lock) writes the reports; all export them.
        while True:
            await asyncio.sleep(self.settings.monitor.interval_s)
            try:
                if await self.monitor_leader.is_leader():
                    await self.monitor.run_once()
            except Exception:  # the loop must outlive one bad run; it is logged
                log.exception("monitor run failed")

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await self.leader.release()
        await self.monitor_leader.release()
        self.exposition.close()
        await self.reconciler.stop()
        if self.chat.quotas is not None:
            await self.chat.quotas.close()
        await self.feedback.close()
        await self.conversations.close()
        self.journal.close()
        await self.engine.close()
        self.retriever.close()
        await self.db.dispose()
