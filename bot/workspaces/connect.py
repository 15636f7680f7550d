"""Connect Retell from App Home: who may, the modal, checking and storing the key.

A workspace admin (Slack's admins and owners, or anyone in ADMIN_USER_IDS) sees the section
with its buttons; anyone else sees only whether Retell is connected, and a press they forge
is refused privately. A submitted key is checked with one cheap Retell call before it is
stored; a refused key, or Retell down, is an inline error in the modal, and nothing is
stored. The key is never shown, logged or put in a view again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot import blocks
from bot.blocks import connect as view
from bot.blocks.kit import Block
from bot.settings import Settings
from bot.slackapi import SlackFailure, SlackGateway, map_slack_errors
from bot.workspaces.accounts import RetellAccounts

log = logging.getLogger(__name__)

KEY_CHECK_SECONDS = 2.0  # a view submission is answered within Slack's 3 s


class RetellConnect:
    """The Connect Retell flow; the listeners (`register_connect`) only unpack and ack."""

    def __init__(
        self,
        settings: Settings,
        accounts: RetellAccounts,
        slack: SlackGateway,
        *,
        republish_home: Callable[[str, str], Awaitable[None]],
    ) -> None:
        self._settings = settings
        self._accounts = accounts
        self._slack = slack
        self._republish_home = republish_home

    async def is_admin(self, team_id: str, user_id: str) -> bool:
        """ADMIN_USER_IDS, else a Slack admin or owner of this workspace."""
        if not user_id:
            return False
        if user_id in self._settings.admin_user_ids:
            return True
        return await self._slack.of(team_id).is_workspace_admin(user_id)

    async def home_section(self, team_id: str, user_id: str) -> list[Block]:
        """The section App Home shows this person: empty when keys cannot be stored here."""
        keys = self._accounts.keys
        if keys is None:
            return []
        hint = await keys.hint(team_id)
        connection = view.Connection(
            hint=hint.hint if hint else None,
            by=hint.by if hint else None,
            at=hint.at if hint else None,
            deployment_key=self._accounts.has_default,
        )
        return view.connect_section(connection, admin=await self.is_admin(team_id, user_id))

    async def open(self, client: AsyncWebClient, team_id: str, user_id: str, trigger: str) -> None:
        """A Connect (or Replace) press: the modal for an admin, a private no for anyone else."""
        if (refusal := await self._refusal(team_id, user_id)) is not None:
            await self._tell(team_id, user_id, refusal)
            return
        try:
            with map_slack_errors():
                await client.views_open(trigger_id=trigger, view=view.connect_modal())
        except SlackFailure as exc:
            log.warning("Connect Retell modal not opened: %s", exc.code)

    async def submit(self, team_id: str, user_id: str, typed: str) -> dict[str, str] | None:
        """A submitted key: the modal's inline errors, or None once it is checked and stored."""
        keys = self._accounts.keys
        if (refusal := await self._refusal(team_id, user_id)) is not None or keys is None:
            return {view.KEY_BLOCK: refusal or view.NO_ENCRYPTION}
        if not typed or any(char.isspace() for char in typed):
            return {view.KEY_BLOCK: view.KEY_MALFORMED}
        checked = await self._accounts.check_key(typed, timeout=KEY_CHECK_SECONDS)
        if checked == "refused":
            log.info("workspace %s: a Retell key was refused by Retell", team_id)
            return {view.KEY_BLOCK: view.KEY_REFUSED}
        if checked == "unavailable":
            return {view.KEY_BLOCK: view.KEY_UNCHECKED}
        await keys.connect(team_id, typed, user_id=user_id)
        self._accounts.changed(team_id)
        log.info("workspace %s: Retell key connected by %s", team_id, user_id)
        return None

    async def connected(self, team_id: str, user_id: str) -> None:
        """After a stored key (the modal closed): Home shows it."""
        await self._home(team_id, user_id)

    async def remove(self, team_id: str, user_id: str) -> None:
        """A Remove press (confirmed): the workspace's key forgotten, Home redrawn."""
        keys = self._accounts.keys
        if (refusal := await self._refusal(team_id, user_id)) is not None or keys is None:
            await self._tell(team_id, user_id, refusal or view.NO_ENCRYPTION)
            return
        if await keys.remove(team_id):
            self._accounts.changed(team_id)
            log.info("workspace %s: Retell key removed by %s", team_id, user_id)
        await self._home(team_id, user_id)

    async def _refusal(self, team_id: str, user_id: str) -> str | None:
        if self._accounts.keys is None:
            return view.NO_ENCRYPTION
        return None if await self.is_admin(team_id, user_id) else view.ONLY_ADMINS

    async def _tell(self, team_id: str, user_id: str, text: str) -> None:
        """Privately: a press on App Home has no channel, so a direct message."""
        try:
            await self._slack.of(team_id).direct_message(user_id, blocks.problem(text))
        except SlackFailure as exc:
            log.warning("could not tell %s: %s", user_id, exc.code)

    async def _home(self, team_id: str, user_id: str) -> None:
        try:
            await self._republish_home(team_id, user_id)
        except SlackFailure as exc:
            log.warning("App Home not redrawn for %s: %s", user_id, exc.code)


def register_connect(app: AsyncApp, connect: RetellConnect) -> None:
    """The Connect Retell listeners; register them before `bot.listeners.register`, whose
    catch-all action listener would take these presses otherwise."""

    @app.action(view.ACTION_CONNECT)
    async def on_connect(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        team_id, user_id = _who(body)
        await connect.open(client, team_id, user_id, str(body.get("trigger_id") or ""))

    @app.action(view.ACTION_REMOVE)
    async def on_remove(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        await connect.remove(*_who(body))

    @app.view(view.CALLBACK_CONNECT)
    async def on_submit(ack: AsyncAck, body: dict[str, Any]) -> None:
        team_id, user_id = _who(body)
        submitted = body.get("view")
        typed = view.typed_key(submitted if isinstance(submitted, dict) else {})
        errors = await connect.submit(team_id, user_id, typed)
        if errors:
            await ack(response_action="errors", errors=errors)
            return
        await ack()
        await connect.connected(team_id, user_id)


def _who(body: dict[str, Any]) -> tuple[str, str]:
    """The workspace and the person of an interaction payload."""
    team, user = body.get("team"), body.get("user")
    team = team if isinstance(team, dict) else {}
    user = user if isinstance(user, dict) else {}
    team_id = team.get("id") or user.get("team_id")
    user_id = user.get("id")
    return (
        team_id if isinstance(team_id, str) else "",
        user_id if isinstance(user_id, str) else "",
    )
