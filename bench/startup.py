"""Start-up (issue 7, item 4): from spawning `retell-bot serve` to `/healthz` 200, and idle RSS.

    .venv/bin/python -m bench.startup                  # 3 starts on fresh SQLite, 3 on existing
    .venv/bin/python -m bench.startup --smoke          # 1 of each, short idle
    .venv/bin/python -m bench.startup --database-url postgresql://postgres@127.0.0.1:5432/postgres

Each start spawns the real server (`python -m bot.cli serve`, what the `retell-bot` script
runs, via `BotProcess`) with fake Slack and fake Retell up in their own processes, and times it
until `/healthz` answers 200 (database migrated, scheduler started; BotProcess polls every 50 ms,
so that is the resolution). Its resident memory is read from /proc/<pid>/status (VmRSS) then,
and again after `--idle` seconds of idling; it is stopped with SIGTERM (timed; must exit 0).

"fresh" starts get a database that has never been migrated (a new SQLite file; on PostgreSQL a
new database created next to the one given, dropped afterwards, which needs CREATEDB);
"existing" starts reuse the first fresh one, as a restart or a new replica would; only they wait
for the idle RSS (it does not depend on the database being new). A row for the interpreter
importing the bot's modules and exiting shows how much of start-up is imports (not in --smoke).

Target: under 2 s to healthy.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from subprocess import PIPE

from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

from bench.common import (
    Standins,
    in_workdir,
    machine,
    print_table,
    run_main,
    standins,
    vm_kib,
)
from bot.store import async_database_url
from bot.testing.process import BotProcess

TARGET_SECONDS = 2.0
IMPORTS = "import bot.cli, bot.application, bot.web"


@dataclass(frozen=True)
class Start:
    ready_seconds: float
    ready_rss_kib: int
    idle_rss_kib: int | None
    stop_seconds: float
    exit_code: int


async def one_start(fakes: Standins, database_url: str, log: Path, idle: float | None) -> Start:
    """Spawn, time to healthy, read RSS (again after `idle` seconds, if given), stop."""
    bot = BotProcess(fakes.bot_environment(database_url), log_path=log)
    spawned = time.perf_counter()
    await bot.start(timeout=60)
    ready = time.perf_counter() - spawned
    ready_rss = vm_kib(bot.pid)
    idle_rss = None
    if idle is not None:
        await asyncio.sleep(idle)
        idle_rss = vm_kib(bot.pid)
    asked = time.perf_counter()
    code = await bot.stop()
    return Start(ready, ready_rss, idle_rss, time.perf_counter() - asked, code)


async def import_seconds() -> float:
    """From spawning an interpreter to it having imported what `retell-bot serve` imports
    (the interpreter's exit, slow with a heap this size, is not counted)."""
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", f"{IMPORTS}; print('imported', flush=True)", stdout=PIPE
    )
    assert process.stdout is not None
    line = await process.stdout.readline()
    seconds = time.perf_counter() - started
    if await process.wait() != 0 or not line.startswith(b"imported"):
        raise RuntimeError(f"{IMPORTS!r} failed")
    return seconds


@asynccontextmanager
async def sqlite_databases(directory: Path, count: int) -> AsyncIterator[list[str]]:
    """`count` SQLite files that do not exist yet."""
    yield [f"sqlite:///{directory / f'fresh-{number}.db'}" for number in range(count)]


