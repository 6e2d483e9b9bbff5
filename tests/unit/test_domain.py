"""The generated domains that bench/adaptation.py measures the loop on: new per seed, the
same for one seed, facts that answer only their own questions, and held-out paraphrases that
share little with what users ask."""

from __future__ import annotations

import pytest

from retrieval.grounding import content_words
from tests.support import session_seed
from trainer.demo.domain import generate_domain
from trainer.scoring import normalize

SEED = session_seed()  # a new domain every run; in the assertion messages


def test_a_generated_domain_is_new_per_seed_and_the_same_for_one() -> None:
    domain, again, other = generate_domain(SEED), generate_domain(SEED), generate_domain(SEED + 1)
    assert domain == again, SEED
    assert domain.company != other.company, SEED
    assert len(domain.facts) == 20 and len(domain.questions()) == 40
    assert len(domain.paraphrases()) == 20 and len(domain.documents()) == 20
    keys = [fact.key for fact in domain.facts]
    assert len(set(keys)) == len(keys), SEED  # no fact's answer answers another


def test_facts_are_in_their_document_and_paraphrases_are_far_from_the_questions() -> None:
    for seed in (SEED, *range(100)):
        _check_facts(seed)


def _check_facts(seed: int) -> None:
    domain = generate_domain(seed, 24)
    for fact in domain.facts:
        assert normalize(fact.key) in normalize(fact.statement), (seed, fact.id)
        assert normalize(fact.key) in normalize(fact.answer), (seed, fact.id)
        # The held-out paraphrase shares at most two words with what users asked, names aside.
        names = content_words(domain.company + " " + fact.statement)
        asked = content_words(" ".join(fact.questions))
        shared = (content_words(fact.paraphrase) & asked) - names
        assert len(shared) <= 2, (seed, fact.id, shared)


def test_the_number_of_facts_is_bounded() -> None:
    with pytest.raises(ValueError, match="facts"):
        generate_domain(SEED, 0)
    with pytest.raises(ValueError, match="facts"):
        generate_domain(SEED, 25)
