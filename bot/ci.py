"""`retell-bot run` and `retell-bot watch`: the bot's batch-test engine, outside Slack, for CI.

A CI job runs a suite (or follows a batch created elsewhere), sees progress in its log, gets a
result table, a JUnit file its CI system understands, optionally the same result message the
channel would get, and an exit code that fails the job unless every case passed. The command
grammar is the slash command's (`bot.commands`), every Retell call goes through the gateway, and
the Slack message is `bot.blocks`' rendering: nothing here is a second implementation.

Exit codes (`ExitCode`): 2 and 5 end the command before there is any result. Otherwise the
first that applies wins: 1 some case failed (in any run), 4 a batch timed out, 3 some case
errored, 6 the result could not be written (JUnit) or posted (Slack), 0 every case passed.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from bot import console
from bot.commands import (
    MAX_REPEATS,
    CommandError,
    RunCommand,
    WatchCommand,
    needs_definitions,
    parse,
)
from bot.commands import resolve_tests as resolve_selection
from bot.repeats import CaseSummary, summarize, totals
from bot.settings import CliSettings, SettingsError, load_cli_settings
from bot.suite import Engine, Suite
from bot.text import one_line

if TYPE_CHECKING:
    from bot.blocks import Message
    from bot.retell import BatchJob, RetellGateway, RetellProblem, TestRun
    from bot.slackapi import SlackGateway

# Problems worth waiting out while following (the SDK has already retried them).
TRANSIENT = frozenset({"unavailable", "rate_limited"})
BAD_SLACK_TOKEN = frozenset({"invalid_auth", "not_authed", "account_inactive", "token_revoked"})
CLI_USER = "retell-bot CLI"


class ExitCode(IntEnum):
    """What `retell-bot run` / `watch` exit with; CI reads these, so they never change."""

    PASSED = 0  # every test case passed (in every run, with --repeat)
    FAILED = 1  # at least one test case failed, in at least one run (flaky cases included)
    USAGE = 2  # bad arguments or configuration; nothing was created at Retell
    ERRORED = 3  # no case failed, but at least one errored (Retell could not run it)
    TIMED_OUT = 4  # no case failed, but a batch did not complete within the timeout
    RETELL = 5  # Retell refused or could not be reached (bad key, unknown engine, outage)
    REPORT = 6  # every case passed, but the JUnit file or the Slack message could not be made
    INTERRUPTED = 130  # Ctrl-C / SIGINT; the batches go on at Retell


# What each code means, in the order they take precedence (for `--help` and the README).
EXIT_CODE_MEANINGS: tuple[tuple[ExitCode, str], ...] = (
    (ExitCode.USAGE, "bad usage or configuration; nothing was created at Retell"),
    (ExitCode.RETELL, "Retell refused or could not be reached (bad key, unknown engine, outage)"),
    (ExitCode.FAILED, "some test case failed, in any run (flaky cases included)"),
    (ExitCode.TIMED_OUT, "a batch did not complete within the timeout (and nothing failed)"),
    (ExitCode.ERRORED, "some test case errored (and nothing failed or timed out)"),
    (ExitCode.REPORT, "every case passed, but the JUnit file or the Slack post could not be made"),
    (ExitCode.PASSED, "every test case passed"),
    (ExitCode.INTERRUPTED, "interrupted (the batches keep running at Retell)"),
)


def exit_codes_help() -> str:
    """The exit code table as `--help` shows it."""
    rows = [f"  {int(code):<4} {meaning}" for code, meaning in EXIT_CODE_MEANINGS]
    return "\n".join(["exit codes (the first that applies):", *rows])


@dataclass(frozen=True, slots=True)
class Request:
    """A parsed command line: `words` are the engine and tests (run) or the batch id (watch)."""

    command: Literal["run", "watch"]
    words: tuple[str, ...]
    repeat: int = 1
    poll_seconds: float | None = None
    timeout_minutes: float | None = None
    junit: Path | None = None
    post_to: str | None = None


@dataclass(frozen=True, slots=True)
class Followed:
    """A batch as following ended: its last counts, whether it timed out, its test runs."""

    batch: BatchJob
    timed_out: bool
    seconds: float  # from creation at Retell to completion, or to when following stopped
    runs: tuple[TestRun, ...] = ()


@dataclass(frozen=True, slots=True)
class Report:
    """Everything the table, the JUnit file, the Slack message and the exit code are made of."""

    command: Literal["run", "watch"]
    engine: Engine
    followed: tuple[Followed, ...]
    summaries: tuple[CaseSummary, ...]

    @property
    def timed_out(self) -> bool:
        return any(f.timed_out for f in self.followed)

    @property
    def seconds(self) -> float:
        """Wall time covered by the batches: first creation to last completion."""
        starts = [f.batch.created_ms / 1000 for f in self.followed]
        ends = [f.batch.created_ms / 1000 + f.seconds for f in self.followed]
        return max(ends) - min(starts) if starts else 0.0

    @property
    def batch_ids(self) -> list[str]:
        return [f.batch.batch_id for f in self.followed]


class Stop(Exception):
    """Ends the command early with an exit code; the message has already been shown."""

    def __init__(self, code: ExitCode) -> None:
        super().__init__(code.name)
        self.code = code


# -- pure decisions ------------------------------------------------------------------------------


def exit_code(report: Report, *, delivered: bool = True) -> ExitCode:
    """The exit code of a finished follow-up (see the module docstring for the order)."""
    counted = totals(report.summaries)
    if counted.failed or counted.flaky or any(f.batch.failed for f in report.followed):
        return ExitCode.FAILED
    if report.timed_out:
        return ExitCode.TIMED_OUT
    if counted.errored or counted.unfinished or any(f.batch.errored for f in report.followed):
        return ExitCode.ERRORED
    return ExitCode.PASSED if delivered else ExitCode.REPORT


def batch_seconds(batch: BatchJob, *, now_ms: float) -> float:
    """How long a batch ran at Retell: to its last change when complete, else until now."""
    end = batch.modified_ms if batch.is_complete else now_ms
    return max(end - batch.created_ms, 0) / 1000


def ci_link(environ: Mapping[str, str]) -> str | None:
    """The URL of the CI run that invoked the CLI (GitHub Actions), for the Slack footer."""
    server, repo, run = (
        environ.get(name) for name in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID")
    )
    if server and repo and run:
        return f"{server.rstrip('/')}/{repo}/actions/runs/{run}"
    return None


# -- Slack rendering -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CiRun:
    """A followed batch shaped as `bot.blocks.RunView`, so Slack gets the bot's own message.

    It is not a run of the bot's database: `id` is 0 and nothing in Slack can act on it, which
    is why `slack_result` leaves the buttons out.
    """

    channel_id: str
    engine: Engine
    batch_id: str
    state: str
    passed: int
    failed: int
    errored: int
    total: int
    created_at: datetime
    finished_at: datetime
    case_ids: Sequence[str] = ()
    id: int = 0
    user_id: str = CLI_USER
    error: str | None = None
    source: str = "watch"  # created outside Slack and followed: the closest existing origin
    rerun_of: int | None = None
    label: str | None = None
    scheduled_for: datetime | None = None

    @property
    def case_count(self) -> int:
        return len(self.case_ids) or self.total

    @property
    def completed(self) -> int:
        return self.passed + self.failed + self.errored

    @property
    def started_at(self) -> datetime:
        return self.created_at

    @property
    def duration(self) -> timedelta:
        return self.finished_at - self.created_at

    @classmethod
    def of(cls, followed: Followed, channel: str) -> CiRun:
        batch = followed.batch
        created = datetime.fromtimestamp(batch.created_ms / 1000, UTC)
        return cls(
            channel_id=channel,
            engine=batch.engine,
            batch_id=batch.batch_id,
            state="timed_out" if followed.timed_out else "complete",
            passed=batch.passed,
            failed=batch.failed,
            errored=batch.errored,
            total=batch.total,
            created_at=created,
            finished_at=created + timedelta(seconds=followed.seconds),
            case_ids=tuple(dict.fromkeys(run.case_id for run in followed.runs)),
        )


def slack_result(run: CiRun, *, command: str, link: str | None) -> Message:
    """`bot.blocks.result_message` for a batch followed from CI, without buttons.

    Rerun and Show failures act on a run in the bot's database, which a CI batch is not, so
    they are left out; the footer says where the batch came from instead of a run number.
    """
    from bot.blocks import Message, escape, result_message, slack_date

    message = result_message(run, has_failures_detail=False)
    blocks = [block for block in message.blocks if block.get("type") != "actions"]
    if blocks and blocks[-1].get("type") == "context":
        origin = f"Reported by `retell-bot {command}`"
        if link:
            origin += f" from <{escape(link)}|this CI run>"
        when = slack_date(run.created_at, "Started {date_short_pretty} at {time}")
        blocks[-1] = {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": f"{origin} · {when}"}],
        }
    return Message(text=message.text, blocks=blocks)


def repeat_message(report: Report, *, link: str | None) -> Message:
    """The top-level message for `--repeat`: per-case verdicts over every run, flaky named.

    Each batch's own result follows in the thread. The fallback text carries the four count
    phrases (summed over the runs) and every batch id, like any result the bot posts.
    """
    from bot.blocks import (
        Message,
        counts_phrases,
        escape,
        format_pass_rate,
        repeat_verdicts,
        shorten,
    )

    counted = totals(report.summaries)
    runs = len(report.followed)
    passed = sum(f.batch.passed for f in report.followed)
    failed = sum(f.batch.failed for f in report.followed)
    errored = sum(f.batch.errored for f in report.followed)
    total = sum(f.batch.total for f in report.followed)
    engine = escape(report.engine.label)
    batches = ", ".join(escape(b) for b in report.batch_ids)
    text = (
        f"Retell suite on {engine} run {runs} times (batches {batches}): "
        f"{counts_phrases(passed, failed, errored, total)} "
        f"({format_pass_rate(passed, total)}); {counted.flaky} flaky"
    )
    verdict = "✅" if counted.all_passed else "❌" if counted.failed or counted.flaky else "⚠️"
    lines = [
        f"*{verdict} {runs} runs of {counted.cases} test cases* on `{engine}`",
        *repeat_verdicts(report.summaries, passed, total),
    ]
    origin = "Reported by `retell-bot run --repeat`"
    if link:
        origin += f" from <{escape(link)}|this CI run>"
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": shorten("\n".join(lines), 3000)}},
        {
            "type": "context",
            "elements": [
                {"type": "mrkdwn", "text": shorten(f"{origin} · batches {batches}", 3000)}
            ],
        },
    ]
    return Message(text=shorten(text, 3000), blocks=blocks)


# -- the command ---------------------------------------------------------------------------------


@dataclass
class Session:
    """One command's settings, output and clients, closed at the end."""

    settings: CliSettings
    terminal: console.Terminal
    gateway: RetellGateway
    slack: SlackGateway | None = None
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    def fail(self, code: ExitCode, text: str) -> Stop:
        self.terminal.error(text)
        return Stop(code)


