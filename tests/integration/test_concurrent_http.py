"""Mixed concurrent traffic against a real gateway, on SQLite and PostgreSQL (issue 18).

A real gateway (uvicorn + Litestar, its store, its background writers and flaggers) in front
of the stand-in vLLM of tests/standin_vllm.py, in a child process, so that many clients fit on
two CPU cores.
At once: users chat, regenerate answers (the automatic ``retry`` flag of the earlier
answer), and post corrections twice (a double click) while an operator flags the same
answer and another replica's automatic flagging examines it (before, during or after the
corrections, as the seeded start order falls); reviewers decide the queue two at a time;
an admin publishes the same adapter twice and another beside it, starts the same rollout
twice, pauses and resumes it, then promotes and rolls it back at once.

Asserted: no 5xx; every acknowledged correction and flag is in the store exactly once (one
feedback row per answer and key, holding an acknowledged correction; one review item per
answer, with each reason once, its correction the user's last while pending); of racing
decisions, publishes and rollout commands one wins and the others get 409.

Sizing: the feedback race of issue 18 lost 74 of 120 posts with 3 per answer; here every
answer gets 2 corrections, a flag and an examination at once, ``USERS`` x ``TURNS`` answers
(plus regenerations) per store. The alias steps' races are sized in test_concurrent_steps.py.
``LORAGATE_TEST_SEED`` replays the order.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from adapters.tables import AdapterVersion, Alias, Rollout
from core.sections import FlagRules
from core.settings import load_settings
from core.store import Database
from core.store.conversations import ConversationRecord
from core.store.keys import KeyStore
from core.store.tables import Feedback, ReviewItem
from gateway.flagging import Flagger
from tests.own_store import own_database_url  # noqa: F401 (database_url: a store of its own)
from tests.standin_vllm import StandInVllmProcess
from tests.support import ThreadedGateway, create_keys, session_seed, tiny_lora

SEED = session_seed()
USERS = 6
TURNS = 4
BASE = "standin-base"


@dataclass
class Stack:
    base_url: str  # the gateway's
    keys: dict[str, str]
    db: Database  # another replica's handle: its flagger, and the test's reads
    flagger: Flagger


@dataclass
class Ledger:
    """What the clients saw: every response, and what the gateway acknowledged."""

    responses: list[tuple[str, int, str]] = field(default_factory=list)
    corrections: dict[str, set[str]] = field(default_factory=dict)  # completion -> accepted
    flagged: set[str] = field(default_factory=set)  # operator flags accepted
    examined: set[str] = field(default_factory=set)  # automatic flags written
    retried: set[str] = field(default_factory=set)  # answers asked again

    def saw(self, what: str, response: httpx.Response) -> httpx.Response:
        self.responses.append((what, response.status_code, response.text[:300]))
        return response


@pytest.fixture
def engine() -> Iterator[StandInVllmProcess]:
    engine = StandInVllmProcess.start(BASE)
    yield engine
    engine.stop()


@pytest.fixture
async def stack(
    database_url: str, tmp_path: Path, engine: StandInVllmProcess
) -> AsyncIterator[Stack]:
    keys = await asyncio.to_thread(create_keys, database_url)
    settings = load_settings(
        data_dir=tmp_path, engine_mode="external", database_url=database_url,
        engine_urls=engine.url, base_model_name=BASE, log_format="text",
        reconcile_interval_s=0.5, adapter_wait_s=60,  # a loaded machine: wait, not 503
    )  # fmt: skip
    gateway = await asyncio.to_thread(ThreadedGateway.start, settings)
    db = Database(database_url)
    yield Stack(gateway.base_url, keys, db, Flagger(db, FlagRules()))
    await asyncio.to_thread(gateway.stop)
    await db.dispose()


def _lora(root: Path, seed: int) -> str:
    return str(tiny_lora(root, seed))


class Clients:
    """The chat key's and the admin key's HTTP clients, recording every answer."""

    def __init__(
        self, stack: Stack, ledger: Ledger, alias: str, rng: random.Random,
        turns: int = TURNS, max_tokens: int | None = None,
    ) -> None:  # fmt: skip
        self.stack, self.ledger, self.alias, self.rng = stack, ledger, alias, rng
        self.turns, self.max_tokens = turns, max_tokens
        self.chat = _client(stack.base_url, stack.keys["chat"])
        self.admin = _client(stack.base_url, stack.keys["admin"])

    async def close(self) -> None:
        await self.chat.aclose()
        await self.admin.aclose()

    async def user(self, number: int) -> None:
        conversation = f"conv-{number}-{uuid.uuid4().hex[:6]}"
        for turn in range(self.turns):
            question = [{"role": "user", "content": f"user {number}, question {turn}"}]
            answer = await self._ask(question, conversation)
            if self.rng.random() < 0.5:  # regenerate: the earlier answer gets the retry flag
                self.ledger.retried.add(answer)
                answer = await self._ask(question, conversation)
            await self._rate(answer, f"{number}-{turn}")

    async def _ask(self, messages: list[dict[str, str]], conversation: str) -> str:
        body: dict[str, Any] = {"model": self.alias, "messages": messages,
                                "conversation_id": conversation}  # fmt: skip
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        response = self.ledger.saw("chat", await self.chat.post("/v1/chat/completions", json=body))
        assert response.status_code == 200, response.text
        return str(response.json()["id"])

    async def _rate(self, completion_id: str, label: str) -> None:
        """Two corrections (a double click), an operator's flag and another replica's
        automatic flagging of the same answer, in a seeded order with seeded head starts."""
        corrections = [f"fix {label}.{n}" for n in range(2)]
        writers: list[Awaitable[None]] = [
            self._correct(completion_id, text) for text in corrections
        ]
        writers += [self._flag(completion_id), self._examine(completion_id)]
        self.rng.shuffle(writers)
        pauses = [self.rng.uniform(0, 0.01) for _ in writers]
        await asyncio.gather(
            *(_after(pause, writer) for pause, writer in zip(pauses, writers, strict=True))
        )

    async def _correct(self, completion_id: str, text: str) -> None:
        body = {"completion_id": completion_id, "score": -1, "correction": text}
        response = self.ledger.saw("feedback", await self.chat.post("/v1/feedback", json=body))
        if response.status_code in (200, 202):
            self.ledger.corrections.setdefault(completion_id, set()).add(text)

    async def _flag(self, completion_id: str) -> None:
        body = {"completion_id": completion_id, "flag": "tone"}
        response = self.ledger.saw("flag", await self.admin.post("/v1/feedback", json=body))
        if response.status_code in (200, 202):
            self.ledger.flagged.add(completion_id)

    async def _examine(self, completion_id: str) -> None:
        """The automatic rules on another replica: weakly grounded, "I don't know" though
        the best source scored well (both flag it)."""
        record = ConversationRecord(
            id=completion_id, requested_model=self.alias, served_model=self.alias, stream=False,
            request={}, groundedness=0.1, top_score=0.9,
            response=[{"index": 0, "content": "I don't know.", "finish_reason": "stop"}],
        )  # fmt: skip
        await self.stack.flagger.examine([record])
        self.ledger.examined.add(completion_id)

    # -- operators --------------------------------------------------------------------------
    async def reviewer(self, users: asyncio.Future[Any]) -> None:
        """Two reviewers decide each pending item at once, on the revision they read."""
        while not users.done():
            listed = await self.admin.get("/v1/admin/review", params={"alias": self.alias})
            self.ledger.saw("review list", listed)
            for card in listed.json()["data"][:4]:
                results = await asyncio.gather(
                    self._decide(card, "approve"), self._decide(card, "reject")
                )
                statuses = sorted(results)
                assert statuses.count(200) <= 1 and set(statuses) <= {200, 409}, statuses
            await asyncio.sleep(0.05)

    async def _decide(self, card: dict[str, Any], decision: str) -> int:
        body = {"decision": decision, "revision": card["revision"]}
        path = f"/v1/admin/review/{card['id']}/decision"
        return self.ledger.saw("decision", await self.admin.post(path, json=body)).status_code

    async def publisher(self, root: Path) -> list[dict[str, Any]]:
        same, other = _lora(root, 30), _lora(root, 31)
        posts = [self._publish(same), self._publish(same), self._publish(other)]
        return list(await asyncio.gather(*posts))

    async def _publish(self, path: str) -> dict[str, Any]:
        body = {"path": path, "alias": self.alias}
        response = self.ledger.saw(
            "publish", await self.admin.post("/v1/admin/adapters", json=body)
        )
        assert response.status_code == 201, response.text
        return dict(response.json())

    async def rollout(self, candidate: str) -> None:
        start = {"alias": self.alias, "version": candidate, "steps": [20, 50, 100]}
        started = await asyncio.gather(*(self._admin("rollout start", "/v1/admin/rollouts", start)
                                         for _ in range(2)))  # fmt: skip
        assert sorted(started) == [201, 409], started
        for action in ("pause", "resume"):
            await asyncio.sleep(self.rng.uniform(0.05, 0.2))
            assert await self._admin(action, f"/v1/admin/rollouts/{self.alias}/{action}") == 200
        await asyncio.sleep(self.rng.uniform(0.1, 0.3))  # canary traffic meanwhile
        ended = await asyncio.gather(
            *(self._admin(action, f"/v1/admin/rollouts/{self.alias}/{action}")
              for action in ("promote", "rollback"))
        )  # fmt: skip
        assert sorted(ended) == [200, 409], ended

    async def _admin(self, what: str, path: str, body: dict[str, Any] | None = None) -> int:
        return self.ledger.saw(what, await self.admin.post(path, json=body or {})).status_code


def _client(base_url: str, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base_url, timeout=120,
                             headers={"Authorization": f"Bearer {key}"})  # fmt: skip


async def _after(pause: float, writer: Awaitable[None]) -> None:
    await asyncio.sleep(pause)
    await writer


async def test_mixed_traffic_loses_nothing_and_is_never_a_5xx(
    stack: Stack, engine: StandInVllmProcess, tmp_path: Path
) -> None:
    rng, ledger = random.Random(SEED), Ledger()
    alias = f"mix-{uuid.uuid4().hex[:8]}"
    clients = Clients(stack, ledger, alias, rng)
    try:
        assert await clients._admin("alias", "/v1/admin/aliases", {"alias": alias}) == 201
        first = await clients._publish(_lora(tmp_path / "first", 1))
        candidate = await clients._publish(_lora(tmp_path / "candidate", 2))
        assert (first["state"], candidate["state"]) == ("live", "candidate")

        users = asyncio.ensure_future(asyncio.gather(*(clients.user(n) for n in range(USERS))))
        _, published, _ = await asyncio.gather(
            clients.reviewer(users), clients.publisher(tmp_path / "more"),
            clients.rollout(candidate["name"]),
        )  # fmt: skip
        await users
    finally:
        await clients.close()

    where = f"seed {SEED}, {stack.db.url.get_backend_name()}"
    server_errors = [r for r in ledger.responses if r[1] >= 500]
    assert not server_errors, f"{where}: {len(server_errors)} 5xx: {server_errors[:3]}"
    assert engine.chats >= USERS * TURNS and ledger.corrections and ledger.flagged, where
    assert (
        len({p["name"] for p in published[:2]}) == 1
        and published[2]["name"] != published[0]["name"]
    )
    await _check_store(stack, ledger, alias, where)
    await _check_rollout(stack.db, alias, candidate["name"], first["name"], where)


async def _check_store(stack: Stack, ledger: Ledger, alias: str, where: str) -> None:
    chat = await KeyStore(stack.db).find(stack.keys["chat"])
    assert chat is not None
    ids = set(ledger.corrections) | ledger.flagged | ledger.examined | ledger.retried
    # The retry flags are written after the regenerated answer's row is: wait for them.
    for _ in range(300):
        items = await _items(stack.db, ids)
        retry_flagged = {i.completion_id for i in items if _reasons(i) & {"retry"}}
        if ledger.retried <= retry_flagged:
            break
        await asyncio.sleep(0.1)
    async with stack.db.sessions() as session:
        query = select(Feedback).where(Feedback.completion_id.in_(ids))
        rows = list(await session.scalars(query))
    by_item: dict[str, list[ReviewItem]] = {}
    for item in items:
        by_item.setdefault(item.completion_id, []).append(item)
    for completion_id, accepted in ledger.corrections.items():
        mine = [row for row in rows
                if (row.completion_id, row.api_key_id) == (completion_id, chat.key_id)]  # fmt: skip
        assert len(mine) == 1 and mine[0].correction in accepted, (where, completion_id, mine)
        [item] = by_item[completion_id]
        reasons = [reason["reason"] for reason in item.reasons]
        assert len(reasons) == len(set(reasons)) and "correction" in reasons, (where, reasons)
        if item.state == "pending":  # the user's last correction, as on the feedback row
            assert item.correction == mine[0].correction, (where, completion_id)
    for completion_id in ledger.flagged | ledger.examined | ledger.retried:
        [item] = by_item[completion_id]
        reasons = _reasons(item)
        if completion_id in ledger.flagged:
            assert "operator_flag" in reasons, (where, completion_id, reasons)
        if completion_id in ledger.examined:
            assert {"low_groundedness", "idk_with_sources"} <= reasons, (where, reasons)
        if completion_id in ledger.retried:
            assert "retry" in reasons, (where, completion_id, reasons)


async def _items(db: Database, ids: set[str]) -> list[ReviewItem]:
    async with db.sessions() as session:
        query = select(ReviewItem).where(ReviewItem.completion_id.in_(ids))
        return list(await session.scalars(query))


def _reasons(item: ReviewItem) -> set[str]:
    return {reason["reason"] for reason in item.reasons}


async def _check_rollout(db: Database, alias: str, candidate: str, first: str, where: str) -> None:
    async with db.sessions() as session:
        [rollout] = list(await session.scalars(select(Rollout).where(Rollout.alias == alias)))
        row = await session.get(Alias, alias)
        states = {v.name: v.state for v in await session.scalars(
            select(AdapterVersion).where(AdapterVersion.alias == alias))}  # fmt: skip
    assert row is not None
    if rollout.state == "promoted":
        assert (row.live_version, states[candidate], states[first]) == (
            candidate,
            "live",
            "retired",
        )
    else:
        assert rollout.state == "rolled_back", (where, rollout.state)
        assert (row.live_version, states[candidate], states[first]) == (
            first,
            "rolled_back",
            "live",
        )


@pytest.mark.vllm
async def test_mixed_feedback_on_real_vllm_loses_nothing(
    store_gateway: tuple[ThreadedGateway, dict[str, str]], database_url: str
) -> None:
    """The users and reviewers above on the real vLLM (the session's embedded server, its
    base model under a fresh alias), so the automatic flags and the corrections meet on
    real completion timings: 3 users x 2 turns of 8 tokens, a few seconds of vLLM time per
    store. Publishing and rollouts stay with the stand-in: loading adapters into vLLM would
    cost minutes and test nothing more about the store."""
    gateway, keys = store_gateway
    db = Database(database_url)
    stack = Stack(gateway.base_url, keys, db, Flagger(db, FlagRules()))
    rng, ledger = random.Random(SEED), Ledger()
    alias = f"mixv-{uuid.uuid4().hex[:8]}"
    clients = Clients(stack, ledger, alias, rng, turns=2, max_tokens=8)
    try:
        assert await clients._admin("alias", "/v1/admin/aliases", {"alias": alias}) == 201
        users = asyncio.ensure_future(asyncio.gather(*(clients.user(n) for n in range(3))))
        await clients.reviewer(users)
        await users
        where = f"real vLLM, seed {SEED}, {db.url.get_backend_name()}"
        server_errors = [r for r in ledger.responses if r[1] >= 500]
        assert not server_errors, f"{where}: {len(server_errors)} 5xx: {server_errors[:3]}"
        assert ledger.corrections and ledger.flagged, where
        await _check_store(stack, ledger, alias, where)
    finally:
        await clients.close()
        await db.dispose()
