"""Triage cost: Show failures on a big red batch, `repeat=5` of a 1,000-case suite, rendering.

    .venv/bin/python -m bench.triage              # 1,000 cases, 400 failing; repeat=5 of 1,000
    .venv/bin/python -m bench.triage --smoke      # 200 cases, 120 failing; repeat=2 of 20

The real server (`retell-bot serve`, SQLite default) runs in a child process with fake Slack and
fake Retell in processes of their own, as in the other benchmarks; requests reach it signed like
Slack's. Three parts:

1. **Show failures** on a finished 1,000-case batch of which 400 did not pass (300 failed, each
   with a ~400-character explanation, 100 errored), started by `/retell-test <engine> all`. The
   signed `show_failures` press (a `block_actions` payload whose button value is the run id, as
   the result message carries it) is timed to the first thread reply and to the CSV file being
   uploaded in the result's thread; counted: Retell requests it made (`list-test-runs` pages),
   Slack calls (replies, the three upload steps), the CSV's size and rows. A second such batch
   gets two presses at once: one set of replies and one file, the other presser told privately.
2. **`repeat=5`** of a 1,000-case suite (`/retell-test <engine> all repeat=5`): from the last of
   the 5 batches completing at the fake Retell to the group's result in Slack (the status message
   edited into a text with " total" and "flaky"), Retell requests of the whole run by kind, Slack
   calls, and exactly one top-level message. Fake Retell cannot be scripted per batch over HTTP
   (`script_outcomes` and `page_cap` have no control endpoint or flag), so flaky cases are made
   by holding the answer to the first create (`/_control/delay`, `answer_late`) and, meanwhile,
   making some cases fail (`/_control/outcome`): they pass in batch 1 and fail in the others.
   Without `page_cap`, a list page holds up to the bot's `limit=1000`: one page per batch.
3. **Rendering**, in this process (no servers): `bot.repeats.summarize` over 5 x 1,000 test runs,
   `bot.blocks.failures_post` for 400 failing of 1,000 (which builds the CSV), the CSV alone, and
   `bot.blocks.repeat_result` for a 5 x 1,000 group: median of `--renders` runs.

`--smoke` uses 200 cases of which 120 fail or error (fewer fit in the 3 replies the bot posts
before it switches to one reply and a CSV, and the file path is the one worth keeping working),
`repeat=2` of 20 cases, 2 s batches and 1 s polls: about 15 seconds.

Uploaded files are read from fake Slack's `/_control/stats` (thread, size, when shared) and
`/_control/files/<id>` (the CSV itself). Exit code 1 if a check (counts, one reply and one
file, one message) failed.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import gc
import io
import json
import math
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import (
    SIGNING_SECRET,
    TEAM_ID,
    Standins,
    cpu_seconds,
    in_workdir,
    machine,
    print_table,
    run_main,
    slash_command,
    standins,
    wait_until,
)
from bot import blocks
from bot.repeats import summarize
from bot.retell import TestRun, TestRunStatus
from bot.store import Run
from bot.testing.process import BotProcess
from bot.testing.slack import (
    BOT_ID,
    BOT_USER_ID,
    block_action_body,
    signed_headers,
)

JSONDict = dict[str, Any]

BATCH_ID = re.compile(r"test_case_batch_job_[0-9a-f]{24}")
SHOW_ENGINE = "llm_triage_show"
REPEAT_ENGINE = "llm_triage_repeat"
SHOW_CHANNELS = ("C0TRIAGE1", "C0TRIAGE2")  # one press; two presses at once
REPEAT_CHANNEL = "C0TRIAGE3"
WHY = (
    "The agent promised a refund before checking the order. It did not ask for the order "
    "number at any point. The caller had to repeat the request three times, and the agent "
    "then read out a policy that does not exist. Finally it transferred the call to a queue "
    "that was closed, so the caller hung up without an answer to the question. Nobody "
    "summarised the next steps before the call ended."
)
ALREADY_SHOWN = "already listed in the thread"
CREATE_HOLD_SECONDS = 1.5  # the first create's answer, while the flaky cases are made to fail
CONTROL_CONCURRENCY = 20
SETTLE_SECONDS = 1.0  # after the last expected message: anything more would be a duplicate


# -- talking to the fakes ---------------------------------------------------------------------


async def control(fakes: Standins, base: str, path: str, body: JSONDict) -> JSONDict:
    async with fakes.session.post(base + path, json=body) as response:
        if response.status != 200:
            raise RuntimeError(f"POST {path}: {response.status} {await response.text()}")
        answer: JSONDict = await response.json()
    return answer


async def csv_content(fakes: Standins, file_id: str) -> list[dict[str, str]]:
    """The rows of a CSV the bot uploaded, read back from fake Slack."""
    async with fakes.session.get(f"{fakes.slack.url}/_control/files/{file_id}") as response:
        if response.status != 200:
            raise RuntimeError(f"file {file_id}: {response.status}")
        data = await response.read()
    return list(csv.DictReader(io.StringIO(data.decode())))


async def messages(fakes: Standins) -> list[JSONDict]:
    async with fakes.session.get(f"{fakes.slack.url}/_control/messages") as response:
        body = await response.json()
    return list(body)


async def set_outcomes(fakes: Standins, outcomes: Sequence[tuple[str, str, str | None]]) -> None:
    """`(case_id, status, explanation)` for batches created from now on, some at a time."""
    limit = asyncio.Semaphore(CONTROL_CONCURRENCY)

    async def one(case_id: str, status: str, explanation: str | None) -> None:
        body: JSONDict = {"case_id": case_id, "status": status}
        if explanation is not None:
            body["explanation"] = explanation
        async with limit:
            await control(fakes, fakes.retell.url, "/_control/outcome", body)

    await asyncio.gather(*(one(*outcome) for outcome in outcomes))


def top_level(found: list[JSONDict], channel: str) -> list[JSONDict]:
    return [m for m in found if m["channel"] == channel and not m["thread_ts"]]


def replies(found: list[JSONDict], channel: str, ts: str) -> list[JSONDict]:
    """Thread replies under `ts`, the requester's mention excluded."""
    return [
        m
        for m in found
        if m["channel"] == channel
        and m["thread_ts"] == ts
        and m["ts"] != ts
        and "> your " not in str(m["text"])
    ]


