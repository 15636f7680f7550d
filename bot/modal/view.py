"""The Run modal's view and its menus' options: pure Block Kit, no I/O."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from bot.commands import MAX_REPEATS
from bot.modal.ids import (
    ALL_CASES,
    CALLBACK_ID,
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
    ENGINE_LABELS,
    HINT,
    LATEST,
    MAX_OPTION_TEXT,
    MAX_OPTION_VALUE,
    MAX_OPTIONS,
    MIN_PASS_ACTION,
    MIN_PASS_BLOCK,
    REPEAT_ACTION,
    REPEAT_BLOCK,
    VERSION_ACTION,
    VERSION_BLOCK,
)
from bot.modal.origin import Origin
from bot.text import clip, search_key

if TYPE_CHECKING:  # types only: the pure module stays free of the SDK
    from bot.retell import CaseDefinition, EngineChoice

Block = dict[str, Any]
Option = dict[str, Any]


def _plain(text: str, *, emoji: bool = True) -> dict[str, Any]:
    return {"type": "plain_text", "text": text, "emoji": emoji}


def _option(text: str, value: str, description: str | None = None) -> Option:
    option: Option = {"text": _plain(clip(text, MAX_OPTION_TEXT), emoji=False), "value": value}
    if description:
        option["description"] = _plain(clip(description, MAX_OPTION_TEXT), emoji=False)
    return option


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
            "hint": _plain(
                "A whole number. Leave empty to test the latest version (a comparison needs it)."
            ),
            "element": {
                "type": "plain_text_input",
                "action_id": VERSION_ACTION,
                "placeholder": _plain("e.g. 3"),
                "max_length": 12,
            },
        },
        {
            "type": "input",
            "block_id": COMPARE_BLOCK,
            "optional": True,
            "label": _plain("Compare with version"),
            "hint": _plain(
                f"Another version of the engine, or “{LATEST}”: the same test cases run on both "
                "versions and the result compares them case by case (regressions first). "
                "Leave empty to test one version."
            ),
            "element": {
                "type": "plain_text_input",
                "action_id": COMPARE_ACTION,
                "placeholder": _plain(f"e.g. 4 or {LATEST}"),
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
            "block_id": MIN_PASS_BLOCK,
            "optional": True,
            "label": _plain("Minimum pass rate (%)"),
            "hint": _plain(
                "The result is green only if at least this share of test runs passes (on the "
                "compared version when comparing), e.g. 95 or 97.5. Leave empty for no gate."
            ),
            "element": {
                "type": "number_input",
                "action_id": MIN_PASS_ACTION,
                "is_decimal_allowed": True,
                "min_value": "0",
                "max_value": "100",
                "placeholder": _plain("e.g. 95"),
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


def hint_options(text: str) -> list[Option]:
    """A one-option menu that says why there is nothing to pick (its value is never run)."""
    return [_option(text, HINT + "hint")]


_RETELL_HINTS = {
    "unauthorized": "Retell rejected the bot's API key: ask the bot's admin",
    "not_found": "Retell does not know this engine (deleted?): pick another",
    "payment": "Retell refused for billing reasons: check the account's credits",
    "rate_limited": "Retell is rate limiting this account: type again in a moment",
    "not_connected": "Retell is not connected: an admin connects it in the app's Home tab",
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
        if len(choice.engine_id) > MAX_OPTION_VALUE or not ENGINE_ID_PATTERN.fullmatch(
            choice.engine_id
        ):
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
        if len(case_id) > MAX_OPTION_VALUE or not CASE_ID_PATTERN.fullmatch(case_id):
            continue
        name = definition.name.strip() or case_id
        key = search_key(name)
        if wanted and not key.startswith(wanted):
            if len(contains) < room and (wanted in key or wanted in case_id.casefold()):
                contains.append(_option(name, case_id, case_id))
            continue
        starts.append(_option(name, case_id, case_id))
    return options + (starts + contains)[:room]
