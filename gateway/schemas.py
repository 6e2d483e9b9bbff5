"""Request bodies of the public API, validated by Litestar through msgspec.

The fields declared here are the ones the gateway reads or checks itself (limits, routing,
OpenAI's ranges). Everything else a client sends is kept: the body goes to vLLM as the
client wrote it, minus the gateway-only fields, so every parameter the configured vLLM
version accepts works through the gateway (``continue_final_message``, ``stop_token_ids``,
``structured_outputs``, ...) and vLLM refuses the ones it does not know how to take, with
a 400 relayed in OpenAI's shape.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

Role = Literal["system", "developer", "user", "assistant", "tool"]

# Gateway-only fields of a generation request; everything else set by the client goes upstream.
GATEWAY_FIELDS = frozenset({"conversation_id", "retrieval"})
_decode_object = msgspec.json.Decoder(dict[str, Any]).decode


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
    include_usage: bool | UnsetType = UNSET
    # vLLM's: usage in every chunk, not only in the last one.
    continuous_usage_stats: bool | UnsetType = UNSET


Probability = Annotated[float, Meta(ge=0.0, le=1.0)]
Penalty = Annotated[float, Meta(ge=-2.0, le=2.0)]
PositiveInt = Annotated[int, Meta(ge=1)]


class GenerationRequest(msgspec.Struct, omit_defaults=True, kw_only=True, dict=True):
    """What chat and text completions share: routing, sampling, streaming, the gateway's
    extensions. ``keep_body`` keeps the client's JSON for ``upstream_payload``."""

    endpoint: ClassVar[str]  # vLLM's route for it
    id_prefix: ClassVar[str]  # of the gateway's completion ids

    model: Annotated[str, Meta(min_length=1, max_length=256)]
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: Annotated[float, Meta(ge=0.0, le=2.0)] | UnsetType = UNSET
    top_p: Probability | UnsetType = UNSET
    max_tokens: PositiveInt | UnsetType | None = UNSET
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
    user: str | UnsetType = UNSET
    # vLLM's own sampling extensions, sent by OpenAI clients through extra_body.
    top_k: int | UnsetType = UNSET
    min_p: Probability | UnsetType = UNSET
    repetition_penalty: Annotated[float, Meta(gt=0.0)] | UnsetType = UNSET
    min_tokens: Annotated[int, Meta(ge=0)] | UnsetType = UNSET
    ignore_eos: bool | UnsetType = UNSET
    # loragate extension: groups turns of one conversation (sticky routing, feedback).
    conversation_id: Annotated[str, Meta(max_length=200)] | None = None

    def __post_init__(self) -> None:
        options = self.stream_options
        if options is not None and not self.stream and msgspec.to_builtins(options):
            # vLLM's and OpenAI's rule; the message names the field as msgspec would.
            raise ValueError(
                "Stream options can only be defined when `stream=True` - at `$.stream_options`"
            )

    @property
    def output_limit(self) -> int | None:
        return self.max_tokens if isinstance(self.max_tokens, int) else None

    @property
    def output_limit_param(self) -> str:
        return "max_tokens"

    @property
    def message_count(self) -> int:
        return 0

    def prompt_parts(self) -> tuple[Any, ...]:
        """What the prompt is made of, for estimating its tokens before vLLM counts them."""
        return ()

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    @property
    def continuous_usage(self) -> bool:
        """The client asked for usage in every chunk (vLLM's ``continuous_usage_stats``)."""
        options = self.stream_options
        return bool(options and options.include_usage and options.continuous_usage_stats)

    def keep_body(self, raw: bytes) -> None:
        """Keep the JSON the request was decoded from: its undeclared fields go upstream."""
        self.__dict__["body"] = _decode_object(raw)

    def upstream_payload(self, upstream_model: str) -> dict[str, Any]:
        """The body for vLLM: what the client sent, minus gateway-only fields."""
        body: dict[str, Any] | None = self.__dict__.get("body")
        payload = dict(body) if body is not None else msgspec.to_builtins(self)
        for name in GATEWAY_FIELDS:
            payload.pop(name, None)
        payload["model"] = upstream_model
        if self.stream:
            # Usage is always asked for upstream so every row and metric has token counts;
            # the usage chunk is dropped again for clients that did not ask for it.
            options = payload.get("stream_options")
            payload["stream_options"] = {
                **(options if isinstance(options, dict) else {}),
                "include_usage": True,
            }
        return payload


class ChatCompletionRequest(GenerationRequest, kw_only=True):
    endpoint = "/v1/chat/completions"
    id_prefix = "chatcmpl-"

    messages: Annotated[list[ChatMessage], Meta(min_length=1)]
    max_completion_tokens: PositiveInt | UnsetType | None = UNSET
    logprobs: bool | UnsetType = UNSET
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | UnsetType = UNSET
    response_format: dict[str, Any] | UnsetType = UNSET
    tools: list[dict[str, Any]] | UnsetType = UNSET
    tool_choice: str | dict[str, Any] | UnsetType = UNSET
    parallel_tool_calls: bool | UnsetType = UNSET
    # loragate extension: ground on a collection ({collection, top_k, min_score}) or not (false).
    retrieval: RetrievalOptions | bool | None = None

    @property
    def output_limit(self) -> int | None:
        for value in (self.max_completion_tokens, self.max_tokens):
            if isinstance(value, int):
                return value
        return None

    @property
    def output_limit_param(self) -> str:
        return "max_completion_tokens" if self.max_completion_tokens else "max_tokens"

    @property
    def message_count(self) -> int:
        return len(self.messages)

    def prompt_parts(self) -> tuple[Any, ...]:
        return (self.messages, self.tools or None)


class CompletionRequest(GenerationRequest, kw_only=True):
    """``POST /v1/completions``: a text prompt (or token ids), no chat template."""

    endpoint = "/v1/completions"
    id_prefix = "cmpl-"

    # A string, a list of strings, a list of token ids or a list of such lists (vLLM checks).
    prompt: Content | Annotated[list[Any], Meta(min_length=1)]
    echo: bool | UnsetType = UNSET
    logprobs: Annotated[int, Meta(ge=0, le=20)] | UnsetType | None = UNSET
    suffix: str | UnsetType | None = UNSET

    def prompt_parts(self) -> tuple[Any, ...]:
        return (self.prompt,)
