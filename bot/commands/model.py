"""What a parsed `/retell-test` command is: one dataclass per subcommand, the usage text, and
`CommandError`, whose message is safe to post as Slack mrkdwn.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, TypeAlias

from bot.suite import Engine

MAX_CASES = 1000  # Retell accepts 1 to 1000 test case definition ids per batch


MAX_TEXT_CHARS = 200_000  # far beyond what Slack sends; bounds the work done on absurd input


MAX_SCHEDULE_NAME_CHARS = 80


DEFAULT_REPORT_DAYS = 7


MAX_REPORT_DAYS = 365


SHOWN_CHARS = 40  # how much of an offending token an error quotes
SLASH_COMMAND = "/retell-test"  # the command Slack sends (manifest.yml)


MAX_NAMES_SHOWN = 5  # unknown names listed one by one; the rest are counted


MAX_REPEATS = 5  # `repeat=N`: N batches of the same suite, reported as one result


SUBCOMMANDS = ("help", "run", "compare", "status", "watch", "schedule", "report")


NOTIFY_VALUES = ("always", "failures", "changes")


OPTION_KEYS = ("name", "notify", "mention", "min_pass")  # `schedule add`


RUN_OPTION_KEYS = ("repeat", "min_pass")  # `run` and `compare`


ScheduleAction = Literal["list", "remove", "pause", "resume", "run"]


_SCHEDULE_ACTIONS: dict[str, ScheduleAction] = {
    "list": "list",
    "remove": "remove",
    "pause": "pause",
    "resume": "resume",
    "run": "run",
}


# Slack renders `<…>` as mentions and links even inside code spans, so placeholders are escaped.
_USAGE_LINES: dict[str, str] = {
    "help": "`/retell-test help`",
    "run": "`/retell-test [run] &lt;engine&gt; &lt;tests&gt; [repeat=2..5] [min_pass=0..100]`",
    "compare": (
        "`/retell-test compare &lt;engine&gt;@&lt;A&gt; [&lt;engine&gt;@&lt;B&gt;] &lt;tests&gt;"
        " [repeat=2..5] [min_pass=0..100]`"
    ),
    "status": "`/retell-test status [&lt;batch_id&gt;]`",
    "watch": "`/retell-test watch &lt;batch_id&gt;`",
    "schedule": (
        '`/retell-test schedule add "&lt;when&gt;" [compare] &lt;engine&gt;'
        " [&lt;engine&gt;@&lt;B&gt;] &lt;tests&gt; [name=&lt;name&gt;]"
        " [notify=always|failures|changes] [mention=@someone] [min_pass=0..100]`\n"
        '`/retell-test schedule add-report "&lt;when&gt;" [&lt;days&gt;] [name=&lt;name&gt;]`\n'
        "`/retell-test schedule list | remove &lt;id&gt; | pause &lt;id&gt; | resume &lt;id&gt;"
        " | run &lt;id&gt;`"
    ),
    "report": "`/retell-test report [&lt;days&gt;]`",
}


USAGE = "\n".join(_USAGE_LINES[name] for name in SUBCOMMANDS)


_ENGINE_FORMS = (
    "`llm_&lt;id&gt;` or `conversation_flow_&lt;id&gt;`, optionally pinned to a version "
    "with `@&lt;version&gt;` (e.g. `llm_abc123@3`)"
)


_TESTS_FORMS = (
    'test case ids (`tc_1 tc_2` or `tc_1,tc_2`), `all`, or quoted names (`"Refund request"`)'
)


@dataclass(frozen=True, slots=True)
class TestSelection:
    """What the user asked to run, before it is resolved against the engine's definitions."""

    __test__ = False  # not a pytest class

    ids: tuple[str, ...] = ()  # explicit definition ids, in order, de-duplicated
    names: tuple[str, ...] = ()  # quoted names, in order, de-duplicated case-insensitively
    everything: bool = False  # the keyword `all`


@dataclass(frozen=True, slots=True)
class HelpCommand:
    """`help`, or no text at all."""


@dataclass(frozen=True, slots=True)
class RunCommand:
    """`[run] <engine> <tests> [repeat=N] [min_pass=P]`: start a batch now (N with repeat).

    `compare <A> [<B>] …` is a run too, with `candidate` set: the same cases on both versions.
    A `candidate` without a version means the engine's latest, which the workflow resolves.
    """

    engine: Engine
    tests: TestSelection
    repeats: int = 1
    min_pass: float | None = None  # percent, 0 to 100: the pass rate that makes a result green
    candidate: Engine | None = None  # B of `compare`; `engine` is A

    @property
    def compares(self) -> bool:
        """Whether this is `compare`: two versions of the engine, case by case."""
        return self.candidate is not None

    @property
    def batches(self) -> int:
        """How many batches start: one per repeat, per version when comparing."""
        return self.repeats * 2 if self.compares else self.repeats


@dataclass(frozen=True, slots=True)
class StatusCommand:
    """`status [<batch_id>]`; no id means this channel's runs in flight."""

    batch_id: str | None = None


@dataclass(frozen=True, slots=True)
class WatchCommand:
    """`watch <batch_id>`: follow a batch created elsewhere (e.g. by CI)."""

    batch_id: str


@dataclass(frozen=True, slots=True)
class ScheduleAddCommand:
    """`schedule add "<when>" [compare] <engine> [<engine>@<B>] <tests> [name=…] [notify=…]
    [mention=…] [min_pass=…]`.

    `when` stays text: the schedules module owns its grammar and the user's time zone.
    `options` holds `notify` (lower-cased) and `mention` (`<@U…>` or `<!subteam^S…>`) when given;
    `min_pass` has its own field. `candidate` is set for `compare`, as on `RunCommand`.
    """

    when: str
    engine: Engine
    tests: TestSelection
    name: str | None = None
    options: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    min_pass: float | None = None  # percent, 0 to 100
    candidate: Engine | None = None  # B of `compare`; `engine` is A

    @property
    def compares(self) -> bool:
        """Whether each run of the schedule compares two versions of the engine."""
        return self.candidate is not None


@dataclass(frozen=True, slots=True)
class ScheduleReportCommand:
    """`schedule add-report "<when>" [<days>] [name=…]`: a digest posted by itself."""

    when: str
    days: int = DEFAULT_REPORT_DAYS
    name: str | None = None


@dataclass(frozen=True, slots=True)
class ScheduleCommand:
    """`schedule list`, or `schedule remove|pause|resume|run <id>`."""

    action: ScheduleAction
    schedule_id: str | None = None


@dataclass(frozen=True, slots=True)
class ReportCommand:
    """`report [<days>]`: a digest of this channel's runs."""

    days: int = DEFAULT_REPORT_DAYS


Command: TypeAlias = (
    HelpCommand
    | RunCommand
    | StatusCommand
    | WatchCommand
    | ScheduleAddCommand
    | ScheduleReportCommand
    | ScheduleCommand
    | ReportCommand
)


@dataclass(frozen=True, slots=True)
class CommandError:
    """Bad input: `message` says what was wrong (Slack mrkdwn, user text escaped).

    `topic` is the subcommand concerned, so the reply can show just its usage line.
    """

    message: str
    topic: str | None = None

    @property
    def usage(self) -> str:
        """The usage line(s) of the subcommand concerned, or the whole usage block."""
        if self.topic is None:
            return USAGE
        return _USAGE_LINES.get(self.topic, USAGE)
