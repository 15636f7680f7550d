"""Schedules as people see them: `schedule list` and the App Home tab."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

from apscheduler import AsyncScheduler

from bot import blocks, scheduling
from bot.blocks import Message, ScheduleEntry
from bot.blocks.kit import Block
from bot.runs import Requester
from bot.slackapi import SlackGateway
from bot.store import RunSchedule, Store, utcnow
from bot.when import WhenError, read_when

log = logging.getLogger(__name__)

HOME_CHANNELS = 20


class ScheduleListing:
    """Builds a schedule's entry (its words, next firing, last run) from its row and APScheduler."""

    def __init__(
        self,
        store: Store,
        scheduler: AsyncScheduler,
        slack: SlackGateway,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._scheduler = scheduler
        self._slack = slack
        self._clock = clock
        # What App Home shows above the schedules (the Retell connection), by workspace and user.
        self.home_sections: list[Callable[[str, str], Awaitable[list[Block]]]] = []

    async def listing(self, who: Requester) -> list[Message]:
        rows = await self._store.schedules_in(who.team_id, who.channel_id)
        return blocks.schedule_list(await self._entries(rows))

    async def publish_home(self, team_id: str, user_id: str) -> None:
        """The App Home tab: this person's schedules, then the latest runs in their channels."""
        rows = await self._store.schedules_of(team_id, user_id)
        channels = await self._store.channels_of(team_id, user_id, HOME_CHANNELS)
        runs = await self._store.latest_runs(team_id, channels, blocks.HOME_RUNS)
        top = [block for section in self.home_sections for block in await section(team_id, user_id)]
        view = blocks.home_view(await self._entries(rows), runs, now=self._clock(), top=top)
        await self._slack.of(team_id).publish_home(user_id, view)

    async def _entries(self, rows: Sequence[RunSchedule]) -> list[ScheduleEntry]:
        if not rows:
            return []
        next_fires = await scheduling.next_firings(self._scheduler)
        last_runs = await self._store.runs_by_id(
            [row.last_run_id for row in rows if row.last_run_id is not None]
        )
        return [
            self.entry(
                row,
                next_fires.get(scheduling.schedule_key(row.id)),
                last_runs.get(row.last_run_id) if row.last_run_id is not None else None,
            )
            for row in rows
        ]

    def entry(
        self, row: RunSchedule, next_fire: datetime | None, last_run: blocks.RunView | None = None
    ) -> ScheduleEntry:
        try:
            words = read_when(row.when_text, row.timezone).words
        except WhenError:
            words = row.when_text
        return ScheduleEntry(
            id=row.id,
            name=row.name,
            kind=row.kind,
            channel_id=row.channel_id,
            user_id=row.user_id,
            engine=row.engine,
            tests=_tests_in_words(row),
            when=words,
            timezone=row.timezone,
            next_fire=next_fire,
            paused=row.paused,
            notify=row.notify,
            mention=row.mention,
            report_days=row.report_days,
            last_run=last_run,
            last_fired_at=row.last_fired_at,
            candidate=row.candidate,
            min_pass=row.min_pass,
        )


def _tests_in_words(row: RunSchedule) -> str:
    tests = row.tests or {}
    if tests.get("all"):
        return f"all test cases ({row.case_count} when added)"
    names = tests.get("names") or []
    if names and not tests.get("ids"):
        shown = ", ".join(f"“{name}”" for name in names[:3])
        more = f" +{len(names) - 3} more" if len(names) > 3 else ""
        return f"{shown}{more}"
    return blocks.plural(row.case_count, "test case")
