"""The run workflow: start a batch, follow it up, finish it, deliver its result, rerun it.

This module owns the state machine of a run (see `RunState`) and nothing else: parsing happens
before it, rendering is `bot.blocks`, I/O goes through the Retell and Slack gateways and the store.
Every step that must happen once is guarded by a conditional update in the store, so that the
sweep can be run by any replica, and again after a crash, without posting a result twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

import anyio

from bot import blocks, history
from bot.admission import Admission, CommandBook
from bot.blocks import Comparison, Message
from bot.commands import (
    CommandError,
    RunCommand,
    TestSelection,
    ids_not_found,
    needs_definitions,
    parse,
    resolve_tests,
)
from bot.followup import BatchRefresher, Followed, Refresh
from bot.logs import about_run
from bot.metrics import Metrics
from bot.repeats import CaseSummary, summarize
from bot.retell import (
    LIST_PAGE_SIZE,
    BatchJob,
    CaseDefinition,
    RetellGateway,
    RetellProblem,
    TestRun,
    TestRunStatus,
)
from bot.settings import Settings
from bot.slackapi import (
    SLACK_FAILURES,
    UNREACHABLE_CHANNEL,
    SlackGateway,
    error_code,
    is_outage,
)
from bot.store import (
    DATABASE_FAILURES,
    AckedCommand,
    CaseResult,
    Run,
    RunSchedule,
    RunState,
    Store,
    utcnow,
)
from bot.suite import Engine, Suite
from bot.tenure import ClaimLapsed, Tenure

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")

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


def _about_run(
    method: Callable[Concatenate[RunWorkflow, Run, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[RunWorkflow, Run, P], Coroutine[Any, Any, R]]:
    """Tag the log lines of a workflow step about one run with its run and batch ids."""

    async def step(self: RunWorkflow, run: Run, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with about_run(run):
            return await method(self, run, *args, **kwargs)

    functools.update_wrapper(step, method)
    return step


class RunWorkflow:
    """Start, follow up, finish and rerun Retell batch tests on behalf of Slack users."""

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

    async def drain(self, *, timeout: float) -> None:
        """Let runs being started finish (batch created, status posted) before shutdown.

        A run interrupted anyway is picked up by a later sweep (`_recover`).
        """
        pending = {task for task in self._starting if not task.done()}
        if pending:
            log.info("waiting for %d run(s) being started", len(pending))
            await asyncio.wait(pending, timeout=timeout)
        await self._commands.close()

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

    # -- starting -------------------------------------------------------------------------------

    async def accept(self, who: Requester, text: str, request_key: str | None) -> Admission:
        """Keep a `run` command before it is acked, so that a process killed right after the
        ack loses nothing (a sweep starts what it left, see `_resume_commands`).

        One INSERT on the ack's critical path (shared by the commands of a burst, see
        `CommandBook`). A database that refuses it is unreachable: the requester is told at
        once that nothing was started. One that is only slow gets ACCEPT_SECONDS, then the
        command goes on unkept.
        """
        if request_key is None:
            return Admission.UNKEPT  # no key to find it again by (Slack always sends one)
        now = self._clock()
        command = AckedCommand(
            request_key=request_key,
            team_id=who.team_id,
            channel_id=who.channel_id,
            user_id=who.user_id,
            response_url=who.response_url,
            text=text,
            received_at=now,
            claimed_until=now + self._lease * COMMAND_LEASES,
        )
        return await self._commands.keep(command)

    @staticmethod
    def database_down() -> Message:
        """What a command the database could not take is answered with."""
        return _database_down()

    async def start(self, request: RunRequest) -> Run | None:
        """Resolve the test cases, create the batch and post the status message.

        Called after the ack, so nothing may fail silently here: the requester already saw
        "Starting…". Starts queue for a slot (START_CONCURRENCY) so that a burst of commands
        waits its turn instead of exhausting the database pool.
        """
        task = asyncio.current_task()
        if task is not None:
            self._starting.add(task)
            task.add_done_callback(self._starting.discard)
        async with self._keeping_command(request), self._start_slots:
            try:
                run = await self._start(request)
            except DATABASE_FAILURES as exc:
                if request.recorded:
                    log.warning("run queued, database unreachable: %s", type(exc).__name__)
                    await self._tell(request.requester, _start_queued())
                    raise _KeepCommand from exc
                log.warning("run not started, database unreachable: %s", type(exc).__name__)
                await self._tell(request.requester, _database_down())
                return None
            except Exception:
                log.exception("starting a run for %s failed", request.requester.user_id)
                await self._tell(request.requester, _start_broke())
                return None
            return run
        return None  # queued: a later sweep starts it

    @contextlib.asynccontextmanager
    async def _keeping_command(self, request: RunRequest) -> AsyncIterator[None]:
        """Hold an accepted command while it waits for a slot and starts; forget it once its
        run is recorded. A start the database cut short leaves it for a later sweep."""
        key = request.request_key if request.recorded else None
        if key is None:
            yield
            return

        async def keep() -> None:
            while True:
                await asyncio.sleep(self._lease.total_seconds())
                until = self._clock() + self._lease * COMMAND_LEASES
                await self._store.extend_command(key, until=until)

        keeper = asyncio.create_task(keep())
        try:
            yield
        except _KeepCommand:
            return
        finally:
            keeper.cancel()
        with contextlib.suppress(*DATABASE_FAILURES):  # if not forgotten, it is resumed: the
            with anyio.CancelScope(shield=True):  # run's request_key then starts nothing
                await self._store.command_started(key)

    async def _resume_commands(self) -> None:
        """Start the acked commands a process left unstarted (killed after the ack)."""
        now = self._clock()
        hold = self._lease * COMMAND_LEASES
        for command in await self._store.claim_orphaned_commands(
            now=now, hold=hold, limit=RESUMED_PER_PASS
        ):
            parsed = parse(command.text)
            if not isinstance(parsed, RunCommand):  # recorded only for `run`: never here
                await self._store.command_started(command.request_key)
                continue
            log.info("resuming a command acked by a process that stopped: %s", command.text)
            who = Requester(
                command.team_id, command.channel_id, command.user_id, command.response_url
            )
            request = RunRequest(
                who,
                parsed.engine,
                parsed.tests,
                request_key=command.request_key,
                repeats=parsed.repeats,
                recorded=True,
            )
            task = asyncio.create_task(self.start(request))
            self._resuming.add(task)
            task.add_done_callback(self._resuming.discard)

    async def _start(self, request: RunRequest) -> Run | None:
        who = request.requester
        refusal = await self._refusal(
            who, hourly_limit=request.schedule is None, runs=request.repeats
        )
        if refusal is not None:
            await self._tell(who, refusal)
            return None
        suite = await self._resolve(request)
        if suite is None:
            return None
        taken_at = asyncio.get_running_loop().time()
        run = await self._store.add_run(
            team_id=who.team_id,
            channel_id=who.channel_id,
            user_id=who.user_id,
            suite=suite,
            source=request.source,
            rerun_of=request.rerun_of,
            request_key=request.request_key,
            schedule=request.schedule,
            scheduled_for=request.scheduled_for,
            repeats=request.repeats,
            lease=self._lease,
        )
        if run is None:
            log.info("request %s was already handled; not starting it again", request.request_key)
            return None
        assert run.claim is not None
        with about_run(run):
            try:
                async with self._holding(run.claim, taken_at=taken_at) as tenure:
                    try:
                        return await self._create(run, suite, who, tenure)
                    except ClaimLapsed:
                        raise
                    except DATABASE_FAILURES:
                        raise
                    except Exception:
                        # Told by `start`. Marked failed while still held: released first, a
                        # sweep could take it for an interrupted start and create its batch.
                        await self._store.mark_failed(run.id, "internal error", now=self._clock())
                        raise
            except DATABASE_FAILURES as exc:
                # The run is recorded and claimed: once the database is back and the claim
                # has run out, a sweep recovers it (finding its batch at Retell, if created).
                log.warning("run %s: database lost while starting: %s", run.id, type(exc).__name__)
                await self._tell(who, _start_resumes())
                return None
            except ClaimLapsed:
                # The claim ran out while the batch was being created (the database lost for
                # a lease, a stalled process): a peer may be recovering the run already.
                log.warning("run %s: claim lapsed while starting; left to recovery", run.id)
                await self._tell(who, _start_resumes())
                return None

    async def _create(self, run: Run, suite: Suite, who: Requester, tenure: Tenure) -> Run | None:
        """Create the run's batch and follow it; the create ends while the claim is ours."""
        try:
            async with tenure.bounding():
                batch = await self._retell.create_batch(suite)
        except RetellProblem as problem:
            log.info("run %s: batch not created: %s", run.id, problem.message)
            await self._store.mark_failed(run.id, problem.message, now=self._clock())
            self._metrics.runs_finished.labels(RunState.FAILED.value).inc()
            await self._tell(who, await self._not_created(suite, problem))
            return None
        run.batch_id = batch.batch_id
        log.info("run %s: batch %s created (%d cases)", run.id, batch.batch_id, suite.size)
        if run.leads_repeats:
            await self._create_repeats(run, suite, who)
        await self._follow(run, batch, who, started_at=self._clock())
        return run

    async def _not_created(self, suite: Suite, problem: RetellProblem) -> Message:
        """Why Retell created no batch; for a refusal over the cases, which ids it did not know.

        Ids go to Retell unchecked, so that a run of ids costs no listing call; only when
        Retell refuses one is the engine's list read to name the unknown ids and close ones.
        """
        if problem.kind in ("not_found", "invalid"):
            try:
                definitions = await self._retell.definitions(suite.engine)
            except RetellProblem:
                definitions = None  # the engine itself is unknown: Retell's reason says so
            unknown = (
                ids_not_found(suite.case_ids, definitions) if definitions is not None else None
            )
            if unknown is not None:
                return blocks.command_error(unknown)
        return blocks.start_failed(suite, problem.message, maybe_created=problem.uncertain)

    async def _create_repeats(self, lead: Run, suite: Suite, who: Requester) -> None:
        """The other batches of a `repeat=N` run, created at once once the first exists.

        One that Retell refuses is recorded as failed with the reason and shown in the
        group's result; the others go on. They post nothing: the lead speaks for them.
        """
        taken_at = asyncio.get_running_loop().time()
        repeats = await self._store.add_repeats(lead, lease=self._lease)

        async def create(run: Run) -> None:
            assert run.claim is not None
            with about_run(run):
                async with self._holding(run.claim, taken_at=taken_at) as tenure:
                    try:
                        async with tenure.bounding():
                            batch = await self._retell.create_batch(suite)
                    except ClaimLapsed:
                        log.warning("run %s: claim lapsed while starting; left to recovery", run.id)
                        return
                    except RetellProblem as problem:
                        log.info("run %s: repeat batch not created: %s", run.id, problem.message)
                        await self._store.mark_failed(run.id, problem.message, now=self._clock())
                        self._metrics.runs_finished.labels(RunState.FAILED.value).inc()
                        return
                    await self._follow(run, batch, who, started_at=self._clock())

        await asyncio.gather(*(create(run) for run in repeats))

    async def watch(
        self, who: Requester, batch_id: str, *, request_key: str | None = None
    ) -> Run | None:
        """Follow a batch created elsewhere (the dashboard, a CI job) and report it here."""
        refusal = await self._refusal(who)
        if refusal is not None:
            await self._tell(who, refusal)
            return None
        if await self._store.by_batch(batch_id) is not None:
            await self._tell(who, blocks.problem(f"Batch {batch_id} is already being followed."))
            return None
        try:
            batch = await self._retell.get_batch(batch_id)
            test_runs = await self._retell.test_runs(batch_id)
        except RetellProblem as problem:
            await self._tell(who, blocks.problem(problem.message))
            return None
        case_ids = tuple(dict.fromkeys(test_run.case_id for test_run in test_runs))
        run = await self._store.add_run(
            team_id=who.team_id,
            channel_id=who.channel_id,
            user_id=who.user_id,
            suite=Suite(batch.engine, case_ids),
            source="watch",
            request_key=request_key,
            lease=self._lease,
        )
        if run is None:
            return None  # the same request again: the first delivery follows the batch
        assert run.claim is not None
        created = datetime.fromtimestamp(batch.created_ms / 1000, UTC)
        async with self._holding(run.claim, taken_at=asyncio.get_running_loop().time()):
            if not await self._follow(run, batch, who, started_at=min(created, self._clock())):
                await self._store.mark_failed(run.id, "followed already", now=self._clock())
                await self._tell(
                    who, blocks.problem(f"Batch {batch_id} is already being followed.")
                )
                return None
        log.info("run %s: following batch %s created elsewhere", run.id, batch.batch_id)
        return run

    @_about_run
    async def _follow(
        self, run: Run, batch: BatchJob, who: Requester, *, started_at: datetime
    ) -> bool:
        """Hand a run with a batch to the sweep, and post its status message meanwhile.

        The caller holds the run's claim (`run.claim`) and keeps holding it until this
        returns. A quiet schedule (`notify=failures|changes`) posts no status message: whether
        it says anything at all is decided when its result is known. Neither does a repeat
        batch other than the first: the lead's status message shows the whole group.

        False when the run cannot follow this batch: another run follows it already.
        """
        quiet = not _posts_status(run)
        claim = await self._store.mark_started(
            run.id,
            batch,
            first_check_in=self._settings.poll_initial_seconds,
            now=self._clock(),
            started_at=started_at,
            lease=self._lease,
            posting_status=not quiet,
            claim=run.claim,
        )
        if claim is None:
            log.warning("run %s: batch %s is followed by another run", run.id, batch.batch_id)
            return False
        _apply(run, batch, RunState.RUNNING, started_at=started_at)
        self._metrics.runs_started.labels(run.source).inc()
        if not quiet:
            await self._post_status(run, who)
        return True

    async def _resolve(self, request: RunRequest) -> Suite | None:
        tests = request.tests
        definitions: tuple[CaseDefinition, ...] = ()
        if needs_definitions(tests):
            try:
                definitions = tuple(await self._retell.definitions(request.engine))
            except RetellProblem as problem:
                await self._tell(request.requester, blocks.problem(problem.message))
                return None
        resolved = resolve_tests(tests, definitions, max_cases=self._settings.max_cases_per_run)
        if isinstance(resolved, CommandError):
            await self._tell(request.requester, blocks.command_error(resolved))
            return None
        return Suite(request.engine, resolved)

    def not_allowed(self, who: Requester) -> Message | None:
        """Why this person may not run tests here (ALLOWED_* settings), if they may not.

        No I/O: listeners call it before acking, so a refusal arrives as the ack itself.
        """
        settings = self._settings
        if settings.allowed_channel_ids and who.channel_id not in settings.allowed_channel_ids:
            return blocks.not_allowed(
                "Retell tests can't be run from this channel.", settings.admin_user_ids
            )
        if settings.allowed_user_ids and who.user_id not in settings.allowed_user_ids:
            return blocks.not_allowed(
                "You are not on the list of people who can run Retell tests.",
                settings.admin_user_ids,
            )
        return None

    async def _refusal(
        self, who: Requester, *, hourly_limit: bool = True, runs: int = 1
    ) -> Message | None:
        """`not_allowed`, plus the per-user hourly limit on runs (MAX_RUNS_PER_USER_PER_HOUR).

        Each batch of a `repeat=N` counts as a run. Schedule firings skip the hourly limit:
        SCHEDULE_MIN_INTERVAL_MINUTES bounds them.
        """
        refusal = self.not_allowed(who)
        limit = self._settings.max_runs_per_user_per_hour if hourly_limit else 0
        if refusal is None and limit:
            since = self._clock() - timedelta(hours=1)
            started = await self._store.runs_by_user_since(who.user_id, since)
            if started + runs > limit:
                batches = f" {runs} more would go over it." if started < limit else ""
                refusal = blocks.not_allowed(
                    f"You have started {started} runs in the last hour; this workspace allows "
                    f"{limit} (MAX_RUNS_PER_USER_PER_HOUR).{batches} Try again later.",
                    self._settings.admin_user_ids,
                )
        return refusal

    async def _status(
        self, run: Run, seen: Mapping[str, BatchJob] | None = None
    ) -> tuple[Message, str]:
        """The status message of a run, and the key of what it shows (to skip equal edits).

        A repeat group's lead shows every batch of the group; `seen` holds batches refreshed
        in this pass, newer than what the store has for the others.
        """
        if not run.leads_repeats:
            return blocks.status_message(run), run.counts_key
        group = await self._group(run)
        for other in group[1:]:
            batch = (seen or {}).get(other.batch_id or "")
            if batch is not None and other.state == RunState.RUNNING.value:
                _apply(other, batch, RunState.RUNNING)
        view = blocks.RepeatGroup(group)
        finished = sum(RunState(other.state).finished for other in group)
        key = "/".join(map(str, (*view.counts, finished)))
        return blocks.repeat_status(view), key

    async def _group(self, lead: Run) -> list[Run]:
        """A repeat group's runs with the lead as this process has it (its newest state)."""
        return [
            lead,
            *(other for other in await self._store.repeat_group(lead.id) if other.id != lead.id),
        ]

    async def _post_status(self, run: Run, who: Requester) -> None:
        message, shown = await self._status(run)
        try:
            ts = await self._slack.post(run.channel_id, message, metadata=_status_metadata(run))
        except SLACK_FAILURES as exc:
            code = error_code(exc)
            log.warning("run %s: status message not posted: %s", run.id, code)
            if code in UNREACHABLE_CHANNEL:
                run.channel_error = code
                await self._store.set_channel_error(run.id, code)
                await self._tell(who, _cannot_post(run.channel_id, code))
            else:
                await self._store.status_not_posted(run.id)
            return
        run.status_ts = ts
        run.shown_counts = shown
        await self._store.set_status_message(run.id, ts, shown)

    async def _adopt_status(self, run: Run) -> bool | None:
        """Take over the status message a starter that died may have posted; True if found,
        None if Slack could not be asked (posting one now could post it twice).

        The sweep only holds runs nobody else holds, and a starter holds its run until its
        status message is posted and recorded, so a `status_posting_since` left behind means
        the starter died in between, possibly after Slack had the message. The channel's
        history, searched by the message metadata every status message carries, tells.
        """
        since = run.status_posting_since
        if since is None:
            return False
        payload = _status_metadata(run)
        try:
            ts = await self._slack.find_posted(
                run.channel_id,
                since=since,
                event_type=payload["event_type"],
                payload=payload["event_payload"],
            )
        except SLACK_FAILURES as exc:
            log.warning(
                "run %s: status message not looked for (%s); looked for again later",
                run.id,
                error_code(exc) or type(exc).__name__,
            )
            return None
        run.status_posting_since = None
        if ts is None:
            log.info("run %s: its starter died before posting the status message", run.id)
            await self._store.status_not_posted(run.id)
            return False
        log.info("run %s: took over the status message its starter had posted", run.id)
        run.status_ts = ts
        await self._store.set_status_message(run.id, ts, None)
        return True

    # -- reruns and triage ------------------------------------------------------------------------

    async def rerun(
        self, run_id: int, who: Requester, *, only_failed: bool, request_key: str | None = None
    ) -> Run | None:
        """A new batch with the same engine and cases (or only those that failed or errored)."""
        original = await self._authorized_run(run_id, who)
        if original is None:
            return None
        hold = max(self._lease, RERUN_LOCK)
        if not await self._store.lock_rerun(run_id, now=self._clock(), lease=hold):
            await self._tell(who, _rerun_under_way())
            return None
        try:
            if await self._store.rerun_in_flight(run_id):
                await self._tell(who, _rerun_under_way())
                return None
            return await self._rerun(
                original, who, only_failed=only_failed, request_key=request_key
            )
        finally:
            await self._store.unlock_rerun(run_id)

    async def _rerun(
        self, original: Run, who: Requester, *, only_failed: bool, request_key: str | None
    ) -> Run | None:
        case_ids: Sequence[str] = original.case_ids
        if only_failed:
            try:
                case_ids = await self._failed_cases(original)
            except RetellProblem as problem:
                await self._tell(who, blocks.problem(problem.message))
                return None
            if not case_ids:
                message = "No case failed or errored in that batch: nothing to rerun."
                await self._tell(who, blocks.problem(message))
                return None
        tests = TestSelection(ids=tuple(case_ids), names=(), everything=False)
        request = RunRequest(
            who,
            original.engine,
            tests,
            source="rerun",
            rerun_of=original.id,
            request_key=request_key,
            repeats=original.repeats,
        )
        return await self.start(request)

    async def _failed_cases(self, original: Run) -> list[str]:
        """The cases that failed or errored in a run (in any batch of a repeat group), in the
        suite's order: from the results stored when it finished, else read from Retell."""
        bad: set[str] = set()
        for run in await self._store.repeat_group(original.id):
            if run.cases_recorded_at is not None:
                cases = [(c.case_id, c.status) for c in await self._store.case_results(run.id)]
            elif run.batch_id is not None:
                cases = [(r.case_id, r.status) for r in await self._retell.test_runs(run.batch_id)]
            else:
                continue
            bad.update(case_id for case_id, status in cases if status in ("fail", "error"))
        in_suite = [case_id for case_id in original.case_ids if case_id in bad]
        return in_suite + sorted(bad.difference(in_suite))

    async def show_failures(self, run_id: int, who: Requester) -> None:
        """Thread replies listing each failed, flaky and errored case with Retell's why.

        Read fresh from Retell (every page of every batch of the run), once: a second press,
        or a double click, is told where the list is instead of posting it again.
        """
        run = await self._authorized_run(run_id, who)
        if run is None or run.batch_id is None:
            return
        if not await self._store.mark_failures_shown(run.id, now=self._clock()):
            await self._tell(who, _failures_already_shown())
            return
        try:
            await self._post_failures(run)
        except RetellProblem as problem:
            await self._store.unmark_failures_shown(run.id)
            await self._tell(who, blocks.problem(problem.message))
        except SLACK_FAILURES as exc:
            await self._store.unmark_failures_shown(run.id)
            log.warning("run %s: failures not posted: %s", run.id, error_code(exc))
            await self._tell(
                who,
                blocks.problem(f"The failures could not be posted ({error_code(exc)}); try again."),
            )

    async def _post_failures(self, run: Run) -> None:
        group = [r for r in await self._store.repeat_group(run.id) if r.batch_id]
        batches = await asyncio.gather(*(self._retell.test_runs(r.batch_id or "") for r in group))
        post = blocks.failures_post(run, summarize(batches), batches=len(batches))
        for reply in post.replies:
            await self._slack.post(run.channel_id, reply, thread_ts=run.status_ts)
        if post.attachment is not None:
            file = post.attachment
            await self._slack.upload(
                run.channel_id,
                file.content,
                filename=file.filename,
                title=file.title,
                thread_ts=run.status_ts,
            )

    async def _authorized_run(self, run_id: int, who: Requester) -> Run | None:
        """The run a button names, if it is this channel's; a repeat group's lead for any of
        its batches (buttons act on the group)."""
        run = await self._store.get(run_id)
        if run is not None and run.repeat_of is not None:
            run = await self._store.get(run.repeat_of)
        if run is None or run.team_id != who.team_id or run.channel_id != who.channel_id:
            await self._tell(who, blocks.problem("That run is not one of this channel's."))
            return None
        return run

    # -- status -----------------------------------------------------------------------------------

    async def status(self, who: Requester, batch_id: str | None) -> Message:
        if batch_id is None:
            return blocks.in_flight_list(await self._store.in_flight(who.channel_id))
        run = await self._store.by_batch(batch_id)
        if run is not None and run.team_id != who.team_id:
            run = None
        try:
            batch = await self._retell.get_batch(batch_id)
        except RetellProblem as problem:
            return blocks.problem(problem.message)
        return blocks.batch_status(batch, run)

    # -- following up ------------------------------------------------------------------------

    async def sweep(self) -> None:
        """One follow-up pass (an APScheduler job): refresh what is due, finish what is done."""
        if self._sweeping.locked():
            return  # this process is still on the previous pass; the next tick will do
        async with self._sweeping:
            await self._sweep()

    async def _sweep(self) -> None:
        # Pass after pass until nothing is due, for at most half a lease: peers take the rest.
        # The APScheduler job running this holds a lease of the same length, extended every
        # half lease; a job that outlived a late extension was acquired again by its own
        # scheduler, and APScheduler 4.0.0a6 then crashed (KeyError in `_running_jobs`).
        until = asyncio.get_running_loop().time() + self._lease.total_seconds() / 2
        await self._resume_commands()
        while asyncio.get_running_loop().time() < until:
            now = self._clock()
            taken_at = asyncio.get_running_loop().time()
            claim, runs = await self._store.claim_due(
                now=now, lease=self._lease, limit=ENGINES_PER_PASS
            )
            if not runs:
                return
            async with self._holding(claim, taken_at=taken_at):
                await self._follow_up(claim, runs, now)

    async def _follow_up(self, claim: str, runs: Sequence[Run], now: datetime) -> None:
        stale = [r for r in runs if r.state == RunState.STARTING.value]
        running = [r for r in runs if r.state == RunState.RUNNING.value and r.batch_id]
        finished = [r for r in runs if r.run_state.finished and r.reported_at is None]
        unmentioned = [r for r in runs if r.reported_at is not None and r.mention_pending]
        await _all_settled(
            self._check(claim, running, now),
            _at_most(RUNS_AT_ONCE, lambda run: self._deliver(run, claim), finished),
            _at_most(RUNS_AT_ONCE, lambda run: self._mention(run, claim), unmentioned),
            _at_most(RUNS_AT_ONCE, lambda run: self._recover(run, claim), stale),
        )

    async def _check(self, claim: str, running: Sequence[Run], now: datetime) -> None:
        """Refresh running batches engine by engine; finish the complete ones, pace the rest."""
        if not running:
            return
        self._metrics.follow_up_checks.inc(len(running))
        refresh = await self._refresher.refresh(
            Followed(r.batch_id or "", r.engine, due=_due(r, now)) for r in running
        )
        checks = await _at_most(
            RUNS_AT_ONCE, lambda run: self._after_check(run, claim, refresh, now), running
        )
        by_engine: dict[Engine, list[Check]] = defaultdict(list)
        for run, check in zip(running, checks, strict=True):
            if check is not None:
                by_engine[run.engine].append(check)
        if not by_engine:
            return
        floor = await self._budget_floor()
        settings = self._settings
        for engine_checks in by_engine.values():
            # The engine is listed again when its busiest batch needs it. Backing off saves a
            # request, but one list call refreshes all of the engine's batches: it backs off
            # only as far as keeps each of them seen every POLL_MAX_SECONDS, and never below
            # what the Retell budget allows.
            fastest = min(check.interval for check in engine_checks)
            worth_it = settings.poll_max_seconds / len(engine_checks)
            interval = max(min(fastest, worth_it), settings.poll_initial_seconds, floor)
            seen = [(check.run_id, check.batch) for check in engine_checks]
            await self._store.record_checks(claim, seen, interval=interval, now=now)

    async def _budget_floor(self) -> float:
        """Shortest follow-up interval per engine that keeps within RETELL_REQUESTS_PER_MINUTE.

        Each engine with batches running costs one list page per thousand of them per
        follow-up, so the interval grows with the number of engines, hardly with the batches.
        """
        pages = sum(math.ceil(n / LIST_PAGE_SIZE) for n in await self._store.running_per_engine())
        return 60.0 * pages / self._settings.retell_requests_per_minute

    @_about_run
    async def _recover(self, run: Run, claim: str) -> None:
        """A run left `starting` by a process that died while creating its batch.

        Retell has no idempotency key, and the create may have reached it before the process
        died: so the engine's newest batches are searched first (created since the run, the
        same number of cases, the same case ids, followed by no other run). One found is
        followed as if the start had finished; only when there is none is the batch created,
        once. Either way the requester gets one status message and one result.

        The run was free to take only once its starter's claim had run out, and a starter
        stops creating before then (`Tenure`): so a batch it made is on Retell's list by now.
        """
        taken_at = asyncio.get_running_loop().time()
        own = await self._store.claim_alone(run.id, claim, until=self._clock() + self._lease)
        if own is None:
            return
        run.claim = own
        who = Requester(
            run.team_id, run.channel_id, run.user_id, announce=run.schedule_id is not None
        )
        async with self._holding(own, taken_at=taken_at) as tenure:
            try:
                candidates = await self._created_by(run)
            except RetellProblem as problem:
                log.warning("run %s: interrupted start not checked: %s", run.id, problem.message)
                retry_in = self._settings.poll_max_seconds
                await self._store.defer_delivery(run.id, own, retry_in=retry_in, now=self._clock())
                return
            for batch in candidates:
                started = datetime.fromtimestamp(batch.created_ms / 1000, UTC)
                if await self._follow(run, batch, who, started_at=min(started, self._clock())):
                    log.info(
                        "run %s: interrupted start had created batch %s", run.id, batch.batch_id
                    )
                    return
            current = await self._store.get(run.id)
            if current is None or current.state != RunState.STARTING.value or current.claim != own:
                # Started (or failed) meanwhile by its starter, or taken by a peer: the batch
                # found above and turned down is that run's; a new one would be nobody's.
                log.info("run %s: interrupted start was taken up meanwhile; not creating", run.id)
                return
            log.info("run %s: interrupted start created no batch; creating it now", run.id)
            try:
                await self._create(run, run.suite, who, tenure)
            except ClaimLapsed:
                log.warning("run %s: claim lapsed while recovering; left to the next sweep", run.id)

    async def _created_by(self, run: Run) -> list[BatchJob]:
        """Batches at Retell that an interrupted start of `run` may have created, oldest first.

        The engine's list is read newest first, page after page, back to the run's creation:
        after an outage a busy engine has had many batches created since, more than one page.
        """
        since_ms = (run.created_at - CREATE_CLOCK_SKEW).timestamp() * 1000
        recent: list[BatchJob] = []
        key: str | None = None
        for _ in range(RECOVERY_PAGES):
            page, key = await self._retell.list_batches(
                run.engine, pagination_key=key, limit=RECOVERY_PAGE
            )
            recent.extend(batch for batch in page if batch.created_ms >= since_ms)
            if key is None or not page or min(b.created_ms for b in page) < since_ms:
                break
        else:
            log.warning(
                "run %s: more than %d batches since it was created; looked at the newest",
                run.id,
                RECOVERY_PAGES * RECOVERY_PAGE,
            )
        wanted = set(run.case_ids)
        found: list[BatchJob] = []
        for batch in sorted(recent, key=lambda b: b.created_ms):
            if batch.total != len(wanted):
                continue
            if await self._store.by_batch(batch.batch_id) is not None:
                continue
            cases = {test_run.case_id for test_run in await self._retell.test_runs(batch.batch_id)}
            if cases == wanted:
                found.append(batch)
        return found

    @_about_run
    async def _after_check(
        self, run: Run, claim: str, refresh: Refresh, now: datetime
    ) -> Check | None:
        """What one refresh means for a run: finished, or still going (then its next interval).

        None when the refresh did not cover a run that was not due either: it keeps its own
        schedule and is released with the claim.
        """
        batch = refresh.batches.get(run.batch_id or "")
        if batch is None and not _due(run, now):
            return None
        if run.batch_id in refresh.problems:
            log.warning("run %s: check failed: %s", run.id, refresh.problems[run.batch_id].message)
        if batch is not None and batch.is_complete:
            await self._finish(run, claim, RunState.COMPLETE, batch, now)
            return None
        if self._timed_out(run, now):
            await self._finish(run, claim, RunState.TIMED_OUT, batch, now)
            return None
        return await self._progress(run, batch, refresh.batches)

    def _timed_out(self, run: Run, now: datetime) -> bool:
        started = run.started_at or run.created_at
        return now - started >= timedelta(minutes=self._settings.batch_timeout_minutes)

    async def _progress(
        self, run: Run, batch: BatchJob | None, seen: Mapping[str, BatchJob] | None = None
    ) -> Check:
        # Back off while the counts stand still; start over as soon as they move.
        moved = batch is not None and batch.counts != run.counts
        backed_off = min(run.check_interval * BACKOFF_FACTOR, self._settings.poll_max_seconds)
        interval = self._settings.poll_initial_seconds if moved else backed_off
        if batch is not None:
            _apply(run, batch, RunState.RUNNING)
        if run.status_ts is None and run.channel_error is None and _posts_status(run):
            if await self._adopt_status(run) is False:
                await self._post_status(run, Requester(run.team_id, run.channel_id, run.user_id))
        elif run.status_ts:
            await self._show_progress(run, run.status_ts, seen)
        return Check(run.id, batch, interval)

    async def _show_progress(
        self, run: Run, status_ts: str, seen: Mapping[str, BatchJob] | None = None
    ) -> None:
        """Edit the status message when what it would show changed since it was last shown."""
        if not run.leads_repeats and run.counts_key == run.shown_counts:
            return  # nothing moved: no need to read anything
        message, shown = await self._status(run, seen)
        if shown != run.shown_counts and await self._edit(run, status_ts, message):
            run.shown_counts = shown
            await self._store.set_shown(run.id, shown)

    async def _edit(self, run: Run, status_ts: str, message: Message) -> bool:
        """Show new counts on the status message, unless the workspace's edits are spent.

        A skipped edit is not lost: the counts stay unshown and a later check shows them.
        """
        async with self._slack_calls:
            try:
                edited = await self._slack.edit(
                    run.team_id,
                    run.channel_id,
                    status_ts,
                    message,
                    urgent=False,
                )
            except SLACK_FAILURES as exc:
                log.warning("run %s: status not updated: %s", run.id, error_code(exc))
                return False
        if not edited:
            self._metrics.status_edits_coalesced.inc()
        return edited

    async def _finish(
        self, run: Run, claim: str, state: RunState, batch: BatchJob | None, now: datetime
    ) -> None:
        if not await self._store.finish(run.id, state, batch, now=now):
            return  # someone else finished it
        self._metrics.runs_finished.labels(state.value).inc()
        if batch is not None:
            _apply(run, batch, state)
        run.state = state.value
        run.finished_at = now
        log.info("run %s: batch %s %s (%s)", run.id, run.batch_id, state.value, run.counts_key)
        await self._record_cases(run)
        await self._deliver(run, claim)

    async def _record_cases(self, run: Run) -> None:
        """Store how each case ended, once, for comparisons and digests.

        A run where everything passed needs no Retell call: its cases are its case ids, all
        passed (names come from earlier records of the same case, else the id). Otherwise one
        read of `list-test-runs` (all pages). If that fails the result is still delivered;
        it then compares pass rates only.
        """
        if run.cases_recorded_at is not None or run.batch_id is None:
            return
        now = self._clock()
        if run.state == RunState.COMPLETE.value and run.passed == run.total == len(run.case_ids):
            names = await self._store.case_names(run.case_ids)
            cases = [(case_id, names.get(case_id, case_id), "pass") for case_id in run.case_ids]
        else:
            try:
                test_runs = await self._retell.test_runs(run.batch_id)
            except RetellProblem as problem:
                log.warning("run %s: per-case results not read: %s", run.id, problem.message)
                return
            cases = [(r.case_id, r.name, r.status) for r in test_runs]
        await self._store.record_cases(run.id, cases, now=now)
        run.cases_recorded_at = now

    @_about_run
    async def _deliver(self, run: Run, claim: str) -> None:
        """Turn the status message into the result; retried by later sweeps until it lands.

        A quiet schedule's run may post one line instead, or nothing (see `_announcement`).
        A repeat group reports once, through its lead, when every batch of it has finished.
        """
        if run.repeat_of is not None:
            await self._hand_to_lead(run, claim)
            return
        comparison: Comparison | None = None
        view: blocks.RepeatGroup | None = None
        if run.leads_repeats:
            group = await self._group(run)
            if not all(_settled(other) for other in group[1:]):
                await self._await_repeats(run, claim)
                return
            view = blocks.RepeatGroup(group, await self._summaries(group))
            message: Message | None = blocks.repeat_result(view)
        else:
            previous, comparison = await self._comparison(run)
            message = _announcement(run, previous, comparison)
        if message is None:
            await self._store.mark_reported(run.id, claim, now=self._clock())
            log.info("run %s: nothing changed; notify=changes stays quiet", run.id)
            return
        now = self._clock()
        if (
            run.status_ts is None
            and not run.channel_error
            and await self._adopt_status(run) is None
        ):
            retry_in = self._settings.poll_initial_seconds
            await self._store.defer_delivery(run.id, claim, retry_in=retry_in, now=now)
            return
        try:
            async with self._slack_calls:
                if run.channel_error:
                    await self._slack.direct_message(run.user_id, message)
                elif run.status_ts:
                    edited = await self._slack.edit(
                        run.team_id, run.channel_id, run.status_ts, message, urgent=True
                    )
                    if not edited:
                        retry_in = self._slack.edits.retry_after
                        await self._store.defer_delivery(run.id, claim, retry_in=retry_in, now=now)
                        return
                else:
                    run.status_ts = await self._slack.post(run.channel_id, message)
                    await self._store.set_status_message(run.id, run.status_ts, run.counts_key)
        except SLACK_FAILURES as exc:
            code = error_code(exc)
            if code in UNREACHABLE_CHANNEL and not run.channel_error:
                log.warning(
                    "run %s: channel unusable (%s); result goes to the requester", run.id, code
                )
                run.channel_error = code
                await self._store.set_channel_error(run.id, code)
                await self._deliver(run, claim)
                return
            await self._delivery_failed(run, claim, code or type(exc).__name__, exc)
            return
        replies = _thread_replies(run, view, comparison)
        if await self._store.mark_reported(run.id, claim, now=self._clock(), mention=bool(replies)):
            await self._post_replies(run, claim, replies, first_try=True)

    @_about_run
    async def _mention(self, run: Run, claim: str) -> None:
        """Post the thread replies still owed for a result a previous attempt delivered."""
        view: blocks.RepeatGroup | None = None
        comparison: Comparison | None = None
        if run.leads_repeats:
            group = await self._group(run)
            view = blocks.RepeatGroup(group, await self._summaries(group))
        elif run.mention:
            _, comparison = await self._comparison(run)
        await self._post_replies(run, claim, _thread_replies(run, view, comparison))

    async def _post_replies(
        self, run: Run, claim: str, replies: Sequence[ThreadReply], *, first_try: bool = False
    ) -> None:
        """The result's thread replies, each once: a retry looks in the thread before posting.

        Slack has no idempotency key, and an attempt cut short (a crash, a lost connection,
        a cancelled job) may have posted a reply before recording it; each carries message
        metadata naming the run and the reply, which the thread's history shows.
        """
        try:
            async with self._slack_calls:
                for reply in replies:
                    metadata = _reply_metadata(run, reply.kind)
                    if not first_try and await self._slack.find_reply(
                        run.channel_id,
                        run.status_ts or "",
                        event_type=metadata["event_type"],
                        payload=metadata["event_payload"],
                    ):
                        continue
                    await self._slack.post(
                        run.channel_id, reply.message, thread_ts=run.status_ts, metadata=metadata
                    )
        except SLACK_FAILURES as exc:
            code = error_code(exc) or type(exc).__name__
            now = self._clock()
            finished = run.finished_at or now
            if is_outage(exc) and now - finished < DELIVERY_OUTAGE:
                retry_in = self._settings.poll_initial_seconds
                log.info("run %s: Slack unavailable (%s); mention retried", run.id, code)
                await self._store.defer_delivery(run.id, claim, retry_in=retry_in, now=now)
                return
            if run.delivery_attempts + 1 < MAX_DELIVERY_ATTEMPTS:
                log.warning("run %s: thread reply not posted (%s); retried", run.id, code)
                retry_in = self._settings.poll_max_seconds
                await self._store.delivery_failed(run.id, claim, retry_in=retry_in, now=now)
                return
            log.error("run %s: thread reply not posted after retries: %s", run.id, code)
        await self._store.mark_mentioned(run.id, claim)

    async def _comparison(self, run: Run) -> tuple[Run | None, Comparison | None]:
        """The previous completed run of the same suite here, and how this one differs."""
        if run.state != RunState.COMPLETE.value:
            return None, None
        previous = await self._store.previous_run(run)
        if previous is None:
            return None, history.compare(None, (), ())
        current_cases = await self._store.case_results(run.id)
        previous_cases = await self._store.case_results(previous.id)
        return previous, history.compare(previous, current_cases, previous_cases)

    async def _delivery_failed(self, run: Run, claim: str, code: str, exc: BaseException) -> None:
        """Try the result again later; give up only on refusals, never on an outage.

        Slack down or rate limiting (5xx, 429, no answer) says nothing about the result: it
        is tried again, backing off to POLL_MAX_SECONDS, for up to DELIVERY_OUTAGE_DAYS.
        A refusal (a workspace policy, a message Slack will not take) counts as an attempt,
        and after MAX_DELIVERY_ATTEMPTS the run is recorded as undeliverable.
        """
        now = self._clock()
        finished = run.finished_at or now
        if is_outage(exc) and now - finished < DELIVERY_OUTAGE:
            waited = (now - finished).total_seconds()
            retry_in = min(
                max(self._settings.poll_initial_seconds, waited / 4),
                self._settings.poll_max_seconds,
            )
            log.info(
                "run %s: Slack unavailable (%s); result retried in %.1fs", run.id, code, retry_in
            )
            await self._store.defer_delivery(run.id, claim, retry_in=retry_in, now=now)
            return
        attempts = run.delivery_attempts + 1
        if attempts >= MAX_DELIVERY_ATTEMPTS:
            log.error("run %s: result not delivered after %d attempts: %s", run.id, attempts, code)
            await self._store.give_up_delivery(run.id, claim, now=now)
            return
        retry_in = min(
            self._settings.poll_initial_seconds * 2**attempts, self._settings.poll_max_seconds
        )
        log.warning("run %s: result not delivered (%s); retry in %.1fs", run.id, code, retry_in)
        await self._store.delivery_failed(run.id, claim, retry_in=retry_in, now=now)

    async def _hand_to_lead(self, run: Run, claim: str) -> None:
        """A repeat batch other than the first is done (its cases recorded): wake the lead."""
        if await self._store.mark_reported(run.id, claim, now=self._clock()) and run.repeat_of:
            await self._store.nudge(run.repeat_of, now=self._clock())

    async def _await_repeats(self, lead: Run, claim: str) -> None:
        """The lead finished before other batches of its group: keep showing their progress,
        and look again shortly (a batch finishing nudges it sooner)."""
        if lead.status_ts and not lead.channel_error:
            await self._show_progress(lead, lead.status_ts)
        retry_in = self._settings.poll_initial_seconds
        await self._store.defer_delivery(lead.id, claim, retry_in=retry_in, now=self._clock())

    async def _summaries(self, group: Sequence[Run]) -> list[CaseSummary]:
        """Per-case verdicts over a group's batches, from the results stored as each finished."""
        order = {case_id: i for i, case_id in enumerate(group[0].case_ids)}
        batches = []
        for run in group:
            if run.cases_recorded_at is None:
                continue
            cases = sorted(
                await self._store.case_results(run.id),
                key=lambda c: order.get(c.case_id, len(order)),
            )
            batches.append([_test_run(case) for case in cases])
        return summarize(batches)

    # -- private replies ------------------------------------------------------------------------

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


