"""The adaptation loop on the real stack (vLLM CPU, SQLite, FAISS, QLoRA on the CPU), on a
domain nobody tuned it for, every setting at its default.

A fictional company is generated from the session's seed (trainer/demo/domain.py: names,
numbers and facts no model can know; ``FACTS`` of them). Its documents are ingested, an alias
answers with retrieval over them (the base's default number of sources: one for
SmolLM2-135M), simulated users ask each fact's two questions and correct the wrong answers,
an operator approves. Then ``loragate train``, in its own process as an operator runs it,
curates a dataset, trains a QLoRA adapter with the recipe and the schedule sized to the data,
scores it against the base on the frozen holdout and the shipped probes through vLLM, and
publishes it as a canary if it is better, or keeps it rejected.

Does the loop make answers better? The candidate, the base, and the candidate's no-op twin
(its ``lora_B`` zeroed: vLLM's LoRA path, adding nothing) answer every fact's held-out
paraphrase (no user asked it, nothing trained on it) with the gateway's own sources, one
request at a time, so that answers repeat exactly. The twin answers as the base word for
word, so whatever the candidate gains is its training, and one paraphrase is beyond anything
a no-op adapter reaches. Every answer, the gate's holdout and its report are kept in the
run's data directory (``played.json``).

Whether the gate publishes this candidate is checked for following the gate's measurements,
not bet on: at 20 facts it refused 2 of 26 candidates that gained on the paraphrases. Its
holdout (a quarter of the facts, split by fact) held one or two facts the base got
wrong, and the candidate fixed none of them; asked three ways reworded since, it refused 2
of 6: one whose base's misses were retrieval misses, one whose candidate answered a held-out
fact worse (docs/training.md, "In CI").

Bad data and crashes, and what each gets:
* corrections that answer another question, the held-out ones among them: a candidate that
  does not beat the base on the holdout is kept as ``rejected``, with its report, and never
  rolls out;
* no approved examples, or nothing fitting the context: the CLI exits non-zero naming the
  cause, a ``failed`` run, no version (all duplicates and a corrupt snapshot: tests/unit);
* the trainer killed mid-run: no version, the run recorded as failed by the next run, which
  resumes from the last checkpoint and finishes.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
from sqlalchemy import select

from core.probes import format_probes
from core.settings import Settings, load_settings
from core.store import Database
from core.store.tables import Conversation, ReviewItem, utcnow
from gateway.wiring import sources_per_answer
from retrieval.embeddings import Embedder
from retrieval.grounding import sources_in
from tests.integration.conftest import BASE_MODEL, EmbeddedServer, sdk_client
from tests.support import (
    ThreadedGateway,
    create_keys,
    run,
    session_seed,
    settings_env,
    wait_until,
)
from trainer.dataset import read_snapshot
from trainer.demo import DemoAnswer, DemoUsers
from trainer.demo.domain import Domain, generate_domain
from trainer.demo.measure import Accuracy, compare, held_out_facts, noop_twin
from trainer.evaluate import shipped_probes
from trainer.holdout_forms import FORMS
from trainer.job import RunOutcome
from trainer.rehearsal import spread
from trainer.tables import SplitItem, TrainingRun

# The module's fixtures train, gate and measure for real once (8 to 9 minutes on two
# AVX-512 cores), and the first test pays for them. The limit is for a hang, not a slow host.
pytestmark = [pytest.mark.vllm, pytest.mark.timeout(2400)]
FACTS = 20  # room above a base that reads one source well (12: it answered 11 of 12 once)
MARGIN = 1  # paraphrase: the no-op twin gains exactly 0, as its test shows
QUESTIONS = 2 * FACTS  # each fact asked two ways
# The runs on copied aliases (taught wrong facts, killed mid-run) look at the verdict and the
# resume, not at the probes: 8 of the shipped ones, and short answers, keep them quick.
PROBES = 8


@dataclass
class Loop:
    gateway: ThreadedGateway
    settings: Settings
    overrides: dict[str, Any]  # the settings, by flat name: the CLI gets them as env vars
    keys: dict[str, str]
    domain: Domain
    alias: str
    served: list[DemoAnswer]
    embedder: Embedder  # the scorer's sentence vectors, loaded once for the module


def _overrides(embedded: EmbeddedServer, data_dir: Path, model_dir: Path, domain: Domain,
               alias: str) -> dict[str, Any]:  # fmt: skip
    """Where the loop runs, and nothing else: every setting of the loop at its default."""
    return dict(
        data_dir=data_dir,
        engine_mode="external",
        engine_urls=embedded.engine_url,
        base_model_name=BASE_MODEL,
        base_model_path=model_dir,
        retrieval_models={alias: {"collection": domain.collection}},
        log_format="text",
        rollout_interval_s=3600,  # the canary stays put while the tests look at it
    )


def _quick(data_dir: Path) -> dict[str, Any]:
    """Settings for the runs on copied aliases: a few probes, short answers."""
    probes = data_dir / "probes.jsonl"
    if not probes.exists():
        probes.write_text(format_probes(spread(shipped_probes(), PROBES)))
    return dict(eval_probes_path=probes, eval_max_tokens=48)


@pytest.fixture(scope="module")
def loop(
    embedded_server: EmbeddedServer, prepared_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Loop]:
    domain = generate_domain(session_seed(), FACTS)
    alias = f"domain-{domain.seed}"
    data_dir = tmp_path_factory.mktemp("loop")
    overrides = _overrides(embedded_server, data_dir, prepared_model, domain, alias)
    settings = load_settings(**overrides)
    gateway = ThreadedGateway.start(settings)
    keys = create_keys(settings.resolved_database_url)
    embedder = Embedder()

    async def ask_and_rate(users: DemoUsers) -> list[DemoAnswer]:
        await users.setup(alias, domain.collection, domain.documents())
        served = await users.ask(domain.questions(), model=alias)
        await users.give_feedback(served)
        return served

    try:
        served: list[DemoAnswer] = _as_users(gateway, keys, embedder, ask_and_rate)
        wait_until(lambda: _pending(settings) == len(served), 60, "every answer flagged")
        _as_users(gateway, keys, embedder, lambda users: users.approve_all(alias))
        yield Loop(gateway, settings, overrides, keys, domain, alias, served, embedder)
    finally:
        gateway.stop()


def _as_users(
    gateway: ThreadedGateway,
    keys: dict[str, str],
    embedder: Embedder,
    action: Callable[[DemoUsers], Awaitable[Any]],
) -> Any:
    async def go() -> Any:
        users = DemoUsers(gateway.base_url, keys["chat"], keys["admin"], embedder.embed)
        try:
            return await action(users)
        finally:
            await users.close()

    return run(go())


def _reasons(item: ReviewItem) -> set[str]:
    return {reason["reason"] for reason in item.reasons}


def _pending(settings: Settings) -> int:
    return len(_rows(settings, select(ReviewItem).where(ReviewItem.state == "pending")))


def _rows(settings: Settings, query: Any) -> list[Any]:
    async def read() -> list[Any]:
        db = Database(settings.resolved_database_url)
        try:
            async with db.sessions() as session:
                return list(await session.scalars(query))
        finally:
            await db.dispose()

    result: list[Any] = run(read())
    return result


# Training goes through the CLI an operator runs, in its own process: the tests' process
# neither loads the trainer's torch nor keeps what it leaves behind.
def _env(loop: Loop, **overrides: Any) -> dict[str, str]:
    """The loop's settings, and ``overrides`` (flat names), as a CLI reads them."""
    return settings_env({**loop.overrides, **overrides})


