"""The bot's own database failing under it (SPEC §11): the process stays up and loses nothing.

Managed PostgreSQL drops connections routinely (maintenance, failover, idle timeouts, pgbouncer
restarts). One `pg_terminate_backend` of the bot's connections once ended the whole process: the
sweep raised into APScheduler, whose event broker then crashed on the job's traceback. Now jobs
never raise into the scheduler, and a scheduler that stops anyway is restarted in-process.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import make_url, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import create_async_engine

from bot.store import async_database_url
from bot.testing.postgres import ThrowawayPostgres
from bot.testing.retell import BatchProgress, FakeRetell
from bot.testing.slack import FakeSlack, SlackUser

from ..bot_processes import log_tail, on_postgres, process_environment, running
from ..helpers import CHANNEL, ENGINE, BotFactory, crash_scheduler, install, results, top_level

BATCHES = 10


async def health(url: str) -> tuple[int, dict[str, str]]:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/healthz") as response:
        return response.status, await response.json()


# The faults here are the database's: Slack's edit pacing (tested in test_operations.py) would
# only spread the results over seconds.
UNPACED = "100000"


async def terminate_connections(database_url: str) -> int:
    """What an operator (or a failover) does: end every connection of the bot's database."""
    url = make_url(async_database_url(database_url))
    admin = create_async_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            killed = await conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": url.database},
            )
            return int(killed.scalar_one())
    finally:
        await admin.dispose()


async def killed_some(database_url: str) -> bool:
    return await terminate_connections(database_url) >= 1


async def reconnected(database_url: str) -> bool:
    """Whether the bot holds database connections again (its pool replaced the dead ones)."""
    url = make_url(async_database_url(database_url))
    admin = create_async_engine(url.set(database="postgres"))
    try:
        async with admin.connect() as conn:
            count = await conn.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE datname = :name"),
                {"name": url.database},
            )
            return int(count.scalar_one()) > 0
    finally:
        await admin.dispose()


async def healthy(url: str) -> bool:
    return (await health(url))[0] == 200


