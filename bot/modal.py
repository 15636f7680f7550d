"""The Run modal: pick an engine, a version, test cases and a channel instead of typing ids.

Pure functions only, like `bot.blocks`: the view, the options of its two menus (loaded from
Retell by the listeners, filtered here), and the reading of a submission into what a slash
command would have asked for, or into the inline errors Slack shows under the fields.

Slack's limits hold by construction: at most 100 options a menu, option text and description
at most 75 characters (counted in UTF-16 units, as Slack's clients do, so that emoji and other
astral characters never push a name over), option values at most 150 characters, and
`private_metadata` at most 3000.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeGuard, TypeVar

from bot.commands import MAX_REPEATS, TestSelection
from bot.suite import Engine

if TYPE_CHECKING:  # types only: the pure module stays free of the SDK's import cost
    from bot.retell import CaseDefinition, EngineChoice

Block = dict[str, Any]
Option = dict[str, Any]

SHORTCUT_ID = "run_retell_tests"
CALLBACK_ID = "run_retell_tests_modal"

ENGINE_BLOCK = "run_engine"
ENGINE_ACTION = "run_engine"
VERSION_BLOCK = "run_version"
VERSION_ACTION = "run_version"
CASES_BLOCK = "run_cases"  # the block id gets a suffix per engine: see `cases_block_id`
CASES_ACTION = "run_cases"
CHANNEL_BLOCK = "run_channel"
CHANNEL_ACTION = "run_channel"
REPEAT_BLOCK = "run_repeat"
REPEAT_ACTION = "run_repeat"

# Option values no engine or test case id can take (ids never start with `*` or `!`).
ALL_CASES = "*all*"  # "All test cases"; `*all*:<count>` carries the count seen when listed
HINT = "!"  # a message shown as an option ("Retell did not answer…"); never run

MAX_OPTIONS = 100
MAX_OPTION_TEXT = 75
MAX_OPTION_VALUE = 150
MAX_METADATA = 3000
MAX_ERROR_TEXT = 300
MAX_VERSION_DIGITS = 9

ENGINE_LABELS = {"retell-llm": "Retell LLM", "conversation-flow": "Conversation flow"}

_ENGINE_ID = re.compile(r"(?:llm|conversation_flow)_[A-Za-z0-9_\-]{1,128}")
_CASE_ID = re.compile(r"[A-Za-z0-9_.\-]{1,128}")
_VERSION = re.compile(rf"[vV]?([0-9]{{1,{MAX_VERSION_DIGITS}}})")  # "3" or "v3"
_SPACES = re.compile(r"\s+")
_MENTION = r"<@[UW][A-Z0-9]+(?:\|[^>]*)?>"
_MENTIONS = re.compile(rf"{_MENTION}(?:(?:,\s*|\s+and\s+){_MENTION})*")
_MARKUP = re.compile(r"<[^<>]*>")
_ENTITIES = {"&lt;": "<", "&gt;": ">", "&amp;": "&"}
_ZWJ = "\u200d"
_JOINERS = frozenset({_ZWJ, "\ufe0e", "\ufe0f"})
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})


# --------------------------------------------------------------------------- text


def utf16_length(text: str) -> int:
    """Length as Slack counts it for its limits: UTF-16 code units (an emoji can be two)."""
    return len(text.encode("utf-16-le")) // 2


def clip(text: str, limit: int) -> str:
    """`text` in at most `limit` UTF-16 units, ending in "…" when cut.

    Never splits a character, nor an accented letter or an emoji sequence, so a cut name is
    still valid, readable text.
    """
    if utf16_length(text) <= limit:
        return text
    room = limit - 1  # for the ellipsis
    end = used = 0
    for char in text:
        used += 2 if ord(char) > 0xFFFF else 1
        if used > room:
            break
        end += 1
    # Back off to the start of a character cluster cut in two: a base letter and its accents,
    # or an emoji sequence joined by ZWJ or made emoji by a variation selector.
    while 0 < end < len(text) and (
        unicodedata.combining(text[end]) or text[end] in _JOINERS or text[end - 1] == _ZWJ
    ):
        end -= 1
    return text[:end].rstrip() + "…"


def is_engine_id(value: object) -> TypeGuard[str]:
    """Whether a value is a Retell LLM or conversation flow id a batch can run against."""
    return isinstance(value, str) and _ENGINE_ID.fullmatch(value) is not None


def search_key(text: str) -> str:
    """How names and queries are compared: NFKC, curly quotes folded, spaces collapsed, casefold.

    Slack clients type curly apostrophes, and full-width or accented input must still match.
    """
    folded = unicodedata.normalize("NFKC", text).translate(_QUOTES)
    return _SPACES.sub(" ", folded).strip().casefold()


def _plain(text: str, *, emoji: bool = True) -> dict[str, Any]:
    return {"type": "plain_text", "text": text, "emoji": emoji}


def _option(text: str, value: str, description: str | None = None) -> Option:
    option: Option = {"text": _plain(clip(text, MAX_OPTION_TEXT), emoji=False), "value": value}
    if description:
        option["description"] = _plain(clip(description, MAX_OPTION_TEXT), emoji=False)
    return option


# --------------------------------------------------------------------------- where it was opened


@dataclass(frozen=True, slots=True)
class Origin:
    """What the modal carries in `private_metadata`: where it was opened, and the engine picked.

    `channel_id` and `response_url` come from the slash command (a shortcut has neither), so a
    run from the modal answers privately exactly like the command would. `engine_id` is the
    engine last picked, kept for menus when a payload lacks the view's state.
    """

    channel_id: str | None = None
    response_url: str | None = None
    engine_id: str | None = None

    def encode(self) -> str:
        """JSON within Slack's 3000 characters; the response_url is dropped first if need be."""
        fields = {"c": self.channel_id, "r": self.response_url, "e": self.engine_id}
        text = json.dumps({k: v for k, v in fields.items() if v}, separators=(",", ":"))
        if len(text) > MAX_METADATA:
            return Origin(self.channel_id, None, self.engine_id).encode()
        return text

    @classmethod
    def decode(cls, text: object) -> Origin:
        """Tolerant: anything unreadable is an Origin without a channel or engine."""
        try:
            data = json.loads(text) if isinstance(text, str) and text else {}
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}

        def field(key: str) -> str | None:
            value = data.get(key)
            return value if isinstance(value, str) and value else None

        engine_id = field("e")
        return cls(
            channel_id=field("c"),
            response_url=field("r"),
            engine_id=engine_id if engine_id and _ENGINE_ID.fullmatch(engine_id) else None,
        )


