"""The bot's own tables (SQLAlchemy 2 async) and the queries the workflow needs.

The `runs` table is the source of truth for every run. State changes that must happen once (a
batch finishing, its result being delivered) are conditional UPDATEs, so that two replicas, or a
replica and its restarted self, can never both win. Schema changes go through Alembic
(`bot/migrations`); `Store.upgrade()` applies them.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    TypeDecorator,
    and_,
    bindparam,
    case,
    delete,
    event,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.elements import ColumnElement

from bot.retell import BatchJob
from bot.suite import Engine, Suite

MIGRATIONS = Path(__file__).parent / "migrations"
# What a database that is down, restarting or cutting connections raises: SQLAlchemy's
# wrapped driver errors, and the socket errors asyncpg raises while connecting.
DATABASE_FAILURES: tuple[type[Exception], ...] = (DBAPIError, OSError)
MIGRATION_LOCK = 727_001  # PostgreSQL advisory lock: one replica migrates at a time
# The newest migration in bot/migrations/versions (a test keeps the two in step): a database
# already there is not handed to Alembic at all, which saves importing it at every start.
SCHEMA_REVISION = "0007"
VERSION_TABLE = "bot_alembic_version"


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
    def leads_repeats(self) -> bool:
        """The first of a `repeat=N` group: it speaks for the whole group in the channel."""
        return self.repeat_of is None and self.repeats > 1


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


class CaseResult(Base):
    """How one test case ended in one completed run (from Retell's list-test-runs)."""

    __tablename__ = "case_results"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    case_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(16))


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


def async_database_url(url: str) -> str:
    """Map the URL users and PaaS write to the async driver the bot uses."""
    for prefix, replacement in (
        ("postgres://", "postgresql+asyncpg://"),
        ("postgresql://", "postgresql+asyncpg://"),
        ("sqlite://", "sqlite+aiosqlite://"),
    ):
        if url.startswith(prefix):
            return replacement + url[len(prefix) :]
    return url


def create_engine(url: str, *, sqlite_busy_timeout_ms: int = 30_000) -> AsyncEngine:
    """An async engine; SQLite gets WAL and a busy timeout so the scheduler and the bot share it.

    On SQLite every transaction also starts with `BEGIN IMMEDIATE`, taking the write lock up
    front (waiting for it up to the busy timeout). A deferred transaction that reads and then
    writes, as APScheduler's job release does, gets "database is locked" at once, without
    waiting, when another connection wrote in between; that error stops the scheduler.
    """
    engine = create_async_engine(async_database_url(url), pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine, sqlite_busy_timeout_ms)

        @event.listens_for(engine.sync_engine, "begin")
        def _begin_immediate(connection: Connection) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def create_ack_engine(
    url: str, *, sqlite_busy_timeout_ms: int = 30_000, connections: int = 2
) -> AsyncEngine:
    """A small engine for the one write before a Slack ack (`Store.record_commands`).

    Each statement commits by itself and no connection is pinged when it is taken from the
    pool: under load every round trip waits for a busy event loop, and the ack waits for all
    of them. A connection found dead is replaced and the write tried once more instead.
    """
    engine = create_async_engine(
        async_database_url(url),
        isolation_level="AUTOCOMMIT",
        pool_size=connections,
        max_overflow=0,
    )
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine, sqlite_busy_timeout_ms)
    return engine


