"""The ``loragate trainer`` worker: polls the store and trains aliases that have enough new data.

An alias is trained when it has ``trainer_min_new_examples`` approved examples more than its
last run saw, or, with ``trainer_schedule_s`` set, when that long has passed since its last
run and anything new was approved, or, with ``monitor_min_new_examples`` set, when the alias's
latest monitor report asks for training (drift, a low positive ratio, a high I-don't-know
rate) or its latest scheduled re-evaluation found it degraded, and that many new examples
are approved. Several workers may run: the per-alias lock lets one train while the others
skip that alias.

With a ``Reevaluator`` and ``reeval_interval_s`` set, each poll first re-scores every serving
version when that long has passed since the last re-evaluation (trainer/reeval.py).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from adapters.registry import check_alias
from adapters.tables import aware
from adapters.validation import InvalidAdapter
from trainer.errors import TrainerError, TrainingLocked
from trainer.job import TrainingJob
from trainer.reeval import Reevaluator
from trainer.store import TrainerStore
from trainer.tables import TrainingRun

log = logging.getLogger("loragate.trainer")


class TrainerWorker:
    def __init__(
        self,
        job: TrainingJob,
        store: TrainerStore,
        *,
        min_new_examples: int,
        schedule_s: float = 0.0,
        poll_s: float = 30.0,
        monitor_min_new_examples: int | None = None,
        reevaluator: Reevaluator | None = None,
        reeval_interval_s: float = 0.0,
    ) -> None:
        self.job = job
        self.store = store
        self.min_new_examples = min_new_examples
        self.schedule_s = schedule_s
        self.poll_s = poll_s
        self.monitor_min_new_examples = monitor_min_new_examples
        self.reevaluator = reevaluator
        self.reeval_interval_s = reeval_interval_s

    async def due(self) -> list[tuple[str, str]]:
        """(alias, trigger) for every alias that should train now."""
        due = []
        for alias, approved in sorted((await self.store.aliases_with_approved()).items()):
            try:
                check_alias(alias)
            except InvalidAdapter:
                continue  # flagged traffic on the base model itself: no alias to publish to
            last = await self.store.last_finished(alias)
            new = approved - (last.approved_examples if last else 0)
            if new >= self.min_new_examples:
                due.append((alias, "new_examples"))
            elif triggers := await self._monitor_asks(alias, new):
                due.append((alias, "degraded" if "degraded" in triggers else "monitor"))
            elif new > 0 and self._schedule_due(last):
                due.append((alias, "schedule"))
        return due

    def _schedule_due(self, last: TrainingRun | None) -> bool:
        if not self.schedule_s or last is None or last.finished_at is None:
            return False
        return datetime.now(UTC) - aware(last.finished_at) >= timedelta(seconds=self.schedule_s)

    async def _monitor_asks(self, alias: str, new: int) -> list[str]:
        """The monitor's or the re-evaluation's reasons to train the alias now, if any."""
        if self.monitor_min_new_examples is None or new < self.monitor_min_new_examples:
            return []
        triggers = await self.store.monitor_triggers(alias)
        if triggers:
            log.info("monitor asks for training", extra={"alias": alias, "triggers": triggers})
        return triggers

    async def reevaluate_if_due(self) -> bool:
        """Re-score every serving version if ``reeval_interval_s`` has passed since the last
        time; an unreachable vLLM is logged and tried again at the next poll."""
        if self.reevaluator is None or not self.reeval_interval_s:
            return False
        last = await self.store.last_eval_at()
        interval = timedelta(seconds=self.reeval_interval_s)
        if last is not None and datetime.now(UTC) - aware(last) < interval:
            return False
        try:
            await self.reevaluator.run_once()
        except TrainerError as exc:
            log.error("re-evaluation failed", extra={"error": str(exc)})
            return False
        return True

    async def poll_once(self) -> int:
        """Re-evaluate if due, then train every due alias once; returns how many training
        runs finished (either verdict)."""
        await self.reevaluate_if_due()
        finished = 0
        for alias, trigger in await self.due():
            try:
                outcome = await self.job.run(alias, trigger)
            except TrainingLocked:
                log.info("alias is being trained elsewhere", extra={"alias": alias})
                continue
            except TrainerError as exc:
                # Recorded in training_runs; the worker lives on to try again on new data.
                log.error("training run failed", extra={"alias": alias, "error": str(exc)})
                continue
            finished += 1
            log.info(
                "training run finished",
                extra={"alias": alias, "state": outcome.state, "version": outcome.candidate},
            )
        return finished

    async def run_forever(self) -> None:
        log.info(
            "trainer worker started",
            extra={"poll_s": self.poll_s, "min_new_examples": self.min_new_examples},
        )
        while True:
            await self.poll_once()
            await asyncio.sleep(self.poll_s)
