"""Chat completions through the official openai SDK, against the real vLLM CPU server."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.integration.conftest import BASE_MODEL, EmbeddedServer, sdk_client
from tests.support import ThreadedGateway, wait_for_conversation

QUESTION = [{"role": "user", "content": "Name one colour of the rainbow."}]


def test_chat_is_answered_recorded_and_labelled(
    store_gateway: tuple[ThreadedGateway, dict[str, str]],
) -> None:
    gateway, keys = store_gateway
    client = sdk_client(gateway.base_url, keys["chat"])

    raw = client.chat.completions.with_raw_response.create(
        model=BASE_MODEL, messages=QUESTION, max_tokens=16, temperature=0,
        extra_body={"conversation_id": "conv-1"},
    )  # fmt: skip
    completion = raw.parse()

    assert raw.headers["x-loragate-version"] == BASE_MODEL
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == BASE_MODEL
    assert completion.choices[0].message.content
    assert completion.usage is not None and completion.usage.completion_tokens > 0

    row = wait_for_conversation(gateway.settings.resolved_database_url, completion.id)
    assert row.status == "ok"
    assert row.served_model == BASE_MODEL
    assert row.conversation_id == "conv-1"
    assert row.request["messages"] == QUESTION
    assert row.response[0]["content"] == completion.choices[0].message.content
    assert row.prompt_tokens == completion.usage.prompt_tokens
    assert row.completion_tokens == completion.usage.completion_tokens
    assert row.latency_ms > 0


def test_stream_ends_with_done_and_honours_include_usage(
    store_gateway: tuple[ThreadedGateway, dict[str, str]],
) -> None:
    gateway, keys = store_gateway
    client = sdk_client(gateway.base_url, keys["chat"])

    chunks = list(
        client.chat.completions.create(
            model=BASE_MODEL, messages=QUESTION, max_tokens=12, stream=True,
            stream_options={"include_usage": True},
        )
    )  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert len({chunk.id for chunk in chunks}) == 1
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0

    row = wait_for_conversation(gateway.settings.resolved_database_url, chunks[0].id)
    assert row.status == "ok" and row.stream
    assert row.response[0]["content"] == text
    assert row.completion_tokens == chunks[-1].usage.completion_tokens
    assert row.ttft_ms is not None and row.ttft_ms <= row.latency_ms


def test_stream_without_include_usage_has_no_usage_chunk_but_row_counts_tokens(
    embedded_server: EmbeddedServer,
) -> None:
    body = {"model": BASE_MODEL, "messages": QUESTION, "max_tokens": 8, "stream": True}
    headers = {"Authorization": f"Bearer {embedded_server.keys['chat']}"}
    with httpx.stream(
        "POST", f"{embedded_server.base_url}/v1/chat/completions", json=body, headers=headers,
        timeout=120,
    ) as response:  # fmt: skip
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-loragate-version"] == BASE_MODEL
        events = [line for line in response.iter_lines() if line.startswith("data:")]
    assert events[-1] == "data: [DONE]"
    assert all('"usage"' not in event for event in events)
    completion_id = httpx.Response(200, content=events[0][5:]).json()["id"]
    row = wait_for_conversation(embedded_server.database_url, completion_id)
    assert row.completion_tokens > 0


def test_sampling_parameters_reach_vllm(embedded_server: EmbeddedServer) -> None:
    client = embedded_server.client()
    common = {"model": BASE_MODEL, "messages": QUESTION, "temperature": 0, "seed": 7}

    first = client.chat.completions.create(max_tokens=10, **common)
    second = client.chat.completions.create(max_completion_tokens=10, **common)
    assert first.choices[0].message.content == second.choices[0].message.content

    short = client.chat.completions.create(max_tokens=2, **common)
    assert short.usage is not None and short.usage.completion_tokens <= 2
    assert short.choices[0].finish_reason == "length"

    several = client.chat.completions.create(
        model=BASE_MODEL, messages=QUESTION, max_tokens=4, n=2, temperature=1.0, top_p=0.9
    )
    assert len(several.choices) == 2

    stop_word = first.choices[0].message.content.split()[0]
    stopped = client.chat.completions.create(max_tokens=10, stop=[stop_word], **common)
    assert stopped.choices[0].finish_reason == "stop"
    assert stop_word not in (stopped.choices[0].message.content or "")


def test_models_lists_the_base_model(embedded_server: EmbeddedServer) -> None:
    models = embedded_server.client().models.list()
    assert BASE_MODEL in [model.id for model in models.data]


def test_admin_key_can_chat_and_chat_key_cannot_administer(embedded_server: EmbeddedServer) -> None:
    answer = embedded_server.client("admin").chat.completions.create(
        model=BASE_MODEL, messages=QUESTION, max_tokens=2
    )
    assert answer.choices
    chat_key = {"Authorization": f"Bearer {embedded_server.keys['chat']}"}
    refused = httpx.get(f"{embedded_server.base_url}/v1/admin/keys", headers=chat_key)
    assert refused.status_code == 403
    assert refused.json()["error"]["type"] == "permission_error"


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "Missing API key"),
        ({"Authorization": "Bearer lg-not-a-real-key"}, "Incorrect API key"),
        ({"Authorization": "Basic abc"}, "Malformed Authorization"),
    ],
)
def test_bad_keys_are_refused(
    embedded_server: EmbeddedServer, headers: dict[str, str], message: str
) -> None:
    response = httpx.post(
        f"{embedded_server.base_url}/v1/chat/completions",
        json={"model": BASE_MODEL, "messages": QUESTION},
        headers=headers,
    )
    assert response.status_code == 401
    assert message in response.json()["error"]["message"]
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_sdk_raises_authentication_error_for_a_wrong_key(embedded_server: EmbeddedServer) -> None:
    client = openai.OpenAI(
        base_url=f"{embedded_server.base_url}/v1", api_key="lg-wrong", max_retries=0
    )
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model=BASE_MODEL, messages=QUESTION)