def main(request: Request) -> int:
    """Run a `Request` to its exit code: settings, logging, the event loop, Ctrl-C."""
    from bot import logs

    terminal = console.Terminal.detect()
    command = parse_words(request)
    if isinstance(command, CommandError):  # said together with any configuration problem
        terminal.error(console.from_mrkdwn(command.message))
    try:
        settings = load_cli_settings()
    except SettingsError as exc:
        for line in exc.lines:
            terminal.error(line)
        return ExitCode.USAGE
    if isinstance(command, CommandError):
        return ExitCode.USAGE
    logs.configure(settings.log_level, settings.log_format, settings.secrets())
    try:
        return asyncio.run(execute(request, settings=settings, terminal=terminal))
    except KeyboardInterrupt:
        terminal.error("interrupted; batches already created keep running at Retell")
        return ExitCode.INTERRUPTED


async def execute(
    request: Request,
    *,
    settings: CliSettings,
    terminal: console.Terminal,
    environ: Mapping[str, str] | None = None,
) -> ExitCode:
    """Check the request, then run or watch; every outcome becomes an `ExitCode`."""
    command = parse_words(request)
    if isinstance(command, CommandError):
        terminal.error(console.from_mrkdwn(command.message))
        return ExitCode.USAGE
    problem = _check(request, settings)
    if isinstance(command, RunCommand) and 1 < command.repeats != request.repeat > 1:
        problem = f"repeat={command.repeats} and --repeat {request.repeat} disagree; give one"
    if problem is not None:
        terminal.error(problem)
        return ExitCode.USAGE
    from bot.retell import RetellGateway  # after the checks: the SDK takes a second to import

    gateway = RetellGateway.connect(
        api_key=settings.retell_api_key.get_secret_value(),
        base_url=settings.retell_base_url,
        timeout=settings.retell_timeout_seconds,
        max_retries=settings.retell_max_retries,
    )
    session = Session(settings, terminal, gateway)
    if environ is not None:
        session.environ = environ
    try:
        if request.post_to:
            session.slack = await _slack(session)
        if isinstance(command, WatchCommand):
            report = await _watch(session, request, command)
        else:
            report = await _run(session, request, command)
        delivered = await _deliver(session, request, report)
        return exit_code(report, delivered=delivered)
    except Stop as stop:
        return stop.code
    finally:
        await gateway.close()


