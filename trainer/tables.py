"""Tables written by the trainer: the remembered dataset split, the training runs and the
scheduled re-evaluation scores."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class TrainerBase(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class SplitItem(TrainerBase):
    """Which side of an alias's split an example is on, for good. Rows are only ever added.

    Holdout rows keep the example as it was frozen, so scores stay comparable across
    versions; train rows record that a version learnt from it, so it never enters the holdout.
    """

    __tablename__ = "dataset_splits"

    alias: Mapped[str] = mapped_column(String(200), primary_key=True)
    completion_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    split: Mapped[str] = mapped_column(String(16), index=True)  # holdout | train
    stratum: Mapped[str] = mapped_column(String(64))
    example: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class TrainingRun(TrainerBase):
    """One attempt to turn an alias's approved examples into a published version."""

    __tablename__ = "training_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alias: Mapped[str] = mapped_column(String(200), index=True)
    # running | published | rejected | failed | skipped
    state: Mapped[str] = mapped_column(String(16), index=True)
    trigger: Mapped[str] = mapped_column(String(32))  # manual | new_examples | schedule
    worker: Mapped[str] = mapped_column(String(200), default="")
    approved_examples: Mapped[int] = mapped_column(Integer, default=0)
    snapshot: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    candidate: Mapped[str | None] = mapped_column(String(128), nullable=True)
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class EvalScore(TrainerBase):
    """One scheduled re-evaluation of a serving version: how it scores now on the alias's
    holdout (as it is served today) and on the probes, next to its reference score."""

    __tablename__ = "eval_scores"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alias: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[str] = mapped_column(String(200))
    computed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True
    )
    holdout_count: Mapped[int] = mapped_column(Integer)
    holdout_accuracy: Mapped[float] = mapped_column(Float)
    probe_accuracy: Mapped[float] = mapped_column(Float)
    groundedness: Mapped[float | None] = mapped_column(Float, nullable=True)
    # publish-time holdout accuracy, or (for the base model) its first scheduled score
    reference_accuracy: Mapped[float | None] = mapped_column(Float, nullable=True)
    degraded: Mapped[bool] = mapped_column(Boolean, default=False)
    report: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
