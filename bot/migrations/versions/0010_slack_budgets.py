"""One Slack budget for all replicas (issue 17): a row per method family and scope.

`chat.update` is limited per workspace and `chat.postMessage` per channel, so the scope is a
team or a channel id. The row holds the token bucket (`tokens`, counted at `counted_at`), the
adaptive allowance (`base_per_minute` from `since`, growing back after a 429) and the block a
429's `Retry-After` sets.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

from bot.store import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "slack_budgets",
        sa.Column("family", sa.String(32), primary_key=True),
        sa.Column("scope", sa.String(64), primary_key=True),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("counted_at", UTCDateTime(), nullable=False),
        sa.Column("base_per_minute", sa.Float(), nullable=False),
        sa.Column("since", UTCDateTime(), nullable=False),
        sa.Column("blocked_until", UTCDateTime(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("slack_budgets")
