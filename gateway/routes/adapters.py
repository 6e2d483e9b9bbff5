"""Admin API for adapters: publish versions, list them, declare and list aliases."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import msgspec
from litestar import Controller, get, post

from adapters.registry import Registry
from adapters.validation import check_publish_source
from gateway.presentation import version_card


class PublishIn(msgspec.Struct):
    """A PEFT LoRA directory on the gateway host (or a volume it shares)."""

    path: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
    alias: Annotated[str, msgspec.Meta(min_length=1, max_length=48)]
    parent: str | None = None


class AliasIn(msgspec.Struct):
    alias: Annotated[str, msgspec.Meta(min_length=1, max_length=48)]


class AdapterRoutes(Controller):
    """Adapter versions: publish and list (admin)."""

    path = "/v1/admin/adapters"
    opt = {"scope": "admin"}
    tags = ["admin"]

    @post("/", status_code=201)
    async def publish_adapter(
        self, data: PublishIn, adapters: Registry, publish_roots: list[Path]
    ) -> dict[str, Any]:
        """Validate and store an adapter as a new immutable version (idempotent by content).

        Only from under the ``adapter_publish_roots`` setting (400 ``invalid_adapter`` else)."""
        source = check_publish_source(Path(data.path), publish_roots)
        published = await adapters.publish(source, data.alias, parent=data.parent)
        return {**version_card(published.version), "created": published.created}

    @get("/")
    async def list_adapters(self, adapters: Registry, alias: str | None = None) -> dict[str, Any]:
        """Every version, optionally of one alias, with state and eval report."""
        versions = await adapters.versions(alias)
        return {"object": "list", "data": [version_card(version) for version in versions]}


class AliasRoutes(Controller):
    """Aliases: declare and list (admin)."""

    path = "/v1/admin/aliases"
    opt = {"scope": "admin"}
    tags = ["admin"]

    @post("/", status_code=201)
    async def create_alias(self, data: AliasIn, adapters: Registry) -> dict[str, Any]:
        """Declare an alias before its first version: it serves the base model meanwhile."""
        created = await adapters.create_alias(data.alias)
        return {"alias": data.alias, "created": created}

    @get("/")
    async def list_aliases(self, adapters: Registry) -> dict[str, Any]:
        """Aliases with their live version and any canary and its weight."""
        routes = await adapters.routes()
        return {
            "object": "list",
            "data": [
                {"alias": route.alias, "live": route.live, "canary": route.canary,
                 "canary_weight": route.weight}
                for route in routes.values()
            ],
        }  # fmt: skip
