"""Publish presses: the row that makes one press (or two replicas) publish an agent once."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError

from bot.store.base import Tables
from bot.store.models import AgentPublish


class PublishRecords(Tables):
    """Who pressed **Publish** for which agent of which result, and whether it went through."""

    async def claim_publish(
        self, run_id: int, agent_id: str, agent_version: int, user_id: str, *, now: datetime
    ) -> AgentPublish | None:
        """Take the publish of this agent from this result; None with the earlier press when
        it was taken already (it is then returned by `publish_of`)."""
        row = AgentPublish(
            run_id=run_id,
            agent_id=agent_id,
            agent_version=agent_version,
            user_id=user_id,
            pressed_at=now,
        )
        try:
            async with self._sessions.begin() as session:
                session.add(row)
        except IntegrityError:
            return None
        return row

    async def publish_of(self, run_id: int, agent_id: str) -> AgentPublish | None:
        async with self._sessions() as session:
            return await session.get(AgentPublish, (run_id, agent_id))

    async def mark_published(self, run_id: int, agent_id: str, *, now: datetime) -> None:
        async with self._sessions.begin() as session:
            await session.execute(
                update(AgentPublish)
                .where(AgentPublish.run_id == run_id, AgentPublish.agent_id == agent_id)
                .values(published_at=now)
            )

    async def release_publish(self, run_id: int, agent_id: str) -> None:
        """Retell refused: the press is forgotten, so that it can be tried again."""
        async with self._sessions.begin() as session:
            await session.execute(
                delete(AgentPublish).where(
                    AgentPublish.run_id == run_id, AgentPublish.agent_id == agent_id
                )
            )
