"""One invocation's settings, terminal and clients (`Session`), and the checks of its request made
before anything is asked of Retell.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bot import console
from bot.commands import (
    MAX_REPEATS,
)
from bot.settings import CliSettings

if TYPE_CHECKING:
    from bot.retell import RetellGateway
    from bot.slackapi import SlackGateway
from bot.ci.outcome import ExitCode, Request, Stop


@dataclass
class Session:
    """One command's settings, output and clients, closed at the end."""

    settings: CliSettings
    terminal: console.Terminal
    gateway: RetellGateway
    slack: SlackGateway | None = None
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    def fail(self, code: ExitCode, text: str) -> Stop:
        self.terminal.error(text)
        return Stop(code)


def check_request(request: Request, settings: CliSettings) -> str | None:
    """What is wrong with the request before anything is asked of Retell, or None."""
    if not 1 <= request.repeat <= MAX_REPEATS:
        return f"--repeat takes 1 to {MAX_REPEATS} runs; got {request.repeat}"
    if request.repeat > 1 and request.command == "watch":
        return "--repeat is for `run` and `compare`; `watch` follows one existing batch"
    if request.min_pass is not None and not 0 <= request.min_pass <= 100:
        return f"--min-pass-rate is a percentage from 0 to 100; got {request.min_pass:g}"
    if request.poll_seconds is not None and not request.poll_seconds > 0:
        return "--poll-seconds must be more than 0"
    if request.timeout_minutes is not None and not request.timeout_minutes > 0:
        return "--timeout-minutes must be more than 0"
    if request.post_to is not None:
        if not request.post_to.strip():
            return "--post-to needs a channel id (e.g. C0123456789)"
        if settings.slack_bot_token is None or not settings.slack_bot_token.get_secret_value():
            return "--post-to needs SLACK_BOT_TOKEN (the bot's xoxb- token) in the environment"
    if request.junit is not None:
        folder = request.junit.parent
        if request.junit.is_dir():
            return f"--junit {request.junit} is a directory; give a file name"
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return f"--junit: cannot create {folder}: {exc.strerror}"
        if not os.access(folder, os.W_OK):
            return f"--junit: {folder} is not writable"
    return None
