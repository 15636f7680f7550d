"""What the stand-in Slack remembers and answers with: messages, conversations, members, calls.

Plain records, so tests can assert on them and the control endpoints can serve them as JSON.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

JSONDict = dict[str, Any]


BOT_USER_ID = "UBOT"


BOT_ID = "BBOT"


MAX_RESPONSE_URL_USES = 5  # Slack allows five posts per response_url.


# Fallback display names for the zones teams usually sit in; others show their abbreviation.
TZ_LABELS = {
    "Europe/Berlin": ("Central European Time", "Central European Summer Time"),
    "Europe/Paris": ("Central European Time", "Central European Summer Time"),
    "Europe/London": ("Greenwich Mean Time", "British Summer Time"),
    "America/New_York": ("Eastern Standard Time", "Eastern Daylight Time"),
    "America/Los_Angeles": ("Pacific Standard Time", "Pacific Daylight Time"),
    "UTC": ("Coordinated Universal Time", "Coordinated Universal Time"),
}


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
    # A workspace admin or owner (users.info `is_admin`, `is_owner`, `is_primary_owner`).
    is_admin: bool = False
    is_owner: bool = False
    is_primary_owner: bool = False

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
            "is_admin": self.is_admin or self.is_owner or self.is_primary_owner,
            "is_owner": self.is_owner or self.is_primary_owner,
            "is_primary_owner": self.is_primary_owner,
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
    team_id: str | None = None  # the workspace whose token it carried


@dataclass
class Workspace:
    """A workspace the app is installed in (or was, until `uninstall`)."""

    team_id: str
    name: str
    enterprise_id: str | None = None
    org_wide: bool = False
    installed: bool = True
    tokens: dict[str, float | None] = field(default_factory=dict)  # token -> expires at
    refresh_tokens: set[str] = field(default_factory=set)  # unused ones
    refreshes: int = 0  # how many times a refresh token was swapped
    revoked: set[str] = field(default_factory=set)  # tokens an uninstall revoked


@dataclass(frozen=True)
class Rejection:
    """Why a request got ``ok: false``; `reason` says which block or rule broke, for humans."""

    method: str
    error: str
    reason: str


@dataclass(frozen=True)
class Fault:
    """A queued failure for the next call of a method."""

    error: str | None = None
    status: int | None = None
    retry_after: float | None = None
    drop: bool = False  # close the connection instead of answering
    carried_out: bool = False  # with `drop`: do the call first, then lose its answer


class SlackApiFailure(Exception):
    """Raised inside the fake to answer ``{"ok": false, "error": error}``."""

    def __init__(
        self,
        error: str,
        reason: str = "",
        status: int = 200,
        *,
        retry_after: int | str | None = None,
    ) -> None:
        super().__init__(error)
        self.error = error
        self.reason = reason or error
        self.status = status
        self.retry_after = retry_after  # seconds, sent as the Retry-After header


@dataclass
class RateLimit:
    """A sliding-window allowance for one method: `per_window` calls per `window_seconds`."""

    per_window: int
    window_seconds: float
    accepted: dict[str, deque[float]] = field(default_factory=dict)  # team id -> call times


@dataclass
class ResponseUrlTarget:
    """Where a response_url leads: the message a button sat on, if any."""

    channel: str | None
    message_ts: str | None
    uses: int = 0


def message_json(message: Message) -> JSONDict:
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
