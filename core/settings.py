"""The one typed settings object.

Values come, highest priority first, from keyword overrides, ``LORAGATE_*`` environment
variables, an optional TOML file (``--config`` or ``LORAGATE_CONFIG``), then the defaults.
Every setting is documented in docs/configuration.md, generated from this module and
core/sections.py by ``loragate config docs``; a test keeps the two in sync.

**Sections.** ``Settings`` is made of sections per topic, ``settings.train``,
``settings.rollout``, ``settings.monitor``..., plus a few top-level settings of the process
(``data_dir``, ``host``, ``port``, ``workers``, the metrics settings, ``max_ratings_per_key``).
A section is a frozen pydantic dataclass in core/sections.py: the component's own config
object where one component owns the topic (``RolloutController(policy=settings.rollout)``),
else the group of values the wiring hands to the components. So each default, bound and
description is written once, in the section, and the wiring passes sections on instead of
copying fields one by one. The sections live in ``core`` because ``core`` may not import
the packages above it; the components import them from there.

**Flat names, the one compatibility layer.** Operators, deploy/ manifests, docs and tests
name settings flat: ``LORAGATE_TRAIN_LEARNING_RATE``, ``train_rank = 8`` in the TOML file,
``load_settings(train_max_steps=8)``. Those names stay the public ones: each section field has
one flat name, ``ENV_PREFIX`` + field name (or its ``ENV_NAMES`` entry), and
``nest_flat_names`` turns ``{"train_rank": 8}`` into ``{"train": {"rank": 8}}`` in every source
before the sources are merged (and in ``model_validate``), so priorities hold per setting.
Nested input works too (``train={"rank": 8}``, a ``[train]`` TOML table). Reading is nested
only: code says ``settings.train.rank``; to change a copy, replace the section,
``settings.model_copy(update={"train": replace(settings.train, max_steps=8)})``.

A bad value raises ConfigError naming the setting both ways, e.g. ``train_rank (train.rank,
env LORAGATE_TRAIN_RANK): Input should be greater than or equal to 1``.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings.exceptions import SettingsError

from core.errors import ConfigError
from core.sections import (
    DEFAULT_BASE_MODEL_NAME,
    AdapterSettings,
    AuthSettings,
    ChunkingConfig,
    CurationLimits,
    EngineSettings,
    ExperimentPolicy,
    FlaggingSettings,
    GatePolicy,
    IndexConfig,
    LoggingSettings,
    ModelSettings,
    MonitorConfig,
    QuotaSettings,
    RecipeConfig,
    ReevalPolicy,
    RequestLimits,
    RetrievalSettings,
    RolloutPolicy,
    StoreSettings,
    TrainConfig,
    TrainerSchedule,
    UiSettings,
)


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
    keep_alive_s: float = Field(
        5.0,
        gt=0,
        description="Seconds the gateway keeps an idle client connection open. Behind a load "
        "balancer or proxy that pools connections, set it above the proxy's idle timeout, so "
        "that the proxy, not the gateway, closes an idle connection (otherwise a request sent "
        "as the gateway closes it fails; AWS ALB idles 60 s, nginx `keepalive_timeout` 75 s).",
    )
    graceful_shutdown_s: float = Field(
        30.0,
        ge=0,
        description="On SIGTERM, seconds open requests (streams included) get to finish "
        "before they are cut; new connections are refused at once.",
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

    # -- rollouts and experiments ------------------------------------------------------
    max_ratings_per_key: int | None = Field(
        50,
        ge=1,
        description="Ratings one API key adds to a version's rollout statistics per analysis "
        "window, and to an experiment arm's; its later ones are not counted, so one key "
        "cannot steer a rollout or an experiment. Unset: no cap.",
    )

    # -- the sections (core/sections.py) ------------------------------------------------
    train: TrainConfig = Field(default_factory=TrainConfig, description="A LoRA training run.")
    curation: CurationLimits = Field(
        default_factory=CurationLimits, description="Training examples and their split."
    )
    recipe: RecipeConfig = Field(
        default_factory=RecipeConfig, description="Expanding corrections before training."
    )
    trainer: TrainerSchedule = Field(
        default_factory=TrainerSchedule, description="The trainer worker's schedule."
    )
    evaluation: GatePolicy = Field(
        default_factory=GatePolicy, description="Scoring a candidate and its publishing gate."
    )
    reeval: ReevalPolicy = Field(
        default_factory=ReevalPolicy, description="Re-scoring what serves, on a schedule."
    )
    rollout: RolloutPolicy = Field(
        default_factory=RolloutPolicy, description="Canary rollouts and their gates."
    )
    experiments: ExperimentPolicy = Field(
        default_factory=ExperimentPolicy, description="A/B experiments between versions."
    )
    monitor: MonitorConfig = Field(
        default_factory=MonitorConfig, description="Drift and quality monitoring."
    )
    chunking: ChunkingConfig = Field(
        default_factory=ChunkingConfig, description="Cutting documents into chunks."
    )
    index: IndexConfig = Field(
        default_factory=IndexConfig, description="Each collection's vector index."
    )
    quotas: QuotaSettings = Field(
        default_factory=QuotaSettings, description="Rate limits and budgets of API keys."
    )
    logging: LoggingSettings = Field(default_factory=LoggingSettings, description="Log records.")
    flagging: FlaggingSettings = Field(
        default_factory=FlaggingSettings, description="What goes to the review queue."
    )
    auth: AuthSettings = Field(default_factory=AuthSettings, description="API keys.")
    ui: UiSettings = Field(default_factory=UiSettings, description="The pages the gateway serves.")
    adapters: AdapterSettings = Field(
        default_factory=AdapterSettings, description="Publishing and loading LoRA adapters."
    )
    retrieval: RetrievalSettings = Field(
        default_factory=RetrievalSettings, description="Embedding and grounding requests."
    )
    store: StoreSettings = Field(
        default_factory=StoreSettings, description="The shared store and the local journal."
    )
    requests: RequestLimits = Field(
        default_factory=RequestLimits, description="Limits of one request."
    )
    model: ModelSettings = Field(
        default_factory=ModelSettings, description="The base model vLLM serves, and its LoRA slots."
    )
    engine: EngineSettings = Field(
        default_factory=EngineSettings, description="The vLLM servers and how they are reached."
    )

    @model_validator(mode="after")
    def _check_engine_mode(self) -> Settings:
        if self.engine.mode == "external" and not self.engine.urls:
            raise ValueError("engine_urls: external engine mode needs at least one URL")
        if self.engine.mode == "embedded" and self.workers != 1:
            raise ValueError("workers: embedded engine mode runs one gateway worker")
        if self.train.rank > self.model.max_lora_rank:
            raise ValueError("train_rank: must be at most max_lora_rank, or vLLM cannot load it")
        if self.train.method == "full":
            raise ValueError(
                "train_method: `full` is for the benchmark; the gateway serves adapters"
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def _nest(cls, data: Any) -> Any:
        return nest_flat_names(data)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Each source's flat names are nested before the sources are merged, so a keyword
        # ``train_rank`` still wins over ``LORAGATE_TRAIN_RANK``, and that over the file.
        sources: list[PydanticBaseSettingsSource] = [
            _Nested(settings_cls, init_settings),
            FlatEnvSource(settings_cls),
        ]
        if settings_cls.model_config.get("toml_file"):
            sources.append(_FlatToml(settings_cls))
        return tuple(sources)

    # -- derived values ---------------------------------------------------------------
    @property
    def resolved_database_url(self) -> str:
        if self.store.database_url:
            return self.store.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'loragate.db').resolve()}"

    @property
    def resolved_journal_dir(self) -> Path:
        return self.store.journal_dir or self.data_dir / "journal"

    @property
    def resolved_adapter_publish_roots(self) -> list[Path]:
        return list(self.adapters.publish_roots) or [self.data_dir / "adapters"]

    @property
    def resolved_base_model_path(self) -> Path:
        if self.model.base_model_path is not None:
            return self.model.base_model_path
        return self.data_dir / "models" / DEFAULT_BASE_MODEL_NAME

    @property
    def resolved_engine_urls(self) -> list[str]:
        if self.engine.mode == "embedded":
            return [f"http://{self.engine.host}:{self.engine.port}"]
        return list(self.engine.urls)


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


# -- the flat names ----------------------------------------------------------------------
def _sections() -> dict[str, type]:
    """Settings field name -> section class, for the fields that hold a section."""
    return {
        name: field.annotation
        for name, field in Settings.model_fields.items()
        if isinstance(field.annotation, type) and hasattr(field.annotation, "ENV_PREFIX")
    }


def section_fields(section: type) -> dict[str, FieldInfo]:
    """A section's settings, by field name: every field but the ``INTERNAL`` ones."""
    fields: dict[str, FieldInfo] = section.__pydantic_fields__  # type: ignore[attr-defined]
    return {name: info for name, info in fields.items() if name not in section.INTERNAL}  # type: ignore[attr-defined]