def _train_command(alias: str) -> list[str]:
    return [sys.executable, "-m", "gateway.cli", "train", "--alias", alias]


def _run_train(loop: Loop, alias: str, **overrides: Any) -> subprocess.CompletedProcess[str]:
    """``loragate train --alias ALIAS`` in its own process, as an operator runs it."""
    env = _env(loop, **overrides)
    return subprocess.run(_train_command(alias), env=env, capture_output=True, text=True)


def _train(loop: Loop, alias: str, **overrides: Any) -> RunOutcome:
    """A run that must succeed, and its run as the store recorded it."""
    finished = _run_train(loop, alias, **overrides)
    assert finished.returncode == 0, finished.stderr[-3000:]
    [last] = _rows(loop.settings, select(TrainingRun).where(TrainingRun.alias == alias)
                   .order_by(TrainingRun.id.desc()).limit(1))  # fmt: skip
    return RunOutcome(last.id, alias, last.state, last.candidate, last.report)


def _train_fails(loop: Loop, alias: str, **overrides: Any) -> str:
    """What ``loragate train`` said when it failed, as it must."""
    finished = _run_train(loop, alias, **overrides)
    assert finished.returncode != 0, finished.stdout[-2000:]
    return finished.stderr


@pytest.fixture(scope="module")
def trained(loop: Loop) -> RunOutcome:
    return _train(loop, loop.alias)


