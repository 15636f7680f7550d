"""What a CLI run comes to: the request, each followed batch, the report, and the exit code
(`ExitCode`) a CI job fails on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from bot.comparing import Gate, VersionComparison
from bot.repeats import CaseSummary, totals
from bot.suite import Engine

if TYPE_CHECKING:
    from bot.retell import BatchJob, TestRun


class ExitCode(IntEnum):
    """What `retell-bot run` / `watch` exit with; CI reads these, so they never change."""

    PASSED = 0  # every test case passed (in every run); or the gate held; compare: green
    FAILED = 1  # some test case failed (flaky included); the gate failed; compare: regressed
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
    (
        ExitCode.FAILED,
        "some test case failed, in any run (flaky cases included); with --min-pass-rate, "
        "the gate failed; for compare, a case regressed",
    ),
    (ExitCode.TIMED_OUT, "a batch did not complete within the timeout (and nothing failed)"),
    (ExitCode.ERRORED, "some test case errored (and nothing failed or timed out)"),
    (ExitCode.REPORT, "every case passed, but the JUnit file or the Slack post could not be made"),
    (ExitCode.PASSED, "every test case passed (the gate held; compare: no regression)"),
    (ExitCode.INTERRUPTED, "interrupted (the batches keep running at Retell)"),
)


def exit_codes_help() -> str:
    """The exit code table as `--help` shows it."""
    rows = [f"  {int(code):<4} {meaning}" for code, meaning in EXIT_CODE_MEANINGS]
    return "\n".join(["exit codes (the first that applies):", *rows])


Command = Literal["run", "watch", "compare"]


@dataclass(frozen=True, slots=True)
class Request:
    """A parsed command line: `words` are the engine(s) and tests, or the batch id (watch)."""

    command: Command
    words: tuple[str, ...]
    repeat: int = 1
    poll_seconds: float | None = None
    timeout_minutes: float | None = None
    junit: Path | None = None
    post_to: str | None = None
    min_pass: float | None = None  # `--min-pass-rate`, percent
    publish_on_pass: bool = False


@dataclass(frozen=True, slots=True)
class Followed:
    """A batch as following ended: its last counts, whether it timed out, its test runs."""

    batch: BatchJob
    timed_out: bool
    seconds: float  # from creation at Retell to completion, or to when following stopped
    runs: tuple[TestRun, ...] = ()


@dataclass(frozen=True, slots=True)
class Compared:
    """What `compare` adds to a report: version B, its verdicts, and the case-by-case change."""

    candidate: Engine  # B, its version resolved
    b_summaries: tuple[CaseSummary, ...]
    comparison: VersionComparison


@dataclass(frozen=True, slots=True)
class Report:
    """Everything the table, the JUnit file, the Slack message and the exit code are made of.

    For `compare`, `engine` and `summaries` are version A's, `followed` holds A's batches then
    B's (as many of each), and `compared` the rest.
    """

    command: Command
    engine: Engine
    followed: tuple[Followed, ...]
    summaries: tuple[CaseSummary, ...]
    min_pass: float | None = None
    compared: Compared | None = None

    @property
    def gate(self) -> Gate | None:
        return Gate(self.min_pass) if self.min_pass is not None else None

    @property
    def a_followed(self) -> tuple[Followed, ...]:
        return self.followed[: self._a_count]

    @property
    def b_followed(self) -> tuple[Followed, ...]:
        return self.followed[self._a_count :]

    @property
    def _a_count(self) -> int:
        return len(self.followed) // 2 if self.compared is not None else len(self.followed)

    @property
    def rate(self) -> float | None:
        """The pass rate the gate is read on: over every test run (of B, when comparing)."""
        if self.compared is not None:
            return self.compared.comparison.b_rate
        runs = sum(s.runs for s in self.summaries)
        return 100.0 * sum(s.passes for s in self.summaries) / runs if runs else None

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


def exit_code(report: Report, *, delivered: bool = True) -> ExitCode:
    """The exit code of a finished follow-up (see the module docstring for the order).

    With a gate (`--min-pass-rate`), the gate decides between 0 and 1 instead of "every case
    passed"; a comparison fails on any regression too. Timeouts keep their code.
    """
    gate = report.gate
    if report.compared is not None or gate is not None:
        regressed = report.compared is not None and report.compared.comparison.regressions > 0
        if regressed or (gate is not None and not gate.held(report.rate)):
            return ExitCode.FAILED
        if report.timed_out:
            return ExitCode.TIMED_OUT
        if report.compared is not None and not report.compared.comparison.green(gate):
            return ExitCode.FAILED  # nothing ran on B, or a case has no verdict
        return ExitCode.PASSED if delivered else ExitCode.REPORT
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


def _count(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
