"""How an answer is scored against its reference, and how two versions are compared.

An answer is **correct** when, after normalization (case, punctuation, articles, citation
markers), it equals the reference, contains it, or carries the reference's key facts and
means the same:

* if the reference has numbers, every one of them appears in the answer and the embedding
  similarity is at least ``0.5``; or every quantity of the reference (a number with the word
  after it: "8 percent", "72 working days") appears in the answer and the similarity is at
  least ``0.3``. A right answer in other words ("8% off for students" for "Students get 8
  percent off") often embeds below 0.5 (0.36 there), and a number with its unit is a fact
  of its own. A number that ends the reference ("founded in 1991.") is its own quantity and
  matches the number anywhere in the answer;
* otherwise at least 60% of the reference's content words appear and the similarity is at
  least ``0.6``. Given the question, what it did not already say is the fact: the names
  among those words must all appear (a name has no synonym), else 60% of the words.
  "The CEO of Bropuresk Works is Anselm Noupegriox." for "Who is the CEO of Bropuresk
  Works?" wants "Anselm Noupegriox": an answer that restated the question around a wrong
  name ("The CEO of Bropuresk Works is Elena Brosen") carried 3 of the 5 words and passed.

Numbers carry most facts in support answers (days, prices, years), and a wrong number is the
typical wrong answer, so they are required exactly. Similarity (all-MiniLM-L6-v2 cosine)
guards against an answer that lists the right words in a wrong statement.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from retrieval.grounding import content_words

# Embeds texts as unit vectors (rows).
Embed = Callable[[Sequence[str]], np.ndarray]

_CITATION = re.compile(r"\[\d{1,3}(?:\s*,\s*\d{1,3})*\]")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_PUNCTUATION = re.compile(r"[^\w\s]")
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
# Capitalised words; not the opening word, and not acronyms ("CEO" has synonyms).
_NAME = re.compile(r"\b[A-Z][a-z][\w'-]*")
NUMBER_SIMILARITY = 0.5
QUANTITY_SIMILARITY = 0.3
WORDS_SIMILARITY = 0.6
WORDS_RECALL = 0.6


def normalize(text: str) -> str:
    text = _CITATION.sub(" ", text.lower()).replace("%", " percent ")
    text = _THOUSANDS.sub("", text)  # "1,890" is 1890
    text = _PUNCTUATION.sub(" ", text)
    return " ".join(_ARTICLES.sub(" ", text).split())


def numbers_in(text: str) -> set[str]:
    """Numbers with thousands separators dropped: "1,890" and "1890" are the same number.
    Citation markers ("[1]") are not numbers of the answer."""
    found = set()
    for match in _NUMBER.findall(_CITATION.sub(" ", text)):
        value = re.sub(r",(?=\d{3}\b)", "", match)
        found.add(value.rstrip(".,"))
    return found


def quantities(normalized: str) -> set[str]:
    """Each number of a normalized text with the word after it (its unit, when it has one)."""
    words = normalized.split()
    return {f"{word} {words[i + 1]}" if i + 1 < len(words) else word
            for i, word in enumerate(words) if _NUMBER.fullmatch(word)}  # fmt: skip


def _carries_quantities(said: str, wanted: str) -> bool:
    """Every quantity of the reference is in the answer. A number that ends the reference
    has no unit to match ("founded in 1991."), so the bare number anywhere in the answer
    carries it; the answer need not end there too ("founded in 1991 by engineers")."""
    numbers = {word for word in said.split() if _NUMBER.fullmatch(word)}
    return quantities(wanted) <= quantities(said) | numbers


@dataclass(frozen=True)
class AnswerScore:
    exact: bool
    contains: bool
    key_recall: float
    similarity: float
    correct: bool


def score_answer(answer: str, reference: str, similarity: float, question: str = "") -> AnswerScore:
    said, wanted = normalize(answer), normalize(reference)
    exact = bool(wanted) and said == wanted
    contains = bool(wanted) and wanted in said
    numbers = numbers_in(reference)
    if numbers:
        recall = len(numbers & numbers_in(answer)) / len(numbers)
        units = _carries_quantities(said, wanted)
        floor = QUANTITY_SIMILARITY if units else NUMBER_SIMILARITY
        facts = recall == 1.0 and similarity >= floor
    else:
        recall, enough = _word_recall(answer, reference, question)
        facts = enough and similarity >= WORDS_SIMILARITY
    return AnswerScore(
        exact, contains, round(recall, 4), round(similarity, 4), exact or contains or facts
    )


def _word_recall(answer: str, reference: str, question: str) -> tuple[float, bool]:
    """The share of the reference's words the answer carries, and whether that is enough:
    without the question, 60% of them; with it, every name it did not say, or 60% of its
    other words when it said every name."""
    said, stated = content_words(answer), content_words(reference)
    words = stated - content_words(question) or stated
    recall = len(words & said) / len(words) if words else 0.0
    names = words & content_words(" ".join(_NAME.findall(reference.split(" ", 1)[-1])))
    if question and names:
        return recall, names <= said
    return recall, recall >= WORDS_RECALL


def score_answers(
    answers: Sequence[str],
    references: Sequence[str],
    embed: Embed,
    questions: Sequence[str] | None = None,
) -> list[AnswerScore]:
    """Each answer against its reference (and question, when given), the similarity
    embedded in one batch."""
    if not answers:
        return []
    vectors = embed([*answers, *references])
    similarities = np.sum(vectors[: len(answers)] * vectors[len(answers) :], axis=1)
    asked = questions if questions is not None else [""] * len(answers)
    return [
        score_answer(answer, reference, float(similarity), question)
        for answer, reference, similarity, question in zip(
            answers, references, similarities, asked, strict=True
        )
    ]


def accuracy(
    answers: Sequence[str],
    references: Sequence[str],
    embed: Embed,
    questions: Sequence[str] | None = None,
) -> float:
    scores = score_answers(answers, references, embed, questions)
    return sum(score.correct for score in scores) / len(scores) if scores else 0.0


_SMALL_NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                  "nine", "ten", "eleven", "twelve")  # fmt: skip
_NUMBER_WORDS = {word: str(value) for value, word in enumerate(_SMALL_NUMBERS)}


def probe_passed(answer: str, expect: str | Sequence[str]) -> bool:
    """A general-ability probe passes when the expected words (or one of the right answers
    given) appear in the answer, as whole words; small numbers may be spelt out ("eight
    legs" answers "8")."""
    said = " ".join(_NUMBER_WORDS.get(word, word) for word in normalize(answer).split())
    accepted = [expect] if isinstance(expect, str) else expect
    return any((wanted := normalize(right)) and f" {wanted} " in f" {said} " for right in accepted)
