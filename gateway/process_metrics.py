"""``process_*`` metrics (CPU, memory, open files) on the registry ``/metrics`` renders.

The gateway scrapes its own registries, not prometheus_client's global one, so its process
collector must be added by hand. With one process that is prometheus_client's
``ProcessCollector``. With several workers (``loragate serve`` with ``workers`` > 1: a
uvicorn supervisor and its worker processes) any worker may answer a scrape, so the values
are those of the whole tree, the same whichever worker answers: CPU seconds, memory and open
files summed over the supervisor and its children, the earliest start time and the smallest
file limit. Linux only (it reads /proc); elsewhere the family is simply absent.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# Per family, how the tree's processes add up; everything else is summed.
_SMALLEST = frozenset({"process_start_time_seconds", "process_max_fds"})


def add_process_metrics(registry: CollectorRegistry, whole_tree: bool) -> None:
    if whole_tree:
        registry.register(ProcessTreeCollector(lambda: tree_of(os.getppid())))
    else:
        ProcessCollector(registry=registry)


class ProcessTreeCollector(Collector):
    """The ``process_*`` families of several processes, added up into one."""

    def __init__(self, pids: Callable[[], list[int]], proc: str = "/proc") -> None:
        self.pids = pids
        self.proc = proc

    def collect(self) -> Iterator[Metric]:
        values: dict[str, list[float]] = {}
        kinds: dict[str, tuple[str, str]] = {}
        for pid in self.pids():
            one = ProcessCollector(pid=_fixed(pid), proc=self.proc, registry=None)
            for family in one.collect():
                kinds[family.name] = (family.type, family.documentation)
                values.setdefault(family.name, []).extend(s.value for s in family.samples)
        for name, numbers in values.items():
            kind, documentation = kinds[name]
            yield _family(name, kind, documentation, _combine(name, numbers))


def _fixed(pid: int) -> Callable[[], int]:
    return lambda: pid


def tree_of(parent: int, proc: str = "/proc") -> list[int]:
    """``parent`` and its direct children (the workers of a uvicorn supervisor)."""
    return [parent, *(pid for pid, ppid in _parents(proc) if ppid == parent)]


def _parents(proc: str) -> Iterable[tuple[int, int]]:
    for entry in Path(proc).iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_bytes()
        except OSError:  # gone meanwhile
            continue
        # The command name is in parentheses and may hold spaces: split after the last one.
        fields = stat.rsplit(b")", 1)[-1].split()
        yield int(entry.name), int(fields[1])


def _combine(name: str, numbers: list[float]) -> float:
    return min(numbers) if name in _SMALLEST else sum(numbers)


def _family(name: str, kind: str, documentation: str, value: float) -> Metric:
    if kind == "counter":
        return CounterMetricFamily(name, documentation, value=value)
    return GaugeMetricFamily(name, documentation, value=value)
