"""Settings in, configured components out: the one place that maps settings fields onto
each package's own config objects. ``app.py`` wires the results together; the CLI uses the
same builders for its offline commands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from adapters.base_model import check_model_dir
from adapters.engine import EngineClientConfig
from adapters.errors import BaseModelError
from adapters.experiments import ExperimentController, ExperimentPolicy
from adapters.registry import Registry, ValidationLimits
from adapters.rollout import RolloutController, RolloutPolicy
from adapters.supervisor import EngineLaunch, served_chat_template
from gateway.errors import ConfigError
from gateway.flagging import Flagger
from gateway.metrics import GatewayMetrics
from gateway.quota_counters import Counters, MemoryCounters, RedisCounters
from gateway.quotas import MonthlyUsage, QuotaGate
from gateway.rollout_stats import experiment_outcomes, version_stats
from gateway.settings import Settings
from gateway.store import Database
from gateway.store.keys import Quota
from gateway.store.leader import LeaderLock
from monitor.service import MonitorConfig, QualityMonitor
from retrieval.chunking import ChunkingConfig
from retrieval.embeddings import Embedder
from retrieval.index import IndexConfig
from retrieval.service import RetrievalConfig, Retriever


def rollout_policy(settings: Settings) -> RolloutPolicy:
    return RolloutPolicy(
        steps=tuple(settings.rollout_steps),
        interval_s=settings.rollout_interval_s,
        min_samples=settings.rollout_min_samples,
        failure_threshold=settings.rollout_failure_threshold,
        max_negative_rate_increase=settings.rollout_max_negative_rate_increase,
        max_groundedness_drop=settings.rollout_max_groundedness_drop,
        max_error_rate_increase=settings.rollout_max_error_rate_increase,
        max_p95_latency_ratio=settings.rollout_max_p95_latency_ratio,
    )


def adapter_registry(settings: Settings, db: Database) -> Registry:
    """The adapter registry on the shared store, with version files under the data dir."""
    limits = ValidationLimits(
        _base_model_dir(settings), settings.max_lora_rank, settings.max_adapter_bytes
    )
    return Registry(db.sessions, settings.data_dir / "adapters", limits)


def _base_model_dir(settings: Settings) -> Path | None:
    """The base weights adapters are checked against, when this host can see them."""
    path = settings.resolved_base_model_path
    return path if (path / "config.json").is_file() else None


def build_retriever(settings: Settings, db: Database) -> Retriever:
    """The retrieval service on the shared store, with index files under the data dir."""
    config = RetrievalConfig(
        chunking=ChunkingConfig(settings.chunk_tokens, settings.chunk_overlap_tokens),
        index=IndexConfig(
            settings.exact_index_max_vectors, settings.ivf_nprobe, threads=settings.faiss_threads
        ),
        max_document_bytes=settings.max_document_bytes,
    )
    return Retriever(db.sessions, embedder(settings), settings.data_dir / "indexes", config)


def embedder(settings: Settings) -> Embedder:
    """The sentence embedder (loaded on first use) for retrieval, curation and drift."""
    return Embedder(
        settings.embedding_model_path,
        batch_size=settings.embedding_batch_size,
        threads=settings.embedding_threads,
    )


def engine_config(settings: Settings) -> EngineClientConfig:
    return EngineClientConfig(
        urls=tuple(settings.resolved_engine_urls),
        api_key=settings.engine_api_key,
        connect_timeout_s=settings.engine_connect_timeout_s,
        request_timeout_s=settings.engine_request_timeout_s,
        health_interval_s=settings.engine_health_interval_s,
        max_connections=settings.engine_max_connections,
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
        registry,
        db.sessions,
        lambda version, since, until: version_stats(
            db, version or settings.base_model_name, since, until, settings.max_ratings_per_key
        ),
        rollout_policy(settings),
        leader.is_leader,
    )


def experiment_controller(
    settings: Settings, db: Database, registry: Registry, leader: LeaderLock | None = None
) -> ExperimentController:
    policy = ExperimentPolicy(
        settings.experiment_alpha, settings.experiment_tau, settings.experiment_min_samples,
        settings.experiment_max_samples, settings.experiment_max_duration_s,
    )  # fmt: skip
    leader = leader or LeaderLock(db)
    return ExperimentController(
        registry, db.sessions,
        lambda experiment_id: experiment_outcomes(db, experiment_id, settings.max_ratings_per_key),
        policy, leader.is_leader,
    )  # fmt: skip


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
        served_model_name=settings.base_model_name,
        host=settings.engine_host,
        port=settings.engine_port,
        max_model_len=settings.max_model_len,
        kv_cache_gib=settings.kv_cache_gib,
        max_loras=settings.max_loras,
        max_cpu_loras=settings.max_cpu_loras,
        max_lora_rank=settings.max_lora_rank,
        log_file=settings.data_dir / "logs" / "vllm.log",
        start_timeout_s=settings.engine_start_timeout_s,
        restart_backoff_s=settings.engine_restart_backoff_s,
        restart_backoff_max_s=settings.engine_restart_backoff_max_s,
        extra_args=tuple(settings.engine_extra_args),
        tool_call_parser=settings.engine_tool_call_parser,
        chat_template=served_chat_template(model_path, settings.engine_chat_template),
    )


def flagger(
    settings: Settings, db: Database, on_flag: Callable[[str], None] | None = None
) -> Flagger:
    """The flagging rules of every alias, writing to the review queue in ``db``."""
    return Flagger(db, settings.flag_rules, settings.flag_rules_by_alias,
                   settings.review_trust_corrections, on_flag)  # fmt: skip


def quota_gate(settings: Settings, db: Database, metrics: GatewayMetrics) -> QuotaGate:
    counters: Counters
    if settings.quota_backend == "redis":
        counters = RedisCounters(settings.redis_url)
    else:
        counters = MemoryCounters()
    usage = MonthlyUsage(db, settings.quota_usage_refresh_s)
    return QuotaGate(counters, usage, default_quota(settings), metrics)


def default_quota(settings: Settings) -> Quota:
    """The limits of keys that set none of their own."""
    return Quota(
        requests_per_minute=settings.quota_default_requests_per_minute,
        tokens_per_minute=settings.quota_default_tokens_per_minute,
        concurrent_streams=settings.quota_default_concurrent_streams,
        monthly_tokens=settings.quota_default_monthly_tokens,
        feedback_per_minute=settings.quota_default_feedback_per_minute,
        searches_per_minute=settings.quota_default_searches_per_minute,
    )


def quality_monitor(settings: Settings, db: Database, embed_with: Embedder) -> QualityMonitor:
    config = MonitorConfig(
        window=settings.monitor_window,
        min_queries=settings.monitor_min_queries,
        permutations=settings.monitor_permutations,
        drift_p_value=settings.monitor_drift_p_value,
        drift_min_distance=settings.monitor_drift_min_distance,
        kpi_window_s=settings.monitor_kpi_window_s,
        kpi_sample=settings.monitor_kpi_sample,
        min_feedback=settings.monitor_min_feedback,
        min_positive_ratio=settings.monitor_min_positive_ratio,
        max_idk_rate=settings.monitor_max_idk_rate,
        retention_days=settings.monitor_retention_days,
    )
    return QualityMonitor(db, embed_with.embed, config, settings.base_model_name)
