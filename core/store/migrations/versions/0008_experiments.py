"""experiments: A/B experiments per alias, and the arm each conversation was served by

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("alias", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("arms", sa.JSON(), nullable=False),
        sa.Column("max_samples", sa.Integer(), nullable=False),
        sa.Column("auto_promote", sa.Boolean(), nullable=False),
        sa.Column("winner", sa.String(64), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("results", sa.JSON(), nullable=True),
        sa.Column("min_p_values", sa.JSON(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_experiments_alias", "experiments", ["alias"])
    op.create_index("ix_experiments_state", "experiments", ["state"])
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("experiment_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("arm", sa.String(64), nullable=True))
    op.create_index("ix_conversations_experiment_id", "conversations", ["experiment_id"])


def downgrade() -> None:
    op.drop_index("ix_conversations_experiment_id", "conversations")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("arm")
        batch.drop_column("experiment_id")
    op.drop_table("experiments")
