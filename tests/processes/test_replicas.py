"""Several `retell-bot serve` replicas on one PostgreSQL database (issue 6, items 1-4).

Each replica is a real child process (`BotProcess`) on the stand-ins of Slack and Retell, all of
them on a fresh PostgreSQL database named the way PaaS hand it out (`postgres://…`). What is
checked is what users would see: every batch's result reaches the channel exactly once (its
status message turned into the result in place, one mention of the requester), whatever
happens to the replicas. The migration tests start from the first schema, on PostgreSQL and
on SQLite.

Everything marked `postgres` is skipped without TEST_DATABASE_URL, and fails the session when
REQUIRE_POSTGRES_TESTS is set and they did not run (see conftest).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import (
    JSON,
    Column,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    inspect,
    make_url,
    select,
    text,
)
from sqlalchemy.engine import Connection

from bot.store import MIGRATIONS, Run, UTCDateTime, create_engine
from bot.testing.process import BotProcess
from bot.testing.retell import FakeRetell
from bot.testing.slack import FakeSlack, SlackUser

from ..bot_processes import (
    RETELL_BOT,
    log_problems,
    log_tail,
    on_both_backends,
    on_postgres,
    process_environment,
    run_cli,
    running,
    scrubbed_environment,
)
from ..helpers import CHANNEL, ENGINE, USER, results, top_level

BATCHES = 20
CASE_SETS = ["tc_1", "tc_1 tc_2", "tc_1 tc_2 tc_3", "tc_2 tc_fail_1", "tc_3 tc_4 tc_error_1"]
COMPLETE_LINE = re.compile(r"run (\d+): batch (\S+) complete \(")
SIGTERM_BOUND_SECONDS = 25.0  # PaaS give 30 s between SIGTERM and SIGKILL


def paas_url(database_url: str) -> str:
    """The fresh test database as a PaaS writes it: `postgres://user@host:port/name`."""
    return make_url(database_url).set(drivername="postgres").render_as_string(hide_password=False)


def paas_or_plain(database_url: str) -> str:
    """PostgreSQL as PaaS spell it; SQLite as users do (`sqlite:///path`)."""
    if database_url.startswith("postgresql"):
        return paas_url(database_url)
    return database_url


def replica_environment(slack: FakeSlack, retell: FakeRetell, database_url: str) -> dict[str, str]:
    """Short follow-ups and a two-second claim lease, so a dead replica's work moves on fast.

    Time runs 50 times faster than with the defaults (first follow-up after 0.2 s instead of
    10 s), and so do the per-minute budgets on Retell requests and Slack edits and posts.
    """
    return process_environment(
        slack,
        retell,
        paas_url(database_url),
        poll_initial_seconds="0.2",
        poll_max_seconds="0.5",
        follow_up_lease_seconds="2",
        retell_requests_per_minute=str(60 * 50),
        slack_edits_per_minute=str(45 * 50),
        slack_posts_per_minute=str(60 * 50),
        log_level="INFO",
    )


@asynccontextmanager
async def replicas(*specs: tuple[dict[str, str], Path]) -> AsyncIterator[list[BotProcess]]:
    """Bot processes started together, as a platform starts replicas, and stopped together.

    Their logs are attached to any failure.
    """
    processes = [BotProcess(environment, log_path=log) for environment, log in specs]
    try:
        async with asyncio.TaskGroup() as group:
            for process in processes:
                group.create_task(process.start())
        yield processes
    except BaseException as exc:
        for _, log in specs:
            exc.add_note(log_tail(log))
        raise
    finally:
        await asyncio.gather(*(process.stop() for process in processes))


class RetellGate:
    """One replica's own road to the Retell stand-in, on which its requests can be held.

    The replica gets `gate.url` as RETELL_BASE_URL; requests pass through to the stand-in
    unchanged unless a `hold` rule matches, which keeps them waiting (for some seconds, or
    until the gate closes). The other replicas are not affected.
    """

    def __init__(self, target: str) -> None:
        self._target = target.rstrip("/")
        self._rules: list[tuple[str, float | None]] = []
        self._held: list[str] = []
        self._changed = asyncio.Condition()
        self._closing = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> RetellGate:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self._closing.set()
        assert self._runner is not None and self._session is not None
        await self._runner.cleanup()
        await self._session.close()

    def hold(self, path_prefix: str, *, seconds: float | None = None) -> None:
        """Hold requests whose path starts with `path_prefix` (first matching rule wins)."""
        self._rules.append((path_prefix, seconds))

    async def wait_holding(self, *path_prefixes: str, timeout: float = 15.0) -> None:
        """Wait until a request whose path starts with one of the prefixes is being held."""
        prefixes = path_prefixes or ("/",)

        def holding() -> bool:
            return any(path.startswith(prefixes) for path in self._held)

        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(holding)

    async def wait_idle(self, timeout: float = 15.0) -> None:
        """Wait until no request is being held any more."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: not self._held)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        rule = next((r for r in self._rules if request.path.startswith(r[0])), None)
        if rule is not None:
            async with self._changed:
                self._held.append(request.path)
                self._changed.notify_all()
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), rule[1])
            finally:
                async with self._changed:
                    self._held.remove(request.path)
                    self._changed.notify_all()
            if request.transport is None or request.transport.is_closing():
                # The client gave up while the request was on its way: like a request still
                # in the network when its connection closed, it never reaches Retell.
                return web.Response(status=499)
        if self._closing.is_set():
            return web.Response(status=503)
        assert self._session is not None
        async with self._session.request(
            request.method,
            self._target + request.path_qs,
            headers={k: v for k, v in request.headers.items() if k.lower() in FORWARDED},
            data=await request.read(),
        ) as answer:
            headers = {k: v for k, v in answer.headers.items() if k.lower() in FORWARDED}
            return web.Response(status=answer.status, body=await answer.read(), headers=headers)


