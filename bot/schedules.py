"""Channel schedules: recurring batch runs and digest reports, and the App Home that lists them.

A schedule is two things kept in step: a `run_schedules` row (what the product shows and what a
firing needs) and an APScheduler schedule under `scheduling.schedule_key(id)` (when it fires).
Firing is APScheduler's job; this module adds, lists, pauses, removes and fires them, and hands
each firing to the run workflow (a run) or to the reports (a digest), exactly like a person would.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from apscheduler import AsyncScheduler

from bot import blocks, scheduling
from bot.blocks import Message, ScheduleEntry
from bot.commands import (
    CommandError,
    ScheduleAddCommand,
    ScheduleCommand,
    ScheduleReportCommand,
    TestSelection,
    needs_definitions,
    resolve_tests,
)
from bot.reports import Reports
from bot.retell import CaseDefinition, RetellGateway, RetellProblem
from bot.runs import Requester, RunRequest, RunWorkflow
from bot.settings import Settings
from bot.slackapi import SLACK_FAILURES, SlackGateway, error_code
from bot.store import RunSchedule, ScheduleKind, Store, utcnow
from bot.when import When, WhenError, parse_when, read_when

log = logging.getLogger(__name__)

# `schedule list` answers through the command's response_url, which Slack accepts 5 times:
# 100 schedules are 5 messages of 20 (blocks.SCHEDULES_PER_MESSAGE).
MAX_SCHEDULES_PER_CHANNEL = 100
HOME_CHANNELS = 20


class Schedules:
    """Add, show, change and fire the channel schedules of one workspace installation."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        scheduler: AsyncScheduler,
        workflow: RunWorkflow,
        reports: Reports,
        retell: RetellGateway,
        slack: SlackGateway,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._settings = settings
        self._store = store
        self._scheduler = scheduler
        self._workflow = workflow
        self._reports = reports
        self._retell = retell
        self._slack = slack
        self._clock = clock

    @property
    def _min_interval(self) -> timedelta:
        return timedelta(minutes=self._settings.schedule_min_interval_minutes)

    # -- adding -----------------------------------------------------------------------------

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
        case_count = await self._count_cases(command)
        if isinstance(case_count, Message):
            return case_count
        name = command.name or f"{command.engine.label} {when.words}"[:80]
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
        refusal = self._workflow.not_allowed(who)
        if refusal is None and (
            len(await self._store.schedules_in(who.team_id, who.channel_id))
            >= MAX_SCHEDULES_PER_CHANNEL
        ):
            refusal = blocks.problem(
                f"This channel already has {MAX_SCHEDULES_PER_CHANNEL} schedules; remove one "
                "first (`/retell-test schedule list`)."
            )
        return refusal

    async def _checked_when(self, who: Requester, text: str) -> When | Message:
        """`<when>` in the creator's Slack time zone, or why nothing will be scheduled."""
        refusal = await self._refusal(who)
        if refusal is not None:
            return refusal
        timezone = await self._slack.user_timezone(who.user_id)
        try:
            return parse_when(text, timezone or "UTC", min_interval=self._min_interval)
        except WhenError as exc:
            return blocks.command_error(CommandError(str(exc), "schedule"))

    async def _count_cases(self, command: ScheduleAddCommand) -> int | Message:
        """Resolve the cases once now, so a typo is refused today, not at 3 a.m."""
        definitions: tuple[CaseDefinition, ...] = ()
        if needs_definitions(command.tests):
            try:
                definitions = tuple(await self._retell.definitions(command.engine))
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
            self._entry(row, next_fires[0] if next_fires else None), next_fires
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
        entry = self._entry(row, next_fires[0] if next_fires else None)
        return blocks.schedule_added(entry, next_fires)

    # -- listing ----------------------------------------------------------------------------

    async def listing(self, who: Requester) -> list[Message]:
        rows = await self._store.schedules_in(who.team_id, who.channel_id)
        return blocks.schedule_list(await self._entries(rows))

    async def publish_home(self, team_id: str, user_id: str) -> None:
        """The App Home tab: this person's schedules, then the latest runs in their channels."""
        rows = await self._store.schedules_of(team_id, user_id)
        channels = await self._store.channels_of(team_id, user_id, HOME_CHANNELS)
        runs = await self._store.latest_runs(team_id, channels, blocks.HOME_RUNS)
        view = blocks.home_view(await self._entries(rows), runs, now=self._clock())
        await self._slack.publish_home(user_id, view)

    async def _entries(self, rows: Sequence[RunSchedule]) -> list[ScheduleEntry]:
        if not rows:
            return []
        next_fires = await scheduling.next_firings(self._scheduler)
        last_runs = await self._store.runs_by_id(
            [row.last_run_id for row in rows if row.last_run_id is not None]
        )
        return [
            self._entry(
                row,
                next_fires.get(scheduling.schedule_key(row.id)),
                last_runs.get(row.last_run_id) if row.last_run_id is not None else None,
            )
            for row in rows
        ]

    def _entry(
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
        )

    # -- changing ---------------------------------------------------------------------------

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
            return refusal
        if command.action == "run":
            return await self._run_now(row, request_key)
        if who.user_id != row.user_id and who.user_id not in self._settings.admin_user_ids:
            return blocks.not_allowed(
                f"Only the schedule's creator or an admin can {command.action} schedule "
                f"#{row.id} “{row.name}”.",
                self._settings.admin_user_ids,
                owner=row.user_id,
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
        await self._fire(row, due=None, request_key=request_key)
        return blocks.schedule_notice(
            f"▶️ Ran schedule {name} now; it reports in {blocks.channel_link(row.channel_id)}."
        )

    # -- firing -----------------------------------------------------------------------------

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
        await self._fire(row, due=due, request_key=key)

    async def _fire(
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
            except SLACK_FAILURES as exc:
                log.warning("schedule %s: digest not posted: %s", row.id, error_code(exc))
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
        )
        log.info("schedule %s fires (due %s)", row.id, due.isoformat() if due else "now")
        run = await self._workflow.start(request)
        await self._store.schedule_fired(row.id, at=now, run_id=run.id if run else None)


def _schedule_id(text: str | None) -> int | None:
    cleaned = (text or "").lstrip("#")
    if cleaned.isascii() and cleaned.isdigit() and 0 < int(cleaned) < 2**31:
        return int(cleaned)
    return None


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
