"""Where a CLI result goes besides the terminal: a JUnit file, and the message the channel would
get (`--post-to`), rendered by `bot.blocks` like the bot's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.repeats import CaseSummary, totals
from bot.suite import Engine

if TYPE_CHECKING:
    from bot.blocks import Message
    from bot.slackapi import SlackGateway
from bot.ci.outcome import ExitCode, Followed, Report, Request, ci_link
from bot.ci.session import Session

BAD_SLACK_TOKEN = frozenset({"invalid_auth", "not_authed", "account_inactive", "token_revoked"})


CLI_USER = "retell-bot CLI"


@dataclass(frozen=True, slots=True)
class CiRun:
    """A followed batch shaped as `bot.blocks.RunView`, so Slack gets the bot's own message.

    It is not a run of the bot's database: `id` is 0 and nothing in Slack can act on it, which
    is why `slack_result` leaves the buttons out.
    """

    channel_id: str
    engine: Engine
    batch_id: str
    state: str
    passed: int
    failed: int
    errored: int
    total: int
    created_at: datetime
    finished_at: datetime
    case_ids: Sequence[str] = ()
    id: int = 0
    user_id: str = CLI_USER
    error: str | None = None
    source: str = "watch"  # created outside Slack and followed: the closest existing origin
    rerun_of: int | None = None
    label: str | None = None
    scheduled_for: datetime | None = None
    min_pass: float | None = None

    @property
    def case_count(self) -> int:
        return len(self.case_ids) or self.total

    @property
    def completed(self) -> int:
        return self.passed + self.failed + self.errored

    @property
    def started_at(self) -> datetime:
        return self.created_at

    @property
    def duration(self) -> timedelta:
        return self.finished_at - self.created_at

    @classmethod
    def of(
        cls,
        followed: Followed,
        channel: str,
        *,
        engine: Engine | None = None,
        min_pass: float | None = None,
    ) -> CiRun:
        """The batch as a run; `engine` when the CLI knows its version better than the batch."""
        batch = followed.batch
        created = datetime.fromtimestamp(batch.created_ms / 1000, UTC)
        return cls(
            channel_id=channel,
            engine=engine or batch.engine,
            min_pass=min_pass,
            batch_id=batch.batch_id,
            state="timed_out" if followed.timed_out else "complete",
            passed=batch.passed,
            failed=batch.failed,
            errored=batch.errored,
            total=batch.total,
            created_at=created,
            finished_at=created + timedelta(seconds=followed.seconds),
            case_ids=tuple(dict.fromkeys(run.case_id for run in followed.runs)),
        )


def slack_result(run: CiRun, *, command: str, link: str | None) -> Message:
    """`bot.blocks.result_message` for a batch followed from CI, without buttons.

    Rerun and Show failures act on a run in the bot's database, which a CI batch is not, so
    they are left out; the footer says where the batch came from instead of a run number.
    """
    from bot.blocks import result_message

    message = result_message(run, has_failures_detail=False)
    return _from_ci(message, run, command=command, link=link)


def slack_comparison(report: Report, channel: str, *, link: str | None) -> Message:
    """`bot.blocks.compare_result` for a comparison run from CI, without buttons (as above)."""
    from bot.blocks import VersionsGroup, compare_result

    assert report.compared is not None
    runs = [
        CiRun.of(followed, channel, engine=engine, min_pass=report.min_pass)
        for engine, side in (
            (report.engine, report.a_followed),
            (report.compared.candidate, report.b_followed),
        )
        for followed in side
    ]
    group = VersionsGroup(runs, report.compared.candidate, report.compared.comparison)
    return _from_ci(compare_result(group), runs[0], command=report.command, link=link)


def _from_ci(message: Message, run: CiRun, *, command: str, link: str | None) -> Message:
    """The bot's message without its buttons, its footer saying where the result came from."""
    from bot.blocks import Message, escape, slack_date

    blocks = [block for block in message.blocks if block.get("type") != "actions"]
    if blocks and blocks[-1].get("type") == "context":
        origin = f"Reported by `retell-bot {command}`"
        if link:
            origin += f" from <{escape(link)}|this CI run>"
        when = slack_date(run.created_at, "Started {date_short_pretty} at {time}")
        blocks[-1] = {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": f"{origin} · {when}"}],
        }
    return Message(text=message.text, blocks=blocks)


def repeat_message(report: Report, *, link: str | None) -> Message:
    """The top-level message for `--repeat`: per-case verdicts over every run, flaky named.

    Each batch's own result follows in the thread. The fallback text carries the four count
    phrases (summed over the runs) and every batch id, like any result the bot posts.
    """
    from bot.blocks import (
        Message,
        counts_phrases,
        escape,
        format_pass_rate,
        gate_line,
        gate_phrase,
        repeat_verdicts,
        shorten,
    )

    counted = totals(report.summaries)
    runs = len(report.followed)
    passed = sum(f.batch.passed for f in report.followed)
    failed = sum(f.batch.failed for f in report.followed)
    errored = sum(f.batch.errored for f in report.followed)
    total = sum(f.batch.total for f in report.followed)
    engine = escape(report.engine.label)
    batches = ", ".join(escape(b) for b in report.batch_ids)
    text = (
        f"Retell suite on {engine} run {runs} times (batches {batches}): "
        f"{counts_phrases(passed, failed, errored, total)} "
        f"({format_pass_rate(passed, total)}); {counted.flaky} flaky"
    )
    if report.min_pass is not None:
        text += f"; {gate_phrase(report.min_pass, passed, total)}"
    verdict = "✅" if counted.all_passed else "❌" if counted.failed or counted.flaky else "⚠️"
    lines = [
        f"*{verdict} {runs} runs of {counted.cases} test cases* on `{engine}`",
        *repeat_verdicts(report.summaries, passed, total),
    ]
    if report.min_pass is not None:
        lines.append(gate_line(report.min_pass, passed, total))
    origin = "Reported by `retell-bot run --repeat`"
    if link:
        origin += f" from <{escape(link)}|this CI run>"
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": shorten("\n".join(lines), 3000)}},
        {
            "type": "context",
            "elements": [
                {"type": "mrkdwn", "text": shorten(f"{origin} · batches {batches}", 3000)}
            ],
        },
    ]
    return Message(text=shorten(text, 3000), blocks=blocks)


