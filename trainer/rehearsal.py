"""Rehearsal against forgetting: the base model's own answers to general prompts, mixed into
the training set.

An adapter trained only on an alias's corrections learns their style as well as their facts:
on the 135M demo model, one that answered the alias's questions 17 points better also
answered "What is 3 times 3? Answer with a number." with "Three times three is 6.", and the
probe gate (rightly) refused it. Replaying what the base itself says to a few dozen general
prompts keeps the adapter close to the base outside the alias's domain. The answers are the
base's, right or wrong: the aim is to change nothing there, not to teach.

The prompts (``rehearsal.jsonl``) are of the same kinds as the general probes but none of them
(tests/unit/test_rehearsal.py), so the probes still measure forgetting, not recall. The replay
set is made once per run and kept in the run's work directory, so a resumed run trains on the
same examples.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import anyio

from trainer.dataset import Example, read_examples, write_examples

ORIGIN = "rehearsal"
FILE_NAME = "rehearsal.jsonl"


class Answers(Protocol):
    async def answers(self, model: str, prompts: Sequence[list[dict[str, Any]]]) -> list[str]: ...


def shipped_prompts() -> list[str]:
    text = resources.files("trainer").joinpath(FILE_NAME).read_text(encoding="utf-8")
    return [json.loads(line)["prompt"] for line in text.splitlines() if line.strip()]


def replay_count(fraction: float, train_size: int, available: int) -> int:
    """How many replay examples make up ``fraction`` of the mixed training set."""
    if fraction <= 0 or train_size == 0:
        return 0
    return min(available, math.ceil(train_size * fraction / (1 - fraction)))


def spread(prompts: list[str], count: int) -> list[str]:
    """``count`` prompts taken evenly across the list, which is grouped by kind."""
    count = min(count, len(prompts))
    return [prompts[i * len(prompts) // count] for i in range(count)]


async def rehearsal_set(
    work_dir: Path, answerer: Answers, model: str, alias: str, count: int
) -> list[Example]:
    """``count`` replay examples of ``model``'s answers, from ``work_dir`` when a crashed run
    made them already, else asked now and written there."""
    path = work_dir / FILE_NAME
    if path.exists() or count == 0:
        return await anyio.to_thread.run_sync(read_examples, path) if path.exists() else []
    prompts = spread(shipped_prompts(), count)
    replies = await answerer.answers(model, [[{"role": "user", "content": p}] for p in prompts])
    examples = [
        Example(
            id=f"{ORIGIN}-{hashlib.sha256(prompt.encode()).hexdigest()[:12]}",
            alias=alias,
            messages=[{"role": "user", "content": prompt}],
            reply=reply.strip(),
            origin=ORIGIN,
            stratum=ORIGIN,
        )
        for prompt, reply in zip(prompts, replies, strict=True)
        if reply.strip()  # an empty answer would teach the adapter to say nothing
    ]
    await anyio.to_thread.run_sync(write_examples, path, examples)
    return examples
