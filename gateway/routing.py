"""Resolves the ``model`` a client asks for to what the engine serves.

Today: the base model by its configured name, and LoRA adapters the engine already has
loaded (vLLM lists them in its ``/v1/models``). The adapter registry (aliases, pinned
versions, canary splits) plugs in here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from adapters.engine import EngineClient
from adapters.errors import EngineError
from gateway.errors import ModelNotFound


@dataclass(frozen=True)
class Route:
    requested: str
    upstream_model: str  # the name vLLM knows
    served_name: str  # what the client is told answered (x-loragate-version)


class ModelRouter:
    def __init__(self, engine: EngineClient, base_model_name: str, refresh_s: float = 5.0) -> None:
        self.engine = engine
        self.base_model_name = base_model_name
        self.refresh_s = refresh_s
        self._engine_models: list[dict[str, Any]] = []
        self._fetched_at = float("-inf")

    async def resolve(self, requested: str) -> Route:
        if requested == self.base_model_name:
            return Route(requested, requested, requested)
        if requested in {model["id"] for model in await self.engine_models()}:
            return Route(requested, requested, requested)
        raise ModelNotFound(f"The model '{requested}' does not exist.", param="model")

    async def engine_models(self) -> list[dict[str, Any]]:
        """The engine's model list, cached briefly; empty while no engine answers."""
        if time.monotonic() - self._fetched_at > self.refresh_s and self.engine.ready:
            try:
                body = await self.engine.get_json("/v1/models")
                self._engine_models = list(body.get("data", []))
                self._fetched_at = time.monotonic()
            except EngineError:
                pass
        return self._engine_models

    async def list_models(self) -> list[dict[str, Any]]:
        created = int(time.time())
        models = [_model_card(self.base_model_name, created, parent=None)]
        for model in await self.engine_models():
            if model["id"] != self.base_model_name:
                models.append(_model_card(model["id"], created, parent=self.base_model_name))
        return models


def _model_card(model_id: str, created: int, parent: str | None) -> dict[str, Any]:
    return {
        "id": model_id,
        "object": "model",
        "created": created,
        "owned_by": "loragate",
        "parent": parent,
    }
