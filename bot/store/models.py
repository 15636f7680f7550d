"""The bot's tables as SQLAlchemy models, and the column expressions several queries share.

The `runs` table is the source of truth for every run; `RunState` names its states.
"""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    and_,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.elements import ColumnElement

from bot.suite import Engine, Suite


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware datetimes on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class RunState(enum.StrEnum):
    STARTING = "starting"  # asked for; the batch is being created at Retell
    RUNNING = "running"  # the batch exists; the bot follows it up
    COMPLETE = "complete"  # Retell reported it complete
    TIMED_OUT = "timed_out"  # still running after BATCH_TIMEOUT_MINUTES; last counts kept
    FAILED = "failed"  # the batch could not be created; `error` says why

    @property
    def finished(self) -> bool:
        return self in (RunState.COMPLETE, RunState.TIMED_OUT, RunState.FAILED)


class Base(DeclarativeBase):
    pass


class Run(Base):
    """One batch test the bot started or follows, and what the channel has been shown of it."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    team_id: Mapped[str] = mapped_column(String(32))
    channel_id: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(16), default="command")
    rerun_of: Mapped[int | None] = mapped_column(ForeignKey("runs.id"), default=None)
    # The Slack request that started the run (its trigger_id): a retried or replayed request
    # finds it taken and starts nothing.
    request_key: Mapped[str | None] = mapped_column(String(128), default=None)

    engine_type: Mapped[str] = mapped_column(String(32))
    engine_id: Mapped[str] = mapped_column(String(128))
    engine_version: Mapped[int | None] = mapped_column(Integer, default=None)
    case_ids: Mapped[list[str]] = mapped_column(JSON)
    case_count: Mapped[int] = mapped_column(Integer)

    state: Mapped[str] = mapped_column(String(16), default=RunState.STARTING.value)
    batch_id: Mapped[str | None] = mapped_column(String(128), unique=True, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    passed: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    errored: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int] = mapped_column(Integer, default=0)

    status_ts: Mapped[str | None] = mapped_column(String(32), default=None)
    # Set while the start posts the status message: a sweep that meanwhile takes the run over
    # (its claim lapsed under load) must not post a second one.
    status_posting_since: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    shown_counts: Mapped[str | None] = mapped_column(String(64), default=None)

    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    reported_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # The result is in Slack but its thread reply (the requester's mention, a regression's
    # alert) is not yet: the sweep posts it, looking in the thread first (see 0007).
    mention_pending: Mapped[bool] = mapped_column(Boolean, default=False)

    next_check_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    check_interval: Mapped[float] = mapped_column(default=0.0)
    checks: Mapped[int] = mapped_column(Integer, default=0)
    claim: Mapped[str | None] = mapped_column(String(36), default=None)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    delivery_attempts: Mapped[int] = mapped_column(Integer, default=0)
    rerun_lock_until: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # Set when Slack refused the status message (channel_not_found, is_archived, ...): the
    # result then goes to the requester by DM and the channel is not tried again.
    channel_error: Mapped[str | None] = mapped_column(String(64), default=None)

    # Comparison: runs of the same suite (engine + set of cases) share a key, and the per-case
    # outcome of a completed run is stored once in `case_results` (cases_recorded_at).
    suite_key: Mapped[str | None] = mapped_column(String(32), default=None)
    cases_recorded_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # Runs fired by a schedule carry what their result needs from it, so delivering one never
    # depends on the schedule still existing: its name, when it was due, and its noise control.
    schedule_id: Mapped[int | None] = mapped_column(Integer, default=None)
    label: Mapped[str | None] = mapped_column(String(80), default=None)
    scheduled_for: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    notify: Mapped[str | None] = mapped_column(String(16), default=None)
    mention: Mapped[str | None] = mapped_column(String(64), default=None)
    # `repeat=N`: one suite run as N batches and reported as one result. The first run (the
    # lead) owns the status message and the result; the others point at it and post nothing.
    repeats: Mapped[int] = mapped_column(Integer, default=1)
    repeat_of: Mapped[int | None] = mapped_column(Integer, default=None)
    # `compare A B`: a group of `repeats` batches on A (this run's engine version) and as many on
    # B, whose runs carry B as their `engine_version`. Set on the lead only.
    candidate_version: Mapped[int | None] = mapped_column(Integer, default=None)
    # How many cases the comparison found regressed, once its result is known (for digests).
    regressions: Mapped[int | None] = mapped_column(Integer, default=None)
    # `min_pass=P`: the share of test runs (percent) that must pass for the result to be green.
    min_pass: Mapped[float | None] = mapped_column(Float, default=None)
    # Set by the first **Show failures** press, so a double click lists the failures once.
    failures_shown_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)

    __table_args__ = (
        Index("ix_runs_due", "state", "next_check_at"),
        Index("ix_runs_channel", "channel_id", "created_at"),
        Index("ix_runs_rerun_of", "rerun_of"),
        Index("ix_runs_engine", "state", "engine_type", "engine_id"),
        Index("uq_runs_request_key", "request_key", unique=True),
        Index("ix_runs_suite", "channel_id", "suite_key", "finished_at"),
        Index("ix_runs_repeat_of", "repeat_of"),
    )

    @property
    def engine(self) -> Engine:
        return Engine(self.engine_type, self.engine_id, self.engine_version)  # type: ignore[arg-type]

    @property
    def suite(self) -> Suite:
        return Suite(self.engine, tuple(self.case_ids))

    @property
    def run_state(self) -> RunState:
        return RunState(self.state)

    @property
    def completed(self) -> int:
        return self.passed + self.failed + self.errored

    @property
    def counts(self) -> tuple[int, int, int, int]:
        return (self.passed, self.failed, self.errored, self.total)

    @property
    def counts_key(self) -> str:
        return f"{self.passed}/{self.failed}/{self.errored}/{self.total}"

    @property
    def duration(self) -> timedelta | None:
        if self.started_at is None:
            return None
        return (self.finished_at or utcnow()) - self.started_at

    @property
    def compares(self) -> bool:
        """The lead of a comparison of two engine versions."""
        return self.candidate_version is not None

    @property
    def batches(self) -> int:
        """How many batches the run's group has: `repeats`, on each version when comparing."""
        return self.repeats * (2 if self.compares else 1)

    @property
    def candidate(self) -> Engine | None:
        """Version B of a comparison, the candidate (the lead's own engine is A)."""
        if self.candidate_version is None:
            return None
        return Engine(self.engine_type, self.engine_id, self.candidate_version)  # type: ignore[arg-type]

    @property
    def leads_group(self) -> bool:
        """The first of a `repeat=N` group or a comparison: it speaks for the whole group."""
        return self.repeat_of is None and self.batches > 1


