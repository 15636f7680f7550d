"""`compare A B`: one status and one result for two engine versions run on the same cases.

The result answers "does B break anything A passed?": regressed cases first with B's reason,
then fixed, still failing, flaky and the unchanged count, both pass rates and the verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bot.blocks.kit import (
    LISTED_NAMES,
    NAME_CHARS,
    Block,
    Message,
    _asker_label,
    _batch,
    _case_total,
    _code,
    _context,
    _engine,
    _fields,
    _footer,
    _message,
    _name,
    _pack,
    _safe,
    _section,
    counts_line,
    counts_phrases,
    format_duration,
    format_pass_rate,
    gate_line,
    gate_phrase,
    mention,
    plural,
    progress_bar,
    trim_explanation,
)
from bot.blocks.repeats import RepeatGroup
from bot.blocks.runs import _actions, name_list
from bot.comparing import CaseChange, Change, Gate, VersionComparison
from bot.repeats import CaseSummary
from bot.runview import RunView
from bot.store import RunState
from bot.suite import Engine

# Regressed cases listed one per line with B's reason; the rest are counted.
LISTED_REGRESSIONS = 15


@dataclass(frozen=True, slots=True)
class VersionsGroup:
    """A comparison as the channel sees it: `repeats` batches on A and as many on B.

    `runs` holds the lead first (a run on A; it owns the status message and the buttons);
    `comparison` is the case-by-case verdict, known once every batch finished and its cases
    were read.
    """

    runs: Sequence[RunView]
    candidate: Engine
    comparison: VersionComparison | None = None

    @property
    def lead(self) -> RunView:
        return self.runs[0]

    @property
    def baseline(self) -> Engine:
        return self.lead.engine

    @property
    def a_runs(self) -> list[RunView]:
        return [run for run in self.runs if run.engine.version == self.baseline.version]

    @property
    def b_runs(self) -> list[RunView]:
        return [run for run in self.runs if run.engine.version != self.baseline.version]

    @property
    def repeats(self) -> int:
        return max(1, len(self.a_runs))

    @property
    def finished(self) -> bool:
        return all(RunState(run.state).finished for run in self.runs)

    @property
    def side_counts(self) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
        """Test runs passed, failed, errored and in total on A, then on B."""
        return _counts(self.a_runs), _counts(self.b_runs)

    @property
    def gate(self) -> Gate | None:
        return Gate(self.lead.min_pass) if self.lead.min_pass is not None else None

    @property
    def green(self) -> bool:
        """No regression and the gate held: B is safe to ship."""
        return self.comparison is not None and self.comparison.green(self.gate)


def compare_status(group: VersionsGroup) -> Message:
    """The status message of a comparison: one progress bar per version."""
    lead = group.lead
    headline = "🧪 Reading both versions' results…" if group.finished else "🧪 Comparing"
    blocks = [
        _compare_title(group, headline),
        _compare_fields(group, with_duration=False),
        _section("\n".join(_side_progress(engine, runs) for engine, runs in _sides(group))),
        _section("\n".join(_batch_lines(group))),
        _footer(lead),
    ]
    done = sum(run.completed for run in group.runs)
    total = sum(_case_total(run) for run in group.runs)
    text = (
        f"Retell versions compared: {_label(group.baseline)} and {_label(group.candidate)}: "
        f"{done}/{total} done"
    )
    return _message(text, blocks)


def compare_result(group: VersionsGroup) -> Message:
    """The comparison's result: verdict, regressions with B's reasons, rates, gate, buttons.

    The fallback text carries both batch ids, the regressed and fixed counts and B's four
    count phrases (SPEC §4 item 4, §9).
    """
    lead = group.lead
    comparison = group.comparison
    blocks: list[Block] = [_compare_title(group, verdict(group))]
    if comparison is not None:
        blocks.append(_section(_rates(group, comparison)))
        blocks.extend(_section(text) for text in _pack(_change_lines(comparison)))
    else:
        blocks.append(_section("\n".join(_side_progress(e, runs) for e, runs in _sides(group))))
        blocks.append(
            _context("Retell's per-case results could not be read; only counts are shown.")
        )
    if group.gate is not None:
        passed, _, _, total = _counts(group.b_runs)
        blocks.append(_section(gate_line(group.gate.min_pass, passed, total)))
    blocks.append(_compare_fields(group, with_duration=True))
    blocks.append(_section("\n".join(_batch_lines(group))))
    bad = _b_bad(group)
    blocks.append(
        _actions(
            lead,
            _case_total(lead),
            bad,
            repeats=group.repeats,
            has_failures_detail=True,
            compared=group.candidate,
        )
    )
    blocks.append(_footer(lead))
    return _message(_result_text(group), blocks)


def compare_mention(group: VersionsGroup) -> Message:
    """The thread reply that notifies whoever asked for the comparison, verdict in one line."""
    lead = group.lead
    line = (
        f"{mention(lead.user_id)} your comparison of {_engine(group.baseline)} with "
        f"{_engine(group.candidate)} finished: {verdict(group)}"
    )
    return _message(line, [_section(line)])


def quiet_comparison(group: VersionsGroup) -> Message:
    """What a `notify=failures` comparison schedule posts when B is green: one quiet line."""
    lead = group.lead
    label = _name(lead.label or "Scheduled comparison")
    line = f"{verdict(group)} · {label}: {_engine(group.baseline)} → {_engine(group.candidate)}"
    return _message(_result_text(group), [_context(line)])


def verdict(group: VersionsGroup) -> str:
    """`❌ v4: 2 regressions` / `✅ v4: no regressions, 1 fixed`, with the gate when it failed."""
    b = _version(group.candidate)
    comparison = group.comparison
    not_created = [run for run in group.runs if RunState(run.state) is RunState.FAILED]
    if not_created and len(not_created) == len(group.runs):
        return "⚠️ Neither version's batches could be created"
    if comparison is None:
        passed, _, _, total = _counts(group.b_runs)
        return f"⚪ {b}: {passed}/{total} passed; not compared case by case"
    if not_created:
        sides = {_version(run.engine) for run in not_created}
        return f"⚠️ Not compared in full: batches on {' and '.join(sorted(sides))} not created"
    regressions, fixed = comparison.regressions, comparison.count("fixed")
    gate_failed = group.gate is not None and not group.gate.held(comparison.b_rate)
    if regressions:
        text = f"❌ {b}: {plural(regressions, 'regression')}"
        if fixed:
            text += f", {fixed} fixed"
    else:
        text = f"{'❌' if gate_failed else '✅'} {b}: no regressions"
        if fixed:
            text += f", {fixed} fixed"
    if comparison.count("unfinished"):
        text += f", {comparison.count('unfinished')} unfinished"
    if gate_failed and group.gate is not None:
        text += f"; gate {group.gate.label} failed"
    return text


def _compare_title(group: VersionsGroup, headline: str) -> Block:
    lead = group.lead
    label = f" · *{_name(lead.label)}*" if lead.label else ""
    return _section(
        f"*{headline}*{label} · Retell versions compared: {_engine(group.baseline)} → "
        f"{_engine(group.candidate)}"
    )


def _rates(group: VersionsGroup, comparison: VersionComparison) -> str:
    a = format_pass_rate(comparison.a_passed, comparison.a_total)
    b = format_pass_rate(comparison.b_passed, comparison.b_total)
    runs = "test runs" if group.repeats > 1 else "cases"
    return (
        f"{_engine(group.baseline)} *{a}* of {comparison.a_total} {runs} passed · "
        f"{_engine(group.candidate)} *{b}* of {comparison.b_total}"
    )


def _change_lines(comparison: VersionComparison) -> list[str]:
    """Regressed cases one per line with B's reason, then the other changes by name."""
    lines: list[str] = []
    regressed = comparison.of("regressed")
    if regressed:
        lines.append(f"🔴 *Regressed ({len(regressed)})*")
        lines.extend(_regression(case) for case in regressed[:LISTED_REGRESSIONS])
        if len(regressed) > LISTED_REGRESSIONS:
            lines.append(
                f"…and {len(regressed) - LISTED_REGRESSIONS} more: *Show failures* lists every one."
            )
    named: tuple[tuple[str, Change], ...] = (
        ("🟢 Fixed", "fixed"),
        ("❌ Still failing", "still_failing"),
        ("🔀 Flaky", "flaky"),
        ("⏳ Unfinished", "unfinished"),
    )
    for title, change in named:
        cases = comparison.of(change)
        if cases:
            names = [_flaky_name(case) if change == "flaky" else case.name for case in cases]
            lines.append(f"{title} ({len(cases)}): {name_list(names, LISTED_NAMES)}")
    unchanged = comparison.count("unchanged")
    if unchanged:
        lines.append(f"⚪ Unchanged: {plural(unchanged, 'case')} passed on both")
    return lines


