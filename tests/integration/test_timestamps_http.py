"""Every timestamp the API sends carries its UTC offset, on SQLite as on PostgreSQL (issue 22).

SQLite has no time-zone type: before gateway/store/db.py read its DATETIME columns back as UTC,
the SQLite store sent ``2026-12-04T20:00:37.206580`` where PostgreSQL sent ``...+00:00``, and a
browser read the naive one as its own local time (five hours off in New York).

No vLLM: the rows are written straight into the store and read over HTTP from a gateway with
nothing on its engine port (the ``http_gateway`` fixture).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from adapters.tables import AdapterVersion, Alias, Rollout, RolloutEvent
from core.store import Database
from core.store.keys import KeyStore
from core.store.tables import Conversation, ReviewItem
from tests.support import ThreadedGateway

ISO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")
OFFSET = re.compile(r"(Z|[+-]\d{2}:\d{2})$")
NEW_YORK = timezone(timedelta(hours=-5))


async def _seed(database_url: str) -> tuple[dict[str, str], str, str]:
    """Keys, a flagged conversation and a rollout with history; the keys, alias and the
    completion id."""
    db = Database(database_url)
    try:
        await db.migrate()
        keys = KeyStore(db)
        bearer = {scope: (await keys.create(scope, "tests")).key for scope in ("admin", "chat")}
        alias, completion = f"tz{uuid.uuid4().hex[:6]}", f"chatcmpl-{uuid.uuid4().hex}"
        async with db.transaction() as session:
            session.add(Conversation(
                id=completion, requested_model=alias, served_model=alias, stream=False,
                status="ok", request={"messages": [{"role": "user", "content": "hi"}]},
                response=[{"content": "hello"}]))  # fmt: skip
            # Written as a New York time: it must come back as the same instant, in UTC.
            session.add(ReviewItem(
                completion_id=completion, alias=alias, served_model=alias, state="pending",
                reasons=[{"reason": "correction", "detail": {}}],
                created_at=datetime(2026, 12, 4, 15, 0, 37, tzinfo=NEW_YORK)))  # fmt: skip
            for number, state in ((1, "live"), (2, "canary")):
                session.add(AdapterVersion(
                    name=f"{alias}-v{number}", alias=alias, number=number, sha256="0" * 64,
                    rank=4, target_modules=["q_proj"], path="/nowhere", state=state))  # fmt: skip
            session.add(Alias(name=alias, live_version=f"{alias}-v1"))
            rollout = Rollout(alias=alias, candidate=f"{alias}-v2", baseline=f"{alias}-v1",
                              state="running", steps=[50, 100], weight=0.5)  # fmt: skip
            session.add(rollout)
            await session.flush()
            session.add(RolloutEvent(rollout_id=rollout.id, kind="started", detail={}))
        return bearer, alias, completion
    finally:
        await db.dispose()


def _timestamps(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every string in the JSON that reads as a date and time, with where it was."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _timestamps(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _timestamps(item, f"{path}[{index}]")
    elif isinstance(value, str) and ISO_TIME.match(value):
        yield path, value


async def test_every_timestamp_carries_an_offset(
    http_gateway: ThreadedGateway, database_url: str
) -> None:
    keys, alias, completion = await _seed(database_url)
    admin = {"Authorization": f"Bearer {keys['admin']}"}
    seen: dict[str, str] = {}
    for path, params in (
        ("/v1/admin/keys", {}),
        ("/v1/admin/review", {"conversations": "true"}),
        ("/v1/admin/adapters", {"alias": alias}),
        (f"/v1/admin/rollouts/{alias}", {}),
    ):
        response = http_gateway.get(path, headers=admin, params=params)
        assert response.status_code == 200, (path, response.text)
        stamps = dict(_timestamps(response.json(), path))
        assert stamps, f"{path} sent no timestamp to check"
        seen.update(stamps)
    naive = {where: stamp for where, stamp in seen.items() if not OFFSET.search(stamp)}
    assert not naive, f"timestamps without an offset: {naive}"

    review = http_gateway.get("/v1/admin/review", headers=admin).json()["data"]
    created = next(item["created_at"] for item in review if item["completion_id"] == completion)
    assert datetime.fromisoformat(created) == datetime(2026, 12, 4, 20, 0, 37, tzinfo=UTC)
