"""Accepted commands: a `run` command is kept before its ack, so a killed process loses none."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import anyio

from bot.admission import ACCEPT_SECONDS, Admission, CommandBook
from bot.commands import RunCommand, parse
from bot.runs.context import Services
from bot.runs.requests import Requester, RunRequest
from bot.store import DATABASE_FAILURES, AckedCommand

# Every part of the workflow logs as `bot.runs`, as the one module did: log filters and
# tests name it.
log = logging.getLogger("bot.runs")

# An accepted command is held for this many follow-up leases (extended while it waits for a
# start slot); a process killed after the ack leaves it to a sweep once that has run out.
COMMAND_LEASES = 3
RESUMED_PER_PASS = 50


class AcceptedCommands:
    """`run` commands kept from before their ack until their run is recorded (`CommandBook`)."""

    def __init__(self, services: Services) -> None:
        self._store = services.store
        self._clock = services.clock
        self._lease = services.lease
        self._book = CommandBook(services.store, patience=ACCEPT_SECONDS)

    async def accept(self, who: Requester, text: str, request_key: str | None) -> Admission:
        """Keep a `run` command before it is acked, so that a process killed right after the
        ack loses nothing (a sweep starts what it left, see `orphaned`).

        One INSERT on the ack's critical path (shared by the commands of a burst, see
        `CommandBook`). A database that refuses it is unreachable: the requester is told at
        once that nothing was started. One that is only slow gets ACCEPT_SECONDS, then the
        command goes on unkept.
        """
        if request_key is None:
            return Admission.UNKEPT  # no key to find it again by (Slack always sends one)
        now = self._clock()
        command = AckedCommand(
            request_key=request_key,
            team_id=who.team_id,
            channel_id=who.channel_id,
            user_id=who.user_id,
            response_url=who.response_url,
            text=text,
            received_at=now,
            claimed_until=now + self._lease * COMMAND_LEASES,
        )
        return await self._book.keep(command)

    @contextlib.asynccontextmanager
    async def keeping(self, request: RunRequest) -> AsyncIterator[None]:
        """Hold an accepted command while it waits for a slot and starts; forget it once its
        run is recorded. A start the database cut short leaves it for a later sweep."""
        key = request.request_key if request.recorded else None
        if key is None:
            yield
            return

        async def keep() -> None:
            while True:
                await asyncio.sleep(self._lease.total_seconds())
                until = self._clock() + self._lease * COMMAND_LEASES
                await self._store.extend_command(key, until=until)

        keeper = asyncio.create_task(keep())
        try:
            yield
        except KeepCommand:
            return
        finally:
            keeper.cancel()
        with contextlib.suppress(*DATABASE_FAILURES):  # if not forgotten, it is resumed: the
            with anyio.CancelScope(shield=True):  # run's request_key then starts nothing
                await self._store.command_started(key)

    async def orphaned(self) -> AsyncIterator[RunRequest]:
        """The acked commands a process left unstarted (killed after the ack), to start here."""
        now = self._clock()
        hold = self._lease * COMMAND_LEASES
        for command in await self._store.claim_orphaned_commands(
            now=now, hold=hold, limit=RESUMED_PER_PASS
        ):
            request = self.request(command, recorded=True)
            if request is None:  # recorded only for `run`: never here
                await self._store.command_started(command.request_key)
                continue
            log.info(
                "resuming a command acked by a process that stopped (or while it started): %s",
                command.text,
            )
            yield request

    @staticmethod
    def request(command: AckedCommand, *, recorded: bool) -> RunRequest | None:
        """What an acked command asks for (None for a text that is no `run` or `compare`)."""
        parsed = parse(command.text)
        if not isinstance(parsed, RunCommand):
            return None
        who = Requester(command.team_id, command.channel_id, command.user_id, command.response_url)
        return RunRequest.asked(who, parsed, request_key=command.request_key, recorded=recorded)

    async def close(self) -> None:
        """Let a write under way finish (at shutdown)."""
        await self._book.close()


class KeepCommand(Exception):
    """Raised out of a start the database cut short: its accepted command stays kept."""
