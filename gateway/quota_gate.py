"""Per-key quotas: requests and tokens per minute, concurrent streams, a monthly token budget.

Each key may set its own limits (``api_keys`` columns, admin API, ``loragate keys quota``);
unset ones fall back to the ``quota_default_*`` settings; unset there too means no limit.

**Hold at admission, settle at the end.** A request is let in holding its most: its
estimated prompt plus ``max_tokens x n`` (without ``max_tokens``: ``default_max_tokens``,
else ``quota_reserve_max_tokens``, else the rest of the context window, the most vLLM can
generate). The prompt is estimated without a tokenizer (``estimate_tokens``: a quarter of
the UTF-8 JSON of its messages and tools), plus what vLLM's counts showed the model's
prompts to have beyond that (``PromptOverhead``: a chat template's own system prompt,
grounding sources). When the request ends, however it ends, its hold is replaced by what it
really used (``gateway/chat.py``: vLLM's usage, its running count of a stream cut short, or
an estimate when vLLM could not say). So requests admitted together cannot carry a limit
past its end by their output; only a prompt longer than its estimate can, by the
difference, per request in flight.

Admission, before a request is routed:

1. **monthly budget**: tokens the key used this calendar month (UTC), from the stored
   conversations plus what this process served since it last read them, plus the holds of
   its requests in flight, plus this request's hold, must fit the budget. A request whose
   hold alone is more than what is left is refused (``insufficient_quota``, until next
   month); one that would fit once requests in flight end is refused with a short
   ``Retry-After``;
2. **tokens per minute**: tokens counted in the last 60 s (requests done, at their real
   number, and holds of requests in flight) plus this request's hold must fit the limit.
   A hold bigger than the whole limit is cut to the limit: such a request waits for an
   empty minute and runs alone;
3. **concurrent streams** (streaming requests only) take a slot, given back at the end;
4. **requests per minute**: the request must fit in the last 60 s.

A refusal is a 429 ``rate_limit_error`` with ``Retry-After``: when the window will have
room, or the start of next month for the budget. Whatever was taken before the refusing
check is given back.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
from sqlalchemy import func, select

from core.store.db import UNAVAILABLE, Database
from core.store.keys import Principal, Quota
from core.store.tables import Conversation
from gateway.errors import QuotaExhausted, RateLimited
from gateway.quota_counters import Counters

log = logging.getLogger("loragate.quotas")

MINUTE_S = 60.0
# How long a request's hold on the monthly budget can last: it is given back when the request
# ends, and a process that dies holding one (Redis) loses it after this long.
HOLD_S = 3600.0
BYTES_PER_TOKEN = 4  # about right for English with BPE tokenizers; an estimate, not a count

_encode = msgspec.json.Encoder().encode


def estimate_tokens(*parts: Any) -> int:
    """Tokens of a prompt, estimated without a tokenizer: one per 4 bytes of its JSON.

    The JSON of a message (``{"role":"user","content":"..."}``) adds about 30 bytes, which
    stands for the chat template's role markers. Used for the hold at admission and for the
    prompt of a request that ended before vLLM said how long its prompt was."""
    size = sum(len(_encode(part)) for part in parts if part)
    return max(math.ceil(size / BYTES_PER_TOKEN), 1)


class PromptOverhead:
    """What each model's prompts were seen to have beyond ``estimate_tokens``: a chat
    template's own system prompt, grounding sources added after admission. Learned from
    vLLM's counts (the largest shortfall seen, at most ``cap``) and added to later holds, so
    that a hold is not short by a model's fixed overhead. In memory, per process."""

    def __init__(self, cap: int = 512) -> None:
        self.cap = cap
        self._extra: dict[str, int] = {}

    def __call__(self, model: str) -> int:
        return self._extra.get(model, 0)

    def learn(self, model: str, estimated: int, counted: int) -> None:
        shortfall = min(counted - estimated, self.cap)
        if shortfall > self._extra.get(model, 0):
            self._extra[model] = shortfall


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
    holds_stream: bool = False
    hold: int = 0  # tokens held at admission (estimated prompt + max_tokens x n)
    budget_hold: str | None = None  # the entries holding them in the counters
    minute_hold: str | None = None