def _regression(case: CaseChange) -> str:
    why = case.explanation
    reason = f": {_safe(trim_explanation(why), 320)}" if why else ""
    return f"• *{_name(case.name, 80)}* {_code(case.case_id, 60)}{reason}"


def _flaky_name(case: CaseChange) -> str:
    """`Refund (3/3 → 1/3)`: how often the case passed on A and on B."""

    def share(side: CaseSummary | None) -> str:
        return f"{side.passes}/{side.runs}" if side is not None else "none"

    return f"{case.name} ({share(case.a)} → {share(case.b)})"


def _sides(group: VersionsGroup) -> list[tuple[Engine, list[RunView]]]:
    return [(group.baseline, group.a_runs), (group.candidate, group.b_runs)]


def _side_progress(engine: Engine, runs: Sequence[RunView]) -> str:
    passed, failed, errored, total = _counts(runs)
    done = passed + failed + errored
    return f"{_engine(engine)} {progress_bar(done, total)} · {counts_line(passed, failed, errored)}"


def _counts(runs: Sequence[RunView]) -> tuple[int, int, int, int]:
    """Test runs passed, failed, errored and in total over one side's batches, summed as a
    repeat group sums them (a batch never created counts nothing)."""
    return RepeatGroup(runs).counts


def _b_bad(group: VersionsGroup) -> int:
    """How many cases failed, errored or were flaky on B (what Rerun failed reruns)."""
    comparison = group.comparison
    if comparison is None:
        _, failed, errored, _ = _counts(group.b_runs)
        return failed + errored
    return sum(1 for case in comparison.cases if case.b is not None and case.b.passes < case.b.runs)


