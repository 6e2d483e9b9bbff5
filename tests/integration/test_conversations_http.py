"""``GET /v1/conversations`` and ``/v1/conversations/{id}``: a key reads back its own
conversations from the conversation log, on SQLite and PostgreSQL (issue 22, the chat page's
history across reloads).

What each caller gets: no key 401; another key's conversation 404 (as an id never used: its
existence is not told), and a conversation id two keys both used shows each key only its own
turns; a bad ``limit`` 400. A regenerated answer replaces the one before it; a grounded
question comes back as the user wrote it, with the sources the answer cited.

No vLLM: the rows are written into the store as the conversation log writes them, and read
over HTTP from a gateway with nothing on its engine port (the ``http_gateway`` fixture).
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from core.store import Database
from core.store.keys import KeyStore
from core.store.tables import Conversation
from retrieval.grounding import grounded_turn
from retrieval.tables import Collection, StoredChunk, StoredDocument
from tests.support import ThreadedGateway

T0 = datetime(2026, 12, 4, 20, 0, tzinfo=UTC)
POLICY = "Purple teapots can be returned within 47 days."
WARRANTY = "The teapot warranty lasts three years."


def _row(key_id: str, conversation: str, n: int, messages: list[Any], answer: str,
         **extra: Any) -> Conversation:  # fmt: skip
    return Conversation(
        id=f"chatcmpl-{key_id}-{conversation}-{n}", conversation_id=conversation,
        api_key_id=key_id, requested_model="support", served_model="support-v1", stream=True,
        request={"messages": messages}, response=[{"content": answer}],
        created_at=T0 + timedelta(minutes=n), **{"status": "ok", **extra},
    )  # fmt: skip


async def _seed(database_url: str) -> dict[str, str]:
    """Keys a and b; a has 'returns' (grounded, regenerated once) and 'shared'; b has
    'private' and its own 'shared'."""
    db = Database(database_url)
    try:
        await db.migrate()
        store = KeyStore(db)
        a, b = await store.create("chat", "a"), await store.create("chat", "b")
        admin = await store.create("admin", "ops")
        system = {"role": "system", "content": "Answer briefly."}
        first = "How long can I return a purple teapot?"
        grounded = {"role": "user", "content": grounded_turn(first, [POLICY, WARRANTY])}
        # The PostgreSQL database is the session's: names and chunk ids of this test's own.
        collection, base = f"handbook-{uuid.uuid4().hex[:8]}", random.randrange(1, 2**30)
        chunks = [base, base + 1]
        async with db.transaction() as session:
            session.add(Collection(name=collection))
            session.add(
                StoredDocument(
                    collection=collection,
                    id="returns",
                    source="handbook/returns.md",
                    content_hash="0",
                )
            )
            await session.flush()
            texts = (POLICY, WARRANTY)
            for ordinal, (chunk_id, text) in enumerate(zip(chunks, texts, strict=True)):
                session.add(StoredChunk(id=chunk_id, collection=collection,
                                        document_id="returns", ordinal=ordinal,
                                        text=text, vector=b""))  # fmt: skip
            session.add_all([
                _row(a.id, "returns", 1, [system, grounded], "Hmm.", context=chunks),
                _row(a.id, "returns", 2, [system, grounded], "Within 47 days [1].",
                     context=chunks),  # regenerated: the same history
                _row(a.id, "returns", 3, [system, {"role": "user", "content": first},
                     {"role": "assistant", "content": "Within 47 days [1]."},
                     {"role": "user", "content": "And mugs?"}], "No idea.", status="cancelled"),
                _row(a.id, "shared", 4, [{"role": "user", "content": "a's question"}], "a1"),
                _row(b.id, "private", 5, [{"role": "user", "content": "b's secret"}], "b1"),
                _row(b.id, "shared", 6, [{"role": "user", "content": "b's question"}], "b2"),
            ])  # fmt: skip
        return {"a": a.key, "b": b.key, "admin": admin.key}
    finally:
        await db.dispose()


def _get(gateway: ThreadedGateway, key: str | None, path: str, **params: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return gateway.get(path, headers=headers, params=params)


async def test_a_key_lists_and_reads_only_its_own_conversations(
    http_gateway: ThreadedGateway, database_url: str
) -> None:
    keys = await _seed(database_url)

    listed = _get(http_gateway, keys["a"], "/v1/conversations")
    assert listed.status_code == 200, listed.text
    summaries = listed.json()["data"]
    assert [s["id"] for s in summaries] == ["shared", "returns"]  # the most recent first
    returns = summaries[1]
    assert returns["title"] == "How long can I return a purple teapot?"
    assert (returns["answers"], returns["model"]) == (3, "support")
    assert returns["updated_at"].endswith("+00:00")
    assert [s["id"] for s in _get(http_gateway, keys["a"], "/v1/conversations",
                                  limit=1, offset=1).json()["data"]] == ["returns"]  # fmt: skip

    read = _get(http_gateway, keys["a"], "/v1/conversations/returns").json()
    assert read["system"] == "Answer briefly." and read["model"] == "support"
    turns = read["turns"]
    assert [turn["answer"] for turn in turns] == ["Within 47 days [1].", "No idea."]
    assert turns[0]["question"] == "How long can I return a purple teapot?"  # not grounded
    assert turns[0]["completion_id"].endswith("-returns-2")
    (citation,) = turns[0]["citations"]  # the answer cites [1] only
    assert citation["index"] == 1 and citation["text"] == POLICY
    assert citation["source"] == "handbook/returns.md"
    assert (turns[1]["question"], turns[1]["status"]) == ("And mugs?", "cancelled")

    shared = _get(http_gateway, keys["a"], "/v1/conversations/shared").json()["turns"]
    assert [turn["question"] for turn in shared] == ["a's question"]


async def test_another_keys_conversation_is_not_found(
    http_gateway: ThreadedGateway, database_url: str
) -> None:
    keys = await _seed(database_url)
    for key, conversation in ((keys["a"], "private"), (keys["b"], "returns"),
                              (keys["admin"], "returns"), (keys["a"], "never-used")):  # fmt: skip
        response = _get(http_gateway, key, f"/v1/conversations/{conversation}")
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == "not_found"
    assert "private" not in str(_get(http_gateway, keys["a"], "/v1/conversations").json())
    assert _get(http_gateway, keys["admin"], "/v1/conversations").json()["data"] == []

    for path in ("/v1/conversations", "/v1/conversations/returns"):
        anonymous = _get(http_gateway, None, path)
        assert anonymous.status_code == 401
        assert anonymous.json()["error"]["type"] == "authentication_error"
        wrong = _get(http_gateway, "lg-not-a-key", path)
        assert wrong.status_code == 401
    bad = _get(http_gateway, keys["a"], "/v1/conversations", limit=0)
    assert bad.status_code == 400 and "error" in bad.json()
