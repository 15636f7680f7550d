"""Connecting to the bot's database, migrating it, and the failures that mean it is away.

Schema changes go through Alembic (`bot/migrations`); `Store.upgrade()` applies them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import (
    event,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

MIGRATIONS = Path(__file__).parent.parent / "migrations"
# What a database that is down, restarting or cutting connections raises: SQLAlchemy's
# wrapped driver errors, and the socket errors asyncpg raises while connecting.
DATABASE_FAILURES: tuple[type[Exception], ...] = (DBAPIError, OSError)
MIGRATION_LOCK = 727_001  # PostgreSQL advisory lock: one replica migrates at a time
# The newest migration in bot/migrations/versions (a test keeps the two in step): a database
# already there is not handed to Alembic at all, which saves importing it at every start.
SCHEMA_REVISION = "0011"
VERSION_TABLE = "bot_alembic_version"


def async_database_url(url: str) -> str:
    """Map the URL users and PaaS write to the async driver the bot uses."""
    for prefix, replacement in (
        ("postgres://", "postgresql+asyncpg://"),
        ("postgresql://", "postgresql+asyncpg://"),
        ("sqlite://", "sqlite+aiosqlite://"),
    ):
        if url.startswith(prefix):
            return replacement + url[len(prefix) :]
    return url


def create_engine(url: str, *, sqlite_busy_timeout_ms: int = 30_000) -> AsyncEngine:
    """An async engine; SQLite gets WAL and a busy timeout so the scheduler and the bot share it.

    On SQLite every transaction also starts with `BEGIN IMMEDIATE`, taking the write lock up
    front (waiting for it up to the busy timeout). A deferred transaction that reads and then
    writes, as APScheduler's job release does, gets "database is locked" at once, without
    waiting, when another connection wrote in between; that error stops the scheduler.
    """
    engine = create_async_engine(async_database_url(url), pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine, sqlite_busy_timeout_ms)

        @event.listens_for(engine.sync_engine, "begin")
        def _begin_immediate(connection: Connection) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def create_ack_engine(
    url: str, *, sqlite_busy_timeout_ms: int = 30_000, connections: int = 2
) -> AsyncEngine:
    """A small engine for the one write before a Slack ack (`Store.record_commands`).

    Each statement commits by itself and no connection is pinged when it is taken from the
    pool: under load every round trip waits for a busy event loop, and the ack waits for all
    of them. A connection found dead is replaced and the write tried once more instead.
    """
    engine = create_async_engine(
        async_database_url(url),
        isolation_level="AUTOCOMMIT",
        pool_size=connections,
        max_overflow=0,
    )
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine, sqlite_busy_timeout_ms)
    return engine


def _configure_sqlite(engine: AsyncEngine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()
        dbapi_connection.isolation_level = None  # the driver no longer BEGINs by itself


def run_migrations(connection: Connection) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
