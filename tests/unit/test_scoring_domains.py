"""The scorer (trainer/scoring.py) on freshly generated domains, with the questions asked:
a right answer in other words is not lost to the question, another company's answer to the
same question fails."""

from __future__ import annotations

import pytest

from retrieval.embeddings import Embedder
from tests.support import session_seed
from trainer.demo.domain import generate_domain
from trainer.scoring import score_answers

SEED = session_seed()  # new domains every run; in the assertion messages
DOMAINS = 6


@pytest.fixture(scope="module")
def embed() -> Embedder:
    return Embedder()


def test_the_question_never_turns_a_right_answer_wrong(embed: Embedder) -> None:
    """The document's sentence, a right answer in other words, against each question of its
    fact: whatever the scorer accepts without the question it accepts with it. (Not every
    one passes either way: a document whose filler sentence dilutes the similarity under 0.6
    fails both, as "All orders ship from the Degrisk Makers warehouse in Greprom. Degrisk
    Makers updates this page ..." did at 0.55.)"""
    answers, references, questions = [], [], []
    for seed in range(SEED, SEED + DOMAINS):
        for fact in generate_domain(seed).facts:
            for question in (*fact.questions, fact.paraphrase):
                answers.append(fact.statement)
                references.append(fact.answer)
                questions.append(question)
    asked = score_answers(answers, references, embed.embed, questions)
    unasked = score_answers(answers, references, embed.embed)
    lost = [
        (q, a) for q, a, with_q, without in zip(questions, answers, asked, unasked, strict=True)
        if without.correct and not with_q.correct
    ]  # fmt: skip
    assert not lost, f"seeds {SEED}+{DOMAINS}: {lost[:3]}"
    assert sum(score.correct for score in asked) >= 0.9 * len(asked), f"seeds {SEED}+{DOMAINS}"


def test_another_companys_answer_to_the_same_question_is_wrong(embed: Embedder) -> None:
    """Same sentence, other names and numbers; one whose key was drawn alike (the same
    number of days) is right and left out. Measured over 30 domains (2,160 answers): 27
    passed, all with the key drawn alike; without the question 174 did, wrong names around
    the question's own words."""
    answers, references, questions, same_number = [], [], [], []
    for seed in range(SEED, SEED + DOMAINS):
        ours, theirs = generate_domain(seed, 24), generate_domain(seed + 10_000, 24)
        other = {fact.id: fact for fact in theirs.facts}
        for fact in ours.facts:
            wrong = other[fact.id].statement.replace(theirs.company, ours.company)
            alike = other[fact.id].key.replace(theirs.company, ours.company) == fact.key
            for question in (*fact.questions, fact.paraphrase):
                answers.append(wrong)
                references.append(fact.answer)
                questions.append(question)
                same_number.append(alike)
    scores = score_answers(answers, references, embed.embed, questions)
    accepted = [
        (q, a) for q, a, s, alike in zip(questions, answers, scores, same_number, strict=True)
        if s.correct and not alike
    ]  # fmt: skip
    assert len(accepted) <= len(answers) // 100, f"seeds {SEED}+{DOMAINS}: {accepted[:3]}"
