"""Creating a run's batch (and its repeats) and handing it to the sweep; following a batch made
elsewhere.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from bot import blocks
from bot.blocks import Message
from bot.commands import (
    CommandError,
    ids_not_found,
    needs_definitions,
    resolve_tests,
)
from bot.logs import about_run
from bot.retell import (
    BatchJob,
    CaseDefinition,
    RetellProblem,
)
from bot.runs import notices
from bot.runs.base import Requester, RunRequest, apply_batch, log, posts_status, tagged_with_run
from bot.runs.status import StatusMessages
from bot.store import (
    DATABASE_FAILURES,
    Run,
    RunState,
)
from bot.suite import Suite
from bot.tenure import ClaimLapsed, Tenure


class Starting(StatusMessages):
    """Creating a run's batch (and its repeats) and handing it to the sweep; following a batch made
    elsewhere.
    """

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
                await self._tell(who, notices.start_resumes())
                return None
            except ClaimLapsed:
                # The claim ran out while the batch was being created (the database lost for
                # a lease, a stalled process): a peer may be recovering the run already. The
                # requester is told nothing: the recovery posts the status message and the
                # result as this start would have.
                log.warning("run %s: claim lapsed while starting; left to recovery", run.id)
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

    @tagged_with_run
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
        quiet = not posts_status(run)
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
        apply_batch(run, batch, RunState.RUNNING, started_at=started_at)
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
