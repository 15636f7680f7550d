"""**Publish <agent>** on a green result, and what the thread is told about a publish (SPEC §9).

A button per agent whose draft answers with the tested engine version; each asks to confirm,
naming agent and version, because publishing changes what callers hear.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from bot.blocks.kit import (
    MAX_BUTTON_VALUE,
    Block,
    Message,
    _button,
    _confirm,
    _context,
    _engine,
    _message,
    _name,
    _safe,
    _section,
    mention,
    shorten,
)
from bot.suite import Engine
from bot.text import one_line

ACTION_PUBLISH = "publish_agent"  # each button's action_id is `publish_agent:<n>`

AGENT_NAME_CHARS = 60  # an agent's name in a button or a dialog

# Buttons per result: an actions block holds 25, but a result is no place for a wall of them.
PUBLISH_BUTTONS = 5


class Publishable(Protocol):
    """A draft agent version a green result may publish; `bot.agents.AgentDraft` fits it."""

    @property
    def agent_id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def version(self) -> int: ...


@dataclass(frozen=True, slots=True)
class PublishPress:
    """What a **Publish** button says: this result, this agent, this version of it."""

    run_id: int
    agent_id: str
    version: int


def publish_actions(run_id: int, engine: Engine, drafts: Sequence[Publishable]) -> list[Block]:
    """The Publish buttons of a result whose tested `engine` version is these agents' draft."""
    buttons = []
    for number, draft in enumerate(drafts[:PUBLISH_BUTTONS]):
        value = json.dumps({"run": run_id, "agent": draft.agent_id, "version": draft.version})
        name = shorten(one_line(draft.name), AGENT_NAME_CHARS)
        confirm = _confirm(
            f"Publish {name}?",
            f"Publishes version {draft.version} (answers with {engine.label}) of the agent "
            f"{name}: callers reach this version from now on.",
            "Publish",
        )
        buttons.append(
            _button(
                f"🚀 Publish {name}",
                f"{ACTION_PUBLISH}:{number}",
                value[:MAX_BUTTON_VALUE],
                confirm=confirm,
            )
        )
    blocks: list[Block] = [{"type": "actions", "elements": buttons}]
    if len(drafts) > PUBLISH_BUTTONS:
        more = len(drafts) - PUBLISH_BUTTONS
        blocks.append(_context(f"…and {more} more agents answer with {_engine(engine)}."))
    return blocks


def with_publish(message: Message, actions: Sequence[Block]) -> Message:
    """The result with its Publish buttons above the footer (its last block)."""
    if not actions:
        return message
    blocks = [*message.blocks[:-1], *actions, *message.blocks[-1:]]
    return Message(message.text, blocks)


def read_press(value: str) -> PublishPress | None:
    """A Publish button's value; None for anything the bot did not make."""
    try:
        data = json.loads(value)
        press = PublishPress(int(data["run"]), str(data["agent"]), int(data["version"]))
    except (ValueError, TypeError, KeyError):
        return None
    return press if press.agent_id and press.version >= 0 else None


def published(user_id: str, name: str, version: int, engine: Engine) -> Message:
    """The thread reply once Retell published it: who published what."""
    text = (
        f"🚀 {mention(user_id)} published *{_name(name)}* version {version}, which answers "
        f"with {_engine(engine)}."
    )
    return _message(text, [_section(text)])


def publish_refused(user_id: str, reason: str) -> Message:
    """The thread reply when Retell did not publish (or did not confirm it): its words."""
    text = f"⚠️ {mention(user_id)} pressed Publish: {_safe(reason, 1500)}"
    return _message(text, [_section(text)])