FORWARDED = {"authorization", "content-type", "retry-after", "accept"}


async def start_batches(
    user: SlackUser, bots: list[BotProcess], count: int, *, first: int = 0
) -> None:
    """`count` slash commands at once, spread round-robin over the replicas' /slack/events."""
    replies = await asyncio.gather(
        *(
            user.command(
                bots[n % len(bots)].events_url,
                f"{ENGINE} {CASE_SETS[n % len(CASE_SETS)]}",
            )
            for n in range(first, first + count)
        )
    )
    for reply in replies:
        assert reply.status == 200
        assert "Starting a Retell batch test" in reply.text


async def wait_statuses_posted(slack: FakeSlack, retell: FakeRetell, count: int) -> None:
    """Every batch is created and has its status message (with its batch id) in the channel."""

    def posted() -> bool:
        shown = " ".join(m.text for m in top_level(slack))
        return len(retell.batches) == count and all(b in shown for b in retell.batches)

    await slack.wait_for(posted, timeout=30)


async def wait_all_reported(slack: FakeSlack, count: int, *, timeout: float) -> None:
    """Every status message has become a result and carries its mention."""

    def reported() -> bool:
        finals = results(slack)
        return len(finals) >= count and all(slack.thread(CHANNEL, m.ts) for m in finals)

    await slack.wait_for(reported, timeout=timeout)


