"""Publishing: the agent version a green result tested, published once per press (SPEC §9).

Nothing is published without a press: the result offers **Publish <agent>** for each agent
whose draft answers with exactly the tested engine version (`offers`), and a press by an admin
publishes exactly that agent version (`publish`), never "the latest draft".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from bot import blocks
from bot.agents import AgentDraft
from bot.refusal import Refusal
from bot.retell import RetellProblem
from bot.runs.context import Services
from bot.runs.requests import Requester
from bot.slackapi import SlackFailure
from bot.store import Run
from bot.suite import Engine

log = logging.getLogger("bot.runs")

# How long a result waits for the agents scan before it is delivered without Publish buttons.
OFFER_WAIT_SECONDS = 10.0


class Publishing:
    """Offer Publish on green results, and carry out a press."""

    def __init__(self, services: Services) -> None:
        self._settings = services.settings
        self._store = services.store
        self._slack = services.slack
        self._retell = services.retell
        self._clock = services.clock
        self._tell = services.tell

    async def offers(self, team_id: str, engine: Engine | None) -> list[AgentDraft]:
        """The drafts a green result on `engine` may publish; none when nobody could press.

        Only admins publish, so without ADMIN_USER_IDS nothing is offered (and nothing is
        scanned). An engine without a version (a run of "the latest") is not offered either:
        which version it tested is not certain. Retell failing or slow costs the buttons, never
        the result.
        """
        if engine is None or engine.version is None or not self._settings.admin_user_ids:
            return []
        try:
            async with asyncio.timeout(OFFER_WAIT_SECONDS):
                return await self._retell.agents(team_id).drafts_of(engine)
        except (RetellProblem, TimeoutError) as exc:
            log.warning("agents answering with %s not read: %s", engine.label, exc)
            return []

    async def publish(self, value: str, who: Requester) -> None:
        press = blocks.read_press(value)
        if press is None:
            await self._tell(who, blocks.problem("That Publish button is not one the bot made."))
            return
        admins = self._settings.admin_user_ids
        if who.user_id not in admins:
            refusal = Refusal("Only the bot's admins can publish agents.", admins)
            await self._tell(who, blocks.refused(refusal))
            return
        run = await self._store.get(press.run_id)
        if run is None or run.team_id != who.team_id or run.channel_id != who.channel_id:
            await self._tell(who, blocks.problem("That run is not one of this channel's."))
            return
        # The row first: a second press, here or on another replica, finds it and stops.
        claimed = await self._store.claim_publish(
            run.id, press.agent_id, press.version, who.user_id, now=self._clock()
        )
        if claimed is None:
            await self._pressed_before(run, press.agent_id, who)
            return
        engine = tested_engine(run)
        draft = await self._draft(who, engine, press.agent_id, press.version)
        if draft is None or engine is None:
            await self._store.release_publish(run.id, press.agent_id)
            return
        try:
            directory = self._retell.agents(who.team_id)
            await directory.publish(draft.agent_id, draft.version, name=draft.name)
        except RetellProblem as problem:
            log.info("run %s: %s not published: %s", run.id, draft.agent_id, problem.message)
            if not problem.uncertain:
                await self._store.release_publish(run.id, draft.agent_id)
            await self._reply(run, who, blocks.publish_refused(who.user_id, problem.message))
            return
        await self._store.mark_published(run.id, draft.agent_id, now=self._clock())
        log.info("run %s: %s version %s published", run.id, draft.agent_id, draft.version)
        await self._reply(
            run, who, blocks.published(who.user_id, draft.name, draft.version, engine)
        )

    async def _pressed_before(self, run: Run, agent_id: str, who: Requester) -> None:
        """Tell a second press who published (or is publishing) the agent from this result."""
        earlier = await self._store.publish_of(run.id, agent_id)
        if earlier is None:  # the first press was refused meanwhile: it can be pressed again
            text = "That agent was just tried from this result; press again to retry."
        else:
            done = "published" if earlier.published_at else "is publishing"
            text = f"{blocks.mention(earlier.user_id)} {done} that agent from this result already."
        await self._tell(who, blocks.problem(text))

    async def _draft(
        self, who: Requester, engine: Engine | None, agent_id: str, version: int
    ) -> AgentDraft | None:
        """The press's agent version, if it is still a draft answering with the tested engine
        (a forged value, or an agent changed since the result, finds none)."""
        if engine is None or engine.version is None:
            await self._tell(who, blocks.problem("This result tested no known engine version."))
            return None
        try:
            drafts: Sequence[AgentDraft] = await self._retell.agents(who.team_id).drafts_of(engine)
        except RetellProblem as problem:
            await self._tell(who, blocks.problem(problem.message))
            return None
        for draft in drafts:
            if draft.agent_id == agent_id and draft.version == version:
                return draft
        await self._tell(
            who,
            blocks.problem(
                f"Version {version} of that agent is no longer a draft answering with "
                f"{engine.label} (published or changed since this result); nothing was published."
            ),
        )
        return None

    async def _reply(self, run: Run, who: Requester, message: blocks.Message) -> None:
        """In the result's thread, so the channel sees who published what; privately when the
        thread cannot be posted in."""
        try:
            await self._slack.of(run.team_id).post(run.channel_id, message, thread_ts=run.status_ts)
        except SlackFailure as exc:
            log.warning("run %s: publish reply not posted: %s", run.id, exc.code)
            await self._tell(who, message)


def tested_engine(run: Run) -> Engine | None:
    """The engine version a result vouches for: B of a comparison, else the run's own."""
    engine = run.candidate or run.engine
    return engine if engine.version is not None else None
