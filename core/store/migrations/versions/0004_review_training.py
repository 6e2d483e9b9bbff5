"""review queue, remembered dataset splits, training runs

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("top_score", sa.Float(), nullable=True))
    op.create_table(
        "review_items",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("completion_id", sa.String(64), nullable=False, unique=True),
        sa.Column("alias", sa.String(200), nullable=False),
        sa.Column("served_model", sa.String(200), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("correction", sa.Text(), nullable=True),
        sa.Column("reviewer", sa.String(200), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
    )
    for column in ("alias", "state", "created_at", "decided_at"):
        op.create_index(f"ix_review_items_{column}", "review_items", [column])
    op.create_table(
        "dataset_splits",
        sa.Column("alias", sa.String(200), primary_key=True),
        sa.Column("completion_id", sa.String(64), primary_key=True),
        sa.Column("split", sa.String(16), nullable=False),
        sa.Column("stratum", sa.String(64), nullable=False),
        sa.Column("example", sa.JSON(), nullable=True),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_dataset_splits_split", "dataset_splits", ["split"])
    op.create_table(
        "training_runs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("alias", sa.String(200), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("trigger", sa.String(32), nullable=False),
        sa.Column("worker", sa.String(200), nullable=False),
        sa.Column("approved_examples", sa.Integer(), nullable=False),
        sa.Column("snapshot", sa.String(1024), nullable=True),
        sa.Column("candidate", sa.String(128), nullable=True),
        sa.Column("report", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_training_runs_alias", "training_runs", ["alias"])
    op.create_index("ix_training_runs_state", "training_runs", ["state"])


def downgrade() -> None:
    for table in ("training_runs", "dataset_splits", "review_items"):
        op.drop_table(table)
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("top_score")
