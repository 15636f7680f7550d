"""`retell-bot run|watch`: the settings and gateways of one invocation (`Session`), the grammar
shared with the slash command, and following batches until they finish or time out.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Literal

from bot import console
from bot.commands import (
    CommandError,
    RunCommand,
    WatchCommand,
    needs_definitions,
    parse,
)
from bot.commands import resolve_tests as resolve_selection
from bot.repeats import summarize, totals
from bot.settings import CliSettings, SettingsError, load_cli_settings
from bot.suite import Engine, Suite
from bot.text import one_line

if TYPE_CHECKING:
    from bot.retell import BatchJob, RetellProblem
from bot.ci.delivery import _deliver, _slack
from bot.ci.outcome import (
    ExitCode,
    Followed,
    Report,
    Request,
    Stop,
    _count,
    batch_seconds,
    exit_code,
)
from bot.ci.session import Session, check_request

# Problems worth waiting out while following (the SDK has already retried them).
TRANSIENT = frozenset({"unavailable", "rate_limited"})


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
    problem = check_request(request, settings)
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
