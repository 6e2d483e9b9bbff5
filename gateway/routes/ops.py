"""Operational endpoints: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Response, get

from adapters.engine import EngineClient
from gateway.metrics import Exposition
from gateway.state_metrics import StateMetrics
from retrieval.service import Retriever


class OpsRoutes(Controller):
    """Health, readiness and metrics: no key needed."""

    path = "/"
    tags = ["ops"]

    @get("/healthz")
    async def healthz(self) -> dict[str, str]:
        """The gateway process is alive."""
        return {"status": "ok"}

    @get("/readyz")
    async def readyz(self, engine: EngineClient, retriever: Retriever) -> Response[dict[str, Any]]:
        """Ready once retrieval has warmed up (so the first grounded request does not load the
        embedder) and while at least one engine replica answers its health check. A failed
        warm-up does not hold readiness back: ungrounded models still serve."""
        body = {
            "engines": [{"url": r.url, "healthy": r.healthy} for r in engine.replicas],
            "retrieval": retriever.warm_up_state,
        }
        if engine.ready and retriever.warm_up_state != "warming":
            return Response({"status": "ready", **body})
        return Response(
            {"status": "not ready", **body}, status_code=503, headers={"Retry-After": "5"}
        )

    @get("/metrics", include_in_schema=False)
    async def metrics(self, exposition: Exposition, state_metrics: StateMetrics) -> Response[bytes]:
        """Prometheus exposition: this gateway's events (every worker's) and the store's state."""
        await state_metrics.refresh()
        body, media_type = exposition.render()
        return Response(body, media_type=media_type)
