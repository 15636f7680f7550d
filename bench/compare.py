"""Comparison cost: `compare llm_abc@3 llm_abc@4 <1,000 ids>`, from completion to result.

    .venv/bin/python -m bench.compare             # 1,000 cases; then the same with repeat=2
    .venv/bin/python -m bench.compare --smoke     # 200 cases, 1 s batches: about 15 s

The real server (`retell-bot serve`, SQLite default) runs in a child process with fake Slack and
fake Retell in processes of their own, as in the other benchmarks. Fake Retell gets engine
`llm_abc` with versions 0..4 and 1,000 test case definitions, and per-version outcomes
(`/_control/outcome` with `version`): on version 4, 40 cases regress (30 fail with a
~400-character explanation, 10 error), 25 that fail on version 3 are fixed, 15 fail on both;
the rest pass on both. The signed slash command `/retell-test compare llm_abc@3 llm_abc@4
<the 1,000 ids>` starts the comparison (SPEC §9), then `... repeat=2` a second one in another
channel. Measured for each:

- **lag**: from the last of its batches completing at the fake Retell (`completed_ms` in
  `/_control/stats`) to the comparison's result in Slack (the status message first edited into
  a text with "regressed", as fake Slack timed it);
- **Retell requests** of the whole comparison by path (command to result), and those made
  after the last batch completed (reading the per-case results: `list-test-runs` pages of every
  batch). The completion snapshot comes from polling `/_control/stats` every 50 ms, so a
  request within that window of completion may be counted on either side;
- the **result message**: blocks (Slack allows 50) and the longest section text (3,000), the
  fallback text and the JSON size.

Checks (exit code 1 if one fails): acks 200, 2 x repeat batches created, one top-level message
and the requester's mention, the regressed/fixed counts and version 4's pass/fail/error/total
counts in the result's text, `Regressed (40)` in its blocks, and the Block Kit limits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    Standins,
    cpu_seconds,
    in_workdir,
    machine,
    print_table,
    run_main,
    standins,
    wait_until,
)
from bench.triage import (
    CONTROL_CONCURRENCY,
    SETTLE_SECONDS,
    WHY,
    command,
    control,
    counts_delta,
    mentions,
    messages,
    retell_requests,
    slack_calls,
    top_level,
)
from bot.testing.process import BotProcess

JSONDict = dict[str, Any]

ENGINE = "llm_abc"
BASELINE, CANDIDATE = 3, 4
CHANNELS = {1: "C0COMPARE1", 2: "C0COMPARE2"}  # by repeat
MAX_BLOCKS = 50  # Slack's limits on a message
MAX_SECTION_TEXT = 3000
STATS_EVERY = 0.05  # seconds between /_control/stats polls while the batches run


@dataclass(frozen=True)
class Plan:
    """How the cases of the suite end on each version."""

    cases: int
    regressed_fail: int  # pass on A, fail on B (with a long explanation)
    regressed_error: int  # pass on A, error on B
    fixed: int  # fail on A, pass on B
    still_failing: int  # fail on both

    @property
    def regressed(self) -> int:
        return self.regressed_fail + self.regressed_error

    def b_counts(self, repeat: int) -> str:
        """Version B's counts as the result's fallback text states them."""
        failed = (self.regressed_fail + self.still_failing) * repeat
        errored = self.regressed_error * repeat
        total = self.cases * repeat
        return (
            f"{total - failed - errored} passed, {failed} failed, {errored} errored, {total} total"
        )


@dataclass
class Comparison:
    """One comparison, measured."""

    repeat: int
    ack_status: int = 0
    lag_s: float = math.nan  # last batch complete at Retell -> result in Slack
    first_to_last_s: float = math.nan  # first to last batch completing
    wall_s: float = math.nan  # command -> result
    bot_cpu: float = 0.0
    bot_cpu_after: float = math.nan  # last batch complete -> result (+ settle)
    batches: int = 0
    retell: dict[str, int] = field(default_factory=dict)  # command -> result (+ settle)
    after_complete: dict[str, int] = field(default_factory=dict)  # last completion -> result
    slack: dict[str, int] = field(default_factory=dict)
    top_level: int = 0
    mentions: int = 0
    status_edits: int = 0
    result_text: str = ""
    result_blocks: list[JSONDict] = field(default_factory=list)
    result_bytes: int = 0

    @property
    def block_count(self) -> int:
        return len(self.result_blocks)

    @property
    def longest_section(self) -> int:
        return max(section_lengths(self.result_blocks), default=0)

    @property
    def block_text(self) -> str:
        return "\n".join(text for block in self.result_blocks for text in block_texts(block))


def block_texts(block: JSONDict) -> list[str]:
    """The texts of a block: a section's text and fields, a context's elements."""
    texts: list[str] = []
    text = block.get("text")
    if isinstance(text, dict) and isinstance(text.get("text"), str):
        texts.append(text["text"])
    for item in [*block.get("fields", []), *block.get("elements", [])]:
        if isinstance(item, dict) and isinstance(item.get("text"), str):
            texts.append(item["text"])
    return texts


def section_lengths(blocks: list[JSONDict]) -> list[int]:
    """Characters of every section's text (Slack's 3,000 limit applies to each)."""
    return [
        len(block["text"]["text"])
        for block in blocks
        if block.get("type") == "section" and isinstance(block.get("text"), dict)
    ]


async def seed(fakes: Standins, plan: Plan) -> list[str]:
    """The engine with versions 0..4, its cases, and how each ends on A and on B."""
    answer = await control(
        fakes,
        fakes.retell.url,
        "/_control/seed",
        {"engine_id": ENGINE, "count": plan.cases, "prefix": "abc_", "versions": CANDIDATE + 1},
    )
    ids = [str(case_id) for case_id in answer["ids"]]
    chosen = random.Random(1).sample(
        ids, plan.regressed + plan.fixed + plan.still_failing
    )  # spread over the suite
    outcomes: list[JSONDict] = []
    start = 0

    def take(count: int) -> list[str]:
        nonlocal start
        start += count
        return chosen[start - count : start]

    for case_id in take(plan.regressed_fail):
        why = f"{case_id}: {WHY}"
        outcomes.append(
            {"case_id": case_id, "status": "fail", "explanation": why, "version": CANDIDATE}
        )
    for case_id in take(plan.regressed_error):
        outcomes.append({"case_id": case_id, "status": "error", "version": CANDIDATE})
    for case_id in take(plan.fixed):
        why = f"{case_id}: the agent hung up on the caller."
        outcomes.append(
            {"case_id": case_id, "status": "fail", "explanation": why, "version": BASELINE}
        )
    for case_id in take(plan.still_failing):
        why = f"{case_id}: still reads out a policy that does not exist."
        outcomes.append({"case_id": case_id, "status": "fail", "explanation": why})
    limit = asyncio.Semaphore(CONTROL_CONCURRENCY)

    async def one(body: JSONDict) -> None:
        async with limit:
            await control(fakes, fakes.retell.url, "/_control/outcome", body)

    await asyncio.gather(*(one(body) for body in outcomes))
    return ids


def first_result_at(message: JSONDict) -> float | None:
    """When the message first showed the comparison (fallback text with "regressed")."""
    versions = [(v["text"], v["at"]) for v in message["updates"]]
    versions.append((message["text"], message["updated_at"]))
    return next((float(at) for text, at in versions if "regressed" in str(text)), None)


async def compare(
    fakes: Standins, bot: BotProcess, ids: list[str], repeat: int, timeout: float
) -> Comparison:
    measured = Comparison(repeat=repeat)
    channel = CHANNELS[repeat]
    expected_batches = 2 * repeat
    known = set((await fakes.retell_stats())["batches"])
    retell_before, slack_before = await retell_requests(fakes), await slack_calls(fakes)
    at_completion: dict[str, int] | None = None
    cpu_at_completion = math.nan
    completed: list[float] = []
    stop = asyncio.Event()

    async def watch() -> None:
        """Snapshot the request counts as soon as every batch of this comparison completed."""
        nonlocal at_completion, completed, cpu_at_completion
        while not stop.is_set():
            stats = await fakes.retell_stats()
            ours = [info for batch_id, info in stats["batches"].items() if batch_id not in known]
            done = [info["completed_ms"] for info in ours if info["completed_ms"] is not None]
            if len(ours) == expected_batches and len(done) == expected_batches:
                at_completion = dict(stats["requests"]["by_path"])
                cpu_at_completion = cpu_seconds(bot.pid)
                completed = [float(ms) for ms in done]
                return
            await asyncio.sleep(STATS_EVERY)

    watcher = asyncio.create_task(watch())
    text = f"compare {ENGINE}@{BASELINE} {ENGINE}@{CANDIDATE} {' '.join(ids)}"
    if repeat > 1:
        text += f" repeat={repeat}"
    cpu_before = cpu_seconds(bot.pid)
    sent = time.time()
    measured.ack_status = await command(fakes, bot, text, f"U0CMP{repeat}", channel)
    found: dict[str, JSONDict] = {}

    async def arrived() -> bool:
        everything = await messages(fakes)
        tops = [m for m in top_level(everything, channel) if "regressed" in str(m["text"])]
        if tops and mentions(everything, channel, str(tops[0]["ts"])):
            found["result"] = tops[0]
        return bool(found)

    try:
        if not await wait_until(arrived, timeout=timeout, every=0.1):
            raise TimeoutError(f"no comparison result within {timeout:g} s in {channel}")
        await asyncio.sleep(SETTLE_SECONDS)
    finally:
        stop.set()
        await asyncio.wait_for(watcher, 10.0)  # raises what the watcher raised
    cpu_now = cpu_seconds(bot.pid)
    measured.bot_cpu = cpu_now - cpu_before
    measured.bot_cpu_after = cpu_now - cpu_at_completion
    after = await retell_requests(fakes)
    measured.retell = counts_delta(after, retell_before)
    if at_completion is not None:
        measured.after_complete = counts_delta(after, at_completion)
    measured.slack = counts_delta(await slack_calls(fakes), slack_before)
    batches = {
        batch_id: info
        for batch_id, info in (await fakes.retell_stats())["batches"].items()
        if batch_id not in known
    }
    measured.batches = len(batches)
    everything = await messages(fakes)
    measured.top_level = len(top_level(everything, channel))
    [result] = [m for m in everything if m["ts"] == found["result"]["ts"]]
    measured.mentions = len(mentions(everything, channel, str(result["ts"])))
    measured.status_edits = int(result["update_count"])
    measured.result_text = str(result["text"])
    measured.result_blocks = list(result["blocks"])
    measured.result_bytes = len(
        json.dumps({"text": result["text"], "blocks": result["blocks"]}).encode()
    )
    shown_at = first_result_at(result)
    if completed and shown_at is not None:
        measured.lag_s = shown_at - max(completed) / 1000
        measured.first_to_last_s = (max(completed) - min(completed)) / 1000
        measured.wall_s = shown_at - sent
    return measured


# -- the run ---------------------------------------------------------------------------------------


@dataclass
class Findings:
    comparisons: list[Comparison] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


async def measure(args: argparse.Namespace, plan: Plan, workdir: Path, found: Findings) -> None:
    async with standins(workdir, batch_seconds=args.batch_seconds) as fakes:
        environment = fakes.bot_environment(
            f"sqlite:///{workdir / 'compare.db'}",
            poll_initial_seconds=f"{args.poll_initial}",
            poll_max_seconds=f"{args.poll_max}",
            log_level="INFO",
        )
        bot = BotProcess(environment, log_path=workdir / "bot.log")
        ids = await seed(fakes, plan)
        await bot.start()
        try:
            timeout = args.batch_seconds * 2 + 120.0
            for repeat in args.repeats:
                print(
                    f"  compare: {ENGINE}@{BASELINE} vs @{CANDIDATE}, {plan.cases:,} cases"
                    + (f", repeat={repeat}" if repeat > 1 else ""),
                    flush=True,
                )
                found.comparisons.append(await compare(fakes, bot, ids, repeat, timeout))
        finally:
            code = await bot.stop()
            if code != 0:
                found.problems.append(f"the bot exited with {code} on SIGTERM")


def checks_of(plan: Plan, m: Comparison) -> list[tuple[str, str, bool]]:
    label = f"repeat={m.repeat}" if m.repeat > 1 else "compare"
    creates = m.retell.get("/create-batch-test", 0)
    expected = 2 * m.repeat
    says = [
        f"{plan.regressed} regressed",
        f"{plan.fixed} fixed",
        plan.b_counts(m.repeat),
    ]
    missing = [phrase for phrase in says if phrase not in m.result_text]
    listed = f"Regressed ({plan.regressed})"
    pages = m.after_complete.get("/v2/list-test-runs", 0)
    want_pages = expected * math.ceil(plan.cases / 1000)
    return [
        (f"{label}: ack", str(m.ack_status), m.ack_status == 200),
        (
            f"{label}: batches created",
            f"{m.batches} ({creates} create requests; {expected} expected)",
            m.batches == creates == expected,
        ),
        (f"{label}: top-level messages", f"{m.top_level} (1 expected)", m.top_level == 1),
        (f"{label}: requester's mention", f"{m.mentions} (1 expected)", m.mentions == 1),
        (
            f"{label}: result says",
            "; ".join(says) if not missing else f"MISSING {missing} in {m.result_text!r:.300}",
            not missing,
        ),
        (
            f"{label}: blocks list",
            listed if listed in m.block_text else f"no {listed!r}",
            listed in m.block_text,
        ),
        (
            f"{label}: list-test-runs after completion",
            f"{pages} ({want_pages} expected: one page per batch)",
            pages == want_pages,
        ),
        (f"{label}: blocks", f"{m.block_count} (<= {MAX_BLOCKS})", m.block_count <= MAX_BLOCKS),
        (
            f"{label}: longest section",
            f"{m.longest_section:,} chars (<= {MAX_SECTION_TEXT:,})",
            0 < m.longest_section <= MAX_SECTION_TEXT,
        ),
    ]


def report(args: argparse.Namespace, plan: Plan, found: Findings) -> int:
    polls = f"POLL_INITIAL_SECONDS={args.poll_initial:g}, POLL_MAX_SECONDS={args.poll_max:g}"
    done = found.comparisons
    if done:
        columns = ["figure", *(f"repeat={m.repeat}" for m in done), "note"]
        paths = sorted({path for m in done for path in (*m.retell, *m.after_complete)})

        def row(figure: str, values: list[object], note: str = "") -> tuple[object, ...]:
            return (figure, *values, note)

        rows = [
            row(
                "last batch complete at Retell -> result in Slack, s",
                [f"{m.lag_s:.2f}" for m in done],
                polls,
            ),
            row(
                "first -> last batch completing, s",
                [f"{m.first_to_last_s:.2f}" for m in done],
                "",
            ),
            row(
                "command -> result, s",
                [f"{m.wall_s:.1f}" for m in done],
                f"{args.batch_seconds:g} s batches",
            ),
            row(
                "bot CPU, command to result, s",
                [f"{m.bot_cpu:.2f}" for m in done],
                f"both with the {SETTLE_SECONDS:g} s settle after the result",
            ),
            row("bot CPU, last completion to result, s", [f"{m.bot_cpu_after:.2f}" for m in done]),
            row("batches", [m.batches for m in done], "one per version and run"),
            row("Retell requests, whole comparison", [sum(m.retell.values()) for m in done]),
            *(row(f"  {path}", [m.retell.get(path, 0) for m in done]) for path in paths),
            row(
                "Retell requests after the last batch completed",
                [sum(m.after_complete.values()) for m in done],
                f"stats polled every {STATS_EVERY * 1000:g} ms",
            ),
            *(
                row(f"  {path}", [m.after_complete.get(path, 0) for m in done])
                for path in paths
                if any(m.after_complete.get(path) for m in done)
            ),
            row(
                "Slack calls",
                [sum(m.slack.values()) for m in done],
                " / ".join(
                    ", ".join(f"{method} {n}" for method, n in m.slack.items()) for m in done
                ),
            ),
            row(
                "top-level messages",
                [m.top_level for m in done],
                "status message edited " + " / ".join(f"{m.status_edits}x" for m in done),
            ),
            row("result blocks", [m.block_count for m in done], f"Slack allows {MAX_BLOCKS}"),
            row(
                "result: longest section, chars",
                [m.longest_section for m in done],
                f"Slack allows {MAX_SECTION_TEXT:,}",
            ),
            row(
                "result: sections",
                [len(section_lengths(m.result_blocks)) for m in done],
                "",
            ),
            row("result: fallback text, chars", [len(m.result_text) for m in done]),
            row("result: text + blocks JSON, KiB", [f"{m.result_bytes / 1024:.1f}" for m in done]),
        ]
        print_table(
            f"compare {ENGINE}@{BASELINE} {ENGINE}@{CANDIDATE} <{plan.cases:,} ids>: "
            f"{plan.regressed} regressed ({plan.regressed_fail} fail with ~{len(WHY) + 12}-char "
            f"explanations, {plan.regressed_error} error), {plan.fixed} fixed, "
            f"{plan.still_failing} still failing\n  {machine()}",
            columns,
            rows,
        )
    checks: list[tuple[str, str, bool]] = []
    for repeat in args.repeats:
        measured = next((m for m in done if m.repeat == repeat), None)
        if measured is None:
            checks.append((f"repeat={repeat}", "not measured", False))
        else:
            checks += checks_of(plan, measured)
    checks.append(("the run", "; ".join(found.problems) or "ok", not found.problems))
    print_table(
        "Checks",
        ["check", "result", "ok"],
        [(check, result, "ok" if passed else "FAILED") for check, result, passed in checks],
    )
    failed = [check for check, _, passed in checks if not passed]
    if failed:
        print(f"FAIL: {'; '.join(failed)}", flush=True)
        return 1
    return 0


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, Plan]:
    parser = argparse.ArgumentParser(
        prog="python -m bench.compare",
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--cases", type=int, default=1000, help="cases on each version")
    parser.add_argument("--batch-seconds", type=float, default=10.0, help="fake batch duration")
    parser.add_argument("--poll-initial", type=float, default=2.0, help="POLL_INITIAL_SECONDS")
    parser.add_argument("--poll-max", type=float, default=10.0, help="POLL_MAX_SECONDS")
    parser.add_argument(
        "--no-repeat", action="store_true", help="skip the second comparison (repeat=2)"
    )
    parser.add_argument("--smoke", action="store_true", help="200 cases, 1 s batches")
    parser.add_argument("--workdir", type=Path, default=None, help="kept; default: temporary")
    args = parser.parse_args(argv)
    if args.smoke:
        args.cases, args.batch_seconds, args.poll_initial, args.poll_max = 200, 1.0, 0.25, 1.0
    if not 100 <= args.cases <= 1000:
        parser.error("--cases takes 100 to 1000")
    args.repeats = [1] if args.no_repeat else [1, 2]
    n = args.cases
    plan = Plan(n, 3 * n // 100, n // 100, n // 40, 3 * n // 200)
    return args, plan


async def main(argv: list[str]) -> int:
    args, plan = parse_args(argv)

    async def body(workdir: Path) -> int:
        found = Findings()
        try:
            await measure(args, plan, workdir, found)
        except TimeoutError as exc:
            found.problems.append(str(exc))
        return report(args, plan, found)

    return await in_workdir("retell-bench-compare-", args.workdir, body)


if __name__ == "__main__":
    raise SystemExit(run_main(main, sys.argv[1:]))
