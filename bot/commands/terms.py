"""The pieces every subcommand is made of: an engine (`llm_abc@3`), test ids or names or `all`, a
batch id, `key=value` options, a quoted `<when>`; each with its own precise error.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from decimal import Decimal

from bot.commands.model import (
    _ENGINE_FORMS,
    _TESTS_FORMS,
    MAX_CASES,
    MAX_REPEATS,
    MAX_SCHEDULE_NAME_CHARS,
    NOTIFY_VALUES,
    OPTION_KEYS,
    RUN_OPTION_KEYS,
    CommandError,
    TestSelection,
)
from bot.commands.scanner import (
    _BATCH_ID_RE,
    _ENGINE_RE,
    _MENTION_RES,
    _NUMBER_RE,
    _OPTION_RE,
    _PERCENT_RE,
    _QUOTE_PAIRS,
    _TEST_ID_RE,
    _VERSION_RE,
    _join_or,
    _show,
    _show_name,
    _Token,
)
from bot.suite import FLOW_PREFIX, LLM_PREFIX, Engine
from bot.text import search_key

_ENGINE_PREFIXES = (LLM_PREFIX, FLOW_PREFIX)


def _parse_run_options(
    options: Sequence[_Token], topic: str
) -> tuple[int, float | None] | CommandError:
    """`repeat=N` and `min_pass=P` of `run` and `compare`: each at most once, in any order."""
    repeats: int = 1
    min_pass: float | None = None
    seen: set[str] = set()
    what = "a comparison" if topic == "compare" else "a run"
    takes = f"{what} takes `repeat=` (2 to {MAX_REPEATS}) and `min_pass=` (0 to 100)"
    for token in options:
        shown, _, value = token.text.partition("=")
        key = shown.casefold()
        if key not in RUN_OPTION_KEYS:
            where = "goes with `schedule add`" if key in OPTION_KEYS else "is not an option"
            return CommandError(f"{_show(shown + '=')} {where}; {takes}.", topic)
        if key in seen:
            return CommandError(f"`{key}=` is given twice; give it once.", topic)
        seen.add(key)
        if key == "min_pass":
            parsed = _parse_min_pass(value, topic)
            if isinstance(parsed, CommandError):
                return parsed
            min_pass = parsed
        elif _VERSION_RE.fullmatch(value.strip()) and 1 <= int(value) <= MAX_REPEATS:
            repeats = int(value)
        else:
            batch = (
                "one batch of the suite on each version"
                if topic == "compare"
                else "one batch of the whole suite"
            )
            return CommandError(
                f"`repeat=` takes a number of runs from 2 to {MAX_REPEATS}; got {_show(value)}. "
                f"Each run is {batch}, reported together with flaky cases named.",
                topic,
            )
    return repeats, min_pass


def _parse_min_pass(value: str, topic: str) -> float | CommandError:
    """`min_pass=P`: the pass rate, in percent, at which a result counts as green (SPEC §9).

    A fraction (`0.95`) is refused rather than guessed at: 0.95% and 95% are both plausible.
    """
    text = value.strip()
    accepted = (
        "a pass rate in percent from 0 to 100, e.g. `min_pass=95`, `min_pass=97.5` or "
        "`min_pass=90%`"
    )
    if not text:
        return CommandError(f"`min_pass=` needs a value: {accepted}.", topic)
    number = _NUMBER_RE.fullmatch(text)
    if number is None:
        return CommandError(f"`min_pass=` takes {accepted}; got {_show(text)}.", topic)
    percent = Decimal(number.group("n"))
    if percent > 100:
        return CommandError(
            f"`min_pass=` is a percentage, at most 100; got {_show(text)}. Write e.g. "
            "`min_pass=95`.",
            topic,
        )
    if 0 < percent < 1:
        suggested = format((percent * 100).normalize(), "f")
        example = suggested if _PERCENT_RE.fullmatch(suggested) else "95"
        return CommandError(
            f"{_show('min_pass=' + text)} looks like a fraction; min_pass is a percentage: "
            f"write `min_pass={example}` for {example}%.",
            topic,
        )
    if _PERCENT_RE.fullmatch(text) is None:
        return CommandError(
            f"`min_pass=` takes {accepted}, with at most two decimals; got {_show(text)}.",
            topic,
        )
    return float(percent)


def _looks_like_engine(token: _Token) -> bool:
    """Whether a word is meant as an engine (`llm_abc@4`, even a broken one), not a test id."""
    if token.quoted or token.markup:
        return False
    return token.text.casefold().startswith(_ENGINE_PREFIXES)


def _parse_versions(
    words: Sequence[_Token], topic: str
) -> tuple[Engine, Engine, Sequence[_Token]] | CommandError:
    """`<engine>@<A> [<engine>@<B>]` of `compare`, and the words after them.

    A must be pinned: a comparison needs a fixed point. B is another version of the same engine;
    left out, or given without `@`, it is the latest version (resolved when the runs start).
    """
    baseline = _parse_engine(words[0], topic)
    if isinstance(baseline, CommandError):
        return baseline
    if baseline.version is None:
        return CommandError(
            "`compare` needs the version to compare from, e.g. `llm_abc@3`; "
            f"{_show(baseline.label)} has no `@&lt;version&gt;`. Then give the version to compare "
            "with (`llm_abc@3 llm_abc@4`), or leave it out to compare with the latest.",
            topic,
        )
    rest = words[1:]
    if not rest or not _looks_like_engine(rest[0]):
        return baseline, Engine(baseline.type, baseline.id), rest
    candidate = _parse_engine(rest[0], topic)
    if isinstance(candidate, CommandError):
        return candidate
    if candidate.id != baseline.id:
        return CommandError(
            f"`compare` compares two versions of one engine; {_show(baseline.label)} and "
            f"{_show(candidate.label)} are different engines. Run each on its own instead.",
            topic,
        )
    if candidate.version == baseline.version:
        return CommandError(
            f"{_show(baseline.label)} against {_show(candidate.label)} compares a version with "
            "itself; give another version, or leave it out to compare with the latest.",
            topic,
        )
    return baseline, candidate, rest[1:]


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
        ("name", search_key(t.text)) if t.quoted else ("id", t.text)
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
            key = search_key(token.text)
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


# What to say when an engine turns up among the test cases (`llm_abc@3 llm_abc@4 all`).
_SECOND_ENGINE = {
    "run": "a run takes one engine. To compare two versions, write "
    "`compare llm_abc@3 llm_abc@4 all`.",
    "compare": "`compare` takes two versions of the engine, then the test cases.",
    "schedule": "a schedule runs one engine. To compare two versions, write "
    '`schedule add "&lt;when&gt;" compare llm_abc@3 llm_abc@4 all`.',
}


def _second_engine(topic: str) -> str:
    return _SECOND_ENGINE.get(topic, _SECOND_ENGINE["run"])


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
    if "@" in text and _ENGINE_RE.fullmatch(text):
        return CommandError(f"{_show(text)} is not a test case id; {_second_engine(topic)}", topic)
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


def _parse_options(
    tokens: Iterable[_Token],
) -> tuple[str | None, dict[str, str], float | None] | CommandError:
    """`name=`, `notify=`, `mention=` and `min_pass=` for `schedule add`; each at most once.

    Returns the name, the `notify`/`mention` options, and `min_pass` (which has its own field).
    """
    name: str | None = None
    min_pass: float | None = None
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
        if key == "min_pass":  # before the generic check: it says what the value should be
            parsed = _parse_min_pass(value, "schedule")
            if isinstance(parsed, CommandError):
                return parsed
            min_pass = parsed
            continue
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
    return name, options, min_pass


def _parse_mention(raw: str) -> str | None:
    """`<@U123|bob>` -> `<@U123>`, `<!subteam^S1|@qa>` -> `<!subteam^S1>`; anything else None."""
    user, group = (pattern.fullmatch(raw) for pattern in _MENTION_RES)
    if user:
        return f"<@{user.group('id')}>"
    if group:
        return f"<!subteam^{group.group('id')}>"
    return None
