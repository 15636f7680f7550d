"""A run's status message and result, its comparison with the previous run, its mentions."""

from __future__ import annotations

from collections.abc import Sequence

from bot.blocks.kit import (
    ACTION_RERUN,
    ACTION_RERUN_FAILED,
    ACTION_SHOW_FAILURES,
    EXPLANATION_CHARS,
    LISTED_NAMES,
    MAX_SECTION_TEXT,
    NAME_CHARS,
    REASON_CHARS,
    Block,
    Message,
    _bad,
    _button,
    _case_total,
    _code,
    _confirm,
    _context,
    _engine,
    _footer,
    _late,
    _message,
    _name,
    _progress,
    _run_fields,
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
    plural,
    shorten,
)
from bot.runview import Comparison, RunView, pass_rate
from bot.store import RunState
from bot.suite import Engine


def status_message(run: RunView) -> Message:
    """The channel's live status message, edited in place as counts change.

    A finished run renders as its result, so a late edit can never roll the message back.
    """
    if RunState(run.state).finished:
        return result_message(run)
    headline = "🧪 Creating the batch at Retell…" if run.batch_id is None else "🧪 Running"
    blocks = [
        _title(run, headline),
        _run_fields(run, with_duration=False),
        _section(_progress(run)),
        _footer(run),
    ]
    return _message(_status_text(run), blocks)


def _status_text(run: RunView) -> str:
    batch = f"batch {_safe(run.batch_id, NAME_CHARS)}" if run.batch_id else "creating the batch"
    done = f"{run.completed}/{_case_total(run)} done"
    return f"Retell batch test on {_safe(run.engine.label, NAME_CHARS)}: {done} ({batch})"


def outcome(run: RunView) -> str:
    """The one-line verdict on a finished run, with its emoji."""
    state = RunState(run.state)
    if state is RunState.FAILED:
        return "⚠️ The batch could not be created"
    if state is RunState.TIMED_OUT:
        return f"⏱️ Timed out with {run.completed}/{_case_total(run)} done"
    if not state.finished:
        return f"🧪 Running: {run.completed}/{_case_total(run)} done"
    if run.total == 0:
        return "⚪ No test cases ran"
    if _bad(run) == 0:
        return f"✅ All {run.passed} passed"
    return _failure_outcome(run)


def _failure_outcome(run: RunView) -> str:
    parts = [f"{run.failed} failed"] if run.failed else []
    if run.errored:
        parts.append(f"{run.errored} errored")
    emoji = "❌" if run.failed else "⚠️"
    return f"{emoji} {', '.join(parts)} of {run.total}"


def result_message(
    run: RunView, *, has_failures_detail: bool = True, comparison: Comparison | None = None
) -> Message:
    """The status message turned into the result: verdict, counts, rate, duration, buttons."""
    state = RunState(run.state)
    if not state.finished:
        return status_message(run)
    if state is RunState.FAILED:
        return _creation_failed_result(run)
    blocks = [
        _title(run, outcome(run)),
        _section(_result_counts(run)),
        _run_fields(run, with_duration=True),
    ]
    if run.min_pass is not None:
        blocks.append(_section(gate_line(run.min_pass, run.passed, run.total)))
    if comparison is not None:
        blocks.append(_section(comparison_text(run, comparison)))
    if state is RunState.TIMED_OUT:
        blocks.append(_context(_timed_out_note(run)))
    blocks.append(
        _actions(run, _case_total(run), _bad(run), has_failures_detail=has_failures_detail)
    )
    blocks.append(_footer(run))
    return _message(_result_text(run, comparison), blocks)


def _result_counts(run: RunView) -> str:
    counts = counts_line(run.passed, run.failed, run.errored)
    return f"{counts} · {run.total} total · *{format_pass_rate(run.passed, run.total)}* pass rate"


def _timed_out_note(run: RunView) -> str:
    after = format_duration(run.duration)
    check = (
        f" `/retell-test status {_safe(run.batch_id, NAME_CHARS)}` checks it now."
        if run.batch_id
        else ""
    )
    return (
        f"⏱️ Stopped following this batch after {after}; these are the last counts Retell "
        f"reported. The batch may still finish at Retell.{check}"
    )


