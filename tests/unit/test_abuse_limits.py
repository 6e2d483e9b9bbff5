"""Issue 19, per key: feedback and search limits, the ratings cap on rollout and experiment
statistics, the review list paged in SQL, final review decisions, private files.

On SQLite; tests/integration/test_abuse_http.py runs the HTTP side on SQLite and PostgreSQL.
"""

from __future__ import annotations

import stat
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from core.sections import FlagRules
from core.store import Database
from core.store.conversations import ConversationLog
from core.store.keys import Principal, Quota
from core.store.tables import Conversation, Feedback, utcnow
from gateway.action_limits import check_action
from gateway.errors import Conflict, RateLimited
from gateway.flagging import Flag, Flagger
from gateway.http_errors import describe
from gateway.metrics import GatewayMetrics
from gateway.quota_counters import MemoryCounters
from gateway.quota_gate import QuotaGate
from gateway.review import ReviewFilter, ReviewQueue, revision
from gateway.rollout_stats import experiment_outcomes, version_stats
from tests.unit.test_quotas import Clock, FixedUsage

REPO = Path(__file__).resolve().parents[2]


# -- feedback and search limits ---------------------------------------------------------------
def _gate(defaults: Quota | None = None) -> QuotaGate:
    metrics = GatewayMetrics(CollectorRegistry())
    return QuotaGate(MemoryCounters(Clock()), FixedUsage(), defaults or Quota(), metrics)


async def test_a_key_limited_to_2_requests_a_minute_posts_2_feedbacks_and_runs_2_searches() -> None:
    gate = _gate()
    key = Principal("key_a", "chat", Quota(requests_per_minute=2))
    for action in ("feedback", "searches"):
        for _ in range(2):
            await check_action(gate, key, action)  # type: ignore[arg-type]
        with pytest.raises(RateLimited) as refused:
            await check_action(gate, key, action)  # type: ignore[arg-type]
        info = describe(refused.value)
        assert (info.status_code, info.type, info.code) == (429, "rate_limit_error",
                                                            "rate_limit_exceeded")  # fmt: skip
        assert info.headers() == {"Retry-After": "60"} and refused.value.limit == action
    sample = gate.metrics.registry.get_sample_value(
        "loragate_rate_limited_total", {"limit": "feedback"}
    )
    assert sample == 1
    await check_action(gate, Principal("key_b", "chat", Quota(requests_per_minute=2)), "feedback")
    await check_action(gate, Principal(None, "admin"), "feedback")  # auth off: not counted


async def test_own_feedback_and_search_limits_override_the_defaults() -> None:
    gate = _gate(Quota(feedback_per_minute=1, searches_per_minute=3))
    key = Principal("key_a", "chat", Quota(requests_per_minute=100, feedback_per_minute=5))
    for _ in range(5):
        await check_action(gate, key, "feedback")
    with pytest.raises(RateLimited):
        await check_action(gate, key, "feedback")
    for _ in range(3):  # the default, not the key's requests per minute
        await check_action(gate, key, "searches")
    with pytest.raises(RateLimited):
        await check_action(gate, key, "searches")
    unlimited = Principal("key_c", "chat", Quota())
    for _ in range(50):
        await check_action(_gate(), unlimited, "feedback")


# -- the store --------------------------------------------------------------------------------
@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'abuse.db'}")
    await database.migrate()
    yield database
    await database.dispose()


async def _served(db: Database, version: str, count: int, **extra: Any) -> list[str]:
    ids = [f"chatcmpl-{uuid.uuid4().hex}" for _ in range(count)]
    async with db.transaction() as session:
        for completion_id in ids:
            session.add(Conversation(
                id=completion_id, requested_model="support", served_model=version,
                stream=False, status="ok", api_key_id="key_x", latency_ms=10.0,
                request={"messages": [{"role": "user", "content": "q"}]},
                response=[{"index": 0, "content": "a", "finish_reason": "stop"}], **extra,
            ))  # fmt: skip
    return ids


async def _rate(db: Database, ids: list[str], key: str, polarity: str, version: str) -> None:
    async with db.transaction() as session:
        for completion_id in ids:
            session.add(Feedback(completion_id=completion_id, api_key_id=key, polarity=polarity,
                                 served_model=version, score=-1))  # fmt: skip


async def test_one_key_cannot_steer_a_rollout(db: Database) -> None:
    ids = await _served(db, "support-v2", 120)
    await _rate(db, ids[:100], "key_troll", "negative", "support-v2")
    await _rate(db, ids[100:110], "key_fair", "positive", "support-v2")
    await _rate(db, ids[110:], "", "positive", "support-v2")  # auth off: nobody to cap
    since, until = utcnow() - timedelta(hours=1), utcnow() + timedelta(hours=1)
    uncapped = await version_stats(db, "support-v2", since, until)
    assert (uncapped.feedback, uncapped.negative) == (120, 100)
    capped = await version_stats(db, "support-v2", since, until, per_key_cap=20)
    assert (capped.feedback, capped.negative) == (40, 20)
    assert capped.requests == 120  # traffic is not capped, only ratings


