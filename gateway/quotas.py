"""Per-key quotas: requests and tokens per minute, concurrent streams, a monthly token budget.

Each key may set its own limits (``api_keys`` columns, admin API, ``loragate keys quota``);
unset ones fall back to the ``quota_default_*`` settings; unset there too means no limit.

Admission, before a request is routed:

1. **monthly budget**: tokens the key used this calendar month (UTC), from the stored
   conversations plus what this process served since it last read them, must be below the
   budget (``insufficient_quota``);
2. **tokens per minute**: tokens served to the key in the last 60 s must be below the limit.
   Tokens are counted when the answer is done, at their real number: nothing is reserved
   for ``max_tokens``, so the limit never trips early. Requests admitted together can carry
   the minute past the limit by their own size;
3. **concurrent streams** (streaming requests only) take a slot, given back at the end;
4. **requests per minute**: the request must fit in the last 60 s.

A refusal is a 429 ``rate_limit_error`` with ``Retry-After``: when the window will have
room, or the start of next month for the budget.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from gateway.errors import QuotaExhausted, RateLimited
from gateway.quota_counters import Counters
from gateway.store.db import UNAVAILABLE, Database
from gateway.store.keys import Principal, Quota
from gateway.store.tables import Conversation

log = logging.getLogger("loragate.quotas")

MINUTE_S = 60.0


class MonthlyUsage:
    """Tokens per key this month: the stored conversations, re-read every ``refresh_s``,
    plus what this process has served since its last read."""

    def __init__(self, db: Database, refresh_s: float = 10.0) -> None:
        self.db = db
        self.refresh_s = refresh_s
        self._cache: dict[str, tuple[float, str, int]] = {}  # key -> (read at, month, tokens)
        self._since_read: dict[str, int] = {}

    async def tokens(self, key_id: str) -> int:
        month = _month_start()
        cached = self._cache.get(key_id)
        if cached is None or cached[1] != month.isoformat() or _age(cached[0]) > self.refresh_s:
            try:
                stored = await self._stored(key_id, month)
            except UNAVAILABLE:
                if cached is None or cached[1] != month.isoformat():
                    raise
                return cached[2] + self._since_read.get(key_id, 0)  # stale beats refusing
            cached = (time.monotonic(), month.isoformat(), stored)
            self._cache[key_id], self._since_read[key_id] = cached, 0
        return cached[2] + self._since_read.get(key_id, 0)

    def add(self, key_id: str, tokens: int) -> None:
        self._since_read[key_id] = self._since_read.get(key_id, 0) + tokens

    async def _stored(self, key_id: str, month: datetime) -> int:
        query = select(
            func.coalesce(func.sum(Conversation.prompt_tokens + Conversation.completion_tokens), 0)
        ).where(Conversation.api_key_id == key_id, Conversation.created_at >= month)
        async with self.db.sessions() as session:
            return int(await session.scalar(query) or 0)


@dataclass
class Admission:
    """A request let in: what to give back and count when it is done."""

    key_id: str
    quota: Quota
    holds_stream: bool


class QuotaGate:
    def __init__(
        self, counters: Counters, monthly: MonthlyUsage, defaults: Quota, metrics: Any
    ) -> None:
        self.counters = counters
        self.monthly = monthly
        self.defaults = defaults
        self.metrics = metrics

    async def admit(self, principal: Principal, stream: bool) -> Admission | None:
        if principal.key_id is None:
            return None  # auth off: nobody to count against
        quota = principal.quota.over(self.defaults)
        if quota.unlimited:
            return None
        key = principal.key_id
        try:
            await self._check_budget(key, quota)
            await self._check_tokens(key, quota)
            holds_stream = await self._take_stream(key, quota, stream)
            try:
                await self._count_request(key, quota)
            except RateLimited:
                if holds_stream:
                    await self.counters.release(_name("streams", key))
                raise
        except RateLimited as exc:
            self.metrics.rate_limited.labels(exc.limit).inc()
            raise
        return Admission(key, quota, holds_stream)

    async def settle(self, admission: Admission | None, tokens: int) -> None:
        """Count the answer's tokens and give back its stream slot."""
        if admission is None:
            return
        try:
            if admission.holds_stream:
                await self.counters.release(_name("streams", admission.key_id))
            await self.counters.record(_name("tokens", admission.key_id), tokens, MINUTE_S)
            self.monthly.add(admission.key_id, tokens)
        except Exception:  # a counter store outage must not break the served request
            log.exception("quota settle failed", extra={"key_id": admission.key_id})

    async def usage(self, key_id: str) -> dict[str, int]:
        return {
            "requests_last_minute": await self.counters.used(_name("requests", key_id), MINUTE_S),
            "tokens_last_minute": await self.counters.used(_name("tokens", key_id), MINUTE_S),
            "streams": await self.counters.held(_name("streams", key_id)),
            "tokens_this_month": await self.monthly.tokens(key_id),
        }

    # -- the checks ----------------------------------------------------------------------
    async def _check_budget(self, key: str, quota: Quota) -> None:
        if quota.monthly_tokens is None:
            return
        used = await self.monthly.tokens(key)
        if used >= quota.monthly_tokens:
            raise QuotaExhausted(
                f"This key has used its monthly budget of {quota.monthly_tokens} tokens "
                f"({used} used); it renews on the 1st (UTC).",
                limit="budget",
                retry_after_s=(_next_month_start() - datetime.now(UTC)).total_seconds(),
            )

    async def _check_tokens(self, key: str, quota: Quota) -> None:
        if quota.tokens_per_minute is None:
            return
        wait = await self.counters.admit(_name("tokens", key), 0, quota.tokens_per_minute, MINUTE_S)
        if wait:
            raise RateLimited(
                f"Rate limit reached: {quota.tokens_per_minute} tokens per minute.",
                limit="tpm",
                retry_after_s=wait,
            )

    async def _take_stream(self, key: str, quota: Quota, stream: bool) -> bool:
        if not stream or quota.concurrent_streams is None:
            return False
        if not await self.counters.acquire(_name("streams", key), quota.concurrent_streams):
            raise RateLimited(
                f"Too many concurrent streams: at most {quota.concurrent_streams}.",
                limit="concurrency",
                retry_after_s=1,
            )
        return True

    async def _count_request(self, key: str, quota: Quota) -> None:
        if quota.requests_per_minute is None:
            return
        wait = await self.counters.admit(
            _name("requests", key), 1, quota.requests_per_minute, MINUTE_S
        )
        if wait:
            raise RateLimited(
                f"Rate limit reached: {quota.requests_per_minute} requests per minute.",
                limit="rpm",
                retry_after_s=wait,
            )

    async def close(self) -> None:
        await self.counters.close()


def _name(kind: str, key_id: str) -> str:
    return f"{kind}:{key_id}"


def _age(at: float) -> float:
    return time.monotonic() - at


def _month_start(now: datetime | None = None) -> datetime:
    now = now or datetime.now(UTC)
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _next_month_start() -> datetime:
    start = _month_start()
    return (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
