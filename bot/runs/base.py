"""What every step of the run workflow shares: its parts, its limits, and the rules of a run.

`WorkflowBase` holds what the workflow is built with (settings, store, gateways, metrics, clock)
and the claim a step works under (`_holding`); the steps themselves are the classes of the
modules next to this one, each a room of its own: status, starting, accepting, recovery,
delivery, sweep, triage. `RunWorkflow` (bot.runs.workflow) is all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

import anyio

from bot import blocks, history
from bot.admission import CommandBook
from bot.blocks import Comparison, Message
from bot.commands import (
    TestSelection,
)
from bot.followup import BatchRefresher
from bot.logs import about_run
from bot.metrics import Metrics
from bot.retell import (
    BatchJob,
    RetellGateway,
    TestRun,
    TestRunStatus,
)
from bot.settings import Settings
from bot.slackapi import (
    SLACK_FAILURES,
    SlackGateway,
    error_code,
)
from bot.store import (
    CaseResult,
    Run,
    RunSchedule,
    RunState,
    Store,
    utcnow,
)
from bot.suite import Engine
from bot.tenure import Tenure

log = logging.getLogger("bot.runs")  # one logger for the whole workflow
P = ParamSpec("P")
R = TypeVar("R")
W = TypeVar("W")

MAX_DELIVERY_ATTEMPTS = 8
DELIVERY_OUTAGE = timedelta(days=1)  # how long a result waits out a Slack outage
# Runs being started at once; more wait their turn. A start holds a database connection only
# between its Retell calls, so this can exceed the pool (15); unbounded, a burst of 1,500
# commands queued for the pool past its timeout. 100 is also the Retell SDK's connection pool.
START_CONCURRENCY = 100
# A sweep works through what is due a few engines at a time, and on at most RUNS_AT_ONCE runs
# concurrently: memory stays bounded by that, not by the number of batches in flight.
ENGINES_PER_PASS = 2
RUNS_AT_ONCE = 200
# An interrupted start's batch is looked for among the engine's newest batches created since
# the run (less this much, for clocks that disagree).
CREATE_CLOCK_SKEW = timedelta(minutes=2)
RECOVERY_PAGE = 50
RECOVERY_PAGES = 20
BACKOFF_FACTOR = 2.0
# An accepted command is held for this many follow-up leases (extended while it waits for a
# start slot); a process killed after the ack leaves it to a sweep once that has run out.
COMMAND_LEASES = 3
ACCEPT_SECONDS = 1.5  # of Slack's 3 s for the ack, leaving room for a busy event loop
RESUMED_PER_PASS = 50
# A rerun press holds its run until the rerun is recorded (released then): long enough for a
# start under load, which with the follow-up lease (1 s in tests) it outlived, so a second
# press started a second rerun. Only a process that dies holds it to the end.
RERUN_LOCK = timedelta(seconds=30)
# Schedules whose runs post nothing while running, and their result only when it matters.
QUIET_NOTIFY = ("failures", "changes")


@dataclass(frozen=True, slots=True)
class Requester:
    """Who asked, where, and how to answer them privately."""

    team_id: str
    channel_id: str
    user_id: str
    response_url: str | None = None
    # A schedule firing has nobody waiting for a private answer: what it would tell its
    # requester (e.g. why the batch could not be created) is posted in the channel instead.
    announce: bool = False


@dataclass(frozen=True, slots=True)
class Check:
    """A follow-up check of a run still running: what was seen, and the interval it asks for."""

    run_id: int
    batch: BatchJob | None
    interval: float


@dataclass(frozen=True, slots=True)
class RunRequest:
    requester: Requester
    engine: Engine
    tests: TestSelection
    source: str = "command"
    rerun_of: int | None = None
    # Slack's trigger_id of the command or press: the same request delivered twice (a Slack
    # retry, a replayed payload) carries the same one and starts nothing the second time.
    request_key: str | None = None
    # A firing of this schedule, due at `scheduled_for` (later means it ran late).
    schedule: RunSchedule | None = None
    scheduled_for: datetime | None = None
    # `repeat=N`: N batches of the suite, reported together as one result.
    repeats: int = 1
    # Kept in `acked_commands` before the ack (under `request_key`): forgotten once started.
    recorded: bool = False


def tagged_with_run(
    method: Callable[Concatenate[W, Run, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[W, Run, P], Coroutine[Any, Any, R]]:
    """Tag the log lines of a workflow step about one run with its run and batch ids."""

    async def step(self: W, run: Run, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with about_run(run):
            return await method(self, run, *args, **kwargs)

    functools.update_wrapper(step, method)
    return step


class WorkflowBase:
    """The parts a run's steps work with, and the claim they hold while they work."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        retell: RetellGateway,
        slack: SlackGateway,
        *,
        metrics: Metrics | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._settings = settings
        self._metrics = metrics or Metrics()
        self._store = store
        self._retell = retell
        self._slack = slack
        self._clock = clock
        self._refresher = BatchRefresher(retell)
        self._slack_calls = asyncio.Semaphore(8)
        self._lease = timedelta(seconds=settings.follow_up_lease_seconds)
        self._sweeping = asyncio.Lock()
        self._starting: set[asyncio.Task[object]] = set()
        self._commands = CommandBook(store, patience=ACCEPT_SECONDS)
        self._resuming: set[asyncio.Task[Run | None]] = set()  # started by a sweep
        self._start_slots = asyncio.Semaphore(START_CONCURRENCY)

    @contextlib.asynccontextmanager
    async def _holding(self, claim: str, *, taken_at: float) -> AsyncIterator[Tenure]:
        """Keep a claim alive while working under it; whatever is left is released at the end.

        `taken_at` is the event-loop time just before the claim was taken; the tenure
        yielded says until when it can be vouched for (`Tenure.bounding`). A holder that is
        cancelled (the process shutting down) gives its runs back at once, so a restarted
        process or a peer picks them up on its next sweep instead of waiting for the lease to
        run out. Only a process that dies outright leaves them to the lease.
        """
        tenure = Tenure(self._lease, taken_at=taken_at)

        async def extend(seconds: float) -> None:
            until = self._clock() + timedelta(seconds=seconds)
            await self._store.extend_claim(claim, until=until)

        keeper = asyncio.create_task(tenure.keep(extend))
        try:
            yield tenure
        finally:
            keeper.cancel()
            with anyio.CancelScope(shield=True):
                await self._store.release_claim(claim)

    async def tell(self, who: Requester, message: Message) -> None:
        """Answer someone privately (or in the channel, for a schedule's `announce`)."""
        await self._tell(who, message)

    async def _tell(self, who: Requester, message: Message) -> None:
        try:
            if who.announce:
                await self._slack.post(who.channel_id, message)
            elif who.response_url:
                await self._slack.respond(who.response_url, message)
            else:
                await self._slack.tell(who.channel_id, who.user_id, message)
        except SLACK_FAILURES as exc:
            log.warning("could not tell %s: %s", who.user_id, error_code(exc))


