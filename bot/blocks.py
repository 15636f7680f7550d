"""Block Kit for everything the bot shows in Slack: pure functions from runs to messages.

No I/O here, so every message, and every Slack limit on it, is tested without Slack. All text
that comes from users or from Retell (case names, explanations, error reasons, ids typed in a
command) goes through `escape`, so none of it can turn into a mention such as `<!channel>`.
Lists that could grow with a suite (up to 1000 cases) are summarised or split, never cut
mid-word and never left for Slack to reject.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from bot.commands import CommandError
from bot.repeats import CaseSummary, Totals, totals
from bot.retell import BatchJob
from bot.store import RunState
from bot.suite import Engine, Suite
from bot.text import one_line

if TYPE_CHECKING:  # history imports this module; the digest is only a type here
    from bot.history import Digest

Block = dict[str, Any]

# Slack's documented Block Kit limits (SPEC §4).
MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_FIELD_TEXT = 2000
MAX_FIELDS = 10
MAX_CONTEXT_ELEMENTS = 10
MAX_HEADER_TEXT = 150
MAX_BUTTON_TEXT = 75
MAX_BUTTON_VALUE = 2000
MAX_ACTION_ID = 255
# Undocumented: chat.postMessage answers `msg_blocks_too_long` somewhere around 11-13k characters
# of text in total (slackapi/bolt-js#2509, #2867), so long lists stay well below that.
MESSAGE_TEXT_BUDGET = 8000

ELLIPSIS = "…"
BACKTICK_STANDIN = "\u02b9"  # a prime: reads like a quote, cannot close a code span
EXPLANATION_CHARS = 300
NAME_CHARS = 150
REASON_CHARS = 1500
LISTED_RUNS = 45
LISTED_NAMES = 10
BAR_WIDTH = 10
# A scheduled firing that starts later than this after its time says it ran late.
LATE_AFTER = timedelta(minutes=2)

ACTION_RERUN = "rerun"
ACTION_RERUN_FAILED = "rerun_failed"
ACTION_SHOW_FAILURES = "show_failures"

_USER_ID = re.compile(r"[UW][A-Z0-9]{2,}")
_CHANNEL_ID = re.compile(r"[CDG][A-Z0-9]{2,}")
_PLAIN_ID = re.compile(r"[A-Za-z0-9_\-]+")
_SENTENCE_END = re.compile(r"[.!?…](?=\s)")


@dataclass(frozen=True, slots=True)
class Message:
    """A Slack message: `text` is what notifications and screen readers show."""

    text: str
    blocks: list[Block]

    def as_kwargs(self) -> dict[str, Any]:
        """The arguments slack_sdk's chat calls take."""
        return {"text": self.text, "blocks": self.blocks}


@dataclass(frozen=True, slots=True)
class Comparison:
    """How a run differs from the previous run of the same suite in the channel.

    `previous_pass_rate` is a percentage (0-100), None when there is nothing to compare with.
    """

    previous_pass_rate: float | None
    newly_failing: tuple[str, ...] = ()
    fixed: tuple[str, ...] = ()


class RunView(Protocol):
    """What messages read from a run; `bot.store.Run` fits it, tests pass plain dataclasses."""

    @property
    def id(self) -> int: ...
    @property
    def channel_id(self) -> str: ...
    @property
    def user_id(self) -> str: ...
    @property
    def engine(self) -> Engine: ...
    @property
    def case_count(self) -> int: ...
    @property
    def case_ids(self) -> Sequence[str]: ...
    @property
    def state(self) -> str: ...
    @property
    def batch_id(self) -> str | None: ...
    @property
    def error(self) -> str | None: ...
    @property
    def passed(self) -> int: ...
    @property
    def failed(self) -> int: ...
    @property
    def errored(self) -> int: ...
    @property
    def total(self) -> int: ...
    @property
    def completed(self) -> int: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def started_at(self) -> datetime | None: ...
    @property
    def finished_at(self) -> datetime | None: ...
    @property
    def duration(self) -> timedelta | None: ...
    @property
    def source(self) -> str: ...
    @property
    def rerun_of(self) -> int | None: ...
    @property
    def label(self) -> str | None: ...
    @property
    def scheduled_for(self) -> datetime | None: ...


# -- text ----------------------------------------------------------------------------------------


