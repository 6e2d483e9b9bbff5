"""Assembles the gateway: settings in, a Litestar app out.

Nothing is read from globals: the settings, the Prometheus registry and, for tests, the
engine client are passed in, so every test can build a fresh app. ``gateway.wiring`` builds
the services; this module only puts them behind routes.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar, Router
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from prometheus_client import CollectorRegistry

from adapters.engine import EngineClient
from core.settings import Settings
from core.store.response_owners import ResponseOwners
from gateway.auth import scope_guard
from gateway.embeddings import EmbeddingService, embedding_model_name
from gateway.history import ConversationHistory
from gateway.http_errors import EXCEPTION_HANDLERS
from gateway.openapi import document_errors
from gateway.relay import EngineRelay
from gateway.responses import ResponsesService
from gateway.routes.adapters import AdapterRoutes, AliasRoutes
from gateway.routes.admin import KeyRoutes
from gateway.routes.collections import CollectionRoutes
from gateway.routes.conversations import ConversationLogRoutes, ConversationRoutes
from gateway.routes.experiments import ExperimentRoutes
from gateway.routes.feedback import FeedbackRoutes
from gateway.routes.monitor import MonitorRoutes
from gateway.routes.openai import OpenAIRoutes, VllmRoutes
from gateway.routes.ops import OpsRoutes
from gateway.routes.review import ReviewRoutes
from gateway.routes.rollouts import RolloutRoutes
from gateway.routes.training import TrainingRoutes
from gateway.services import Services
from gateway.ui import ui_routes
from gateway.wiring import build_services
from retrieval.embeddings import Embedder
from trainer.store import TrainerStore

log = logging.getLogger("loragate.app")


def create_app(
    settings: Settings,
    *,
    metrics_registry: CollectorRegistry | None = None,
    engine: EngineClient | None = None,
    shared_embedder: Embedder | None = None,
) -> Litestar:
    services = build_services(
        settings,
        metrics_registry=metrics_registry or CollectorRegistry(),
        engine=engine,
        shared_embedder=shared_embedder,
    )

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        await services.start()
        try:
            yield
        finally:
            await services.stop()

    def provide(value: object) -> Provide:
        return Provide(lambda: value, use_cache=True, sync_to_thread=False)

    api = Router(
        path="/",
        route_handlers=[
            OpenAIRoutes,
            VllmRoutes,
            FeedbackRoutes,
            KeyRoutes,
            CollectionRoutes,
            AdapterRoutes,
            AliasRoutes,
            ReviewRoutes,
            RolloutRoutes,
            ExperimentRoutes,
            MonitorRoutes,
            ConversationRoutes,
            ConversationLogRoutes,
            TrainingRoutes,
        ],
        guards=[scope_guard],
    )
    app = Litestar(
        route_handlers=[api, OpsRoutes, *ui_routes(settings.ui.enabled)],
        dependencies={
            "chat": provide(services.chat),
            "embeddings": provide(_embedding_service(services)),
            "relay": provide(_engine_relay(services)),
            "responses": provide(_responses_service(services)),
            "router": provide(services.router),
            "engine": provide(services.engine),
            "exposition": provide(services.exposition),
            "state_metrics": provide(services.state_metrics),
            "monitor": provide(services.monitor),
            "keys": provide(services.keys),
            "retriever": provide(services.retriever),
            "adapters": provide(services.adapters),
            "publish_roots": provide(settings.resolved_adapter_publish_roots),
            "feedback": provide(services.feedback),
            "rollouts": provide(services.rollouts),
            "experiments": provide(services.experiments),
            "review": provide(services.review),
            "quotas": provide(services.chat.quotas),
            "history": provide(ConversationHistory(services.db)),
            "trainer_store": provide(TrainerStore(services.db)),
        },
        state=_state(services),
        lifespan=[lifespan],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        request_max_body_size=settings.requests.max_body_bytes,
        openapi_config=_openapi_config(settings),
        logging_config=None,  # core.logs owns the log format
        debug=False,
    )
    document_errors(app)
    return app


def _openapi_config(settings: Settings) -> OpenAPIConfig:
    """Without ``openapi_pages`` only the document, ``/schema/openapi.json``, is served: the
    interactive pages load their scripts from public CDNs, with no CSP."""
    plugins = () if settings.ui.openapi_pages else (JsonRenderPlugin(),)
    return OpenAPIConfig(title="loragate", version="0.1.0", path="/schema", render_plugins=plugins)


def _embedding_service(services: Services) -> EmbeddingService:
    """/v1/embeddings on retrieval's embedder: one model in memory, loaded once."""
    name = embedding_model_name(services.settings.retrieval.embedding_model_path)
    return EmbeddingService(
        services.retriever.embedder, name, services.metrics, services.chat.quotas
    )


def _engine_relay(services: Services) -> EngineRelay:
    return EngineRelay(services.engine, services.router)


def _responses_service(services: Services) -> ResponsesService:
    return ResponsesService(services.chat, ResponseOwners(services.db))


def _state(services: Services) -> State:
    return State({"authenticator": services.authenticator})


def create_app_from_env() -> Litestar:
    """Factory for ``uvicorn --factory`` with several workers (external engine mode)."""
    from core.logs import configure_logging
    from core.settings import load_settings
    from gateway.http_protocol import limit_headers

    settings = load_settings()
    configure_logging(settings.logging.level, settings.logging.format)
    limit_headers(settings.requests.max_header_bytes)  # this worker's protocol class, as configured
    return create_app(settings)