def parse_words(request: Request) -> RunCommand | WatchCommand | CommandError:
    """The command line's words in the slash command's grammar, by the slash command's parser.

    The words are joined with spaces, so `tc_1 tc_2`, `"tc_1 tc_2"` and `tc_1,tc_2` all mean
    two ids, and a name keeps its quotes only if the shell was given them: `'"Refund request"'`.
    """
    command = parse(f"{request.command} " + " ".join(request.words))
    if isinstance(command, RunCommand | WatchCommand | CommandError):
        return command
    return CommandError(f"`{request.command}` could not make sense of its arguments.")


def _check(request: Request, settings: CliSettings) -> str | None:
    """What is wrong with the request before anything is asked of Retell, or None."""
    if not 1 <= request.repeat <= MAX_REPEATS:
        return f"--repeat takes 1 to {MAX_REPEATS} runs; got {request.repeat}"
    if request.repeat > 1 and request.command == "watch":
        return "--repeat is for `run`; `watch` follows one existing batch"
    if request.poll_seconds is not None and not request.poll_seconds > 0:
        return "--poll-seconds must be more than 0"
    if request.timeout_minutes is not None and not request.timeout_minutes > 0:
        return "--timeout-minutes must be more than 0"
    if request.post_to is not None:
        if not request.post_to.strip():
            return "--post-to needs a channel id (e.g. C0123456789)"
        if settings.slack_bot_token is None or not settings.slack_bot_token.get_secret_value():
            return "--post-to needs SLACK_BOT_TOKEN (the bot's xoxb- token) in the environment"
    if request.junit is not None:
        folder = request.junit.parent
        if request.junit.is_dir():
            return f"--junit {request.junit} is a directory; give a file name"
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return f"--junit: cannot create {folder}: {exc.strerror}"
        if not os.access(folder, os.W_OK):
            return f"--junit: {folder} is not writable"
    return None


