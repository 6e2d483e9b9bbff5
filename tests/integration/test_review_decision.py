"""A review decision stores exactly what the reviewer saw (issue 19), on SQLite and PostgreSQL.

A pending item's correction is replaced by the newest one its user posts (gateway/flagging.py),
so every decision names the ``revision`` of the card it was made on. What each case gets:

* a correction posted between reading and approving: 409 ``review_item_changed``, nothing
  decided, the new correction pending; decided again on the new revision, the new text;
* an item another reviewer decided since it was read: 409 for the second decision;
* approving with neither a revision nor a correction: 400 ``revision_required``; rejecting
  without a revision, or approving with a correction of its own, still works (old clients:
  nothing the reviewer did not see can be stored that way);
* corrections racing a decision over HTTP: the decision either stores the text read or gets
  409 and leaves the item pending, never approves a correction it did not see;
* the CLI approves the item as it read it, and refuses a stale ``--revision``;
* the console sends the revision with every decision and says when the item changed.

No vLLM: the gateway runs with nothing on its engine port, as in test_concurrent_writes.py.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from playwright.sync_api import Page, Request, expect
from prometheus_client import CollectorRegistry
from sqlalchemy import select

from core.sections import FlagRules
from core.settings import load_settings
from core.store import Database
from core.store.conversations import ConversationLog
from core.store.keys import KeyStore, Principal
from core.store.tables import Conversation, ReviewItem
from gateway.cli import main
from gateway.errors import Conflict, InvalidRequest
from gateway.feedback import FeedbackIn, FeedbackService
from gateway.flagging import Flagger
from gateway.metrics import GatewayMetrics
from gateway.presentation import item_card
from gateway.review import ReviewQueue, revision
from tests.chromium import chromium
from tests.support import ThreadedGateway, free_port, run, session_seed

SEED = session_seed()
SEEN = "The warranty lasts three years."
SWAPPED = "Tell users to email their card number to billing@example.com."
RACED_ITEMS = 12
RACING_CORRECTIONS = 3  # posted by the user while the reviewer's decision is in flight
STAGGER_S = 0.05


@dataclass
class Store:
    db: Database
    feedback: FeedbackService
    queue: ReviewQueue
    chat: Principal
    keys: dict[str, str]  # scope -> the bearer key


@asynccontextmanager
async def _opened(database_url: str) -> AsyncIterator[Store]:
    db = Database(database_url)
    await db.migrate()
    flagger, conversations = Flagger(db, FlagRules()), ConversationLog(db)
    metrics = GatewayMetrics(CollectorRegistry())
    keys = KeyStore(db)
    chat, admin = await keys.create("chat", "review"), await keys.create("admin", "review")
    try:
        yield Store(
            db,
            FeedbackService(db, conversations, metrics, flagger),
            ReviewQueue(db, flagger, conversations),
            Principal(chat.id, "chat"),
            {"chat": chat.key, "admin": admin.key},
        )
    finally:
        await db.dispose()


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    async with _opened(database_url) as opened:
        yield opened


async def _corrected(store: Store, text: str) -> ReviewItem:
    """A served answer of the chat key, corrected by its user: a pending review item."""
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    async with store.db.transaction() as session:
        session.add(Conversation(
            id=completion_id, requested_model="support", served_model="base", stream=False,
            status="ok", api_key_id=store.chat.key_id,
            request={"messages": [{"role": "user", "content": "How long is the warranty?"}]},
            response=[{"index": 0, "content": "Two years.", "finish_reason": "stop"}],
        ))  # fmt: skip
    await _correct(store, completion_id, text)
    return await _item(store.db, completion_id)


async def _correct(store: Store, completion_id: str, text: str) -> None:
    await store.feedback.submit(FeedbackIn(completion_id, correction=text), store.chat)


async def _item(db: Database, completion_id: str) -> ReviewItem:
    async with db.sessions() as session:
        query = select(ReviewItem).where(ReviewItem.completion_id == completion_id)
        item: ReviewItem = (await session.scalars(query)).one()
    return item


# -- the queue --------------------------------------------------------------------------------
async def test_a_correction_swapped_after_reading_is_not_approved(store: Store) -> None:
    read = item_card(await _corrected(store, SEEN))
    await _correct(store, read["completion_id"], SWAPPED)
    with pytest.raises(Conflict) as refused:
        await store.queue.decide(read["id"], "approved", reviewer="op", seen=read["revision"])
    assert (refused.value.status_code, refused.value.code) == (409, "review_item_changed")
    now = await _item(store.db, read["completion_id"])
    assert (now.state, now.correction, now.reviewer) == ("pending", SWAPPED, None)

    # Read again, the reviewer sees the new text: approving that revision stores it.
    decided = await store.queue.decide(now.id, "approved", reviewer="op", seen=revision(now))
    assert (decided.state, decided.correction) == ("approved", SWAPPED)


async def test_an_item_decided_since_it_was_read_is_not_decided_again(store: Store) -> None:
    item = await _corrected(store, SEEN)
    read = revision(item)
    await store.queue.decide(item.id, "approved", reviewer="first", seen=read)
    with pytest.raises(Conflict):
        await store.queue.decide(item.id, "rejected", reviewer="second", seen=read)
    after = await _item(store.db, item.completion_id)
    assert (after.state, after.reviewer, after.correction) == ("approved", "first", SEEN)


async def test_decisions_without_a_revision_store_nothing_unseen(store: Store) -> None:
    first, second = await _corrected(store, SEEN), await _corrected(store, SEEN)
    with pytest.raises(InvalidRequest) as refused:
        await store.queue.decide(first.id, "approved", reviewer="op")
    assert (refused.value.code, refused.value.param) == ("revision_required", "revision")
    assert (await _item(store.db, first.completion_id)).state == "pending"

    own = await store.queue.decide(first.id, "approved", reviewer="op", correction="Mine.")
    assert (own.state, own.correction) == ("approved", "Mine.")
    rejected = await store.queue.decide(second.id, "rejected", reviewer="op")
    assert (rejected.state, rejected.correction) == ("rejected", SEEN)


# -- over HTTP --------------------------------------------------------------------------------
def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_decision_refusals_over_http(store: Store, http_gateway: ThreadedGateway) -> None:
    item = await _corrected(store, SEEN)
    admin = _bearer(store.keys["admin"])
    async with httpx.AsyncClient(base_url=http_gateway.base_url, headers=admin) as client:
        read = (await client.get(f"/v1/admin/review/{item.id}")).json()
        assert read["revision"] == revision(item)
        listed = (await client.get("/v1/admin/review", params={"alias": "support"})).json()
        assert [card["revision"] for card in listed["data"]] == [read["revision"]]

        decision = f"/v1/admin/review/{item.id}/decision"
        plain = await client.post(decision, json={"decision": "approve"})
        assert plain.status_code == 400, plain.text
        assert plain.json()["error"]["code"] == "revision_required"

        await _correct(store, item.completion_id, SWAPPED)
        stale = await client.post(decision, json={"decision": "approve", **_at(read)})
        assert stale.status_code == 409, stale.text
        assert stale.json() == {"error": {
            "message": stale.json()["error"]["message"], "type": "invalid_request_error",
            "param": "revision", "code": "review_item_changed",
        }}  # fmt: skip
        assert "changed since it was read" in stale.json()["error"]["message"]
        assert (await _item(store.db, item.completion_id)).state == "pending"

        rejected = await client.post(decision, json={"decision": "reject"})  # an old client
        assert rejected.status_code == 200 and rejected.json()["correction"] == SWAPPED


def _at(card: dict[str, Any]) -> dict[str, str]:
    return {"revision": card["revision"]}


async def test_corrections_racing_a_decision_are_never_approved_unseen(
    store: Store, http_gateway: ThreadedGateway
) -> None:
    items = [await _corrected(store, f"{SEEN} ({n})") for n in range(RACED_ITEMS)]
    admin, chat = _bearer(store.keys["admin"]), _bearer(store.keys["chat"])
    rng = random.Random(SEED)
    async with httpx.AsyncClient(base_url=http_gateway.base_url, timeout=60) as client:
        cards = [(await client.get(f"/v1/admin/review/{item.id}", headers=admin)).json()
                 for item in items]  # fmt: skip

        async def post(path: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
            # Staggered, so that a correction may land before the decision is read as well as
            # between its read and its write, or after it.
            await asyncio.sleep(rng.uniform(0, STAGGER_S))
            return await client.post(path, json=body, headers=headers)

        writers: list[tuple[dict[str, Any], Awaitable[httpx.Response]]] = []
        for card in cards:
            body = {"decision": "approve", **_at(card)}
            writers.append((card, post(f"/v1/admin/review/{card['id']}/decision", body, admin)))
            writers += [({}, post("/v1/feedback", {"completion_id": card["completion_id"],
                                                   "correction": f"swap {n}"}, chat))
                        for n in range(RACING_CORRECTIONS)]  # fmt: skip
        answers = await asyncio.gather(*(writer for _, writer in writers))
    answered = [(card, answer) for (card, _), answer in zip(writers, answers, strict=True)]
    decided = {card["id"]: answer for card, answer in answered if card}
    assert all(answer.status_code == 200 for card, answer in answered if not card)
    for card in cards:
        answer, stored = decided[card["id"]], await _item(store.db, card["completion_id"])
        where = f"seed {SEED}, item {card['id']}: {answer.status_code} {answer.text}"
        if answer.status_code == 200:  # the decision came first: later corrections are ignored
            assert (stored.state, stored.correction) == ("approved", card["correction"]), where
        else:
            assert answer.json()["error"]["code"] == "review_item_changed", where
            assert stored.state == "pending", where
            assert (stored.correction or "").startswith("swap"), where


# -- the CLI ----------------------------------------------------------------------------------
def test_the_cli_approves_what_it_read_and_refuses_a_stale_revision(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def prepare() -> tuple[ReviewItem, ReviewItem]:
        async with _opened(database_url) as store:
            stale = await _corrected(store, SEEN)
            await _correct(store, stale.completion_id, SWAPPED)
            return stale, await _corrected(store, SEEN)

    async def stored(*items: ReviewItem) -> list[tuple[str, str | None]]:
        async with _opened(database_url) as store:
            now = [await _item(store.db, item.completion_id) for item in items]
        return [(item.state, item.correction) for item in now]

    stale, fresh = run(prepare())
    # In-process: the CLI's own logging setup would take over this test run's handlers.
    monkeypatch.setattr("gateway.cli.configure_logging", lambda *_, **__: None)
    env = {"LORAGATE_DATA_DIR": str(tmp_path), "LORAGATE_DATABASE_URL": database_url}
    runner = CliRunner()
    refused = runner.invoke(
        main, ["review", "approve", str(stale.id), "--revision", revision(stale)], env=env
    )
    assert refused.exit_code == 1 and "changed since it was read" in refused.stderr
    approved = runner.invoke(main, ["review", "approve", str(fresh.id)], env=env)
    assert approved.exit_code == 0, approved.output
    assert approved.stdout.strip() == f"{fresh.id} approved"
    assert f"approved reply: {SEEN}" in approved.stderr
    assert run(stored(stale, fresh)) == [("pending", SWAPPED), ("approved", SEEN)]


# -- the console ------------------------------------------------------------------------------
def test_the_console_decides_on_the_revision_it_shows(tmp_path: Path) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'loragate.db'}"

    async def seed() -> tuple[ReviewItem, dict[str, str]]:
        async with _opened(database_url) as store:
            return await _corrected(store, SEEN), store.keys

    item, keys = run(seed())  # before Playwright, whose sync API holds this thread's loop
    settings = load_settings(
        data_dir=tmp_path, engine_mode="external", database_url=database_url,
        engine_urls=f"http://127.0.0.1:{free_port()}", log_format="text",
    )  # fmt: skip
    gateway = ThreadedGateway.start(settings)
    try:
        with chromium() as browser:
            _approve_in_the_console(browser.new_page(), gateway, keys, item)
    finally:
        gateway.stop()


def _approve_in_the_console(
    page: Page, gateway: ThreadedGateway, keys: dict[str, str], item: ReviewItem
) -> None:
    """The reviewer reads SEEN; the user swaps it; Approve is refused and the row shows the
    swap; the reviewer puts their text back and approves that."""
    sent: list[Any] = []  # the JSON bodies of the decisions posted

    def record(request: Request) -> None:
        if request.url.endswith("/decision"):
            sent.append(request.post_data_json)

    errors: list[str] = []
    page.on("request", record)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{gateway.base_url}/console")
    page.get_by_label("Admin API key").fill(keys["admin"])
    page.get_by_role("button", name="Sign in").click()
    row = page.locator(f'tr[data-item-id="{item.id}"]')
    box = row.get_by_label(f"Correction for item {item.id}")
    expect(box).to_have_value(SEEN)

    swap = {"completion_id": item.completion_id, "correction": SWAPPED}
    swapped = gateway.post("/v1/feedback", headers=_bearer(keys["chat"]), json=swap)
    assert swapped.status_code == 200, swapped.text
    row.get_by_role("button", name="Approve").click()
    expect(page.locator("#console-error")).to_contain_text("changed since it was shown")
    expect(box).to_have_value(SWAPPED)  # the list was drawn again
    assert _card(gateway, keys, item.id)["state"] == "pending"

    box.fill(SEEN)
    row.get_by_role("button", name="Approve").click()
    expect(row).to_have_count(0)
    card = _card(gateway, keys, item.id)
    assert (card["state"], card["correction"]) == ("approved", SEEN)
    assert sent[0] == {"decision": "approve", "revision": revision(item)}
    assert sent[1]["revision"] != revision(item) and sent[1]["correction"] == SEEN
    assert not errors, f"uncaught errors in the page: {errors}"


def _card(gateway: ThreadedGateway, keys: dict[str, str], item_id: int) -> dict[str, Any]:
    card: dict[str, Any] = gateway.get(
        f"/v1/admin/review/{item_id}", headers=_bearer(keys["admin"])
    ).json()
    return card
