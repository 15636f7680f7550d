"""The soak: many batches in flight for a long time against the real bot, and nothing lost.

    python -m bench.soak --seconds 600 --in-flight 200 [--database-url sqlite:///...]

The stand-ins of Retell and Slack run in this process; the bot is the real `retell-bot serve` in
a child process (`BotProcess`) on a fresh SQLite file by default — the point is the SQLite default:
WAL, a busy timeout and APScheduler 4's SQLAlchemyDataStore on aiosqlite. Signed slash commands
keep `--in-flight` batches running (one new command each time a requester is mentioned with a
result) for `--seconds`, then sending stops and the rest drains. The checks afterwards:

- every run the bot created has exactly one status message, turned into the final result (its
  fallback text has the counts and the batch id), and exactly one requester mention;
- every batch created at the fake Retell belongs to a run that was reported;
- no run is left unreported in the database (read after the bot stopped);
- the bot's log has no "database is locked", no ERROR and no Traceback.

It prints a table and exits 1 if anything was lost or duplicated or errors were logged.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import re
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import percentile, vm_kib
from bot.store import async_database_url
from bot.testing.process import BotProcess, bot_environment
from bot.testing.retell import FakeRetell
from bot.testing.slack import FakeSlack, Message, SlackUser, new_trigger_id

BATCH_ID = re.compile(r"test_case_batch_job_[0-9a-f]{24}")
ACK_DEADLINE_SECONDS = 3.0  # what Slack gives an app to answer a slash command
PROGRESS_EVERY_SECONDS = 10.0
QUIET_SECONDS = 3.0  # after the drain: time for a late duplicate to show up


@dataclass(frozen=True)
class SoakEngine:
    engine_type: str
    engine_id: str
    versions: int
    case_ids: tuple[str, ...]


@dataclass
class Command:
    text: str
    user_id: str
    channel_id: str
    response_url: str = ""
    # Slack's key of the request: the bot records it on the run it starts (`request_key`).
    trigger_id: str = field(default_factory=new_trigger_id)
    ack_status: int | None = None
    ack_text: str = ""
    ack_seconds: float = 0.0


@dataclass
class Tally:
    """What the driver saw while the soak ran."""

    commands: list[Command] = field(default_factory=list)
    mentions: int = 0
    scanned: int = 0  # how many of FakeSlack's messages were looked at
    rss_samples: list[tuple[float, int]] = field(default_factory=list)


# -- the world -----------------------------------------------------------------------------------


def seed_retell(
    retell: FakeRetell, rng: random.Random, args: argparse.Namespace
) -> list[SoakEngine]:
    """~10 engines (a few conversation flows, some with several versions), their definitions,
    and a share of cases that fail or error."""
    engines: list[SoakEngine] = []
    for number in range(args.engines):
        flow = number % 5 == 4
        engine_type = "conversation-flow" if flow else "retell-llm"
        engine_id = f"conversation_flow_soak{number}" if flow else f"llm_soak{number}"
        versions = 3 if number % 3 == 0 else 1
        retell.add_engine(engine_type, engine_id, versions=versions)  # type: ignore[arg-type]
        ids = tuple(retell.seed(engine_id, args.definitions, prefix=f"tc_{number}_"))
        for case_id in ids:
            roll = rng.random()
            if roll < 0.08:
                retell.set_outcome(case_id, "fail", f"{case_id}: the agent missed the goal")
            elif roll < 0.12:
                retell.set_outcome(case_id, "error", f"{case_id}: the call dropped")
        engines.append(SoakEngine(engine_type, engine_id, versions, ids))
    return engines


def command_text(engine: SoakEngine, rng: random.Random) -> str:
    """A realistic mix: ids with spaces or commas, sometimes `all`, names, or a pinned version."""
    target = engine.engine_id
    if engine.versions > 1 and rng.random() < 0.3:
        target += f"@{rng.randrange(engine.versions)}"
    roll = rng.random()
    if roll < 0.05:
        return f"run {target} all"
    picked = rng.sample(engine.case_ids, rng.randint(1, min(20, len(engine.case_ids))))
    if roll < 0.10:
        names = " ".join(f'"Case {engine.case_ids.index(c) + 1}"' for c in picked[:3])
        return f"{target} {names}"
    separator = "," if roll < 0.4 else " "
    return f"{target} {separator.join(picked)}"


# -- driving -------------------------------------------------------------------------------------


class Driver:
    def __init__(
        self,
        args: argparse.Namespace,
        slack: FakeSlack,
        retell: FakeRetell,
        engines: list[SoakEngine],
        bot: BotProcess,
        session: aiohttp.ClientSession,
        rng: random.Random,
    ) -> None:
        self.args = args
        self.slack = slack
        self.retell = retell
        self.engines = engines
        self.bot = bot
        self.rng = rng
        self.tally = Tally()
        self.channels = [f"C0SOAK{n:03d}" for n in range(args.channels)]
        self.users = [
            SlackUser(
                slack=slack,
                user_id=f"U0SOAK{n:03d}",
                user_name=f"tester{n}",
                channel_id=self.channels[n % len(self.channels)],
                session=session,
            )
            for n in range(args.users)
        ]
        self.sending: set[asyncio.Task[None]] = set()
        self._start_failures_checked = 0.0
        self._start_failures = 0

    def scan(self) -> None:
        """Count requester mentions among the messages posted since the last scan."""
        messages = self.slack.messages
        while self.tally.scanned < len(messages):
            message = messages[self.tally.scanned]
            self.tally.scanned += 1
            if message.is_reply and "<@" in message.text:
                self.tally.mentions += 1

    def start_failures(self) -> int:
        """Commands that will never get a mention: refused at the ack or answered privately."""
        now = time.monotonic()
        if now - self._start_failures_checked >= 1.0:
            self._start_failures_checked = now
            self._start_failures = sum(
                1
                for c in self.tally.commands
                if (c.ack_status not in (None, 200))
                or (c.response_url and self.slack.responses_to(c.response_url))
            )
        return self._start_failures

    def in_flight(self) -> int:
        return len(self.tally.commands) - self.tally.mentions - self.start_failures()

    async def send_one(self) -> None:
        user = self.rng.choice(self.users)
        channel = self.rng.choice(self.channels)
        text = command_text(self.rng.choice(self.engines), self.rng)
        self.retell.next_batch_durations.append(
            self.rng.uniform(self.args.min_duration, self.args.max_duration)
        )
        command = Command(text=text, user_id=user.user_id, channel_id=channel)
        command.response_url = self.slack.new_response_url(channel=channel)
        self.tally.commands.append(command)
        started = time.monotonic()
        try:
            reply = await user.command(
                self.bot.events_url,
                text,
                channel_id=channel,
                response_url=command.response_url,
                trigger_id=command.trigger_id,
            )
            command.ack_status, command.ack_text = reply.status, reply.text
        except aiohttp.ClientError as exc:
            command.ack_status, command.ack_text = -1, repr(exc)
        command.ack_seconds = time.monotonic() - started

    async def drained(self) -> bool:
        """Whether every command sent has had its outcome (a mention, or a refusal)."""
        return self.in_flight() <= 0

    def top_up(self, target: int) -> None:
        for _ in range(max(0, target - self.in_flight())):
            task = asyncio.create_task(self.send_one())
            self.sending.add(task)
            task.add_done_callback(self.sending.discard)

    async def wait_for_news(self, timeout: float) -> None:
        seen = self.tally.scanned
        with contextlib.suppress(TimeoutError):
            await self.slack.wait_for(lambda: len(self.slack.messages) > seen, timeout=timeout)
        self.scan()

    def progress(self, phase: str, started: float) -> None:
        rss = vm_kib(self.bot.pid, "VmRSS")
        self.tally.rss_samples.append((time.monotonic() - started, rss))
        print(
            f"  {time.monotonic() - started:6.0f}s {phase:8} sent={len(self.tally.commands):5d} "
            f"reported={self.tally.mentions:5d} in_flight={self.in_flight():4d} "
            f"bot_rss={rss / 1024:.0f}MiB",
            flush=True,
        )

    async def run(self) -> tuple[float, float]:
        """Keep the batches in flight for --seconds, then drain; returns (sending, total) time."""
        args = self.args
        started = time.monotonic()
        deadline = started + args.seconds
        next_progress = started
        while (now := time.monotonic()) < deadline:
            self.top_up(args.in_flight)
            if now >= next_progress:
                self.progress("sending", started)
                next_progress += PROGRESS_EVERY_SECONDS
            await self.wait_for_news(min(1.0, max(deadline - now, 0.01)))
        sending = time.monotonic() - started
        await asyncio.gather(*self.sending)
        drain_deadline = time.monotonic() + args.drain_seconds
        while not await self.drained() and (now := time.monotonic()) < drain_deadline:
            if now >= next_progress:
                self.progress("draining", started)
                next_progress += PROGRESS_EVERY_SECONDS
            await self.wait_for_news(min(1.0, drain_deadline - now))
        self._start_failures_checked = 0.0
        self.progress("drained", started)
        quiet_until = time.monotonic() + QUIET_SECONDS
        while (now := time.monotonic()) < quiet_until:
            await self.wait_for_news(quiet_until - now)
        return sending, time.monotonic() - started


# -- checking ------------------------------------------------------------------------------------


@dataclass
class RunRow:
    id: int
    channel_id: str
    user_id: str
    batch_id: str | None
    state: str
    status_ts: str | None
    reported_at: Any
    passed: int
    failed: int
    errored: int
    total: int
    error: str | None
    request_key: str | None


RUN_COLUMNS = (
    "id, channel_id, user_id, batch_id, state, status_ts, reported_at, "
    "passed, failed, errored, total, error, request_key"
)


def read_runs_sqlite(path: str) -> list[RunRow]:
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = connection.execute(f"SELECT {RUN_COLUMNS} FROM runs ORDER BY id").fetchall()
    finally:
        connection.close()
    return [RunRow(*row) for row in rows]


async def read_runs_sqlalchemy(url: str) -> list[RunRow]:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(async_database_url(url))
    try:
        async with engine.connect() as conn:
            result = await conn.execute(text(f"SELECT {RUN_COLUMNS} FROM runs ORDER BY id"))
            rows: list[tuple[Any, ...]] = [tuple(row) for row in result.all()]
            return [RunRow(*row) for row in rows]
    finally:
        await engine.dispose()


def sqlite_path(url: str) -> str | None:
    for prefix in ("sqlite:///", "sqlite+aiosqlite:///"):
        if url.startswith(prefix):
            return url[len(prefix) :]
    return None


@dataclass
class Findings:
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    unreported: list[str] = field(default_factory=list)
    start_failed: list[str] = field(default_factory=list)
    timed_out: int = 0
    completed: int = 0
    latencies: list[float] = field(default_factory=list)


def check(
    runs: list[RunRow], slack: FakeSlack, retell: FakeRetell, commands: list[Command]
) -> Findings:
    found = Findings()
    by_place: dict[tuple[str, str], Message] = {}
    top_level_per_batch: Counter[str] = Counter()
    mentions: dict[tuple[str, str], list[Message]] = {}
    for message in slack.messages:
        if message.deleted:
            continue
        if message.is_reply:
            mentions.setdefault((message.channel, message.thread_ts or ""), []).append(message)
        else:
            by_place[(message.channel, message.ts)] = message
            for batch_id in set(BATCH_ID.findall(message.text)):
                top_level_per_batch[batch_id] += 1
    completed_ms = {
        batch_id: info["completed_ms"] for batch_id, info in retell.stats()["batches"].items()
    }

    for run in runs:
        name = f"run {run.id} ({run.batch_id})"
        scheduled = (run.request_key or "").startswith(SCHEDULED)
        if run.state == "failed":
            found.start_failed.append(f"{name}: {run.error}")
            continue
        if run.state not in ("complete", "timed_out") or run.reported_at is None:
            found.unreported.append(f"{name}: state {run.state}, reported_at {run.reported_at}")
        shown = by_place.get((run.channel_id, run.status_ts or ""))
        phrases = (
            f"{run.passed} passed",
            f"{run.failed} failed",
            f"{run.errored} errored",
            f"{run.total} total",
            run.batch_id or "?",
        )
        if shown is None or not all(p in shown.text for p in phrases):
            found.lost.append(f"{name}: no final result message in {run.channel_id}")
            continue
        replies = mentions.get((run.channel_id, shown.ts), [])
        mentioned = [m for m in replies if f"<@{run.user_id}>" in m.text]
        if scheduled:
            pass  # a firing mentions nobody unless its schedule says so (`mention=`)
        elif not mentioned:
            found.lost.append(f"{name}: requester never mentioned")
        elif len(mentioned) > 1:
            found.duplicated.append(f"{name}: requester mentioned {len(mentioned)} times")
        if top_level_per_batch[run.batch_id or ""] > 1:
            found.duplicated.append(
                f"{name}: {top_level_per_batch[run.batch_id or '']} top-level messages"
            )
        found.timed_out += run.state == "timed_out"
        found.completed += run.state == "complete"
        done_ms = completed_ms.get(run.batch_id or "")
        if done_ms is not None:
            found.latencies.append(shown.updated_at - done_ms / 1000)

    known = {run.batch_id for run in runs if run.batch_id}
    for batch_id in retell.batches:
        if batch_id not in known:
            found.lost.append(f"batch {batch_id} created at Retell but unknown to the bot")
    # Each command against the run it started, by Slack's trigger_id (the run's request_key).
    started = {run.request_key for run in runs}
    sent = {c.trigger_id for c in commands}
    for command in commands:
        acked = command.ack_status == 200 and "Starting" in command.ack_text
        told = slack.responses_to(command.response_url) if command.response_url else []
        not_started = NOT_STARTED in command.ack_text or any(NOT_STARTED in str(b) for b in told)
        if command.trigger_id in started:
            if not_started:
                found.duplicated.append(
                    f"command {command.trigger_id[-8:]}: told it was not started, yet it ran"
                )
        elif acked and not told:
            found.lost.append(f"command {command.trigger_id[-8:]}: acknowledged, never started")
    for run in runs:
        if run.request_key not in sent and not (run.request_key or "").startswith(SCHEDULED):
            found.duplicated.append(f"run {run.id}: started by no command ({run.request_key})")
    return found


# The request key of a schedule's firing (`schedules.fire`): it answers to no command.
SCHEDULED = "schedule:"
# What the bot tells a requester whose command found the database down
# (`bot.runs.replies.database_down`).
NOT_STARTED = "so this batch test was not started"


def log_findings(log_path: Path) -> tuple[int, list[str]]:
    locked = 0
    errors: list[str] = []
    for line in log_path.read_text(errors="replace").splitlines():
        if "database is locked" in line.lower():
            locked += 1
        if " ERROR " in line or " CRITICAL " in line or "Traceback" in line:
            errors.append(line)
    return locked, errors


# -- main ----------------------------------------------------------------------------------------


async def soak(args: argparse.Namespace, workdir: Path) -> int:
    rng = random.Random(args.seed)
    database_url = args.database_url or f"sqlite:///{workdir / 'soak.db'}"
    log_path = workdir / "bot.log"
    async with FakeSlack() as slack, FakeRetell(batch_seconds=args.max_duration) as retell:
        engines = seed_retell(retell, rng, args)
        environment = bot_environment(
            slack_api_url=slack.api_url,
            retell_base_url=retell.base_url,
            database_url=database_url,
            poll_initial_seconds=str(args.poll_initial),
            poll_max_seconds=str(args.poll_max),
            # The Retell budget scales with the time compression of the poll settings. Slack's
            # edit pacing is left out: the soak's churn (hundreds of results a minute in one
            # workspace) is above Slack's real limit, and pacing is measured elsewhere.
            retell_requests_per_minute=str(60 * 10 / args.poll_initial),
            slack_edits_per_minute="100000",
            slack_posts_per_minute="100000",
            max_runs_per_user_per_hour="0",
            log_level="INFO",
        )
        bot = BotProcess(environment, log_path=log_path)
        print(
            f"soak: {args.seconds:g}s with {args.in_flight} batches in flight, "
            f"{len(engines)} engines x {args.definitions} definitions, batches "
            f"{args.min_duration:g}-{args.max_duration:g}s, polls {args.poll_initial:g}-"
            f"{args.poll_max:g}s\n  database {database_url}\n  bot log  {log_path}",
            flush=True,
        )
        await bot.start()
        bot_pid = bot.pid
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=args.in_flight + 10)
        ) as session:
            driver = Driver(args, slack, retell, engines, bot, session, rng)
            sending, total = await driver.run()
        peak_rss = vm_kib(bot_pid, "VmHWM")
        asked = time.monotonic()
        exit_code = await bot.stop(timeout=30)
        stop_seconds = time.monotonic() - asked

        path = sqlite_path(database_url)
        runs = read_runs_sqlite(path) if path else await read_runs_sqlalchemy(database_url)
        commands = driver.tally.commands
        found = check(runs, slack, retell, commands)
        locked, errors = log_findings(log_path)
        minutes = total / 60
        retell_paths = retell.stats()["requests"]["by_path"]
        follow_ups = retell_paths.get("/v2/list-batch-tests", 0) + retell_paths.get(
            "/get-batch-test", 0
        )
        slack_counts = Counter(call.method for call in slack.calls)
        acks = [c.ack_seconds for c in commands if c.ack_status is not None]
        bad_acks = [c for c in commands if c.ack_status != 200]
        rss = driver.tally.rss_samples

    rows = [
        ("batches started (runs)", f"{len(runs)}"),
        ("commands sent / acked 200", f"{len(commands)} / {len(commands) - len(bad_acks)}"),
        ("completed (reported)", f"{found.completed}"),
        ("lost", f"{len(found.lost)}"),
        ("duplicated", f"{len(found.duplicated)}"),
        ("unreported in database", f"{len(found.unreported)}"),
        ("failed to start", f"{len(found.start_failed)}"),
        ("timed out", f"{found.timed_out}"),
        ("Retell requests / min", f"{len(retell.requests) / minutes:.0f}"),
        (
            "  create / list / get",
            f"{retell_paths.get('/create-batch-test', 0)} / "
            f"{retell_paths.get('/v2/list-batch-tests', 0)} / "
            f"{retell_paths.get('/get-batch-test', 0)}",
        ),
        (
            "  follow-up (list + get) / min",
            f"{follow_ups / minutes:.0f}",
        ),
        ("Slack calls / min", f"{len(slack.calls) / minutes:.0f}"),
        (
            "  postMessage / update",
            f"{slack_counts['chat.postMessage']} / {slack_counts['chat.update']}",
        ),
        ("result noticed after (p50/p95/max)", _seconds(found.latencies)),
        ("ack latency (p50/p95/max)", _seconds(acks)),
        ("acks over 3 s", f"{sum(a > ACK_DEADLINE_SECONDS for a in acks)}"),
        ("bot peak RSS (VmHWM)", f"{peak_rss / 1024:.0f} MiB"),
        (
            "bot RSS first / last sample",
            f"{rss[0][1] / 1024:.0f} / {rss[-1][1] / 1024:.0f} MiB" if rss else "-",
        ),
        ('"database is locked" lines', f"{locked}"),
        ("ERROR / Traceback lines", f"{len(errors)}"),
        ("bot exit on SIGTERM", f"{exit_code} after {stop_seconds:.1f}s"),
        ("wall time (sending / total)", f"{sending:.0f}s / {total:.0f}s"),
    ]
    width = max(len(label) for label, _ in rows)
    print()
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")
    print()

    problems = [
        *(f"lost: {x}" for x in found.lost),
        *(f"duplicated: {x}" for x in found.duplicated),
        *(f"unreported: {x}" for x in found.unreported),
        *(f"failed to start: {x}" for x in found.start_failed),
        *(f"ack {c.ack_status}: {c.text!r} -> {c.ack_text[:120]!r}" for c in bad_acks),
        *(f"log: {line}" for line in errors),
    ]
    if locked:
        problems.append(f'log: {locked} "database is locked" lines')
    if exit_code != 0:
        print(
            f"WARNING: the bot did not exit cleanly on SIGTERM (code {exit_code}); see the bot log",
            file=sys.stderr,
        )
    if problems:
        print(f"FAIL: {len(problems)} problems; the first ones:", file=sys.stderr)
        for line in problems[:20]:
            print(f"  {line}", file=sys.stderr)
        print(f"files kept in {workdir}", file=sys.stderr)
        return 1
    print("OK: nothing lost, nothing duplicated, no errors logged")
    return 0


def _seconds(values: list[float]) -> str:
    if not values:
        return "-"
    return (
        f"{statistics.median(values):.1f}s / {percentile(values, 0.95):.1f}s / {max(values):.1f}s"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="how long to keep sending")
    parser.add_argument("--in-flight", type=int, default=200, help="batches kept in flight")
    parser.add_argument("--database-url", default="", help="default: a fresh SQLite file")
    parser.add_argument("--engines", type=int, default=10)
    parser.add_argument("--definitions", type=int, default=30, help="per engine")
    parser.add_argument("--users", type=int, default=25)
    parser.add_argument("--channels", type=int, default=10)
    parser.add_argument("--min-duration", type=float, default=5.0, help="batch seconds")
    parser.add_argument("--max-duration", type=float, default=40.0, help="batch seconds")
    parser.add_argument("--poll-initial", type=float, default=1.0, help="POLL_INITIAL_SECONDS")
    parser.add_argument("--poll-max", type=float, default=5.0, help="POLL_MAX_SECONDS")
    parser.add_argument(
        "--drain-seconds", type=float, default=None, help="default: longest batch + 60 s"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary dir")
    args = parser.parse_args(argv)
    if args.drain_seconds is None:
        args.drain_seconds = args.max_duration + 60.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="retell-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    return asyncio.run(soak(args, workdir))


if __name__ == "__main__":
    raise SystemExit(main())