def assert_each_reported_once(
    slack: FakeSlack, retell: FakeRetell, *, edited_in_place: bool = True
) -> None:
    """Per batch: one status message, turned into its result in place, and one mention.

    Without `edited_in_place`, a batch may also have had no status message at all and its
    result posted as its one message (a starter killed before posting it, a batch that was
    done by the time another replica took the run over).
    """
    statuses = top_level(slack)
    assert len(statuses) == len(retell.batches), "one status message per batch, none re-posted"
    for batch_id in retell.batches:
        counts = retell.progress(batch_id)
        assert counts.status == "complete"
        [status] = [m for m in statuses if batch_id in m.text]
        if edited_in_place:
            assert status.update_count >= 1, f"{batch_id}: edited in place, not re-posted"
        for phrase in (
            f"{counts.passed} passed",
            f"{counts.failed} failed",
            f"{counts.errored} errored",
            f"{counts.total} total",
        ):
            assert phrase in status.text, f"{phrase!r} missing from {status.text!r}"
        [mention] = slack.thread(CHANNEL, status.ts)
        assert f"<@{USER}>" in mention.text
    assert slack.count("chat.postMessage") == 2 * len(retell.batches), (
        "one status message and one mention per batch"
    )


def completions(log_path: Path) -> Counter[str]:
    """Batch ids this replica logged as complete ("run N: batch X complete (...)")."""
    return Counter(m.group(2) for m in COMPLETE_LINE.finditer(log_path.read_text()))


async def database_runs(database_url: str) -> list[dict[str, Any]]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(select(Run.__table__).order_by(Run.__table__.c.id))
            return [dict(row._mapping) for row in rows]
    finally:
        await engine.dispose()


async def assert_database_agrees(database_url: str, retell: FakeRetell) -> None:
    """One run per batch, every one complete and reported, none left claimed."""
    runs = await database_runs(database_url)
    assert sorted(r["batch_id"] for r in runs) == sorted(retell.batches)
    for run in runs:
        assert run["state"] == "complete", run
        assert run["reported_at"] is not None, run
        assert run["claim"] is None, run


# -- 1. two replicas share the work -----------------------------------------------------------


@on_postgres
async def test_two_replicas_share_the_work_and_report_each_batch_once(
    slack: FakeSlack, retell: FakeRetell, user: SlackUser, database_url: str, tmp_path: Path
) -> None:
    # Completions spread over a few seconds, so that many sweeps (on either replica) find work.
    retell.next_batch_durations = [1.0 + 0.15 * n for n in range(BATCHES)]
    environment = replica_environment(slack, retell, database_url)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]

    async with replicas((environment, logs[0]), (environment, logs[1])) as both:
        await start_batches(user, both, BATCHES)
        await wait_statuses_posted(slack, retell, BATCHES)
        await wait_all_reported(slack, BATCHES, timeout=40)

    assert_each_reported_once(slack, retell)
    assert retell.count("/create-batch-test") == BATCHES
    await assert_database_agrees(database_url, retell)
    done = [completions(log) for log in logs]
    assert sum(done, Counter()) == Counter(set(retell.batches)), (
        "each batch finished once, by one replica"
    )
    assert all(done), f"both replicas finished batches: {[sum(d.values()) for d in done]}"
    for log in logs:
        assert not log_problems(log, until_shutdown=True), log_tail(log)


# -- 2. failover by SIGKILL ---------------------------------------------------------------------


@on_postgres
async def test_kill_9_of_a_replica_holding_the_follow_ups_the_survivor_finishes_all_once(
    slack: FakeSlack, retell: FakeRetell, user: SlackUser, database_url: str, tmp_path: Path
) -> None:
    retell.next_batch_durations = [2.5 + 0.1 * n for n in range(BATCHES)]
    environment = replica_environment(slack, retell, database_url)
    logs = [tmp_path / "victim.log", tmp_path / "survivor.log"]

    async with (
        RetellGate(retell.base_url) as gate,
        replicas(
            (environment | {"RETELL_BASE_URL": gate.url}, logs[0]), (environment, logs[1])
        ) as (victim, survivor),
    ):
        await start_batches(user, [victim, survivor], BATCHES)
        await wait_statuses_posted(slack, retell, BATCHES)
        # The victim's next follow-up stalls at Retell: it then holds the claims on the runs
        # it is refreshing (every running run of the engine) when it dies.
        gate.hold("/")
        await gate.wait_holding()
        assert {r["claim"] for r in await database_runs(database_url)} - {None}, "runs claimed"
        victim.kill()
        assert await victim.wait() == -signal.SIGKILL
        in_flight = [b for b in retell.batches if retell.progress(b).status == "in_progress"]
        assert len(in_flight) >= BATCHES // 2, "killed while most batches were still running"

        await wait_all_reported(slack, BATCHES, timeout=40)

    assert_each_reported_once(slack, retell)
    assert retell.count("/create-batch-test") == BATCHES, "the survivor creates no new batch"
    await assert_database_agrees(database_url, retell)
    done = completions(logs[0]) + completions(logs[1])
    assert done == Counter(set(retell.batches)), "each batch finished once across the replicas"
    assert set(in_flight) <= set(completions(logs[1])), "the survivor finished what was running"
    assert not log_problems(logs[1], until_shutdown=True), log_tail(logs[1])


