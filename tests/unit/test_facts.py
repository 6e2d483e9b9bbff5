"""Which examples state one fact (trainer/facts.py), and the split by fact that it gives
(trainer/dataset.py): no fact is both trained on and held out, on freshly generated domains."""

from __future__ import annotations

import itertools

import pytest

from retrieval.embeddings import Embedder
from tests.support import session_seed
from trainer.dataset import CurationLimits, Example, curate
from trainer.demo.domain import generate_domain
from trainer.facts import fact_groups

SEED = session_seed()  # new domains every run; in the assertion messages
DOMAINS = 6


@pytest.fixture(scope="module")
def embed() -> Embedder:
    return Embedder()


def _first_sentence(text: str) -> str:
    return text.split(". ")[0]


def test_two_wordings_of_a_fact_are_one_fact_and_other_facts_are_not(embed: Embedder) -> None:
    """Each fact's reference answer against its document's sentence (two wordings of one
    fact, as two users' corrections are), across the facts of a domain."""
    merged_apart = []
    merged_together = 0
    pairs = 0
    for seed in range(SEED, SEED + DOMAINS):
        facts = generate_domain(seed).facts
        replies = [fact.answer for fact in facts] + [_first_sentence(f.statement) for f in facts]
        groups = fact_groups(replies, embed.embed(replies))
        count = len(facts)
        merged_apart += [
            (seed, facts[index].answer, replies[count + index])
            for index in range(count)
            if groups[index] != groups[count + index]
        ]
        for first, second in itertools.combinations(range(count), 2):
            pairs += 1
            merged_together += groups[first] == groups[second]
    assert not merged_apart, merged_apart
    # Measured: none of 57,000 pairs of different facts joined (300 domains); 261 before a
    # company's app and mascot were told apart. Joining only makes a group larger.
    assert merged_together <= 0.01 * pairs, (SEED, merged_together, pairs)


def test_two_facts_about_one_company_are_two_facts(embed: Embedder) -> None:
    """The company's name is in too few replies to be common, and the app's and the mascot's
    sentences share it and most of their words; each names its own thing (CI's seed 2882)."""
    replies = [
        "The app is called Stoufil.",
        "The Daekun Outfitters mobile app is called Stoufil",
        "The mascot is a fox named Rigrar.",
        "The Daekun Outfitters mascot is a fox named Rigrar",
        "The CEO of Daekun Outfitters is Ines Braebumio.",
        "The chief executive of Daekun Outfitters is Ines Braebumio",
        *(f"Returns are accepted within {days} days." for days in range(10, 160, 5)),
    ]
    groups = fact_groups(replies, embed.embed(replies))
    assert groups[0] == groups[1] and groups[2] == groups[3] and groups[4] == groups[5]
    assert len({groups[0], groups[2], groups[4]}) == 3, groups


def test_equal_replies_are_one_fact_without_an_embedder() -> None:
    groups = fact_groups(["Returns within 30 days.", "returns within 30 days", "Open daily."], None)
    assert groups[0] == groups[1] != groups[2]


def _examples(seed: int) -> list[Example]:
    """Two users per fact, each asking one of its questions and correcting it in their own
    words: the reference answer, and the document's sentence."""
    examples = []
    for number, fact in enumerate(generate_domain(seed).facts):
        for side, (question, reply) in enumerate(
            zip(fact.questions, (fact.answer, _first_sentence(fact.statement)), strict=True)
        ):
            examples.append(
                Example(
                    id=f"{fact.id}~{side}~{number}",
                    alias="support",
                    messages=[{"role": "user", "content": question}],
                    reply=reply,
                    origin="correction",
                    stratum="correction",
                )
            )
    return examples


def _fact_of(example: Example) -> str:
    return example.id.split("~")[0]


def test_no_fact_is_both_trained_on_and_held_out(embed: Embedder) -> None:
    limits = CurationLimits(min_train_examples=1, holdout_fraction=0.25)
    for seed in range(SEED, SEED + DOMAINS):
        curated = curate(_examples(seed), [], limits, lambda example: 10, embed.embed)
        held = {_fact_of(example) for example in curated.holdout}
        trained = {_fact_of(example) for example in [*curated.train, *curated.validation]}
        assert held and trained, seed
        assert not held & trained, (seed, held & trained)
        assert 0.15 <= len(curated.holdout) / (2 * len(held | trained)) <= 0.35, seed


def test_new_examples_follow_their_fact_to_its_side(embed: Embedder) -> None:
    """A fact already held out keeps its new examples in the holdout; one trained on keeps
    them in training. The second wordings can chain facts the first split kept apart (the
    company's name in "The Sabrask Goods mobile app is called Thuses" and "The Sabrask Goods
    mascot is a fox named Kataelu"): before each new example followed its nearest reply,
    10 of 60 domains put a trained fact in the holdout."""
    limits = CurationLimits(min_train_examples=1, holdout_fraction=0.25)
    for seed in range(SEED, SEED + DOMAINS):
        examples = _examples(seed)
        first_half = [example for example in examples if example.id.split("~")[1] == "0"]
        first = curate(first_half, [], limits, lambda example: 10, embed.embed)
        trained_ids = [example.id for example in [*first.train, *first.validation]]
        later = curate(
            examples, first.holdout, limits, lambda example: 10, embed.embed, trained=trained_ids
        )
        held = {_fact_of(example) for example in later.holdout}
        trained = {_fact_of(example) for example in [*later.train, *later.validation]}
        assert held == {_fact_of(example) for example in first.holdout}, seed
        assert not held & trained, (seed, held & trained)
