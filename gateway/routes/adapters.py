"""Admin API for adapters (publish, list) and the public feedback endpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get, post
from litestar.openapi.datastructures import ResponseSpec

from adapters.registry import Registry
from adapters.tables import AdapterVersion
from adapters.validation import check_publish_source
from gateway.action_limits import check_action
from gateway.feedback import FeedbackIn, FeedbackService
from gateway.quota_gate import QuotaGate


class PublishIn(msgspec.Struct):
    """A PEFT LoRA directory on the gateway host (or a volume it shares)."""

    path: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
    alias: Annotated[str, msgspec.Meta(min_length=1, max_length=48)]
    parent: str | None = None


def version_card(version: AdapterVersion) -> dict[str, Any]:
    return {
        "name": version.name, "alias": version.alias, "number": version.number,
        "state": version.state, "parent": version.parent, "sha256": version.sha256,
        "rank": version.rank, "target_modules": version.target_modules,
        "size_bytes": version.size_bytes, "path": version.path,
        "eval_report": version.eval_report,
        "created_at": version.created_at.isoformat(),
    }  # fmt: skip


@post("/v1/admin/adapters", opt={"scope": "admin"}, tags=["admin"], status_code=201)
async def publish_adapter(
    data: PublishIn, adapters: Registry, publish_roots: list[Path]
) -> dict[str, Any]:
    """Validate and store an adapter as a new immutable version (idempotent by content).

    Only from under the ``adapter_publish_roots`` setting (400 ``invalid_adapter`` else)."""
    source = check_publish_source(Path(data.path), publish_roots)
    published = await adapters.publish(source, data.alias, parent=data.parent)
    return {**version_card(published.version), "created": published.created}


@get("/v1/admin/adapters", opt={"scope": "admin"}, tags=["admin"])
async def list_adapters(adapters: Registry, alias: str | None = None) -> dict[str, Any]:
    """Every version, optionally of one alias, with state and eval report."""
    versions = await adapters.versions(alias)
    return {"object": "list", "data": [version_card(version) for version in versions]}


class AliasIn(msgspec.Struct):
    alias: Annotated[str, msgspec.Meta(min_length=1, max_length=48)]


@post("/v1/admin/aliases", opt={"scope": "admin"}, tags=["admin"], status_code=201)
async def create_alias(data: AliasIn, adapters: Registry) -> dict[str, Any]:
    """Declare an alias before its first version: it serves the base model meanwhile."""
    created = await adapters.create_alias(data.alias)
    return {"alias": data.alias, "created": created}


@get("/v1/admin/aliases", opt={"scope": "admin"}, tags=["admin"])
async def list_aliases(adapters: Registry) -> dict[str, Any]:
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


@post(
    "/v1/feedback",
    opt={"scope": "chat"},
    tags=["openai"],
    status_code=200,
    responses={202: ResponseSpec(dict[str, Any], description="Queued: the store is down; "
                                 "it is journaled and applied, checks included, later.")},
)  # fmt: skip
async def submit_feedback(
    request: Request[Any, Any, Any], data: FeedbackIn, feedback: FeedbackService, quotas: QuotaGate
) -> Response[dict[str, Any]]:
    """Rate a completion (thumbs or stars), correct it, or flag it.

    Limited per key (``feedback_per_minute``): 429 ``rate_limit_error`` with Retry-After."""
    await check_action(quotas, request.state.principal, "feedback")
    result = await feedback.submit(data, request.state.principal)
    return Response(result, status_code=202 if result["queued"] else 200)
