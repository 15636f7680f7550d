"""The pieces every collaborator of the run workflow shares."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Concatenate, ParamSpec, TypeVar

import anyio

from bot.blocks import Message
from bot.logs import about_run
from bot.metrics import Metrics
from bot.runs.requests import Requester
from bot.settings import Settings
from bot.slackapi import SlackFailure, SlackGateway
from bot.store import Run, Store
from bot.tenure import Tenure
from bot.workspaces.accounts import RetellAccounts

# Every part of the workflow logs as `bot.runs`, as the one module did: log filters and
# tests name it.
log = logging.getLogger("bot.runs")
S = TypeVar("S")
P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Services:
    """What every part of the workflow works with: settings, store, gateways, metrics, clock.

    Also the two things they all do the same way: keep a claim alive while working under it
    (`holding`) and answer a requester privately (`tell`).
    """

    settings: Settings
    store: Store
    # Each workspace's Retell account: `retell.of(team_id)` is its gateway.
    retell: RetellAccounts
    slack: SlackGateway
    metrics: Metrics
    clock: Callable[[], datetime]
    lease: timedelta
    # Slack calls made at once by deliveries and status edits together.
    slack_calls: asyncio.Semaphore

    @contextlib.asynccontextmanager
    async def holding(self, claim: str, *, taken_at: float) -> AsyncIterator[Tenure]:
        """Keep a claim alive while working under it; whatever is left is released at the end.

        `taken_at` is the event-loop time just before the claim was taken; the tenure
        yielded says until when it can be vouched for (`Tenure.bounding`). A holder that is
        cancelled (the process shutting down) gives its runs back at once, so a restarted
        process or a peer picks them up on its next sweep instead of waiting for the lease to
        run out. Only a process that dies outright leaves them to the lease.
        """
        tenure = Tenure(self.lease, taken_at=taken_at)

        async def extend(seconds: float) -> None:
            until = self.clock() + timedelta(seconds=seconds)
            await self.store.extend_claim(claim, until=until)

        keeper = asyncio.create_task(tenure.keep(extend))
        try:
            yield tenure
        finally:
            keeper.cancel()
            with anyio.CancelScope(shield=True):
                await self.store.release_claim(claim)

    async def tell(self, who: Requester, message: Message) -> None:
        """Answer someone privately (or in the channel, for a schedule's `announce`)."""
        try:
            if who.announce:
                await self.slack.of(who.team_id).post(who.channel_id, message)
            elif who.response_url:
                await self.slack.of(who.team_id).respond(who.response_url, message)
            else:
                await self.slack.of(who.team_id).tell(who.channel_id, who.user_id, message)
        except SlackFailure as exc:
            log.warning("could not tell %s: %s", who.user_id, exc.code)


def about_run_step(
    method: Callable[Concatenate[S, Run, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[S, Run, P], Coroutine[Any, Any, R]]:
    """Tag the log lines of a workflow step about one run with its run and batch ids."""

    async def step(self: S, run: Run, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with about_run(run):
            return await method(self, run, *args, **kwargs)

    functools.update_wrapper(step, method)
    return step