# --------------------------------------------------------------------------- the view


def cases_block_id(engine_id: str | None) -> str:
    """The test cases block's id, one per engine.

    Slack keeps what was entered in an input block across `views.update` as long as its
    block_id stays the same; a new id per engine clears cases picked for another engine.
    """
    if not engine_id:
        return CASES_BLOCK
    digest = hashlib.blake2b(engine_id.encode(), digest_size=6).hexdigest()
    return f"{CASES_BLOCK}_{digest}"


def run_view(origin: Origin) -> dict[str, Any]:
    """The Run modal, as opened and as rebuilt when an engine is picked.

    The channel defaults to where the slash command was typed (and may then be left empty);
    from the global shortcut there is no such channel, so it must be picked.
    """
    engine_id = origin.engine_id
    cases_placeholder = (
        f"Search the test cases of {engine_id}" if engine_id else "Pick an engine first"
    )
    channel: dict[str, Any] = {
        "type": "conversations_select",
        "action_id": CHANNEL_ACTION,
        "placeholder": _plain("Pick a channel"),
        "default_to_current_conversation": True,
        "response_url_enabled": True,
    }
    if origin.channel_id:
        channel["initial_conversation"] = origin.channel_id
    blocks: list[Block] = [
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": (
                    "Start a Retell batch test. Its status is posted in the channel you pick "
                    "and updated until the results are in."
                ),
            },
        },
        {
            "type": "input",
            "block_id": ENGINE_BLOCK,
            "dispatch_action": True,
            "label": _plain("Engine"),
            "hint": _plain("A Retell LLM or conversation flow of this account. Type to search."),
            "element": {
                "type": "external_select",
                "action_id": ENGINE_ACTION,
                "placeholder": _plain("Search engines by id or model"),
                "min_query_length": 0,
            },
        },
        {
            "type": "input",
            "block_id": VERSION_BLOCK,
            "optional": True,
            "label": _plain("Version"),
            "hint": _plain("A whole number. Leave empty to test the latest version."),
            "element": {
                "type": "plain_text_input",
                "action_id": VERSION_ACTION,
                "placeholder": _plain("e.g. 3"),
                "max_length": 12,
            },
        },
        {
            "type": "input",
            "block_id": cases_block_id(engine_id),
            "label": _plain("Test cases"),
            "hint": _plain(
                "Type part of a name or id to search; “All test cases” runs every case of "
                "the engine."
            ),
            "element": {
                "type": "multi_external_select",
                "action_id": CASES_ACTION,
                "placeholder": _plain(clip(cases_placeholder, 150)),
                "min_query_length": 0,
            },
        },
        {
            "type": "input",
            "block_id": REPEAT_BLOCK,
            "optional": True,
            "label": _plain("Runs"),
            "hint": _plain(
                "Run the suite several times, as one batch each, to tell flaky cases (passed "
                "and failed) from broken ones. Reported as one result."
            ),
            "element": {
                "type": "static_select",
                "action_id": REPEAT_ACTION,
                "initial_option": _repeat_option(1),
                "options": [_repeat_option(n) for n in range(1, MAX_REPEATS + 1)],
            },
        },
        {
            "type": "input",
            "block_id": CHANNEL_BLOCK,
            "optional": origin.channel_id is not None,
            "label": _plain("Post the results in"),
            "element": channel,
        },
    ]
    return {
        "type": "modal",
        "callback_id": CALLBACK_ID,
        "title": _plain("Run Retell tests"),
        "submit": _plain("Run"),
        "close": _plain("Cancel"),
        "private_metadata": origin.encode(),
        "blocks": blocks,
    }


