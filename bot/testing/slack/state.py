"""The state every part of `FakeSlack` shares, and the lookups they all use.

The mixins that make up `FakeSlack` (faults, observation, Socket Mode, the API families, the
response_url and control endpoints) derive from `SlackState`, so each knows the attributes'
types and the shared channel, member and message rules without importing one another.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter, deque
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from bot.testing.slack.blockkit import MAX_MESSAGE_BLOCKS, MAX_MESSAGE_TEXT, block_kit_violation
from bot.testing.slack.params import param_blocks, param_str
from bot.testing.slack.records import (
    BOT_USER_ID,
    ApiCall,
    Channel,
    Ephemeral,
    Fault,
    JSONDict,
    Message,
    MessageVersion,
    RateLimit,
    Rejection,
    ResponseUrlTarget,
    SlackApiFailure,
    Upload,
    User,
    Workspace,
)
from bot.testing.slack.tiers import SlackTiers, TierMeter


class SlackState:
    """The workspace, its records and the rules every Web API family applies.

    Unknown ``C…``/``D…`` channels and unknown users are created on first use so tests only
    register what they care about; pass ``strict_channels``/``strict_users`` to get Slack's
    ``channel_not_found``/``user_not_found`` instead. ``rate_limits=SlackTiers()`` enforces
    Slack's rate-limit tiers (see `bot.testing.slack.tiers`); without it nothing is limited.
    """

    def __init__(
        self,
        *,
        bot_token: str = "xoxb-test",
        signing_secret: str = "secret",
        team_id: str = "T0001",
        app_token: str = "xapp-test",
        app_id: str = "A0001",
        strict_channels: bool = False,
        strict_users: bool = False,
        rate_limits: SlackTiers | None = None,
    ) -> None:
        self.bot_token = bot_token
        self.signing_secret = signing_secret
        self.team_id = team_id
        self.app_token = app_token
        self.app_id = app_id
        self.team_domain = "fake-team"
        self.strict_channels = strict_channels
        self.strict_users = strict_users

        self.messages: list[Message] = []
        self.ephemerals: list[Ephemeral] = []
        self.responses: dict[str, list[JSONDict]] = {}
        self.calls: list[ApiCall] = []
        self.rejections: list[Rejection] = []
        self.uploads: dict[str, Upload] = {}
        self.views: dict[str, JSONDict] = {}
        self.home_views: dict[str, JSONDict] = {}
        self.socket_envelopes: list[JSONDict] = []
        self.socket_acks: list[JSONDict] = []
        self.channels: dict[str, Channel] = {}
        self.users: dict[str, User] = {}
        self.add_user(BOT_USER_ID, "retell-bot", tz="UTC")
        self.users[BOT_USER_ID].is_bot = True

        self._last_ts_micros = 0
        self._ids = itertools.count(1)
        self._response_urls: dict[str, ResponseUrlTarget] = {}
        self._faults: dict[str, deque[Fault]] = {}
        self._rate_limits: dict[str, RateLimit] = {}
        self._rate_limited: Counter[str] = Counter()
        self._tiers: TierMeter | None = None if rate_limits is None else TierMeter(rate_limits)
        self._sockets: list[web.WebSocketResponse] = []
        self._pending_acks: dict[str, asyncio.Future[JSONDict]] = {}
        self._changed = asyncio.Condition()

        # Installing in more workspaces (`bot.testing.slack.oauth`).
        self.client_id = "1111.2222"
        self.client_secret = "fake-client-secret"
        self.workspaces: dict[str, Workspace] = {}
        self.rotating = False  # Slack's token rotation: tokens expire after `token_seconds`
        self.token_seconds = 12 * 3600.0
        self.redirect_url: str | None = None  # the app's registered redirect URL
        self.next_installer = "U_INSTALLER"
        self._codes: dict[str, str] = {}  # code -> team_id
        self._token_serial = itertools.count(1)
        self._calling_team: str | None = None  # whose token the call being answered carries
        self._token_teams: dict[str, str] = {}  # token -> team_id, an index `team_of_token` checks
        # The stand-in's own workspace: installed, with the fixed token tests already use.
        home = Workspace(team_id, "Fake Team")
        home.tokens[bot_token] = None
        self.workspaces[team_id] = home
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` once started."""
        if self._base_url is None:
            raise RuntimeError("FakeSlack is not started; call start() or use 'async with'")
        return self._base_url

    @property
    def api_url(self) -> str:
        """What to pass as ``AsyncWebClient(base_url=...)``."""
        return self.base_url + "/api/"

    @property
    def socket_url(self) -> str:
        """The websocket URL apps.connections.open hands out."""
        return "ws" + self.base_url.removeprefix("http") + "/socket-mode"

    def add_user(
        self,
        user_id: str,
        name: str,
        tz: str = "Europe/Berlin",
        *,
        real_name: str = "",
        is_admin: bool = False,
        is_owner: bool = False,
    ) -> User:
        """Register a member; `tz` is an IANA zone name as Slack reports it; `is_admin` and
        `is_owner` make a workspace admin or owner (as users.info shows them)."""
        ZoneInfo(tz)  # fail early on a typo
        user = User(
            id=user_id,
            name=name,
            tz=tz,
            real_name=real_name,
            is_admin=is_admin,
            is_owner=is_owner,
        )
        self.users[user_id] = user
        return user

    def add_channel(
        self,
        channel_id: str,
        name: str,
        *,
        member: bool = True,
        archived: bool = False,
        private: bool = False,
    ) -> Channel:
        """Register a conversation with the bot's membership and its state."""
        channel = Channel(
            id=channel_id,
            name=name,
            member=member,
            archived=archived,
            private=private,
            is_im=channel_id.startswith("D"),
        )
        self.channels[channel_id] = channel
        return channel

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _next_ts(self) -> str:
        micros = max(int(time.time() * 1_000_000), self._last_ts_micros + 1)
        self._last_ts_micros = micros
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):08d}"

    def _channel(self, channel_id: str | None) -> Channel:
        """Look a conversation up, creating it on first use unless strict_channels."""
        if not channel_id:
            raise SlackApiFailure("channel_not_found", "no channel given")
        if channel_id[0] in "UW":  # posting to a user id goes to the DM with them
            channel_id = "D" + channel_id[1:]
        channel = self.channels.get(channel_id)
        if channel is not None:
            return channel
        if self.strict_channels or channel_id[0] not in "CDG":
            raise SlackApiFailure("channel_not_found", f"unknown channel {channel_id}")
        return self.add_channel(channel_id, channel_id.lower(), private=channel_id[0] == "G")

    def _writable_channel(self, channel_id: str | None) -> Channel:
        channel = self._channel(channel_id)
        if channel.private and not channel.member:
            raise SlackApiFailure("channel_not_found", f"{channel.id} is private, bot not in it")
        if channel.archived:
            raise SlackApiFailure("is_archived", f"{channel.id} is archived")
        if not channel.member:
            raise SlackApiFailure("not_in_channel", f"bot is not a member of {channel.id}")
        return channel

    def _user(self, user_id: str) -> User:
        user = self.users.get(user_id)
        if user is not None:
            return user
        if self.strict_users:
            raise SlackApiFailure("user_not_found", f"unknown user {user_id}")
        return self.add_user(user_id, user_id.lower())

    def _message_content(
        self, params: Mapping[str, Any], *, max_blocks: int = MAX_MESSAGE_BLOCKS
    ) -> tuple[str, list[JSONDict]]:
        text = param_str(params, "text")
        blocks = param_blocks(params)
        if not text and not blocks and not params.get("attachments"):
            raise SlackApiFailure("no_text", "neither text nor blocks")
        problem = block_kit_violation(None, blocks, max_blocks=max_blocks)
        if problem:
            raise SlackApiFailure("invalid_blocks", problem)
        if text is not None and len(text) > MAX_MESSAGE_TEXT:
            raise SlackApiFailure("msg_too_long", f"text: {len(text)} > {MAX_MESSAGE_TEXT}")
        return text or "", blocks

    def _post(
        self, channel: Channel, text: str, blocks: list[JSONDict], thread_ts: str | None
    ) -> Message:
        now = time.time()
        message = Message(
            channel=channel.id,
            ts=self._next_ts(),
            text=text,
            blocks=blocks,
            thread_ts=thread_ts or None,
            posted_at=now,
            updated_at=now,
        )
        self.messages.append(message)
        return message

    def _edit(self, message: Message, text: str, blocks: list[JSONDict]) -> None:
        message.updates.append(MessageVersion(message.text, message.blocks, message.updated_at))
        message.text, message.blocks = text, blocks
        message.updated_at = time.time()

    def _find_message(self, channel: str, ts: str | None) -> Message:
        for message in self.messages:
            if message.channel == channel and message.ts == ts and not message.deleted:
                return message
        raise SlackApiFailure("message_not_found", f"no message {ts} in {channel}")
