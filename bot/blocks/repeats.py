"""`repeat=N` groups: one status and one result for N batches of a suite, with flaky cases."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bot.blocks.kit import (
    NAME_CHARS,
    Block,
    Message,
    _asker_label,
    _batch,
    _case_total,
    _context,
    _engine,
    _fields,
    _footer,
    _message,
    _name,
    _safe,
    _section,
    _title,
    counts_line,
    counts_phrases,
    format_duration,
    format_pass_rate,
    gate_line,
    gate_phrase,
    mention,
    progress_bar,
)
from bot.blocks.runs import _actions, name_list
from bot.repeats import CaseSummary, Totals, totals
from bot.runview import RunView
from bot.store import RunState


@dataclass(frozen=True, slots=True)
class RepeatGroup:
    """A `repeat=N` run as the channel sees it: N batches of one suite, shown as one.

    `runs` holds the lead first (it owns the status message and the buttons); `summaries` are
    the per-case verdicts over every batch, known once all of them finished.
    """

    runs: Sequence[RunView]
    summaries: Sequence[CaseSummary] = ()

    @property
    def lead(self) -> RunView:
        return self.runs[0]

    @property
    def counts(self) -> tuple[int, int, int, int]:
        """Test runs passed, failed, errored and in total, summed over the batches."""
        return (
            sum(r.passed for r in self.runs),
            sum(r.failed for r in self.runs),
            sum(r.errored for r in self.runs),
            sum(_case_total(r) for r in self.runs if RunState(r.state) is not RunState.FAILED),
        )

    @property
    def finished(self) -> bool:
        return all(RunState(r.state).finished for r in self.runs)


def repeat_status(group: RepeatGroup) -> Message:
    """The status message of a repeat group until its result is delivered.

    Unlike `status_message` it never turns into the result by itself: the result needs the
    per-case verdicts of every batch, which only the workflow knows when they are recorded.
    """
    lead = group.lead
    passed, failed, errored, total = group.counts
    done = passed + failed + errored
    headline = f"🧪 Running {len(group.runs)} times"
    if group.finished:
        headline = f"🧪 Reading the results of {len(group.runs)} runs…"
    blocks = [
        _title(lead, headline),
        _repeat_fields(group, with_duration=False),
        _section(f"{progress_bar(done, total)} · {counts_line(passed, failed, errored)}"),
        _section("\n".join(_batch_line(i, run) for i, run in enumerate(group.runs, 1))),
        _footer(lead),
    ]
    text = (
        f"Retell suite on {_safe(lead.engine.label, NAME_CHARS)} run {len(group.runs)} times: "
        f"{done}/{total} done"
    )
    return _message(text, blocks)


def repeat_result(group: RepeatGroup) -> Message:
    """One result for N batches: per-case pass counts, flaky cases named, the buttons.

    The fallback text carries the four count phrases summed over the batches and every
    batch id, like any result the bot posts (SPEC §4 item 4).
    """
    lead = group.lead
    passed, failed, errored, total = group.counts
    counted = totals(group.summaries)
    blocks = [_title(lead, _repeat_outcome(group, counted))]
    if group.summaries:
        blocks.append(_section("\n".join(repeat_verdicts(group.summaries, passed, total))))
    else:
        blocks.append(_section(f"{counts_line(passed, failed, errored)} · {total} test runs"))
        blocks.append(_context("Retell's per-case results could not be read; counts are summed."))
    if lead.min_pass is not None:
        blocks.append(_section(gate_line(lead.min_pass, passed, total)))
    blocks.append(_repeat_fields(group, with_duration=True))
    blocks.append(_section("\n".join(_batch_line(i, run) for i, run in enumerate(group.runs, 1))))
    listed = counted.failed + counted.flaky + counted.errored
    bad = listed if group.summaries else failed + errored
    cases = _case_total(lead)
    blocks.append(_actions(lead, cases, bad, repeats=len(group.runs), has_failures_detail=True))
    blocks.append(_footer(lead))
    batches = ", ".join(_safe(r.batch_id, NAME_CHARS) for r in group.runs if r.batch_id)
    label = f"{_name(lead.label)}: " if lead.label else ""
    text = (
        f"{label}Retell suite on {_safe(lead.engine.label, NAME_CHARS)} run "
        f"{len(group.runs)} times (batches {batches}): "
        f"{counts_phrases(passed, failed, errored, total)} ({format_pass_rate(passed, total)})"
    )
    if group.summaries:
        text += f"; {counted.flaky} flaky"
    if lead.min_pass is not None:
        text += f"; {gate_phrase(lead.min_pass, passed, total)}"
    return _message(text, blocks)


def repeat_mention(group: RepeatGroup) -> Message:
    """The thread reply that notifies whoever asked for a repeat run, verdict in one line."""
    lead = group.lead
    outcome_line = _repeat_outcome(group, totals(group.summaries))
    line = (
        f"{mention(lead.user_id)} your {len(group.runs)} runs of the suite on "
        f"{_engine(lead.engine)} finished: {outcome_line}"
    )
    return _message(line, [_section(line)])


def repeat_verdicts(summaries: Sequence[CaseSummary], passed: int, total: int) -> list[str]:
    """Lines saying how each case did over the runs: counts by verdict, then who."""
    counted = totals(summaries)
    lines = [
        f"✅ {counted.passed} passed every run · 🔀 {counted.flaky} flaky · "
        f"❌ {counted.failed} failed · ⚠️ {counted.errored} errored · "
        f"*{format_pass_rate(passed, total)}* of all {total} test runs passed"
    ]
    groups = (
        ("🔀 Flaky (passed and failed)", "flaky"),
        ("❌ Failed", "fail"),
        ("⚠️ Errored", "error"),
        ("⏳ Unfinished", "unfinished"),
    )
    for title, wanted in groups:
        names = [f"{s.name} ({s.passes}/{s.runs})" for s in summaries if s.verdict == wanted]
        if names:
            lines.append(f"{title}: {name_list(names)}")
    return lines


def _repeat_outcome(group: RepeatGroup, counted: Totals) -> str:
    runs = len(group.runs)
    if not group.summaries:
        passed, failed, errored, total = group.counts
        return f"{'✅' if failed + errored == 0 else '❌'} {runs} runs: {passed}/{total} passed"
    if counted.all_passed:
        return f"✅ All {counted.cases} passed in every one of {runs} runs"
    parts = [f"{counted.failed} failed"] if counted.failed else []
    if counted.flaky:
        parts.append(f"{counted.flaky} flaky")
    if counted.errored:
        parts.append(f"{counted.errored} errored")
    if counted.unfinished:
        parts.append(f"{counted.unfinished} unfinished")
    emoji = "❌" if counted.failed or counted.flaky else "⚠️"
    return f"{emoji} {', '.join(parts)} of {counted.cases} over {runs} runs"


def _repeat_fields(group: RepeatGroup, *, with_duration: bool) -> Block:
    lead = group.lead
    pairs = [
        ("Test cases", f"{_case_total(lead)} in each of {len(group.runs)} runs"),
        (_asker_label(lead), mention(lead.user_id)),
    ]
    if with_duration:
        durations = [r.duration for r in group.runs if r.duration is not None]
        pairs.append(("Duration", format_duration(max(durations) if durations else None)))
    return _fields(pairs)


def _batch_line(number: int, run: RunView) -> str:
    state = RunState(run.state)
    if state is RunState.FAILED:
        return f"{number}. could not be created: {_safe(run.error or 'unknown reason', 300)}"
    progress = f"{run.completed}/{_case_total(run)}"
    what = {
        RunState.COMPLETE: f"{counts_line(run.passed, run.failed, run.errored)}",
        RunState.TIMED_OUT: f"⏱️ timed out at {progress}",
    }.get(state, f"{progress} done")
    return f"{number}. {_batch(run.batch_id)} · {what}"
