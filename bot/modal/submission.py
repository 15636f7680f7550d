"""Reading a submitted Run modal: a run to start, or Slack's inline errors for each field."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from bot.commands import MAX_REPEATS, TestSelection
from bot.modal.ids import (
    ALL_CASES,
    CASE_ID_PATTERN,
    CASES_ACTION,
    CASES_BLOCK,
    CHANNEL_ACTION,
    CHANNEL_BLOCK,
    COMPARE_ACTION,
    COMPARE_BLOCK,
    ENGINE_ACTION,
    ENGINE_BLOCK,
    ENGINE_ID_PATTERN,
    HINT,
    LATEST,
    MAX_ERROR_TEXT,
    MIN_PASS_ACTION,
    MIN_PASS_BLOCK,
    PERCENT_PATTERN,
    REPEAT_ACTION,
    REPEAT_BLOCK,
    VERSION_ACTION,
    VERSION_BLOCK,
    VERSION_PATTERN,
)
from bot.modal.origin import Origin
from bot.modal.view import cases_block_id
from bot.refusal import Refusal
from bot.suite import Engine
from bot.text import clip, one_line


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
    if value and ENGINE_ID_PATTERN.fullmatch(value):
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
    # "Compare with version": B of a comparison (`engine`, pinned, is A); no version: latest.
    candidate: Engine | None = None
    min_pass: float | None = None  # "Minimum pass rate (%)", 0 to 100


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
    elif not ENGINE_ID_PATTERN.fullmatch(engine_id):
        errors[ENGINE_BLOCK] = "That is not a Retell LLM or conversation flow id."

    version: int | None = None
    raw_version = _element(view, VERSION_BLOCK, VERSION_ACTION).get("value")
    if isinstance(raw_version, str) and raw_version.strip():
        match = VERSION_PATTERN.fullmatch(raw_version.strip())
        if match is None:
            errors[VERSION_BLOCK] = (
                "The version is a whole number such as 3; leave it empty for the latest."
            )
        else:
            version = int(match.group(1))

    compare = _read_compare(_element(view, COMPARE_BLOCK, COMPARE_ACTION).get("value"))
    if isinstance(compare, str):
        errors[COMPARE_BLOCK] = compare
    elif compare is not None and VERSION_BLOCK not in errors:
        # A comparison needs a fixed point (as `compare llm_abc@3 …` does).
        if version is None:
            errors[VERSION_BLOCK] = (
                "Give the version to compare from, such as 3: a comparison starts from a "
                "fixed version."
            )
        elif compare.version == version:
            errors[COMPARE_BLOCK] = (
                f"That is the version above (v{version}): give another version, or "
                f"“{LATEST}”, or leave it empty to test one version."
            )

    min_pass = _read_min_pass(_element(view, MIN_PASS_BLOCK, MIN_PASS_ACTION).get("value"))
    if isinstance(min_pass, str):
        errors[MIN_PASS_BLOCK] = min_pass

    cases_block = _cases_block(view)
    picked = _element(view, cases_block, CASES_ACTION).get("selected_options")
    values = [
        option.get("value")
        for option in (picked if isinstance(picked, list) else [])
        if isinstance(option, dict)
    ]
    everything = [v for v in values if isinstance(v, str) and v.startswith(ALL_CASES)]
    ids = tuple(
        dict.fromkeys(v for v in values if isinstance(v, str) and CASE_ID_PATTERN.fullmatch(v))
    )
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
    candidate = (
        Engine.from_id(engine_id, compare.version) if isinstance(compare, _CompareWith) else None
    )
    return RunChoice(
        engine=Engine.from_id(engine_id, version),
        tests=tests,
        channel_id=channel_id,
        response_url=_response_url(response_urls, channel_id, origin),
        case_count=count,
        repeats=repeats,
        candidate=candidate,
        min_pass=None if isinstance(min_pass, str) else min_pass,
    )


@dataclass(frozen=True, slots=True)
class _CompareWith:
    """What "Compare with version" asked for: version B, or None for the latest."""

    version: int | None


def _read_compare(raw: object) -> _CompareWith | str | None:
    """ "Compare with version": None for no comparison, the version wanted, or the error."""
    text = raw.strip() if isinstance(raw, str) else ""
    if not text:
        return None
    if text.casefold() == LATEST:
        return _CompareWith(None)
    match = VERSION_PATTERN.fullmatch(text)
    if match is None:
        return (
            f"The version to compare with is a whole number such as 4, or “{LATEST}”; "
            "leave it empty to test one version."
        )
    return _CompareWith(int(match.group(1)))


def _read_min_pass(raw: object) -> float | str | None:
    """ "Minimum pass rate (%)": None for no gate, the percent, or the inline error.

    As `min_pass=` of the command: 0 to 100 with at most two decimals, and a fraction such as
    0.95 is refused rather than guessed at (0.95% and 95% are both plausible).
    """
    text = raw.strip() if isinstance(raw, str) else ""
    if not text:
        return None
    match = PERCENT_PATTERN.fullmatch(text)
    accepted = "a percentage from 0 to 100, such as 95 or 97.5; leave it empty for no gate"
    if match is None:
        return f"The minimum pass rate is {accepted}."
    percent = Decimal(match.group(1))
    if not 0 <= percent <= 100:
        return f"{clip(text, 20)} is outside 0 to 100: the minimum pass rate is {accepted}."
    if 0 < percent < 1:
        suggested = format((percent * 100).normalize(), "f")
        if len(suggested.partition(".")[2]) > 2:
            suggested = "95"
        return (
            f"{text} looks like a fraction; the minimum pass rate is in percent: "
            f"enter {suggested} for {suggested}%."
        )
    if len(match.group(2) or "") > 2:
        return "The minimum pass rate takes at most two decimals, such as 97.25."
    return float(percent)


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


def refusal_error(refusal: Refusal) -> str:
    """A refusal as the plain text of a form's inline error.

    Mentions cannot render there, so the admins are "an admin of the bot" (the message form,
    `blocks.refused`, names them).
    """
    ask = "an admin of the bot" if refusal.admins else "the bot's admin"
    text = f"🔒 {one_line(refusal.reason)} Ask {ask} if you need it."
    return clip(text, MAX_ERROR_TEXT)
