"""When a re-evaluation score marks an alias degraded (trainer/reeval.py), and how a holdout
conversation is put in the form it is served today (re-grounded)."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest

from retrieval.grounding import NO_SOURCES, grounded_turn, sources_in
from retrieval.service import Hit
from trainer.dataset import Example
from trainer.evaluate import SetScore
from trainer.reeval import ReevalPolicy, Reevaluator
from trainer.regrounder import Regrounder

POLICY = ReevalPolicy(tolerance=0.1, min_holdout=5)


@pytest.mark.parametrize(
    ("accuracy", "count", "reference", "degraded"),
    [
        (0.7, 10, 0.9, True),  # fell 0.2, more than the tolerance
        (0.85, 10, 0.9, False),  # fell 0.05: within it
        (0.8, 10, 0.9, False),  # exactly the tolerance is not beyond it
        (0.1, 4, 0.9, False),  # too few holdout items to call it
        (0.1, 10, None, False),  # nothing to compare with yet
        (1.0, 10, 0.5, False),  # better than at publishing
    ],
)
def test_degraded_only_beyond_the_tolerance_on_enough_items(
    accuracy: float, count: int, reference: float | None, degraded: bool
) -> None:
    score = SetScore("support-v3", count=count, accuracy=accuracy)
    assert POLICY.degraded(score, reference) is degraded


class _Retriever:
    """Records the search; the real Retriever is in tests/integration/test_reeval.py."""

    def __init__(self) -> None:
        self.searched: list[tuple[str, str]] = []

    async def search(self, collection: str, query: str, k: int, **_: Any) -> list[Any]:
        self.searched.append((collection, query))
        return []


def _example(*messages: dict[str, str]) -> Example:
    return Example("c1", "support", list(messages), "47 days", "correction", "correction")


async def test_old_sources_are_replaced_by_a_search_now() -> None:
    from core.sections import ModelRetrieval

    retriever = _Retriever()
    config = {"support": ModelRetrieval(collection="handbook")}
    regrounder = Regrounder(retriever, config, 4, 0.2)  # type: ignore[arg-type]
    old = Hit(7, 0.9, "old", "handbook/old.md", "returns", "Returns: 30 days.")
    stale = grounded_turn("How long do returns take?", [old])
    example = _example({"role": "user", "content": stale})
    served = await regrounder.as_served("support", example)
    assert retriever.searched == [("handbook", "How long do returns take?")]
    # Nothing is found now: the turn says so instead of carrying the old source.
    assert served.messages == [
        {"role": "user", "content": f"Question: How long do returns take?\n\n{NO_SOURCES}"}
    ]


async def test_an_alias_without_retrieval_is_asked_without_sources() -> None:
    retriever = _Retriever()
    regrounder = Regrounder(retriever, {}, 4, 0.2)  # type: ignore[arg-type]
    example = _example(
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": grounded_turn("Hi", [])},
    )
    served = await regrounder.as_served("support", example)
    assert retriever.searched == []
    assert served.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ]


class _Collection:
    """Answers a search by the words a query shares with each source."""

    def __init__(self, texts: list[str]) -> None:
        self.hits = [Hit(i, 0.0, f"d{i}", f"doc{i}.md", "", text) for i, text in enumerate(texts)]

    async def search(self, collection: str, query: str, k: int, **_: Any) -> list[Hit]:
        words = set(query.lower().split())
        ranked = sorted(self.hits, key=lambda hit: -len(words & set(hit.text.lower().split())))
        return ranked[:k]


async def test_a_training_example_carries_the_source_that_states_its_reply() -> None:
    """RAFT's oracle document: a question whose retrieval missed the source of its answer is
    trained with that source among the others, never against them; one whose retrieval found
    it, as served."""
    from core.sections import ModelRetrieval

    texts = [
        "Shipping to Quelth takes a while and costs extra.",
        "Our shipping partners deliver to Quelth.",
        "The Quelth warehouse opens at 9.",
        "Parcels reach customers within 38 working days.",
    ]
    regrounder = Regrounder(
        _Collection(texts),  # type: ignore[arg-type]
        {"support": ModelRetrieval(collection="handbook")},
        2,
        0.0,
    )
    example = Example(
        "c9",
        "support",
        [{"role": "user", "content": "How long is shipping to Quelth?"}],
        "Parcels reach customers within 38 working days.",
        "correction",
        "correction",
    )
    served = await regrounder.as_served("support", example)
    trained = await regrounder.as_trained("support", example)
    assert texts[3] not in served.messages[-1]["content"]
    sources = sources_in(trained.messages[-1]["content"])
    assert len(sources) == 2 and texts[3] in sources
    assert texts[0] in sources  # the best question hit stays; the last one made room
    unrelated = replace(example, reply="You can pay by card.")
    assert await regrounder.as_trained("support", unrelated) == replace(
        served, reply=unrelated.reply
    )


async def test_a_version_is_held_to_its_gate_score_as_served() -> None:
    """The gate pooled the holdout over its forms (served, reworded, closed book);
    re-evaluation asks it as served, so that form's score is the reference."""

    class Registry:
        async def get(self, name: str) -> Any:
            forms = {"served": 0.8, "reworded": 0.6, "closed_book": 0.1}
            holdout = {"accuracy": 0.5, "forms": forms} if name == "v2" else {"accuracy": 0.7}
            return SimpleNamespace(eval_report={"candidate": {"holdout": holdout}})

    reevaluator = Reevaluator(SimpleNamespace(registry=Registry()), None, None, POLICY)  # type: ignore[arg-type]
    now = SetScore("v", 10, accuracy=0.75)
    assert await reevaluator._reference("support", "v2", now) == 0.8
    assert await reevaluator._reference("support", "v1", now) == 0.7  # gated before the forms
