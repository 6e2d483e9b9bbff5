"""``POST /v1/embeddings``, served by the gateway's own sentence embedder (the one retrieval
uses: all-MiniLM-L6-v2 unless ``embedding_model_path`` names another), not by vLLM.

Same keys, quotas and request metrics as chat; nothing is logged to the conversation store.
An input longer than the model reads is refused (OpenAI does the same), not cut silently.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
import msgspec
import numpy as np
from msgspec import UNSET, Meta, UnsetType

from core.store.keys import Principal
from gateway.errors import ContextLengthExceeded, InvalidRequest, ModelNotFound
from gateway.http_errors import describe
from gateway.metrics import GatewayMetrics, status_class
from gateway.quota_gate import Admission, QuotaGate, estimate_tokens
from gateway.schemas import MAX_CONTENT_CHARS
from retrieval.embeddings import Embedder, bundled_model_dir

BUNDLED_MODEL_NAME = "all-MiniLM-L6-v2"
MAX_INPUTS = 2048  # OpenAI's limit of inputs per request


class EmbeddingRequest(msgspec.Struct, omit_defaults=True):
    model: Annotated[str, Meta(min_length=1, max_length=256)]
    # A string or a list of strings; token arrays are refused (they would be some other
    # tokenizer's ids: LangChain's OpenAIEmbeddings sends tiktoken's unless told not to).
    input: (
        Annotated[str, Meta(max_length=MAX_CONTENT_CHARS)]
        | Annotated[list[Any], Meta(min_length=1, max_length=MAX_INPUTS)]
    )
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Meta(ge=1)] | UnsetType = UNSET
    user: str | UnsetType = UNSET


def embedding_model_name(model_path: Path | None) -> str:
    """The name clients ask for: the bundled model's, or the configured directory's."""
    return model_path.name if model_path is not None else BUNDLED_MODEL_NAME


class EmbeddingService:
    def __init__(
        self,
        embedder: Embedder,
        model_name: str,
        metrics: GatewayMetrics,
        quotas: QuotaGate | None = None,
    ) -> None:
        self.embedder = embedder
        self.model_name = model_name
        self.metrics = metrics
        self.quotas = quotas
        # One batch at a time: the embedder does one anyway, and its tokenizer is not safe
        # to call from two threads at once.
        self._limiter = anyio.CapacityLimiter(1)

    async def card(self) -> dict[str, Any]:
        """Its /v1/models entry (loads the model on first use, as retrieval's warm-up does)."""
        max_tokens = await anyio.to_thread.run_sync(lambda: self.embedder.max_tokens)
        root = self.embedder.model_dir or bundled_model_dir()
        return {"id": self.model_name, "object": "model", "created": int(time.time()),
                "owned_by": "loragate", "parent": None, "root": str(root),
                "max_model_len": max_tokens}  # fmt: skip

    async def create(self, request: EmbeddingRequest, principal: Principal) -> dict[str, Any]:
        started = time.perf_counter()
        admission: Admission | None = None
        tokens, status = 0, 500
        try:
            texts = self._check(request)
            if self.quotas is not None:
                admission = await self.quotas.admit(principal, False, estimate_tokens(texts))
            vectors, tokens = await anyio.to_thread.run_sync(
                self._embed, texts, limiter=self._limiter
            )
            status = 200
        except Exception as exc:
            status = describe(exc).status_code
            raise
        finally:
            if self.quotas is not None:
                await self.quotas.settle(admission, tokens)
            self._measure(started, status, tokens)
        fmt = request.encoding_format
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": index, "embedding": _encode(vector, fmt)}
                for index, vector in enumerate(vectors)
            ],
            "model": self.model_name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    def _check(self, request: EmbeddingRequest) -> list[str]:
        if request.model != self.model_name:
            raise ModelNotFound(
                f"The model '{request.model}' does not exist or does not embed; "
                f"embeddings come from '{self.model_name}'.",
                param="model",
            )
        texts = [request.input] if isinstance(request.input, str) else request.input
        if not all(isinstance(text, str) for text in texts):
            raise InvalidRequest(
                "input: only strings can be embedded, not token ids (with LangChain's "
                "OpenAIEmbeddings set check_embedding_ctx_length=False).",
                param="input",
            )
        if any(not text for text in texts):
            raise InvalidRequest("input: an empty string cannot be embedded.", param="input")
        if isinstance(request.dimensions, int):
            dimension = self.embedder.dimension
            if request.dimensions != dimension:
                raise InvalidRequest(
                    f"dimensions: '{self.model_name}' embeds in {dimension} dimensions only.",
                    param="dimensions",
                )
        return texts

    def _embed(self, texts: list[str]) -> tuple[np.ndarray, int]:
        """Vectors and the tokens read (with the model's own special tokens), in a thread."""
        limit = self.embedder.max_tokens
        encoded = self.embedder.model.tokenizer(texts, truncation=False, verbose=False)
        counts = [len(ids) for ids in encoded["input_ids"]]
        for index, count in enumerate(counts):
            if count > limit:
                raise ContextLengthExceeded(
                    f"input[{index}] is {count} tokens; '{self.model_name}' reads at most {limit}.",
                    param="input",
                )
        return self.embedder.embed(texts), sum(counts)

    def _measure(self, started: float, status: int, tokens: int) -> None:
        name, metrics = self.model_name, self.metrics
        metrics.requests.labels(name, name, status_class(status)).inc()
        metrics.latency.labels(name, name).observe(time.perf_counter() - started)
        metrics.tokens.labels(name, name, "prompt").inc(tokens)


def _encode(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":  # what the openai SDK asks for by default
        return base64.b64encode(vector.astype("<f4").tobytes()).decode()
    result: list[float] = vector.tolist()
    return result
