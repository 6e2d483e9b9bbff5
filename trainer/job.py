"""One training run for one alias: curate → snapshot → QLoRA → evaluate → gate → publish.

Runs in the ``loragate train`` / ``loragate trainer`` process, never in the gateway. Every
stage is recorded in ``training_runs``. Nothing is published until the gate has decided, and
publishing itself is atomic (the registry copies into a temp dir and renames), so a crash at
any point leaves no half-adapter: the next run records the dead one as failed and starts
again, resuming training from the last checkpoint when the dataset is unchanged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import anyio

from adapters.registry import Registry, check_alias
from adapters.rollout import RolloutController, RolloutError
from core.progress import Progress
from core.store.db import Database
from retrieval.embeddings import Embedder
from trainer.dataset import (
    Curated,
    CurationLimits,
    Example,
    Snapshot,
    TokenCounter,
    curate,
    read_examples,
    read_snapshot,
    write_examples,
    write_snapshot,
)
from trainer.evaluate import (
    Evaluator,
    GatePolicy,
    SetScore,
    Verdict,
    changed,
    decide,
    gate_probes,
)
from trainer.holdout_forms import holdout_forms
from trainer.lock import training_lock
from trainer.qlora import (
    ScoreAnswers,
    TrainConfig,
    TrainResult,
    load_tokenizer,
    token_counter,
    total_steps,
    train,
)
from trainer.recipe import RECIPE_FILE, Ask, Ground, RecipeConfig, as_trained, expand
from trainer.regrounder import Regrounder
from trainer.rehearsal import CACHE_DIR, rehearsal_set, replay_wanted, shipped_prompts
from trainer.scoring import accuracy
from trainer.store import TrainerStore

log = logging.getLogger("loragate.trainer")
STAGES = 6


@dataclass(frozen=True)
class JobConfig:
    data_dir: Path
    base_model_dir: Path
    base_model_name: str
    engine_url: str
    engine_api_key: str
    train: TrainConfig
    limits: CurationLimits
    gate: GatePolicy  # also how candidates are scored: reply length, concurrency, timeout
    auto_rollout: bool
    rehearsal_fraction: float
    generation_concurrency: int  # asking the base for rewordings and rehearsal answers
    recipe: RecipeConfig | None  # None: train on the conversations as served


@dataclass(frozen=True)
class SplitInputs:
    approved: list[Example]
    frozen: list[Example]  # the holdout so far
    trained: set[str]  # ids a version learnt from
    count_tokens: TokenCounter


@dataclass
class RunOutcome:
    run_id: int
    alias: str
    state: str  # published | rejected
    candidate: str | None
    report: dict[str, Any]


class TrainingJob:
    def __init__(
        self,
        config: JobConfig,
        db: Database,
        registry: Registry,
        rollouts: RolloutController,
        embedder: Embedder,
        regrounder: Regrounder | None = None,
    ) -> None:
        self.config = config
        self.regrounder = regrounder
        self.db = db
        self.store = TrainerStore(db)
        self.registry = registry
        self.rollouts = rollouts
        self.embedder = embedder

    async def run(self, alias: str, trigger: str = "manual") -> RunOutcome:
        check_alias(alias)
        async with training_lock(self.db, self.config.data_dir / "locks", alias):
            stale = await self.store.fail_stale_runs(alias)
            if stale:
                log.warning("earlier runs died mid-way", extra={"alias": alias, "runs": stale})
            approved = await self.store.approved_count(alias)
            run_id = await self.store.start_run(alias, trigger, approved)
            try:
                outcome = await self._stages(alias, run_id)
            except BaseException as exc:
                error = str(exc) or type(exc).__name__
                with anyio.CancelScope(shield=True):
                    await self.store.finish_run(run_id, "failed", error=error[:2000])
                log.error(
                    "training run failed", extra={"alias": alias, "run": run_id, "error": error}
                )
                raise
            await self.store.finish_run(
                run_id, outcome.state, candidate=outcome.candidate, report=outcome.report
            )
            return outcome

    async def _stages(self, alias: str, run_id: int) -> RunOutcome:
        with Progress(f"train {alias}", STAGES) as progress:
            snapshot = await self._curate(alias)
            await self.store.update_run(run_id, snapshot=str(snapshot.path))
            progress(f"dataset {snapshot.manifest['counts']}")
            result, rehearsed, recipe = await self._train(alias, snapshot)
            progress(f"trained {result.steps} steps, loss {result.train_loss:.3f}")
            holdout = snapshot.examples("holdout")
            candidate, live, live_name, base_probes = await self.evaluate(
                alias, f"eval-{alias}-run{run_id}", result.adapter_dir, holdout
            )
            progress(
                f"scored: candidate {candidate[0].accuracy:.3f}, {live_name} {live[0].accuracy:.3f}"
            )
            verdict = decide(candidate, live, self.config.gate, base_probes)
            report = _report(snapshot, result, candidate, live, live_name, verdict, self.config)
            report["training"]["rehearsal_examples"] = rehearsed
            report["training"]["recipe"] = recipe
            progress("gate " + ("passed" if verdict.passed else "failed"))
            outcome = await self._publish(alias, run_id, result, verdict, report)
            progress(f"{outcome.state} {outcome.candidate}")
            shutil.rmtree(self._work_dir(alias, snapshot), ignore_errors=True)
            progress("cleaned up")
        return outcome

    # -- shared with re-evaluation and base selection --------------------------------
    async def split_inputs(self, alias: str) -> SplitInputs:
        """What curation starts from: the approved examples, the split so far, a token count."""
        tokenizer = await anyio.to_thread.run_sync(
            load_tokenizer, self.config.base_model_dir, self.config.train.chat_template
        )
        return SplitInputs(
            await self.store.approved_examples(alias),
            await self.store.frozen_holdout(alias),
            await self.store.trained_ids(alias),
            token_counter(tokenizer),
        )

    async def curate(self, alias: str) -> tuple[Curated, SplitInputs]:
        """The alias's curated split as a run would train on it; nothing is written."""
        inputs = await self.split_inputs(alias)
        curated = await anyio.to_thread.run_sync(
            lambda: curate(
                inputs.approved,
                inputs.frozen,
                self.config.limits,
                inputs.count_tokens,
                self.embedder.embed,
                inputs.trained,
            )
        )
        return curated, inputs

    def evaluator(self, engine_url: str | None = None, *, generating: bool = False) -> Evaluator:
        """An evaluator on this job's vLLM, or on another server (a candidate base's, which
        does not get this engine's API key). ``generating``: it asks for training data, not
        scores, at the job's ``generation_concurrency``."""
        gate = self.config.gate
        return Evaluator(
            engine_url or self.config.engine_url,
            self.embedder.embed,
            api_key="" if engine_url else self.config.engine_api_key,
            max_tokens=gate.max_tokens,
            concurrency=self.config.generation_concurrency if generating else gate.concurrency,
            timeout_s=gate.timeout_s,
        )

    # -- stages ----------------------------------------------------------------------
    async def _curate(self, alias: str) -> Snapshot:
        curated, inputs = await self.curate(alias)
        extra = {
            "approved": len(inputs.approved),
            "frozen_holdout_before": len(inputs.frozen),
            "limits": asdict(self.config.limits),
        }
        snapshot = await anyio.to_thread.run_sync(
            lambda: write_snapshot(self.config.data_dir / "datasets", alias, curated, extra)
        )
        # Remembered only once the snapshot that uses it exists: a crash before this point
        # leaves the split as it was.
        await self.store.remember_split(alias, curated.new_holdout, curated.new_trained)
        log.info(
            "dataset snapshot written",
            extra={"alias": alias, "path": str(snapshot.path), **snapshot.manifest["counts"]},
        )
        return read_snapshot(snapshot.path)

    def _work_dir(self, alias: str, snapshot: Snapshot) -> Path:
        # Keyed by the dataset's content: an unchanged dataset resumes the crashed run.
        return self.config.data_dir / "training" / alias / snapshot.manifest["sha256"][:16]

    async def _train(
        self, alias: str, snapshot: Snapshot
    ) -> tuple[TrainResult, int, dict[str, int]]:
        """The adapter, how many rehearsal examples it also learnt from, and the recipe's
        counts."""
        work_dir = self._work_dir(alias, snapshot)
        validation = snapshot.examples("validation")
        if self.config.recipe is not None:  # watched in the form it is trained in
            validation = await as_trained(validation, self._ground(alias, trained=True))
        train_set, recipe = await self.expand(alias, work_dir, snapshot.examples("train"))
        rehearsal = await self.rehearsal(alias, work_dir, len(train_set))
        train_set += rehearsal
        total = total_steps(self.config.train, len(train_set))
        with Progress(f"qlora {alias}", total) as steps:
            result = await anyio.to_thread.run_sync(
                lambda: train(
                    train_set,
                    validation,
                    self.config.base_model_dir,
                    work_dir,
                    self.config.train,
                    steps,
                    snapshot.manifest["sha256"],
                    self._answer_scorer(validation),
                )
            )
        return result, len(rehearsal), recipe

    def _answer_scorer(self, validation: list[Example]) -> ScoreAnswers | None:
        """The accuracy of answers to the validation prompts, for early stopping."""
        if not (self.config.train.validate_answers and validation):
            return None
        references = [example.reply_text for example in validation]
        questions = [example.question for example in validation]
        return lambda answers: accuracy(answers, references, self.embedder.embed, questions)

    async def expand(
        self, alias: str, work_dir: Path, examples: list[Example]
    ) -> tuple[list[Example], dict[str, int]]:
        """The recipe's training set for ``examples`` (trainer/recipe.py) and its counts: made
        once per run and kept in ``work_dir``, so that a resumed run trains on the same."""
        recipe = self.config.recipe
        if recipe is None:
            return examples, {"corrections": len(examples), "examples": len(examples)}
        saved, counts_file = work_dir / RECIPE_FILE, work_dir / (RECIPE_FILE + ".counts")
        if saved.exists() and counts_file.exists():
            return read_examples(saved), json.loads(counts_file.read_text())
        evaluator = self.evaluator(generating=True)
        try:
            ground = self._ground(alias, trained=True)
            expansion = await expand(examples, recipe, ground, self._ask(evaluator))
        finally:
            await evaluator.close()
        counts = {"corrections": len(examples), **expansion.counts()}
        log.info("training set expanded", extra={"alias": alias, **counts})
        write_examples(saved, expansion.examples)
        counts_file.write_text(json.dumps(counts))
        return expansion.examples, counts

    def _ground(self, alias: str, *, trained: bool) -> Ground | None:
        """Grounds a conversation as ``alias`` serves it today (with the source that states
        the reply, for training); None for an alias that answers without retrieval."""
        regrounder = self.regrounder
        if regrounder is None or alias not in regrounder.retrieval_models:
            return None
        return regrounder.as_trained if trained else regrounder.as_served

    def _ask(self, evaluator: Evaluator) -> Ask:
        """Asks the base model one question per prompt (for rewordings)."""

        async def ask(prompts: Sequence[str]) -> list[str]:
            chats = [[{"role": "user", "content": prompt}] for prompt in prompts]
            return await evaluator.answers(self.config.base_model_name, chats)

        return ask

    async def rehearsal(
        self,
        alias: str,
        work_dir: Path,
        train_size: int,
        evaluator: Evaluator | None = None,
        model: str | None = None,
    ) -> list[Example]:
        """The answers of ``model`` (the base) to general prompts, to join ``train_size``
        examples of the alias's own (trainer/rehearsal.py); asked on this job's vLLM unless
        another server's ``evaluator`` is given."""
        wanted = replay_wanted(self.config.rehearsal_fraction, train_size)
        count = min(wanted, len(shipped_prompts()))
        if count < wanted:
            log.warning("rehearsal capped: every shipped prompt is used", extra={
                "rehearsal_examples": count, "train_examples": train_size})  # fmt: skip
        answerer = evaluator or self.evaluator(generating=True)
        model = model or self.config.base_model_name
        try:
            return await rehearsal_set(
                work_dir, answerer, model, alias, count, self._answer_cache(answerer, model)
            )
        finally:
            if evaluator is None:
                await answerer.close()

    def _answer_cache(self, answerer: Evaluator, model: str) -> Path:
        """Where ``model``'s rehearsal replies are kept across runs: keyed by the model's
        name, its server, the reply length, and for the job's own base, its weights files
        (re-prepared weights are asked afresh)."""
        weights = []
        if model == self.config.base_model_name and self.config.base_model_dir.is_dir():
            weights = sorted(
                (path.name, path.stat().st_size, path.stat().st_mtime_ns)
                for path in self.config.base_model_dir.iterdir()
                if path.suffix in (".safetensors", ".json")
            )
        identity = json.dumps([model, answerer.engine_url, answerer.max_tokens, weights])
        digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
        return self.config.data_dir / CACHE_DIR / f"{digest}.jsonl"

    async def evaluate(
        self, alias: str, served_as: str, adapter_dir: Path, holdout: list[Any]
    ) -> tuple[tuple[SetScore, SetScore], tuple[SetScore, SetScore], str, SetScore | None]:
        """Score ``adapter_dir`` (served as ``served_as``) and the alias's live model on the
        holdout, in each of the gate's forms, and the probes; returns both scores, the live
        model's name, and the base model's probe score when the live model is an adapter."""
        live_name = await self.live_model(alias)
        base = self.config.base_model_name
        probes = gate_probes(self.config.gate)
        evaluator, generator = self.evaluator(), self.evaluator(generating=True)
        try:
            # Rewordings are asked, not scored: at the generation concurrency.
            holdout = await holdout_forms(
                holdout,
                self.config.gate.holdout_forms,
                self._ground(alias, trained=False),
                self._ask(generator),
                self.config.gate.rewordings,
            )
            async with evaluator.loaded(served_as, adapter_dir) as name:
                candidate = await evaluator.score(name, holdout, probes)
            live = await evaluator.score(live_name, holdout, probes)
            base_probes = None if live_name == base else await evaluator.score_probes(base, probes)
        finally:
            await evaluator.close()
            await generator.close()
        return candidate, live, live_name, base_probes

    async def live_model(self, alias: str) -> str:
        """What the alias serves now: its live version, or the base model."""
        routes = await self.registry.routes()
        route = routes.get(alias)
        return route.live if route is not None and route.live else self.config.base_model_name

    async def _publish(
        self,
        alias: str,
        run_id: int,
        result: TrainResult,
        verdict: Verdict,
        report: dict[str, Any],
    ) -> RunOutcome:
        state = "candidate" if verdict.passed else "rejected"
        published = await self.registry.publish(
            result.adapter_dir, alias, eval_report=report, state=state
        )
        name = published.version.name
        if verdict.passed and self.config.auto_rollout and published.created:
            try:
                rollout = await self.rollouts.start(alias, name)
                report["rollout"] = {"id": rollout.id, "steps": rollout.steps}
            except RolloutError as exc:
                # Decided under the alias lock: an operator's rollout or experiment started
                # meanwhile owns the alias. The version stays a candidate, and the run stands.
                log.warning("automatic rollout refused", extra={"version": name, "error": str(exc)})
                report["rollout"] = {"refused": str(exc)}
            await self.registry.set_eval_report(name, report)
        log.info(
            "training run decided",
            extra={
                "alias": alias,
                "run": run_id,
                "version": name,
                "state": state,
                "reasons": verdict.reasons,
            },
        )
        return RunOutcome(
            run_id, alias, "published" if verdict.passed else "rejected", name, report
        )


