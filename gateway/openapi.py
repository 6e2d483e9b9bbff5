"""The OpenAPI document at /schema: Litestar's, plus what every route can answer.

Litestar documents the responses a handler declares. The errors come from one place
(``gateway.http_errors``) for every route, so they are added here for every operation, in
OpenAI's error shape, and the chat route gets its server-sent events. schemathesis checks
the live gateway against this document (tests/integration/test_fuzz.py).
"""

from __future__ import annotations

from litestar import Litestar
from litestar.openapi.spec import (
    Components,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Reference,
    Schema,
    SecurityScheme,
)

ERROR_STATUSES = {
    400: "Bad request: malformed JSON, a field out of range, a context too long.",
    401: "Missing or wrong API key.",
    403: "The key lacks the route's scope.",
    404: "No such model, version, completion, response (or not this key's), collection or "
    "document.",
    409: "Conflicts with the current state (a rollout already running, a review item "
    "changed since the revision named).",
    413: "Body over `max_body_bytes`.",
    429: "A quota of the key is used up; see Retry-After.",
    431: "Request head over `max_header_bytes`.",
    500: "Internal error.",
    502: "vLLM broke off.",
    503: "vLLM or the store is unavailable, or a write met too many others; see Retry-After.",
    504: "vLLM did not answer in time.",
    507: "The disk is full; nothing was changed.",
}

_NULLABLE_STRING = Schema(one_of=[Schema(type=OpenAPIType.STRING), Schema(type=OpenAPIType.NULL)])
_ERROR_SCHEMA = Schema(
    type=OpenAPIType.OBJECT,
    required=["error"],
    properties={
        "error": Schema(
            type=OpenAPIType.OBJECT,
            required=["message", "type", "param", "code"],
            properties={
                "message": Schema(type=OpenAPIType.STRING),
                "type": Schema(type=OpenAPIType.STRING),
                "param": _NULLABLE_STRING,
                "code": _NULLABLE_STRING,
            },
        )
    },
)
_SSE = OpenAPIMediaType(
    schema=Schema(
        type=OpenAPIType.STRING,
        description="`data: {chat.completion.chunk}` (or `{text_completion}`) events, then "
        "`data: [DONE]`; a failure "
        "mid-stream is a `data: {error}` event instead of [DONE].",
    )
)

_RESPONSE_EVENTS = OpenAPIMediaType(
    schema=Schema(
        type=OpenAPIType.STRING,
        description="vLLM's Responses API events as it sends them (`event: <type>` and "
        "`data: {...}` lines), `response.created` first, `response.completed` last; a "
        "failure mid-stream is an `event: error`.",
    )
)
_STREAMED = {
    "/v1/chat/completions": _SSE,
    "/v1/completions": _SSE,
    "/v1/responses": _RESPONSE_EVENTS,
    "/v1/responses/{response_id}": _RESPONSE_EVENTS,
}


def document_errors(app: Litestar) -> None:
    """Add the error responses, the SSE bodies of the streamed routes and the bearer key to
    every route."""
    openapi = app.openapi_schema  # built once and cached: what /schema serves
    openapi.components = openapi.components or Components()
    schemas = openapi.components.schemas = dict(openapi.components.schemas or {})
    schemas["Error"] = _ERROR_SCHEMA
    openapi.components.security_schemes = {
        "apiKey": SecurityScheme(type="http", scheme="bearer", description="An API key.")
    }
    error = OpenAPIMediaType(schema=Reference(ref="#/components/schemas/Error"))
    for path, item in (openapi.paths or {}).items():
        for operation in (item.get, item.put, item.post, item.delete, item.patch):
            if operation is None:
                continue
            if path.startswith("/v1/"):
                operation.security = [{"apiKey": []}]
            responses = operation.responses = dict(operation.responses or {})
            for status, description in ERROR_STATUSES.items():
                responses[str(status)] = OpenAPIResponse(
                    description=description,
                    content={"application/json": error},
                    headers=_retry_after() if status in (429, 503) else None,
                )
            if path in _STREAMED:
                ok = responses["200"]
                assert isinstance(ok, OpenAPIResponse)
                ok.content = {**(ok.content or {}), "text/event-stream": _STREAMED[path]}


def _retry_after() -> dict[str, OpenAPIHeader | Reference]:
    return {
        "Retry-After": OpenAPIHeader(
            schema=Schema(type=OpenAPIType.INTEGER), description="Seconds to wait."
        )
    }