@on_postgres
async def test_a_replica_killed_again_and_again_at_every_stage_loses_and_doubles_nothing(
    slack: FakeSlack, retell: FakeRetell, user: SlackUser, database_url: str, tmp_path: Path
) -> None:
    """The issue's failover: 20 commands over two replicas, one replica SIGKILLed at each
    stage of a run (its batches created but not yet answered, statuses being posted, batches
    running, results being delivered) and started again each time: every batch gets exactly
    one status message turned into its result and one mention, and no request two batches."""
    retell.next_batch_durations = [3.0 + 0.25 * n for n in range(BATCHES)]
    # Every create is done at once but answered 1.5 s late: the first kill leaves the
    # victim's runs `starting` with their batches already at Retell.
    retell.delay("/create-batch-test", 1.5, times=BATCHES, answer_late=True)
    environment = replica_environment(slack, retell, database_url)
    logs = [tmp_path / f"victim-{n}.log" for n in range(5)] + [tmp_path / "survivor.log"]
    stages: list[tuple[str, Callable[[], bool]]] = [
        ("created, not answered", lambda: len(retell.batches) == BATCHES),
        ("posting statuses", lambda: len(top_level(slack)) >= BATCHES // 2),
        ("running", lambda: len(top_level(slack)) == BATCHES),
        ("delivering", lambda: len(results(slack)) >= 3),
        ("delivering the last", lambda: len(results(slack)) >= BATCHES - 4),
    ]
    async with replicas((environment, logs[0]), (environment, logs[-1])) as (victim, survivor):
        await start_batches(user, [victim, survivor], BATCHES)
        for number, (stage, reached) in enumerate(stages):
            await slack.wait_for(reached, timeout=40)
            victim.kill()
            assert await victim.wait() == -signal.SIGKILL, stage
            victim = BotProcess(environment, log_path=logs[number + 1])
            await victim.start()
        await wait_all_reported(slack, BATCHES, timeout=60)
        await victim.stop()

    assert_each_reported_once(slack, retell, edited_in_place=False)
    assert retell.count("/create-batch-test") == BATCHES, "no request got a second batch"
    await assert_database_agrees(database_url, retell)
    done = sum((completions(log) for log in logs if log.exists()), Counter())
    assert done == Counter(set(retell.batches)), "each batch finished once across the replicas"


# -- 3. migrations from the first schema ---------------------------------------------------------

# The runs table as revision 0001 created it, for writing rows the way the first version did.
FIRST_SCHEMA_RUNS = Table(
    "runs",
    MetaData(),
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("team_id", String(32), nullable=False),
    Column("channel_id", String(32), nullable=False),
    Column("user_id", String(32), nullable=False),
    Column("source", String(16), nullable=False),
    Column("rerun_of", Integer, ForeignKey("runs.id"), nullable=True),
    Column("engine_type", String(32), nullable=False),
    Column("engine_id", String(128), nullable=False),
    Column("engine_version", Integer, nullable=True),
    Column("case_ids", JSON, nullable=False),
    Column("case_count", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("batch_id", String(128), nullable=True, unique=True),
    Column("error", Text, nullable=True),
    Column("passed", Integer, nullable=False),
    Column("failed", Integer, nullable=False),
    Column("errored", Integer, nullable=False),
    Column("total", Integer, nullable=False),
    Column("status_ts", String(32), nullable=True),
    Column("shown_counts", String(64), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime, nullable=True),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("reported_at", UTCDateTime, nullable=True),
    Column("next_check_at", UTCDateTime, nullable=True),
    Column("check_interval", Float, nullable=False),
    Column("checks", Integer, nullable=False),
    Column("claim", String(36), nullable=True),
    Column("claimed_until", UTCDateTime, nullable=True),
    Column("delivery_attempts", Integer, nullable=False),
)
# What a run is, whatever happens to it later: compared before and after for in-flight runs.
IDENTITY = ("id", "team_id", "channel_id", "user_id", "source", "engine_type", "engine_id")
IDENTITY += ("engine_version", "case_ids", "case_count", "batch_id", "created_at", "started_at")


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def old_runs(now: datetime, in_flight_batch: str, status_ts: str) -> list[dict[str, Any]]:
    """Rows the first version wrote: finished ones of every kind, a rerun, one still running."""
    hour = timedelta(hours=1)
    common: dict[str, Any] = {
        "team_id": "T0001",
        "channel_id": CHANNEL,
        "user_id": USER,
        "source": "command",
        "rerun_of": None,
        "engine_type": "retell-llm",
        "engine_id": ENGINE,
        "engine_version": None,
        "error": None,
        "status_ts": None,
        "shown_counts": None,
        "started_at": None,
        "finished_at": None,
        "reported_at": None,
        "next_check_at": None,
        "check_interval": 0.0,
        "checks": 0,
        "claim": None,
        "claimed_until": None,
        "delivery_attempts": 0,
    }
    complete = {
        **common,
        "engine_version": 3,
        "case_ids": ["tc_1", "tc_fail_1"],
        "case_count": 2,
        "state": "complete",
        "batch_id": "test_batch_old0complete",
        "passed": 1,
        "failed": 1,
        "errored": 0,
        "total": 2,
        "status_ts": "1700000000.000100",
        "shown_counts": "1/1/0/2",
        "created_at": now - 3 * hour,
        "started_at": now - 3 * hour + timedelta(seconds=1.25),
        "finished_at": now - 2 * hour,
        "reported_at": now - 2 * hour + timedelta(microseconds=500),
        "next_check_at": None,
        "check_interval": 0.0,
        "checks": 17,
    }
    failed = {
        **common,
        "case_ids": ["tc_nope"],
        "case_count": 1,
        "state": "failed",
        "error": "Test case definitions not found for llm_abc: tc_nope.",
        "passed": 0,
        "failed": 0,
        "errored": 0,
        "total": 0,
        "created_at": now - 2 * hour,
        "finished_at": now - 2 * hour,
        "reported_at": now - 2 * hour,
    }
    timed_out = {
        **common,
        "source": "rerun",
        "rerun_of": 1,  # the complete run above, inserted first
        "case_ids": ["tc_fail_1"],
        "case_count": 1,
        "state": "timed_out",
        "batch_id": "test_batch_old0timedout",
        "passed": 0,
        "failed": 0,
        "errored": 0,
        "total": 1,
        "status_ts": "1700000000.000200",
        "shown_counts": "0/0/0/1",
        "created_at": now - 2 * hour,
        "started_at": now - 2 * hour,
        "finished_at": now - hour,
        "reported_at": now - hour,
        "check_interval": 120.0,
        "checks": 90,
        "delivery_attempts": 1,
    }
    running_run = {
        **common,
        "case_ids": ["tc_1", "tc_2", "tc_3"],
        "case_count": 3,
        "state": "running",
        "batch_id": in_flight_batch,
        "passed": 1,
        "failed": 0,
        "errored": 0,
        "total": 3,
        "status_ts": status_ts,
        "shown_counts": "1/0/0/3",
        "created_at": now - timedelta(minutes=1),
        "started_at": now - timedelta(minutes=1),
        "next_check_at": now - timedelta(seconds=5),
        "check_interval": 10.0,
        "checks": 4,
    }
    return [complete, failed, timed_out, running_run]


async def first_schema_database(database_url: str, rows: list[dict[str, Any]]) -> None:
    """Migrate an empty database to revision 0001 only and write `rows` into it."""
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(lambda sync: command.upgrade(alembic_config(sync), "0001"))
        async with engine.begin() as conn:
            for row in rows:  # one at a time: ids in order, as the old version assigned them
                await conn.execute(FIRST_SCHEMA_RUNS.insert().values(**row))
    finally:
        await engine.dispose()


async def read_upgraded(database_url: str) -> tuple[list[str], set[str], list[dict[str, Any]]]:
    """The recorded schema versions, the runs table's columns, and its rows (old columns)."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            versions = [
                v
                for (v,) in await conn.execute(text("SELECT version_num FROM bot_alembic_version"))
            ]
            columns = await conn.run_sync(
                lambda sync: {c["name"] for c in inspect(sync).get_columns("runs")}
            )
            rows = await conn.execute(select(FIRST_SCHEMA_RUNS).order_by(FIRST_SCHEMA_RUNS.c.id))
            return versions, columns, [dict(r._mapping) for r in rows]
    finally:
        await engine.dispose()


async def post_status_message(slack: FakeSlack, text_: str) -> str:
    """A message the old version posted (chat.postMessage as the bot); returns its ts."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{slack.api_url}chat.postMessage",
            json={"channel": CHANNEL, "text": text_},
            headers={"Authorization": "Bearer xoxb-test"},
        ) as response,
    ):
        body = await response.json()
    assert body["ok"], body
    return str(body["ts"])


