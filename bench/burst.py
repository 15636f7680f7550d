"""Bursts: many batches finishing within one second, delivered under Slack's rate limits.

    python -m bench.burst                       # 100 and 1,000 batches, one and two replicas
    python -m bench.burst --smoke               # 30 batches, one replica (and two with a DB)
    python -m bench.burst --batches 100 --replicas 2 --database-url postgresql://…

Issue 17: 100 commands in 5 channels whose batches all finish within a few seconds took
minutes to show their results. Here N batches (in `--channels` channels of one workspace) are
in flight, their status messages posted and their runs in the bot's database (as after a
restart, like `bench.followup`); the fake Slack then enforces Slack's published tiers
(`bot.testing.slack.SlackTiers`: chat.update Tier 3, 50 a minute with a burst of 25 in the
workspace; chat.postMessage 1 a second with a burst of 4 per channel), every allowance full,
and the fake Retell finishes all N batches at once. Measured from that moment:

- the time until the last result (the status message's final edit) and the last requester
  mention (its thread reply) are in Slack;
- the floor those limits allow: each result is one chat.update and one chat.postMessage in its
  channel, so the floor is the longer of (N - burst) / rate for chat.update in the workspace
  and (N / channels - burst) / rate for chat.postMessage in one channel; the ratio to it
  (target: at most 1.25x);
- 429s Slack answered, per method; results lost (must be 0) and duplicated.

`--scale K` multiplies every rate and burst of the tiers by K and the bot's
SLACK_EDITS_PER_MINUTE with them (time compressed K times, as in bench.followup), so that the
1,000-batch runs take minutes rather than half an hour: the full run uses K=1 for 100 batches and
K=10 for 1,000. The stand-ins run in this process; the bots are real `retell-bot serve`
processes, on SQLite (one replica) or, with `--database-url`/TEST_DATABASE_URL, on a fresh
PostgreSQL database of their own (one and two replicas). Each replica keeps the bot's defaults
(its own SLACK_EDITS_PER_MINUTE allowance) apart from short poll intervals, so detection adds
at most a couple of seconds. Exit code 1 if a result was lost or duplicated.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from bench.common import in_flight_run, in_workdir, machine, print_table
from bench.soak import BATCH_ID
from bot.store import Run, Store, async_database_url, create_engine
from bot.testing.process import BotProcess, bot_environment
from bot.testing.retell import FakeRetell
from bot.testing.slack import FakeSlack, SlackTiers

CASES_PER_BATCH = 5
TEAM_ID = "T0001"
SLACK_EDITS_DEFAULT = 45.0  # bot/settings.py: SLACK_EDITS_PER_MINUTE
SLACK_POSTS_DEFAULT = 60.0  # bot/settings.py: SLACK_POSTS_PER_MINUTE (per channel)
POLL_INITIAL, POLL_MAX = 1.0, 2.0  # seconds: detection is not what is measured
NEVER = 24 * 3600.0  # batch seconds: nothing completes until the batches are finished at once
TARGET_RATIO = 1.25


@dataclass(frozen=True)
class Scenario:
    batches: int
    replicas: int
    scale: float


@dataclass
class Outcome:
    scenario: Scenario
    database: str
    floor: float = math.nan
    to_last_result: float = math.nan
    to_last_mention: float = math.nan
    completion_spread: float = 0.0
    results: int = 0
    lost: int = 0
    duplicated: int = 0
    rate_limited: Counter[str] = field(default_factory=Counter)
    edits_before: int = 0  # chat.update calls before the batches finished (progress edits)

    @property
    def delivered(self) -> float:
        return max(self.to_last_result, self.to_last_mention)

    @property
    def ratio(self) -> float:
        return self.delivered / self.floor if self.floor >= 1.0 else math.nan


def floor_seconds(tiers: SlackTiers, batches: int, channels: int) -> float:
    """The least time N results can take under `tiers`, starting with full allowances."""
    needs = {
        "chat.update": (batches, batches),
        "chat.postMessage": (batches, -(-batches // channels)),
    }
    longest = 0.0
    for method, (in_workspace, in_channel) in needs.items():
        for bucket in tiers.methods.get(method, ()):
            calls = in_workspace if bucket.per == "workspace" else in_channel
            longest = max(longest, max(0.0, calls - bucket.burst) / bucket.per_second)
    return longest


async def fresh_database(admin_url: str, name: str) -> str:
    engine = create_async_engine(async_database_url(admin_url), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            await conn.execute(text(f"CREATE DATABASE {name}"))
    finally:
        await engine.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


async def preload(
    slack: FakeSlack, retell: FakeRetell, database_url: str, args: argparse.Namespace, n: int
) -> dict[str, tuple[str, str]]:
    """N batches in flight, their status messages posted, their runs in the database.

    Returns each batch's (channel, status ts).
    """
    engines = [f"llm_burst_{number}" for number in range(args.engines)]
    cases = {
        engine: retell.seed(engine, CASES_PER_BATCH, prefix=f"{engine}_tc") for engine in engines
    }
    client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
    places: dict[str, tuple[str, str]] = {}
    runs: list[Run] = []
    for number in range(n):
        engine = engines[number % len(engines)]
        channel = f"C{number % args.channels:04d}"
        batch_id = retell.create_batch_directly(
            {"type": "retell-llm", "llm_id": engine}, cases[engine], duration=NEVER
        )
        posted = await client.chat_postMessage(channel=channel, text=f"Retell batch {batch_id}")
        ts = str(posted["ts"])
        places[batch_id] = (channel, ts)
        runs.append(
            in_flight_run(
                team_id=TEAM_ID,
                channel_id=channel,
                user_id=f"U{number % 20:04d}",
                engine=engine,
                case_ids=cases[engine],
                batch_id=batch_id,
                status_ts=ts,
                check_interval=POLL_INITIAL,
            )
        )
    store = Store(create_engine(database_url))
    await store.upgrade()
    async with async_sessionmaker(store.engine).begin() as session:
        session.add_all(runs)
    await store.engine.dispose()
    return places


def tally(
    slack: FakeSlack, places: dict[str, tuple[str, str]], finished_at: float, found: Outcome
) -> None:
    where = {place: batch_id for batch_id, place in places.items()}
    results: Counter[str] = Counter()
    mentions: Counter[str] = Counter()
    last_result = last_mention = math.nan
    for message in slack.messages:
        if message.deleted:
            continue
        if message.is_reply:
            batch_id = where.get((message.channel, message.thread_ts or ""))
            if batch_id is not None:
                mentions[batch_id] += 1
                last_mention = _later(last_mention, message.posted_at)
            continue
        if " total" not in message.text:
            continue
        for batch_id in set(BATCH_ID.findall(message.text)):
            results[batch_id] += 1
        if (message.channel, message.ts) in where:
            last_result = _later(last_result, message.updated_at)
    found.results = sum(1 for batch_id in places if results[batch_id] >= 1)
    found.lost = sum(1 for batch_id in places if results[batch_id] == 0 or mentions[batch_id] == 0)
    found.duplicated = sum(results[b] - 1 for b in places if results[b] > 1) + sum(
        mentions[b] - 1 for b in places if mentions[b] > 1
    )
    found.to_last_result = last_result - finished_at
    found.to_last_mention = last_mention - finished_at


def _later(current: float, candidate: float) -> float:
    return candidate if math.isnan(current) else max(current, candidate)


async def run_scenario(
    scenario: Scenario, args: argparse.Namespace, workdir: Path, admin_url: str | None
) -> Outcome:
    n, tiers = scenario.batches, SlackTiers().scaled(scenario.scale)
    label = f"{n}x{scenario.replicas}"
    if admin_url:
        database_url = await fresh_database(admin_url, f"bench_burst_{n}_{scenario.replicas}")
        found = Outcome(scenario, "PostgreSQL")
    else:
        database_url = f"sqlite:///{workdir / f'burst-{label}.db'}"
        found = Outcome(scenario, "SQLite")
    found.floor = floor_seconds(tiers, n, args.channels)
    async with FakeSlack(team_id=TEAM_ID) as slack, FakeRetell(batch_seconds=NEVER) as retell:
        places = await preload(slack, retell, database_url, args, n)
        slack.set_rate_limits(tiers)  # from here on, Slack's tiers
        environment = bot_environment(
            slack_api_url=slack.api_url,
            retell_base_url=retell.base_url,
            database_url=database_url,
            poll_initial_seconds=f"{POLL_INITIAL:g}",
            poll_max_seconds=f"{POLL_MAX:g}",
            retell_requests_per_minute=f"{max(600, 60 * n):g}",
            slack_edits_per_minute=f"{SLACK_EDITS_DEFAULT * scenario.scale:g}",
            slack_posts_per_minute=f"{SLACK_POSTS_DEFAULT * scenario.scale:g}",
            max_runs_per_user_per_hour="0",
            log_level="INFO",
        )
        bots = [
            BotProcess(environment, log_path=workdir / f"bot-{label}-{r}.log")
            for r in range(scenario.replicas)
        ]
        await asyncio.gather(*(bot.start(timeout=60) for bot in bots))
        try:
            await asyncio.sleep(args.settle)  # every run followed up at least once
            found.edits_before = slack.count("chat.update")
            before: Counter[str] = Counter(slack.stats()["rate_limited"])
            slack.set_rate_limits(tiers)  # every allowance full again at the start
            first = time.time()
            for batch_id in places:
                retell.finish_now(batch_id)
            finished_at = time.time()
            found.completion_spread = finished_at - first

            def delivered() -> bool:
                replies = sum(1 for m in slack.messages if m.is_reply)
                return replies >= n

            deadline = finished_at + found.floor * 4 + args.grace
            last_report = 0.0
            while time.time() < deadline and not delivered():
                await asyncio.sleep(0.5)
                if time.time() - last_report > 10:
                    last_report = time.time()
                    replies = sum(1 for m in slack.messages if m.is_reply)
                    print(
                        f"  {label}: {time.time() - finished_at:5.0f}s {replies}/{n} mentions, "
                        f"{slack.rate_limited()} 429s",
                        flush=True,
                    )
            await asyncio.sleep(args.quiet)  # a late duplicate would show up now
            after: Counter[str] = Counter(slack.stats()["rate_limited"])
            found.rate_limited = after - before
            tally(slack, places, finished_at, found)
        finally:
            await asyncio.gather(*(bot.stop(timeout=30) for bot in bots))
    return found


def report(outcomes: list[Outcome], args: argparse.Namespace) -> None:
    rows = []
    for o in outcomes:
        s = o.scenario
        limited = ", ".join(f"{m} {c}" for m, c in sorted(o.rate_limited.items())) or "0"
        rows.append(
            (
                s.batches,
                s.replicas,
                o.database,
                f"{s.scale:g}x",
                o.floor,
                o.to_last_result,
                o.to_last_mention,
                f"{o.ratio:.2f}x" if not math.isnan(o.ratio) else "-",
                limited,
                o.lost,
                o.duplicated,
            )
        )
    print_table(
        f"Bursts: N batches finishing at once in one workspace, {args.channels} channels, "
        "under Slack's tiers",
        [
            "batches",
            "replicas",
            "database",
            "scale",
            "floor s",
            "last result s",
            "last mention s",
            "ratio",
            "429s",
            "lost",
            "dup",
        ],
        rows,
        note=(
            f"seconds after the last completion (all finished within "
            f"{max(o.completion_spread for o in outcomes) * 1000:.0f} ms); floor = the longest "
            "of (calls - burst) / rate over chat.update (workspace) and chat.postMessage (one "
            f"channel); target ratio <= {TARGET_RATIO}x; scale K: limits and the bot's "
            f"SLACK_EDITS_PER_MINUTE x K (figures in compressed seconds)\n  {machine()}"
        ),
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.burst", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="30 batches, seconds")
    parser.add_argument("--batches", type=int, nargs="+", default=None, help="default 100 1000")
    parser.add_argument("--replicas", type=int, nargs="+", default=None, help="default 1 2")
    parser.add_argument(
        "--scale", type=float, default=None, help="tiers x K (default: 1, and 10 for 1,000+)"
    )
    parser.add_argument("--channels", type=int, default=5)
    parser.add_argument("--engines", type=int, default=5)
    parser.add_argument("--settle", type=float, default=4.0, help="seconds before finishing")
    parser.add_argument("--grace", type=float, default=60.0, help="seconds past 4x the floor")
    parser.add_argument("--quiet", type=float, default=3.0)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("TEST_DATABASE_URL", ""),
        help="PostgreSQL server (a fresh database is made on it); default TEST_DATABASE_URL",
    )
    parser.add_argument("--keep", type=Path, default=None, help="keep logs in this directory")
    args = parser.parse_args(argv)
    if args.smoke:
        args.batches = args.batches or [30]
    args.batches = args.batches or [100, 1000]
    args.replicas = args.replicas or [1, 2]
    return args


def scenarios(args: argparse.Namespace) -> list[Scenario]:
    chosen = []
    for n in args.batches:
        scale = args.scale or (10.0 if n >= 1000 else 1.0)
        for replicas in args.replicas:
            if replicas > 1 and not args.database_url:
                print(
                    f"  {n}x{replicas}: skipped (two replicas need --database-url, or "
                    "TEST_DATABASE_URL)"
                )
                continue
            chosen.append(Scenario(n, replicas, scale))
    return chosen


async def main(argv: list[str]) -> int:
    args = parse_args(argv)

    async def body(workdir: Path) -> int:
        outcomes = []
        for scenario in scenarios(args):
            print(
                f"  burst: {scenario.batches} batches, {scenario.replicas} replica(s), "
                f"tiers x{scenario.scale:g}",
                flush=True,
            )
            outcomes.append(await run_scenario(scenario, args, workdir, args.database_url or None))
        if outcomes:
            report(outcomes, args)
        bad = [o for o in outcomes if o.lost or o.duplicated]
        for o in bad:
            print(f"  FAIL: {o.scenario}: {o.lost} lost, {o.duplicated} duplicated")
        return 1 if bad else 0

    return await in_workdir("bench-burst-", args.keep, body)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