def mentions(found: list[JSONDict], channel: str, ts: str) -> list[JSONDict]:
    return [
        m
        for m in found
        if m["channel"] == channel and m["thread_ts"] == ts and "> your " in str(m["text"])
    ]


def first_result_at(message: JSONDict) -> float | None:
    """When the message first showed a result (fallback text with " total"): fake Slack time."""
    versions = [(v["text"], v["at"]) for v in message["updates"]]
    versions.append((message["text"], message["updated_at"]))
    return next((float(at) for text, at in versions if " total" in str(text)), None)


def button_value(message: JSONDict, action_id: str) -> str | None:
    for block in message["blocks"]:
        for element in block.get("elements", []):
            if isinstance(element, dict) and element.get("action_id") == action_id:
                return str(element.get("value"))
    return None


def counts_delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {
        key: after.get(key, 0) - before.get(key, 0)
        for key in sorted(set(after) | set(before))
        if after.get(key, 0) != before.get(key, 0)
    }


async def retell_requests(fakes: Standins) -> dict[str, int]:
    by_path: dict[str, int] = (await fakes.retell_stats())["requests"]["by_path"]
    return by_path


async def slack_calls(fakes: Standins) -> dict[str, int]:
    counts: dict[str, int] = (await fakes.slack_stats())["counts"]
    return counts


async def command(fakes: Standins, bot: BotProcess, text: str, user: str, channel: str) -> int:
    """Type `/retell-test <text>`; returns the ack's HTTP status."""
    request = slash_command(
        text, user_id=user, channel_id=channel, response_url=await fakes.response_url(channel)
    )
    async with fakes.session.post(bot.events_url, data=request.body, headers=request.headers) as r:
        await r.read()
        return r.status


@dataclass(frozen=True)
class Press:
    """One signed button press: its ack, when it was sent (wall clock) and its response_url."""

    status: int
    ack_ms: float
    sent_at: float
    response_url: str


async def press(
    fakes: Standins, bot: BotProcess, result: JSONDict, action_id: str, user: str
) -> Press:
    """Press a button of `result` as Slack would deliver it (`block_actions`, signed)."""
    value = button_value(result, action_id)
    if value is None:
        raise RuntimeError(f"the result has no {action_id} button")
    channel, ts = str(result["channel"]), str(result["ts"])
    minted = await control(
        fakes, fakes.slack.url, "/_control/response-url", {"channel": channel, "message_ts": ts}
    )
    response_url = str(minted["url"])
    pressed = {
        "type": "message",
        "user": BOT_USER_ID,
        "bot_id": BOT_ID,
        "ts": ts,
        "text": result["text"],
        "blocks": result["blocks"],
    }
    body = block_action_body(
        action_id=action_id,
        value=value,
        user_id=user,
        channel_id=channel,
        team_id=TEAM_ID,
        message_ts=ts,
        response_url=response_url,
        message=pressed,
    )
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        **signed_headers(SIGNING_SECRET, body),
    }
    sent_at = time.time()
    started = time.perf_counter()
    async with fakes.session.post(bot.events_url, data=body.encode(), headers=headers) as reply:
        await reply.read()
        status = reply.status
    return Press(status, (time.perf_counter() - started) * 1000, sent_at, response_url)


