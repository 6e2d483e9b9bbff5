"""eval scores: scheduled re-evaluation of every serving version

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "eval_scores",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("alias", sa.String(200), nullable=False),
        sa.Column("version", sa.String(200), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("holdout_count", sa.Integer(), nullable=False),
        sa.Column("holdout_accuracy", sa.Float(), nullable=False),
        sa.Column("probe_accuracy", sa.Float(), nullable=False),
        sa.Column("groundedness", sa.Float(), nullable=True),
        sa.Column("reference_accuracy", sa.Float(), nullable=True),
        sa.Column("degraded", sa.Boolean(), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
    )
    op.create_index("ix_eval_scores_alias", "eval_scores", ["alias"])
    op.create_index("ix_eval_scores_computed_at", "eval_scores", ["computed_at"])


def downgrade() -> None:
    op.drop_table("eval_scores")
