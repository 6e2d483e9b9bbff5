"""Scheduled re-evaluation: a fine-tuned version is not "set and forget".

Every ``reeval_interval_s`` the trainer worker scores each serving version of each alias (its
live version, or the base model while it has none, and any canary) on

* the alias's holdout, first grown with newly approved examples (``grow_holdout``: the same
  rule and order a training run uses), each asked *as it is served now*: its conversation,
  grounded afresh in the alias's collection (settings ``retrieval_models``), through vLLM at
  temperature 0;
* the general-ability probes.

Each score is stored (``eval_scores``), listed by ``loragate eval history ALIAS`` and
exported as metrics by the gateway. A version whose holdout accuracy has fallen more than
``reeval_tolerance`` below its reference marks its alias ``degraded``: an alert fires, and the
worker trains the alias once it has ``trainer_monitor_min_new_examples`` new approvals. The
reference is the version's own publish-time holdout accuracy (from the evaluation gate); the
base model, which was never gated, is held to its first scheduled score.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import anyio

from adapters.registry import Registry, UnknownAdapter
from core.sections import ReevalPolicy
from trainer.dataset import Example, grow_holdout
from trainer.errors import TrainerError
from trainer.evaluate import SetScore, gate_probes
from trainer.job import TrainingJob
from trainer.regrounder import Regrounder
from trainer.store import TrainerStore
from trainer.tables import EvalScore, utcnow

log = logging.getLogger("loragate.reeval")


class Reevaluator:
    def __init__(
        self,
        job: TrainingJob,  # its config, registry and embedder
        store: TrainerStore,
        regrounder: Regrounder,
        policy: ReevalPolicy,
    ) -> None:
        self.job = job
        self.store = store
        self.regrounder = regrounder
        self.policy = policy

    @property
    def registry(self) -> Registry:
        return self.job.registry

    async def run_once(self, aliases: Sequence[str] | None = None) -> list[EvalScore]:
        """Re-score every serving version of the given aliases (default: all)."""
        routes = await self.registry.routes()
        unknown = sorted(set(aliases or ()) - set(routes))
        if unknown:
            raise TrainerError(f"no alias named {', '.join(map(repr, unknown))}")
        rows: list[EvalScore] = []
        for alias in sorted(aliases if aliases is not None else routes):
            rows.extend(await self.check(alias))
        return rows

    async def check(self, alias: str) -> list[EvalScore]:
        holdout = await self.holdout(alias)
        served = [await self.regrounder.as_served(alias, example) for example in holdout]
        evaluator = self.job.evaluator()
        probes = gate_probes(self.job.config.gate)
        now, rows = utcnow(), []
        try:
            for version in await self._serving(alias):
                holdout_score, probe_score = await evaluator.score(version, served, probes)
                rows.append(await self._row(alias, version, holdout_score, probe_score, now))
        finally:
            await evaluator.close()
        await self.store.add_eval_scores(rows)
        for row in rows:
            log.info("re-evaluated", extra={
                "alias": alias, "version": row.version, "holdout": row.holdout_count,
                "accuracy": row.holdout_accuracy, "reference": row.reference_accuracy,
                "degraded": row.degraded,
            })  # fmt: skip
        return rows

    async def holdout(self, alias: str) -> list[Example]:
        """The alias's frozen holdout, grown first with newly approved examples."""
        inputs = await self.job.split_inputs(alias)
        grown = await anyio.to_thread.run_sync(
            lambda: grow_holdout(
                inputs.approved,
                inputs.frozen,
                self.job.config.limits,
                inputs.count_tokens,
                self.job.embedder.embed,
                inputs.trained,
            )
        )
        if grown:
            await self.store.remember_split(alias, grown, [])
            log.info("holdout grown", extra={"alias": alias, "added": len(grown)})
        return [*inputs.frozen, *grown]

    async def _serving(self, alias: str) -> list[str]:
        route = (await self.registry.routes()).get(alias)
        live = route.live if route is not None and route.live else self.job.config.base_model_name
        canary = route.canary if route is not None else None
        return [live, canary] if canary else [live]

    async def _row(
        self, alias: str, version: str, holdout: SetScore, probes: SetScore, now: Any
    ) -> EvalScore:
        reference = await self._reference(alias, version, holdout)
        return EvalScore(
            alias=alias,
            version=version,
            computed_at=now,
            holdout_count=holdout.count,
            holdout_accuracy=holdout.accuracy,
            probe_accuracy=probes.accuracy,
            groundedness=holdout.groundedness,
            reference_accuracy=reference,
            degraded=self.policy.degraded(holdout, reference),
            report={
                "holdout": holdout.summary(),
                "probes": probes.summary(),
                "wrong": [
                    {key: item[key] for key in ("id", "question", "answer", "reference")}
                    for item in holdout.items
                    if not item["correct"]
                ],
            },
        )

    async def _reference(self, alias: str, version: str, now: SetScore) -> float | None:
        try:
            report = (await self.registry.get(version)).eval_report or {}
        except UnknownAdapter:  # the base model
            report = {}
        gated = report.get("candidate", {}).get("holdout", {})
        # Re-evaluation asks the holdout as served; the gate pooled it with other forms.
        published = (gated.get("forms") or {}).get("served", gated.get("accuracy"))
        if published is not None:
            return float(published)
        first = await self.store.first_eval_accuracy(alias, version)
        return now.accuracy if first is None else first
