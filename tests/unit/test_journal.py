"""The local journal: what is appended survives the process, and is replayed exactly once.

Bad input: a line cut short by a crash (never acknowledged) and a garbled line are skipped
with a log line; the other entries of the segment are still replayed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from core.store.journal import SUFFIX, Journal, orphans


def _segments(directory: Path) -> list[Path]:
    return sorted(directory.glob(f"*{SUFFIX}"))


def test_a_live_segment_is_not_an_orphan_and_a_dead_ones_is(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.append("conversation", {"id": "a"})
    assert list(orphans(tmp_path)) == []  # we hold its lock
    journal.close()
    # Closed with an unsettled entry: kept for the next start.
    [orphan] = list(orphans(tmp_path))
    assert [(entry.kind, entry.data) for entry in orphan.entries] == [("conversation", {"id": "a"})]
    orphan.done()
    assert _segments(tmp_path) == []


def test_settled_entries_leave_nothing_to_replay(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    tickets = [journal.append("feedback", {"n": n}) for n in range(3)]
    for ticket in tickets:
        journal.settle(ticket)
    [segment] = _segments(tmp_path)
    assert segment.stat().st_size == 0  # all in the database: the file starts over
    journal.append("feedback", {"n": 3})
    journal.close()
    [orphan] = list(orphans(tmp_path))
    assert [entry.data["n"] for entry in orphan.entries] == [3]
    orphan.release()


def test_a_full_segment_rotates_and_is_deleted_once_settled(tmp_path: Path) -> None:
    journal = Journal(tmp_path, rotate_bytes=150)
    first = [journal.append("conversation", {"pad": "x" * 60}) for _ in range(2)]
    later = journal.append("conversation", {"pad": "y"})
    assert len(_segments(tmp_path)) == 2
    for ticket in first:
        journal.settle(ticket)
    assert len(_segments(tmp_path)) == 1
    journal.settle(later)
    journal.close()
    assert _segments(tmp_path) == []


def test_fsync_mode_syncs_in_batches(tmp_path: Path) -> None:
    async def go() -> None:
        journal = Journal(tmp_path, fsync=True)
        for n in range(20):
            journal.append("conversation", {"n": n})
        await asyncio.gather(*(journal.sync() for _ in range(20)))
        journal.close()

    asyncio.run(go())
    [orphan] = list(orphans(tmp_path))
    assert len(orphan.entries) == 20
    orphan.release()


def test_entries_survive_sigkill_and_a_torn_line_is_skipped(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import os, sys, time
        from pathlib import Path
        from core.store.journal import Journal
        journal = Journal(Path({str(tmp_path)!r}))
        for n in range(50):
            journal.append("conversation", {{"id": f"c{{n}}"}})
        print("appended", flush=True)
        time.sleep(60)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "appended"
    assert list(orphans(tmp_path)) == []  # the child still holds it
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    [segment] = _segments(tmp_path)
    with segment.open("ab") as file:
        file.write(b'{"kind":"conversation","data":{"id":"torn"')  # a crash mid-write
    with segment.open("rb") as file:
        lines = file.read().split(b"\n")
    lines.insert(10, b"not json")
    segment.write_bytes(b"\n".join(lines))
    [orphan] = list(orphans(tmp_path))
    assert [entry.data["id"] for entry in orphan.entries] == [f"c{n}" for n in range(50)]
    orphan.done()
