"""`retell-bot run|watch`: the settings and gateways of one invocation (`Session`), the grammar
shared with the slash command, and following batches until they finish or time out.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from bot import console
from bot.commands import (
    CommandError,
    RunCommand,
    WatchCommand,
    needs_definitions,
    parse,
)
from bot.commands import resolve_tests as resolve_selection
from bot.comparing import compare_versions
from bot.repeats import summarize, totals
from bot.settings import CliSettings, SettingsError, load_cli_settings
from bot.suite import Engine, Suite
from bot.text import one_line

if TYPE_CHECKING:
    from bot.retell import BatchJob, RetellProblem
from bot.ci.delivery import _deliver, _slack
from bot.ci.outcome import (
    Command,
    Compared,
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
    if (
        isinstance(command, RunCommand)
        and None not in (command.min_pass, request.min_pass)
        and command.min_pass != request.min_pass
    ):
        problem = (
            f"min_pass={command.min_pass:g} and --min-pass-rate {request.min_pass:g} "
            "disagree; give one"
        )
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
        elif command.compares:
            report = await _compare(session, request, command)
        else:
            report = await _run(session, request, command)
        delivered = await _deliver(session, request, report)
        code = exit_code(report, delivered=delivered)
        if request.publish_on_pass and not await _publish(session, report, code):
            return ExitCode.RETELL
        return code
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
    gate = request.min_pass if request.min_pass is not None else command.min_pass
    return await _collect(session, "run", suite.engine, followed, min_pass=gate)


async def _compare(session: Session, request: Request, command: RunCommand) -> Report:
    """Both versions confirmed, then the same cases on each, `repeat` batches per version."""
    a, b = await _versions(session, command)
    ids = await _resolve(session, command)
    suites = (Suite(a, ids), Suite(b, ids))
    repeat = max(request.repeat, command.repeats)
    session.terminal.say(
        f"Comparing {a.label} with {b.label} on {_count(len(ids), 'test case')}"
        + (f", {repeat} times each" if repeat > 1 else "")
    )
    created: list[BatchJob] = []
    for suite in (suites[0],) * repeat + (suites[1],) * repeat:
        try:
            batch = await session.gateway.create_batch(suite)
        except Exception as exc:
            raise _retell_failure(session, exc, created, creating=True) from None
        created.append(batch)
        session.terminal.say(
            f"Created batch {one_line(batch.batch_id)} on {suite.engine.label} "
            f"(follow it elsewhere: retell-bot watch {one_line(batch.batch_id)})"
        )
    followed = await _gather(session, await _follow(session, request, created))
    a_summaries = tuple(summarize([f.runs for f in followed[:repeat]]))
    b_summaries = tuple(summarize([f.runs for f in followed[repeat:]]))
    compared = Compared(b, b_summaries, compare_versions(a_summaries, b_summaries))
    gate = request.min_pass if request.min_pass is not None else command.min_pass
    report = Report("compare", a, tuple(followed), a_summaries, gate, compared)
    _show_comparison(session.terminal, report)
    return report


async def _versions(session: Session, command: RunCommand) -> tuple[Engine, Engine]:
    """A and B with B's version resolved (the latest when not named), before anything starts.

    A version Retell does not have is its 404 in words (exit 5); B turning out to be A is a
    usage error (exit 2). Either way nothing is created.
    """
    from dataclasses import replace

    from bot.agents import EngineVersions
    from bot.retell import RetellProblem

    assert command.candidate is not None
    a, b = command.engine, command.candidate
    versions = EngineVersions(session.gateway)
    try:
        a_version = await versions.engine_version(a)
        b_version = await versions.engine_version(b)
    except RetellProblem as problem:
        raise session.fail(ExitCode.RETELL, problem.message) from None
    if a_version == b_version:
        why = (
            f"{a.label} would be compared with itself"
            if b.version is not None
            else f"{a.label} is already the latest version of {a.id}, so there is no newer one"
        )
        raise session.fail(
            ExitCode.USAGE,
            f"nothing was created: {why}; name both versions, e.g. "
            f"retell-bot compare {a.id}@{max(0, a_version - 1)} {a.id}@{a_version} …",
        )
    return replace(a, version=a_version), replace(b, version=b_version)


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
    command: Command,
    engine: Engine,
    followed: list[tuple[BatchJob, bool]],
    *,
    min_pass: float | None = None,
) -> Report:
    """Every test run of every batch (all pages), summarised per case; the table printed."""
    results = await _gather(session, followed)
    summaries = summarize([f.runs for f in results])
    report = Report(command, engine, tuple(results), tuple(summaries), min_pass)
    _show(session.terminal, report)
    return report


async def _gather(session: Session, followed: list[tuple[BatchJob, bool]]) -> list[Followed]:
    """Every test run of every batch, all pages, with how long each batch ran."""
    now_ms = time.time() * 1000
    results: list[Followed] = []
    for batch, timed_out in followed:
        try:
            runs = await session.gateway.test_runs(batch.batch_id)
        except Exception as exc:
            raise _retell_failure(session, exc, [batch]) from None
        seconds = batch_seconds(batch, now_ms=now_ms)
        results.append(Followed(batch, timed_out, seconds, tuple(runs)))
    return results


def _show(terminal: console.Terminal, report: Report) -> None:
    """The result table, the totals and where each batch ended."""
    terminal.say("")
    terminal.say(
        console.result_table(report.summaries, width=terminal.width, colour=terminal.colour)
    )
    terminal.say("")
    terminal.say(console.totals_line(totals(report.summaries), report.summaries))
    if report.min_pass is not None:
        terminal.say(_gate_phrase(report))
    _show_batches(terminal, report)


def _show_comparison(terminal: console.Terminal, report: Report) -> None:
    """The comparison table, both rates, the verdict and the gate, then each batch."""
    assert report.compared is not None
    compared = report.compared
    terminal.say("")
    terminal.say(
        console.comparison_table(compared.comparison, width=terminal.width, colour=terminal.colour)
    )
    terminal.say("")
    terminal.say(console.rates_line(compared.comparison, report.engine, compared.candidate))
    terminal.say(console.comparison_verdict(compared.comparison, compared.candidate))
    if report.min_pass is not None:
        terminal.say(_gate_phrase(report))
    _show_batches(terminal, report)


def _gate_phrase(report: Report) -> str:
    """`gate 95%: held (97.2%)` over every test run (of B when comparing)."""
    from bot.blocks import gate_phrase

    assert report.min_pass is not None
    summaries = report.compared.b_summaries if report.compared else report.summaries
    passed = sum(s.passes for s in summaries)
    total = sum(s.runs for s in summaries)
    return gate_phrase(report.min_pass, passed, total)


def _show_batches(terminal: console.Terminal, report: Report) -> None:
    for followed in report.followed:
        terminal.say(
            console.batch_line(
                followed.batch, timed_out=followed.timed_out, seconds=followed.seconds
            )
        )


async def _publish(session: Session, report: Report, code: ExitCode) -> bool:
    """`--publish-on-pass`: publish the agents whose draft answers with the tested version.

    Only when the result is green (its exit code 0, or 6 when just the report failed) and the
    version is known: exactly that version is published, never "the latest draft". False when
    Retell refused or could not be asked.
    """
    from bot.agents import AgentDirectory
    from bot.retell import RetellProblem

    terminal = session.terminal
    engine = report.compared.candidate if report.compared else report.engine
    if code not in (ExitCode.PASSED, ExitCode.REPORT):
        terminal.say(f"Not publishing: the result on {engine.label} is not green")
        return True
    if engine.version is None:
        terminal.say(
            f"Not publishing: {engine.label} names no version; "
            f"run {engine.id}@<version> to publish the version tested"
        )
        return True
    directory = AgentDirectory(session.gateway)
    try:
        drafts = await directory.drafts_of(engine)
    except RetellProblem as problem:
        terminal.error(f"could not find the agents to publish: {problem.message}")
        return False
    if not drafts:
        terminal.say(f"Nothing to publish: no agent's draft answers with {engine.label}")
        return True
    published = True
    for draft in drafts:
        try:
            await directory.publish(draft.agent_id, draft.version, name=draft.name)
        except RetellProblem as problem:
            terminal.error(problem.message)
            published = False
        else:
            terminal.say(
                f"Published {one_line(draft.name)} ({one_line(draft.agent_id)}) "
                f"version {draft.version}, answering with {engine.label}"
            )
    return published


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
