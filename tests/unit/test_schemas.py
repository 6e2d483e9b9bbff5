"""What the gateway sends upstream for a chat request."""

from __future__ import annotations

import msgspec

from gateway.schemas import ChatCompletionRequest


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