def escape(text: str) -> str:
    """Escape mrkdwn control characters so outside text can never become a mention or link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def shorten(text: str, limit: int) -> str:
    """Fit `text` into `limit` characters, cutting at a word boundary and marking the cut."""
    if len(text) <= limit:
        return text
    room = limit - len(ELLIPSIS)
    cut = max(text.rfind(space, 0, room + 1) for space in (" ", "\n", "\t"))
    head = text[:cut] if cut > 0 else _hard_cut(text, room)
    return head.rstrip() + ELLIPSIS


def _hard_cut(text: str, room: int) -> str:
    """Cut a single over-long word, never inside an `&amp;`-style entity."""
    return re.sub(r"&[a-z]*$", "", text[:room])


def _safe(text: str, limit: int) -> str:
    """Outside text, escaped and fitted (word boundaries never split an entity)."""
    return shorten(escape(text), limit)


def _name(text: str, limit: int = NAME_CHARS) -> str:
    """A name from outside (a test case, a schedule): one line, escaped and fitted."""
    return _safe(one_line(text), limit)


def _code(text: str, limit: int = NAME_CHARS) -> str:
    """An id shown as inline code; backticks are swapped so the span cannot be broken out of."""
    return f"`{_safe(text.replace('`', BACKTICK_STANDIN), limit)}`"


def trim_explanation(text: str, limit: int = EXPLANATION_CHARS) -> str:
    """Retell's explanation on one line, cut after the last whole sentence that fits.

    Falls back to a word boundary when the sentences that fit would say too little.
    """
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    room = limit - len(ELLIPSIS) - 1
    ends = [m.end() for m in _SENTENCE_END.finditer(flat[: room + 1])]
    if ends and ends[-1] >= limit // 3:
        return f"{flat[: ends[-1]]} {ELLIPSIS}"
    return shorten(flat, limit)


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def mention(user_id: str) -> str:
    """`<@U…>` for a real Slack user id; anything else is shown as escaped text."""
    return f"<@{user_id}>" if _USER_ID.fullmatch(user_id) else _safe(user_id, 80)


def channel_link(channel_id: str) -> str:
    return f"<#{channel_id}>" if _CHANNEL_ID.fullmatch(channel_id) else _safe(channel_id, 80)


def slack_date(moment: datetime, template: str) -> str:
    """A date Slack shows in each reader's time zone (UTC in the plain-text fallback)."""
    fallback = moment.strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(moment.timestamp())}^{template}|{fallback}>"


# -- numbers -------------------------------------------------------------------------------------