@on_both_backends
@pytest.mark.parametrize("how", ["serve", "db upgrade"])
async def test_a_database_at_the_first_schema_is_upgraded_keeping_every_run(
    slack: FakeSlack,
    retell: FakeRetell,
    user: SlackUser,
    database_url: str,
    tmp_path: Path,
    how: str,
) -> None:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head != "0001", "there is a later revision to upgrade to"
    batch_id = retell.create_batch_directly(
        {"type": "retell-llm", "llm_id": ENGINE}, ["tc_1", "tc_2", "tc_3"], duration=0.5
    )
    status_ts = await post_status_message(slack, f"🧪 Running · batch {batch_id}")
    now = datetime.now(UTC).replace(microsecond=123456)
    await first_schema_database(database_url, old_runs(now, batch_id, status_ts))
    _, _, before = await read_upgraded(database_url)

    if how == "db upgrade":
        env = scrubbed_environment(DATABASE_URL=paas_or_plain(database_url))
        cli = [str(RETELL_BOT)] if RETELL_BOT.exists() else [sys.executable, "-m", "bot.cli"]
        code, stdout, stderr = await run_cli(*cli, "db", "upgrade", env=env, cwd=tmp_path)
        assert code == 0, stderr
        assert "database is up to date" in stdout
    else:
        environment = process_environment(slack, retell, paas_or_plain(database_url))
        async with running(environment, tmp_path / "bot.log") as bot:
            # The run the old version left in flight is followed up and reported in place...
            await slack.wait_for(lambda: len(results(slack)) == 1, timeout=20)
            await slack.wait_for(lambda: bool(slack.thread(CHANNEL, status_ts)))
            # ...and new runs get fresh ids next to the old ones.
            reply = await user.command(bot.events_url, f"{ENGINE} tc_4")
            assert reply.status == 200
            await slack.wait_for(lambda: len(results(slack)) == 2, timeout=20)
        assert not log_problems(tmp_path / "bot.log", until_shutdown=True)

    versions, columns, after = await read_upgraded(database_url)
    assert versions == [head], "the schema is at head, recorded once"
    assert set(Run.__table__.columns.keys()) <= columns, "every column of the current model"
    finished, in_flight = before[:3], before[3]
    assert after[:3] == finished, "finished runs are kept exactly as they were"
    kept = after[3]
    assert {k: kept[k] for k in IDENTITY} == {k: in_flight[k] for k in IDENTITY}
    if how == "db upgrade":
        assert after[3:] == [in_flight], "an upgrade alone changes no row"
        return
    assert kept["state"] == "complete"
    assert kept["reported_at"] is not None
    [status] = [m for m in top_level(slack) if m.ts == status_ts]
    assert status.update_count >= 1
    assert "3 passed" in status.text
    assert "3 total" in status.text
    [new] = after[4:]
    assert new["id"] > in_flight["id"]
    assert new["state"] == "complete"


