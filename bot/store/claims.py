"""Claims: which process works on which runs, for how long (a lease in the table)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import (
    and_,
    or_,
    select,
    update,
)

from bot.store.base import Tables
from bot.store.models import Run, RunState, same_engine
from bot.suite import Engine


class Claims(Tables):
    """Claiming due runs for a sweep, moving one to a claim of its own, extending, releasing."""

    async def claim_due(
        self, *, now: datetime, lease: timedelta, limit: int
    ) -> tuple[str, list[Run]]:
        """Claim runs that need attention now, for one follow-up sweep.

        A run still `starting` that nobody claims was left by a process that died while
        creating its batch (a live starter keeps its claim): it is claimed to be recovered.

        Due running runs bring along every other unclaimed running run of the same engine: one
        `list-batch-tests` page refreshes them all at no extra cost. Finished runs whose result
        has not reached Slack yet are claimed for another delivery attempt, and delivered ones
        whose thread reply is still owed, for posting it.
        """
        token = str(uuid.uuid4())
        free = or_(Run.claimed_until.is_(None), Run.claimed_until < now)
        running = Run.state == RunState.RUNNING.value
        async with self._sessions.begin() as session:
            due_engines = (
                select(Run.engine_type, Run.engine_id, Run.engine_version)
                .where(running, Run.next_check_at <= now, free)
                .distinct()
                .limit(limit)
            )
            engines = (await session.execute(due_engines)).all()
            engine_match = [same_engine(Engine(*row)) for row in engines]  # type: ignore[arg-type]
            undelivered = and_(
                Run.state.in_([RunState.COMPLETE.value, RunState.TIMED_OUT.value]),
                Run.reported_at.is_(None),
                Run.next_check_at <= now,
            )
            unmentioned = and_(Run.mention_pending.is_(True), Run.next_check_at <= now)
            interrupted = and_(
                Run.state == RunState.STARTING.value,
                or_(Run.next_check_at.is_(None), Run.next_check_at <= now),
            )
            targets = or_(undelivered, unmentioned, interrupted)
            if engine_match:
                targets = or_(targets, and_(running, or_(*engine_match)))
            await session.execute(
                update(Run)
                .where(targets, free)
                .values(claim=token, claimed_until=now + lease)
                .execution_options(synchronize_session=False)
            )
            result = await session.execute(select(Run).where(Run.claim == token).order_by(Run.id))
            return token, list(result.scalars().all())

    async def claim_alone(self, run_id: int, claim: str, *, until: datetime) -> str | None:
        """Move one run out of a shared claim into a claim of its own (None if not held).

        A sweep claims many runs under one token; a run whose work outlives the pass (an
        interrupted start being recovered) takes its own, so that giving it back does not give
        back the others.
        """
        token = str(uuid.uuid4())
        moved = await self._update(run_id, Run.claim == claim, claim=token, claimed_until=until)
        return token if moved else None

    async def extend_claim(self, claim: str, *, until: datetime) -> None:
        """Keep a claim alive while its holder is still working on it."""
        async with self._sessions.begin() as session:
            await session.execute(update(Run).where(Run.claim == claim).values(claimed_until=until))

    async def release_claim(self, claim: str) -> None:
        """Give back every run still held under a claim (work interrupted by a shutdown)."""
        async with self._sessions.begin() as session:
            await session.execute(
                update(Run).where(Run.claim == claim).values(claim=None, claimed_until=None)
            )