# -- the loop, as it should go ------------------------------------------------------------
def test_flags_become_approved_review_items(loop: Loop) -> None:
    items = _rows(loop.settings, select(ReviewItem).where(ReviewItem.alias == loop.alias))
    assert len(items) == len(loop.served) == QUESTIONS
    assert {item.state for item in items} == {"approved"}
    reasons = {reason["reason"] for item in items for reason in item.reasons}
    wrong = sum(not served.correct for served in loop.served)
    assert 0 < wrong < len(items), "the grounded base gets some questions right and some wrong"
    assert {"correction", "operator_flag"} <= reasons
    flagged_wrong = [item for item in items if "correction" in _reasons(item)]
    assert len(flagged_wrong) == wrong and all(item.correction for item in items)


def test_the_dataset_is_the_conversation_as_served(loop: Loop, trained: RunOutcome) -> None:
    snapshot = read_snapshot(Path(trained.report["dataset"]["path"]))
    counts = snapshot.manifest["counts"]
    assert sum(counts.values()) + sum(snapshot.manifest["dropped"].values()) == QUESTIONS
    train, holdout = snapshot.examples("train"), snapshot.examples("holdout")
    assert train and holdout
    turn = train[0].messages[-1]  # as served: the sources in the user turn
    assert turn["role"] == "user" and sources_in(turn["content"])
    assert {example.id for example in train}.isdisjoint(example.id for example in holdout)
    frozen = _rows(loop.settings, select(SplitItem).where(SplitItem.alias == loop.alias))
    assert sum(row.split == "holdout" for row in frozen) == counts["holdout"]
    assert sum(row.split == "train" for row in frozen) == counts["train"] + counts["validation"]


