"""The loop makes answers better on a domain nobody tuned it for (the real stack: vLLM CPU,
SQLite, FAISS, QLoRA on the CPU).

Each run generates a new fictional company (trainer/demo/domain.py; the seed is printed, and
``LORAGATE_TEST_SEED`` replays one). Simulated users ask both questions of every fact through
an alias that answers with retrieval, correct the wrong answers, an operator approves, and
one training run with the default recipe, schedule and gate publishes a candidate. Then the
base and the candidate answer each fact's held-out paraphrase (never asked, never trained
on) with the alias's retrieval. A no-op adapter answers exactly as the base does at
temperature 0, so a gain of at least ``MARGIN`` questions is one it could not reach.

bench/adaptation.py plays the same loop on 20-fact domains over several seeds with the
closed-book rows too; this test keeps the domain small to fit the suite.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gateway.settings import Settings, load_settings
from retrieval.embeddings import Embedder
from tests.integration.conftest import BASE_MODEL, EmbeddedServer
from tests.support import ThreadedGateway, create_keys, run
from trainer.cli import trainer_parts
from trainer.demo import DemoUsers
from trainer.demo.domain import Domain, generate_domain
from trainer.demo.measure import Accuracy, paraphrase_accuracy
from trainer.evaluate import Evaluator
from trainer.job import RunOutcome

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(1500)]
FACTS = 12
TOP_K = 3
MARGIN = 2  # held-out paraphrases the candidate must answer right beyond the base's
SEED = int(os.environ.get("LORAGATE_TEST_SEED") or random.randrange(1_000_000))


@dataclass
class Adapted:
    domain: Domain
    settings: Settings
    gateway: ThreadedGateway
    chat_key: str
    outcome: RunOutcome


@pytest.fixture(scope="module")
def adapted(
    embedded_server: EmbeddedServer,
    prepared_model: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Adapted]:
    print(f"generated domain seed {SEED} (LORAGATE_TEST_SEED={SEED} replays it)")
    domain = generate_domain(SEED, FACTS)
    alias = f"domain-{SEED}"
    settings = load_settings(
        data_dir=tmp_path_factory.mktemp("adaptation"),
        engine_mode="external",
        engine_urls=embedded_server.engine_url,
        base_model_name=BASE_MODEL,
        base_model_path=prepared_model,
        retrieval_models={alias: {"collection": domain.collection, "top_k": TOP_K}},
        log_format="text",
        rollout_interval_s=3600,
    )
    gateway = ThreadedGateway.start(settings)
    keys = create_keys(settings.resolved_database_url)
    embedder = Embedder()
    try:

        async def ask_correct_approve() -> None:
            users = DemoUsers(gateway.base_url, keys["chat"], keys["admin"], embedder.embed)
            try:
                await users.setup(alias, domain.collection, domain.documents())
                served = await users.ask(domain.questions(), model=alias)
                await users.give_feedback(served)
                await users.wait_flagged(len(served), alias)
                await users.approve_all(alias)
            finally:
                await users.close()

        run(ask_correct_approve())

        async def train() -> RunOutcome:
            async with trainer_parts(settings) as parts:
                outcome: RunOutcome = await parts.job.run(alias)
                return outcome

        yield Adapted(domain, settings, gateway, keys["chat"], asyncio.run(train()))
    finally:
        gateway.stop()


def _grounded_accuracy(adapted: Adapted, embedded: EmbeddedServer) -> tuple[Accuracy, Accuracy]:
    """The base and the candidate on the held-out paraphrases, with the alias's retrieval."""
    embed = Embedder().embed
    collection = adapted.domain.collection
    version = adapted.outcome.candidate
    assert version is not None

    async def measure() -> tuple[Accuracy, Accuracy]:
        headers = {"Authorization": f"Bearer {adapted.chat_key}"}
        evaluator = Evaluator(embedded.engine_url, embed, max_tokens=48)
        async with httpx.AsyncClient(
            base_url=adapted.gateway.base_url, headers=headers, timeout=60
        ) as http:

            async def search(question: str) -> list[str]:
                found = await http.get(f"/v1/collections/{collection}/search",
                                       params={"q": question, "k": TOP_K})  # fmt: skip
                return [hit["text"] for hit in found.json()["data"]]

            try:
                path = adapted.settings.data_dir / "adapters" / version
                async with evaluator.loaded(f"test-{version}", path.resolve()) as name:
                    candidate = await paraphrase_accuracy(
                        evaluator, name, adapted.domain, embed, search
                    )
                base = await paraphrase_accuracy(
                    evaluator, BASE_MODEL, adapted.domain, embed, search
                )
            finally:
                await evaluator.close()
        return base, candidate

    result: tuple[Accuracy, Accuracy] = asyncio.run(measure())
    return result


def test_the_candidate_is_published_by_the_default_gate(adapted: Adapted) -> None:
    report = adapted.outcome.report
    assert adapted.outcome.state == "published", (SEED, report["gate"])
    holdout_facts = {item["reference"] for item in report["holdout_items"]}
    assert holdout_facts, "the gate measured something"
    training = report["training"]
    assert training["recipe"]["grounded"] > 0 and training["recipe"]["cited"] > 0, training


def test_the_candidate_beats_the_base_on_held_out_paraphrases(
    adapted: Adapted, embedded_server: EmbeddedServer
) -> None:
    base, candidate = _grounded_accuracy(adapted, embedded_server)
    right = round(candidate.scorer * FACTS), round(base.scorer * FACTS)
    assert right[0] >= right[1] + MARGIN, (SEED, right, candidate.answers, base.answers)
