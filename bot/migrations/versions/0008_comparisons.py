"""Comparing two engine versions and pass-rate gates (SPEC §9).

- `runs.candidate_version`: set on the lead of a comparison group, the version B it compares
  its own (A) with; the group's B runs carry it as their `engine_version`.
- `runs.regressions`: how many cases a delivered comparison found regressed, for digests.
- `runs.min_pass` and `run_schedules.min_pass`: the `min_pass=` gate, a percentage.
- `run_schedules.compares` and `run_schedules.candidate_version`: a comparison schedule; no
  candidate version means the engine's latest at each firing.
- `case_results.explanation`: Retell's reason for a failed or errored case, kept so that a
  comparison's result can say why each regressed case fails on B without reading Retell again.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("candidate_version", sa.Integer(), nullable=True))
    op.add_column("runs", sa.Column("min_pass", sa.Float(), nullable=True))
    op.add_column("runs", sa.Column("regressions", sa.Integer(), nullable=True))
    op.add_column("run_schedules", sa.Column("min_pass", sa.Float(), nullable=True))
    op.add_column(
        "run_schedules",
        sa.Column("compares", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column("run_schedules", sa.Column("candidate_version", sa.Integer(), nullable=True))
    op.add_column("case_results", sa.Column("explanation", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("case_results") as batch:
        batch.drop_column("explanation")
    with op.batch_alter_table("run_schedules") as batch:
        batch.drop_column("candidate_version")
        batch.drop_column("compares")
        batch.drop_column("min_pass")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("regressions")
        batch.drop_column("min_pass")
        batch.drop_column("candidate_version")
