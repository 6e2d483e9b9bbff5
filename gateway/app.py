"""Assembles the gateway: settings in, a Litestar app out.

Nothing is read from globals: the settings, the Prometheus registry and, for tests, the
engine client are passed in, so every test can build a fresh app.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from litestar import Litestar, Router
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from prometheus_client import CollectorRegistry

from adapters.engine import EngineClient
from adapters.experiments import ExperimentController
from adapters.reconciler import Reconciler
from adapters.registry import Registry
from adapters.rollout import RolloutController
from gateway import components
from gateway.auth import Authenticator, scope_guard
from gateway.chat import ChatLimits, ChatService
from gateway.components import (
    adapter_registry,
    build_retriever,
    engine_config,
    rollout_controller,
)
from gateway.embeddings import EmbeddingService, embedding_model_name
from gateway.feedback import FeedbackService
from gateway.grounding import Grounder
from gateway.history import ConversationHistory
from gateway.http_errors import EXCEPTION_HANDLERS
from gateway.metrics import Exposition, GatewayMetrics
from gateway.openapi import document_errors
from gateway.relay import EngineRelay
from gateway.review import ReviewQueue
from gateway.routes import adapters as adapter_routes
from gateway.routes import admin, collections, monitor, openai, ops, review, rollouts
from gateway.routes import experiments as experiment_routes
from gateway.routes.conversations import conversation_routes
from gateway.routes.operator_views import OPERATOR_VIEWS
from gateway.routing import ModelRouter
from gateway.settings import Settings
from gateway.state_metrics import StateMetrics
from gateway.store import Database
from gateway.store.conversations import ConversationLog, ConversationRecord
from gateway.store.journal import Journal, orphans
from gateway.store.keys import KeyStore
from gateway.store.leader import MONITOR_LOCK_KEY, LeaderLock
from gateway.ui import ui_routes
from monitor.service import QualityMonitor
from retrieval.service import Retriever

log = logging.getLogger("loragate.app")


@dataclass
class Services:
    """Everything the handlers use, built once per app."""

    settings: Settings
    registry: CollectorRegistry
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

    @classmethod
    def build(
        cls,
        settings: Settings,
        registry: CollectorRegistry,
        engine: EngineClient | None = None,
    ) -> Services:
        db = Database(settings.resolved_database_url)
        keys = KeyStore(db)
        journal = Journal(settings.resolved_journal_dir, fsync=settings.journal_fsync)
        conversations = ConversationLog(db, journal)
        engine = engine or EngineClient(engine_config(settings))
        adapters = adapter_registry(settings, db)
        reconciler = Reconciler(
            engine, adapters, settings.reconcile_interval_s, settings.adapter_drain_s
        )
        leader = LeaderLock(db)
        rollouts = rollout_controller(settings, db, adapters, leader)  # fmt: skip
        experiments = components.experiment_controller(settings, db, adapters, leader)
        router = ModelRouter(adapters, settings.base_model_name)
        limits = ChatLimits(settings.max_model_len, settings.max_messages, settings.max_n,
                            settings.adapter_wait_s, settings.default_max_tokens,
                            settings.quota_reserve_max_tokens)  # fmt: skip
        metrics = GatewayMetrics(registry)
        reconciler.on_action(metrics.record_reconciler_action)
        retriever = build_retriever(settings, db)
        grounder = Grounder(
            retriever, settings.retrieval_models, settings.retrieval_top_k,
            settings.retrieval_min_score, metrics,
        )  # fmt: skip
        quotas = components.quota_gate(settings, db, metrics)
        chat = ChatService(engine, router, conversations, metrics, limits, grounder, reconciler,
                           quotas)  # fmt: skip
        flagger = components.flagger(
            settings, db, on_flag=lambda reason: metrics.flags.labels(reason).inc()
        )
        conversations.on_written(flagger.examine)
        feedback = FeedbackService(db, conversations, metrics, flagger, journal)
        review_queue = ReviewQueue(db, flagger, conversations)
        authenticator = Authenticator(
            keys, enabled=settings.auth_enabled, cache_seconds=settings.key_cache_seconds
        )
        reconciler.on_load_failure(rollouts.abort_for)
        monitor = components.quality_monitor(settings, db, retriever.embedder)
        state_metrics = StateMetrics(db, adapters, monitor)
        exposition = Exposition(registry, settings.metrics_multiproc_dir)
        exposition.add_state(state_metrics)
        return cls(settings, registry, db, keys, conversations, engine, router, chat,
                   authenticator, retriever, adapters, reconciler, feedback, review_queue,
                   rollouts, experiments, leader, metrics, exposition, state_metrics, monitor,
                   LeaderLock(db, MONITOR_LOCK_KEY, "monitor"), journal)  # fmt: skip

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
        if self.settings.monitor_interval_s > 0:
            self.tasks.append(asyncio.create_task(self._run_monitor(), name="monitor"))
        if not self.settings.auth_enabled:
            log.warning("auth is OFF: every caller is admin; use only on a trusted machine")
        if self.settings.workers > 1 and self.settings.quota_backend == "memory":
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
        period = min(5.0, self.settings.rollout_interval_s / 4)
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
            await asyncio.sleep(self.settings.monitor_interval_s)
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
        await self.db.dispose()


def create_app(
    settings: Settings,
    *,
    registry: CollectorRegistry | None = None,
    engine: EngineClient | None = None,
) -> Litestar:
    services = Services.build(settings, registry or CollectorRegistry(), engine)

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        await services.start()
        try:
            yield
        finally:
            await services.stop()

    def provide(value: object) -> Provide:
        return Provide(lambda: value, use_cache=True, sync_to_thread=False)

    api = Router(
        path="/",
        route_handlers=[
            openai.chat_completions,
            openai.list_models,
            openai.retrieve_model,
            openai.completions,
            openai.create_embeddings,
            openai.tokenize,
            openai.detokenize,
            openai.create_response,
            admin.list_keys,
            admin.create_key,
            admin.revoke_key,
            admin.get_quota,
            admin.set_quota,
            collections.list_collections,
            collections.add_document,
            collections.delete_document,
            collections.delete_document_by_id,
            collections.search,
            adapter_routes.publish_adapter,
            adapter_routes.list_adapters,
            adapter_routes.list_aliases,
            adapter_routes.submit_feedback,
            review.list_review,
            review.show_review,
            review.decide_review,
            review.reopen_review,
            review.edit_review,
            review.flag_completion,
            adapter_routes.create_alias,
            rollouts.start_rollout,
            rollouts.rollout_status,
            rollouts.rollout_action,
            experiment_routes.start_experiment,
            experiment_routes.experiment_status,
            experiment_routes.experiment_action,
            monitor.monitor_history,
            monitor.run_monitor,
            monitor.monitor_timeline,
            conversation_routes(ConversationHistory(services.db)),
            *OPERATOR_VIEWS,
        ],
        guards=[scope_guard],
    )
    app = Litestar(
        route_handlers=[api, ops.healthz, ops.readyz, ops.metrics, *ui_routes(settings.ui_enabled)],
        dependencies={
            "chat": provide(services.chat),
            "embeddings": provide(_embedding_service(services)),
            "relay": provide(_engine_relay(services)),
            "router": provide(services.router),
            "engine": provide(services.engine),
            "registry": provide(services.registry),
            "exposition": provide(services.exposition),
            "state_metrics": provide(services.state_metrics),
            "monitor": provide(services.monitor),
            "keys": provide(services.keys),
            "retriever": provide(services.retriever),
            "adapters": provide(services.adapters),
            "feedback": provide(services.feedback),
            "rollouts": provide(services.rollouts),
            "experiments": provide(services.experiments),
            "review": provide(services.review),
            "quotas": provide(services.chat.quotas),
        },
        state=_state(services),
        lifespan=[lifespan],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        request_max_body_size=settings.max_body_bytes,
        openapi_config=_openapi_config(settings),
        logging_config=None,  # gateway.logs owns the log format
        debug=False,
    )
    document_errors(app)
    return app


def _openapi_config(settings: Settings) -> OpenAPIConfig:
    """Without ``openapi_pages`` only the document, ``/schema/openapi.json``, is served: the
    interactive pages load their scripts from public CDNs, with no CSP."""
    plugins = () if settings.openapi_pages else (JsonRenderPlugin(),)
    return OpenAPIConfig(title="loragate", version="0.1.0", path="/schema", render_plugins=plugins)


def _embedding_service(services: Services) -> EmbeddingService:
    """/v1/embeddings on retrieval's embedder: one model in memory, loaded once."""
    name = embedding_model_name(services.settings.embedding_model_path)
    return EmbeddingService(
        services.retriever.embedder, name, services.metrics, services.chat.quotas
    )


def _engine_relay(services: Services) -> EngineRelay:
    return EngineRelay(services.engine, services.router, services.metrics, services.chat.quotas)


def _state(services: Services) -> State:
    return State({"services": services, "authenticator": services.authenticator})


def create_app_from_env() -> Litestar:
    """Factory for ``uvicorn --factory`` with several workers (external engine mode)."""
    from gateway.http_protocol import limit_headers
    from gateway.logs import configure_logging
    from gateway.settings import load_settings

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    limit_headers(settings.max_header_bytes)  # this worker's protocol class, as configured
    return create_app(settings)
