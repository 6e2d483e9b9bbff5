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
same examples. The base's replies are also kept across runs in an answer cache keyed by what
makes them (the model, its weights, its server, the reply length): the base does not change
between runs, and on vLLM's CPU build asking a hundred prompts takes minutes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, TypeVar

import anyio

from trainer.dataset import Example, read_examples, write_examples

ORIGIN = "rehearsal"
FILE_NAME = "rehearsal.jsonl"
CACHE_DIR = "rehearsal-answers"  # in the data directory
ASK_SPARE = 1.25  # prompts asked per replay example wanted
_REFUSAL = re.compile(
    r"\b(?:I'?m sorry|I apologi[sz]e|as an? (?:AI|chatbot|language model)"
    r"|I (?:am|'m) (?:not able|unable|not equipped)"
    r"|I can(?:not|'t) (?:help|provide|assist|answer))",
    re.IGNORECASE,
)
T = TypeVar("T")


class Answers(Protocol):
    async def answers(self, model: str, prompts: Sequence[list[dict[str, Any]]]) -> list[str]: ...


def shipped_prompts() -> list[str]:
    text = resources.files("trainer").joinpath(FILE_NAME).read_text(encoding="utf-8")
    return [json.loads(line)["prompt"] for line in text.splitlines() if line.strip()]


def replay_wanted(fraction: float, train_size: int) -> int:
    """How many replay examples make up ``fraction`` of the mixed training set."""
    if fraction <= 0 or train_size == 0:
        return 0
    return math.ceil(train_size * fraction / (1 - fraction))


def replay_count(fraction: float, train_size: int, available: int) -> int:
    """``replay_wanted``, at most the ``available`` prompts."""
    return min(available, replay_wanted(fraction, train_size))


def spread(items: list[T], count: int) -> list[T]:
    """``count`` items taken evenly across the list, which is grouped by kind."""
    count = min(count, len(items))
    return [items[i * len(items) // count] for i in range(count)]


def worth_replaying(reply: str) -> bool:
    """Not empty (that would teach the adapter to say nothing) and not a refusal. The 135M
    base answers a few general prompts with "I'm sorry ... as a chatbot, I'm not equipped";
    replayed, those taught the adapter to refuse one-word probes it used to answer."""
    return bool(reply.strip()) and not _REFUSAL.search(reply)


def read_answer_cache(path: Path) -> dict[str, str]:
    """Prompt to reply, as earlier runs asked them; a torn last line is asked again."""
    if not path.exists():
        return {}
    replies = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        replies[row["prompt"]] = row["reply"]
    return replies


def write_answer_cache(path: Path, replies: dict[str, str]) -> None:
    """Whole and at once (written beside, then renamed): a crash leaves the old cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text("".join(
        json.dumps({"prompt": prompt, "reply": reply}) + "\n" for prompt, reply in replies.items()
    ), encoding="utf-8")  # fmt: skip
    partial.replace(path)


async def rehearsal_set(
    work_dir: Path,
    answerer: Answers,
    model: str,
    alias: str,
    count: int,
    cache: Path | None = None,
) -> list[Example]:
    """``count`` replay examples of ``model``'s answers, from ``work_dir`` when a crashed run
    made them already, else made now and written there. Replies in ``cache`` (an answer
    cache for this model as it is served now) are not asked again; new ones join it."""
    path = work_dir / FILE_NAME
    if path.exists() or count == 0:
        return await anyio.to_thread.run_sync(read_examples, path) if path.exists() else []
    # Asked with room to spare: the refusals and empty answers left out are made up for.
    prompts = spread(shipped_prompts(), math.ceil(count * ASK_SPARE))
    known = await anyio.to_thread.run_sync(read_answer_cache, cache) if cache else {}
    missing = [prompt for prompt in prompts if prompt not in known]
    if missing:
        chats = [[{"role": "user", "content": prompt}] for prompt in missing]
        known.update(zip(missing, await answerer.answers(model, chats), strict=True))
        if cache is not None:
            await anyio.to_thread.run_sync(write_answer_cache, cache, known)
    kept = [(prompt, known[prompt].strip()) for prompt in prompts
            if worth_replaying(known[prompt])]  # fmt: skip
    examples = [
        Example(
            id=f"{ORIGIN}-{hashlib.sha256(prompt.encode()).hexdigest()[:12]}",
            alias=alias,
            messages=[{"role": "user", "content": prompt}],
            reply=reply,
            origin=ORIGIN,
            stratum=ORIGIN,
        )
        for prompt, reply in spread(kept, count)
    ]
    await anyio.to_thread.run_sync(write_examples, path, examples)
    return examples
