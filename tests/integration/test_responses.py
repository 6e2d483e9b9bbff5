"""The Responses API through a real gateway with the official SDK, on the stand-in vLLM
(``tests/standin_responses.py``), on SQLite and PostgreSQL: logged and charged like chat,
ids readable and cancellable by the key that created them only.

Each test has a store of its own (tests/own_store.py): on the session's shared PostgreSQL
database, versions earlier tests published reached these gateways, whose reconcilers sent
their loads to the stand-in before the request under test.

Each kind of bad input says what happens: an unknown id, another key's id, an id of the
wrong form, a ``previous_response_id`` of another key, a body the gateway refuses itself
(``request_id``, no ``model``, a non-boolean ``stream``, not an object), one vLLM refuses
(no ``input``), and ``DELETE``, which vLLM does not serve.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from core.settings import load_settings
from tests.integration.conftest import sdk_client
from tests.own_store import own_database_url  # noqa: F401 (database_url: a store of its own)
from tests.standin_responses import BREAK_WORD, PROMPT_TOKENS
from tests.standin_vllm import ANSWER, SLOW_WORD, StandInVllm
from tests.support import (
    ThreadedGateway,
    create_keys,
    metric_value,
    wait_for_conversation,
    wait_until,
)

MODEL = "stand-in-model"


class Site:
    def __init__(self, gateway: ThreadedGateway, stand_in: StandInVllm, keys: dict[str, str],
                 database_url: str) -> None:  # fmt: skip
        self.gateway, self.stand_in, self.keys, self.database_url = (
            gateway, stand_in, keys, database_url)  # fmt: skip

    def client(self, key: str = "chat") -> openai.OpenAI:
        return sdk_client(self.gateway.base_url, self.keys[key])

    def headers(self, key: str = "chat") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[key]}"}


@pytest.fixture
def site(database_url: str, tmp_path: Path) -> Iterator[Site]:
    stand_in = StandInVllm(MODEL, store_responses=True).start()
    keys = create_keys(database_url)  # "chat", and "admin": another key (that can chat)
    settings = load_settings(
        data_dir=tmp_path, engine_mode="external", engine_urls=stand_in.url,
        base_model_name=MODEL, database_url=database_url, log_format="text",
    )  # fmt: skip
    gateway = ThreadedGateway.start(settings)
    yield Site(gateway, stand_in, keys, database_url)
    gateway.stop()
    stand_in.stop()


def test_create_and_retrieve_are_logged_like_chat(site: Site) -> None:
    client = site.client()
    created = client.responses.with_raw_response.create(
        model=MODEL, input="Can I return a teapot?", instructions="Be brief."
    )
    response = created.parse()
    assert response.id.startswith("resp_") and len(response.id) == 37
    assert response.output_text == ANSWER and response.model == MODEL
    assert created.headers["x-loragate-version"] == MODEL
    # The gateway's id is vLLM's: it was sent as request_id, so nothing is rewritten.
    assert site.stand_in.bodies[-1]["request_id"] == response.id
    assert site.stand_in.bodies[-1]["max_output_tokens"] == 512  # default_max_tokens
    assert client.responses.retrieve(response.id).output_text == ANSWER

    row = wait_for_conversation(site.database_url, response.id)
    assert row.request["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Can I return a teapot?"},
    ]
    assert "input" not in row.request and "request_id" not in row.request
    assert row.response == [{"index": 0, "content": ANSWER, "finish_reason": "stop"}]
    assert (row.status, row.stream, row.requested_model, row.served_model) == (
        "ok", False, MODEL, MODEL)  # fmt: skip
    assert row.prompt_tokens == PROMPT_TOKENS
    assert row.completion_tokens == len(ANSWER.split(" "))
    assert row.api_key_id is not None and row.latency_ms > 0
    metrics = site.gateway.get("/metrics").text
    ok = {"alias": MODEL, "version": MODEL, "status": "2xx"}
    assert metric_value(metrics, "loragate_requests_total", **ok) == 1.0
    tokens = {"alias": MODEL, "version": MODEL, "kind": "completion"}
    assert metric_value(metrics, "loragate_tokens_total", **tokens) == row.completion_tokens


def test_item_input_and_cut_short_answer(site: Site) -> None:
    items: list[Any] = [
        {"role": "user", "content": [{"type": "input_text", "text": "Hello"}]},
        {"type": "reasoning", "id": "rs_1", "summary": []},  # no chat counterpart
    ]
    response = site.client().responses.create(model=MODEL, input=items, max_output_tokens=3)
    assert response.status == "incomplete"
    row = wait_for_conversation(site.database_url, response.id)
    assert row.request["messages"] == [{"role": "user", "content": "Hello"}]
    assert row.request["input"] == items  # kept as sent: the messages lack an item
    assert row.response[0]["finish_reason"] == "length"
    assert row.completion_tokens == 3


def test_stream_settles_on_the_final_event(site: Site) -> None:
    with site.client().responses.stream(model=MODEL, input="Can I return a teapot?") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert final.output_text == ANSWER and final.model == MODEL
    row = wait_for_conversation(site.database_url, final.id)
    assert (row.status, row.stream) == ("ok", True)
    assert row.response[0]["content"] == ANSWER
    assert row.completion_tokens == len(ANSWER.split(" ")) and row.ttft_ms is not None


def test_a_stream_the_client_leaves_is_logged_cancelled(site: Site) -> None:
    body = {"model": MODEL, "input": f"Answer {SLOW_WORD}", "stream": True}
    response_id = None
    with httpx.stream("POST", f"{site.gateway.base_url}/v1/responses", json=body,
                      headers=site.headers(), timeout=60) as answer:  # fmt: skip
        deltas = 0
        for line in answer.iter_lines():
            if '"response.created"' in line and line.startswith("data:"):
                response_id = line.split('"id": "', 1)[1].split('"', 1)[0]
            deltas += line.startswith("data:") and "output_text.delta" in line
            if deltas == 5:
                break
    assert response_id is not None
    row = wait_for_conversation(site.database_url, response_id)
    assert row.status == "cancelled"
    assert row.response[0]["content"].startswith("word0 word1 word2 word3 word4 ")
    assert 5 <= row.completion_tokens < 600  # a token per delta relayed
    assert row.prompt_tokens > 0  # estimated: vLLM said nothing
    wait_until(lambda: site.stand_in.abandoned == 1, 10, "vLLM to see the client gone")


def test_another_keys_id_is_the_same_404_as_an_unknown_one(site: Site) -> None:
    mine = site.client().responses.create(model=MODEL, input="Hello").id
    unknown = f"resp_{uuid.uuid4().hex}"
    other = site.client("admin")  # another key; an admin key is no exception

    def not_found(call: Any, response_id: str) -> dict[str, Any]:
        with pytest.raises(openai.NotFoundError) as caught:
            call(response_id)
        body: dict[str, Any] = caught.value.response.json()
        return {**body["error"], "message": body["error"]["message"].replace(response_id, "ID")}

    expected = {"message": "Response with id 'ID' not found.",
                "type": "invalid_request_error", "param": "response_id", "code": None}  # fmt: skip
    for call in (other.responses.retrieve, other.responses.cancel):
        assert not_found(call, mine) == not_found(call, unknown) == expected

    def follow_up(previous: str) -> Any:
        return other.responses.create(model=MODEL, input="And?", previous_response_id=previous)

    assert not_found(follow_up, mine) == not_found(follow_up, unknown) == expected
    # An id not of the form is unknown too, without a query: even one the store would choke on.
    for odd in ("nope", "resp_" + "x" * 300, "resp_%00"):
        response = site.gateway.get(f"/v1/responses/{odd}", headers=site.headers())
        assert response.status_code == 404 and response.json()["error"]["code"] is None
    # A query Litestar cannot read is a 400 before ownership is looked at.
    bad_query = site.gateway.get(f"/v1/responses/{mine}?stream=true&starting_after=x",
                                 headers=site.headers())  # fmt: skip
    assert bad_query.status_code == 400 and bad_query.json()["error"]["param"] is not None
    # Its owner still has it, and may follow up on it.
    assert site.client().responses.retrieve(mine).id == mine
    follow = site.client().responses.create(model=MODEL, input="And?", previous_response_id=mine)
    assert site.stand_in.bodies[-1]["previous_response_id"] == mine
    assert follow.previous_response_id == mine


def test_vllm_without_its_store_answers_the_same_404(site: Site) -> None:
    site.stand_in.store_responses = False  # vLLM's default
    client = site.client()
    mine = client.responses.create(model=MODEL, input="Hello").id
    with pytest.raises(openai.NotFoundError) as relayed:
        client.responses.retrieve(mine)
    with pytest.raises(openai.NotFoundError) as refused:
        client.responses.retrieve(f"resp_{uuid.uuid4().hex}")
    shape = {"type": "invalid_request_error", "param": "response_id", "code": None}
    assert (
        {**relayed.value.response.json()["error"], "message": None}
        == {**refused.value.response.json()["error"], "message": None}
        == {**shape, "message": None}
    )


def test_background_response_can_be_cancelled_by_its_key(site: Site) -> None:
    client = site.client()
    queued = client.responses.create(model=MODEL, input=f"Go {SLOW_WORD}", background=True)
    assert queued.status == "queued"
    cancelled = client.responses.cancel(queued.id)
    assert cancelled.status == "cancelled" and cancelled.model == MODEL
    assert client.responses.retrieve(queued.id).status == "cancelled"
    row = wait_for_conversation(site.database_url, queued.id)
    assert row.status == "ok" and row.response[0]["finish_reason"] == "queued"
    assert row.completion_tokens == 512  # charged its hold: the text stays in vLLM
    done = client.responses.create(model=MODEL, input="Hello")
    with pytest.raises(openai.BadRequestError, match="Cannot cancel a synchronous response"):
        client.responses.cancel(done.id)


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": MODEL, "input": "Hi", "request_id": "resp_mine"}, 400, "request_id"),
        ({"input": "Hi"}, 400, "model"),
        ({"model": MODEL, "input": "Hi", "stream": "yes"}, 400, "stream"),
        ({"model": MODEL, "input": "Hi", "stream": 1}, 400, "stream"),
        ({"model": MODEL, "input": "Hi", "previous_response_id": 7}, 400,
         "previous_response_id"),
        ({"model": "no-such-model", "input": "Hi"}, 404, "model"),
        ({"model": MODEL}, 400, "input"),  # vLLM's own 400, relayed
        ([{"model": MODEL}], 400, None),
    ],
)  # fmt: skip
def test_bad_bodies(site: Site, body: Any, status: int, param: str | None) -> None:
    answer = site.gateway.post("/v1/responses", json=body, headers=site.headers())
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param


def test_delete_is_not_served(site: Site) -> None:
    mine = site.client().responses.create(model=MODEL, input="Hello").id
    answer = httpx.delete(f"{site.gateway.base_url}/v1/responses/{mine}",
                          headers=site.headers(), timeout=30)  # fmt: skip
    assert answer.status_code == 405  # as vLLM: the path is there, the method not
    assert set(answer.json()["error"]) == {"message", "type", "param", "code"}


def test_responses_count_against_the_monthly_budget(site: Site) -> None:
    body = {"name": "budget", "scope": "chat", "quota": {"monthly_tokens": 600}}
    key = site.gateway.post("/v1/admin/keys", json=body, headers=site.headers("admin")).json()
    client = sdk_client(site.gateway.base_url, key["key"])
    client.responses.create(model=MODEL, input="Hello", max_output_tokens=500)
    # Its usage (10 + 11 tokens) is charged: a hold of 590 more no longer fits the budget.
    with pytest.raises(openai.RateLimitError):
        client.responses.create(model=MODEL, input="Hello", max_output_tokens=590)
    client.responses.create(model=MODEL, input="Hello", max_output_tokens=100)


def test_a_stream_vllm_breaks_off_ends_with_an_error_event(site: Site) -> None:
    body = {"model": MODEL, "input": f"Answer {BREAK_WORD}", "stream": True}
    with httpx.stream("POST", f"{site.gateway.base_url}/v1/responses", json=body,
                      headers=site.headers(), timeout=60) as answer:  # fmt: skip
        lines = [line for line in answer.iter_lines() if line]
    assert answer.status_code == 200  # the stream had begun
    assert lines[-2] == "event: error"
    error = json.loads(lines[-1][5:])
    assert error["type"] == "error" and error["code"] == "engine_stream_broken"
    response_id = json.loads(lines[1][5:])["response"]["id"]
    row = wait_for_conversation(site.database_url, response_id)
    assert row.status == "error" and row.completion_tokens == 3
    assert row.response[0]["content"] == "Purple teapots can "  # the text relayed


def test_a_response_is_read_on_the_replica_that_keeps_it(database_url: str, tmp_path: Path) -> None:
    # Two gateways on one store, each listing the two replicas the other way round: the
    # second one's own pick would be the replica that does not have the response.
    replicas = [StandInVllm(MODEL, store_responses=True).start() for _ in range(2)]
    keys = create_keys(database_url)
    orders = {"one": replicas, "two": replicas[::-1]}
    gateways = [_gateway(database_url, tmp_path / name, order) for name, order in orders.items()]
    try:
        first, second = (sdk_client(gateway.base_url, keys["chat"]) for gateway in gateways)
        created = first.responses.create(model=MODEL, input="Hello")
        assert created.id in replicas[0].responses.stored
        assert created.id not in replicas[1].responses.stored
        assert second.responses.retrieve(created.id).id == created.id
        second.responses.create(model=MODEL, input="And?", previous_response_id=created.id)
        assert replicas[0].bodies[-1]["previous_response_id"] == created.id
    finally:
        for gateway in gateways:
            gateway.stop()
        for replica in replicas:
            replica.stop()


def _gateway(database_url: str, data_dir: Path, replicas: list[StandInVllm]) -> ThreadedGateway:
    urls = ",".join(replica.url for replica in replicas)
    settings = load_settings(
        data_dir=data_dir, engine_mode="external", database_url=database_url,
        engine_urls=urls, base_model_name=MODEL, log_format="text",
    )  # fmt: skip
    return ThreadedGateway.start(settings)


def test_a_background_stream_is_replayed_to_its_key_only(site: Site) -> None:
    client = site.client()
    with client.responses.create(model=MODEL, input="Hello", background=True,
                                 stream=True) as stream:  # fmt: skip
        events = list(stream)
    response_id = events[0].response.id  # type: ignore[union-attr]
    replayed = list(client.responses.retrieve(response_id, stream=True, starting_after=3))
    assert [event.sequence_number for event in replayed] == [
        event.sequence_number for event in events[4:]]  # fmt: skip
    assert replayed[-1].type == "response.completed"
    with pytest.raises(openai.NotFoundError):
        site.client("admin").responses.retrieve(response_id, stream=True)
    # One vLLM did not run in the background has no events to replay: its 400, relayed.
    plain = client.responses.create(model=MODEL, input="Hello").id
    with pytest.raises(openai.BadRequestError, match="Unknown response_id"):
        client.responses.retrieve(plain, stream=True)
