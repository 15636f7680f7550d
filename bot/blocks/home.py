"""The App Home tab: schedules and recent runs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bot.blocks.kit import (
    Block,
    _code,
    _context,
    _engine,
    _header,
    _name,
    _section,
    channel_link,
    plural,
    slack_date,
)
from bot.blocks.schedules import (
    HOME_RUNS,
    HOME_SCHEDULES,
    MAX_HOME_BLOCKS,
    ScheduleEntry,
    _last_result,
    _schedule_buttons,
    _schedule_line,
)
from bot.runview import RunView


def home_view(
    entries: Sequence[ScheduleEntry],
    runs: Sequence[RunView],
    *,
    now: datetime,
    top: Sequence[Block] = (),
) -> dict[str, Any]:
    """The App Home tab: `top` (the Retell connection, `bot.blocks.connect`), your schedules
    with their buttons, then the latest runs you can see."""
    view_blocks: list[Block] = [_header("Retell batch tests")]
    if top:
        view_blocks.extend([*top, {"type": "divider"}])
    if entries:
        view_blocks.append(_section(f"*Your schedules* ({len(entries)})"))
        for entry in entries[:HOME_SCHEDULES]:
            line = f"{channel_link(entry.channel_id)} · {_schedule_line(entry)}"
            view_blocks.extend([_section(line), _schedule_buttons(entry)])
        if len(entries) > HOME_SCHEDULES:
            rest = len(entries) - HOME_SCHEDULES
            view_blocks.append(
                _context(f"…and {plural(rest, 'more schedule')}: `/retell-test schedule list`.")
            )
    else:
        view_blocks.append(
            _section(
                "You have no schedules. In a channel, try "
                '`/retell-test schedule add "weekdays 09:00" llm_abc all name=nightly`.'
            )
        )
    view_blocks.append({"type": "divider"})
    if runs:
        view_blocks.append(_section("*Latest runs in your channels*"))
        for run in runs[:HOME_RUNS]:
            view_blocks.append(_section(_home_run_line(run)))
    else:
        view_blocks.append(_section("No runs yet in your channels. `/retell-test help` shows how."))
    view_blocks.append(_context(f"Refreshed {slack_date(now, '{date_short_pretty} at {time}')}"))
    return {"type": "home", "blocks": view_blocks[:MAX_HOME_BLOCKS]}


def _home_run_line(run: RunView) -> str:
    label = f"*{_name(run.label, 60)}* · " if run.label else ""
    batch = f" · {_code(run.batch_id)}" if run.batch_id else ""
    return (
        f"{channel_link(run.channel_id)} · {label}{_engine(run.engine)} · "
        f"{_last_result(run)}{batch} · run #{run.id}"
    )
