"""Checks a PEFT LoRA directory before anything is stored.

Reads only JSON and safetensors headers (never unpickles, never loads tensors), so a
hostile upload costs nothing to refuse. Each refusal names the problem.
"""

from __future__ import annotations

import itertools
import json
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.errors import AdapterError

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
ALLOWED_FILES = frozenset({CONFIG_FILE, WEIGHTS_FILE, "README.md", "tokenizer_config.json"})
_HEADER_LIMIT = 64 * 1024 * 1024


class InvalidAdapter(AdapterError):
    """The adapter directory is refused; the message says why."""


@dataclass(frozen=True)
class AdapterInfo:
    rank: int
    target_modules: tuple[str, ...]
    base_model: str
    size_bytes: int


def validate_adapter(
    directory: Path, *, base_model_dir: Path | None, max_rank: int, max_bytes: int
) -> AdapterInfo:
    try:
        return _validate(directory, base_model_dir, max_rank, max_bytes)
    except (OSError, ValueError) as exc:  # too long, unreadable, a NUL: the caller's input
        reason = getattr(exc, "strerror", None) or exc
        raise InvalidAdapter(f"cannot read the adapter at {str(directory)[:200]!r}: "
                             f"{reason}") from exc  # fmt: skip


def _validate(
    directory: Path, base_model_dir: Path | None, max_rank: int, max_bytes: int
) -> AdapterInfo:
    files = _check_files(directory)
    size = sum(path.stat().st_size for path in files)
    if size > max_bytes:
        raise InvalidAdapter(f"adapter is {size} bytes; the limit is {max_bytes}")
    config = _read_config(directory / CONFIG_FILE)
    rank = config.get("r", 0)
    if not isinstance(rank, int) or isinstance(rank, bool):
        raise InvalidAdapter(f"{CONFIG_FILE}: r must be an integer, not {str(rank)[:40]!r}")
    if not 1 <= rank <= max_rank:
        raise InvalidAdapter(f"rank {rank} is outside 1..{max_rank} (the engine's max_lora_rank)")
    tensors = safetensors_header(directory / WEIGHTS_FILE)
    modules = _lora_modules(tensors)
    if not modules:
        raise InvalidAdapter(f"{WEIGHTS_FILE} holds no lora_A/lora_B weights")
    if base_model_dir is not None:
        _check_against_base(modules, tensors, base_model_dir)
    targets = tuple(sorted({name.rsplit(".", 1)[-1] for name in modules}))
    return AdapterInfo(rank, targets, str(config.get("base_model_name_or_path") or ""), size)


def check_publish_source(source: Path, roots: Sequence[Path]) -> Path:
    """``source`` resolved, if it lies under one of ``roots``; the admin API publishes from
    nowhere else, so a key cannot make the gateway read (or list) any path on the host."""
    try:
        resolved = source.resolve()
    except (OSError, ValueError) as exc:  # a NUL byte, a lone surrogate: no such file
        raise InvalidAdapter(f"{str(source)[:200]!r} is not a usable path ({exc})") from None
    for root in roots:
        if resolved.is_relative_to(root.resolve()):
            return resolved
    allowed = ", ".join(str(root) for root in roots) or "nowhere"
    raise InvalidAdapter(
        f"adapters are published only from under {allowed} (the adapter_publish_roots "
        f"setting); {str(source)[:200]} is not"
    )


