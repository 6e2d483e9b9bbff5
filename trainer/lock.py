"""One training job per alias at a time, across processes and machines.

On PostgreSQL a session-level advisory lock keyed by the alias, held on a dedicated
connection: if the worker dies, its connection closes and the lock is free again. On SQLite
(one machine by definition) an exclusive ``flock`` on a file in the data directory, which the
kernel releases when the process dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from core.store.db import Database
from core.store.leader import LeaderLock
from trainer.errors import TrainingLocked


def lock_key(alias: str) -> int:
    """A signed 64-bit advisory-lock key for the alias."""
    digest = hashlib.blake2b(f"loragate-train:{alias}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@contextlib.asynccontextmanager
async def training_lock(db: Database, lock_dir: Path, alias: str) -> AsyncIterator[None]:
    """Hold the alias's training lock, or raise TrainingLocked at once."""
    if db.is_sqlite:
        with _file_lock(lock_dir / f"train-{alias}.lock", alias):
            yield
        return
    lock = LeaderLock(db, key=lock_key(alias), name=f"train:{alias}")
    if not await lock.is_leader():
        raise TrainingLocked(f"another worker is training alias {alias!r}")
    try:
        yield
    finally:
        await lock.release()


@contextlib.contextmanager
def _file_lock(path: Path, alias: str) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TrainingLocked(f"another worker is training alias {alias!r}") from None
        yield
    finally:
        os.close(descriptor)  # closing releases the flock
