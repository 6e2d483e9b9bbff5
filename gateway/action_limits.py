"""Per-key limits on what is not a chat request: feedback posts and collection searches.

Each action has its own sliding 60 s window per key, in the quota gate's counters (memory or
Redis, shared by the workers as the chat quotas are), so rating an answer never costs a chat
request and a flood of ratings cannot starve chat. The limit is the key's own
``feedback_per_minute`` / ``searches_per_minute``, else the ``quota_default_*`` setting,
else the key's requests per minute: a key limited to 2 requests a minute posts 2 ratings
and runs 2 searches a minute too. Refusals are 429 ``rate_limit_error`` with
``Retry-After``. Operator flags (admin routes) count as feedback.
"""

from __future__ import annotations

from typing import Literal

from core.store.keys import Principal
from gateway.errors import RateLimited
from gateway.quota_gate import MINUTE_S, QuotaGate

Action = Literal["feedback", "searches"]


async def check_action(
    quotas: QuotaGate | None, principal: Principal | None, action: Action
) -> None:
    """Count one ``action`` of the principal's key, or raise ``RateLimited``."""
    if quotas is None or principal is None or principal.key_id is None:
        return  # auth off: nobody to count against
    quota = principal.quota.over(quotas.defaults)
    limit = getattr(quota, f"{action}_per_minute") or quota.requests_per_minute
    if limit is None:
        return
    wait = await quotas.counters.admit(f"{action}:{principal.key_id}", 1, limit, MINUTE_S)
    if wait:
        quotas.metrics.rate_limited.labels(action).inc()
        raise RateLimited(
            f"Rate limit reached: {limit} {'feedback posts' if action == 'feedback' else action} "
            "per minute.",
            limit=action,
            retry_after_s=wait,
        )
