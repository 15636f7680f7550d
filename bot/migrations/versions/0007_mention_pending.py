"""A result's thread reply (the requester's mention) is owed until it is posted.

The result and the mention are two Slack calls; a process that died or was cancelled between
them left the mention unposted for good. `mention_pending` keeps it owed, and the sweep posts it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "runs",
        sa.Column("mention_pending", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("mention_pending")
