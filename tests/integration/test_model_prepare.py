"""`loragate model prepare`: the bundled GGUF becomes a servable bf16 safetensors directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from adapters.base_model import MARKER_FILE


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
    assert marker["smoke_reply"]


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