def _report(
    snapshot: Snapshot,
    result: TrainResult,
    candidate: tuple[SetScore, SetScore],
    live: tuple[SetScore, SetScore],
    live_name: str,
    verdict: Verdict,
    config: JobConfig,
) -> dict[str, Any]:
    return {
        "dataset": {
            "path": str(snapshot.path),
            "sha256": snapshot.manifest["sha256"],
            "counts": snapshot.manifest["counts"],
            "dropped": snapshot.manifest["dropped"],
        },
        "training": {
            **result.summary(),
            "method": config.train.method,
            "rank": config.train.rank,
            "learning_rate": config.train.learning_rate,
        },
        "candidate": {"holdout": candidate[0].summary(), "probes": candidate[1].summary()},
        "baseline": {"model": live_name, "holdout": live[0].summary(), "probes": live[1].summary()},
        "gate": {
            **verdict.report(),
            "margin": config.gate.margin,
            "probe_tolerance": config.gate.probe_tolerance,
            "holdout_forms": list(config.gate.holdout_forms),
            "probes": str(config.gate.probes_path or "shipped"),
        },
        "changed": changed(candidate, live),
        "holdout_items": [
            {key: item[key] for key in ("id", "form", "question", "answer", "reference", "correct")}
            for item in candidate[0].items
        ],
    }
