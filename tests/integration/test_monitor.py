"""The quality and drift monitor on SQLite and PostgreSQL, with the real embedder.

Traffic is written to the store as the gateway writes it. The alias first gets questions
about a bike shop (the demo's); then either more of the same (no drift) or questions about
baking (drift). The report, the exported metrics and the trainer's decision follow."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from adapters.registry import Registry, ValidationLimits
from core.store import Database
from core.store.tables import Conversation, Feedback, ReviewItem, utcnow
from gateway.state_metrics import StateMetrics
from monitor.errors import UnknownAlias
from monitor.service import MonitorConfig, QualityMonitor
from retrieval.embeddings import Embedder
from trainer.store import TrainerStore
from trainer.worker import TrainerWorker

DEMO_QUESTIONS = Path(__file__).resolve().parents[2] / "trainer/demo/questions.jsonl"
BAKING = [
    f"How long should I bake {food} at {degrees} degrees?"
    for food in ("sourdough bread", "banana bread", "a lemon tart", "chocolate cookies",
                 "a pizza", "croissants", "a cheesecake", "focaccia")
    for degrees in (180, 200, 220, 250, 160)
]  # fmt: skip
CONFIG = MonitorConfig(window=40, min_queries=30, permutations=200, min_feedback=10)


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder(None)


@pytest.fixture
async def alias(db: Database, tmp_path: Path) -> str:
    name = f"shop-{uuid.uuid4().hex[:8]}"
    registry = Registry(db.sessions, tmp_path / "adapters", ValidationLimits(None, 64))
    assert await registry.create_alias(name)
    return name


def _bike_questions() -> list[str]:
    lines = DEMO_QUESTIONS.read_text().splitlines()
    return [json.loads(line)["question"] for line in lines]


async def _traffic(
    db: Database, alias: str, questions: list[str], *, hours_ago: float, answer: str = "Yes."
) -> list[str]:
    start = utcnow() - timedelta(hours=hours_ago)
    ids = []
    async with db.transaction() as session:
        for number, question in enumerate(questions):
            ids.append(f"chatcmpl-{uuid.uuid4().hex}")
            session.add(Conversation(
                id=ids[-1], requested_model=alias, served_model="base", stream=False,
                status="ok", request={"messages": [{"role": "user", "content": question}]},
                response=[{"index": 0, "content": answer, "finish_reason": "stop"}],
                created_at=start + timedelta(seconds=number),
            ))  # fmt: skip
    return ids


async def _rate(db: Database, ids: list[str], polarity: str) -> None:
    async with db.transaction() as session:
        for completion_id in ids:
            session.add(Feedback(completion_id=completion_id, api_key_id="k",
                                 served_model="base", polarity=polarity))  # fmt: skip


def _monitor(db: Database, embedder: Embedder) -> QualityMonitor:
    return QualityMonitor(db, embedder.embed, CONFIG, "base")


async def test_same_kind_of_questions_do_not_drift(
    db: Database, alias: str, embedder: Embedder
) -> None:
    bikes = _bike_questions()
    await _traffic(db, alias, bikes[0::2], hours_ago=30)
    await _traffic(db, alias, bikes[1::2], hours_ago=1)
    report = await _monitor(db, embedder).check(alias)
    assert report.drift is not None and report.note is None
    assert report.drift["p_value"] > CONFIG.drift_p_value
    assert not report.drift_detected and report.triggers == []


async def test_new_kind_of_questions_drift_and_ask_for_training(
    db: Database, alias: str, embedder: Embedder
) -> None:
    await _traffic(db, alias, _bike_questions()[:40], hours_ago=30)
    baking = await _traffic(db, alias, BAKING, hours_ago=1, answer="I don't know.")
    await _rate(db, baking[:12], "negative")
    await _rate(db, baking[12:15], "positive")
    monitor = _monitor(db, embedder)
    report = await monitor.check(alias)
    assert report.drift is not None
    assert report.drift["p_value"] < 0.01 and report.drift["centroid_distance"] > 0.05
    assert report.drift_detected
    # The KPIs cover the last day: the 40 baking answers, all "I don't know".
    assert report.quality["base"]["requests"] == 40
    assert report.quality["base"]["positive_ratio"] == pytest.approx(3 / 15)
    assert report.quality["base"]["idk_rate"] == 1.0
    assert report.triggers == ["drift", "low_positive_ratio", "high_idk_rate"]

    registry = CollectorRegistry()
    state = StateMetrics(
        db, Registry(db.sessions, Path("unused"), ValidationLimits(None, 64)), monitor
    )
    registry.register(state)
    await state.refresh()
    text = generate_latest(registry).decode()
    assert f'loragate_drift_detected{{alias="{alias}"}} 1.0' in text
    assert f'loragate_quality_idk_rate{{alias="{alias}",version="base"}} 1.0' in text
    assert f'loragate_drift_score{{alias="{alias}",method="mmd"}}' in text

    store = TrainerStore(db)
    assert await store.monitor_triggers(alias) == report.triggers
    worker = TrainerWorker(None, store, min_new_examples=20, monitor_min_new_examples=3)  # type: ignore[arg-type]
    assert alias not in dict(await worker.due())  # nothing approved yet
    await _approve(db, alias, baking[:3])
    assert (alias, "monitor") in await worker.due()
    quiet = TrainerWorker(None, store, min_new_examples=20)  # type: ignore[arg-type]
    assert alias not in dict(await quiet.due())  # monitor triggers off: 3 < 20 waits


async def test_too_little_traffic_gives_no_verdict(
    db: Database, alias: str, embedder: Embedder
) -> None:
    await _traffic(db, alias, _bike_questions()[:50], hours_ago=2)
    report = await _monitor(db, embedder).check(alias)
    # 40 in the current window leaves 10 before it: not enough for a reference.
    assert report.drift is None and not report.drift_detected
    assert report.note is not None and "10 reference queries" in report.note
    history = await _monitor(db, embedder).history(alias)
    assert [item.id for item in history] == [report.id]
    with pytest.raises(UnknownAlias):
        await _monitor(db, embedder).history("no-such-alias")


async def _approve(db: Database, alias: str, ids: list[str]) -> None:
    async with db.transaction() as session:
        for completion_id in ids:
            session.add(ReviewItem(
                completion_id=completion_id, alias=alias, served_model="base",
                reasons=[{"reason": "correction", "detail": {}, "at": ""}], state="approved",
                correction="Bake it for 40 minutes.", decided_at=utcnow(),
            ))  # fmt: skip
