"""Block Kit limits as Slack enforces them, and the check that finds the first one a message breaks.

Slack rejects violations with ``invalid_blocks``; enforcing them here makes the tests catch what
production would. `block_kit_violation` is pure so that renderers can be checked without a server.
"""

from __future__ import annotations

from typing import Any

from bot.testing.slack.records import JSONDict

# Block Kit limits (https://api.slack.com/reference/block-kit). Slack rejects violations with
# ``invalid_blocks``; enforcing them here makes the tests catch what production would.
MAX_MESSAGE_BLOCKS = 50


MAX_VIEW_BLOCKS = 100


MAX_MESSAGE_TEXT = 40_000


MAX_SECTION_TEXT = 3000


MAX_SECTION_FIELDS = 10


MAX_FIELD_TEXT = 2000


MAX_HEADER_TEXT = 150


MAX_CONTEXT_ELEMENTS = 10


MAX_ACTIONS_ELEMENTS = 25


MAX_BUTTON_TEXT = 75


MAX_BUTTON_VALUE = 2000


MAX_URL = 3000


MAX_ID = 255  # action_id and block_id


MAX_SELECT_OPTIONS = 100


MAX_OVERFLOW_OPTIONS = 5


MAX_OPTION_TEXT = 75


MAX_OPTION_VALUE = 150


MAX_MARKDOWN_BLOCK_TEXT = 12_000


BLOCK_TYPES = frozenset(
    {
        "actions",
        "context",
        "divider",
        "file",
        "header",
        "image",
        "input",
        "markdown",
        "rich_text",
        "section",
        "table",
        "video",
    }
)


TEXT_TYPES = frozenset({"plain_text", "mrkdwn"})


def block_kit_violation(
    text: str | None, blocks: list[JSONDict], *, max_blocks: int = MAX_MESSAGE_BLOCKS
) -> str | None:
    """Return why Slack would reject this message (None if it would accept it).

    A pure function so that renderers can be checked without the server.
    """
    if text is not None and len(text) > MAX_MESSAGE_TEXT:
        return f"text: {len(text)} characters > {MAX_MESSAGE_TEXT}"
    if len(blocks) > max_blocks:
        return f"blocks: {len(blocks)} blocks > {max_blocks}"
    block_ids: set[str] = set()
    for index, block in enumerate(blocks):
        where = f"blocks[{index}]"
        problem = _block_violation(block, where, block_ids)
        if problem:
            return problem
    return None


def _block_violation(block: Any, where: str, block_ids: set[str]) -> str | None:
    if not isinstance(block, dict):
        return f"{where}: not an object"
    kind = block.get("type")
    if kind not in BLOCK_TYPES:
        return f"{where}.type: unknown block type {kind!r}"
    block_id = block.get("block_id")
    if block_id is not None:
        if not isinstance(block_id, str) or len(block_id) > MAX_ID:
            return f"{where}.block_id: longer than {MAX_ID} characters or not a string"
        if block_id in block_ids:
            return f"{where}.block_id: duplicate block_id {block_id!r}"
        block_ids.add(block_id)
    if kind == "section":
        return _section_violation(block, where)
    if kind == "header":
        return _text_violation(block.get("text"), f"{where}.text", MAX_HEADER_TEXT, plain_only=True)
    if kind == "context":
        elements = block.get("elements")
        if not isinstance(elements, list) or not elements:
            return f"{where}.elements: must be a non-empty list"
        if len(elements) > MAX_CONTEXT_ELEMENTS:
            return f"{where}.elements: {len(elements)} elements > {MAX_CONTEXT_ELEMENTS}"
        return None
    if kind == "actions":
        return _actions_violation(block, where)
    if kind == "markdown":
        content = block.get("text")
        if not isinstance(content, str) or len(content) > MAX_MARKDOWN_BLOCK_TEXT:
            return f"{where}.text: must be a string of at most {MAX_MARKDOWN_BLOCK_TEXT}"
    return None


