"""Bearer API keys with two scopes, ``chat`` and ``admin`` (admin may also chat).

Verified keys are cached for ``key_cache_seconds`` so the store is not hit on every request,
and keep working past that while the store is unavailable. A hot key never makes a request
wait for the store: in the last fifth of its lifetime one background lookup refreshes it.
A key not in the cache is looked up once, however many requests carry it at the same time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from core.store.db import UNAVAILABLE
from core.store.keys import KeyStore, Principal, Scope, hash_key
from gateway.errors import AuthenticationFailed, PermissionDenied

log = logging.getLogger("loragate.auth")

ANONYMOUS_ADMIN = Principal(key_id=None, scope="admin")


REFRESH_AHEAD = 0.2  # share of key_cache_seconds left when a background refresh starts


class Authenticator:
    def __init__(
        self,
        keys: KeyStore,
        *,
        enabled: bool,
        cache_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.keys = keys
        self.enabled = enabled
        self.cache_seconds = cache_seconds
        self.clock = clock
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._lookups: dict[str, asyncio.Task[Principal | None]] = {}

    async def authenticate(self, authorization: str | None) -> Principal:
        if not self.enabled:
            return ANONYMOUS_ADMIN
        key = _bearer_token(authorization)
        cache_key = hash_key(key)
        cached = self._cache.get(cache_key)
        now = self.clock()
        if cached is not None and cached[0] > now:
            if cached[0] - now < self.cache_seconds * REFRESH_AHEAD:
                self._lookup(key, cache_key)  # served from the cache meanwhile
            return cached[1]
        try:
            principal = await asyncio.shield(self._lookup(key, cache_key))
        except UNAVAILABLE:
            if cached is None:
                raise
            # The store is down: a key it verified before still works (revocations wait).
            return cached[1]
        if principal is None:
            raise AuthenticationFailed("Incorrect API key provided.")
        return principal

    def _lookup(self, key: str, cache_key: str) -> asyncio.Task[Principal | None]:
        """The store lookup of ``key``: the one in flight, or a new one."""
        task = self._lookups.get(cache_key)
        if task is None:
            task = asyncio.create_task(self._find(key, cache_key), name="key-lookup")
            task.add_done_callback(_log_failure)
            self._lookups[cache_key] = task
        return task

    async def _find(self, key: str, cache_key: str) -> Principal | None:
        try:
            principal = await self.keys.find(key)
        finally:
            self._lookups.pop(cache_key, None)
        if principal is None:
            self._cache.pop(cache_key, None)  # revoked: the next request is refused
        else:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[cache_key] = (self.clock() + self.cache_seconds, principal)
        return principal


def _log_failure(task: asyncio.Task[Principal | None]) -> None:
    # Retrieved here so a failed background refresh is logged rather than left to the
    # event loop's "exception was never retrieved"; waiting requests get it too.
    if not task.cancelled() and (error := task.exception()) is not None:
        log.warning("key lookup failed", extra={"error": str(error)})


def _bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise AuthenticationFailed("Missing API key: send it as 'Authorization: Bearer <key>'.")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationFailed("Malformed Authorization header: expected 'Bearer <key>'.")
    return token.strip()


async def scope_guard(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    """Litestar guard: the handler's ``opt["scope"]`` names the scope it needs."""
    needed: Scope | None = handler.opt.get("scope")
    if needed is None or connection.scope.get("method") == "OPTIONS":
        # Litestar's own answer to OPTIONS (the allowed methods) inherits the controller's
        # opt, scope included; it reveals nothing, and was never behind a key.
        return
    authenticator: Authenticator = connection.app.state.authenticator
    principal = await authenticator.authenticate(connection.headers.get("authorization"))
    if not principal.allows(needed):
        raise PermissionDenied(f"This route needs an API key with the '{needed}' scope.")
    connection.state.principal = principal
