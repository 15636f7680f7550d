"""Capacity: how many batches in flight one process follows before its detection lag doubles.

    python -m bench.capacity [--levels 1000,10000] [--smoke]

Time is *not* compressed here (the bot runs with its default settings: polls every 10 s, 60
Retell requests a minute): compression multiplies the work per wall second and would measure a
machine 30 times slower. For each level, that many long batches (hours) are in flight in a
fresh `retell-bot serve` (SQLite default), found in its database at start-up as after a
restart, spread over 10 engines. Among them, `--probes` short batches (15-30 s) complete while
the bot follows everything else; their lag, from completing at the fake Retell to their result
in the fake Slack, is the lag at that load. Also reported: follow-up checks per second (from
`/metrics`; keeping up means about in-flight / 10 s), the Retell follow-up requests made (the
window is too short for a rate per minute: `bench/followup.py` measures that) and the bot's peak
resident memory. The capacity is the largest level whose p95 probe lag stays within twice
the first level's.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import aiohttp

from bench import followup
from bench.common import (
    Standins,
    in_workdir,
    machine,
    percentile,
    print_table,
    vm_kib,
)
from bot.testing.process import BotProcess

PROBE_SECONDS = (15.0, 30.0)  # long enough to complete after the bot is up
LONG_SECONDS = 6 * 3600.0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.capacity", description=__doc__)
    parser.add_argument("--levels", default="1000,10000", help="batches in flight")
    parser.add_argument("--engines", type=int, default=10)
    parser.add_argument("--probes", type=int, default=40, help="short batches per level")
    parser.add_argument(
        "--teams",
        type=int,
        default=50,
        help="workspaces the batches are spread over (Slack's edit limit is per workspace: "
        "40 results within seconds in one would measure that limit, not the bot)",
    )
    parser.add_argument("--smoke", action="store_true", help="two small levels, seconds")
    parser.add_argument("--keep", type=Path, default=None, help="keep logs in this directory")
    args = parser.parse_args(argv)
    args.probe_seconds = PROBE_SECONDS
    args.bot_settings = {}
    if args.smoke:
        args.levels, args.engines, args.probes = "50,200", 3, 10
        args.probe_seconds = (3.0, 5.0)
        args.bot_settings = {"poll_initial_seconds": "0.5", "poll_max_seconds": "2"}
    args.levels = [int(level) for level in str(args.levels).split(",")]
    return args


async def checks_so_far(session: aiohttp.ClientSession, bot: BotProcess) -> float:
    async with session.get(f"{bot.url}/metrics") as response:
        for line in (await response.text()).splitlines():
            if line.startswith("retell_bot_follow_up_checks_total "):
                return float(line.split()[1])
    return 0.0


async def measure_level(
    args: argparse.Namespace, level: int, workdir: Path
) -> tuple[followup.Measured, float]:
    """Lag of the probes, checks per second, requests, RSS: one level, one fresh bot."""
    setup = followup.parse_args(
        [
            *("--batches", str(level + args.probes), "--engines", str(args.engines)),
            *("--compress", "1", "--teams", str(args.teams)),
        ]
    )
    low, high = (float(bound) for bound in args.probe_seconds)
    # The newest batches, so that they are created last, just before the bot starts.
    probes = set(range(level, level + args.probes))

    def seconds(number: int) -> float:
        if number in probes:
            return low + (high - low) * (number % 97) / 96
        return LONG_SECONDS

    slack, retell = await followup.start_standins(workdir, setup)
    found = followup.Measured(batches=len(probes))
    try:
        async with aiohttp.ClientSession() as session:
            world = Standins(slack=slack, retell=retell, session=session)
            engines = [f"llm_bench_{n}" for n in range(args.engines)]
            cases = {
                engine: await world.seed(engine, followup.CASES_PER_BATCH) for engine in engines
            }
            database_url = f"sqlite:///{workdir / 'bot.db'}"
            await followup.preload(setup, world, database_url, engines, cases, seconds=seconds)
            bot = BotProcess(
                world.bot_environment(
                    database_url, max_runs_per_user_per_hour="0", **args.bot_settings
                ),
                log_path=workdir / "bot.log",
            )
            await bot.start()
            try:
                rate = await follow_probes(world, bot, session, len(probes), high, found)
            finally:
                await bot.stop()
            await followup.tally(world, 1.0, found)
    finally:
        await retell.stop()
        await slack.stop()
    return found, rate


async def follow_probes(
    world: Standins,
    bot: BotProcess,
    session: aiohttp.ClientSession,
    probes: int,
    longest: float,
    found: followup.Measured,
) -> float:
    """Wait for every probe's result; returns follow-up checks per second meanwhile."""
    started = time.monotonic()
    checks_before = await checks_so_far(session, bot)
    deadline = started + longest + 120
    while time.monotonic() < deadline:
        found.peak_rss_kib = max(found.peak_rss_kib, vm_kib(bot.pid))
        if await followup.mentions(world) >= probes:
            break
        await asyncio.sleep(1.0)
    found.wall_seconds = time.monotonic() - started
    found.follow_up_requests = await list_calls(world)  # since start-up: every engine was due
    return (await checks_so_far(session, bot) - checks_before) / found.wall_seconds


async def list_calls(world: Standins) -> int:
    by_path: dict[str, int] = (await world.retell_stats())["requests"]["by_path"]
    return sum(n for path, n in by_path.items() if path.startswith(followup.FOLLOW_UP_PATHS))


async def main(argv: list[str]) -> int:
    args = parse_args(argv)
    table = []
    failed = 0
    first_p95: float | None = None
    capacity = 0
    for level in args.levels:

        async def body(workdir: Path, level: int = level) -> int:
            nonlocal first_p95, capacity
            found, rate = await measure_level(args, level, workdir)
            p95 = percentile(found.lags, 0.95)
            first_p95 = p95 if first_p95 is None else first_p95
            if p95 <= 2 * first_p95:
                capacity = level
            table.append(
                (
                    level,
                    round(percentile(found.lags, 0.5), 1),
                    round(p95, 1),
                    round(rate, 1),
                    f"{found.follow_up_requests} in {found.wall_seconds:.0f} s",
                    round(found.peak_rss_kib / 1024, 1),
                    f"{found.results}/{found.batches}",
                )
            )
            return 1 if found.duplicates or found.missing or found.results < found.batches else 0

        keep = args.keep / str(level) if args.keep else None
        failed |= await in_workdir("bench-capacity-", keep, body)
    print_table(
        "Capacity (real time, default settings; lag of short probe batches among the rest)",
        [
            "in flight",
            "lag p50 s",
            "lag p95 s",
            "checks/s",
            "Retell requests",
            "peak RSS MiB",
            "probes reported",
        ],
        table,
        note=f"capacity (p95 lag within 2x of {args.levels[0]}): {capacity}; {machine()}",
    )
    return failed


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
