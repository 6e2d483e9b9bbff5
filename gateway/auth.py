"""Bearer API keys with two scopes, ``chat`` and ``admin`` (admin may also chat).

Verified keys are cached for ``key_cache_seconds`` so the store is not hit on every request,
and keep working past that while the store is unavailable.
"""

from __future__ import annotations

import logging
import time

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from gateway.errors import AuthenticationFailed, PermissionDenied
from gateway.store.db import UNAVAILABLE
from gateway.store.keys import KeyStore, Principal, Scope, hash_key

log = logging.getLogger("loragate.auth")

ANONYMOUS_ADMIN = Principal(key_id=None, scope="admin")


class Authenticator:
    def __init__(self, keys: KeyStore, *, enabled: bool, cache_seconds: float) -> None:
        self.keys = keys
        self.enabled = enabled
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, Principal]] = {}

    async def authenticate(self, authorization: str | None) -> Principal:
        if not self.enabled:
            return ANONYMOUS_ADMIN
        key = _bearer_token(authorization)
        cache_key = hash_key(key)
        cached = self._cache.get(cache_key)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            principal = await self.keys.find(key)
        except UNAVAILABLE:
            if cached is None:
                raise
            # The store is down: a key it verified before still works (revocations wait).
            return cached[1]
        if principal is None:
            raise AuthenticationFailed("Incorrect API key provided.")
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[cache_key] = (now + self.cache_seconds, principal)
        return principal


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
    if needed is None:
        return
    authenticator: Authenticator = connection.app.state.authenticator
    principal = await authenticator.authenticate(connection.headers.get("authorization"))
    if not principal.allows(needed):
        raise PermissionDenied(f"This route needs an API key with the '{needed}' scope.")
    connection.state.principal = principal
