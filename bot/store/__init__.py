"""The bot's own tables (SQLAlchemy 2 async) and the queries the workflow needs.

The `runs` table is the source of truth for every run. State changes that must happen once (a
batch finishing, its result being delivered) are conditional UPDATEs, so that two replicas, or a
replica and its restarted self, can never both win. Schema changes go through Alembic
(`bot/migrations`); `Store.upgrade()` applies them.

Rooms: `models` (tables), `engine` (connecting, migrating), `facade` (`Store`), and the queries by
table: `runs`, `claims`, `results`, `schedules`, `commands`, `publishes`, `budgets`.
"""

from bot.store.budgets import SharedBook
from bot.store.engine import (
    DATABASE_FAILURES,
    MIGRATIONS,
    SCHEMA_REVISION,
    VERSION_TABLE,
    async_database_url,
    create_ack_engine,
    create_engine,
)
from bot.store.facade import Store
from bot.store.models import (
    AckedCommand,
    AgentPublish,
    Base,
    CaseResult,
    HandledRequest,
    Run,
    RunSchedule,
    RunState,
    ScheduleKind,
    TokenRefresh,
    UTCDateTime,
    Workspace,
    utcnow,
)
from bot.store.results import RecordedCase

__all__ = [
    "DATABASE_FAILURES",
    "MIGRATIONS",
    "SCHEMA_REVISION",
    "VERSION_TABLE",
    "AckedCommand",
    "AgentPublish",
    "Base",
    "CaseResult",
    "HandledRequest",
    "RecordedCase",
    "Run",
    "RunSchedule",
    "RunState",
    "ScheduleKind",
    "SharedBook",
    "Store",
    "TokenRefresh",
    "UTCDateTime",
    "Workspace",
    "async_database_url",
    "create_ack_engine",
    "create_engine",
    "utcnow",
]
