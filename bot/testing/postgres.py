"""A PostgreSQL server of one's own, for tests and benchmarks that stop and start it.

Outage tests must never stop the shared server CI and the other tests use; this one lives in a
temporary directory on a free port, run by the `postgres` system user (PostgreSQL refuses to
run as root), and is thrown away at the end. It needs the server binaries of the machine's
PostgreSQL (`initdb`, `pg_ctl`), found under `/usr/lib/postgresql/*/bin` or on the PATH.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self

from bot.testing.process import free_port

SERVER_USER = "postgres"


def _binary(name: str) -> str:
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (folder / name).exists():
            return str(folder / name)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} not found: a throwaway PostgreSQL needs the server binaries")
    return found


class ThrowawayPostgres:
    """`async with ThrowawayPostgres() as server:` a started cluster; `server.url` reaches it."""

    def __init__(self) -> None:
        self.port = free_port()
        self._root = Path(tempfile.mkdtemp(prefix="retell-bot-pg-"))
        self._data = self._root / "data"

    @property
    def url(self) -> str:
        """The `postgres` database, as PaaS spell URLs (trust authentication, no password)."""
        return f"postgresql://{SERVER_USER}@127.0.0.1:{self.port}/postgres"

    async def __aenter__(self) -> Self:
        account = pwd.getpwnam(SERVER_USER)
        os.chown(self._root, account.pw_uid, account.pw_gid)
        await self._as_server_user(
            _binary("initdb"), "-D", str(self._data), "-A", "trust", "-U", SERVER_USER, "-E", "UTF8"
        )
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            await self.stop()
        finally:
            shutil.rmtree(self._root, ignore_errors=True)

    async def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self._root} -c fsync=off"
        await self._as_server_user(
            _binary("pg_ctl"),
            "-D",
            str(self._data),
            "-o",
            options,
            "-l",
            str(self._root / "server.log"),
            "-w",
            "-t",
            "30",
            "start",
        )

    async def stop(self) -> None:
        """Stop it at once, as a crash or a failover would (open connections are cut)."""
        if (self._data / "postmaster.pid").exists():
            await self._as_server_user(
                _binary("pg_ctl"), "-D", str(self._data), "-m", "immediate", "-w", "stop"
            )

    async def _as_server_user(self, *command: str) -> None:
        runner = ("runuser", "-u", SERVER_USER, "--") if os.geteuid() == 0 else ()
        process = await asyncio.create_subprocess_exec(
            *runner,
            *command,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=self._root,
        )
        output, _ = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"{Path(command[0]).name} failed: {output.decode()[-2000:]}")
