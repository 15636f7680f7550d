"""What the workflow tells a requester privately when a run cannot go on as asked."""

from __future__ import annotations

from bot import blocks
from bot.blocks import Message, database_down

__all__ = ["database_down", "start_broke", "start_queued", "start_resumes"]


def start_queued() -> Message:
    return blocks.problem(
        "The bot's database is not reachable right now. This batch test is queued: it starts "
        "by itself once the database is back, and the status will appear here then."
    )


def start_resumes() -> Message:
    return blocks.problem(
        "The bot lost its database while starting this batch test. It carries on by itself "
        "once the database is back: the status and the result will appear here then."
    )


def start_broke() -> Message:
    return blocks.problem(
        "Something went wrong on the bot's side while starting this batch test, so it may not "
        "have started. Check `/retell-test status` in a minute and try again if it is not there."
    )


def failures_already_shown() -> Message:
    return blocks.problem(
        "The failures of this run are already listed in the thread under its result."
    )


def rerun_under_way() -> Message:
    return blocks.problem(
        "A rerun of this batch is already under way: its status message is in the channel."
    )


def cannot_post(channel_id: str, code: str) -> Message:
    reasons = {
        "channel_not_found": "I can't see that channel (is it private? invite me with `/invite`).",
        "is_archived": "That channel is archived.",
        "not_in_channel": "I'm not in that channel and could not join it: `/invite` me.",
    }
    text = (
        f"Your batch is running, but I could not post its status in <#{channel_id}>: "
        f"{reasons.get(code, code)} I'll send you the result directly."
    )
    return Message(
        text=text, blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    )
