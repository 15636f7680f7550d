"""Many workspaces (issue 18, SPEC §10): installations, OAuth states, workspaces, refreshes.

- `slack_installations`, `slack_bots`, `slack_oauth_states`: slack-sdk's async SQLAlchemy
  installation and state stores, with the tables those stores define (built here from the
  stores' own table builders, so the columns are exactly what they read and write;
  `tests/unit/test_workspaces.py` fails if a slack-sdk upgrade changes them).
- `workspaces`: one row per Slack workspace the bot serves in distribution mode: where its
  installation is (`enterprise_id`, `enterprise_install`, for Enterprise Grid org-wide
  installs) and the Retell API key it connected, encrypted (`retell_key`; `retell_key_hint` is
  its last four characters, what App Home shows).
- `token_refreshes`: a lease per installation while one replica refreshes its rotating token
  (a refresh token is single-use: two replicas refreshing at once would lock one out).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op
from slack_sdk.oauth.installation_store.sqlalchemy import SQLAlchemyInstallationStore
from slack_sdk.oauth.state_store.sqlalchemy import SQLAlchemyOAuthStateStore

from bot.store import UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

SLACK_TABLES = ("slack_installations", "slack_bots", "slack_oauth_states")


def slack_metadata() -> sa.MetaData:
    """slack-sdk's three tables, as its stores define them."""
    metadata = sa.MetaData()
    SQLAlchemyInstallationStore.build_installations_table(metadata, "slack_installations")
    SQLAlchemyInstallationStore.build_bots_table(metadata, "slack_bots")
    SQLAlchemyOAuthStateStore.build_oauth_states_table(metadata, "slack_oauth_states")
    return metadata


def upgrade() -> None:
    slack_metadata().create_all(op.get_bind())
    op.create_table(
        "workspaces",
        sa.Column("team_id", sa.String(32), primary_key=True),
        sa.Column("enterprise_id", sa.String(32), nullable=True),
        sa.Column("enterprise_install", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("installed_at", UTCDateTime(), nullable=True),
        sa.Column("retell_key", sa.Text(), nullable=True),
        sa.Column("retell_key_hint", sa.String(8), nullable=True),
        sa.Column("retell_key_by", sa.String(32), nullable=True),
        sa.Column("retell_key_at", UTCDateTime(), nullable=True),
    )
    op.create_table(
        "token_refreshes",
        sa.Column("installation", sa.String(80), primary_key=True),
        sa.Column("holder", sa.String(36), nullable=False),
        sa.Column("until", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("token_refreshes")
    op.drop_table("workspaces")
    slack_metadata().drop_all(op.get_bind())
