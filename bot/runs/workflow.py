"""`RunWorkflow`: start, follow up, finish and rerun Retell batch tests for Slack users."""

from __future__ import annotations

import asyncio

from bot.runs.base import log
from bot.runs.triage import Triage


class RunWorkflow(Triage):
    """Start, follow up, finish and rerun Retell batch tests on behalf of Slack users.

    The steps are classes of their own modules, stacked in the order they depend on each
    other (base → status → starting → accepting → recovery → delivery → sweep → triage);
    each module is the room for one responsibility. They share this object's state.
    """

    async def drain(self, *, timeout: float) -> None:
        """Let runs being started finish (batch created, status posted) before shutdown.

        A run interrupted anyway is picked up by a later sweep (`_recover`).
        """
        pending = {task for task in self._starting if not task.done()}
        if pending:
            log.info("waiting for %d run(s) being started", len(pending))
            await asyncio.wait(pending, timeout=timeout)
        await self._commands.close()