def _configure_sqlite(engine: AsyncEngine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()
        dbapi_connection.isolation_level = None  # the driver no longer BEGINs by itself


def _upgrade(connection: Connection) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


# What a repeat group's other runs take over from its lead.
_REPEAT_COPIES = (
    "team_id",
    "channel_id",
    "user_id",
    "source",
    "rerun_of",
    "engine_type",
    "engine_id",
    "engine_version",
    "case_ids",
    "case_count",
    "suite_key",
    "schedule_id",
    "label",
    "scheduled_for",
    "notify",
    "mention",
    "repeats",
)


class Store:
    """Queries over the bot's tables. One instance per process, built by the application."""

    def __init__(self, engine: AsyncEngine, *, ack_engine: AsyncEngine | None = None) -> None:
        """`ack_engine` (`create_ack_engine`): a small pool of its own for what runs before a
        Slack ack, so that the ack's one INSERT never queues behind follow-ups and starts."""
        self.engine = engine
        self._ack_engine = ack_engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._upgrade_lock = asyncio.Lock()

    async def close(self) -> None:
        await self.engine.dispose()
        if self._ack_engine is not None:
            await self._ack_engine.dispose()

    async def upgrade(self) -> None:
        """Apply pending migrations (safe to call from several replicas: Alembic locks on PG)."""
        if await self.schema_revision() == SCHEMA_REVISION:
            return
        async with self._upgrade_lock, self.engine.begin() as conn:
            if self.engine.dialect.name == "postgresql":
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
                )
            await conn.run_sync(_upgrade)

    @contextlib.asynccontextmanager
    async def one_replica_at_a_time(self) -> AsyncIterator[None]:
        """Hold the migration lock (PostgreSQL) while something else creates schema.

        APScheduler's data store creates its tables, and on PostgreSQL an enum type, as the
        scheduler starts; two replicas starting at once collided on `CREATE TYPE` (a unique
        violation in pg_type). Under this lock the second finds everything in place.
        """
        if self.engine.dialect.name != "postgresql":
            yield
            return
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
            try:
                yield
            finally:
                await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK})

    async def schema_revision(self) -> str | None:
        """The revision the database is at; None for a database the bot never migrated."""
        try:
            async with self.engine.connect() as conn:
                result = await conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}"))
                return result.scalar_one_or_none()
        except DBAPIError:
            return None

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    # -- creating and reading ---------------------------------------------------------------

    async def add_run(
        self,
        *,
        team_id: str,
        channel_id: str,
        user_id: str,
        suite: Suite,
        source: str = "command",
        rerun_of: int | None = None,
        batch_id: str | None = None,
        request_key: str | None = None,
        schedule: RunSchedule | None = None,
        scheduled_for: datetime | None = None,
        repeats: int = 1,
        lease: timedelta | None = None,
    ) -> Run | None:
        """A new run; None when `request_key` already started one (a retried Slack request).

        A run fired by `schedule` copies its name and noise control (see `Run.label`). With
        `repeats` > 1 it leads a repeat group; `add_repeats` adds the rest once it has a batch.
        With `lease`, the run is claimed by its starter from the first instant (`Run.claim`),
        so that a starter that dies while creating the batch is noticed once the lease runs
        out, not minutes later.
        """
        now = utcnow()
        run = Run(
            team_id=team_id,
            channel_id=channel_id,
            user_id=user_id,
            source=source,
            rerun_of=rerun_of,
            engine_type=suite.engine.type,
            engine_id=suite.engine.id,
            engine_version=suite.engine.version,
            case_ids=list(suite.case_ids),
            case_count=suite.size,
            batch_id=batch_id,
            request_key=request_key,
            created_at=now,
            suite_key=suite.key,
            schedule_id=schedule.id if schedule else None,
            label=schedule.name if schedule else None,
            notify=schedule.notify if schedule else None,
            mention=schedule.mention if schedule else None,
            scheduled_for=scheduled_for,
            repeats=repeats,
            **_claimed(now, lease),
        )
        try:
            async with self._sessions.begin() as session:
                session.add(run)
        except IntegrityError:
            if request_key is None:
                raise
            return None
        return run

    async def add_repeats(self, lead: Run, *, lease: timedelta | None = None) -> list[Run]:
        """The other runs of the lead's repeat group: same suite, requester and channel.

        With `lease`, each is claimed (a claim of its own) by the caller creating its batch.
        """
        now = utcnow()
        runs = [
            Run(
                **{name: getattr(lead, name) for name in _REPEAT_COPIES},
                repeat_of=lead.id,
                created_at=now,
                **_claimed(now, lease),
            )
            for _ in range(lead.repeats - 1)
        ]
        async with self._sessions.begin() as session:
            session.add_all(runs)
        return runs

    async def repeat_group(self, lead_id: int) -> list[Run]:
        """A repeat group's runs, the lead first; just the run itself when it repeats nothing."""
        async with self._sessions() as session:
            result = await session.execute(
                select(Run).where(or_(Run.id == lead_id, Run.repeat_of == lead_id)).order_by(Run.id)
            )
            return list(result.scalars().all())

    async def get(self, run_id: int) -> Run | None:
        async with self._sessions() as session:
            return await session.get(Run, run_id)

    async def by_batch(self, batch_id: str) -> Run | None:
        async with self._sessions() as session:
            result = await session.execute(select(Run).where(Run.batch_id == batch_id))
            return result.scalar_one_or_none()

    async def in_flight(self, channel_id: str) -> Sequence[Run]:
        states = [RunState.STARTING.value, RunState.RUNNING.value]
        async with self._sessions() as session:
            result = await session.execute(
                select(Run)
                .where(Run.channel_id == channel_id, Run.state.in_(states))
                .order_by(Run.created_at)
            )
            return result.scalars().all()

    async def runs_by_user_since(self, user_id: str, since: datetime) -> int:
        async with self._sessions() as session:
            result = await session.execute(
                select(func.count())
                .select_from(Run)
                .where(Run.user_id == user_id, Run.created_at >= since)
            )
            return int(result.scalar_one())

    async def rerun_in_flight(self, run_id: int) -> bool:
        """Whether a rerun of this run is still being started or followed."""
        in_flight = [RunState.STARTING.value, RunState.RUNNING.value]
        async with self._sessions() as session:
            result = await session.execute(
                select(func.count())
                .select_from(Run)
                .where(Run.rerun_of == run_id, Run.state.in_(in_flight))
            )
            return bool(result.scalar_one())

    async def lock_rerun(self, run_id: int, *, now: datetime, lease: timedelta) -> bool:
        """Let one press at a time start a rerun of a run (double clicks, two people)."""
        free = or_(Run.rerun_lock_until.is_(None), Run.rerun_lock_until < now)
        return await self._update(run_id, free, rerun_lock_until=now + lease)

    async def unlock_rerun(self, run_id: int) -> None:
        await self._update(run_id, rerun_lock_until=None)

    async def mark_failures_shown(self, run_id: int, *, now: datetime) -> bool:
        """True for the first **Show failures** press only (double clicks, two people)."""
        return await self._update(run_id, Run.failures_shown_at.is_(None), failures_shown_at=now)

    async def unmark_failures_shown(self, run_id: int) -> None:
        """The failures could not be posted after all: let the next press try again."""
        await self._update(run_id, failures_shown_at=None)

    async def recent_runs(self, limit: int = 100) -> Sequence[Run]:
        async with self._sessions() as session:
            result = await session.execute(select(Run).order_by(Run.id.desc()).limit(limit))
            return result.scalars().all()

    # -- state changes ----------------------------------------------------------------------

    async def _update(self, run_id: int, *conditions: Any, **values: Any) -> bool:
        async with self._sessions.begin() as session:
            result = await session.execute(
                update(Run).where(Run.id == run_id, *conditions).values(**values)
            )
            return bool(getattr(result, "rowcount", 0))

    async def set_status_message(self, run_id: int, ts: str, shown_counts: str | None) -> None:
        await self._update(
            run_id, status_ts=ts, shown_counts=shown_counts, status_posting_since=None
        )

    async def status_not_posted(self, run_id: int) -> None:
        """The start could not post the status message; a later follow-up tries again."""
        await self._update(run_id, status_posting_since=None)

    async def set_channel_error(self, run_id: int, code: str) -> None:
        await self._update(run_id, channel_error=code, status_posting_since=None)

    async def set_shown(self, run_id: int, shown_counts: str) -> None:
        await self._update(run_id, shown_counts=shown_counts)

    async def mark_started(
        self,
        run_id: int,
        batch: BatchJob,
        *,
        first_check_in: float,
        now: datetime,
        lease: timedelta,
        started_at: datetime | None = None,
        posting_status: bool = True,
        claim: str | None = None,
    ) -> str | None:
        """Record the created batch; the run stays claimed by the caller while it posts status.

        `posting_status=False` for a run whose status message is never posted (a quiet
        schedule): its result is then posted as a new message as soon as it is ready.

        The first check joins the engine's next follow-up when that comes soon enough, so a
        new batch rides on the `list-batch-tests` call its engine makes anyway instead of
        costing one of its own. Returns the claim (`claim`, when the caller holds one
        already). Should the caller die before releasing it, the lease runs out and the next
        sweep takes the run over, status message included.

        None when the run is no longer starting, when another run follows this batch
        already (a batch is followed by one run only: a recovery adopting a batch it found at
        Retell, or a `watch` racing another, lose to the run that has it), or when `claim` is
        no longer the run's: a starter whose claim ran out and was taken over leaves the run
        to the peer recovering it, which finds this batch at Retell.
        """
        token = claim or str(uuid.uuid4())
        first_check = now + timedelta(seconds=first_check_in)
        async with self._sessions.begin() as session:
            run = await session.get(Run, run_id)
            if run is None:
                return token
            engine_next = await session.scalar(
                select(func.min(Run.next_check_at)).where(
                    Run.state == RunState.RUNNING.value,
                    _same_engine(run.engine),
                    Run.next_check_at > now,
                )
            )
            if engine_next is not None and engine_next <= now + 1.5 * (first_check - now):
                first_check = engine_next
            followed = select(Run.id).where(Run.batch_id == batch.batch_id, Run.id != run_id)
            started = await session.execute(
                update(Run)
                .where(
                    Run.id == run_id,
                    Run.state == RunState.STARTING.value,
                    ~followed.exists(),
                    *([] if claim is None else [Run.claim == claim]),
                )
                .values(
                    state=RunState.RUNNING.value,
                    batch_id=batch.batch_id,
                    passed=batch.passed,
                    failed=batch.failed,
                    errored=batch.errored,
                    total=batch.total,
                    started_at=started_at or now,
                    status_posting_since=now if posting_status else None,
                    next_check_at=first_check,
                    check_interval=first_check_in,
                    claim=token,
                    claimed_until=now + lease,
                )
                .execution_options(synchronize_session=False)
            )
        return token if getattr(started, "rowcount", 0) else None

    async def mark_failed(self, run_id: int, error: str, *, now: datetime) -> bool:
        """A run whose batch could not be created: nothing follows it, nothing is left to post."""
        return await self._update(
            run_id,
            Run.state == RunState.STARTING.value,
            state=RunState.FAILED.value,
            error=error,
            finished_at=now,
            reported_at=now,
        )

    async def record_checks(
        self,
        claim: str,
        checked: Sequence[tuple[int, BatchJob | None]],
        *,
        interval: float,
        now: datetime,
    ) -> None:
        """Store what one follow-up pass saw of runs still running, and release them.

        They all get the same next check: runs of one engine are refreshed together by one
        list call, so they stay in step. One transaction, whatever the number of runs.
        """
        if not checked:
            return
        seen = [
            {
                "run_id": run_id,
                "seen_passed": batch.passed,
                "seen_failed": batch.failed,
                "seen_errored": batch.errored,
                "seen_total": batch.total,
            }
            for run_id, batch in checked
            if batch is not None
        ]
        table = cast(Table, Run.__table__)
        mine = and_(Run.claim == claim, Run.state == RunState.RUNNING.value)
        async with self._sessions.begin() as session:
            if seen:
                await session.execute(
                    update(table)
                    .where(table.c.id == bindparam("run_id"), mine)
                    .values(
                        passed=bindparam("seen_passed"),
                        failed=bindparam("seen_failed"),
                        errored=bindparam("seen_errored"),
                        total=bindparam("seen_total"),
                    ),
                    seen,
                )
            await session.execute(
                update(Run)
                .where(Run.id.in_([run_id for run_id, _ in checked]), mine)
                .values(
                    next_check_at=now + timedelta(seconds=interval),
                    check_interval=interval,
                    checks=Run.checks + 1,
                    claim=None,
                    claimed_until=None,
                )
                .execution_options(synchronize_session=False)
            )

    async def running_per_engine(self) -> list[int]:
        """How many batches run on each engine that has any (the cost of following them)."""
        async with self._sessions() as session:
            result = await session.execute(
                select(func.count())
                .where(Run.state == RunState.RUNNING.value)
                .group_by(Run.engine_type, Run.engine_id, Run.engine_version)
            )
            return [int(count) for count in result.scalars()]

    async def finish(
        self, run_id: int, state: RunState, batch: BatchJob | None, *, now: datetime
    ) -> bool:
        """Move a running run to its final state; True for exactly one caller."""
        values: dict[str, Any] = {
            "state": state.value,
            "finished_at": now,
            "next_check_at": now,
            "check_interval": 0.0,
        }
        if batch is not None:
            values.update(
                passed=batch.passed, failed=batch.failed, errored=batch.errored, total=batch.total
            )
        return await self._update(run_id, Run.state == RunState.RUNNING.value, **values)

    async def mark_reported(
        self, run_id: int, claim: str | None, *, now: datetime, mention: bool = False
    ) -> bool:
        """The result is in Slack. With `mention`, its thread reply is still owed: the claim
        is kept for posting it now, and if that is cut short a sweep posts it later."""
        conditions: list[ColumnElement[bool]] = [Run.reported_at.is_(None)]
        if claim is not None:
            conditions.append(Run.claim == claim)
        held: dict[str, Any] = (
            {"next_check_at": now} if mention else {"next_check_at": None, "claim": None}
        )
        if not mention:
            held["claimed_until"] = None
        return await self._update(
            run_id, *conditions, reported_at=now, mention_pending=mention, **held
        )

    async def mark_mentioned(self, run_id: int, claim: str | None) -> None:
        """The result's thread reply is posted (or given up): nothing more is owed."""
        conditions = [] if claim is None else [Run.claim == claim]
        await self._update(
            run_id,
            *conditions,
            mention_pending=False,
            next_check_at=None,
            claim=None,
            claimed_until=None,
        )

    async def delivery_failed(
        self, run_id: int, claim: str | None, *, retry_in: float, now: datetime
    ) -> None:
        conditions = [] if claim is None else [Run.claim == claim]
        await self._update(
            run_id,
            *conditions,
            delivery_attempts=Run.delivery_attempts + 1,
            next_check_at=now + timedelta(seconds=retry_in),
            claim=None,
            claimed_until=None,
        )

    async def defer_delivery(
        self, run_id: int, claim: str | None, *, retry_in: float, now: datetime
    ) -> None:
        """Try the result again shortly, without counting a failed attempt (edits were paced)."""
        conditions = [] if claim is None else [Run.claim == claim]
        await self._update(
            run_id,
            *conditions,
            next_check_at=now + timedelta(seconds=retry_in),
            claim=None,
            claimed_until=None,
        )

    async def nudge(self, run_id: int, *, now: datetime) -> None:
        """Have a finished, unreported run looked at on the next sweep (a repeat group's lead
        waiting for its last batch)."""
        await self._update(
            run_id,
            Run.reported_at.is_(None),
            Run.state.in_([RunState.COMPLETE.value, RunState.TIMED_OUT.value]),
            next_check_at=now,
        )

    async def give_up_delivery(self, run_id: int, claim: str | None, *, now: datetime) -> None:
        conditions = [] if claim is None else [Run.claim == claim]
        await self._update(
            run_id,
            *conditions,
            delivery_attempts=Run.delivery_attempts + 1,
            reported_at=now,
            error="final result could not be posted to Slack",
            next_check_at=None,
            claim=None,
            claimed_until=None,
        )

    # -- follow-up claims ----------------------------------------------------------------------

    # -- per-case results, comparison and digests ------------------------------------------

    async def record_cases(
        self, run_id: int, cases: Sequence[tuple[str, str, str]], *, now: datetime
    ) -> None:
        """Store `(case_id, name, status)` of a finished run once; later calls change nothing."""
        async with self._sessions.begin() as session:
            run = await session.get(Run, run_id, with_for_update=True)
            if run is None or run.cases_recorded_at is not None:
                return
            unique = {case_id: (name, status) for case_id, name, status in cases}
            session.add_all(
                CaseResult(run_id=run_id, case_id=case_id, name=name[:300], status=status[:16])
                for case_id, (name, status) in unique.items()
            )
            run.cases_recorded_at = now

    async def case_names(self, case_ids: Sequence[str]) -> dict[str, str]:
        """The last recorded name of each of these cases (Retell names are not in `runs`)."""
        names: dict[str, str] = {}
        async with self._sessions() as session:
            for start in range(0, len(case_ids), 500):
                result = await session.execute(
                    select(CaseResult.case_id, func.max(CaseResult.name))
                    .where(CaseResult.case_id.in_(list(case_ids[start : start + 500])))
                    .group_by(CaseResult.case_id)
                )
                names.update((str(case_id), str(name)) for case_id, name in result.all())
        return names

    async def case_results(self, run_id: int) -> Sequence[CaseResult]:
        async with self._sessions() as session:
            result = await session.execute(select(CaseResult).where(CaseResult.run_id == run_id))
            return result.scalars().all()

    async def previous_run(self, run: Run) -> Run | None:
        """The last completed run of the same suite in the same channel before `run`."""
        async with self._sessions() as session:
            result = await session.execute(
                select(Run)
                .where(
                    Run.team_id == run.team_id,
                    Run.channel_id == run.channel_id,
                    Run.suite_key == run.suite.key,
                    Run.state == RunState.COMPLETE.value,
                    Run.id != run.id,
                    Run.finished_at <= (run.finished_at or utcnow()),
                )
                .order_by(Run.finished_at.desc(), Run.id.desc())
                .limit(1)
            )
            return result.scalar_one_or_none()

    async def finished_runs(
        self, team_id: str, channel_id: str, since: datetime, until: datetime
    ) -> Sequence[Run]:
        """Completed and timed-out runs of a channel that finished in [since, until)."""
        states = [RunState.COMPLETE.value, RunState.TIMED_OUT.value]
        async with self._sessions() as session:
            result = await session.execute(
                select(Run)
                .where(
                    Run.team_id == team_id,
                    Run.channel_id == channel_id,
                    Run.state.in_(states),
                    Run.finished_at >= since,
                    Run.finished_at < until,
                )
                .order_by(Run.finished_at)
            )
            return result.scalars().all()

    async def failing_cases(
        self, team_id: str, channel_id: str, since: datetime, until: datetime, *, limit: int
    ) -> list[tuple[str, int, int]]:
        """`(name, times failed or errored, times run)` of a channel's cases, worst first."""
        bad = func.sum(case((CaseResult.status.in_(["fail", "error"]), 1), else_=0))
        async with self._sessions() as session:
            result = await session.execute(
                select(func.max(CaseResult.name), bad, func.count())
                .join(Run, Run.id == CaseResult.run_id)
                .where(
                    Run.team_id == team_id,
                    Run.channel_id == channel_id,
                    Run.finished_at >= since,
                    Run.finished_at < until,
                )
                .group_by(CaseResult.case_id)
                .having(bad > 0)
                .order_by(bad.desc(), func.max(CaseResult.name))
                .limit(limit)
            )
            return [(str(name), int(failed), int(ran)) for name, failed, ran in result.all()]

    async def latest_runs(
        self, team_id: str, channel_ids: Sequence[str], limit: int
    ) -> Sequence[Run]:
        if not channel_ids:
            return []
        async with self._sessions() as session:
            result = await session.execute(
                select(Run)
                .where(Run.team_id == team_id, Run.channel_id.in_(list(channel_ids)))
                .order_by(Run.id.desc())
                .limit(limit)
            )
            return result.scalars().all()

    async def channels_of(self, team_id: str, user_id: str, limit: int = 20) -> list[str]:
        """Channels where someone ran tests or keeps schedules, most recent first."""
        async with self._sessions() as session:
            runs = await session.execute(
                select(Run.channel_id, func.max(Run.id))
                .where(Run.team_id == team_id, Run.user_id == user_id)
                .group_by(Run.channel_id)
                .order_by(func.max(Run.id).desc())
                .limit(limit)
            )
            schedules = await session.execute(
                select(RunSchedule.channel_id)
                .where(RunSchedule.team_id == team_id, RunSchedule.user_id == user_id)
                .distinct()
            )
            found = [str(channel) for channel, _ in runs.all()]
            found += [str(channel) for channel in schedules.scalars()]
            return list(dict.fromkeys(found))[:limit]

    # -- schedules -------------------------------------------------------------------------

    async def add_schedule(self, schedule: RunSchedule) -> RunSchedule | None:
        """The schedule as added; None when its `request_key` already added one (a replay)."""
        try:
            async with self._sessions.begin() as session:
                session.add(schedule)
        except IntegrityError:
            if schedule.request_key is None:
                raise
            return None
        return schedule

    async def schedule_by_request(self, request_key: str) -> RunSchedule | None:
        async with self._sessions() as session:
            result = await session.execute(
                select(RunSchedule).where(RunSchedule.request_key == request_key)
            )
            return result.scalars().first()

    async def first_handling(self, request_key: str, *, now: datetime) -> bool:
        """True the first time a request key is seen (its effect is to happen now), else False.

        Keys older than `HANDLED_REQUESTS_KEPT` are forgotten on the way.
        """
        try:
            async with self._sessions.begin() as session:
                await session.execute(
                    delete(HandledRequest).where(
                        HandledRequest.handled_at < now - HANDLED_REQUESTS_KEPT
                    )
                )
                session.add(HandledRequest(request_key=request_key, handled_at=now))
        except IntegrityError:
            return False
        return True

    async def forget_handling(self, request_key: str) -> None:
        """Let a request be handled again: its effect did not happen after all."""
        async with self._sessions.begin() as session:
            await session.execute(
                delete(HandledRequest).where(HandledRequest.request_key == request_key)
            )

    # -- acknowledged commands -------------------------------------------------------------

    async def record_commands(self, commands: Sequence[AckedCommand]) -> None:
        """Keep commands about to be acked, in one transaction; a Slack retry of one (the same
        request key) finds it kept already and changes nothing."""
        if not commands:
            return
        rows = [
            {column.key: getattr(command, column.key) for column in AckedCommand.__mapper__.columns}
            for command in commands
        ]
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        statement = (
            dialect.insert(AckedCommand)
            .values(rows)
            .on_conflict_do_nothing(index_elements=[AckedCommand.request_key])
        )
        engine = self._ack_engine or self.engine
        for attempt in (1, 2):
            try:
                async with engine.begin() as connection:
                    await connection.execute(statement)
                return
            except DBAPIError as exc:  # a pooled connection the database had dropped: once more
                if attempt == 2 or not exc.connection_invalidated:
                    raise

    async def extend_command(self, request_key: str, *, until: datetime) -> None:
        async with self._sessions.begin() as session:
            await session.execute(
                update(AckedCommand)
                .where(AckedCommand.request_key == request_key)
                .values(claimed_until=until)
            )

    async def command_started(self, request_key: str) -> None:
        """The command's run is recorded (or its requester told why not): nothing is owed."""
        async with self._sessions.begin() as session:
            await session.execute(
                delete(AckedCommand).where(AckedCommand.request_key == request_key)
            )

    async def claim_orphaned_commands(
        self, *, now: datetime, hold: timedelta, limit: int
    ) -> list[AckedCommand]:
        """Acked commands whose holder let go (died) before starting them, now held here."""
        async with self._sessions.begin() as session:
            found = await session.execute(
                select(AckedCommand)
                .where(AckedCommand.claimed_until < now)
                .order_by(AckedCommand.received_at)
                .limit(limit)
            )
            candidates = list(found.scalars().all())
        taken = []
        for command in candidates:
            async with self._sessions.begin() as session:
                moved = await session.execute(
                    update(AckedCommand)
                    .where(
                        AckedCommand.request_key == command.request_key,
                        AckedCommand.claimed_until == command.claimed_until,
                    )
                    .values(claimed_until=now + hold)
                )
            if getattr(moved, "rowcount", 0):
                taken.append(command)
        return taken

    async def get_schedule(self, schedule_id: int) -> RunSchedule | None:
        async with self._sessions() as session:
            return await session.get(RunSchedule, schedule_id)

    async def schedules_in(self, team_id: str, channel_id: str) -> Sequence[RunSchedule]:
        return await self._schedules(team_id, RunSchedule.channel_id == channel_id)

    async def schedules_of(self, team_id: str, user_id: str) -> Sequence[RunSchedule]:
        return await self._schedules(team_id, RunSchedule.user_id == user_id)

    async def _schedules(
        self, team_id: str, condition: ColumnElement[bool]
    ) -> Sequence[RunSchedule]:
        async with self._sessions() as session:
            result = await session.execute(
                select(RunSchedule)
                .where(RunSchedule.team_id == team_id, condition)
                .order_by(RunSchedule.id)
            )
            return result.scalars().all()

    async def remove_schedule(self, schedule_id: int) -> bool:
        async with self._sessions.begin() as session:
            result = await session.execute(delete(RunSchedule).where(RunSchedule.id == schedule_id))
            return bool(result.rowcount)  # type: ignore[attr-defined]

    async def set_paused(self, schedule_id: int, paused: bool) -> bool:
        """True when this call changed it (a second press of Pause changes nothing)."""
        async with self._sessions.begin() as session:
            result = await session.execute(
                update(RunSchedule)
                .where(RunSchedule.id == schedule_id, RunSchedule.paused.is_(not paused))
                .values(paused=paused)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    async def schedule_fired(self, schedule_id: int, *, at: datetime, run_id: int | None) -> None:
        values: dict[str, Any] = {"last_fired_at": at}
        if run_id is not None:
            values["last_run_id"] = run_id
        async with self._sessions.begin() as session:
            await session.execute(
                update(RunSchedule).where(RunSchedule.id == schedule_id).values(**values)
            )

    async def runs_by_id(self, run_ids: Sequence[int]) -> dict[int, Run]:
        if not run_ids:
            return {}
        async with self._sessions() as session:
            result = await session.execute(select(Run).where(Run.id.in_(list(run_ids))))
            return {run.id: run for run in result.scalars()}

    async def claim_due(
        self, *, now: datetime, lease: timedelta, limit: int
    ) -> tuple[str, list[Run]]:
        """Claim runs that need attention now, for one follow-up sweep.

        A run still `starting` that nobody claims was left by a process that died while
        creating its batch (a live starter keeps its claim): it is claimed to be recovered.

        Due running runs bring along every other unclaimed running run of the same engine: one
        `list-batch-tests` page refreshes them all at no extra cost. Finished runs whose result
        has not reached Slack yet are claimed for another delivery attempt, and delivered ones
        whose thread reply is still owed, for posting it.
        """
        token = str(uuid.uuid4())
        free = or_(Run.claimed_until.is_(None), Run.claimed_until < now)
        running = Run.state == RunState.RUNNING.value
        async with self._sessions.begin() as session:
            due_engines = (
                select(Run.engine_type, Run.engine_id, Run.engine_version)
                .where(running, Run.next_check_at <= now, free)
                .distinct()
                .limit(limit)
            )
            engines = (await session.execute(due_engines)).all()
            engine_match = [_same_engine(Engine(*row)) for row in engines]  # type: ignore[arg-type]
            undelivered = and_(
                Run.state.in_([RunState.COMPLETE.value, RunState.TIMED_OUT.value]),
                Run.reported_at.is_(None),
                Run.next_check_at <= now,
            )
            unmentioned = and_(Run.mention_pending.is_(True), Run.next_check_at <= now)
            interrupted = and_(
                Run.state == RunState.STARTING.value,
                or_(Run.next_check_at.is_(None), Run.next_check_at <= now),
            )
            targets = or_(undelivered, unmentioned, interrupted)
            if engine_match:
                targets = or_(targets, and_(running, or_(*engine_match)))
            await session.execute(
                update(Run)
                .where(targets, free)
                .values(claim=token, claimed_until=now + lease)
                .execution_options(synchronize_session=False)
            )
            result = await session.execute(select(Run).where(Run.claim == token).order_by(Run.id))
            return token, list(result.scalars().all())

    async def claim_alone(self, run_id: int, claim: str, *, until: datetime) -> str | None:
        """Move one run out of a shared claim into a claim of its own (None if not held).

        A sweep claims many runs under one token; a run whose work outlives the pass (an
        interrupted start being recovered) takes its own, so that giving it back does not give
        back the others.
        """
        token = str(uuid.uuid4())
        moved = await self._update(run_id, Run.claim == claim, claim=token, claimed_until=until)
        return token if moved else None

    async def extend_claim(self, claim: str, *, until: datetime) -> None:
        """Keep a claim alive while its holder is still working on it."""
        async with self._sessions.begin() as session:
            await session.execute(update(Run).where(Run.claim == claim).values(claimed_until=until))

    async def release_claim(self, claim: str) -> None:
        """Give back every run still held under a claim (work interrupted by a shutdown)."""
        async with self._sessions.begin() as session:
            await session.execute(
                update(Run).where(Run.claim == claim).values(claim=None, claimed_until=None)
            )


def _claimed(now: datetime, lease: timedelta | None) -> dict[str, Any]:
    """The claim columns of a run created already claimed (for `lease`), or unclaimed."""
    if lease is None:
        return {}
    return {"claim": str(uuid.uuid4()), "claimed_until": now + lease}


def _same_engine(engine: Engine) -> ColumnElement[bool]:
    version = (
        Run.engine_version.is_(None)
        if engine.version is None
        else Run.engine_version == engine.version
    )
    return and_(Run.engine_type == engine.type, Run.engine_id == engine.id, version)
