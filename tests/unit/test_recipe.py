"""The training recipe (rewordings, closed book, grounded with a citation), the generated
domains it is measured on, and the schedule sized to the data."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace

import pytest

from retrieval.grounding import asked_question, content_words, ground_messages, sources_in
from tests.support import session_seed
from trainer.dataset import Example
from trainer.demo.domain import generate_domain
from trainer.qlora import MAX_AUTO_EPOCHS, TrainConfig, _Batches, epochs_for, total_steps
from trainer.recipe import RecipeConfig, as_trained, cite, expand, keeps_the_fact, rewrites
from trainer.scoring import normalize

SEED = session_seed()  # a new domain every run; in the assertion messages


def _example(number: int, question: str, reply: str) -> Example:
    return Example(f"c{number}", "support", [{"role": "user", "content": question}], reply,
                   "correction", "correction")  # fmt: skip


SOURCES = {
    "returns": "Returns are accepted within 38 days of delivery.",
    "warranty": "Every Zorvex lamp carries a 3-year warranty.",
}


async def _ground(alias: str, example: Example) -> Example:
    question = example.messages[-1]["content"]
    order = ["warranty", "returns"] if "warranty" in question else ["returns", "warranty"]
    return replace(example, messages=ground_messages(example.messages, [SOURCES[k] for k in order]))


async def _ask(prompts: Sequence[str]) -> list[str]:
    # A model that rewrites well once, then loses a name, then invents a number.
    answers = ["For how long can I send a product back to Zorvex Goods?",
               "How long can I send it back?", "Is it 30 days at Zorvex Goods?"]  # fmt: skip
    return answers[: len(prompts)]


async def test_every_correction_becomes_closed_book_and_grounded_examples() -> None:
    question = "How many days do I have to return something to Zorvex Goods?"
    reply = "You can return it within 38 days of delivery."
    out = await expand([_example(1, question, reply)], RecipeConfig(2, 3, 2), _ground, _ask)
    closed = [e for e in out.examples if not sources_in(e.messages[-1]["content"])]
    grounded = [e for e in out.examples if sources_in(e.messages[-1]["content"])]
    assert out.paraphrases_asked == 3 and out.paraphrases_kept == 1  # only the faithful one
    assert len(grounded) == 4 and len(closed) == 2  # 1 + 2 rewrites + 1 paraphrase wordings
    assert [e.reply for e in closed] == [reply, reply]
    assert {e.reply for e in grounded} == {"You can return it within 38 days of delivery [1]."}
    asked = [asked_question(e.messages[-1]["content"]) for e in grounded]
    assert asked[0] == question and len(set(asked)) == 4
    assert "For how long can I send a product back to Zorvex Goods?" in asked
    assert len({e.id for e in out.examples}) == len(out.examples)


async def test_validation_is_watched_as_it_is_trained_one_wording_each() -> None:
    # Served with the wrong source first and no citation: grounded afresh, the reply cites
    # the source that states it, and no rewording is added.
    served = _example(1, "What is the warranty on the Zorvex lamp?", "It has a 3-year warranty.")
    served = replace(served, messages=ground_messages(served.messages, [SOURCES["returns"]]))
    [watched] = await as_trained([served], _ground)
    assert asked_question(watched.messages[-1]["content"]) == served.question
    assert sources_in(watched.messages[-1]["content"]) == [SOURCES["warranty"], SOURCES["returns"]]
    assert watched.reply == "It has a 3-year warranty [1]."
    [closed] = await as_trained([served], None)  # an alias without retrieval
    assert not sources_in(closed.messages[-1]["content"]) and closed.reply == served.reply


async def test_without_retrieval_every_wording_is_closed_book() -> None:
    example = _example(1, "What is the warranty on the Zorvex lamp?", "3 years [2].")
    out = await expand([example], RecipeConfig(2, 0, 1), None, None)
    assert len(out.examples) == 3 and out.grounded == 0
    assert {e.reply for e in out.examples} == {"3 years."}  # the old citation is dropped


async def test_by_default_an_alias_with_retrieval_trains_grounded_examples_only() -> None:
    # Closed-book copies beside the grounded ones lowered held-out paraphrases with
    # retrieval on generated domains (docs/training.md, "The recipe").
    example = _example(1, "How many days do I have to return a Zorvex lamp?",
                       "You can return it within 38 days of delivery.")  # fmt: skip
    grounded = await expand([example], RecipeConfig(), _ground, None)
    assert grounded.examples and all(
        sources_in(e.messages[-1]["content"]) for e in grounded.examples
    )
    closed = await expand([example], RecipeConfig(), None, None)
    assert closed.examples and not any(
        sources_in(e.messages[-1]["content"]) for e in closed.examples
    )
    assert len(closed.examples) == len(grounded.examples) == 1 + RecipeConfig().rewrites


def test_the_reply_cites_the_source_that_supports_it() -> None:
    sources = list(SOURCES.values())
    assert cite("The lamp has a 3-year warranty.", sources) == (
        "The lamp has a 3-year warranty [2].", True)  # fmt: skip
    assert cite("Our office cat is called Mo.", sources) == ("Our office cat is called Mo.", False)
    assert cite("Anything", []) == ("Anything", False)


def test_a_single_source_is_cited_first() -> None:
    """Nothing to choose among, so the marker opens the answer, where it cannot stand in
    for the answer's last words, and a colon after it asks for the answer (docs/training.md,
    "The recipe")."""
    warranty = [SOURCES["warranty"]]
    assert cite("The lamp has a 3-year warranty.", warranty) == (
        "Source [1]: The lamp has a 3-year warranty.", True)  # fmt: skip
    assert cite("Our office cat is called Mo.", warranty) == ("Our office cat is called Mo.", False)


def test_rewrites_keep_the_question_and_are_stable() -> None:
    question = "What is the price of the Zorvex lamp?"
    first = rewrites(question, 3, "c1")
    assert first == rewrites(question, 3, "c1") and len(set(first)) == 3
    assert all("Zorvex lamp" in text and text != question for text in first)


def test_a_paraphrase_must_keep_names_and_numbers_and_invent_none() -> None:
    original = "How long is the warranty on the Zorvex 3 lamp?"
    assert keeps_the_fact(original, "For how many years is the Zorvex 3 lamp covered?", [])
    assert not keeps_the_fact(original, "For how many years is the lamp covered?", [])
    assert not keeps_the_fact(original, "Is the Zorvex 3 lamp covered for 5 years?", [])
    assert not keeps_the_fact(original, "The Zorvex 3 lamp has a warranty.", [])  # no question
    assert not keeps_the_fact(original, original.upper().lower(), [original])
    # "I" is capitalised but names nothing: a paraphrase may drop it.
    asked = "How long do I have to return a lamp to Zorvex Goods?"
    assert keeps_the_fact(asked, "For how long can a lamp go back to Zorvex Goods?", [])


def test_a_generated_domain_is_new_per_seed_and_the_same_for_one() -> None:
    domain, again, other = generate_domain(SEED), generate_domain(SEED), generate_domain(SEED + 1)
    assert domain == again, SEED
    assert domain.company != other.company, SEED
    assert len(domain.facts) == 20 and len(domain.questions()) == 40
    keys = [fact.key for fact in domain.facts]
    assert len(set(keys)) == len(keys), SEED  # no fact's answer answers another
    for fact in domain.facts:
        assert normalize(fact.key) in normalize(fact.statement), SEED
        assert normalize(fact.key) in normalize(fact.answer), SEED
        asked = content_words(" ".join(fact.questions))
        # The held-out paraphrase shares little with what users asked (names aside).
        names = content_words(domain.company + " " + fact.statement)
        shared = (content_words(fact.paraphrase) & asked) - names
        assert len(shared) <= 2, (SEED, fact.id, shared)


@pytest.mark.parametrize(("examples", "epochs"), [(10, 4.0), (40, 4.0), (80, 2.0), (2000, 1.0)])
def test_the_schedule_is_sized_to_the_data(examples: int, epochs: float) -> None:
    assert epochs_for(TrainConfig(epochs=0), examples) == epochs <= MAX_AUTO_EPOCHS
    assert epochs_for(TrainConfig(epochs=1.5), examples) == 1.5
    assert total_steps(TrainConfig(max_steps=7), examples) == 7


def test_batches_group_examples_of_similar_length() -> None:
    """Closed-book rows (short) and grounded rows (long), mixed as the recipe mixes them:
    grouped by length, a run pads far less, and still sees every row once an epoch, in a
    fixed order per seed and epoch (a resumed run continues where it stopped)."""
    rng = random.Random(SEED)
    rows = [
        ([1] * rng.choice([rng.randint(40, 90), rng.randint(300, 420)]), []) for _ in range(150)
    ]
    batches = _Batches(rows, 4, seed=SEED)  # type: ignore[arg-type]
    epoch = batches.epoch(1)
    assert len(epoch) == len(batches) == 38
    assert sorted(id(row) for batch in epoch for row in batch) == sorted(map(id, rows))
    assert [[id(row) for row in batch] for batch in batches.epoch(1)] == [
        [id(row) for row in batch] for batch in epoch
    ]

    def padded(epoch: list[list[tuple[list[int], list[int]]]]) -> int:
        return sum(len(batch) * max(len(ids) for ids, _ in batch) for batch in epoch)

    order = list(range(len(rows)))
    random.Random(SEED).shuffle(order)
    unsorted = [[rows[i] for i in order[start : start + 4]] for start in range(0, 150, 4)]
    assert padded(epoch) < 0.8 * padded(unsorted), SEED
