"""**Show failures**: the failing cases of a run in its thread, with the CSV attachment."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass

from bot.blocks.kit import (
    _PLAIN_ID,
    MAX_HEADER_TEXT,
    MESSAGE_TEXT_BUDGET,
    NAME_CHARS,
    Block,
    Message,
    _code,
    _context,
    _engine,
    _header,
    _message,
    _name,
    _pack,
    _safe,
    _section,
    trim_explanation,
)
from bot.repeats import CaseSummary, Totals, totals
from bot.runview import RunView
from bot.text import escape, one_line

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
