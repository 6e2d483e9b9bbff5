"""A Responses API exchange in the conversation log's chat shape: its input as chat messages,
its output as one choice, its usage as prompt and completion tokens, its status as the log's.

The log's readers (a key's history, the log search, the flagging rules, review and the
trainer) read chat messages; a Responses row in that shape is read like any chat row. Input
items with no chat counterpart (reasoning, images in a list of their own, built-in tool
calls) are kept: the row then also has the ``input`` as sent. Function tools are in chat's
shape too.
"""

from __future__ import annotations

from typing import Any

from core.store.conversations import Status

_TEXT_PARTS = ("input_text", "output_text", "text")
# Fields of the body the row has in another form (messages), or that are the gateway's.
_NOT_RECORDED = ("model", "request_id", "input", "instructions")
# A Responses function tool is flat (``{"type": "function", "name": ...}``); chat nests these.
_FUNCTION_KEYS = ("name", "description", "parameters", "strict")


def request_record(payload: dict[str, Any]) -> dict[str, Any]:
    """The row's ``request``: the body as sent to vLLM, its input as ``messages``."""
    messages, complete = as_messages(payload.get("instructions"), payload.get("input"))
    record = {key: value for key, value in payload.items() if key not in _NOT_RECORDED}
    record["messages"] = messages
    if not complete:
        record["input"] = payload.get("input")
    if isinstance(payload.get("tools"), list):
        record["tools"] = chat_tools(payload["tools"])
    return record


def chat_tools(tools: list[Any]) -> list[dict[str, Any]]:
    """Function tools in chat's shape (the trainer renders them with the chat template);
    vLLM's built-in tools (web search, code interpreter, MCP) have none and are left out."""
    return [
        {"type": "function", "function": {key: tool[key] for key in _FUNCTION_KEYS if key in tool}}
        for tool in tools
        if isinstance(tool, dict) and tool.get("type") == "function"
    ]


def as_messages(instructions: Any, items: Any) -> tuple[list[dict[str, Any]], bool]:
    """Chat messages for ``instructions`` and ``input``; False when some item had none."""
    messages: list[dict[str, Any]] = []
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    if isinstance(items, str):
        return [*messages, {"role": "user", "content": items}], True
    complete = True
    for item in items if isinstance(items, list) else []:
        message = _message(item)
        if message is None:
            complete = False
        else:
            messages.append(message)
    return messages, complete


def _message(item: Any) -> dict[str, Any] | None:
    if not isinstance(item, dict):
        return None
    kind = item.get("type", "message")  # an easy input message has no type
    if kind == "message" and isinstance(item.get("role"), str):
        return {"role": item["role"], "content": _content(item.get("content"))}
    if kind == "function_call":
        return {"role": "assistant", "content": None, "tool_calls": [_tool_call(item)]}
    if kind == "function_call_output":
        return {"role": "tool", "tool_call_id": item.get("call_id"), "content": item.get("output")}
    return None


def _content(content: Any) -> Any:
    """Text parts become one string, as a chat message has it; other parts stay as sent."""
    if not isinstance(content, list):
        return content
    if all(isinstance(part, dict) and part.get("type") in _TEXT_PARTS for part in content):
        return "".join(str(part.get("text") or "") for part in content)
    return content


def _tool_call(item: dict[str, Any]) -> dict[str, Any]:
    function = {"name": item.get("name"), "arguments": item.get("arguments") or ""}
    return {"id": item.get("call_id"), "type": "function", "function": function}


def response_record(response: dict[str, Any]) -> list[dict[str, Any]]:
    """The row's ``response``: one choice with the output text and the function calls."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for item in response.get("output") or []:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "message":
            texts += [str(part.get("text") or "") for part in item.get("content") or []
                      if isinstance(part, dict) and part.get("type") == "output_text"]  # fmt: skip
        elif item.get("type") == "function_call":
            calls.append(_tool_call(item))
    choice: dict[str, Any] = {
        "index": 0,
        "content": "".join(texts),
        "finish_reason": finish_reason(response),
    }
    if calls:
        choice["tool_calls"] = calls
    return [choice]


def partial_record(texts: list[str]) -> list[dict[str, Any]]:
    """The row's ``response`` for a stream cut short: the text relayed so far."""
    return [{"index": 0, "content": "".join(texts), "finish_reason": None}]


def finish_reason(response: dict[str, Any]) -> str | None:
    """Chat's word for how it ended; a response not yet done keeps its own (``queued``)."""
    status = response.get("status")
    if status == "completed":
        return "stop"
    if status == "incomplete":
        reason = (response.get("incomplete_details") or {}).get("reason")
        return "length" if reason == "max_output_tokens" else reason
    return status if isinstance(status, str) else None


def chat_usage(response: dict[str, Any]) -> dict[str, int] | None:
    """The response's usage as chat's prompt and completion tokens (None: not known yet)."""
    usage = response.get("usage")
    if not isinstance(usage, dict):
        return None
    return {
        "prompt_tokens": int(usage.get("input_tokens") or 0),
        "completion_tokens": int(usage.get("output_tokens") or 0),
    }


def log_status(response: dict[str, Any]) -> tuple[Status, str | None]:
    """The row's status and error for a response as vLLM reported it."""
    status = response.get("status")
    if status == "failed":
        error = response.get("error")
        message = error.get("message") if isinstance(error, dict) else None
        return "error", str(message or "the response failed")
    if status == "cancelled":
        return "cancelled", None
    return "ok", None
