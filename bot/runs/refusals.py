"""Refusals: who may not start a run here, and why."""

from __future__ import annotations

import logging
from datetime import timedelta

from bot import blocks
from bot.blocks import Message
from bot.refusal import Refusal, not_allowed
from bot.runs.context import Services
from bot.runs.requests import Requester
from bot.workspaces.accounts import NOT_CONNECTED

# Every part of the workflow logs as `bot.runs`, as the one module did: log filters and
# tests name it.
log = logging.getLogger("bot.runs")


class Refusals:
    """Who may run tests where (ALLOWED_* settings), and how many an hour."""

    def __init__(self, services: Services) -> None:
        self._settings = services.settings
        self._store = services.store
        self._clock = services.clock
        self._retell = services.retell

    async def not_connected(self, who: Requester) -> Message | None:
        """How to connect Retell, when the workspace has no key to run with (its own or
        RETELL_API_KEY): then nothing is created, at Retell or here."""
        if await self._retell.connected(who.team_id):
            return None
        return blocks.problem(NOT_CONNECTED)

    def not_allowed(self, who: Requester) -> Refusal | None:
        """Why this person may not run tests here (ALLOWED_* settings), if they may not.

        No I/O: listeners call it before acking, so a refusal arrives as the ack itself.
        """
        return not_allowed(self._settings, channel_id=who.channel_id, user_id=who.user_id)

    async def refusal(
        self, who: Requester, *, hourly_limit: bool = True, runs: int = 1
    ) -> Refusal | None:
        """`not_allowed`, plus the per-user hourly limit on runs (MAX_RUNS_PER_USER_PER_HOUR).

        Each batch of a `repeat=N` counts as a run. Schedule firings skip the hourly limit:
        SCHEDULE_MIN_INTERVAL_MINUTES bounds them.
        """
        refusal = self.not_allowed(who)
        limit = self._settings.max_runs_per_user_per_hour if hourly_limit else 0
        if refusal is None and limit:
            since = self._clock() - timedelta(hours=1)
            started = await self._store.runs_by_user_since(who.user_id, since)
            if started + runs > limit:
                batches = f" {runs} more would go over it." if started < limit else ""
                refusal = Refusal(
                    f"You have started {started} runs in the last hour; this workspace allows "
                    f"{limit} (MAX_RUNS_PER_USER_PER_HOUR).{batches} Try again later.",
                    self._settings.admin_user_ids,
                )
        return refusal
