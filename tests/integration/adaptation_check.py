"""The loop makes answers better on a domain nobody tuned it for (issue 16): a check run by
hand, not in CI's ``make test`` (its name does not match ``test_*.py``, so pytest collects it
only when named: ``pytest tests/integration/adaptation_check.py``; with the session's vLLM,
about 5 to 6 minutes on two AVX-512 cores, 15 to 25 on two AVX2 cores, which train in
float32).

A fictional company is generated from the session's seed (trainer/demo/domain.py: names,
numbers and facts no model can know), and played through the real loop on the session's
vLLM, every setting at its default: its documents are ingested, an alias answers with
retrieval over them (from the base's default number of sources: one for SmolLM2-135M),
simulated users ask each fact's two questions and correct the wrong answers, the operator
approves, and ``loragate train`` runs in its own process.

Then the published candidate, the base, and the candidate's no-op twin (its ``lora_B``
zeroed: vLLM's LoRA path, adding nothing) answer every fact's held-out paraphrase (no user
asked it, nothing trained on it) with the gateway's own sources, one request at a time, so
that answers repeat exactly. The twin answers exactly as the base, word for word: whatever
the candidate gains over the base is its training, and one paraphrase is beyond anything a
no-op adapter can reach. Every answer, which facts the gate held out, and the gate's report
are kept in the run's data directory (``played.json``).

Why it is not in CI: the candidate's gain is real but small and varies by seed, so the test
would fail now and then for the loop's sake, not the test's (docs/training.md, "Adapting to
domains nobody tuned it for"). On ten seeds of 12 facts the twin always matched the base;
eight candidates gained 1 to 3 paraphrases, one (701, on an AVX2 host) gained 2 and lost 2,
and one (702) lost 2 where the base had answered 10 of 12. With a single source cited first
(stop 37), seeds 702-705 gained 0, +2, +3 and +5, and the gate refused 702's and 704's
candidates (probes; two bare "[1]" answers): all three tests passed on two of the four.
Cited as ``Source [1]: ...`` (stop 38), seeds 706-711 gained -1 to +5, every candidate was
published, and all three tests passed on five of six; the sixth (708) had a base that
answered 11 of 12, and its candidate lost one. Seeds 715-717: +4, -1 (716's candidate
copied a source's filler sentence; refused by its gate), +3: seven of nine in all.
Since stop 39 the domain has 20 facts, as ``bench/adaptation.py``'s have: a base that reads
one source well left one 12-fact question to gain and one to lose (708). At 20 facts, every
setting at its default, every candidate gained 3 to 9 paraphrases: six benchmark seeds
(712-714, 720-722) and four runs of this check (740-743: 13 → 17, 14 → 17, 11 → 17,
12 → 15, all three tests passed, 4.9 to 6.2 minutes each on two AVX-512 cores). What still
fails about one run in ten is the gate's verdict (712's candidate was refused at a holdout
gain of 0.00 while its paraphrases went 14 → 17), and a slow host's time: on two AVX2 cores,
which train in float32, a 20-fact run took 25 minutes (seed 601), more than CI can spare.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest

from core.settings import load_settings
from gateway.wiring import sources_per_answer
from retrieval.embeddings import Embedder
from tests.integration.conftest import BASE_MODEL, EmbeddedServer
from tests.support import ThreadedGateway, create_keys, run, session_seed, settings_env
from trainer.demo import DemoUsers
from trainer.demo.domain import Domain, generate_domain
from trainer.demo.measure import Accuracy, compare, held_out_facts, noop_twin

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(2400)]  # for a hang, not a slow host
FACTS = 20  # room above a base that reads one source well (12: 11 of 12 on seed 708)
MARGIN = 1  # paraphrase: the no-op twin gains exactly 0, as the second test shows


@dataclass
class Played:
    domain: Domain
    version: dict[str, Any]  # the trained version's card, with its eval report
    scores: dict[str, Accuracy]  # base | candidate | twin, on the paraphrases with retrieval
    held_out: set[str]  # the facts of the gate's holdout, never trained on


@pytest.fixture(scope="module")
def played(
    embedded_server: EmbeddedServer, prepared_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Played]:
    seed = session_seed()
    domain = generate_domain(seed, FACTS)
    alias = f"domain-{seed}"
    data_dir = tmp_path_factory.mktemp("adaptation")
    overrides: dict[str, Any] = dict(
        data_dir=data_dir,
        engine_mode="external",
        engine_urls=embedded_server.engine_url,
        base_model_name=BASE_MODEL,
        base_model_path=prepared_model,
        retrieval_models={alias: {"collection": domain.collection}},
        log_format="text",
        rollout_interval_s=3600,  # the canary stays put while the test looks at it
    )
    settings = load_settings(**overrides)
    gateway = ThreadedGateway.start(settings)
    keys = create_keys(settings.resolved_database_url)
    embed = Embedder().embed

    async def as_users(action: Callable[[DemoUsers], Awaitable[Any]]) -> Any:
        users = DemoUsers(gateway.base_url, keys["chat"], keys["admin"], embed)
        try:
            return await action(users)
        finally:
            await users.close()

    async def correct(users: DemoUsers) -> None:
        await users.setup(alias, domain.collection, domain.documents())
        served = await users.ask(domain.questions(), model=alias)
        await users.give_feedback(served)
        await users.wait_flagged(len(served), alias)
        await users.approve_all(alias)

    try:
        run(as_users(correct))
        trained = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "train", "--alias", alias],
            env=settings_env(overrides),
            capture_output=True,
            text=True,
        )
        assert trained.returncode == 0, trained.stderr[-3000:]
        [version] = run(as_users(lambda users: users.versions(alias)))
        twin = noop_twin(Path(version["path"]), data_dir / "noop-twin")
        adapters = {"candidate": Path(version["path"]), "twin": twin}
        measured = run(compare(embedded_server.engine_url, gateway.base_url, keys["chat"],
                               domain, adapters, BASE_MODEL, embed, sources_per_answer(settings),
                               modes=("grounded",), probes=False))  # fmt: skip
        scores = {label: accuracy for (label, _), accuracy in measured.paraphrases.items()}
        played = Played(domain, version, scores, _held_out(domain, version["eval_report"]))
        (data_dir / "played.json").write_text(json.dumps(_record(played), indent=1))
        yield played
    finally:
        gateway.stop()


def _held_out(domain: Domain, report: dict[str, Any]) -> set[str]:
    """The facts whose users' questions the gate held out (its items as served)."""
    asked = {question.question for question in domain.questions()}
    served = [item["question"] for item in report["holdout_items"] if item["form"] == "served"]
    assert served and set(served) <= asked, served  # every one a user's question
    return held_out_facts(domain, report)