# -- part 1: Show failures ----------------------------------------------------------------------


@dataclass
class ShowFailures:
    """One Show failures measurement (one press, or two at once)."""

    presses: int
    acks: list[float] = field(default_factory=list)  # ms
    ack_failures: int = 0
    to_reply_ms: float = math.nan  # press to the first thread reply
    to_file_ms: float = math.nan  # press to the upload completed (files.completeUploadExternal)
    bot_cpu: float = 0.0
    retell: dict[str, int] = field(default_factory=dict)
    slack: dict[str, int] = field(default_factory=dict)
    replies: int = 0
    reply_text: str = ""
    files: int = 0
    csv_bytes: int = 0
    csv_rows: int = 0
    csv_verdicts: dict[str, int] = field(default_factory=dict)
    told: list[str] = field(default_factory=list)  # what reached the presses' response_urls
    reply_texts: list[str] = field(default_factory=list)
    expected_texts: list[str] = field(default_factory=list)  # the pure function's replies
    expected_csv_bytes: int = 0  # 0: no file expected


@dataclass
class Setup:
    cases: int
    failing: int

    @property
    def errored(self) -> int:
        return self.failing // 4

    @property
    def failed(self) -> int:
        return self.failing - self.errored


def red_batch(ids: Sequence[str], failing: int) -> list[TestRun]:
    """How a batch of `ids` ends: `failing` cases spread over it do not pass, 3 in 4 failing
    with a ~400-character explanation, 1 in 4 erroring with a short one. Names are the fake's
    ("Case 1".. in the order a new engine's definitions were seeded)."""
    step = len(ids) / failing
    outcomes: dict[str, tuple[TestRunStatus, str]] = {}
    for k in range(failing):
        case_id = ids[int(k * step)]
        if k % 4 == 3:
            outcomes[case_id] = ("error", "Telephony error: the simulated call dropped.")
        else:
            outcomes[case_id] = ("fail", f"{case_id}: {WHY}")
    return [
        TestRun("", case_id, f"Case {n}", *outcomes.get(case_id, ("pass", None)))
        for n, case_id in enumerate(ids, start=1)
    ]


async def seed_show_failures(fakes: Standins, setup: Setup) -> list[TestRun]:
    """The engine's cases at the fake Retell, and the test runs a batch of all of them ends
    with, as the bot will read them."""
    ids = await fakes.seed(SHOW_ENGINE, setup.cases, prefix="show_")
    runs = red_batch(ids, setup.failing)
    await set_outcomes(
        fakes, [(r.case_id, r.status, r.explanation) for r in runs if r.status != "pass"]
    )
    return runs


def expected_post(result: JSONDict, runs: Sequence[TestRun]) -> blocks.FailuresPost:
    """What Show failures should post for `result`: the pure function on the same cases."""
    value = button_value(result, "show_failures")
    batch_ids = BATCH_ID.findall(str(result["text"]))
    if value is None or len(batch_ids) != 1:
        raise RuntimeError(f"not a single batch's result with Show failures: {result['text']!r}")
    run = finished_run(int(value), [r.case_id for r in runs], runs, batch_id=batch_ids[0])
    return blocks.failures_post(run, summarize([runs]))


async def results_in(fakes: Standins, channels: Sequence[str], timeout: float) -> list[JSONDict]:
    """Wait until each channel's status message became a result and its mention was posted."""
    found: dict[str, JSONDict] = {}

    async def ready() -> bool:
        everything = await messages(fakes)
        for channel in channels:
            tops = [m for m in top_level(everything, channel) if " total" in str(m["text"])]
            if tops and mentions(everything, channel, str(tops[0]["ts"])):
                found[channel] = tops[0]
        return len(found) == len(channels)

    if not await wait_until(ready, timeout=timeout, every=0.1):
        raise TimeoutError(
            f"no result within {timeout:g} s in {sorted(set(channels) - set(found))}"
        )
    return [found[channel] for channel in channels]


