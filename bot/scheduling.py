"""APScheduler 4 set-up: one `AsyncScheduler` on the bot's own database.

The data store is APScheduler's `SQLAlchemyDataStore` on the same engine as the bot's tables
(aiosqlite with WAL and a busy timeout by default; asyncpg on PostgreSQL, where
`AsyncpgEventBroker` lets replicas wake each other). Jobs carry plain ids only (the JSON
serializer enforces it); the callables behind task ids are bound at start-up, so no job ever
needs a global to find the application.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from typing import ParamSpec

import anyio
import anyio.abc
from apscheduler import (
    AsyncScheduler,
    CoalescePolicy,
    ConflictPolicy,
    RunState,
    ScheduleLookupError,
    ScheduleUpdated,
    current_job,
)
from apscheduler.abc import EventBroker, Trigger
from apscheduler.datastores.sqlalchemy import SQLAlchemyDataStore
from apscheduler.eventbrokers.asyncpg import AsyncpgEventBroker
from apscheduler.eventbrokers.local import LocalEventBroker
from apscheduler.serializers.json import JSONSerializer
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.metrics import Metrics

log = logging.getLogger(__name__)
P = ParamSpec("P")

SWEEP_TASK = "runs.sweep"
SWEEP_SCHEDULE = "runs.sweep"
FIRE_TASK = "schedules.fire"
FIRST_RESTART_SECONDS = 0.5
LONGEST_RESTART_SECONDS = 10.0
STOP_SECONDS = 10.0
# A scheduler that stopped after running at least this many times its last back-off was
# working, not crash-looping: it is restarted after the first back-off again. Connection
# kills every few seconds must not push a working scheduler's restarts to the longest wait.
WORKED_AFTER_BACKOFFS = 4
STEADY_AFTER_SECONDS = 60.0  # one that ran this long is healthy again: a new stop is news


def build_scheduler(
    engine: AsyncEngine, *, lease_seconds: float = 30.0, identity: str = ""
) -> AsyncScheduler:
    """A scheduler whose leases are short: a replica that dies (or stops while holding the
    sweep schedule) delays its successor by at most `lease_seconds`; live holders renew theirs.
    """
    data_store = SQLAlchemyDataStore(engine, serializer=JSONSerializer())
    broker: EventBroker
    if engine.dialect.name == "postgresql":
        broker = AsyncpgEventBroker.from_async_sqla_engine(engine)
    else:
        broker = LocalEventBroker()
    return AsyncScheduler(
        data_store,
        broker,
        identity=identity,
        cleanup_interval=timedelta(minutes=5),
        lease_duration=timedelta(seconds=lease_seconds),
    )


async def install_sweep(
    scheduler: AsyncScheduler,
    sweep: Callable[[], Awaitable[None]],
    *,
    every_seconds: float,
    metrics: Metrics | None = None,
) -> None:
    """Bind the follow-up sweep and make sure exactly one recurring schedule drives it.

    Replicas starting together all call this; the schedule is only replaced when its interval
    changed, so a running schedule is never reset by a peer's start-up.
    """
    # No max_running_jobs: APScheduler 4.0.0a6 never gives back the running-job slot of a job
    # whose scheduler was killed or cancelled, and a limit of 1 would then stop the sweep for
    # good. Overlapping sweeps are safe anyway (runs are claimed), and each process runs at
    # most one at a time (RunWorkflow.sweep).
    await scheduler.configure_task(
        SWEEP_TASK,
        func=never_raising(SWEEP_TASK, sweep, metrics),
        max_running_jobs=None,
        misfire_grace_time=max(every_seconds * 4, 5),
    )
    trigger = IntervalTrigger(seconds=every_seconds)
    try:
        existing = await scheduler.get_schedule(SWEEP_SCHEDULE)
    except ScheduleLookupError:
        existing = None
    if existing is not None and _same_interval(existing.trigger, trigger):
        return
    await scheduler.add_schedule(
        SWEEP_TASK,
        trigger,
        id=SWEEP_SCHEDULE,
        conflict_policy=ConflictPolicy.replace if existing else ConflictPolicy.do_nothing,
    )


async def wake_periodically(scheduler: AsyncScheduler, *, every_seconds: float) -> None:
    """Nudge the scheduler's schedule loop every lease period, for as long as it runs.

    APScheduler 4.0.0a6 computes its next wake-up only from schedules nobody holds; a schedule
    still held by a replica that died (or stopped mid-way) is not retried when that lease runs
    out, so without a nudge the sweep would stay silent until some other schedule changed. A
    local `ScheduleUpdated` event wakes the loop, which then takes over the expired lease.
    """
    while scheduler.state is RunState.started:
        await asyncio.sleep(every_seconds)
        await scheduler.event_broker.publish_local(
            ScheduleUpdated(
                schedule_id=SWEEP_SCHEDULE, task_id=SWEEP_TASK, next_fire_time=datetime.now(UTC)
            )
        )


def never_raising(
    task_id: str, func: Callable[P, Awaitable[None]], metrics: Metrics | None
) -> Callable[P, Awaitable[None]]:
    """`func` as an APScheduler job that never raises into the scheduler.

    A job's exception travels with its `JobReleased` event: through PostgreSQL's NOTIFY its
    traceback overflowed the 8,000-byte payload and crashed the scheduler (a dropped database
    connection in the sweep was enough). The job's work is safe to leave to its next run (the
    sweep's next tick, a firing's own claim), so the error is counted and logged, once per
    streak of failures rather than once per tick, and swallowed.
    """
    failing = False

    @functools.wraps(func)
    async def job(*args: P.args, **kwargs: P.kwargs) -> None:
        nonlocal failing
        try:
            await func(*args, **kwargs)
        except Exception as exc:
            if metrics is not None:
                metrics.job_errors.labels(task_id).inc()
            if not failing:
                log.warning("%s failed (%s); it is tried again on its next run", task_id, _why(exc))
            failing = True
        else:
            if failing:
                log.info("%s works again", task_id)
            failing = False

    return job


def _why(exc: BaseException) -> str:
    """An exception in one short line: its type and the first line of its message."""
    if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        return _why(exc.exceptions[0])
    first = str(exc).strip().splitlines()[:1]
    return f"{type(exc).__name__}: {first[0][:200]}" if first else type(exc).__name__


class SchedulerState(enum.StrEnum):
    STARTING = "starting"
    STARTED = "started"
    RESTARTING = "restarting"
    STOPPED = "stopped"


class SchedulerSupervisor:
    """Keeps APScheduler running in a task of its own, restarting it whenever it stops.

    APScheduler 4.0.0a6 ends its scheduler on errors of its own (a data store query on a
    dropped connection, `KeyError` in its running-jobs bookkeeping), and a scheduler entered in
    the serving task took the whole process down with it. Here it runs apart: when it stops
    without being asked, it is started again after a back-off (0.5 s, doubling to 10 s while
    it keeps stopping right after its start), the same instance, so everything holding it keeps
    working. `state` is what `/healthz` shows. One ERROR line per streak of stops, not per stop.
    """

    def __init__(
        self,
        scheduler: AsyncScheduler,
        *,
        prepare: Callable[[AsyncScheduler], Awaitable[None]],
        entry_lock: Callable[[], AbstractAsyncContextManager[None]],
        nudge_seconds: float,
        metrics: Metrics,
    ) -> None:
        self.scheduler = scheduler
        self.state = SchedulerState.STOPPED
        self._prepare = prepare
        self._entry_lock = entry_lock
        self._nudge_seconds = nudge_seconds
        self._metrics = metrics
        self._stopping = asyncio.Event()
        self._settled = asyncio.Event()  # set once the first start succeeded or failed
        self._task: asyncio.Task[None] | None = None
        self._failures = 0  # stops since it last worked: the back-off
        self.streak = 0  # stops since it was last healthy for a while: logged once
        self._quiet = _RepeatedCrashes(self)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[SchedulerSupervisor]:
        """Start supervising; returns once the scheduler started (or failed to, once)."""
        self.state = SchedulerState.STARTING
        apscheduler_log = self.scheduler.logger
        apscheduler_log.addFilter(self._quiet)
        self._task = asyncio.create_task(self._supervise(), name="scheduler supervisor")
        try:
            await self._settled.wait()
            yield self
        finally:
            self._stopping.set()
            await self.scheduler.stop()
            try:
                await asyncio.wait_for(asyncio.shield(self._task), STOP_SECONDS)
            except TimeoutError:  # stuck entering (a database that does not answer): let go
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            apscheduler_log.removeFilter(self._quiet)
            self.state = SchedulerState.STOPPED

    async def _supervise(self) -> None:
        while not self._stopping.is_set():
            started = asyncio.get_running_loop().time()
            try:
                await self._run_once()
                why = "it stopped by itself"
            except Exception as exc:
                why = _why(exc)
            if self._stopping.is_set():
                return
            ran = asyncio.get_running_loop().time() - started
            if ran >= STEADY_AFTER_SECONDS:
                self.streak = 0
            if ran >= WORKED_AFTER_BACKOFFS * _backoff(self._failures):
                self._failures = 0
            self._failures += 1
            self.streak += 1
            self.state = SchedulerState.RESTARTING
            self._settled.set()
            self._metrics.scheduler_restarts.inc()
            delay = _backoff(self._failures)
            if self.streak == 1:
                log.error("scheduler stopped (%s); restarting it", why)
            else:
                log.debug("scheduler stopped again (%s); next try in %.1fs", why, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def _run_once(self) -> None:
        """One life of the scheduler: enter it, bind its tasks, run it until it stops."""
        async with contextlib.AsyncExitStack() as stack:
            async with self._entry_lock():
                await stack.enter_async_context(self.scheduler)
                await self._prepare(self.scheduler)
            if self._stopping.is_set():
                return
            async with anyio.create_task_group() as group:
                await group.start(self._until_stopped, group.cancel_scope)
                if self._stopping.is_set():  # asked to stop while it was starting
                    await self.scheduler.stop()
                    return
                if self.streak:
                    log.info("scheduler running again after %d restart(s)", self.streak)
                self.state = SchedulerState.STARTED
                self._settled.set()
                group.start_soon(
                    functools.partial(
                        wake_periodically, self.scheduler, every_seconds=self._nudge_seconds
                    )
                )

    async def _until_stopped(
        self, group: anyio.CancelScope, *, task_status: anyio.abc.TaskStatus[None]
    ) -> None:
        """Run the scheduler; once it stops, so does the rest of its group (the nudges)."""
        await self.scheduler.run_until_stopped(task_status=task_status)
        group.cancel()


class _RepeatedCrashes(logging.Filter):
    """Drops APScheduler's own "Scheduler crashed" traceback after the first of a streak."""

    def __init__(self, supervisor: SchedulerSupervisor) -> None:
        super().__init__()
        self._supervisor = supervisor

    def filter(self, record: logging.LogRecord) -> bool:
        return not (self._supervisor.streak and record.msg == "Scheduler crashed")