def _record(played: Played) -> dict[str, Any]:
    """What a run leaves in its data directory (``played.json``) to be read after it: the
    seed, the version's card with its gate report, and every side's answers."""
    return {
        "seed": played.domain.seed,
        "held_out": sorted(played.held_out),
        "version": played.version,
        "scores": {label: asdict(accuracy) for label, accuracy in played.scores.items()},
    }


def _explain(played: Played) -> str:
    """The seed, the gate's verdict and each side's answers, for a failure's message."""
    report = played.version["eval_report"]
    lines = [f"seed {played.domain.seed}, gate {report['gate']}"]
    for number, question in enumerate(played.domain.paraphrases()):
        trained = "held out" if question.fact in played.held_out else "trained"
        lines.append(f"Q ({trained}) {question.question} | reference {question.answer}")
        for label, accuracy in played.scores.items():
            lines.append(f"  {label} {accuracy.correct[number]}: {accuracy.answers[number]}")
    return "\n".join(lines)


def test_the_candidate_is_published_as_a_canary(played: Played) -> None:
    report = played.version["eval_report"]
    assert report["gate"]["passed"], _explain(played)
    assert played.version["state"] == "canary"
    assert report["training"]["recipe"]["grounded"] > 0  # trained as served, with sources
    # every setting at its default: the schedule sized to the data, the recipe, the 99 probes
    assert report["candidate"]["probes"]["count"] == report["baseline"]["probes"]["count"] == 99


def test_a_noop_adapter_answers_exactly_as_the_base(played: Played) -> None:
    """What makes the margin meaningful: through vLLM's LoRA path an adapter that changes
    nothing gives the base's answers word for word, so it gains nothing."""
    assert played.scores["twin"].answers == played.scores["base"].answers


def test_the_candidate_beats_the_base_on_held_out_paraphrases(played: Played) -> None:
    base, candidate = played.scores["base"], played.scores["candidate"]
    gained = sum(candidate.correct) - sum(base.correct)
    assert gained >= MARGIN, _explain(played)
