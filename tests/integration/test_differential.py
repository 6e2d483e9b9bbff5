"""vLLM as the oracle: the same requests to the embedded vLLM directly and through the
gateway, with the same status, the same shape and the same (deterministic) text.

Greedy decoding (temperature 0) or a fixed seed makes the text deterministic; requests run
one at a time, so vLLM batches nothing differently between the two. The documented
differences (docs/api.md) are all the comparison leaves out:

* the gateway's own ``id`` and ``created`` (and ``model``, the served name: the same here);
  vLLM's tool-call ids, which it draws anew for every call;
* vLLM-only fields that are null (``prompt_logprobs``, ``prompt_token_ids``,
  ``kv_transfer_params``, ...): the gateway drops them; asked for, they are relayed;
* error bodies: the gateway's are OpenAI's shape (``type`` a string, ``code`` a string or
  null), and a request the gateway refuses itself has its own message: only the status and
  the shape are compared.

A field a future vLLM adds to its answers and the gateway drops makes a case fail.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec
import openai
import pytest

from tests.integration.conftest import BASE_MODEL, EmbeddedServer
from tests.support import wait_for_conversation

pytestmark = pytest.mark.vllm

M = BASE_MODEL
ASK = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY = {"temperature": 0, "max_tokens": 6}
DROPPED_WHILE_NULL = ("prompt_logprobs", "prompt_token_ids", "prompt_text", "kv_transfer_params",
                      "ec_transfer_params", "metrics")  # fmt: skip


@dataclass(frozen=True)
class Case:
    name: str
    path: str
    body: dict[str, Any]
    stream: bool = field(default=False)
    # A documented difference: the status the gateway answers where vLLM answers another.
    gateway_status: int | None = None


def chat(name: str, stream: bool = False, **body: Any) -> Case:
    body = {"model": M, "messages": ASK, **body, **({"stream": True} if stream else {})}
    return Case(name, "/v1/chat/completions", body, stream)


def text(name: str, stream: bool = False, **body: Any) -> Case:
    body = {"model": M, "prompt": "The capital of France is", **body}
    return Case(name, "/v1/completions", {**body, **({"stream": True} if stream else {})}, stream)


PARTIAL = [*ASK, {"role": "assistant", "content": "The capital of France is"}]
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather in a city",
            "parameters": SCHEMA,
        },
    }
]
NAMED = {"type": "function", "function": {"name": "get_weather"}}
TOOL_TURNS = [
    {"role": "user", "content": "What is the weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function",
     "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": '{"weather": "sunny, 24 C"}'},
]  # fmt: skip

# fmt: off
CASES = [
    # chat, plain fields
    chat("chat-greedy", **GREEDY),
    chat("chat-max-completion-tokens", temperature=0, max_completion_tokens=5),
    chat("chat-n-2", n=2, seed=4, temperature=0.8, max_tokens=6),
    chat("chat-stop-list", stop=["."], **GREEDY),
    chat("chat-stop-string", stop="Paris", **GREEDY),
    chat("chat-seed", seed=7, temperature=0.9, max_tokens=6),
    chat("chat-top-p", seed=3, temperature=0.8, top_p=0.5, max_tokens=6),
    chat("chat-top-k", seed=3, temperature=0.8, top_k=5, max_tokens=6),
    chat("chat-min-p", seed=3, temperature=0.8, min_p=0.2, max_tokens=6),
    chat("chat-presence-penalty", presence_penalty=1.5, **GREEDY),
    chat("chat-frequency-penalty", frequency_penalty=1.5, **GREEDY),
    chat("chat-repetition-penalty", repetition_penalty=1.3, **GREEDY),
    chat("chat-logit-bias", logit_bias={"504": -100}, **GREEDY),
    chat("chat-logprobs", logprobs=True, top_logprobs=2, **GREEDY),
    chat("chat-min-tokens", min_tokens=4, temperature=0, max_tokens=5),
    chat("chat-ignore-eos", ignore_eos=True, temperature=0, max_tokens=4),
    chat("chat-system", **GREEDY, messages=[{"role": "system", "content": "Answer in French."},
                                            *ASK]),
    chat("chat-multi-turn", **GREEDY, messages=[
        *ASK, {"role": "assistant", "content": "Paris."}, {"role": "user", "content": "Spain?"}]),
    chat("chat-user", user="someone", **GREEDY),
    # chat, vLLM's own parameters
    chat("chat-continue-final-message", messages=PARTIAL, continue_final_message=True,
         add_generation_prompt=False, **GREEDY),
    chat("chat-stop-token-ids", stop_token_ids=[28], **GREEDY),
    chat("chat-include-stop-str", stop=["."], include_stop_str_in_output=True, **GREEDY),
    chat("chat-skip-special-tokens-off", skip_special_tokens=False, temperature=0, max_tokens=12),
    chat("chat-return-token-ids", return_token_ids=True, **GREEDY),
    chat("chat-echo", messages=PARTIAL, echo=True, continue_final_message=True,
         add_generation_prompt=False, **GREEDY),
    chat("chat-structured-choice", structured_outputs={"choice": ["yes", "no"]}, **GREEDY),
    chat("chat-structured-regex", structured_outputs={"regex": "[A-Z][a-z]+"}, **GREEDY),
    chat("chat-json-schema", temperature=0, max_tokens=20, response_format={
        "type": "json_schema", "json_schema": {"name": "city", "schema": SCHEMA}}),
    chat("chat-json-object", response_format={"type": "json_object"}, temperature=0,
         max_tokens=8),
    chat("chat-prompt-logprobs", prompt_logprobs=1, **GREEDY),
    chat("chat-truncate-prompt", truncate_prompt_tokens=8, **GREEDY),
    chat("chat-allowed-token-ids", allowed_token_ids=[504, 28, 30], **GREEDY),
    chat("chat-bad-words", bad_words=["Paris"], **GREEDY),
    chat("chat-spaces-between-special", spaces_between_special_tokens=False, **GREEDY),
    chat("chat-chat-template-kwargs", chat_template_kwargs={"x": 1}, **GREEDY),
    # chat, refused
    chat("chat-stream-options-without-stream", stream_options={"include_usage": True}, **GREEDY),
    chat("chat-unknown-model", **GREEDY, model="no-such-model"),
    chat("chat-no-messages", **GREEDY, messages=[]),
    chat("chat-over-context", temperature=0, max_tokens=5000),
    chat("chat-top-logprobs-over", logprobs=True, top_logprobs=30, **GREEDY),
    chat("chat-n-0", n=0, **GREEDY),
    chat("chat-n-2-greedy", n=2, **GREEDY),  # vLLM: n must be 1 when greedy
    # vLLM takes any role (its template renders it); the gateway only OpenAI's five.
    Case("chat-bad-role", "/v1/chat/completions", {"model": M, **GREEDY,
         "messages": [{"role": "robot", "content": "hi"}]}, gateway_status=400),
    chat("chat-bad-structured-outputs", structured_outputs={"choice": "yes"}, **GREEDY),
    chat("chat-bad-stop-token-ids", stop_token_ids="x", **GREEDY),
    # chat, tools (the embedded vLLM has the hermes parser and the bundled template)
    chat("chat-tools-auto", tools=TOOLS, tool_choice="auto", temperature=0, max_tokens=30),
    chat("chat-tools-required", tools=TOOLS, tool_choice="required", temperature=0,
         max_tokens=30),
    chat("chat-tools-named", tools=TOOLS, tool_choice=NAMED, temperature=0, max_tokens=30),
    chat("chat-tools-none", tools=TOOLS, tool_choice="none", **GREEDY),
    chat("chat-tools-result-turn", tools=TOOLS, messages=TOOL_TURNS, **GREEDY),
    chat("chat-tools-unknown-name", tools=TOOLS, temperature=0, max_tokens=30,
         tool_choice={"type": "function", "function": {"name": "nope"}}),
    chat("chat-stream-tools-required", stream=True, tools=TOOLS, tool_choice="required",
         temperature=0, max_tokens=30),
    chat("chat-stream-tools-named", stream=True, tools=TOOLS, tool_choice=NAMED, temperature=0,
         max_tokens=30),
    # chat, streamed
    chat("chat-stream", stream=True, **GREEDY),
    chat("chat-stream-usage", stream=True, stream_options={"include_usage": True}, **GREEDY),
    chat("chat-stream-continuous-usage", stream=True, **GREEDY,
         stream_options={"include_usage": True, "continuous_usage_stats": True}),
    chat("chat-stream-n-2", stream=True, n=2, seed=4, temperature=0.8, max_tokens=6),
    chat("chat-stream-logprobs", stream=True, logprobs=True, top_logprobs=1, **GREEDY),
    chat("chat-stream-stop", stream=True, stop=["."], **GREEDY),
    chat("chat-stream-structured", stream=True, structured_outputs={"choice": ["yes", "no"]},
         **GREEDY),
    chat("chat-stream-continue", stream=True, messages=PARTIAL, continue_final_message=True,
         add_generation_prompt=False, **GREEDY),
    chat("chat-stream-return-token-ids", stream=True, return_token_ids=True, **GREEDY),
    # text completions
    text("text-greedy", **GREEDY),
    text("text-echo-logprobs", echo=True, logprobs=1, **GREEDY),
    text("text-n-2", n=2, seed=4, temperature=0.8, max_tokens=6),
    text("text-prompt-list", prompt=["The capital of France is", "One, two,"], **GREEDY),
    text("text-token-ids", prompt=[504, 3575, 282, 4649, 314], **GREEDY),
    text("text-stop", stop=["."], **GREEDY),
    text("text-seed", seed=5, temperature=0.9, max_tokens=6),
    text("text-structured-choice", structured_outputs={"choice": ["Paris", "Rome"]}, **GREEDY),
    text("text-return-token-ids", return_token_ids=True, **GREEDY),
    text("text-prompt-logprobs", prompt_logprobs=1, **GREEDY),
    text("text-min-tokens", min_tokens=3, temperature=0, max_tokens=4),
    text("text-stream", stream=True, **GREEDY),
    text("text-stream-usage", stream=True, **GREEDY,
         stream_options={"include_usage": True, "continuous_usage_stats": True}),
    text("text-stream-echo", stream=True, echo=True, **GREEDY),
    text("text-stream-options-without-stream", stream_options={"include_usage": True}, **GREEDY),
    text("text-over-context", temperature=0, max_tokens=5000),
    text("text-bad-prompt", prompt={"x": 1}, **GREEDY),
    text("text-unknown-model", **GREEDY, model="no-such-model"),
    text("text-suffix", suffix="!", **GREEDY),
    # vLLM's tokenizer routes
    Case("tokenize-prompt", "/tokenize", {"model": M, "prompt": "Hello world"}),
    Case("tokenize-no-model", "/tokenize", {"prompt": "Hello world"}),
    Case("tokenize-messages", "/tokenize", {"model": M, "messages": ASK}),
    Case("tokenize-no-special", "/tokenize",
         {"model": M, "prompt": "Hi", "add_special_tokens": False}),
    Case("tokenize-token-strs", "/tokenize",
         {"model": M, "prompt": "Hi", "return_token_strs": True}),
    Case("tokenize-bad", "/tokenize", {"model": M, "prompt": 5}),
    Case("detokenize", "/detokenize", {"model": M, "tokens": [19556, 905]}),
    Case("detokenize-bad", "/detokenize", {"model": M, "tokens": "x"}),
]
# fmt: on


def _events(response: httpx.Response) -> tuple[list[Any], bool]:
    events, done = [], False
    for line in response.text.splitlines():
        if line.startswith("data: "):
            data = line[6:]
            if data == "[DONE]":
                done = True
            else:
                events.append(msgspec.json.decode(data))
    return events, done


def _normalised(body: Any) -> Any:
    if isinstance(body, dict):
        body = {key: value for key, value in body.items() if key not in ("id", "created")}
        for name in DROPPED_WHILE_NULL:
            if body.get(name, 0) is None:
                del body[name]
    return body


def _assert_same(direct: Any, gateway: Any, where: str = "$") -> None:
    if isinstance(direct, float) and isinstance(gateway, float):
        assert math.isclose(direct, gateway, rel_tol=1e-4, abs_tol=1e-4), where
    elif isinstance(direct, dict) and isinstance(gateway, dict):
        assert direct.keys() == gateway.keys(), f"{where}: {direct.keys() ^ gateway.keys()}"
        for key in direct:
            if key == "id" and ".tool_calls[" in where:
                continue  # vLLM draws a new id per call
            _assert_same(direct[key], gateway[key], f"{where}.{key}")
    elif isinstance(direct, list) and isinstance(gateway, list):
        assert len(direct) == len(gateway), where
        for index, (left, right) in enumerate(zip(direct, gateway, strict=True)):
            _assert_same(left, right, f"{where}[{index}]")
    else:
        assert direct == gateway, f"{where}: {direct!r} != {gateway!r}"


def _assert_openai_error(body: Any) -> None:
    error = body["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str)
    assert error["code"] is None or isinstance(error["code"], str)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_gateway_answers_as_vllm_does(embedded_server: EmbeddedServer, case: Case) -> None:
    key = embedded_server.keys["chat"]
    with httpx.Client(timeout=300) as http:
        direct = http.post(f"{embedded_server.engine_url}{case.path}", json=case.body)
        gateway = http.post(f"{embedded_server.base_url}{case.path}", json=case.body,
                            headers={"Authorization": f"Bearer {key}"})  # fmt: skip
    expected = case.gateway_status or direct.status_code
    assert gateway.status_code == expected, (direct.text[:500], gateway.text[:500])
    if gateway.status_code != 200:
        _assert_openai_error(gateway.json())
        return
    if not case.stream:
        assert gateway.json().get("model", M) == direct.json().get("model", M)
        _assert_same(_normalised(direct.json()), _normalised(gateway.json()))
        return
    direct_events, direct_done = _events(direct)
    gateway_events, gateway_done = _events(gateway)
    assert direct_done and gateway_done
    assert len({event["id"] for event in gateway_events}) == 1
    _assert_same(_by_choice(direct_events), _by_choice(gateway_events))


def _by_choice(events: list[Any]) -> dict[Any, list[Any]]:
    """Chunks in order per choice (vLLM interleaves the choices of n > 1 as they come)."""
    grouped: dict[Any, list[Any]] = {}
    for event in events:
        choices = event.get("choices") or []
        index = choices[0]["index"] if len(choices) == 1 else None
        grouped.setdefault(index, []).append(_normalised(event))
    return grouped


def test_responses_api_is_relayed(embedded_server: EmbeddedServer) -> None:
    body = {"model": M, "input": "Say hi", "max_output_tokens": 5, "temperature": 0}
    direct = httpx.post(f"{embedded_server.engine_url}/v1/responses", json=body, timeout=300)
    client = embedded_server.client()
    relayed = client.responses.create(**body)
    assert direct.status_code == 200
    assert relayed.output_text == direct.json()["output"][0]["content"][0]["text"]
    assert relayed.usage is not None
    assert relayed.usage.total_tokens == direct.json()["usage"]["total_tokens"]
    with client.responses.stream(**body) as stream:
        for _ in stream:
            pass
        assert stream.get_final_response().output_text == relayed.output_text


def test_models_carry_vllm_fields_and_retrieve(embedded_server: EmbeddedServer) -> None:
    client = embedded_server.client()
    vllm_card = httpx.get(f"{embedded_server.engine_url}/v1/models").json()["data"][0]
    card = client.models.retrieve(M)
    assert card.id == M
    assert card.model_extra is not None
    assert card.model_extra["root"] == vllm_card["root"]
    assert card.model_extra["max_model_len"] == vllm_card["max_model_len"]
    listed = {model.id: model for model in client.models.list().data}
    assert listed[M].model_extra == card.model_extra
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_text_completions_through_the_sdk(embedded_server: EmbeddedServer) -> None:
    client = embedded_server.client()
    common = {"model": M, "prompt": "The capital of France is", "max_tokens": 6, "temperature": 0}
    completion = client.completions.create(**common)
    assert completion.id.startswith("cmpl-") and completion.model == M
    assert completion.choices[0].text and completion.usage is not None
    chunks = list(client.completions.create(stream=True, stream_options={"include_usage": True},
                                            **common))  # fmt: skip
    streamed = "".join(chunk.choices[0].text for chunk in chunks if chunk.choices)
    assert streamed == completion.choices[0].text
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == completion.usage.completion_tokens


def test_embeddings_through_the_sdk(embedded_server: EmbeddedServer) -> None:
    client = embedded_server.client()
    model = "all-MiniLM-L6-v2"
    assert model in [card.id for card in client.models.list().data]
    base64_default = client.embeddings.create(model=model, input=["teapots", "kettles"])
    floats = client.embeddings.create(model=model, input="teapots", encoding_format="float")
    assert [item.index for item in base64_default.data] == [0, 1]
    assert len(floats.data[0].embedding) == 384
    assert floats.data[0].embedding == pytest.approx(base64_default.data[0].embedding, abs=1e-6)
    assert math.isclose(sum(v * v for v in floats.data[0].embedding), 1.0, rel_tol=1e-4)
    assert floats.usage.prompt_tokens > 0 and floats.model == model
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model=M, input="teapots")
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model=model, input=[[1, 2, 3]])


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_tool_call_round_trip_through_the_sdk(
    embedded_server: EmbeddedServer, stream: bool
) -> None:
    """The model calls the tool, the client answers it, the model answers from the result.
    ``required`` (and a named function) is vLLM's structured output, so the 135M model
    always makes a well-formed call; with ``auto`` it seldom writes the call itself."""
    client = embedded_server.client()
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    common: dict[str, Any] = {"model": M, "tools": TOOLS, "temperature": 0, "max_tokens": 40}
    if stream:
        chunks = list(client.chat.completions.create(
            messages=messages, tool_choice="required", stream=True, **common))  # fmt: skip
        deltas = [call for chunk in chunks if chunk.choices
                  for call in chunk.choices[0].delta.tool_calls or []]  # fmt: skip
        assert deltas and deltas[0].function is not None and deltas[0].id
        name = deltas[0].function.name
        arguments = "".join(delta.function.arguments or "" for delta in deltas if delta.function)
        call_id = deltas[0].id
        completion_id = chunks[0].id
    else:
        first = client.chat.completions.create(messages=messages, tool_choice="required", **common)
        calls = first.choices[0].message.tool_calls
        assert calls and calls[0].type == "function"
        name, arguments, call_id = calls[0].function.name, calls[0].function.arguments, calls[0].id
        completion_id = first.id
    assert name == "get_weather"
    assert msgspec.json.decode(arguments)["city"]
    row = wait_for_conversation(embedded_server.database_url, completion_id)
    logged = row.response[0]["tool_calls"][0]  # the call is kept with the conversation
    assert logged["function"] == {"name": name, "arguments": arguments}
    messages += [
        {"role": "assistant", "content": None, "tool_calls": [{"id": call_id, "type": "function",
         "function": {"name": name, "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": call_id, "content": '{"weather": "sunny, 24 C"}'},
    ]  # fmt: skip
    answer = client.chat.completions.create(messages=messages, **common)
    assert answer.choices[0].message.content
    assert "sunny" in answer.choices[0].message.content  # the model read the tool's result
