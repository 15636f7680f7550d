"""Requests to be handled once: acked commands kept before the ack, and handled request keys."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import (
    delete,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError

from bot.store.base import Tables
from bot.store.models import HANDLED_REQUESTS_KEPT, AckedCommand, HandledRequest


class CommandRecords(Tables):
    """What was promised to a requester, kept until it is done; replays recognised."""

    async def first_handling(self, request_key: str, *, now: datetime) -> bool:
        """True the first time a request key is seen (its effect is to happen now), else False.

        Keys older than `HANDLED_REQUESTS_KEPT` are forgotten on the way.
        """
        try:
            async with self._sessions.begin() as session:
                await session.execute(
                    delete(HandledRequest).where(
                        HandledRequest.handled_at < now - HANDLED_REQUESTS_KEPT
                    )
                )
                session.add(HandledRequest(request_key=request_key, handled_at=now))
        except IntegrityError:
            return False
        return True

    async def forget_handling(self, request_key: str) -> None:
        """Let a request be handled again: its effect did not happen after all."""
        async with self._sessions.begin() as session:
            await session.execute(
                delete(HandledRequest).where(HandledRequest.request_key == request_key)
            )

    # -- acknowledged commands -------------------------------------------------------------

    async def record_commands(self, commands: Sequence[AckedCommand]) -> None:
        """Keep commands about to be acked, in one transaction; a Slack retry of one (the same
        request key) finds it kept already and changes nothing."""
        if not commands:
            return
        rows = [
            {column.key: getattr(command, column.key) for column in AckedCommand.__mapper__.columns}
            for command in commands
        ]
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        # One statement for any number of rows (executemany), so that it is compiled once per
        # process, not once per group: a VALUES list as long as the group is a new statement
        # each time, and compiling it was most of the CPU the write cost the event loop.
        statement = dialect.insert(AckedCommand).on_conflict_do_nothing(
            index_elements=[AckedCommand.request_key]
        )
        engine = self._ack_engine or self.engine
        for attempt in (1, 2):
            try:
                async with engine.begin() as connection:
                    await connection.execute(statement, rows)
                return
            except DBAPIError as exc:  # a pooled connection the database had dropped: once more
                if attempt == 2 or not exc.connection_invalidated:
                    raise

    async def extend_command(self, request_key: str, *, until: datetime) -> None:
        async with self._sessions.begin() as session:
            await session.execute(
                update(AckedCommand)
                .where(AckedCommand.request_key == request_key)
                .values(claimed_until=until)
            )

    async def command_started(self, request_key: str) -> None:
        """The command's run is recorded (or its requester told why not): nothing is owed."""
        async with self._sessions.begin() as session:
            await session.execute(
                delete(AckedCommand).where(AckedCommand.request_key == request_key)
            )

    async def claim_orphaned_commands(
        self, *, now: datetime, hold: timedelta, limit: int
    ) -> list[AckedCommand]:
        """Acked commands whose holder let go (died) before starting them, now held here."""
        async with self._sessions.begin() as session:
            found = await session.execute(
                select(AckedCommand)
                .where(AckedCommand.claimed_until < now)
                .order_by(AckedCommand.received_at)
                .limit(limit)
            )
            candidates = list(found.scalars().all())
        taken = []
        for command in candidates:
            async with self._sessions.begin() as session:
                moved = await session.execute(
                    update(AckedCommand)
                    .where(
                        AckedCommand.request_key == command.request_key,
                        AckedCommand.claimed_until == command.claimed_until,
                    )
                    .values(claimed_until=now + hold)
                )
            if getattr(moved, "rowcount", 0):
                taken.append(command)
        return taken
