"""Channel schedules: recurring batch runs and digest reports, and the App Home that lists them.

A schedule is two things kept in step: a `run_schedules` row (what the product shows and what a
firing needs) and an APScheduler schedule under `scheduling.schedule_key(id)` (when it fires).
Firing is APScheduler's job; this package adds (`adding`), lists (`listing`), changes
(`changes`: pause, resume, remove, run now) and fires them (`firing`), and hands each firing to
the run workflow (a run) or to the reports (a digest), exactly like a person would.
`Schedules` is the one object the listeners and the application hold.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

from apscheduler import AsyncScheduler

from bot.blocks import Message
from bot.blocks.kit import Block
from bot.commands import ScheduleAddCommand, ScheduleCommand, ScheduleReportCommand
from bot.reports import Reports
from bot.runs import Requester, RunWorkflow
from bot.schedules.adding import MAX_SCHEDULES_PER_CHANNEL, ScheduleAdding
from bot.schedules.changes import ScheduleChanges
from bot.schedules.firing import ScheduleFiring
from bot.schedules.listing import HOME_CHANNELS, ScheduleListing
from bot.settings import Settings
from bot.slackapi import SlackGateway
from bot.store import Store, utcnow
from bot.workspaces.accounts import RetellAccounts

__all__ = [
    "HOME_CHANNELS",
    "MAX_SCHEDULES_PER_CHANNEL",
    "ScheduleAdding",
    "ScheduleChanges",
    "ScheduleFiring",
    "ScheduleListing",
    "Schedules",
]


class Schedules:
    """Add, show, change and fire the channel schedules of one workspace installation."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        scheduler: AsyncScheduler,
        workflow: RunWorkflow,
        reports: Reports,
        retell: RetellAccounts,
        slack: SlackGateway,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        listing = ScheduleListing(store, scheduler, slack, clock=clock)
        firing = ScheduleFiring(store, scheduler, workflow, reports, clock=clock)
        self._listing = listing
        self._adding = ScheduleAdding(
            settings, store, scheduler, workflow, retell, slack, listing, clock=clock
        )
        self._changes = ScheduleChanges(settings, store, scheduler, workflow, firing)
        self._firing = firing

    async def add(
        self, who: Requester, command: ScheduleAddCommand, *, request_key: str | None = None
    ) -> Message:
        """`schedule add`; see `ScheduleAdding.add`."""
        return await self._adding.add(who, command, request_key=request_key)

    async def add_report(
        self, who: Requester, command: ScheduleReportCommand, *, request_key: str | None = None
    ) -> Message:
        """`schedule add-report`; see `ScheduleAdding.add_report`."""
        return await self._adding.add_report(who, command, request_key=request_key)

    async def listing(self, who: Requester) -> list[Message]:
        """`schedule list`: this channel's schedules, 20 to a message."""
        return await self._listing.listing(who)

    async def publish_home(self, team_id: str, user_id: str) -> None:
        """The App Home tab of `user_id`."""
        await self._listing.publish_home(team_id, user_id)

    def add_home_section(self, section: Callable[[str, str], Awaitable[list[Block]]]) -> None:
        """Show `section(team_id, user_id)` at the top of App Home (Connect Retell)."""
        self._listing.home_sections.append(section)

    async def act(
        self,
        who: Requester,
        command: ScheduleCommand,
        *,
        from_home: bool = False,
        request_key: str | None = None,
    ) -> Message:
        """`schedule remove|pause|resume|run <id>`; see `ScheduleChanges.act`."""
        return await self._changes.act(who, command, from_home=from_home, request_key=request_key)

    async def fire(self, schedule_id: int) -> None:
        """APScheduler's task: one firing of schedule #`schedule_id` (a plain id, see SPEC §7)."""
        await self._firing.fire(schedule_id)