def _result_text(run: RunView, comparison: Comparison | None) -> str:
    batch = _safe(run.batch_id, NAME_CHARS) if run.batch_id else "(no batch id)"
    engine = _safe(run.engine.label, NAME_CHARS)
    counts = counts_phrases(run.passed, run.failed, run.errored, run.total)
    rate = format_pass_rate(run.passed, run.total)
    label = f"{_name(run.label)}: " if run.label else ""
    if RunState(run.state) is RunState.TIMED_OUT:
        return f"{label}Retell batch {batch} on {engine} timed out; last counts: {counts} ({rate})"
    text = f"{label}Retell batch {batch} on {engine}: {counts} ({rate})"
    if run.min_pass is not None:
        text += f"; {gate_phrase(run.min_pass, run.passed, run.total)}"
    if comparison is not None and comparison.newly_failing:
        text += f"; {len(comparison.newly_failing)} newly failing"
    return text


def _actions(
    run: RunView,
    cases: int,
    bad: int,
    *,
    repeats: int = 1,
    has_failures_detail: bool,
    compared: Engine | None = None,
) -> Block:
    """Rerun, and when something failed or errored, Rerun failed and Show failures.

    Reruns spend Retell credits, so each asks for confirmation saying what it will run. On a
    comparison (`compared` is B) they run the comparison again; "failed" means failed on B.
    """
    value = str(run.id)
    times = f", {repeats} times" if repeats > 1 else ""
    if compared is None:
        title = "Rerun this batch?" if repeats == 1 else "Rerun these batches?"
        again = f"Runs {plural(cases, 'test case')} again on the same engine at Retell{times}."
        where = f"again on the same engine{times}"
    else:
        title = "Rerun this comparison?"
        versions = f"{run.engine.label} and {compared.label}"
        again = f"Runs {plural(cases, 'test case')} again on both {versions}{times}."
        where = f"again on both {versions}{times}"
    rerun_confirm = _confirm(title, again, "Rerun")
    buttons = [_button("🔁 Rerun", ACTION_RERUN, value, confirm=rerun_confirm)]
    if bad > 0:
        which = "failed or errored case" if repeats == 1 else "failed, flaky or errored case"
        if compared is not None:
            which = f"case that did not pass on {compared.label}"
        failed_confirm = _confirm(
            "Rerun the failed cases?", f"Runs the {plural(bad, which)} {where}.", "Rerun failed"
        )
        buttons.append(
            _button(
                "🔁 Rerun failed",
                ACTION_RERUN_FAILED,
                value,
                style="primary",
                confirm=failed_confirm,
            )
        )
        if has_failures_detail:
            buttons.append(_button("🔎 Show failures", ACTION_SHOW_FAILURES, value))
    return {"type": "actions", "elements": buttons}


def _creation_failed_result(run: RunView) -> Message:
    """A status message whose batch was never created says so, and offers to try again."""
    reason = _quote(run.error or "Retell gave no reason.")
    blocks = [
        _title(run, outcome(run)),
        _section(f"{reason}\nNothing was created at Retell, so there is nothing to follow."),
        _run_fields(run, with_duration=False),
        {"type": "actions", "elements": [_button("🔁 Try again", ACTION_RERUN, str(run.id))]},
        _footer(run),
    ]
    text = f"Retell batch test on {_safe(run.engine.label, NAME_CHARS)} could not start: "
    return _message(text + _safe(run.error or "no reason given", EXPLANATION_CHARS), blocks)


def _quote(text: str, limit: int = REASON_CHARS) -> str:
    """Outside text as a block quote, every line quoted."""
    return "\n".join(f">{line}" for line in _safe(text.strip(), limit).split("\n"))