class QuotaGate:
    def __init__(
        self, counters: Counters, monthly: MonthlyUsage, defaults: Quota, metrics: Any
    ) -> None:
        self.counters = counters
        self.monthly = monthly
        self.defaults = defaults
        self.metrics = metrics

    async def admit(self, principal: Principal, stream: bool, hold: int = 0) -> Admission | None:
        """Let a request in holding ``hold`` tokens, or refuse it (and take nothing)."""
        if principal.key_id is None:
            return None  # auth off: nobody to count against
        quota = principal.quota.over(self.defaults)
        if quota.unlimited:
            return None
        admission = Admission(principal.key_id, quota, hold=hold)
        try:
            await self._hold_budget(admission)
            await self._hold_tokens(admission)
            admission.holds_stream = await self._take_stream(admission.key_id, quota, stream)
            await self._count_request(admission.key_id, quota)
        except Exception as exc:
            await self._give_back(admission, None)
            if isinstance(exc, RateLimited):
                self.metrics.rate_limited.labels(exc.limit).inc()
            raise
        return admission

    async def settle(self, admission: Admission | None, tokens: int) -> None:
        """Count the tokens the request really used in place of its hold; give back its slot."""
        if admission is None:
            return
        try:
            await self._give_back(admission, tokens)
        except Exception:  # a counter store outage must not break the served request
            log.exception("quota settle failed", extra={"key_id": admission.key_id})

    async def _give_back(self, admission: Admission, tokens: int | None) -> None:
        """Release what the admission took; with ``tokens`` (settling), count them."""
        key = admission.key_id
        if admission.holds_stream:
            admission.holds_stream = False
            await self.counters.release(_name("streams", key))
        if tokens is not None:
            # Counted before the hold goes: for a moment twice, never zero times.
            self.monthly.add(key, tokens)
        budget_hold, admission.budget_hold = admission.budget_hold, None
        if budget_hold is not None:
            await self.counters.settle(_name("budget", key), budget_hold, 0, HOLD_S)
        minute_hold, admission.minute_hold = admission.minute_hold, None
        if tokens is not None or minute_hold is not None:
            await self.counters.settle(_name("tokens", key), minute_hold, tokens or 0, MINUTE_S)

    async def usage(self, key_id: str) -> dict[str, int]:
        return {
            "requests_last_minute": await self.counters.used(_name("requests", key_id), MINUTE_S),
            "tokens_last_minute": await self.counters.used(_name("tokens", key_id), MINUTE_S),
            "streams": await self.counters.held(_name("streams", key_id)),
            "tokens_this_month": await self.monthly.tokens(key_id),
            "tokens_held": await self.counters.used(_name("budget", key_id), HOLD_S),
        }

    # -- the checks ----------------------------------------------------------------------
    async def _hold_budget(self, admission: Admission) -> None:
        budget = admission.quota.monthly_tokens
        if budget is None:
            return
        key = admission.key_id
        used = await self.monthly.tokens(key)
        left = budget - used
        if left <= 0 or admission.hold > left:
            needs = f"; this request may use up to {admission.hold}" if left > 0 else ""
            raise QuotaExhausted(
                f"This key has used its monthly budget of {budget} tokens "
                f"({used} used{needs}); it renews on the 1st (UTC). "
                "A lower max_tokens asks for less.",
                limit="budget",
                retry_after_s=(_next_month_start() - datetime.now(UTC)).total_seconds(),
            )
        wait, admission.budget_hold = await self.counters.reserve(
            _name("budget", key), admission.hold, left, HOLD_S
        )
        if wait:
            raise RateLimited(
                f"Requests in progress hold the rest of this key's monthly budget ({left} of "
                f"{budget} tokens left); try again when they are done.",
                limit="budget",
                retry_after_s=1,
            )

    async def _hold_tokens(self, admission: Admission) -> None:
        limit = admission.quota.tokens_per_minute
        if limit is None:
            return
        wait, admission.minute_hold = await self.counters.reserve(
            _name("tokens", admission.key_id), min(admission.hold, limit), limit, MINUTE_S
        )
        if wait:
            raise RateLimited(
                f"Rate limit reached: {limit} tokens per minute.",
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