class ScheduleKind(enum.StrEnum):
    RUN = "run"  # a batch run of a suite
    REPORT = "report"  # a digest of the channel's runs


class RunSchedule(Base):
    """A recurring batch run or digest report of one channel, as the product shows it.

    When it fires is APScheduler's business (its own `schedules` table, under
    `scheduling.schedule_key(id)`); this row is what `schedule list` and the Home tab show and
    what a firing needs: engine, cases (as typed, so `all` picks up new definitions), channel.
    """

    __tablename__ = "run_schedules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    team_id: Mapped[str] = mapped_column(String(32))
    channel_id: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16), default=ScheduleKind.RUN.value)
    name: Mapped[str] = mapped_column(String(80))
    when_text: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64))
    engine_type: Mapped[str | None] = mapped_column(String(32), default=None)
    engine_id: Mapped[str | None] = mapped_column(String(128), default=None)
    engine_version: Mapped[int | None] = mapped_column(Integer, default=None)
    # {"ids": [...], "names": [...], "all": bool}: the selection as typed.
    tests: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    case_count: Mapped[int] = mapped_column(Integer, default=0)
    report_days: Mapped[int | None] = mapped_column(Integer, default=None)
    notify: Mapped[str] = mapped_column(String(16), default="always")
    mention: Mapped[str | None] = mapped_column(String(64), default=None)
    min_pass: Mapped[float | None] = mapped_column(Float, default=None)
    # A comparison schedule compares `engine_version` (A) with `candidate_version`, or with the
    # engine's latest version at each firing when that is None.
    compares: Mapped[bool] = mapped_column(Boolean, default=False)
    candidate_version: Mapped[int | None] = mapped_column(Integer, default=None)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_fired_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    last_run_id: Mapped[int | None] = mapped_column(Integer, default=None)
    # Slack's trigger_id of the `schedule add` that created it: a replay creates nothing new.
    request_key: Mapped[str | None] = mapped_column(String(128), default=None)

    __table_args__ = (
        Index("ix_run_schedules_channel", "team_id", "channel_id"),
        Index("ix_run_schedules_user", "team_id", "user_id"),
        Index("uq_run_schedules_request_key", "request_key", unique=True),
    )

    @property
    def engine(self) -> Engine | None:
        if self.engine_type is None or self.engine_id is None:
            return None
        return Engine(self.engine_type, self.engine_id, self.engine_version)  # type: ignore[arg-type]

    @property
    def candidate(self) -> Engine | None:
        """Version B of a comparison schedule (no version: the latest at each firing)."""
        if not self.compares or self.engine_type is None or self.engine_id is None:
            return None
        return Engine(self.engine_type, self.engine_id, self.candidate_version)  # type: ignore[arg-type]


