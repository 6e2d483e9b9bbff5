"""Sliding-window counters and concurrency slots for quotas: in memory, or in Redis.

A window counter keeps each addition with its time, so "how much in the last 60 s" is exact
(not a fixed minute that resets, nor an estimate): a limit of 30 requests per minute admits
the 30th request and refuses the 31st, and says when the oldest one leaves the window.

``admit(name, cost, limit)`` adds ``cost`` when the window's total plus ``max(cost, 1)``
stays within ``limit``, and otherwise returns the seconds until it would. A cost of 0 asks
"is there any room left?" without taking any.

``reserve`` is ``admit`` that also names the entry it added (a hold), and ``settle(name,
hold, amount)`` replaces that entry with the real amount, counted now: a request's tokens
are held at their most (``max_tokens``) while it runs and counted at their real number when
it is done, so requests admitted together cannot carry a window past its limit.

One process (one worker, one replica) can count in memory. Several must share Redis: its
Lua scripts make each check-and-add atomic, and Redis's own clock keeps replicas in step.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol


class Counters(Protocol):
    async def admit(self, name: str, cost: int, limit: int, window_s: float) -> float: ...

    async def reserve(
        self, name: str, cost: int, limit: int, window_s: float
    ) -> tuple[float, str | None]: ...

    async def settle(self, name: str, hold: str | None, amount: int, window_s: float) -> None: ...

    async def record(self, name: str, amount: int, window_s: float) -> None: ...

    async def used(self, name: str, window_s: float) -> int: ...

    async def acquire(self, name: str, limit: int) -> bool: ...

    async def release(self, name: str) -> None: ...

    async def held(self, name: str) -> int: ...

    async def close(self) -> None: ...


@dataclass
class _Window:
    entries: deque[tuple[float, int, str]] = field(default_factory=deque)  # (at, amount, id)
    total: int = 0

    def trim(self, now: float, window_s: float) -> None:
        while self.entries and self.entries[0][0] <= now - window_s:
            self.total -= self.entries.popleft()[1]

    def add(self, now: float, amount: int) -> str:
        entry = uuid.uuid4().hex
        self.entries.append((now, amount, entry))
        self.total += amount
        return entry

    def remove(self, entry: str) -> None:
        for item in self.entries:
            if item[2] == entry:
                self.entries.remove(item)
                self.total -= item[1]
                return

    def wait_for_room(self, need: int, limit: int, now: float, window_s: float) -> float:
        excess = self.total + need - limit
        for at, amount, _ in self.entries:
            excess -= amount
            if excess <= 0:
                return at + window_s - now
        return window_s


class MemoryCounters:
    """Counters of this process only: right for one worker of one replica."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self.clock = clock
        self._windows: dict[str, _Window] = {}
        self._slots: dict[str, int] = {}

    def _window(self, name: str, window_s: float) -> tuple[_Window, float]:
        now = self.clock()
        window = self._windows.setdefault(name, _Window())
        window.trim(now, window_s)
        return window, now

    async def admit(self, name: str, cost: int, limit: int, window_s: float) -> float:
        return (await self.reserve(name, cost, limit, window_s))[0]

    async def reserve(
        self, name: str, cost: int, limit: int, window_s: float
    ) -> tuple[float, str | None]:
        window, now = self._window(name, window_s)
        if window.total + max(cost, 1) <= limit:
            return 0.0, window.add(now, cost) if cost > 0 else None
        return window.wait_for_room(max(cost, 1), limit, now, window_s), None

    async def settle(self, name: str, hold: str | None, amount: int, window_s: float) -> None:
        window, now = self._window(name, window_s)
        if hold is not None:
            window.remove(hold)  # gone already if it outlived the window
        if amount > 0:
            window.add(now, amount)

    async def record(self, name: str, amount: int, window_s: float) -> None:
        await self.settle(name, None, amount, window_s)

    async def used(self, name: str, window_s: float) -> int:
        return self._window(name, window_s)[0].total

    async def acquire(self, name: str, limit: int) -> bool:
        if self._slots.get(name, 0) >= limit:
            return False
        self._slots[name] = self._slots.get(name, 0) + 1
        return True

    async def release(self, name: str) -> None:
        self._slots[name] = max(self._slots.get(name, 0) - 1, 0)

    async def held(self, name: str) -> int:
        return self._slots.get(name, 0)

    async def close(self) -> None:
        pass


