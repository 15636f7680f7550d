"""Helpers for tests that run `retell-bot` as child processes (test_process, test_replicas).

The bot is started by `BotProcess` (bot/testing/process.py) against the in-process stand-ins;
these helpers give it a test configuration, attach its log to failures, wait on conditions in
another process, run the CLI, and check what the channel was shown.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from bot.testing.process import BotProcess, bot_environment
from bot.testing.retell import FakeRetell
from bot.testing.slack import FakeSlack

from .helpers import CHANNEL, USER, top_level

SECRET_NAMES = ("SLACK_", "RETELL_", "DATABASE_URL")

# For tests whose `database_url` must be PostgreSQL (replicas), or both backends explicitly.
on_postgres = pytest.mark.parametrize(
    "database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
on_both_backends = pytest.mark.parametrize(
    "database_url",
    [pytest.param("sqlite"), pytest.param("postgresql", marks=pytest.mark.postgres)],
    indirect=True,
)
RETELL_BOT = Path(sys.executable).with_name("retell-bot")


def process_environment(
    slack: FakeSlack, retell: FakeRetell, database_url: str, **extra: str
) -> dict[str, str]:
    """A bot on the stand-ins with short follow-up intervals and a one-second claim lease.

    `extra` settings (lower-case names, string values) override these.
    """
    settings = {
        "poll_initial_seconds": "0.1",
        "poll_max_seconds": "0.3",
        "follow_up_lease_seconds": "1",
        **extra,
    }
    return bot_environment(
        slack_api_url=slack.api_url,
        retell_base_url=retell.base_url,
        database_url=database_url,
        **settings,
    )


@asynccontextmanager
async def running(environment: dict[str, str], log_path: Path) -> AsyncIterator[BotProcess]:
    """A started bot process, stopped at the end; its log is attached to any failure."""
    process = BotProcess(environment, log_path=log_path)
    try:
        await process.start()
        yield process
    except BaseException as exc:
        exc.add_note(log_tail(log_path))
        raise
    finally:
        await process.stop()


def log_tail(log_path: Path, size: int = 4000) -> str:
    text = log_path.read_text() if log_path.exists() else "(no log)"
    return f"--- {log_path.name} (tail) ---\n{text[-size:]}"


def log_problems(log_path: Path, *, until_shutdown: bool = False) -> list[str]:
    """ERROR, Traceback and "database is locked" lines (before "shutting down", if asked)."""
    lines = log_path.read_text().splitlines()
    if until_shutdown:
        ends = [n for n, line in enumerate(lines) if "shutting down" in line]
        lines = lines[: ends[0]] if ends else lines
    return [
        line
        for line in lines
        if " ERROR " in line or "Traceback" in line or "database is locked" in line
    ]


async def eventually(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll a condition on another process (there is nothing to subscribe to)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{predicate} still false after {timeout}s")
        await asyncio.sleep(0.02)


def scrubbed_environment(**values: str) -> dict[str, str]:
    """This environment without any bot configuration, plus `values`."""
    base = {k: v for k, v in os.environ.items() if not k.upper().startswith(SECRET_NAMES)}
    return {**base, **values}


async def run_cli(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 60.0
) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *args,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


def assert_reported_once(slack: FakeSlack, batch_id: str, passed: int, total: int) -> None:
    """One status message, turned into the result in place, and one mention under it."""
    [status] = top_level(slack)
    assert status.update_count >= 1, "the status message is edited in place, not re-posted"
    for phrase in (f"{passed} passed", "0 failed", "0 errored", f"{total} total", batch_id):
        assert phrase in status.text, f"{phrase!r} missing from {status.text!r}"
    [mention] = slack.thread(CHANNEL, status.ts)
    assert f"<@{USER}>" in mention.text
