"""What a CLI run comes to: the request, each followed batch, the report, and the exit code
(`ExitCode`) a CI job fails on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from bot.repeats import CaseSummary, totals
from bot.suite import Engine

if TYPE_CHECKING:
    from bot.retell import BatchJob, TestRun


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


def _count(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
