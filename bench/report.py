"""Shared by the bench scripts: ports and readiness of a served gateway, an open-loop load,
the machine line, percentiles, and writing docs/benchmarks.md."""

from __future__ import annotations

import asyncio
import os
import platform
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import httpx

BENCHMARKS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout_s: float = 900) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if process.poll() is not None:
            raise SystemExit(f"the process behind {url} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise SystemExit(f"{url} did not become ready")


T = TypeVar("T")


async def on_schedule(
    rps: float, seconds: float, send: Callable[[], Awaitable[T]]
) -> list[T | BaseException]:
    """An open loop: ``rps`` requests a second for ``seconds``, each sent on schedule whether
    or not the ones before it have answered (a closed loop would slow down with the server
    and hide its queueing). Returns each result or the exception it raised."""
    tasks = []
    began = time.perf_counter()
    for index in range(int(rps * seconds)):
        delay = began + index / rps - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send()))
    return list(await asyncio.gather(*tasks, return_exceptions=True))


TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * TICK_S


def wait_idle(pid: int, timeout_s: float = 300) -> float:
    """Wait until a server has finished its own work (start-up, or a backlog another path of
    the benchmark left it), so none of it is counted against the next measurement. Returns
    the seconds waited."""
    started = time.monotonic()
    quiet, last = 0, cpu_seconds(pid)
    while quiet < 4 and time.monotonic() - started < timeout_s:
        time.sleep(0.5)
        now = cpu_seconds(pid)
        # Idle, a server still ticks (health probes, refreshes): a few percent of a core.
        quiet = quiet + 1 if now - last < 0.1 else 0
        last = now
    return time.monotonic() - started


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.system()} {platform.machine()}, {cpu}, {memory_gib:.0f} GiB RAM"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def write_section(heading: str, section: str, path: Path = BENCHMARKS) -> None:
    """Replace one suite's ``## heading`` section in docs/benchmarks.md, keeping the others."""
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    marker = heading + "\n"
    if marker in text:
        head, _, rest = text.partition(marker)
        following = rest.find("\n## ")
        tail = rest[following + 1 :] if following != -1 else ""
        text = head + section + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def emit(heading: str, section: str, write: bool) -> None:
    """Print a suite's section and, unless told not to, put it in docs/benchmarks.md."""
    print("\n" + section)
    if write:
        write_section(heading, section)
        print("written to docs/benchmarks.md")