def _repeat_option(runs: int) -> Option:
    return _option("Once" if runs == 1 else f"{runs} times, flag flaky cases", str(runs))


# --------------------------------------------------------------------------- the menus


def hint_options(text: str) -> list[Option]:
    """A one-option menu that says why there is nothing to pick (its value is never run)."""
    return [_option(text, HINT + "hint")]


_RETELL_HINTS = {
    "unauthorized": "Retell rejected the bot's API key: ask the bot's admin",
    "not_found": "Retell does not know this engine (deleted?): pick another",
    "payment": "Retell refused for billing reasons: check the account's credits",
    "rate_limited": "Retell is rate limiting this account: type again in a moment",
}


def retell_hint(kind: str | None) -> list[Option]:
    """The menu shown when Retell could not list (`kind` as in `RetellProblem`; None: timeout)."""
    return hint_options(_RETELL_HINTS.get(kind or "", "Retell did not answer: type again to retry"))


def engine_options(choices: Iterable[EngineChoice], query: str) -> list[Option]:
    """The engine menu: engines whose id, type or model contains the query, at most 100.

    Text is the id (what users know and type); the description says what it is.
    """
    wanted = search_key(query)
    options: list[Option] = []
    for choice in choices:
        if len(choice.engine_id) > MAX_OPTION_VALUE or not _ENGINE_ID.fullmatch(choice.engine_id):
            continue  # a value Slack would cut, or not an id a batch can run against
        details = [ENGINE_LABELS.get(choice.engine_type, choice.engine_type)]
        if choice.version is not None:
            details.append(f"version {choice.version}")
        if choice.model:
            details.append(choice.model)
        description = " · ".join(details)
        if wanted and wanted not in search_key(f"{choice.engine_id} {description}"):
            continue
        options.append(_option(choice.engine_id, choice.engine_id, description))
        if len(options) == MAX_OPTIONS:
            break
    return options


