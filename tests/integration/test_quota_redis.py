"""Quota counters in the real Redis (127.0.0.1:6379): exact under concurrency, shared by
replicas. Each test uses its own key names."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator

import pytest

from gateway.quota_counters import RedisCounters

REDIS_URL = os.environ.get("LORAGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
async def replicas() -> AsyncIterator[list[RedisCounters]]:
    """Two gateway replicas' counters on one Redis."""
    prefix = f"loragate-test:{uuid.uuid4().hex}:"
    counters = [RedisCounters(REDIS_URL, prefix=prefix) for _ in range(2)]
    yield counters
    leftovers = [key async for key in counters[0].client.scan_iter(prefix + "*")]
    if leftovers:
        await counters[0].client.delete(*leftovers)
    for counter in counters:
        await counter.close()


async def test_concurrent_admits_across_replicas_stop_exactly_at_the_limit(
    replicas: list[RedisCounters],
) -> None:
    attempts = [replicas[n % 2].admit("requests:k", 1, 30, 60) for n in range(50)]
    waits = await asyncio.gather(*attempts)
    assert sum(wait == 0.0 for wait in waits) == 30
    refused = [wait for wait in waits if wait]
    assert len(refused) == 20 and all(0 < wait <= 60 for wait in refused)
    assert await replicas[1].used("requests:k", 60) == 30


async def test_tokens_are_recorded_and_room_is_checked_without_taking_it(
    replicas: list[RedisCounters],
) -> None:
    await replicas[0].record("tokens:k", 60, 60)
    await replicas[1].record("tokens:k", 39, 60)
    assert await replicas[0].admit("tokens:k", 0, 100, 60) == 0.0  # 99 < 100
    assert await replicas[1].used("tokens:k", 60) == 99
    await replicas[1].record("tokens:k", 1, 60)
    assert 0 < await replicas[0].admit("tokens:k", 0, 100, 60) <= 60


async def test_entries_leave_the_window(replicas: list[RedisCounters]) -> None:
    assert await replicas[0].admit("requests:w", 1, 1, 1.0) == 0.0
    wait = await replicas[1].admit("requests:w", 1, 1, 1.0)
    assert 0 < wait <= 1.0
    await asyncio.sleep(wait + 0.05)  # waiting the time Redis gave, not asserting speed
    assert await replicas[1].admit("requests:w", 1, 1, 1.0) == 0.0


async def test_stream_slots_are_shared(replicas: list[RedisCounters]) -> None:
    taken = await asyncio.gather(*[replicas[n % 2].acquire("streams:k", 3) for n in range(8)])
    assert sum(taken) == 3
    await replicas[0].release("streams:k")
    assert await replicas[1].held("streams:k") == 2
    assert await replicas[1].acquire("streams:k", 3)
    for _ in range(5):
        await replicas[0].release("streams:k")  # never below zero
    assert await replicas[0].held("streams:k") == 0


async def test_holds_are_shared_and_settled_to_the_real_amount(
    replicas: list[RedisCounters],
) -> None:
    """Requests hold their most while they run (issue 19): 8 concurrent holds of 30 in a
    window of 100 let 3 in; settling one at 5 makes room for another."""
    attempts = [replicas[n % 2].reserve("tokens:h", 30, 100, 60) for n in range(8)]
    results = await asyncio.gather(*attempts)
    holds = [hold for wait, hold in results if wait == 0.0]
    assert len(holds) == 3 and all(holds)
    assert await replicas[0].used("tokens:h", 60) == 90
    await replicas[1].settle("tokens:h", holds[0], 5, 60)
    assert await replicas[0].used("tokens:h", 60) == 65
    assert (await replicas[0].reserve("tokens:h", 30, 100, 60))[0] == 0.0
    await replicas[0].settle("tokens:h", holds[1], 0, 60)  # given back whole
    assert await replicas[1].used("tokens:h", 60) == 65
