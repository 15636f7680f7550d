"""Follow-up cost and detection lag: many batches in flight, how many Retell requests, how late.

    python -m bench.followup [--batches 1000] [--engines 10] [--minutes 3] [--smoke]
    python -m bench.followup --compress 30      # the old compressed run (see below)

By default nothing is compressed: the bot runs with its default settings (polls from 10 s,
60 Retell requests a minute) and every figure is in real seconds. 1,000 batches (by default)
are in flight on the fake Retell for the whole measured window of `--minutes`. Among them,
as many as complete in that window when 1,000 batches of 1 to 60 minutes are in flight
(Little's law: 1,000 / 30.5 minutes on average, about 33 a minute, so 98 in 3 minutes) finish
at evenly spaced moments of the window; the rest last hours. At this size the follow-up
interval of an engine is set by POLL_INITIAL_SECONDS and the Retell budget, not by the
batches' ages (bot/runs/sweep.py), so a few minutes in real time show the steady state.

`--compress K` (K > 1) runs the former version instead: durations spread uniformly from 1 to
60 minutes with the fake's clock K times faster and the bot's poll intervals and per-minute
budgets divided by K. Its lag is the real lag multiplied by K, the bot's processing time
included, so it reads far too high (p95 46 to 431 s at 30x where the real-time lag is a few
seconds); only its requests per simulated minute mean something.

The batches are all in flight when the real `retell-bot serve` starts (in its own process, on
the SQLite default, with fake Slack and fake Retell in processes of their own): created at the
fake Retell, their status messages posted, their runs in the bot's database, as after a restart.
With `--compress`, `--commands` starts them instead with signed `/retell-test` commands, 50
at a time; the time that takes (tens of seconds, i.e. many compressed minutes) then blurs the
lag figures.
Measured in the window (from the first completion due to the last result in Slack):

- Retell follow-up requests (`list-batch-tests` and `get-batch-test`) per minute and per batch;
- lag: from a batch completing at the fake Retell to its result reaching the fake Slack
  (the last edit of its status message), p50 and p95, in real seconds;
- the bot's resident memory with everything in flight (peak of samples every second).

The run checks that every batch got exactly one result; it exits 1 if one did not.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy.ext.asyncio import async_sessionmaker

from bench.common import (
    TEAM_ID,
    ServiceProcess,
    Standins,
    in_flight_run,
    in_workdir,
    machine,
    percentile,
    post_concurrently,
    print_table,
    py_spy,
    slash_command,
    start_standin_processes,
    vm_kib,
)
from bot.store import Run, Store, create_engine
from bot.testing.process import BotProcess

BATCH_ID = re.compile(r"test_case_batch_job_[0-9a-f]{24}")
CASES_PER_BATCH = 5
# The defaults of the settings that compression scales (SPEC §5 and bot/settings.py).
POLL_INITIAL, POLL_MAX = 10.0, 120.0
RETELL_BUDGET, SLACK_EDITS, SLACK_POSTS = 60.0, 45.0, 60.0
TARGET_REQUESTS_PER_MINUTE = 60.0
NEVER_WITHIN_A_BENCHMARK = 3600.0  # simulated seconds
TARGET_P95_LAG = 30.0
MEAN_MINUTES = 30.5  # mean duration of batches spread uniformly over 1-60 minutes
LONG_SECONDS = 6 * 3600.0  # a batch that stays in flight for the whole run
WARM_SECONDS = 30.0  # from the last batch created to the window: start-up and the first sweep


@dataclass
class Measured:
    batches: int = 0
    follow_up_requests: int = 0
    lists: int = 0
    wall_seconds: float = 0.0
    lags: list[float] = field(default_factory=list)  # uncompressed seconds
    peak_rss_kib: int = 0
    in_flight: int = 0  # batches in flight at the start, when not all of them complete
    results: int = 0
    duplicates: int = 0
    missing: list[str] = field(default_factory=list)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.followup", description=__doc__)
    parser.add_argument("--batches", type=int, default=1000)
    parser.add_argument("--engines", type=int, default=10, help="engines the batches run on")
    parser.add_argument(
        "--compress", type=float, default=1.0, help="time compression (1: real time, default)"
    )
    parser.add_argument(
        "--minutes", type=float, default=3.0, help="real-time window in which batches complete"
    )
    parser.add_argument("--concurrency", type=int, default=50, help="commands in flight")
    parser.add_argument(
        "--teams", type=int, default=1, help="Slack workspaces the batches are spread over"
    )
    parser.add_argument("--shortest", type=float, default=1.0, help="shortest batch, minutes")
    parser.add_argument("--longest", type=float, default=60.0, help="longest batch, minutes")
    parser.add_argument(
        "--commands",
        action="store_true",
        help="start the batches with slash commands instead of finding them in flight",
    )
    parser.add_argument("--smoke", action="store_true", help="100 batches, 3 engines, seconds")
    parser.add_argument(
        "--completing",
        type=int,
        default=None,
        help="batches completing in the window (default: as many as 1-60 minute batches would)",
    )
    parser.add_argument("--warm", type=float, default=WARM_SECONDS, help=argparse.SUPPRESS)
    parser.add_argument("--keep", type=Path, default=None, help="keep logs in this directory")
    parser.add_argument("--profile", type=Path, default=None, help="py-spy output of the bot")
    args = parser.parse_args(argv)
    if args.commands and args.compress <= 1:
        parser.error("--commands is for the compressed run: add --compress K")
    args.bot_settings = {}
    if args.smoke and args.compress > 1:
        args.batches, args.engines, args.compress = 100, 3, 240.0
    elif args.smoke:
        # Real time still, on a smaller scale: polls and budget shortened, not the clock.
        args.batches, args.engines, args.minutes, args.warm = 100, 3, 0.15, 4.0
        args.completing = 10
        args.bot_settings = {
            "poll_initial_seconds": "0.5",
            "poll_max_seconds": "2",
            "retell_requests_per_minute": "600",
        }
    return args


def completing(args: argparse.Namespace) -> int:
    """Batches that complete in the window: as many as 1-60 minute batches would (Little's law)."""
    if args.completing is not None:
        return max(1, int(args.completing))
    return max(1, round(int(args.batches) * float(args.minutes) / MEAN_MINUTES))


async def start_standins(
    workdir: Path, args: argparse.Namespace
) -> tuple[ServiceProcess, ServiceProcess]:
    return await start_standin_processes(
        workdir,
        retell_args=(
            *("--batch-seconds", str(args.longest * 60)),
            *("--shortest-batch-seconds", str(args.shortest * 60)),
            *("--time-scale", str(args.compress)),
        ),
    )


def bot_settings(compress: float) -> dict[str, str]:
    """The defaults, with every duration divided (and every rate multiplied) by `compress`."""
    return {
        "poll_initial_seconds": f"{POLL_INITIAL / compress:g}",
        "poll_max_seconds": f"{POLL_MAX / compress:g}",
        "retell_requests_per_minute": f"{RETELL_BUDGET * compress:g}",
        "slack_edits_per_minute": f"{SLACK_EDITS * compress:g}",
        "slack_posts_per_minute": f"{SLACK_POSTS * compress:g}",
        "max_runs_per_user_per_hour": "0",
        "log_level": "INFO",
    }


async def measure_real_time(args: argparse.Namespace, workdir: Path) -> Measured:
    """`args.batches` long batches in flight, and those that complete in the window besides.

    The completing ones are created last, each to complete `args.warm` seconds plus its place
    in the window after its creation; lags and requests are in real seconds.
    """
    count = completing(args)
    window = args.minutes * 60

    def seconds(number: int) -> float:
        if number >= args.batches:
            return float(args.warm + window * (number - args.batches + 0.5) / count)
        return LONG_SECONDS

    slack, retell = await start_standins(workdir, args)
    found = Measured(batches=count)
    found.in_flight = args.batches + count
    try:
        async with aiohttp.ClientSession() as session:
            world = Standins(slack=slack, retell=retell, session=session)
            engines = [f"llm_bench_{n}" for n in range(args.engines)]
            cases = {engine: await world.seed(engine, CASES_PER_BATCH) for engine in engines}
            database_url = f"sqlite:///{workdir / 'bot.db'}"
            setup = argparse.Namespace(**{**vars(args), "batches": args.batches + count})
            await preload(setup, world, database_url, engines, cases, seconds=seconds)
            window_opens = time.monotonic() + args.warm  # about: the last ones were just created
            settings = {"max_runs_per_user_per_hour": "0", "log_level": "INFO"}
            environment = world.bot_environment(database_url, **settings, **args.bot_settings)
            bot = BotProcess(environment, log_path=workdir / "bot.log")
            await bot.start()
            try:
                async with py_spy(bot.pid, args.profile):
                    await follow(args, world, bot, found, window_opens=window_opens)
            finally:
                await bot.stop()
    finally:
        await retell.stop()
        await slack.stop()
    return found


async def measure(args: argparse.Namespace, workdir: Path) -> Measured:
    if args.compress <= 1:
        return await measure_real_time(args, workdir)
    slack, retell = await start_standins(workdir, args)
    found = Measured(batches=args.batches)
    try:
        async with aiohttp.ClientSession() as session:
            world = Standins(slack=slack, retell=retell, session=session)
            engines = [f"llm_bench_{n}" for n in range(args.engines)]
            cases = {engine: await world.seed(engine, CASES_PER_BATCH) for engine in engines}
            database_url = f"sqlite:///{workdir / 'bot.db'}"
            if not args.commands:
                await preload(args, world, database_url, engines, cases)
            environment = world.bot_environment(database_url, **bot_settings(args.compress))
            bot = BotProcess(environment, log_path=workdir / "bot.log")
            await bot.start()
            try:
                if args.commands:
                    await start_by_commands(args, world, bot, engines, cases)
                async with py_spy(bot.pid, args.profile):
                    await follow(args, world, bot, found)
            finally:
                await bot.stop()
    finally:
        await retell.stop()
        await slack.stop()
    return found


async def start_by_commands(
    args: argparse.Namespace,
    world: Standins,
    bot: BotProcess,
    engines: list[str],
    cases: dict[str, list[str]],
) -> None:
    requests = []
    for number in range(args.batches):
        engine = engines[number % len(engines)]
        channel = f"C{number % 20:04d}"
        requests.append(
            slash_command(
                f"{engine} {' '.join(cases[engine])}",
                user_id=f"U{number % 50:04d}",
                channel_id=channel,
                response_url=await world.response_url(channel),
            )
        )
    url = f"{bot.url}/slack/events"
    acks = await post_concurrently(url, requests, concurrency=args.concurrency)
    if bad := [ack for ack in acks if ack.status != 200]:
        raise RuntimeError(f"{len(bad)} commands were not acked: {bad[:3]}")


async def preload(
    args: argparse.Namespace,
    world: Standins,
    database_url: str,
    engines: list[str],
    cases: dict[str, list[str]],
    *,
    seconds: Callable[[int], float | None] = lambda _number: None,
) -> None:
    """Batches created at Retell, status messages in Slack, runs in the bot's database.

    `seconds(n)` may set how long batch `n` takes (None: the fake's spread); a batch that will
    not complete while measured gets a placeholder status message instead of a real one.
    """
    limit = asyncio.Semaphore(args.concurrency)

    async def one(number: int) -> Run:
        engine = engines[number % len(engines)]
        channel = f"C{number % 20:04d}"
        duration = seconds(number)
        async with limit:
            created = await world.create_batch(engine, cases[engine], seconds=duration)
            if duration is not None and duration > NEVER_WITHIN_A_BENCHMARK:
                ts = f"{1_000_000_000 + number}.000000"  # never edited: no need to post it
            else:
                ts = await world.post_message(channel, f"Retell batch {created} on {engine}")
        return in_flight_run(
            team_id=TEAM_ID if args.teams == 1 else f"T{number % args.teams:04d}",
            channel_id=channel,
            user_id=f"U{number % 50:04d}",
            engine=engine,
            case_ids=cases[engine],
            batch_id=created,
            status_ts=ts,
            check_interval=POLL_INITIAL / args.compress,
        )

    runs = await asyncio.gather(*(one(number) for number in range(args.batches)))
    store = Store(create_engine(database_url))
    await store.upgrade()
    async with async_sessionmaker(store.engine).begin() as session:
        session.add_all(runs)
    await store.engine.dispose()


async def follow(
    args: argparse.Namespace,
    world: Standins,
    bot: BotProcess,
    found: Measured,
    *,
    window_opens: float | None = None,
) -> None:
    """Wait for every result, sampling the bot's memory; then count requests and lag.

    Requests are counted from `window_opens` (monotonic; None: now) to the last result.
    """

    async def follow_up_requests() -> tuple[int, int]:
        by_path: dict[str, int] = (await world.retell_stats())["requests"]["by_path"]
        follow_ups = sum(n for path, n in by_path.items() if path.startswith(FOLLOW_UP_PATHS))
        lists = sum(n for path, n in by_path.items() if path.startswith(FOLLOW_UP_PATHS[0]))
        return follow_ups, lists

    wanted = found.batches
    if window_opens is None:
        window_opens = time.monotonic()
        deadline = window_opens + args.longest * 60 / args.compress * 1.5 + 120
    else:
        deadline = window_opens + args.minutes * 60 + 120
    before: tuple[int, int] | None = None
    finished = 0
    while time.monotonic() < deadline:
        found.peak_rss_kib = max(found.peak_rss_kib, vm_kib(bot.pid))
        if before is None and time.monotonic() >= window_opens:
            before = await follow_up_requests()
        finished = await mentions(world)
        print(f"\r  followup: {finished}/{wanted} results", end="", flush=True)
        if finished >= wanted:
            break
        await asyncio.sleep(max(0.0, min(1.0, window_opens - time.monotonic())) or 1.0)
    print()
    before = before or await follow_up_requests()
    found.wall_seconds = time.monotonic() - window_opens
    after = await follow_up_requests()
    found.follow_up_requests = after[0] - before[0]
    found.lists = after[1] - before[1]
    await tally(world, args.compress, found)


FOLLOW_UP_PATHS = ("/v2/list-batch-tests", "/get-batch-test")


async def mentions(world: Standins) -> int:
    """Requester mentions so far: one thread reply per result delivered (a cheap count)."""
    messages = (await world.slack_stats())["messages"]
    return sum(1 for m in messages if m["thread_ts"] and m["thread_ts"] != m["ts"])


async def messages(world: Standins) -> list[dict[str, Any]]:
    async with world.session.get(f"{world.slack.url}/_control/messages") as response:
        body = await response.json()
    return list(body["messages"] if isinstance(body, dict) else body)


def is_result(message: dict[str, Any]) -> bool:
    text = str(message.get("text", ""))
    return not message.get("thread_ts") and " total" in text and " passed" in text


async def tally(world: Standins, compress: float, found: Measured) -> None:
    completed = {
        batch_id: info["completed_ms"]
        for batch_id, info in (await world.retell_stats())["batches"].items()
        if info["completed_ms"] is not None
    }
    seen: dict[str, int] = {}
    for message in await messages(world):
        if not is_result(message):
            continue
        for batch_id in set(BATCH_ID.findall(str(message["text"]))):
            seen[batch_id] = seen.get(batch_id, 0) + 1
            done_ms = completed.get(batch_id)
            if done_ms is not None:
                lag = float(message["updated_at"]) - done_ms / 1000
                found.lags.append(max(lag, 0.0) * compress)
    found.results = len(seen)
    found.duplicates = sum(n - 1 for n in seen.values())
    found.missing = [batch_id for batch_id in completed if batch_id not in seen]


def report(args: argparse.Namespace, found: Measured) -> None:
    simulated_minutes = found.wall_seconds * args.compress / 60
    per_minute = found.follow_up_requests / simulated_minutes if simulated_minutes else 0.0
    p50, p95 = percentile(found.lags, 0.5), percentile(found.lags, 0.95)
    real_time = args.compress <= 1
    # The targets are for the default settings: a smoke run shortens polls and raises budgets.
    targets = ("", "") if args.bot_settings else ("≤ 60", "≤ 30")
    flight: tuple[object, ...]
    span: tuple[object, ...]
    if real_time:
        flight = (
            "batches in flight",
            f"{found.in_flight:,} to {found.in_flight - found.batches:,}",
            f"{args.engines} engines, {found.batches} complete",
            "",
        )
        span = ("minutes measured", round(simulated_minutes, 1), "real time", "")
    else:
        flight = ("batches in flight", found.batches, f"{args.engines} engines", "")
        span = (
            "simulated minutes",
            round(simulated_minutes, 1),
            f"{found.wall_seconds:.0f} s wall",
            "",
        )
    rows = [
        flight,
        span,
        ("Retell follow-up requests / min", round(per_minute, 1), "", targets[0]),
        (
            "requests per batch" + (" completed" if real_time else ""),
            round(found.follow_up_requests / found.batches, 2),
            f"{found.lists} list, {found.follow_up_requests - found.lists} get",
            "",
        ),
        ("lag p50 (s)", round(p50, 1), "", ""),
        ("lag p95 (s)", round(p95, 1), "", targets[1]),
        ("bot peak RSS (MiB)", round(found.peak_rss_kib / 1024, 1), "", ""),
        ("results / duplicates / missing", found.results, found.duplicates, len(found.missing)),
    ]
    title = (
        "Follow-up cost and lag (real time, default settings)"
        if real_time and not args.bot_settings
        else "Follow-up cost and lag (real time, polls and budget shortened: smoke)"
        if real_time
        else f"Follow-up cost and lag (time compressed {args.compress:g}x; figures uncompressed,"
        " the lag multiplied by the compression)"
    )
    print_table(
        title,
        ["figure", "value", "", "target"],
        rows,
        note=machine(),
    )


async def main(argv: list[str]) -> int:
    args = parse_args(argv)

    async def body(workdir: Path) -> int:
        found = await measure(args, workdir)
        report(args, found)
        lost = found.duplicates or found.missing or found.results < found.batches
        return 1 if lost else 0

    return await in_workdir("bench-followup-", args.keep, body)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
