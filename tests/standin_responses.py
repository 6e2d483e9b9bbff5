"""vLLM's Responses API in the stand-in (``tests/standin_vllm.py``), in vLLM's shapes
(vllm/entrypoints/openai/responses: api_router.py, serving.py, protocol.py):

* ``POST /v1/responses``: the id is the body's ``request_id`` (vLLM's extension) or
  ``resp_<uuid hex>``; ``max_output_tokens`` cuts the answer (status ``incomplete``);
  streamed as ``event: <type>`` / ``data: {...}`` pairs, ``response.created`` first and
  ``response.completed`` last, no ``[DONE]``; ``store`` is silently off unless the store is
  enabled, and ``background`` then is a 400; a background response is queued and completes
  in a thread unless cancelled; a stream asked with ``BREAK_WORD`` ends after three deltas,
  without ``response.completed`` (an upstream broken off);
* ``GET /v1/responses/{id}``: the stored response, else vLLM's 404; ``?stream=true``
  replays a background stream's events after ``starting_after`` (any other id: 400);
* ``POST /v1/responses/{id}/cancel``: a queued or running background response becomes
  ``cancelled``; a finished one is a 400 (``Cannot cancel a synchronous response.``).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

PROMPT_TOKENS = 10
BREAK_WORD = "breaking"  # a streamed answer to a question with it stops after three deltas


@dataclass
class ResponseStore:
    """vLLM's in-memory ``response_store``."""

    stored: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # background streams
    lock: threading.Lock = field(default_factory=threading.Lock)


def responses_post(handler: Any, owner: Any, body: dict[str, Any]) -> None:
    path = handler.path.split("?", 1)[0]
    if path.endswith("/cancel"):
        _cancel(handler, owner.responses, path.split("/")[-2])
        return
    if path != "/v1/responses":
        handler._json({"detail": "Not Found"}, status=404)
        return
    error = _invalid(body, owner)
    if error is not None:
        handler._json(error, status=error["error"]["code"])
        return
    _create(handler, owner, body)


def responses_get(handler: Any, owner: Any) -> None:
    path, _, query = handler.path.partition("?")
    response_id, params = path.split("/")[-1], parse_qs(query)
    with owner.responses.lock:
        response = owner.responses.stored.get(response_id)
        events = owner.responses.events.get(response_id)
    if response is None:
        handler._json(not_found(response_id), status=404)
    elif params.get("stream") != ["true"]:
        handler._json(response)
    elif events is None:  # vLLM streams only what it ran in the background
        handler._json(_error(f"Unknown response_id: {response_id}", "response_id"), 400)
    else:
        after = int(params.get("starting_after", ["-1"])[0])
        send_events(handler, owner, events[after + 1 :], 0)


def not_found(response_id: str) -> dict[str, Any]:
    return _error(f"Response with id '{response_id}' not found.", "response_id", 404)


def _error(message: str, param: str | None, code: int = 400) -> dict[str, Any]:
    kind = "invalid_request_error" if code != 400 else "BadRequestError"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _invalid(body: dict[str, Any], owner: Any) -> dict[str, Any] | None:
    if not isinstance(body.get("input"), str | list):
        return _error("Field required: input", "input")
    if body.get("background") and body.get("store", True) and not owner.store_responses:
        return _error("This vLLM engine does not support `store=True` and therefore does not "
                      "support the background mode.", "background")  # fmt: skip
    previous = body.get("previous_response_id")
    if previous is not None and previous not in owner.responses.stored:
        return not_found(previous)
    return None


def _create(handler: Any, owner: Any, body: dict[str, Any]) -> None:
    words, delay_s = owner.answer(_question(body.get("input")))
    limit = body.get("max_output_tokens")
    status = "completed"
    if isinstance(limit, int) and limit < len(words):
        words, status = words[:limit], "incomplete"
    stored = bool(body.get("store", True)) and owner.store_responses
    response = _response(body, words, status)
    broken = BREAK_WORD in _question(body.get("input"))
    if body.get("background") and body.get("stream"):
        # vLLM serves a background stream from its event store, which GET ?stream=true
        # replays: kept here whole, the response completed at once.
        events = _events(response, words, broken)
        with owner.responses.lock:
            owner.responses.stored[response["id"]] = response
            owner.responses.events[response["id"]] = events
        send_events(handler, owner, events, delay_s)
        return
    if body.get("background"):
        queued = {**response, "status": "queued", "output": [], "usage": None}
        with owner.responses.lock:
            owner.responses.stored[response["id"]] = queued
        threading.Thread(
            target=_finish_later, args=(owner.responses, response, len(words) * delay_s),
            daemon=True,
        ).start()  # fmt: skip
        handler._json(queued)
        return
    if stored:
        with owner.responses.lock:
            owner.responses.stored[response["id"]] = response
    if body.get("stream"):
        send_events(handler, owner, _events(response, words, broken), delay_s)
    else:
        handler._json(response)