@on_postgres
async def test_a_replica_frozen_while_creating_a_batch_never_has_it_created_twice(
    slack: FakeSlack, retell: FakeRetell, user: SlackUser, database_url: str, tmp_path: Path
) -> None:
    """A replica frozen (SIGSTOP: a stalled VM, a throttled container) while its create is on
    the way to Retell loses its claim; the other replica takes the run over, finds no batch
    at Retell and creates it. Once the frozen replica runs again, its own create must not
    reach Retell: a create is bounded by the claim (`bot.tenure`) and is cancelled once the
    claim may be a peer's. Before that bound, the frozen replica's create went through when
    the road cleared, and the request had two batches (one followed by nobody)."""
    retell.next_batch_durations = [2.0]
    environment = replica_environment(slack, retell, database_url)
    logs = [tmp_path / "frozen.log", tmp_path / "other.log"]
    async with (
        RetellGate(retell.base_url) as gate,
        replicas(
            (environment | {"RETELL_BASE_URL": gate.url}, logs[0]), (environment, logs[1])
        ) as (frozen, other),
    ):
        gate.hold("/create-batch-test", seconds=8.0)
        await start_batches(user, [frozen], 1)
        await gate.wait_holding("/create-batch-test")
        os.kill(frozen.pid, signal.SIGSTOP)
        try:
            await retell.wait_for(lambda: len(retell.batches) == 1, timeout=30)
        finally:
            os.kill(frozen.pid, signal.SIGCONT)
        await wait_all_reported(slack, 1, timeout=30)
        await gate.wait_idle(timeout=15)
        assert frozen.running and other.running

    assert retell.count("/create-batch-test") == 1, "the frozen replica's create never landed"
    assert_each_reported_once(slack, retell, edited_in_place=False)
    assert "claim lapsed while starting" in logs[0].read_text(), log_tail(logs[0])
    await assert_database_agrees(database_url, retell)


