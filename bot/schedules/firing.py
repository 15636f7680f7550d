"""One firing of a schedule: a run reported like any other, or a digest."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from apscheduler import AsyncScheduler

from bot import scheduling
from bot.commands import (
    TestSelection,
)
from bot.reports import Reports
from bot.runs import Requester, RunRequest, RunWorkflow
from bot.slackapi import SlackFailure
from bot.store import RunSchedule, ScheduleKind, Store, utcnow

log = logging.getLogger(__name__)


class ScheduleFiring:
    """APScheduler's task, and "Run now": hands the schedule to the run workflow or the reports."""

    def __init__(
        self,
        store: Store,
        scheduler: AsyncScheduler,
        workflow: RunWorkflow,
        reports: Reports,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._scheduler = scheduler
        self._workflow = workflow
        self._reports = reports
        self._clock = clock

    async def fire(self, schedule_id: int) -> None:
        """APScheduler's task: one firing of schedule #`schedule_id` (a plain id, see SPEC §7)."""
        row = await self._store.get_schedule(schedule_id)
        if row is None:
            log.info("schedule %s fired after being removed; dropping it", schedule_id)
            await scheduling.remove_firing(self._scheduler, schedule_id)
            return
        if row.paused:
            return
        due = scheduling.firing_time()
        key = f"schedule:{row.id}:{due.isoformat()}" if due else None
        await self.fire_row(row, due=due, request_key=key)

    async def fire_row(
        self, row: RunSchedule, *, due: datetime | None, request_key: str | None
    ) -> None:
        """Start what the schedule does: a run (reported like any other) or a digest.

        `request_key` makes a firing start once even if two replicas ran the same job, and a
        double-clicked "Run now" start once.
        """
        now = self._clock()
        if row.kind == ScheduleKind.REPORT.value:
            try:
                await self._reports.post(
                    row.team_id, row.channel_id, row.report_days or 7, label=row.name, due=due
                )
            except SlackFailure as exc:
                log.warning("schedule %s: digest not posted: %s", row.id, exc.code)
            await self._store.schedule_fired(row.id, at=now, run_id=None)
            return
        engine = row.engine
        if engine is None:  # a run schedule always has one; a damaged row reports nothing
            log.error("schedule %s has no engine", row.id)
            return
        tests = row.tests or {}
        request = RunRequest(
            Requester(row.team_id, row.channel_id, row.user_id, announce=True),
            engine,
            TestSelection(
                ids=tuple(tests.get("ids", ())),
                names=tuple(tests.get("names", ())),
                everything=bool(tests.get("all")),
            ),
            source="schedule",
            request_key=request_key,
            schedule=row,
            scheduled_for=due,
            candidate=row.candidate,
            min_pass=row.min_pass,
        )
        log.info("schedule %s fires (due %s)", row.id, due.isoformat() if due else "now")
        run = await self._workflow.start(request)
        await self._store.schedule_fired(row.id, at=now, run_id=run.id if run else None)