def bar_cells(done: int, total: int, width: int = BAR_WIDTH) -> str:
    """`▓▓▓░░░░░░░`; only full when every case is done, empty while the total is unknown."""
    filled = min(width, max(0, done) * width // total) if total > 0 else 0
    return "▓" * filled + "░" * (width - filled)


def progress_bar(done: int, total: int) -> str:
    """`▓▓▓░░░░░░░ 12/40`, the cells in a code span so they line up in every client."""
    return f"`{bar_cells(done, total)}` {done}/{total}"


def pass_rate(passed: int, total: int) -> float | None:
    return 100.0 * passed / total if total > 0 else None


def format_pass_rate(passed: int, total: int) -> str:
    """One decimal; never rounds a failure up to 100.0% or a pass down to 0.0%."""
    rate = pass_rate(passed, total)
    if rate is None:
        return "n/a"
    shown = f"{rate:.1f}"
    if shown == "100.0" and passed < total:
        shown = "99.9"
    elif shown == "0.0" and passed > 0:
        shown = "0.1"
    return f"{shown}%"


def format_duration(delta: timedelta | None) -> str:
    """`42s`, `4m 12s`, `1h 03m`, `2d 05h`: precise enough, short enough for a field."""
    if delta is None:
        return "—"
    seconds = max(0, int(delta.total_seconds()))
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def counts_line(passed: int, failed: int, errored: int) -> str:
    return f"✅ {passed} passed · ❌ {failed} failed · ⚠️ {errored} errored"


def counts_phrases(passed: int, failed: int, errored: int, total: int) -> str:
    """The four phrases notifications must carry (SPEC §4 item 4)."""
    return f"{passed} passed, {failed} failed, {errored} errored, {total} total"


# -- blocks --------------------------------------------------------------------------------------


def _section(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": shorten(text, MAX_SECTION_TEXT)}}


def _fields(pairs: Sequence[tuple[str, str]]) -> Block:
    fields = [
        {"type": "mrkdwn", "text": shorten(f"*{label}*\n{value}", MAX_FIELD_TEXT)}
        for label, value in pairs[:MAX_FIELDS]
    ]
    return {"type": "section", "fields": fields}


def _context(*texts: str) -> Block:
    elements = [
        {"type": "mrkdwn", "text": shorten(text, MAX_SECTION_TEXT)}
        for text in texts[:MAX_CONTEXT_ELEMENTS]
    ]
    return {"type": "context", "elements": elements}


def _header(text: str) -> Block:
    return {
        "type": "header",
        "text": {"type": "plain_text", "text": shorten(text, MAX_HEADER_TEXT), "emoji": True},
    }


def _button(
    text: str, action_id: str, value: str, *, style: str | None = None, confirm: Block | None = None
) -> Block:
    button: Block = {
        "type": "button",
        "text": {"type": "plain_text", "text": shorten(text, MAX_BUTTON_TEXT), "emoji": True},
        "action_id": action_id[:MAX_ACTION_ID],
        "value": value[:MAX_BUTTON_VALUE],
    }
    if style is not None:
        button["style"] = style
    if confirm is not None:
        button["confirm"] = confirm
    return button


def _confirm(title: str, text: str, yes: str) -> Block:
    """A confirmation dialog: reruns spend Retell credits, so a stray click should not."""
    return {
        "title": {"type": "plain_text", "text": shorten(title, 100)},
        "text": {"type": "plain_text", "text": shorten(text, 300)},
        "confirm": {"type": "plain_text", "text": shorten(yes, 30)},
        "deny": {"type": "plain_text", "text": "Cancel"},
    }


def _message(text: str, blocks: list[Block]) -> Message:
    return Message(text=shorten(text, MAX_SECTION_TEXT), blocks=blocks[:MAX_BLOCKS])


def _pack(entries: Iterable[str], limit: int = MAX_SECTION_TEXT, sep: str = "\n") -> list[str]:
    """Join entries into as few texts of at most `limit` characters as possible."""
    texts: list[str] = []
    current = ""
    for entry in entries:
        entry = shorten(entry, limit)
        if current and len(current) + len(sep) + len(entry) > limit:
            texts.append(current)
            current = ""
        current = f"{current}{sep}{entry}" if current else entry
    if current:
        texts.append(current)
    return texts


def _code_block_sections(text: str) -> list[Block]:
    """Usage text as code blocks, split at line ends when it is too long for one section."""
    if not text.strip():
        return []
    lines = text.strip("\n").split("\n")  # the project's own usage text: already mrkdwn-safe
    sections: list[Block] = []
    budget = MESSAGE_TEXT_BUDGET - 1000  # room for the message around the usage
    for chunk in _pack(lines, MAX_SECTION_TEXT - len("```\n\n```")):
        if len(chunk) > budget:
            sections.append(_context("_(usage shortened)_"))
            break
        sections.append(_section(f"```\n{chunk}\n```"))
        budget -= len(chunk)
    return sections


# -- run pieces ----------------------------------------------------------------------------------


def _engine(engine: Engine) -> str:
    return _code(engine.label)


def _batch(batch_id: str | None) -> str:
    return _code(batch_id) if batch_id else "_creating…_"


def _bad(run: RunView) -> int:
    return run.failed + run.errored


def _case_total(run: RunView) -> int:
    """Retell's count once the batch exists, the requested count before."""
    return run.total or run.case_count


def _asker_label(run: RunView) -> str:
    return {"schedule": "Scheduled by", "watch": "Watched by"}.get(run.source, "Requested by")


def _origin(run: RunView) -> str:
    """Where the run came from, for the footer."""
    if run.source == "rerun" and run.rerun_of is not None:
        return f"Rerun of run #{run.rerun_of}"
    if run.source == "schedule" and run.label:
        return f"Scheduled run “{_name(run.label)}”"
    return {
        "schedule": "Scheduled run",
        "watch": "Batch created outside Slack, followed here",
        "rerun": "Rerun",
        "modal": "Started from the Run form",
    }.get(run.source, "Started from `/retell-test`")


def _footer(run: RunView) -> Block:
    started = run.started_at or run.created_at
    when = slack_date(started, "Started {date_short_pretty} at {time}")
    return _context(f"Run #{run.id} · {_origin(run)} · {when}{_late(run)}")


def late_by(run: RunView) -> timedelta | None:
    """How late a scheduled firing started (the bot was down at its time); None if on time."""
    if run.scheduled_for is None:
        return None
    delay = (run.started_at or run.created_at) - run.scheduled_for
    return delay if delay > LATE_AFTER else None


def _late(run: RunView) -> str:
    delay = late_by(run)
    if delay is None or run.scheduled_for is None:
        return ""
    due = slack_date(run.scheduled_for, "{date_short_pretty} at {time}")
    return f" · ⏰ ran late: it was due {due}, {format_duration(delay)} earlier; the bot was down"


def _title(run: RunView, headline: str) -> Block:
    label = f" · *{_name(run.label)}*" if run.label else ""
    return _section(f"*{headline}*{label} · Retell batch test on {_engine(run.engine)}")


def _run_fields(run: RunView, *, with_duration: bool) -> Block:
    pairs = [
        ("Test cases", str(_case_total(run))),
        (_asker_label(run), mention(run.user_id)),
        ("Batch", _batch(run.batch_id)),
    ]
    if with_duration:
        pairs.append(("Duration", format_duration(run.duration)))
    return _fields(pairs)


def _progress(run: RunView) -> str:
    bar = progress_bar(run.completed, _case_total(run))
    return f"{bar} · {counts_line(run.passed, run.failed, run.errored)}"


# -- status while running ------------------------------------------------------------------------


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


# -- result --------------------------------------------------------------------------------------


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
    if comparison is not None and comparison.newly_failing:
        text += f"; {len(comparison.newly_failing)} newly failing"
    return text


def _actions(
    run: RunView, cases: int, bad: int, *, repeats: int = 1, has_failures_detail: bool
) -> Block:
    """Rerun, and when something failed or errored, Rerun failed and Show failures.

    Reruns spend Retell credits, so each asks for confirmation saying what it will run.
    """
    value = str(run.id)
    times = f", {repeats} times" if repeats > 1 else ""
    rerun_confirm = _confirm(
        "Rerun this batch?" if repeats == 1 else "Rerun these batches?",
        f"Runs {plural(cases, 'test case')} again on the same engine at Retell{times}.",
        "Rerun",
    )
    buttons = [_button("🔁 Rerun", ACTION_RERUN, value, confirm=rerun_confirm)]
    if bad > 0:
        which = "failed or errored case" if repeats == 1 else "failed, flaky or errored case"
        failed_confirm = _confirm(
            "Rerun the failed cases?",
            f"Runs the {plural(bad, which)} again on the same engine{times}.",
            "Rerun failed",
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


# -- comparison ----------------------------------------------------------------------------------


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


# -- requester, errors, help ---------------------------------------------------------------------


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
    """What a `notify=failures` schedule posts when everything passed: one quiet line."""
    label = _name(run.label or "Scheduled run")
    batch = f" · batch {_code(run.batch_id)}" if run.batch_id else ""
    line = (
        f"✅ {label}: all {run.passed} passed on {_engine(run.engine)}"
        f" in {format_duration(run.duration)}{batch}{_late(run)}"
    )
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


def ack_text(engine: Engine, case_count: int | None, *, repeats: int = 1) -> str:
    """The instant ephemeral ack: Slack needs an answer within 3 s, before Retell is asked."""
    what = f"{repeats} Retell batch tests" if repeats > 1 else "a Retell batch test"
    on = f"Starting {what} on {_engine(engine)}"
    if case_count is None:
        return f"{on}, resolving test cases…"
    return f"{on} with {plural(case_count, 'test case')}{' each' if repeats > 1 else ''}…"


def start_failed(suite: Suite, reason: str, *, maybe_created: bool = False) -> Message:
    """Ephemeral: the batch could not be created, why, and what was (or may have been) left.

    `maybe_created` is for a request whose outcome is unknown (no answer, or a server error
    after the request arrived): Retell may have created the batch anyway, and saying "nothing
    was created" would then be wrong.
    """
    cases = plural(suite.size, "test case")
    title = f"⚠️ *Couldn't start the Retell batch test* on {_engine(suite.engine)} with {cases}."
    aftermath = (
        "Retell may still have created the batch (its answer never came or was an error); the "
        "bot is not following it. Check the Retell dashboard before running it again."
        if maybe_created
        else "Nothing was created at Retell: no batch was started and none will be followed."
    )
    blocks = [
        _section(f"{title}\n{_quote(reason or 'Retell gave no reason.')}"),
        _context(aftermath),
    ]
    text = (
        f"Couldn't start a Retell batch test on {_safe(suite.engine.label, NAME_CHARS)} ({cases}): "
        f"{_safe(reason, EXPLANATION_CHARS)} "
        + ("Retell may still have created it." if maybe_created else "Nothing was created.")
    )
    return _message(text, blocks)


def help_message(usage: str) -> Message:
    """Ephemeral help: what the bot is for, then the usage."""
    intro = (
        "*Retell batch tests from Slack.* Run your Retell test cases as a batch against an "
        "engine; progress is updated here as Retell works.\nThe result posts to the channel "
        "with pass rate, what changed since the last run, and buttons to rerun or see failures."
    )
    return _message(
        "Retell batch tests from Slack: /retell-test help",
        [_section(intro), *_code_block_sections(usage)],
    )


def command_error(error: CommandError) -> Message:
    """Ephemeral: what was wrong with the command, then the usage that applies.

    The parser writes its messages as mrkdwn with the user's input already escaped, so they
    are shown as they are (escaping again would print `&lt;` to the user).
    """
    problem = f"⚠️ {shorten(error.message, REASON_CHARS)}"
    return _message(problem, [_section(problem), *_code_block_sections(error.usage)])


def problem(text: str) -> Message:
    """Ephemeral: something could not be done, in plain words (escaped: it may quote Retell)."""
    line = f"⚠️ {_safe(text, REASON_CHARS)}"
    return _message(line, [_section(line)])


def not_allowed(reason: str, admin_ids: Iterable[str], *, owner: str | None = None) -> Message:
    """Ephemeral: a polite refusal that names who to ask (the admins, and `owner`, mentioned).

    `reason` is plain text and escaped here; mentions are added after it, so they stay
    mentions rather than showing as `&lt;@U…&gt;`.
    """
    admins = ", ".join(mention(admin) for admin in sorted(admin_ids))
    ask = f"Ask {admins} if you need it." if admins else "Ask the bot's admin if you need it."
    owned = f" It was created by {mention(owner)}." if owner else ""
    text = f"🔒 {_safe(reason, REASON_CHARS)}{owned} {ask}"
    return _message(text, [_section(text)])


# -- status command ------------------------------------------------------------------------------


def in_flight_list(runs: Sequence[RunView]) -> Message:
    """`/retell-test status`: this channel's runs in flight, summarised past what fits."""
    if not runs:
        text = "No Retell batch tests are running in this channel."
        return _message(text, [_section(text)])
    title = f"*{plural(len(runs), 'Retell batch test')} in flight in this channel*"
    blocks = [_section(title)]
    budget = MESSAGE_TEXT_BUDGET - len(title) - 100
    for run in runs[:LISTED_RUNS]:
        line = _in_flight_line(run)
        if len(line) > budget:
            break
        blocks.append(_section(line))
        budget -= len(line)
    hidden = len(runs) - (len(blocks) - 1)
    if hidden > 0:
        blocks.append(_context(f"…and {hidden} more"))
    text = f"{plural(len(runs), 'Retell batch test')} in flight in this channel"
    return _message(text, blocks)


def _in_flight_line(run: RunView) -> str:
    started = slack_date(run.created_at, "started {ago}")
    return (
        f"{_progress(run)}\n{_engine(run.engine)} · {plural(_case_total(run), 'case')} · "
        f"batch {_batch(run.batch_id)} · {mention(run.user_id)} · {started}"
    )


def batch_status(batch: BatchJob, run: RunView | None) -> Message:
    """`/retell-test status <batch_id>`: Retell's view of one batch, and whether it is followed."""
    state = "✅ Complete" if batch.is_complete else "🔄 In progress"
    counts = counts_line(batch.passed, batch.failed, batch.errored)
    rate = format_pass_rate(batch.passed, batch.total)
    lines = [
        f"*Retell batch* {_code(batch.batch_id)} on {_engine(batch.engine)}",
        f"{state} · {progress_bar(batch.completed, batch.total)}",
        f"{counts} · {batch.total} total · *{rate}* pass rate",
    ]
    blocks = [_section("\n".join(lines)), _context(_followed_note(batch, run))]
    engine = _safe(batch.engine.label, NAME_CHARS)
    text = (
        f"Retell batch {_safe(batch.batch_id, NAME_CHARS)} on {engine}: "
        f"{'complete' if batch.is_complete else 'in progress'}, "
        f"{counts_phrases(batch.passed, batch.failed, batch.errored, batch.total)}"
    )
    return _message(text, blocks)


def _followed_note(batch: BatchJob, run: RunView | None) -> str:
    if run is None:
        watch = f"`/retell-test watch {_safe(batch.batch_id, NAME_CHARS)}`"
        return f"Not followed by this bot. {watch} reports it in a channel."
    where = channel_link(run.channel_id)
    return f"Followed as run #{run.id} in {where}, asked by {mention(run.user_id)}."


# -- failures ------------------------------------------------------------------------------------


FAILURE_REPLIES_INLINE = 3  # longer lists: one reply, and the whole list as a CSV file
LISTED_VERDICTS = ("fail", "flaky", "error")  # what Show failures lists, in this order
_VERDICT_ICON = {"fail": "❌", "flaky": "🔀", "error": "⚠️"}


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file to share with a message (Slack's upload flow, scope `files:write`)."""

    filename: str
    title: str
    content: bytes


@dataclass(frozen=True, slots=True)
class FailuresPost:
    """What **Show failures** posts in the result's thread: replies, and a file when long."""

    replies: list[Message]
    attachment: Attachment | None = None


def failures_post(
    run: RunView, summaries: Sequence[CaseSummary], *, batches: int = 1
) -> FailuresPost:
    """Every failed, flaky, then errored case with Retell's why, within Slack's limits.

    `summaries` are the per-case verdicts over the run's batches (one batch, or a repeat
    group's). Up to FAILURE_REPLIES_INLINE replies' worth is posted as replies; a longer list
    (hundreds of failures) gets one reply with the first of them and a CSV with all of them,
    so a thread is never flooded and nothing is cut.
    """
    listed = [s for s in summaries if s.verdict in LISTED_VERDICTS]
    counted = totals(summaries)
    summary = _failures_summary(counted, batches)
    if not listed:
        where = f"batch {_code(run.batch_id)}" if run.batch_id else "this batch"
        if batches > 1:
            where = f"any of the {batches} batches"
        text = f"No failed or errored test cases in {where}."
        return FailuresPost([_message(text, [_section(text)])])
    pages = _paginate([failure_entry(s) for s in listed])
    if len(pages) <= FAILURE_REPLIES_INLINE:
        return FailuresPost(
            [
                _failures_page(run, _pack(page, sep="\n\n"), summary, part=(i + 1, len(pages)))
                for i, page in enumerate(pages)
            ]
        )
    plain_batch = run.batch_id if _PLAIN_ID.fullmatch(run.batch_id or "") else None
    name = plain_batch or f"run-{run.id}"
    attachment = Attachment(
        filename=f"failures-{name}.csv",
        title=f"{summary}: every case with Retell's explanation",
        content=failures_csv(listed),
    )
    first = pages[0]
    note = (
        f"📎 The first {len(first)} of {len(listed)} are below; all {len(listed)}, with "
        f"Retell's full explanations, are in *{attachment.filename}* in this thread."
    )
    return FailuresPost(
        [_failures_page(run, _pack(first, sep="\n\n"), summary, note=note)], attachment
    )


def _failures_summary(counted: Totals, batches: int) -> str:
    parts = [f"{counted.failed} failed"]
    if batches > 1:
        parts.append(f"{counted.flaky} flaky")
    parts.append(f"{counted.errored} errored")
    over = f" over {batches} batches" if batches > 1 else ""
    return ", ".join(parts) + over


def failure_entry(case: CaseSummary) -> str:
    """One case: name (and id when it differs), verdict, and Retell's explanation quoted."""
    id_shown = f" {_code(case.case_id, 80)}" if case.case_id != case.name else ""
    why = trim_explanation(case.explanation or "")
    detail = f">{escape(why)}" if why else "_Retell gave no explanation._"
    name = f"*{_name(case.name)}*{id_shown}"
    return f"{_VERDICT_ICON[case.verdict]} {name} {_verdict_words(case)}\n{detail}"


def _verdict_words(case: CaseSummary) -> str:
    if case.runs == 1:
        return "failed" if case.verdict == "fail" else "errored"
    if case.verdict == "flaky":
        return f"flaky: passed {case.passes} of {case.runs} runs, failed {case.fails}"
    if case.verdict == "fail":
        return f"failed {case.fails} of {case.runs} runs"
    return f"errored {case.errors} of {case.runs} runs"


def failures_csv(cases: Sequence[CaseSummary]) -> bytes:
    """The full failure list for a spreadsheet: one row per case, every explanation whole."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        ["case_id", "name", "verdict", "passed", "failed", "errored", "runs", "explanation"]
    )
    for case in cases:
        writer.writerow(
            [
                _csv_text(case.case_id),
                _csv_text(one_line(case.name)),
                case.verdict,
                case.passes,
                case.fails,
                case.errors,
                case.runs,
                _csv_text("\n\n".join(case.explanations)),
            ]
        )
    return out.getvalue().encode()


def _csv_text(text: str) -> str:
    """Text a spreadsheet would run as a formula gets an apostrophe in front: names and
    explanations come from outside (explanations are model-written), not from the user."""
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _paginate(entries: list[str]) -> list[list[str]]:
    """Group entries into replies below the total-text limit (header and footer need ~600).

    Each entry is at most one section long, so a page packs into a handful of sections and
    the 50-block limit is never the one that binds.
    """
    budget = MESSAGE_TEXT_BUDGET - 600
    pages: list[list[str]] = [[]]
    used = 0
    for entry in entries:
        if pages[-1] and used + len(entry) + 2 > budget:
            pages.append([])
            used = 0
        pages[-1].append(entry)
        used += len(entry) + 2
    return pages


def _failures_page(
    run: RunView,
    sections: list[str],
    summary: str,
    *,
    part: tuple[int, int] = (1, 1),
    note: str | None = None,
) -> Message:
    where = _code(run.batch_id) if run.batch_id else "this batch"
    of = f" (part {part[0]}/{part[1]})" if part[1] > 1 else ""
    blocks: list[Block] = []
    if part[0] == 1:
        blocks.append(_header(_failures_header(summary, run.batch_id)))
    if note:
        blocks.append(_section(note))
    blocks.extend(_section(text) for text in sections)
    blocks.append(_context(f"Batch {where} on {_engine(run.engine)} · run #{run.id}{of}"))
    batch = _safe(run.batch_id, NAME_CHARS) if run.batch_id else "this batch"
    return _message(f"{summary} in Retell batch {batch}{of}", blocks)


def _failures_header(summary: str, batch_id: str | None) -> str:
    """Header text is plain, so only ids that need no escaping go in; long ones are left out."""
    if batch_id and _PLAIN_ID.fullmatch(batch_id):
        full = f"{summary} in batch {batch_id}"
        if len(full) <= MAX_HEADER_TEXT:
            return full
    return summary


# -- repeat=N -------------------------------------------------------------------------------------


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


# -- schedules -----------------------------------------------------------------------------------

ACTION_SCHEDULE_RUN = "schedule_run"
ACTION_SCHEDULE_PAUSE = "schedule_pause"
ACTION_SCHEDULE_RESUME = "schedule_resume"
ACTION_SCHEDULE_REMOVE = "schedule_remove"
SCHEDULES_PER_MESSAGE = 20  # two blocks each: a list of 100 is five messages of ≤ 42 blocks
HOME_SCHEDULES = 30
HOME_RUNS = 10
MAX_HOME_BLOCKS = 100


@dataclass(frozen=True, slots=True)
class ScheduleEntry:
    """A schedule as people see it; built by `bot.schedules` from its row and APScheduler's."""

    id: int
    name: str
    kind: str  # "run" or "report"
    channel_id: str
    user_id: str
    engine: Engine | None
    tests: str  # how the cases were chosen, in words: "all", "12 test cases", ...
    when: str  # in words: "every weekday at 09:00"
    timezone: str
    next_fire: datetime | None
    paused: bool
    notify: str = "always"
    mention: str | None = None
    report_days: int | None = None
    last_run: RunView | None = None
    last_fired_at: datetime | None = None


def local_time(moment: datetime, timezone: str) -> str:
    """`Thu 26 Nov 09:00 CET`: a time as it reads where the schedule's creator lives."""
    from zoneinfo import ZoneInfo

    return moment.astimezone(ZoneInfo(timezone)).strftime("%a %d %b %Y %H:%M %Z")


def _what(entry: ScheduleEntry) -> str:
    if entry.kind == "report":
        return f"digest report of the last {plural(entry.report_days or 7, 'day')}"
    engine = _engine(entry.engine) if entry.engine else "?"
    return f"{engine} · {_safe(entry.tests, 200)}"


def _schedule_line(entry: ScheduleEntry) -> str:
    state = "⏸️ paused" if entry.paused else "▶️ active"
    when = f"{_safe(entry.when, 200)} ({_safe(entry.timezone, 64)})"
    next_fire = (
        local_time(entry.next_fire, entry.timezone) if entry.next_fire and not entry.paused else "—"
    )
    lines = [
        f"*#{entry.id} · {_name(entry.name)}* · {state}",
        f"{_what(entry)}\n🗓️ {when} · next: {next_fire}",
    ]
    extras = [f"by {mention(entry.user_id)}"]
    if entry.kind == "run":
        extras.append(f"notify={entry.notify}")
    if entry.mention:
        extras.append(f"mentions {entry.mention} on regressions")
    if entry.last_run is not None:
        extras.append(f"last: {_last_result(entry.last_run)}")
    elif entry.last_fired_at is not None:
        extras.append(f"last fired {slack_date(entry.last_fired_at, '{date_short} {time}')}")
    lines.append(" · ".join(extras))
    return "\n".join(lines)


def _last_result(run: RunView) -> str:
    state = RunState(run.state)
    if state is RunState.COMPLETE and run.total:
        return f"{outcome(run)} ({format_pass_rate(run.passed, run.total)})"
    return outcome(run)


def _schedule_buttons(entry: ScheduleEntry) -> Block:
    value = str(entry.id)
    toggle = (
        _button("▶️ Resume", ACTION_SCHEDULE_RESUME, value)
        if entry.paused
        else _button("⏸️ Pause", ACTION_SCHEDULE_PAUSE, value)
    )
    run_confirm = _confirm(
        "Run this schedule now?",
        f"Runs “{shorten(one_line(entry.name), 80)}” now, once; the schedule itself is unchanged.",
        "Run now",
    )
    remove_confirm = _confirm(
        "Remove this schedule?",
        f"“{shorten(one_line(entry.name), 80)}” will not run again. Its past results stay.",
        "Remove",
    )
    return {
        "type": "actions",
        "block_id": f"schedule-{entry.id}",
        "elements": [
            _button("▶️ Run now", ACTION_SCHEDULE_RUN, value, confirm=run_confirm),
            toggle,
            _button(
                "🗑️ Remove", ACTION_SCHEDULE_REMOVE, value, style="danger", confirm=remove_confirm
            ),
        ],
    }


def _schedule_blocks(entry: ScheduleEntry) -> list[Block]:
    return [_section(_schedule_line(entry)), _schedule_buttons(entry)]


def schedule_added(entry: ScheduleEntry, next_fires: Sequence[datetime]) -> Message:
    """Ephemeral confirmation of `schedule add`: what, where, and the next three firings."""
    fires = "\n".join(f"• {local_time(fire, entry.timezone)}" for fire in next_fires)
    title = (
        f"🗓️ Scheduled *#{entry.id} · {_name(entry.name)}* in "
        f"{channel_link(entry.channel_id)}: {_what(entry)}, {_safe(entry.when, 200)} "
        f"({_safe(entry.timezone, 64)})."
    )
    text = f"{title}\nNext runs:\n{fires}"
    hint = (
        f"`/retell-test schedule list` shows it; `/retell-test schedule remove {entry.id}` "
        "removes it."
    )
    return _message(text, [_section(text), _schedule_buttons(entry), _context(hint)])


def schedule_list(entries: Sequence[ScheduleEntry]) -> list[Message]:
    """`schedule list`: each schedule with its buttons, over as many messages as it takes."""
    if not entries:
        text = (
            "No schedules in this channel. Add one with "
            '`/retell-test schedule add "weekdays 09:00" llm_abc all name=nightly`.'
        )
        return [_message(text, [_section(text)])]
    messages = []
    pages = [
        entries[start : start + SCHEDULES_PER_MESSAGE]
        for start in range(0, len(entries), SCHEDULES_PER_MESSAGE)
    ]
    for number, page in enumerate(pages, start=1):
        heading = f"*{plural(len(entries), 'schedule')} in this channel*"
        if len(pages) > 1:
            heading += f" · part {number} of {len(pages)}"
        page_blocks = [_section(heading)]
        for entry in page:
            page_blocks.extend(_schedule_blocks(entry))
        names = ", ".join(f"#{e.id} {_name(e.name, 40)}" for e in page)
        messages.append(_message(f"Schedules in this channel: {names}", page_blocks))
    return messages


def schedule_notice(text: str) -> Message:
    """Ephemeral: what a schedule action did (our own words, ids and escaped names)."""
    return _message(text, [_section(text)])


def home_view(
    entries: Sequence[ScheduleEntry], runs: Sequence[RunView], *, now: datetime
) -> dict[str, Any]:
    """The App Home tab: your schedules with their buttons, then the latest runs you can see."""
    view_blocks: list[Block] = [_header("Retell batch tests")]
    if entries:
        view_blocks.append(_section(f"*Your schedules* ({len(entries)})"))
        for entry in entries[:HOME_SCHEDULES]:
            line = f"{channel_link(entry.channel_id)} · {_schedule_line(entry)}"
            view_blocks.extend([_section(line), _schedule_buttons(entry)])
        if len(entries) > HOME_SCHEDULES:
            rest = len(entries) - HOME_SCHEDULES
            view_blocks.append(
                _context(f"…and {plural(rest, 'more schedule')}: `/retell-test schedule list`.")
            )
    else:
        view_blocks.append(
            _section(
                "You have no schedules. In a channel, try "
                '`/retell-test schedule add "weekdays 09:00" llm_abc all name=nightly`.'
            )
        )
    view_blocks.append({"type": "divider"})
    if runs:
        view_blocks.append(_section("*Latest runs in your channels*"))
        for run in runs[:HOME_RUNS]:
            view_blocks.append(_section(_home_run_line(run)))
    else:
        view_blocks.append(_section("No runs yet in your channels. `/retell-test help` shows how."))
    view_blocks.append(_context(f"Refreshed {slack_date(now, '{date_short_pretty} at {time}')}"))
    return {"type": "home", "blocks": view_blocks[:MAX_HOME_BLOCKS]}


def _home_run_line(run: RunView) -> str:
    label = f"*{_name(run.label, 60)}* · " if run.label else ""
    batch = f" · {_code(run.batch_id)}" if run.batch_id else ""
    return (
        f"{channel_link(run.channel_id)} · {label}{_engine(run.engine)} · "
        f"{_last_result(run)}{batch} · run #{run.id}"
    )


# -- digest --------------------------------------------------------------------------------------


def digest_message(
    digest: Digest, *, label: str | None = None, due: datetime | None = None
) -> Message:
    """`report [days]`: runs, pass rate and its trend, the most failing cases, the slowest runs.

    `due` is when a scheduled digest was due; one that runs late (the bot was down) says so.
    """
    period = plural(digest.days, "day")
    late = ""
    if due is not None and digest.until - due > LATE_AFTER:
        when = slack_date(due, "{date_short_pretty} at {time}")
        late = f"⏰ This digest ran late: it was due {when}, when the bot was down."
    title = f"📊 {label}: " if label else "📊 "
    title += f"Retell batch tests in this channel, last {period}"
    if digest.runs == 0:
        text = f"{title}: no finished runs."
        previous = (
            f" The {period} before had {plural(digest.previous_runs, 'run')}."
            if digest.previous_runs
            else ""
        )
        return _message(
            text, [_header(title), _section(f"No runs finished in this period.{previous}")]
        )
    rate = format_pass_rate(digest.passed, digest.total)
    trend = _trend(digest)
    summary = (
        f"*{plural(digest.runs, 'run')}* · *{rate}* pass rate "
        f"({digest.passed} of {plural(digest.total, 'test case')} passed){trend}"
    )
    if digest.timed_out:
        summary += f"\n⏱️ {plural(digest.timed_out, 'run')} timed out."
    report_blocks = [_header(title), _section(summary)]
    if digest.failing:
        lines = [
            f"• {_name(case.name, 80)}: failed {case.failed} of {case.ran}"
            for case in digest.failing
        ]
        report_blocks.append(_section("*Failed most often*\n" + "\n".join(lines)))
    if digest.slowest:
        lines = [
            f"• run #{run.id} · {_engine(run.engine)} · {format_duration(run.duration)}"
            + (f" · {_name(run.label, 60)}" if run.label else "")
            for run in digest.slowest
        ]
        report_blocks.append(_section("*Slowest runs*\n" + "\n".join(lines)))
    days = " · ".join(
        f"{day:%a %d}: {'—' if value is None else f'{value:.0f}%'}"
        for day, value in digest.daily[-14:]
    )
    report_blocks.append(_context(f"Daily pass rate: {days}"))
    if late:
        report_blocks.append(_context(late))
    text = f"{title}: {plural(digest.runs, 'run')}, {rate} pass rate{_trend(digest, plain=True)}"
    return _message(text, report_blocks)


def _trend(digest: Digest, *, plain: bool = False) -> str:
    change = digest.trend
    if change is None or digest.previous_pass_rate is None:
        return "" if plain else " · nothing to compare with in the period before"
    emoji = "" if plain else ("📈 " if change > 0 else "📉 " if change < 0 else "➡️ ")
    return f" · {emoji}{change:+.1f} pts vs the period before ({digest.previous_pass_rate:.1f}%)"