async def _slack(session: Session) -> SlackGateway:
    """A Slack gateway whose token is known to work, checked before any batch is created."""
    from slack_sdk.errors import SlackApiError

    from bot.slackapi import SLACK_FAILURES, SlackGateway, error_code, web_client

    token = session.settings.slack_bot_token
    assert token is not None  # _check made sure
    client = web_client(token.get_secret_value(), session.settings.slack_api_url)
    try:
        await client.auth_test()
    except SlackApiError as exc:
        if error_code(exc) in BAD_SLACK_TOKEN:
            raise session.fail(
                ExitCode.USAGE, f"Slack refused SLACK_BOT_TOKEN ({error_code(exc)})"
            ) from None
        session.terminal.warn(f"could not check the Slack token ({error_code(exc)}); going on")
    except SLACK_FAILURES as exc:
        session.terminal.warn(f"could not reach Slack to check the token ({error_code(exc)})")
    return SlackGateway(client)


async def _run(session: Session, request: Request, command: RunCommand) -> Report:
    """Resolve the suite, create the batches, follow them, collect every test run."""
    suite = Suite(command.engine, await _resolve(session, command))
    terminal = session.terminal
    repeat = max(request.repeat, command.repeats)  # `--repeat N` or the grammar's `repeat=N`
    terminal.say(
        f"Running {_count(suite.size, 'test case')} on {suite.engine.label}"
        + (f", {repeat} times" if repeat > 1 else "")
    )
    created: list[BatchJob] = []
    for _ in range(repeat):
        try:
            batch = await session.gateway.create_batch(suite)
        except Exception as exc:
            raise _retell_failure(session, exc, created, creating=True) from None
        created.append(batch)
        terminal.say(
            f"Created batch {one_line(batch.batch_id)} "
            f"(follow it elsewhere: retell-bot watch {one_line(batch.batch_id)})"
        )
    followed = await _follow(session, request, created)
    return await _collect(session, "run", suite.engine, followed)


