"""Slack listeners: unpack the payload, ack at once, hand the work to the workflow.

Bolt acks over HTTP (or the socket) as soon as `ack()` is awaited and runs the rest of the
listener afterwards, so nothing here ever makes Slack wait on Retell.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_bolt.middleware.async_middleware import AsyncMiddleware
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.web.async_client import AsyncWebClient

from bot import blocks, modal
from bot.admission import Admission, request_key
from bot.cache import TTLCache
from bot.commands import (
    SLASH_COMMAND,
    USAGE,
    CommandError,
    HelpCommand,
    ReportCommand,
    RunCommand,
    ScheduleAction,
    ScheduleAddCommand,
    ScheduleCommand,
    ScheduleReportCommand,
    StatusCommand,
    WatchCommand,
    parse,
)
from bot.reports import Reports
from bot.retell import CaseDefinition, EngineChoice, RetellProblem
from bot.runs import Requester, RunRequest, RunWorkflow
from bot.schedules import Schedules
from bot.slackapi import SlackFailure, map_slack_errors
from bot.suite import Engine
from bot.workspaces.accounts import RetellAccounts

log = logging.getLogger(__name__)

COMMAND = SLASH_COMMAND
SCHEDULE_ACTIONS: dict[str, ScheduleAction] = {
    blocks.ACTION_SCHEDULE_RUN: "run",
    blocks.ACTION_SCHEDULE_PAUSE: "pause",
    blocks.ACTION_SCHEDULE_RESUME: "resume",
    blocks.ACTION_SCHEDULE_REMOVE: "remove",
}
MAX_RUN_ID = 2**31 - 1  # runs.id is a 32-bit integer on PostgreSQL
ANONYMOUS_PRESS = "This press did not say who made it, so nothing was done."


def register(app: AsyncApp, workflow: RunWorkflow, schedules: Schedules, reports: Reports) -> None:
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
        elif isinstance(parsed, RunCommand | WatchCommand | ScheduleAddCommand) and (
            unconnected := await workflow.not_connected(who)
        ):
            await ack(**unconnected.as_kwargs())
        elif isinstance(parsed, HelpCommand):
            await ack(**blocks.help_message(USAGE).as_kwargs())
        elif isinstance(parsed, RunCommand) and (refusal := workflow.not_allowed(who)):
            await ack(**blocks.refused(refusal).as_kwargs())
        elif isinstance(parsed, RunCommand):
            key = _request_key(command)
            admission = await workflow.accept(who, str(command.get("text", "")), key)
            if admission is Admission.REFUSED:
                await ack(**workflow.database_down().as_kwargs())
                return
            await ack(text=blocks.run_ack_text(parsed))
            request = RunRequest.asked(
                who, parsed, request_key=key, recorded=admission is Admission.KEPT
            )
            await workflow.start(request)
        elif isinstance(parsed, WatchCommand) and (refusal := workflow.not_allowed(who)):
            await ack(**blocks.refused(refusal).as_kwargs())
        elif isinstance(parsed, WatchCommand):
            await ack(text=f"Following Retell batch `{parsed.batch_id}` here…")
            await workflow.watch(who, parsed.batch_id, request_key=_request_key(command))
        elif isinstance(parsed, StatusCommand):
            await ack()
            message = await workflow.status(who, parsed.batch_id)
            await respond(response_type="ephemeral", **message.as_kwargs())
        elif isinstance(parsed, ScheduleAddCommand | ScheduleReportCommand):
            await ack(text="🗓️ Adding the schedule…")
            key = _request_key(command)
            if isinstance(parsed, ScheduleAddCommand):
                message = await schedules.add(who, parsed, request_key=key)
            else:
                message = await schedules.add_report(who, parsed, request_key=key)
            await respond(response_type="ephemeral", **message.as_kwargs())
        elif isinstance(parsed, ScheduleCommand) and parsed.action == "list":
            await ack()
            for message in await schedules.listing(who):
                await respond(response_type="ephemeral", **message.as_kwargs())
        elif isinstance(parsed, ScheduleCommand):
            await ack()
            message = await schedules.act(who, parsed, request_key=_request_key(command))
            await respond(response_type="ephemeral", **message.as_kwargs())
        elif isinstance(parsed, ReportCommand) and (refusal := workflow.not_allowed(who)):
            await ack(**blocks.refused(refusal).as_kwargs())
        else:
            await ack(text=f"📊 Posting the digest of the last {parsed.days} days…")
            try:
                await reports.post(
                    who.team_id, who.channel_id, parsed.days, request_key=_request_key(command)
                )
            except SlackFailure as exc:
                why = f"The digest could not be posted in this channel ({exc.code})."
                await respond(response_type="ephemeral", **blocks.problem(why).as_kwargs())

    app.use(EmptyActionsAnswered())

    async def nobody_pressed(who: Requester) -> bool:
        """A press that names no user (no Slack client sends one) is refused: no run may
        start that nobody asked for, mentioned as an empty `<@>`."""
        if who.user_id:
            return False
        log.info("button press without a user: refused")
        if who.response_url:
            await workflow.tell(who, blocks.problem(ANONYMOUS_PRESS))
        return True

    @app.action("rerun")
    async def on_rerun(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        run_id, who = _button(body)
        if not await nobody_pressed(who):
            await workflow.rerun(run_id, who, only_failed=False, request_key=_request_key(body))

    @app.action("rerun_failed")
    async def on_rerun_failed(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        run_id, who = _button(body)
        if not await nobody_pressed(who):
            await workflow.rerun(run_id, who, only_failed=True, request_key=_request_key(body))

    @app.action("show_failures")
    async def on_show_failures(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        run_id, who = _button(body)
        if not await nobody_pressed(who):
            await workflow.show_failures(run_id, who)

    @app.action(re.compile(f"^{blocks.ACTION_PUBLISH}:[0-9]+$"))
    async def on_publish(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        who = _presser(body)
        if not await nobody_pressed(who):
            await workflow.publish(_button_value(body), who)

    @app.action(re.compile(f"^({'|'.join(SCHEDULE_ACTIONS)})$"))
    async def on_schedule_button(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        action = _first_action(body) or {}
        verb = SCHEDULE_ACTIONS[str(action.get("action_id"))]
        _, who = _button(body)
        if await nobody_pressed(who):
            return
        on_home = _part(body, "view").get("type") == "home"
        command = ScheduleCommand(verb, str(action.get("value", ""))[:40])
        message = await schedules.act(
            who, command, from_home=on_home, request_key=_request_key(body)
        )
        if on_home:
            await schedules.publish_home(who.team_id, who.user_id)
        if who.response_url or not on_home:
            await workflow.tell(who, message)

    @app.event("app_home_opened")
    async def on_home_opened(event: dict[str, Any], body: dict[str, Any]) -> None:
        if event.get("tab", "home") != "home":
            return
        user = event.get("user")
        if isinstance(user, str) and user:
            await schedules.publish_home(str(body.get("team_id", "")), user)

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


_request_key = request_key


def _button(body: dict[str, Any]) -> tuple[int, Requester]:
    """The run id a button points at, and who pressed it where; tolerant of odd payloads.

    A value that is no run id at all comes back as 0, which no run has: the presser then gets
    the same private "not one of this channel's" as for someone else's run.
    """
    who = _presser(body)
    value = _button_value(body).strip()
    if value.isascii() and value.isdigit() and 0 < int(value) <= MAX_RUN_ID:
        return int(value), who
    log.info("button press with an unusable value")
    return 0, who


def _presser(body: dict[str, Any]) -> Requester:
    """Who pressed a button, where."""

    def text(value: Any) -> str:
        return value if isinstance(value, str) else ""

    def part(key: str) -> dict[str, Any]:
        value = body.get(key)
        return value if isinstance(value, dict) else {}

    user, team, channel = part("user"), part("team"), part("channel")
    return Requester(
        team_id=text(team.get("id")) or text(user.get("team_id")),
        channel_id=text(channel.get("id")),
        user_id=text(user.get("id")),
        response_url=text(body.get("response_url")) or None,
    )


def _button_value(body: dict[str, Any]) -> str:
    value = (_first_action(body) or {}).get("value")
    return value if isinstance(value, str) else ""


# -- the Run modal ---------------------------------------------------------------------------

MENU_DEADLINE_SECONDS = 2.2  # Slack drops an options answer after 3 s; Bolt's ack is inside that
RETELL_MENU_TIMEOUT_SECONDS = 2.0
MENU_CACHE_SECONDS = 30.0


def register_modal(
    app: AsyncApp, workflow: RunWorkflow, retell: RetellAccounts, *, max_cases: int
) -> None:
    """The Run modal: `/retell-test` with no text, or the "Run Retell tests" global shortcut.

    Register it before `register`: Bolt hands a request to the first listener that matches, and
    `register` has a command listener for every text (help, for none) and a catch-all action
    listener that would otherwise take the engine menu's picks.
    """
    # By workspace: each may have connected a Retell account of its own.
    engines: TTLCache[str, list[EngineChoice]] = TTLCache(ttl=MENU_CACHE_SECONDS, max_entries=64)
    definitions: TTLCache[str, list[CaseDefinition]] = TTLCache(
        ttl=MENU_CACHE_SECONDS, max_entries=64
    )

    async def without_text(body: dict[str, Any]) -> bool:
        return not str(body.get("text") or "").strip()

    @app.command(COMMAND, matchers=[without_text])
    async def on_bare_command(
        ack: AsyncAck, respond: AsyncRespond, body: dict[str, Any], client: AsyncWebClient
    ) -> None:
        who = Requester(
            team_id=str(body.get("team_id", "")),
            channel_id=str(body.get("channel_id", "")),
            user_id=str(body.get("user_id", "")),
            response_url=body.get("response_url"),
        )
        if refusal := workflow.not_allowed(who):
            await ack(**blocks.refused(refusal).as_kwargs())
            return
        if unconnected := await workflow.not_connected(who):
            await ack(**unconnected.as_kwargs())
            return
        await ack()
        origin = modal.Origin(channel_id=who.channel_id, response_url=who.response_url)
        try:
            with map_slack_errors():
                await client.views_open(
                    trigger_id=str(body.get("trigger_id", "")), view=modal.run_view(origin)
                )
        except SlackFailure as exc:
            code = exc.code
            log.warning("Run modal not opened: %s", code)
            message = blocks.problem(
                f"The Run form could not be opened ({code or 'no answer'}). Type "
                "`/retell-test help` to see how to start a run with the command."
            )
            await respond(response_type="ephemeral", **message.as_kwargs())

    @app.shortcut(modal.SHORTCUT_ID)
    async def on_shortcut(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        try:
            with map_slack_errors():
                await client.views_open(
                    trigger_id=str(body.get("trigger_id", "")),
                    view=modal.run_view(modal.Origin()),
                )
        except SlackFailure as exc:
            log.warning("Run modal not opened from the shortcut: %s", exc.code)

    @app.options(modal.ENGINE_ACTION)
    async def on_engine_menu(ack: AsyncAck, body: dict[str, Any]) -> None:
        query = str(body.get("value") or "")
        team_id = _presser(body).team_id
        choices = engines.get(team_id)
        if choices is None:
            try:
                async with asyncio.timeout(MENU_DEADLINE_SECONDS):
                    choices = await retell.of(team_id).engines(timeout=RETELL_MENU_TIMEOUT_SECONDS)
            except (RetellProblem, TimeoutError) as exc:
                log.info("engine menu: Retell did not list the engines: %s", _why(exc))
                await ack(options=modal.retell_hint(_kind(exc)))
                return
            engines.put(team_id, choices)
        options = modal.engine_options(choices, query)
        await ack(options=options or modal.hint_options(_nothing_found(query, "engine")))

    @app.options(modal.CASES_ACTION)
    async def on_cases_menu(ack: AsyncAck, body: dict[str, Any]) -> None:
        query = str(body.get("value") or "")
        view = body.get("view")
        engine_id = modal.engine_in_view(view) if isinstance(view, dict) else None
        if engine_id is None:
            await ack(options=modal.hint_options("Pick an engine first"))
            return
        team_id = _presser(body).team_id
        found = definitions.get(f"{team_id}:{engine_id}")
        if found is None:
            try:
                async with asyncio.timeout(MENU_DEADLINE_SECONDS):
                    found = await retell.of(team_id).definitions_quick(
                        Engine.from_id(engine_id), timeout=RETELL_MENU_TIMEOUT_SECONDS
                    )
            except (RetellProblem, TimeoutError) as exc:
                log.info("test case menu: Retell did not list the cases: %s", _why(exc))
                await ack(options=modal.retell_hint(_kind(exc)))
                return
            definitions.put(f"{team_id}:{engine_id}", found)
        if not found:
            await ack(options=modal.hint_options("This engine has no test cases in Retell"))
            return
        options = modal.case_options(found, query)
        await ack(options=options or modal.hint_options(_nothing_found(query, "test case")))

    @app.action(modal.ENGINE_ACTION)
    async def on_engine_picked(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        """A new engine: rebuild the form so the test case menu starts empty for it."""
        await ack()
        view = body.get("view")
        if not isinstance(view, dict) or not isinstance(view.get("id"), str):
            return
        origin = modal.Origin.decode(view.get("private_metadata"))
        picked = (_first_action(body) or {}).get("selected_option")
        value = picked.get("value") if isinstance(picked, dict) else None
        engine_id = value if modal.is_engine_id(value) else modal.engine_in_view(view)
        if engine_id == origin.engine_id:
            return
        rebuilt = modal.run_view(modal.Origin(origin.channel_id, origin.response_url, engine_id))
        try:
            with map_slack_errors():
                await client.views_update(view_id=view["id"], hash=view.get("hash"), view=rebuilt)
        except SlackFailure as exc:
            # hash_conflict: the user moved on and a later pick updates it; the submission
            # still checks that the cases belong to the engine.
            log.info("Run modal not updated for the engine: %s", exc.code)

    @app.view(modal.CALLBACK_ID)
    async def on_submit(ack: AsyncAck, body: dict[str, Any]) -> None:
        view = body.get("view")
        view = view if isinstance(view, dict) else {}
        response_urls = body.get("response_urls")
        choice = modal.read_submission(
            view,
            response_urls if isinstance(response_urls, list) else [],
            max_cases=max_cases,
        )
        if isinstance(choice, dict):
            await ack(response_action="errors", errors=choice)
            return
        user, team = _part(body, "user"), _part(body, "team")
        who = Requester(
            team_id=str(team.get("id") or user.get("team_id") or view.get("team_id") or ""),
            channel_id=choice.channel_id,
            user_id=str(user.get("id", "")),
            response_url=choice.response_url,
        )
        if refusal := workflow.not_allowed(who):
            errors = {modal.CHANNEL_BLOCK: modal.refusal_error(refusal)}
            await ack(response_action="errors", errors=errors)
            return
        await ack()
        # One form, one run: the view id stays the same however often the form is submitted
        # (each submission has a trigger_id of its own), so it keys the request first.
        view_id = view.get("id")
        key = f"view:{view_id}"[:128] if isinstance(view_id, str) and view_id else None
        key = key or _request_key(body)
        request = RunRequest(
            who,
            choice.engine,
            choice.tests,
            source="modal",
            request_key=key,
            repeats=choice.repeats,
            candidate=choice.candidate,
            min_pass=choice.min_pass,
        )
        await workflow.start(request)


def _part(body: dict[str, Any], key: str) -> dict[str, Any]:
    value = body.get(key)
    return value if isinstance(value, dict) else {}


def _kind(exc: Exception) -> str | None:
    return exc.kind if isinstance(exc, RetellProblem) else None


def _why(exc: Exception) -> str:
    return exc.message if isinstance(exc, RetellProblem) else "no answer in time"


def _nothing_found(query: str, noun: str) -> str:
    return f"No {noun} matches “{query.strip()}”" if query.strip() else f"No {noun} found"
