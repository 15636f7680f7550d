"""Many workspaces (issue 18): 1,000 installed workspaces with 10 runs in flight each.

    python -m bench.workspaces [--workspaces 1000] [--runs 10] [--probes 200] [--smoke]
                               [--configs one-sqlite,many-sqlite,many-pg,many-pg-2]

The bot serves `--workspaces` workspaces in distribution mode (SLACK_CLIENT_ID/SECRET and
ENCRYPTION_KEYS, no SLACK_BOT_TOKEN; RETELL_API_KEY the Retell key they all share), each
installed with a token of its own: in the bot's database (slack-sdk's installation store, as
an OAuth install leaves it, and the `workspaces` row) and at the fake Slack. `--runs` runs are
in flight in each (10,000 by default), found in the database at start-up as after a restart,
spread over 10 engines; nearly all are on batches of hours, `--probes` of them (one per
workspace, in as many workspaces) on batches that complete while measured, 30 to 90 s after
the bot starts. Time is real (default settings: polls every 10 s, 60 Retell requests a minute),
as in `bench/capacity.py`. Each configuration is a fresh database and fresh stand-ins:

- `one-sqlite`, `one-pg`, `one-pg-2`: the same load in one workspace (SLACK_BOT_TOKEN mode), the
  cost of many workspaces is the difference; Slack's per-workspace budgets are raised there
  (times `--probes`: the fake Slack enforces none) so that the probes' results, all in one
  workspace, do not wait for Slack's 45 edits a minute as they never do in 1,000;
- `many-sqlite`, `many-pg` (one replica on PostgreSQL), `many-pg-2` (two replicas on it).

Reported per configuration: Retell follow-up requests per minute while measured (SPEC §7:
≤ 60), probe lag p50/p95 (completion at the fake Retell to the first version of its status
message showing the result), each replica's peak RSS, the Slack calls made and whether every
one carried the token of the workspace its channel is in (calls with another workspace's
token: must be 0), results lost or doubled (must be 0) and, on PostgreSQL, how often the token
tables were read (index and sequential scans of `slack_bots` and `workspaces` per Slack
call). `--profile DIR` also samples each replica with py-spy: the share of its busy samples in
`Installations.bot` (the token lookup; on SQLite the query itself runs in aiosqlite's thread,
outside that frame). The exit code is 1 when a check failed (a wrong token,
a result lost or doubled), not for a performance target.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.fernet import Fernet
from slack_sdk.oauth.installation_store import Installation
from slack_sdk.oauth.installation_store.sqlalchemy import AsyncSQLAlchemyInstallationStore
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from bench.common import (
    BOT_TOKEN,
    TEAM_ID,
    ServiceProcess,
    Standins,
    in_flight_run,
    in_workdir,
    machine,
    percentile,
    print_table,
    py_spy,
    start_standin_processes,
    vm_kib,
)
from bot.store import Run, Store, create_engine
from bot.store.engine import async_database_url
from bot.testing.process import BotProcess

CLIENT_ID, CLIENT_SECRET = "4242.1000", "bench-client-secret"
CONFIGS = ("one-sqlite", "many-sqlite", "one-pg", "many-pg", "one-pg-2", "many-pg-2")
DEFAULT_CONFIGS = "one-sqlite,many-sqlite,many-pg,one-pg-2,many-pg-2"
ENGINES = 10
CASES_PER_BATCH = 5
LONG_SECONDS = 6 * 3600.0  # never completes while measured
PROBE_SECONDS = (30.0, 90.0)  # from just before the bot starts: it is up well before
POLL_INITIAL = 10.0  # the default (SPEC §5); the runs' first interval
TARGET_REQUESTS_PER_MINUTE = 60.0
FOLLOW_UP_PATHS = ("/v2/list-batch-tests", "/get-batch-test")
BATCH_ID = re.compile(r"test_case_batch_job_[0-9a-f]{24}")
TOKEN_TABLES = ("slack_bots", "workspaces")
# py-spy's frame of the token lookup: "Installations.bot (bot/workspaces/installations.py:151)".
LOOKUP_FRAME = re.compile(
    r"(^|;)(Installations\.)?bot \([^;()]*bot/workspaces/installations\.py:\d+\)"
)
POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@dataclass
class Config:
    name: str
    many: bool  # distribution mode, a workspace per `--workspaces`
    postgres: bool
    replicas: int

    @classmethod
    def named(cls, name: str) -> Config:
        replicas = 2 if name.endswith("-2") else 1
        return cls(name, name.startswith("many"), "-pg" in name, replicas)


@dataclass
class Probe:
    batch_id: str
    team_id: str
    channel: str
    ts: str


@dataclass
class Measured:
    config: Config
    runs: int = 0
    workspaces: int = 0
    probes: list[Probe] = field(default_factory=list)
    wall_seconds: float = 0.0
    follow_up_requests: int = 0
    lags: list[float] = field(default_factory=list)
    peak_rss_kib: list[int] = field(default_factory=list)  # per replica
    slack_calls: int = 0
    slack_failed: int = 0
    teams_called: int = 0
    by_method: dict[str, int] = field(default_factory=dict)  # Slack calls while measured
    calls_from: int = 0  # the first of them, in the fake Slack's list
    wrong_token: int = 0
    results: int = 0
    lost: int = 0
    doubled: int = 0
    token_scans: int | None = None  # PostgreSQL: reads of the token tables while measured
    lookup_share: float | None = None  # py-spy: share of samples in Installations.bot
    preload_seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return bool(self.wrong_token or self.lost or self.doubled)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.workspaces", description=__doc__)
    parser.add_argument("--workspaces", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=10, help="runs in flight per workspace")
    parser.add_argument("--probes", type=int, default=200, help="short batches, one a workspace")
    parser.add_argument("--configs", default=DEFAULT_CONFIGS, help=f"any of {','.join(CONFIGS)}")
    parser.add_argument("--postgres", default=POSTGRES_URL, help="a server to create databases on")
    parser.add_argument("--smoke", action="store_true", help="20 workspaces x 3 runs, seconds")
    parser.add_argument("--keep", type=Path, default=None, help="keep logs in this directory")
    parser.add_argument("--profile", type=Path, default=None, help="py-spy raw output directory")
    args = parser.parse_args(argv)
    args.probe_seconds = PROBE_SECONDS
    args.bot_settings = {}
    if args.smoke:
        args.workspaces, args.runs, args.probes, args.configs = 20, 3, 10, "many-sqlite"
        args.probe_seconds = (4.0, 7.0)
        args.bot_settings = {"poll_initial_seconds": "0.5", "poll_max_seconds": "2"}
    args.probes = min(args.probes, args.workspaces)
    args.configs = [Config.named(name) for name in str(args.configs).split(",") if name]
    if unknown := [c.name for c in args.configs if c.name not in CONFIGS]:
        parser.error(f"unknown configurations: {', '.join(unknown)}")
    return args


# -- the world: stand-ins, workspaces, runs -----------------------------------------------------


def team_of(config: Config, number: int) -> str:
    return f"TW{number:04d}" if config.many else TEAM_ID


def channel_of(config: Config, workspace: int) -> str:
    """A channel of its own per workspace, so a call's channel says whose token it needs."""
    return f"CW{workspace:04d}" if config.many else f"C{workspace % 20:04d}"


