"""The gate's holdout in the forms users will meet it in.

A holdout question as it was served is one wording with one set of sources. A candidate can
beat the live version there and still fail the next user, who words the question another
way, or whose retrieval misses. So the gate asks every held-out fact up to three ways
(``eval_holdout_forms``):

* ``served``: the conversation as it was served, the same sources for both sides;
* ``reworded``: another wording of the question (the base model's paraphrase when it keeps
  every name and number, else a templated rewording, ``trainer/recipe.py``), grounded afresh
  as the alias serves it today when it answers with retrieval;
* ``closed_book``: the reworded question without sources, for an alias with retrieval: does
  the model carry the fact itself when retrieval misses it?

The forms of one fact are scored as separate items and pooled into one accuracy, and each
form's accuracy is reported beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

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


def form_of(example_id: str) -> str:
    """The form a scored holdout item was asked in (``served`` for one as it was stored)."""
    _, separator, form = example_id.rpartition(_SEPARATOR)
    return form if separator and form in FORMS else "served"


async def holdout_forms(
    holdout: Sequence[Example],
    forms: Sequence[str],
    ground: Ground | None,
    ask: Ask | None,
) -> list[Example]:
    """Every holdout example in each of ``forms``; ``ground`` is None for an alias without
    retrieval (its reworded question is already closed book)."""
    wanted = [form for form in FORMS if form in forms]
    out = list(holdout) if "served" in wanted else []
    if not {"reworded", "closed_book"} & set(wanted) or not holdout:
        return out
    wordings = await reworded_questions(holdout, ask)
    for example in holdout:
        bare = with_question(example, wordings[example.id], _form_id(example, "reworded"))
        if "reworded" in wanted:
            out.append(bare if ground is None else await ground(example.alias, bare))
        if "closed_book" in wanted and ground is not None:
            out.append(replace(bare, id=_form_id(example, "closed_book")))
    return out


async def reworded_questions(examples: Sequence[Example], ask: Ask | None) -> dict[str, str]:
    """One new wording per example: the model's when it keeps the fact, else a template's."""
    wordings = {example.id: _templated(example) for example in examples}
    if ask is None:
        return wordings
    answers = await asked_paraphrases([example.question for example in examples], ask)
    for example, candidate in zip(examples, answers, strict=True):
        if keeps_the_fact(example.question, candidate, [example.question]):
            wordings[example.id] = candidate
    return wordings


def _templated(example: Example) -> str:
    found = rewrites(example.question, 1, example.id + _SEPARATOR)
    return found[0] if found else example.question


def _form_id(example: Example, form: str) -> str:
    return f"{example.id}{_SEPARATOR}{form}"
