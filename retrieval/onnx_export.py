"""An int8 ONNX copy of a sentence-transformers model, made once from its own weights.

The query path embeds one short text per grounded request; torch spends some 12 ms of one
core on that for MiniLM, ONNX Runtime with int8 weights about 2-4 ms. Nothing is
downloaded: the model's transformer is exported from the local directory with
``torch.onnx.export``, then weight matrices are quantized dynamically (int8, one scale per
output channel): every attention matrix (query, key, value, output), and the feed-forward
matrices of the last third of the layers. The other feed-forward matrices stay float: their
inputs (LayerNorm and GELU outputs) have outlier channels that one activation scale per
tensor flattens, and an error made early is carried through every later layer. Measured
on 960 generated texts of 2-300 words against the torch vectors, each text encoded alone
(retrieval/onnx_encoder.py), and p50 of 300 short questions on one AMD EPYC thread:

================================  ==========  ===========  ======
quantized                         min cosine  mean cosine  p50 ms
================================  ==========  ===========  ======
attention only                    0.9947      0.9989       4.16
+ feed-forward of layers 4-5      0.9913      0.9982       3.10
+ feed-forward of layers 3-5      0.9886      0.9975       2.61
+ feed-forward of every layer     0.9823      0.9922       3.21*
================================  ==========  ===========  ======

(* another run: the timings move by some 20% between runs on this VM.) The second row is
the recipe: the fastest that keeps every text's cosine at 0.99 or more
(tests/unit/test_fast_embedder.py). Smoothing the activations into the weights first
(SmoothQuant) lowered the every-layer cosine further (0.972-0.981), so it is not used.

The copy is named by a fingerprint of the source weights and of this recipe, so a changed
model or recipe makes a new file instead of reusing a stale one, and it is written to a
temp file and renamed, so two processes starting together never read half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from pathlib import Path
from typing import Any

from core.hf_loading import model_load_lock
from retrieval.errors import MissingDependency, RetrievalError

# Bump when the export or quantization changes: old files are then not reused.
RECIPE = "int8-perchannel-attention-and-last-third-feed-forward-v2"
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class UnsupportedModel(RetrievalError):
    """The model's pipeline is not transformer, mean pooling, normalise."""


def check_mean_pooled(model_dir: Path) -> None:
    """The fast path reproduces exactly one pipeline; anything else stays on torch."""
    modules = json.loads((model_dir / "modules.json").read_text())
    kinds = [module["type"].rsplit(".", 1)[-1] for module in modules]
    if kinds[:2] != ["Transformer", "Pooling"] or set(kinds[2:]) - {"Normalize"}:
        raise UnsupportedModel(f"{model_dir}: modules {kinds} are not Transformer+Pooling")
    pooling_dir = model_dir / modules[1]["path"]
    pooling = json.loads((pooling_dir / "config.json").read_text())
    modes = {key for key, value in pooling.items() if key.startswith("pooling_mode") and value}
    if modes != {"pooling_mode_mean_tokens"}:
        raise UnsupportedModel(f"{model_dir}: pooling {sorted(modes)} is not mean")
    if not (model_dir / "tokenizer.json").is_file():
        raise UnsupportedModel(f"{model_dir}: no tokenizer.json (a fast tokenizer)")


def max_seq_length(model_dir: Path) -> int:
    """What sentence-transformers truncates to (tokenizer.json may say less: MiniLM's 128)."""
    config = model_dir / "sentence_bert_config.json"
    if config.is_file():
        return int(json.loads(config.read_text()).get("max_seq_length") or 512)
    return 512


def exported_path(model_dir: Path, cache_dir: Path) -> Path:
    """Where the int8 copy of ``model_dir`` lives (whether or not it exists yet)."""
    digest = hashlib.sha256(RECIPE.encode())
    for path in sorted(model_dir.iterdir()):
        if path.is_file():
            stat = path.stat()
            digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return cache_dir / f"{model_dir.name}-{digest.hexdigest()[:16]}.int8.onnx"


def ensure_exported(model_dir: Path, cache_dir: Path) -> Path:
    """The int8 copy, made now if missing (a few seconds; needs torch and onnx)."""
    check_mean_pooled(model_dir)
    target = exported_path(model_dir, cache_dir)
    if target.is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    stem = f".{target.name}.tmp-{uuid.uuid4().hex}"
    float_copy, int8_copy = cache_dir / f"{stem}.f32", cache_dir / f"{stem}.i8"
    try:
        _export_float(model_dir, float_copy)
        _quantize(float_copy, int8_copy)
        os.replace(int8_copy, target)
    finally:
        float_copy.unlink(missing_ok=True)
        int8_copy.unlink(missing_ok=True)
    return target


def _export_float(model_dir: Path, target: Path) -> None:
    try:
        import torch
        from transformers import AutoModel
    except ImportError as exc:
        raise MissingDependency(exc.name or "torch") from exc
    with model_load_lock:  # see core/hf_loading.py
        model = AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()
    sample = torch.ones(1, 8, dtype=torch.long)
    axes = {name: {0: "batch", 1: "tokens"} for name in (*_INPUTS, "last_hidden_state")}
    with torch.no_grad():
        torch.onnx.export(
            _hidden_states(model, torch),
            (sample, sample, torch.zeros_like(sample)),
            str(target),
            input_names=list(_INPUTS),
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,  # the TorchScript exporter: no onnxscript needed
        )


def _hidden_states(model: Any, torch: Any) -> Any:
    """The transformer called with keywords, returning only the token states (positional
    arguments land on the wrong parameters of newer transformers' BertModel.forward)."""

    class HiddenStates(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    return HiddenStates()


def _quantize(source: Path, target: Path) -> None:
    try:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise MissingDependency(exc.name or "onnxruntime") from exc
    graph = onnx.load(str(source), load_external_data=False).graph
    kept_float = _early_feed_forward([node.name for node in graph.node if node.op_type == "MatMul"])
    quantize_dynamic(
        str(source),
        str(target),
        op_types_to_quantize=["MatMul"],
        per_channel=True,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=kept_float,
        # Weights only: the attention products of two activations stay float.
        extra_options={"MatMulConstBOnly": True},
    )


_LAYER = re.compile(r"/layer\.(\d+)/")


def _early_feed_forward(matmuls: list[str]) -> list[str]:
    """The feed-forward matrices of all but the last third of the layers (exported node names
    look like ``/model/encoder/layer.3/intermediate/dense/MatMul``)."""
    layers = {int(match.group(1)) for name in matmuls if (match := _LAYER.search(name))}
    if not layers:
        raise UnsupportedModel("no encoder layers found in the exported graph")
    count = max(layers) + 1
    first_quantized = count - count // 3
    return [
        name
        for name in matmuls
        if "/attention/" not in name
        and ("/intermediate/" in name or "/output/dense/" in name)
        and (match := _LAYER.search(name))
        and int(match.group(1)) < first_quantized
    ]
