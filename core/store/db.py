"""Database handle: async engine, sessions, and migrations on start."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import DateTime, event, exc, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from core.errors import StoreBusy

log = logging.getLogger("loragate.store")
T = TypeVar("T")

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
MIGRATION_LOCK_KEY = 0x6D696772  # "migr"

# What a database outage raises (connection refused or dropped, pool exhausted, timeouts):
# worth retrying later, unlike a row the database refuses.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    exc.OperationalError,
    exc.InterfaceError,
    exc.TimeoutError,
    ConnectionError,
    TimeoutError,
)
# A write that lost to a concurrent one: run again, it succeeds. PostgreSQL's serialization
# failure and deadlock, and on either database a unique key taken meanwhile by another writer.
_CONFLICT_SQLSTATES = {"40001", "40P01", "23505"}
_CONFLICT_SQLITE = {"SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"}
CONFLICT_ATTEMPTS = 5


def storable_text(value: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL, which clients may send: it is stored as U+FFFD."""
    return value.replace("\x00", "\ufffd") if value else value


def _private_file(path: Path) -> None:
    """Create the SQLite file readable by its owner only (it holds every conversation and
    the key hashes); SQLite gives its -wal and -shm files the same mode."""
    if str(path) == ":memory:" or str(path).startswith("file:"):
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    # Never open an existing database file here: closing any descriptor of it drops every
    # POSIX lock this process's SQLite connections hold on it, and concurrent writers then
    # corrupt it ("database disk image is malformed", seen in test_reeval).
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        with contextlib.suppress(OSError):  # someone else's file: left as its owner set it
            os.chmod(path, 0o600)


class Database:
    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = make_url(url)
        if self.url.get_backend_name() == "sqlite" and self.url.database:
            _private_file(Path(self.url.database))
        self.engine: AsyncEngine = create_async_engine(
            self.url, echo=echo, **_engine_options(self.url.get_backend_name())
        )
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
            _read_sqlite_times_as_utc(self.engine)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.url.get_backend_name() == "sqlite"

    @property
    def display_url(self) -> str:
        return self.url.render_as_string(hide_password=True)

    async def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision."""
        async with self.engine.begin() as connection:
            if not self.is_sqlite:
                # Every worker of every replica migrates at start: one at a time. The lock is
                # transaction-scoped, so it is released with the commit.
                await connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
                )
            await connection.run_sync(_upgrade_to_head)
        log.info("store migrated", extra={"url": self.display_url})

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session, session.begin():
            yield session

    def insert(self, entity: Any) -> postgresql.Insert | sqlite.Insert:
        """This database's own INSERT, the one with ``ON CONFLICT`` (for upserts)."""
        return sqlite.insert(entity) if self.is_sqlite else postgresql.insert(entity)

    async def dispose(self) -> None:
        await self.engine.dispose()


async def begin_writing(session: AsyncSession) -> None:
    """Take the store's write lock now, before the reads a write will be decided on.

    SQLite has no row locks, and Python's driver begins a transaction only at its first
    write, after those reads: ``BEGIN IMMEDIATE`` takes the database's write lock first, and
    a second writer waits (``busy_timeout``), then reads fresh. PostgreSQL needs nothing
    here: the caller locks the rows it reads with ``FOR UPDATE``. Must be the transaction's
    first statement (SQLite cannot begin it twice)."""
    if session.get_bind().dialect.name == "sqlite":
        await session.execute(text("BEGIN IMMEDIATE"))


def is_conflict(error: BaseException) -> bool:
    """Whether ``error`` is a write losing to a concurrent writer (see _CONFLICT_SQLSTATES)."""
    if not isinstance(error, exc.DBAPIError):
        return False
    orig = error.orig
    return (
        getattr(orig, "sqlstate", None) in _CONFLICT_SQLSTATES
        or getattr(orig, "sqlite_errorname", None) in _CONFLICT_SQLITE
    )


async def retry_conflicts(
    transaction: Callable[[], Awaitable[T]], what: str, attempts: int = CONFLICT_ATTEMPTS
) -> T:
    """Run ``transaction`` (a whole one: it is rolled back when it raises) until it does not
    lose to a concurrent writer, ``attempts`` times at most; then ``StoreBusy``, so the
    client is told to send it again instead of getting a 500 that drops it."""
    attempt = 0
    while True:
        try:
            return await transaction()
        except exc.DBAPIError as error:
            attempt += 1
            if not is_conflict(error):
                raise
            if attempt >= attempts:
                raise StoreBusy(f"The {what} met {attempts} concurrent writes in a row and "
                                "was not recorded; send it again.") from error  # fmt: skip
            log.warning("write conflict; retrying", extra={
                "what": what, "attempt": attempt, "error": str(error).splitlines()[0]})  # fmt: skip
            # Jittered backoff: writers that met once must not meet again in step.
            await asyncio.sleep(random.uniform(0, 0.02 * 2**attempt))


def _engine_options(backend: str) -> dict[str, Any]:
    if backend == "sqlite":
        return {}
    # A database that stops answering must fail a connect in seconds, not hang the caller.
    return {
        "pool_size": 10,
        "max_overflow": 20,
        "pool_pre_ping": True,
        "pool_timeout": 10,
        "connect_args": {"timeout": 5},
    }


class _UtcSqliteDateTime(sqlite.DATETIME):
    """SQLite's DATETIME for ``DateTime(timezone=True)`` columns that keeps the UTC offset.

    SQLite has no time-zone type: SQLAlchemy stores the wall-clock digits and reads them back
    naive, so the API sent ``2026-12-04T20:00:37`` on SQLite and ``...+00:00`` on PostgreSQL,
    and a browser read the naive one as its own local time. Values are written in UTC (an
    aware one is converted first, so stored strings still sort in time order, as before) and
    read back with UTC attached. The stored format is unchanged: no migration.
    """

    def bind_processor(self, dialect: Any) -> Any:
        store = super().bind_processor(dialect)

        def process(value: Any) -> Any:
            if isinstance(value, datetime) and value.tzinfo is not None:
                value = value.astimezone(UTC)
            return store(value) if store else value

        return process

    def result_processor(self, dialect: Any, coltype: object) -> Any:
        parse = super().result_processor(dialect, coltype)
        if not self.timezone:
            return parse

        def process(value: Any) -> Any:
            moment = parse(value) if parse else value
            if isinstance(moment, datetime) and moment.tzinfo is None:
                return moment.replace(tzinfo=UTC)
            return moment

        return process


def _read_sqlite_times_as_utc(engine: AsyncEngine) -> None:
    """Every package's tables (gateway, adapters, retrieval, trainer, monitor) get the aware
    SQLite type through the one engine they share, without importing anything of ours."""
    dialect = engine.sync_engine.dialect
    dialect.colspecs = {**dialect.colspecs, DateTime: _UtcSqliteDateTime}


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run while the conversation writer commits; busy_timeout rides out the
    # short write locks instead of failing with "database is locked".
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _upgrade_to_head(connection: Connection) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
