"""`Store`: the one object through which the bot reads and writes its tables."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from sqlalchemy import (
    text,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from bot.store.budgets import BudgetRecords
from bot.store.claims import Claims
from bot.store.commands import CommandRecords
from bot.store.engine import MIGRATION_LOCK, SCHEMA_REVISION, VERSION_TABLE, run_migrations
from bot.store.installs import InstallRecords
from bot.store.publishes import PublishRecords
from bot.store.results import CaseRecords
from bot.store.runs import RunRecords, RunTransitions
from bot.store.schedules import ScheduleRecords


class Store(
    RunRecords,
    RunTransitions,
    Claims,
    CaseRecords,
    ScheduleRecords,
    CommandRecords,
    PublishRecords,
    BudgetRecords,
    InstallRecords,
):
    """Queries over the bot's tables. One instance per process, built by the application.

    The queries live with their tables (`bot.store.runs`, `claims`, `results`, `schedules`,
    `commands`, `publishes`, `budgets`); this class holds the engine and what concerns the
    database as a whole.
    """

    def __init__(self, engine: AsyncEngine, *, ack_engine: AsyncEngine | None = None) -> None:
        """`ack_engine` (`create_ack_engine`): a small pool of its own for what runs before a
        Slack ack, so that the ack's one INSERT never queues behind follow-ups and starts."""
        self.engine = engine
        self._ack_engine = ack_engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._upgrade_lock = asyncio.Lock()

    async def close(self) -> None:
        await self.engine.dispose()
        if self._ack_engine is not None:
            await self._ack_engine.dispose()

    async def upgrade(self) -> None:
        """Apply pending migrations (safe to call from several replicas: Alembic locks on PG)."""
        if await self.schema_revision() == SCHEMA_REVISION:
            return
        async with self._upgrade_lock, self.engine.begin() as conn:
            if self.engine.dialect.name == "postgresql":
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
                )
            await conn.run_sync(run_migrations)

    @contextlib.asynccontextmanager
    async def one_replica_at_a_time(self) -> AsyncIterator[None]:
        """Hold the migration lock (PostgreSQL) while something else creates schema.

        APScheduler's data store creates its tables, and on PostgreSQL an enum type, as the
        scheduler starts; two replicas starting at once collided on `CREATE TYPE` (a unique
        violation in pg_type). Under this lock the second finds everything in place.
        """
        if self.engine.dialect.name != "postgresql":
            yield
            return
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
            try:
                yield
            finally:
                await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK})

    async def schema_revision(self) -> str | None:
        """The revision the database is at; None for a database the bot never migrated."""
        try:
            async with self.engine.connect() as conn:
                result = await conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}"))
                return result.scalar_one_or_none()
        except DBAPIError:
            return None

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