async def show_failures(
    fakes: Standins,
    bot: BotProcess,
    result: JSONDict,
    presses: int,
    expected: blocks.FailuresPost,
    timeout: float,
) -> ShowFailures:
    measured = ShowFailures(presses=presses)
    measured.expected_texts = [reply.text for reply in expected.replies]
    if expected.attachment is not None:
        measured.expected_csv_bytes = len(expected.attachment.content)
    channel, ts = str(result["channel"]), str(result["ts"])
    retell_before, slack_before = await retell_requests(fakes), await slack_calls(fakes)
    cpu_before = cpu_seconds(bot.pid)
    done = await asyncio.gather(
        *(press(fakes, bot, result, "show_failures", f"U0SHOW{n}") for n in range(presses))
    )
    first_sent = min(p.sent_at for p in done)
    measured.acks = [p.ack_ms for p in done]
    measured.ack_failures = sum(p.status != 200 for p in done)

    async def uploaded() -> list[JSONDict]:
        stats = await fakes.slack_stats()
        return [
            u
            for u in stats["uploads"]
            if u["thread_ts"] == ts and u["channel_id"] == channel and u["completed"]
        ]

    async def told() -> list[str]:
        answers = (await fakes.slack_responses())["responses"]
        urls = {p.response_url.rsplit("/", 1)[-1] for p in done}
        return [
            json.dumps(body)
            for token, bodies in answers.items()
            if token in urls
            for body in bodies
        ]

    async def settled() -> bool:
        posted = replies(await messages(fakes), channel, ts)
        files = await uploaded() if expected.attachment is not None else []
        return (
            len(posted) >= len(expected.replies)
            and len(files) >= (expected.attachment is not None)
            and len(await told()) >= presses - 1
        )

    await wait_until(settled, timeout=timeout, every=0.05)
    await asyncio.sleep(SETTLE_SECONDS)
    measured.bot_cpu = cpu_seconds(bot.pid) - cpu_before
    measured.retell = counts_delta(await retell_requests(fakes), retell_before)
    measured.slack = counts_delta(await slack_calls(fakes), slack_before)
    posted = replies(await messages(fakes), channel, ts)
    measured.replies = len(posted)
    measured.reply_texts = [str(m["text"]) for m in sorted(posted, key=lambda m: str(m["ts"]))]
    if posted:
        measured.reply_text = measured.reply_texts[0]
        measured.to_reply_ms = (min(float(m["posted_at"]) for m in posted) - first_sent) * 1000
    files = await uploaded()
    measured.files = len(files)
    if files:
        measured.to_file_ms = (float(files[0]["completed_at"]) - first_sent) * 1000
        measured.csv_bytes = int(files[0]["size"])
        content = await csv_content(fakes, str(files[0]["file_id"]))
        measured.csv_rows = len(content)
        measured.csv_verdicts = dict(Counter(row.get("verdict", "") for row in content))
    measured.told = await told()
    return measured


# -- part 2: repeat=5 ----------------------------------------------------------------------------


@dataclass
class Repeat:
    times: int
    cases: int
    failed: int  # cases failing in every batch
    errored: int  # cases erroring in every batch
    flaky: int  # cases passing in batch 1 and failing in the others
    ack_status: int = 0
    lag_s: float = math.nan  # last batch complete at Retell to the result in Slack
    first_to_last_s: float = math.nan  # first to last batch completing
    wall_s: float = math.nan  # command to result
    bot_cpu: float = 0.0
    batches: int = 0
    retell: dict[str, int] = field(default_factory=dict)
    slack: dict[str, int] = field(default_factory=dict)
    top_level: int = 0
    status_edits: int = 0
    result_text: str = ""
    flaky_made_in_time: bool = False

    @property
    def expected_counts(self) -> str:
        runs = self.times * self.cases
        failed = self.times * self.failed + (self.times - 1) * self.flaky
        errored = self.times * self.errored
        passed = runs - failed - errored
        return f"{passed} passed, {failed} failed, {errored} errored, {runs} total"


