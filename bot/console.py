"""Terminal output of `retell-bot run` / `watch`: pure functions that return text, and a printer.

The same numbers the Slack messages show (bars, pass rates, durations come from `bot.blocks`),
laid out for a terminal: a live progress line when stdout is a terminal, plain lines a CI log
can keep otherwise, and a result table with one row per test case. Everything that comes from
Retell (names, explanations) is stripped of control characters first, so a test case name can
never move the cursor, recolour or clear a developer's terminal.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, TextIO

from bot.repeats import CaseSummary, Totals, Verdict
from bot.text import one_line

if TYPE_CHECKING:
    from bot.comparing import CaseChange, Change, VersionComparison
    from bot.retell import BatchJob
    from bot.suite import Engine

BAR_WIDTH = 24
TABLE_WIDTH = 120  # when the terminal's width is unknown (CI logs)
NAME_WIDTH = 40
MIN_DETAIL_WIDTH = 30
HEARTBEAT_SECONDS = 60.0  # a plain progress line at least this often, even without change

_MRKDWN_ENTITY = re.compile(r"&(amp|lt|gt);")
_ENTITIES = {"amp": "&", "lt": "<", "gt": ">"}

_COLOURS: dict[Verdict, str] = {
    "pass": "\x1b[32m",  # green
    "fail": "\x1b[31m",  # red
    "flaky": "\x1b[33m",  # yellow
    "error": "\x1b[35m",  # magenta
    "unfinished": "\x1b[2m",  # dim
}
_RESET = "\x1b[0m"
_LABELS: dict[Verdict, str] = {
    "pass": "PASS",
    "fail": "FAIL",
    "flaky": "FLAKY",
    "error": "ERROR",
    "unfinished": "UNFINISHED",
}


# -- text ----------------------------------------------------------------------------------------


def clip(text: str, width: int) -> str:
    """Fit text into `width` characters, marking a cut with `…`."""
    if width <= 0:
        return ""
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def from_mrkdwn(text: str) -> str:
    """A parser message (written as Slack mrkdwn) as terminal text: entities undone."""
    return _MRKDWN_ENTITY.sub(lambda m: _ENTITIES[m.group(1)], text)


# `bot.blocks` is imported where it is used: it loads the Retell SDK and SQLAlchemy, which a
# usage error should not wait a second or two for.


def elapsed(seconds: float) -> str:
    """`42s`, `4m 12s`, `1h 03m`: the format the Slack messages use."""
    from bot.blocks import format_duration

    return format_duration(timedelta(seconds=max(seconds, 0.0)))


def bar(done: int, total: int, width: int = BAR_WIDTH, *, unicode: bool = True) -> str:
    """`[▓▓▓░░░]`, or `[###---]` where the terminal may not render block characters."""
    from bot.blocks import bar_cells

    cells = bar_cells(done, total, width)
    if not unicode:
        cells = cells.replace("▓", "#").replace("░", "-")
    return f"[{cells}]"


# -- progress ------------------------------------------------------------------------------------


def progress_line(
    batches: Sequence[BatchJob], seconds: float, *, unicode: bool = True, width: int = BAR_WIDTH
) -> str:
    """One line of progress over every batch followed (several with `--repeat`)."""
    passed = sum(b.passed for b in batches)
    failed = sum(b.failed for b in batches)
    errored = sum(b.errored for b in batches)
    total = sum(b.total for b in batches)
    done = passed + failed + errored
    parts = [
        f"{bar(done, total, width, unicode=unicode)} {done}/{total}",
        f"{passed} passed, {failed} failed, {errored} errored",
    ]
    if len(batches) > 1:
        complete = sum(1 for b in batches if b.is_complete)
        parts.append(f"{complete}/{len(batches)} batches complete")
    parts.append(elapsed(seconds))
    return " · ".join(parts)


class ProgressPrinter:
    """Shows progress: one line redrawn in place on a terminal, plain lines for a CI log.

    Plain mode prints when the counts change, and at least every `heartbeat` seconds so a CI
    job that watches its log for silence does not kill a long batch.
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        live: bool,
        unicode: bool = True,
        heartbeat: float = HEARTBEAT_SECONDS,
    ) -> None:
        self._stream = stream
        self._live = live
        self._unicode = unicode
        self._heartbeat = heartbeat
        self._last: tuple[tuple[int, ...], ...] | None = None
        self._last_printed = 0.0
        self._drawn = False

    def update(self, batches: Sequence[BatchJob], seconds: float) -> None:
        line = progress_line(batches, seconds, unicode=self._unicode)
        if self._live:
            self._stream.write(f"\r{line}\x1b[K")
            self._stream.flush()
            self._drawn = True
            return
        state = tuple((*b.counts, int(b.is_complete)) for b in batches)
        if state != self._last or seconds - self._last_printed >= self._heartbeat:
            self._stream.write(line + "\n")
            self._stream.flush()
            self._last, self._last_printed = state, seconds

    def clear(self) -> None:
        """Wipe the live line (before a warning), to be redrawn by the next update."""
        if self._live and self._drawn:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._drawn = False

    def close(self) -> None:
        """End the live line so whatever is printed next starts on a fresh one."""
        if self._live and self._drawn:
            self._stream.write("\n")
            self._stream.flush()
            self._drawn = False


