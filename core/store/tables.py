"""Tables written by the gateway: API keys and the conversation log."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    scope: Mapped[str] = mapped_column(String(16))
    # sha256 of the whole key. Keys carry 256 random bits, so a fast hash is enough: there is
    # nothing to brute-force that a slow KDF would protect.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The key's own limits (gateway.quota_gate); null means the quota_default_* setting applies.
    requests_per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tokens_per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    concurrent_streams: Mapped[int | None] = mapped_column(Integer, nullable=True)
    monthly_tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    feedback_per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    searches_per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)


class Conversation(Base):
    """One served chat completion: a turn of a conversation, written once, whole."""

    __tablename__ = "conversations"
    # A key's own conversations, grouped by conversation (the chat page's history list).
    __table_args__ = (
        Index("ix_conversations_key_conversation", "api_key_id", "conversation_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the completion id
    conversation_id: Mapped[str | None] = mapped_column(String(200), index=True, nullable=True)
    api_key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    requested_model: Mapped[str] = mapped_column(String(200))
    served_model: Mapped[str] = mapped_column(String(200))
    stream: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), index=True)  # ok | error | cancelled
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    request: Mapped[dict[str, Any]] = mapped_column(JSON)  # messages and sampling params
    response: Mapped[list[Any]] = mapped_column(JSON)  # one entry per choice
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    latency_ms: Mapped[float] = mapped_column(Float, default=0.0)
    ttft_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    # Grounding: ids of the chunks given to the model, and how far the answer rests on them.
    context: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    groundedness: Mapped[float | None] = mapped_column(Float, nullable=True)
    top_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    # The A/B experiment arm that answered, if the alias was in one (adapters/experiments.py).
    experiment_id: Mapped[int | None] = mapped_column(Integer, index=True, nullable=True)
    arm: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True
    )


class ResponseOwner(Base):
    """Which key created a Responses API id, and which vLLM replica keeps it (vLLM stores
    responses in its own memory): reads and cancels go there, for that key only."""

    __tablename__ = "response_owners"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the response id
    api_key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)  # None: auth off
    engine_url: Mapped[str] = mapped_column(String(500))
    served_model: Mapped[str] = mapped_column(String(200))  # what the client was told
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Feedback(Base):
    """A user's or rule's verdict on one completion; one row per completion and key."""

    __tablename__ = "feedback"
    __table_args__ = (UniqueConstraint("completion_id", "api_key_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    completion_id: Mapped[str] = mapped_column(String(64), index=True)
    api_key_id: Mapped[str] = mapped_column(String(32))  # "" when auth is off
    served_model: Mapped[str] = mapped_column(String(200), index=True)
    score: Mapped[int | None] = mapped_column(Integer, nullable=True)
    polarity: Mapped[str | None] = mapped_column(String(16), nullable=True)
    correction: Mapped[str | None] = mapped_column(Text, nullable=True)
    flag: Mapped[str | None] = mapped_column(String(64), nullable=True)
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True
    )
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ReviewItem(Base):
    """A flagged completion waiting for (or past) an operator's verdict; one per completion.

    ``reasons`` accumulates every rule that flagged it, each with its detail, so a
    completion flagged twice (say low groundedness, then a thumbs-down) is reviewed once.
    """

    __tablename__ = "review_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    completion_id: Mapped[str] = mapped_column(String(64), unique=True)
    alias: Mapped[str] = mapped_column(String(200), index=True)
    served_model: Mapped[str] = mapped_column(String(200))
    reasons: Mapped[list[Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), index=True)  # pending | approved | rejected
    # The reply to train on: the user's correction, as the operator may have edited it. Empty
    # on an approved item means the answer as served was judged good.
    correction: Mapped[str | None] = mapped_column(Text, nullable=True)
    reviewer: Mapped[str | None] = mapped_column(String(200), nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True
    )
    decided_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True, index=True
    )
