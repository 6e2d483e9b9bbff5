"""Settings in, configured components out: the one place that hands the settings to each
package's components and builds them, with keyword arguments.

A settings section is the component's config object (core/sections.py), so it is passed on
whole (``policy=settings.rollout``); only the top-level settings not yet in a section are
mapped here field by field onto config objects. The server (``build_services``), the CLI,
the trainer worker (``trainer_parts``) and the benchmarks all build through here, so a
setting means the same thing to each of them. tests/unit/test_wiring.py checks that the
config objects built field by field keep the settings' defaults, so a default cannot drift.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from prometheus_client import CollectorRegistry

from adapters.base_model import check_model_dir
from adapters.bundled_models import default_sources
from adapters.engine import EngineClient, EngineClientConfig
from adapters.errors import BaseModelError
from adapters.experiments import ExperimentController
from adapters.reconciler import Reconciler
from adapters.registry import Registry, ValidationLimits
from adapters.rollout import RolloutController
from adapters.supervisor import EngineLaunch, served_chat_template
from core.errors import ConfigError
from core.sections import CurationLimits, RecipeConfig, TrainConfig
from core.settings import Settings
from core.store import Database
from core.store.conversations import ConversationLog
from core.store.journal import Journal
from core.store.keys import KeyStore, Quota
from core.store.leader import MONITOR_LOCK_KEY, LeaderLock
from gateway.auth import Authenticator
from gateway.chat import ChatLimits, ChatService
from gateway.feedback import FeedbackService
from gateway.flagging import Flagger
from gateway.grounder import Grounder
from gateway.key_usage import KeyUsage
from gateway.metrics import Exposition, GatewayMetrics
from gateway.quota_counters import Counters, MemoryCounters, RedisCounters
from gateway.quota_gate import MonthlyUsage, QuotaGate
from gateway.review import ReviewQueue
from gateway.rollout_stats import experiment_outcomes, version_stats
from gateway.routing import ModelRouter
from gateway.services import Services
from gateway.state_metrics import StateMetrics
from monitor.service import QualityMonitor
from retrieval.embeddings import Embedder
from retrieval.service import RetrievalConfig, Retriever
from trainer.job import JobConfig, TrainingJob
from trainer.reeval import Reevaluator
from trainer.regrounder import Regrounder
from trainer.store import TrainerStore


def adapter_registry(settings: Settings, db: Database) -> Registry:
    """The adapter registry on the shared store, with version files under the data dir."""
    limits = ValidationLimits(
        base_model_dir=_base_model_dir(settings),
        max_rank=settings.model.max_lora_rank,
        max_bytes=settings.adapters.max_bytes,
    )
    return Registry(sessions=db.sessions, store_dir=settings.data_dir / "adapters", limits=limits)


def _base_model_dir(settings: Settings) -> Path | None:
    """The base weights adapters are checked against, when this host can see them."""
    path = settings.resolved_base_model_path
    return path if (path / "config.json").is_file() else None


def retrieval_config(settings: Settings) -> RetrievalConfig:
    return RetrievalConfig(
        chunking=settings.chunking,
        index=settings.index,
        max_document_bytes=settings.retrieval.max_document_bytes,
        query_batch_size=settings.retrieval.query_batch_size,
        query_batch_wait_ms=settings.retrieval.query_batch_wait_ms,
        query_cache_size=settings.retrieval.query_cache_size,
        query_max_pending=settings.retrieval.query_max_pending,
        chunk_cache_size=settings.retrieval.chunk_cache_size,
    )


def build_retriever(
    settings: Settings, db: Database, shared_embedder: Embedder | None = None
) -> Retriever:
    """The retrieval service on the shared store, with index files under the data dir;
    ``shared_embedder``: one already loaded in this process, else one of its own."""
    return Retriever(
        sessions=db.sessions,
        embedder=shared_embedder or embedder(settings),
        index_dir=settings.data_dir / "indexes",
        config=retrieval_config(settings),
    )


def embedder(settings: Settings) -> Embedder:
    """The sentence embedder (loaded on first use) for retrieval, curation and drift."""
    return Embedder(
        settings.retrieval.embedding_model_path,
        batch_size=settings.retrieval.embedding_batch_size,
        threads=settings.retrieval.embedding_threads,
        backend=settings.retrieval.embedding_backend,
        export_dir=settings.retrieval.embedding_cache_dir or settings.data_dir / "embedder",
    )


def engine_config(settings: Settings) -> EngineClientConfig:
    return EngineClientConfig(
        urls=tuple(settings.resolved_engine_urls),
        api_key=settings.engine.api_key,
        connect_timeout_s=settings.engine.connect_timeout_s,
        request_timeout_s=settings.engine.request_timeout_s,
        health_interval_s=settings.engine.health_interval_s,
        max_connections=settings.engine.max_connections,
        discovery_interval_s=settings.engine.discovery_interval_s,
    )


def rollout_controller(
    settings: Settings,
    db: Database,
    registry: Registry | None = None,
    leader: LeaderLock | None = None,
) -> RolloutController:
    registry = registry or adapter_registry(settings, db)
    leader = leader or LeaderLock(db)
    return RolloutController(
        registry=registry,
        sessions=db.sessions,
        stats=lambda version, since, until: version_stats(
            db,
            version or settings.model.base_model_name,
            since,
            until,
            settings.max_ratings_per_key,
        ),
        policy=settings.rollout,
        is_leader=leader.is_leader,
    )


def experiment_controller(
    settings: Settings, db: Database, registry: Registry, leader: LeaderLock | None = None
) -> ExperimentController:
    leader = leader or LeaderLock(db)
    return ExperimentController(
        registry=registry,
        sessions=db.sessions,
        outcomes=lambda experiment_id: experiment_outcomes(
            db, experiment_id, settings.max_ratings_per_key
        ),
        policy=settings.experiments,
        is_leader=leader.is_leader,
    )


def engine_launch(settings: Settings) -> EngineLaunch:
    model_path = settings.resolved_base_model_path
    try:
        check_model_dir(model_path)
    except BaseModelError as exc:
        raise ConfigError(
            f"base_model_path: {exc}. Run `loragate model prepare` first, or point "
            "LORAGATE_BASE_MODEL_PATH at a Hugging Face model directory."
        ) from None
    return EngineLaunch(
        model_path=model_path,
        served_model_name=settings.model.base_model_name,
        host=settings.engine.host,
        port=settings.engine.port,
        max_model_len=settings.model.max_model_len,
        kv_cache_gib=settings.model.kv_cache_gib,
        gpu_memory_utilization=settings.model.gpu_memory_utilization,
        max_loras=settings.model.max_loras,
        max_cpu_loras=settings.model.max_cpu_loras,
        max_lora_rank=settings.model.max_lora_rank,
        log_file=settings.data_dir / "logs" / "vllm.log",
        start_timeout_s=settings.engine.start_timeout_s,
        restart_backoff_s=settings.engine.restart_backoff_s,
        restart_backoff_max_s=settings.engine.restart_backoff_max_s,
        extra_args=tuple(settings.engine.extra_args),
        tool_call_parser=settings.engine.tool_call_parser,
        chat_template=served_chat_template(model_path, settings.engine.chat_template),
    )


def flagger(
    settings: Settings, db: Database, on_flag: Callable[[str], None] | None = None
) -> Flagger:
    """The flagging rules of every alias, writing to the review queue in ``db``."""
    return Flagger(
        db=db,
        default_rules=settings.flagging.rules,
        rules_by_alias=settings.flagging.rules_by_alias,
        trust_corrections=settings.flagging.trust_corrections,
        on_flag=on_flag,
    )


def quota_gate(settings: Settings, db: Database, metrics: GatewayMetrics) -> QuotaGate:
    counters: Counters
    if settings.quotas.backend == "redis":
        counters = RedisCounters(settings.quotas.redis_url)
    else:
        counters = MemoryCounters()
    usage = MonthlyUsage(db=db, refresh_s=settings.quotas.usage_refresh_s)
    return QuotaGate(
        counters=counters, monthly=usage, defaults=default_quota(settings), metrics=metrics
    )


def default_quota(settings: Settings) -> Quota:
    """The limits of keys that set none of their own."""
    return Quota(
        requests_per_minute=settings.quotas.default_requests_per_minute,
        tokens_per_minute=settings.quotas.default_tokens_per_minute,
        concurrent_streams=settings.quotas.default_concurrent_streams,
        monthly_tokens=settings.quotas.default_monthly_tokens,
        feedback_per_minute=settings.quotas.default_feedback_per_minute,
        searches_per_minute=settings.quotas.default_searches_per_minute,
    )


def quality_monitor(settings: Settings, db: Database, embed_with: Embedder) -> QualityMonitor:
    return QualityMonitor(
        db=db,
        embed=embed_with.embed,
        config=settings.monitor,
        base_model_name=settings.model.base_model_name,
    )


def sources_per_answer(settings: Settings) -> int:
    """The global ``retrieval.top_k``, else the base model's own number of sources: the
    gateway serves and the trainer grounds its examples with the same one."""
    return settings.retrieval.top_k or default_sources(settings.model.base_model_name)


def grounder(settings: Settings, retriever: Retriever, metrics: GatewayMetrics) -> Grounder:
    return Grounder(
        retriever=retriever,
        defaults=settings.retrieval.models,
        top_k=sources_per_answer(settings),
        min_score=settings.retrieval.min_score,
        metrics=metrics,
    )


def chat_limits(settings: Settings) -> ChatLimits:
    return ChatLimits(
        context_window=settings.model.max_model_len,
        max_messages=settings.requests.max_messages,
        max_n=settings.requests.max_n,
        adapter_wait_s=settings.adapters.wait_s,
        default_max_tokens=settings.requests.default_max_tokens,
        reserve_max_tokens=settings.quotas.reserve_max_tokens,
    )


def build_services(
    settings: Settings,
    *,
    metrics_registry: CollectorRegistry,
    engine: EngineClient | None = None,
    shared_embedder: Embedder | None = None,
) -> Services:
    """Every long-lived service of one gateway process, wired together (nothing started).
    ``shared_embedder``: an embedder loaded once for several apps in one process (a loaded
    model is not given back whole to the OS when an app stops: about 100 MB each time)."""
    db = Database(settings.resolved_database_url)
    keys = KeyStore(db)
    journal = Journal(settings.resolved_journal_dir, fsync=settings.store.journal_fsync)
    conversations = ConversationLog(db, journal)
    engine = engine or EngineClient(engine_config(settings))
    adapters = adapter_registry(settings, db)
    reconciler = Reconciler(
        engine=engine,
        registry=adapters,
        interval_s=settings.adapters.reconcile_interval_s,
        drain_s=settings.adapters.drain_s,
    )
    leader = LeaderLock(db)
    rollouts = rollout_controller(settings, db, adapters, leader)
    metrics = GatewayMetrics(metrics_registry, key_limit=settings.metrics_key_limit)
    reconciler.on_action(metrics.record_reconciler_action)
    reconciler.on_load_failure(rollouts.abort_for)
    retriever = build_retriever(settings, db, shared_embedder)
    router = ModelRouter(registry=adapters, base_model_name=settings.model.base_model_name)
    chat = ChatService(
        engine=engine,
        router=router,
        conversations=conversations,
        metrics=metrics,
        limits=chat_limits(settings),
        grounder=grounder(settings, retriever, metrics),
        reconciler=reconciler,
        quotas=quota_gate(settings, db, metrics),
    )
    flags = flagger(settings, db, on_flag=lambda reason: metrics.flags.labels(reason).inc())
    conversations.on_written(flags.examine)
    monitor = quality_monitor(settings, db, retriever.embedder)
    key_usage = KeyUsage(
        db,
        default_quota(settings),
        limit=settings.metrics_key_limit,
        month_refresh_s=settings.quotas.usage_refresh_s,
    )
    state_metrics = StateMetrics(db=db, adapters=adapters, monitor=monitor, key_usage=key_usage)
    exposition = Exposition(metrics_registry, settings.metrics_multiproc_dir)
    exposition.add_state(state_metrics)
    return Services(
        settings=settings,
        metrics_registry=metrics_registry,
        db=db,
        keys=keys,
        conversations=conversations,
        engine=engine,
        router=router,
        chat=chat,
        authenticator=Authenticator(
            keys, enabled=settings.auth.enabled, cache_seconds=settings.auth.key_cache_seconds
        ),
        retriever=retriever,
        adapters=adapters,
        reconciler=reconciler,
        feedback=FeedbackService(
            db=db, conversations=conversations, metrics=metrics, flagger=flags, journal=journal
        ),
        review=ReviewQueue(db=db, flagger=flags, conversations=conversations),
        rollouts=rollouts,
        experiments=experiment_controller(settings, db, adapters, leader),
        leader=leader,
        metrics=metrics,
        exposition=exposition,
        state_metrics=state_metrics,
        monitor=monitor,
        monitor_leader=LeaderLock(db, MONITOR_LOCK_KEY, "monitor"),
        journal=journal,
    )


def train_config(settings: Settings) -> TrainConfig:
    """The training section, with the chat template vLLM serves the base model with."""
    model_dir = settings.resolved_base_model_path.resolve()
    template = served_chat_template(model_dir, settings.engine.chat_template)
    return replace(settings.train, chat_template=str(template or ""))


def curation_limits(settings: Settings) -> CurationLimits:
    """The curation section; its example length is the training run's."""
    return replace(settings.curation, max_example_tokens=settings.train.max_tokens)


