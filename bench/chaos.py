"""The chaos run: two replicas on PostgreSQL while everything they depend on fails in turn.

    python -m bench.chaos --minutes 10
    python -m bench.chaos --seconds 60
    python -m bench.chaos --smoke        # what `python -m bench --smoke` (and so CI) runs

A PostgreSQL cluster of the run's own (`ThrowawayPostgres`: it is stopped on purpose, so never
the shared one), the stand-ins of Slack and Retell in this process, and two `retell-bot serve`
replicas. The soak's driver (`bench.soak.Driver`) keeps `--in-flight` batches running, its
commands spread over the replicas that are up, while a seeded schedule of faults runs:

- the bots' database connections killed (`pg_terminate_backend`) every few seconds;
- one database outage of `--outage-seconds` (the server stopped, then started);
- Slack answering 503 to everything for a few seconds, and 429 bursts on `chat.update`;
- Retell answering 5xx on the follow-up calls for a few seconds, and answers slower than
  `RETELL_TIMEOUT_SECONDS`;
- one replica SIGKILLed, and started again a few seconds later.

Then sending stops, the faults end, everything drains and both replicas get SIGTERM. The checks
are the soak's (read from the database afterwards): every run one result and one mention, no
batch unknown to the bot. Commands told "not started" while the database was down are counted
apart: the user was told. It reports exits nobody asked for, and how long the slowest result
waited once its dependencies were back: for each run, the time its result reached Slack minus
the later of its batch's completion and the end of the last fault window that overlapped the
wait. Exit code 1 on anything lost or duplicated, or a replica that exited by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

from bench.common import print_table, run_main
from bench.soak import BATCH_ID, Driver, check, log_findings, read_runs_sqlalchemy, seed_retell
from bot.store import async_database_url
from bot.testing.postgres import ThrowawayPostgres
from bot.testing.process import BotProcess, bot_environment
from bot.testing.retell import FakeRetell
from bot.testing.slack import FakeSlack

DATABASE = "retell_chaos"
# Schedules firing every minute through the faults, in a channel of their own: each slot must
# fire exactly once (late if the database was down at the time), none missed or doubled.
SCHEDULES = 2
SCHEDULE_CHANNEL = "C0CHAOSSCHD"
SLOT = timedelta(minutes=1)
KILL_EVERY_SECONDS = 4.0
RETELL_TIMEOUT_SECONDS = 2.0


@dataclass
class Chaos:
    """What the fault schedule did, and when (seconds since the start)."""

    started: float = field(default_factory=time.monotonic)
    windows: list[tuple[str, float, float]] = field(default_factory=list)
    killed_connections: int = 0
    kills: int = 0

    def now(self) -> float:
        return time.monotonic() - self.started

    def note(self, what: str, seconds: float = 0.0) -> None:
        start = self.now()
        self.windows.append((what, start, start + seconds))
        print(f"  {start:6.1f}s fault: {what}" + (f" for {seconds:.0f}s" if seconds else ""))


class Replicas:
    """The two bot processes; a SIGKILLed one is replaced by a new process on the same log."""

    def __init__(self, environment: dict[str, str], workdir: Path) -> None:
        self._environment = environment
        self._workdir = workdir
        self.logs: list[Path] = []
        self.bots = [self._new(n) for n in range(2)]
        self.ours: set[int] = set()  # pids we killed or stopped
        self.unexpected_exits: list[str] = []

    def _new(self, number: int) -> BotProcess:
        log = self._workdir / f"bot-{number}-{len(self.logs)}.log"
        self.logs.append(log)
        return BotProcess(self._environment, log_path=log)

    def up(self) -> list[BotProcess]:
        return [bot for bot in self.bots if bot.running]

    async def kill_and_restart(self, number: int, chaos: Chaos, down_seconds: float) -> None:
        victim = self.bots[number]
        self.ours.add(victim.pid)
        chaos.note(f"replica {number} SIGKILLed", down_seconds)
        victim.kill()
        await victim.wait()
        await asyncio.sleep(down_seconds)  # deliberately down for a while
        self.bots[number] = self._new(number)
        await self.bots[number].start(timeout=60)

    async def watch(self) -> None:
        """Notice any replica that exits without being told to."""
        while True:
            for bot in self.bots:
                if not bot.running and bot.pid not in self.ours:
                    self.unexpected_exits.append(f"pid {bot.pid}")
                    self.ours.add(bot.pid)
            await asyncio.sleep(0.5)

    async def stop(self) -> list[int]:
        for bot in self.bots:
            self.ours.add(bot.pid)
        return list(await asyncio.gather(*(bot.stop(timeout=40) for bot in self.bots)))


class ChaosDriver(Driver):
    """The soak's driver, sending to whichever replica is up."""

    replicas: Replicas

    async def send_one(self) -> None:
        up = self.replicas.up() or self.replicas.bots
        self.bot = self.rng.choice(up)
        await super().send_one()

    database_url: str

    async def drained(self) -> bool:
        """Also every run in the database reported and mentioned: a requester told "queued"
        (the database was down) counts as answered above, but its run is still to come."""
        if not await super().drained():
            return False
        return await owed_runs(self.database_url) == 0

    def progress(self, phase: str, started: float) -> None:
        print(
            f"  {time.monotonic() - started:6.0f}s {phase:8} sent={len(self.tally.commands):5d} "
            f"reported={self.tally.mentions:5d} in_flight={self.in_flight():4d} "
            f"replicas up={len(self.replicas.up())}",
            flush=True,
        )