# -- 4. SIGTERM with two replicas ---------------------------------------------------------------


@on_postgres
async def test_sigterm_of_a_busy_replica_exits_0_within_25s_and_the_other_finishes_all_once(
    slack: FakeSlack, retell: FakeRetell, user: SlackUser, database_url: str, tmp_path: Path
) -> None:
    """The replica told to stop is mid-way through everything it can be doing.

    Its follow-up sweep hangs on Retell (holding the claims on the runs it refreshes) and a
    batch it was asked to start is being created, slowly. It must still exit 0 within 25 s,
    having finished the start and given back its claims, so that the other replica reports
    every batch, the new one included, exactly once.
    """
    in_flight = 10
    retell.next_batch_durations = [3.0 + 0.1 * n for n in range(in_flight + 1)]
    environment = replica_environment(slack, retell, database_url)
    logs = [tmp_path / "stopped.log", tmp_path / "other.log"]

    async with (
        RetellGate(retell.base_url) as gate,
        replicas(
            (environment | {"RETELL_BASE_URL": gate.url}, logs[0]), (environment, logs[1])
        ) as (stopped, other),
    ):
        await start_batches(user, [stopped, other], in_flight)
        await wait_statuses_posted(slack, retell, in_flight)
        gate.hold("/create-batch-test", seconds=2.0)
        gate.hold("/")  # every follow-up request of this replica hangs until it is gone
        await gate.wait_holding("/v2/list-batch-tests", "/get-batch-test")
        # Nothing is finished yet, and this replica's stalled sweep holds the runs it claimed.
        held = {r["claim"] for r in await database_runs(database_url)} - {None}
        assert held, "the stopped replica holds claims"
        await start_batches(user, [stopped], 1, first=in_flight)
        await gate.wait_holding("/create-batch-test")

        running_at_sigterm = [
            b for b in retell.batches if retell.progress(b).status == "in_progress"
        ]
        asked = time.monotonic()
        code = await stopped.stop(timeout=SIGTERM_BOUND_SECONDS + 10)  # SIGTERM, then wait
        stopped_in = time.monotonic() - asked
        still_held = [r["id"] for r in await database_runs(database_url) if r["claim"] in held]

        assert running_at_sigterm, "batches were still in flight at SIGTERM"
        assert code == 0, log_tail(logs[0])
        assert stopped_in < SIGTERM_BOUND_SECONDS, f"stopped in {stopped_in:.1f}s"
        assert not still_held, f"runs {still_held} left claimed (until the lease runs out)"
        await wait_all_reported(slack, in_flight + 1, timeout=40)

    assert len(retell.batches) == in_flight + 1, "the start under way was finished, not dropped"
    assert_each_reported_once(slack, retell)
    await assert_database_agrees(database_url, retell)
    assert "shutting down" in logs[0].read_text()
    for log in logs:
        assert not log_problems(log, until_shutdown=True), log_tail(log)