async def until(predicate: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    """Ask another process (over HTTP or SQL) until it says yes: there is no event to await."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"{predicate} still false after {timeout}s")
        await asyncio.sleep(0.02)


def each_reported_once(slack: FakeSlack, retell: FakeRetell) -> None:
    statuses = top_level(slack)
    assert len(statuses) == len(retell.batches) == BATCHES, "one status message per batch"
    for batch_id in retell.batches:
        [status] = [m for m in statuses if batch_id in m.text]
        assert " total" in status.text, f"{batch_id} has its result"
        assert len(slack.thread(CHANNEL, status.ts)) == 1, f"{batch_id}: one mention"


@on_postgres
async def test_killed_database_connections_never_end_the_process(
    slack: FakeSlack, retell: FakeRetell, user: SlackUser, database_url: str, tmp_path: Path
) -> None:
    retell.set_batch_duration(3.0)
    log = tmp_path / "bot.log"
    environment = process_environment(
        slack, retell, database_url, log_level="INFO", slack_edits_per_minute=UNPACED
    )
    async with running(environment, log) as bot:
        for _ in range(BATCHES):
            reply = await user.command(bot.events_url, f"{ENGINE} tc_1 tc_2")
            assert "Starting a Retell batch test" in reply.text
        await slack.wait_for(lambda: len(top_level(slack)) == BATCHES, timeout=30)

        for _ in range(3):  # each one of these ended the process before
            # A connection seen a moment ago may be gone by the kill: kill until one dies.
            await until(lambda: killed_some(database_url))
            await until(lambda: reconnected(database_url))  # then kill the new ones too
        await slack.wait_for(lambda: len(results(slack)) == BATCHES, timeout=60)
        await slack.wait_for(
            lambda: all(slack.thread(CHANNEL, m.ts) for m in results(slack)), timeout=30
        )
        assert bot.running, log_tail(log)
        status, body = await health(bot.url)
        assert (status, body) == (200, {"status": "ok"}), log_tail(log)

    each_reported_once(slack, retell)
    assert retell.count("/create-batch-test") == BATCHES
    lines = log.read_text().splitlines()
    assert not [line for line in lines if "Serialized event object exceeds" in line]
    stopped = [line for line in lines if "scheduler stopped (" in line]
    assert len(stopped) <= 3, "at most one line per outage, never one per tick"


async def test_a_crashed_scheduler_is_restarted_and_the_run_reports_once(
    start_bot: BotFactory,
    slack: FakeSlack,
    retell: FakeRetell,
    user: SlackUser,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """APScheduler ends its scheduler on errors of its own; the bot starts it again.

    The crash is injected where APScheduler's job loop meets its data store (the query that
    fails on a dropped connection): three crashes in a row, while a batch is running.
    """
    retell.set_batch_duration(1.5)
    caplog.set_level(logging.INFO)
    async with start_bot() as bot:
        await user.command(bot.events_url, f"{ENGINE} tc_1 tc_2")
        await slack.wait_for(lambda: len(top_level(slack)) == 1)

        error = OperationalError("SELECT …", {}, ConnectionResetError("connection lost"))
        crashes = crash_scheduler(bot.app, 3, error)
        seen: list[tuple[int, dict[str, str]]] = []

        async def degraded() -> bool:
            seen.append(await health(bot.url))
            return seen[-1][0] == 503

        await until(degraded)
        assert seen[-1] == (503, {"status": "unhealthy", "scheduler": "restarting"})
        await slack.wait_for(lambda: len(results(slack)) == 1, timeout=20)
        await slack.wait_for(lambda: bool(slack.thread(CHANNEL, results(slack)[0].ts)))
        await until(lambda: healthy(bot.url))
        restarts = bot.app.metrics.scheduler_restarts._value.get()

    assert crashes.left == 0 and restarts == 3
    [result] = results(slack)
    assert "2 passed" in result.text and len(slack.thread(CHANNEL, result.ts)) == 1
    assert retell.count("/create-batch-test") == 1
    ours = [r for r in caplog.records if r.name == "bot.scheduling" and r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in ours] == [
        "scheduler stopped (OperationalError: (builtins.ConnectionResetError) connection lost); "
        "restarting it"
    ], "one line for the outage, not one per restart"
    theirs = [r for r in caplog.records if r.getMessage() == "Scheduler crashed"]
    assert len(theirs) == 1, "APScheduler's own traceback shown once, not once per restart"
    assert any(
        "scheduler running again after 3 restart(s)" in r.getMessage() for r in caplog.records
    )


@pytest.mark.postgres
async def test_the_database_down_for_a_while_then_every_run_reports_once_and_a_missed_firing_once(
    slack: FakeSlack, retell: FakeRetell, user: SlackUser, tmp_path: Path
) -> None:
    """PostgreSQL stopped (a server of the test's own) with runs in flight and a schedule due.

    While it is down the bot stays up, says so on /healthz, and tells whoever types a command
    that nothing was started; once it is back, every run gets exactly one result and the
    firing that fell in the gap runs once.
    """
    retell.set_batch_duration(4.0)
    log = tmp_path / "bot.log"
    async with ThrowawayPostgres() as server:
        environment = process_environment(
            slack, retell, server.url, log_level="INFO", slack_edits_per_minute=UNPACED
        )
        async with running(environment, log) as bot:
            for _ in range(BATCHES):
                await user.command(bot.events_url, f"{ENGINE} tc_1 tc_2")
            await slack.wait_for(lambda: len(top_level(slack)) == BATCHES, timeout=30)
            added = await user.command(
                bot.events_url, f'schedule add "daily 09:00" {ENGINE} tc_3 name=Nightly'
            )
            await slack.wait_for(lambda: bool(slack.responses_to(added.response_url)))
            await due_in_seconds(server.url, "schedule-1", 2.0)

            await server.stop()
            await until(lambda: unhealthy(bot.url, "database"))
            typed = await user.command(bot.events_url, f"{ENGINE} tc_4")
            # Told in the ack itself: the command could not be kept, so nothing starts later.
            assert typed.status == 200 and "was not started" in typed.text
            assert "database is not reachable" in typed.text
            assert retell.count("/create-batch-test") == BATCHES, "nothing created meanwhile"
            await retell.wait_for(lambda: all(b.status == "complete" for b in batches(retell)))
            await server.start()

            await until(lambda: healthy(bot.url), timeout=60)
            await slack.wait_for(lambda: len(results(slack)) == BATCHES + 1, timeout=60)
            await slack.wait_for(
                lambda: all(slack.thread(CHANNEL, m.ts) for m in results(slack)[:BATCHES]),
                timeout=30,
            )
            assert bot.running, log_tail(log)

    assert retell.count("/create-batch-test") == BATCHES + 1, "the runs, and the firing once"
    fired = [m for m in results(slack) if m.text.startswith("Nightly")]
    assert len(fired) == 1, "the firing missed during the outage ran once"
    statuses = [m for m in top_level(slack) if not m.text.startswith("Nightly")]
    assert len(statuses) == BATCHES, "one status message per run, turned into its result"
    for status in statuses:
        assert " total" in status.text and len(slack.thread(CHANNEL, status.ts)) == 1
    stopped = [line for line in log.read_text().splitlines() if "scheduler stopped (" in line]
    assert len(stopped) <= 2, "one line for the outage, not one per restart"


def batches(retell: FakeRetell) -> list[BatchProgress]:
    return [retell.progress(batch_id) for batch_id in retell.batches]


async def unhealthy(url: str, part: str) -> bool:
    status, body = await health(url)
    return status == 503 and part in body


async def due_in_seconds(database_url: str, schedule_id: str, seconds: float) -> None:
    """Make an APScheduler schedule due soon, as if its time had come (another process's)."""
    engine = create_async_engine(async_database_url(database_url))
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE schedules SET next_fire_time = now() + make_interval(secs => :s) "
                    "WHERE id = :id"
                ),
                {"s": seconds, "id": schedule_id},
            )
    finally:
        await engine.dispose()


