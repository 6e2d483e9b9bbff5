"""The verified-key cache in front of a real SQLite key store: one lookup however many
requests carry an uncached key at once, hot keys refreshed in the background before they
expire, revocations seen after the cache time, and a store outage survived by keys it
verified before. The clock is injected: no test waits for time to pass."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core.store import Database
from core.store.keys import KeyStore, Principal
from gateway.auth import Authenticator
from gateway.errors import AuthenticationFailed

CACHE_S = 60.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingKeys(KeyStore):
    """The real store, with its lookups counted, slowed a little, and breakable."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.lookups = 0
        self.down = False

    async def find(self, key: str) -> Principal | None:
        self.lookups += 1
        await asyncio.sleep(0.01)  # long enough for concurrent requests to pile up
        if self.down:
            raise ConnectionError("store unreachable")
        return await super().find(key)


@pytest.fixture
async def keys(tmp_path: Path) -> AsyncIterator[CountingKeys]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'keys.db'}")
    await db.migrate()
    try:
        yield CountingKeys(db)
    finally:
        await db.dispose()


def _auth(keys: KeyStore, clock: Clock) -> Authenticator:
    return Authenticator(keys, enabled=True, cache_seconds=CACHE_S, clock=clock)


async def _settle() -> None:
    for _ in range(50):  # let background lookups finish
        await asyncio.sleep(0.01)


async def test_concurrent_requests_with_a_new_key_share_one_lookup(keys: CountingKeys) -> None:
    created = await keys.create("chat")
    auth = _auth(keys, Clock())
    principals = await asyncio.gather(
        *(auth.authenticate(f"Bearer {created.key}") for _ in range(50))
    )
    assert {p.key_id for p in principals} == {created.id}
    assert keys.lookups == 1


async def test_a_hot_key_is_refreshed_in_the_background_before_it_expires(
    keys: CountingKeys,
) -> None:
    created, clock = await keys.create("chat"), Clock()
    auth = _auth(keys, clock)
    await auth.authenticate(f"Bearer {created.key}")
    clock.now += CACHE_S * 0.5
    await auth.authenticate(f"Bearer {created.key}")
    assert keys.lookups == 1  # fresh: from the cache
    clock.now += CACHE_S * 0.35  # in the last fifth of its lifetime
    answers = await asyncio.gather(*(auth.authenticate(f"Bearer {created.key}") for _ in range(20)))
    assert {p.key_id for p in answers} == {created.id}
    await _settle()
    assert keys.lookups == 2  # one refresh for all twenty
    clock.now += CACHE_S * 0.9  # past the first expiry, inside the refreshed one
    await auth.authenticate(f"Bearer {created.key}")
    assert keys.lookups == 2


async def test_a_revoked_key_is_refused_once_its_cache_time_is_over(keys: CountingKeys) -> None:
    created, clock = await keys.create("chat"), Clock()
    auth = _auth(keys, clock)
    await auth.authenticate(f"Bearer {created.key}")
    assert await keys.revoke(created.id)
    clock.now += CACHE_S + 1
    with pytest.raises(AuthenticationFailed):
        await auth.authenticate(f"Bearer {created.key}")
    with pytest.raises(AuthenticationFailed):
        await auth.authenticate("Bearer lg-not-a-key")


async def test_while_the_store_is_down_known_keys_work_and_new_ones_fail(
    keys: CountingKeys,
) -> None:
    known, unknown, clock = await keys.create("chat"), await keys.create("admin"), Clock()
    auth = _auth(keys, clock)
    await auth.authenticate(f"Bearer {known.key}")
    keys.down = True
    clock.now += CACHE_S * 0.9  # a background refresh fails: logged, the cached key serves
    assert (await auth.authenticate(f"Bearer {known.key}")).key_id == known.id
    await _settle()
    clock.now += CACHE_S  # expired, and the store still down
    assert (await auth.authenticate(f"Bearer {known.key}")).key_id == known.id
    with pytest.raises(ConnectionError):
        await auth.authenticate(f"Bearer {unknown.key}")
