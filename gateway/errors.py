"""Gateway errors.

Every error a client can see is a ``GatewayError`` (or an error of another loragate package,
``core.errors.StoreBusy`` among them, mapped in ``gateway.http_errors``) and leaves as an
OpenAI-shaped body::

    GatewayError
    ├── InvalidRequest          400  invalid_request_error
    │   └── ContextLengthExceeded   400  context_length_exceeded
    ├── AuthenticationFailed    401  invalid_api_key
    ├── PermissionDenied        403  permission_denied
    ├── NotFound                404  not_found
    │   ├── ModelNotFound           404  model_not_found
    │   └── ResponseNotFound        404  (code null, as vLLM's: an unknown or another key's id)
    ├── Conflict                409  conflict: the resource changed since the client read it
    ├── PayloadTooLarge         413  request_too_large
    ├── RateLimited             429  rate_limit_exceeded (with Retry-After)
    │   └── QuotaExhausted          429  insufficient_quota (the monthly token budget)
    └── ClientDisconnected      499  client_closed_request (logged; nobody reads it)
"""

from __future__ import annotations

import math


class GatewayError(Exception):
    status_code: int = 500
    error_type: str = "internal_error"
    code: str | None = None
    retry_after_s: int | None = None  # sent as Retry-After when set

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class InvalidRequest(GatewayError):
    status_code = 400
    error_type = "invalid_request_error"


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"


class AuthenticationFailed(GatewayError):
    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(GatewayError):
    status_code = 403
    error_type = "permission_error"
    code = "permission_denied"


class NotFound(GatewayError):
    status_code = 404
    error_type = "invalid_request_error"
    code: str | None = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class ResponseNotFound(NotFound):
    """A Responses API id this key did not create: worded, typed and coded exactly as vLLM's
    own 404 for an unknown id, so a key cannot tell another key's ids from unknown ones."""

    code = None

    def __init__(self, response_id: str) -> None:
        super().__init__(f"Response with id '{response_id}' not found.", param="response_id")


class Conflict(GatewayError):
    """Nothing was changed: the client acted on a version of the resource that is gone; it
    must read it again and decide on what it sees then."""

    status_code = 409
    error_type = "invalid_request_error"
    code = "conflict"


class PayloadTooLarge(GatewayError):
    status_code = 413
    error_type = "invalid_request_error"
    code = "request_too_large"


class RateLimited(GatewayError):
    status_code = 429
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, limit: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.limit = limit  # rpm | tpm | concurrency | budget: the metric label
        self.retry_after_s = max(1, math.ceil(retry_after_s))


class QuotaExhausted(RateLimited):
    code = "insufficient_quota"


class ClientDisconnected(GatewayError):
    status_code = 499
    error_type = "invalid_request_error"
    code = "client_closed_request"
