"""The public feedback endpoint: a chat key rates, corrects or flags its own completions."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, post
from litestar.openapi.datastructures import ResponseSpec

from gateway.action_limits import check_action
from gateway.feedback import FeedbackIn, FeedbackService
from gateway.quota_gate import QuotaGate


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