@asynccontextmanager
async def postgres_databases(url: str, count: int) -> AsyncIterator[list[str]]:
    """`count` new, empty databases on the server of `url`, dropped afterwards."""
    server = make_url(url)
    names = [f"retell_bench_startup_{secrets.token_hex(4)}_{n}" for n in range(count)]
    admin = create_async_engine(async_database_url(url), isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            for name in names:
                await connection.execute(text(f'CREATE DATABASE "{name}"'))
        yield [server.set(database=name).render_as_string(hide_password=False) for name in names]
    finally:
        async with admin.connect() as connection:
            for name in names:
                await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


async def run(args: argparse.Namespace, directory: Path) -> int:
    kind = "PostgreSQL" if args.database_url else "SQLite"
    databases = (
        postgres_databases(args.database_url, args.starts)
        if args.database_url
        else sqlite_databases(directory, args.starts)
    )
    fresh: list[Start] = []
    existing: list[Start] = []
    async with standins(directory) as fakes, databases as urls:
        imports = [await import_seconds() for _ in range(0 if args.smoke else args.starts)]
        for number in range(args.starts):
            log = directory / f"bot-fresh-{number}.log"
            fresh.append(await one_start(fakes, urls[number], log, None))
        for number in range(args.starts):
            log = directory / f"bot-existing-{number}.log"
            existing.append(await one_start(fakes, urls[0], log, args.idle))

    def row(label: str, starts: list[Start]) -> tuple[object, ...]:
        ready = [s.ready_seconds for s in starts]
        idle = [s.idle_rss_kib / 1024 for s in starts if s.idle_rss_kib is not None]
        return (
            label,
            len(starts),
            f"{statistics.median(ready):.2f}",
            f"{max(ready):.2f}",
            statistics.median(s.ready_rss_kib / 1024 for s in starts),
            statistics.median(idle) if idle else "-",
            max(idle) if idle else "-",
            f"{statistics.median(s.stop_seconds for s in starts):.2f}",
        )

    rows = [row(f"fresh {kind}", fresh), row(f"existing {kind}", existing)]
    if imports:
        median, most = f"{statistics.median(imports):.2f}", f"{max(imports):.2f}"
        rows.insert(0, (f"imports only: {IMPORTS}", len(imports), median, most, *["-"] * 4))
    every = [s.ready_seconds for s in fresh + existing]
    typical, slowest = statistics.median(every), max(every)
    print_table(
        f"Start-up: spawn of `retell-bot serve` to /healthz 200, idle RSS after {args.idle:g} s"
        f"\n  {machine()}",
        [
            "start",
            "n",
            "ready median s",
            "ready max s",
            "RSS at ready MiB",
            "idle RSS median MiB",
            "idle RSS max MiB",
            "SIGTERM to exit s",
        ],
        rows,
        note=(
            f"target: under {TARGET_SECONDS:g} s to healthy: median of all starts "
            f"{typical:.2f} s: {'met' if typical < TARGET_SECONDS else 'MISSED'}; "
            f"{sum(t >= TARGET_SECONDS for t in every)} of {len(every)} starts took longer "
            f"(slowest {slowest:.2f} s)"
        ),
    )
    failed = [s for s in fresh + existing if s.exit_code != 0]
    if failed:
        print(f"FAIL: {len(failed)} starts did not exit 0 on SIGTERM", flush=True)
        return 1
    if args.strict and typical >= TARGET_SECONDS:
        print("FAIL: start-up target missed (--strict)", flush=True)
        return 1
    return 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.startup",
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--starts", type=int, default=3, help="per kind (fresh, existing)")
    parser.add_argument("--idle", type=float, default=5.0, help="seconds before reading RSS")
    parser.add_argument(
        "--database-url", default="", help="a PostgreSQL server to use instead of SQLite files"
    )
    parser.add_argument("--smoke", action="store_true", help="1 start of each, 1 s idle")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the target is missed")
    parser.add_argument("--workdir", type=Path, default=None, help="kept; default: temporary")
    args = parser.parse_args(argv)
    if args.smoke:
        args.starts, args.idle = 1, 1.0
    if args.starts < 1:
        parser.error("--starts must be at least 1")
    if args.database_url and not args.database_url.startswith(("postgres://", "postgresql")):
        parser.error("--database-url: a postgres:// or postgresql:// URL (SQLite is the default)")
    return args


async def main(argv: list[str]) -> int:
    args = parse_args(argv)
    return await in_workdir("retell-bench-startup-", args.workdir, lambda d: run(args, d))


if __name__ == "__main__":
    raise SystemExit(run_main(main, sys.argv[1:]))
