"""Query vectors from the int8 ONNX copy of the embedding model (retrieval/onnx_export.py).

Reproduces sentence-transformers' Transformer → mean Pooling → Normalize with the fast
tokenizer and ONNX Runtime, without torch: the same token ids, the same truncation
(``max_seq_length``, not tokenizer.json's own), the mean over real tokens, unit length.
ONNX Runtime and the tokenizer release the GIL while they work, so the event loop keeps
running beside them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.errors import MissingDependency
from retrieval.onnx_export import max_seq_length


class OnnxEncoder:
    def __init__(self, onnx_path: Path, model_dir: Path, *, threads: int = 1) -> None:
        try:
            import onnxruntime
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise MissingDependency(exc.name or "onnxruntime") from exc
        options = onnxruntime.SessionOptions()
        # Its own small budget: one core for a query leaves the rest to vLLM and the loop.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        self._session = onnxruntime.InferenceSession(
            str(onnx_path), options, providers=["CPUExecutionProvider"]
        )
        self._inputs = {item.name for item in self._session.get_inputs()}
        self._tokenizer: Any = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tokenizer.enable_truncation(max_seq_length(model_dir))
        self._tokenizer.enable_padding()  # to the longest in the batch, not tokenizer.json's
        self.path = onnx_path

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dimension) float32, unit length."""
        encodings = self._tokenizer.encode_batch(list(texts))
        ids = np.array([encoding.ids for encoding in encodings], dtype=np.int64)
        mask = np.array([encoding.attention_mask for encoding in encodings], dtype=np.int64)
        feeds = {
            "input_ids": ids,
            "attention_mask": mask,
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        (states,) = self._session.run(
            ["last_hidden_state"], {k: v for k, v in feeds.items() if k in self._inputs}
        )
        weights = mask[..., None].astype(np.float32)
        pooled = (states * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return np.ascontiguousarray(pooled / norms, dtype=np.float32)
