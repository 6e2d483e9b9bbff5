"""What the gateway sends upstream for a chat request."""

from __future__ import annotations

import msgspec
import pytest

from gateway.schemas import ChatCompletionRequest, CompletionRequest


def _request(**fields: object) -> ChatCompletionRequest:
    body = {"model": "support", "messages": [{"role": "user", "content": "hi"}], **fields}
    return msgspec.convert(body, ChatCompletionRequest)


def test_only_fields_the_client_set_go_upstream() -> None:
    payload = _request(temperature=0.2, seed=3).upstream_payload("base")
    assert payload == {
        "model": "base",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.2,
        "seed": 3,
    }


def test_gateway_fields_stay_in_the_gateway() -> None:
    payload = _request(conversation_id="c1").upstream_payload("base")
    assert "conversation_id" not in payload


def test_streams_always_ask_vllm_for_usage() -> None:
    request = _request(stream=True)
    assert not request.include_usage
    assert request.upstream_payload("base")["stream_options"] == {"include_usage": True}


def test_output_limit_prefers_max_completion_tokens() -> None:
    assert _request(max_tokens=5, max_completion_tokens=7).output_limit == 7
    assert _request(max_tokens=5).output_limit == 5
    assert _request().output_limit is None


def test_fields_the_gateway_does_not_declare_go_upstream_as_sent() -> None:
    raw = (
        b'{"model": "support", "messages": [{"role": "user", "content": "hi", "x": 1}],'
        b' "continue_final_message": true, "stop_token_ids": [2], "conversation_id": "c1",'
        b' "retrieval": false, "structured_outputs": {"choice": ["yes", "no"]}}'
    )
    request = msgspec.json.decode(raw, type=ChatCompletionRequest)
    request.keep_body(raw)
    assert request.upstream_payload("base") == {
        "model": "base",
        "messages": [{"role": "user", "content": "hi", "x": 1}],
        "continue_final_message": True,
        "stop_token_ids": [2],
        "structured_outputs": {"choice": ["yes", "no"]},
    }


def test_stream_options_merge_with_the_usage_the_gateway_needs() -> None:
    raw = (
        b'{"model": "m", "prompt": "hi", "stream": true,'
        b' "stream_options": {"continuous_usage_stats": true}}'
    )
    request = msgspec.json.decode(raw, type=CompletionRequest)
    request.keep_body(raw)
    assert request.upstream_payload("base")["stream_options"] == {
        "continuous_usage_stats": True,
        "include_usage": True,
    }
    assert not request.include_usage and not request.continuous_usage


def test_stream_options_without_a_stream_are_refused_as_vllm_does() -> None:
    with pytest.raises(msgspec.ValidationError, match="stream=True"):
        _request(stream_options={"include_usage": True})
    assert _request(stream_options={}).stream_options is not None  # empty: vLLM takes it too


def test_completion_requests_share_the_limits() -> None:
    request = msgspec.convert(
        {"model": "m", "prompt": ["a", "b"], "max_tokens": 3}, CompletionRequest
    )
    assert request.output_limit == 3 and request.message_count == 0
    assert request.prompt_parts() == (["a", "b"],)
