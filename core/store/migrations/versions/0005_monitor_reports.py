"""monitor reports: quality KPIs and drift per alias over time

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "monitor_reports",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("alias", sa.String(200), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("live_version", sa.String(200), nullable=False),
        sa.Column("quality", sa.JSON(), nullable=False),
        sa.Column("drift", sa.JSON(), nullable=True),
        sa.Column("drift_detected", sa.Boolean(), nullable=False),
        sa.Column("triggers", sa.JSON(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
    )
    op.create_index("ix_monitor_reports_alias", "monitor_reports", ["alias"])
    op.create_index("ix_monitor_reports_computed_at", "monitor_reports", ["computed_at"])


def downgrade() -> None:
    op.drop_table("monitor_reports")
