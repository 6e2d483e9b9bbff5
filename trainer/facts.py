"""Which examples state the same fact, so that no fact is both trained on and held out.

Two users who correct the same fact write two examples: two questions, two wordings of one
answer. Split at random, one lands in training and the other in the holdout, and the gate
then scores the candidate on a fact it has learnt: a memorised answer passes for a better
model (issue 16 saw a holdout that shared its facts with training). So the split takes whole
groups of examples, one group per fact (``trainer/dataset.py``).

Two replies state the same fact when they are alike in meaning (embedding cosine) and share
what identifies the fact, measured on generated domains (300 domains of 20 facts, each
fact's answer against its document's sentence: 6,000 of 6,000 same-fact pairs grouped, none
of 57,000 pairs of different facts grouped with each other; joining them would only make a
group larger):

* both have numbers: they share one (a number is what most support facts are: days, prices,
  years; two facts about one product share its name but not their numbers);
* neither has numbers: they share a rare name (a capitalised word or code that is not in
  many replies, as the company's name is), and not both name something at least as rare
  that the other lacks (before this rule, 261 of the 57,000 pairs joined: two facts about
  one company, where its name was in under a fifth of the replies);
* only one has numbers: they are near-identical.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

from trainer.scoring import normalize, numbers_in

SIMILAR = 0.5  # cosine at which replies sharing a number or a rare name state one fact
NEAR_IDENTICAL = 0.9  # cosine at which replies are one fact whatever they share
COMMON_SHARE = 0.2  # a name in more than this share of the replies identifies no fact
_NAME = re.compile(r"\b[A-Z][\w'-]*")


def fact_groups(replies: Sequence[str], vectors: np.ndarray | None) -> list[int]:
    """A group number per reply; replies with one number state one fact. ``vectors``: the
    replies' unit embeddings (rows), or None to group only replies equal once normalized."""
    names = [_names(reply) for reply in replies]
    counts = Counter(name for found in names for name in found)
    common = {name for name, count in counts.items() if count > max(2, COMMON_SHARE * len(names))}
    rare = [found - common for found in names]
    numbers = [numbers_in(reply) for reply in replies]
    normalized = [normalize(reply) for reply in replies]
    parent = list(range(len(replies)))

    def root(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    def join(first: int, second: int) -> None:
        parent[root(second)] = root(first)

    for same_text in _by_value(normalized):
        for index in same_text[1:]:
            join(same_text[0], index)
    for first, second, cosine in _similar_pairs(vectors):
        if _same_fact(cosine, numbers[first], numbers[second], rare[first], rare[second], counts):
            join(first, second)
    roots = [root(index) for index in range(len(replies))]
    numbering = {group: number for number, group in enumerate(dict.fromkeys(roots))}
    return [numbering[group] for group in roots]


def _by_value(values: Sequence[str]) -> list[list[int]]:
    rows: dict[str, list[int]] = {}
    for index, value in enumerate(values):
        rows.setdefault(value, []).append(index)
    return list(rows.values())


def _similar_pairs(vectors: np.ndarray | None, block: int = 1024) -> list[tuple[int, int, float]]:
    """Pairs (first < second) at cosine ``SIMILAR`` or more, a block of rows at a time, so
    that thousands of examples need neither a Python loop per pair nor the whole matrix."""
    if vectors is None or len(vectors) < 2:
        return []
    pairs = []
    for start in range(0, len(vectors), block):
        cosines = vectors[start : start + block] @ vectors.T
        rows, columns = np.nonzero(cosines >= SIMILAR)
        for row, column in zip(rows.tolist(), columns.tolist(), strict=True):
            if start + row < column:
                pairs.append((start + row, column, float(cosines[row, column])))
    return pairs


def _same_fact(
    cosine: float,
    first_numbers: set[str],
    second_numbers: set[str],
    first_names: set[str],
    second_names: set[str],
    counts: Counter[str],
) -> bool:
    """By the replies' numbers when they have any, else by their rare names."""
    if first_numbers and second_numbers:
        return bool(first_numbers & second_numbers) and cosine >= SIMILAR
    if first_numbers or second_numbers:
        return cosine >= NEAR_IDENTICAL
    return cosine >= SIMILAR and _name_one_thing(first_names, second_names, counts)


def _name_one_thing(first: set[str], second: set[str], counts: Counter[str]) -> bool:
    """Whether two replies' rare names identify one thing: they share one, and not both
    name something at least as rare that the other lacks. Two facts about one company share
    its name, but each names its own app, mascot or chief ("The Daekun Outfitters mobile app
    is called Stoufil" and "The Daekun Outfitters mascot is a fox named Rigrar"), where the
    company's name was in too few replies to count as common."""
    shared = first & second
    if not shared:
        return False
    rarest = min(counts[name] for name in shared)
    first_names_more = any(counts[name] <= rarest for name in first - shared)
    second_names_more = any(counts[name] <= rarest for name in second - shared)
    return not (first_names_more and second_names_more)


def _names(reply: str) -> set[str]:
    """Capitalised words other than a sentence's first (``The``, ``You``)."""
    found = set()
    for match in _NAME.finditer(reply):
        before = reply[: match.start()].rstrip()
        if before and before[-1] not in ".!?:":
            found.add(match.group(0).lower())
    return found