async def _slack(session: Session) -> SlackGateway:
    """A Slack gateway whose token is known to work, checked before any batch is created."""
    from bot.pacing import MemoryBook
    from bot.slackapi import SlackFailure, SlackGateway, web_client
    from bot.store import utcnow

    token = session.settings.slack_bot_token
    assert token is not None  # check_request made sure
    client = web_client(token.get_secret_value(), session.settings.slack_api_url)
    slack = SlackGateway(client, book=MemoryBook(utcnow))  # one process: its own budget
    try:
        await slack.check_auth()
    except SlackFailure as exc:
        if exc.code in BAD_SLACK_TOKEN:
            raise session.fail(
                ExitCode.USAGE, f"Slack refused SLACK_BOT_TOKEN ({exc.code})"
            ) from None
        if exc.answered:
            session.terminal.warn(f"could not check the Slack token ({exc.code}); going on")
        else:
            session.terminal.warn(f"could not reach Slack to check the token ({exc.code})")
    return slack


async def _deliver(session: Session, request: Request, report: Report) -> bool:
    """Write the JUnit file and post to Slack, as asked; False if either could not be done."""
    delivered = True
    if request.junit is not None:
        delivered &= _write_junit(session, request.junit, report)
    if request.post_to is not None and session.slack is not None:
        delivered &= await _post(session, session.slack, request.post_to, report)
    return delivered


def _write_junit(session: Session, path: Path, report: Report) -> bool:
    from bot import junit

    started = min((f.batch.created_ms for f in report.followed), default=0) / 1000
    timestamp = datetime.fromtimestamp(started, UTC)
    properties = {
        "engine": report.engine.label,
        "batch_ids": " ".join(report.batch_ids),
        "runs": str(len(report.a_followed)),
    }
    if report.timed_out:
        properties["timed_out"] = "true"
    if report.compared is not None:
        tree = junit.comparison_tree(
            report.compared.comparison,
            suite_name=(
                f"Retell comparison of {report.engine.label} with {report.compared.candidate.label}"
            ),
            classname=report.engine.id,
            seconds=report.seconds,
            timestamp=timestamp,
            properties=properties | _comparison_properties(report),
        )
    else:
        if report.min_pass is not None:
            properties |= _gate_properties(report.min_pass, report.summaries)
        tree = junit.junit_tree(
            report.summaries,
            suite_name=f"Retell batch test on {report.engine.label}",
            classname=report.engine.label,
            seconds=report.seconds,
            timestamp=timestamp,
            properties=properties,
        )
    try:
        junit.write(tree, path)
    except OSError as exc:
        session.terminal.error(f"could not write the JUnit file {path}: {exc.strerror or exc}")
        return False
    session.terminal.say(f"JUnit XML written to {path}")
    return True


def _comparison_properties(report: Report) -> dict[str, str]:
    """Both versions, both pass rates and the gate, as `<testsuite>` properties."""
    from bot.blocks import format_pass_rate

    assert report.compared is not None
    comparison = report.compared.comparison
    properties = {
        "version_a": report.engine.label,
        "version_b": report.compared.candidate.label,
        "pass_rate_a": format_pass_rate(comparison.a_passed, comparison.a_total),
        "pass_rate_b": format_pass_rate(comparison.b_passed, comparison.b_total),
        "regressions": str(comparison.regressions),
        "fixed": str(comparison.count("fixed")),
    }
    if report.min_pass is not None:
        properties |= _gate_properties(report.min_pass, report.compared.b_summaries)
    return properties


def _gate_properties(min_pass: float, summaries: Sequence[CaseSummary]) -> dict[str, str]:
    from bot.comparing import Gate

    gate = Gate(min_pass)
    runs = sum(s.runs for s in summaries)
    rate = 100.0 * sum(s.passes for s in summaries) / runs if runs else None
    return {"gate": gate.label, "gate_held": "true" if gate.held(rate) else "false"}


async def _post(session: Session, slack: SlackGateway, channel: str, report: Report) -> bool:
    from bot.slackapi import SlackFailure

    link = ci_link(session.environ)
    try:
        if report.compared is not None:
            await slack.post(channel, slack_comparison(report, channel, link=link))
        elif len(report.followed) == 1:
            run = CiRun.of(report.followed[0], channel, min_pass=report.min_pass)
            await slack.post(channel, slack_result(run, command=report.command, link=link))
        else:
            ts = await slack.post(channel, repeat_message(report, link=link))
            for followed in report.followed:
                run = CiRun.of(followed, channel, min_pass=report.min_pass)
                reply = slack_result(run, command=report.command, link=link)
                await slack.post(channel, reply, thread_ts=ts)
    except SlackFailure as exc:
        session.terminal.error(f"could not post the result to Slack {channel}: {exc.code}")
        return False
    session.terminal.say(f"Result posted to Slack channel {channel}")
    return True