# -- results -------------------------------------------------------------------------------------


def status_label(summary: CaseSummary) -> str:
    """`FAIL`, or with several runs how many passed: `FLAKY 2/3`."""
    label = _LABELS[summary.verdict]
    return label if summary.runs <= 1 else f"{label} {summary.passes}/{summary.runs}"


def result_table(
    summaries: Sequence[CaseSummary], *, width: int = TABLE_WIDTH, colour: bool = False
) -> str:
    """One row per test case: status, name, and Retell's explanation cut to the width."""
    from bot.blocks import trim_explanation

    if not summaries:
        return "No test cases."
    labels = [status_label(s) for s in summaries]
    status_width = max(len("STATUS"), *(len(label) for label in labels))
    names = [clip(one_line(s.name), NAME_WIDTH) for s in summaries]
    name_width = max(len("TEST CASE"), *(len(name) for name in names))
    detail_width = max(width - status_width - name_width - 4, MIN_DETAIL_WIDTH)
    rows = [f"{'STATUS':<{status_width}}  {'TEST CASE':<{name_width}}  WHY"]
    for summary, label, name in zip(summaries, labels, names, strict=True):
        shown = f"{label:<{status_width}}"
        if colour:
            shown = f"{_COLOURS[summary.verdict]}{shown}{_RESET}"
        detail = ""
        if summary.verdict != "pass" and summary.explanation:
            detail = trim_explanation(one_line(summary.explanation), detail_width)
        elif summary.verdict == "unfinished":
            detail = "did not finish before the timeout"
        rows.append(f"{shown}  {name:<{name_width}}  {detail}".rstrip())
    return "\n".join(rows)


_CHANGE_LABELS: dict[Change, str] = {
    "regressed": "REGRESSED",
    "fixed": "FIXED",
    "still_failing": "STILL FAILING",
    "flaky": "FLAKY",
    "unfinished": "UNFINISHED",
    "unchanged": "UNCHANGED",
}
_CHANGE_COLOURS: dict[Change, str] = {
    "regressed": _COLOURS["fail"],
    "fixed": _COLOURS["pass"],
    "still_failing": _COLOURS["error"],
    "flaky": _COLOURS["flaky"],
    "unfinished": _COLOURS["unfinished"],
    "unchanged": "",
}


def comparison_table(
    comparison: VersionComparison, *, width: int = TABLE_WIDTH, colour: bool = False
) -> str:
    """A row per case that changed or still fails, regressions first with B's reason; the
    unchanged cases only counted, as the channel's comparison shows them."""
    listed = [case for case in comparison.cases if case.change != "unchanged"]
    unchanged = comparison.count("unchanged")
    tail = f"{unchanged} unchanged" if unchanged else ""
    if not listed:
        return tail or "No test cases."
    labels = [_CHANGE_LABELS[case.change] for case in listed]
    label_width = max(len("CHANGE"), *(len(label) for label in labels))
    names = [clip(one_line(case.name), NAME_WIDTH) for case in listed]
    name_width = max(len("TEST CASE"), *(len(name) for name in names))
    detail_width = max(width - label_width - name_width - 4, MIN_DETAIL_WIDTH)
    rows = [f"{'CHANGE':<{label_width}}  {'TEST CASE':<{name_width}}  WHY (ON B)"]
    for case, label, name in zip(listed, labels, names, strict=True):
        shown = f"{label:<{label_width}}"
        if colour and _CHANGE_COLOURS[case.change]:
            shown = f"{_CHANGE_COLOURS[case.change]}{shown}{_RESET}"
        rows.append(f"{shown}  {name:<{name_width}}  {_change_detail(case, detail_width)}".rstrip())
    return "\n".join([*rows, tail] if tail else rows)


def _change_detail(case: CaseChange, width: int) -> str:
    from bot.blocks import trim_explanation

    if case.change == "flaky":
        a, b = (f"{s.passes}/{s.runs}" if s else "-" for s in (case.a, case.b))
        return f"passed {a} on A, {b} on B"
    if case.change == "unfinished":
        return "no verdict on one of the versions (timed out)"
    if case.change == "fixed":
        return ""
    why = case.b.explanation if case.b is not None else None
    return trim_explanation(one_line(why), width) if why else ""