def case_options(definitions: Sequence[CaseDefinition], query: str) -> list[Option]:
    """The test case menu: "All test cases" and the cases matching the query, at most 100.

    Names that start with the query come first, then those containing it (by name or id);
    Retell's order otherwise. The "All" option carries the count it stands for, so that a
    submission over MAX_CASES_PER_RUN is refused in the form without asking Retell again.
    """
    wanted = search_key(query)
    options: list[Option] = []
    if definitions and (not wanted or wanted in search_key("All test cases")):
        count = len(definitions)
        label = f"All test cases ({count:,})"
        options.append(_option(label, f"{ALL_CASES}:{count}", "Every test case of the engine"))
    starts: list[Option] = []
    contains: list[Option] = []
    room = MAX_OPTIONS - len(options)
    for definition in definitions:
        if len(starts) >= room:
            break
        case_id = definition.case_id
        if len(case_id) > MAX_OPTION_VALUE or not _CASE_ID.fullmatch(case_id):
            continue
        name = definition.name.strip() or case_id
        key = search_key(name)
        if wanted and not key.startswith(wanted):
            if len(contains) < room and (wanted in key or wanted in case_id.casefold()):
                contains.append(_option(name, case_id, case_id))
            continue
        starts.append(_option(name, case_id, case_id))
    return options + (starts + contains)[:room]


# --------------------------------------------------------------------------- reading the view


