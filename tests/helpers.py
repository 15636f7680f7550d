"""What several test modules share: ids, the bot as a started application, reading what the
Slack fake saw, sample runs for the renderers and the parser's vocabulary.

Fixtures live in `conftest.py`; everything else shared lives here, so that no test module
imports another.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from bot.application import Application
from bot.commands import (
    CommandError,
    HelpCommand,
    ReportCommand,
    RunCommand,
    ScheduleAddCommand,
    ScheduleCommand,
    StatusCommand,
    WatchCommand,
)
from bot.settings import Settings, load_settings
from bot.suite import Engine
from bot.testing.retell import FakeRetell
from bot.testing.slack import FakeSlack, Message

CHANNEL = "C0001"
USER = "U0001"
ENGINE = "llm_abc"
FLOW = "conversation_flow_xyz"

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
BATCH = "test_case_batch_job_x"
PINNED_ENGINE = Engine("retell-llm", "llm_abc", 3)


def settings_for(
    slack: FakeSlack, retell: FakeRetell, database_url: str, **overrides: Any
) -> Settings:
    values: dict[str, Any] = {
        "slack_bot_token": "xoxb-test",
        "slack_signing_secret": "secret",
        "slack_api_url": slack.api_url,
        "retell_api_key": "key_test",
        "retell_base_url": retell.base_url,
        "retell_timeout_seconds": 5.0,
        "database_url": database_url,
        "poll_initial_seconds": 0.05,
        "poll_max_seconds": 0.2,
        "follow_up_lease_seconds": 1.0,
        # Time runs 200 times faster than with the defaults (polls 0.05 s instead of 10 s), and
        # so do the budgets that are per minute.
        "retell_requests_per_minute": 60.0 * 200,
        "slack_edits_per_minute": 45.0 * 200,
        "slack_posts_per_minute": 60.0 * 200,
        "_env_file": None,
    }
    values.update(overrides)
    return load_settings(**values)


@dataclass
class RunningBot:
    app: Application
    url: str

    @property
    def events_url(self) -> str:
        return f"{self.url}/slack/events"


BotFactory = Callable[..., AbstractAsyncContextManager[RunningBot]]


def top_level(slack: FakeSlack, channel: str = CHANNEL) -> list[Message]:
    return [m for m in slack.channel_messages(channel) if not m.is_reply]


def results(slack: FakeSlack, channel: str = CHANNEL) -> list[Message]:
    """Status messages that have become final results (their fallback text has the counts)."""
    return [m for m in top_level(slack, channel) if " total" in m.text]


def button_value(message: Message, action_id: str) -> str | None:
    for block in message.blocks:
        for element in block.get("elements", []):
            if isinstance(element, dict) and element.get("action_id") == action_id:
                return str(element.get("value"))
    return None


def visible_text(message: Mapping[str, Any]) -> str:
    """The fallback text plus every text object of the blocks, one per line."""
    parts = [str(message.get("text") or "")]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") in ("mrkdwn", "plain_text") and isinstance(node.get("text"), str):
                parts.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(message.get("blocks") or [])
    return "\n".join(parts)


@dataclass
class SchedulerCrashes:
    """How many of the crashes `crash_scheduler` set up are still to come."""

    left: int


def crash_scheduler(app: Application, times: int, error: Exception) -> SchedulerCrashes:
    """Make APScheduler's job loop fail `times` times where it meets its data store.

    That query is what fails on a dropped connection and ends the scheduler; no wire carries
    the failure, so it is injected at the library's seam.
    """
    data_store = app.scheduler.data_store
    acquire = data_store.acquire_jobs
    crashes = SchedulerCrashes(times)

    async def failing(*args: Any, **kwargs: Any) -> Any:
        if crashes.left:
            crashes.left -= 1
            raise error
        return await acquire(*args, **kwargs)

    data_store.acquire_jobs = failing  # type: ignore[method-assign]
    return crashes


@dataclass
class FakeRun:
    """A stand-in for `bot.store.Run` with the attributes `RunView` reads."""

    id: int = 7
    channel_id: str = "C123"
    user_id: str = "U123"
    engine: Engine = PINNED_ENGINE
    case_count: int = 40
    case_ids: list[str] = field(default_factory=list)
    state: str = "running"
    batch_id: str | None = BATCH
    error: str | None = None
    passed: int = 10
    failed: int = 1
    errored: int = 1
    total: int = 40
    created_at: datetime = T0
    started_at: datetime | None = T0
    finished_at: datetime | None = None
    duration: timedelta | None = timedelta(minutes=4, seconds=12)
    source: str = "command"
    rerun_of: int | None = None
    label: str | None = None
    scheduled_for: datetime | None = None
    min_pass: float | None = None

    @property
    def completed(self) -> int:
        return self.passed + self.failed + self.errored


def done(**changes: Any) -> FakeRun:
    base = FakeRun(state="complete", passed=38, failed=1, errored=1, finished_at=T0)
    return replace(base, **changes)


COMMAND_TYPES = (
    HelpCommand,
    RunCommand,
    StatusCommand,
    WatchCommand,
    ScheduleAddCommand,
    ScheduleCommand,
    ReportCommand,
)


def assert_safe(error: CommandError) -> None:
    """Nothing the user typed can become a mention or a link, and the message stays short."""
    assert "<" not in error.message and ">" not in error.message
    assert 0 < len(error.message) < 1500
    assert error.usage


FRAGMENTS = [
    " ",
    ",",
    "\n",
    "\u00a0",
    "\u200b",
    "\x00",
    "\x7f",
    "\ud800",
    "run",
    "help",
    "status",
    "watch",
    "schedule",
    "add",
    "list",
    "remove",
    "report",
    "all",
    "llm_abc",
    "conversation_flow_x",
    "@",
    "@3",
    "@-1",
    "agent_1",
    "tc_1",
    "name=",
    "notify=",
    "mention=",
    "failures",
    "=",
    '"',
    "'",
    "\u201c",
    "\u201d",
    "\u2018",
    "\u2019",
    "\u201e",
    "\u00ab",
    "\u00bb",
    "<",
    ">",
    "<@U1|b c>",
    "<!channel>",
    "<#C1>",
    "<!subteam^S1>",
    "<http://x|y>",
    "&amp;",
    "&lt;",
    "&gt;",
    "&",
    "`",
    "0",
    "365",
    "9" * 30,
    "é",
    "🎉",
    "\u0663",
    "http://",
    "*",
    "x" * 130,
]


# -- installing in more workspaces (SPEC §10) ---------------------------------------------------


def browser(bot_url: str) -> aiohttp.ClientSession:
    """A browser that keeps Bolt's state cookie: it is set for 127.0.0.1 (which aiohttp's
    jar refuses unless `unsafe`) and `Secure` (the bot is served over HTTPS in production)."""
    jar = aiohttp.CookieJar(unsafe=True, treat_as_secure_origin=bot_url)
    return aiohttp.ClientSession(cookie_jar=jar)


async def install_link(session: aiohttp.ClientSession, bot_url: str) -> str:
    """Open the install page and return its "Add to Slack" link."""
    async with session.get(f"{bot_url}/slack/install") as page:
        assert page.status == 200
        found = re.search(r'href="([^"]*oauth/v2/authorize[^"]*)"', await page.text())
    assert found, "the install page links to Slack's authorize page"
    return html.unescape(found.group(1))


async def install(bot_url: str, slack: FakeSlack, team_id: str) -> tuple[int, str]:
    """Install the app in `team_id` the way a person does: install page, Slack, back."""
    if team_id not in slack.workspaces:
        slack.add_workspace(team_id, f"Team {team_id[-4:]}")
    async with browser(bot_url) as session:
        link = await install_link(session, bot_url)
        async with session.get(f"{link}&team={team_id}") as done:
            return done.status, await done.text()
