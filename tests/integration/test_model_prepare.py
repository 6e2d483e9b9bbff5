"""`loragate model prepare`: the bundled GGUF becomes a servable bf16 safetensors directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from adapters.base_model import MARKER_FILE, prepare_base_model


def test_prepared_directory_is_plain_bf16_safetensors_with_chat_template(
    prepared_model: Path,
) -> None:
    config = json.loads((prepared_model / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["dtype"] == "bfloat16"
    assert "quantization_config" not in config  # vLLM must not try to read GGUF
    assert (prepared_model / "model.safetensors").stat().st_size > 100_000_000
    tokenizer_files = {path.name for path in prepared_model.iterdir()}
    assert "tokenizer.json" in tokenizer_files
    template = (prepared_model / "chat_template.jinja").read_text()
    assert "im_start" in template
    marker = json.loads((prepared_model / MARKER_FILE).read_text())
    assert "paris" in marker["smoke_reply"].lower()


def test_second_prepare_is_a_no_op(prepared_model: Path) -> None:
    weights = prepared_model / "model.safetensors"
    before = weights.stat().st_mtime_ns
    env = {
        **os.environ,
        "LORAGATE_DATA_DIR": str(prepared_model.parent.parent),
        "LORAGATE_LOG_FORMAT": "text",
    }
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "model", "prepare"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "already prepared" in result.stderr
    assert weights.stat().st_mtime_ns == before


def test_prepare_ties_the_output_head_even_when_transformers_tying_is_broken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The state CI met: an earlier pair of concurrent loads left ``tie_weights`` a no-op for
    the whole process (core/hf_loading.py). Prepare still writes a model that answers, and
    its smoke test would refuse one that babbles."""
    import transformers

    monkeypatch.setattr(transformers.PreTrainedModel, "tie_weights", lambda *a, **k: None)
    info = prepare_base_model(tmp_path / "model")
    assert "paris" in info["smoke_reply"].lower()


def test_concurrent_loads_leave_weight_tying_intact(monkeypatch: pytest.MonkeyPatch) -> None:
    """Four embedders loading at once in threads: without the process-wide load lock their
    swaps of ``PreTrainedModel.tie_weights`` interleave and one leaves the no-op behind."""
    import transformers

    from retrieval.embeddings import Embedder

    original = transformers.PreTrainedModel.tie_weights
    # Restored after the test even when it fails, so a failure here breaks no other test.
    monkeypatch.setattr(transformers.PreTrainedModel, "tie_weights", original)
    embedders = [Embedder() for _ in range(4)]
    threads = [threading.Thread(target=lambda e=e: e.model) for e in embedders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(embedder._model is not None for embedder in embedders)
    assert transformers.PreTrainedModel.tie_weights is original
