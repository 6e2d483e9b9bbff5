"""which key created each Responses API id, and the vLLM replica that keeps it

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "response_owners",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("api_key_id", sa.String(32), nullable=True),
        sa.Column("engine_url", sa.String(500), nullable=False),
        sa.Column("served_model", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("response_owners")
