"""Schedules: added, listed with their buttons, and notices about them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from bot.blocks.kit import (
    Block,
    Message,
    _button,
    _confirm,
    _context,
    _engine,
    _message,
    _name,
    _safe,
    _section,
    channel_link,
    format_pass_rate,
    mention,
    plural,
    shorten,
    slack_date,
)
from bot.blocks.runs import outcome
from bot.runview import RunView
from bot.store import RunState
from bot.suite import Engine
from bot.text import one_line

ACTION_SCHEDULE_RUN = "schedule_run"


ACTION_SCHEDULE_PAUSE = "schedule_pause"


ACTION_SCHEDULE_RESUME = "schedule_resume"


ACTION_SCHEDULE_REMOVE = "schedule_remove"


SCHEDULES_PER_MESSAGE = 20  # two blocks each: a list of 100 is five messages of ≤ 42 blocks


HOME_SCHEDULES = 30


HOME_RUNS = 10


MAX_HOME_BLOCKS = 100


@dataclass(frozen=True, slots=True)
class ScheduleEntry:
    """A schedule as people see it; built by `bot.schedules` from its row and APScheduler's."""

    id: int
    name: str
    kind: str  # "run" or "report"
    channel_id: str
    user_id: str
    engine: Engine | None
    tests: str  # how the cases were chosen, in words: "all", "12 test cases", ...
    when: str  # in words: "every weekday at 09:00"
    timezone: str
    next_fire: datetime | None
    paused: bool
    notify: str = "always"
    mention: str | None = None
    report_days: int | None = None
    last_run: RunView | None = None
    last_fired_at: datetime | None = None
    # A comparison schedule: its engine (A) against this one (B); a B without a version is
    # the engine's latest at each firing.
    candidate: Engine | None = None
    min_pass: float | None = None


def local_time(moment: datetime, timezone: str) -> str:
    """`Thu 26 Nov 09:00 CET`: a time as it reads where the schedule's creator lives."""
    from zoneinfo import ZoneInfo

    return moment.astimezone(ZoneInfo(timezone)).strftime("%a %d %b %Y %H:%M %Z")


def _what(entry: ScheduleEntry) -> str:
    if entry.kind == "report":
        return f"digest report of the last {plural(entry.report_days or 7, 'day')}"
    engine = _engine(entry.engine) if entry.engine else "?"
    if entry.candidate is not None:
        b = _engine(entry.candidate) if entry.candidate.version is not None else "the latest"
        engine = f"compare {engine} → {b}"
    return f"{engine} · {_safe(entry.tests, 200)}"


def _schedule_line(entry: ScheduleEntry) -> str:
    state = "⏸️ paused" if entry.paused else "▶️ active"
    when = f"{_safe(entry.when, 200)} ({_safe(entry.timezone, 64)})"
    next_fire = (
        local_time(entry.next_fire, entry.timezone) if entry.next_fire and not entry.paused else "—"
    )
    lines = [
        f"*#{entry.id} · {_name(entry.name)}* · {state}",
        f"{_what(entry)}\n🗓️ {when} · next: {next_fire}",
    ]
    extras = [f"by {mention(entry.user_id)}"]
    if entry.kind == "run":
        extras.append(f"notify={entry.notify}")
    if entry.min_pass is not None:
        extras.append(f"min_pass={entry.min_pass:g}")
    if entry.mention:
        extras.append(f"mentions {entry.mention} on regressions")
    if entry.last_run is not None:
        extras.append(f"last: {_last_result(entry.last_run)}")
    elif entry.last_fired_at is not None:
        extras.append(f"last fired {slack_date(entry.last_fired_at, '{date_short} {time}')}")
    lines.append(" · ".join(extras))
    return "\n".join(lines)


def _last_result(run: RunView) -> str:
    state = RunState(run.state)
    if state is RunState.COMPLETE and run.total:
        return f"{outcome(run)} ({format_pass_rate(run.passed, run.total)})"
    return outcome(run)


def _schedule_buttons(entry: ScheduleEntry) -> Block:
    value = str(entry.id)
    toggle = (
        _button("▶️ Resume", ACTION_SCHEDULE_RESUME, value)
        if entry.paused
        else _button("⏸️ Pause", ACTION_SCHEDULE_PAUSE, value)
    )
    run_confirm = _confirm(
        "Run this schedule now?",
        f"Runs “{shorten(one_line(entry.name), 80)}” now, once; the schedule itself is unchanged.",
        "Run now",
    )
    remove_confirm = _confirm(
        "Remove this schedule?",
        f"“{shorten(one_line(entry.name), 80)}” will not run again. Its past results stay.",
        "Remove",
    )
    return {
        "type": "actions",
        "block_id": f"schedule-{entry.id}",
        "elements": [
            _button("▶️ Run now", ACTION_SCHEDULE_RUN, value, confirm=run_confirm),
            toggle,
            _button(
                "🗑️ Remove", ACTION_SCHEDULE_REMOVE, value, style="danger", confirm=remove_confirm
            ),
        ],
    }


def _schedule_blocks(entry: ScheduleEntry) -> list[Block]:
    return [_section(_schedule_line(entry)), _schedule_buttons(entry)]


def schedule_added(entry: ScheduleEntry, next_fires: Sequence[datetime]) -> Message:
    """Ephemeral confirmation of `schedule add`: what, where, and the next three firings."""
    fires = "\n".join(f"• {local_time(fire, entry.timezone)}" for fire in next_fires)
    title = (
        f"🗓️ Scheduled *#{entry.id} · {_name(entry.name)}* in "
        f"{channel_link(entry.channel_id)}: {_what(entry)}, {_safe(entry.when, 200)} "
        f"({_safe(entry.timezone, 64)})."
    )
    text = f"{title}\nNext runs:\n{fires}"
    hint = (
        f"`/retell-test schedule list` shows it; `/retell-test schedule remove {entry.id}` "
        "removes it."
    )
    return _message(text, [_section(text), _schedule_buttons(entry), _context(hint)])


def schedule_list(entries: Sequence[ScheduleEntry]) -> list[Message]:
    """`schedule list`: each schedule with its buttons, over as many messages as it takes."""
    if not entries:
        text = (
            "No schedules in this channel. Add one with "
            '`/retell-test schedule add "weekdays 09:00" llm_abc all name=nightly`.'
        )
        return [_message(text, [_section(text)])]
    messages = []
    pages = [
        entries[start : start + SCHEDULES_PER_MESSAGE]
        for start in range(0, len(entries), SCHEDULES_PER_MESSAGE)
    ]
    for number, page in enumerate(pages, start=1):
        heading = f"*{plural(len(entries), 'schedule')} in this channel*"
        if len(pages) > 1:
            heading += f" · part {number} of {len(pages)}"
        page_blocks = [_section(heading)]
        for entry in page:
            page_blocks.extend(_schedule_blocks(entry))
        names = ", ".join(f"#{e.id} {_name(e.name, 40)}" for e in page)
        messages.append(_message(f"Schedules in this channel: {names}", page_blocks))
    return messages


def schedule_notice(text: str) -> Message:
    """Ephemeral: what a schedule action did (our own words, ids and escaped names)."""
    return _message(text, [_section(text)])
