"""Each kind of bad input: the status and OpenAI-shaped error the client gets, what the store
keeps, and that the gateway goes on serving."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from tests.integration.conftest import BASE_MODEL, EmbeddedServer, sdk_client
from tests.support import (
    ThreadedGateway,
    count_conversations,
    create_keys,
    settled_conversation_count,
    wait_for_conversation,
)

QUESTION = [{"role": "user", "content": "Hello?"}]


def _post(server: EmbeddedServer, content: bytes | None = None, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {server.keys['chat']}", "Content-Type": "application/json"}
    return httpx.post(
        f"{server.base_url}/v1/chat/completions", content=content, headers=headers, timeout=60,
        **kwargs,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("body", "param", "code", "fragment"),
    [
        (b'{"model": "x", "messages": [', None, "invalid_json", "Could not parse the JSON body"),
        (b'{"model": "%s"}' % BASE_MODEL.encode(), "messages", None, "missing required field"),
        (b'{"model": "%s", "messages": []}' % BASE_MODEL.encode(), "messages", None, "length >= 1"),
        (
            b'{"model": "%s", "messages": [{"role": "wizard", "content": "hi"}]}'
            % BASE_MODEL.encode(),
            "messages[0].role", None, "Invalid enum value 'wizard'",
        ),
        (
            b'{"model": "%s", "messages": [{"role": "user", "content": "hi"}], '
            b'"temperature": "hot"}' % BASE_MODEL.encode(),
            "temperature", None, "Expected `float`",
        ),
        (b"[1, 2, 3]", None, None, "Expected `object`"),
    ],
    ids=["malformed-json", "missing-messages", "empty-messages", "unknown-role", "wrong-type",
         "not-an-object"],
)  # fmt: skip
def test_malformed_requests_get_400_and_nothing_is_recorded(
    embedded_server: EmbeddedServer, body: bytes, param: str | None, code: str | None, fragment: str
) -> None:
    before = settled_conversation_count(embedded_server.database_url)
    response = _post(embedded_server, content=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert fragment in error["message"]
    assert error["param"] == param
    assert error["code"] == code
    assert settled_conversation_count(embedded_server.database_url) == before
    assert httpx.get(f"{embedded_server.base_url}/healthz").status_code == 200


def test_unknown_fields_go_to_vllm_which_ignores_them(embedded_server: EmbeddedServer) -> None:
    # The body goes to vLLM as sent (docs/api.md), so a field the gateway does not know is
    # vLLM's to take or refuse; vLLM ignores this one, and the log keeps what it was sent.
    response = _post(
        embedded_server,
        json={"model": BASE_MODEL, "messages": QUESTION, "max_tokens": 2, "frobnicate": {"a": 1}},
    )
    assert response.status_code == 200
    row = wait_for_conversation(embedded_server.database_url, response.json()["id"])
    assert row.request["frobnicate"] == {"a": 1}


def test_unknown_model_is_404_model_not_found(embedded_server: EmbeddedServer) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        embedded_server.client().chat.completions.create(model="no-such-model", messages=QUESTION)
    assert caught.value.code == "model_not_found"
    assert caught.value.body["param"] == "model"  # type: ignore[index]


def test_max_tokens_above_the_context_is_refused_before_vllm(
    embedded_server: EmbeddedServer,
) -> None:
    before = settled_conversation_count(embedded_server.database_url)
    with pytest.raises(openai.BadRequestError) as caught:
        embedded_server.client().chat.completions.create(
            model=BASE_MODEL, messages=QUESTION, max_tokens=100_000
        )
    assert caught.value.code == "context_length_exceeded"
    assert caught.value.body["param"] == "max_tokens"  # type: ignore[index]
    assert settled_conversation_count(embedded_server.database_url) == before


def test_prompt_longer_than_the_context_is_vllms_400_and_recorded_as_error(
    embedded_server: EmbeddedServer,
) -> None:
    long_prompt = [{"role": "user", "content": "word " * 5000}]
    with pytest.raises(openai.BadRequestError) as caught:
        embedded_server.client().chat.completions.create(
            model=BASE_MODEL, messages=long_prompt, max_tokens=10
        )
    assert "context" in caught.value.message.lower() or "length" in caught.value.message.lower()


def test_body_over_the_size_limit_is_413(gateway_factory: Callable[..., ThreadedGateway]) -> None:
    gateway = gateway_factory(auth_enabled=False, max_body_bytes=4096)
    big = {"model": BASE_MODEL, "messages": [{"role": "user", "content": "x" * 10_000}]}
    response = gateway.post("/v1/chat/completions", json=big)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert gateway.get("/healthz").status_code == 200


def test_too_many_choices_is_400(gateway_factory: Callable[..., ThreadedGateway]) -> None:
    gateway = gateway_factory(auth_enabled=False, max_n=2)
    response = gateway.post(
        "/v1/chat/completions", json={"model": BASE_MODEL, "messages": QUESTION, "n": 3}
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "n"


def test_engine_down_is_503_with_retry_after_and_recorded(
    gateway_factory: Callable[..., ThreadedGateway], tmp_path: Any
) -> None:
    from tests.support import free_port, wait_until

    database_url = f"sqlite+aiosqlite:///{tmp_path / 'down.db'}"
    keys = create_keys(database_url)
    gateway = gateway_factory(
        engine_urls=f"http://127.0.0.1:{free_port()}", database_url=database_url
    )
    ready = gateway.get("/readyz")
    assert ready.status_code == 503 and ready.headers["retry-after"]

    response = gateway.post(
        "/v1/chat/completions",
        json={"model": BASE_MODEL, "messages": QUESTION},
        headers={"Authorization": f"Bearer {keys['chat']}"},
    )
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) > 0
    assert response.json()["error"]["code"] == "engine_unavailable"

    with pytest.raises(openai.InternalServerError):
        sdk_client(gateway.base_url, keys["chat"]).chat.completions.create(
            model=BASE_MODEL, messages=QUESTION, stream=True
        )
    # Both calls reached routing, so both are kept, as errors.
    wait_until(lambda: count_conversations(database_url, "error") == 2, 30, "two error rows")


# -- OpenAI's limits, odd text and odd shapes --------------------------------------------------
@pytest.mark.parametrize(
    ("extra", "param", "fragment"),
    [
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "length <= 4"),
        ({"stop": "x" * 300}, "stop", "length <= 256"),
        ({"n": 0}, "n", ">= 1"),
        ({"top_logprobs": 21}, "top_logprobs", "<= 20"),
        ({"messages": [{"role": "user", "content": 42}]}, "messages[0].content", "Expected"),
        ({"retrieval": {"collection": "docs", "frobnicate": 1}}, "retrieval", "unknown field"),
    ],
    ids=["five-stops", "long-stop", "n-zero", "top-logprobs", "content-number",
         "retrieval-unknown"],
)  # fmt: skip
def test_values_outside_openais_limits_get_400_naming_the_field(
    embedded_server: EmbeddedServer, extra: dict[str, Any], param: str, fragment: str
) -> None:
    body = {"model": BASE_MODEL, "messages": QUESTION, "max_tokens": 2, **extra}
    response = _post(embedded_server, json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"].startswith(param) and fragment in error["message"], error


def test_four_stop_sequences_are_fine(embedded_server: EmbeddedServer) -> None:
    body = {"model": BASE_MODEL, "messages": QUESTION, "max_tokens": 4,
            "stop": ["\n\n", "###", "User:", "x" * 256]}  # fmt: skip
    assert _post(embedded_server, json=body).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        b'{"model": "m", "messages": [{"role": "user", "content": "\\ud800"}]}',
        b'{"model": "m", "messages": [{"role": "user", "content": "\\udc00 tail"}]}',
        b'{"model": "m", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
        b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "junk": '
        + b"[" * 100_000
        + b"]" * 100_000
        + b"}",
    ],
    ids=["lone-high-surrogate", "lone-low-surrogate", "invalid-utf8", "nested-100k-deep"],
)
def test_undecodable_text_and_deep_nesting_are_400_invalid_json(
    embedded_server: EmbeddedServer, body: bytes
) -> None:
    before = settled_conversation_count(embedded_server.database_url)
    response = _post(embedded_server, content=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_json"
    assert settled_conversation_count(embedded_server.database_url) == before


def test_odd_but_valid_unicode_is_served_and_stored_as_sent(
    gateway_factory: Callable[..., ThreadedGateway], database_url: str
) -> None:
    """Right-to-left override, zero-width joiners, combining marks, astral emoji and NUL,
    on SQLite and PostgreSQL (whose text columns cannot hold NUL: it becomes U+FFFD there,
    and stays in the JSON of the request)."""
    keys = create_keys(database_url)
    gateway = gateway_factory(database_url=database_url)
    text = "\u202eabc\u202c e\u0301 \U0001f469\u200d\U0001f52c \x00 end"
    body = {"model": BASE_MODEL, "max_tokens": 2, "conversation_id": "nul\x00id",
            "messages": [{"role": "user", "content": text}]}  # fmt: skip
    headers = {"Authorization": f"Bearer {keys['chat']}"}
    response = gateway.post("/v1/chat/completions", json=body, headers=headers)
    assert response.status_code == 200, response.text
    row = wait_for_conversation(database_url, response.json()["id"])
    assert row.request["messages"][0]["content"] == text
    assert row.conversation_id in ("nul\x00id", "nul\ufffdid")
    # A comment, not a correction: the review queue of the shared PostgreSQL stays empty.
    feedback = gateway.post(
        "/v1/feedback", json={"completion_id": row.id, "score": 1, "comment": "fine\x00"},
        headers=headers,
    )  # fmt: skip
    assert feedback.status_code == 200, feedback.text


def test_oversized_headers_get_431_and_the_gateway_goes_on(
    embedded_server: EmbeddedServer,
) -> None:
    for size in (40_000, 5_000_000):  # parsed whole, and refused while still arriving
        response = httpx.get(
            f"{embedded_server.base_url}/v1/models", timeout=60,
            headers={"Authorization": f"Bearer {embedded_server.keys['chat']}",
                     "X-Padding": "a" * size},
        )  # fmt: skip
        assert response.status_code == 431
        assert response.json()["error"]["code"] == "request_headers_too_large"
    assert httpx.get(f"{embedded_server.base_url}/healthz").status_code == 200
