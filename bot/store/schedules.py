"""Schedules (`/retell-test schedule …`): adding, listing, pausing, removing, firing."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    delete,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement

from bot.store.base import Tables
from bot.store.models import RunSchedule


class ScheduleRecords(Tables):
    """The schedules table."""

    # -- schedules -------------------------------------------------------------------------

    async def add_schedule(self, schedule: RunSchedule) -> RunSchedule | None:
        """The schedule as added; None when its `request_key` already added one (a replay)."""
        try:
            async with self._sessions.begin() as session:
                session.add(schedule)
        except IntegrityError:
            if schedule.request_key is None:
                raise
            return None
        return schedule

    async def schedule_by_request(self, request_key: str) -> RunSchedule | None:
        async with self._sessions() as session:
            result = await session.execute(
                select(RunSchedule).where(RunSchedule.request_key == request_key)
            )
            return result.scalars().first()

    async def get_schedule(self, schedule_id: int) -> RunSchedule | None:
        async with self._sessions() as session:
            return await session.get(RunSchedule, schedule_id)

    async def schedules_in(self, team_id: str, channel_id: str) -> Sequence[RunSchedule]:
        return await self._schedules(team_id, RunSchedule.channel_id == channel_id)

    async def schedules_of(self, team_id: str, user_id: str) -> Sequence[RunSchedule]:
        return await self._schedules(team_id, RunSchedule.user_id == user_id)

    async def _schedules(
        self, team_id: str, condition: ColumnElement[bool]
    ) -> Sequence[RunSchedule]:
        async with self._sessions() as session:
            result = await session.execute(
                select(RunSchedule)
                .where(RunSchedule.team_id == team_id, condition)
                .order_by(RunSchedule.id)
            )
            return result.scalars().all()

    async def remove_schedule(self, schedule_id: int) -> bool:
        async with self._sessions.begin() as session:
            result = await session.execute(delete(RunSchedule).where(RunSchedule.id == schedule_id))
            return bool(result.rowcount)  # type: ignore[attr-defined]

    async def set_paused(self, schedule_id: int, paused: bool) -> bool:
        """True when this call changed it (a second press of Pause changes nothing)."""
        async with self._sessions.begin() as session:
            result = await session.execute(
                update(RunSchedule)
                .where(RunSchedule.id == schedule_id, RunSchedule.paused.is_(not paused))
                .values(paused=paused)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    async def schedule_fired(self, schedule_id: int, *, at: datetime, run_id: int | None) -> None:
        values: dict[str, Any] = {"last_fired_at": at}
        if run_id is not None:
            values["last_run_id"] = run_id
        async with self._sessions.begin() as session:
            await session.execute(
                update(RunSchedule).where(RunSchedule.id == schedule_id).values(**values)
            )