async def _at_most(
    limit: int, step: Callable[[Run], Coroutine[Any, Any, R]], runs: Sequence[Run]
) -> list[R]:
    """`step` for every run, `limit` at a time (not one task each at once); results in order."""
    results: list[R] = []
    for start in range(0, len(runs), limit):
        results += await _all_settled(*(step(run) for run in runs[start : start + limit]))
    return results


async def _all_settled(*steps: Coroutine[Any, Any, R]) -> list[R]:
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


def _thread_replies(
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


def _reply_metadata(run: Run, kind: str) -> dict[str, Any]:
    return {"event_type": REPLY_EVENT, "event_payload": {"run_id": run.id, "kind": kind}}


def _status_metadata(run: Run) -> dict[str, Any]:
    """Slack message metadata that marks a run's status message, to find it again."""
    return {"event_type": STATUS_EVENT, "event_payload": {"run_id": run.id}}


def _posts_status(run: Run) -> bool:
    """Whether a run shows a status message while it runs (quiet schedules and repeat batches
    other than the first do not)."""
    return run.notify not in QUIET_NOTIFY and run.repeat_of is None


def _settled(run: Run) -> bool:
    """A repeat batch is settled once it reported to its lead, or could not be created."""
    return run.reported_at is not None or run.state == RunState.FAILED.value


def _test_run(case: CaseResult) -> TestRun:
    """A stored per-case result in the shape the aggregation reads (explanations stay at
    Retell: Show failures reads them fresh)."""
    return TestRun("", case.case_id, case.name, cast(TestRunStatus, case.status), None)


def _due(run: Run, now: datetime) -> bool:
    return run.next_check_at is None or run.next_check_at <= now


def _apply(
    run: Run, batch: BatchJob, state: RunState, *, started_at: datetime | None = None
) -> None:
    """Mirror what the store just recorded onto the in-memory run used for rendering."""
    run.passed, run.failed, run.errored, run.total = batch.counts
    run.batch_id = batch.batch_id
    run.state = state.value
    if started_at is not None:
        run.started_at = started_at


def _announcement(run: Run, previous: Run | None, comparison: Comparison | None) -> Message | None:
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


def _database_down() -> Message:
    return blocks.problem(
        "The bot's database is not reachable right now, so this batch test was not started. "
        "Try again in a few minutes."
    )


def _start_queued() -> Message:
    return blocks.problem(
        "The bot's database is not reachable right now. This batch test is queued: it starts "
        "by itself once the database is back, and the status will appear here then."
    )


class _KeepCommand(Exception):
    """Raised out of a start the database cut short: its accepted command stays kept."""


def _start_resumes() -> Message:
    return blocks.problem(
        "The bot lost its database while starting this batch test. It carries on by itself "
        "once the database is back: the status and the result will appear here then."
    )


def _start_broke() -> Message:
    return blocks.problem(
        "Something went wrong on the bot's side while starting this batch test, so it may not "
        "have started. Check `/retell-test status` in a minute and try again if it is not there."
    )


def _failures_already_shown() -> Message:
    return blocks.problem(
        "The failures of this run are already listed in the thread under its result."
    )


def _rerun_under_way() -> Message:
    return blocks.problem(
        "A rerun of this batch is already under way: its status message is in the channel."
    )


def _cannot_post(channel_id: str, code: str) -> Message:
    reasons = {
        "channel_not_found": "I can't see that channel (is it private? invite me with `/invite`).",
        "is_archived": "That channel is archived.",
        "not_in_channel": "I'm not in that channel and could not join it: `/invite` me.",
    }
    text = (
        f"Your batch is running, but I could not post its status in <#{channel_id}>: "
        f"{reasons.get(code, code)} I'll send you the result directly."
    )
    return Message(
        text=text, blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    )
