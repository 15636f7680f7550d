"""Ack latency under load (issue 7, item 1): the bot against a bare Bolt app on the same stack.

    .venv/bin/python -m bench.ack                      # 500 commands at concurrency 50
    .venv/bin/python -m bench.ack --smoke              # 40 at 10, a few seconds
    .venv/bin/python -m bench.ack --repeat 3 --timeline --profile /tmp/ack.txt

Fake Slack and fake Retell run as separate processes; fake Retell holds every
`POST /create-batch-test` for 2 s (`/_control/delay`). Two servers are measured in turn, each
after a warm-up that is not counted:

- the bare Bolt app (`bench/bare_bolt.py`, its own process): aiohttp + `AsyncApp` + the aiohttp
  adapter, acking `/retell-test` and nothing else: the floor of the stack;
- the real bot (`retell-bot serve` in a child process, a fresh SQLite file in the work dir), whose
  every command here creates a batch: its acks go out while the earlier commands' batches are
  being created, stored and announced in the same process.

The load is closed-loop: `--concurrency` requests in flight, signed like Slack (built and signed
before the clock starts), each timed from send to the end of the response body; the load
generator's garbage collector is off while it sends. Commands are spread over users so that
MAX_RUNS_PER_USER_PER_HOUR (30) is never reached. After each round the bot must have created one
batch per command (fake Retell's stats) and posted one status message for each (fake Slack's
stats), with nothing sent to a response_url (a refusal or an error). `--repeat N` runs N rounds
(bare, then bot, then the bot drains) and pools them: other work on the machine shows up as
noise, so the load average is printed with the table.

Targets: p99 under 100 ms, our p99 within 1.5x the bare app's, nothing over 3000 ms (Slack's ack
deadline). Exit code 1 if a check failed or anything took over 3000 ms; `--strict` also fails on
the latency targets. `--profile FILE` samples the bot with py-spy during its first round.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    BOT_TOKEN,
    SIGNING_SECRET,
    SLACK_ACK_DEADLINE_MS,
    ServiceProcess,
    SignedRequest,
    Standins,
    Timed,
    cpu_seconds,
    in_workdir,
    machine,
    percentile,
    post_concurrently,
    print_table,
    py_spy,
    run_main,
    slash_command,
    standins,
)
from bot.testing.process import BotProcess

ENGINE = "llm_ack"
DEFINITIONS = 12
COMMANDS_PER_USER = 20  # under MAX_RUNS_PER_USER_PER_HOUR (30)
CHANNELS = 10
P99_TARGET_MS = 100.0
RATIO_TARGET = 1.5
BARE, OURS = "bare Bolt app", "retell-bot"


@dataclass(frozen=True)
class Measurement:
    server: str
    results: list[Timed]
    seconds: float  # wall time of the measured run(s)
    cpu: float  # CPU seconds the server used meanwhile

    @classmethod
    def pooled(cls, server: str, parts: list[Measurement]) -> Measurement:
        return cls(
            server,
            [result for part in parts for result in part.results],
            sum(part.seconds for part in parts),
            sum(part.cpu for part in parts),
        )

    @property
    def latencies(self) -> list[float]:
        return [result.ms for result in self.results]

    @property
    def p99(self) -> float:
        return percentile(self.latencies, 0.99)

    @property
    def failures(self) -> list[Timed]:
        return [result for result in self.results if result.status != 200]

    @property
    def over_deadline(self) -> int:
        return sum(ms > SLACK_ACK_DEADLINE_MS for ms in self.latencies)


@dataclass(frozen=True)
class Command:
    text: str
    user_id: str
    channel_id: str


@dataclass(frozen=True)
class Target:
    """A server under load: where to post, and which process to charge the CPU to."""

    name: str
    events_url: str
    pid: int


@dataclass
class Outcome:
    """Everything one benchmark run measured and checked."""

    floors: list[Measurement]
    ours: list[Measurement]
    expected: int = 0  # batches the bot should have started, warm-up included
    created: int = 0
    announced: int = 0
    told: int = 0
    drain_seconds: float = 0.0  # after the last ack, until the round's last status message


def commands(count: int, case_ids: list[str], *, tag: str) -> list[Command]:
    """`count` run commands naming 2-4 test cases, ids separated by spaces or commas."""
    made: list[Command] = []
    for number in range(count):
        size = 2 + number % 3
        start = number % (len(case_ids) - size + 1)
        picked = case_ids[start : start + size]
        separator = "," if number % 4 == 3 else " "
        made.append(
            Command(
                text=f"{ENGINE} {separator.join(picked)}",
                user_id=f"U{tag}{number // COMMANDS_PER_USER:05d}",
                channel_id=f"C0ACK{number % CHANNELS:03d}",
            )
        )
    return made


async def signed(fakes: Standins, batch: list[Command]) -> list[SignedRequest]:
    """Each command with its own response_url minted on fake Slack, signed now."""
    urls = await asyncio.gather(*(fakes.response_url(c.channel_id) for c in batch))
    return [
        slash_command(c.text, user_id=c.user_id, channel_id=c.channel_id, response_url=url)
        for c, url in zip(batch, urls, strict=True)
    ]


async def measure(
    fakes: Standins, target: Target, batch: list[Command], concurrency: int
) -> Measurement:
    requests = await signed(fakes, batch)
    cpu_before = cpu_seconds(target.pid)
    started = time.perf_counter()
    results = await post_concurrently(target.events_url, requests, concurrency=concurrency)
    seconds = time.perf_counter() - started
    return Measurement(target.name, results, seconds, cpu_seconds(target.pid) - cpu_before)


async def status_messages(fakes: Standins) -> int:
    """Top-level messages in fake Slack (the bot's status messages; replies excluded)."""
    stats = await fakes.slack_stats()
    return sum(1 for message in stats["messages"] if message["thread_ts"] is None)


async def all_announced(fakes: Standins, wanted: int, *, stalled_after: float = 30.0) -> bool:
    """Wait until fake Slack has `wanted` status messages (True), or until no new one came
    for `stalled_after` seconds (False: some commands were acked but never started)."""
    seen, progressed = -1, time.monotonic()
    while (count := await status_messages(fakes)) < wanted:
        if count > seen:
            seen, progressed = count, time.monotonic()
        elif time.monotonic() - progressed > stalled_after:
            return False
        await asyncio.sleep(0.25)
    return True


async def response_url_posts(fakes: Standins) -> int:
    """What the bot said through response_urls: refusals and errors, none expected here."""
    answer = await fakes.slack_responses()
    return sum(len(posts) for posts in answer["responses"].values())


async def drive(
    args: argparse.Namespace, fakes: Standins, bare: Target, bot: Target, case_ids: list[str]
) -> Outcome:
    """Warm both servers up, then measure them in turn, `--repeat` times."""
    outcome = Outcome(floors=[], ours=[])
    # Bolt's first request runs auth.test; the bot's first ones open the database pool and
    # the connections to Retell and Slack.
    warm_count = max(args.concurrency, 10)
    await measure(fakes, bare, commands(warm_count, case_ids, tag="WB"), args.concurrency)
    await measure(fakes, bot, commands(warm_count, case_ids, tag="WR"), args.concurrency)
    outcome.expected = warm_count
    if not await all_announced(fakes, outcome.expected):
        return outcome
    for round_number in range(args.repeat):
        batch = commands(args.commands, case_ids, tag=f"B{round_number}")
        outcome.floors.append(await measure(fakes, bare, batch, args.concurrency))
        batch = commands(args.commands, case_ids, tag=f"R{round_number}")
        profile = args.profile if round_number == 0 else None
        async with py_spy(bot.pid, profile, native=args.native):
            outcome.ours.append(await measure(fakes, bot, batch, args.concurrency))
        # Let the bot finish starting this round's batches before the next round.
        outcome.expected += args.commands
        acked = time.perf_counter()
        await all_announced(fakes, outcome.expected)
        outcome.drain_seconds = max(outcome.drain_seconds, time.perf_counter() - acked)
    outcome.created = len((await fakes.retell_stats())["batches"])
    outcome.announced = await status_messages(fakes)
    outcome.told = await response_url_posts(fakes)
    return outcome


async def run(args: argparse.Namespace, directory: Path) -> int:
    async with standins(directory, batch_seconds=args.batch_seconds) as fakes:
        case_ids = await fakes.seed(ENGINE, DEFINITIONS)
        await fakes.delay("/create-batch-test", args.create_seconds)
        bare = ServiceProcess(
            BARE,
            "bench.bare_bolt",
            "--port",
            "0",
            "--signing-secret",
            SIGNING_SECRET,
            "--bot-token",
            BOT_TOKEN,
            "--slack-api-url",
            fakes.slack_api_url,
            log_path=directory / "bare-bolt.log",
        )
        environment = fakes.bot_environment(
            f"sqlite:///{directory / 'ack.db'}",
            poll_initial_seconds=f"{args.poll_initial}",
            poll_max_seconds=f"{args.poll_max}",
            log_level="INFO",
            **dict(item.split("=", 1) for item in args.bot_env),
        )
        bot = BotProcess(environment, log_path=directory / "bot.log")
        async with bare:
            await bot.start()
            try:
                outcome = await drive(
                    args,
                    fakes,
                    Target(BARE, f"{bare.url}/slack/events", bare.pid),
                    Target(OURS, bot.events_url, bot.pid),
                    case_ids,
                )
            finally:
                await bot.stop()
    if not outcome.ours:
        print("FAIL: the bot did not start the warm-up batches", flush=True)
        return 1
    return report(args, outcome)


def report(args: argparse.Namespace, outcome: Outcome) -> int:
    """Print the tables; return 1 if a check failed."""
    floor = Measurement.pooled(BARE, outcome.floors)
    ours = Measurement.pooled(OURS, outcome.ours)
    latency_table(args, outcome, floor, ours)
    if args.timeline:
        timeline(outcome.floors[0])
        timeline(outcome.ours[0])
    sent = len(ours.results)
    drained = (
        f"the last {outcome.drain_seconds:.1f} s after the last ack"
        if outcome.announced == outcome.expected
        else f"none new for 30 s: {outcome.expected - outcome.announced} acked, never started"
    )
    checks = [
        ("acks with HTTP 200", f"{sent - len(ours.failures)} / {sent}"),
        ("batches created at fake Retell", f"{outcome.created} / {outcome.expected}"),
        ("status messages posted", f"{outcome.announced} / {outcome.expected} ({drained})"),
        ("replies through response_url", f"{outcome.told} (refusals or errors; 0 expected)"),
    ]
    print_table(f"Checks ({OURS}; counts include the warm-up)", ["check", "result"], checks)
    problems = [
        *(f"{OURS} ack {r.status} {r.error}" for r in ours.failures[:5]),
        *(f"{BARE} ack {r.status} {r.error}" for r in floor.failures[:5]),
    ]
    if outcome.created != outcome.expected or outcome.announced != outcome.expected:
        problems.append(f"expected {outcome.expected} batches and status messages")
    if outcome.told:
        problems.append(f"{outcome.told} replies through response_url")
    if ours.over_deadline or floor.over_deadline:
        problems.append("acks over 3000 ms")
    if args.strict and not (ours.p99 < P99_TARGET_MS and ours.p99 <= RATIO_TARGET * floor.p99):
        problems.append("latency targets missed (--strict)")
    if problems:
        print("FAIL: " + "; ".join(problems), flush=True)
        return 1
    return 0


def latency_table(
    args: argparse.Namespace, outcome: Outcome, floor: Measurement, ours: Measurement
) -> None:
    def row(measured: Measurement, label: str, floor_p99: float) -> tuple[object, ...]:
        return (
            label,
            len(measured.results),
            percentile(measured.latencies, 0.5),
            measured.p99,
            max(measured.latencies),
            measured.over_deadline,
            f"{len(measured.results) / measured.seconds:.0f}",
            f"{measured.cpu:.2f}",
            f"{measured.p99 / floor_p99:.2f}x",
        )

    rows = [row(floor, BARE, floor.p99), row(ours, OURS, floor.p99)]
    if args.repeat > 1:
        for number, (bare_part, our_part) in enumerate(
            zip(outcome.floors, outcome.ours, strict=True), start=1
        ):
            rows.append(row(bare_part, f"  round {number}: bare", bare_part.p99))
            rows.append(row(our_part, f"  round {number}: ours", bare_part.p99))
    ratio = ours.p99 / floor.p99

    def verdict(met: bool) -> str:
        return "met" if met else "MISSED"

    print_table(
        f"Ack latency: {args.commands} signed /retell-test commands per server"
        f"{f' x {args.repeat} rounds' if args.repeat > 1 else ''} at concurrency "
        f"{args.concurrency}, fake Retell {args.create_seconds:g} s per create\n  {machine()}",
        [
            "server",
            "n",
            "p50 ms",
            "p99 ms",
            "max ms",
            "over 3000 ms",
            "req/s",
            "server CPU s",
            "p99 / bare",
        ],
        rows,
        note=(
            f"targets: p99 < {P99_TARGET_MS:g} ms: {verdict(ours.p99 < P99_TARGET_MS)}; "
            f"p99 within {RATIO_TARGET:g}x bare ({ratio:.2f}x): "
            f"{verdict(ratio <= RATIO_TARGET)}; "
            f"none over 3000 ms: {verdict(ours.over_deadline == 0)}"
        ),
    )


def timeline(measured: Measurement, bucket_ms: float = 50.0) -> None:
    """Ack latency by when the command was sent: where in the run the slow acks were."""
    buckets: dict[int, list[float]] = {}
    for result in measured.results:
        buckets.setdefault(int(result.sent_at * 1000 // bucket_ms), []).append(result.ms)
    rows = [
        (f"{index * bucket_ms:.0f}", len(values), percentile(values, 0.5), max(values))
        for index, values in sorted(buckets.items())
    ]
    print_table(
        f"Timeline of {measured.server} (round 1): acks by when they were sent",
        ["sent at ms", "n", "p50 ms", "max ms"],
        rows,
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ack",
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--commands", type=int, default=500, help="per server and round")
    parser.add_argument("--concurrency", type=int, default=50, help="requests in flight")
    parser.add_argument("--repeat", type=int, default=1, help="rounds, pooled")
    parser.add_argument("--smoke", action="store_true", help="40 commands at concurrency 10")
    parser.add_argument("--create-seconds", type=float, default=2.0, help="fake Retell delay")
    parser.add_argument("--batch-seconds", type=float, default=5.0, help="fake batch duration")
    parser.add_argument("--poll-initial", type=float, default=2.0, help="POLL_INITIAL_SECONDS")
    parser.add_argument("--poll-max", type=float, default=10.0, help="POLL_MAX_SECONDS")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--timeline", action="store_true", help="acks per 50 ms of round 1")
    parser.add_argument("--profile", type=Path, default=None, help="py-spy output of the bot")
    parser.add_argument("--native", action="store_true", help="py-spy C frames (slows the bot)")
    parser.add_argument(
        "--bot-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra setting for the bot, e.g. MAX_RUNS_PER_USER_PER_HOUR=0 (repeatable)",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="kept; default: temporary")
    args = parser.parse_args(argv)
    if any("=" not in item for item in args.bot_env):
        parser.error("--bot-env takes NAME=VALUE")
    if args.smoke:
        args.commands, args.concurrency, args.repeat = 40, 10, 1
    return args


async def main(argv: list[str]) -> int:
    args = parse_args(argv)
    return await in_workdir("retell-bench-ack-", args.workdir, lambda d: run(args, d))


if __name__ == "__main__":
    import sys

    raise SystemExit(run_main(main, sys.argv[1:]))