async def owed_runs(database_url: str) -> int:
    """Runs not failed whose result or thread reply is still owed (-1: cannot tell now)."""
    engine = create_async_engine(async_database_url(database_url))
    try:
        async with engine.connect() as conn:
            owed = await conn.execute(
                text(
                    "SELECT count(*) FROM runs WHERE state <> 'failed' "
                    "AND (reported_at IS NULL OR mention_pending)"
                )
            )
            return int(owed.scalar_one())
    except OSError:
        return -1
    finally:
        await engine.dispose()


async def kill_connections(admin_url: str) -> int:
    engine = create_async_engine(async_database_url(admin_url), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            killed = await conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = :name"
                ),
                {"name": DATABASE},
            )
            return int(killed.scalar_one())
    except OSError:
        return 0  # the server is down at the moment: nothing to kill
    finally:
        await engine.dispose()


async def faults(
    args: argparse.Namespace,
    rng: random.Random,
    server: ThrowawayPostgres,
    slack: FakeSlack,
    retell: FakeRetell,
    replicas: Replicas,
    chaos: Chaos,
) -> None:
    """The seeded schedule of faults over `args.seconds`; connection kills throughout."""
    span = args.seconds

    async def at(fraction: float) -> None:
        wait = span * (fraction + rng.uniform(-0.03, 0.03)) - chaos.now()
        await asyncio.sleep(max(wait, 0.0))

    async def connection_kills() -> None:
        while chaos.now() < span:
            await asyncio.sleep(rng.uniform(0.5, 1.5) * KILL_EVERY_SECONDS)
            chaos.killed_connections += await kill_connections(server.url)
            chaos.kills += 1

    async def timeline() -> None:
        await at(0.15)
        seconds = rng.uniform(3, 6)
        chaos.note("Slack answers 503 to every call", seconds)
        slack.fail_next("*", status=503, times=1_000_000)
        await asyncio.sleep(seconds)
        slack.clear_faults()
        await at(0.25)
        chaos.note("Slack 429 (Retry-After 1 s) on chat.update, 40 calls")
        slack.fail_next("chat.update", status=429, retry_after=1.0, times=40)
        await at(0.35)
        chaos.note("database down", args.outage_seconds)
        await server.stop()
        await asyncio.sleep(args.outage_seconds)
        await server.start()
        await at(0.6)
        seconds = rng.uniform(3, 6)
        chaos.note("Retell 5xx on follow-ups, and answers slower than the timeout", seconds)
        retell.fail_next("/v2/list-batch-tests", 500, times=1_000_000)
        retell.fail_next("/get-batch-test", 503, times=1_000_000)
        retell.delay("/v2/list-test-runs", RETELL_TIMEOUT_SECONDS + 1, times=10)
        await asyncio.sleep(seconds)
        retell.clear_faults()
        await at(0.75)
        await replicas.kill_and_restart(rng.randrange(2), chaos, rng.uniform(2, 5))

    killer = asyncio.create_task(connection_kills())
    try:
        await timeline()
        await killer
    finally:
        killer.cancel()
        slack.clear_faults()
        retell.clear_faults()


def longest_wait(
    runs_latencies: list[tuple[float, float]], windows: list[tuple[str, float, float]]
) -> float:
    """The longest time a result took once nothing it waited on was failing any more.

    `runs_latencies` are (completed, shown) wall-clock pairs, `windows` fault windows on the
    same clock.
    """
    longest = 0.0
    for completed, shown in runs_latencies:
        back = max(
            [completed] + [end for _, start, end in windows if start <= shown and end >= completed]
        )
        longest = max(longest, shown - back)
    return longest


def result_times(slack: FakeSlack) -> dict[str, float]:
    """When each batch's final result was last written to its message (wall clock)."""
    times: dict[str, float] = {}
    for message in slack.messages:
        if not message.is_reply and " total" in message.text:
            for batch_id in BATCH_ID.findall(message.text):
                times[batch_id] = message.updated_at
    return times


