"""A default is written once. The settings sections (core/sections.py) are the component
configs, so their defaults are the settings' by construction; the component configs that
``gateway.wiring`` still builds field by field from top-level settings keep defaults of their
own (tests and benchmarks build them directly), and each of those must equal the setting's
default, or the two drift apart (they did: a holdout fraction of 0.25 in the settings and 0.2
in the curation limits)."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic.fields import FieldInfo

from adapters.reconciler import Reconciler
from core.sections import RecipeConfig
from core.settings import FLAT_NAMES, SECTIONS, Settings
from gateway import wiring
from gateway.quota_gate import MonthlyUsage

# Each builder of a config object, called on the default settings.
CONFIG_BUILDERS: list[Callable[[Settings], Any]] = [
    wiring.train_config,
    wiring.curation_limits,
    wiring.engine_config,
    wiring.chat_limits,
    lambda settings: wiring.retrieval_config(settings).chunking,
    lambda settings: wiring.retrieval_config(settings).index,
    wiring.retrieval_config,
]


def _dataclass_defaults(cls: type) -> dict[str, Any]:
    defaults = {}
    for field in dataclasses.fields(cls):
        if isinstance(field.default, FieldInfo):  # a section: a pydantic dataclass
            defaults[field.name] = field.default.get_default(call_default_factory=True)
        elif field.default is not dataclasses.MISSING:
            defaults[field.name] = field.default
        elif field.default_factory is not dataclasses.MISSING:
            defaults[field.name] = field.default_factory()
    return defaults


# Not a default but what the base model directory says (the template vLLM serves it with):
# differs as soon as `loragate model prepare` has run.
FROM_THE_MODEL = frozenset({"chat_template"})


@pytest.mark.parametrize("build", CONFIG_BUILDERS)
def test_config_defaults_equal_the_settings_defaults(build: Callable[[Settings], Any]) -> None:
    built = build(Settings())
    defaults = _dataclass_defaults(type(built))
    assert defaults, f"{type(built).__name__} has no defaults to compare"
    drifted = {
        name: (default, getattr(built, name))
        for name, default in defaults.items()
        if getattr(built, name) != default and name not in FROM_THE_MODEL
    }
    assert drifted == {}, f"{type(built).__name__}: (own default, settings default) {drifted}"


def test_recipe_defaults_equal_the_settings_defaults() -> None:
    assert wiring.recipe_config(Settings(train_recipe=False)) is None
    assert wiring.recipe_config(Settings()) == RecipeConfig(enabled=True)


def test_engine_launch_defaults_equal_the_settings_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(wiring, "check_model_dir", lambda path: None)
    launch = wiring.engine_launch(Settings())
    for name in ("start_timeout_s", "restart_backoff_s", "restart_backoff_max_s", "extra_args"):
        assert getattr(launch, name) == _dataclass_defaults(type(launch))[name], name


@pytest.mark.parametrize(
    ("component", "parameter", "setting"),
    [
        (Reconciler, "interval_s", "reconcile_interval_s"),
        (Reconciler, "drain_s", "adapter_drain_s"),
        (MonthlyUsage, "refresh_s", "quota_usage_refresh_s"),
    ],
)
def test_constructor_defaults_equal_the_settings_defaults(
    component: type, parameter: str, setting: str
) -> None:
    default = inspect.signature(component).parameters[parameter].default
    if setting in FLAT_NAMES:
        section, field = FLAT_NAMES[setting]
        assert default == getattr(getattr(Settings(), section), field)
    else:
        assert default == Settings.model_fields[setting].default


@pytest.mark.parametrize("name", sorted(SECTIONS))
def test_a_section_is_the_component_config(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The settings hold the section itself, with the section's own defaults (without the
    environment tests/conftest.py sets for the adapter publish roots and the embedder's copy)."""
    monkeypatch.delenv("LORAGATE_ADAPTER_PUBLISH_ROOTS", raising=False)
    monkeypatch.delenv("LORAGATE_EMBEDDING_CACHE_DIR", raising=False)
    section = getattr(Settings(), name)
    assert type(section) is SECTIONS[name]
    assert section == SECTIONS[name]()


def test_the_components_get_the_sections() -> None:
    settings = Settings(rollout_min_samples=7, monitor_window=50, reeval_min_holdout=9)
    assert settings.rollout.min_samples == 7
    assert wiring.curation_limits(settings).max_example_tokens == settings.train.max_tokens
    config = wiring.job_config(settings)
    assert config.gate is settings.evaluation
    assert config.generation_concurrency == settings.trainer.generation_concurrency


def test_the_trainer_job_is_built_from_the_settings(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, train_epochs=1.5, train_holdout_fraction=0.3)
    config = wiring.job_config(settings)
    assert config.train.epochs == 1.5
    assert config.limits.holdout_fraction == 0.3
    assert config.data_dir == tmp_path.resolve()


@pytest.mark.parametrize(
    ("overrides", "sources"),
    [
        ({}, 1),  # SmolLM2-135M-Instruct reads one source better than several
        ({"retrieval_top_k": 3}, 3),  # the operator's number wins
        ({"base_model_name": "gemma-3-270m"}, 4),  # a bundled base not measured for it
        ({"base_model_name": "my-org/llama-8b"}, 4),  # any other base
    ],
)
def test_sources_per_answer_follow_the_base_model(overrides: dict[str, Any], sources: int) -> None:
    """The gateway grounds answers, and the trainer its examples, in one number of sources."""
    settings = Settings(**overrides)
    assert wiring.sources_per_answer(settings) == sources
    assert wiring.regrounder(settings, retriever=None).top_k == sources  # type: ignore[arg-type]