def flat_name(section: type, field: str) -> str:
    """The flat name of a section's field: ``LORAGATE_`` + it is its environment variable."""
    names: dict[str, str] = section.ENV_NAMES  # type: ignore[attr-defined]
    return names.get(field) or section.ENV_PREFIX + field  # type: ignore[attr-defined]


SECTIONS = _sections()
# Flat name -> (section field, field in the section), and back.
FLAT_NAMES: dict[str, tuple[str, str]] = {
    flat_name(section, field): (name, field)
    for name, section in SECTIONS.items()
    for field in section_fields(section)
}
NESTED_NAMES = {place: flat for flat, place in FLAT_NAMES.items()}
assert not set(FLAT_NAMES) & set(Settings.model_fields), "a flat name is also a field"
assert len(FLAT_NAMES) == sum(len(section_fields(s)) for s in SECTIONS.values()), "a name twice"


def public_dump(settings: Settings) -> dict[str, Any]:
    """The settings as JSON-ready data, without the sections' ``INTERNAL`` fields (what the
    wiring fills in is not a setting): what ``loragate config show`` prints."""
    internal = {name: set(section.INTERNAL) for name, section in SECTIONS.items()}  # type: ignore[attr-defined]
    return settings.model_dump(mode="json", exclude=internal)


def env_names() -> list[str]:
    """Every setting's flat name, in the order of the docs: top-level fields, then the
    sections' fields."""
    top = [name for name in Settings.model_fields if name not in SECTIONS]
    return top + list(FLAT_NAMES)


