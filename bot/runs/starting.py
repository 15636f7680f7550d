"""Starting runs: refusals, the test cases, the batch, the status message."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from bot import blocks
from bot.agents import EngineVersions
from bot.commands import CommandError, needs_definitions, resolve_tests
from bot.logs import about_run
from bot.retell import CaseDefinition, RetellProblem
from bot.runs.accepted import AcceptedCommands, KeepCommand
from bot.runs.context import Services
from bot.runs.creating import Creation
from bot.runs.refusals import Refusals
from bot.runs.replies import database_down, start_broke, start_queued, start_resumes
from bot.runs.requests import Requester, RunRequest
from bot.store import DATABASE_FAILURES, AckedCommand, Run
from bot.suite import Suite
from bot.tenure import ClaimLapsed

# Every part of the workflow logs as `bot.runs`, as the one module did: log filters and
# tests name it.
log = logging.getLogger("bot.runs")

# Runs being started at once; more wait their turn. A start holds a database connection only
# between its Retell calls, so this can exceed the pool (15); unbounded, a burst of 1,500
# commands queued for the pool past its timeout. 100 is also the Retell SDK's connection pool.
START_CONCURRENCY = 100


class Starting:
    """Start runs asked for (commands, buttons, schedules) and follow batches created elsewhere."""

    def __init__(
        self, services: Services, commands: AcceptedCommands, refusals: Refusals, creation: Creation
    ) -> None:
        self._settings = services.settings
        self._store = services.store
        self._retell = services.retell
        self._clock = services.clock
        self._lease = services.lease
        self._holding = services.holding
        self._tell = services.tell
        self._commands = commands
        self._refusals = refusals
        self._creation = creation
        self._starting: set[asyncio.Task[object]] = set()
        self._resuming: set[asyncio.Task[Run | None]] = set()  # started by a sweep
        self._start_slots = asyncio.Semaphore(START_CONCURRENCY)

    async def drain(self, *, timeout: float) -> None:
        """Let runs being started finish (batch created, status posted) before shutdown.

        A run interrupted anyway is picked up by a later sweep (`Recovery.recover`).
        """
        pending = {task for task in self._starting if not task.done()}
        if pending:
            log.info("waiting for %d run(s) being started", len(pending))
            await asyncio.wait(pending, timeout=timeout)

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
        async with self._commands.keeping(request), self._start_slots:
            try:
                run = await self._start(request)
            except DATABASE_FAILURES as exc:
                if request.recorded:
                    log.warning("run queued, database unreachable: %s", type(exc).__name__)
                    await self._tell(request.requester, start_queued())
                    raise KeepCommand from exc
                log.warning("run not started, database unreachable: %s", type(exc).__name__)
                await self._tell(request.requester, database_down())
                return None
            except Exception:
                log.exception("starting a run for %s failed", request.requester.user_id)
                await self._tell(request.requester, start_broke())
                return None
            return run
        return None  # queued: a later sweep starts it

    async def resume_commands(self, unkept: Sequence[AckedCommand] = ()) -> None:
        """Start the acked commands a process left unstarted (killed after the ack, or acked
        while this one started: `bot.early`), and `unkept` ones, acked during start-up while
        the database was too slow to keep them (this process is all they have)."""
        # The unkept first: claiming the orphans needs the database, which may be down.
        for command in unkept:
            self._resume(self._commands.request(command, recorded=False))
        async for request in self._commands.orphaned():
            self._resume(request)

    def _resume(self, request: RunRequest | None) -> None:
        if request is not None:
            task = asyncio.create_task(self.start(request))
            self._resuming.add(task)
            task.add_done_callback(self._resuming.discard)

    async def _start(self, request: RunRequest) -> Run | None:
        who = request.requester
        if unconnected := await self._refusals.not_connected(who):
            await self._tell(who, unconnected)
            return None
        refusal = await self._refusals.refusal(
            who, hourly_limit=request.schedule is None, runs=request.batches
        )
        if refusal is not None:
            await self._tell(who, blocks.refused(refusal))
            return None
        candidate_version: int | None = None
        if request.candidate is not None:
            candidate_version = await self._candidate_version(request)
            if candidate_version is None:
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
            candidate_version=candidate_version,
            min_pass=request.min_pass,
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
                        return await self._creation.create(run, suite, who, tenure)
                    except ClaimLapsed:
                        raise
                    except DATABASE_FAILURES:
                        raise
                    except Exception:
                        # Told by `start`. Marked failed while still held: released first, a
                        # sweep could take it for an interrupted start and create its batch.
                        await self._store.mark_failed(
                            run.id, "internal error", now=self._clock(), claim=run.claim
                        )
                        raise
            except DATABASE_FAILURES as exc:
                # The run is recorded and claimed: once the database is back and the claim
                # has run out, a sweep recovers it (finding its batch at Retell, if created).
                log.warning("run %s: database lost while starting: %s", run.id, type(exc).__name__)
                await self._tell(who, start_resumes())
                return None
            except ClaimLapsed:
                # The claim ran out while the batch was being created (the database lost for
                # a lease, a stalled process): a peer may be recovering the run already. The
                # requester is told nothing: the recovery posts the status message and the
                # result as this start would have.
                log.warning("run %s: claim lapsed while starting; left to recovery", run.id)
                return None

    async def watch(
        self, who: Requester, batch_id: str, *, request_key: str | None = None
    ) -> Run | None:
        """Follow a batch created elsewhere (the dashboard, a CI job) and report it here."""
        refusal = await self._refusals.refusal(who)
        if refusal is not None:
            await self._tell(who, blocks.refused(refusal))
            return None
        if unconnected := await self._refusals.not_connected(who):
            await self._tell(who, unconnected)
            return None
        if await self._store.by_batch(batch_id) is not None:
            await self._tell(who, blocks.problem(f"Batch {batch_id} is already being followed."))
            return None
        try:
            retell = self._retell.of(who.team_id)
            batch = await retell.get_batch(batch_id)
            test_runs = await retell.test_runs(batch_id)
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
            if not await self._creation.follow(
                run, batch, who, started_at=min(created, self._clock())
            ):
                await self._store.mark_failed(
                    run.id, "followed already", now=self._clock(), claim=run.claim
                )
                await self._tell(
                    who, blocks.problem(f"Batch {batch_id} is already being followed.")
                )
                return None
        log.info("run %s: following batch %s created elsewhere", run.id, batch.batch_id)
        return run

    async def _candidate_version(self, request: RunRequest) -> int | None:
        """Version B of a comparison, once Retell has confirmed both versions exist.

        Checked before anything is recorded, so that a version that does not exist, or a
        short-form `compare` whose A is already the latest, creates nothing. None when the
        requester was told why.
        """
        assert request.candidate is not None
        a, b = request.engine, request.candidate
        versions = EngineVersions(self._retell.of(request.requester.team_id))
        answers = await asyncio.gather(
            versions.engine_version(a),
            versions.engine_version(b),
            return_exceptions=True,
        )
        for answer in answers:
            if isinstance(answer, RetellProblem):
                await self._tell(request.requester, blocks.problem(answer.message))
                return None
            if isinstance(answer, BaseException):
                raise answer
        b_version = answers[1]
        assert isinstance(b_version, int)
        if b_version == a.version:
            await self._tell(
                request.requester, blocks.same_version(a, explicit=b.version is not None)
            )
            return None
        return b_version

    async def _resolve(self, request: RunRequest) -> Suite | None:
        tests = request.tests
        definitions: tuple[CaseDefinition, ...] = ()
        if needs_definitions(tests):
            try:
                retell = self._retell.of(request.requester.team_id)
                definitions = tuple(await retell.definitions(request.engine))
            except RetellProblem as problem:
                await self._tell(request.requester, blocks.problem(problem.message))
                return None
        resolved = resolve_tests(tests, definitions, max_cases=self._settings.max_cases_per_run)
        if isinstance(resolved, CommandError):
            await self._tell(request.requester, blocks.command_error(resolved))
            return None
        return Suite(request.engine, resolved)
