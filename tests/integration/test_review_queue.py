"""Flagging rules and the review queue on the real stack, on SQLite and on PostgreSQL.

What each bad input gets: an unknown item 404 ``review_not_found``; a bad state or reason
filter 400 naming the parameter; a correction over the limit 400 ``correction_too_long``;
editing a decided item 400; a chat key on the admin routes 403. Nothing is changed by any of
them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from gateway.review import MAX_CORRECTION_CHARS
from tests.integration.conftest import BASE_MODEL, sdk_client
from tests.support import ThreadedGateway, create_keys, wait_until

pytestmark = pytest.mark.vllm


def _ask(gateway: ThreadedGateway, key: str, question: str, conversation: str) -> str:
    completion = sdk_client(gateway.base_url, key).chat.completions.create(
        model=BASE_MODEL,
        messages=[{"role": "user", "content": question}],
        max_tokens=8,
        temperature=0,
        extra_body={"conversation_id": conversation},
    )
    return completion.id


def _admin(keys: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {keys['admin']}"}


def _items(gateway: ThreadedGateway, keys: dict[str, str], **params: Any) -> list[Any]:
    response = gateway.get("/v1/admin/review", headers=_admin(keys), params=params)
    assert response.status_code == 200, response.text
    data: list[Any] = response.json()["data"]
    return data


def _item_for(gateway: ThreadedGateway, keys: dict[str, str], completion_id: str) -> Any:
    def find() -> Any:
        items = _items(gateway, keys, state="", limit=1000)
        return next((item for item in items if item["completion_id"] == completion_id), None)

    return wait_until(find, 30, f"a review item for {completion_id}")


def test_feedback_flags_and_the_operator_decides(
    store_gateway: tuple[ThreadedGateway, dict[str, str]],
) -> None:
    gateway, keys = store_gateway
    chat = {"Authorization": f"Bearer {keys['chat']}"}
    corrected = _ask(gateway, keys["chat"], "What is the capital of Zorbland?", "c-1")
    disliked = _ask(gateway, keys["chat"], "Name a colour.", "c-2")

    response = gateway.post(
        "/v1/feedback",
        headers=chat,
        json={
            "completion_id": corrected,
            "score": -1,
            "correction": "The capital is Quux.",
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["flagged"] == ["correction"]
    response = gateway.post(
        "/v1/feedback", headers=chat, json={"completion_id": disliked, "score": -1}
    )
    assert response.json()["flagged"] == ["negative_feedback"]

    item = _item_for(gateway, keys, corrected)
    assert item["state"] == "pending" and item["reasons"] == ["correction"]
    assert item["correction"] == "The capital is Quux."
    # PostgreSQL is one database for the whole session: other modules' items are there too.
    ours = {corrected, disliked}
    listed = _items(gateway, keys, reason="negative_feedback", limit=1000)
    assert [i["completion_id"] for i in listed if i["completion_id"] in ours] == [disliked]

    shown = gateway.get(f"/v1/admin/review/{item['id']}", headers=_admin(keys)).json()
    assert shown["messages"][-1]["content"] == "What is the capital of Zorbland?"
    assert isinstance(shown["answer"], str)

    edited = httpx.patch(
        f"{gateway.base_url}/v1/admin/review/{item['id']}",
        headers=_admin(keys),
        json={"correction": "Quux is the capital."},
    )
    assert edited.status_code == 200 and edited.json()["correction"] == "Quux is the capital."
    approved = gateway.post(
        f"/v1/admin/review/{item['id']}/decision",
        headers=_admin(keys),
        json={"decision": "approve", "revision": edited.json()["revision"]},
    )
    assert approved.json()["state"] == "approved"
    assert approved.json()["correction"] == "Quux is the capital."

    other = _item_for(gateway, keys, disliked)
    rejected = gateway.post(
        f"/v1/admin/review/{other['id']}/decision",
        headers=_admin(keys),
        json={"decision": "reject", "note": "fine answer"},
    )
    assert rejected.json()["state"] == "rejected"
    pending = _items(gateway, keys, limit=1000)
    assert not [i for i in pending if i["completion_id"] in ours]  # nothing of ours pending
    metrics = gateway.get("/metrics").text
    assert 'loragate_flags_total{reason="correction"} 1.0' in metrics
    assert 'loragate_flags_total{reason="negative_feedback"} 1.0' in metrics


def test_a_retried_turn_flags_the_earlier_answer(
    store_gateway: tuple[ThreadedGateway, dict[str, str]],
) -> None:
    gateway, keys = store_gateway
    conversation = f"retry-{uuid.uuid4().hex[:8]}"
    first = _ask(gateway, keys["chat"], "Tell me a fact about owls.", conversation)
    second = _ask(gateway, keys["chat"], "Tell me a fact about owls.", conversation)
    item = _item_for(gateway, keys, first)
    assert item["reasons"] == ["retry"]
    assert second not in {i["completion_id"] for i in _items(gateway, keys, state="")}


def test_operator_flag_and_bad_input(
    store_gateway: tuple[ThreadedGateway, dict[str, str]],
) -> None:
    gateway, keys = store_gateway
    completion = _ask(gateway, keys["chat"], "Say hello.", "c-3")
    flagged = gateway.post(
        "/v1/admin/review", headers=_admin(keys), json={"completion_id": completion, "note": "tone"}
    )
    assert flagged.status_code == 201, flagged.text
    item = flagged.json()
    assert item["reasons"] == ["operator_flag"] and item["state"] == "pending"

    def error(response: httpx.Response) -> dict[str, Any]:
        body: dict[str, Any] = response.json()["error"]
        return body

    missing = gateway.get("/v1/admin/review/999999", headers=_admin(keys))
    assert missing.status_code == 404 and error(missing)["code"] == "review_not_found"
    bad_state = gateway.get("/v1/admin/review", headers=_admin(keys), params={"state": "done"})
    assert bad_state.status_code == 400 and error(bad_state)["param"] == "state"
    bad_reason = gateway.get("/v1/admin/review", headers=_admin(keys), params={"reason": "x"})
    assert bad_reason.status_code == 400 and error(bad_reason)["param"] == "reason"
    too_long = httpx.patch(
        f"{gateway.base_url}/v1/admin/review/{item['id']}",
        headers=_admin(keys),
        json={"correction": "x" * (MAX_CORRECTION_CHARS + 1)},
    )
    assert too_long.status_code == 400 and error(too_long)["code"] == "correction_too_long"
    forbidden = gateway.get("/v1/admin/review", headers={"Authorization": f"Bearer {keys['chat']}"})
    assert forbidden.status_code == 403
    unknown = gateway.post(
        "/v1/admin/review", headers=_admin(keys), json={"completion_id": "chatcmpl-nope"}
    )
    assert unknown.status_code == 404

    gateway.post(
        f"/v1/admin/review/{item['id']}/decision", headers=_admin(keys), json={"decision": "reject"}
    )
    late_edit = httpx.patch(
        f"{gateway.base_url}/v1/admin/review/{item['id']}",
        headers=_admin(keys),
        json={"correction": "new"},
    )
    assert late_edit.status_code == 400
    unchanged = gateway.get(f"/v1/admin/review/{item['id']}", headers=_admin(keys)).json()
    assert unchanged["state"] == "rejected" and unchanged["correction"] is None


def test_trusted_corrections_skip_review(
    gateway_factory: Callable[..., ThreadedGateway],
) -> None:
    gateway = gateway_factory(review_trust_corrections=True)
    keys = create_keys(gateway.settings.resolved_database_url)
    completion = _ask(gateway, keys["chat"], "What is 2+2?", "c-4")
    gateway.post(
        "/v1/feedback",
        headers={"Authorization": f"Bearer {keys['chat']}"},
        json={"completion_id": completion, "correction": "4"},
    )
    item = _item_for(gateway, keys, completion)
    assert item["state"] == "approved" and item["reviewer"] == "trusted-user"
