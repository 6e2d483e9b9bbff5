"""API keys: created once and shown once, stored only as sha256 hashes."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field, fields
from typing import Literal

from sqlalchemy import select, update

from core.store.db import Database
from core.store.tables import ApiKey, utcnow

Scope = Literal["chat", "admin"]
SCOPES: tuple[Scope, ...] = ("chat", "admin")
KEY_PREFIX = "lg-"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Quota:
    """A key's limits; None is "not set" (the default applies, or no limit)."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    concurrent_streams: int | None = None
    monthly_tokens: int | None = None
    # Feedback (thumbs, corrections, flags) and searches: each its own window, so rating an
    # answer never costs a chat request. Unset here and in the defaults: requests_per_minute.
    feedback_per_minute: int | None = None
    searches_per_minute: int | None = None

    def over(self, defaults: Quota) -> Quota:
        """This quota with its unset limits taken from ``defaults``."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return Quota(**{name: value if value is not None else getattr(defaults, name)
                        for name, value in values.items()})  # fmt: skip

    @property
    def unlimited(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self))

    def as_dict(self) -> dict[str, int | None]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id (None when auth is off), its scope and its limits."""

    key_id: str | None
    scope: Scope
    quota: Quota = field(default_factory=Quota)
    name: str = ""  # the key's label, for per-key metrics

    def allows(self, scope: Scope) -> bool:
        return self.scope == "admin" or self.scope == scope


@dataclass(frozen=True)
class CreatedKey:
    id: str
    scope: Scope
    name: str
    key: str  # the plaintext, returned once


class KeyStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, scope: Scope, name: str = "") -> CreatedKey:
        if scope not in SCOPES:
            raise ValueError(f"scope: must be one of {', '.join(SCOPES)}")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        key_id = "key_" + secrets.token_hex(8)
        async with self.db.transaction() as session:
            session.add(
                ApiKey(id=key_id, name=name, scope=scope, key_hash=hash_key(key), prefix=key[:10])
            )
        return CreatedKey(id=key_id, scope=scope, name=name, key=key)

    async def find(self, key: str) -> Principal | None:
        async with self.db.sessions() as session:
            row = await session.scalar(
                select(ApiKey).where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None))
            )
        if row is None or row.scope not in SCOPES:
            return None
        return Principal(key_id=row.id, scope=row.scope, quota=quota_of(row), name=row.name)

    async def get(self, key_id: str) -> ApiKey | None:
        async with self.db.sessions() as session:
            return await session.get(ApiKey, key_id)

    async def set_quota(self, key_id: str, quota: Quota) -> bool:
        """Replace the key's own limits (None: not set). Takes effect within the key cache."""
        async with self.db.transaction() as session:
            result = await session.execute(
                update(ApiKey).where(ApiKey.id == key_id).values(**quota.as_dict())
            )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def list(self) -> list[ApiKey]:
        async with self.db.sessions() as session:
            return list(await session.scalars(select(ApiKey).order_by(ApiKey.created_at)))

    async def revoke(self, key_id: str) -> bool:
        async with self.db.transaction() as session:
            result = await session.execute(
                update(ApiKey)
                .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
        return bool(result.rowcount)  # type: ignore[attr-defined]


def quota_of(row: ApiKey) -> Quota:
    return Quota(**{f.name: getattr(row, f.name) for f in fields(Quota)})
