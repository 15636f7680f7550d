"""Per-case verdicts over one or several batches of the same suite: pure functions, no I/O.

`retell-bot run --repeat N` runs a suite N times to tell real regressions from flaky cases;
the Slack side will reuse the same aggregation, so it lives here rather than in the CLI.
Input is what the gateway returns (`bot.retell.TestRun`, one list per batch); output is one
`CaseSummary` per test case definition, failures first.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # types only: the aggregation needs no Retell SDK at import time
    from bot.retell import TestRun, TestRunStatus

Verdict = Literal["fail", "flaky", "error", "unfinished", "pass"]

# How cases are ordered: what needs attention first.
VERDICT_ORDER: dict[Verdict, int] = {"fail": 0, "flaky": 1, "error": 2, "unfinished": 3, "pass": 4}


@dataclass(frozen=True, slots=True)
class CaseSummary:
    """One test case across every batch it ran in.

    `outcomes` holds the case's status in each batch, in batch order (`pending`/`in_progress`
    when a batch stopped being followed before the case finished). `explanations` are Retell's
    `result_explanation`s of the failed and errored runs, distinct, in batch order.
    """

    case_id: str
    name: str
    outcomes: tuple[TestRunStatus, ...]
    explanations: tuple[str, ...] = ()

    @property
    def runs(self) -> int:
        return len(self.outcomes)

    @property
    def passes(self) -> int:
        return self.outcomes.count("pass")

    @property
    def fails(self) -> int:
        return self.outcomes.count("fail")

    @property
    def errors(self) -> int:
        return self.outcomes.count("error")

    @property
    def unfinished(self) -> int:
        """Runs with no verdict (the batch was still running when following stopped)."""
        return self.runs - self.passes - self.fails - self.errors

    @property
    def flaky(self) -> bool:
        """Passed in some runs and failed in others (errors alone do not make a case flaky)."""
        return self.passes > 0 and self.fails > 0

    @property
    def verdict(self) -> Verdict:
        """The worst thing that happened to the case; `flaky` when it both passed and failed."""
        if self.flaky:
            return "flaky"
        if self.fails:
            return "fail"
        if self.errors:
            return "error"
        if self.unfinished:
            return "unfinished"
        return "pass"

    @property
    def explanation(self) -> str | None:
        """Retell's first explanation of a failure (or, failing that, of an error)."""
        return self.explanations[0] if self.explanations else None


@dataclass(frozen=True, slots=True)
class Totals:
    """Case counts by verdict, for summaries and exit codes."""

    cases: int
    passed: int
    failed: int
    flaky: int
    errored: int
    unfinished: int

    @property
    def all_passed(self) -> bool:
        return self.passed == self.cases


def summarize(batches: Sequence[Sequence[TestRun]]) -> list[CaseSummary]:
    """Aggregate the test runs of several batches per test case definition, failures first.

    Cases keep the order of their first appearance within a verdict, so the table reads in
    the suite's own order. A case's name is the latest snapshot name seen (Retell snapshots
    the definition per run, so a rename shows up). Explanations of failures come before those
    of errors: a failure says more about the agent.
    """
    names: dict[str, str] = {}
    outcomes: dict[str, list[TestRunStatus]] = {}
    said: dict[str, tuple[list[str], list[str]]] = {}
    for runs in batches:
        for run in runs:
            # A stored all-pass batch may only know the id: it does not hide a real name.
            known = run.name if run.name and run.name != run.case_id else None
            names[run.case_id] = known or names.get(run.case_id) or run.case_id
            outcomes.setdefault(run.case_id, []).append(run.status)
            failed, errored = said.setdefault(run.case_id, ([], []))
            if run.explanation and run.status in ("fail", "error"):
                bucket = failed if run.status == "fail" else errored
                if run.explanation not in bucket:
                    bucket.append(run.explanation)
    summaries = []
    for case_id, statuses in outcomes.items():
        failed, errored = said[case_id]
        reasons = tuple(dict.fromkeys([*failed, *errored]))
        summaries.append(CaseSummary(case_id, names[case_id], tuple(statuses), reasons))
    return sorted(summaries, key=lambda summary: VERDICT_ORDER[summary.verdict])


def totals(summaries: Iterable[CaseSummary]) -> Totals:
    """How many cases ended in each verdict."""
    counts = dict.fromkeys(VERDICT_ORDER, 0)
    cases = 0
    for summary in summaries:
        counts[summary.verdict] += 1
        cases += 1
    return Totals(
        cases=cases,
        passed=counts["pass"],
        failed=counts["fail"],
        flaky=counts["flaky"],
        errored=counts["error"],
        unfinished=counts["unfinished"],
    )
