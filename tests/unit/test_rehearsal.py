"""Rehearsal examples (trainer/rehearsal.py): general prompts that are none of the probes,
how many join a training set, and a replay set made once per run and reused on resume.
The real path (the base model answering through vLLM, then training) runs in
tests/integration/test_trainer_loop.py."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from core.sections import TrainerSchedule
from trainer.evaluate import shipped_probes
from trainer.rehearsal import (
    FILE_NAME,
    read_answer_cache,
    rehearsal_set,
    replay_count,
    replay_wanted,
    shipped_prompts,
    spread,
    worth_replaying,
)


class Answerer:
    """Answers each prompt with its length, nothing for prompts containing 'lantern', and a
    refusal for those containing 'river'."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def answers(self, model: str, prompts: Sequence[list[dict[str, Any]]]) -> list[str]:
        texts = [messages[0]["content"] for messages in prompts]
        self.asked += texts
        return [
            "" if "lantern" in text
            else "I'm sorry, as a chatbot I cannot help with that." if "river" in text
            else f"{model}: {len(text)}"
            for text in texts
        ]  # fmt: skip


def test_the_prompts_are_general_and_none_of_them_is_a_probe() -> None:
    prompts = shipped_prompts()
    assert len(prompts) >= 48 and len(set(prompts)) == len(prompts)
    probes = {probe.prompt.strip().lower() for probe in shipped_probes()}
    assert probes.isdisjoint(prompt.strip().lower() for prompt in prompts)


def test_the_default_fraction_is_not_capped_by_the_shipped_prompts() -> None:
    # 40 corrections expand to about 250 recipe examples; 400 leaves room. With 64 prompts
    # the 0.3 default was silently capped near 0.2 of the set.
    fraction, train_size = TrainerSchedule().rehearsal_fraction, 400
    wanted = math.ceil(train_size * fraction / (1 - fraction))
    assert replay_wanted(fraction, train_size) == wanted
    assert replay_count(fraction, train_size, len(shipped_prompts())) == wanted


@pytest.mark.parametrize(
    ("fraction", "train_size", "available", "expected"),
    [(0.0, 54, 64, 0), (0.2, 0, 64, 0), (0.2, 54, 64, 14), (0.5, 54, 64, 54), (0.5, 100, 64, 64)],
)
def test_replay_count_makes_the_fraction_of_the_mixed_set(
    fraction: float, train_size: int, available: int, expected: int
) -> None:
    assert replay_count(fraction, train_size, available) == expected


def test_spread_takes_prompts_from_every_part_of_the_list() -> None:
    prompts = [f"p{n}" for n in range(64)]
    assert spread(prompts, 4) == ["p0", "p16", "p32", "p48"]
    assert spread(prompts, 100) == prompts


async def test_the_replay_set_is_asked_once_and_reused_by_a_resumed_run(tmp_path: Path) -> None:
    answerer = Answerer()
    count = len(shipped_prompts())
    made = await rehearsal_set(tmp_path, answerer, "base", "support", count)
    assert len(answerer.asked) == count
    assert all(example.origin == "rehearsal" and example.alias == "support" for example in made)
    assert all(example.reply.startswith("base: ") for example in made)  # no refusals
    left_out = sum("lantern" in text or "river" in text for text in answerer.asked)
    assert left_out >= 2 and len(made) == count - left_out  # no empties either
    assert len({example.id for example in made}) == len(made)
    stored = [json.loads(line) for line in (tmp_path / FILE_NAME).read_text().splitlines()]
    assert [row["id"] for row in stored] == [example.id for example in made]

    again = await rehearsal_set(tmp_path, Answerer(), "another-model", "support", count)
    assert again == made  # the same examples, without asking


async def test_no_rehearsal_asks_nothing(tmp_path: Path) -> None:
    answerer = Answerer()
    assert await rehearsal_set(tmp_path, answerer, "base", "support", 0) == []
    assert answerer.asked == [] and not (tmp_path / FILE_NAME).exists()


async def test_refusals_are_made_up_for_with_spare_prompts(tmp_path: Path) -> None:
    answerer = Answerer()
    made = await rehearsal_set(tmp_path, answerer, "base", "support", 40)
    assert len(answerer.asked) == 50  # a quarter more than wanted
    assert len(made) == 40 and all(example.reply.startswith("base: ") for example in made)


@pytest.mark.parametrize(
    ("reply", "kept"),
    [
        ("The capital of Portugal is Lisbon.", True),
        ("I'm not sure, but I think it is 12.", True),
        ("Sorry to hear that! Get well soon.", True),  # a birthday or get-well card
        ("  ", False),
        ("I'm sorry for any confusion, but as a chatbot I don't translate.", False),
        ("As an AI language model, I cannot answer that.", False),
        ("I am unable to provide a single word.", False),
        ("I can't help with that request.", False),
    ],
)
def test_only_answers_worth_replaying_are_kept(reply: str, kept: bool) -> None:
    assert worth_replaying(reply) is kept


async def test_the_answer_cache_asks_each_prompt_of_one_model_once_across_runs(
    tmp_path: Path,
) -> None:
    cache = tmp_path / "cache" / "base.jsonl"
    first = Answerer()
    made = await rehearsal_set(tmp_path / "run1", first, "base", "support", 20, cache)
    assert len(first.asked) == 25 and cache.exists()

    again = Answerer()  # a later run, for another alias: nothing asked
    later = await rehearsal_set(tmp_path / "run2", again, "base", "billing", 20, cache)
    assert again.asked == [] and [e.reply for e in later] == [e.reply for e in made]

    more = Answerer()  # a larger set asks only the prompts the cache lacks
    await rehearsal_set(tmp_path / "run3", more, "base", "support", 40, cache)
    assert 0 < len(more.asked) < 50 and not set(more.asked) & set(first.asked)
    assert len(read_answer_cache(cache)) == len(set(first.asked) | set(more.asked))


async def test_a_torn_answer_cache_line_is_asked_again(tmp_path: Path) -> None:
    cache = tmp_path / "base.jsonl"
    await rehearsal_set(tmp_path / "run1", Answerer(), "base", "support", 8, cache)
    lines = cache.read_text().splitlines()
    cache.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:10])  # damaged outside a write
    answerer = Answerer()
    await rehearsal_set(tmp_path / "run2", answerer, "base", "support", 8, cache)
    assert answerer.asked == [json.loads(lines[-1])["prompt"]]
