"""/readyz: ready once retrieval has warmed up and while an engine replica answers.

The engine client is real but never started (its replicas' health is set by hand); the
retriever is a stand-in holding only its warm-up state. tests/integration/test_ops.py checks
the same endpoint on a live gateway and real vLLM."""

from __future__ import annotations

import pytest
from litestar import Litestar
from litestar.di import Provide
from litestar.testing import TestClient

from adapters.engine import EngineClient, EngineClientConfig
from gateway.routes import ops
from retrieval.service import Retriever


class WarmUpOnly(Retriever):
    def __init__(self, warm_up_state: str) -> None:  # no store, embedder or index
        self.warm_up_state = warm_up_state  # type: ignore[assignment]


def _client(engine_ready: bool, warm_up_state: str) -> TestClient[Litestar]:
    engine = EngineClient(EngineClientConfig(urls=("http://vllm:8000",)))
    engine.replicas[0].healthy = engine_ready
    app = Litestar(
        route_handlers=[ops.OpsRoutes],
        dependencies={
            "engine": Provide(lambda: engine, sync_to_thread=False),
            "retriever": Provide(lambda: WarmUpOnly(warm_up_state), sync_to_thread=False),
        },
    )
    return TestClient(app)


@pytest.mark.parametrize(
    ("engine_ready", "warm_up_state", "status"),
    [
        (True, "ready", 200),
        (True, "failed", 200),  # ungrounded models still serve; the body says why
        (True, "warming", 503),  # the first grounded request would load the embedder
        (False, "ready", 503),
        (False, "warming", 503),
    ],
)
def test_readiness_needs_an_engine_and_a_finished_warm_up(
    engine_ready: bool, warm_up_state: str, status: int
) -> None:
    with _client(engine_ready, warm_up_state) as client:
        response = client.get("/readyz")
    assert response.status_code == status
    body = response.json()
    assert body["status"] == ("ready" if status == 200 else "not ready")
    assert body["retrieval"] == warm_up_state
    assert body["engines"] == [{"url": "http://vllm:8000", "healthy": engine_ready}]
    if status == 503:
        assert int(response.headers["retry-after"]) > 0
