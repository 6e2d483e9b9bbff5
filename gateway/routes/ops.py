"""Operational endpoints: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from litestar import Response, get

from adapters.engine import EngineClient
from gateway.metrics import Exposition
from gateway.state_metrics import StateMetrics


@get("/healthz", tags=["ops"])
async def healthz() -> dict[str, str]:
    """The gateway process is alive."""
    return {"status": "ok"}


@get("/readyz", tags=["ops"])
async def readyz(engine: EngineClient) -> Response[dict[str, Any]]:
    """Ready only while at least one engine replica answers its health check."""
    replicas = [{"url": r.url, "healthy": r.healthy} for r in engine.replicas]
    if engine.ready:
        return Response({"status": "ready", "engines": replicas})
    return Response(
        {"status": "not ready", "engines": replicas},
        status_code=503,
        headers={"Retry-After": "5"},
    )


@get("/metrics", tags=["ops"], include_in_schema=False)
async def metrics(exposition: Exposition, state_metrics: StateMetrics) -> Response[bytes]:
    """Prometheus exposition: this gateway's events (every worker's) and the store's state."""
    await state_metrics.refresh()
    body, media_type = exposition.render()
    return Response(body, media_type=media_type)
