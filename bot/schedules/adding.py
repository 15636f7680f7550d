"""`schedule add` and `schedule add-report`: everything checked before anything is created."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from apscheduler import AsyncScheduler

from bot import blocks, scheduling
from bot.agents import EngineVersions
from bot.blocks import Message
from bot.commands import (
    CommandError,
    ScheduleAddCommand,
    ScheduleReportCommand,
    needs_definitions,
    resolve_tests,
)
from bot.retell import CaseDefinition, RetellProblem
from bot.runs import Requester, RunWorkflow
from bot.schedules.listing import ScheduleListing
from bot.settings import Settings
from bot.slackapi import SlackGateway
from bot.store import RunSchedule, ScheduleKind, Store, utcnow
from bot.when import When, WhenError, parse_when, read_when
from bot.workspaces.accounts import RetellAccounts

log = logging.getLogger(__name__)

# `schedule list` answers through the command's response_url, which Slack accepts 5 times:
# 100 schedules are 5 messages of 20 (blocks.SCHEDULES_PER_MESSAGE).
MAX_SCHEDULES_PER_CHANNEL = 100


class ScheduleAdding:
    """Validates a new schedule (access, `<when>`, the cases) and saves its row and its firing."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        scheduler: AsyncScheduler,
        workflow: RunWorkflow,
        retell: RetellAccounts,
        slack: SlackGateway,
        listing: ScheduleListing,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._settings = settings
        self._store = store
        self._scheduler = scheduler
        self._workflow = workflow
        self._retell = retell
        self._slack = slack
        self._listing = listing
        self._clock = clock

    @property
    def _min_interval(self) -> timedelta:
        return timedelta(minutes=self._settings.schedule_min_interval_minutes)

    async def add(
        self, who: Requester, command: ScheduleAddCommand, *, request_key: str | None = None
    ) -> Message:
        """`schedule add`: validate everything first (nothing is created on bad input).

        `request_key` (Slack's trigger_id) makes a replayed request answer with the schedule
        it already added instead of adding a second one.
        """
        if replayed := await self._replayed(request_key):
            return replayed
        when = await self._checked_when(who, command.when)
        if isinstance(when, Message):
            return when
        tests = command.tests
        if command.candidate is not None and (refused := await self._check_versions(who, command)):
            return refused
        case_count = await self._count_cases(who, command)
        if isinstance(case_count, Message):
            return case_count
        what = command.engine.label
        if (candidate := command.candidate) is not None:
            what += f" vs {candidate.label if candidate.version is not None else 'latest'}"
        name = command.name or f"{what} {when.words}"[:80]
        row = RunSchedule(
            team_id=who.team_id,
            channel_id=who.channel_id,
            user_id=who.user_id,
            kind=ScheduleKind.RUN.value,
            name=name,
            when_text=when.text,
            timezone=when.timezone,
            engine_type=command.engine.type,
            engine_id=command.engine.id,
            engine_version=command.engine.version,
            tests={"ids": list(tests.ids), "names": list(tests.names), "all": tests.everything},
            case_count=case_count,
            notify=command.options.get("notify", "always"),
            mention=command.options.get("mention"),
            min_pass=command.min_pass,
            compares=command.candidate is not None,
            candidate_version=command.candidate.version if command.candidate else None,
            paused=False,
            created_at=self._clock(),
            request_key=request_key,
        )
        return await self._create(row, when)

    async def add_report(
        self, who: Requester, command: ScheduleReportCommand, *, request_key: str | None = None
    ) -> Message:
        """`schedule add-report`: a digest of the channel posted on a schedule."""
        if replayed := await self._replayed(request_key):
            return replayed
        when = await self._checked_when(who, command.when)
        if isinstance(when, Message):
            return when
        row = RunSchedule(
            team_id=who.team_id,
            channel_id=who.channel_id,
            user_id=who.user_id,
            kind=ScheduleKind.REPORT.value,
            name=command.name or f"{command.days}-day digest {when.words}"[:80],
            when_text=when.text,
            timezone=when.timezone,
            report_days=command.days,
            case_count=0,
            notify="always",
            paused=False,
            created_at=self._clock(),
            request_key=request_key,
        )
        return await self._create(row, when)

    async def _refusal(self, who: Requester) -> Message | None:
        if (refusal := self._workflow.not_allowed(who)) is not None:
            return blocks.refused(refusal)
        if (
            len(await self._store.schedules_in(who.team_id, who.channel_id))
            >= MAX_SCHEDULES_PER_CHANNEL
        ):
            return blocks.problem(
                f"This channel already has {MAX_SCHEDULES_PER_CHANNEL} schedules; remove one "
                "first (`/retell-test schedule list`)."
            )
        return None

    async def _checked_when(self, who: Requester, text: str) -> When | Message:
        """`<when>` in the creator's Slack time zone, or why nothing will be scheduled."""
        refusal = await self._refusal(who)
        if refusal is not None:
            return refusal
        timezone = await self._slack.of(who.team_id).user_timezone(who.user_id)
        try:
            return parse_when(text, timezone or "UTC", min_interval=self._min_interval)
        except WhenError as exc:
            return blocks.command_error(CommandError(str(exc), "schedule"))

    async def _check_versions(self, who: Requester, command: ScheduleAddCommand) -> Message | None:
        """A comparison schedule's versions exist at Retell (B, if named): checked now, so a
        typo is refused today. A B left to "the latest" is resolved at each firing."""
        engines = [command.engine]
        if command.candidate is not None and command.candidate.version is not None:
            engines.append(command.candidate)
        versions = EngineVersions(self._retell.of(who.team_id))
        for engine in engines:
            try:
                await versions.engine_version(engine)
            except RetellProblem as problem:
                return blocks.problem(problem.message)
        return None

    async def _count_cases(self, who: Requester, command: ScheduleAddCommand) -> int | Message:
        """Resolve the cases once now, so a typo is refused today, not at 3 a.m."""
        definitions: tuple[CaseDefinition, ...] = ()
        if needs_definitions(command.tests):
            try:
                retell = self._retell.of(who.team_id)
                definitions = tuple(await retell.definitions(command.engine))
            except RetellProblem as problem:
                return blocks.problem(problem.message)
        resolved = resolve_tests(
            command.tests, definitions, max_cases=self._settings.max_cases_per_run
        )
        if isinstance(resolved, CommandError):
            return blocks.command_error(resolved)
        return len(resolved)

    async def _replayed(self, request_key: str | None) -> Message | None:
        """What a replayed `schedule add` is told: the schedule its first delivery added."""
        row = await self._store.schedule_by_request(request_key) if request_key else None
        if row is None:
            return None
        log.info("request %s was already handled: it added schedule %s", request_key, row.id)
        next_fires = read_when(row.when_text, row.timezone).next_fires()
        return blocks.schedule_added(
            self._listing.entry(row, next_fires[0] if next_fires else None), next_fires
        )

    async def _create(self, row: RunSchedule, when: When) -> Message:
        if await self._store.add_schedule(row) is None:  # the same request, a moment earlier
            replayed = await self._replayed(row.request_key)
            assert replayed is not None, "a request key is only taken by an existing schedule"
            return replayed
        try:
            await scheduling.add_firing(self._scheduler, row.id, when.trigger())
        except Exception as exc:  # the scheduler restarting, its database unreachable
            log.warning("schedule %s not added: %s: %s", row.id, type(exc).__name__, exc)
            await self._store.remove_schedule(row.id)
            return blocks.problem(
                "The schedule could not be saved just now (the bot's scheduler is recovering "
                "from a database problem). Nothing was added; try again in a minute."
            )
        log.info("schedule %s added in %s: %s", row.id, row.channel_id, when.words)
        next_fires = when.next_fires()
        entry = self._listing.entry(row, next_fires[0] if next_fires else None)
        return blocks.schedule_added(entry, next_fires)
