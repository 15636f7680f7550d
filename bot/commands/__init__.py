"""The `/retell-test` command parser (SPEC §3): slash command text in, a typed command out.

Pure functions with no I/O, so every path is unit-tested. `parse` never raises: whatever Slack
sends (mentions, links, HTML entities, smart quotes, control characters, 4,000+ characters) it
returns either a command or a `CommandError` whose message is safe to post as Slack mrkdwn —
nothing the user typed is echoed unescaped, so an error can never turn into a mention.

A small hand-written tokenizer is used instead of `shlex`, because Slack clients insert curly
quotes (double and single), users separate ids with commas, and Slack markup
(`<@U1|bob smith>`) must stay one token even when its label contains spaces.

Rooms: `model` (the commands), `scanner` (tokens), `terms` (engines, tests, options), `parser`
(`parse`), `selection` (resolving tests against an engine's definitions).
"""

from bot.commands.model import (
    DEFAULT_REPORT_DAYS,
    MAX_CASES,
    MAX_NAMES_SHOWN,
    MAX_REPEATS,
    MAX_REPORT_DAYS,
    MAX_SCHEDULE_NAME_CHARS,
    MAX_TEXT_CHARS,
    NOTIFY_VALUES,
    OPTION_KEYS,
    RUN_OPTION_KEYS,
    SHOWN_CHARS,
    SLASH_COMMAND,
    SUBCOMMANDS,
    USAGE,
    Command,
    CommandError,
    HelpCommand,
    ReportCommand,
    RunCommand,
    ScheduleAction,
    ScheduleAddCommand,
    ScheduleCommand,
    ScheduleReportCommand,
    StatusCommand,
    TestSelection,
    WatchCommand,
)
from bot.commands.parser import (
    parse,
)
from bot.commands.selection import (
    ids_not_found,
    needs_definitions,
    resolve_tests,
)

__all__ = [
    "DEFAULT_REPORT_DAYS",
    "MAX_CASES",
    "MAX_NAMES_SHOWN",
    "MAX_REPEATS",
    "MAX_REPORT_DAYS",
    "MAX_SCHEDULE_NAME_CHARS",
    "MAX_TEXT_CHARS",
    "NOTIFY_VALUES",
    "OPTION_KEYS",
    "RUN_OPTION_KEYS",
    "SHOWN_CHARS",
    "SLASH_COMMAND",
    "SUBCOMMANDS",
    "USAGE",
    "Command",
    "CommandError",
    "HelpCommand",
    "ReportCommand",
    "RunCommand",
    "ScheduleAction",
    "ScheduleAddCommand",
    "ScheduleCommand",
    "ScheduleReportCommand",
    "StatusCommand",
    "TestSelection",
    "WatchCommand",
    "ids_not_found",
    "needs_definitions",
    "parse",
    "resolve_tests",
]
