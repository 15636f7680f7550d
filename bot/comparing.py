"""Two engine versions tested on the same cases, case by case, and pass-rate gates (SPEC §9).

Pure functions over the per-case verdicts of `bot.repeats`: Slack, the CLI and digests read
the same `VersionComparison`, so "regressed" means one thing everywhere. Version A is the
baseline (what is live, or the older version), B the candidate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from bot.repeats import CaseSummary

Change = Literal["regressed", "fixed", "still_failing", "flaky", "unfinished", "unchanged"]

# How a comparison lists cases: what blocks a release first.
CHANGE_ORDER: tuple[Change, ...] = (
    "regressed",
    "fixed",
    "still_failing",
    "flaky",
    "unfinished",
    "unchanged",
)


@dataclass(frozen=True, slots=True)
class CaseChange:
    """One test case on both versions; `a`/`b` are None when a side has no result for it."""

    case_id: str
    name: str
    change: Change
    a: CaseSummary | None
    b: CaseSummary | None

    @property
    def explanation(self) -> str | None:
        """Why the candidate failed it (Retell's `result_explanation`), else why A did."""
        for side in (self.b, self.a):
            if side is not None and side.explanation:
                return side.explanation
        return None


@dataclass(frozen=True, slots=True)
class Gate:
    """`min_pass=P`: the least share of test runs (percent, 0-100) that must pass."""

    min_pass: float

    def held(self, rate: float | None) -> bool:
        """Whether a pass rate meets the gate; no rate (nothing ran) never holds it."""
        return rate is not None and rate + 1e-9 >= self.min_pass

    @property
    def label(self) -> str:
        """`95%`, `97.5%`: as typed, without a trailing `.0`."""
        return f"{self.min_pass:g}%"


@dataclass(frozen=True, slots=True)
class VersionComparison:
    """What changed from A to B, case by case, with both pass rates (over all test runs)."""

    cases: tuple[CaseChange, ...]
    a_passed: int
    a_total: int
    b_passed: int
    b_total: int

    def of(self, change: Change) -> list[CaseChange]:
        return [case for case in self.cases if case.change == change]

    def count(self, change: Change) -> int:
        return sum(1 for case in self.cases if case.change == change)

    @property
    def regressions(self) -> int:
        return self.count("regressed")

    @property
    def a_rate(self) -> float | None:
        return 100.0 * self.a_passed / self.a_total if self.a_total else None

    @property
    def b_rate(self) -> float | None:
        return 100.0 * self.b_passed / self.b_total if self.b_total else None

    def green(self, gate: Gate | None) -> bool:
        """No regression, and the gate (on B's rate) held if there is one: safe to ship B."""
        if self.regressions:
            return False
        if gate is not None:
            return gate.held(self.b_rate)
        return self.b_total > 0 and self.count("unfinished") == 0


def compare_versions(
    a_summaries: Sequence[CaseSummary], b_summaries: Sequence[CaseSummary]
) -> VersionComparison:
    """Pair the two versions' verdicts by test case definition id and name each change.

    A case is *regressed* when it passed every run on A and never passed on B; *fixed* the
    reverse; *still failing* when it passed on neither; *flaky* when either side both passed
    and did not (only possible with repeats); *unfinished* when a side has no verdict for it.
    """
    a_by_id = {summary.case_id: summary for summary in a_summaries}
    b_by_id = {summary.case_id: summary for summary in b_summaries}
    order = list(dict.fromkeys([*a_by_id, *b_by_id]))
    changes = []
    for case_id in order:
        a, b = a_by_id.get(case_id), b_by_id.get(case_id)
        named = [side.name for side in (b, a) if side is not None and side.name != case_id]
        name = named[0] if named else case_id
        changes.append(CaseChange(case_id, name, _change(a, b), a, b))
    changes.sort(key=lambda case: CHANGE_ORDER.index(case.change))
    return VersionComparison(
        cases=tuple(changes),
        a_passed=sum(s.passes for s in a_summaries),
        a_total=sum(s.runs for s in a_summaries),
        b_passed=sum(s.passes for s in b_summaries),
        b_total=sum(s.runs for s in b_summaries),
    )


def _change(a: CaseSummary | None, b: CaseSummary | None) -> Change:
    if a is None or b is None or a.unfinished or b.unfinished:
        return "unfinished"
    if _mixed(a) or _mixed(b):
        return "flaky"
    a_ok, b_ok = a.passes == a.runs, b.passes == b.runs
    if a_ok and b_ok:
        return "unchanged"
    if a_ok:
        return "regressed"
    if b_ok:
        return "fixed"
    return "still_failing"


def _mixed(summary: CaseSummary) -> bool:
    """Passed in some runs and failed or errored in others."""
    return 0 < summary.passes < summary.runs
