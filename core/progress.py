"""Progress for long work: a tqdm bar on a terminal, structured log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time
from types import TracebackType
from typing import Any

log = logging.getLogger("loragate.progress")


class Progress:
    """Counts steps of one task. Call it with a step label; use it as a context manager.

    Libraries take a plain ``Callable[[str], None]`` for their steps, so they never depend on
    how progress is shown.
    """

    def __init__(self, task: str, total: int, *, terminal: bool | None = None) -> None:
        self.task = task
        self.total = total
        self.done = 0
        self._started = time.monotonic()
        self._bar: Any = None
        if sys.stderr.isatty() if terminal is None else terminal:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=task, unit="step", file=sys.stderr)

    def __call__(self, step: str) -> None:
        self.done += 1
        if self._bar is not None:
            self._bar.set_postfix_str(step)
            self._bar.update(1)
        log.info(
            "progress",
            extra={"task": self.task, "step": step, "done": self.done, "total": self.total},
        )

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.close()
        log.info(
            "finished" if exc is None else "failed",
            extra={"task": self.task, "seconds": round(time.monotonic() - self._started, 3)},
        )
