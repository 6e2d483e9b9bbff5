"""A local write-ahead journal for what the gateway has acknowledged but the database has not
yet confirmed: conversation rows and feedback.

Each process appends JSON lines to its own segment file under ``journal_dir`` and holds an
exclusive ``flock`` on it. An entry is written before the client is answered, so a gateway
killed with SIGKILL (or a database that is down) loses nothing the client saw succeed: the
next gateway to start replays the segments no live process holds. Writes go to the OS at
once (that survives a process crash); ``fsync=True`` also waits for the disk, in batches,
which survives a host crash at the cost of one fsync per batch of requests.

Replay is idempotent (conversations by id, feedback by completion and key), so an entry that
was both committed and left in a segment is harmless.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

log = logging.getLogger("loragate.journal")

SUFFIX = ".journal"


@dataclass
class Entry:
    kind: str  # "conversation" or "feedback"
    data: dict[str, Any]


@dataclass
class Ticket:
    """Proof of one appended entry; settle it once the database holds the entry."""

    segment: _Segment


class _Segment:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.unsettled = 0
        self.size = 0

    def write(self, line: bytes) -> None:
        view = memoryview(line)
        try:
            while view:
                view = view[os.write(self.fd, view) :]
        except OSError:
            # Cut the partial line off (disk full mid-write), or the next line would be
            # glued to it and both lost on replay.
            os.ftruncate(self.fd, self.size)
            raise
        self.size += len(line)
        self.unsettled += 1

    def close(self, delete: bool) -> None:
        if delete:
            self.path.unlink(missing_ok=True)
        os.close(self.fd)


class Journal:
    """This process's segments: append before acknowledging, settle after committing."""

    def __init__(self, directory: Path, *, fsync: bool = False, rotate_bytes: int = 64 << 20):
        self.directory = directory
        self.fsync = fsync
        self.rotate_bytes = rotate_bytes
        self._current: _Segment | None = None
        self._closed_segments: list[_Segment] = []
        self._sync_lock = asyncio.Lock()
        self._appended = 0  # entries appended, and of those, known to be on disk
        self._synced = 0

    def append(self, kind: str, data: dict[str, Any]) -> Ticket:
        segment = self._segment()
        line = json.dumps({"kind": kind, "data": data}, default=str, separators=(",", ":"))
        segment.write(line.encode() + b"\n")
        self._appended += 1
        return Ticket(segment)

    async def sync(self) -> None:
        """Wait until everything appended so far is on disk (a no-op unless ``fsync``).

        Callers that arrive while an fsync runs share the next one: one fsync per batch.
        """
        wanted = self._appended
        if not self.fsync or self._current is None:
            return
        async with self._sync_lock:
            if self._synced >= wanted:
                return  # an fsync that started after our append has covered it
            covered, fd = self._appended, self._current.fd
            await anyio.to_thread.run_sync(os.fsync, fd)
            self._synced = covered

    def settle(self, ticket: Ticket) -> None:
        segment = ticket.segment
        segment.unsettled -= 1
        if segment.unsettled > 0:
            return
        if segment is self._current:
            # Everything in it is in the database: start the file over rather than grow it.
            os.ftruncate(segment.fd, 0)
            segment.size = 0
        elif segment in self._closed_segments:
            self._closed_segments.remove(segment)
            segment.close(delete=True)

    def close(self) -> None:
        """Close the segments; those with unsettled entries stay for the next replay."""
        for segment in [*self._closed_segments, *([self._current] if self._current else [])]:
            segment.close(delete=segment.unsettled == 0)
        self._closed_segments, self._current = [], None

    def _segment(self) -> _Segment:
        current = self._current
        if current is not None and current.size < self.rotate_bytes:
            return current
        if current is not None:
            if self.fsync:
                os.fsync(current.fd)  # later syncs only cover the new segment
            self._closed_segments.append(current)
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}{SUFFIX}"
        self._current = _Segment(self.directory / name)
        return self._current


@dataclass
class Orphan:
    """A segment left by a process that is gone, locked by us while we replay it."""

    path: Path
    entries: list[Entry]
    fd: int

    def done(self) -> None:
        self.path.unlink(missing_ok=True)
        os.close(self.fd)

    def release(self) -> None:
        os.close(self.fd)


def orphans(directory: Path) -> Iterator[Orphan]:
    """The segments no live process holds, each locked until ``done()`` or ``release()``."""
    if not directory.is_dir():
        return
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            continue  # replayed and deleted by another process just now
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)  # a live process's segment
            continue
        yield Orphan(path, _read_entries(path), fd)


def _read_entries(path: Path) -> list[Entry]:
    entries = []
    lines = path.read_bytes().split(b"\n")
    # The last piece is empty, or a line cut short by the crash: never acknowledged, so skip.
    for number, line in enumerate(lines[:-1], start=1):
        try:
            raw = json.loads(line)
            entries.append(Entry(str(raw["kind"]), dict(raw["data"])))
        except (ValueError, KeyError, TypeError):
            log.error("journal line unreadable; skipped", extra={"path": str(path), "line": number})
    return entries
