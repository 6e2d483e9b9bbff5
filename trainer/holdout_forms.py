"""The gate's holdout in the forms users will meet it in.

A holdout question as it was served is one wording with one set of sources. A candidate can
beat the live version there and still fail the next user, who words the question another
way, or whose retrieval misses. So the gate asks every held-out fact up to three ways
(``eval_holdout_forms``):

* ``served``: the conversation as it was served, the same sources for both sides;
* ``reworded``: ``eval_rewordings`` other wordings of the question (the base model's
  paraphrase when it keeps every name and number, then templated rewordings with openings
  the recipe never trains with), each grounded afresh as the alias serves it today when it
  answers with retrieval;
* ``closed_book``: the first rewording without sources, for an alias with retrieval: does
  the model carry the fact itself when retrieval misses it?

The forms of one fact are scored as separate items and pooled into one accuracy, and each
form's accuracy is reported beside it. Several rewordings, because a 135M base's misses
with the right source in hand are mostly wording-dependent non-answers, and a holdout of a
few facts asked one way each left a verdict to one or two questions (docs/training.md).
"""

from __future__ import annotations

from collections.abc import Sequence

from core.sections import HOLDOUT_FORMS
from trainer.dataset import Example
from trainer.recipe import (
    Ask,
    Ground,
    asked_paraphrases,
    keeps_the_fact,
    rewrites,
    with_question,
)

FORMS = HOLDOUT_FORMS
_SEPARATOR = "~gate-"
# The gate's own openings: the recipe trains with none of them but the bare question
# (``recipe.TRAINING_OPENINGS``), so a candidate gains on them by answering a held-out
# question whatever its opening, not by having met the opening in training.
GATE_OPENINGS = (
    "{q}",
    "Hello, {q}",
    "Sorry to bother you. {q}",
    "One more thing: {q}",
    "{q} I couldn't find it anywhere.",
    "Hey there. {q}",
    "{q} Thank you in advance.",
)


def form_of(example_id: str) -> str:
    """The form a scored holdout item was asked in (``served`` for one as it was stored)."""
    _, separator, form = example_id.rpartition(_SEPARATOR)
    return form if separator and form in FORMS else "served"


async def holdout_forms(
    holdout: Sequence[Example],
    forms: Sequence[str],
    ground: Ground | None,
    ask: Ask | None,
    rewordings: int = 1,
) -> list[Example]:
    """Every holdout example in each of ``forms``, ``rewordings`` wordings of it in the
    reworded form; ``ground`` is None for an alias without retrieval (its reworded question
    is already closed book)."""
    wanted = [form for form in FORMS if form in forms]
    out = list(holdout) if "served" in wanted else []
    if not {"reworded", "closed_book"} & set(wanted) or not holdout:
        return out
    wordings = await reworded_questions(holdout, ask, rewordings)
    for example in holdout:
        questions = wordings[example.id]
        if "reworded" in wanted:
            for number, question in enumerate(questions):
                bare = with_question(example, question, _form_id(example, "reworded", number))
                out.append(bare if ground is None else await ground(example.alias, bare))
        if "closed_book" in wanted and ground is not None:
            out.append(with_question(example, questions[0], _form_id(example, "closed_book")))
    return out


async def reworded_questions(
    examples: Sequence[Example], ask: Ask | None, count: int = 1
) -> dict[str, list[str]]:
    """``count`` new wordings per example: the model's first when it keeps the fact, then
    templated ones."""
    wordings = {example.id: _templated(example, count) for example in examples}
    if ask is None:
        return wordings
    answers = await asked_paraphrases([example.question for example in examples], ask)
    for example, candidate in zip(examples, answers, strict=True):
        templated = wordings[example.id]
        if keeps_the_fact(example.question, candidate, [example.question, *templated]):
            wordings[example.id] = [candidate, *templated][:count]
    return wordings


def _templated(example: Example, count: int) -> list[str]:
    found = rewrites(example.question, count, example.id + _SEPARATOR, GATE_OPENINGS)
    return found or [example.question]


def _form_id(example: Example, form: str, wording: int = 0) -> str:
    """The first wording keeps the plain form id, as scored before there were several."""
    return f"{example.id}{f'~w{wording}' if wording else ''}{_SEPARATOR}{form}"
