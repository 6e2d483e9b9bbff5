"""per-key quotas: requests and tokens per minute, concurrent streams, monthly tokens

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("requests_per_minute", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("tokens_per_minute", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("concurrent_streams", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("monthly_tokens", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        for column in ("requests_per_minute", "tokens_per_minute", "concurrent_streams",
                       "monthly_tokens"):  # fmt: skip
            batch.drop_column(column)