def recipe_config(settings: Settings) -> RecipeConfig | None:
    """None: train on the conversations as served."""
    return settings.recipe if settings.recipe.enabled else None


def job_config(settings: Settings) -> JobConfig:
    return JobConfig(
        data_dir=settings.data_dir.resolve(),
        base_model_dir=settings.resolved_base_model_path.resolve(),
        base_model_name=settings.model.base_model_name,
        engine_url=trainer_engine_url(settings),
        engine_api_key=settings.engine.api_key,
        train=train_config(settings),
        limits=curation_limits(settings),
        gate=settings.evaluation,
        auto_rollout=settings.trainer.auto_rollout,
        rehearsal_fraction=settings.trainer.rehearsal_fraction,
        generation_concurrency=settings.trainer.generation_concurrency,
        recipe=recipe_config(settings),
    )


def trainer_engine_url(settings: Settings) -> str:
    """The one vLLM server a training run loads its candidate on and asks: a DNS name that
    resolves to several pods could send the load to one and the questions to another."""
    url = settings.resolved_engine_urls[0]
    if url.startswith("dns+"):
        raise ConfigError(
            "engine_urls: the trainer needs one fixed vLLM URL (say http://vllm-0.vllm:8000), "
            f"not the DNS entry {url}"
        )
    return url


