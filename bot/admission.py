"""Keeping `run` commands in the database before Slack is acked.

A process killed right after an ack must not lose the command, so each one is written to
`acked_commands` first, on the ack's critical path. A burst of commands (a team pasting a
list, a CI job fanning out) would otherwise be one transaction each, queued for the write
lock and the pool behind each other: 200 at once took the ack past Slack's 3 s on SQLite.
Commands that arrive while a write is under way are therefore written together in the next
transaction (group commit), so a burst costs a few transactions instead of hundreds.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from bot.store import DATABASE_FAILURES, AckedCommand, Store, create_ack_engine, create_engine

if TYPE_CHECKING:
    from bot.settings import Settings

log = logging.getLogger(__name__)

WRITERS = 2  # groups written at once: the connections of the ack's own pool
ACCEPT_SECONDS = 1.5  # of Slack's 3 s for the ack, leaving room for a busy event loop


def open_store(settings: Settings) -> Store:
    """The process's store: its engine, and a small pool of its own for the write before an ack."""
    busy_ms = int(settings.sqlite_busy_timeout_seconds * 1000)
    return Store(
        create_engine(settings.database_url, sqlite_busy_timeout_ms=busy_ms),
        ack_engine=create_ack_engine(
            settings.database_url, sqlite_busy_timeout_ms=busy_ms, connections=WRITERS
        ),
    )


def request_key(payload: Mapping[str, Any]) -> str | None:
    """Slack's trigger_id: one per user action, repeated when Slack retries the request."""
    value = payload.get("trigger_id")
    return value[:128] if isinstance(value, str) and value else None


class Admission(enum.Enum):
    """What became of a `run` command at its ack."""

    KEPT = "kept"  # in `acked_commands`: started even if this process dies after the ack
    UNKEPT = "unkept"  # the database was slow: started by this process only
    REFUSED = "refused"  # the database is unreachable: the ack says nothing was started


class CommandRecords(Protocol):
    async def record_commands(self, commands: Sequence[AckedCommand]) -> None: ...


class CommandBook:
    """Writes acked commands in groups and tells each waiter what became of its own.

    A waiter gets at most `patience` seconds: Slack's 3 s matter more than the record, so a
    slow database lets the command go on unkept while its write finishes by itself (a late
    record is harmless: a resumed start finds the run by its request key).
    """

    def __init__(self, records: CommandRecords, *, patience: float, writers: int = WRITERS) -> None:
        """`writers`: groups written at once (one per connection of the ack's pool), so a
        command arriving during a write goes into the next one at once, not after it."""
        self._records = records
        self._patience = patience
        self._most_writers = writers
        self._waiting: list[tuple[AckedCommand, asyncio.Future[BaseException | None]]] = []
        self._writers: set[asyncio.Task[None]] = set()

    async def keep(self, command: AckedCommand, *, patience: float | None = None) -> Admission:
        """`patience`: less than the book's own, for a waiter that has less time left."""
        outcome: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
        self._waiting.append((command, outcome))
        if len(self._writers) < self._most_writers:
            writer = asyncio.create_task(self._write(), name="acked-commands")
            self._writers.add(writer)
            writer.add_done_callback(self._writers.discard)
        # Not `asyncio.timeout` around the write: cancelling a query waits for its rollback,
        # which on a locked SQLite file or a stalled connection can outlast Slack's 3 s.
        waited = self._patience if patience is None else min(patience, self._patience)
        done, _ = await asyncio.wait({outcome}, timeout=waited)
        if not done:
            log.info("command not kept: the database took longer than %.2fs", waited)
            return Admission.UNKEPT
        problem = outcome.result()
        if problem is None:
            return Admission.KEPT
        if isinstance(problem, DATABASE_FAILURES):
            log.warning("command not accepted, database unreachable: %s", type(problem).__name__)
            return Admission.REFUSED
        log.error("command not kept: %r", problem, exc_info=problem)
        return Admission.UNKEPT

    async def close(self) -> None:
        """Let a write under way finish (its commands were acked as kept or are about to be)."""
        if self._writers:
            await asyncio.wait(self._writers)

    async def _write(self) -> None:
        while self._waiting:
            group, self._waiting = self._waiting, []
            problem: BaseException | None = None
            try:
                await self._records.record_commands([command for command, _ in group])
            except Exception as exc:  # handed to each waiter, who says what it means
                problem = exc
            for _, outcome in group:
                if not outcome.done():
                    outcome.set_result(problem)
