"""The `/retell-test` command parser (SPEC §3): slash command text in, a typed command out.

Pure functions with no I/O, so every path is unit-tested. `parse` never raises: whatever Slack
sends (mentions, links, HTML entities, smart quotes, control characters, 4,000+ characters) it
returns either a command or a `CommandError` whose message is safe to post as Slack mrkdwn —
nothing the user typed is echoed unescaped, so an error can never turn into a mention.

A small hand-written tokenizer is used instead of `shlex`, because Slack clients insert curly
quotes (double and single), users separate ids with commas, and Slack markup
(`<@U1|bob smith>`) must stay one token even when its label contains spaces.
"""

from __future__ import annotations

import bisect
import difflib
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal, TypeAlias

from bot.suite import Engine

if TYPE_CHECKING:  # only a type here: the parser stays free of the Retell SDK's import cost
    from bot.retell import CaseDefinition

MAX_CASES = 1000  # Retell accepts 1 to 1000 test case definition ids per batch
MAX_TEXT_CHARS = 200_000  # far beyond what Slack sends; bounds the work done on absurd input
MAX_SCHEDULE_NAME_CHARS = 80
DEFAULT_REPORT_DAYS = 7
MAX_REPORT_DAYS = 365
SHOWN_CHARS = 40  # how much of an offending token an error quotes
MAX_NAMES_SHOWN = 5  # unknown names listed one by one; the rest are counted
MAX_REPEATS = 5  # `repeat=N`: N batches of the same suite, reported as one result

