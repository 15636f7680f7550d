"""`schedule remove|pause|resume|run <id>`, typed, pressed in a list or on App Home."""

from __future__ import annotations

import logging

from apscheduler import AsyncScheduler

from bot import blocks, scheduling
from bot.blocks import Message
from bot.commands import (
    ScheduleCommand,
)
from bot.refusal import Refusal
from bot.runs import Requester, RunWorkflow
from bot.schedules.firing import ScheduleFiring
from bot.settings import Settings
from bot.store import RunSchedule, Store

log = logging.getLogger(__name__)


class ScheduleChanges:
    """Finds the schedule the person may touch, then removes, pauses, resumes or runs it."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        scheduler: AsyncScheduler,
        workflow: RunWorkflow,
        firing: ScheduleFiring,
    ) -> None:
        self._settings = settings
        self._store = store
        self._scheduler = scheduler
        self._workflow = workflow
        self._firing = firing

    async def act(
        self,
        who: Requester,
        command: ScheduleCommand,
        *,
        from_home: bool = False,
        request_key: str | None = None,
    ) -> Message:
        """`schedule remove|pause|resume|run <id>`, typed or pressed (in a list or on Home)."""
        schedule_id = _schedule_id(command.schedule_id)
        row = await self._store.get_schedule(schedule_id) if schedule_id else None
        if (
            row is None
            or row.team_id != who.team_id
            or (not from_home and row.channel_id != who.channel_id)
        ):
            shown = blocks.escape(command.schedule_id or "")[:40]
            return blocks.problem(
                f"There is no schedule #{shown} in this channel; `/retell-test schedule list` "
                "shows them."
            )
        where = Requester(who.team_id, row.channel_id, who.user_id, who.response_url)
        refusal = self._workflow.not_allowed(where)
        if refusal is not None:
            return blocks.refused(refusal)
        if command.action == "run":
            return await self._run_now(row, request_key)
        if who.user_id != row.user_id and who.user_id not in self._settings.admin_user_ids:
            return blocks.refused(
                Refusal(
                    f"Only the schedule's creator or an admin can {command.action} schedule "
                    f"#{row.id} “{row.name}”.",
                    self._settings.admin_user_ids,
                    owner=row.user_id,
                )
            )
        name = f"#{row.id} “{blocks.escape(row.name)}”"
        if command.action == "remove":
            await self._remove(row)
            return blocks.schedule_notice(f"🗑️ Removed schedule {name}. It will not run again.")
        paused = command.action == "pause"
        if not await self._store.set_paused(row.id, paused):
            state = "already paused" if paused else "not paused"
            return blocks.schedule_notice(f"Schedule {name} is {state}.")
        await scheduling.pause_firing(self._scheduler, row.id, paused=paused)
        log.info("schedule %s %s by %s", row.id, command.action + "d", who.user_id)
        if paused:
            return blocks.schedule_notice(
                f"⏸️ Paused schedule {name}. `/retell-test schedule resume {row.id}` resumes it."
            )
        return blocks.schedule_notice(f"▶️ Resumed schedule {name}; its next run is on time.")

    async def _remove(self, row: RunSchedule) -> None:
        try:
            await scheduling.remove_firing(self._scheduler, row.id)
        finally:
            await self._store.remove_schedule(row.id)
        log.info("schedule %s removed", row.id)

    async def _run_now(self, row: RunSchedule, request_key: str | None) -> Message:
        name = f"#{row.id} “{blocks.escape(row.name)}”"
        await self._firing.fire_row(row, due=None, request_key=request_key)
        return blocks.schedule_notice(
            f"▶️ Ran schedule {name} now; it reports in {blocks.channel_link(row.channel_id)}."
        )


def _schedule_id(text: str | None) -> int | None:
    cleaned = (text or "").lstrip("#")
    if cleaned.isascii() and cleaned.isdigit() and 0 < int(cleaned) < 2**31:
        return int(cleaned)
    return None
