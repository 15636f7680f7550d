"""Publishing a tested agent version from a result (SPEC §9).

`agent_publishes` has one row per result and agent: the first press of **Publish** inserts it
before Retell is called, so a double click, or two replicas handling the same press, publish
once. A publish Retell refused is deleted again, so it can be pressed once more.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

from bot.store import UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agent_publishes",
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id"), primary_key=True),
        sa.Column("agent_id", sa.String(128), primary_key=True),
        sa.Column("agent_version", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("pressed_at", UTCDateTime(), nullable=False),
        sa.Column("published_at", UTCDateTime(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("agent_publishes")