async def add_schedules(driver: ChaosDriver) -> None:
    """`schedule add "every 1m" …` typed into Slack, as a team sets up a nightly run."""
    user = driver.users[0]
    for number in range(SCHEDULES):
        engine = driver.engines[number % len(driver.engines)]
        cases = " ".join(engine.case_ids[:2])
        reply = await user.command(
            driver.replicas.bots[0].events_url,
            f'schedule add "every 1m" {engine.engine_id} {cases} name=chaos-{number}',
            channel_id=SCHEDULE_CHANNEL,
        )
        if reply.status != 200:
            raise RuntimeError(f"schedule add answered {reply.status}: {reply.text}")
    database = create_async_engine(async_database_url(driver.database_url))
    try:
        for _ in range(100):
            async with database.connect() as conn:
                added = (await conn.execute(text("SELECT count(*) FROM run_schedules"))).scalar()
            if added == SCHEDULES:
                return
            await asyncio.sleep(0.1)
        raise RuntimeError("the chaos run's schedules were not added")
    finally:
        await database.dispose()


@dataclass
class Firings:
    """Each schedule's slots, as its firings in the `runs` table show them."""

    expected: int = 0
    fired: int = 0
    late: int = 0
    missed: list[str] = field(default_factory=list)
    doubled: list[str] = field(default_factory=list)


async def schedule_firings(database_url: str, until: datetime) -> Firings:
    """Slots of every minute from a schedule's first (the whole minute after the next one,
    `when._next_minute` + 1 min) to a minute before `until`: each fired exactly once."""
    engine = create_async_engine(async_database_url(database_url))
    try:
        async with engine.connect() as conn:
            schedules = (await conn.execute(text("SELECT id, created_at FROM run_schedules"))).all()
            firings = (
                await conn.execute(
                    text(
                        "SELECT schedule_id, scheduled_for, created_at FROM runs "
                        "WHERE schedule_id IS NOT NULL"
                    )
                )
            ).all()
    finally:
        await engine.dispose()
    found = Firings()
    for schedule_id, created in schedules:
        created = _utc(created)
        slot = created.replace(second=0, microsecond=0) + 2 * SLOT
        mine = [(_utc(due), _utc(made)) for sid, due, made in firings if sid == schedule_id]
        per_slot: dict[datetime, int] = {}
        for due, made in mine:
            per_slot[due] = per_slot.get(due, 0) + 1
            found.late += made - due > timedelta(seconds=30)
        found.fired += len(mine)
        while slot <= until - SLOT:
            found.expected += 1
            count = per_slot.get(slot, 0)
            if count == 0:
                found.missed.append(f"schedule {schedule_id}: slot {slot:%H:%M} never fired")
            elif count > 1:
                found.doubled.append(f"schedule {schedule_id}: slot {slot:%H:%M} fired {count}x")
            slot += SLOT
    return found


def _utc(moment: Any) -> datetime:
    """A timestamp column as read back (a string on some drivers), in UTC."""
    value = datetime.fromisoformat(moment) if isinstance(moment, str) else moment
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


