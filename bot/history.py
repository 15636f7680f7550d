"""What the channel's past runs say: comparison with the previous run, and digest figures.

Pure functions over stored runs and per-case results (`store.CaseResult`), so both are tested
against fixtures without Retell or Slack, and neither re-reads Retell's history.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Protocol

from bot.runview import Comparison, RunView, pass_rate
from bot.suite import Engine

BAD = ("fail", "error")
SLOWEST_SHOWN = 5


class CaseOutcome(Protocol):
    @property
    def case_id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def status(self) -> str: ...


def compare(
    previous: RunView | None,
    current_cases: Sequence[CaseOutcome],
    previous_cases: Sequence[CaseOutcome],
) -> Comparison:
    """The pass-rate change and which cases newly fail or were fixed since `previous`.

    A case counts as newly failing when it failed or errored now and passed last time; as fixed
    the other way round. Cases missing on either side (no per-case results stored) change
    nothing: only the pass rate is compared then.
    """
    if previous is None:
        return Comparison(None)
    before = {case.case_id: case.status for case in previous_cases}
    newly_failing: list[str] = []
    fixed: list[str] = []
    for case in current_cases:
        was = before.get(case.case_id)
        if case.status in BAD and was == "pass":
            newly_failing.append(case.name)
        elif case.status == "pass" and was in BAD:
            fixed.append(case.name)
    return Comparison(
        pass_rate(previous.passed, previous.total),
        tuple(sorted(newly_failing, key=str.casefold)),
        tuple(sorted(fixed, key=str.casefold)),
    )


def regressed(run: RunView, comparison: Comparison) -> bool:
    """Worse than the previous run: a case newly fails, or the pass rate dropped."""
    if comparison.newly_failing:
        return True
    now = pass_rate(run.passed, run.total)
    before = comparison.previous_pass_rate
    return before is not None and now is not None and now < before - 1e-9


def changed(run: RunView, previous: RunView | None, comparison: Comparison) -> bool:
    """Whether a `notify=changes` schedule has something to say: a first run always has."""
    if previous is None:
        return True
    if comparison.newly_failing or comparison.fixed:
        return True
    return (run.passed, run.failed, run.errored, run.total) != (
        previous.passed,
        previous.failed,
        previous.errored,
        previous.total,
    )


@dataclass(frozen=True, slots=True)
class FailingCase:
    name: str
    failed: int  # failed or errored
    ran: int


@dataclass(frozen=True, slots=True)
class VersionCheck:
    """One comparison of two engine versions in the period: when, which, and its verdict."""

    finished_at: datetime
    baseline: Engine
    candidate: Engine
    regressions: int
    label: str | None = None


@dataclass(frozen=True, slots=True)
class Digest:
    """A channel's runs over `days` days up to `until`, against the `days` before."""

    days: int
    until: datetime
    runs: int
    passed: int
    total: int
    previous_runs: int
    previous_passed: int
    previous_total: int
    daily: tuple[tuple[date, float | None], ...]
    failing: tuple[FailingCase, ...]
    slowest: tuple[RunView, ...]
    timed_out: int
    # Newest first: a nightly comparison shows the night its draft started regressing.
    comparisons: tuple[VersionCheck, ...] = ()

    @property
    def pass_rate(self) -> float | None:
        return pass_rate(self.passed, self.total)

    @property
    def previous_pass_rate(self) -> float | None:
        return pass_rate(self.previous_passed, self.previous_total)

    @property
    def trend(self) -> float | None:
        """Pass-rate change in percentage points against the previous period."""
        now, before = self.pass_rate, self.previous_pass_rate
        return None if now is None or before is None else now - before


def digest(
    days: int,
    until: datetime,
    runs: Sequence[RunView],
    previous: Sequence[RunView],
    failing: Sequence[tuple[str, int, int]],
    comparisons: Sequence[VersionCheck] = (),
) -> Digest:
    """Figures of `runs` (this period) against `previous` (the period before)."""
    first_day = (until - timedelta(days=days)).date()
    by_day: dict[date, list[RunView]] = {}
    for run in runs:
        if run.finished_at is not None:
            by_day.setdefault(run.finished_at.date(), []).append(run)
    daily = []
    for offset in range((until.date() - first_day).days + 1):
        day = first_day + timedelta(days=offset)
        that_day = by_day.get(day, [])
        daily.append((day, pass_rate(_sum(that_day, "passed"), _sum(that_day, "total"))))
    timed = [run for run in runs if run.duration is not None]
    slowest = sorted(timed, key=lambda run: run.duration or timedelta(), reverse=True)
    return Digest(
        days=days,
        until=until,
        runs=len(runs),
        passed=_sum(runs, "passed"),
        total=_sum(runs, "total"),
        previous_runs=len(previous),
        previous_passed=_sum(previous, "passed"),
        previous_total=_sum(previous, "total"),
        daily=tuple(daily),
        failing=tuple(FailingCase(name, bad, ran) for name, bad, ran in failing),
        slowest=tuple(slowest[:SLOWEST_SHOWN]),
        timed_out=sum(1 for run in runs if run.state == "timed_out"),
        comparisons=tuple(comparisons),
    )


def _sum(runs: Sequence[RunView], field: str) -> int:
    return sum(int(getattr(run, field)) for run in runs)
