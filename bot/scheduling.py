"""APScheduler 4 set-up: one `AsyncScheduler` on the bot's own database.

The data store is APScheduler's `SQLAlchemyDataStore` on the same engine as the bot's tables
(aiosqlite with WAL and a busy timeout by default; asyncpg on PostgreSQL, where
`AsyncpgEventBroker` lets replicas wake each other). Jobs carry plain ids only (the JSON
serializer enforces it); the callables behind task ids are bound at start-up, so no job ever
needs a global to find the application.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from apscheduler import (
    AsyncScheduler,
    CoalescePolicy,
    ConflictPolicy,
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

SWEEP_TASK = "runs.sweep"
SWEEP_SCHEDULE = "runs.sweep"
FIRE_TASK = "schedules.fire"


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
    scheduler: AsyncScheduler, sweep: Callable[[], Awaitable[None]], *, every_seconds: float
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
        SWEEP_TASK, func=sweep, max_running_jobs=None, misfire_grace_time=max(every_seconds * 4, 5)
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
    while True:
        await asyncio.sleep(every_seconds)
        await scheduler.event_broker.publish_local(
            ScheduleUpdated(
                schedule_id=SWEEP_SCHEDULE, task_id=SWEEP_TASK, next_fire_time=datetime.now(UTC)
            )
        )


def _same_interval(current: object, wanted: IntervalTrigger) -> bool:
    return isinstance(current, IntervalTrigger) and current._interval == wanted._interval


def schedule_key(schedule_id: int) -> str:
    """APScheduler's id for the product's schedule #`schedule_id` (a row of `run_schedules`)."""
    return f"schedule-{schedule_id}"


async def install_firing(scheduler: AsyncScheduler, fire: Callable[[int], Awaitable[None]]) -> None:
    """Bind the task every channel schedule runs: `fire(schedule_id)`.

    No misfire grace time: a firing missed while every replica was down still runs when one
    comes back, and `CoalescePolicy.latest` (see `add_firing`) makes that once, not once per
    missed slot.
    """
    await scheduler.configure_task(
        FIRE_TASK, func=fire, misfire_grace_time=None, max_running_jobs=None
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