async def chaos_run(args: argparse.Namespace, workdir: Path) -> int:
    rng = random.Random(args.seed)
    chaos = Chaos()
    async with (
        ThrowawayPostgres() as server,
        FakeSlack() as slack,
        FakeRetell(batch_seconds=args.max_duration) as retell,
    ):
        admin = create_async_engine(async_database_url(server.url), isolation_level="AUTOCOMMIT")
        async with admin.connect() as conn:
            await conn.execute(text(f"CREATE DATABASE {DATABASE}"))
        await admin.dispose()
        database_url = make_url(server.url).set(database=DATABASE).render_as_string(False)
        engines = seed_retell(retell, rng, args)
        environment = bot_environment(
            slack_api_url=slack.api_url,
            retell_base_url=retell.base_url,
            database_url=database_url,
            poll_initial_seconds=str(args.poll_initial),
            poll_max_seconds=str(args.poll_max),
            follow_up_lease_seconds="3",
            retell_timeout_seconds=str(RETELL_TIMEOUT_SECONDS),
            retell_requests_per_minute=str(60 * 10 / args.poll_initial),
            slack_edits_per_minute="100000",
            slack_posts_per_minute="100000",
            max_runs_per_user_per_hour="0",
            schedule_min_interval_minutes="1",
            log_level="INFO",
        )
        replicas = Replicas(environment, workdir)
        print(
            f"chaos: {args.seconds:g}s, {args.in_flight} batches in flight over 2 replicas, "
            f"database outage {args.outage_seconds:g}s\n  files in {workdir}",
            flush=True,
        )
        await asyncio.gather(*(bot.start(timeout=60) for bot in replicas.bots))
        watcher = asyncio.create_task(replicas.watch())
        chaos.started = time.monotonic()
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=args.in_flight + 10)
        ) as session:
            driver = ChaosDriver(args, slack, retell, engines, replicas.bots[0], session, rng)
            driver.replicas = replicas
            driver.database_url = database_url
            await add_schedules(driver)
            schedule = asyncio.create_task(
                faults(args, rng, server, slack, retell, replicas, chaos)
            )
            sending, total = await driver.run()
            sending_ended = datetime.now(UTC) - timedelta(seconds=total - sending)
            await schedule
        watcher.cancel()
        exit_codes = await replicas.stop()
        runs = await read_runs_sqlalchemy(database_url)
        firings = await schedule_firings(database_url, sending_ended)

        commands = driver.tally.commands
        told = [c for c in commands if c.response_url and slack.responses_to(c.response_url)]
        found = check(runs, slack, retell, commands)
        offset = time.time() - time.monotonic()
        windows = [
            (w, s + chaos.started + offset, e + chaos.started + offset) for w, s, e in chaos.windows
        ]
        completed_ms = {b: i["completed_ms"] for b, i in retell.stats()["batches"].items()}
        shown = result_times(slack)
        pairs = [(completed_ms[b] / 1000, shown[b]) for b in shown if b in completed_ms]
        acked = sum(c.ack_status == 200 for c in commands)
        errors = [line for log in replicas.logs if log.exists() for line in log_findings(log)[1]]
        minutes = total / 60

    print_table(
        "Chaos run",
        ["", "value"],
        [
            ("commands sent / acked 200", f"{len(commands)} / {acked}"),
            ("  not acked (sent to a replica that was down)", len(commands) - acked),
            ("  told plainly they were not started", len(told)),
            ("runs started / reported", f"{len(runs)} / {found.completed + found.timed_out}"),
            ("lost", len(found.lost)),
            ("duplicated", len(found.duplicated)),
            ("unreported in database", len(found.unreported)),
            (
                "schedule slots due / fired (late)",
                f"{firings.expected} / {firings.fired} ({firings.late})",
            ),
            ("  slots missed / doubled", f"{len(firings.missed)} / {len(firings.doubled)}"),
            ("replica exits nobody asked for", len(replicas.unexpected_exits)),
            ("replica exit codes on SIGTERM", " ".join(map(str, exit_codes))),
            (
                "connection kills (connections killed)",
                f"{chaos.kills} ({chaos.killed_connections})",
            ),
            ("other faults", len(chaos.windows)),
            ("longest wait once dependencies were back", f"{longest_wait(pairs, windows):.1f}s"),
            ("Retell requests / min", f"{len(retell.requests) / minutes:.0f}"),
            ("ERROR lines in the replicas' logs", len(errors)),
            ("wall time (sending / total)", f"{sending:.0f}s / {total:.0f}s"),
        ],
    )
    problems = [
        *found.lost,
        *found.duplicated,
        *found.unreported,
        *firings.missed,
        *firings.doubled,
        *replicas.unexpected_exits,
    ]
    for line in problems[:20]:
        print(f"  problem: {line}")
    print(
        "OK: nothing lost, nothing duplicated, no slot missed, no replica died by itself"
        if not problems
        else f"FAIL: {len(problems)} problems; files in {workdir}"
    )
    return 1 if problems else 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--minutes", type=float, default=None)
    parser.add_argument(
        "--seconds", type=float, default=120.0, help="how long faults and sending go on"
    )
    parser.add_argument("--smoke", action="store_true", help="a short run for CI (about a minute)")
    parser.add_argument("--in-flight", type=int, default=200)
    parser.add_argument("--outage-seconds", type=float, default=30.0)
    parser.add_argument("--engines", type=int, default=6)
    parser.add_argument("--definitions", type=int, default=20, help="per engine")
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--channels", type=int, default=5)
    parser.add_argument("--min-duration", type=float, default=5.0, help="batch seconds")
    parser.add_argument("--max-duration", type=float, default=20.0, help="batch seconds")
    parser.add_argument("--poll-initial", type=float, default=1.0)
    parser.add_argument("--poll-max", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.minutes is not None:
        args.seconds = args.minutes * 60
    if args.smoke:
        args.seconds, args.in_flight, args.outage_seconds = 30.0, 40, 6.0
        args.min_duration, args.max_duration = 2.0, 6.0
    args.drain_seconds = args.max_duration + args.outage_seconds + 60.0
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="retell-chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(KeyboardInterrupt):
        return run_main(lambda _argv: chaos_run(args, workdir), argv)
    return 130


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
