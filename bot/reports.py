"""Digest reports of a channel's runs: figures from the store, a message, and a chart.

Everything is read from the `runs` and `case_results` tables (SPEC: no re-reading of Retell's
history); the chart is drawn off the event loop and shared with Slack's upload flow v2.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from bot import blocks, history
from bot.slackapi import SlackFailure, SlackGateway
from bot.store import Store, utcnow

log = logging.getLogger(__name__)

FAILING_SHOWN = 10
COMPARISONS_SHOWN = 10


class Reports:
    """Post `/retell-test report [days]` digests, on demand or from a schedule."""

    def __init__(
        self, store: Store, slack: SlackGateway, *, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self._store = store
        self._slack = slack
        self._clock = clock

    async def digest(self, team_id: str, channel_id: str, days: int) -> history.Digest:
        until = self._clock()
        since = until - timedelta(days=days)
        runs = await self._store.finished_runs(team_id, channel_id, since, until)
        before = await self._store.finished_runs(
            team_id, channel_id, since - (until - since), since
        )
        failing = await self._store.failing_cases(
            team_id, channel_id, since, until, limit=FAILING_SHOWN
        )
        compared = [
            history.VersionCheck(
                lead.finished_at or until, lead.engine, lead.candidate, lead.regressions, lead.label
            )
            for lead in await self._store.comparisons(
                team_id, channel_id, since, until, limit=COMPARISONS_SHOWN
            )
            if lead.candidate is not None and lead.regressions is not None
        ]
        return history.digest(days, until, runs, before, failing, compared)

    async def post(
        self,
        team_id: str,
        channel_id: str,
        days: int,
        *,
        label: str | None = None,
        due: datetime | None = None,
        request_key: str | None = None,
    ) -> bool:
        """Post the digest to the channel, then its pass-rate chart as an image.

        False when `request_key` (Slack's trigger_id) already posted it: a replayed request.
        """
        if request_key and not await self._store.first_handling(request_key, now=self._clock()):
            log.info("request %s was already handled: its digest is posted", request_key)
            return False
        digest = await self.digest(team_id, channel_id, days)
        message = blocks.digest_message(digest, label=label, due=due)
        try:
            await self._slack.of(team_id).post(channel_id, message)
        except Exception:
            if request_key:  # nothing was posted: the user may ask again
                await self._store.forget_handling(request_key)
            raise
        if digest.runs == 0:
            return True
            return
        from bot.chart import pass_rate_png

        title = f"Pass rate per day, last {blocks.plural(days, 'day')}"
        png = await asyncio.to_thread(pass_rate_png, digest, title=title)
        alt = f"{title}: " + ", ".join(
            f"{day:%d %b} {'no runs' if rate is None else f'{rate:.0f}%'}"
            for day, rate in digest.daily
        )
        try:
            await self._slack.of(team_id).upload(
                channel_id, png, filename="pass-rate.png", title=title, alt_text=alt[:1000]
            )
        except SlackFailure as exc:
            # The digest itself is posted and carries the same numbers as text.
            log.warning("digest chart not uploaded to %s: %s", channel_id, exc.code)
        return True
