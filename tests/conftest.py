"""Shared fixtures: the stand-ins of Slack and Retell, a database, and the real bot between them.

Every end-to-end test talks to the bot the way Slack does (signed HTTP to `/slack/events`, or
the Socket Mode socket) and watches what reaches the stand-ins. Poll intervals are configured
short so the suite runs in seconds without skipping any step of the real flow.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

from bot.application import Application
from bot.settings import Settings
from bot.store import async_database_url
from bot.testing.retell import FakeRetell
from bot.testing.slack import FakeSlack, SlackUser
from bot.web import start_http
from tests.helpers import CHANNEL, ENGINE, FLOW, USER, BotFactory, RunningBot, settings_for

POSTGRES_URL = os.environ.get("TEST_DATABASE_URL", "")
BACKENDS = ["sqlite", "postgresql"] if POSTGRES_URL else ["sqlite"]


# Outcomes of the tests marked `postgres` (replicas, failover, migrations on PostgreSQL).
_postgres_outcomes: dict[str, str] = {}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `postgres` need TEST_DATABASE_URL: skip them without it."""
    if POSTGRES_URL:
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL: set TEST_DATABASE_URL")
    for item in items:
        if item.get_closest_marker("postgres"):
            item.add_marker(skip)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "postgres" not in report.keywords:
        return
    if report.skipped and not hasattr(report, "wasxfail"):
        _postgres_outcomes[report.nodeid] = "skipped"
    elif report.when == "call":
        _postgres_outcomes[report.nodeid] = report.outcome


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI the PostgreSQL tests are not optional: fail if they were skipped or none passed."""
    if not os.environ.get("REQUIRE_POSTGRES_TESTS"):
        return
    if hasattr(session.config, "workerinput"):
        return  # a pytest-xdist worker: the controller sees every worker's reports and decides
    problem = None
    if not POSTGRES_URL:
        problem = "REQUIRE_POSTGRES_TESTS is set but TEST_DATABASE_URL is not"
    elif skipped := sorted(n for n, o in _postgres_outcomes.items() if o == "skipped"):
        problem = f"REQUIRE_POSTGRES_TESTS is set but these were skipped: {', '.join(skipped)}"
    elif "passed" not in _postgres_outcomes.values():
        problem = "REQUIRE_POSTGRES_TESTS is set but no test marked `postgres` passed"
    if problem:
        print(f"\n{problem}")
        session.exitstatus = 1


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep a developer's own bot configuration (or .env) out of the tests."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.chdir(Path(__file__).parent)


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        yield fake


@pytest.fixture
async def retell() -> AsyncIterator[FakeRetell]:
    async with FakeRetell(batch_seconds=0.4) as fake:
        fake.add_engine("retell-llm", ENGINE, versions=4)
        for number in range(1, 6):
            fake.add_definition(ENGINE, f"tc_{number}", f"Case {number}")
        fake.add_definition(ENGINE, "tc_fail_1", "Refund request")
        fake.add_definition(ENGINE, "tc_error_1", "Angry caller")
        fake.add_engine("conversation-flow", FLOW)
        fake.add_definition(FLOW, "tc_flow_1", "Flow case")
        yield fake


@pytest.fixture(params=BACKENDS)
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty database: a file for SQLite, a new database on the CI PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'bot.db'}"
        return
    name = f"retell_bot_test_{uuid.uuid4().hex[:12]}"
    server = make_url(async_database_url(POSTGRES_URL))
    admin = create_async_engine(server, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f"CREATE DATABASE {name}"))
    yield server.set(database=name).render_as_string(hide_password=False)
    async with admin.connect() as conn:
        await conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    await admin.dispose()


@pytest.fixture
def start_bot(slack: FakeSlack, retell: FakeRetell, database_url: str) -> BotFactory:
    """`async with start_bot(**settings) as bot:` runs the real application on a free port."""

    @asynccontextmanager
    async def running(**overrides: Any) -> AsyncIterator[RunningBot]:
        app = Application.build(settings_for(slack, retell, database_url, **overrides))
        ready: asyncio.Future[RunningBot] = asyncio.get_running_loop().create_future()
        stop = asyncio.Event()

        async def host() -> None:
            # The scheduler's task group must be entered and left by the same task, and
            # pytest-asyncio may run a fixture's set-up and tear-down in different ones.
            async with app.running():
                runner, port = await start_http(app, "127.0.0.1", 0)
                ready.set_result(RunningBot(app, f"http://127.0.0.1:{port}"))
                await stop.wait()
                await runner.cleanup()

        task = asyncio.create_task(host())
        await asyncio.wait([ready, task], return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            await task  # start-up failed: raise its error
        try:
            yield ready.result()
        finally:
            stop.set()
            await task

    return running


@pytest.fixture
async def bot(start_bot: BotFactory) -> AsyncIterator[RunningBot]:
    async with start_bot() as running:
        yield running


@pytest.fixture
def user(slack: FakeSlack) -> SlackUser:
    return SlackUser(slack=slack, user_id=USER, user_name="alice", channel_id=CHANNEL)


# -- reading the channel ---------------------------------------------------------------------


# -- faults APScheduler meets ------------------------------------------------------------------