async def _resolve(session: Session, command: RunCommand) -> tuple[str, ...]:
    """The test case ids: names and `all` resolved against the engine's definitions."""
    definitions = []
    if needs_definitions(command.tests):
        try:
            definitions = await session.gateway.definitions(command.engine)
        except Exception as exc:
            raise _retell_failure(session, exc, []) from None
    ids = resolve_selection(
        command.tests, definitions, max_cases=session.settings.max_cases_per_run
    )
    if isinstance(ids, CommandError):
        raise session.fail(ExitCode.USAGE, console.from_mrkdwn(ids.message))
    return ids


async def _watch(session: Session, request: Request, command: WatchCommand) -> Report:
    """Follow a batch created elsewhere (the dashboard, another job) as if the CLI made it."""
    try:
        batch = await session.gateway.get_batch(command.batch_id)
    except Exception as exc:
        raise _retell_failure(session, exc, []) from None
    session.terminal.say(
        f"Watching batch {one_line(batch.batch_id)} on {one_line(batch.engine.label)} "
        f"({_count(batch.total, 'test case')})"
    )
    followed = await _follow(session, request, [batch])
    return await _collect(session, "watch", batch.engine, followed)


async def _follow(
    session: Session, request: Request, batches: Sequence[BatchJob]
) -> list[tuple[BatchJob, bool]]:
    """Poll every batch until all are complete or the timeout passes; show progress meanwhile.

    Outages and rate limits that outlast the SDK's retries are waited out (until the timeout)
    with the last counts kept; anything else (a deleted batch, a revoked key) ends the command.
    """
    settings = session.settings
    poll = request.poll_seconds or settings.poll_initial_seconds
    timeout = 60 * (request.timeout_minutes or settings.batch_timeout_minutes)
    started = time.monotonic()
    deadline = started + timeout
    latest = {batch.batch_id: batch for batch in batches}
    order = [batch.batch_id for batch in batches]
    printer = session.terminal.progress()
    warned: set[str] = set()
    try:
        while True:
            for batch_id in order:
                if latest[batch_id].is_complete:
                    continue
                try:
                    latest[batch_id] = await session.gateway.get_batch(batch_id)
                except Exception as exc:
                    problem = _problem(exc)
                    if problem.kind not in TRANSIENT:
                        raise _retell_failure(session, exc, list(latest.values())) from None
                    if problem.message not in warned:
                        warned.add(problem.message)
                        session.terminal.warn(f"{problem.message} (still following)")
            current = [latest[batch_id] for batch_id in order]
            printer.update(current, time.monotonic() - started)
            remaining = deadline - time.monotonic()
            if all(batch.is_complete for batch in current) or remaining <= 0:
                return [(batch, not batch.is_complete) for batch in current]
            await asyncio.sleep(min(poll, remaining))
    finally:
        printer.close()