async def test_sqlite_locked_longer_than_its_busy_timeout_the_bot_recovers_and_loses_nothing(
    slack: FakeSlack, retell: FakeRetell, user: SlackUser, tmp_path: Path
) -> None:
    """Another process (a backup, a peer, `db upgrade`) holds SQLite's write lock for longer
    than SQLITE_BUSY_TIMEOUT_SECONDS while batches run: writes fail, the scheduler stops and
    is restarted, and once the lock is gone every run reports once."""
    retell.set_batch_duration(2.0)
    database = tmp_path / "bot.db"
    log = tmp_path / "bot.log"
    environment = process_environment(
        slack, retell, f"sqlite:///{database}", sqlite_busy_timeout_seconds="0.3"
    )
    async with running(environment, log) as bot:
        # One at a time: with a 0.3 s busy timeout, five starts at once contend for the write
        # lock among themselves, and a command can be refused at its ack before the test
        # has locked anything.
        for started in range(1, 6):
            await user.command(bot.events_url, f"{ENGINE} tc_1 tc_2")
            await slack.wait_for(lambda n=started: len(top_level(slack)) == n, timeout=30)
        peer = sqlite3.connect(database, isolation_level=None, timeout=30)
        try:
            peer.execute("BEGIN IMMEDIATE")  # the write lock, held
            await until(lambda: unhealthy(bot.url, "scheduler"))
            await retell.wait_for(lambda: all(b.status == "complete" for b in batches(retell)))
        finally:
            peer.execute("ROLLBACK")
            peer.close()
        await until(lambda: healthy(bot.url), timeout=60)
        await slack.wait_for(lambda: len(results(slack)) == 5, timeout=60)
        await slack.wait_for(lambda: all(slack.thread(CHANNEL, m.ts) for m in results(slack)))
        assert bot.running, log_tail(log)
    assert len(top_level(slack)) == 5
    assert all(len(slack.thread(CHANNEL, m.ts)) == 1 for m in results(slack))
    assert retell.count("/create-batch-test") == 5


async def test_many_workspaces_with_the_database_down_a_command_is_told_so_then_runs(
    slack: FakeSlack, retell: FakeRetell, tmp_path: Path
) -> None:
    """With many workspaces even the token lives in the database: while it is down a command
    is told that the database is down (not "install the app"), and works once it is back."""
    team, channel = "T0DIST", "C0DIST"
    person = SlackUser(slack=slack, user_id="U0DIST", team_id=team, channel_id=channel)
    log = tmp_path / "bot.log"
    async with ThrowawayPostgres() as server:
        environment = process_environment(
            slack,
            retell,
            server.url,
            slack_client_id=slack.client_id,
            slack_client_secret=slack.client_secret,
            encryption_keys=Fernet.generate_key().decode(),
        )
        del environment["SLACK_BOT_TOKEN"]
        async with running(environment, log) as bot:
            slack.redirect_url = f"{bot.url}/slack/oauth_redirect"
            slack.add_workspace(team, "Dist")
            assert (await install(bot.url, slack, team))[0] == 200

            await server.stop()
            await until(lambda: unhealthy(bot.url, "database"))
            typed = await person.command(bot.events_url, f"{ENGINE} tc_1")
            assert typed.status == 200 and "database is not reachable" in typed.text
            await server.start()
            await until(lambda: healthy(bot.url), timeout=60)

            again = await person.command(bot.events_url, f"{ENGINE} tc_1")
            assert "Starting a Retell batch test" in again.text
            await slack.wait_for(lambda: len(results(slack, channel)) == 1, timeout=30)
            assert bot.running, log_tail(log)
    assert retell.count("/create-batch-test") == 1
