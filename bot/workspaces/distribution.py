"""What the application builds for many workspaces' Slack side: installations and tokens, a
Slack gateway per workspace, Bolt's OAuth options, and the uninstall listeners."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from apscheduler import AsyncScheduler
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.metrics import Metrics
from bot.pacing import BudgetBook
from bot.settings import Settings
from bot.store import Store
from bot.workspaces.accounts import RetellAccounts
from bot.workspaces.clients import SlackClients
from bot.workspaces.installations import Installations, WorkspaceAuthorize
from bot.workspaces.lifecycle import Uninstalls, register_uninstalls
from bot.workspaces.oauth import oauth_settings


@dataclass(frozen=True, slots=True)
class Workspaces:
    settings: Settings
    store: Store
    installations: Installations
    clients: SlackClients

    @classmethod
    def build(
        cls,
        settings: Settings,
        store: Store,
        client: AsyncWebClient,
        *,
        book: BudgetBook,
        metrics: Metrics | None = None,
    ) -> Workspaces:
        installations = Installations(settings, store, client)
        clients = SlackClients(
            installations,
            base_url=settings.slack_api_url,
            book=book,
            edits_per_minute=settings.slack_edits_per_minute,
            posts_per_minute=settings.slack_posts_per_minute,
            metrics=metrics,
        )
        return cls(settings, store, installations, clients)

    def bolt_options(self) -> dict[str, Any]:
        """What Bolt's app needs to install and authorize in many workspaces."""
        return {
            "authorize": WorkspaceAuthorize(self.installations),
            "oauth_settings": oauth_settings(self.settings, self.installations),
        }

    def register(self, app: AsyncApp, scheduler: AsyncScheduler, accounts: RetellAccounts) -> None:
        uninstalls = Uninstalls(self.installations, self.store, scheduler, self.clients, accounts)
        register_uninstalls(app, uninstalls)