async def run_repeat(fakes: Standins, bot: BotProcess, plan: Repeat, timeout: float) -> Repeat:
    ids = await fakes.seed(REPEAT_ENGINE, plan.cases, prefix="rep_")
    fixed: list[tuple[str, str, str | None]] = [
        (case_id, "fail", f"{case_id}: {WHY}") for case_id in ids[1 : 1 + plan.failed]
    ]
    start = 1 + plan.failed
    fixed += [(case_id, "error", None) for case_id in ids[start : start + plan.errored]]
    start += plan.errored
    flaky = ids[start : start + plan.flaky]
    await set_outcomes(fakes, fixed)
    known = set((await fakes.retell_stats())["batches"])
    retell_before, slack_before = await retell_requests(fakes), await slack_calls(fakes)
    await control(
        fakes,
        fakes.retell.url,
        "/_control/delay",
        {
            "path_prefix": "/create-batch-test",
            "seconds": CREATE_HOLD_SECONDS,
            "times": 1,
            "answer_late": True,
        },
    )
    cpu_before = cpu_seconds(bot.pid)
    sent = time.time()
    text = f"{REPEAT_ENGINE} all repeat={plan.times}"
    plan.ack_status = await command(fakes, bot, text, "U0REPEAT", REPEAT_CHANNEL)

    async def new_batches() -> dict[str, JSONDict]:
        batches: dict[str, JSONDict] = (await fakes.retell_stats())["batches"]
        return {batch_id: info for batch_id, info in batches.items() if batch_id not in known}

    async def first_created() -> bool:
        return len(await new_batches()) >= 1

    # The first batch exists, its answer is held: the others are not created yet. The flaky
    # cases fail from now on, so in every batch but the first.
    if await wait_until(first_created, timeout=30.0, every=0.01):
        await set_outcomes(fakes, [(case_id, "fail", f"Flaky: {WHY}") for case_id in flaky])
        plan.flaky_made_in_time = len(await new_batches()) == 1
    [result] = await results_in(fakes, [REPEAT_CHANNEL], timeout)
    await asyncio.sleep(SETTLE_SECONDS)
    plan.bot_cpu = cpu_seconds(bot.pid) - cpu_before
    plan.retell = counts_delta(await retell_requests(fakes), retell_before)
    plan.slack = counts_delta(await slack_calls(fakes), slack_before)
    batches = await new_batches()
    plan.batches = len(batches)
    completed = [info["completed_ms"] for info in batches.values()]
    everything = await messages(fakes)
    plan.top_level = len(top_level(everything, REPEAT_CHANNEL))
    [result] = [m for m in everything if m["ts"] == result["ts"]]
    plan.status_edits = int(result["update_count"])
    plan.result_text = str(result["text"])
    shown_at = first_result_at(result)
    if completed and None not in completed and shown_at is not None:
        plan.lag_s = shown_at - max(completed) / 1000
        plan.first_to_last_s = (max(completed) - min(completed)) / 1000
        plan.wall_s = shown_at - sent
    return plan


# -- part 3: rendering in-process ----------------------------------------------------------------


@dataclass(frozen=True)
class Rendered:
    step: str
    median_ms: float
    max_ms: float
    size: str


def synthetic_batches(cases: int, failing: int, times: int) -> list[list[TestRun]]:
    """`times` batches of the Show failures batch (`red_batch`), in which every tenth passing
    case fails with an explanation in the odd batches: flaky over the group."""
    first = red_batch([f"show_{n}" for n in range(1, cases + 1)], failing)
    passing = [i for i, run in enumerate(first) if run.status == "pass"]
    flaky = set(passing[::10])
    batches: list[list[TestRun]] = []
    for b in range(times):
        runs = []
        for i, run in enumerate(first):
            if b % 2 == 1 and i in flaky:
                run = replace(run, status="fail", explanation=f"Flaky: {WHY}")
            runs.append(replace(run, job_id=f"job_{b}_{i}"))
        batches.append(runs)
    return batches


def finished_run(
    number: int, case_ids: list[str], runs: Sequence[TestRun], *, batch_id: str | None = None
) -> Run:
    """A finished run as the bot stores it: a transient `bot.store.Run`, no database."""
    now = datetime.now(UTC)
    counts = {status: sum(r.status == status for r in runs) for status in ("pass", "fail", "error")}
    return Run(
        id=number,
        team_id=TEAM_ID,
        channel_id=REPEAT_CHANNEL,
        user_id="U0RENDER",
        source="command",
        engine_type="retell-llm",
        engine_id=REPEAT_ENGINE,
        case_ids=case_ids,
        case_count=len(case_ids),
        state="complete",
        batch_id=batch_id or f"test_case_batch_job_{number:024x}",
        passed=counts["pass"],
        failed=counts["fail"],
        errored=counts["error"],
        total=len(runs),
        created_at=now - timedelta(minutes=12),
        started_at=now - timedelta(minutes=12),
        finished_at=now,
    )


