"""Admin API (admin-scoped keys): API keys. Adapters, rollouts and review join here."""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from litestar import delete, get, post

from gateway.errors import NotFound
from gateway.store.keys import KeyStore


class CreateKey(msgspec.Struct):
    scope: Literal["chat", "admin"] = "chat"
    name: str = ""


@get("/v1/admin/keys", opt={"scope": "admin"}, tags=["admin"])
async def list_keys(keys: KeyStore) -> dict[str, Any]:
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


@post("/v1/admin/keys", opt={"scope": "admin"}, tags=["admin"], status_code=201)
async def create_key(data: CreateKey, keys: KeyStore) -> dict[str, Any]:
    """Create a key; the response is the only time the key is shown."""
    created = await keys.create(data.scope, data.name)
    return {"id": created.id, "scope": created.scope, "name": created.name, "key": created.key}


@delete("/v1/admin/keys/{key_id:str}", opt={"scope": "admin"}, tags=["admin"], status_code=200)
async def revoke_key(key_id: str, keys: KeyStore) -> dict[str, Any]:
    """Revoke a key. Cached verifications expire within `key_cache_seconds`."""
    if not await keys.revoke(key_id):
        raise NotFound(f"No active key with id '{key_id}'.", param="key_id", code="key_not_found")
    return {"id": key_id, "revoked": True}
