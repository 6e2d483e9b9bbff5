"""Operational endpoints: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from litestar import Response, get
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from adapters.engine import EngineClient


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
async def metrics(registry: CollectorRegistry) -> Response[bytes]:
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
