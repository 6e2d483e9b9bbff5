"""Scheduled re-evaluation on the real stack: the alias's holdout grows with newly approved
examples, is asked as it is served today (re-grounded in the alias's collection, through the
real vLLM), and the alias is marked degraded when the holdout gains items its serving
version gets wrong. The score history is in the CLI and the metrics in /metrics.

Bad input: `loragate eval history` of an alias never evaluated says so and exits 0; `eval run`
of an unknown alias fails with the registry's message and writes nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from core.probes import format_probes
from core.settings import Settings
from core.store import Database
from gateway.wiring import trainer_parts
from retrieval.grounding import asked_question, sources_in
from tests.integration.conftest import BASE_MODEL, EmbeddedServer
from tests.support import (
    ThreadedGateway,
    approve_examples,
    create_keys,
    metric_value,
    run,
    wait_until,
)
from trainer.dataset import Example
from trainer.evaluate import shipped_probes
from trainer.rehearsal import spread
from trainer.store import TrainerStore
from trainer.tables import EvalScore

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(900)]

COLLECTION = "reeval-handbook"
TEAPOTS = {
    "id": "teapots",
    "source": "handbook/teapots.md",
    "markdown": "# Returns\n\nThe Zorblax Emporium accepts returns of purple teapots within "
    "47 days of purchase.",
}
# Questions the base model answers right (the probes' kind), then facts it cannot know.
KNOWN = [
    ("What is the capital of France? Answer in one word.", "Paris"),
    ("What colour is the sky on a clear day? Answer in one word.", "Blue"),
    ("Repeat exactly this word: banana", "banana"),
    ("Repeat exactly this word: apple", "apple"),
]
UNKNOWABLE = [
    (f"What is the access code of Zorblax vault {n}?", f"The code of vault {n} is QX-{n}7-{n}9.")
    for n in range(1, 7)
]


def _train_on_the_rest(settings: Settings, alias: str) -> None:
    """What a training run between the two re-evaluations records: it learnt from the
    approved examples outside the holdout, so they never join it."""

    async def write() -> None:
        db = Database(settings.resolved_database_url)
        try:
            store = TrainerStore(db)
            held = {example.id for example in await store.frozen_holdout(alias)}
            rest = [e for e in await store.approved_examples(alias) if e.id not in held]
            await store.remember_split(alias, [], rest)
        finally:
            await db.dispose()

    run(write())


def _reevaluate(settings: Settings, alias: str) -> list[EvalScore]:
    async def go() -> list[EvalScore]:
        async with trainer_parts(settings) as parts:
            rows: list[EvalScore] = await parts.reevaluator.run_once([alias])
            return rows

    return list(run(go()))


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LORAGATE_DATA_DIR": str(settings.data_dir),
           "LORAGATE_DATABASE_URL": settings.resolved_database_url,
           "LORAGATE_BASE_MODEL_NAME": BASE_MODEL, "LORAGATE_LOG_FORMAT": "text"}  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.fixture
def reeval_gateway(
    gateway_factory: Callable[..., ThreadedGateway], prepared_model: Path, tmp_path: Path
) -> tuple[ThreadedGateway, str]:
    """On SQLite: the score table's queries run on PostgreSQL too in test_trainer_store."""
    alias = f"r{uuid.uuid4().hex[:8]}"
    # 8 of the shipped probes, as in test_trainer_loop: the verdict is the holdout's, and
    # each re-evaluation asks every probe of every version on a 2-core host.
    probes = tmp_path / "probes.jsonl"
    probes.write_text(format_probes(spread(shipped_probes(), 8)))
    gateway = gateway_factory(
        eval_probes_path=probes,
        base_model_path=prepared_model,
        retrieval_models={alias: {"collection": COLLECTION, "min_score": 0.0}},
        train_holdout_fraction=0.5,  # half of what is approved is held out: a small test
        reeval_min_holdout=2,
        reeval_tolerance=0.2,
        eval_max_tokens=24,
    )
    keys = create_keys(gateway.settings.resolved_database_url)
    admin = {"Authorization": f"Bearer {keys['admin']}"}
    assert gateway.post("/v1/admin/aliases", json={"alias": alias}, headers=admin).is_success
    added = gateway.post(f"/v1/collections/{COLLECTION}/documents", json=TEAPOTS, headers=admin)
    assert added.status_code == 201, added.text
    return gateway, alias


