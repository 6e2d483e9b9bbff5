"""Grounding a stored conversation as the gateway would serve it today.

The holdout, the re-evaluation and the training recipe all need a conversation in the form
the alias serves now: its sources retrieved afresh from the alias's collection (the ones it
was served with are history), in the layout of retrieval/grounding.py.
"""

from __future__ import annotations

from dataclasses import replace

from core.grounding_plan import plan_grounding
from core.sections import ModelRetrieval
from retrieval.grounding import ground_messages, retrieval_query, strip_grounding
from retrieval.service import Retriever
from trainer.dataset import Example


class Regrounder:
    """Puts a holdout conversation in the form the gateway would serve it today."""

    def __init__(
        self,
        retriever: Retriever,
        retrieval_models: dict[str, ModelRetrieval],
        top_k: int,
        min_score: float,
    ) -> None:
        self.retriever = retriever
        self.retrieval_models = retrieval_models
        self.top_k = top_k
        self.min_score = min_score

    async def as_served(self, alias: str, example: Example) -> Example:
        # The sources it was served with are history; today's come from today's collection.
        messages = strip_grounding(example.messages)
        # Nothing was requested here: the alias's default and the global values decide.
        plan = plan_grounding(
            self.retrieval_models.get(alias), top_k=self.top_k, min_score=self.min_score
        )
        query = retrieval_query(messages)
        if plan is None or not query:
            return replace(example, messages=messages)
        hits = await self.retriever.search(
            plan.collection, query, plan.top_k, min_score=plan.min_score
        )
        return replace(example, messages=ground_messages(messages, hits))
