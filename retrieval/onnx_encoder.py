"""Query vectors from the int8 ONNX copy of the embedding model (retrieval/onnx_export.py).

Reproduces sentence-transformers' Transformer → mean Pooling → Normalize with the fast
tokenizer and ONNX Runtime, without torch: the same token ids, the same truncation
(``max_seq_length``, not tokenizer.json's own), the mean over real tokens, unit length.
ONNX Runtime and the tokenizer release the GIL while they work, so the event loop keeps
running beside them.

Texts run one at a time, never as a padded batch, for two measured reasons: on one thread
padding costs more than a batch saves (16 generated questions of 2-20 words: 274 queries/s
one by one, 236 padded), and int8 activations take one scale per tensor, so in a padded
batch a long batch mate moves a short query's vector (with the feed-forward of layers 3-5
quantized, the worst cosine to torch was 0.985 batched, 0.992 alone). A query's vector is
then the same whoever it was batched with.
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
        self._tokenizer.no_padding()  # tokenizer.json may ask for it; one text needs none
        self.path = onnx_path

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dimension) float32, unit length."""
        if not texts:
            raise ValueError("nothing to encode")
        return np.vstack([self._encode_one(text) for text in texts])

    def _encode_one(self, text: str) -> np.ndarray:
        encoding = self._tokenizer.encode(text)
        mask = np.array([encoding.attention_mask], dtype=np.int64)
        feeds = {
            "input_ids": np.array([encoding.ids], dtype=np.int64),
            "attention_mask": mask,
            "token_type_ids": np.array([encoding.type_ids], dtype=np.int64),
        }
        (states,) = self._session.run(
            ["last_hidden_state"], {k: v for k, v in feeds.items() if k in self._inputs}
        )
        pooled = states[0].mean(axis=0)  # no padding: every token is real
        norm = max(float(np.linalg.norm(pooled)), 1e-12)
        return np.ascontiguousarray(pooled / norm, dtype=np.float32)[None, :]
