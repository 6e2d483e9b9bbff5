"""Quota usage per API key, read from the store at scrape time (part of the state metrics).

What the quota gate charges a key ends up in its conversation rows, so the usage read here
is what a budget is checked against, the same from every worker and replica: tokens this
calendar month (UTC), tokens in the last minute, and each key's effective limits. Cardinality
is bounded like the event counters' (gateway.key_labels) but by usage, so every process picks
the same keys: the ``limit`` keys with the most tokens this month keep their own ``key``
label, the others are summed under ``other``. Keys with no traffic this month are absent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import func, select

from core.store.db import Database
from core.store.keys import Quota, quota_of
from core.store.tables import ApiKey, Conversation
from gateway.key_labels import OTHER

# The limits a dashboard sets usage against; the others are not about tokens or requests.
EXPORTED_LIMITS = ("monthly_tokens", "tokens_per_minute", "requests_per_minute")


@dataclass
class KeyUsage:
    db: Database
    defaults: Quota
    limit: int = 50
    # The month's sum reads every row of the month, so it is re-read at most this often (the
    # quota gate's quota_usage_refresh_s); the last minute's, a few rows through the
    # created_at index, on every scrape.
    month_refresh_s: float = 10.0
    clock: Callable[[], float] = time.monotonic
    _month: tuple[float, datetime, dict[str, int]] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.limit < 0:
            raise ValueError("limit: must be 0 or more")
        if self.month_refresh_s < 0:
            raise ValueError("month_refresh_s: must be 0 or more")

    async def families(self, now: datetime | None = None) -> list[Metric]:
        now = now or datetime.now(UTC)
        async with self.db.transaction() as session:
            month = await self._month_tokens(session, now)
            minute = await _tokens_by_key(session, now - timedelta(seconds=60))
            top = sorted(month, key=lambda key: (-month[key], key))[: self.limit]
            keys = await _keys(session, top)
        return self._render(month, minute, keys)

    async def _month_tokens(self, session: Any, now: datetime) -> dict[str, int]:
        start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        cached = self._month
        if cached is None or cached[1] != start or self.clock() - cached[0] >= self.month_refresh_s:
            self._month = cached = (self.clock(), start, await _tokens_by_key(session, start))
        return cached[2]

    def _render(
        self, month: dict[str, int], minute: dict[str, int], keys: dict[str, ApiKey]
    ) -> list[Metric]:
        month_tokens = _gauge(
            "loragate_key_month_tokens", "Tokens charged to an API key this calendar month (UTC)."
        )
        minute_tokens = _gauge(
            "loragate_key_minute_tokens", "Tokens charged to an API key in the last 60 seconds."
        )
        limits = GaugeMetricFamily(
            "loragate_key_quota_limit",
            "An API key's effective quota limit (its own, else the default), where one is set.",
            labels=["key", "name", "limit"],
        )
        labels = {key: (key, row.name) for key, row in keys.items()}
        for family, usage in ((month_tokens, month), (minute_tokens, minute)):
            for labelled, value in _fold(usage, labels).items():
                family.add_metric(list(labelled), value)
        for key, row in keys.items():
            quota = quota_of(row).over(self.defaults)
            for name in EXPORTED_LIMITS:
                value = getattr(quota, name)
                if value is not None:
                    limits.add_metric([*labels[key], name], value)
        return [month_tokens, minute_tokens, limits]


def _fold(usage: dict[str, int], labels: dict[str, tuple[str, str]]) -> dict[tuple[str, str], int]:
    """Usage per label pair: a labelled key's own, everyone else's summed under ``other``."""
    folded: dict[tuple[str, str], int] = {}
    for key, value in usage.items():
        pair = labels.get(key, OTHER)
        folded[pair] = folded.get(pair, 0) + value
    return folded


async def _tokens_by_key(session: Any, since: datetime) -> dict[str, int]:
    tokens = func.sum(Conversation.prompt_tokens + Conversation.completion_tokens)
    rows = await session.execute(
        select(Conversation.api_key_id, tokens)
        .where(Conversation.created_at >= since, Conversation.api_key_id.is_not(None))
        .group_by(Conversation.api_key_id)
    )
    return {key: int(value or 0) for key, value in rows}


async def _keys(session: Any, ids: list[str]) -> dict[str, ApiKey]:
    if not ids:
        return {}
    rows = await session.scalars(select(ApiKey).where(ApiKey.id.in_(ids)))
    return {row.id: row for row in rows}


def _gauge(name: str, documentation: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=["key", "name"])
