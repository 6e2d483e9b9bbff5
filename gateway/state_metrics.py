"""Metrics of the shared state, read from the store when Prometheus scrapes.

Adapters, rollouts, the review queue, training runs, eval scores, quality KPIs, drift and
each key's quota usage (gateway.key_usage) live in the store, not in one process, so every
worker exports the same values and nothing is counted twice. ``refresh`` runs before each
scrape (at most every ``min_interval_s``); if the store does not answer, the last snapshot is
kept and ``loragate_store_up`` says 0.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from adapters.registry import Registry
from adapters.tables import AdapterVersion, Experiment, Rollout, aware
from core.store.db import Database
from core.store.tables import ReviewItem
from gateway.key_usage import KeyUsage
from monitor.service import QualityMonitor
from trainer.tables import EvalScore, TrainingRun

log = logging.getLogger("loragate.metrics")

SERVING_STATES = ("candidate", "canary", "live", "arm")
FINISHED_ROLLOUTS = ("promoted", "rolled_back", "aborted")
QUALITY_KPIS = ("positive_ratio", "groundedness", "idk_rate")


class StateMetrics(Collector):
    def __init__(
        self,
        db: Database,
        adapters: Registry,
        monitor: QualityMonitor | None = None,
        min_interval_s: float = 0.0,
        key_usage: KeyUsage | None = None,
    ) -> None:
        self.db = db
        self.adapters = adapters
        self.monitor = monitor
        self.key_usage = key_usage
        self.min_interval_s = min_interval_s
        self._families: list[Metric] = []
        self._store_up = 1.0
        self._refreshed_at = float("-inf")

    async def refresh(self) -> None:
        if time.monotonic() - self._refreshed_at < self.min_interval_s:
            return
        self._refreshed_at = time.monotonic()
        try:
            families = [
                *await self._adapters(),
                *await self._rollouts(),
                await self._review_queue(),
                *await self._training(),
                *await self._reevaluation(),
                *await self._experiments(),
                *await self._monitor(),
                *(await self.key_usage.families() if self.key_usage else []),
            ]
        except (SQLAlchemyError, OSError) as exc:
            log.warning("state metrics not refreshed", extra={"error": str(exc)})
            self._store_up = 0.0
            return
        self._families, self._store_up = families, 1.0

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "loragate_store_up",
            "1 if the store answered the last metrics refresh.",
            value=self._store_up,
        )
        yield from self._families

    # -- adapters and rollouts ---------------------------------------------------------
    async def _adapters(self) -> list[Metric]:
        info = _gauge(
            "loragate_adapter_info",
            "Adapter versions that may serve (value 1).",
            ["alias", "version", "state"],
        )
        scores = _gauge(
            "loragate_eval_score",
            "Publish-time eval accuracy of a version (0..1).",
            ["alias", "version", "set"],
        )
        async with self.db.transaction() as session:
            versions = await session.scalars(
                select(AdapterVersion).where(AdapterVersion.state.in_(SERVING_STATES))
            )
            for version in versions:
                info.add_metric([version.alias, version.name, version.state], 1)
                for name, value in _eval_scores(version.eval_report):
                    scores.add_metric([version.alias, version.name, name], value)
        return [info, scores]

    async def _rollouts(self) -> list[Metric]:
        weight = _gauge(
            "loragate_rollout_weight",
            "Share of an alias's traffic routed to each version (0..1).",
            ["alias", "version"],
        )
        step = _gauge(
            "loragate_rollout_step",
            "Index of the current canary step of an alias's rollout.",
            ["alias"],
        )
        for route in (await self.adapters.routes()).values():
            if route.live:
                weight.add_metric([route.alias, route.live], 1.0 - route.weight)
            if route.canary:
                weight.add_metric([route.alias, route.canary], route.weight)
                step.add_metric([route.alias], route.step)
        outcomes = CounterMetricFamily(
            "loragate_rollout_outcomes",
            "Finished rollouts by outcome and reason.",
            labels=["alias", "outcome", "reason"],
        )
        # A timestamp, unlike a count, lets an alert ask "in the last hour?" of a Prometheus
        # that has just started, and sees the first rollback of an alias as well as the tenth.
        last = _gauge(
            "loragate_rollout_last_outcome_timestamp_seconds",
            "Unix time of the alias's last finished rollout, by outcome and reason.",
            ["alias", "outcome", "reason"],
        )
        async with self.db.transaction() as session:
            rows = (
                await session.execute(
                    select(Rollout.alias, Rollout.state, Rollout.reason, Rollout.updated_at).where(
                        Rollout.state.in_(FINISHED_ROLLOUTS)
                    )
                )
            ).all()
        counts: Counter[tuple[str, str, str]] = Counter()
        latest: dict[tuple[str, str, str], float] = {}
        for alias, state, reason, at in rows:
            labels = (alias, state, (reason or "").split(":", 1)[0])
            counts[labels] += 1
            latest[labels] = max(latest.get(labels, 0.0), _timestamp(at))
        for labels, count in sorted(counts.items()):
            outcomes.add_metric(list(labels), count)
            last.add_metric(list(labels), latest[labels])
        return [weight, step, outcomes, last]

    # -- review and training -----------------------------------------------------------
    async def _review_queue(self) -> Metric:
        queue = _gauge(
            "loragate_review_queue_items", "Review items by alias and state.", ["alias", "state"]
        )
        async with self.db.transaction() as session:
            await _count_by(session, queue, ReviewItem.alias, ReviewItem.state)
        return queue

    async def _training(self) -> list[Metric]:
        runs = _gauge(
            "loragate_training_runs",
            "Training runs in the store by alias and status.",
            ["alias", "status"],
        )
        duration = _gauge(
            "loragate_training_last_duration_seconds",
            "Duration of the alias's last finished training run.",
            ["alias"],
        )
        failure = _gauge(
            "loragate_training_last_failure_timestamp_seconds",
            "Unix time the alias's last failed training run ended.",
            ["alias"],
        )
        async with self.db.transaction() as session:
            await _count_by(session, runs, TrainingRun.alias, TrainingRun.state)
            last = (
                select(func.max(TrainingRun.id))
                .where(TrainingRun.finished_at.is_not(None))
                .group_by(TrainingRun.alias)
            )
            for run in await session.scalars(select(TrainingRun).where(TrainingRun.id.in_(last))):
                assert run.finished_at is not None
                seconds = (run.finished_at - run.started_at).total_seconds()
                duration.add_metric([run.alias], seconds)
            failed_at = await session.execute(
                select(TrainingRun.alias, func.max(TrainingRun.finished_at))
                .where(TrainingRun.state == "failed")
                .group_by(TrainingRun.alias)
            )
            for alias, at in failed_at:
                if at is not None:
                    failure.add_metric([alias], _timestamp(at))
        return [runs, duration, failure]

    async def _experiments(self) -> list[Metric]:
        running = _gauge(
            "loragate_experiment_running", "1 while the alias has an A/B experiment running.",
            ["alias"],
        )  # fmt: skip
        ratio = _gauge(
            "loragate_experiment_arm_positive_ratio",
            "Positive share of the thumbs an experiment arm got, at the leader's last look.",
            ["alias", "arm"],
        )
        ratings = _gauge(
            "loragate_experiment_arm_ratings",
            "Thumbs an experiment arm got, at the leader's last look.",
            ["alias", "arm"],
        )
        async with self.db.transaction() as session:
            experiments = await session.scalars(
                select(Experiment).where(Experiment.state == "running")
            )
            for experiment in experiments:
                running.add_metric([experiment.alias], 1)
                arms = (experiment.results or {}).get("arms", {})
                for arm, card in arms.items():
                    ratings.add_metric([experiment.alias, arm], card["rated"])
                    if card["rate"] is not None:
                        ratio.add_metric([experiment.alias, arm], card["rate"])
        return [running, ratio, ratings]

    async def _reevaluation(self) -> list[Metric]:
        accuracy = _gauge(
            "loragate_reeval_accuracy",
            "Accuracy of a serving version at the alias's latest scheduled re-evaluation.",
            ["alias", "version", "set"],
        )
        degraded = _gauge(
            "loragate_alias_degraded",
            "1 if the alias's latest re-evaluation found a serving version degraded.",
            ["alias"],
        )
        evaluated_at = _gauge(
            "loragate_reeval_timestamp_seconds",
            "Unix time of the alias's latest scheduled re-evaluation.",
            ["alias"],
        )
        latest = (
            select(EvalScore.alias, func.max(EvalScore.computed_at).label("at"))
            .group_by(EvalScore.alias)
            .subquery()
        )
        query = select(EvalScore).join(
            latest, (EvalScore.alias == latest.c.alias) & (EvalScore.computed_at == latest.c.at)
        )
        flags: dict[str, bool] = {}
        times: dict[str, datetime] = {}
        async with self.db.transaction() as session:
            for row in await session.scalars(query):
                accuracy.add_metric([row.alias, row.version, "holdout"], row.holdout_accuracy)
                accuracy.add_metric([row.alias, row.version, "probes"], row.probe_accuracy)
                flags[row.alias] = flags.get(row.alias, False) or row.degraded
                times[row.alias] = row.computed_at
        for alias, flag in flags.items():
            degraded.add_metric([alias], float(flag))
            evaluated_at.add_metric([alias], _timestamp(times[alias]))
        return [accuracy, degraded, evaluated_at]

    # -- quality and drift -------------------------------------------------------------
    async def _monitor(self) -> list[Metric]:
        if self.monitor is None:
            return []
        quality = {
            kpi: _gauge(
                f"loragate_quality_{kpi}",
                f"Monitor: {kpi.replace('_', ' ')} of a version over the KPI window.",
                ["alias", "version"],
            )
            for kpi in QUALITY_KPIS
        }
        drift = _gauge(
            "loragate_drift_score",
            "Monitor: query drift of an alias by method.",
            ["alias", "method"],
        )
        p_value = _gauge(
            "loragate_drift_p_value", "Monitor: permutation-test p-value of MMD.", ["alias"]
        )
        detected = _gauge(
            "loragate_drift_detected", "Monitor: 1 if the alias's queries drifted.", ["alias"]
        )
        for report in await self.monitor.latest():
            for version, values in report.quality.items():
                for kpi, family in quality.items():
                    if values.get(kpi) is not None:
                        family.add_metric([report.alias, version], values[kpi])
            if report.drift is not None:
                drift.add_metric([report.alias, "centroid"], report.drift["centroid_distance"])
                drift.add_metric([report.alias, "mmd"], report.drift["mmd"])
                p_value.add_metric([report.alias], report.drift["p_value"])
            detected.add_metric([report.alias], float(report.drift_detected))
        return [*quality.values(), drift, p_value, detected]


async def _count_by(session: Any, family: GaugeMetricFamily, *columns: Any) -> None:
    """One sample per distinct value of ``columns``: how many rows have it."""
    rows = await session.execute(select(*columns, func.count()).group_by(*columns))
    for *labels, count in rows:
        family.add_metric([str(label) for label in labels], count)


def _gauge(name: str, documentation: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=labels)


def _timestamp(at: datetime) -> float:
    return aware(at).timestamp()


def _eval_scores(report: dict[str, Any] | None) -> Iterator[tuple[str, float]]:
    candidate = (report or {}).get("candidate") or {}
    for name in ("holdout", "probes"):
        accuracy = (candidate.get(name) or {}).get("accuracy")
        if accuracy is not None:
            yield name, float(accuracy)
