"""Every refusal of adapter validation, on hand-made safetensors files (no model needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from adapters.validation import InvalidAdapter, validate_adapter

HIDDEN, KV = 64, 16


@pytest.fixture
def base_dir(tmp_path: Path) -> Path:
    base = tmp_path / "base"
    base.mkdir()
    save_file(
        {
            "model.layers.0.self_attn.q_proj.weight": torch.zeros(HIDDEN, HIDDEN),
            "model.layers.0.self_attn.v_proj.weight": torch.zeros(KV, HIDDEN),
        },
        str(base / "model.safetensors"),
    )
    return base


def _adapter(tmp_path: Path, *, rank: int = 4, module: str = "q_proj", out: int = HIDDEN,
             config: dict[str, object] | None = None) -> Path:  # fmt: skip
    adapter = tmp_path / "adapter"
    adapter.mkdir(exist_ok=True)
    prefix = f"base_model.model.model.layers.0.self_attn.{module}"
    save_file(
        {f"{prefix}.lora_A.weight": torch.zeros(rank, HIDDEN),
         f"{prefix}.lora_B.weight": torch.zeros(out, rank)},
        str(adapter / "adapter_model.safetensors"),
    )  # fmt: skip
    settings = {"peft_type": "LORA", "r": rank, "target_modules": [module]}
    (adapter / "adapter_config.json").write_text(json.dumps(config or settings))
    return adapter


def _validate(adapter: Path, base: Path | None, max_rank: int = 16, max_bytes: int = 10**7) -> None:
    validate_adapter(adapter, base_model_dir=base, max_rank=max_rank, max_bytes=max_bytes)


def test_a_good_adapter_is_described(tmp_path: Path, base_dir: Path) -> None:
    info = validate_adapter(_adapter(tmp_path), base_model_dir=base_dir, max_rank=16,
                            max_bytes=10**7)  # fmt: skip
    assert (info.rank, info.target_modules) == (4, ("q_proj",))


def test_pickle_weights_are_refused(tmp_path: Path, base_dir: Path) -> None:
    adapter = _adapter(tmp_path)
    (adapter / "adapter_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(InvalidAdapter, match="pickle"):
        _validate(adapter, base_dir)


def test_symlinks_are_refused(tmp_path: Path, base_dir: Path) -> None:
    adapter = _adapter(tmp_path)
    (adapter / "README.md").symlink_to("/etc/passwd")
    with pytest.raises(InvalidAdapter, match="symlink"):
        _validate(adapter, base_dir)


def test_unexpected_files_and_folders_are_refused(tmp_path: Path, base_dir: Path) -> None:
    adapter = _adapter(tmp_path)
    (adapter / "sub").mkdir()
    with pytest.raises(InvalidAdapter, match="folder"):
        _validate(adapter, base_dir)
    (adapter / "sub").rmdir()
    (adapter / "run.sh").write_text("rm -rf /")
    with pytest.raises(InvalidAdapter, match="unexpected file"):
        _validate(adapter, base_dir)


def test_missing_files_are_named(tmp_path: Path, base_dir: Path) -> None:
    adapter = _adapter(tmp_path)
    (adapter / "adapter_config.json").unlink()
    with pytest.raises(InvalidAdapter, match=r"adapter_config\.json is missing"):
        _validate(adapter, base_dir)


def test_size_limit(tmp_path: Path, base_dir: Path) -> None:
    with pytest.raises(InvalidAdapter, match="limit"):
        _validate(_adapter(tmp_path), base_dir, max_bytes=100)


def test_rank_above_the_engine_limit(tmp_path: Path, base_dir: Path) -> None:
    with pytest.raises(InvalidAdapter, match="max_lora_rank"):
        _validate(_adapter(tmp_path, rank=8), base_dir, max_rank=4)


def test_target_module_missing_from_the_base(tmp_path: Path, base_dir: Path) -> None:
    with pytest.raises(InvalidAdapter, match="does not exist in the base"):
        _validate(_adapter(tmp_path, module="k_proj"), base_dir)


def test_shapes_that_do_not_fit_the_base(tmp_path: Path, base_dir: Path) -> None:
    with pytest.raises(InvalidAdapter, match="do not fit"):
        _validate(_adapter(tmp_path, module="v_proj", out=HIDDEN), base_dir)


def test_bad_config_and_non_lora(tmp_path: Path, base_dir: Path) -> None:
    adapter = _adapter(tmp_path, config={"peft_type": "PREFIX_TUNING", "r": 4})
    with pytest.raises(InvalidAdapter, match="not LORA"):
        _validate(adapter, base_dir)
    (adapter / "adapter_config.json").write_text("{not json")
    with pytest.raises(InvalidAdapter, match="not valid JSON"):
        _validate(adapter, base_dir)


def test_not_a_safetensors_file(tmp_path: Path, base_dir: Path) -> None:
    adapter = _adapter(tmp_path)
    (adapter / "adapter_model.safetensors").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00hello")
    with pytest.raises(InvalidAdapter, match="not a safetensors"):
        _validate(adapter, base_dir)