def test_the_gate_judges_the_candidate_on_the_frozen_holdout(
    loop: Loop, trained: RunOutcome
) -> None:
    """Both sides answer the same frozen holdout and the probes, and the verdict follows the
    measurements, whichever it is (the module's docstring says why it is not bet on)."""
    report, settings = trained.report, loop.settings
    candidate, base = report["candidate"], report["baseline"]
    assert base["model"] == BASE_MODEL
    # Each held-out question as served, in `eval_rewordings` new wordings grounded afresh,
    # and reworded closed book (trainer/holdout_forms.py), pooled into one accuracy.
    holdout_count = report["dataset"]["counts"]["holdout"]
    per_form = _items_per_form(settings, holdout_count)
    assert candidate["holdout"]["count"] == base["holdout"]["count"] == sum(per_form.values())
    assert set(candidate["holdout"]["forms"]) == set(base["holdout"]["forms"]) == set(FORMS)
    items = report["holdout_items"]
    assert Counter(item["form"] for item in items) == per_form
    served = {item["question"] for item in items if item["form"] == "served"}
    reworded = {item["question"] for item in items if item["form"] == "reworded"}
    assert len(reworded) == per_form["reworded"] and not reworded & served
    # every setting at its default: the shipped probes, the recipe, the schedule sized to the data
    shipped = len(shipped_probes())
    assert candidate["probes"]["count"] == base["probes"]["count"] == shipped
    assert report["training"]["recipe"]["grounded"] > 0  # trained as served, with sources
    assert report["training"]["rehearsal_examples"] > 0  # the base's answers, against forgetting
    assert report["training"]["steps"] > 0
    assert report["gate"]["probes"] == "shipped"
    gate = report["gate"]
    # The gain is pooled over the forms that tell the sides apart (trainer/evaluate.py): a
    # form both answer all wrong (or all right) is left out; the rest are pooled by item.
    forms_c, forms_b = candidate["holdout"]["forms"], base["holdout"]["forms"]
    left_out = {form for form in FORMS if forms_c[form] == forms_b[form] in (0.0, 1.0)}
    assert set(gate["forms_left_out"]) == left_out
    kept = [form for form in FORMS if form not in left_out]
    gain = sum(per_form[form] * (forms_c[form] - forms_b[form]) for form in kept) / max(
        1, sum(per_form[form] for form in kept)
    )
    change = candidate["probes"]["accuracy"] - base["probes"]["accuracy"]
    # The items the sides disagree on, kept with both answers, add up to the difference.
    for part in ("holdout", "probes"):
        disagreed = report["changed"][part]
        wins = sum(item["candidate_correct"] for item in disagreed)
        difference = candidate[part]["accuracy"] - base[part]["accuracy"]
        assert wins - (len(disagreed) - wins) == round(difference * candidate[part]["count"])
    assert gate["holdout_gain"] == pytest.approx(gain, abs=1e-3)
    assert gate["probe_change"] == pytest.approx(change, abs=1e-3)
    should_pass = (
        gain >= settings.evaluation.margin - 1e-9 and change >= -settings.evaluation.probe_tolerance
    )
    assert gate["passed"] is should_pass and bool(gate["reasons"]) is not should_pass
    assert trained.state == ("published" if should_pass else "rejected")
    runs = _rows(settings, select(TrainingRun).where(TrainingRun.alias == loop.alias))
    assert [(run.state, run.candidate) for run in runs] == [(trained.state, trained.candidate)]

    headers = {"Authorization": f"Bearer {loop.keys['admin']}"}
    rollout = loop.gateway.get(f"/v1/admin/rollouts/{loop.alias}", headers=headers)
    versions = loop.gateway.get("/v1/admin/adapters", headers=headers).json()["data"]
    card = next(version for version in versions if version["name"] == trained.candidate)
    assert card["eval_report"]["gate"]["passed"] is should_pass
    if should_pass:  # published as a canary
        assert card["state"] == "canary"
        assert rollout.json()["candidate"] == trained.candidate
        assert rollout.json()["state"] == "running"
    else:  # kept with its report, never rolled out
        assert card["state"] == "rejected" and rollout.status_code == 404


def _items_per_form(settings: Settings, holdout_count: int) -> dict[str, int]:
    """How many items the gate scores in each form: one per held-out question, and one per
    wording of it reworded."""
    counts = dict.fromkeys(FORMS, holdout_count)
    counts["reworded"] *= settings.evaluation.rewordings
    return counts


def test_the_candidate_answers_in_vllm(loop: Loop, trained: RunOutcome) -> None:
    """The trained adapter loaded into vLLM: it answered every holdout question when scored,
    and a published one answers through the gateway by its version name, where a rejected
    one is not served."""
    assert trained.candidate is not None
    answers = [item["answer"] for item in trained.report["holdout_items"]]
    per_form = _items_per_form(loop.settings, trained.report["dataset"]["counts"]["holdout"])
    assert len(answers) == sum(per_form.values()) and all(answers)
    holdout = read_snapshot(Path(trained.report["dataset"]["path"])).examples("holdout")
    client = sdk_client(loop.gateway.base_url, loop.keys["chat"])
    request: dict[str, Any] = {
        "model": trained.candidate,
        "max_tokens": 48,
        "temperature": 0,
        "messages": [{"role": "user", "content": holdout[0].question}],
    }
    if trained.state != "published":
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(**request)
        return

    def answered() -> Any:
        try:
            return client.chat.completions.create(**request)
        except Exception:  # the reconciler may still be loading it into vLLM
            return None

    completion = wait_until(answered, 60, f"{trained.candidate} to serve")
    assert completion.model == trained.candidate
    assert completion.choices[0].message.content


