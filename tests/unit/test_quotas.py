"""Quota counters and the quota gate, with a clock the test moves.

The limit is exact: N per window admits the N-th and refuses the (N+1)-th, never earlier,
and Retry-After is when the oldest entry leaves the window. The same cases run against
Redis in tests/integration/test_quotas.py."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from core.store.keys import Principal, Quota
from gateway.errors import QuotaExhausted, RateLimited
from gateway.metrics import GatewayMetrics
from gateway.quota_counters import MemoryCounters
from gateway.quota_gate import QuotaGate


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FixedUsage:
    """Monthly usage without a store: what the test says, plus what was served."""

    def __init__(self, stored: int = 0) -> None:
        self.stored = stored

    async def tokens(self, key_id: str) -> int:
        return self.stored

    def add(self, key_id: str, tokens: int) -> None:
        self.stored += tokens


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def test_a_window_admits_exactly_its_limit(clock: Clock) -> None:
    counters = MemoryCounters(clock)
    for _ in range(30):
        assert await counters.admit("r", 1, 30, 60) == 0.0
        clock.now += 1
    # The 31st is refused until the first (at t=1000) leaves the window at t=1060.
    assert await counters.admit("r", 1, 30, 60) == pytest.approx(30.0)
    clock.now = 1060.0
    assert await counters.admit("r", 1, 30, 60) == 0.0
    assert await counters.used("r", 60) == 30


async def test_zero_cost_asks_for_room_without_taking_it(clock: Clock) -> None:
    counters = MemoryCounters(clock)
    await counters.record("t", 99, 60)
    assert await counters.admit("t", 0, 100, 60) == 0.0  # 99 < 100: room for one more answer
    assert await counters.used("t", 60) == 99
    await counters.record("t", 1, 60)
    assert await counters.admit("t", 0, 100, 60) == pytest.approx(60.0)


async def test_slots(clock: Clock) -> None:
    counters = MemoryCounters(clock)
    assert await counters.acquire("s", 2) and await counters.acquire("s", 2)
    assert not await counters.acquire("s", 2)
    await counters.release("s")
    assert await counters.held("s") == 1 and await counters.acquire("s", 2)


def _gate(clock: Clock, usage: Any = None, defaults: Quota | None = None) -> QuotaGate:
    metrics = GatewayMetrics(CollectorRegistry())
    return QuotaGate(MemoryCounters(clock), usage or FixedUsage(), defaults or Quota(), metrics)


def _limited(gate: QuotaGate, limit: str) -> float:
    value = gate.metrics.registry.get_sample_value("loragate_rate_limited_total", {"limit": limit})
    return float(value or 0)


async def test_requests_per_minute(clock: Clock) -> None:
    gate = _gate(clock)
    key = Principal("key_a", "chat", Quota(requests_per_minute=3))
    for _ in range(3):
        assert await gate.admit(key, stream=False) is not None
    with pytest.raises(RateLimited) as refused:
        await gate.admit(key, stream=False)
    assert refused.value.limit == "rpm" and refused.value.retry_after_s == 60
    assert refused.value.code == "rate_limit_exceeded" and refused.value.status_code == 429
    assert _limited(gate, "rpm") == 1
    other = Principal("key_b", "chat", Quota(requests_per_minute=3))
    assert await gate.admit(other, stream=False) is not None  # per key


async def test_tokens_per_minute_count_what_was_served(clock: Clock) -> None:
    gate = _gate(clock)
    key = Principal("key_a", "chat", Quota(tokens_per_minute=100))
    admitted = 0
    while True:
        try:
            admission = await gate.admit(key, stream=False)
        except RateLimited as exc:
            assert exc.limit == "tpm"
            break
        admitted += 1
        await gate.settle(admission, 25)
    assert admitted == 4  # 4 x 25 = 100: the 5th waits; not refused at 80 tokens


async def test_concurrent_streams_are_given_back(clock: Clock) -> None:
    gate = _gate(clock)
    key = Principal("key_a", "chat", Quota(concurrent_streams=1))
    first = await gate.admit(key, stream=True)
    assert await gate.admit(key, stream=False) is not None  # plain requests take no slot
    with pytest.raises(RateLimited, match="concurrent streams") as refused:
        await gate.admit(key, stream=True)
    assert refused.value.limit == "concurrency"
    await gate.settle(first, 10)
    assert await gate.admit(key, stream=True) is not None


async def test_a_refused_request_gives_its_stream_slot_back(clock: Clock) -> None:
    gate = _gate(clock)
    key = Principal("key_a", "chat", Quota(requests_per_minute=1, concurrent_streams=5))
    await gate.admit(key, stream=True)
    with pytest.raises(RateLimited):
        await gate.admit(key, stream=True)
    assert await gate.counters.held("streams:key_a") == 1


async def test_monthly_budget(clock: Clock) -> None:
    usage = FixedUsage(stored=990)
    gate = _gate(clock, usage)
    key = Principal("key_a", "chat", Quota(monthly_tokens=1000))
    admission = await gate.admit(key, stream=False)
    await gate.settle(admission, 10)
    with pytest.raises(QuotaExhausted) as refused:
        await gate.admit(key, stream=False)
    assert refused.value.code == "insufficient_quota" and refused.value.limit == "budget"
    assert refused.value.retry_after_s >= 1


async def test_defaults_fill_what_a_key_leaves_unset(clock: Clock) -> None:
    gate = _gate(clock, defaults=Quota(requests_per_minute=1, tokens_per_minute=500))
    own = Principal("key_a", "chat", Quota(requests_per_minute=2))
    assert own.quota.over(gate.defaults) == Quota(requests_per_minute=2, tokens_per_minute=500)
    await gate.admit(own, stream=False)
    await gate.admit(own, stream=False)
    with pytest.raises(RateLimited):
        await gate.admit(own, stream=False)
    assert await _gate(clock).admit(Principal("k", "chat"), stream=True) is None  # no limits
    assert await gate.admit(Principal(None, "admin"), stream=True) is None  # auth off


async def test_a_hold_is_replaced_by_the_real_amount(clock: Clock) -> None:
    counters = MemoryCounters(clock)
    wait, hold = await counters.reserve("t", 60, 100, 60)
    assert wait == 0.0 and hold is not None
    assert (await counters.reserve("t", 60, 100, 60))[0] > 0  # 60 held + 60 > 100
    clock.now += 10
    await counters.settle("t", hold, 15, 60)
    assert await counters.used("t", 60) == 15
    assert (await counters.reserve("t", 60, 100, 60))[0] == 0.0


async def test_a_refused_request_gives_its_holds_back(clock: Clock) -> None:
    usage = FixedUsage(stored=900)
    gate = _gate(clock, usage)
    key = Principal("key_a", "chat", Quota(monthly_tokens=1000, tokens_per_minute=50))
    await gate.counters.record("tokens:key_a", 10, 60)
    with pytest.raises(RateLimited) as refused:  # the budget holds 60, then tpm refuses
        await gate.admit(key, stream=False, hold=60)
    assert refused.value.limit == "tpm"
    assert await gate.counters.used("budget:key_a", 3600) == 0
    # A hold bigger than the whole minute is cut to it: the request runs alone.
    admission = await gate.admit(Principal("key_b", "chat", Quota(tokens_per_minute=50)), False, 80)
    assert admission is not None and await gate.counters.used("tokens:key_b", 60) == 50
    await gate.settle(admission, 70)
    assert await gate.counters.used("tokens:key_b", 60) == 70
