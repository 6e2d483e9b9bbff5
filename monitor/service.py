"""The monitor: one report per alias, from the store, written back to the store.

Windows, for an alias (its traffic is the requests that asked for the alias by name):

* **current**: its latest ``window`` answered queries;
* **reference**: the first ``window`` queries its live version answered, or, before any
  version went live, the alias's first queries. The reference moves only when a new version
  goes live, which is also when the model was last fitted to the traffic; a report compares
  today's questions with the questions the live version started on.

The windows never overlap: the reference is taken from queries older than the current
window's oldest, and with fewer than ``min_queries`` on either side there is no drift verdict
(the report says why). Quality KPIs come from the last ``kpi_window_s`` of traffic, at most
``kpi_sample`` completions per alias.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import numpy as np
from sqlalchemy import delete, func, select

from adapters.tables import Alias, aware
from core.sections import MonitorConfig
from core.store.db import Database
from core.store.tables import Conversation, Feedback
from monitor.drift import DriftResult, drift_test
from monitor.errors import UnknownAlias
from monitor.quality import StoredCompletion, VersionQuality, quality_by_version
from monitor.tables import MonitorReport, utcnow
from retrieval.grounding import retrieval_query

log = logging.getLogger("loragate.monitor")

Embed = Callable[[Sequence[str]], np.ndarray]


class QualityMonitor:
    def __init__(
        self, db: Database, embed: Embed, config: MonitorConfig, base_model_name: str
    ) -> None:
        self.db = db
        self.embed = embed
        self.config = config
        self.base_model_name = base_model_name

    # -- reports ---------------------------------------------------------------------
    async def run_once(self) -> list[MonitorReport]:
        async with self.db.transaction() as session:
            aliases = list(await session.scalars(select(Alias.name).order_by(Alias.name)))
        reports = []
        for alias in aliases:
            try:
                reports.append(await self.check(alias))
            except ValueError as exc:  # bad data in one alias must not stop the others
                log.error("monitor failed", extra={"alias": alias, "error": str(exc)})
        await self._prune()
        return reports

    async def check(self, alias: str) -> MonitorReport:
        live = await self._live_version(alias)
        quality = await self._quality(alias)
        drift, note = await self._drift(alias, live)
        detected = drift is not None and self._drifted(drift)
        report = MonitorReport(
            alias=alias,
            computed_at=utcnow(),
            live_version=live or self.base_model_name,
            quality={version: q.as_dict() for version, q in quality.items()},
            drift=drift.as_dict() if drift else None,
            drift_detected=detected,
            triggers=self._triggers(detected, quality.get(live or self.base_model_name)),
            note=note,
        )
        async with self.db.transaction() as session:
            session.add(report)
        log.info(
            "monitor report",
            extra={"alias": alias, "drift_detected": detected, "triggers": report.triggers},
        )
        return report

    async def latest(self) -> list[MonitorReport]:
        """The newest report of every alias."""
        newest = (
            select(MonitorReport.alias, func.max(MonitorReport.id).label("id"))
            .group_by(MonitorReport.alias)
            .subquery()
        )
        async with self.db.transaction() as session:
            rows = await session.scalars(
                select(MonitorReport).join(newest, MonitorReport.id == newest.c.id)
            )
            return list(rows)

    async def history(self, alias: str, limit: int = 100) -> list[MonitorReport]:
        async with self.db.transaction() as session:
            if await session.get(Alias, alias) is None:
                raise UnknownAlias(f"no alias named {alias!r}")
            rows = await session.scalars(
                select(MonitorReport)
                .where(MonitorReport.alias == alias)
                .order_by(MonitorReport.id.desc())
                .limit(limit)
            )
            return list(rows)

    # -- the parts of a report -----------------------------------------------------------
    async def _live_version(self, alias: str) -> str | None:
        async with self.db.transaction() as session:
            row = await session.get(Alias, alias)
            if row is None:
                raise UnknownAlias(f"no alias named {alias!r}")
            return row.live_version

    async def timeline(self, alias: str, hours: float, bucket_minutes: int) -> list[dict[str, Any]]:
        """Quality per version in time buckets, oldest first: the console's chart."""
        await self._live_version(alias)  # an unknown alias is an error, not an empty chart
        bucket_s = bucket_minutes * 60
        served = await self._served_since(alias, utcnow() - timedelta(hours=hours))
        buckets: dict[int, list[StoredCompletion]] = {}
        for at, item in served:
            buckets.setdefault(int(aware(at).timestamp()) // bucket_s * bucket_s, []).append(item)
        return [
            {"start": datetime.fromtimestamp(start, UTC).isoformat(),
             "versions": {version: q.as_dict() for version, q in
                          quality_by_version(buckets[start]).items()}}
            for start in sorted(buckets)
        ]  # fmt: skip

    async def _quality(self, alias: str) -> dict[str, VersionQuality]:
        since = utcnow() - timedelta(seconds=self.config.kpi_window_s)
        return quality_by_version(item for _, item in await self._served_since(alias, since))

    async def _served_since(
        self, alias: str, since: datetime
    ) -> list[tuple[datetime, StoredCompletion]]:
        """The alias's answers since then, newest first, with any feedback's polarity."""
        query = (
            select(Conversation, Feedback.polarity)
            .outerjoin(Feedback, Feedback.completion_id == Conversation.id)
            .where(Conversation.requested_model == alias, Conversation.created_at >= since)
            .order_by(Conversation.created_at.desc())
            .limit(self.config.kpi_sample)
        )
        async with self.db.transaction() as session:
            rows = (await session.execute(query)).all()
        # A completion rated by several keys counts once, with the first verdict found.
        unique = {row.id: (row, polarity) for row, polarity in reversed(rows)}
        return [(row.created_at, _served(row, polarity)) for row, polarity in unique.values()]

    async def _drift(self, alias: str, live: str | None) -> tuple[DriftResult | None, str | None]:
        current = await self._queries(alias, newest=True)
        if len(current) < self.config.min_queries:
            return None, f"{len(current)} recent queries; drift needs {self.config.min_queries}"
        oldest_current = current[-1][0]
        reference = await self._queries(alias, newest=False, before=oldest_current, served=live)
        if len(reference) < self.config.min_queries:
            return None, (
                f"{len(reference)} reference queries before the current window; drift needs "
                f"{self.config.min_queries}"
            )
        vectors = await anyio.to_thread.run_sync(
            self.embed, [text for _, text in reference + current]
        )
        split = len(reference)
        result = drift_test(vectors[:split], vectors[split:], self.config.permutations)
        return result, None

    async def _queries(
        self,
        alias: str,
        *,
        newest: bool,
        before: datetime | None = None,
        served: str | None = None,
    ) -> list[tuple[datetime, str]]:
        order = Conversation.created_at.desc() if newest else Conversation.created_at.asc()
        query = select(Conversation.created_at, Conversation.request).where(
            Conversation.requested_model == alias, Conversation.status == "ok"
        )
        if before is not None:
            query = query.where(Conversation.created_at < before)
        if served is not None:
            query = query.where(Conversation.served_model == served)
        async with self.db.transaction() as session:
            rows = (await session.execute(query.order_by(order).limit(self.config.window))).all()
        pairs = [(at, retrieval_query(request.get("messages") or [])) for at, request in rows]
        return [(at, text) for at, text in pairs if text]

    def _drifted(self, drift: DriftResult) -> bool:
        return (
            drift.p_value < self.config.drift_p_value
            and drift.centroid_distance >= self.config.drift_min_distance
        )

    def _triggers(self, drifted: bool, live: VersionQuality | None) -> list[str]:
        triggers = ["drift"] if drifted else []
        if live is None:
            return triggers
        ratio, idk = live.positive_ratio, live.idk_rate
        enough_feedback = live.feedback >= self.config.min_feedback
        if enough_feedback and ratio is not None and ratio < self.config.min_positive_ratio:
            triggers.append("low_positive_ratio")
        enough_answers = live.requests - live.errors >= self.config.min_queries
        if enough_answers and idk is not None and idk > self.config.max_idk_rate:
            triggers.append("high_idk_rate")
        return triggers

    async def _prune(self) -> None:
        cutoff = utcnow() - timedelta(days=self.config.retention_days)
        async with self.db.transaction() as session:
            await session.execute(delete(MonitorReport).where(MonitorReport.computed_at < cutoff))


def _served(row: Conversation, polarity: str | None) -> StoredCompletion:
    response: list[Any] = row.response or []
    answer = str(response[0].get("content") or "") if response else ""
    return StoredCompletion(
        row.served_model, row.status == "ok", answer, row.groundedness, polarity
    )


def report_dict(report: MonitorReport) -> dict[str, Any]:
    """The API and CLI view of a report."""
    return {
        "alias": report.alias,
        "computed_at": report.computed_at.isoformat(),
        "live_version": report.live_version,
        "quality": report.quality,
        "drift": report.drift,
        "drift_detected": report.drift_detected,
        "triggers": report.triggers,
        "note": report.note,
    }