class CaseResult(Base):
    """How one test case ended in one completed run (from Retell's list-test-runs)."""

    __tablename__ = "case_results"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    case_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(16))
    # Retell's `result_explanation` of a failed or errored case (see 0008).
    explanation: Mapped[str | None] = mapped_column(Text, default=None)


class AgentPublish(Base):
    """A **Publish** press on a result: one per result and agent, so it publishes once."""

    __tablename__ = "agent_publishes"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    agent_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    agent_version: Mapped[int] = mapped_column(Integer)
    user_id: Mapped[str] = mapped_column(String(32))
    pressed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class SlackBudget(Base):
    """One Slack rate-limit budget shared by every replica (see `bot.pacing`)."""

    __tablename__ = "slack_budgets"

    family: Mapped[str] = mapped_column(String(32), primary_key=True)
    scope: Mapped[str] = mapped_column(String(64), primary_key=True)
    tokens: Mapped[float] = mapped_column(Float)
    counted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    base_per_minute: Mapped[float] = mapped_column(Float)
    since: Mapped[datetime] = mapped_column(UTCDateTime)
    blocked_until: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class Workspace(Base):
    """A Slack workspace served in distribution mode (SPEC §10): where its installation is
    found, and the Retell API key it connected, encrypted at rest (`bot.workspaces.keys`)."""

    __tablename__ = "workspaces"

    team_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    enterprise_id: Mapped[str | None] = mapped_column(String(32), default=None)
    # An Enterprise Grid org-wide install: the token is the org's, found by enterprise_id.
    enterprise_install: Mapped[bool] = mapped_column(Boolean, default=False)
    installed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    retell_key: Mapped[str | None] = mapped_column(Text, default=None)  # a Fernet token
    retell_key_hint: Mapped[str | None] = mapped_column(String(8), default=None)
    retell_key_by: Mapped[str | None] = mapped_column(String(32), default=None)
    retell_key_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class TokenRefresh(Base):
    """One replica refreshing an installation's rotating token, until `until`."""

    __tablename__ = "token_refreshes"

    installation: Mapped[str] = mapped_column(String(80), primary_key=True)
    holder: Mapped[str] = mapped_column(String(36))
    until: Mapped[datetime] = mapped_column(UTCDateTime)


class HandledRequest(Base):
    """A Slack request (by trigger_id) whose one-off effect, such as a digest, has happened."""

    __tablename__ = "handled_requests"

    request_key: Mapped[str] = mapped_column(String(128), primary_key=True)
    handled_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_handled_requests_handled_at", "handled_at"),)


class AckedCommand(Base):
    """A `run` command acknowledged to its requester whose run is not recorded yet.

    Written before the ack and deleted once the start has recorded its run (or told the
    requester why not): a process killed in between leaves it here, and a sweep starts it.
    """

    __tablename__ = "acked_commands"

    request_key: Mapped[str] = mapped_column(String(128), primary_key=True)
    team_id: Mapped[str] = mapped_column(String(32))
    channel_id: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[str] = mapped_column(String(32))
    response_url: Mapped[str | None] = mapped_column(Text, default=None)
    text: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    claimed_until: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_acked_commands_claimed_until", "claimed_until"),)


# Slack retries a request within seconds and a trigger_id expires after minutes: a day of
# keys is plenty to tell a replay, and keeps the table small.
HANDLED_REQUESTS_KEPT = timedelta(days=1)


def claim_columns(now: datetime, lease: timedelta | None) -> dict[str, Any]:
    """The claim columns of a run created already claimed (for `lease`), or unclaimed."""
    if lease is None:
        return {}
    return {"claim": str(uuid.uuid4()), "claimed_until": now + lease}


def same_engine(engine: Engine) -> ColumnElement[bool]:
    version = (
        Run.engine_version.is_(None)
        if engine.version is None
        else Run.engine_version == engine.version
    )
    return and_(Run.engine_type == engine.type, Run.engine_id == engine.id, version)
