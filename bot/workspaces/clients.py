"""One Slack gateway per workspace in distribution mode, each with its workspace's token.

They share what one process has of Slack: the budget book (the budgets are per workspace and
channel already), the pacing rates and the retry handlers. A gateway is small; one is kept
per workspace the process has worked for.
"""

from __future__ import annotations

from bot.metrics import Metrics
from bot.pacing import BudgetBook
from bot.slackapi import SlackGateway, WorkspaceWebClient, retry_handlers
from bot.workspaces.installations import Installations


class SlackClients:
    """`SlackGateway.of(team_id)` in distribution mode."""

    def __init__(
        self,
        installations: Installations,
        *,
        base_url: str,
        book: BudgetBook,
        edits_per_minute: float,
        posts_per_minute: float,
        metrics: Metrics | None = None,
    ) -> None:
        self._installations = installations
        self._base_url = base_url
        self._book = book
        self._edits = edits_per_minute
        self._posts = posts_per_minute
        self._metrics = metrics
        self._gateways: dict[str, SlackGateway] = {}

    def gateway(self, team_id: str) -> SlackGateway:
        gateway = self._gateways.get(team_id)
        if gateway is None:

            async def token() -> str | None:
                return await self._installations.token(team_id)

            client = WorkspaceWebClient(
                token_of=token,
                refused=lambda: self._installations.forget(team_id),
                base_url=self._base_url,
                timeout=15,
                metrics=self._metrics,
                retry_handlers=retry_handlers(),
            )
            gateway = SlackGateway(
                client,
                book=self._book,
                edits_per_minute=self._edits,
                posts_per_minute=self._posts,
                team_id=team_id,
            )
            self._gateways[team_id] = gateway
        return gateway

    def forget(self, team_id: str) -> None:
        """The workspace uninstalled the app."""
        self._gateways.pop(team_id, None)
