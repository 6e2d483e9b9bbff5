"""SQLite hands every ``DateTime(timezone=True)`` column back aware, in UTC (issue 22): through
the ORM and plain Core selects alike, for every package's tables, and a time written in
another zone is stored as the same instant in UTC (so stored strings still sort in time
order). PostgreSQL's own timestamptz does this already; tests/integration/
test_timestamps_http.py checks both stores over HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import func, select

from adapters.tables import Alias
from core.store import Database
from core.store.tables import ApiKey

NEW_YORK = timezone(timedelta(hours=-5))


async def test_sqlite_reads_times_back_in_utc(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'times.db'}")
    try:
        await db.migrate()
        written = datetime(2026, 12, 4, 15, 0, 37, 206580, tzinfo=NEW_YORK)
        async with db.transaction() as session:
            session.add(ApiKey(id="k1", scope="chat", key_hash="h" * 64, prefix="lg-",
                               created_at=written))  # fmt: skip
            session.add(Alias(name="support"))
        async with db.sessions() as session:
            key = (await session.execute(select(ApiKey))).scalar_one()
            latest = (await session.execute(select(func.max(ApiKey.created_at)))).scalar_one()
            alias = (await session.execute(select(Alias))).scalar_one()
        assert key.created_at == written and key.created_at.tzinfo is UTC
        assert key.created_at.isoformat() == "2026-12-04T20:00:37.206580+00:00"
        assert latest == written and latest.tzinfo is UTC
        assert alias.updated_at.tzinfo is UTC  # another package's table, same engine
    finally:
        await db.dispose()