def token_of(config: Config, team_id: str) -> str:
    return f"xoxb-{team_id}-bench" if config.many else BOT_TOKEN


async def start_standins(workdir: Path) -> tuple[ServiceProcess, ServiceProcess]:
    return await start_standin_processes(
        workdir,
        slack_args=("--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET),
        retell_args=("--batch-seconds", str(LONG_SECONDS)),
    )


async def fresh_database(args: argparse.Namespace, config: Config, workdir: Path) -> str:
    if not config.postgres:
        return f"sqlite:///{workdir / 'bot.db'}"
    name = f"bench_workspaces_{config.name.replace('-', '_')}"
    admin = create_async_engine(async_database_url(args.postgres), isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            await connection.execute(text(f"CREATE DATABASE {name}"))
    finally:
        await admin.dispose()
    server: str = args.postgres
    return server.rsplit("/", 1)[0] + f"/{name}"


async def install_workspaces(
    config: Config, world: Standins, store: Store, workspaces: int
) -> None:
    """Each workspace installed with its own token in the bot's database, as the OAuth flow
    leaves it (slack-sdk's store with the bot's client id, and the `workspaces` row)."""
    teams = [team_of(config, n) for n in range(workspaces)]
    installations = AsyncSQLAlchemyInstallationStore(client_id=CLIENT_ID, engine=store.engine)
    now = datetime.now(UTC)
    limit = asyncio.Semaphore(8)

    async def one(team_id: str) -> None:
        installation = Installation(
            app_id="A0BENCH",
            enterprise_id=None,
            team_id=team_id,
            team_name=f"Team {team_id}",
            bot_token=token_of(config, team_id),
            bot_id=f"B_{team_id}",
            bot_user_id=f"U_{team_id}",
            bot_scopes="commands,chat:write,channels:join,users:read,files:write",
            user_id="U_INSTALLER",
            installed_at=now.timestamp(),
        )
        async with limit:
            await installations.async_save(installation)
            await store.record_install(
                team_id, enterprise_id=None, enterprise_install=False, at=now
            )

    await asyncio.gather(*(one(team) for team in teams))


async def preload(
    args: argparse.Namespace, config: Config, world: Standins, database_url: str
) -> list[Probe]:
    """Batches at the fake Retell, the probes' status messages in Slack (each posted with its
    workspace's token), runs in the bot's database, installations; returns the probes."""
    if config.many:  # the same tokens at the fake Slack
        teams = [team_of(config, n) for n in range(args.workspaces)]
        body = {"workspaces": [{"team_id": t, "token": token_of(config, t)} for t in teams]}
        await world._control(world.slack.url, "POST", "/_control/workspaces", body)
    engines = [f"llm_bench_{n}" for n in range(ENGINES)]
    cases = {engine: await world.seed(engine, CASES_PER_BATCH) for engine in engines}
    total = args.workspaces * args.runs
    # The probes: the last run of as many workspaces.
    first_probe = total - args.probes
    low, high = args.probe_seconds
    limit = asyncio.Semaphore(50)
    probes: list[Probe] = []

    async def one(number: int) -> Run:
        workspace = number % args.workspaces
        team, channel = team_of(config, workspace), channel_of(config, workspace)
        engine = engines[number % len(engines)]
        probe = number >= first_probe
        seconds = low + (high - low) * (number - first_probe) / max(args.probes - 1, 1)
        async with limit:
            created = await world.create_batch(
                engine, cases[engine], seconds=seconds if probe else LONG_SECONDS
            )
            if probe:
                ts = await post_as(world, token_of(config, team), channel, created, engine)
                probes.append(Probe(created, team, channel, ts))
            else:
                ts = f"{1_000_000_000 + number}.000000"  # never edited: no need to post it
        return in_flight_run(
            team_id=team,
            channel_id=channel,
            user_id=f"U{number % 50:04d}",
            engine=engine,
            case_ids=cases[engine],
            batch_id=created,
            status_ts=ts,
            check_interval=POLL_INITIAL,
        )

    store = Store(create_engine(database_url))
    try:
        await store.upgrade()
        # The probes last, just before the bot starts: their durations count from then.
        for numbers in (range(first_probe), range(first_probe, total)):
            runs = await asyncio.gather(*(one(number) for number in numbers))
            async with async_sessionmaker(store.engine).begin() as session:
                session.add_all(runs)
            if config.many and numbers.start == 0:
                await install_workspaces(config, world, store, args.workspaces)
    finally:
        await store.engine.dispose()
    return probes


async def post_as(world: Standins, token: str, channel: str, batch_id: str, engine: str) -> str:
    async with world.session.post(
        f"{world.slack_api_url}chat.postMessage",
        data={"channel": channel, "text": f"Retell batch {batch_id} on {engine}"},
        headers={"Authorization": f"Bearer {token}"},
    ) as response:
        answer = await response.json()
    if not answer.get("ok"):
        raise RuntimeError(f"chat.postMessage: {answer}")
    return str(answer["ts"])


def bot_environment(
    args: argparse.Namespace, config: Config, world: Standins, database_url: str
) -> dict[str, str]:
    environment = world.bot_environment(
        database_url, max_runs_per_user_per_hour="0", log_level="INFO", **args.bot_settings
    )
    if not config.many:
        # Slack's budgets are per workspace: the probes' results in one workspace would wait
        # for them (45 edits a minute) and the line would measure Slack's limit, not the bot.
        # Spread over 1,000 workspaces they never bind; here they are raised to match.
        environment.update(
            SLACK_EDITS_PER_MINUTE=f"{45.0 * args.probes:g}",
            SLACK_POSTS_PER_MINUTE=f"{60.0 * args.probes:g}",
        )
    else:
        del environment["SLACK_BOT_TOKEN"]
        environment.update(
            SLACK_CLIENT_ID=CLIENT_ID,
            SLACK_CLIENT_SECRET=CLIENT_SECRET,
            ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        )
    return environment


# -- measuring ----------------------------------------------------------------------------------


async def measure(args: argparse.Namespace, config: Config, workdir: Path) -> Measured:
    found = Measured(config, runs=args.workspaces * args.runs)
    found.workspaces = args.workspaces if config.many else 1
    slack, retell = await start_standins(workdir)
    try:
        async with aiohttp.ClientSession() as session:
            world = Standins(slack=slack, retell=retell, session=session)
            database_url = await fresh_database(args, config, workdir)
            started = time.monotonic()
            found.probes = await preload(args, config, world, database_url)
            found.preload_seconds = time.monotonic() - started
            environment = bot_environment(args, config, world, database_url)
            bots = [
                BotProcess(environment, log_path=workdir / f"bot-{n}.log")
                for n in range(config.replicas)
            ]
            try:
                await asyncio.gather(*(bot.start(timeout=120) for bot in bots))
                await follow(args, world, bots, database_url, found, workdir)
            finally:
                await asyncio.gather(*(bot.stop() for bot in bots))
            await tally(world, found)
    finally:
        await retell.stop()
        await slack.stop()
    return found


async def follow(
    args: argparse.Namespace,
    world: Standins,
    bots: list[BotProcess],
    database_url: str,
    found: Measured,
    workdir: Path,
) -> None:
    """Wait for every probe's result, sampling each replica's memory; count requests."""
    found.peak_rss_kib = [0] * len(bots)
    scans_before = await token_scans(database_url)
    calls_before = found.calls_from = await slack_calls_so_far(world)
    requests_before = await follow_up_requests(world)
    started = time.monotonic()
    deadline = started + args.probe_seconds[1] + 120
    profiles = [
        py_spy(bot.pid, args.profile / f"{found.config.name}-{n}.txt" if args.profile else None)
        for n, bot in enumerate(bots)
    ]
    for profile in profiles:
        await profile.__aenter__()
    done = 0
    try:
        while time.monotonic() < deadline:
            for n, bot in enumerate(bots):
                found.peak_rss_kib[n] = max(found.peak_rss_kib[n], vm_kib(bot.pid))
            done, shown = await mentions(world), done
            if done != shown:
                print(f"\r  {found.config.name}: {done}/{len(found.probes)} results", end="")
            if done >= len(found.probes):
                break
            await asyncio.sleep(1.0)
        print(flush=True)
        found.wall_seconds = time.monotonic() - started
        found.follow_up_requests = await follow_up_requests(world) - requests_before
    finally:
        for profile in profiles:
            await profile.__aexit__(None, None, None)
    if scans_before is not None:
        await asyncio.sleep(1.5)  # PostgreSQL's statistics reach the views within a second
        after = await token_scans(database_url)
        found.token_scans = None if after is None else after - scans_before
    found.slack_calls = await slack_calls_so_far(world) - calls_before
    if args.profile is not None and found.config.many:
        found.lookup_share = lookup_share(
            [args.profile / f"{found.config.name}-{n}.txt" for n in range(len(bots))]
        )
    _ = workdir


async def follow_up_requests(world: Standins) -> int:
    by_path: dict[str, int] = (await world.retell_stats())["requests"]["by_path"]
    return sum(n for path, n in by_path.items() if path.startswith(FOLLOW_UP_PATHS))


async def slack_calls_so_far(world: Standins) -> int:
    return int((await world.slack_stats())["calls"])


async def mentions(world: Standins) -> int:
    """Thread replies so far: one per result delivered (a cheap count)."""
    messages = (await world.slack_stats())["messages"]
    return sum(1 for m in messages if m["thread_ts"] and m["thread_ts"] != m["ts"])


async def token_scans(database_url: str) -> int | None:
    """Index and sequential scans of the token tables so far (PostgreSQL; None on SQLite)."""
    if not database_url.startswith("postgresql"):
        return None
    engine = create_async_engine(async_database_url(database_url))
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                text(
                    "SELECT coalesce(sum(coalesce(idx_scan, 0) + coalesce(seq_scan, 0)), 0) "
                    "FROM pg_stat_user_tables WHERE relname = ANY(:tables)"
                ),
                {"tables": list(TOKEN_TABLES)},
            )
            return int(rows.scalar_one())
    finally:
        await engine.dispose()


def lookup_share(paths: list[Path]) -> float | None:
    """The share of py-spy's samples (raw, collapsed stacks) inside `Installations.bot`."""
    total = inside = 0
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            total += int(count)
            if LOOKUP_FRAME.search(stack):
                inside += int(count)
    return inside / total if total else None


def is_result(text: str) -> bool:
    return " total" in text and " passed" in text


async def tally(world: Standins, found: Measured) -> None:
    """Lag, results lost or doubled, and whose token every Slack call carried."""
    completed = {
        batch_id: info["completed_ms"]
        for batch_id, info in (await world.retell_stats())["batches"].items()
        if info["completed_ms"] is not None
    }
    async with world.session.get(f"{world.slack.url}/_control/messages") as response:
        messages: list[dict[str, Any]] = await response.json()
    by_ts = {(m["channel"], m["ts"]): m for m in messages}
    replies: dict[tuple[str, str], int] = {}
    results: dict[str, int] = {}
    for message in messages:
        thread = message.get("thread_ts")
        if thread and thread != message["ts"]:
            replies[(message["channel"], thread)] = replies.get((message["channel"], thread), 0) + 1
        elif is_result(str(message["text"])):
            for batch_id in set(BATCH_ID.findall(str(message["text"]))):
                results[batch_id] = results.get(batch_id, 0) + 1
    for probe in found.probes:
        status = by_ts.get((probe.channel, probe.ts))
        shown = results.get(probe.batch_id, 0)
        replied = replies.get((probe.channel, probe.ts), 0)
        if shown == 0 or replied == 0 or status is None:
            found.lost += 1
            continue
        found.results += 1
        found.doubled += (shown - 1) + (replied - 1)
        done_ms = completed.get(probe.batch_id)
        versions = [(v["text"], v["at"]) for v in status["updates"]]
        versions.append((status["text"], status["updated_at"]))
        at = next((at for text_, at in versions if is_result(str(text_))), None)
        if done_ms is not None and at is not None:
            found.lags.append(max(float(at) - done_ms / 1000, 0.0))
    # Any result of a run that is not a probe would be a result nobody should have had.
    probes = {probe.batch_id for probe in found.probes}
    found.doubled += sum(n for batch_id, n in results.items() if batch_id not in probes)
    calls = (await world._control(world.slack.url, "GET", "/_control/calls"))["calls"]
    owners = {channel_of(found.config, n): team_of(found.config, n) for n in range(found.runs)}
    teams = set()
    for call in calls[found.calls_from : found.calls_from + found.slack_calls]:
        found.by_method[call["method"]] = found.by_method.get(call["method"], 0) + 1
    for call in calls:
        if not call["ok"]:
            found.slack_failed += 1
            continue
        teams.add(call["team_id"])
        owner = owners.get(str(call["channel"]))
        if owner is not None and call["team_id"] != owner:
            found.wrong_token += 1
    found.teams_called = len(teams)


# -- reporting ----------------------------------------------------------------------------------


def row(found: Measured) -> tuple[object, ...]:
    per_minute = found.follow_up_requests / (found.wall_seconds / 60) if found.wall_seconds else 0
    rss = " + ".join(f"{kib / 1024:.0f}" for kib in found.peak_rss_kib)
    scans = (
        "-"
        if found.token_scans is None
        else f"{found.token_scans} ({found.token_scans / max(found.slack_calls, 1):.2f}/call)"
    )
    share = "-" if found.lookup_share is None else f"{found.lookup_share * 100:.1f}%"
    return (
        found.config.name,
        f"{found.workspaces} x {found.runs // found.workspaces}",
        round(per_minute, 1),
        round(percentile(found.lags, 0.5), 1),
        round(percentile(found.lags, 0.95), 1),
        rss,
        f"{found.slack_calls} in {found.teams_called}",
        found.wrong_token,
        found.slack_failed,
        f"{found.results}/{len(found.probes)}",
        f"{found.lost}/{found.doubled}",
        scans,
        share,
        f"{found.wall_seconds:.0f}+{found.preload_seconds:.0f}",
    )


COLUMNS = (
    "config",
    "workspaces x runs",
    "Retell req/min",
    "lag p50 s",
    "lag p95 s",
    "peak RSS MiB",
    "Slack calls in ws",
    "other ws token",
    "Slack failed",
    "probes reported",
    "lost/doubled",
    "token-table scans",
    "in Installations.bot",
    "s measured+preload",
)


async def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    rows = []
    methods: list[tuple[str, dict[str, int]]] = []
    failed = 0
    for config in args.configs:
        if config.postgres and not await postgres_reachable(args.postgres):
            print(f"  {config.name}: skipped, no PostgreSQL at {args.postgres}")
            continue

        async def body(workdir: Path, config: Config = config) -> int:
            found = await measure(args, config, workdir)
            rows.append(row(found))
            methods.append((config.name, found.by_method))
            if found.failed:
                print(f"  {config.name}: FAILED {found}"[:2000])
            return 1 if found.failed else 0

        keep = args.keep / config.name if args.keep else None
        failed |= await in_workdir("bench-workspaces-", keep, body)
    print_table(
        "Many workspaces (real time, default settings; lag of short probe batches among the rest)",
        COLUMNS,
        rows,
        note=(
            f"Retell target ≤ {TARGET_REQUESTS_PER_MINUTE:g}/min (one key for all workspaces); "
            f"{machine()}"
        ),
    )
    names = sorted({name for _, counts in methods for name in counts})
    print_table(
        "Slack calls while measured, by method",
        ["config", *names],
        [(config, *(counts.get(name, 0) for name in names)) for config, counts in methods],
    )
    return failed


async def postgres_reachable(url: str) -> bool:
    engine = create_async_engine(async_database_url(url))
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        return True
    except Exception:  # any failure means: not here
        return False
    finally:
        await engine.dispose()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