def _check_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise InvalidAdapter(f"{str(directory)[:200]} is not a directory")
    root = directory.resolve()
    # Only the top level, and only a few entries of it: a folder with more than the allowed
    # files is refused without listing it (publishing "/" once walked the whole disk).
    with os.scandir(directory) as scan:
        entries = sorted(itertools.islice(scan, len(ALLOWED_FILES) + 1), key=lambda e: e.name)
    if len(entries) > len(ALLOWED_FILES):
        raise InvalidAdapter(
            f"the adapter directory holds more than {len(ALLOWED_FILES)} entries; only "
            f"{', '.join(sorted(ALLOWED_FILES))} are accepted"
        )
    files = []
    for entry in entries:
        path = Path(entry.path)
        if entry.is_symlink():
            raise InvalidAdapter(f"{path.name} is a symlink; adapters must be plain files")
        if not path.resolve().is_relative_to(root):
            raise InvalidAdapter(f"{path.name} escapes the adapter directory")
        if entry.is_dir(follow_symlinks=False):
            raise InvalidAdapter(f"unexpected folder {path.name} in the adapter")
        if path.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt"):
            raise InvalidAdapter(f"{path.name} is a pickle; only safetensors are accepted")
        if path.name not in ALLOWED_FILES:
            raise InvalidAdapter(f"unexpected file {path.name} in the adapter")
        files.append(path)
    for needed in (CONFIG_FILE, WEIGHTS_FILE):
        if not (directory / needed).is_file():
            raise InvalidAdapter(f"{needed} is missing")
    return files


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidAdapter(f"{CONFIG_FILE} is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(config, dict):
        raise InvalidAdapter(f"{CONFIG_FILE} must hold an object")
    if config.get("peft_type", "LORA") != "LORA":
        raise InvalidAdapter(f"peft_type {config.get('peft_type')!r} is not LORA")
    return config


def safetensors_header(path: Path) -> dict[str, Any]:
    """Tensor names to {dtype, shape} from a safetensors file's JSON header."""
    with path.open("rb") as handle:
        raw_length = handle.read(8)
        if len(raw_length) != 8:
            raise InvalidAdapter(f"{path.name} is not a safetensors file")
        length = struct.unpack("<Q", raw_length)[0]
        if length > _HEADER_LIMIT:
            raise InvalidAdapter(f"{path.name} has an implausible header")
        try:
            header = json.loads(handle.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            raise InvalidAdapter(f"{path.name} is not a safetensors file") from None
    if not isinstance(header, dict):
        raise InvalidAdapter(f"{path.name} is not a safetensors file")
    header.pop("__metadata__", None)
    for name, info in header.items():
        shape = info.get("shape") if isinstance(info, dict) else None
        if not isinstance(shape, list) or not all(_is_size(size) for size in shape):
            raise InvalidAdapter(f"{path.name}: tensor {name[:100]!r} has no valid shape")
    return header


def _is_size(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _lora_modules(tensors: dict[str, Any]) -> dict[str, dict[str, list[int]]]:
    """Module path (as in the base model) to the shapes of its lora_A and lora_B."""
    modules: dict[str, dict[str, list[int]]] = {}
    for name, info in tensors.items():
        for part in ("lora_A", "lora_B"):
            marker = f".{part}."
            if marker in name:
                module = name.split(marker, 1)[0].removeprefix("base_model.model.")
                modules.setdefault(module, {})[part] = list(info.get("shape", []))
    return modules


def _check_against_base(
    modules: dict[str, dict[str, list[int]]], tensors: dict[str, Any], base_model_dir: Path
) -> None:
    base = _base_shapes(base_model_dir)
    for module, shapes in modules.items():
        weight = base.get(f"{module}.weight")
        if weight is None:
            raise InvalidAdapter(f"target module {module} does not exist in the base model")
        out_features, in_features = weight[0], weight[-1]
        lora_a, lora_b = shapes.get("lora_A"), shapes.get("lora_B")
        if lora_a is None or lora_b is None:
            raise InvalidAdapter(f"{module} lacks lora_A or lora_B")
        if len(lora_a) != 2 or len(lora_b) != 2:
            raise InvalidAdapter(f"{module} shapes {lora_a}/{lora_b} are not two-dimensional")
        if lora_a[-1] != in_features or lora_b[0] != out_features:
            raise InvalidAdapter(
                f"{module} shapes {lora_a}/{lora_b} do not fit the base weight {weight}"
            )


def _base_shapes(base_model_dir: Path) -> dict[str, list[int]]:
    shapes: dict[str, list[int]] = {}
    for path in sorted(base_model_dir.glob("*.safetensors")):
        for name, info in safetensors_header(path).items():
            shapes[name] = list(info.get("shape", []))
    if not shapes:
        raise InvalidAdapter(f"no safetensors weights in the base model at {base_model_dir}")
    return shapes
