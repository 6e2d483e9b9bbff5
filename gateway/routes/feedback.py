"""The public feedback endpoint: a chat key rates, corrects or flags its own completions."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, post
from litestar.openapi.datastructures import ResponseSpec

from gateway.action_limits import check_action
from gateway.feedback import FeedbackIn, FeedbackService
from gateway.quota_gate import QuotaGate


class FeedbackRoutes(Controller):
    """Feedback on a completion (chat)."""

    path = "/v1/feedback"
    opt = {"scope": "chat"}
    tags = ["openai"]

    @post(
        "/",
        status_code=200,
        responses={
            202: ResponseSpec(
                dict[str, Any],
                description="Queued: the store is down; "
                "it is journaled and applied, checks included, later.",
            )
        },
    )
    async def submit_feedback(
        self,
        request: Request[Any, Any, Any],
        data: FeedbackIn,
        feedback: FeedbackService,
        quotas: QuotaGate,
    ) -> Response[dict[str, Any]]:
        """Rate a completion (thumbs or stars), correct it, or flag it.

        Limited per key (``feedback_per_minute``): 429 ``rate_limit_error`` with Retry-After."""
        await check_action(quotas, request.state.principal, "feedback")
        result = await feedback.submit(data, request.state.principal)
        return Response(result, status_code=202 if result["queued"] else 200)