def regrounder(settings: Settings, retriever: Retriever) -> Regrounder:
    return Regrounder(
        retriever=retriever,
        retrieval_models=settings.retrieval.models,
        top_k=sources_per_answer(settings),
        min_score=settings.retrieval.min_score,
    )


@dataclass
class TrainerParts:
    db: Database
    registry: Registry
    job: TrainingJob
    reevaluator: Reevaluator


@asynccontextmanager
async def trainer_parts(settings: Settings) -> AsyncIterator[TrainerParts]:
    """The store (migrated), the registry, a training job and the re-evaluator: what the
    trainer worker and the training commands run on."""
    db = Database(settings.resolved_database_url)
    retriever = build_retriever(settings, db)
    try:
        await db.migrate()
        registry = adapter_registry(settings, db)
        grounding = regrounder(settings, retriever)
        job = TrainingJob(
            config=job_config(settings),
            db=db,
            registry=registry,
            rollouts=rollout_controller(settings, db, registry),
            embedder=retriever.embedder,
            regrounder=grounding,
        )
        reevaluator = Reevaluator(
            job=job, store=TrainerStore(db), regrounder=grounding, policy=settings.reeval
        )
        yield TrainerParts(db=db, registry=registry, job=job, reevaluator=reevaluator)
    finally:
        retriever.close()
        await db.dispose()