async def at_most(
    limit: int, step: Callable[[Run], Coroutine[Any, Any, R]], runs: Sequence[Run]
) -> list[R]:
    """`step` for every run, `limit` at a time (not one task each at once); results in order."""
    results: list[R] = []
    for start in range(0, len(runs), limit):
        results += await all_settled(*(step(run) for run in runs[start : start + limit]))
    return results


async def all_settled(*steps: Coroutine[Any, Any, R]) -> list[R]:
    """Every step run to its end, then the first failure raised.

    Not a bare `gather`, which raises the first failure while the other steps go on: work
    under a claim must be over before the claim is released. A delivery still posting after
    its sweep had failed and released the claim raced the next holder, and the requester
    was mentioned twice (`bench.chaos`, 24 runs after a killed database connection).
    """
    outcomes = await asyncio.gather(*steps, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return cast(list[R], outcomes)


STATUS_EVENT = "retell_run_status"


@dataclass(frozen=True, slots=True)
class ThreadReply:
    """A reply owed in a result's thread; `kind` tells it apart from the run's other ones."""

    kind: str
    message: Message


def thread_replies(
    run: Run, view: blocks.RepeatGroup | None, comparison: Comparison | None
) -> list[ThreadReply]:
    """What a delivered result owes its thread: the requester's mention (not for schedules,
    which nobody is waiting on) and, for a schedule's `mention=`, a regression alert."""
    if run.channel_error:
        return []  # the result went by DM: that is the notification
    replies = []
    if run.schedule_id is None:
        mention = blocks.repeat_mention(view) if view else blocks.requester_mention(run)
        replies.append(ThreadReply("requester", mention))
    if run.mention and comparison is not None and history.regressed(run, comparison):
        alert = blocks.regression_mention(run, run.mention, comparison)
        replies.append(ThreadReply("regression", alert))
    return replies


REPLY_EVENT = "retell_run_reply"


def reply_metadata(run: Run, kind: str) -> dict[str, Any]:
    return {"event_type": REPLY_EVENT, "event_payload": {"run_id": run.id, "kind": kind}}


def status_metadata(run: Run) -> dict[str, Any]:
    """Slack message metadata that marks a run's status message, to find it again."""
    return {"event_type": STATUS_EVENT, "event_payload": {"run_id": run.id}}


def posts_status(run: Run) -> bool:
    """Whether a run shows a status message while it runs (quiet schedules and repeat batches
    other than the first do not)."""
    return run.notify not in QUIET_NOTIFY and run.repeat_of is None


def has_settled(run: Run) -> bool:
    """A repeat batch is settled once it reported to its lead, or could not be created."""
    return run.reported_at is not None or run.state == RunState.FAILED.value


def test_run_of(case: CaseResult) -> TestRun:
    """A stored per-case result in the shape the aggregation reads (explanations stay at
    Retell: Show failures reads them fresh)."""
    return TestRun("", case.case_id, case.name, cast(TestRunStatus, case.status), None)


def is_due(run: Run, now: datetime) -> bool:
    return run.next_check_at is None or run.next_check_at <= now


def apply_batch(
    run: Run, batch: BatchJob, state: RunState, *, started_at: datetime | None = None
) -> None:
    """Mirror what the store just recorded onto the in-memory run used for rendering."""
    run.passed, run.failed, run.errored, run.total = batch.counts
    run.batch_id = batch.batch_id
    run.state = state.value
    if started_at is not None:
        run.started_at = started_at


def announcement(run: Run, previous: Run | None, comparison: Comparison | None) -> Message | None:
    """What a finished run posts: the result, or for quiet schedules one line or nothing.

    `notify=failures` posts the full result only when something failed or errored, else one
    quiet line; `notify=changes` posts it only when it differs from the previous run.
    """
    full = blocks.result_message(run, comparison=comparison)
    if run.state != RunState.COMPLETE.value or run.notify not in QUIET_NOTIFY:
        return full
    if run.notify == "failures":
        return full if run.failed + run.errored else blocks.quiet_result(run)
    if comparison is None or history.changed(run, previous, comparison):
        return full
    return None


class KeepCommand(Exception):
    """Raised out of a start the database cut short: its accepted command stays kept."""
