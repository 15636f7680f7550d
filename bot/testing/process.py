"""`retell-bot serve` as a child process, pointed at the stand-ins.

Restart and failover tests, the soak and the benchmarks need the real server in its own process
(so it can be killed with SIGKILL, and so its CPU is its own); this starts it, waits until its
`/healthz` says it is up, and stops or kills it.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO

import aiohttp

from bot.settings import Settings

# Ports for bot processes come from below Linux's ephemeral range (32768-60999): a port the
# kernel picks for `bind(0)` is also what it hands out to outgoing connections, and one of
# those (or a parallel test's `bind(0)`) took it before the child, importing for a second or
# two, could bind it ("address already in use").
PORTS = range(20_000, 32_000)
_PICK = random.SystemRandom()


def free_port() -> int:
    """A port nothing listens on now, picked at random from `PORTS`."""
    for _ in range(100):
        port = _PICK.choice(PORTS)  # not `random`'s global state: tests may seed it
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port found in 100 tries")


def bot_environment(
    *,
    slack_api_url: str,
    retell_base_url: str,
    database_url: str,
    signing_secret: str = "secret",
    bot_token: str = "xoxb-test",
    retell_api_key: str = "key_test",
    **extra: str,
) -> dict[str, str]:
    """The environment of a bot talking to the stand-ins (extra keys are upper-cased)."""
    env = {
        "SLACK_BOT_TOKEN": bot_token,
        "SLACK_SIGNING_SECRET": signing_secret,
        "SLACK_API_URL": slack_api_url,
        "RETELL_API_KEY": retell_api_key,
        "RETELL_BASE_URL": retell_base_url,
        "DATABASE_URL": database_url,
    }
    env.update({key.upper(): value for key, value in extra.items()})
    return env


class BotProcess:
    """One `retell-bot serve` child process."""

    def __init__(
        self,
        environment: Mapping[str, str],
        *,
        log_path: Path | None = None,
        port: int = 0,
        cwd: Path | None = None,
    ) -> None:
        self.port = port or free_port()
        inherited = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
        self._environment = {**inherited, **environment, "PORT": str(self.port)}
        self._log_path = log_path
        self._cwd = cwd  # where it looks for `.env`
        self._log: IO[bytes] | None = None
        self._process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def events_url(self) -> str:
        return f"{self.url}/slack/events"

    @property
    def running(self) -> bool:
        """Started and not exited (a crash would show here)."""
        return self._process is not None and self._process.returncode is None

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    async def start(self, *, timeout: float = 30.0) -> None:
        """Start the process and return once `/healthz` answers 200."""
        await self.spawn()
        await self.wait_healthy(timeout)

    async def spawn(self) -> None:
        """Start the process and return at once (see `wait_answering`, `wait_healthy`)."""
        self._log = open(self._log_path, "ab") if self._log_path else None  # noqa: SIM115, ASYNC230
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            env=self._environment,
            cwd=self._cwd,
            stdout=self._log or asyncio.subprocess.DEVNULL,
            stderr=self._log or asyncio.subprocess.DEVNULL,
        )

    async def wait_answering(self, timeout: float = 30.0, *, poll: float = 0.05) -> int:
        """Wait for the first HTTP answer to `GET /healthz`, whatever its status (503 while
        the bot is starting); returns the status."""
        return await self._poll_healthz(timeout, poll, lambda _status: True)

    async def wait_healthy(self, timeout: float = 30.0, *, poll: float = 0.05) -> None:
        """Wait until `GET /healthz` answers 200."""
        await self._poll_healthz(timeout, poll, lambda status: status == 200)

    async def _poll_healthz(
        self, timeout: float, poll: float, enough: Callable[[int], bool]
    ) -> int:
        deadline = asyncio.get_running_loop().time() + timeout
        async with aiohttp.ClientSession() as session:
            while True:
                if self._process is not None and self._process.returncode is not None:
                    raise RuntimeError(f"bot exited with {self._process.returncode} at start-up")
                try:
                    async with session.get(f"{self.url}/healthz") as response:
                        if enough(response.status):
                            return response.status
                except aiohttp.ClientError:
                    pass
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError(f"bot not healthy within {timeout}s")
                await asyncio.sleep(poll)  # nothing to subscribe to: the child is another process

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean up."""
        if self._process is not None and self._process.returncode is None:
            self._process.send_signal(signal.SIGKILL)

    async def stop(self, *, timeout: float = 30.0) -> int:
        """SIGTERM, then wait for the exit; returns the exit code."""
        if self._process is None:
            return 0
        if self._process.returncode is None:
            self._process.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(self._process.wait(), timeout)
        except TimeoutError:
            self._process.kill()
            code = await self._process.wait()
        if self._log is not None:
            self._log.close()
        return code

    async def wait(self) -> int:
        assert self._process is not None
        return await self._process.wait()
