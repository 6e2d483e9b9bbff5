"""The monitor's table: one report per alias per run, kept for ``monitor_retention_days``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class MonitorBase(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class MonitorReport(MonitorBase):
    __tablename__ = "monitor_reports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alias: Mapped[str] = mapped_column(String(200), index=True)
    computed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True
    )
    live_version: Mapped[str] = mapped_column(String(200))
    # {version: {requests, errors, feedback, positive_ratio, groundedness, idk_rate, ...}}
    quality: Mapped[dict[str, Any]] = mapped_column(JSON)
    # DriftResult as a dict, or null when a window had too few queries (see ``note``).
    drift: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    drift_detected: Mapped[bool] = mapped_column(Boolean, default=False)
    # Why this alias should be retrained: "drift", "low_positive_ratio", ... (empty: fine).
    triggers: Mapped[list[Any]] = mapped_column(JSON)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
