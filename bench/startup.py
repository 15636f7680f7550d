"""Start-up (issues 7 and 17): from spawning `retell-bot serve` to its first HTTP answer and to
`/healthz` 200, against a bare Bolt app started the same way, and idle RSS.

    .venv/bin/python -m bench.startup                  # 3 starts on fresh SQLite, 3 on existing
    .venv/bin/python -m bench.startup --smoke          # 1 of each, short idle
    .venv/bin/python -m bench.startup --database-url postgresql://postgres@127.0.0.1:5432/postgres

Each start spawns the real server (`python -m bot.cli serve`, what the `retell-bot` script
runs, via `BotProcess`) with fake Slack and fake Retell up in their own processes, and times it
until `/healthz` first answers at all ("answers": the port is bound and the HTTP surface is up,
so a slash command is held until the application is ready instead of refused; `/healthz` says
503 "starting" then) and until it answers 200 ("ready": application imported and built,
database migrated, scheduler started). `/healthz` is polled every 10 ms until the first answer,
then every 50 ms (as before issue 17: each answer takes the interpreter from the thread that
imports the application), so those are the resolutions. Its resident memory is read from
/proc/<pid>/status (VmRSS) at ready, and again after `--idle` seconds of idling; it is stopped
with SIGTERM (timed; must exit 0).

The bare Bolt app (`bench/bare_bolt.py`: aiohttp + `AsyncApp` + the aiohttp adapter, the stack
of `retell-bot serve`) is spawned as many times as ours (fresh + existing), the same way
(`python -m`, polled until its `/healthz` answers 200, which is its first answer); the ratio of
our medians to its median is printed against the target of issue 17: our first answer within 2x
of the bare app's.

"fresh" starts get a database that has never been migrated (a new SQLite file; on PostgreSQL a
new database created next to the one given, dropped afterwards, which needs CREATEDB);
"existing" starts reuse the first fresh one, as a restart or a new replica would; only they wait
for the idle RSS (it does not depend on the database being new). A row for the interpreter
importing the bot's modules and exiting shows how much of start-up is imports (not in --smoke).

A last set of starts (fresh databases) sends a `run` slash command the moment the first answer
comes (issue 17: "acked in 3 s from the first second"), times spawn to its ack and the ack
itself, checks it is the usual "Starting a Retell batch test…" (kept by the early stage, not
"send it again") and that exactly one batch is created once the bot is ready.

Targets: first answer within 2x of the bare Bolt app (issue 17); under 2 s to ready (issue 7);
a command at the first answer acked in under 3 s, as usual, and started once.
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
from subprocess import DEVNULL, PIPE

import aiohttp
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

from bench.common import (
    BOT_TOKEN,
    REPO_ROOT,
    SIGNING_SECRET,
    SLACK_ACK_DEADLINE_MS,
    Standins,
    in_workdir,
    machine,
    print_table,
    run_main,
    slash_command,
    standins,
    vm_kib,
)
from bot.store import async_database_url
from bot.testing.process import BotProcess, free_port

TARGET_SECONDS = 2.0
RATIO_TARGET = 2.0
POLL_SECONDS = 0.01
IMPORTS = "import bot.cli, bot.application, bot.web"


@dataclass(frozen=True)
class Start:
    answer_seconds: float
    ready_seconds: float
    ready_rss_kib: int
    idle_rss_kib: int | None
    stop_seconds: float
    exit_code: int


async def one_start(fakes: Standins, database_url: str, log: Path, idle: float | None) -> Start:
    """Spawn, time to healthy, read RSS (again after `idle` seconds, if given), stop."""
    bot = BotProcess(fakes.bot_environment(database_url), log_path=log)
    spawned = time.perf_counter()
    await bot.spawn()
    await bot.wait_answering(60, poll=POLL_SECONDS)
    answer = time.perf_counter() - spawned
    await bot.wait_healthy(60)  # every 50 ms, as before: polling harder slows the start
    ready = time.perf_counter() - spawned
    ready_rss = vm_kib(bot.pid)
    idle_rss = None
    if idle is not None:
        await asyncio.sleep(idle)
        idle_rss = vm_kib(bot.pid)
    asked = time.perf_counter()
    code = await bot.stop()
    return Start(answer, ready, ready_rss, idle_rss, time.perf_counter() - asked, code)


@dataclass(frozen=True)
class CommandStart:
    """A command sent at the first answer: spawn to its ack, the ack itself, and what came of it."""

    acked_seconds: float
    ack_ms: float
    usual: bool  # the ack said "Starting a Retell batch test…"
    batches: int  # created for it once the bot was ready (1 is right)
    ready_seconds: float


ENGINE = "llm_startup"
CHANNEL = "C0STARTUP"


async def command_start(fakes: Standins, database_url: str, log: Path) -> CommandStart:
    """Spawn, send `run` as soon as the port answers, wait for ready and its batch, stop."""
    [case_id] = await fakes.seed(ENGINE, 1, prefix="tc_startup_")
    before = len((await fakes.retell_stats())["batches"])
    request = slash_command(
        f"{ENGINE} {case_id}",
        user_id="U0STARTUP",
        channel_id=CHANNEL,
        response_url=await fakes.response_url(CHANNEL),
    )
    bot = BotProcess(fakes.bot_environment(database_url), log_path=log)
    spawned = time.perf_counter()
    await bot.spawn()
    try:
        await bot.wait_answering(60, poll=POLL_SECONDS)
        sent = time.perf_counter()
        async with (
            aiohttp.ClientSession() as session,
            session.post(bot.events_url, data=request.body, headers=request.headers) as response,
        ):
            text = await response.text()
        acked = time.perf_counter()
        await bot.wait_healthy(60)
        ready = time.perf_counter() - spawned
        deadline = time.perf_counter() + 30
        batches = 0
        while time.perf_counter() < deadline:
            batches = len((await fakes.retell_stats())["batches"]) - before
            if batches:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # a second batch would be a double start
        batches = len((await fakes.retell_stats())["batches"]) - before
    finally:
        await bot.stop()
    usual = response.status == 200 and text.startswith("Starting a Retell batch test")
    return CommandStart(acked - spawned, (acked - sent) * 1000, usual, batches, ready)


async def bare_start(fakes: Standins) -> float:
    """Spawn the bare Bolt app, time it to its first `/healthz` 200 (polled as ours is), stop."""
    port = free_port()
    command = [sys.executable, "-m", "bench.bare_bolt", "--port", str(port)]
    command += ["--signing-secret", SIGNING_SECRET, "--bot-token", BOT_TOKEN]
    command += ["--slack-api-url", fakes.slack_api_url]
    spawned = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        *command, cwd=REPO_ROOT, stdout=DEVNULL, stderr=DEVNULL
    )
    try:
        async with aiohttp.ClientSession() as session:
            while True:
                if process.returncode is not None:
                    raise RuntimeError(f"bare Bolt app exited with {process.returncode}")
                try:
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                        if response.status == 200:
                            return time.perf_counter() - spawned
                except aiohttp.ClientError:
                    pass
                if time.perf_counter() - spawned > 60:
                    raise TimeoutError("bare Bolt app did not answer within 60 s")
                await asyncio.sleep(POLL_SECONDS)
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()


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
        postgres_databases(args.database_url, 2 * args.starts)
        if args.database_url
        else sqlite_databases(directory, 2 * args.starts)
    )
    fresh: list[Start] = []
    existing: list[Start] = []
    commands: list[CommandStart] = []
    async with standins(directory) as fakes, databases as urls:
        imports = [await import_seconds() for _ in range(0 if args.smoke else args.starts)]
        bare = [await bare_start(fakes) for _ in range(2 * args.starts)]
        for number in range(args.starts):
            log = directory / f"bot-fresh-{number}.log"
            fresh.append(await one_start(fakes, urls[number], log, None))
        for number in range(args.starts):
            log = directory / f"bot-existing-{number}.log"
            existing.append(await one_start(fakes, urls[0], log, args.idle))
        for number in range(args.starts):
            log = directory / f"bot-command-{number}.log"
            url = urls[args.starts + number]
            commands.append(await command_start(fakes, url, log))

    def row(label: str, starts: list[Start]) -> tuple[object, ...]:
        answer = [s.answer_seconds for s in starts]
        ready = [s.ready_seconds for s in starts]
        idle = [s.idle_rss_kib / 1024 for s in starts if s.idle_rss_kib is not None]
        return (
            label,
            len(starts),
            f"{statistics.median(answer):.2f}",
            f"{max(answer):.2f}",
            f"{statistics.median(ready):.2f}",
            f"{max(ready):.2f}",
            statistics.median(s.ready_rss_kib / 1024 for s in starts),
            statistics.median(idle) if idle else "-",
            max(idle) if idle else "-",
            f"{statistics.median(s.stop_seconds for s in starts):.2f}",
        )

    rows = [row(f"fresh {kind}", fresh), row(f"existing {kind}", existing)]
    floor, floor_max = statistics.median(bare), max(bare)
    floor_cells = (f"{floor:.2f}", f"{floor_max:.2f}")
    rows.insert(0, ("bare Bolt app (bench.bare_bolt)", len(bare), *floor_cells * 2, *["-"] * 4))
    if imports:
        median, most = f"{statistics.median(imports):.2f}", f"{max(imports):.2f}"
        rows.insert(0, (f"imports only: {IMPORTS}", len(imports), "-", "-", median, most))
        rows[0] += ("-",) * 4
    every = [s.ready_seconds for s in fresh + existing]
    answers = [s.answer_seconds for s in fresh + existing]
    typical, slowest = statistics.median(every), max(every)
    first = statistics.median(answers)
    ratio, ready_ratio = first / floor, typical / floor
    print_table(
        f"Start-up: spawn of `retell-bot serve` to its first HTTP answer and to /healthz 200, "
        f"idle RSS after {args.idle:g} s\n  {machine()}",
        [
            "start",
            "n",
            "answers median s",
            "answers max s",
            "ready median s",
            "ready max s",
            "RSS at ready MiB",
            "idle RSS median MiB",
            "idle RSS max MiB",
            "SIGTERM to exit s",
        ],
        rows,
        note=(
            f"first answer / bare Bolt app: {first:.2f} s / {floor:.2f} s = {ratio:.2f}x "
            f"(target within {RATIO_TARGET:g}x: {'met' if ratio <= RATIO_TARGET else 'MISSED'});"
            f" ready / bare Bolt app: {ready_ratio:.2f}x\n"
            f"target: under {TARGET_SECONDS:g} s to ready: median of all starts "
            f"{typical:.2f} s: {'met' if typical < TARGET_SECONDS else 'MISSED'}; "
            f"{sum(t >= TARGET_SECONDS for t in every)} of {len(every)} starts took longer "
            f"(slowest {slowest:.2f} s)"
        ),
    )
    acked = [c.acked_seconds for c in commands]
    ack_ms = [c.ack_ms for c in commands]
    print_table(
        "A `run` command sent at the first answer (fresh database): spawn to its ack, the ack",
        [
            "start",
            "n",
            "acked median s",
            "acked max s",
            "ack median ms",
            "ack max ms",
            "usual ack",
            "batches (1 each)",
            "ready median s",
        ],
        [
            (
                f"command at first answer, fresh {kind}",
                len(commands),
                f"{statistics.median(acked):.2f}",
                f"{max(acked):.2f}",
                f"{statistics.median(ack_ms):.0f}",
                f"{max(ack_ms):.0f}",
                f"{sum(c.usual for c in commands)} of {len(commands)}",
                ",".join(str(c.batches) for c in commands),
                f"{statistics.median(c.ready_seconds for c in commands):.2f}",
            )
        ],
        note=(
            f"target: acked within {SLACK_ACK_DEADLINE_MS / 1000:g} s with the usual text and "
            "started once: "
            + (
                "met"
                if all(
                    c.usual and c.batches == 1 and c.ack_ms < SLACK_ACK_DEADLINE_MS
                    for c in commands
                )
                else "MISSED"
            )
        ),
    )
    failed = [s for s in fresh + existing if s.exit_code != 0]
    if failed:
        print(f"FAIL: {len(failed)} starts did not exit 0 on SIGTERM", flush=True)
        return 1
    if args.strict and (typical >= TARGET_SECONDS or ratio > RATIO_TARGET):
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
