"""The no-op twin the trainer's loop test measures against: every ``lora_B`` zero, the rest
of the adapter as it was (tests/integration/test_trainer_loop.py serves it through vLLM)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from adapters.validation import WEIGHTS_FILE
from trainer.demo.measure import noop_twin

PREFIX = "base_model.model.model.layers.0.self_attn"


def _adapter(directory: Path, dtype: type) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    tensors = {
        f"{PREFIX}.{module}.lora_{side}.weight": rng.standard_normal(shape).astype(dtype)
        for module in ("q_proj", "v_proj")
        for side, shape in (("A", (8, 64)), ("B", (64, 8)))
    }
    directory.mkdir()
    save_file(tensors, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
    (directory / "adapter_config.json").write_text(json.dumps({"r": 8, "lora_alpha": 16}))
    return tensors


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_the_twin_zeroes_lora_b_and_keeps_the_rest(tmp_path: Path, dtype: type) -> None:
    adapter, twin = tmp_path / "adapter", tmp_path / "twin"
    original = _adapter(adapter, dtype)
    assert noop_twin(adapter, twin) == twin
    loaded = load_file(str(twin / WEIGHTS_FILE))
    assert loaded.keys() == original.keys()
    for name, tensor in loaded.items():
        assert tensor.dtype == dtype and tensor.shape == original[name].shape
        if ".lora_B." in name:
            assert not tensor.any()
        else:
            assert np.array_equal(tensor, original[name])
    config = "adapter_config.json"
    assert (twin / config).read_text() == (adapter / config).read_text()
    # the adapter it was made from is untouched
    assert all(
        np.array_equal(t, original[n]) for n, t in load_file(str(adapter / WEIGHTS_FILE)).items()
    )
