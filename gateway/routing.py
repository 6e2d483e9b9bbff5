"""Resolves the ``model`` a client asks for to the version that answers.

* the base model name serves the base;
* ``support-v3`` pins a version (it must be live or canary, i.e. loaded);
* ``support`` resolves to the alias's live version (the base model while it has none) or,
  during a rollout, to the canary for a share of traffic equal to its weight, or, during an
  A/B experiment, to one of the experiment's arms (an even split). The choice is sticky: a
  stable hash of the conversation id (or the API key, when there is none) always lands on the
  same side.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from adapters.registry import SERVING_STATES, AliasRoute, Registry, UnknownAdapter
from core.store.db import UNAVAILABLE
from gateway.errors import ModelNotFound

log = logging.getLogger("loragate.routing")


@dataclass(frozen=True)
class Route:
    requested: str
    upstream_model: str  # the name vLLM knows
    served_name: str  # what the client is told answered (x-loragate-version)
    alias: str | None = None
    canary: bool = False
    base: bool = False  # an alias with no live version yet serves the base model
    experiment_id: int | None = None
    arm: str | None = None
    # An experiment arm's retrieval: None keeps the alias's own, False turns it off,
    # {"collection": ...} uses another collection.
    retrieval: bool | dict[str, Any] | None = None

    @property
    def is_adapter(self) -> bool:
        return self.alias is not None and not self.base


def sticky_bucket(key: str) -> float:
    """A stable number in [0, 1) for a key: same key, same side of every split."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class ModelRouter:
    def __init__(self, registry: Registry, base_model_name: str, refresh_s: float = 1.0) -> None:
        self.registry = registry
        self.base_model_name = base_model_name
        self.refresh_s = refresh_s
        self._routes: dict[str, AliasRoute] = {}
        self._serving: dict[str, str] = {}  # version name -> alias
        self._fetched_at = float("-inf")
        self._loaded = False
        registry.on_change(self.invalidate)

    def invalidate(self) -> None:
        self._fetched_at = float("-inf")

    async def resolve(self, requested: str, sticky_key: str) -> Route:
        if requested == self.base_model_name:
            return Route(requested, requested, requested)
        await self._refresh()
        route = self._routes.get(requested)
        if route is not None:
            return self._split(route, sticky_key)
        alias = self._serving.get(requested)
        if alias is not None:
            return Route(requested, requested, requested, alias=alias)
        raise ModelNotFound(await self._not_found_message(requested), param="model")

    def _split(self, route: AliasRoute, sticky_key: str) -> Route:
        if route.experiment is not None:
            return self._arm(route, sticky_key)
        if route.canary and sticky_bucket(f"{route.alias}:{sticky_key}") < route.weight:
            return Route(route.alias, route.canary, route.canary, alias=route.alias, canary=True)
        if route.live is None:
            base = self.base_model_name
            return Route(route.alias, base, base, alias=route.alias, base=True)
        return Route(route.alias, route.live, route.live, alias=route.alias)

    def _arm(self, route: AliasRoute, sticky_key: str) -> Route:
        experiment = route.experiment
        assert experiment is not None
        bucket = sticky_bucket(f"{route.alias}:experiment-{experiment.id}:{sticky_key}")
        arm = experiment.arms[int(bucket * len(experiment.arms))]
        upstream = arm.version or self.base_model_name
        return Route(route.alias, upstream, upstream, alias=route.alias,
                     base=arm.version is None, experiment_id=experiment.id, arm=arm.name,
                     retrieval=arm.retrieval)  # fmt: skip

    async def _not_found_message(self, requested: str) -> str:
        try:
            version = await self.registry.get(requested)
        except UnknownAdapter:
            return f"The model '{requested}' does not exist."
        return f"The version '{requested}' is {version.state}, not serving."

    async def _refresh(self) -> None:
        if time.monotonic() - self._fetched_at < self.refresh_s:
            return
        try:
            routes = await self.registry.routes()
            serving = await self.registry.serving_versions()
        except UNAVAILABLE as exc:
            if not self._loaded:
                raise
            # The store is down: keep routing by the last table rather than refuse chat.
            log.warning("store unavailable; routing by the last table",
                        extra={"error": str(exc).splitlines()[0]})  # fmt: skip
            self._fetched_at = time.monotonic()
            return
        self._routes = routes
        self._serving = {
            version.name: version.alias for version in serving if version.state in SERVING_STATES
        }
        self._fetched_at = time.monotonic()
        self._loaded = True

    async def list_models(self) -> list[dict[str, Any]]:
        await self._refresh()
        created = int(time.time())
        models = [_model_card(self.base_model_name, created, parent=None)]
        for alias, route in sorted(self._routes.items()):
            models.append(_model_card(alias, created, parent=self.base_model_name,
                                      live=route.live, canary=route.canary,
                                      weight=route.weight))  # fmt: skip
        for version, alias in sorted(self._serving.items()):
            models.append(_model_card(version, created, parent=self.base_model_name,
                                      alias=alias))  # fmt: skip
        return models


def _model_card(model_id: str, created: int, parent: str | None, **extra: Any) -> dict[str, Any]:
    card = {"id": model_id, "object": "model", "created": created, "owned_by": "loragate",
            "parent": parent}  # fmt: skip
    card.update({key: value for key, value in extra.items() if value is not None})
    return card
