"""Recovery of interrupted starts: find the batch a dead starter made, or make it once."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from bot.retell import BatchJob, RetellProblem
from bot.runs.context import Services, about_run_step
from bot.runs.creating import Creation
from bot.runs.requests import Requester
from bot.store import Run, RunState
from bot.tenure import ClaimLapsed

# Every part of the workflow logs as `bot.runs`, as the one module did: log filters and
# tests name it.
log = logging.getLogger("bot.runs")

# An interrupted start's batch is looked for among the engine's newest batches created since
# the run (less this much, for clocks that disagree).
CREATE_CLOCK_SKEW = timedelta(minutes=2)
RECOVERY_PAGE = 50
RECOVERY_PAGES = 20


class Recovery:
    """Carry on a start that a process left unfinished (it died creating the batch)."""

    def __init__(self, services: Services, creation: Creation) -> None:
        self._settings = services.settings
        self._store = services.store
        self._retell = services.retell
        self._clock = services.clock
        self._lease = services.lease
        self._holding = services.holding
        self._creation = creation

    @about_run_step
    async def recover(self, run: Run, claim: str) -> None:
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
                if await self._creation.follow(
                    run, batch, who, started_at=min(started, self._clock())
                ):
                    log.info(
                        "run %s: interrupted start had created batch %s", run.id, batch.batch_id
                    )
                    await self._creation.complete_group(run, who)
                    return
            current = await self._store.get(run.id)
            if current is None or current.state != RunState.STARTING.value or current.claim != own:
                # Started (or failed) meanwhile by its starter, or taken by a peer: the batch
                # found above and turned down is that run's; a new one would be nobody's.
                log.info("run %s: interrupted start was taken up meanwhile; not creating", run.id)
                return
            log.info("run %s: interrupted start created no batch; creating it now", run.id)
            try:
                await self._creation.create(run, run.suite, who, tenure)
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
            page, key = await self._retell.of(run.team_id).list_batches(
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
            runs = await self._retell.of(run.team_id).test_runs(batch.batch_id)
            cases = {test_run.case_id for test_run in runs}
            if cases == wanted:
                found.append(batch)
        return found
