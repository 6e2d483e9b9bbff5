"""Tool calls are valid training data: an approved answer that called a tool trains the call
in the template's own syntax (what vLLM's tool-call parser reads back), on the prompt as vLLM
rendered it, tools included; scrubbed, snapshotted and compared like any other reply."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from adapters.base_model import MARKER_FILE
from adapters.supervisor import BUNDLED_CHAT_TEMPLATE, served_chat_template
from core.store.tables import Conversation, ReviewItem
from trainer.dataset import Example, scrub_example, with_tool_calls
from trainer.pii import ScrubReport
from trainer.qlora import IGNORE, encode, load_tokenizer, token_counter
from trainer.store import example_from

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
CALL = {
    "id": "chatcmpl-tool-1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}


def _served(response: dict[str, Any], correction: str | None = None) -> Example:
    conversation = Conversation(
        id="c1",
        request={"model": "support", "messages": ASK, "tools": TOOLS, "tool_choice": "auto"},
        response=[response],
    )
    reasons = [{"reason": "thumbs_up"}]
    item = ReviewItem(completion_id="c1", alias="support", reasons=reasons, correction=correction)
    return example_from(item, conversation)


def test_an_approved_tool_call_is_kept_with_the_request_tools() -> None:
    example = _served({"role": "assistant", "content": None, "tool_calls": [CALL]})
    assert example.tools == TOOLS
    assert example.reply == "" and example.reply_tool_calls == [CALL]
    assert example.origin == "approved_answer"
    assert example.reply_text == 'get_weather({"city": "Paris"})'


def test_a_correction_replaces_the_call_with_text() -> None:
    example = _served({"role": "assistant", "content": None, "tool_calls": [CALL]}, "Sunny.")
    assert example.reply == "Sunny." and example.reply_tool_calls is None
    assert example.tools == TOOLS  # the prompt is still the one served, tools and all


def test_calls_compare_without_ids_and_with_arguments_in_canonical_order() -> None:
    other = {**CALL, "id": "another", "function": {"name": "get_weather",
             "arguments": '{ "city":"Paris" }'}}  # fmt: skip
    assert with_tool_calls("", [CALL]) == with_tool_calls("", [other])
    assert with_tool_calls("Sure.", [CALL]) == 'Sure.\nget_weather({"city": "Paris"})'
    assert with_tool_calls("text", None) == "text"
    broken = {"function": {"name": "f", "arguments": "{not json"}}
    assert with_tool_calls("", [broken]) == "f({not json)"


def test_snapshots_from_before_tool_fields_still_read() -> None:
    old = {"id": "c1", "alias": "a", "messages": ASK, "reply": "r", "origin": "correction",
           "stratum": "thumbs_down"}  # fmt: skip
    example = Example.from_json(old)
    assert example.tools is None and example.reply_tool_calls is None
    assert Example.from_json(_served({"content": None, "tool_calls": [CALL]}).to_json()) == (
        _served({"content": None, "tool_calls": [CALL]})
    )


def test_the_scrub_reaches_the_arguments_of_a_reply_call() -> None:
    leaking = {**CALL, "function": {"name": "email", "arguments": '{"to": "jane@example.com"}'}}
    example = _served({"role": "assistant", "content": None, "tool_calls": [leaking]})
    report = ScrubReport()
    scrubbed = scrub_example(example, report)
    assert scrubbed.reply_tool_calls is not None
    assert "jane@example.com" not in scrubbed.reply_tool_calls[0]["function"]["arguments"]
    assert scrubbed.reply_tool_calls[0]["function"]["name"] == "email"
    assert report.counts["EMAIL"] == 1


def test_the_trainer_renders_with_the_template_vllm_serves(tmp_path: Path) -> None:
    assert served_chat_template(tmp_path, None) is None  # any other model: its own
    (tmp_path / MARKER_FILE).write_text("{}")
    assert served_chat_template(tmp_path, None) == BUNDLED_CHAT_TEMPLATE
    chosen = tmp_path / "mine.jinja"
    assert served_chat_template(tmp_path, chosen) == chosen


@pytest.fixture(scope="module")
def tokenizer(prepared_model: Path) -> Any:
    return load_tokenizer(prepared_model, str(served_chat_template(prepared_model, None)))


def test_a_tool_call_trains_in_the_syntax_the_parser_reads(tokenizer: Any) -> None:
    example = _served({"role": "assistant", "content": None, "tool_calls": [CALL]})
    ids, labels = encode(tokenizer, example, 4096)
    prompt = tokenizer.apply_chat_template(ASK, tools=TOOLS, add_generation_prompt=True)
    prompt = list(prompt["input_ids"] if hasattr(prompt, "keys") else prompt)
    assert ids[: len(prompt)] == prompt  # the tools are in the prompt, as vLLM renders it
    assert labels[: len(prompt)] == [IGNORE] * len(prompt)
    learnt = tokenizer.decode(ids[len(prompt) :])
    assert learnt == (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
        + tokenizer.eos_token
    )
    assert labels[len(prompt) :] == ids[len(prompt) :]
    assert token_counter(tokenizer)(example) == len(ids)


def test_a_text_reply_to_a_tool_prompt_keeps_the_tools_in_the_prompt(tokenizer: Any) -> None:
    example = _served({"role": "assistant", "content": None, "tool_calls": [CALL]}, "Sunny.")
    ids, labels = encode(tokenizer, example, 4096)
    text = tokenizer.decode(ids)
    assert "<tools>" in text and "get_weather" in text
    learnt = [token for token, label in zip(ids, labels, strict=True) if label != IGNORE]
    assert tokenizer.decode(learnt) == "Sunny." + tokenizer.eos_token
