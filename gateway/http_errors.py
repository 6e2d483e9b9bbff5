"""The one place where errors become HTTP responses.

Every error leaves as OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``,
so the official SDKs raise their usual exception classes. Errors of the other loragate
packages are mapped through ``_ADAPTER_ERRORS``; Litestar's own (bad JSON, validation, 404,
413) through ``_from_http_exception``.
"""

from __future__ import annotations

import errno
import logging
from dataclasses import dataclass
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, SerializationException, ValidationException
from sqlalchemy.exc import DBAPIError

from adapters.errors import (
    AdapterError,
    EngineRejected,
    EngineStreamBroken,
    EngineTimeout,
    EngineUnavailable,
)
from adapters.experiments import ExperimentConflict, ExperimentError
from adapters.registry import UnknownAdapter
from adapters.rollout import RolloutError
from adapters.validation import InvalidAdapter
from core.errors import ConfigError, StoreBusy
from core.store.db import UNAVAILABLE, is_conflict
from gateway.errors import GatewayError
from monitor.errors import MonitorError, UnknownAlias
from retrieval.errors import (
    CollectionNotFound,
    InvalidCollectionName,
    InvalidDocument,
    InvalidQuery,
    RetrievalBusy,
    RetrievalError,
)
from retrieval.errors import MissingDependency as RetrievalMissingDependency

log = logging.getLogger("loragate.http")


@dataclass(frozen=True)
class ErrorInfo:
    status_code: int
    message: str
    type: str
    code: str | None = None
    param: str | None = None
    retry_after_s: int | None = None

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)} if self.retry_after_s else {}


# (status, type, code) per error of the other packages; the first matching class wins, so
# each package's base class comes after its subclasses.
_PACKAGE_ERRORS: tuple[tuple[type[Exception], int, str, str], ...] = (
    (InvalidAdapter, 400, "invalid_request_error", "invalid_adapter"),
    (UnknownAdapter, 404, "invalid_request_error", "adapter_not_found"),
    (RolloutError, 409, "invalid_request_error", "rollout_conflict"),
    (ExperimentConflict, 409, "invalid_request_error", "experiment_conflict"),
    (ExperimentError, 400, "invalid_request_error", "invalid_experiment"),
    (EngineUnavailable, 503, "service_unavailable", "engine_unavailable"),
    (EngineTimeout, 504, "timeout", "engine_timeout"),
    (EngineStreamBroken, 502, "upstream_error", "engine_stream_broken"),
    (AdapterError, 500, "internal_error", "adapter_error"),
    (CollectionNotFound, 404, "invalid_request_error", "collection_not_found"),
    (InvalidCollectionName, 400, "invalid_request_error", "invalid_collection_name"),
    (InvalidDocument, 400, "invalid_request_error", "invalid_document"),
    (InvalidQuery, 400, "invalid_request_error", "invalid_query"),
    (RetrievalMissingDependency, 503, "service_unavailable", "retrieval_unavailable"),
    (RetrievalBusy, 503, "service_unavailable", "retrieval_busy"),
    (RetrievalError, 500, "internal_error", "retrieval_error"),
    (UnknownAlias, 404, "invalid_request_error", "alias_not_found"),
    (MonitorError, 500, "internal_error", "monitor_error"),
    (ConfigError, 500, "internal_error", "invalid_config"),
)

STORE_RETRY_AFTER_S = 5
_HTTP_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}


def describe(exc: Exception) -> ErrorInfo:
    """Status, type and message for any error the gateway can raise."""
    if isinstance(exc, GatewayError):
        return ErrorInfo(exc.status_code, exc.message, exc.error_type, exc.code, exc.param,
                         retry_after_s=exc.retry_after_s)  # fmt: skip
    if isinstance(exc, StoreBusy):
        return ErrorInfo(503, exc.message, "service_unavailable", "store_busy",
                         retry_after_s=exc.retry_after_s)  # fmt: skip
    if isinstance(exc, EngineRejected):
        kind = "invalid_request_error" if exc.status_code < 500 else "upstream_error"
        return ErrorInfo(exc.status_code, exc.message, kind, None, exc.param)
    for error_class, status, kind, code in _PACKAGE_ERRORS:
        if isinstance(exc, error_class):
            retry = getattr(exc, "retry_after_s", None)
            param = getattr(exc, "param", None)
            return ErrorInfo(status, str(exc), kind, code, param, retry_after_s=retry)
    if isinstance(exc, HTTPException):
        return _from_http_exception(exc)
    if isinstance(exc, RecursionError):
        # msgspec decodes recursively: a body of 100k nested brackets ends here, not as a
        # decode error. Nothing else in the gateway recurses on what a client sends.
        return ErrorInfo(400, "The JSON body is nested too deeply.", "invalid_request_error",
                         "invalid_json")  # fmt: skip
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ErrorInfo(507, "The server's disk is full; nothing was changed. Retry once an "
                         "operator has freed space.", "service_unavailable",
                         "insufficient_storage")  # fmt: skip
    if isinstance(exc, DBAPIError) and is_conflict(exc):
        # A write that lost to a concurrent one and was not retried where it was made:
        # nothing was written, and sending it again succeeds (never a bare 500).
        return ErrorInfo(503, "The store met a concurrent write and recorded nothing; send "
                         "it again.", "service_unavailable", "store_busy",
                         retry_after_s=1)  # fmt: skip
    if isinstance(exc, UNAVAILABLE):
        return ErrorInfo(503, "The store is unavailable; retry shortly.", "service_unavailable",
                         "store_unavailable", retry_after_s=STORE_RETRY_AFTER_S)  # fmt: skip
    return ErrorInfo(500, "Internal server error.", "internal_error")


def _from_http_exception(exc: HTTPException) -> ErrorInfo:
    status = exc.status_code
    kind = _HTTP_TYPES.get(status, "invalid_request_error" if status < 500 else "internal_error")
    if isinstance(exc, ValidationException):
        return _from_validation(exc)
    message = exc.detail or "Request failed."
    if status == 413:
        return ErrorInfo(413, "Request body is too large.", kind, "request_too_large")
    if isinstance(exc.__cause__, SerializationException):
        return ErrorInfo(400, f"Could not parse the JSON body: {message}", kind, "invalid_json")
    return ErrorInfo(status, message, kind)


def _from_validation(exc: ValidationException) -> ErrorInfo:
    extra = exc.extra if isinstance(exc.extra, list) else []
    first = extra[0] if extra and isinstance(extra[0], dict) else {}
    message = str(first.get("message") or exc.detail)
    param = first.get("key")
    if param in (None, "", "body", "data"):
        param = _param_from_message(message)
    return ErrorInfo(400, message, "invalid_request_error", None, param)


def _param_from_message(message: str) -> str | None:
    # msgspec names the field as `$.messages[0].role`; OpenAI's param is the dotted path.
    if "`$." in message:
        path = message.split("`$.", 1)[1].split("`", 1)[0]
        return path
    if "required field `" in message:
        return message.split("required field `", 1)[1].split("`", 1)[0]
    return None


def error_response(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    info = describe(exc)
    if info.status_code >= 500:
        log.error(
            "request failed",
            extra={"path": request.url.path, "status": info.status_code, "error": info.message},
            exc_info=info.type == "internal_error",
        )
    else:
        log.info(
            "request refused",
            extra={"path": request.url.path, "status": info.status_code, "error": info.message},
        )
    return Response(content=info.body(), status_code=info.status_code, headers=info.headers())


EXCEPTION_HANDLERS = {Exception: error_response}
