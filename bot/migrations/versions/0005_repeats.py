"""Repeat groups (`repeat=N`) and the once-only **Show failures** marker.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

from bot.store import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMNs (see 0003): no table rebuild on SQLite, hence no foreign key on
    # `repeat_of` (like `schedule_id`): SQLite cannot add one to an existing table.
    op.add_column("runs", sa.Column("repeats", sa.Integer(), nullable=False, server_default="1"))
    op.add_column("runs", sa.Column("repeat_of", sa.Integer(), nullable=True))
    op.add_column("runs", sa.Column("failures_shown_at", UTCDateTime(), nullable=True))
    op.create_index("ix_runs_repeat_of", "runs", ["repeat_of"])


def downgrade() -> None:
    op.drop_index("ix_runs_repeat_of", "runs")
    op.drop_column("runs", "failures_shown_at")
    op.drop_column("runs", "repeat_of")
    op.drop_column("runs", "repeats")