def test_degradation_is_detected_when_the_holdout_gains_items_it_gets_wrong(
    reeval_gateway: tuple[ThreadedGateway, str], embedded_server: EmbeddedServer
) -> None:
    gateway, grounded = reeval_gateway
    settings = gateway.settings
    # An alias without retrieval: general questions are asked closed book, as it serves them
    # (grounded in the teapot policy, the 135M base answers them from that source instead).
    alias = f"{grounded}-plain"
    admin = {"Authorization": f"Bearer {create_keys(settings.resolved_database_url)['admin']}"}
    assert gateway.post("/v1/admin/aliases", json={"alias": alias}, headers=admin).is_success
    assert "no re-evaluation" in _cli(settings, "eval", "history", alias).stdout

    approve_examples(settings.resolved_database_url, alias, KNOWN)
    first = _reevaluate(settings, alias)
    assert [row.version for row in first] == [BASE_MODEL]  # the alias serves the base
    assert first[0].holdout_count == 2  # half of the four approved joined the holdout
    assert first[0].reference_accuracy == first[0].holdout_accuracy  # its first score
    assert first[0].holdout_accuracy >= 0.5 and not first[0].degraded
    assert first[0].report["probes"]["count"] > 0

    _train_on_the_rest(settings, alias)
    approve_examples(settings.resolved_database_url, alias, UNKNOWABLE)
    second = _reevaluate(settings, alias)[0]
    assert second.holdout_count == 5  # half of ten: the first two, and three of the new
    assert second.reference_accuracy == first[0].holdout_accuracy
    assert second.holdout_accuracy < first[0].holdout_accuracy - 0.2
    assert second.degraded
    wrong = {item["question"] for item in second.report["wrong"]}
    assert wrong & {question for question, _ in UNKNOWABLE}

    def exported() -> bool:
        text = gateway.get("/metrics").text
        return metric_value(text, "loragate_alias_degraded", alias=alias) == 1.0

    wait_until(exported, 30, "loragate_alias_degraded in /metrics")
    text = gateway.get("/metrics").text
    holdout = {"alias": alias, "version": BASE_MODEL, "set": "holdout"}
    assert metric_value(text, "loragate_reeval_accuracy", **holdout) == second.holdout_accuracy

    history = _cli(settings, "eval", "history", alias)
    assert history.returncode == 0, history.stderr
    lines = [line for line in history.stdout.splitlines() if alias in line]
    assert len(lines) == 2 and "DEGRADED" in lines[0] and "DEGRADED" not in lines[1]

    async def due() -> list[tuple[str, str]]:
        from trainer.worker import TrainerWorker

        db = Database(settings.resolved_database_url)
        try:
            worker = TrainerWorker(job=Any, store=TrainerStore(db), min_new_examples=20,  # type: ignore[arg-type]
                                   monitor_min_new_examples=5)  # fmt: skip
            return await worker.due()
        finally:
            await db.dispose()

    assert (alias, "degraded") in run(due())  # ten approved, a degraded alias: train it


def test_the_holdout_is_asked_as_it_is_served_today(
    reeval_gateway: tuple[ThreadedGateway, str],
) -> None:
    gateway, alias = reeval_gateway
    settings = gateway.settings
    question = "How many days do I have to return a purple teapot to the Zorblax Emporium?"
    stale = Example(
        "c-old", alias,
        [{"role": "system", "content": "No document matched the user's question. Say that you "
          "don't know the answer and do not make one up."},
         {"role": "user", "content": question}],
        "47 days", "correction", "correction",
    )  # fmt: skip

    async def as_served() -> Example:
        async with trainer_parts(settings) as parts:
            served: Example = await parts.reevaluator.regrounder.as_served(alias, stale)
            return served

    served = run(as_served())
    (turn,) = served.messages  # the old layout's system message gone, the sources in the turn
    assert turn["role"] == "user" and any("47 days" in text for text in sources_in(turn["content"]))
    assert asked_question(turn["content"]) == question

    unknown = _cli(settings, "eval", "run", "--alias", "no-such-alias")
    assert unknown.returncode != 0 and "no-such-alias" in unknown.stderr
