"""Grounding a stored conversation as the gateway would serve it today.

The holdout, the re-evaluation and the training recipe all need a conversation in the form
the alias serves now: its sources retrieved afresh from the alias's collection (the ones it
was served with are history), in the layout of retrieval/grounding.py.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

from core.grounding_plan import plan_grounding
from core.sections import ModelRetrieval
from retrieval.grounding import (
    ground_messages,
    lexical_support,
    retrieval_query,
    strip_grounding,
)
from retrieval.service import Hit, Retriever
from trainer.dataset import Example
from trainer.recipe import CITE_MIN_SUPPORT


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
        return await self._ground(alias, example, with_answer=False)

    async def as_trained(self, alias: str, example: Example) -> Example:
        """As served, but with the source that states the reply among the sources whenever
        the collection has one: RAFT's oracle document (Zhang et al., 2024). Retrieval that
        missed it would otherwise teach the adapter to answer against its sources, from
        memory; it takes the place of the last source, at a position drawn from the
        example's id, so that the answer is not always first."""
        return await self._ground(alias, example, with_answer=True)

    async def _ground(self, alias: str, example: Example, *, with_answer: bool) -> Example:
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
        if with_answer and hits:
            answer = await self.retriever.search(plan.collection, example.reply_text, 1)
            hits = _with_answer_source(hits, answer, example)
        return replace(example, messages=ground_messages(messages, hits))


def _with_answer_source(hits: list[Hit], answer: list[Hit], example: Example) -> list[Hit]:
    if not answer or any(hit.chunk_id == answer[0].chunk_id for hit in hits):
        return hits
    if lexical_support(example.reply_text, [answer[0].text]) < CITE_MIN_SUPPORT:
        return hits  # the collection does not state this reply
    kept = hits[:-1]
    position = int(hashlib.sha256(example.id.encode()).hexdigest()[:8], 16) % (len(kept) + 1)
    return [*kept[:position], answer[0], *kept[position:]]
