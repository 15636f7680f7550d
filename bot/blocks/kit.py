"""Block Kit's building blocks and limits, Slack's text rules, and what every message reads from a
run.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bot.comparing import Gate
from bot.runview import RunView, pass_rate
from bot.suite import Engine
from bot.text import ELLIPSIS, escape, fitting, one_line, utf16_length

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


def shorten(text: str, limit: int) -> str:
    """Fit `text` into `limit` UTF-16 units (Slack's measure), cutting at a word boundary.

    The cut is marked with an ellipsis; a single word too long to fit is cut between
    characters, never inside an `&amp;`-style entity.
    """
    if utf16_length(text) <= limit:
        return text
    room = fitting(text, limit - len(ELLIPSIS))
    cut = max(text.rfind(space, 0, room + 1) for space in (" ", "\n", "\t"))
    head = text[:cut] if cut > 0 else re.sub(r"&[a-z]*$", "", text[:room])
    return head.rstrip() + ELLIPSIS


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


def bar_cells(done: int, total: int, width: int = BAR_WIDTH) -> str:
    """`▓▓▓░░░░░░░`; only full when every case is done, empty while the total is unknown."""
    filled = min(width, max(0, done) * width // total) if total > 0 else 0
    return "▓" * filled + "░" * (width - filled)


def progress_bar(done: int, total: int) -> str:
    """`▓▓▓░░░░░░░ 12/40`, the cells in a code span so they line up in every client."""
    return f"`{bar_cells(done, total)}` {done}/{total}"


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


def gate_line(min_pass: float, passed: int, total: int) -> str:
    """`🚦 Gate 95%: held (97.2% of 120 test runs passed)`, or failed, for `min_pass=`."""
    gate = Gate(min_pass)
    held = gate.held(pass_rate(passed, total))
    verdict = "held" if held else "failed"
    return (
        f"{'🟢' if held else '🔴'} Gate {gate.label}: *{verdict}* "
        f"({format_pass_rate(passed, total)} of {plural(total, 'test run')} passed)"
    )


def gate_phrase(min_pass: float, passed: int, total: int) -> str:
    """`gate 95%: held (97.2%)`: the gate in a fallback text."""
    gate = Gate(min_pass)
    verdict = "held" if gate.held(pass_rate(passed, total)) else "failed"
    return f"gate {gate.label}: {verdict} ({format_pass_rate(passed, total)})"


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
