"""The console's list views over HTTP, on SQLite and PostgreSQL (issue 22).

``GET /v1/admin/rollouts?alias=`` and ``/v1/admin/experiments?alias=``: an alias with none is
an empty list (200), not the single routes' 404. ``GET /v1/admin/conversations``: the log,
newest first, searched by text or exact id, by key, model and status, paged with a total.
What bad input gets: a chat key 403, a status outside ok/error/cancelled or a bad limit 400,
a missing alias 400. No vLLM: rows are written straight into the store.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from adapters.tables import AdapterVersion, Alias, Rollout
from core.store import Database
from core.store.keys import KeyStore
from core.store.tables import Conversation
from tests.support import ThreadedGateway
from trainer.tables import TrainingRun

T0 = datetime(2026, 12, 4, 20, 0, tzinfo=UTC)


async def _seed(database_url: str, tag: str) -> dict[str, str]:
    db = Database(database_url)
    try:
        await db.migrate()
        store = KeyStore(db)
        admin, chat = await store.create("admin", "ops"), await store.create("chat", "bot")
        async with db.transaction() as session:
            for n in range(5):
                session.add(Conversation(
                    id=f"chatcmpl-{tag}-{n}", conversation_id=f"{tag}-c{n}",
                    api_key_id=chat.id, requested_model=f"{tag}-alias",
                    served_model=f"{tag}-alias-v1", stream=False,
                    status="error" if n == 4 else "ok",
                    request={"messages": [{"role": "user", "content": f"{tag} question {n}"}]},
                    response=[{"content": "the WIDGET answer" if n == 2 else "no"}],
                    created_at=T0 + timedelta(minutes=n)))  # fmt: skip
            session.add(Rollout(alias=f"{tag}-alias", candidate=f"{tag}-alias-v2",
                                state="running", steps=[50, 100], weight=0.5))  # fmt: skip
            for number, state in ((1, "live"), (2, "rolled_back")):
                session.add(AdapterVersion(
                    name=f"{tag}-again-v{number}", alias=f"{tag}-again", number=number,
                    sha256=str(number) * 64, rank=4, target_modules=["q_proj"], path="/x",
                    state=state))  # fmt: skip
            session.add(Alias(name=f"{tag}-again", live_version=f"{tag}-again-v1"))
            for state in ("failed", "published"):
                session.add(TrainingRun(
                    alias=f"{tag}-alias", state=state, trigger="manual",
                    report={"gate": {"passed": True}, "holdout_items": [{"id": "x"}]}))  # fmt: skip
        return {"admin": admin.key, "chat": chat.key, "chat_id": chat.id}
    finally:
        await db.dispose()


def _get(gateway: ThreadedGateway, key: str, path: str, **params: Any) -> Any:
    return gateway.get(path, headers={"Authorization": f"Bearer {key}"}, params=params)


async def test_list_views_and_the_log_search(
    http_gateway: ThreadedGateway, database_url: str
) -> None:
    tag = uuid.uuid4().hex[:8]  # the PostgreSQL database is the session's
    keys = await _seed(database_url, tag)
    admin = keys["admin"]

    rollouts = _get(http_gateway, admin, "/v1/admin/rollouts", alias=f"{tag}-alias").json()
    assert [r["state"] for r in rollouts["data"]] == ["running"]
    for path in ("/v1/admin/rollouts", "/v1/admin/experiments"):
        quiet = _get(http_gateway, admin, path, alias=f"{tag}-quiet")
        assert quiet.status_code == 200 and quiet.json()["data"] == [], quiet.text
        assert _get(http_gateway, admin, path).status_code == 400  # no alias

    def ids(**params: Any) -> tuple[list[str], int]:
        response = _get(http_gateway, admin, "/v1/admin/conversations", **params)
        assert response.status_code == 200, response.text
        body = response.json()
        return [row["id"] for row in body["data"]], body["total"]

    assert ids(model=f"{tag}-alias") == ([f"chatcmpl-{tag}-{n}" for n in (4, 3, 2, 1, 0)], 5)
    assert ids(q="widget", key_id=keys["chat_id"]) == ([f"chatcmpl-{tag}-2"], 1)  # any case
    assert ids(q=f"{tag} question 3") == ([f"chatcmpl-{tag}-3"], 1)
    assert ids(q=f"{tag}-c1") == ([f"chatcmpl-{tag}-1"], 1)  # a conversation id
    assert ids(q=f"{tag}%question") == ([], 0)  # % and _ are text, not wildcards
    assert ids(q=f"{tag}_question") == ([], 0)
    assert ids(q=f"chatcmpl-{tag}-0") == ([f"chatcmpl-{tag}-0"], 1)
    assert ids(model=f"{tag}-alias-v1", status="error") == ([f"chatcmpl-{tag}-4"], 1)
    assert ids(model=f"{tag}-alias", limit=2, offset=2) == (
        [f"chatcmpl-{tag}-2", f"chatcmpl-{tag}-1"], 5)  # fmt: skip
    row = _get(http_gateway, admin, "/v1/admin/conversations", q=f"{tag}-c2").json()["data"][0]
    assert row["question"] == f"{tag} question 2" and row["answer"] == "the WIDGET answer"
    assert row["created_at"].endswith("+00:00")

    runs = _get(http_gateway, admin, "/v1/admin/training/runs", alias=f"{tag}-alias").json()
    assert [run["state"] for run in runs["data"]] == ["published", "failed"]  # newest first
    assert runs["data"][0]["report"] == {"gate": {"passed": True}}  # no per-item answers
    assert runs["data"][0]["started_at"].endswith("+00:00")
    assert _get(http_gateway, admin, "/v1/admin/training/runs", alias=f"{tag}-none").json()[
        "data"] == []  # fmt: skip

    for params in ({"status": "lost"}, {"limit": 0}, {"limit": 201}):
        bad = _get(http_gateway, admin, "/v1/admin/conversations", **params)
        assert bad.status_code == 400 and "error" in bad.json(), params
    for path in ("/v1/admin/conversations", "/v1/admin/rollouts", "/v1/admin/experiments",
                 "/v1/admin/training/runs"):  # fmt: skip
        refused = _get(http_gateway, keys["chat"], path, alias="x")
        assert refused.status_code == 403, path


async def test_a_rolled_back_version_rolls_out_again_when_asked(
    http_gateway: ThreadedGateway, database_url: str
) -> None:
    tag = uuid.uuid4().hex[:8]
    keys = await _seed(database_url, tag)
    admin = {"Authorization": f"Bearer {keys['admin']}"}
    body = {"alias": f"{tag}-again", "version": f"{tag}-again-v2", "steps": [50, 100]}
    refused = http_gateway.post("/v1/admin/rollouts", headers=admin, json=body)
    assert refused.status_code == 409, refused.text
    assert "roll it out again deliberately" in refused.json()["error"]["message"]
    started = http_gateway.post("/v1/admin/rollouts", headers=admin, json={**body, "again": True})
    assert started.status_code == 201, started.text
    assert (started.json()["state"], started.json()["weight"]) == ("running", 0.5)
