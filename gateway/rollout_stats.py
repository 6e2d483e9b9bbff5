"""What the rollout gates and the experiments compare, read from the conversation log and
the feedback table: one version's traffic and feedback over a window, and an experiment's
traffic and feedback per arm.

Each API key's ratings count up to ``per_key_cap`` per version (per arm for experiments),
its earliest first: one key rating its own answers over and over cannot steer a rollout or
decide an experiment. Ratings without a key (auth off) are not capped: there is nobody to
tell apart."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVarTuple

from sqlalchemy import Select, func, or_, select

from adapters.experiments import ArmCount
from adapters.rollout import VersionStats
from core.store.db import Database
from core.store.tables import Conversation, Feedback

MAX_LATENCY_SAMPLES = 50_000
Row = TypeVarTuple("Row")


def _capped(query: Select[*Row], *partition: Any, cap: int | None) -> Select[*Row]:
    """``query``'s polarities, at most ``cap`` per key (and per ``partition``)."""
    if cap is None:
        return query
    nth = func.row_number().over(
        partition_by=(Feedback.api_key_id, *partition), order_by=Feedback.id
    )
    ranked = query.add_columns(Feedback.api_key_id.label("key"), nth.label("nth")).subquery()
    kept = select(*[column for column in ranked.c if column.name not in ("key", "nth")])
    return kept.where(or_(ranked.c.nth <= cap, ranked.c.key == ""))


async def version_stats(
    db: Database, version: str, since: datetime, until: datetime, per_key_cap: int | None = None
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
        rated = select(Feedback.polarity).where(
            Feedback.served_model == version,
            Feedback.created_at >= since,
            Feedback.created_at < until,
            Feedback.polarity.is_not(None),
        )
        polarities = list(await session.scalars(_capped(rated, cap=per_key_cap)))
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


async def experiment_outcomes(
    db: Database, experiment_id: int, per_key_cap: int | None = None
) -> dict[str, ArmCount]:
    """Answers served and thumbs given per arm (neutral ratings left out)."""
    served_query = (
        select(Conversation.arm, func.count())
        .where(Conversation.experiment_id == experiment_id, Conversation.status == "ok")
        .group_by(Conversation.arm)
    )
    ratings = _capped(
        select(Conversation.arm, Feedback.polarity)
        .join(Feedback, Feedback.completion_id == Conversation.id)
        .where(
            Conversation.experiment_id == experiment_id,
            Feedback.polarity.in_(("positive", "negative")),
        ),
        Conversation.arm,
        cap=per_key_cap,
    ).subquery()
    rated_query = select(ratings.c.arm, ratings.c.polarity, func.count()).group_by(
        ratings.c.arm, ratings.c.polarity
    )
    async with db.sessions() as session:
        served: dict[str, int] = {
            str(arm): int(count) for arm, count in (await session.execute(served_query)).all()
        }
        rated: dict[str, dict[str, int]] = {}
        for arm, polarity, count in (await session.execute(rated_query)).all():
            rated.setdefault(str(arm), {})[str(polarity)] = int(count)
    return {
        arm: ArmCount(
            served=served.get(arm, 0),
            rated=sum(rated.get(arm, {}).values()),
            positive=rated.get(arm, {}).get("positive", 0),
        )
        for arm in set(served) | set(rated)
    }