def rates_line(comparison: VersionComparison, a: Engine, b: Engine) -> str:
    """Both versions' pass rates over every test run, side by side."""
    from bot.blocks import format_pass_rate

    return (
        f"{a.label}: {format_pass_rate(comparison.a_passed, comparison.a_total)} "
        f"of {comparison.a_total} test runs passed · "
        f"{b.label}: {format_pass_rate(comparison.b_passed, comparison.b_total)} "
        f"of {comparison.b_total}"
    )


def comparison_verdict(comparison: VersionComparison, b: Engine) -> str:
    """`v4: 2 regressions` / `v4: no regressions, 1 fixed`: what the comparison says of B."""
    regressions, fixed = comparison.regressions, comparison.count("fixed")
    head = f"v{b.version}: " + (
        f"{regressions} regression{'' if regressions == 1 else 's'}"
        if regressions
        else "no regressions"
    )
    if fixed:
        head += f", {fixed} fixed"
    if comparison.count("unfinished"):
        head += f", {comparison.count('unfinished')} unfinished"
    return head


def totals_line(counted: Totals, summaries: Sequence[CaseSummary]) -> str:
    """Counts per verdict and the pass rate over every run of every case."""
    from bot.blocks import format_pass_rate

    runs = max((s.runs for s in summaries), default=1)
    parts = [f"{counted.passed} passed"]
    if runs > 1:
        parts = [f"{counted.passed} passed every run", f"{counted.flaky} flaky"]
    parts += [f"{counted.failed} failed", f"{counted.errored} errored"]
    if counted.unfinished:
        parts.append(f"{counted.unfinished} unfinished")
    passes = sum(s.passes for s in summaries)
    attempts = sum(s.runs for s in summaries)
    over = f" over {runs} runs" if runs > 1 else ""
    rate = format_pass_rate(passes, attempts)
    return f"{counted.cases} test cases{over}: {', '.join(parts)} · {rate} pass rate"


def batch_line(batch: BatchJob, *, timed_out: bool, seconds: float) -> str:
    """Where a batch ended: complete or timed out, its Retell counts and how long it took."""
    state = (
        f"timed out after {elapsed(seconds)} with {batch.completed}/{batch.total} done"
        if timed_out
        else f"complete in {elapsed(seconds)}"
    )
    counts = (
        f"{batch.passed} passed, {batch.failed} failed, {batch.errored} errored, "
        f"{batch.total} total"
    )
    return f"Batch {one_line(batch.batch_id)} on {one_line(batch.engine.label)}: {state} · {counts}"


# -- the terminal --------------------------------------------------------------------------------


class Terminal:
    """Where the CLI writes: results to `out`, problems to `err`, progress as `out` allows.

    `live` (stdout is a terminal) redraws one progress line in place; otherwise progress is
    plain lines, as CI logs need. Colour follows the terminal and the NO_COLOR convention.
    """

    def __init__(
        self,
        out: TextIO,
        err: TextIO,
        *,
        live: bool = False,
        colour: bool = False,
        unicode: bool = True,
        width: int = TABLE_WIDTH,
        heartbeat: float = HEARTBEAT_SECONDS,
    ) -> None:
        self.out = out
        self.err = err
        self.live = live
        self.colour = colour
        self.unicode = unicode
        self.width = width
        self.heartbeat = heartbeat
        self._printer: ProgressPrinter | None = None

    @classmethod
    def detect(cls, environ: Mapping[str, str] | None = None) -> Terminal:
        """The process's stdout/stderr, with what they support."""
        env = os.environ if environ is None else environ
        live = sys.stdout.isatty()
        encoding = (getattr(sys.stdout, "encoding", None) or "").lower().replace("-", "")
        width = shutil.get_terminal_size((TABLE_WIDTH, 24)).columns if live else TABLE_WIDTH
        return cls(
            sys.stdout,
            sys.stderr,
            live=live,
            colour=live and "NO_COLOR" not in env and env.get("TERM") != "dumb",
            unicode=encoding.startswith("utf"),
            width=max(width, 60),
        )

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def warn(self, text: str) -> None:
        if self._printer is not None:
            self._printer.clear()
        self.err.write(f"retell-bot: warning: {text}\n")
        self.err.flush()

    def error(self, text: str) -> None:
        if self._printer is not None:
            self._printer.clear()
        self.err.write(f"retell-bot: {text}\n")
        self.err.flush()

    def progress(self) -> ProgressPrinter:
        """A progress printer on `out`; warnings and errors clear its live line first."""
        self._printer = ProgressPrinter(
            self.out, live=self.live, unicode=self.unicode, heartbeat=self.heartbeat
        )
        return self._printer
