"""A local stand-in for Slack, so the bot can be exercised without a workspace or credentials.

`FakeSlack` serves the Web API methods the bot uses over real HTTP (aiohttp), answers like Slack
does (HTTP 200 with ``{"ok": false, "error": ...}``), enforces the channel rules and Block Kit
limits that make real Slack reject messages, records everything for assertions, injects faults,
serves ``response_url`` endpoints and a Socket Mode websocket. The rest of the module plays the
*user's* side: signed slash-command and button-press requests to the bot (`SlackUser`).

Point the bot at it with ``AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)``.
Run it on its own with ``python -m bot.testing.slack --port 0`` (prints ``READY <url>``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import math
import secrets
import signal
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, NamedTuple, Self
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import aiohttp
from aiohttp import WSMsgType, web
from aiohttp.typedefs import Handler as RequestHandler
from slack_sdk.signature import SignatureVerifier

JSONDict = dict[str, Any]

BOT_USER_ID = "UBOT"
BOT_ID = "BBOT"
MAX_RESPONSE_URL_USES = 5  # Slack allows five posts per response_url.

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

# Fallback display names for the zones teams usually sit in; others show their abbreviation.
TZ_LABELS = {
    "Europe/Berlin": ("Central European Time", "Central European Summer Time"),
    "Europe/Paris": ("Central European Time", "Central European Summer Time"),
    "Europe/London": ("Greenwich Mean Time", "British Summer Time"),
    "America/New_York": ("Eastern Standard Time", "Eastern Daylight Time"),
    "America/Los_Angeles": ("Pacific Standard Time", "Pacific Daylight Time"),
    "UTC": ("Coordinated Universal Time", "Coordinated Universal Time"),
}


# --------------------------------------------------------------------------------------------
# Recorded state


@dataclass
class MessageVersion:
    """An earlier version of a message, kept so tests can see how it evolved."""

    text: str
    blocks: list[JSONDict]
    at: float


@dataclass
class Message:
    """A message as the channel shows it; `updates` holds its previous versions, oldest first."""

    channel: str
    ts: str
    text: str
    blocks: list[JSONDict]
    thread_ts: str | None = None
    user: str = BOT_USER_ID
    posted_at: float = 0.0
    updated_at: float = 0.0
    updates: list[MessageVersion] = field(default_factory=list)
    deleted: bool = False
    metadata: JSONDict | None = None  # {"event_type": …, "event_payload": {…}} as posted

    @property
    def update_count(self) -> int:
        """How many times the message was edited in place."""
        return len(self.updates)

    @property
    def is_reply(self) -> bool:
        """True for thread replies (not for the thread's parent)."""
        return self.thread_ts is not None and self.thread_ts != self.ts

    def to_json(self) -> JSONDict:
        """The message as plain JSON, for the control endpoints."""
        data = asdict(self)
        data["update_count"] = self.update_count
        return data


@dataclass
class Ephemeral:
    """A message only `user` saw (chat.postEphemeral)."""

    channel: str
    user: str
    text: str
    blocks: list[JSONDict]
    message_ts: str
    thread_ts: str | None
    at: float


@dataclass
class Upload:
    """A file uploaded through the v2 flow (getUploadURLExternal, POST, completeUploadExternal)."""

    file_id: str
    filename: str
    length: int
    data: bytes | None = None
    title: str | None = None
    channel_id: str | None = None
    thread_ts: str | None = None
    initial_comment: str | None = None
    completed: bool = False
    completed_at: float | None = None  # time.time() when completeUploadExternal shared it


@dataclass
class Channel:
    """A conversation and the bot's standing in it."""

    id: str
    name: str
    member: bool = True
    archived: bool = False
    private: bool = False
    is_im: bool = False

    def to_json(self) -> JSONDict:
        """The conversation object as conversations.info returns it."""
        return {
            "id": self.id,
            "name": self.name,
            "is_channel": not self.private and not self.is_im,
            "is_group": self.private,
            "is_im": self.is_im,
            "is_private": self.private or self.is_im,
            "is_archived": self.archived,
            "is_member": self.member,
        }


@dataclass
class User:
    """A workspace member; the time zone matters to the bot's schedules."""

    id: str
    name: str
    tz: str = "Europe/Berlin"
    real_name: str = ""
    is_bot: bool = False

    def to_json(self, team_id: str) -> JSONDict:
        """The user object as users.info returns it, with the current offset of `tz`."""
        now = datetime.now(ZoneInfo(self.tz))
        offset = now.utcoffset()
        dst = bool(now.dst())
        labels = TZ_LABELS.get(self.tz)
        label = labels[1 if dst else 0] if labels else (now.tzname() or self.tz)
        real_name = self.real_name or self.name
        return {
            "id": self.id,
            "team_id": team_id,
            "name": self.name,
            "real_name": real_name,
            "deleted": False,
            "is_bot": self.is_bot,
            "tz": self.tz,
            "tz_label": label,
            "tz_offset": int(offset.total_seconds()) if offset is not None else 0,
            "profile": {"real_name": real_name, "display_name": self.name},
        }


class ApiCall(NamedTuple):
    """One request the fake answered (or refused), in arrival order."""

    method: str
    params: JSONDict
    ok: bool
    at: float


@dataclass(frozen=True)
class Rejection:
    """Why a request got ``ok: false``; `reason` says which block or rule broke, for humans."""

    method: str
    error: str
    reason: str


@dataclass(frozen=True)
class _Fault:
    """A queued failure for the next call of a method."""

    error: str | None = None
    status: int | None = None
    retry_after: float | None = None
    drop: bool = False


class SlackApiFailure(Exception):
    """Raised inside the fake to answer ``{"ok": false, "error": error}``."""

    def __init__(
        self, error: str, reason: str = "", status: int = 200, *, retry_after: int | None = None
    ) -> None:
        super().__init__(error)
        self.error = error
        self.reason = reason or error
        self.status = status
        self.retry_after = retry_after  # seconds, sent as the Retry-After header


@dataclass
class _RateLimit:
    """A sliding-window allowance for one method: `per_window` calls per `window_seconds`."""

    per_window: int
    window_seconds: float
    accepted: dict[str, deque[float]] = field(default_factory=dict)  # team id -> call times


@dataclass
class _ResponseUrl:
    """Where a response_url leads: the message a button sat on, if any."""

    channel: str | None
    message_ts: str | None
    uses: int = 0


# --------------------------------------------------------------------------------------------
# Block Kit validation


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


# --------------------------------------------------------------------------------------------
# Request parameters


def _param_str(params: Mapping[str, Any], name: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _param_json(params: Mapping[str, Any], name: str, default: Any) -> Any:
    """Form bodies carry JSON fields (blocks, view, files) as strings; JSON bodies as values."""
    value = params.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as error:
            raise SlackApiFailure(f"invalid_{name}_format", f"{name}: {error}") from error
    return value


def _param_blocks(params: Mapping[str, Any]) -> list[JSONDict]:
    blocks = _param_json(params, "blocks", [])
    if not isinstance(blocks, list):
        raise SlackApiFailure("invalid_blocks_format", "blocks: must be a list")
    return blocks


def _param_bool(params: Mapping[str, Any], name: str) -> bool:
    value = params.get(name)
    if isinstance(value, str):
        return value.lower() in {"1", "true"}
    return bool(value)


# --------------------------------------------------------------------------------------------
# The fake server

Handler = Callable[[JSONDict], JSONDict]


class FakeSlack:
    """Slack's Web API, response_url and Socket Mode endpoints on 127.0.0.1, with a memory.

    Unknown ``C…``/``D…`` channels and unknown users are created on first use so tests only
    register what they care about; pass ``strict_channels``/``strict_users`` to get Slack's
    ``channel_not_found``/``user_not_found`` instead.
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
        self._response_urls: dict[str, _ResponseUrl] = {}
        self._faults: dict[str, deque[_Fault]] = {}
        self._rate_limits: dict[str, _RateLimit] = {}
        self._rate_limited: Counter[str] = Counter()
        self._sockets: list[web.WebSocketResponse] = []
        self._pending_acks: dict[str, asyncio.Future[JSONDict]] = {}
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None
        self._methods: dict[str, Handler] = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.delete": self._chat_delete,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.getPermalink": self._chat_get_permalink,
            "users.info": self._users_info,
            "conversations.join": self._conversations_join,
            "conversations.info": self._conversations_info,
            "conversations.open": self._conversations_open,
            "conversations.history": self._conversations_history,
            "conversations.replies": self._conversations_replies,
            "views.open": self._views_open,
            "views.publish": self._views_publish,
            "views.update": self._views_update,
            "apps.connections.open": self._apps_connections_open,
            "files.getUploadURLExternal": self._files_get_upload_url,
            "files.completeUploadExternal": self._files_complete_upload,
        }

    # ---- lifecycle ---------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on host:port (0 picks a free port) and return the base URL."""
        app = web.Application(middlewares=[self._notify_after_request])
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_post("/response/{token}", self._handle_response_url)
        app.router.add_post("/upload/{file_id}", self._handle_upload)
        app.router.add_get("/socket-mode", self._handle_socket)
        app.router.add_get("/_control/stats", self._control_stats)
        app.router.add_get("/_control/messages", self._control_messages)
        app.router.add_get("/_control/files/{file_id}", self._control_file)
        app.router.add_get("/_control/responses", self._control_responses)
        app.router.add_post("/_control/response-url", self._control_new_response_url)
        app.router.add_post("/_control/fail-next", self._control_fail_next)
        app.on_shutdown.append(self._close_sockets)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        if ":" in bound_host:  # IPv6 literal
            bound_host = f"[{bound_host}]"
        self._runner = runner
        self._base_url = f"http://{bound_host}:{bound_port}"
        return self._base_url

    async def stop(self) -> None:
        """Close Socket Mode connections and stop listening."""
        self._fail_pending_acks("FakeSlack stopped")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

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

    # ---- workspace setup ---------------------------------------------------------------

    def add_user(
        self, user_id: str, name: str, tz: str = "Europe/Berlin", *, real_name: str = ""
    ) -> User:
        """Register a member; `tz` is an IANA zone name as Slack reports it."""
        ZoneInfo(tz)  # fail early on a typo
        user = User(id=user_id, name=name, tz=tz, real_name=real_name)
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

    def new_response_url(self, *, channel: str | None = None, message_ts: str | None = None) -> str:
        """Mint a response_url; with `message_ts`, replace_original/delete_original act on it."""
        token = uuid.uuid4().hex
        self._response_urls[token] = _ResponseUrl(channel=channel, message_ts=message_ts)
        self.responses[token] = []
        return f"{self.base_url}/response/{token}"

    # ---- fault injection ---------------------------------------------------------------

    def fail_next(
        self,
        method: str,
        *,
        error: str | None = None,
        status: int | None = None,
        times: int = 1,
        retry_after: float | None = None,
    ) -> None:
        """Make the next `times` calls of `method` ("*" for any) fail.

        With `status` the answer is that HTTP status (429 sends Retry-After, default 1 s);
        without it, HTTP 200 and ``{"ok": false, "error": error}``. `retry_after` alone
        implies 429. Pseudo-methods: "response_url" and "upload".
        """
        if status is None and retry_after is not None:
            status = 429
        if status == 429 and retry_after is None:
            retry_after = 1.0
        if error is None:
            error = "ratelimited" if status == 429 else "fatal_error"
        fault = _Fault(error=error, status=status, retry_after=retry_after)
        self._faults.setdefault(method, deque()).extend([fault] * times)

    def drop_next(self, method: str, times: int = 1) -> None:
        """Close the connection on the next `times` calls of `method` without answering."""
        self._faults.setdefault(method, deque()).extend([_Fault(drop=True)] * times)

    def clear_faults(self, method: str | None = None) -> int:
        """Forget the faults still queued for `method` (None: for every method): Slack recovers.

        Returns how many were dropped.
        """
        methods = list(self._faults) if method is None else [method]
        return sum(len(self._faults.pop(name, ())) for name in methods)

    def limit_rate(self, method: str, *, per_window: int, window_seconds: float) -> None:
        """Rate-limit `method` the way Slack's tiers do (chat.update: Tier 3, ~50/minute).

        Per team (the team of the token), a call beyond `per_window` accepted calls within the
        last `window_seconds` (a sliding window) is refused with HTTP 429, a `Retry-After`
        header (whole seconds until the oldest accepted call leaves the window, at least 1)
        and ``{"ok": false, "error": "ratelimited"}``. Refused calls do not use up the
        allowance; calls with a bad token are refused as such first. Calling it again
        replaces the limit; `rate_limited` keeps counting.
        """
        if per_window < 1:
            raise ValueError("per_window must be at least 1")
        if window_seconds <= 0:
            raise ValueError("window_seconds must be positive")
        self._rate_limits[method] = _RateLimit(per_window, window_seconds)

    def rate_limited(self, method: str) -> int:
        """How many calls of `method` the limit set by `limit_rate` has refused so far."""
        return self._rate_limited[method]

    def _spend_rate_slot(self, method: str, team_id: str) -> None:
        """Count a call against `method`'s limit, or refuse it with 429 if the window is full."""
        limit = self._rate_limits.get(method)
        if limit is None:
            return
        now = time.monotonic()
        accepted = limit.accepted.setdefault(team_id, deque())
        while accepted and accepted[0] <= now - limit.window_seconds:
            accepted.popleft()
        if len(accepted) < limit.per_window:
            accepted.append(now)
            return
        self._rate_limited[method] += 1
        wait = max(1, math.ceil(accepted[0] + limit.window_seconds - now))
        reason = f"more than {limit.per_window} calls in {limit.window_seconds:g}s for {team_id}"
        raise SlackApiFailure("ratelimited", reason, 429, retry_after=wait)

    def _take_fault(self, method: str) -> _Fault | None:
        for key in (method, "*"):
            queue = self._faults.get(key)
            if queue:
                return queue.popleft()
        return None

    # ---- assertions --------------------------------------------------------------------

    def message(self, channel: str, ts: str) -> Message:
        """The message at (channel, ts); KeyError listing what exists if there is none."""
        for message in self.messages:
            if message.channel == channel and message.ts == ts:
                return message
        known = [(m.channel, m.ts) for m in self.messages]
        raise KeyError(f"no message {ts} in {channel}; messages: {known}")

    def channel_messages(self, channel: str, *, include_replies: bool = False) -> list[Message]:
        """What the channel shows, oldest first: top-level messages (and replies if asked)."""
        return [
            m
            for m in self.messages
            if m.channel == channel and not m.deleted and (include_replies or not m.is_reply)
        ]

    def thread(self, channel: str, ts: str) -> list[Message]:
        """The replies under the message `ts`, oldest first (the parent is not included)."""
        return [
            m
            for m in self.messages
            if m.channel == channel and m.thread_ts == ts and m.ts != ts and not m.deleted
        ]

    def count(self, method: str) -> int:
        """How many requests `method` received, failed ones included."""
        return sum(1 for call in self.calls if call.method == method)

    def responses_to(self, response_url: str) -> list[JSONDict]:
        """The bodies posted to one response_url, in order."""
        token = response_url.rstrip("/").rsplit("/", 1)[-1]
        return self.responses.get(token, [])

    @property
    def socket_connected(self) -> bool:
        """True while a Socket Mode client holds the websocket."""
        return any(not ws.closed for ws in self._sockets)

    async def wait_socket_connected(self, timeout: float = 5.0) -> None:
        """Wait until a Socket Mode client has connected."""
        await self.wait_for(lambda: self.socket_connected, timeout)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until `predicate()` holds; it is re-checked after every request the fake handles.

        Raises TimeoutError naming the predicate and the last calls, so a failure says what
        the bot did instead.
        """
        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(predicate)
        except TimeoutError:
            name = getattr(predicate, "__qualname__", repr(predicate))
            recent = [(c.method, c.ok) for c in self.calls[-8:]]
            raise TimeoutError(
                f"condition {name} still false after {timeout}s; "
                f"{len(self.calls)} calls, last: {recent}; {len(self.messages)} messages"
            ) from None

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def stats(self) -> JSONDict:
        """Counts per method and per-message timing (for benchmarks)."""
        counts: dict[str, int] = {}
        failures: dict[str, int] = {}
        for call in self.calls:
            counts[call.method] = counts.get(call.method, 0) + 1
            if not call.ok:
                failures[call.method] = failures.get(call.method, 0) + 1
        return {
            "calls": len(self.calls),
            "counts": counts,
            "failures": failures,
            "messages": [
                {
                    "channel": m.channel,
                    "ts": m.ts,
                    "thread_ts": m.thread_ts,
                    "first_post_at": m.posted_at,
                    "final_update_at": m.updated_at,
                    "update_count": m.update_count,
                }
                for m in self.messages
            ],
            "uploads": [
                {
                    "file_id": u.file_id,
                    "filename": u.filename,
                    "size": len(u.data) if u.data is not None else 0,
                    "channel_id": u.channel_id,
                    "thread_ts": u.thread_ts,
                    "completed": u.completed,
                    "completed_at": u.completed_at,
                }
                for u in self.uploads.values()
            ],
        }

    # ---- socket mode -------------------------------------------------------------------

    async def socket_send(
        self,
        envelope_type: str,
        payload: JSONDict,
        *,
        timeout: float = 5.0,
        accepts_response_payload: bool = True,
    ) -> JSONDict:
        """Deliver an envelope to the connected Socket Mode client and return its ack.

        `envelope_type` is "slash_commands", "interactive" or "events_api"; for slash commands
        `payload` is the command's fields as a dict (see `slash_command_payload`).
        """
        await self.wait_for(lambda: self.socket_connected, timeout)
        socket = next(ws for ws in reversed(self._sockets) if not ws.closed)
        envelope_id = str(uuid.uuid4())
        envelope = {
            "envelope_id": envelope_id,
            "type": envelope_type,
            "payload": payload,
            "accepts_response_payload": accepts_response_payload,
            "retry_attempt": 0,
            "retry_reason": "",
        }
        ack: asyncio.Future[JSONDict] = asyncio.get_running_loop().create_future()
        self._pending_acks[envelope_id] = ack
        self.socket_envelopes.append(envelope)
        try:
            await socket.send_json(envelope)
            async with asyncio.timeout(timeout):
                return await ack
        except TimeoutError:
            raise TimeoutError(
                f"no ack for {envelope_type} envelope {envelope_id} within {timeout}s"
            ) from None
        finally:
            self._pending_acks.pop(envelope_id, None)

    async def _handle_socket(self, request: web.Request) -> web.StreamResponse:
        socket = web.WebSocketResponse(autoping=True)
        await socket.prepare(request)
        self._sockets.append(socket)
        self.calls.append(ApiCall("socket_mode", dict(request.query), True, time.time()))
        await socket.send_json(
            {
                "type": "hello",
                "num_connections": sum(1 for ws in self._sockets if not ws.closed),
                "debug_info": {
                    "host": "fake-slack",
                    "build_number": 1,
                    "approximate_connection_time": 18060,
                },
                "connection_info": {"app_id": self.app_id},
            }
        )
        await self._notify()
        try:
            async for frame in socket:
                if frame.type == WSMsgType.TEXT:
                    await self._receive_ack(frame.data)
        finally:
            self._sockets.remove(socket)
            if not self.socket_connected:
                self._fail_pending_acks("the Socket Mode client disconnected before acking")
        return socket

    def _fail_pending_acks(self, reason: str) -> None:
        """Let socket_send fail fast instead of waiting out its timeout."""
        for pending in self._pending_acks.values():
            if not pending.done():
                pending.set_exception(ConnectionError(reason))

    async def _receive_ack(self, raw: str) -> None:
        try:
            ack = json.loads(raw)
        except json.JSONDecodeError:
            return
        if not isinstance(ack, dict) or "envelope_id" not in ack:
            return
        self.socket_acks.append(ack)
        pending = self._pending_acks.get(ack["envelope_id"])
        if pending is not None and not pending.done():
            pending.set_result(ack)
        await self._notify()

    async def _close_sockets(self, _app: web.Application) -> None:
        for ws in list(self._sockets):
            await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"server shutdown")

    # ---- HTTP plumbing -----------------------------------------------------------------

    @web.middleware
    async def _notify_after_request(
        self,
        request: web.Request,
        handler: RequestHandler,
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        finally:
            await self._notify()

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        try:
            params, token = await _read_params(request)
        except SlackApiFailure as failure:
            return self._refuse(method, {}, failure)
        fault = self._take_fault(method)
        if fault is not None:
            return self._apply_fault(request, method, params, fault)
        try:
            handler = self._methods.get(method)
            if handler is None:
                raise SlackApiFailure("unknown_method", f"{method} is not served by FakeSlack")
            self._check_token(method, token)
            self._spend_rate_slot(method, self.team_id)  # the one team every token belongs to
            answer = handler(params)
        except SlackApiFailure as failure:
            return self._refuse(method, params, failure)
        self.calls.append(ApiCall(method, params, True, time.time()))
        return web.json_response({"ok": True, **answer})

    def _refuse(self, method: str, params: JSONDict, failure: SlackApiFailure) -> web.Response:
        self.calls.append(ApiCall(method, params, False, time.time()))
        self.rejections.append(Rejection(method, failure.error, failure.reason))
        body: JSONDict = {"ok": False, "error": failure.error}
        if failure.reason != failure.error:
            body["response_metadata"] = {"messages": [f"[ERROR] {failure.reason}"]}
        headers = {} if failure.retry_after is None else {"Retry-After": str(failure.retry_after)}
        return web.json_response(body, status=failure.status, headers=headers)

    def _apply_fault(
        self, request: web.Request, method: str, params: JSONDict, fault: _Fault
    ) -> web.Response:
        self.calls.append(ApiCall(method, params, False, time.time()))
        if fault.drop:
            self.rejections.append(Rejection(method, "dropped", "connection closed on purpose"))
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=500)
        error = fault.error or "fatal_error"
        self.rejections.append(Rejection(method, error, f"injected (status {fault.status})"))
        headers = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = str(math.ceil(fault.retry_after))
        return web.json_response(
            {"ok": False, "error": error}, status=fault.status or 200, headers=headers
        )

    def _check_token(self, method: str, token: str | None) -> None:
        wants_app_token = method == "apps.connections.open"
        expected = self.app_token if wants_app_token else self.bot_token
        other = self.bot_token if wants_app_token else self.app_token
        if not token:
            raise SlackApiFailure("not_authed", "no token in Authorization header or body")
        if token == other:
            raise SlackApiFailure("not_allowed_token_type", f"{method} needs another token type")
        if not hmac.compare_digest(token, expected):
            raise SlackApiFailure("invalid_auth", "token does not match")

    # ---- channels and messages ---------------------------------------------------------

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

    def _message_content(
        self, params: Mapping[str, Any], *, max_blocks: int = MAX_MESSAGE_BLOCKS
    ) -> tuple[str, list[JSONDict]]:
        text = _param_str(params, "text")
        blocks = _param_blocks(params)
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

    # ---- Web API methods ---------------------------------------------------------------

    def _auth_test(self, _params: JSONDict) -> JSONDict:
        return {
            "url": f"https://{self.team_domain}.slack.com/",
            "team": "Fake Team",
            "user": "retell-bot",
            "team_id": self.team_id,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    def _chat_post_message(self, params: JSONDict) -> JSONDict:
        channel = self._writable_channel(_param_str(params, "channel"))
        text, blocks = self._message_content(params)
        metadata = _param_json(params, "metadata", None)
        if metadata is not None and not (
            isinstance(metadata, dict)
            and isinstance(metadata.get("event_type"), str)
            and isinstance(metadata.get("event_payload"), dict)
        ):
            raise SlackApiFailure("invalid_metadata_format", "event_type and event_payload")
        message = self._post(channel, text, blocks, _param_str(params, "thread_ts"))
        message.metadata = metadata
        return {"channel": channel.id, "ts": message.ts, "message": _message_json(message)}

    def _chat_update(self, params: JSONDict) -> JSONDict:
        channel = self._writable_channel(_param_str(params, "channel"))
        message = self._find_message(channel.id, _param_str(params, "ts"))
        text, blocks = self._message_content(params)
        self._edit(message, text, blocks)
        return {
            "channel": channel.id,
            "ts": message.ts,
            "text": message.text,
            "message": _message_json(message),
        }

    def _chat_delete(self, params: JSONDict) -> JSONDict:
        channel = self._writable_channel(_param_str(params, "channel"))
        message = self._find_message(channel.id, _param_str(params, "ts"))
        message.deleted = True
        return {"channel": channel.id, "ts": message.ts}

    def _chat_post_ephemeral(self, params: JSONDict) -> JSONDict:
        channel = self._writable_channel(_param_str(params, "channel"))
        user = _param_str(params, "user")
        if not user:
            raise SlackApiFailure("user_not_found", "no user given")
        self._user(user)
        text, blocks = self._message_content(params)
        ts = self._next_ts()
        self.ephemerals.append(
            Ephemeral(
                channel=channel.id,
                user=user,
                text=text,
                blocks=blocks,
                message_ts=ts,
                thread_ts=_param_str(params, "thread_ts"),
                at=time.time(),
            )
        )
        return {"message_ts": ts}

    def _chat_get_permalink(self, params: JSONDict) -> JSONDict:
        channel = self._channel(_param_str(params, "channel"))
        message = self._find_message(channel.id, _param_str(params, "message_ts"))
        compact_ts = message.ts.replace(".", "")
        return {
            "channel": channel.id,
            "permalink": f"https://{self.team_domain}.slack.com/archives/{channel.id}/p{compact_ts}",
        }

    def _user(self, user_id: str) -> User:
        user = self.users.get(user_id)
        if user is not None:
            return user
        if self.strict_users:
            raise SlackApiFailure("user_not_found", f"unknown user {user_id}")
        return self.add_user(user_id, user_id.lower())

    def _users_info(self, params: JSONDict) -> JSONDict:
        user_id = _param_str(params, "user")
        if not user_id:
            raise SlackApiFailure("user_not_found", "no user given")
        return {"user": self._user(user_id).to_json(self.team_id)}

    def _conversations_join(self, params: JSONDict) -> JSONDict:
        channel = self._channel(_param_str(params, "channel"))
        if channel.private or channel.is_im:
            raise SlackApiFailure(
                "method_not_supported_for_channel_type", f"{channel.id} is not public"
            )
        if channel.archived:
            raise SlackApiFailure("is_archived", f"{channel.id} is archived")
        channel.member = True
        return {"channel": channel.to_json()}

    def _conversations_info(self, params: JSONDict) -> JSONDict:
        channel = self._channel(_param_str(params, "channel"))
        if channel.private and not channel.member:
            raise SlackApiFailure("channel_not_found", f"{channel.id} is private, bot not in it")
        return {"channel": channel.to_json()}

    def _conversations_history(self, params: JSONDict) -> JSONDict:
        """A channel's top-level messages, newest first, from `oldest` on (one page).

        Thread replies are left out, as Slack does; message metadata is shown only with
        `include_all_metadata`. The bot must be a member of a private channel.
        """
        channel = self._channel(_param_str(params, "channel"))
        if channel.private and not channel.member:
            raise SlackApiFailure("channel_not_found", f"{channel.id} is private, bot not in it")
        oldest = float(_param_str(params, "oldest") or 0)
        limit = min(max(int(_param_str(params, "limit") or 100), 1), 999)
        with_metadata = _param_bool(params, "include_all_metadata")
        found = [
            message
            for message in reversed(self.messages)
            if message.channel == channel.id
            and not message.deleted
            and not message.is_reply
            and float(message.ts) >= oldest
        ]
        cursor = _param_str(params, "cursor") or ""
        return _page_of_messages(found, limit=limit, with_metadata=with_metadata, cursor=cursor)

    def _conversations_replies(self, params: JSONDict) -> JSONDict:
        """A thread: its parent message first, then the replies, oldest first (one page).

        As Slack: `ts` must be a message of the channel (`thread_not_found` otherwise), and
        message metadata is shown only with `include_all_metadata`.
        """
        channel = self._channel(_param_str(params, "channel"))
        if channel.private and not channel.member:
            raise SlackApiFailure("channel_not_found", f"{channel.id} is private, bot not in it")
        ts = _param_str(params, "ts")
        limit = min(max(int(_param_str(params, "limit") or 100), 1), 1000)
        with_metadata = _param_bool(params, "include_all_metadata")
        thread = [
            message
            for message in self.messages
            if message.channel == channel.id
            and not message.deleted
            and (message.ts == ts or message.thread_ts == ts)
        ]
        if not any(message.ts == ts for message in thread):
            raise SlackApiFailure("thread_not_found", f"no message {ts} in {channel.id}")
        thread.sort(key=lambda message: (message.ts != ts, float(message.ts)))
        cursor = _param_str(params, "cursor") or ""
        return _page_of_messages(thread, limit=limit, with_metadata=with_metadata, cursor=cursor)

    def _conversations_open(self, params: JSONDict) -> JSONDict:
        users = (_param_str(params, "users") or "").split(",")
        if len(users) != 1 or not users[0]:
            raise SlackApiFailure("users_list_not_supplied", "give exactly one user")
        self._user(users[0])
        return {"channel": self._channel(users[0]).to_json()}

    def _stored_view(self, params: JSONDict) -> JSONDict:
        view = _param_json(params, "view", None)
        if not isinstance(view, dict):
            raise SlackApiFailure("invalid_arguments", "view: must be an object")
        blocks = view.get("blocks", [])
        if not isinstance(blocks, list):
            raise SlackApiFailure("invalid_arguments", "view.blocks: must be a list")
        problem = block_kit_violation(None, blocks, max_blocks=MAX_VIEW_BLOCKS)
        if problem:
            raise SlackApiFailure("invalid_arguments", problem)
        return view

    def _views_open(self, params: JSONDict) -> JSONDict:
        if not _param_str(params, "trigger_id"):
            raise SlackApiFailure("invalid_arguments", "trigger_id is required")
        view = {**self._stored_view(params), "id": self._new_id("V")}
        self.views[view["id"]] = view
        return {"view": view}

    def _views_publish(self, params: JSONDict) -> JSONDict:
        user_id = _param_str(params, "user_id")
        if not user_id:
            raise SlackApiFailure("invalid_arguments", "user_id is required")
        self._user(user_id)
        view = {**self._stored_view(params), "id": self._new_id("V")}
        self.views[view["id"]] = view
        self.home_views[user_id] = view
        return {"view": view}

    def _views_update(self, params: JSONDict) -> JSONDict:
        view_id = _param_str(params, "view_id")
        external_id = _param_str(params, "external_id")
        current = next(
            (
                v
                for v in self.views.values()
                if v["id"] == view_id or (external_id and v.get("external_id") == external_id)
            ),
            None,
        )
        if current is None:
            raise SlackApiFailure("not_found", f"no view {view_id or external_id}")
        view = {**self._stored_view(params), "id": current["id"]}
        self.views[view["id"]] = view
        for user_id, home in self.home_views.items():
            if home["id"] == view["id"]:
                self.home_views[user_id] = view
        return {"view": view}

    def _apps_connections_open(self, _params: JSONDict) -> JSONDict:
        ticket = uuid.uuid4()
        return {"url": f"{self.socket_url}?ticket={ticket}&app_id={self.app_id}"}

    def _files_get_upload_url(self, params: JSONDict) -> JSONDict:
        filename = _param_str(params, "filename")
        length = _param_str(params, "length")
        if not filename or not length or not length.isdigit():
            raise SlackApiFailure("invalid_arguments", "filename and a numeric length required")
        file_id = self._new_id("F")
        self.uploads[file_id] = Upload(file_id=file_id, filename=filename, length=int(length))
        return {"upload_url": f"{self.base_url}/upload/{file_id}", "file_id": file_id}

    def _files_complete_upload(self, params: JSONDict) -> JSONDict:
        entries = _param_json(params, "files", None)
        if not isinstance(entries, list) or not entries:
            raise SlackApiFailure("invalid_arguments", "files: must be a non-empty list")
        channel_id = _param_str(params, "channel_id") or _param_str(params, "channels")
        channel_id = channel_id.split(",")[0] if channel_id else None
        if channel_id:
            channel_id = self._writable_channel(channel_id).id
        completed = []
        for entry in entries:
            upload = self.uploads.get(entry.get("id", "")) if isinstance(entry, dict) else None
            if upload is None:
                raise SlackApiFailure("file_not_found", f"unknown file {entry!r}")
            if upload.data is None:
                raise SlackApiFailure("file_upload_not_completed", f"{upload.file_id} not sent")
            upload.title = entry.get("title") or upload.filename
            upload.channel_id = channel_id
            upload.thread_ts = _param_str(params, "thread_ts")
            upload.initial_comment = _param_str(params, "initial_comment")
            upload.completed = True
            upload.completed_at = time.time()
            completed.append(
                {
                    "id": upload.file_id,
                    "name": upload.filename,
                    "title": upload.title,
                    "size": len(upload.data),
                    "channels": [channel_id] if channel_id else [],
                }
            )
        return {"files": completed}

    # ---- response_url and upload endpoints --------------------------------------------

    async def _handle_upload(self, request: web.Request) -> web.StreamResponse:
        file_id = request.match_info["file_id"]
        data = await request.read()
        params: JSONDict = {"file_id": file_id, "bytes": len(data)}
        fault = self._take_fault("upload")
        if fault is not None:
            return self._apply_fault(request, "upload", params, fault)
        upload = self.uploads.get(file_id)
        if upload is None:
            self.calls.append(ApiCall("upload", params, False, time.time()))
            return web.Response(status=404, text="file_not_found")
        upload.data = data
        self.calls.append(ApiCall("upload", params, True, time.time()))
        return web.Response(text=f"OK - {len(data)}")

    async def _handle_response_url(self, request: web.Request) -> web.StreamResponse:
        token = request.match_info["token"]
        try:
            body = await request.json()
        except json.JSONDecodeError:
            body = None
        params: JSONDict = body if isinstance(body, dict) else {}
        fault = self._take_fault("response_url")
        if fault is not None:
            return self._apply_fault(request, "response_url", params, fault)
        target = self._response_urls.setdefault(token, _ResponseUrl(None, None))
        try:
            if not isinstance(body, dict):
                raise SlackApiFailure("invalid_payload", "body must be a JSON object", 400)
            if target.uses >= MAX_RESPONSE_URL_USES:
                raise SlackApiFailure("used_url", "a response_url takes five posts", 404)
            self._apply_response(target, body)
        except SlackApiFailure as failure:
            if failure.status == 200:  # response_url errors are HTTP errors, unlike the Web API
                failure.status = 400
            return self._refuse("response_url", params, failure)
        target.uses += 1
        self.responses.setdefault(token, []).append(body)
        self.calls.append(ApiCall("response_url", params, True, time.time()))
        return web.json_response({"ok": True})

    def _apply_response(self, target: _ResponseUrl, body: JSONDict) -> None:
        """Make a respond() body visible the way Slack would (replace, delete, in_channel)."""
        if _param_bool(body, "delete_original"):
            if target.channel and target.message_ts:
                self._find_message(target.channel, target.message_ts).deleted = True
            return
        text, blocks = self._message_content(body)
        if _param_bool(body, "replace_original") and target.channel and target.message_ts:
            self._edit(self._find_message(target.channel, target.message_ts), text, blocks)
        elif body.get("response_type") == "in_channel" and target.channel:
            self._post(self._channel(target.channel), text, blocks, _param_str(body, "thread_ts"))

    # ---- control endpoints (standalone use) -------------------------------------------

    async def _control_stats(self, _request: web.Request) -> web.StreamResponse:
        return web.json_response(self.stats())

    async def _control_file(self, request: web.Request) -> web.StreamResponse:
        """The bytes of an uploaded file, as sent by the bot."""
        upload = self.uploads.get(request.match_info["file_id"])
        if upload is None or upload.data is None:
            return web.Response(status=404, text="file_not_found")
        return web.Response(body=upload.data, content_type="application/octet-stream")

    async def _control_messages(self, _request: web.Request) -> web.StreamResponse:
        return web.json_response([m.to_json() for m in self.messages])

    async def _control_responses(self, _request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {"responses": self.responses, "ephemerals": [asdict(e) for e in self.ephemerals]}
        )

    async def _control_new_response_url(self, request: web.Request) -> web.StreamResponse:
        body = await request.json() if request.can_read_body else {}
        url = self.new_response_url(channel=body.get("channel"), message_ts=body.get("message_ts"))
        return web.json_response({"url": url})

    async def _control_fail_next(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if body.get("drop"):
            self.drop_next(body["method"], times=int(body.get("times", 1)))
        else:
            self.fail_next(
                body["method"],
                error=body.get("error"),
                status=body.get("status"),
                times=int(body.get("times", 1)),
                retry_after=body.get("retry_after"),
            )
        return web.json_response({"ok": True})


async def _read_params(request: web.Request) -> tuple[JSONDict, str | None]:
    """Merge query, form and JSON parameters as Slack does; return them and the token.

    slack_sdk sends methods with blocks as JSON bodies, others as query parameters, and the
    token in ``Authorization: Bearer``; older clients put ``token`` in the form.
    """
    params: JSONDict = dict(request.query)
    if request.can_read_body:
        if request.content_type == "application/json":
            try:
                body = await request.json()
            except json.JSONDecodeError as error:
                raise SlackApiFailure("invalid_json", str(error)) from error
            if not isinstance(body, dict):
                raise SlackApiFailure("invalid_json", "body must be a JSON object")
            params.update(body)
        elif request.content_type in {"application/x-www-form-urlencoded", "multipart/form-data"}:
            form = await request.post()
            for key, value in form.items():
                params[key] = value.file.read() if isinstance(value, web.FileField) else value
    token = params.pop("token", None)
    authorization = request.headers.get("Authorization", "")
    if authorization.startswith("Bearer "):
        token = authorization.removeprefix("Bearer ").strip()
    return params, token if isinstance(token, str) else None


# --------------------------------------------------------------------------------------------
# The user's side: signed requests to the bot


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


def _page_of_messages(
    messages: list[Message], *, limit: int, with_metadata: bool, cursor: str = ""
) -> JSONDict:
    """One page of a conversations.* listing, as Slack answers it (metadata only if asked).

    The cursor is opaque to callers, as Slack's is; here it is the offset of the next page.
    """
    start = int(cursor) if cursor.isdigit() else 0
    shown = []
    for message in messages[start : start + limit]:
        body = _message_json(message)
        if not with_metadata:
            body.pop("metadata", None)
        shown.append(body)
    more = len(messages) > start + limit
    return {
        "messages": shown,
        "has_more": more,
        "response_metadata": {"next_cursor": str(start + limit) if more else ""},
    }


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
) -> dict[str, str]:
    """The fields of a slash command, as Socket Mode delivers them (form fields over HTTP)."""
    return {
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
        "is_enterprise_install": "false",
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
    ) -> None:
        self.slack = slack
        self.signing_secret = signing_secret or (slack.signing_secret if slack else "secret")
        self.user_id = user_id
        self.user_name = user_name
        self.team_id = team_id or (slack.team_id if slack else "T0001")
        self.channel_id = channel_id
        self.api_app_id = api_app_id or (slack.app_id if slack else "A0001")
        self._session = session

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
                message = _message_json(pressed)
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


def _message_json(message: Message) -> JSONDict:
    """A message as the Web API and interaction payloads show it."""
    body: JSONDict = {
        "type": "message",
        "user": message.user,
        "bot_id": BOT_ID,
        "ts": message.ts,
        "text": message.text,
        "blocks": message.blocks,
    }
    if message.thread_ts:
        body["thread_ts"] = message.thread_ts
    if message.metadata is not None:
        body["metadata"] = message.metadata
    return body


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


# --------------------------------------------------------------------------------------------
# Standalone process


async def _serve(args: argparse.Namespace) -> None:
    fake = FakeSlack(
        bot_token=args.bot_token,
        signing_secret=args.signing_secret,
        team_id=args.team_id,
        app_token=args.app_token,
        strict_channels=args.strict_channels,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    url = await fake.start(args.host, args.port)
    print(f"READY {url}", flush=True)
    try:
        await stop.wait()
    finally:
        await fake.stop()


def main(argv: list[str] | None = None) -> None:
    """Run the fake on its own, for the demo and benchmarks, until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m bot.testing.slack", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--bot-token", default="xoxb-test")
    parser.add_argument("--app-token", default="xapp-test")
    parser.add_argument("--signing-secret", default="secret")
    parser.add_argument("--team-id", default="T0001")
    parser.add_argument("--strict-channels", action="store_true")
    asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
