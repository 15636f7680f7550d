"""The runs table.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

from bot.store import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("team_id", sa.String(32), nullable=False),
        sa.Column("channel_id", sa.String(32), nullable=False),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("rerun_of", sa.Integer(), sa.ForeignKey("runs.id"), nullable=True),
        sa.Column("engine_type", sa.String(32), nullable=False),
        sa.Column("engine_id", sa.String(128), nullable=False),
        sa.Column("engine_version", sa.Integer(), nullable=True),
        sa.Column("case_ids", sa.JSON(), nullable=False),
        sa.Column("case_count", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("batch_id", sa.String(128), nullable=True, unique=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("passed", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("errored", sa.Integer(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("status_ts", sa.String(32), nullable=True),
        sa.Column("shown_counts", sa.String(64), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("reported_at", UTCDateTime(), nullable=True),
        sa.Column("next_check_at", UTCDateTime(), nullable=True),
        sa.Column("check_interval", sa.Float(), nullable=False),
        sa.Column("checks", sa.Integer(), nullable=False),
        sa.Column("claim", sa.String(36), nullable=True),
        sa.Column("claimed_until", UTCDateTime(), nullable=True),
        sa.Column("delivery_attempts", sa.Integer(), nullable=False),
    )
    op.create_index("ix_runs_due", "runs", ["state", "next_check_at"])
    op.create_index("ix_runs_channel", "runs", ["channel_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_runs_channel", table_name="runs")
    op.drop_index("ix_runs_due", table_name="runs")
    op.drop_table("runs")