async def _collect(
    session: Session,
    command: Literal["run", "watch"],
    engine: Engine,
    followed: list[tuple[BatchJob, bool]],
) -> Report:
    """Every test run of every batch (all pages), summarised per case; the table printed."""
    now_ms = time.time() * 1000
    results: list[Followed] = []
    for batch, timed_out in followed:
        try:
            runs = await session.gateway.test_runs(batch.batch_id)
        except Exception as exc:
            raise _retell_failure(session, exc, [batch]) from None
        seconds = batch_seconds(batch, now_ms=now_ms)
        results.append(Followed(batch, timed_out, seconds, tuple(runs)))
    summaries = summarize([f.runs for f in results])
    report = Report(command, engine, tuple(results), tuple(summaries))
    _show(session.terminal, report)
    return report


def _show(terminal: console.Terminal, report: Report) -> None:
    """The result table, the totals and where each batch ended."""
    terminal.say("")
    terminal.say(
        console.result_table(report.summaries, width=terminal.width, colour=terminal.colour)
    )
    terminal.say("")
    terminal.say(console.totals_line(totals(report.summaries), report.summaries))
    for followed in report.followed:
        terminal.say(
            console.batch_line(
                followed.batch, timed_out=followed.timed_out, seconds=followed.seconds
            )
        )


async def _deliver(session: Session, request: Request, report: Report) -> bool:
    """Write the JUnit file and post to Slack, as asked; False if either could not be done."""
    delivered = True
    if request.junit is not None:
        delivered &= _write_junit(session, request.junit, report)
    if request.post_to is not None and session.slack is not None:
        delivered &= await _post(session, session.slack, request.post_to, report)
    return delivered


def _write_junit(session: Session, path: Path, report: Report) -> bool:
    from bot import junit

    started = min((f.batch.created_ms for f in report.followed), default=0) / 1000
    properties = {
        "engine": report.engine.label,
        "batch_ids": " ".join(report.batch_ids),
        "runs": str(len(report.followed)),
    }
    if report.timed_out:
        properties["timed_out"] = "true"
    tree = junit.junit_tree(
        report.summaries,
        suite_name=f"Retell batch test on {report.engine.label}",
        classname=report.engine.label,
        seconds=report.seconds,
        timestamp=datetime.fromtimestamp(started, UTC),
        properties=properties,
    )
    try:
        junit.write(tree, path)
    except OSError as exc:
        session.terminal.error(f"could not write the JUnit file {path}: {exc.strerror or exc}")
        return False
    session.terminal.say(f"JUnit XML written to {path}")
    return True


async def _post(session: Session, slack: SlackGateway, channel: str, report: Report) -> bool:
    from bot.slackapi import SLACK_FAILURES, error_code

    link = ci_link(session.environ)
    try:
        if len(report.followed) == 1:
            run = CiRun.of(report.followed[0], channel)
            await slack.post(channel, slack_result(run, command=report.command, link=link))
        else:
            ts = await slack.post(channel, repeat_message(report, link=link))
            for followed in report.followed:
                run = CiRun.of(followed, channel)
                reply = slack_result(run, command=report.command, link=link)
                await slack.post(channel, reply, thread_ts=ts)
    except SLACK_FAILURES as exc:
        session.terminal.error(f"could not post the result to Slack {channel}: {error_code(exc)}")
        return False
    session.terminal.say(f"Result posted to Slack channel {channel}")
    return True


def _problem(exc: Exception) -> RetellProblem:
    from bot.retell import explain

    return explain(exc, what="batch")


def _retell_failure(
    session: Session, exc: Exception, created: Sequence[BatchJob], *, creating: bool = False
) -> Stop:
    """Say why Retell failed, and which batches (if any) go on running unfollowed."""
    problem = _problem(exc)
    session.terminal.error(problem.message)
    if creating and problem.uncertain:
        session.terminal.error("Retell may have created the batch anyway; check its dashboard.")
    for batch in created:
        if not batch.is_complete:
            session.terminal.error(
                f"batch {one_line(batch.batch_id)} keeps running at Retell; "
                f"`retell-bot watch {one_line(batch.batch_id)}` follows it"
            )
    return Stop(ExitCode.RETELL)


def _count(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