def _finish_later(store: ResponseStore, response: dict[str, Any], after_s: float) -> None:
    time.sleep(after_s)
    with store.lock:
        if store.stored[response["id"]]["status"] == "queued":
            store.stored[response["id"]] = response


def _cancel(handler: Any, store: ResponseStore, response_id: str) -> None:
    with store.lock:
        response = store.stored.get(response_id)
        if response is not None and response["status"] in ("queued", "in_progress"):
            response["status"] = "cancelled"
    if response is None:
        handler._json(not_found(response_id), status=404)
    elif response["status"] != "cancelled":
        handler._json(_error("Cannot cancel a synchronous response.", "response_id"), 400)
    else:
        handler._json(response)


def _question(items: Any) -> str:
    if isinstance(items, str):
        return items
    return json.dumps(items)


def _response(body: dict[str, Any], words: list[str], status: str) -> dict[str, Any]:
    text = "".join(words)
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": None}
    message = {"id": f"msg_{uuid.uuid4().hex}", "type": "message", "role": "assistant",
               "status": "completed", "content": [part]}  # fmt: skip
    return {
        "id": body.get("request_id") or f"resp_{uuid.uuid4().hex}",
        "created_at": int(time.time()),
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": body.get("instructions"),
        "metadata": body.get("metadata"),
        "model": body["model"],
        "object": "response",
        "output": [message],
        "parallel_tool_calls": True,
        "temperature": body.get("temperature", 1.0),
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools", []),
        "top_p": body.get("top_p", 1.0),
        "background": bool(body.get("background")),
        "max_output_tokens": body.get("max_output_tokens") or 2048 - PROMPT_TOKENS,
        "max_tool_calls": None,
        "previous_response_id": body.get("previous_response_id"),
        "prompt": None,
        "reasoning": None,
        "service_tier": "auto",
        "status": status,
        "text": None,
        "top_logprobs": 0,
        "truncation": "disabled",
        "usage": {
            "input_tokens": PROMPT_TOKENS,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": len(words),
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": PROMPT_TOKENS + len(words),
        },
        "user": None,
    }


def _events(response: dict[str, Any], words: list[str], broken: bool) -> list[dict[str, Any]]:
    """vLLM's event sequence for a one-message answer, numbered."""
    item, part = response["output"][0], response["output"][0]["content"][0]
    started = {**response, "status": "in_progress", "output": [], "usage": None,
               "incomplete_details": None}  # fmt: skip
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": started},
        {"type": "response.in_progress", "response": started},
        {"type": "response.output_item.added", "output_index": 0,
         "item": {**item, "status": "in_progress", "content": []}},
        {"type": "response.content_part.added", "output_index": 0, "content_index": 0,
         "item_id": item["id"], "part": {**part, "text": ""}},
    ]  # fmt: skip
    deltas = [{"type": "response.output_text.delta", "output_index": 0, "content_index": 0,
               "item_id": item["id"], "delta": word, "logprobs": []} for word in words]  # fmt: skip
    done: list[dict[str, Any]] = [
        {"type": "response.output_text.done", "output_index": 0, "content_index": 0,
         "item_id": item["id"], "text": part["text"], "logprobs": []},
        {"type": "response.content_part.done", "output_index": 0, "content_index": 0,
         "item_id": item["id"], "part": part},
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {"type": "response.completed", "response": response},
    ]  # fmt: skip
    if broken:
        deltas, done = deltas[:3], []
    return [{**event, "sequence_number": number}
            for number, event in enumerate([*events, *deltas, *done])]  # fmt: skip


def send_events(handler: Any, owner: Any, events: list[dict[str, Any]], delay_s: float) -> None:
    """The events as vLLM's SSE: ``event:`` and ``data:`` lines, no ``[DONE]``."""
    handler.send_response(200)
    handler.send_header("content-type", "text/event-stream")
    handler.send_header("transfer-encoding", "chunked")
    handler.end_headers()
    try:
        for event in events:
            if event["type"] == "response.output_text.delta":
                time.sleep(delay_s)
            data = f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()
            handler._write(data)
        handler.wfile.write(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        owner.abandoned += 1
    handler.close_connection = True