def nest_flat_names(data: Any) -> Any:
    """``{"train_rank": 8}`` -> ``{"train": {"rank": 8}}``: the compatibility layer that keeps
    the flat names (environment, TOML, keywords) working on the nested settings. Nested input
    (``train={"rank": 8}`` or a ``[train]`` TOML table) passes through; a flat name wins over
    the same setting given nested in the same source."""
    if not isinstance(data, dict) or not any(key in FLAT_NAMES for key in data):
        return data
    nested: dict[str, Any] = {}
    for key, value in data.items():
        if key in FLAT_NAMES:
            continue
        if key in SECTIONS and dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        nested[key] = dict(value) if key in SECTIONS and isinstance(value, dict) else value
    for key, value in data.items():
        if key in FLAT_NAMES:
            section, field = FLAT_NAMES[key]
            part = nested.setdefault(section, {})
            if isinstance(part, dict):
                part[field] = value
            else:  # the section given as something else: left for validation to refuse
                nested[key] = value
    return nested


class _Nested(PydanticBaseSettingsSource):
    """Another source's values, with the flat names nested (see ``nest_flat_names``)."""

    def __init__(self, settings_cls: type[BaseSettings], inner: PydanticBaseSettingsSource):
        super().__init__(settings_cls)
        self.inner = inner

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(nest_flat_names(self.inner()))


class _FlatToml(TomlConfigSettingsSource):
    """The TOML file, flat names nested (a ``[train]`` table works too)."""

    def __call__(self) -> dict[str, Any]:
        return dict(nest_flat_names(super().__call__()))


class FlatEnvSource(PydanticBaseSettingsSource):
    """``LORAGATE_<FLAT NAME>`` (any case) for every setting, nested; nothing else is read.
    Values stay strings: the fields' validators split lists and parse JSON."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        environ = {key.upper(): value for key, value in os.environ.items()}
        found = {
            name: environ[f"LORAGATE_{name.upper()}"]
            for name in env_names()
            if f"LORAGATE_{name.upper()}" in environ
        }
        return dict(nest_flat_names(found))


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        problems.append(
            _describe_error(tuple(error["loc"]), error["msg"].removeprefix("Value error, "))
        )
    return "invalid settings: " + "; ".join(problems)


def _describe_error(loc: tuple[Any, ...], message: str) -> str:
    """``train_rank (train.rank, env LORAGATE_TRAIN_RANK): ...``: the setting as the operator
    and as the code name it."""
    if not loc:
        field, _, rest = message.partition(": ")
        if field in FLAT_NAMES or field in Settings.model_fields:
            loc, message = (field,), rest
        else:
            return message
    head = str(loc[0])
    if head in SECTIONS and len(loc) == 1:
        field, _, rest = message.partition(": ")
        if field in section_fields(SECTIONS[head]):
            loc, message = (head, field), rest
    if head in SECTIONS and len(loc) >= 2 and (head, str(loc[1])) in NESTED_NAMES:
        flat = NESTED_NAMES[head, str(loc[1])]
        where = ".".join(str(part) for part in loc)
        return f"{flat} ({where}, env LORAGATE_{flat.upper()}): {message}"
    if head in FLAT_NAMES:
        section, field = FLAT_NAMES[head]
        return f"{head} ({section}.{field}, env LORAGATE_{head.upper()}): {message}"
    where = ".".join(str(part) for part in loc)
    if head in Settings.model_fields and head not in SECTIONS:
        return f"{where} (env LORAGATE_{head.upper()}): {message}"
    return f"{where}: {message}"
