"""The Responses API through the embedded gateway on the real vLLM (its store on, see
tests/integration/conftest.py): the gateway's id is the one vLLM keeps, the exchange is
logged with vLLM's token counts, and only the creating key reads, cancels or follows up
on a response; any other id gets vLLM's own 404 for an unknown id.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import openai
import pytest

from tests.integration.conftest import BASE_MODEL, EmbeddedServer
from tests.support import wait_for_conversation

pytestmark = pytest.mark.vllm

M = BASE_MODEL
ASK = {"model": M, "input": "What is the capital of France?", "max_output_tokens": 8,
       "temperature": 0}  # fmt: skip


def test_a_response_is_vllms_logged_and_its_keys_own(embedded_server: EmbeddedServer) -> None:
    client = embedded_server.client()
    created = client.responses.create(**ASK)
    assert re.fullmatch(r"resp_[0-9a-f]{32}", created.id)
    direct = httpx.post(f"{embedded_server.engine_url}/v1/responses", json=ASK, timeout=300)
    assert created.output_text == direct.json()["output"][0]["content"][0]["text"]
    retrieved = client.responses.retrieve(created.id)
    assert (retrieved.id, retrieved.output_text, retrieved.model) == (
        created.id, created.output_text, M)  # fmt: skip

    row = wait_for_conversation(embedded_server.database_url, created.id)
    assert row.request["messages"] == [{"role": "user", "content": ASK["input"]}]
    assert row.response[0]["content"] == created.output_text
    assert created.usage is not None
    assert (row.prompt_tokens, row.completion_tokens) == (
        created.usage.input_tokens, created.usage.output_tokens)  # fmt: skip
    assert row.status == "ok" and row.api_key_id is not None

    follow = client.responses.create(**{**ASK, "input": "And of Spain?"},
                                     previous_response_id=created.id)  # fmt: skip
    assert follow.previous_response_id == created.id
    with pytest.raises(openai.BadRequestError, match="Cannot cancel a synchronous response"):
        client.responses.cancel(created.id)


def test_another_keys_id_is_vllms_404_for_an_unknown_id(embedded_server: EmbeddedServer) -> None:
    mine = embedded_server.client().responses.create(**ASK).id
    other = embedded_server.client("admin")
    unknown = f"resp_{uuid.uuid4().hex}"
    direct = httpx.get(f"{embedded_server.engine_url}/v1/responses/{unknown}", timeout=30)
    assert direct.status_code == 404
    vllm_error = direct.json()["error"]

    def error_of(call: Any, response_id: str) -> dict[str, Any]:
        with pytest.raises(openai.NotFoundError) as caught:
            call(response_id)
        error: dict[str, Any] = caught.value.response.json()["error"]
        return {**error, "message": error["message"].replace(response_id, "ID")}

    expected = {
        "message": vllm_error["message"].replace(unknown, "ID"),
        "type": "invalid_request_error",
        "param": vllm_error["param"],
        "code": None,
    }
    for call in (other.responses.retrieve, other.responses.cancel):
        assert error_of(call, mine) == error_of(call, unknown) == expected

    def follow_up(previous: str) -> Any:
        return other.responses.create(**ASK, previous_response_id=previous)

    assert error_of(follow_up, mine) == expected


def test_streamed_and_abandoned_responses_are_logged(embedded_server: EmbeddedServer) -> None:
    client = embedded_server.client()
    with client.responses.stream(**ASK) as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    row = wait_for_conversation(embedded_server.database_url, final.id)
    assert final.usage is not None
    assert (row.status, row.stream) == ("ok", True)
    assert row.completion_tokens == final.usage.output_tokens
    assert row.response[0]["content"] == final.output_text

    body = {**ASK, "max_output_tokens": 400, "stream": True,
            "input": "Write a long story about a dragon."}  # fmt: skip
    headers = {"Authorization": f"Bearer {embedded_server.keys['chat']}"}
    response_id, deltas = None, 0
    with httpx.stream("POST", f"{embedded_server.base_url}/v1/responses", json=body,
                      headers=headers, timeout=300) as answer:  # fmt: skip
        for line in answer.iter_lines():
            found = re.search(r'"id":\s*"(resp_[0-9a-f]+)"', line)
            if response_id is None and found is not None:
                response_id = found.group(1)
            deltas += line.startswith("data:") and "output_text.delta" in line
            if deltas == 3:
                break
    assert response_id is not None
    row = wait_for_conversation(embedded_server.database_url, response_id)
    assert row.status == "cancelled" and 3 <= row.completion_tokens < 400
    embedded_server.wait_running_requests(0, 60, "vLLM to abort the abandoned response")


def test_a_background_response_is_queued_then_cancelled(embedded_server: EmbeddedServer) -> None:
    client = embedded_server.client()
    queued = client.responses.create(**{**ASK, "max_output_tokens": 400,
                                        "input": "Write a long story about a dragon."},
                                     background=True)  # fmt: skip
    assert queued.status in ("queued", "in_progress")
    try:
        assert client.responses.cancel(queued.id).status == "cancelled"
    except openai.BadRequestError:  # it was done before the cancel came (a fast machine)
        assert client.responses.retrieve(queued.id).status == "completed"
    row = wait_for_conversation(embedded_server.database_url, queued.id)
    assert row.response[0]["finish_reason"] in ("queued", "in_progress")
