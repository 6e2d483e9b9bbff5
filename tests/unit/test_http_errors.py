"""The one error table: every error class maps to the right status and OpenAI shape."""

from __future__ import annotations

import pytest
from litestar.exceptions import ClientException, NotFoundException, SerializationException

from adapters.errors import (
    AdapterError,
    EngineRejected,
    EngineStreamBroken,
    EngineTimeout,
    EngineUnavailable,
)
from core.errors import StoreBusy
from gateway.errors import (
    AuthenticationFailed,
    Conflict,
    ContextLengthExceeded,
    InvalidRequest,
    ModelNotFound,
    PermissionDenied,
)
from gateway.http_errors import describe
from retrieval.errors import RetrievalBusy


@pytest.mark.parametrize(
    ("error", "status", "kind", "code"),
    [
        (InvalidRequest("bad", param="n"), 400, "invalid_request_error", None),
        (ContextLengthExceeded("long"), 400, "invalid_request_error", "context_length_exceeded"),
        (AuthenticationFailed("who"), 401, "authentication_error", "invalid_api_key"),
        (PermissionDenied("no"), 403, "permission_error", "permission_denied"),
        (ModelNotFound("x"), 404, "invalid_request_error", "model_not_found"),
        (Conflict("changed"), 409, "invalid_request_error", "conflict"),
        (EngineUnavailable("down"), 503, "service_unavailable", "engine_unavailable"),
        (StoreBusy("again"), 503, "service_unavailable", "store_busy"),
        (RetrievalBusy("queue full"), 503, "service_unavailable", "retrieval_busy"),
        (EngineTimeout("slow"), 504, "timeout", "engine_timeout"),
        (EngineStreamBroken("cut"), 502, "upstream_error", "engine_stream_broken"),
        (EngineRejected(400, "vllm says no"), 400, "invalid_request_error", None),
        (AdapterError("other"), 500, "internal_error", "adapter_error"),
        (NotFoundException(), 404, "invalid_request_error", None),
        (RuntimeError("secret detail"), 500, "internal_error", None),
    ],
)
def test_errors_map_to_status_and_type(
    error: Exception, status: int, kind: str, code: str | None
) -> None:
    info = describe(error)
    assert (info.status_code, info.type, info.code) == (status, kind, code)
    assert set(info.body()["error"]) == {"message", "type", "param", "code"}


def test_unexpected_errors_do_not_leak_their_text() -> None:
    assert "secret" not in describe(RuntimeError("secret detail")).message


def test_only_unavailable_engines_ask_to_retry() -> None:
    assert describe(EngineUnavailable("down")).headers() == {"Retry-After": "5"}
    assert describe(EngineTimeout("slow")).headers() == {}


def test_a_busy_store_asks_to_send_it_again() -> None:
    assert describe(StoreBusy("again")).headers() == {"Retry-After": "1"}
    assert describe(RetrievalBusy("queue full")).headers() == {"Retry-After": "1"}
    assert describe(InvalidRequest("bad")).headers() == {}


def test_bad_json_is_invalid_json() -> None:
    wrapped = ClientException("Input data was truncated")
    wrapped.__cause__ = SerializationException("Input data was truncated")
    assert describe(wrapped).code == "invalid_json"
