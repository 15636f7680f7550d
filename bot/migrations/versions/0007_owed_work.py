"""What was promised to a requester is kept until it is done.

- A result's thread reply (the requester's mention) is owed until it is posted: the result and
  the mention are two Slack calls, and a process that died or was cancelled between them left
  the mention unposted for good. `runs.mention_pending` keeps it owed; the sweep posts it.
- A `run` command is recorded before it is acked (`acked_commands`) and forgotten once its run
  is recorded: a process killed in between lost an acked command; now a sweep starts it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

from bot.store import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "runs",
        sa.Column("mention_pending", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.create_table(
        "acked_commands",
        sa.Column("request_key", sa.String(128), primary_key=True),
        sa.Column("team_id", sa.String(32), nullable=False),
        sa.Column("channel_id", sa.String(32), nullable=False),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("response_url", sa.Text(), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("claimed_until", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_acked_commands_claimed_until", "acked_commands", ["claimed_until"])


def downgrade() -> None:
    op.drop_index("ix_acked_commands_claimed_until", table_name="acked_commands")
    op.drop_table("acked_commands")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("mention_pending")