def _batch_lines(group: VersionsGroup) -> list[str]:
    lines = []
    for engine, runs in _sides(group):
        for number, run in enumerate(runs, 1):
            lines.append(f"{_version(engine)} {_numbered(number, len(runs))}{_batch_state(run)}")
    return lines


def _numbered(number: int, of: int) -> str:
    return f"#{number} · " if of > 1 else "· "


def _batch_state(run: RunView) -> str:
    state = RunState(run.state)
    if state is RunState.FAILED:
        return f"could not be created: {_safe(run.error or 'unknown reason', 300)}"
    progress = f"{run.completed}/{_case_total(run)}"
    what = {
        RunState.COMPLETE: counts_line(run.passed, run.failed, run.errored),
        RunState.TIMED_OUT: f"⏱️ timed out at {progress}",
    }.get(state, f"{progress} done")
    return f"{_batch(run.batch_id)} · {what}"


def _compare_fields(group: VersionsGroup, *, with_duration: bool) -> Block:
    lead = group.lead
    each = f"{_case_total(lead)} on each version"
    if group.repeats > 1:
        each += f", {group.repeats} runs each"
    pairs = [("Test cases", each), (_asker_label(lead), mention(lead.user_id))]
    if with_duration:
        durations = [run.duration for run in group.runs if run.duration is not None]
        pairs.append(("Duration", format_duration(max(durations) if durations else None)))
    return _fields(pairs)


def _result_text(group: VersionsGroup) -> str:
    lead = group.lead
    comparison = group.comparison
    label = f"{_name(lead.label)}: " if lead.label else ""
    a_batches = ", ".join(_safe(r.batch_id, NAME_CHARS) for r in group.a_runs if r.batch_id)
    b_batches = ", ".join(_safe(r.batch_id, NAME_CHARS) for r in group.b_runs if r.batch_id)
    passed, failed, errored, total = _counts(group.b_runs)
    text = (
        f"{label}Retell versions compared: {_label(group.baseline)} (batch {a_batches or 'none'})"
        f" and {_label(group.candidate)} (batch {b_batches or 'none'})"
    )
    if comparison is not None:
        text += f": {comparison.regressions} regressed, {comparison.count('fixed')} fixed"
    text += (
        f"; {_label(group.candidate)}: {counts_phrases(passed, failed, errored, total)}"
        f" ({format_pass_rate(passed, total)})"
    )
    if group.gate is not None:
        text += f"; {gate_phrase(group.gate.min_pass, passed, total)}"
    return text


def _label(engine: Engine) -> str:
    return _safe(engine.label, NAME_CHARS)


def _version(engine: Engine) -> str:
    return f"v{engine.version}" if engine.version is not None else engine.label
