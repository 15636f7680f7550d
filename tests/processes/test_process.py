"""The real `retell-bot` in a child process: crashes, graceful stops, start-up, the CLI.

Slack and Retell are the in-process stand-ins; the bot is `python -m bot.cli serve` started by
`BotProcess`, so it can be killed with SIGKILL or stopped with SIGTERM like on a platform, and
its successor (a new process on the same database) must finish what it left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sqlite3
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from bot.store import MIGRATIONS, SCHEMA_REVISION, async_database_url
from bot.testing.process import BotProcess
from bot.testing.retell import FakeRetell
from bot.testing.slack import FakeSlack, SlackUser

from ..bot_processes import (
    RETELL_BOT,
    assert_reported_once,
    eventually,
    log_problems,
    log_tail,
    process_environment,
    run_cli,
    running,
    scrubbed_environment,
)
from ..helpers import CHANNEL, ENGINE, results, top_level


def thread_wait_channels(pid: int) -> list[str]:
    """What each thread of a process is blocked in (Linux `/proc/<pid>/task/*/wchan`)."""
    channels = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            channels.append((task / "wchan").read_text())
    return channels


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


# -- crashes and restarts ------------------------------------------------------------------------


async def test_kill_9_mid_batch_then_a_new_process_finishes_it(
    slack: FakeSlack,
    retell: FakeRetell,
    user: SlackUser,
    database_url: str,
    tmp_path: Path,
) -> None:
    retell.set_batch_duration(3.0)
    environment = process_environment(slack, retell, database_url)

    async with running(environment, tmp_path / "first.log") as first:
        reply = await user.command(first.events_url, f"{ENGINE} tc_1 tc_2 tc_3")
        assert reply.status == 200
        assert "Starting a Retell batch test" in reply.text
        await slack.wait_for(lambda: any(m.update_count >= 1 for m in top_level(slack)))
        first.kill()
        assert await first.wait() == -9

    [batch_id] = retell.batches
    assert retell.progress(batch_id).status == "in_progress", "killed before the batch completed"
    assert not results(slack)

    async with running(environment, tmp_path / "second.log"):
        await slack.wait_for(lambda: len(results(slack)) == 1, timeout=60)
        [status] = top_level(slack)
        await slack.wait_for(lambda: len(slack.thread(CHANNEL, status.ts)) >= 1)

    assert_reported_once(slack, batch_id, passed=3, total=3)
    assert retell.count("/create-batch-test") == 1, "the successor does not create a new batch"
    assert not log_problems(tmp_path / "second.log", until_shutdown=True)


async def test_sigterm_with_a_batch_in_flight_exits_0_and_a_successor_finishes_it(
    slack: FakeSlack,
    retell: FakeRetell,
    user: SlackUser,
    database_url: str,
    tmp_path: Path,
) -> None:
    retell.set_batch_duration(3.0)
    environment = process_environment(slack, retell, database_url)

    first = BotProcess(environment, log_path=tmp_path / "first.log")
    await first.start()
    await user.command(first.events_url, f"{ENGINE} tc_1 tc_2 tc_3")
    await slack.wait_for(lambda: any(m.update_count >= 1 for m in top_level(slack)))
    asked = time.monotonic()
    code = await first.stop(timeout=25)
    stopped_in = time.monotonic() - asked

    [batch_id] = retell.batches
    assert retell.progress(batch_id).status == "in_progress"
    assert not results(slack)
    assert "shutting down" in (tmp_path / "first.log").read_text()
    assert not log_problems(tmp_path / "first.log", until_shutdown=True)

    async with running(environment, tmp_path / "second.log"):
        await slack.wait_for(lambda: len(results(slack)) == 1, timeout=30)
        [status] = top_level(slack)
        await slack.wait_for(lambda: len(slack.thread(CHANNEL, status.ts)) >= 1)

    assert_reported_once(slack, batch_id, passed=3, total=3)
    assert not log_problems(tmp_path / "second.log", until_shutdown=True)
    assert code == 0, log_tail(tmp_path / "first.log")
    assert stopped_in < 25


async def test_sigterm_while_the_database_is_busy_exits_0_without_errors(
    slack: FakeSlack, retell: FakeRetell, tmp_path: Path
) -> None:
    """Another process (a peer, a backup, `db upgrade`) holds SQLite's write lock at SIGTERM.

    The scheduler's queries are then still running when the bot shuts down, which is what
    happens by chance in a fair share of ordinary shutdowns; here it happens every time.
    """
    database = tmp_path / "bot.db"
    environment = process_environment(slack, retell, f"sqlite:///{database}")
    bot = BotProcess(environment, log_path=tmp_path / "bot.log")
    await bot.start()
    peer = sqlite3.connect(database, isolation_level=None, timeout=30)
    try:
        peer.execute("BEGIN IMMEDIATE")
        # A bot thread sleeping in SQLite's busy handler: a query is waiting on the lock.
        await eventually(lambda: "hrtimer_nanosleep" in thread_wait_channels(bot.pid))
        await asyncio.sleep(0.5)  # the database stays busy: the scheduler's loops queue up
        asked = time.monotonic()
        os.kill(bot.pid, signal.SIGTERM)
        await eventually(lambda: not port_open(bot.port))  # the scheduler is stopped next
        await asyncio.sleep(0.5)  # and the database stays busy while it stops
    finally:
        peer.execute("ROLLBACK")
        peer.close()
    code = await bot.stop(timeout=25)

    assert code == 0, log_tail(tmp_path / "bot.log")
    assert time.monotonic() - asked < 25
    assert not log_problems(tmp_path / "bot.log"), log_tail(tmp_path / "bot.log")


async def test_sigterm_while_the_batch_is_being_created_still_tells_the_requester(
    slack: FakeSlack,
    retell: FakeRetell,
    user: SlackUser,
    database_url: str,
    tmp_path: Path,
) -> None:
    environment = process_environment(slack, retell, database_url)
    retell.delay("/create-batch-test", 2.0, times=1)

    first = BotProcess(environment, log_path=tmp_path / "first.log")
    await first.start()
    reply = await user.command(first.events_url, f"{ENGINE} tc_1 tc_2")
    assert reply.status == 200
    # The delay rule is used up when the create request arrives: it is now held at Retell.
    await retell.wait_for(lambda: not retell._delays)
    assert await first.stop(timeout=25) == 0

    async with running(environment, tmp_path / "second.log"):
        # Either the batch gets created and reported, or the requester is told it was not.
        await slack.wait_for(
            lambda: bool(results(slack) or slack.responses_to(reply.response_url)), timeout=10
        )


@pytest.mark.parametrize(
    "created", [False, True], ids=["before Retell created it", "after Retell created it"]
)
async def test_kill_9_while_the_batch_is_being_created_is_recovered_with_one_batch(
    slack: FakeSlack,
    retell: FakeRetell,
    user: SlackUser,
    database_url: str,
    tmp_path: Path,
    created: bool,
) -> None:
    """Retell has no idempotency key: the successor looks for the batch before creating it."""
    environment = process_environment(slack, retell, database_url)
    retell.delay("/create-batch-test", 8.0, times=1, answer_late=created)
    async with running(environment, tmp_path / "first.log") as first:
        reply = await user.command(first.events_url, f"{ENGINE} tc_1 tc_2")
        assert "Starting a Retell batch test" in reply.text
        await retell.wait_for(lambda: not retell._delays)  # the create is held at Retell
        first.kill()
        assert await first.wait() == -9
    assert len(retell.batches) == (1 if created else 0)
    killed_at = time.monotonic()

    async with running(environment, tmp_path / "second.log"):
        await slack.wait_for(lambda: len(results(slack)) == 1, timeout=60)
        [status] = top_level(slack)
        await slack.wait_for(lambda: len(slack.thread(CHANNEL, status.ts)) >= 1)
    recovered_in = time.monotonic() - killed_at

    if not created:  # the held create died with its client: the successor's is the only one
        await retell.wait_for(lambda: retell.dropped == ["/create-batch-test"])
    [batch_id] = retell.batches
    assert_reported_once(slack, batch_id, passed=2, total=2)
    assert recovered_in < 60, f"recovered in {recovered_in:.1f}s"
    assert not slack.responses_to(reply.response_url), "nothing to apologise for"
    assert not log_problems(tmp_path / "second.log", until_shutdown=True)


async def test_kill_9_right_after_the_ack_before_the_run_is_recorded_is_started_once(
    slack: FakeSlack, retell: FakeRetell, user: SlackUser, database_url: str, tmp_path: Path
) -> None:
    """The ack is sent before the start reads Retell (`all`) and records the run: a process
    killed in between had acked a command that nothing would ever start. It is kept before the
    ack (`acked_commands`); the successor starts it once its hold runs out."""
    environment = process_environment(slack, retell, database_url)
    retell.delay("/v2/list-test-case-definitions", 30.0, times=1)
    async with running(environment, tmp_path / "first.log") as first:
        reply = await user.command(first.events_url, f"{ENGINE} all")
        assert "Starting a Retell batch test" in reply.text
        await retell.wait_for(lambda: not retell._delays)  # the start waits on Retell
        first.kill()
        assert await first.wait() == -9
    assert not retell.batches
    killed_at = time.monotonic()

    async with running(environment, tmp_path / "second.log"):
        await slack.wait_for(lambda: len(results(slack)) == 1, timeout=60)
        [status] = top_level(slack)
        await slack.wait_for(lambda: len(slack.thread(CHANNEL, status.ts)) >= 1)
    recovered_in = time.monotonic() - killed_at

    [batch_id] = retell.batches
    [status] = top_level(slack)
    assert batch_id in status.text and len(slack.thread(CHANNEL, status.ts)) == 1
    assert recovered_in < 60, f"recovered in {recovered_in:.1f}s"
    assert (
        "resuming a command acked by a process that stopped"
        in (tmp_path / "second.log").read_text()
    )


# -- start-up and the HTTP surface -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "missing"),
    [
        pytest.param(
            {},
            ["SLACK_BOT_TOKEN", "RETELL_API_KEY", "SLACK_SIGNING_SECRET"],
            id="nothing-set",
        ),
        pytest.param(
            {"SLACK_SIGNING_SECRET": "signing-secret-8f3a1c"},
            ["SLACK_BOT_TOKEN", "RETELL_API_KEY"],
            id="tokens-missing",
        ),
        pytest.param(
            {"SLACK_BOT_TOKEN": "xoxb-bot-token-5d21e9", "RETELL_API_KEY": "key_retell_77ab20"},
            ["SLACK_SIGNING_SECRET"],
            id="signing-secret-missing",
        ),
    ],
)
async def test_missing_settings_stop_start_up_with_one_line_each(
    tmp_path: Path, given: dict[str, str], missing: list[str]
) -> None:
    env = scrubbed_environment(**given, DATABASE_URL=f"sqlite:///{tmp_path / 'bot.db'}")

    code, stdout, stderr = await run_cli(
        sys.executable, "-m", "bot.cli", "serve", "--port", "0", env=env, cwd=tmp_path
    )

    assert code != 0
    lines = [line for line in stderr.splitlines() if line.strip()]
    for variable in missing:
        assert sum(variable in line for line in lines) == 1, f"{variable}: {stderr!r}"
    assert len(lines) == len(missing), f"one line per missing variable, got {stderr!r}"
    for secret in given.values():
        assert secret not in stderr + stdout
    assert "Traceback" not in stderr
    assert not (tmp_path / "bot.db").exists(), "nothing is started before the settings are valid"


async def test_healthz_answers_200_with_json(
    slack: FakeSlack, retell: FakeRetell, database_url: str, tmp_path: Path
) -> None:
    environment = process_environment(slack, retell, database_url)
    async with (
        running(environment, tmp_path / "bot.log") as bot,
        aiohttp.ClientSession() as session,
        session.get(f"{bot.url}/healthz") as response,
    ):
        assert response.status == 200
        assert response.content_type == "application/json"
        assert await response.json() == {"status": "ok"}


async def test_a_command_sent_as_soon_as_the_port_answers_is_acked_in_3_s_and_started(
    slack: FakeSlack, retell: FakeRetell, user: SlackUser, database_url: str, tmp_path: Path
) -> None:
    """Issue 17: `serve` listens before the application is imported; until it is ready,
    `/healthz` says 503 "starting", `/livez` 200, and a `run` command is kept in
    `acked_commands` by the early stage and acked as usual (within Slack's 3 s even when
    start-up takes longer than that), then started once the application is up."""
    environment = process_environment(slack, retell, database_url)
    bot = BotProcess(environment, log_path=tmp_path / "bot.log")
    spawned = time.monotonic()
    try:
        await bot.spawn()
        first = await bot.wait_answering(30, poll=0.01)
        answered = time.monotonic() - spawned
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{bot.url}/livez") as live:
                assert live.status == 200
                liveness = await live.json()
            sent = time.monotonic()
            reply = await user.command(bot.events_url, f"{ENGINE} tc_1 tc_2")
            acked = time.monotonic() - sent
            async with session.get(f"{bot.url}/healthz") as health:
                ready_at_ack = health.status == 200
        assert reply.status == 200 and acked < 3.0, (reply.status, reply.text, acked)
        assert reply.text == "Starting a Retell batch test on `llm_abc` with 2 test cases…"
        if not ready_at_ack:  # the usual case: acked before the application was ready
            assert "command acked during start-up" in (tmp_path / "bot.log").read_text()
        await bot.wait_healthy(30)
        ready = time.monotonic() - spawned
        await slack.wait_for(lambda: len(results(slack)) == 1, timeout=30)
        assert len(retell.batches) == 1, "started once"
        async with aiohttp.ClientSession() as session, session.get(f"{bot.url}/metrics") as got:
            exposition = await got.text()
        acks = re.search(r"^retell_bot_ack_latency_seconds_count (\S+)$", exposition, re.M)
        assert acks and float(acks.group(1)) >= 1, "the early ack is in the ack latency"
    except BaseException as exc:
        exc.add_note(log_tail(tmp_path / "bot.log"))
        raise
    finally:
        assert await bot.stop() == 0
    if first == 503:  # answered before the application was ready (the usual case)
        assert liveness["status"] in {"starting", "ok"}
    assert answered < ready, (answered, ready)
    assert not log_problems(tmp_path / "bot.log")


async def test_healthz_says_starting_until_the_application_is_up(
    slack: FakeSlack, retell: FakeRetell, database_url: str, tmp_path: Path
) -> None:
    """`/healthz` is 503 `{"status": "starting"}` while the application loads (a health check
    that routes traffic waits for 200, as before), `/livez` 200 from the first answer on."""
    environment = process_environment(slack, retell, database_url)
    bot = BotProcess(environment, log_path=tmp_path / "bot.log")
    seen: list[tuple[int, object]] = []
    try:
        await bot.spawn()
        await bot.wait_answering(30, poll=0.01)
        async with aiohttp.ClientSession() as session:
            while not seen or seen[-1][0] != 200:
                async with session.get(f"{bot.url}/healthz") as response:
                    seen.append((response.status, await response.json()))
                async with session.get(f"{bot.url}/livez") as live:
                    assert live.status == 200
                await asyncio.sleep(0.02)
            async with session.get(f"{bot.url}/livez") as live:
                assert await live.json() == {"status": "ok"}
    finally:
        assert await bot.stop() == 0
    assert seen[-1] == (200, {"status": "ok"})
    assert seen[:-1], "answered before it was ready"
    assert all(answer == (503, {"status": "starting"}) for answer in seen[:-1]), seen


async def test_sigterm_during_start_up_exits_0(
    slack: FakeSlack, retell: FakeRetell, database_url: str, tmp_path: Path
) -> None:
    environment = process_environment(slack, retell, database_url)
    bot = BotProcess(environment, log_path=tmp_path / "bot.log")
    await bot.spawn()
    status = await bot.wait_answering(30, poll=0.01)
    code = await bot.stop()
    assert code == 0, log_tail(tmp_path / "bot.log")
    assert status in {200, 503}


async def test_unsigned_request_is_refused_by_the_process(
    slack: FakeSlack, retell: FakeRetell, database_url: str, tmp_path: Path
) -> None:
    environment = process_environment(slack, retell, database_url)
    forger = SlackUser(slack=slack, signing_secret="not-the-secret")
    async with running(environment, tmp_path / "bot.log") as bot:
        reply = await forger.command(bot.events_url, f"{ENGINE} tc_1")
        stale = await SlackUser(slack=slack).post_signed(
            bot.events_url, "command=%2Fretell-test&text=help", timestamp=int(time.time()) - 600
        )
    assert reply.status == 401
    assert stale.status == 401, "a signature older than five minutes is refused"
    assert not retell.batches


# -- the CLI -------------------------------------------------------------------------------------


async def test_db_upgrade_creates_the_schema_and_is_idempotent(
    database_url: str, tmp_path: Path
) -> None:
    env = scrubbed_environment(
        DATABASE_URL=database_url, SLACK_BOT_TOKEN="xoxb-test", RETELL_API_KEY="key_test"
    )
    command = [str(RETELL_BOT)] if RETELL_BOT.exists() else [sys.executable, "-m", "bot.cli"]

    outcomes = [await run_cli(*command, "db", "upgrade", env=env, cwd=tmp_path) for _ in range(2)]

    for code, stdout, stderr in outcomes:
        assert code == 0, stderr
        assert "database is up to date" in stdout
        assert "Traceback" not in stderr
    engine = create_async_engine(async_database_url(database_url))
    try:
        async with engine.connect() as conn:
            versions = (
                await conn.execute(text("SELECT version_num FROM bot_alembic_version"))
            ).all()
            runs = (await conn.execute(text("SELECT count(*) FROM runs"))).scalar_one()
    finally:
        await engine.dispose()
    assert len(versions) == 1, "one schema version recorded, not one per upgrade"
    assert runs == 0


def test_schema_revision_is_the_newest_migration() -> None:
    """Start-up skips Alembic when the database is at SCHEMA_REVISION: it must be the head."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_heads() == [SCHEMA_REVISION]


async def test_demo_runs_the_whole_flow(tmp_path: Path) -> None:
    command = [str(RETELL_BOT)] if RETELL_BOT.exists() else [sys.executable, "-m", "bot.cli"]

    code, stdout, stderr = await run_cli(
        *command, "demo", env=scrubbed_environment(), cwd=tmp_path, timeout=60
    )

    assert code == 0, stderr[-3000:]
    output = stdout.lower()
    for word in ("passed", "failed", "errored", "total"):
        assert word in output, f"{word!r} missing from the demo output"