def _backoff(failures: int) -> float:
    """Seconds before restart number `failures` of a streak (0: none yet)."""
    return float(min(FIRST_RESTART_SECONDS * 2 ** max(failures - 1, 0), LONGEST_RESTART_SECONDS))


def _same_interval(current: object, wanted: IntervalTrigger) -> bool:
    return isinstance(current, IntervalTrigger) and current._interval == wanted._interval


def schedule_key(schedule_id: int) -> str:
    """APScheduler's id for the product's schedule #`schedule_id` (a row of `run_schedules`)."""
    return f"schedule-{schedule_id}"


async def install_firing(
    scheduler: AsyncScheduler,
    fire: Callable[[int], Awaitable[None]],
    *,
    metrics: Metrics | None = None,
) -> None:
    """Bind the task every channel schedule runs: `fire(schedule_id)`.

    No misfire grace time: a firing missed while every replica was down still runs when one
    comes back, and `CoalescePolicy.latest` (see `add_firing`) makes that once, not once per
    missed slot.
    """
    await scheduler.configure_task(
        FIRE_TASK,
        func=never_raising(FIRE_TASK, fire, metrics),
        misfire_grace_time=None,
        max_running_jobs=None,
    )


async def add_firing(scheduler: AsyncScheduler, schedule_id: int, trigger: Trigger) -> None:
    await scheduler.add_schedule(
        FIRE_TASK,
        trigger,
        id=schedule_key(schedule_id),
        args=(schedule_id,),
        coalesce=CoalescePolicy.latest,
        misfire_grace_time=None,
        conflict_policy=ConflictPolicy.replace,
    )


async def remove_firing(scheduler: AsyncScheduler, schedule_id: int) -> None:
    await scheduler.remove_schedule(schedule_key(schedule_id))


async def pause_firing(scheduler: AsyncScheduler, schedule_id: int, *, paused: bool) -> None:
    """Pause, or resume from now on: a resumed schedule does not catch up what it skipped."""
    try:
        if paused:
            await scheduler.pause_schedule(schedule_key(schedule_id))
        else:
            await scheduler.unpause_schedule(schedule_key(schedule_id), resume_from="now")
    except ScheduleLookupError:
        pass  # removed meanwhile; the row says what the product shows


async def next_firings(scheduler: AsyncScheduler) -> dict[str, datetime | None]:
    """Next fire time of every schedule, by APScheduler id, in one data store read."""
    return {schedule.id: schedule.next_fire_time for schedule in await scheduler.get_schedules()}


def firing_time() -> datetime | None:
    """When the job being run was due (None outside a scheduled job, e.g. "Run now")."""
    try:
        job = current_job.get()
    except LookupError:
        return None
    return job.scheduled_fire_time
