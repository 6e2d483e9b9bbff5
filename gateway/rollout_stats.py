"""What the rollout gates compare: one version's traffic and feedback over a window, read
from the conversation log and the feedback table."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from adapters.rollout import VersionStats
from gateway.store.db import Database
from gateway.store.tables import Conversation, Feedback

MAX_LATENCY_SAMPLES = 50_000


async def version_stats(
    db: Database, version: str, since: datetime, until: datetime
) -> VersionStats:
    async with db.sessions() as session:
        rows = (
            await session.execute(
                select(Conversation.status, Conversation.latency_ms, Conversation.groundedness)
                .where(
                    Conversation.served_model == version,
                    Conversation.created_at >= since,
                    Conversation.created_at < until,
                    Conversation.status != "cancelled",
                )
                .limit(MAX_LATENCY_SAMPLES)
            )
        ).all()
        polarities = list(
            await session.scalars(
                select(Feedback.polarity).where(
                    Feedback.served_model == version,
                    Feedback.created_at >= since,
                    Feedback.created_at < until,
                    Feedback.polarity.is_not(None),
                )
            )
        )
    latencies = sorted(row.latency_ms for row in rows if row.status == "ok")
    grounded = [row.groundedness for row in rows if row.groundedness is not None]
    return VersionStats(
        requests=len(rows),
        errors=sum(1 for row in rows if row.status == "error"),
        p95_latency_ms=latencies[int(0.95 * (len(latencies) - 1))] if latencies else 0.0,
        feedback=len(polarities),
        negative=sum(1 for polarity in polarities if polarity == "negative"),
        grounded=len(grounded),
        mean_groundedness=sum(grounded) / len(grounded) if grounded else 0.0,
    )
