"""The user's side: a workspace member who types slash commands and presses buttons, signed."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp

from bot.testing.slack.records import JSONDict, message_json
from bot.testing.slack.requests import block_action_payload, signed_headers, slash_command_payload
from bot.testing.slack.server import FakeSlack


@dataclass(frozen=True)
class BotReply:
    """What the bot answered a signed request with (its HTTP ack)."""

    status: int
    text: str
    headers: Mapping[str, str]
    response_url: str

    def json(self) -> Any:
        """The ack body as JSON (None when the bot acked with an empty body)."""
        return json.loads(self.text) if self.text.strip() else None


class SlackUser:
    """A workspace member who types slash commands and presses buttons, signed like Slack.

    With `slack`, response_urls are minted on that FakeSlack (so respond() lands there) and a
    button press carries the pressed message as Slack would.
    """

    def __init__(
        self,
        *,
        slack: FakeSlack | None = None,
        signing_secret: str | None = None,
        user_id: str = "U0001",
        user_name: str = "alice",
        team_id: str | None = None,
        channel_id: str = "C0001",
        api_app_id: str | None = None,
        session: aiohttp.ClientSession | None = None,
        enterprise_id: str | None = None,
        enterprise_install: bool = False,
    ) -> None:
        self.slack = slack
        self.signing_secret = signing_secret or (slack.signing_secret if slack else "secret")
        self.user_id = user_id
        self.user_name = user_name
        self.team_id = team_id or (slack.team_id if slack else "T0001")
        self.channel_id = channel_id
        self.api_app_id = api_app_id or (slack.app_id if slack else "A0001")
        self._session = session
        self.enterprise_id = enterprise_id  # an Enterprise Grid org's member
        self.enterprise_install = enterprise_install  # the app is installed org-wide

    def _response_url(self, given: str | None, channel: str, message_ts: str | None = None) -> str:
        if given:
            return given
        if self.slack is None:
            raise ValueError("pass response_url, or give SlackUser a FakeSlack to mint one")
        return self.slack.new_response_url(channel=channel, message_ts=message_ts)

    def command_payload(
        self,
        text: str,
        *,
        command: str = "/retell-test",
        channel_id: str | None = None,
        response_url: str | None = None,
        trigger_id: str | None = None,
    ) -> dict[str, str]:
        """This user's slash command as a dict (Socket Mode form)."""
        channel = channel_id or self.channel_id
        return slash_command_payload(
            command=command,
            text=text,
            user_id=self.user_id,
            user_name=self.user_name,
            channel_id=channel,
            team_id=self.team_id,
            api_app_id=self.api_app_id,
            response_url=self._response_url(response_url, channel),
            trigger_id=trigger_id,
            enterprise_id=self.enterprise_id,
            enterprise_install=self.enterprise_install,
        )

    def press_payload(
        self,
        *,
        action_id: str,
        value: str,
        message_ts: str,
        channel_id: str | None = None,
        response_url: str | None = None,
    ) -> JSONDict:
        """This user's button press as a block_actions payload dict."""
        channel = channel_id or self.channel_id
        message: JSONDict | None = None
        block_id = "actions"
        if self.slack is not None:
            with contextlib.suppress(KeyError):
                pressed = self.slack.message(channel, message_ts)
                message = message_json(pressed)
                block_id = _block_id_of(pressed.blocks, action_id) or block_id
        return block_action_payload(
            action_id=action_id,
            value=value,
            user_id=self.user_id,
            user_name=self.user_name,
            channel_id=channel,
            team_id=self.team_id,
            message_ts=message_ts,
            response_url=self._response_url(response_url, channel, message_ts),
            block_id=block_id,
            message=message,
            api_app_id=self.api_app_id,
        )

    async def command(
        self,
        bot_url: str,
        text: str,
        *,
        command: str = "/retell-test",
        channel_id: str | None = None,
        response_url: str | None = None,
        trigger_id: str | None = None,
    ) -> BotReply:
        """Type ``<command> <text>``: POST it signed to the bot's /slack/events URL.

        `trigger_id` is Slack's key of the request (fresh when not given); passing one lets a
        caller find the run it started (`runs.request_key`)."""
        payload = self.command_payload(
            text,
            command=command,
            channel_id=channel_id,
            response_url=response_url,
            trigger_id=trigger_id,
        )
        return await self.post_signed(bot_url, urlencode(payload), payload["response_url"])

    async def press(
        self,
        bot_url: str,
        *,
        action_id: str,
        value: str,
        message_ts: str,
        channel_id: str | None = None,
        response_url: str | None = None,
    ) -> BotReply:
        """Press a button on the message `message_ts`: POST the signed interaction."""
        payload = self.press_payload(
            action_id=action_id,
            value=value,
            message_ts=message_ts,
            channel_id=channel_id,
            response_url=response_url,
        )
        body = urlencode({"payload": json.dumps(payload)})
        return await self.post_signed(bot_url, body, payload["response_url"])

    async def event(self, bot_url: str, event: JSONDict) -> BotReply:
        """Deliver an Events API event of this user's workspace (`app_home_opened`,
        `app_uninstalled`, ...), signed, as Slack POSTs it."""
        body = json.dumps(
            {
                "type": "event_callback",
                "token": "unused",
                "team_id": self.team_id,
                "enterprise_id": self.enterprise_id,
                "is_enterprise_install": self.enterprise_install,
                "api_app_id": self.api_app_id,
                "event": {"event_ts": f"{time.time():.6f}", **event},
                "event_id": f"Ev{time.time_ns()}",
                "event_time": int(time.time()),
            }
        )
        headers = {
            "Content-Type": "application/json",
            **signed_headers(self.signing_secret, body),
        }
        if self._session is not None:
            return await _post(self._session, bot_url, body, headers, "")
        async with aiohttp.ClientSession() as session:
            return await _post(session, bot_url, body, headers, "")

    async def socket_command(self, text: str, **options: Any) -> JSONDict:
        """Type a slash command over Socket Mode; returns the client's ack envelope."""
        if self.slack is None:
            raise ValueError("socket_command needs SlackUser(slack=FakeSlack)")
        return await self.slack.socket_send("slash_commands", self.command_payload(text, **options))

    async def socket_press(self, **options: Any) -> JSONDict:
        """Press a button over Socket Mode; returns the client's ack envelope."""
        if self.slack is None:
            raise ValueError("socket_press needs SlackUser(slack=FakeSlack)")
        return await self.slack.socket_send("interactive", self.press_payload(**options))

    async def post_signed(
        self, bot_url: str, body: str, response_url: str = "", *, timestamp: int | None = None
    ) -> BotReply:
        """POST a form body to the bot with Slack's signature headers."""
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            **signed_headers(self.signing_secret, body, timestamp=timestamp),
        }
        if self._session is not None:
            return await _post(self._session, bot_url, body, headers, response_url)
        async with aiohttp.ClientSession() as session:
            return await _post(session, bot_url, body, headers, response_url)


async def _post(
    session: aiohttp.ClientSession,
    url: str,
    body: str,
    headers: dict[str, str],
    response_url: str,
) -> BotReply:
    async with session.post(url, data=body.encode(), headers=headers) as response:
        return BotReply(
            status=response.status,
            text=await response.text(),
            headers=dict(response.headers),
            response_url=response_url,
        )


def _block_id_of(blocks: list[JSONDict], action_id: str) -> str | None:
    """The block_id of the block holding the element `action_id` (Slack reports it)."""
    for block in blocks:
        elements = list(block.get("elements", []))
        if "accessory" in block:
            elements.append(block["accessory"])
        if any(isinstance(e, dict) and e.get("action_id") == action_id for e in elements):
            block_id = block.get("block_id")
            return block_id if isinstance(block_id, str) else None
    return None
