"""A workspace that uninstalls the app, or revokes its bot token, is forgotten (SPEC §10).

Its schedules stop (their timers are removed with their rows), its runs and results go, so
follow-ups under way find nothing left to report and end quietly, and its tokens and Retell
key are deleted. A reinstall starts clean.
"""

from __future__ import annotations

import logging
from typing import Any

from apscheduler import AsyncScheduler
from slack_bolt.async_app import AsyncApp

from bot import scheduling
from bot.store import Store
from bot.workspaces.accounts import RetellAccounts
from bot.workspaces.clients import SlackClients
from bot.workspaces.installations import Installations

log = logging.getLogger(__name__)


class Uninstalls:
    """What `app_uninstalled` and `tokens_revoked` do."""

    def __init__(
        self,
        installations: Installations,
        store: Store,
        scheduler: AsyncScheduler,
        clients: SlackClients,
        accounts: RetellAccounts,
    ) -> None:
        self._installations = installations
        self._accounts = accounts
        self._store = store
        self._scheduler = scheduler
        self._clients = clients

    async def uninstalled(self, team_id: str | None, enterprise_id: str | None) -> None:
        teams = await self._installations.uninstalled(team_id, enterprise_id)
        for team in teams:
            for schedule_id in await self._store.forget_workspace(team):
                await scheduling.remove_firing(self._scheduler, schedule_id)
            self._clients.forget(team)
            self._accounts.forget(team)
            log.info(
                "uninstalled from %s: its tokens, Retell key, runs and schedules deleted", team
            )


def register_uninstalls(app: AsyncApp, uninstalls: Uninstalls) -> None:
    @app.event("app_uninstalled")
    async def on_uninstalled(body: dict[str, Any]) -> None:
        await uninstalls.uninstalled(_team(body), _enterprise(body))

    @app.event("tokens_revoked")
    async def on_tokens_revoked(event: dict[str, Any], body: dict[str, Any]) -> None:
        # The bot's token revoked: nothing can be done there any more. (The app keeps no
        # user tokens, so a revocation of only those changes nothing.)
        if (event.get("tokens") or {}).get("bot"):
            await uninstalls.uninstalled(_team(body), _enterprise(body))


def _team(body: dict[str, Any]) -> str | None:
    team = body.get("team_id")
    return team if isinstance(team, str) and team else None


def _enterprise(body: dict[str, Any]) -> str | None:
    enterprise = body.get("enterprise_id")
    return enterprise if isinstance(enterprise, str) and enterprise else None
