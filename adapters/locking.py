"""The per-alias write lock: one writer at a time changes how an alias is served.

Publishing a version, every rollout step (start, advance, gate failure, pause, resume,
promote, rollback, abort) and every experiment step (start, decide, stop, promote) reads
the alias's state, decides, then writes. Two writers deciding on the same read (two
replicas' ticks, the CLI and the server, an operator's click and the analysis loop) would
both act: two rollouts of one alias, a rollout both promoted and rolled back, a step
advanced twice. So each such transaction starts with ``lock_alias`` and reads only after it:

* PostgreSQL: ``SELECT ... FOR UPDATE`` on the alias row. A second writer waits for the
  first to commit, and under READ COMMITTED its next statements see what the first wrote.
* SQLite has no row locks, and Python's driver begins a transaction only at its first
  write, after the reads it was decided on. ``BEGIN IMMEDIATE`` takes the database's write
  lock before the reads; a second writer waits (``busy_timeout``) and then reads fresh.

The loser then finds the state changed and raises its package's conflict error (409).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.tables import Alias
from core.store.db import begin_writing


async def lock_alias(session: AsyncSession, alias: str, *, create: bool = False) -> Alias | None:
    """Lock ``alias`` for the rest of the transaction and return its row (None: no such
    alias). ``create`` makes the alias first if it is missing, so there is a row to lock.

    Must be the transaction's first statement: SQLite cannot begin it a second time."""
    await begin_writing(session)
    is_sqlite = session.get_bind().dialect.name == "sqlite"
    if create:
        insert = sqlite.insert(Alias) if is_sqlite else postgresql.insert(Alias)
        await session.execute(
            insert.values(name=alias, live_version=None, generation=0).on_conflict_do_nothing(
                index_elements=["name"]
            )
        )
    row: Alias | None = await session.scalar(
        select(Alias)
        .where(Alias.name == alias)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return row
