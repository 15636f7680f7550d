"""Slack listeners: unpack the payload, ack at once, hand the work to the workflow.

Bolt acks over HTTP (or the socket) as soon as `ack()` is awaited and runs the rest of the
listener afterwards, so nothing here ever makes Slack wait on Retell.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond

from bot import blocks
from bot.commands import (
    USAGE,
    CommandError,
    HelpCommand,
    RunCommand,
    StatusCommand,
    parse,
)
from bot.runs import Requester, RunRequest, RunWorkflow

log = logging.getLogger(__name__)

COMMAND = "/retell-test"


def register(app: AsyncApp, workflow: RunWorkflow) -> None:
    """Attach every listener the bot answers to."""

    @app.command(COMMAND)
    async def on_command(ack: AsyncAck, respond: AsyncRespond, command: dict[str, Any]) -> None:
        parsed = parse(str(command.get("text", "")))
        who = Requester(
            team_id=str(command.get("team_id", "")),
            channel_id=str(command.get("channel_id", "")),
            user_id=str(command.get("user_id", "")),
            response_url=command.get("response_url"),
        )
        if isinstance(parsed, CommandError):
            await ack(**blocks.command_error(parsed.message, parsed.usage).as_kwargs())
        elif isinstance(parsed, HelpCommand):
            await ack(**blocks.help_message(USAGE).as_kwargs())
        elif isinstance(parsed, RunCommand) and (refusal := workflow.not_allowed(who)):
            await ack(**refusal.as_kwargs())
        elif isinstance(parsed, RunCommand):
            case_count = (
                None if parsed.tests.names or parsed.tests.everything else len(parsed.tests.ids)
            )
            await ack(text=blocks.ack_text(parsed.engine, case_count))
            await workflow.start(RunRequest(who, parsed.engine, parsed.tests))
        elif isinstance(parsed, StatusCommand):
            await ack()
            message = await workflow.status(who, parsed.batch_id)
            await respond(response_type="ephemeral", **message.as_kwargs())
        else:
            await ack(
                **blocks.command_error(
                    "That part of `/retell-test` is not available in this version yet.", USAGE
                ).as_kwargs()
            )

    @app.action("rerun")
    async def on_rerun(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        run_id, who = _button(body)
        if run_id is not None:
            await workflow.rerun(run_id, who, only_failed=False)

    @app.action("rerun_failed")
    async def on_rerun_failed(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        run_id, who = _button(body)
        if run_id is not None:
            await workflow.rerun(run_id, who, only_failed=True)

    @app.action("show_failures")
    async def on_show_failures(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        run_id, who = _button(body)
        if run_id is not None:
            await workflow.show_failures(run_id, who)


def _button(body: dict[str, Any]) -> tuple[int | None, Requester]:
    """The run id a button points at, and who pressed it where; tolerant of odd payloads."""

    def text(value: Any) -> str:
        return value if isinstance(value, str) else ""

    def part(key: str) -> dict[str, Any]:
        value = body.get(key)
        return value if isinstance(value, dict) else {}

    user, team, channel = part("user"), part("team"), part("channel")
    who = Requester(
        team_id=text(team.get("id")) or text(user.get("team_id")),
        channel_id=text(channel.get("id")),
        user_id=text(user.get("id")),
        response_url=text(body.get("response_url")) or None,
    )
    actions = body.get("actions")
    value = (
        actions[0].get("value")
        if isinstance(actions, list) and actions and isinstance(actions[0], dict)
        else None
    )
    try:
        return int(text(value)), who
    except ValueError:
        log.info("button press with an unusable value ignored")
        return None, who