def test_adapters_show_prints_the_eval_report(loop: Loop, trained: RunOutcome) -> None:
    output = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "adapters", "show", str(trained.candidate)],
        env=_env(loop),
        capture_output=True,
        text=True,
        check=True,
    )
    card = json.loads(output.stdout)
    assert card["eval_report"]["gate"]["passed"] is (trained.state == "published")
    assert card["eval_report"]["candidate"]["holdout"]["count"] > 0


# -- answers get better ---------------------------------------------------------------------
@dataclass
class Played:
    version: dict[str, Any]  # the trained version's card, with its eval report
    scores: dict[str, Accuracy]  # base | candidate | twin, on the paraphrases with retrieval
    held_out: set[str]  # the facts of the gate's holdout, never trained on


@pytest.fixture(scope="module")
def played(embedded_server: EmbeddedServer, loop: Loop, trained: RunOutcome) -> Played:
    """The base, the candidate and its no-op twin on every fact's held-out paraphrase."""
    domain, data_dir = loop.domain, loop.settings.data_dir
    headers = {"Authorization": f"Bearer {loop.keys['admin']}"}
    listed = loop.gateway.get("/v1/admin/adapters", headers=headers, params={"alias": loop.alias})
    [version] = listed.json()["data"]
    assert version["name"] == trained.candidate
    adapters = {"candidate": Path(version["path"])}
    adapters["twin"] = noop_twin(adapters["candidate"], data_dir / "noop-twin")
    measured = run(compare(embedded_server.engine_url, loop.gateway.base_url, loop.keys["chat"],
                           domain, adapters, BASE_MODEL, loop.embedder.embed,
                           sources_per_answer(loop.settings), modes=("grounded",),
                           probes=False))  # fmt: skip
    scores = {label: accuracy for (label, _), accuracy in measured.paraphrases.items()}
    played = Played(version, scores, _held_out(domain, version["eval_report"]))
    (data_dir / "played.json").write_text(json.dumps(_record(domain, played), indent=1))
    return played


def _held_out(domain: Domain, report: dict[str, Any]) -> set[str]:
    """The facts whose users' questions the gate held out (its items as served)."""
    asked = {question.question for question in domain.questions()}
    served = [item["question"] for item in report["holdout_items"] if item["form"] == "served"]
    assert served and set(served) <= asked, served  # every one a user's question
    return held_out_facts(domain, report)


def _record(domain: Domain, played: Played) -> dict[str, Any]:
    """What a run leaves in its data directory (``played.json``) to be read after it: the
    seed, the version's card with its gate report, and every side's answers."""
    return {
        "seed": domain.seed,
        "held_out": sorted(played.held_out),
        "version": played.version,
        "scores": {label: asdict(accuracy) for label, accuracy in played.scores.items()},
    }


def _explain(domain: Domain, played: Played) -> str:
    """The seed, the gate's verdict and each side's answers, for a failure's message."""
    report = played.version["eval_report"]
    lines = [f"seed {domain.seed}, gate {report['gate']}"]
    for number, question in enumerate(domain.paraphrases()):
        trained = "held out" if question.fact in played.held_out else "trained"
        lines.append(f"Q ({trained}) {question.question} | reference {question.answer}")
        for label, accuracy in played.scores.items():
            lines.append(f"  {label} {accuracy.correct[number]}: {accuracy.answers[number]}")
    return "\n".join(lines)


def test_a_noop_adapter_answers_exactly_as_the_base(played: Played) -> None:
    """What makes the margin meaningful: through vLLM's LoRA path an adapter that changes
    nothing gives the base's answers word for word, so it gains nothing."""
    assert played.scores["twin"].answers == played.scores["base"].answers


def test_the_candidate_beats_the_base_on_held_out_paraphrases(loop: Loop, played: Played) -> None:
    """Whether or not the gate published it."""
    base, candidate = played.scores["base"], played.scores["candidate"]
    gained = sum(candidate.correct) - sum(base.correct)
    assert gained >= MARGIN, _explain(loop.domain, played)


