"""The sweep: the follow-up pass any replica runs, under claims, paced by the Retell budget."""

from __future__ import annotations

import asyncio
import logging
import math
from collections import defaultdict
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

from bot.followup import BatchRefresher, Followed, Refresh
from bot.retell import LIST_PAGE_SIZE, BatchJob
from bot.runs.context import Services, about_run_step
from bot.runs.delivery import Delivery
from bot.runs.recovery import Recovery
from bot.runs.requests import Requester
from bot.runs.starting import Starting
from bot.runs.status import StatusMessages, apply, posts_status
from bot.store import Run, RunState
from bot.suite import Engine

# Every part of the workflow logs as `bot.runs`, as the one module did: log filters and
# tests name it.
log = logging.getLogger("bot.runs")
R = TypeVar("R")

# A sweep works through what is due a few engines at a time, and on at most RUNS_AT_ONCE runs
# concurrently: memory stays bounded by that, not by the number of batches in flight.
ENGINES_PER_PASS = 2
RUNS_AT_ONCE = 200
BACKOFF_FACTOR = 2.0


@dataclass(frozen=True, slots=True)
class Check:
    """A follow-up check of a run still running: what was seen, and the interval it asks for."""

    run_id: int
    batch: BatchJob | None
    interval: float


class Sweep:
    """The follow-up pass: claim what is due, check it, finish, deliver and recover it."""

    def __init__(
        self,
        services: Services,
        refresher: BatchRefresher,
        starting: Starting,
        recovery: Recovery,
        delivery: Delivery,
        statuses: StatusMessages,
    ) -> None:
        self._settings = services.settings
        self._store = services.store
        self._metrics = services.metrics
        self._retell = services.retell
        self._clock = services.clock
        self._lease = services.lease
        self._holding = services.holding
        self._refresher = refresher
        self._starting = starting
        self._recovery = recovery
        self._delivery = delivery
        self._statuses = statuses
        self._sweeping = asyncio.Lock()

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
        await self._starting.resume_commands()
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
            _at_most(RUNS_AT_ONCE, lambda run: self._delivery.deliver(run, claim), finished),
            _at_most(RUNS_AT_ONCE, lambda run: self._delivery.mention(run, claim), unmentioned),
            _at_most(RUNS_AT_ONCE, lambda run: self._recovery.recover(run, claim), stale),
        )

    async def _check(self, claim: str, running: Sequence[Run], now: datetime) -> None:
        """Refresh running batches engine by engine; finish the complete ones, pace the rest."""
        if not running:
            return
        self._metrics.follow_up_checks.inc(len(running))
        refresh = await self._refresher.refresh(
            Followed(r.batch_id or "", r.engine, due=_due(r, now), team_id=r.team_id)
            for r in running
        )
        checks = await _at_most(
            RUNS_AT_ONCE, lambda run: self._after_check(run, claim, refresh, now), running
        )
        teams = {run.team_id for run in running}
        scopes = {team: await self._retell.budget_scope(team) for team in teams}
        by_engine: dict[tuple[str, Engine], list[Check]] = defaultdict(list)
        for run, check in zip(running, checks, strict=True):
            if check is not None:
                by_engine[scopes[run.team_id], run.engine].append(check)
        if not by_engine:
            return
        floors = await self._budget_floors()
        settings = self._settings
        for (scope, _), engine_checks in by_engine.items():
            floor = floors.get(scope, 0.0)
            # The engine is listed again when its busiest batch needs it. Backing off saves a
            # request, but one list call refreshes all of the engine's batches: it backs off
            # only as far as keeps each of them seen every POLL_MAX_SECONDS, and never below
            # what the Retell budget allows.
            fastest = min(check.interval for check in engine_checks)
            worth_it = settings.poll_max_seconds / len(engine_checks)
            interval = max(min(fastest, worth_it), settings.poll_initial_seconds, floor)
            seen = [(check.run_id, check.batch) for check in engine_checks]
            await self._store.record_checks(claim, seen, interval=interval, now=now)

    async def _budget_floors(self) -> dict[str, float]:
        """Shortest follow-up interval per engine that keeps each Retell account (key) within
        RETELL_REQUESTS_PER_MINUTE, by account (`RetellAccounts.budget_scope`).

        Each engine with batches running costs one list page per thousand of them per
        follow-up, so the interval grows with the number of engines, hardly with the batches.
        Workspaces that connected their own key spend their own account's budget; those on
        `RETELL_API_KEY` share one.
        """
        counts = await self._store.running_per_engine()
        scopes = {team: await self._retell.budget_scope(team) for team in {c[0] for c in counts}}
        return budget_floors(
            [(scopes[team], engine, count) for team, engine, count in counts],
            per_minute=self._settings.retell_requests_per_minute,
        )

    @about_run_step
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
            await self._delivery.finish(run, claim, RunState.COMPLETE, batch, now)
            return None
        if self._timed_out(run, now):
            await self._delivery.finish(run, claim, RunState.TIMED_OUT, batch, now)
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
            apply(run, batch, RunState.RUNNING)
        if run.status_ts is None and run.channel_error is None and posts_status(run):
            if await self._statuses.adopt_status(run) is False:
                await self._statuses.post_status(
                    run, Requester(run.team_id, run.channel_id, run.user_id)
                )
        elif run.status_ts:
            await self._statuses.show_progress(run, run.status_ts, seen)
        return Check(run.id, batch, interval)


def budget_floors(
    running: Sequence[tuple[str, Engine, int]], *, per_minute: float
) -> dict[str, float]:
    """By Retell account (budget scope): the shortest follow-up interval that keeps its
    engines' list pages (one per thousand running batches per engine) within `per_minute`."""
    batches: dict[tuple[str, Engine], int] = defaultdict(int)
    for scope, engine, count in running:
        batches[scope, engine] += count
    pages: dict[str, int] = defaultdict(int)
    for (scope, _), count in batches.items():
        pages[scope] += math.ceil(count / LIST_PAGE_SIZE)
    return {scope: 60.0 * n / per_minute for scope, n in pages.items()}


async def _at_most(
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


def _due(run: Run, now: datetime) -> bool:
    return run.next_check_at is None or run.next_check_at <= now
