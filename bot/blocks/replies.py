"""Private replies: the ack, help, refusals, problems, the in-flight list, a batch's status."""

from __future__ import annotations

from collections.abc import Sequence

from bot.batches import BatchJob
from bot.blocks.kit import (
    EXPLANATION_CHARS,
    LISTED_RUNS,
    MESSAGE_TEXT_BUDGET,
    NAME_CHARS,
    REASON_CHARS,
    Message,
    _batch,
    _case_total,
    _code,
    _code_block_sections,
    _context,
    _engine,
    _message,
    _progress,
    _safe,
    _section,
    channel_link,
    counts_line,
    counts_phrases,
    format_pass_rate,
    mention,
    plural,
    progress_bar,
    shorten,
    slack_date,
)
from bot.blocks.runs import _quote
from bot.commands import CommandError, RunCommand
from bot.refusal import Refusal
from bot.runview import RunView
from bot.suite import Engine, Suite


def ack_text(
    engine: Engine, case_count: int | None, *, repeats: int = 1, candidate: Engine | None = None
) -> str:
    """The instant ephemeral ack: Slack needs an answer within 3 s, before Retell is asked."""
    if candidate is not None:
        b = _engine(candidate) if candidate.version is not None else "its latest version"
        times = f", {repeats} times each" if repeats > 1 else ""
        on = f"Comparing {_engine(engine)} with {b}{times}"
        each = " on each version"
    else:
        what = f"{repeats} Retell batch tests" if repeats > 1 else "a Retell batch test"
        on = f"Starting {what} on {_engine(engine)}"
        each = " each" if repeats > 1 else ""
    if case_count is None:
        return f"{on}, resolving test cases…"
    return f"{on} with {plural(case_count, 'test case')}{each}…"


def run_ack_text(command: RunCommand) -> str:
    """`ack_text` for a `run` or `compare` command as parsed (case count when ids were given)."""
    tests = command.tests
    case_count = None if tests.names or tests.everything else len(tests.ids)
    return ack_text(
        command.engine, case_count, repeats=command.repeats, candidate=command.candidate
    )


def database_down() -> Message:
    """Ephemeral: a command the database could not take; nothing was started."""
    return problem(
        "The bot's database is not reachable right now, so this batch test was not started. "
        "Try again in a few minutes."
    )


def same_version(engine: Engine, *, explicit: bool) -> Message:
    """Ephemeral: a comparison whose two sides are one version; nothing was started."""
    if explicit:
        why = f"{_engine(engine)} would be compared with itself."
    else:
        why = (
            f"{_engine(engine)} is already the latest version of {_code(engine.id)}, so there is "
            "no newer one to compare it with."
        )
    hint = (
        f"Name both versions, e.g. `/retell-test compare {_safe(engine.id, 120)}@"
        f"{max(0, (engine.version or 1) - 1)} {_safe(engine.label, 120)} all`."
    )
    text = f"⚠️ Nothing was started: {why} {hint}"
    return _message(text, [_section(text)])


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


def refused(refusal: Refusal) -> Message:
    """Ephemeral: a polite refusal that names who to ask (the admins, and the owner, mentioned).

    The reason is plain text and escaped here; mentions are added after it, so they stay
    mentions rather than showing as `&lt;@U…&gt;`.
    """
    admins = ", ".join(mention(admin) for admin in sorted(refusal.admins))
    ask = f"Ask {admins} if you need it." if admins else "Ask the bot's admin if you need it."
    owned = f" It was created by {mention(refusal.owner)}." if refusal.owner else ""
    text = f"🔒 {_safe(refusal.reason, REASON_CHARS)}{owned} {ask}"
    return _message(text, [_section(text)])


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