# Members are "<uuid>:<amount>", scored by the time they were added (Redis's clock).
_TRIM_AND_SUM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local entries = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local total = 0
for i = 1, #entries, 2 do
  total = total + tonumber(string.match(entries[i], ':(%d+)$'))
end
"""

_ADMIT = (
    _TRIM_AND_SUM
    + """
local cost, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
local need = math.max(cost, 1)
if total + need <= limit then
  if cost > 0 then
    redis.call('ZADD', KEYS[1], now, ARGV[4] .. ':' .. cost)
    redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000))
  end
  return '0'
end
local excess = total + need - limit
for i = 1, #entries, 2 do
  excess = excess - tonumber(string.match(entries[i], ':(%d+)$'))
  if excess <= 0 then return tostring(tonumber(entries[i + 1]) + window - now) end
end
return tostring(window)
"""
)

# Drops the hold ARGV[2] (a member, or '' for none), then adds ARGV[3] as ARGV[4]:amount.
_SETTLE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
if ARGV[2] ~= '' then redis.call('ZREM', KEYS[1], ARGV[2]) end
if tonumber(ARGV[3]) > 0 then
  redis.call('ZADD', KEYS[1], now, ARGV[4] .. ':' .. ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1]) * 1000))
end
"""

_USED = _TRIM_AND_SUM + "return total\n"

_ACQUIRE = """
local held = tonumber(redis.call('GET', KEYS[1]) or '0')
if held >= tonumber(ARGV[1]) then return 0 end
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
"""

_RELEASE = """
local held = tonumber(redis.call('GET', KEYS[1]) or '0')
if held > 0 then redis.call('DECR', KEYS[1]) end
"""


class RedisCounters:
    """Counters shared by every worker and replica through one Redis."""

    def __init__(self, url: str, prefix: str = "loragate:quota:", slot_ttl_s: int = 3600) -> None:
        import redis.asyncio as redis

        self.client = redis.from_url(url)
        self.prefix = prefix
        # A worker that dies holding a stream slot cannot release it; slots of a key expire
        # this long after its last acquisition.
        self.slot_ttl_s = slot_ttl_s
        self._admit = self.client.register_script(_ADMIT)
        self._settle = self.client.register_script(_SETTLE)
        self._used = self.client.register_script(_USED)
        self._acquire = self.client.register_script(_ACQUIRE)
        self._release = self.client.register_script(_RELEASE)

    async def admit(self, name: str, cost: int, limit: int, window_s: float) -> float:
        return (await self.reserve(name, cost, limit, window_s))[0]

    async def reserve(
        self, name: str, cost: int, limit: int, window_s: float
    ) -> tuple[float, str | None]:
        member = uuid.uuid4().hex
        wait = float(await self._admit([self.prefix + name], [window_s, cost, limit, member]))
        return wait, f"{member}:{cost}" if wait == 0.0 and cost > 0 else None

    async def settle(self, name: str, hold: str | None, amount: int, window_s: float) -> None:
        if hold is not None or amount > 0:
            args: list[str | float] = [window_s, hold or "", max(amount, 0), uuid.uuid4().hex]
            await self._settle([self.prefix + name], args)

    async def record(self, name: str, amount: int, window_s: float) -> None:
        await self.settle(name, None, amount, window_s)

    async def used(self, name: str, window_s: float) -> int:
        return int(await self._used([self.prefix + name], [window_s]))

    async def acquire(self, name: str, limit: int) -> bool:
        return bool(await self._acquire([self.prefix + name], [limit, self.slot_ttl_s]))

    async def release(self, name: str) -> None:
        await self._release([self.prefix + name], [])

    async def held(self, name: str) -> int:
        return int(await self.client.get(self.prefix + name) or 0)

    async def close(self) -> None:
        await self.client.aclose()
