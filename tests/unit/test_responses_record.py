"""A Responses API exchange as a conversation row in the chat shape (gateway/responses_record)."""

from __future__ import annotations

from gateway.responses_record import (
    chat_usage,
    finish_reason,
    log_status,
    request_record,
    response_record,
)

CALL = {"type": "function_call", "call_id": "call_1", "name": "get_weather",
        "arguments": '{"city": "Paris"}'}  # fmt: skip
TOOL_CALL = {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}  # fmt: skip


def test_a_string_input_is_one_user_turn_after_the_instructions() -> None:
    payload = {"model": "m", "request_id": "resp_1", "input": "Hi", "instructions": "Be brief.",
               "temperature": 0}  # fmt: skip
    assert request_record(payload) == {
        "temperature": 0,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    }


def test_items_become_chat_turns_with_tool_calls() -> None:
    items = [
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "message", "role": "assistant",
         "content": [{"type": "output_text", "text": "Let me "}, {"type": "output_text",
                                                                 "text": "look."}]},
        CALL,
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
    ]  # fmt: skip
    assert request_record({"input": items})["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "Let me look."},
        {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]


def test_an_item_with_no_chat_counterpart_keeps_the_input_as_sent() -> None:
    image = {"type": "input_image", "image_url": "data:..."}
    items = [{"role": "user", "content": [{"type": "input_text", "text": "What is it?"}, image]},
             {"type": "reasoning", "id": "rs_1", "summary": []}]  # fmt: skip
    record = request_record({"input": items})
    assert record["messages"] == [{"role": "user", "content": items[0]["content"]}]
    assert record["input"] == items


def test_the_output_is_one_choice_with_text_and_calls() -> None:
    response = {
        "status": "completed",
        "output": [
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "message", "content": [{"type": "output_text", "text": "Paris."}]},
            CALL,
        ],
    }
    assert response_record(response) == [
        {"index": 0, "content": "Paris.", "finish_reason": "stop", "tool_calls": [TOOL_CALL]}
    ]


def test_how_it_ended() -> None:
    cut = {"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}}
    assert finish_reason(cut) == "length"
    assert finish_reason({"status": "queued"}) == "queued"
    assert log_status({"status": "completed"}) == ("ok", None)
    assert log_status({"status": "cancelled"}) == ("cancelled", None)
    assert log_status({"status": "failed", "error": {"message": "boom"}}) == ("error", "boom")


def test_usage_in_chat_terms() -> None:
    usage = {"input_tokens": 7, "output_tokens": 3, "total_tokens": 10}
    assert chat_usage({"usage": usage}) == {"prompt_tokens": 7, "completion_tokens": 3}
    assert chat_usage({"usage": None}) is None  # a queued background response


def test_function_tools_in_chat_shape() -> None:
    weather = {"type": "function", "name": "get_weather", "parameters": {"type": "object"},
               "strict": None}  # fmt: skip
    record = request_record({"input": "Hi", "tools": [weather, {"type": "web_search_preview"}]})
    assert record["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "parameters": {"type": "object"}, "strict": None}}]  # fmt: skip
