"""Request bodies of the public API, validated by Litestar through msgspec.

Unknown fields are accepted and ignored, as OpenAI does. The sampling parameters listed here
are passed through to vLLM when the client sets them; gateway-only fields
(``conversation_id``) are not.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

Role = Literal["system", "developer", "user", "assistant", "tool"]

# Gateway-only fields of the chat request; everything else set by the client goes upstream.
GATEWAY_FIELDS = frozenset({"conversation_id", "stream_options", "retrieval"})


# OpenAI's own limits: 10 MiB of text per message, four stop sequences.
MAX_CONTENT_CHARS = 10 * 1024 * 1024
MAX_STOP_SEQUENCES = 4
MAX_STOP_CHARS = 256

Content = Annotated[str, Meta(max_length=MAX_CONTENT_CHARS)]
StopSequence = Annotated[str, Meta(max_length=MAX_STOP_CHARS)]


class ChatMessage(msgspec.Struct, omit_defaults=True):
    role: Role
    content: Content | list[dict[str, Any]] | None = None
    name: str | UnsetType = UNSET
    tool_calls: list[dict[str, Any]] | UnsetType = UNSET
    tool_call_id: str | UnsetType = UNSET


class RetrievalOptions(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=True):
    """Per-request retrieval; unset fields fall back to the model's default."""

    collection: Annotated[str, Meta(min_length=1, max_length=64)] | None = None
    top_k: Annotated[int, Meta(ge=1, le=100)] | None = None
    min_score: Annotated[float, Meta(ge=-1.0, le=1.0)] | None = None


class StreamOptions(msgspec.Struct, omit_defaults=True):
    include_usage: bool = False


Probability = Annotated[float, Meta(ge=0.0, le=1.0)]
Penalty = Annotated[float, Meta(ge=-2.0, le=2.0)]
PositiveInt = Annotated[int, Meta(ge=1)]


class ChatCompletionRequest(msgspec.Struct, omit_defaults=True):
    model: Annotated[str, Meta(min_length=1, max_length=256)]
    messages: Annotated[list[ChatMessage], Meta(min_length=1)]
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: Annotated[float, Meta(ge=0.0, le=2.0)] | UnsetType = UNSET
    top_p: Probability | UnsetType = UNSET
    max_tokens: PositiveInt | UnsetType | None = UNSET
    max_completion_tokens: PositiveInt | UnsetType | None = UNSET
    stop: (
        StopSequence
        | Annotated[list[StopSequence], Meta(max_length=MAX_STOP_SEQUENCES)]
        | UnsetType
        | None
    ) = UNSET
    seed: int | UnsetType | None = UNSET
    n: PositiveInt | UnsetType = UNSET
    presence_penalty: Penalty | UnsetType = UNSET
    frequency_penalty: Penalty | UnsetType = UNSET
    logit_bias: dict[str, float] | UnsetType | None = UNSET
    logprobs: bool | UnsetType = UNSET
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | UnsetType = UNSET
    user: str | UnsetType = UNSET
    response_format: dict[str, Any] | UnsetType = UNSET
    tools: list[dict[str, Any]] | UnsetType = UNSET
    tool_choice: str | dict[str, Any] | UnsetType = UNSET
    parallel_tool_calls: bool | UnsetType = UNSET
    # vLLM's own sampling extensions, sent by OpenAI clients through extra_body.
    top_k: int | UnsetType = UNSET
    min_p: Probability | UnsetType = UNSET
    repetition_penalty: Annotated[float, Meta(gt=0.0)] | UnsetType = UNSET
    min_tokens: Annotated[int, Meta(ge=0)] | UnsetType = UNSET
    ignore_eos: bool | UnsetType = UNSET
    # loragate extension: groups turns of one conversation (sticky routing, feedback).
    conversation_id: Annotated[str, Meta(max_length=200)] | None = None
    # loragate extension: ground on a collection ({collection, top_k, min_score}) or not (false).
    retrieval: RetrievalOptions | bool | None = None

    @property
    def output_limit(self) -> int | None:
        for value in (self.max_completion_tokens, self.max_tokens):
            if isinstance(value, int):
                return value
        return None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def upstream_payload(self, upstream_model: str) -> dict[str, Any]:
        """The body for vLLM: what the client set, minus gateway-only fields."""
        payload: dict[str, Any] = msgspec.to_builtins(self)
        for name in GATEWAY_FIELDS:
            payload.pop(name, None)
        payload["model"] = upstream_model
        if self.stream:
            # Usage is always asked for upstream so every row and metric has token counts;
            # the usage chunk is dropped again for clients that did not ask for it.
            payload["stream_options"] = {"include_usage": True}
        return payload
