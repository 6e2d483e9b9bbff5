"""Exactly one acting rollout controller among several gateways.

On PostgreSQL the leader holds a session-level advisory lock on a dedicated connection;
if that connection dies the lock is released and another gateway takes over. On SQLite
there is one gateway process, which is always the leader.
"""

from __future__ import annotations

import contextlib
import logging

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from core.store.db import Database

log = logging.getLogger("loragate.leader")

ROLLOUT_LOCK_KEY = 0x6C6F7261  # "lora"
MONITOR_LOCK_KEY = 0x6D6F6E69  # "moni"


class LeaderLock:
    def __init__(self, db: Database, key: int = ROLLOUT_LOCK_KEY, name: str = "rollout") -> None:
        self.db = db
        self.key = key
        self.name = name
        self._connection: AsyncConnection | None = None

    async def is_leader(self) -> bool:
        if self.db.is_sqlite:
            return True
        try:
            if self._connection is not None:
                await self._connection.execute(text("SELECT 1"))  # still holding it?
                return True
            connection = await self.db.engine.connect()
            held = await connection.scalar(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key}
            )
            if held:
                self._connection = connection
                log.info("lock acquired", extra={"lock": self.name})
                return True
            await connection.close()
            return False
        except SQLAlchemyError as exc:
            log.warning("leader check failed", extra={"error": str(exc)})
            await self.release()
            return False

    async def release(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            # The connection goes back to the pool, and a session lock would go with it:
            # unlock explicitly, or drop the connection if it cannot.
            try:
                await connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
            except SQLAlchemyError:
                with contextlib.suppress(SQLAlchemyError):
                    await connection.invalidate()
            with contextlib.suppress(SQLAlchemyError):
                await connection.close()
