"""The Alembic migrations build exactly the schema the table classes describe: a column, an
index or a nullability added to a class without its migration (or the other way round)
fails here, on SQLite, before it fails on someone's PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from adapters.tables import AdapterBase
from core.store import Database
from core.store.tables import Base
from monitor.tables import MonitorBase
from retrieval.tables import RetrievalBase
from trainer.tables import TrainerBase

METADATA = [
    Base.metadata,
    RetrievalBase.metadata,
    AdapterBase.metadata,
    TrainerBase.metadata,
    MonitorBase.metadata,
]


async def test_migrated_schema_matches_the_table_classes(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'schema.db'}")
    try:
        await db.migrate()
        async with db.engine.connect() as connection:
            differences = await connection.run_sync(_differences)
    finally:
        await db.dispose()
    assert differences == []


def _differences(connection: Any) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": False})
    ignored = {"alembic_version"}
    return [
        difference
        for difference in compare_metadata(context, METADATA)
        if not (difference[0] == "remove_table" and difference[1].name in ignored)
    ]
