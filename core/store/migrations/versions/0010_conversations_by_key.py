"""an index for a key's own conversations (the chat page's history list)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_conversations_key_conversation",
        "conversations",
        ["api_key_id", "conversation_id", "created_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_conversations_key_conversation", table_name="conversations")
