"""Schedules, per-case results and what a run fired by a schedule carries.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

from bot.store import UTCDateTime
from bot.suite import Engine, Suite

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMNs (see 0003): no table rebuild on SQLite.
    op.add_column("runs", sa.Column("suite_key", sa.String(32), nullable=True))
    op.add_column("runs", sa.Column("cases_recorded_at", UTCDateTime(), nullable=True))
    op.add_column("runs", sa.Column("schedule_id", sa.Integer(), nullable=True))
    op.add_column("runs", sa.Column("label", sa.String(80), nullable=True))
    op.add_column("runs", sa.Column("scheduled_for", UTCDateTime(), nullable=True))
    op.add_column("runs", sa.Column("notify", sa.String(16), nullable=True))
    op.add_column("runs", sa.Column("mention", sa.String(64), nullable=True))
    op.create_index("ix_runs_suite", "runs", ["channel_id", "suite_key", "finished_at"])
    _backfill_suite_keys()
    op.create_table(
        "run_schedules",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("team_id", sa.String(32), nullable=False),
        sa.Column("channel_id", sa.String(32), nullable=False),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(80), nullable=False),
        sa.Column("when_text", sa.String(200), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("engine_type", sa.String(32), nullable=True),
        sa.Column("engine_id", sa.String(128), nullable=True),
        sa.Column("engine_version", sa.Integer(), nullable=True),
        sa.Column("tests", sa.JSON(), nullable=True),
        sa.Column("case_count", sa.Integer(), nullable=False),
        sa.Column("report_days", sa.Integer(), nullable=True),
        sa.Column("notify", sa.String(16), nullable=False),
        sa.Column("mention", sa.String(64), nullable=True),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_fired_at", UTCDateTime(), nullable=True),
        sa.Column("last_run_id", sa.Integer(), nullable=True),
    )
    op.create_index("ix_run_schedules_channel", "run_schedules", ["team_id", "channel_id"])
    op.create_index("ix_run_schedules_user", "run_schedules", ["team_id", "user_id"])
    op.create_table(
        "case_results",
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id"), primary_key=True),
        sa.Column("case_id", sa.String(128), primary_key=True),
        sa.Column("name", sa.String(300), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
    )


def _backfill_suite_keys() -> None:
    """Runs from before this revision get their suite key, so the first result after the
    upgrade already compares with the last one before it."""
    runs = sa.table(
        "runs",
        sa.column("id", sa.Integer()),
        sa.column("engine_type", sa.String()),
        sa.column("engine_id", sa.String()),
        sa.column("engine_version", sa.Integer()),
        sa.column("case_ids", sa.JSON()),
        sa.column("suite_key", sa.String()),
    )
    connection = op.get_bind()
    query = sa.select(
        runs.c.id, runs.c.engine_type, runs.c.engine_id, runs.c.engine_version, runs.c.case_ids
    )
    for row in connection.execute(query).mappings().all():
        engine = Engine(row["engine_type"], row["engine_id"], row["engine_version"])
        suite = Suite(engine, tuple(row["case_ids"] or ()))
        connection.execute(
            sa.update(runs).where(runs.c.id == row["id"]).values(suite_key=suite.key)
        )


def downgrade() -> None:
    op.drop_table("case_results")
    op.drop_index("ix_run_schedules_user", table_name="run_schedules")
    op.drop_index("ix_run_schedules_channel", table_name="run_schedules")
    op.drop_table("run_schedules")
    op.drop_index("ix_runs_suite", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        for column in (
            "mention",
            "notify",
            "scheduled_for",
            "label",
            "schedule_id",
            "cases_recorded_at",
            "suite_key",
        ):
            batch.drop_column(column)
