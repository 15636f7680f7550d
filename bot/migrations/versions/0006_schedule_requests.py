"""A replayed `schedule add` or `report` (Slack's retry, a double press) creates nothing new.

Schedules remember the Slack request that created them, like runs do (0003); digests posted on
request leave their request's key in `handled_requests`.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

from bot.store import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN and a unique index, not a constraint (see 0003): no table rebuild.
    op.add_column("run_schedules", sa.Column("request_key", sa.String(128), nullable=True))
    op.create_index("uq_run_schedules_request_key", "run_schedules", ["request_key"], unique=True)
    op.create_table(
        "handled_requests",
        sa.Column("request_key", sa.String(128), primary_key=True),
        sa.Column("handled_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_handled_requests_handled_at", "handled_requests", ["handled_at"])


def downgrade() -> None:
    op.drop_index("ix_handled_requests_handled_at", table_name="handled_requests")
    op.drop_table("handled_requests")
    op.drop_index("uq_run_schedules_request_key", table_name="run_schedules")
    with op.batch_alter_table("run_schedules") as batch:
        batch.drop_column("request_key")
