"""Which requests are grounded, and with what: the gateway side of retrieval.

A model or alias may have a default (settings ``retrieval_models``); a request overrides it
with ``retrieval: {"collection", "top_k", "min_score"}`` or turns it off with
``retrieval: false``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from core.grounding_plan import GroundingPlan, plan_grounding
from core.sections import ModelRetrieval
from gateway.metrics import GatewayMetrics
from gateway.schemas import RetrievalOptions
from retrieval.grounding import ground_messages, retrieval_query
from retrieval.service import Hit, Retriever


@dataclass(frozen=True)
class Grounding:
    hits: list[Hit]

    def apply(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The conversation with the sources in its last user turn (retrieval/grounding.py)."""
        return ground_messages(messages, self.hits)


class Grounder:
    def __init__(
        self,
        retriever: Retriever,
        defaults: dict[str, ModelRetrieval],
        top_k: int,
        min_score: float,
        metrics: GatewayMetrics,
    ) -> None:
        self.retriever = retriever
        self.defaults = defaults
        self.top_k = top_k
        self.min_score = min_score
        self.metrics = metrics

    def plan(
        self, requested: RetrievalOptions | bool | None, models: tuple[str, ...]
    ) -> GroundingPlan | None:
        if requested is False:
            return None
        default = next((self.defaults[m] for m in models if m in self.defaults), None)
        options = requested if isinstance(requested, RetrievalOptions) else None
        return plan_grounding(
            default,
            top_k=self.top_k,
            min_score=self.min_score,
            collection=options.collection if options else None,
            requested_top_k=options.top_k if options else None,
            requested_min_score=options.min_score if options else None,
        )

    async def ground(self, plan: GroundingPlan, messages: list[dict[str, Any]]) -> Grounding:
        started = time.perf_counter()
        query = retrieval_query(messages)
        hits = []
        if query:
            hits = await self.retriever.search(
                plan.collection, query, plan.top_k, min_score=plan.min_score,
                on_stage=self._observe_stage,
            )  # fmt: skip
        self._observe_stage("total", time.perf_counter() - started)
        self.metrics.retrievals.labels("hits" if hits else "empty").inc()
        if hits:
            self.metrics.retrieval_top_score.observe(max(hit.score for hit in hits))
        return Grounding(hits)

    def _observe_stage(self, stage: str, seconds: float) -> None:
        self.metrics.retrieval_latency.labels(stage).observe(seconds)
