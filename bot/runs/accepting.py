"""A command taken in before the ack, queued for a start slot, resumed after a crash; who may start
runs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import anyio

from bot.admission import Admission
from bot.blocks import Message
from bot.commands import (
    RunCommand,
    parse,
)
from bot.runs import notices
from bot.runs.base import (
    COMMAND_LEASES,
    RESUMED_PER_PASS,
    KeepCommand,
    Requester,
    RunRequest,
    log,
)
from bot.runs.starting import Starting
from bot.store import (
    DATABASE_FAILURES,
    AckedCommand,
    Run,
)


class Accepting(Starting):
    """A command taken in before the ack, queued for a start slot, resumed after a crash; who may
    start runs.
    """

    async def accept(self, who: Requester, text: str, request_key: str | None) -> Admission:
        """Keep a `run` command before it is acked, so that a process killed right after the
        ack loses nothing (a sweep starts what it left, see `_resume_commands`).

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
        return await self._commands.keep(command)

    @staticmethod
    def database_down() -> Message:
        """What a command the database could not take is answered with."""
        return notices.database_down()

    async def start(self, request: RunRequest) -> Run | None:
        """Resolve the test cases, create the batch and post the status message.

        Called after the ack, so nothing may fail silently here: the requester already saw
        "Starting…". Starts queue for a slot (START_CONCURRENCY) so that a burst of commands
        waits its turn instead of exhausting the database pool.
        """
        task = asyncio.current_task()
        if task is not None:
            self._starting.add(task)
            task.add_done_callback(self._starting.discard)
        async with self._keeping_command(request), self._start_slots:
            try:
                run = await self._start(request)
            except DATABASE_FAILURES as exc:
                if request.recorded:
                    log.warning("run queued, database unreachable: %s", type(exc).__name__)
                    await self._tell(request.requester, notices.start_queued())
                    raise KeepCommand from exc
                log.warning("run not started, database unreachable: %s", type(exc).__name__)
                await self._tell(request.requester, notices.database_down())
                return None
            except Exception:
                log.exception("starting a run for %s failed", request.requester.user_id)
                await self._tell(request.requester, notices.start_broke())
                return None
            return run
        return None  # queued: a later sweep starts it

    @contextlib.asynccontextmanager
    async def _keeping_command(self, request: RunRequest) -> AsyncIterator[None]:
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

    async def _resume_commands(self) -> None:
        """Start the acked commands a process left unstarted (killed after the ack)."""
        now = self._clock()
        hold = self._lease * COMMAND_LEASES
        for command in await self._store.claim_orphaned_commands(
            now=now, hold=hold, limit=RESUMED_PER_PASS
        ):
            parsed = parse(command.text)
            if not isinstance(parsed, RunCommand):  # recorded only for `run`: never here
                await self._store.command_started(command.request_key)
                continue
            log.info("resuming a command acked by a process that stopped: %s", command.text)
            who = Requester(
                command.team_id, command.channel_id, command.user_id, command.response_url
            )
            request = RunRequest(
                who,
                parsed.engine,
                parsed.tests,
                request_key=command.request_key,
                repeats=parsed.repeats,
                recorded=True,
            )
            task = asyncio.create_task(self.start(request))
            self._resuming.add(task)
            task.add_done_callback(self._resuming.discard)
