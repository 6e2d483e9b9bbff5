"""Who created each Responses API id: the gateway relays ``GET /v1/responses/{id}`` and its
cancel only for that key, and only to the vLLM replica that keeps the response.

A row is written before the request goes to vLLM, so a background response can be read or
cancelled from the moment its id is known, and an id is never served to a key that did not
create it, whatever vLLM itself would answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.store.db import Database
from core.store.tables import ResponseOwner


@dataclass(frozen=True)
class Owner:
    response_id: str
    api_key_id: str | None  # None when auth is off
    engine_url: str  # the replica that keeps it
    served_model: str  # the name the client was told answered


class ResponseOwners:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def claim(self, owner: Owner) -> None:
        """Record a new id; ids are the gateway's own random ones, so a clash is a bug."""
        async with self.db.transaction() as session:
            session.add(
                ResponseOwner(
                    id=owner.response_id,
                    api_key_id=owner.api_key_id,
                    engine_url=owner.engine_url,
                    served_model=owner.served_model,
                )
            )

    async def find(self, response_id: str, api_key_id: str | None) -> Owner | None:
        """The id's record if ``api_key_id`` created it; None for an unknown id and for
        another key's alike, so that a caller cannot tell the two apart."""
        async with self.db.sessions() as session:
            row = await session.get(ResponseOwner, response_id)
        if row is None or row.api_key_id != api_key_id:
            return None
        return Owner(row.id, row.api_key_id, row.engine_url, row.served_model)