def _state(view: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    state = view.get("state")
    values = state.get("values") if isinstance(state, dict) else None
    if not isinstance(values, dict):
        return {}
    return {k: v for k, v in values.items() if isinstance(k, str) and isinstance(v, dict)}


def _element(view: Mapping[str, Any], block_id: str, action_id: str) -> dict[str, Any]:
    element = _state(view).get(block_id, {}).get(action_id)
    return element if isinstance(element, dict) else {}


def _selected_value(element: Mapping[str, Any]) -> str | None:
    option = element.get("selected_option")
    value = option.get("value") if isinstance(option, dict) else None
    return value if isinstance(value, str) and value else None


def engine_in_view(view: Mapping[str, Any]) -> str | None:
    """The engine picked in the modal: the menu's current value, else the last one recorded.

    block_suggestion payloads carry the view with its state, so the cases menu can follow the
    engine menu even before (or without) the `views.update` an engine pick triggers.
    """
    value = _selected_value(_element(view, ENGINE_BLOCK, ENGINE_ACTION))
    if value and _ENGINE_ID.fullmatch(value):
        return value
    return Origin.decode(view.get("private_metadata")).engine_id


def _cases_block(view: Mapping[str, Any]) -> str:
    """The block id the test case menu has in this view (it changes with the engine)."""
    for block_id in _state(view):
        if block_id == CASES_BLOCK or block_id.startswith(CASES_BLOCK + "_"):
            return block_id
    for block in view.get("blocks") or []:
        shown = block.get("block_id") if isinstance(block, dict) else None
        if isinstance(shown, str) and shown.startswith(CASES_BLOCK):
            return shown
    return CASES_BLOCK


@dataclass(frozen=True, slots=True)
class RunChoice:
    """A valid submission: what `/retell-test run` would have said, and where to answer."""

    engine: Engine
    tests: TestSelection
    channel_id: str
    response_url: str | None
    case_count: int | None  # None when "All" was picked and the count is not known
    repeats: int = 1


def read_submission(
    view: Mapping[str, Any],
    response_urls: Sequence[Any] = (),
    *,
    max_cases: int,
) -> RunChoice | dict[str, str]:
    """A submitted Run modal as a run to start, or Slack's inline errors keyed by block_id.

    Every field is checked at once, so the user sees all that is wrong in one go.
    """
    origin = Origin.decode(view.get("private_metadata"))
    errors: dict[str, str] = {}

    engine_id = _selected_value(_element(view, ENGINE_BLOCK, ENGINE_ACTION))
    if engine_id is None or engine_id.startswith(HINT):
        errors[ENGINE_BLOCK] = "Pick an engine."
    elif not _ENGINE_ID.fullmatch(engine_id):
        errors[ENGINE_BLOCK] = "That is not a Retell LLM or conversation flow id."

    version: int | None = None
    raw_version = _element(view, VERSION_BLOCK, VERSION_ACTION).get("value")
    if isinstance(raw_version, str) and raw_version.strip():
        match = _VERSION.fullmatch(raw_version.strip())
        if match is None:
            errors[VERSION_BLOCK] = (
                "The version is a whole number such as 3; leave it empty for the latest."
            )
        else:
            version = int(match.group(1))

    cases_block = _cases_block(view)
    picked = _element(view, cases_block, CASES_ACTION).get("selected_options")
    values = [
        option.get("value")
        for option in (picked if isinstance(picked, list) else [])
        if isinstance(option, dict)
    ]
    everything = [v for v in values if isinstance(v, str) and v.startswith(ALL_CASES)]
    ids = tuple(dict.fromkeys(v for v in values if isinstance(v, str) and _CASE_ID.fullmatch(v)))
    count: int | None = len(ids)
    if everything:
        count = _all_count(everything[0])
    if not everything and not ids:
        errors[cases_block] = "Pick at least one test case, or “All test cases”."
    elif count is not None and count > max_cases:
        errors[cases_block] = (
            f"That is {count:,} test cases; a run can have at most {max_cases:,}. "
            "Pick fewer, or split them into several runs."
        )
    elif (
        engine_id
        and cases_block != CASES_BLOCK
        and cases_block != cases_block_id(engine_id)
        and ENGINE_BLOCK not in errors
    ):
        errors[cases_block] = "These test cases were picked for another engine; pick them again."

    repeats = 1
    runs = _selected_value(_element(view, REPEAT_BLOCK, REPEAT_ACTION))
    if runs is not None:
        if runs.isascii() and runs.isdigit() and 1 <= int(runs) <= MAX_REPEATS:
            repeats = int(runs)
        else:
            errors[REPEAT_BLOCK] = f"Pick how many runs, 1 to {MAX_REPEATS}."

    chosen = _element(view, CHANNEL_BLOCK, CHANNEL_ACTION).get("selected_conversation")
    channel_id = chosen if isinstance(chosen, str) and chosen else origin.channel_id
    if not channel_id:
        errors[CHANNEL_BLOCK] = "Pick the channel for the status and the results."

    if errors or engine_id is None or channel_id is None:
        return errors
    tests = TestSelection(everything=True) if everything else TestSelection(ids=ids)
    return RunChoice(
        engine=Engine.from_id(engine_id, version),
        tests=tests,
        channel_id=channel_id,
        response_url=_response_url(response_urls, channel_id, origin),
        case_count=count,
        repeats=repeats,
    )


def _all_count(value: str) -> int | None:
    _, _, digits = value.partition(":")
    return int(digits) if digits.isascii() and digits.isdigit() and len(digits) < 9 else None


def _response_url(response_urls: Sequence[Any], channel_id: str, origin: Origin) -> str | None:
    """Where to answer privately: Slack's response_url for the picked channel, else the one of
    the slash command the modal was opened from (when the channel is still that one)."""
    for entry in response_urls:
        if isinstance(entry, dict) and entry.get("channel_id") == channel_id:
            url = entry.get("response_url")
            if isinstance(url, str) and url:
                return url
    return origin.response_url if origin.channel_id == channel_id else None


def refusal_error(text: str) -> str:
    """A refusal message (Slack mrkdwn) as the plain text an inline error shows.

    Mentions cannot render in an error, so the admins become "an admin of the bot" and other
    markup is dropped; entities are unescaped.
    """
    plain = _MENTIONS.sub("an admin of the bot", text)
    plain = _MARKUP.sub("", plain)
    for entity, char in _ENTITIES.items():
        plain = plain.replace(entity, char)
    return clip(_SPACES.sub(" ", plain).strip(), MAX_ERROR_TEXT)


# --------------------------------------------------------------------------- caching

K = TypeVar("K")
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    """A small, time-limited memory for menu data.

    Slack asks for options at nearly every keystroke; reading every page of an engine's
    definitions each time would be slow and costly, so a listing is reused for `ttl` seconds.
    Oldest entries go first past `max_entries`.
    """

    def __init__(
        self, *, ttl: float, max_entries: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> V | None:
        """The value stored under `key`, unless it is older than the ttl."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        stored_at, value = entry
        if self._clock() - stored_at > self._ttl:
            del self._entries[key]
            return None
        return value

    def put(self, key: K, value: V) -> None:
        """Store `value`, evicting the oldest entries past `max_entries`."""
        self._entries.pop(key, None)
        self._entries[key] = (self._clock(), value)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