def comparison_text(run: RunView, comparison: Comparison) -> str:
    """Pass rate against the previous run and which cases changed, summarised when long."""
    lines = [_rate_change(run, comparison.previous_pass_rate)]
    if comparison.newly_failing:
        lines.append(
            f"🔴 Newly failing ({len(comparison.newly_failing)}): "
            + name_list(comparison.newly_failing)
        )
    if comparison.fixed:
        lines.append(f"🟢 Fixed ({len(comparison.fixed)}): " + name_list(comparison.fixed))
    if comparison.previous_pass_rate is not None and not (
        comparison.newly_failing or comparison.fixed
    ):
        lines.append("Same cases failing as the previous run.")
    return "\n".join(line for line in lines if line)


def _rate_change(run: RunView, previous: float | None) -> str:
    current = pass_rate(run.passed, run.total)
    if previous is None or current is None:
        return "No previous run of this suite in this channel to compare with."
    now = format_pass_rate(run.passed, run.total)
    delta = float(now.rstrip("%")) - round(previous, 1)
    emoji = "📈" if delta > 0 else "📉" if delta < 0 else "➡️"
    return f"{emoji} Pass rate {previous:.1f}% → {now} ({delta:+.1f} pts)"


def name_list(names: Sequence[str], limit: int = LISTED_NAMES) -> str:
    """`a, b, c …and 940 more`: escaped, each name bounded, the list bounded."""
    shown = ", ".join(_name(name, 80) for name in names[:limit])
    rest = len(names) - limit
    return f"{shown} …and {rest} more" if rest > 0 else shown


def requester_mention(run: RunView) -> Message:
    """A thread reply that notifies whoever asked, with the verdict in one line."""
    batch = f" · batch {_code(run.batch_id)}" if run.batch_id else ""
    rate = ""
    if RunState(run.state) in (RunState.COMPLETE, RunState.TIMED_OUT) and run.total:
        rate = f" ({format_pass_rate(run.passed, run.total)} passed)"
    line = (
        f"{mention(run.user_id)} your Retell batch test on {_engine(run.engine)} "
        f"{_finished_verb(run)}: {outcome(run)}{rate}{batch}"
    )
    return _message(line, [_section(line)])


def quiet_result(run: RunView) -> Message:
    """What a `notify=failures` schedule posts when its run is green: one quiet line.

    Green is everything passed, or with `min_pass=` the gate held (some may have failed).
    """
    label = _name(run.label or "Scheduled run")
    batch = f" · batch {_code(run.batch_id)}" if run.batch_id else ""
    if run.min_pass is not None and run.failed + run.errored:
        what = (
            f"🟢 {label}: {gate_phrase(run.min_pass, run.passed, run.total)}, "
            f"{run.passed}/{run.total} passed"
        )
    else:
        what = f"✅ {label}: all {run.passed} passed"
    line = f"{what} on {_engine(run.engine)} in {format_duration(run.duration)}{batch}{_late(run)}"
    text = (
        f"{label}: Retell batch {_safe(run.batch_id or '', NAME_CHARS)} on "
        f"{_safe(run.engine.label, NAME_CHARS)}: "
        + counts_phrases(run.passed, run.failed, run.errored, run.total)
    )
    return _message(text, [_context(line)])


def regression_mention(run: RunView, mention_markup: str, comparison: Comparison) -> Message:
    """A thread reply that notifies a schedule's `mention=` when its run got worse.

    `mention_markup` was validated by the parser (`<@U…>` or `<!subteam^S…>`) and is stored
    as such; it is the only markup here that is not escaped.
    """
    label = _name(run.label or "A scheduled run")
    what = (
        f"{len(comparison.newly_failing)} newly failing: {name_list(comparison.newly_failing)}"
        if comparison.newly_failing
        else _rate_change(run, comparison.previous_pass_rate)
    )
    line = f"{mention_markup} {label} regressed on {_engine(run.engine)}: {what}"
    return _message(shorten(line, MAX_SECTION_TEXT), [_section(line)])


def _finished_verb(run: RunView) -> str:
    state = RunState(run.state)
    if state is RunState.TIMED_OUT:
        return "stopped being followed after the timeout"
    if state is RunState.FAILED:
        return "could not start"
    return "finished" if state.finished else "is running"