SUBCOMMANDS = ("help", "run", "status", "watch", "schedule", "report")
NOTIFY_VALUES = ("always", "failures", "changes")
OPTION_KEYS = ("name", "notify", "mention")

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
    "run": "`/retell-test [run] &lt;engine&gt; &lt;tests&gt; [repeat=2..5]`",
    "status": "`/retell-test status [&lt;batch_id&gt;]`",
    "watch": "`/retell-test watch &lt;batch_id&gt;`",
    "schedule": (
        '`/retell-test schedule add "&lt;when&gt;" &lt;engine&gt; &lt;tests&gt; [name=&lt;name&gt;]'
        " [notify=always|failures|changes] [mention=@someone]`\n"
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


# --------------------------------------------------------------------------- results


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
    """`[run] <engine> <tests> [repeat=N]`: start a batch now (N batches of it with repeat)."""

    engine: Engine
    tests: TestSelection
    repeats: int = 1


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
    """`schedule add "<when>" <engine> <tests> [name=…] [notify=…] [mention=…]`.

    `when` stays text: the schedules module owns its grammar and the user's time zone.
    `options` holds `notify` (lower-cased) and `mention` (`<@U…>` or `<!subteam^S…>`) when given.
    """

    when: str
    engine: Engine
    tests: TestSelection
    name: str | None = None
    options: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


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


# --------------------------------------------------------------------------- text helpers

_SPACE_RE = re.compile(r"[\s\x00-\x1f\x7f-\x9f\u200b\u2060\ufeff]+")
_SURROGATE_RE = re.compile(r"[\ud800-\udfff]")
_ENTITY_RE = re.compile(r"&(amp|lt|gt);")
_ENTITIES = {"amp": "&", "lt": "<", "gt": ">"}

_TEST_ID_RE = re.compile(r"[A-Za-z0-9_.\-]{1,128}")
_BATCH_ID_RE = re.compile(r"[A-Za-z0-9_\-]{1,128}")
_ENGINE_RE = re.compile(r"(?P<id>(?:llm|conversation_flow)_[A-Za-z0-9_\-]{1,128})(?:@(?P<v>.*))?")
_VERSION_RE = re.compile(r"[0-9]{1,9}")
_OPTION_RE = re.compile(r"[A-Za-z][A-Za-z_\-]*=")
_MENTION_RES = (
    re.compile(r"<@(?P<id>[UW][A-Z0-9]+)(?:\|[^>]*)?>"),
    re.compile(r"<!subteam\^(?P<id>[A-Z0-9]+)(?:\|[^>]*)?>"),
)


def _normalise(text: str) -> str:
    """Collapse every kind of whitespace (NBSP, newlines, zero-width, control chars) to one space.

    Lone surrogates (from broken JSON) become U+FFFD so the reply can always be encoded.
    """
    return _SPACE_RE.sub(" ", _SURROGATE_RE.sub("\ufffd", text)).strip()


def _unescape(text: str) -> str:
    """Undo Slack's three HTML entities in one pass (so `&amp;lt;` stays the text `&lt;`)."""
    return _ENTITY_RE.sub(lambda m: _ENTITIES[m.group(1)], text)


def _escape(text: str) -> str:
    """Escape for Slack mrkdwn so that user text can never become a mention or a link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _show(text: str) -> str:
    """An offending token as inline code: clipped, escaped, backticks defused."""
    return "`" + _escape(_clip(text, SHOWN_CHARS).replace("`", "'")) + "`"


def _show_name(name: str, limit: int = SHOWN_CHARS) -> str:
    """A test case name in curly quotes, clipped and escaped."""
    return "“" + _escape(_clip(name, limit)) + "”"


def _name_key(name: str) -> str:
    """How names are compared: Unicode-normalised, smart quotes folded, spaces collapsed, casefold.

    Slack clients turn a typed apostrophe into a curly one, and the name must still match.
    """
    text = unicodedata.normalize("NFKC", name)
    text = text.translate(_QUOTE_FOLD)
    return " ".join(text.split()).casefold()


_QUOTE_FOLD = str.maketrans({"\u2018": "'", "\u2019": "'", "“": '"', "”": '"', "„": '"'})


def _join_or(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " or " + items[-1]


# --------------------------------------------------------------------------- tokenizer

# Opening quote -> the characters that may close it. Slack clients insert curly quotes, and
# some keyboards produce “…“ or „…“, so closers are forgiving.
_QUOTE_PAIRS = {
    '"': '"',
    "'": "'",
    "“": "”“",
    "”": "”",
    "\u2018": "\u2019\u2018",  # single curly quotes
    "\u2019": "\u2019",
    "„": "“”",
    "«": "»",
}
_SEPARATORS = " ,"


@dataclass(frozen=True, slots=True)
class _Token:
    text: str  # entity-unescaped
    quoted: bool  # the whole token was in quotes: a test case name or a schedule's `when`
    raw: str  # as Slack sent it: only here does a `<` mean Slack markup

    @property
    def markup(self) -> bool:
        """Whether the token holds Slack markup (a typed `<` arrives as `&lt;`)."""
        return "<" in self.raw


class _Scanner:
    """Finds the next closing character in O(log n), so no input makes the tokenizer quadratic."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._positions: dict[tuple[str, bool], list[int]] = {}

    def next(self, chars: str, start: int, *, at_boundary: bool = False) -> int | None:
        """Index of the first of `chars` at or after `start` (followed by a separator/end)."""
        key = (chars, at_boundary)
        positions = self._positions.get(key)
        if positions is None:
            text, last = self._text, len(self._text) - 1
            positions = [
                i
                for i, ch in enumerate(text)
                if ch in chars and (not at_boundary or i == last or text[i + 1] in _SEPARATORS)
            ]
            self._positions[key] = positions
        index = bisect.bisect_left(positions, start)
        return positions[index] if index < len(positions) else None

    def closing_quote(self, opener: str, start: int) -> int | None:
        """Where the quote opened by `opener` ends.

        A closer counts first where it ends a word (before a separator or the end), so that
        quotes inside a name stay in it: `"Customer's refund"`, and `“Customer says “cancel””`
        as smart punctuation types it. Only when no closer ends a word does the first one win.
        """
        closers = _QUOTE_PAIRS[opener]
        found = self.next(closers, start, at_boundary=True)
        return found if found is not None else self.next(closers, start)


def _tokenize(text: str) -> list[_Token] | CommandError:
    """Split normalised text into words, quoted strings and `key=value` / `key="value"` options.

    Spaces and commas separate words; a quote opens only at the start of a word or right after
    `=`; Slack markup `<…>` is kept whole even when its label contains spaces or commas.
    """
    scanner = _Scanner(text)
    tokens: list[_Token] = []
    pos, end = 0, len(text)
    while pos < end:
        ch = text[pos]
        if ch in _SEPARATORS:
            pos += 1
            continue
        if ch in _QUOTE_PAIRS:
            close = scanner.closing_quote(ch, pos + 1)
            if close is None:
                return _unterminated(text, pos)
            raw = text[pos + 1 : close]
            tokens.append(_Token(_unescape(raw).strip(), True, raw))
            pos = close + 1
            continue
        start = pos
        while pos < end and text[pos] not in _SEPARATORS:
            ch = text[pos]
            if ch == "<":
                markup_end = scanner.next(">", pos)
                next_open = scanner.next("<", pos + 1)
                if markup_end is not None and (next_open is None or markup_end < next_open):
                    pos = markup_end + 1
                    continue
            elif ch in _QUOTE_PAIRS and text[pos - 1] == "=":
                close = scanner.closing_quote(ch, pos + 1)
                if close is None:
                    return _unterminated(text, pos)
                raw = text[start:pos] + text[pos + 1 : close]
                tokens.append(_Token(_unescape(raw).strip(), False, raw))
                pos = close + 1
                break
            pos += 1
        else:
            raw = text[start:pos]
            tokens.append(_Token(_unescape(raw), False, raw))
    return tokens


def _unterminated(text: str, pos: int) -> CommandError:
    return CommandError(
        f"The quote that starts {_show(_unescape(text[pos:]))} is never closed. "
        "Close it with a matching quote mark."
    )


# --------------------------------------------------------------------------- parse


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
    """`<engine> <tests> [repeat=N]`, after an optional `run` keyword."""
    words, options = _split_options(tokens)
    if not words:
        return CommandError(
            f"`run` needs an engine and test cases. The engine is {_ENGINE_FORMS}.", "run"
        )
    engine = _parse_engine(words[0], "run")
    if isinstance(engine, CommandError):
        return engine
    repeats = _parse_repeat(options)
    if isinstance(repeats, CommandError):
        return repeats
    tests = _parse_tests(words[1:], "run")
    if isinstance(tests, CommandError):
        return tests
    return RunCommand(engine, tests, repeats)


def _parse_repeat(options: Sequence[_Token]) -> int | CommandError:
    """`repeat=N` (at most once): how many batches of the suite to run, 1 to MAX_REPEATS."""
    if not options:
        return 1
    key, _, value = options[0].text.partition("=")
    if key.casefold() != "repeat":
        where = "goes with `schedule add`" if key.casefold() in OPTION_KEYS else "is not an option"
        return CommandError(
            f"{_show(key + '=')} {where}; a run takes `repeat=` (2 to {MAX_REPEATS}).", "run"
        )
    if len(options) > 1:
        return CommandError("Give one option, `repeat=`, once.", "run")
    if not (_VERSION_RE.fullmatch(value.strip()) and 1 <= int(value) <= MAX_REPEATS):
        return CommandError(
            f"`repeat=` takes a number of runs from 2 to {MAX_REPEATS}; got {_show(value)}. "
            "Each run is one batch of the whole suite, reported together with flaky cases named.",
            "run",
        )
    return int(value)


def _parse_engine(token: _Token, topic: str) -> Engine | CommandError:
    """`llm_<id>` or `conversation_flow_<id>`, optionally `@<version>`."""
    match = None if token.markup else _ENGINE_RE.fullmatch(token.text)
    if match is None:
        error = _engine_error(token)
        return replace(error, topic=topic) if error else _not_an_engine(token, topic)
    version_text = match.group("v")
    version: int | None = None
    if version_text is not None:
        if not _VERSION_RE.fullmatch(version_text):
            problem = (
                "is missing the version after `@`"
                if version_text == ""
                else f"has an invalid version ({_show(version_text)})"
            )
            return CommandError(
                f"{_show(token.text)} {problem}: a version is a whole number from 0 up, "
                "as in `llm_abc123@3`.",
                topic,
            )
        version = int(version_text)
    return Engine.from_id(match.group("id"), version)


def _engine_error(token: _Token) -> CommandError | None:
    """A specific explanation for the common wrong engines, or None to use the generic one."""
    text, folded = token.text, token.text.casefold()
    if token.markup:
        kind = _markup_kind(token.raw)
        if kind == "link" and "://" in text:
            return _custom_llm(text)
        return CommandError(f"{_show(text)} is a {kind}, not an engine. Use {_ENGINE_FORMS}.")
    if "://" in text:
        return _custom_llm(text)
    if folded.startswith("agent_"):
        return CommandError(
            f"{_show(text)} is an agent id; batch tests run against the agent's response "
            f"engine. Use {_ENGINE_FORMS}."
        )
    for prefix in ("llm_", "conversation_flow_"):
        if folded.startswith(prefix) and not text.startswith(prefix):
            return CommandError(
                f"Engine ids start with lower-case `{prefix}`; got {_show(text)}. "
                f"Use {_ENGINE_FORMS}."
            )
        bare = text.split("@", 1)[0]
        if bare == prefix:
            return CommandError(
                f"{_show(text)} is missing the id after `{prefix}`. Use {_ENGINE_FORMS}."
            )
    return None


def _custom_llm(text: str) -> CommandError:
    return CommandError(
        f"{_show(text)} looks like a custom LLM URL; Retell batch tests don't support custom "
        f"LLMs. Use {_ENGINE_FORMS}."
    )


def _not_an_engine(token: _Token, topic: str) -> CommandError:
    if token.quoted:
        return CommandError(
            f"Expected an engine before the test cases, got the quoted {_show_name(token.text)}. "
            f"The engine is {_ENGINE_FORMS}.",
            topic,
        )
    if len(token.text.split("@", 1)[0]) > 128:
        return CommandError(
            f"{_show(token.text)} is too long for an engine id. Use {_ENGINE_FORMS}.", topic
        )
    return CommandError(
        f"{_show(token.text)} is not an engine id. Use {_ENGINE_FORMS}; "
        "ids use letters, digits, `_` and `-`.",
        topic,
    )


def _markup_kind(raw: str) -> str:
    """What a piece of Slack markup is, in words, for error messages."""
    inner = raw[raw.index("<") + 1 :]
    if inner.startswith("@"):
        return "user mention"
    if inner.startswith("#"):
        return "channel mention"
    if inner.startswith("!subteam"):
        return "user group mention"
    if inner.startswith("!"):
        return "special mention"
    return "link"


def _parse_tests(tokens: Sequence[_Token], topic: str) -> TestSelection | CommandError:
    """Test case ids, `all`, or quoted names; duplicates dropped, first order kept."""
    if not tokens:
        return CommandError(f"Name at least one test case after the engine: {_TESTS_FORMS}.", topic)
    distinct = {
        ("name", _name_key(t.text)) if t.quoted else ("id", t.text)
        for t in tokens
        if t.quoted or t.text.casefold() != "all"
    }
    if len(distinct) > MAX_CASES:
        return CommandError(
            f"That names {len(distinct):,} test cases; a batch runs at most {MAX_CASES:,}. "
            "Split them into several runs.",
            topic,
        )
    ids: list[str] = []
    names: list[str] = []
    seen_ids: set[str] = set()
    seen_names: set[str] = set()
    everything = False
    for token in tokens:
        if token.quoted:
            if not token.text:
                return CommandError(
                    'Empty quotes (`""`) don\'t name a test case; put the name between them.',
                    topic,
                )
            key = _name_key(token.text)
            if key not in seen_names:
                seen_names.add(key)
                names.append(token.text)
        elif token.text.casefold() == "all" and not token.markup:
            everything = True
        elif token.markup:
            return CommandError(
                f"{_show(token.text)} is a {_markup_kind(token.raw)}, not a test case. "
                f"Name test cases with {_TESTS_FORMS}.",
                topic,
            )
        elif _TEST_ID_RE.fullmatch(token.text):
            if token.text not in seen_ids:
                seen_ids.add(token.text)
                ids.append(token.text)
        else:
            return _bad_test_id(token.text, topic)
    if everything and (ids or names):
        return CommandError(
            "`all` already runs every test case of the engine; use it alone, without ids or names.",
            topic,
        )
    return TestSelection(tuple(ids), tuple(names), everything)


def _bad_test_id(text: str, topic: str) -> CommandError:
    """Say why a word is not a test case id, with a hint for the usual slips."""
    if len(text) > 128 and _TEST_ID_RE.fullmatch(text[:128]):
        return CommandError(
            f"{_show(text)} is {len(text):,} characters long; test case ids have at most 128.",
            topic,
        )
    if text.startswith("@") and _VERSION_RE.fullmatch(text[1:]):
        return CommandError(
            f"{_show(text)} is not a test case id. To pin the engine version, write it "
            "right after the engine, without a space: `llm_abc123@3`.",
            topic,
        )
    if any(ch in _QUOTE_PAIRS for ch in text):
        return CommandError(
            f"{_show(text)} is not a test case id. Put test case names in quotes as a whole, "
            'separated by spaces: `"Refund request" "Billing question"`.',
            topic,
        )
    return CommandError(
        f"{_show(text)} is not a test case id: ids use letters, digits, `_`, `-` and `.`. "
        'To pick test cases by name, quote the name: `"Refund request"`.',
        topic,
    )


def _parse_batch_id(token: _Token, topic: str) -> str | CommandError:
    if token.markup:
        return CommandError(
            f"{_show(token.text)} is a {_markup_kind(token.raw)}, not a batch id.", topic
        )
    if token.quoted or not _BATCH_ID_RE.fullmatch(token.text):
        return CommandError(
            f"{_show(token.text)} is not a batch id: batch ids use letters, digits, `_` and "
            "`-` (at most 128).",
            topic,
        )
    return token.text


def _extra(subcommand: str, token: _Token, takes: str) -> CommandError:
    shown = _show_name(token.text) if token.quoted else _show(token.text)
    return CommandError(f"`{subcommand}` takes {takes}; unexpected {shown}.", subcommand)


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
    if not words:
        return CommandError(
            f"`schedule add` needs an engine after the schedule: {_ENGINE_FORMS}.", "schedule"
        )
    engine = _parse_engine(words[0], "schedule")
    if isinstance(engine, CommandError):
        return engine
    tests = _parse_tests(words[1:], "schedule")
    if isinstance(tests, CommandError):
        return tests
    parsed = _parse_options(options)
    if isinstance(parsed, CommandError):
        return parsed
    name, extra = parsed
    return ScheduleAddCommand(when, engine, tests, name, MappingProxyType(extra))


def _split_options(tokens: Sequence[_Token]) -> tuple[list[_Token], list[_Token]]:
    """The words of a command, and its `key=value` options, each in order."""
    options = [t for t in tokens if not t.quoted and _OPTION_RE.match(t.text)]
    return [t for t in tokens if t not in options], options


def _quoted_when(tokens: Sequence[_Token], example: str) -> str | CommandError:
    """The quoted `<when>` that starts `schedule add` and `add-report`."""
    if not tokens:
        return CommandError(f"Give the schedule in quotes first, e.g. {example}.", "schedule")
    when = tokens[0]
    if not when.quoted:
        return CommandError(
            f"Put the schedule in quotes, e.g. {example}; it starts with {_show(when.text)}.",
            "schedule",
        )
    if not when.text:
        return CommandError(
            f'The quoted schedule is empty. Write e.g. `"hourly"`, `"daily 09:00"` or a '
            f"cron expression: {example}.",
            "schedule",
        )
    if when.markup:
        return CommandError(
            f"The quoted schedule {_show_name(when.text)} contains a mention or a link; write "
            f'e.g. `"daily 09:00"`.',
            "schedule",
        )
    return when.text


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
    parsed = _parse_options(options)
    if isinstance(parsed, CommandError):
        return parsed
    name, extra = parsed
    if extra:
        key = next(iter(extra))
        return CommandError(f"`{key}=` is for run schedules; a report takes `name=`.", "schedule")
    return ScheduleReportCommand(when, days.days, name)


def _parse_options(tokens: Iterable[_Token]) -> tuple[str | None, dict[str, str]] | CommandError:
    """`name=`, `notify=` and `mention=` for `schedule add`; each at most once."""
    name: str | None = None
    options: dict[str, str] = {}
    seen: set[str] = set()
    keys = _join_or([f"`{key}=`" for key in OPTION_KEYS])
    for token in tokens:
        key, _, value = token.text.partition("=")
        key = key.casefold()
        value = value.strip()
        if key not in OPTION_KEYS:
            return CommandError(
                f"Unknown option {_show(key + '=')}; `schedule add` takes {keys}.", "schedule"
            )
        if key in seen:
            return CommandError(f"`{key}=` is given twice; give it once.", "schedule")
        seen.add(key)
        if not value:
            return CommandError(f"`{key}=` needs a value.", "schedule")
        if key == "name":
            if token.markup:
                return CommandError("A schedule name can't contain mentions or links.", "schedule")
            if len(value) > MAX_SCHEDULE_NAME_CHARS:
                return CommandError(
                    f"The schedule name is {len(value)} characters long; the limit is "
                    f"{MAX_SCHEDULE_NAME_CHARS}.",
                    "schedule",
                )
            name = value
        elif key == "notify":
            if value.casefold() not in NOTIFY_VALUES:
                return CommandError(
                    f"{_show(value)} is not a `notify=` choice; use "
                    f"{_join_or([f'`{v}`' for v in NOTIFY_VALUES])}.",
                    "schedule",
                )
            options["notify"] = value.casefold()
        else:
            mention = _parse_mention(token.raw.partition("=")[2].strip())
            if mention is None:
                return CommandError(
                    f"{_show(value)} is not a mention: `mention=` takes one person or user "
                    "group, picked from Slack's autocomplete (e.g. `mention=@alice`).",
                    "schedule",
                )
            options["mention"] = mention
    return name, options


def _parse_mention(raw: str) -> str | None:
    """`<@U123|bob>` -> `<@U123>`, `<!subteam^S1|@qa>` -> `<!subteam^S1>`; anything else None."""
    user, group = (pattern.fullmatch(raw) for pattern in _MENTION_RES)
    if user:
        return f"<@{user.group('id')}>"
    if group:
        return f"<!subteam^{group.group('id')}>"
    return None


# --------------------------------------------------------------------------- resolution


def needs_definitions(selection: TestSelection) -> bool:
    """Whether resolving needs the engine's definitions from Retell (names or `all`).

    Explicit ids are passed to Retell as given, so a run of ids alone costs no listing call;
    `resolve_tests` is still called (with no definitions) for the count limit.
    """
    return selection.everything or bool(selection.names)


def resolve_tests(
    selection: TestSelection,
    definitions: Sequence[CaseDefinition],
    *,
    max_cases: int = MAX_CASES,
) -> tuple[str, ...] | CommandError:
    """The definition ids to run: explicit ids first, then `all` or the names' matches.

    Names match case-insensitively; a name matching several definitions runs them all. Unknown
    names are reported together with close matches, and the count limit is checked here, so
    nothing is created in Retell for a selection that cannot run.
    """
    chosen: list[str] = list(selection.ids)
    if selection.everything:
        if not definitions:
            return CommandError(
                "This engine has no test case definitions in Retell, so `all` has nothing to "
                "run. Create test cases for it in Retell first.",
                "run",
            )
        chosen.extend(d.case_id for d in definitions)
    if selection.names:
        by_key: dict[str, list[str]] = {}
        shown_name: dict[str, str] = {}
        for definition in definitions:
            key = _name_key(definition.name)
            by_key.setdefault(key, []).append(definition.case_id)
            shown_name.setdefault(key, definition.name)
        missing: list[str] = []
        for name in selection.names:
            ids = by_key.get(_name_key(name))
            if ids is None:
                missing.append(name)
            else:
                chosen.extend(ids)
        if missing:
            return _names_not_found(missing, shown_name)
    result = tuple(dict.fromkeys(chosen))
    if not result:
        return CommandError(f"Name at least one test case: {_TESTS_FORMS}.", "run")
    if len(result) > max_cases:
        return CommandError(
            f"That comes to {len(result):,} test cases; a run can have at most {max_cases:,}. "
            "Split them into several runs.",
            "run",
        )
    return result


def ids_not_found(
    case_ids: Sequence[str], definitions: Sequence[CaseDefinition]
) -> CommandError | None:
    """The ids among `case_ids` that are not definitions of the engine, each with close ids,
    or None when all of them are (then Retell refused for another reason).

    Ids are passed to Retell unchecked (no listing call per run); this is read only after
    Retell refused a batch, to say which ids it did not know.
    """
    known = {d.case_id: d.name for d in definitions}
    missing = [case_id for case_id in case_ids if case_id not in known]
    if not missing:
        return None
    if not known:
        return CommandError(
            "This engine has no test case definitions in Retell, so none of the ids can run.",
            "run",
        )

    def hint(case_id: str) -> str:
        close = difflib.get_close_matches(case_id, list(known), n=3)
        if not close:
            return "no close match"
        named = [f"`{_escape(c)}` ({_show_name(known[c], 40)})" for c in close]
        return "did you mean " + _join_or(named) + "?"

    lines = [f"• {_show(case_id)}: {hint(case_id)}" for case_id in missing[:MAX_NAMES_SHOWN]]
    if len(missing) > MAX_NAMES_SHOWN:
        lines.append(f"…and {len(missing) - MAX_NAMES_SHOWN} more.")
    header = (
        f"{len(missing)} of the test case ids are not definitions of this engine, so Retell "
        "created nothing:"
    )
    return CommandError("\n".join([header, *lines]), "run")


def _names_not_found(missing: Sequence[str], shown_name: Mapping[str, str]) -> CommandError:
    """One line per unknown name, each with up to three close matches among the engine's names."""
    if not shown_name:
        listed = ", ".join(_show_name(name) for name in missing[:MAX_NAMES_SHOWN])
        more = len(missing) - MAX_NAMES_SHOWN
        tail = f" and {more} more" if more > 0 else ""
        return CommandError(
            f"No test case named {listed}{tail}: this engine has no test case definitions "
            "in Retell.",
            "run",
        )
    keys = list(shown_name)

    def hint(name: str) -> str:
        close = difflib.get_close_matches(_name_key(name), keys, n=3)
        if not close:
            return "no close match"
        return "did you mean " + _join_or([_show_name(shown_name[k], 60) for k in close]) + "?"

    if len(missing) == 1:
        return CommandError(
            f"No test case named {_show_name(missing[0])} for this engine; {hint(missing[0])}",
            "run",
        )
    lines = [f"• {_show_name(name)}: {hint(name)}" for name in missing[:MAX_NAMES_SHOWN]]
    if len(missing) > MAX_NAMES_SHOWN:
        lines.append(f"…and {len(missing) - MAX_NAMES_SHOWN} more.")
    header = f"{len(missing)} test case names were not found for this engine:"
    return CommandError("\n".join([header, *lines]), "run")
