"""The follow-up sweep: claim what is due, refresh running batches by engine, pace the rest."""

from __future__ import annotations

import asyncio
import math
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta

from bot.followup import Followed, Refresh
from bot.retell import (
    LIST_PAGE_SIZE,
)
from bot.runs.base import (
    ENGINES_PER_PASS,
    RUNS_AT_ONCE,
    Check,
    all_settled,
    at_most,
    is_due,
    log,
    tagged_with_run,
)
from bot.runs.delivery import Delivery
from bot.store import (
    Run,
    RunState,
)
from bot.suite import Engine


class Sweep(Delivery):
    """The follow-up sweep: claim what is due, refresh running batches engine by engine, pace the
    rest.
    """

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
        await all_settled(
            self._check(claim, running, now),
            at_most(RUNS_AT_ONCE, lambda run: self._deliver(run, claim), finished),
            at_most(RUNS_AT_ONCE, lambda run: self._mention(run, claim), unmentioned),
            at_most(RUNS_AT_ONCE, lambda run: self._recover(run, claim), stale),
        )

    async def _check(self, claim: str, running: Sequence[Run], now: datetime) -> None:
        """Refresh running batches engine by engine; finish the complete ones, pace the rest."""
        if not running:
            return
        self._metrics.follow_up_checks.inc(len(running))
        refresh = await self._refresher.refresh(
            Followed(r.batch_id or "", r.engine, due=is_due(r, now)) for r in running
        )
        checks = await at_most(
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

    @tagged_with_run
    async def _after_check(
        self, run: Run, claim: str, refresh: Refresh, now: datetime
    ) -> Check | None:
        """What one refresh means for a run: finished, or still going (then its next interval).

        None when the refresh did not cover a run that was not due either: it keeps its own
        schedule and is released with the claim.
        """
        batch = refresh.batches.get(run.batch_id or "")
        if batch is None and not is_due(run, now):
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