def timed(function: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Median and max milliseconds of `repeat` calls, after a full garbage collection (so that
    collecting what earlier steps left behind is not charged to this one)."""
    gc.collect()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), max(times)


def message_bytes(message: blocks.Message) -> int:
    return len(json.dumps(message.as_kwargs()).encode())


def render(cases: int, failing: int, times: int, repeat: int) -> tuple[list[Rendered], list[str]]:
    """Time the pure functions; returns the rows and any check that failed."""
    problems: list[str] = []
    batches = synthetic_batches(cases, failing, times)
    ids = [run.case_id for run in batches[0]]
    runs = [finished_run(n + 1, ids, batch) for n, batch in enumerate(batches)]
    rows: list[Rendered] = []

    many, most = timed(lambda: summarize(batches), repeat)
    group_summaries = summarize(batches)
    flaky = sum(s.verdict == "flaky" for s in group_summaries)
    rows.append(
        Rendered(
            f"summarize: {times} batches x {cases:,} test runs",
            many,
            most,
            f"{len(group_summaries):,} cases, {flaky} flaky",
        )
    )

    one = summarize(batches[:1])
    post = blocks.failures_post(runs[0], one)
    many, most = timed(lambda: blocks.failures_post(runs[0], one), repeat)
    size = "no file"
    if post.attachment is not None:
        size = f"{len(post.replies)} reply {sum(map(message_bytes, post.replies)):,} B + CSV "
        size += f"{len(post.attachment.content):,} B"
    rows.append(Rendered(f"failures_post: {failing} failing of {cases:,}", many, most, size))
    listed = [s for s in one if s.verdict in blocks.LISTED_VERDICTS]
    many, most = timed(lambda: blocks.failures_csv(listed), repeat)
    rows.append(Rendered(f"  of which failures_csv ({len(listed)} rows)", many, most, ""))
    many, most = timed(lambda: blocks.failures_post(runs[0], summarize(batches[:1])), repeat)
    rows.append(Rendered("summarize + failures_post (what a press renders)", many, most, ""))

    group = blocks.RepeatGroup(runs, group_summaries)
    result = blocks.repeat_result(group)
    many, most = timed(lambda: blocks.repeat_result(group), repeat)
    rows.append(
        Rendered(
            f"repeat_result: {times} x {cases:,} group", many, most, f"{message_bytes(result):,} B"
        )
    )

    if post.attachment is not None:
        content = post.attachment.content.decode()
        if len(post.replies) != 1 or len(list(csv.DictReader(io.StringIO(content)))) != failing:
            problems.append(f"failures_post: expected 1 reply and a CSV of {failing} rows")
    elif not 1 <= len(post.replies) <= blocks.FAILURE_REPLIES_INLINE:
        problems.append(f"failures_post: {len(post.replies)} replies and no CSV")
    if f"{times * cases} total" not in result.text or f"{flaky} flaky" not in result.text:
        problems.append("repeat_result: totals or flaky count missing from the fallback text")
    return rows, problems


# -- the run ---------------------------------------------------------------------------------------


@dataclass
class Findings:
    single: ShowFailures | None = None
    double: ShowFailures | None = None
    repeat: Repeat | None = None
    rendered: list[Rendered] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


async def measure(args: argparse.Namespace, workdir: Path, found: Findings) -> None:
    setup = Setup(args.cases, args.failing)
    async with standins(workdir, batch_seconds=args.batch_seconds) as fakes:
        environment = fakes.bot_environment(
            f"sqlite:///{workdir / 'triage.db'}",
            poll_initial_seconds=f"{args.poll_initial}",
            poll_max_seconds=f"{args.poll_max}",
            log_level="INFO",
        )
        bot = BotProcess(environment, log_path=workdir / "bot.log")
        cases = await seed_show_failures(fakes, setup)
        await bot.start()
        try:
            timeout = args.batch_seconds + 120.0
            for number, channel in enumerate(SHOW_CHANNELS):
                status = await command(fakes, bot, f"{SHOW_ENGINE} all", f"U0RUN{number}", channel)
                if status != 200:
                    found.problems.append(f"/retell-test {SHOW_ENGINE} all: ack {status}")
            print(f"  triage: waiting for 2 batches of {setup.cases:,} cases", flush=True)
            single, double = await results_in(fakes, SHOW_CHANNELS, timeout)
            print("  triage: Show failures, one press, then two at once", flush=True)
            found.single = await show_failures(
                fakes, bot, single, 1, expected_post(single, cases), timeout
            )
            found.double = await show_failures(
                fakes, bot, double, 2, expected_post(double, cases), timeout
            )
            print(
                f"  triage: repeat={args.repeat} of {args.repeat_cases:,} cases",
                flush=True,
            )
            plan = Repeat(
                times=args.repeat,
                cases=args.repeat_cases,
                failed=max(1, args.repeat_cases // 20),
                errored=max(1, args.repeat_cases // 50),
                flaky=max(1, args.repeat_cases // 30),
            )
            found.repeat = await run_repeat(fakes, bot, plan, timeout)
        finally:
            code = await bot.stop()
            if code != 0:
                found.problems.append(f"the bot exited with {code} on SIGTERM")
    print("  triage: rendering in-process", flush=True)
    found.rendered, problems = render(args.cases, args.failing, 5, args.renders)
    found.problems += problems


def show_checks(label: str, setup: Setup, m: ShowFailures | None) -> list[tuple[str, str, bool]]:
    """(check, result, passed) for one Show failures measurement."""
    if m is None:
        return [(label, "not measured", False)]
    pages = math.ceil(setup.cases / 1000)
    lists = m.retell.get("/v2/list-test-runs", 0)
    verdicts = m.csv_verdicts
    already = [text for text in m.told if ALREADY_SHOWN in text]
    want_file = m.expected_csv_bytes > 0
    same_texts = m.reply_texts == m.expected_texts
    rows_ok = not want_file or (
        m.csv_rows == setup.failing
        and verdicts.get("fail", 0) == setup.failed
        and verdicts.get("error", 0) == setup.errored
    )
    return [
        (f"{label}: acks 200", f"{m.presses - m.ack_failures} / {m.presses}", not m.ack_failures),
        (
            f"{label}: replies in the thread",
            f"{m.replies} ({len(m.expected_texts)} expected)",
            m.replies == len(m.expected_texts),
        ),
        (
            f"{label}: replies as rendered in-process",
            "same text" if same_texts else f"DIFFERENT: {m.reply_texts!r:.200}",
            same_texts,
        ),
        (
            f"{label}: files in the thread",
            f"{m.files} ({int(want_file)} expected)",
            m.files == want_file,
        ),
        (
            f"{label}: CSV bytes",
            f"{m.csv_bytes:,} ({m.expected_csv_bytes:,} rendered in-process)",
            m.csv_bytes == m.expected_csv_bytes,
        ),
        (
            f"{label}: CSV rows",
            f"{m.csv_rows} ({verdicts.get('fail', 0)} fail, {verdicts.get('error', 0)} error; "
            + (f"{setup.failed} + {setup.errored} expected)" if want_file else "no file expected)"),
            rows_ok,
        ),
        (
            f"{label}: reply header",
            f"{setup.failed} failed, {setup.errored} errored"
            + (
                ""
                if f"{setup.failed} failed, {setup.errored} errored" in m.reply_text
                else " MISSING"
            ),
            f"{setup.failed} failed, {setup.errored} errored" in m.reply_text,
        ),
        (f"{label}: list-test-runs pages", f"{lists} ({pages} expected)", lists == pages),
        (
            f"{label}: presses told privately",
            f"{len(m.told)}, {len(already)} '{ALREADY_SHOWN}' ({m.presses - 1} expected)",
            len(m.told) == len(already) == m.presses - 1,
        ),
    ]


def report(args: argparse.Namespace, found: Findings) -> int:
    setup = Setup(args.cases, args.failing)
    polls = f"POLL_INITIAL_SECONDS={args.poll_initial:g}, POLL_MAX_SECONDS={args.poll_max:g}"

    def show_row(label: str, measured: ShowFailures | None) -> tuple[object, ...]:
        if measured is None:
            return (label, *["-"] * 9)
        retell = ", ".join(f"{path} {n}" for path, n in measured.retell.items()) or "none"
        upload = sum(
            measured.slack.get(step, 0)
            for step in ("files.getUploadURLExternal", "upload", "files.completeUploadExternal")
        )
        return (
            label,
            f"{max(measured.acks):.1f}",
            measured.to_reply_ms,
            measured.to_file_ms,
            f"{measured.bot_cpu:.2f}",
            retell,
            measured.slack.get("chat.postMessage", 0),
            upload,
            measured.slack.get("response_url", 0),
            f"{measured.csv_bytes / 1024:.1f}",
        )

    print_table(
        f"Show failures: finished batch of {setup.cases:,} cases, {setup.failing} not passed "
        f"({setup.failed} failed with ~{len(WHY) + 12}-char explanations, {setup.errored} "
        f"errored)\n  {machine()}",
        [
            "press",
            "ack ms",
            "to reply ms",
            "to CSV ms",
            "bot CPU s",
            "Retell requests",
            "replies posted",
            "upload calls",
            "response_url",
            "CSV KiB",
        ],
        [
            show_row("one press", found.single),
            show_row("two presses at once", found.double),
        ],
        note=(
            "to reply / to CSV: from the (first) press to the reply being posted / to "
            "files.completeUploadExternal; upload calls: getUploadURLExternal + POST + "
            "completeUploadExternal"
        ),
    )
    plan = found.repeat
    if plan is not None:
        by_kind = [
            ("create-batch-test", "/create-batch-test"),
            ("list-test-case-definitions", "/v2/list-test-case-definitions"),
            ("list-batch-tests", "/v2/list-batch-tests"),
            ("get-batch-test", "/get-batch-test"),
            ("list-test-runs", "/v2/list-test-runs"),
        ]
        others = {path: n for path, n in plan.retell.items() if path not in {p for _, p in by_kind}}
        rows: list[tuple[object, ...]] = [
            (
                "last batch complete at Retell -> result in Slack",
                f"{plan.lag_s:.2f} s",
                f"batches completed over {plan.first_to_last_s:.1f} s; {polls}",
            ),
            ("command -> result", f"{plan.wall_s:.1f} s", f"{args.batch_seconds:g} s batches"),
            ("bot CPU, command to result", f"{plan.bot_cpu:.2f} s", ""),
            *((f"Retell {kind}", plan.retell.get(path, 0), "") for kind, path in by_kind),
            ("Retell, other", sum(others.values()), ", ".join(others) or ""),
            (
                "Slack calls",
                sum(plan.slack.values()),
                ", ".join(f"{method} {n}" for method, n in plan.slack.items()),
            ),
            ("top-level messages", plan.top_level, f"status message edited {plan.status_edits}x"),
        ]
        print_table(
            f"repeat={plan.times} of a {plan.cases:,}-case suite ({plan.failed} fail, "
            f"{plan.errored} error, {plan.flaky} flaky: pass in batch 1 only)",
            ["figure", "value", "note"],
            rows,
        )
    print_table(
        f"Rendering in-process (median of {args.renders} runs, no servers)",
        ["step", "median ms", "max ms", "size"],
        [(r.step, r.median_ms, r.max_ms, r.size) for r in found.rendered],
    )
    checks = show_checks("one press", setup, found.single)
    checks += show_checks("two at once", setup, found.double)
    if plan is not None:
        expected = plan.expected_counts
        flaky = f"{plan.flaky} flaky"
        says = expected in plan.result_text and flaky in plan.result_text
        creates = plan.retell.get("/create-batch-test", 0)
        checks += [
            ("repeat: ack", str(plan.ack_status), plan.ack_status == 200),
            (
                "repeat: batches created",
                f"{plan.batches} ({creates} create requests; {plan.times} expected)",
                plan.batches == creates == plan.times,
            ),
            ("repeat: top-level messages", f"{plan.top_level} (1 expected)", plan.top_level == 1),
            (
                "repeat: result says",
                f"{expected}; {flaky}" if says else f"MISSING in {plan.result_text!r:.300}",
                says,
            ),
            (
                "repeat: flaky cases made to fail before the other batches",
                "yes" if plan.flaky_made_in_time else "NO (the other batches came first)",
                plan.flaky_made_in_time,
            ),
        ]
    else:
        checks.append(("repeat", "not measured", False))
    checks.append(("rendering and the run", "; ".join(found.problems) or "ok", not found.problems))
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


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.triage",
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--cases", type=int, default=1000, help="cases of the Show failures batch")
    parser.add_argument("--failing", type=int, default=400, help="of which not passing")
    parser.add_argument("--repeat", type=int, default=5, help="repeat=N (2 to 5)")
    parser.add_argument("--repeat-cases", type=int, default=1000, help="cases of the suite")
    parser.add_argument("--batch-seconds", type=float, default=10.0, help="fake batch duration")
    parser.add_argument("--poll-initial", type=float, default=2.0, help="POLL_INITIAL_SECONDS")
    parser.add_argument("--poll-max", type=float, default=10.0, help="POLL_MAX_SECONDS")
    parser.add_argument("--renders", type=int, default=15, help="runs of each rendering step")
    parser.add_argument("--smoke", action="store_true", help="200 cases, repeat=2 of 20")
    parser.add_argument("--workdir", type=Path, default=None, help="kept; default: temporary")
    args = parser.parse_args(argv)
    if args.smoke:
        # 120 failing of these is about as few as makes a CSV (3 replies' worth go inline)
        args.cases, args.failing, args.repeat, args.repeat_cases = 200, 120, 2, 20
        args.batch_seconds, args.poll_initial, args.poll_max, args.renders = 2.0, 1.0, 5.0, 3
    if not 1 <= args.failing <= args.cases <= 1000 or not 20 <= args.repeat_cases <= 1000:
        parser.error("1 <= --failing <= --cases <= 1000 and 20 <= --repeat-cases <= 1000")
    if not 2 <= args.repeat <= 5:
        parser.error("--repeat takes 2 to 5")
    return args


async def main(argv: list[str]) -> int:
    args = parse_args(argv)

    async def body(workdir: Path) -> int:
        found = Findings()
        try:
            await measure(args, workdir, found)
        except TimeoutError as exc:
            found.problems.append(str(exc))
        return report(args, found)

    return await in_workdir("retell-bench-triage-", args.workdir, body)


if __name__ == "__main__":
    raise SystemExit(run_main(main, sys.argv[1:]))