async def test_one_key_cannot_decide_an_experiment(db: Database) -> None:
    a = await _served(db, "support-v1", 60, experiment_id=7, arm="v1")
    b = await _served(db, "support-v2", 10, experiment_id=7, arm="v2")
    await _rate(db, a, "key_troll", "positive", "support-v1")
    await _rate(db, b, "key_troll", "positive", "support-v2")
    outcomes = await experiment_outcomes(db, 7, per_key_cap=25)
    assert (outcomes["v1"].served, outcomes["v1"].rated, outcomes["v1"].positive) == (60, 25, 25)
    assert (outcomes["v2"].rated, outcomes["v2"].positive) == (10, 10)
    assert (await experiment_outcomes(db, 7))["v1"].rated == 60


# -- the review queue -------------------------------------------------------------------------
async def _flagged(db: Database, flagger: Flagger, alias: str, *reasons: str) -> str:
    (completion_id,) = await _served(db, f"{alias}-v1", 1)
    for reason in reasons:  # the second reason goes through the SQL merge of reasons
        await flagger.add([Flag(completion_id, alias, f"{alias}-v1", reason, {})])
    return completion_id


async def test_the_review_list_is_filtered_counted_and_paged_in_sql(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    flagger = Flagger(db, FlagRules())
    queue = ReviewQueue(db, flagger, ConversationLog(db))
    for n in range(7):
        reasons = ("negative_feedback", "retry") if n % 2 else ("negative_feedback",)
        await _flagged(db, flagger, "paged", *reasons)
    await _flagged(db, flagger, "other", "retry")
    loaded: list[int] = []

    async def page(where: ReviewFilter) -> tuple[list[int], int]:
        items, total = await queue.list(where)
        return [item.id for item, _ in items], total

    everything, total = await page(ReviewFilter("pending", "paged", None, 1000, 0))
    assert total == 7 and len(everything) == 7
    retries, total = await page(ReviewFilter("pending", "paged", "retry", 2, 1))
    assert total == 3 and retries == [everything[3], everything[5]]
    (other,), _ = await page(ReviewFilter(None, "other", None, 10, 0))
    assert await page(ReviewFilter(None, None, "retry", 10, 0)) == (
        [everything[1], everything[3], everything[5], other],
        4,
    )

    # Only the page is read from the store, however long the queue.
    from sqlalchemy.ext.asyncio import AsyncSession

    real_scalars = AsyncSession.scalars

    async def counting(self: AsyncSession, statement: Any, *args: Any, **kwargs: Any) -> Any:
        result = await real_scalars(self, statement, *args, **kwargs)  # type: ignore[misc]
        rows = list(result)
        loaded.append(len(rows))
        return rows

    monkeypatch.setattr(AsyncSession, "scalars", counting)
    assert (await page(ReviewFilter("pending", "paged", None, 2, 0)))[1] == 7
    assert loaded == [2]


async def test_a_decided_item_is_final_until_an_admin_reopens_it(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    flagger = Flagger(db, FlagRules())
    queue = ReviewQueue(db, flagger, ConversationLog(db))
    completion_id = await _flagged(db, flagger, "final", "negative_feedback")
    item, _ = await queue.show((await queue.list(ReviewFilter(None, "final")))[0][0][0].id)
    approved = await queue.decide(item.id, "approved", reviewer="first", seen=revision(item))
    for state in ("rejected", "approved"):  # flipping, even naming the current revision
        with pytest.raises(Conflict) as refused:
            await queue.decide(item.id, state, reviewer="second", seen=revision(approved))  # type: ignore[arg-type]
        info = describe(refused.value)
        assert (info.status_code, info.code) == (409, "review_item_decided")
    with pytest.raises(Conflict):
        await queue.decide(item.id, "rejected", reviewer="second")
    still, _ = await queue.show(item.id)
    assert (still.state, still.reviewer) == ("approved", "first")

    with caplog.at_level("WARNING", logger="loragate.review"):
        reopened = await queue.reopen(item.id, reviewer="key:admin", note="approved by mistake")
    assert (reopened.state, reopened.reviewer, reopened.decided_at) == ("pending", None, None)
    assert "approved by mistake" in (reopened.note or "")
    logged = [record for record in caplog.records if record.getMessage() == "review item reopened"]
    assert logged and logged[0].was_state == "approved" and logged[0].by == "key:admin"  # type: ignore[attr-defined]
    rejected = await queue.decide(item.id, "rejected", reviewer="second", seen=revision(reopened))
    assert rejected.state == "rejected" and rejected.completion_id == completion_id
    await queue.reopen(item.id, reviewer="key:admin", note="again")
    with pytest.raises(Conflict) as pending:
        await queue.reopen(item.id, reviewer="key:admin", note="twice")
    assert pending.value.code == "review_item_pending"


# -- files ------------------------------------------------------------------------------------
async def test_the_sqlite_database_is_private(tmp_path: Path) -> None:
    path = tmp_path / "data" / "loragate.db"
    database = Database(f"sqlite+aiosqlite:///{path}")
    await database.migrate()
    await database.dispose()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)  # made by an older version
    Database(f"sqlite+aiosqlite:///{path}")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_make_run_keeps_the_admin_key_private_and_out_of_its_log() -> None:
    makefile = (REPO / "Makefile").read_text()
    recipe = makefile.split("\nrun:", 1)[1].split("\n\n", 1)[0]
    assert "umask 077" in recipe and "chmod 600 data/dev-admin.key" in recipe
    echoed = [line for line in recipe.splitlines() if "echo" in line]
    assert echoed and not any("cat data/dev-admin.key" in line for line in echoed)
