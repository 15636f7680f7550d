"""Runs: adding them (and repeat groups), reading them, and the state changes that happen once."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    Table,
    and_,
    bindparam,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from bot.batches import BatchJob
from bot.store.base import Tables
from bot.store.models import Run, RunSchedule, RunState, claim_columns, same_engine, utcnow
from bot.suite import Engine, Suite

# What a repeat group's other runs take over from its lead.
_REPEAT_COPIES = (
    "team_id",
    "channel_id",
    "user_id",
    "source",
    "rerun_of",
    "engine_type",
    "engine_id",
    "engine_version",
    "case_ids",
    "case_count",
    "suite_key",
    "schedule_id",
    "label",
    "scheduled_for",
    "notify",
    "mention",
    "repeats",
    "min_pass",
)


class RunRecords(Tables):
    """Adding and reading runs."""

    # -- creating and reading ---------------------------------------------------------------

    async def add_run(
        self,
        *,
        team_id: str,
        channel_id: str,
        user_id: str,
        suite: Suite,
        source: str = "command",
        rerun_of: int | None = None,
        batch_id: str | None = None,
        request_key: str | None = None,
        schedule: RunSchedule | None = None,
        scheduled_for: datetime | None = None,
        repeats: int = 1,
        candidate_version: int | None = None,
        min_pass: float | None = None,
        lease: timedelta | None = None,
    ) -> Run | None:
        """A new run; None when `request_key` already started one (a retried Slack request).

        A run fired by `schedule` copies its name and noise control (see `Run.label`). With
        `repeats` > 1 or a `candidate_version` to compare with, it leads a group of batches;
        `add_group` adds the rest once it has a batch.
        With `lease`, the run is claimed by its starter from the first instant (`Run.claim`),
        so that a starter that dies while creating the batch is noticed once the lease runs
        out, not minutes later.
        """
        now = utcnow()
        run = Run(
            team_id=team_id,
            channel_id=channel_id,
            user_id=user_id,
            source=source,
            rerun_of=rerun_of,
            engine_type=suite.engine.type,
            engine_id=suite.engine.id,
            engine_version=suite.engine.version,
            case_ids=list(suite.case_ids),
            case_count=suite.size,
            batch_id=batch_id,
            request_key=request_key,
            created_at=now,
            suite_key=suite.key,
            schedule_id=schedule.id if schedule else None,
            label=schedule.name if schedule else None,
            notify=schedule.notify if schedule else None,
            mention=schedule.mention if schedule else None,
            scheduled_for=scheduled_for,
            repeats=repeats,
            candidate_version=candidate_version,
            min_pass=min_pass,
            **claim_columns(now, lease),
        )
        try:
            async with self._sessions.begin() as session:
                session.add(run)
        except IntegrityError:
            if request_key is None:
                raise
            return None
        return run

    async def add_group(self, lead: Run, *, lease: timedelta | None = None) -> list[Run]:
        """The other runs of the lead's group: same cases, requester and channel.

        A repeat group repeats the lead's engine; a comparison adds `repeats - 1` more on A
        and `repeats` on B, whose runs carry B as their engine version (and B's suite key).
        With `lease`, each is claimed (a claim of its own) by the caller creating its batch.
        """
        now = utcnow()
        copied = {name: getattr(lead, name) for name in _REPEAT_COPIES}
        engines = [lead.engine] * (lead.repeats - 1)
        if lead.candidate is not None:
            engines += [lead.candidate] * lead.repeats
        runs = [
            Run(
                **copied
                | {
                    "engine_version": engine.version,
                    "suite_key": Suite(engine, tuple(lead.case_ids)).key,
                },
                repeat_of=lead.id,
                created_at=now,
                **claim_columns(now, lease),
            )
            for engine in engines
        ]
        async with self._sessions.begin() as session:
            session.add_all(runs)
        return runs

    async def repeat_group(self, lead_id: int) -> list[Run]:
        """A repeat group's runs, the lead first; just the run itself when it repeats nothing."""
        async with self._sessions() as session:
            result = await session.execute(
                select(Run).where(or_(Run.id == lead_id, Run.repeat_of == lead_id)).order_by(Run.id)
            )
            return list(result.scalars().all())

    async def get(self, run_id: int) -> Run | None:
        async with self._sessions() as session:
            return await session.get(Run, run_id)

    async def by_batch(self, batch_id: str) -> Run | None:
        async with self._sessions() as session:
            result = await session.execute(select(Run).where(Run.batch_id == batch_id))
            return result.scalar_one_or_none()

    async def in_flight(self, channel_id: str) -> Sequence[Run]:
        states = [RunState.STARTING.value, RunState.RUNNING.value]
        async with self._sessions() as session:
            result = await session.execute(
                select(Run)
                .where(Run.channel_id == channel_id, Run.state.in_(states))
                .order_by(Run.created_at)
            )
            return result.scalars().all()

    async def runs_by_user_since(self, user_id: str, since: datetime) -> int:
        async with self._sessions() as session:
            result = await session.execute(
                select(func.count())
                .select_from(Run)
                .where(Run.user_id == user_id, Run.created_at >= since)
            )
            return int(result.scalar_one())

    async def rerun_in_flight(self, run_id: int) -> bool:
        """Whether a rerun of this run is still being started or followed."""
        in_flight = [RunState.STARTING.value, RunState.RUNNING.value]
        async with self._sessions() as session:
            result = await session.execute(
                select(func.count())
                .select_from(Run)
                .where(Run.rerun_of == run_id, Run.state.in_(in_flight))
            )
            return bool(result.scalar_one())

    async def lock_rerun(self, run_id: int, *, now: datetime, lease: timedelta) -> bool:
        """Let one press at a time start a rerun of a run (double clicks, two people)."""
        free = or_(Run.rerun_lock_until.is_(None), Run.rerun_lock_until < now)
        return await self._update(run_id, free, rerun_lock_until=now + lease)

    async def unlock_rerun(self, run_id: int) -> None:
        await self._update(run_id, rerun_lock_until=None)

    async def mark_failures_shown(self, run_id: int, *, now: datetime) -> bool:
        """True for the first **Show failures** press only (double clicks, two people)."""
        return await self._update(run_id, Run.failures_shown_at.is_(None), failures_shown_at=now)

    async def unmark_failures_shown(self, run_id: int) -> None:
        """The failures could not be posted after all: let the next press try again."""
        await self._update(run_id, failures_shown_at=None)

    async def recent_runs(self, limit: int = 100) -> Sequence[Run]:
        async with self._sessions() as session:
            result = await session.execute(select(Run).order_by(Run.id.desc()).limit(limit))
            return result.scalars().all()

    async def runs_by_id(self, run_ids: Sequence[int]) -> dict[int, Run]:
        if not run_ids:
            return {}
        async with self._sessions() as session:
            result = await session.execute(select(Run).where(Run.id.in_(list(run_ids))))
            return {run.id: run for run in result.scalars()}


class RunTransitions(Tables):
    """A run's state changes: started, checked, finished, reported, mentioned, given up.

    Each is a conditional update (`Tables._update`), so two replicas can never both win.
    """

    async def set_status_message(self, run_id: int, ts: str, shown_counts: str | None) -> None:
        await self._update(
            run_id, status_ts=ts, shown_counts=shown_counts, status_posting_since=None
        )

    async def status_posting(self, run_id: int, since: datetime) -> None:
        """A run's message is about to be posted: if the answer is lost, look for it first.

        Slack has no idempotency key, so the mark goes in before the post; whoever finds it
        left behind searches the channel's history instead of posting a second message.
        """
        await self._update(run_id, status_posting_since=since)

    async def status_not_posted(self, run_id: int) -> None:
        """Slack refused the status message (or history shows it never landed); post later."""
        await self._update(run_id, status_posting_since=None)

    async def set_channel_error(self, run_id: int, code: str) -> None:
        await self._update(run_id, channel_error=code, status_posting_since=None)

    async def set_shown(self, run_id: int, shown_counts: str) -> None:
        await self._update(run_id, shown_counts=shown_counts)

    async def mark_started(
        self,
        run_id: int,
        batch: BatchJob,
        *,
        first_check_in: float,
        now: datetime,
        lease: timedelta,
        started_at: datetime | None = None,
        posting_status: bool = True,
        claim: str | None = None,
    ) -> str | None:
        """Record the created batch; the run stays claimed by the caller while it posts status.

        `posting_status=False` for a run whose status message is never posted (a quiet
        schedule): its result is then posted as a new message as soon as it is ready.

        The first check joins the engine's next follow-up when that comes soon enough, so a
        new batch rides on the `list-batch-tests` call its engine makes anyway instead of
        costing one of its own. Returns the claim (`claim`, when the caller holds one
        already). Should the caller die before releasing it, the lease runs out and the next
        sweep takes the run over, status message included.

        None when the run is no longer starting, when another run follows this batch
        already (a batch is followed by one run only: a recovery adopting a batch it found at
        Retell, or a `watch` racing another, lose to the run that has it), or when `claim` is
        no longer the run's: a starter whose claim ran out and was taken over leaves the run
        to the peer recovering it, which finds this batch at Retell.
        """
        token = claim or str(uuid.uuid4())
        first_check = now + timedelta(seconds=first_check_in)
        async with self._sessions.begin() as session:
            run = await session.get(Run, run_id)
            if run is None:
                return token
            engine_next = await session.scalar(
                select(func.min(Run.next_check_at)).where(
                    Run.state == RunState.RUNNING.value,
                    same_engine(run.engine),
                    Run.next_check_at > now,
                )
            )
            if engine_next is not None and engine_next <= now + 1.5 * (first_check - now):
                first_check = engine_next
            followed = select(Run.id).where(Run.batch_id == batch.batch_id, Run.id != run_id)
            started = await session.execute(
                update(Run)
                .where(
                    Run.id == run_id,
                    Run.state == RunState.STARTING.value,
                    ~followed.exists(),
                    *([] if claim is None else [Run.claim == claim]),
                )
                .values(
                    state=RunState.RUNNING.value,
                    batch_id=batch.batch_id,
                    passed=batch.passed,
                    failed=batch.failed,
                    errored=batch.errored,
                    total=batch.total,
                    started_at=started_at or now,
                    status_posting_since=now if posting_status else None,
                    next_check_at=first_check,
                    check_interval=first_check_in,
                    claim=token,
                    claimed_until=now + lease,
                )
                .execution_options(synchronize_session=False)
            )
        return token if getattr(started, "rowcount", 0) else None

    async def mark_failed(
        self, run_id: int, error: str, *, now: datetime, claim: str | None = None
    ) -> bool:
        """A run whose batch could not be created: nothing follows it, nothing is left to post.

        With `claim`, only while the caller still holds the run: a starter whose claim ran
        out must not fail a run that a peer is recovering (and may have created a batch for).
        False when the run is no longer starting or no longer the caller's.
        """
        held = [] if claim is None else [Run.claim == claim]
        return await self._update(
            run_id,
            Run.state == RunState.STARTING.value,
            *held,
            state=RunState.FAILED.value,
            error=error,
            finished_at=now,
            reported_at=now,
        )

    async def record_checks(
        self,
        claim: str,
        checked: Sequence[tuple[int, BatchJob | None]],
        *,
        interval: float,
        now: datetime,
    ) -> None:
        """Store what one follow-up pass saw of runs still running, and release them.

        They all get the same next check: runs of one engine are refreshed together by one
        list call, so they stay in step. One transaction, whatever the number of runs.
        """
        if not checked:
            return
        seen = [
            {
                "run_id": run_id,
                "seen_passed": batch.passed,
                "seen_failed": batch.failed,
                "seen_errored": batch.errored,
                "seen_total": batch.total,
            }
            for run_id, batch in checked
            if batch is not None
        ]
        table = cast(Table, Run.__table__)
        mine = and_(Run.claim == claim, Run.state == RunState.RUNNING.value)
        async with self._sessions.begin() as session:
            if seen:
                await session.execute(
                    update(table)
                    .where(table.c.id == bindparam("run_id"), mine)
                    .values(
                        passed=bindparam("seen_passed"),
                        failed=bindparam("seen_failed"),
                        errored=bindparam("seen_errored"),
                        total=bindparam("seen_total"),
                    ),
                    seen,
                )
            await session.execute(
                update(Run)
                .where(Run.id.in_([run_id for run_id, _ in checked]), mine)
                .values(
                    next_check_at=now + timedelta(seconds=interval),
                    check_interval=interval,
                    checks=Run.checks + 1,
                    claim=None,
                    claimed_until=None,
                )
                .execution_options(synchronize_session=False)
            )

    async def running_per_engine(self) -> list[tuple[str, Engine, int]]:
        """How many batches run on each engine that has any, by workspace (the cost of
        following them, which each workspace's Retell account bears)."""
        columns = (Run.team_id, Run.engine_type, Run.engine_id, Run.engine_version)
        async with self._sessions() as session:
            result = await session.execute(
                select(*columns, func.count())
                .where(Run.state == RunState.RUNNING.value)
                .group_by(*columns)
            )
            return [
                (team, Engine(kind, engine_id, version), int(count))  # type: ignore[arg-type]
                for team, kind, engine_id, version, count in result.all()
            ]

    async def finish(
        self, run_id: int, state: RunState, batch: BatchJob | None, *, now: datetime
    ) -> bool:
        """Move a running run to its final state; True for exactly one caller."""
        values: dict[str, Any] = {
            "state": state.value,
            "finished_at": now,
            "next_check_at": now,
            "check_interval": 0.0,
        }
        if batch is not None:
            values.update(
                passed=batch.passed, failed=batch.failed, errored=batch.errored, total=batch.total
            )
        return await self._update(run_id, Run.state == RunState.RUNNING.value, **values)

    async def mark_reported(
        self, run_id: int, claim: str | None, *, now: datetime, mention: bool = False
    ) -> bool:
        """The result is in Slack. With `mention`, its thread reply is still owed: the claim
        is kept for posting it now, and if that is cut short a sweep posts it later."""
        unreported = Run.reported_at.is_(None)
        if mention:
            held = [] if claim is None else [Run.claim == claim]
            return await self._update(
                run_id, unreported, *held, reported_at=now, mention_pending=True, next_check_at=now
            )
        return await self._release(
            run_id, claim, unreported, reported_at=now, mention_pending=False, next_check_at=None
        )

    async def mark_mentioned(self, run_id: int, claim: str | None) -> None:
        """The result's thread reply is posted (or given up): nothing more is owed."""
        await self._release(
            run_id,
            claim,
            mention_pending=False,
            next_check_at=None,
        )

    async def delivery_failed(
        self, run_id: int, claim: str | None, *, retry_in: float, now: datetime
    ) -> None:
        await self._release(
            run_id,
            claim,
            delivery_attempts=Run.delivery_attempts + 1,
            next_check_at=now + timedelta(seconds=retry_in),
        )

    async def defer_delivery(
        self, run_id: int, claim: str | None, *, retry_in: float, now: datetime
    ) -> None:
        """Try the result again shortly, without counting a failed attempt (edits were paced)."""
        await self._release(
            run_id,
            claim,
            next_check_at=now + timedelta(seconds=retry_in),
        )

    async def nudge(self, run_id: int, *, now: datetime) -> None:
        """Have a finished, unreported run looked at on the next sweep (a repeat group's lead
        waiting for its last batch)."""
        await self._update(
            run_id,
            Run.reported_at.is_(None),
            Run.state.in_([RunState.COMPLETE.value, RunState.TIMED_OUT.value]),
            next_check_at=now,
        )

    async def give_up_delivery(self, run_id: int, claim: str | None, *, now: datetime) -> None:
        await self._release(
            run_id,
            claim,
            delivery_attempts=Run.delivery_attempts + 1,
            reported_at=now,
            error="final result could not be posted to Slack",
            next_check_at=None,
        )
