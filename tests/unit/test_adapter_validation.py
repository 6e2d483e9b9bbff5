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


# -- issue 19: malformed adapters are the caller's error (400), never a 500 -----------------
def _raw_weights(adapter: Path, header: object) -> None:
    import struct

    raw = json.dumps(header).encode()
    (adapter / "adapter_model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw)


@pytest.mark.parametrize("rank", ["4x", [4], {"r": 4}, 4.5, True, None])
def test_a_bad_rank_is_refused_as_invalid(tmp_path: Path, base_dir: Path, rank: object) -> None:
    from gateway.http_errors import describe

    adapter = _adapter(tmp_path, config={"peft_type": "LORA", "r": rank})
    with pytest.raises(InvalidAdapter, match="r must be an integer") as refused:
        _validate(adapter, base_dir)
    assert describe(refused.value).status_code == 400


@pytest.mark.parametrize(
    "header",
    [
        {"a.lora_A.weight": 5},
        {"a.lora_A.weight": {"dtype": "F32", "shape": "4,64"}},
        {"a.lora_A.weight": {"dtype": "F32", "shape": ["4", 64]}},
        {"a.lora_A.weight": {"dtype": "F32"}},
        {"a.lora_A.weight": {"dtype": "F32", "shape": [-1, 64]}},
        [[[[[[[[1]]]]]]]],
        "[" * 100_000,
    ],
)
def test_a_malformed_safetensors_header_is_refused(
    tmp_path: Path, base_dir: Path, header: object
) -> None:
    adapter = _adapter(tmp_path)
    if isinstance(header, str):  # raw text: nested deeper than the JSON parser recurses
        raw = header.encode()
        import struct

        (adapter / "adapter_model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw)
    else:
        _raw_weights(adapter, header)
    with pytest.raises(InvalidAdapter):
        _validate(adapter, base_dir)


def test_one_dimensional_lora_shapes_are_refused(tmp_path: Path, base_dir: Path) -> None:
    adapter = _adapter(tmp_path)
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    _raw_weights(adapter, {f"{prefix}.lora_A.weight": {"dtype": "F32", "shape": []},
                           f"{prefix}.lora_B.weight": {"dtype": "F32", "shape": [64]}})  # fmt: skip
    with pytest.raises(InvalidAdapter, match="two-dimensional"):
        _validate(adapter, base_dir)


def test_a_crowded_folder_is_refused_without_being_listed(tmp_path: Path) -> None:
    crowded = tmp_path / "home"
    (crowded / "deep" / "deeper").mkdir(parents=True)
    for n in range(50):
        (crowded / f"secret{n}.txt").write_text("x")
    with pytest.raises(InvalidAdapter) as refused:
        _validate(crowded, None)
    assert "secret" not in str(refused.value) and "more than" in str(refused.value)


def test_publish_is_restricted_to_its_roots(tmp_path: Path) -> None:
    from adapters.validation import check_publish_source

    root = tmp_path / "incoming"
    (root / "a").mkdir(parents=True)
    assert check_publish_source(root / "a", [root]) == (root / "a").resolve()
    for outside in (tmp_path, root / ".." / "elsewhere", Path("/root"), Path("/")):
        with pytest.raises(InvalidAdapter, match="adapter_publish_roots"):
            check_publish_source(outside, [root])
    (root / "link").symlink_to(tmp_path)  # a symlink inside that points out
    with pytest.raises(InvalidAdapter, match="adapter_publish_roots"):
        check_publish_source(root / "link", [root])


@pytest.mark.parametrize("path", ["/tmp/a\x00b", "/tmp/\udb99\udcf9"], ids=["nul", "surrogate"])
def test_an_unusable_publish_path_is_refused_not_a_crash(path: str, tmp_path: Path) -> None:
    """Seen by schemathesis: a path with a NUL byte or a lone surrogate was a 500."""
    from adapters.validation import check_publish_source

    with pytest.raises(InvalidAdapter, match="not a usable path"):
        check_publish_source(Path(path), [tmp_path])
    with pytest.raises(InvalidAdapter, match="is not a directory"):
        validate_adapter(Path(path), base_model_dir=None, max_rank=64, max_bytes=10**9)
