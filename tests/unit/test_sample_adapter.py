"""`loragate adapters sample`: a LoRA for the base model that publishing takes, made without
data, different per seed; it refuses to write over a folder that holds something."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from safetensors import safe_open

from adapters.validation import validate_adapter
from gateway.cli import main


def _sample(target: Path, model: Path, tmp_path: Path, *args: str) -> str:
    env = {"LORAGATE_DATA_DIR": str(tmp_path / "data"), "LORAGATE_BASE_MODEL_PATH": str(model)}
    result = CliRunner().invoke(main, ["adapters", "sample", str(target), *args], env=env)
    assert result.exit_code == 0 or "exists" in result.output, result.output
    return result.output


def _weights(directory: Path) -> dict[str, list[float]]:
    with safe_open(str(directory / "adapter_model.safetensors"), "pt") as tensors:
        return {name: tensors.get_tensor(name).flatten()[:8].tolist() for name in tensors.keys()}  # noqa: SIM118


def test_a_sample_adapter_is_publishable_and_seeded(prepared_model: Path, tmp_path: Path) -> None:
    first, again, other = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert "written to" in _sample(first, prepared_model, tmp_path, "--seed", "1", "--rank", "8")
    _sample(again, prepared_model, tmp_path, "--seed", "1", "--rank", "8")
    _sample(other, prepared_model, tmp_path, "--seed", "2", "--rank", "8")
    info = validate_adapter(first, base_model_dir=prepared_model, max_rank=64, max_bytes=10**9)
    assert info.rank == 8
    assert _weights(first) == _weights(again) != _weights(other)
    assert not (first / "README.md").exists()
    refused = _sample(first, prepared_model, tmp_path)
    assert "exists and is not empty" in refused
