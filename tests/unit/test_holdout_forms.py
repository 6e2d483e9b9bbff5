"""The gate's holdout forms (trainer/holdout_forms.py): each held-out question as served,
reworded and grounded afresh, and reworded closed book; pooled, with each form's accuracy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pytest

from core.sections import GatePolicy
from retrieval.grounding import asked_question, ground_messages, sources_in
from trainer.dataset import Example
from trainer.evaluate import _accuracy_by_form
from trainer.holdout_forms import (
    FORMS,
    GATE_OPENINGS,
    form_of,
    holdout_forms,
    reworded_questions,
)
from trainer.recipe import TRAINING_OPENINGS

QUESTION = "How many days do I have to return a lamp to Zorvex Goods?"
SERVED_SOURCE = "An old source the conversation was served with."
TODAY_SOURCE = "Zorvex Goods accepts returns within 38 days of delivery."


def _example(number: int, question: str = QUESTION) -> Example:
    messages = ground_messages([{"role": "user", "content": question}], [SERVED_SOURCE])
    return Example(f"c{number}", "support", messages, "Within 38 days.", "correction",
                   "correction")  # fmt: skip


async def _ground(alias: str, example: Example) -> Example:
    return replace(example, messages=ground_messages(example.messages, [TODAY_SOURCE]))


def _asker(answer: str) -> tuple[list[str], object]:
    asked: list[str] = []

    async def ask(prompts: Sequence[str]) -> list[str]:
        asked.extend(prompts)
        return [answer] * len(prompts)

    return asked, ask


async def test_every_question_is_asked_served_reworded_and_closed_book() -> None:
    holdout = [_example(1), _example(2, "What does shipping to Brelk cost at Zorvex Goods?")]
    asked, ask = _asker("nonsense")  # refused: not a question that keeps the fact
    out = await holdout_forms(holdout, FORMS, _ground, ask)  # type: ignore[arg-type]
    assert len(asked) == 2
    assert [form_of(e.id) for e in out] == ["served"] * 2 + ["reworded", "closed_book"] * 2
    assert out[:2] == holdout  # as served, sources and all
    reworded, closed = out[2], out[3]
    assert sources_in(reworded.messages[-1]["content"]) == [TODAY_SOURCE]  # grounded afresh
    assert sources_in(closed.messages[-1]["content"]) == []
    assert reworded.question == closed.question != QUESTION  # a templated rewording
    assert "Zorvex Goods" in reworded.question and "return" in reworded.question.lower()
    assert all(e.reply == "Within 38 days." for e in out)
    assert len({e.id for e in out}) == len(out)


async def test_a_faithful_model_paraphrase_is_the_rewording() -> None:
    paraphrase = "For how long can a lamp go back to Zorvex Goods?"
    _, ask = _asker(paraphrase)
    wordings = await reworded_questions([_example(1)], ask)  # type: ignore[arg-type]
    assert wordings == {"c1": [paraphrase]}
    _, invents = _asker("Is it 30 days at Zorvex Goods?")  # a number the question lacks
    wordings = await reworded_questions([_example(1)], invents)  # type: ignore[arg-type]
    assert wordings["c1"][0] not in (QUESTION, "Is it 30 days at Zorvex Goods?")


async def test_several_rewordings_are_items_of_the_reworded_form() -> None:
    """The model's faithful paraphrase first, then distinct templated wordings, each grounded
    afresh and scored as its own item; closed book asks the first wording only."""
    paraphrase = "For how long can a lamp go back to Zorvex Goods?"
    _, ask = _asker(paraphrase)
    out = await holdout_forms([_example(1)], FORMS, _ground, ask, rewordings=3)  # type: ignore[arg-type]
    assert [form_of(e.id) for e in out] == ["served", "reworded", "reworded", "reworded",
                                            "closed_book"]  # fmt: skip
    reworded = out[1:4]
    assert reworded[0].question == paraphrase == out[4].question
    assert len({e.question for e in reworded} | {QUESTION}) == 4  # all new, all different
    assert all("Zorvex Goods" in e.question for e in reworded)
    assert all(sources_in(e.messages[-1]["content"]) == [TODAY_SOURCE] for e in reworded)
    assert out[1].id == "c1~gate-reworded"  # the first keeps the id it always had
    assert len({e.id for e in out}) == len(out)
    _, refused = _asker("nonsense")
    wordings = await reworded_questions([_example(1)], refused, 3)  # type: ignore[arg-type]
    assert len(set(wordings["c1"])) == 3 and QUESTION not in wordings["c1"]


def test_the_gate_rewords_with_openings_training_never_used() -> None:
    """Otherwise a candidate would gain on the gate's wordings for having trained on them."""
    assert set(GATE_OPENINGS) & set(TRAINING_OPENINGS) == {"{q}"}


async def test_an_alias_without_retrieval_has_no_separate_closed_book_form() -> None:
    out = await holdout_forms([_example(1)], FORMS, None, None)
    assert [form_of(e.id) for e in out] == ["served", "reworded"]
    assert sources_in(out[1].messages[-1]["content"]) == []
    assert asked_question(out[1].messages[-1]["content"]) != QUESTION


async def test_only_the_configured_forms_are_asked() -> None:
    holdout = [_example(1)]
    assert await holdout_forms(holdout, ("served",), _ground, None) == holdout
    out = await holdout_forms(holdout, ("closed_book",), _ground, None)
    assert [form_of(e.id) for e in out] == ["closed_book"]
    assert await holdout_forms([], FORMS, _ground, None) == []


def test_accuracy_is_reported_per_form() -> None:
    items = [{"form": "served", "correct": True}, {"form": "served", "correct": False},
             {"form": "closed_book", "correct": False}]  # fmt: skip
    assert _accuracy_by_form(items) == {"served": 0.5, "closed_book": 0.0}


def test_the_forms_setting_names_a_bad_form() -> None:
    assert GatePolicy(holdout_forms="served, reworded").holdout_forms == ("served", "reworded")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"holdout forms must be some of .*paraphrase"):
        GatePolicy(holdout_forms="served,paraphrase")  # type: ignore[arg-type]
