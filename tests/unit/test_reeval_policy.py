"""When a re-evaluation score marks an alias degraded (trainer/reeval.py), and how a holdout
conversation is put in the form it is served today (re-grounded)."""

from __future__ import annotations

from typing import Any

import pytest

from retrieval.grounding import NO_SOURCES, grounded_turn
from retrieval.service import Hit
from trainer.dataset import Example
from trainer.evaluate import SetScore
from trainer.reeval import ReevalPolicy
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
