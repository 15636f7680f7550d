"""What every group of queries shares: the session factory and the one conditional UPDATE."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    update,
)
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
)

from bot.store.models import Run


class Tables:
    """The sessions the queries run in; a conditional update of one run.

    Every state change that must happen once is such an update: its WHERE clause says in which
    state (and under which claim) the run must still be for the change to win.
    """

    engine: AsyncEngine
    _sessions: async_sessionmaker[AsyncSession]
    _ack_engine: AsyncEngine | None

    async def _update(self, run_id: int, *conditions: Any, **values: Any) -> bool:
        async with self._sessions.begin() as session:
            result = await session.execute(
                update(Run).where(Run.id == run_id, *conditions).values(**values)
            )
            return bool(getattr(result, "rowcount", 0))

    async def _release(
        self, run_id: int, claim: str | None, *conditions: Any, **values: Any
    ) -> bool:
        """Change a run held under `claim` (whoever holds it, when None) and give it back in
        the same UPDATE: the one way a holder's work on a run ends."""
        held = [] if claim is None else [Run.claim == claim]
        return await self._update(
            run_id, *held, *conditions, claim=None, claimed_until=None, **values
        )
