"""Creating batches: a run's batch, its group's others (repeats, a comparison), following them."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from bot import blocks
from bot.blocks import Message
from bot.commands import ids_not_found
from bot.logs import about_run
from bot.retell import BatchJob, RetellProblem
from bot.runs.context import Services, about_run_step
from bot.runs.requests import Requester
from bot.runs.status import StatusMessages, apply, posts_status
from bot.store import Run, RunState
from bot.suite import Suite
from bot.tenure import ClaimLapsed, Tenure

# Every part of the workflow logs as `bot.runs`, as the one module did: log filters and
# tests name it.
log = logging.getLogger("bot.runs")


class Creation:
    """Create a run's batch (and a repeat group's other batches) and hand it to the sweep."""

    def __init__(self, services: Services, statuses: StatusMessages) -> None:
        self._settings = services.settings
        self._store = services.store
        self._retell = services.retell
        self._metrics = services.metrics
        self._clock = services.clock
        self._lease = services.lease
        self._holding = services.holding
        self._tell = services.tell
        self._statuses = statuses

    async def create(self, run: Run, suite: Suite, who: Requester, tenure: Tenure) -> Run | None:
        """Create the run's batch and follow it; the create ends while the claim is ours."""
        try:
            async with tenure.bounding():
                batch = await self._retell.of(run.team_id).create_batch(suite)
        except RetellProblem as problem:
            log.info("run %s: batch not created: %s", run.id, problem.message)
            if not await self._store.mark_failed(
                run.id, problem.message, now=self._clock(), claim=run.claim
            ):
                # The claim ran out meanwhile and a peer recovers the run: its word stands.
                log.warning("run %s: no longer ours to fail; left to recovery", run.id)
                return None
            self._metrics.runs_finished.labels(RunState.FAILED.value).inc()
            await self._tell(who, await self._not_created(run, suite, problem))
            return None
        run.batch_id = batch.batch_id
        log.info("run %s: batch %s created (%d cases)", run.id, batch.batch_id, suite.size)
        if run.leads_group:
            await self._create_group(run, who)
        await self.follow(run, batch, who, started_at=self._clock())
        return run

    async def _not_created(self, run: Run, suite: Suite, problem: RetellProblem) -> Message:
        """Why Retell created no batch; for a refusal over the cases, which ids it did not know.

        Ids go to Retell unchecked, so that a run of ids costs no listing call; only when
        Retell refuses one is the engine's list read to name the unknown ids and close ones.
        """
        if problem.kind in ("not_found", "invalid"):
            try:
                definitions = await self._retell.of(run.team_id).definitions(suite.engine)
            except RetellProblem:
                definitions = None  # the engine itself is unknown: Retell's reason says so
            unknown = (
                ids_not_found(suite.case_ids, definitions) if definitions is not None else None
            )
            if unknown is not None:
                return blocks.command_error(unknown)
        return blocks.start_failed(suite, problem.message, maybe_created=problem.uncertain)

    async def complete_group(self, lead: Run, who: Requester) -> None:
        """The rest of a group whose lead's start was interrupted before adding it.

        A starter that died after the lead's batch but before the others leaves the lead alone;
        its recovery calls this once it follows the lead's batch. Members recorded before the
        starter died are recovered on their own, so none are added twice.
        """
        if lead.leads_group and len(await self._store.repeat_group(lead.id)) == 1:
            log.info("run %s: interrupted before its group was added; adding it", lead.id)
            await self._create_group(lead, who)

    async def _create_group(self, lead: Run, who: Requester) -> None:
        """The other batches of a `repeat=N` run or a comparison, created at once once the
        first exists (so that a refused engine or case costs one batch, not 2N).

        One that Retell refuses is recorded as failed with the reason and shown in the
        group's result; the others go on. They post nothing: the lead speaks for them.
        """
        taken_at = asyncio.get_running_loop().time()
        others = await self._store.add_group(lead, lease=self._lease)

        async def create(run: Run) -> None:
            assert run.claim is not None
            with about_run(run):
                async with self._holding(run.claim, taken_at=taken_at) as tenure:
                    try:
                        async with tenure.bounding():
                            batch = await self._retell.of(run.team_id).create_batch(run.suite)
                    except ClaimLapsed:
                        log.warning("run %s: claim lapsed while starting; left to recovery", run.id)
                        return
                    except RetellProblem as problem:
                        log.info("run %s: repeat batch not created: %s", run.id, problem.message)
                        if await self._store.mark_failed(
                            run.id, problem.message, now=self._clock(), claim=run.claim
                        ):
                            self._metrics.runs_finished.labels(RunState.FAILED.value).inc()
                        return
                    await self.follow(run, batch, who, started_at=self._clock())

        await asyncio.gather(*(create(run) for run in others))

    @about_run_step
    async def follow(
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
        now = self._clock()
        claim = await self._store.mark_started(
            run.id,
            batch,
            first_check_in=self._settings.poll_initial_seconds,
            now=now,
            started_at=started_at,
            lease=self._lease,
            posting_status=not quiet,
            claim=run.claim,
        )
        if claim is None:
            log.warning("run %s: batch %s is followed by another run", run.id, batch.batch_id)
            return False
        apply(run, batch, RunState.RUNNING, started_at=started_at)
        self._metrics.runs_started.labels(run.source).inc()
        if not quiet:
            run.status_posting_since = now  # as `mark_started` recorded it
            await self._statuses.post_status(run, who)
        return True
