"""Which collection a conversation is grounded in, and how: the retrieval precedence.

The gateway applies it to each request (``gateway.grounder``) and the trainer to each
stored conversation it serves again as the alias would today (``trainer.regrounder``), so
both follow this one rule: what the request asks for, else the model's or alias's default
(settings ``retrieval_models``), else the global ``retrieval_top_k`` / ``retrieval_min_score``.
No collection from either means no grounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.sections import ModelRetrieval


@dataclass(frozen=True)
class GroundingPlan:
    collection: str
    top_k: int
    min_score: float


def plan_grounding(
    default: ModelRetrieval | None,
    *,
    top_k: int,
    min_score: float,
    collection: str | None = None,
    requested_top_k: int | None = None,
    requested_min_score: float | None = None,
) -> GroundingPlan | None:
    """The plan for one conversation; ``requested_*`` are what its request asked for."""
    chosen = collection or (default.collection if default else None)
    if chosen is None:
        return None
    return GroundingPlan(
        collection=chosen,
        top_k=_first(requested_top_k, default and default.top_k, top_k),
        min_score=_first(requested_min_score, default and default.min_score, min_score),
    )


def _first(*values: Any) -> Any:
    return next(value for value in values if value is not None and value is not False)
