"""`parse`: slash command text in, a typed command (or a `CommandError`) out; one function per
subcommand, dispatched on the first word.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from types import MappingProxyType

from bot.commands.model import (
    _ENGINE_FORMS,
    _SCHEDULE_ACTIONS,
    DEFAULT_REPORT_DAYS,
    MAX_REPORT_DAYS,
    MAX_TEXT_CHARS,
    OPTION_KEYS,
    SUBCOMMANDS,
    Command,
    CommandError,
    HelpCommand,
    ReportCommand,
    RunCommand,
    ScheduleAddCommand,
    ScheduleCommand,
    ScheduleReportCommand,
    StatusCommand,
    WatchCommand,
)
from bot.commands.scanner import (
    _BATCH_ID_RE,
    _ENGINE_RE,
    _join_or,
    _normalise,
    _show,
    _show_name,
    _Token,
    _tokenize,
)
from bot.commands.terms import (
    _engine_error,
    _extra,
    _parse_batch_id,
    _parse_engine,
    _parse_options,
    _parse_run_options,
    _parse_tests,
    _parse_versions,
    _quoted_when,
    _split_options,
)
from bot.suite import Engine


def parse(text: str) -> Command | CommandError:
    """Turn `/retell-test` text into a command, or say precisely what is wrong with it."""
    if not isinstance(text, str):
        return CommandError("The command text could not be read.")
    if len(text) > MAX_TEXT_CHARS:
        return CommandError(
            f"That command is {len(text):,} characters long; the limit is {MAX_TEXT_CHARS:,}."
        )
    normal = _normalise(text)
    if not normal:
        return HelpCommand()
    tokens = _tokenize(normal)
    if isinstance(tokens, CommandError):
        return replace(tokens, topic=_guess_topic(normal))
    if not tokens:  # only separators, e.g. ","
        return HelpCommand()
    first, rest = tokens[0], tokens[1:]
    keyword = "" if first.quoted else first.text.casefold()
    if keyword == "help":
        return HelpCommand()
    if keyword == "run":
        return _parse_run(rest)
    if keyword == "compare":
        return _parse_compare(rest)
    if keyword == "status":
        return _parse_status(rest)
    if keyword == "watch":
        return _parse_watch(rest)
    if keyword == "schedule":
        return _parse_schedule(rest)
    if keyword == "report":
        return _parse_report(rest)
    if not first.markup and _ENGINE_RE.match(first.text):
        return _parse_run(tokens)
    return _unknown_first_word(first)


def _guess_topic(text: str) -> str | None:
    """The subcommand a broken command was aiming at, for the usage line shown with the error."""
    word = text.split(" ", 1)[0].casefold()
    if word in SUBCOMMANDS:
        return word
    return "run" if word.startswith(("llm_", "conversation_flow_")) else None


def _unknown_first_word(token: _Token) -> CommandError:
    if token.quoted:
        return CommandError(
            f"A command can't start with a quoted name ({_show_name(token.text)}). Start with "
            f"a subcommand or an engine: {_ENGINE_FORMS}, then the test cases.",
            "run",
        )
    engine_error = _engine_error(token)
    if engine_error is not None:
        return replace(engine_error, topic="run")
    subcommands = _join_or([f"`{name}`" for name in SUBCOMMANDS])
    return CommandError(
        f"{_show(token.text)} is not a subcommand or an engine. Use {subcommands}, "
        f"or start with an engine: {_ENGINE_FORMS}."
    )


def _parse_run(tokens: Sequence[_Token]) -> RunCommand | CommandError:
    """`<engine> <tests> [repeat=N] [min_pass=P]`, after an optional `run` keyword."""
    words, options = _split_options(tokens)
    if not words:
        return CommandError(
            f"`run` needs an engine and test cases. The engine is {_ENGINE_FORMS}.", "run"
        )
    engine = _parse_engine(words[0], "run")
    if isinstance(engine, CommandError):
        return engine
    run_options = _parse_run_options(options, "run")
    if isinstance(run_options, CommandError):
        return run_options
    tests = _parse_tests(words[1:], "run")
    if isinstance(tests, CommandError):
        return tests
    repeats, min_pass = run_options
    return RunCommand(engine, tests, repeats, min_pass=min_pass)


def _parse_compare(tokens: Sequence[_Token]) -> RunCommand | CommandError:
    """`<engine>@<A> [<engine>@<B>] <tests> [repeat=N] [min_pass=P]`: one suite on two versions.

    A run with a `candidate` (SPEC §9), so everything that takes a run can take a comparison.
    """
    words, options = _split_options(tokens)
    if not words:
        return CommandError(
            "`compare` needs an engine version and test cases, e.g. "
            f"`compare llm_abc@3 llm_abc@4 all`. The engine is {_ENGINE_FORMS}.",
            "compare",
        )
    versions = _parse_versions(words, "compare")
    if isinstance(versions, CommandError):
        return versions
    baseline, candidate, rest = versions
    run_options = _parse_run_options(options, "compare")
    if isinstance(run_options, CommandError):
        return run_options
    tests = _parse_tests(rest, "compare")
    if isinstance(tests, CommandError):
        return tests
    repeats, min_pass = run_options
    return RunCommand(baseline, tests, repeats, min_pass=min_pass, candidate=candidate)


def _parse_status(tokens: Sequence[_Token]) -> StatusCommand | CommandError:
    if not tokens:
        return StatusCommand(None)
    if len(tokens) > 1:
        return _extra("status", tokens[1], "at most one batch id")
    batch_id = _parse_batch_id(tokens[0], "status")
    return batch_id if isinstance(batch_id, CommandError) else StatusCommand(batch_id)


def _parse_watch(tokens: Sequence[_Token]) -> WatchCommand | CommandError:
    if not tokens:
        return CommandError(
            "`watch` needs the id of the batch to follow, e.g. `/retell-test watch "
            "&lt;batch_id&gt;`.",
            "watch",
        )
    if len(tokens) > 1:
        return _extra("watch", tokens[1], "one batch id")
    batch_id = _parse_batch_id(tokens[0], "watch")
    return batch_id if isinstance(batch_id, CommandError) else WatchCommand(batch_id)


def _parse_report(tokens: Sequence[_Token]) -> ReportCommand | CommandError:
    if not tokens:
        return ReportCommand(DEFAULT_REPORT_DAYS)
    if len(tokens) > 1:
        return _extra("report", tokens[1], "at most one number of days")
    text = tokens[0].text
    if tokens[0].quoted or tokens[0].markup or not re.fullmatch(r"[0-9]+", text):
        return CommandError(
            f"{_show(text)} is not a number of days: use a whole number from 1 to "
            f"{MAX_REPORT_DAYS}, e.g. `report 30`.",
            "report",
        )
    days = int(text) if len(text) <= 6 else MAX_REPORT_DAYS + 1  # no giant int() on 5,000 digits
    if not 1 <= days <= MAX_REPORT_DAYS:
        return CommandError(
            f"A report covers 1 to {MAX_REPORT_DAYS} days; got {_show(text)}.", "report"
        )
    return ReportCommand(days)


def _parse_schedule(tokens: Sequence[_Token]) -> Command | CommandError:
    actions = "`add`, `add-report`, `list`, `remove`, `pause`, `resume` or `run`"
    if not tokens:
        return CommandError(f"`schedule` needs an action: {actions}.", "schedule")
    if not tokens:  # only separators, e.g. ","
        return HelpCommand()
    first, rest = tokens[0], tokens[1:]
    keyword = "" if first.quoted else first.text.casefold()
    if keyword == "add":
        return _parse_schedule_add(rest)
    if keyword == "add-report":
        return _parse_schedule_report(rest)
    action = _SCHEDULE_ACTIONS.get(keyword)
    if action is None:
        shown = _show_name(first.text) if first.quoted else _show(first.text)
        return CommandError(f"{shown} is not a schedule action; use {actions}.", "schedule")
    if action == "list":
        if rest:
            return _extra("schedule", rest[0], "nothing after `list`")
        return ScheduleCommand("list", None)
    if not rest:
        return CommandError(
            f"`schedule {action}` needs the schedule's id (see `schedule list`).", "schedule"
        )
    if len(rest) > 1:
        return _extra("schedule", rest[1], f"one schedule id after `{action}`")
    token = rest[0]
    if token.markup or token.quoted or not _BATCH_ID_RE.fullmatch(token.text):
        return CommandError(
            f"{_show(token.text)} is not a schedule id; `schedule list` shows the ids.",
            "schedule",
        )
    return ScheduleCommand(action, token.text)


def _parse_schedule_add(tokens: Sequence[_Token]) -> ScheduleAddCommand | CommandError:
    example = '`schedule add "daily 09:00" llm_abc123 all`'
    if not tokens:
        return CommandError(
            f"`schedule add` needs a quoted schedule, an engine and test cases, e.g. {example}.",
            "schedule",
        )
    when = _quoted_when(tokens, example)
    if isinstance(when, CommandError):
        return when
    words, options = _split_options(tokens[1:])
    compares = bool(words) and not words[0].quoted and words[0].text.casefold() == "compare"
    if compares:
        words = words[1:]
    if not words:
        after = "`compare`" if compares else "the schedule"
        return CommandError(
            f"`schedule add` needs an engine after {after}: {_ENGINE_FORMS}.", "schedule"
        )
    candidate: Engine | None = None
    if compares:
        versions = _parse_versions(words, "schedule")
        if isinstance(versions, CommandError):
            return versions
        engine, candidate, rest = versions
    else:
        parsed_engine = _parse_engine(words[0], "schedule")
        if isinstance(parsed_engine, CommandError):
            return parsed_engine
        engine, rest = parsed_engine, words[1:]
    tests = _parse_tests(rest, "schedule")
    if isinstance(tests, CommandError):
        return tests
    parsed = _parse_options(options)
    if isinstance(parsed, CommandError):
        return parsed
    name, extra, min_pass = parsed
    return ScheduleAddCommand(
        when, engine, tests, name, MappingProxyType(extra), min_pass=min_pass, candidate=candidate
    )


def _parse_schedule_report(tokens: Sequence[_Token]) -> ScheduleReportCommand | CommandError:
    example = '`schedule add-report "weekly mon 09:00" 7`'
    when = _quoted_when(tokens, example)
    if isinstance(when, CommandError):
        return when
    words, options = _split_options(tokens[1:])
    if len(words) > 1:
        return _extra("schedule", words[1], "at most one number of days after the schedule")
    days = _parse_report(words[:1])
    if isinstance(days, CommandError):
        return replace(days, topic="schedule")
    for token in options:  # before the values are read: whatever they say, they don't apply
        key = token.text.partition("=")[0].casefold()
        if key in OPTION_KEYS and key != "name":
            return CommandError(
                f"`{key}=` is for run schedules; a report takes `name=`.", "schedule"
            )
    parsed = _parse_options(options)
    if isinstance(parsed, CommandError):
        return parsed
    name, _, _ = parsed
    return ScheduleReportCommand(when, days.days, name)
