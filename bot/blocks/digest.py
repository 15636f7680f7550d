"""The digest report (`report`, scheduled digests): pass rates over time and the failing cases."""

from __future__ import annotations

from datetime import datetime

from bot.blocks.kit import (
    LATE_AFTER,
    Message,
    _context,
    _engine,
    _header,
    _message,
    _name,
    _section,
    format_duration,
    format_pass_rate,
    plural,
    slack_date,
)
from bot.history import Digest


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
    if digest.comparisons:
        report_blocks.append(_section(_comparisons(digest)))
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


def _comparisons(digest: Digest) -> str:
    """Newest first, so the night a draft started regressing stands out under the green ones."""
    lines = ["*Version comparisons*"]
    for check in digest.comparisons:
        verdict = (
            f"🔴 {plural(check.regressions, 'regression')}"
            if check.regressions
            else "🟢 no regressions"
        )
        when = slack_date(check.finished_at, "{date_short_pretty}")
        label = f" · {_name(check.label, 60)}" if check.label else ""
        lines.append(
            f"• {when}: {_engine(check.baseline)} → {_engine(check.candidate)}: {verdict}{label}"
        )
    return "\n".join(lines)


def _trend(digest: Digest, *, plain: bool = False) -> str:
    change = digest.trend
    if change is None or digest.previous_pass_rate is None:
        return "" if plain else " · nothing to compare with in the period before"
    emoji = "" if plain else ("📈 " if change > 0 else "📉 " if change < 0 else "➡️ ")
    return f" · {emoji}{change:+.1f} pts vs the period before ({digest.previous_pass_rate:.1f}%)"
