"""Runs remember while a rerun of them is being started, and why their channel refused them.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

from bot.store import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("rerun_lock_until", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("channel_error", sa.String(64), nullable=True))
    op.create_index("ix_runs_rerun_of", "runs", ["rerun_of"])


def downgrade() -> None:
    op.drop_index("ix_runs_rerun_of", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("channel_error")
        batch.drop_column("rerun_lock_until")
