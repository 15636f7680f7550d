"""Capacity: how many batches in flight one process follows before its detection lag doubles.

    python -m bench.capacity [--levels 1000,2500,5000,10000] [--smoke]

For each level, that many batches (1 to 10 minutes long, time compressed 30 times) are in flight
at once in a fresh `retell-bot serve` (SQLite default), found in flight at start-up as in
`bench/followup.py`. Reported per level: p50/p95 lag from a batch completing at the
fake Retell to its result in the fake Slack, Retell follow-up requests per minute, and the bot's
peak resident memory. The capacity is the largest level whose p95 lag stays within twice the
first level's.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from bench import followup
from bench.common import in_workdir, machine, percentile, print_table


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.capacity", description=__doc__)
    parser.add_argument("--levels", default="1000,2500,5000,10000", help="batches in flight")
    parser.add_argument("--engines", type=int, default=10)
    parser.add_argument("--compress", type=float, default=30.0)
    parser.add_argument("--smoke", action="store_true", help="two small levels, seconds")
    parser.add_argument("--keep", type=Path, default=None, help="keep logs in this directory")
    args = parser.parse_args(argv)
    if args.smoke:
        args.levels, args.engines, args.compress = "50,200", 3, 120.0
    args.levels = [int(level) for level in str(args.levels).split(",")]
    return args


async def main(argv: list[str]) -> int:
    args = parse_args(argv)
    rows = []
    failed = 0
    first_p95: float | None = None
    capacity = 0
    for level in args.levels:
        level_args = followup.parse_args(
            [
                *("--batches", str(level), "--engines", str(args.engines)),
                *("--compress", str(args.compress), "--shortest", "1", "--longest", "10"),
            ]
        )

        async def body(
            workdir: Path, level: int = level, level_args: argparse.Namespace = level_args
        ) -> int:
            found = await followup.measure(level_args, workdir)
            rows.append((level, found))
            return 1 if found.duplicates or found.missing else 0

        keep = args.keep / str(level) if args.keep else None
        failed |= await in_workdir("bench-capacity-", keep, body)
    table = []
    for level, found in rows:
        p95 = percentile(found.lags, 0.95)
        first_p95 = p95 if first_p95 is None else first_p95
        if p95 <= 2 * max(first_p95, 1.0):
            capacity = level
        minutes = found.wall_seconds * args.compress / 60
        table.append(
            (
                level,
                round(percentile(found.lags, 0.5), 1),
                round(p95, 1),
                round(found.follow_up_requests / minutes, 1) if minutes else float("nan"),
                round(found.peak_rss_kib / 1024, 1),
                f"{found.results}/{level}",
            )
        )
    print_table(
        f"Capacity (time compressed {args.compress:g}x; lag in uncompressed seconds)",
        ["in flight", "lag p50 s", "lag p95 s", "Retell req/min", "peak RSS MiB", "results"],
        table,
        note=f"capacity (p95 lag within 2x of {args.levels[0]}): {capacity}; {machine()}",
    )
    return failed


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