# -- bad data --------------------------------------------------------------------------
def _copy_alias(loop: Loop, alias: str, wrong: bool, limit: int | None = None) -> None:
    """A new alias with the approved train-side examples of the loop's and the same, correct,
    frozen holdout. ``wrong`` gives every example the reply of another question: confident,
    fluent, on-domain, and wrong; and adds the held-out questions again, asked anew by other
    users and corrected with a trained fact's reply, which the split by fact (by reply) sends
    to training."""

    async def copy() -> None:
        db = Database(loop.settings.resolved_database_url)
        try:
            async with db.transaction() as session:
                splits = list(
                    await session.scalars(select(SplitItem).where(SplitItem.alias == loop.alias))
                )
                trained_ids = [row.completion_id for row in splits if row.split == "train"]
                held_ids = [row.completion_id for row in splits if row.split == "holdout"]
                for row in splits:
                    if row.split == "holdout":
                        session.add(
                            SplitItem(
                                alias=alias,
                                completion_id=row.completion_id,
                                split="holdout",
                                stratum=row.stratum,
                                example=row.example,
                            )
                        )
                chosen = trained_ids[:limit]
                replies = [await _reply(session, completion_id) for completion_id in chosen]
                if wrong:
                    chosen += held_ids
                    replies = replies[5:] + replies[:5] + replies[: len(held_ids)]
                for completion_id, reply in zip(chosen, replies, strict=True):
                    await _copy_one(session, completion_id, alias, reply)
        finally:
            await db.dispose()

    run(copy())


async def _reply(session: Any, completion_id: str) -> str:
    original = await session.get(Conversation, completion_id)
    item = await session.scalar(select(ReviewItem).where(ReviewItem.completion_id == completion_id))
    return str(item.correction or original.response[0]["content"])


async def _copy_one(session: Any, completion_id: str, alias: str, reply: str) -> None:
    original = await session.get(Conversation, completion_id)
    item = await session.scalar(select(ReviewItem).where(ReviewItem.completion_id == completion_id))
    new_id = f"chatcmpl-{uuid.uuid4().hex}"
    row = Conversation(
        **{column.name: getattr(original, column.name) for column in Conversation.__table__.columns}
    )
    row.id, row.requested_model = new_id, alias
    session.add(row)
    session.add(
        ReviewItem(
            completion_id=new_id,
            alias=alias,
            served_model=row.served_model,
            reasons=item.reasons,
            state="approved",
            correction=reply,
            reviewer="test",
            decided_at=utcnow(),
        )
    )


def test_a_candidate_taught_wrong_facts_is_rejected(loop: Loop, trained: RunOutcome) -> None:
    wrong_alias = f"{loop.alias}-wrong"
    _copy_alias(loop, wrong_alias, wrong=True)
    # 16 steps: with 8, the wrong facts once moved no holdout answer (gain 0.0). The holdout
    # as served is enough to see them, and a third of the scoring. Trained on the wrong
    # conversations as served, without the recipe's expansion or rehearsal (the trained
    # fixture runs those): each wrong reply is seen more often, and the run costs a third.
    # A small holdout fraction: the frozen holdout already holds more than it asks for, so no
    # new fact tops it up, and every wrong correction, the held-out questions' too, is trained.
    # A learning rate above the default, so that 16 steps move the model enough to be seen.
    outcome = _train(
        loop, wrong_alias, train_max_steps=16, train_learning_rate=5e-4, train_recipe=False,
        train_rehearsal_fraction=0, train_holdout_fraction=0.05, eval_holdout_forms="served",
        **_quick(loop.settings.data_dir),
    )  # fmt: skip
    assert (
        outcome.report["dataset"]["counts"]["holdout"]
        == trained.report["dataset"]["counts"]["holdout"]
    )
    assert outcome.state == "rejected", outcome.report["gate"]
    gate = outcome.report["gate"]
    assert gate["passed"] is False and gate["reasons"]
    # The frozen holdout is what the operator vouched for, and the candidate learnt to
    # contradict it. Wrong replies to the trained questions alone were not enough to see:
    # they reach the held-out facts only through reading the sources, and one CI run gained
    # 0.22 on them (the replies' short form) while 2 of 8 probes fell.
    assert gate["holdout_gain"] < 0, gate
    assert any(reason.startswith("holdout accuracy") for reason in gate["reasons"]), gate
    headers = {"Authorization": f"Bearer {loop.keys['admin']}"}
    versions = loop.gateway.get(
        "/v1/admin/adapters", headers=headers, params={"alias": wrong_alias}
    ).json()["data"]
    assert [
        (version["state"], version["eval_report"]["gate"]["passed"]) for version in versions
    ] == [("rejected", False)]
    rollout = loop.gateway.get(f"/v1/admin/rollouts/{wrong_alias}", headers=headers)
    assert rollout.status_code == 404  # a rejected candidate never rolls out

    # An operator asks why: ``loragate eval compare`` scores it again and names the questions.
    compared = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "eval", "compare", wrong_alias,
         "--candidate", str(outcome.candidate), "--json"],
        env=_env(loop, eval_holdout_forms="served", **_quick(loop.settings.data_dir)),
        capture_output=True, text=True,
    )  # fmt: skip
    assert compared.returncode == 0, compared.stderr[-3000:]
    again = json.loads(compared.stdout)["report"]
    assert again["gate"]["passed"] is False and again["gate"]["holdout_gain"] < 0
    lost = [item for item in again["changed"]["holdout"] if not item["candidate_correct"]]
    assert lost and all(item["asked"] and item["expected"] and item["live"] for item in lost)


