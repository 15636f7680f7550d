"""Runs remember the Slack request that started them (a retried request starts nothing new)
and since when their status message is being posted (so that it is posted once).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

from bot.store import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMNs and indexes: a unique *constraint* would make Alembic rebuild the table
    # on SQLite, which its foreign key (rerun_of) refuses once a rerun exists.
    op.add_column("runs", sa.Column("request_key", sa.String(128), nullable=True))
    op.add_column("runs", sa.Column("status_posting_since", UTCDateTime(), nullable=True))
    op.create_index("uq_runs_request_key", "runs", ["request_key"], unique=True)
    op.create_index("ix_runs_engine", "runs", ["state", "engine_type", "engine_id"])


def downgrade() -> None:
    op.drop_index("ix_runs_engine", table_name="runs")
    op.drop_index("uq_runs_request_key", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("status_posting_since")
        batch.drop_column("request_key")
