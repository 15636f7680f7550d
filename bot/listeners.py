"""Slack listeners: unpack the payload, ack at once, hand the work to the workflow.

Bolt acks over HTTP (or the socket) as soon as `ack()` is awaited and runs the rest of the
listener afterwards, so nothing here ever makes Slack wait on Retell.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_bolt.middleware.async_middleware import AsyncMiddleware
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse

from bot import blocks
from bot.commands import (
    USAGE,
    CommandError,
    HelpCommand,
    RunCommand,
    StatusCommand,
    WatchCommand,
    parse,
)
from bot.runs import Requester, RunRequest, RunWorkflow

log = logging.getLogger(__name__)

COMMAND = "/retell-test"
MAX_RUN_ID = 2**31 - 1  # runs.id is a 32-bit integer on PostgreSQL


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
            await ack(**blocks.command_error(parsed).as_kwargs())
        elif isinstance(parsed, HelpCommand):
            await ack(**blocks.help_message(USAGE).as_kwargs())
        elif isinstance(parsed, RunCommand) and (refusal := workflow.not_allowed(who)):
            await ack(**refusal.as_kwargs())
        elif isinstance(parsed, RunCommand):
            case_count = (
                None if parsed.tests.names or parsed.tests.everything else len(parsed.tests.ids)
            )
            await ack(text=blocks.ack_text(parsed.engine, case_count))
            key = _request_key(command)
            await workflow.start(RunRequest(who, parsed.engine, parsed.tests, request_key=key))
        elif isinstance(parsed, WatchCommand) and (refusal := workflow.not_allowed(who)):
            await ack(**refusal.as_kwargs())
        elif isinstance(parsed, WatchCommand):
            await ack(text=f"Following Retell batch `{parsed.batch_id}` here…")
            await workflow.watch(who, parsed.batch_id, request_key=_request_key(command))
        elif isinstance(parsed, StatusCommand):
            await ack()
            message = await workflow.status(who, parsed.batch_id)
            await respond(response_type="ephemeral", **message.as_kwargs())
        else:
            unavailable = CommandError("That part of `/retell-test` is not available yet.")
            await ack(**blocks.command_error(unavailable).as_kwargs())

    app.use(EmptyActionsAnswered())

    @app.action("rerun")
    async def on_rerun(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        run_id, who = _button(body)
        await workflow.rerun(run_id, who, only_failed=False, request_key=_request_key(body))

    @app.action("rerun_failed")
    async def on_rerun_failed(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        run_id, who = _button(body)
        await workflow.rerun(run_id, who, only_failed=True, request_key=_request_key(body))

    @app.action("show_failures")
    async def on_show_failures(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        run_id, who = _button(body)
        await workflow.show_failures(run_id, who)

    @app.action(re.compile(".*"))
    async def on_unknown_action(ack: AsyncAck) -> None:
        """Buttons from older versions of the bot's messages: ack them so Slack shows no error."""
        await ack()


class EmptyActionsAnswered(AsyncMiddleware):
    """Answer a block_actions payload that carries no action with a plain 200.

    Bolt reads `actions[0]` while preparing any listener or function middleware, so such a
    payload would otherwise end in a 500; a class middleware sees the raw request first.
    """

    async def async_process(
        self,
        *,
        req: AsyncBoltRequest,
        resp: BoltResponse,
        next: Callable[[], Awaitable[BoltResponse]],
    ) -> BoltResponse | None:
        body = req.body
        if body.get("type") == "block_actions" and not _first_action(body):
            return BoltResponse(status=200, body="")
        return await next()


def _first_action(body: dict[str, Any]) -> dict[str, Any] | None:
    actions = body.get("actions")
    if isinstance(actions, list) and actions and isinstance(actions[0], dict):
        return actions[0]
    return None


def _request_key(payload: dict[str, Any]) -> str | None:
    """Slack's trigger_id: one per user action, repeated when Slack retries the request."""
    value = payload.get("trigger_id")
    return value[:128] if isinstance(value, str) and value else None


def _button(body: dict[str, Any]) -> tuple[int, Requester]:
    """The run id a button points at, and who pressed it where; tolerant of odd payloads.

    A value that is no run id at all comes back as 0, which no run has: the presser then gets
    the same private "not one of this channel's" as for someone else's run.
    """

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
    action = _first_action(body) or {}
    value = text(action.get("value")).strip()
    if value.isascii() and value.isdigit() and 0 < int(value) <= MAX_RUN_ID:
        return int(value), who
    log.info("button press with an unusable value")
    return 0, who