def test_bad_datasets_fail_clearly_and_publish_nothing(loop: Loop, trained: RunOutcome) -> None:
    assert "no approved examples" in _train_fails(loop, "copy-empty")
    _copy_alias(loop, "copy-long", wrong=False, limit=10)
    assert "over_context" in _train_fails(loop, "copy-long", train_max_example_tokens=40)
    runs = _rows(
        loop.settings,
        select(TrainingRun).where(TrainingRun.alias.in_(["copy-empty", "copy-long"])),
    )
    assert sorted(run.state for run in runs) == ["failed", "failed"]
    assert all(run.error for run in runs)
    headers = {"Authorization": f"Bearer {loop.keys['admin']}"}
    for alias in ("copy-empty", "copy-long"):
        listed = loop.gateway.get("/v1/admin/adapters", headers=headers, params={"alias": alias})
        assert listed.json()["data"] == []


# -- a crash mid-training -----------------------------------------------------------------
def test_a_trainer_killed_mid_run_leaves_nothing_and_resumes(
    loop: Loop, trained: RunOutcome
) -> None:
    alias = "copy-crash"
    _copy_alias(loop, alias, wrong=False, limit=24)
    # What is tested is the crash and the resume, not the recipe (the trained fixture's).
    env = _env(
        loop, train_max_steps=4, train_checkpoint_every=1, train_eval_every=0,
        trainer_auto_rollout=False, eval_holdout_forms="served", train_recipe=False,
        train_rehearsal_fraction=0, **_quick(loop.settings.data_dir),
    )  # fmt: skip
    command = _train_command(alias)
    work = loop.settings.data_dir / "training" / alias
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_until(
            lambda: any(path.read_text() == "checkpoint-2" for path in work.glob("*/latest")),
            600,
            "the trainer's second-step checkpoint",
        )
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()

    runs = _rows(loop.settings, select(TrainingRun).where(TrainingRun.alias == alias))
    assert [run.state for run in runs] == ["running"]
    listed = loop.gateway.get(
        "/v1/admin/adapters",
        params={"alias": alias},
        headers={"Authorization": f"Bearer {loop.keys['admin']}"},
    )
    assert listed.json()["data"] == []
    assert not list((loop.settings.data_dir / "adapters").glob(".*tmp*"))

    finished = subprocess.run(command, env=env, capture_output=True, text=True)  # the resume
    assert finished.returncode == 0, finished.stderr[-3000:]
    runs = _rows(
        loop.settings,
        select(TrainingRun).where(TrainingRun.alias == alias).order_by(TrainingRun.id),
    )
    assert runs[0].state == "failed"
    assert runs[0].error == "worker died mid-run"
    assert runs[1].state in ("published", "rejected")
    assert runs[1].report["training"]["resumed_from_step"] == 2
    assert runs[1].report["training"]["steps"] == 4
    assert not work.exists() or not any(work.iterdir())  # cleaned up after the decision
