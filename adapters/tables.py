"""Tables written by the adapters package: versions, aliases, rollouts and their history."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; they were written in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class AdapterBase(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class AdapterVersion(AdapterBase):
    """An immutable adapter version, ``<alias>-v<N>``; names are never reused."""

    __tablename__ = "adapter_versions"
    __table_args__ = (UniqueConstraint("alias", "number"),)

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    alias: Mapped[str] = mapped_column(String(64), index=True)
    number: Mapped[int] = mapped_column(Integer)
    parent: Mapped[str | None] = mapped_column(String(128), nullable=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    rank: Mapped[int] = mapped_column(Integer)
    target_modules: Mapped[list[Any]] = mapped_column(JSON)
    base_model: Mapped[str] = mapped_column(String(512), default="")
    path: Mapped[str] = mapped_column(String(1024))
    size_bytes: Mapped[int] = mapped_column(Integer, default=0)
    # candidate → canary → live → retired, or rolled_back
    state: Mapped[str] = mapped_column(String(16), default="candidate")
    eval_report: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Alias(AdapterBase):
    __tablename__ = "aliases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    live_version: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # Bumped on every change to the alias, its versions or its rollout.
    generation: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Rollout(AdapterBase):
    __tablename__ = "rollouts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alias: Mapped[str] = mapped_column(String(64), index=True)
    candidate: Mapped[str] = mapped_column(String(128))
    baseline: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # running | paused | promoted | rolled_back | aborted
    state: Mapped[str] = mapped_column(String(16), index=True)
    steps: Mapped[list[Any]] = mapped_column(JSON)  # weights in percent, e.g. [10, 25, 50, 100]
    step: Mapped[int] = mapped_column(Integer, default=0)
    weight: Mapped[float] = mapped_column(Float, default=0.0)  # candidate share, 0..1
    failures: Mapped[int] = mapped_column(Integer, default=0)
    step_started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RolloutEvent(AdapterBase):
    """History: every step, gate result, pause, promotion and rollback."""

    __tablename__ = "rollout_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    rollout_id: Mapped[int] = mapped_column(Integer, index=True)
    kind: Mapped[str] = mapped_column(String(32))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Experiment(AdapterBase):
    """An A/B experiment on one alias: traffic split evenly across arms, sticky per
    conversation, until the sequential test on positive feedback decides or a limit is hit."""

    __tablename__ = "experiments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alias: Mapped[str] = mapped_column(String(64), index=True)
    # running | decided | stopped | promoted
    state: Mapped[str] = mapped_column(String(16), index=True)
    # [{"name", "version" (None: the base model), "retrieval" (None | False | {"collection"}),
    #   "previous_state" (of the version, restored when the experiment ends)}]
    arms: Mapped[list[Any]] = mapped_column(JSON)
    max_samples: Mapped[int] = mapped_column(Integer)  # ratings per arm
    auto_promote: Mapped[bool] = mapped_column(Boolean, default=False)
    winner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    results: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # last look
    min_p_values: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # per arm, so far
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    ends_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