def _section_violation(block: JSONDict, where: str) -> str | None:
    text, fields = block.get("text"), block.get("fields")
    if text is None and fields is None:
        return f"{where}: a section needs text or fields"
    if text is not None:
        problem = _text_violation(text, f"{where}.text", MAX_SECTION_TEXT)
        if problem:
            return problem
    if fields is not None:
        if not isinstance(fields, list) or len(fields) > MAX_SECTION_FIELDS:
            return f"{where}.fields: must be a list of at most {MAX_SECTION_FIELDS}"
        for number, item in enumerate(fields):
            problem = _text_violation(item, f"{where}.fields[{number}]", MAX_FIELD_TEXT)
            if problem:
                return problem
    accessory = block.get("accessory")
    if accessory is not None:
        return _element_violation(accessory, f"{where}.accessory", set())
    return None


def _actions_violation(block: JSONDict, where: str) -> str | None:
    elements = block.get("elements")
    if not isinstance(elements, list) or not elements:
        return f"{where}.elements: must be a non-empty list"
    if len(elements) > MAX_ACTIONS_ELEMENTS:
        return f"{where}.elements: {len(elements)} elements > {MAX_ACTIONS_ELEMENTS}"
    action_ids: set[str] = set()
    for number, element in enumerate(elements):
        problem = _element_violation(element, f"{where}.elements[{number}]", action_ids)
        if problem:
            return problem
    return None


def _element_violation(element: Any, where: str, action_ids: set[str]) -> str | None:
    if not isinstance(element, dict) or not isinstance(element.get("type"), str):
        return f"{where}: an element needs a type"
    action_id = element.get("action_id")
    if action_id is not None:
        if not isinstance(action_id, str) or len(action_id) > MAX_ID:
            return f"{where}.action_id: longer than {MAX_ID} characters or not a string"
        if action_id in action_ids:
            return f"{where}.action_id: duplicate action_id {action_id!r} in one block"
        action_ids.add(action_id)
    kind = element["type"]
    if kind == "button":
        problem = _text_violation(
            element.get("text"), f"{where}.text", MAX_BUTTON_TEXT, plain_only=True
        )
        if problem:
            return problem
        value = element.get("value")
        if value is not None and (not isinstance(value, str) or len(value) > MAX_BUTTON_VALUE):
            return f"{where}.value: longer than {MAX_BUTTON_VALUE} characters or not a string"
        url = element.get("url")
        if url is not None and (not isinstance(url, str) or len(url) > MAX_URL):
            return f"{where}.url: longer than {MAX_URL} characters"
    elif kind in {"static_select", "multi_static_select", "overflow"}:
        limit = MAX_OVERFLOW_OPTIONS if kind == "overflow" else MAX_SELECT_OPTIONS
        options = element.get("options", [])
        if not isinstance(options, list) or len(options) > limit:
            return f"{where}.options: more than {limit} options"
        for number, option in enumerate(options):
            if not isinstance(option, dict):
                return f"{where}.options[{number}]: not an object"
            problem = _text_violation(
                option.get("text"), f"{where}.options[{number}].text", MAX_OPTION_TEXT
            )
            if problem:
                return problem
            value = option.get("value")
            if not isinstance(value, str) or len(value) > MAX_OPTION_VALUE:
                return f"{where}.options[{number}].value: longer than {MAX_OPTION_VALUE}"
    return None


def _text_violation(
    text_object: Any, where: str, limit: int, *, plain_only: bool = False
) -> str | None:
    if not isinstance(text_object, dict):
        return f"{where}: must be a text object"
    kind = text_object.get("type")
    allowed = {"plain_text"} if plain_only else TEXT_TYPES
    if kind not in allowed:
        return f"{where}.type: must be one of {sorted(allowed)}, not {kind!r}"
    content = text_object.get("text")
    if not isinstance(content, str) or not content:
        return f"{where}.text: must be a non-empty string"
    if len(content) > limit:
        return f"{where}.text: {len(content)} characters > {limit}"
    return None
