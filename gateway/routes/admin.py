"""Admin API (admin-scoped keys): API keys and their quotas."""

from __future__ import annotations

from dataclasses import fields
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, delete, get, post, put

from core.store.keys import KeyStore, Quota, quota_of
from gateway.errors import NotFound
from gateway.quota_gate import QuotaGate

# The columns' ranges: 32-bit for per-minute limits, 64-bit for the monthly budget.
Limit = Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)] | None
BigLimit = Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)] | None


class QuotaIn(msgspec.Struct, forbid_unknown_fields=True):
    """A key's own limits; null (or absent) means the quota_default_* setting applies."""

    requests_per_minute: Limit = None
    tokens_per_minute: Limit = None
    concurrent_streams: Limit = None
    monthly_tokens: BigLimit = None
    feedback_per_minute: Limit = None
    searches_per_minute: Limit = None

    def quota(self) -> Quota:
        return Quota(**{f.name: getattr(self, f.name) for f in fields(Quota)})


class CreateKey(msgspec.Struct):
    scope: Literal["chat", "admin"] = "chat"
    name: Annotated[str, msgspec.Meta(max_length=200)] = ""
    quota: QuotaIn | None = None


async def _quota_card(key_id: str, keys: KeyStore, quotas: QuotaGate) -> dict[str, Any]:
    row = await keys.get(key_id)
    if row is None:
        raise _no_key(key_id)
    own = quota_of(row)
    return {
        "id": key_id,
        "quota": own.as_dict(),
        "effective": own.over(quotas.defaults).as_dict(),
        "usage": await quotas.usage(key_id),
    }


def _no_key(key_id: str) -> NotFound:
    return NotFound(f"No key with id '{key_id}'.", param="key_id", code="key_not_found")


class KeyRoutes(Controller):
    """API keys and their quotas (admin)."""

    path = "/v1/admin/keys"
    opt = {"scope": "admin"}
    tags = ["admin"]

    @get("/")
    async def list_keys(self, keys: KeyStore) -> dict[str, Any]:
        """Keys by id, scope and prefix; the keys themselves are never stored."""
        rows = await keys.list()
        return {
            "object": "list",
            "data": [
                {"id": row.id, "name": row.name, "scope": row.scope, "prefix": row.prefix,
                 "created_at": row.created_at.isoformat(),
                 "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None}
                for row in rows
            ],
        }  # fmt: skip

    @post("/", status_code=201)
    async def create_key(self, data: CreateKey, keys: KeyStore) -> dict[str, Any]:
        """Create a key; the response is the only time the key is shown."""
        created = await keys.create(data.scope, data.name)
        if data.quota is not None:
            await keys.set_quota(created.id, data.quota.quota())
        return {"id": created.id, "scope": created.scope, "name": created.name, "key": created.key}

    @delete("/{key_id:str}", status_code=200)
    async def revoke_key(self, key_id: str, keys: KeyStore) -> dict[str, Any]:
        """Revoke a key. Cached verifications expire within `key_cache_seconds`."""
        if not await keys.revoke(key_id):
            raise _no_key(key_id)
        return {"id": key_id, "revoked": True}

    @get("/{key_id:str}/quota")
    async def get_quota(self, key_id: str, keys: KeyStore, quotas: QuotaGate) -> dict[str, Any]:
        """The key's own limits, the limits in force (with the defaults), and its usage now."""
        return await _quota_card(key_id, keys, quotas)

    @put("/{key_id:str}/quota")
    async def set_quota(
        self, key_id: str, data: QuotaIn, keys: KeyStore, quotas: QuotaGate
    ) -> dict[str, Any]:
        """Replace the key's own limits. Takes effect within `key_cache_seconds`."""
        if not await keys.set_quota(key_id, data.quota()):
            raise _no_key(key_id)
        return await _quota_card(key_id, keys, quotas)
