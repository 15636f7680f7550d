"""Requests as Slack sends them to an app: signed headers, slash commands and button presses.

Pure builders, used by `SlackUser`, by tests that craft hostile variants, and by benchmarks.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from urllib.parse import urlencode

from slack_sdk.signature import SignatureVerifier

from bot.testing.slack.records import BOT_USER_ID, JSONDict


def signed_headers(
    signing_secret: str, body: str, *, timestamp: int | None = None
) -> dict[str, str]:
    """The headers Slack signs a request with (v0 HMAC-SHA256 of ``v0:<ts>:<body>``)."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    signature = SignatureVerifier(signing_secret).generate_signature(timestamp=stamp, body=body)
    if signature is None:  # only if slack_sdk changes its contract; compute it ourselves
        digest = hmac.new(
            signing_secret.encode(), f"v0:{stamp}:{body}".encode(), hashlib.sha256
        ).hexdigest()
        signature = f"v0={digest}"
    return {"X-Slack-Signature": signature, "X-Slack-Request-Timestamp": stamp}


def new_trigger_id() -> str:
    """A fresh trigger id, unique per user action as Slack's are (retries repeat it)."""
    return f"{int(time.time())}.{secrets.randbelow(10**12)}.{secrets.token_hex(16)}"


def slash_command_payload(
    *,
    command: str = "/retell-test",
    text: str,
    user_id: str,
    channel_id: str,
    team_id: str,
    response_url: str,
    trigger_id: str | None = None,
    user_name: str | None = None,
    channel_name: str | None = None,
    team_domain: str = "fake-team",
    api_app_id: str = "A0001",
    enterprise_id: str | None = None,
    enterprise_install: bool = False,
) -> dict[str, str]:
    """The fields of a slash command, as Socket Mode delivers them (form fields over HTTP).

    `enterprise_id`: the user's Enterprise Grid org; `enterprise_install`: the app is
    installed org-wide there (Slack then says so in every request)."""
    org = {"enterprise_id": enterprise_id, "enterprise_name": "Org"} if enterprise_id else {}
    return {
        **org,
        "token": "verification-token-unused",
        "team_id": team_id,
        "team_domain": team_domain,
        "channel_id": channel_id,
        "channel_name": channel_name or channel_id.lower(),
        "user_id": user_id,
        "user_name": user_name or user_id.lower(),
        "command": command,
        "text": text,
        "api_app_id": api_app_id,
        "is_enterprise_install": "true" if enterprise_install else "false",
        "response_url": response_url,
        "trigger_id": trigger_id or new_trigger_id(),
    }


def slash_command_body(
    *,
    command: str = "/retell-test",
    text: str,
    user_id: str,
    channel_id: str,
    team_id: str,
    response_url: str,
    trigger_id: str | None = None,
    user_name: str | None = None,
    channel_name: str | None = None,
    team_domain: str = "fake-team",
    api_app_id: str = "A0001",
) -> str:
    """A slash command as Slack POSTs it over HTTP: form-encoded."""
    return urlencode(
        slash_command_payload(
            command=command,
            text=text,
            user_id=user_id,
            channel_id=channel_id,
            team_id=team_id,
            response_url=response_url,
            trigger_id=trigger_id,
            user_name=user_name,
            channel_name=channel_name,
            team_domain=team_domain,
            api_app_id=api_app_id,
        )
    )


def block_action_payload(
    *,
    action_id: str,
    value: str,
    user_id: str,
    channel_id: str,
    team_id: str,
    message_ts: str,
    response_url: str,
    block_id: str = "actions",
    message: JSONDict | None = None,
    user_name: str | None = None,
    api_app_id: str = "A0001",
    trigger_id: str | None = None,
) -> JSONDict:
    """A ``block_actions`` interaction for one button press, as Slack builds it.

    `message` is the message the button sat on (Slack includes it in full); a stub is used
    when it is not given.
    """
    now = f"{time.time():.6f}"
    return {
        "type": "block_actions",
        "user": {"id": user_id, "username": user_name or user_id.lower(), "team_id": team_id},
        "api_app_id": api_app_id,
        "token": "verification-token-unused",
        "container": {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel_id,
            "is_ephemeral": False,
        },
        "trigger_id": trigger_id or new_trigger_id(),
        "team": {"id": team_id, "domain": "fake-team"},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel_id, "name": channel_id.lower()},
        "message": message
        or {"type": "message", "ts": message_ts, "user": BOT_USER_ID, "text": "", "blocks": []},
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [
            {
                "action_id": action_id,
                "block_id": block_id,
                "value": value,
                "type": "button",
                "action_ts": now,
            }
        ],
    }


def block_action_body(
    *,
    action_id: str,
    value: str,
    user_id: str,
    channel_id: str,
    team_id: str,
    message_ts: str,
    response_url: str,
    block_id: str = "actions",
    message: JSONDict | None = None,
) -> str:
    """A button press as Slack POSTs it over HTTP: ``payload=<urlencoded JSON>``."""
    payload = block_action_payload(
        action_id=action_id,
        value=value,
        user_id=user_id,
        channel_id=channel_id,
        team_id=team_id,
        message_ts=message_ts,
        response_url=response_url,
        block_id=block_id,
        message=message,
    )
    return urlencode({"payload": json.dumps(payload)})
