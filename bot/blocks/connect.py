"""Connect Retell: the App Home section and the modal that takes a workspace's API key.

Pure Block Kit. Nothing here ever carries the key: the modal's input starts empty, its
`private_metadata` is empty, and Home shows only the key's last four characters.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.blocks.kit import (
    Block,
    _button,
    _confirm,
    _context,
    _section,
    mention,
    slack_date,
)

ACTION_CONNECT = "retell_connect"
ACTION_REMOVE = "retell_disconnect"
CALLBACK_CONNECT = "retell_connect_key"
KEY_BLOCK = "retell_key"
KEY_ACTION = "key"
MAX_KEY_LENGTH = 200  # Retell keys are far shorter; anything longer is not one


@dataclass(frozen=True, slots=True)
class Connection:
    """What App Home says about a workspace's Retell account (never the key itself)."""

    hint: str | None = None  # last characters of the workspace's own key
    by: str | None = None
    at: datetime | None = None
    deployment_key: bool = False  # no key of its own, but RETELL_API_KEY serves it


def connect_section(connection: Connection, *, admin: bool) -> list[Block]:
    """The "Connect Retell" part of App Home; buttons only for a workspace admin."""
    if connection.hint is not None:
        when = f" on {slack_date(connection.at, '{date_short_pretty}')}" if connection.at else ""
        who = f" by {mention(connection.by)}" if connection.by else ""
        status = f"✅ Connected with the key ending in `…{connection.hint}`{who}{when}."
    elif connection.deployment_key:
        status = "Using the deployment's Retell key. Connect your own account to run against it."
    else:
        status = "⚠️ *Not connected.* Runs need a Retell account: " + (
            "connect one below." if admin else "ask a workspace admin to connect one here."
        )
    found: list[Block] = [_section(f"*Retell account*\n{status}")]
    if not admin:
        return found
    buttons = [
        _button(
            "Replace key" if connection.hint is not None else "Connect Retell",
            ACTION_CONNECT,
            "connect",
            style="primary",
        )
    ]
    if connection.hint is not None:
        buttons.append(
            _button(
                "Remove",
                ACTION_REMOVE,
                "remove",
                style="danger",
                confirm=_confirm(
                    "Remove the Retell key?",
                    "Runs, follow-ups and schedules of this workspace stop reaching your Retell "
                    "account until a key is connected again.",
                    "Remove",
                ),
            )
        )
    found.append({"type": "actions", "block_id": "retell_connect_actions", "elements": buttons})
    found.append(
        _context(
            "The key is checked with Retell, stored encrypted and never shown again. "
            "Find it in Retell's dashboard under Settings → API Keys."
        )
    )
    return found


def connect_modal() -> dict[str, Any]:
    """The modal asking for the key: one empty input, nothing in `private_metadata`."""
    return {
        "type": "modal",
        "callback_id": CALLBACK_CONNECT,
        "title": {"type": "plain_text", "text": "Connect Retell"},
        "submit": {"type": "plain_text", "text": "Connect"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "private_metadata": "",
        "blocks": [
            _section(
                "Paste a Retell API key of your workspace's Retell account. Every run, "
                "follow-up and schedule of this workspace will use it."
            ),
            {
                "type": "input",
                "block_id": KEY_BLOCK,
                "label": {"type": "plain_text", "text": "Retell API key"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": KEY_ACTION,
                    "max_length": MAX_KEY_LENGTH,
                    "placeholder": {"type": "plain_text", "text": "key_…"},
                },
                "hint": {
                    "type": "plain_text",
                    "text": "Retell dashboard → Settings → API Keys. It is stored encrypted.",
                },
            },
        ],
    }


def typed_key(view: dict[str, Any]) -> str:
    """The key typed in a submitted connect modal ("" when there is none)."""
    values = (view.get("state") or {}).get("values") or {}
    block = values.get(KEY_BLOCK) if isinstance(values, dict) else None
    field = block.get(KEY_ACTION) if isinstance(block, dict) else None
    value = field.get("value") if isinstance(field, dict) else None
    return value.strip() if isinstance(value, str) else ""


KEY_REFUSED = (
    "Retell did not accept this key (401). Copy it again from Retell's dashboard "
    "(Settings → API Keys); nothing was stored."
)
KEY_UNCHECKED = (
    "Retell could not be reached to check the key, so it was not stored. Try again in a minute."
)
KEY_MALFORMED = "That does not look like a Retell API key: paste the key alone, without spaces."
ONLY_ADMINS = "Only a workspace admin can connect or remove this workspace's Retell account."
NO_ENCRYPTION = (
    "This deployment cannot store Retell keys: its operator has not set ENCRYPTION_KEYS."
)
