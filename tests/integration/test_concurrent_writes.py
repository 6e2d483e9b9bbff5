"""Concurrent writers on the feedback path, on SQLite and on PostgreSQL (issue 18).

Many writers meet on the same completions at once: corrections from the completion's own key
(a double click, a retrying client, two tabs), an operator's flag from an admin key, and the
automatic flagging of the answer after it went out, each from one of two replicas (two
``Database`` handles with their own pools, as two gateway processes have). Whatever the
interleaving:

* no write fails (no 5xx through HTTP);
* one review item per completion, with every reason once;
* one feedback row per completion and key, counted once in ``loragate_feedback_total``;
* the correction kept is the last one written: the same on the feedback row and on the review
  item, and a correction posted afterwards replaces it;
* an item an operator already decided keeps its state, reviewer, decision time and correction.

Sizing: issue 18 saw 74 of 120 concurrent posts fail with 3 per answer. Here 6 writers meet
on each of 24 completions per round, 3 rounds per store; the check-then-insert this replaces
failed every round of it. ``LORAGATE_TEST_SEED`` replays the order the writers start in.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from core.errors import StoreBusy
from core.sections import FlagRules
from core.store import Database
from core.store.conversations import ConversationLog, ConversationRecord
from core.store.keys import KeyStore, Principal
from core.store.tables import Conversation, Feedback, ReviewItem, utcnow
from gateway.errors import InvalidRequest, NotFound
from gateway.feedback import FeedbackIn, FeedbackService
from gateway.flagging import Flag, Flagger
from gateway.http_errors import describe
from gateway.metrics import GatewayMetrics
from gateway.review import ReviewQueue, revision
from tests.support import ThreadedGateway, session_seed

SEED = session_seed()
COMPLETIONS = 24  # per round; every third one is already decided by an operator
CORRECTIONS = 3  # concurrent corrections per completion from its own key
ROUNDS = 3
AUTO_REASONS = {"low_groundedness", "idk_with_sources"}
FEEDBACK_REASONS = {"correction", "negative_feedback", "operator_flag"}
DECIDED = "the operator's correction"

Writer = Callable[[], Awaitable[Any]]


@dataclass
class Replica:
    """What one gateway process writes through: its own pool, service and counters."""

    db: Database
    feedback: FeedbackService
    flagger: Flagger
    registry: CollectorRegistry


@pytest.fixture
async def replicas(database_url: str) -> AsyncIterator[list[Replica]]:
    built = [_replica(Database(database_url)) for _ in range(2)]
    await built[0].db.migrate()
    yield built
    for replica in built:
        await replica.db.dispose()


def _replica(db: Database) -> Replica:
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry)
    flagger = Flagger(db, FlagRules(), on_flag=lambda reason: metrics.flags.labels(reason).inc())
    feedback = FeedbackService(db, ConversationLog(db), metrics, flagger)
    return Replica(db, feedback, flagger, registry)


def _record(completion_id: str, alias: str, key_id: str) -> ConversationRecord:
    """A served answer both automatic rules flag: weakly grounded, "I don't know" although
    the best source scored well."""
    return ConversationRecord(
        id=completion_id, requested_model=alias, served_model="base", stream=False,
        request={"messages": [{"role": "user", "content": f"question {completion_id}"}]},
        response=[{"index": 0, "content": "I don't know.", "finish_reason": "stop"}],
        api_key_id=key_id, groundedness=0.1, top_score=0.9,
    )  # fmt: skip


async def _served(db: Database, alias: str, key_id: str, count: int) -> list[str]:
    """``count`` completions in the log; every third one already approved by an operator."""
    ids = [f"chatcmpl-{uuid.uuid4().hex}" for _ in range(count)]
    async with db.transaction() as session:
        for number, completion_id in enumerate(ids):
            record = _record(completion_id, alias, key_id)
            session.add(Conversation(**{k: v for k, v in vars(record).items()}))
            if number % 3 == 0:
                session.add(ReviewItem(
                    completion_id=completion_id, alias=alias, served_model="base",
                    reasons=[{"reason": "correction", "detail": {}, "at": ""}], state="approved",
                    correction=DECIDED, reviewer="op", decided_at=utcnow(),
                ))  # fmt: skip
    return ids


def _writers(
    replicas: list[Replica], ids: list[str], alias: str, chat: Principal, admin: Principal,
    rng: random.Random,
) -> list[Writer]:  # fmt: skip
    """Every writer of every completion, in a seeded random order."""
    writers: list[Writer] = []
    for completion_id in ids:

        def correct(number: int, completion_id: str = completion_id) -> Writer:
            data = FeedbackIn(completion_id, score=-1, correction=f"fix {number}")
            return lambda: rng.choice(replicas).feedback.submit(data, chat)

        writers += [correct(number) for number in range(CORRECTIONS)]
        operator = FeedbackIn(completion_id, flag="tone")
        writers.append(lambda data=operator: rng.choice(replicas).feedback.submit(data, admin))
        record = _record(completion_id, alias, chat.key_id or "")
        # Both replicas examine it: a journal replay, or the same batch written twice.
        writers += [lambda r=r, rec=record: r.flagger.examine([rec]) for r in replicas]
    rng.shuffle(writers)
    return writers


async def _items(db: Database, ids: list[str]) -> dict[str, list[ReviewItem]]:
    async with db.sessions() as session:
        rows = await session.scalars(select(ReviewItem).where(ReviewItem.completion_id.in_(ids)))
        items: dict[str, list[ReviewItem]] = {completion_id: [] for completion_id in ids}
        for row in rows:
            items[row.completion_id].append(row)
    return items


async def _feedback_rows(db: Database, ids: list[str]) -> dict[tuple[str, str], list[Feedback]]:
    async with db.sessions() as session:
        rows = await session.scalars(select(Feedback).where(Feedback.completion_id.in_(ids)))
        by_key: dict[tuple[str, str], list[Feedback]] = {}
        for row in rows:
            by_key.setdefault((row.completion_id, row.api_key_id), []).append(row)
    return by_key


def _counted(replicas: list[Replica], name: str) -> float:
    return sum(
        sample.value
        for replica in replicas
        for family in replica.registry.collect()
        for sample in family.samples
        if sample.name == name
    )


async def _check_round(
    db: Database, ids: list[str], chat: Principal, admin: Principal, where: str
) -> None:
    items = await _items(db, ids)
    rows = await _feedback_rows(db, ids)
    for number, completion_id in enumerate(ids):
        assert len(items[completion_id]) == 1, f"{where}: {completion_id} has no single item"
        item = items[completion_id][0]
        reasons = [reason["reason"] for reason in item.reasons]
        assert sorted(reasons) == sorted(AUTO_REASONS | FEEDBACK_REASONS), (where, reasons)
        for key in (chat.key_id, admin.key_id):
            assert len(rows[(completion_id, key or "")]) == 1, (where, completion_id, key)
        kept = rows[(completion_id, chat.key_id or "")][0].correction
        if number % 3 == 0:
            assert (item.state, item.reviewer, item.correction) == ("approved", "op", DECIDED)
        else:
            assert item.state == "pending", (where, item.state)
            # The last correction committed wins, on the feedback row and the item alike.
            assert item.correction == kept, (where, item.correction, kept)
            assert kept in {f"fix {n}" for n in range(CORRECTIONS)}


async def test_concurrent_feedback_and_flags_lose_nothing(
    replicas: list[Replica], database_url: str
) -> None:
    alias = f"race-{uuid.uuid4().hex[:8]}"
    keys = KeyStore(replicas[0].db)
    chat_key, admin_key = await keys.create("chat", "race"), await keys.create("admin", "race")
    chat, admin = Principal(chat_key.id, "chat"), Principal(admin_key.id, "admin")
    rng = random.Random(SEED)
    for round_number in range(ROUNDS):
        where = f"round {round_number}, seed {SEED}, {replicas[0].db.url.get_backend_name()}"
        ids = await _served(replicas[0].db, alias, chat_key.id, COMPLETIONS)
        writers = _writers(replicas, ids, alias, chat, admin, rng)
        results = await asyncio.gather(*(writer() for writer in writers), return_exceptions=True)
        failures = [result for result in results if isinstance(result, BaseException)]
        assert not failures, f"{where}: {len(failures)} of {len(writers)} failed: {failures[:3]!r}"
        await _check_round(replicas[0].db, ids, chat, admin, where)

    total = ROUNDS * COMPLETIONS
    # Each (completion, key) counted once however many posts raced to create it.
    assert _counted(replicas, "loragate_feedback_total") == 2 * total


async def test_the_newest_correction_wins_until_the_item_is_decided(
    replicas: list[Replica],
) -> None:
    alias = f"newest-{uuid.uuid4().hex[:8]}"
    chat_key = await KeyStore(replicas[0].db).create("chat", "newest")
    chat = Principal(chat_key.id, "chat")
    completion_id = (await _served(replicas[0].db, alias, chat_key.id, 2))[1]  # not decided
    service = replicas[0].feedback
    for text in ("first", "second", "third"):
        await service.submit(FeedbackIn(completion_id, correction=text), chat)
    [item] = (await _items(replicas[0].db, [completion_id]))[completion_id]
    assert item.correction == "third" and [r["reason"] for r in item.reasons] == ["correction"]

    queue = ReviewQueue(replicas[0].db, replicas[0].flagger, ConversationLog(replicas[0].db))
    await queue.decide(item.id, "approved", reviewer="op", seen=revision(item))
    [decided] = (await _items(replicas[0].db, [completion_id]))[completion_id]
    await service.submit(FeedbackIn(completion_id, correction="too late"), chat)
    await replicas[1].flagger.examine([_record(completion_id, alias, chat_key.id)])
    [after] = (await _items(replicas[0].db, [completion_id]))[completion_id]
    assert (after.state, after.correction, after.reviewer) == ("approved", "third", "op")
    assert after.decided_at == decided.decided_at
    assert sorted(r["reason"] for r in after.reasons) == sorted({"correction"} | AUTO_REASONS)


def _failed(result: object) -> bool:
    if isinstance(result, httpx.Response):
        return result.status_code != 200
    return isinstance(result, BaseException)


async def test_concurrent_feedback_over_http_is_never_a_5xx(
    replicas: list[Replica], http_gateway: ThreadedGateway
) -> None:
    alias = f"http-{uuid.uuid4().hex[:8]}"
    keys = KeyStore(replicas[0].db)
    chat_key, admin_key = await keys.create("chat", "http"), await keys.create("admin", "http")
    chat, admin = Principal(chat_key.id, "chat"), Principal(admin_key.id, "admin")
    ids = await _served(replicas[0].db, alias, chat_key.id, COMPLETIONS)
    rng = random.Random(SEED)
    async with httpx.AsyncClient(base_url=http_gateway.base_url, timeout=60) as client:

        def post(key: str, body: dict[str, Any]) -> Writer:
            headers = {"Authorization": f"Bearer {key}"}
            return lambda: client.post("/v1/feedback", json=body, headers=headers)

        writers: list[Writer] = []
        for completion_id in ids:
            writers += [post(chat_key.key, {"completion_id": completion_id, "score": -1,
                                            "correction": f"fix {n}"})
                        for n in range(CORRECTIONS)]  # fmt: skip
            writers.append(post(admin_key.key, {"completion_id": completion_id, "flag": "tone"}))
            record = _record(completion_id, alias, chat_key.id)
            # The automatic flags come from another replica, as they would behind a balancer.
            writers.append(lambda rec=record: replicas[1].flagger.examine([rec]))
        rng.shuffle(writers)
        results = await asyncio.gather(*(writer() for writer in writers), return_exceptions=True)
        failures = [result for result in results if _failed(result)]
        answers = [failure.text if isinstance(failure, httpx.Response) else repr(failure)
                   for failure in failures[:3]]  # fmt: skip
        assert not failures, f"seed {SEED}: {len(failures)} of {len(writers)} failed: {answers}"
        await _check_round(replicas[0].db, ids, chat, admin, f"http, seed {SEED}")

        pending = ids[1]
        newest = await post(chat_key.key, {"completion_id": pending, "correction": "newest"})()
        assert newest.status_code == 200 and newest.json()["created"] is False
        [item] = (await _items(replicas[0].db, [pending]))[pending]
        assert item.correction == "newest"
        metrics = (await client.get("/metrics")).text
    counted = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                  if line.startswith("loragate_feedback_total{"))  # fmt: skip
    assert counted == 2 * COMPLETIONS


class _Deadlock(Exception):
    sqlstate = "40P01"  # what PostgreSQL says when it broke a deadlock by failing this one


async def test_a_write_that_keeps_losing_is_retried_then_refused_whole(
    replicas: list[Replica], monkeypatch: pytest.MonkeyPatch
) -> None:
    chat_key = await KeyStore(replicas[0].db).create("chat", "losing")
    chat = Principal(chat_key.id, "chat")
    completion_id = (await _served(replicas[0].db, "losing", chat_key.id, 2))[1]
    flagger, losses = replicas[0].flagger, {"left": 2}
    real_write = flagger.write

    async def losing(session: AsyncSession, flags: list[Flag], correction: str | None) -> None:
        await real_write(session, flags, correction)  # written, then rolled back with the rest
        if losses["left"]:
            losses["left"] -= 1
            raise DBAPIError("UPDATE review_items ...", None, _Deadlock("deadlock detected"))

    monkeypatch.setattr(flagger, "write", losing)
    kept = await replicas[0].feedback.submit(FeedbackIn(completion_id, correction="kept"), chat)
    # Created on the third try: the first two left no row behind.
    assert kept["created"] is True and kept["flagged"] == ["correction"]

    losses["left"] = 1_000
    with pytest.raises(StoreBusy) as refused:
        await replicas[0].feedback.submit(FeedbackIn(completion_id, correction="lost"), chat)
    # StoreBusy is core's; the HTTP error table maps it to 503 with Retry-After.
    assert refused.value.retry_after_s and describe(refused.value).status_code == 503
    [item] = (await _items(replicas[0].db, [completion_id]))[completion_id]
    [row] = (await _feedback_rows(replicas[0].db, [completion_id]))[(completion_id, chat_key.id)]
    assert item.correction == row.correction == "kept"  # neither half of "lost" is stored


async def test_a_decided_item_is_not_edited(replicas: list[Replica]) -> None:
    chat_key = await KeyStore(replicas[0].db).create("chat", "edit")
    chat = Principal(chat_key.id, "chat")
    completion_id = (await _served(replicas[0].db, "edit", chat_key.id, 2))[1]
    await replicas[0].feedback.submit(FeedbackIn(completion_id, correction="mine"), chat)
    [item] = (await _items(replicas[0].db, [completion_id]))[completion_id]
    queue = ReviewQueue(replicas[0].db, replicas[0].flagger, ConversationLog(replicas[0].db))
    assert (await queue.edit(item.id, "edited", note="n")).correction == "edited"
    await queue.decide(item.id, "rejected", reviewer="op")
    with pytest.raises(InvalidRequest, match="rejected"):
        await queue.edit(item.id, "changed later")
    with pytest.raises(NotFound):
        await queue.edit(10**9, "nobody")
    [after] = (await _items(replicas[0].db, [completion_id]))[completion_id]
    assert (after.state, after.correction, after.note) == ("rejected", "edited", None)


async def test_a_trusted_correction_is_approved_by_the_first_one(replicas: list[Replica]) -> None:
    db = replicas[0].db
    chat_key = await KeyStore(db).create("chat", "trusted")
    chat = Principal(chat_key.id, "chat")
    completion_id = (await _served(db, "trusted", chat_key.id, 2))[1]
    await replicas[1].flagger.examine([_record(completion_id, "trusted", chat_key.id)])
    flagger = Flagger(db, FlagRules(), trust_corrections=True)
    service = FeedbackService(db, ConversationLog(db), GatewayMetrics(CollectorRegistry()), flagger)
    await service.submit(FeedbackIn(completion_id, correction="trusted"), chat)
    await service.submit(FeedbackIn(completion_id, correction="second thoughts"), chat)
    [item] = (await _items(db, [completion_id]))[completion_id]
    assert (item.state, item.reviewer, item.correction) == ("approved", "trusted-user", "trusted")
    assert item.decided_at is not None
    assert [r["reason"] for r in item.reasons] == ["low_groundedness", "idk_with_sources",
                                                  "correction"]  # fmt: skip
