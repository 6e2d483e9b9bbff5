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
    before = count_conversations(embedded_server.database_url)
    response = _post(embedded_server, content=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert fragment in error["message"]
    assert error["param"] == param
    assert error["code"] == code
    assert count_conversations(embedded_server.database_url) == before
    assert httpx.get(f"{embedded_server.base_url}/healthz").status_code == 200


def test_unknown_fields_are_accepted_and_ignored(embedded_server: EmbeddedServer) -> None:
    response = _post(
        embedded_server,
        json={"model": BASE_MODEL, "messages": QUESTION, "max_tokens": 2, "frobnicate": {"a": 1}},
    )
    assert response.status_code == 200
    row = wait_for_conversation(embedded_server.database_url, response.json()["id"])
    assert "frobnicate" not in row.request


def test_unknown_model_is_404_model_not_found(embedded_server: EmbeddedServer) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        embedded_server.client().chat.completions.create(model="no-such-model", messages=QUESTION)
    assert caught.value.code == "model_not_found"
    assert caught.value.body["param"] == "model"  # type: ignore[index]


def test_max_tokens_above_the_context_is_refused_before_vllm(
    embedded_server: EmbeddedServer,
) -> None:
    before = count_conversations(embedded_server.database_url)
    with pytest.raises(openai.BadRequestError) as caught:
        embedded_server.client().chat.completions.create(
            model=BASE_MODEL, messages=QUESTION, max_tokens=100_000
        )
    assert caught.value.code == "context_length_exceeded"
    assert caught.value.body["param"] == "max_tokens"  # type: ignore[index]
    assert count_conversations(embedded_server.database_url) == before


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