@on_postgres
async def test_replicas_starting_at_once_create_the_schedulers_tables_one_at_a_time(
    slack: FakeSlack, retell: FakeRetell, database_url: str
) -> None:
    """APScheduler creates its tables and an enum type as it starts; at once, two replicas
    collided on CREATE TYPE. Four applications start together on a fresh database, in-process
    (so no process start-up spreads them out), and all become healthy."""
    from bot.application import Application
    from bot.store import Store

    from ..helpers import settings_for

    apps = [Application.build(settings_for(slack, retell, database_url)) for _ in range(4)]
    healthy = asyncio.Event()
    started: list[Application] = []

    async def host(app: Application) -> None:
        async with app.running():
            started.append(app)
            if len(started) == len(apps):
                healthy.set()
            await healthy.wait()

    await asyncio.wait_for(asyncio.gather(*(host(app) for app in apps)), timeout=60)
    assert len(started) == 4

    # The lock itself: a second holder waits (seen in pg_locks) until the first lets go.
    first, second = (Store(create_engine(database_url)) for _ in range(2))
    order: list[str] = []

    async def take(store: Store, name: str) -> None:
        async with store.one_replica_at_a_time():
            order.append(name)

    async def waiting_for_lock() -> bool:
        async with first.engine.connect() as conn:
            query = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            return bool((await conn.execute(text(query))).scalar())

    try:
        async with first.one_replica_at_a_time():
            order.append("first")
            waiter = asyncio.create_task(take(second, "second"))
            deadline = time.monotonic() + 10
            while not await waiting_for_lock():
                assert time.monotonic() < deadline, "the second holder never asked for the lock"
                await asyncio.sleep(0.02)
            assert order == ["first"], "the second holder did not wait"
        await asyncio.wait_for(waiter, timeout=10)
        assert order == ["first", "second"]
    finally:
        await first.engine.dispose()
        await second.engine.dispose()
