"""The run workflow's one entry point: today's API, handed to the collaborators that do it.

Which part does what (dependencies point down, never up or across a level):

    RunWorkflow
      Triage (reruns, failures, status)   Sweep (claims, checks, pacing)
      Starting (start, watch)   Recovery (interrupted starts)   Delivery (results)
      AcceptedCommands   Refusals   Creation (batches, following)
      StatusMessages
      Services (settings, store, gateways, clock; `holding`, `tell`)   requests   replies
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from bot.admission import Admission
from bot.blocks import Message
from bot.followup import BatchRefresher
from bot.metrics import Metrics
from bot.refusal import Refusal
from bot.runs.accepted import AcceptedCommands
from bot.runs.context import Services
from bot.runs.creating import Creation
from bot.runs.delivery import Delivery
from bot.runs.publishing import Publishing
from bot.runs.recovery import Recovery
from bot.runs.refusals import Refusals
from bot.runs.replies import database_down
from bot.runs.requests import Requester, RunRequest
from bot.runs.starting import Starting
from bot.runs.status import StatusMessages
from bot.runs.sweep import Sweep
from bot.runs.triage import Triage
from bot.settings import Settings
from bot.slackapi import SlackGateway
from bot.store import AckedCommand, Run, Store, utcnow
from bot.workspaces.accounts import RetellAccounts


class RunWorkflow:
    """Start, follow up, finish and rerun Retell batch tests on behalf of Slack users.

    This module owns the state machine of a run (see `RunState`) through its collaborators:
    parsing happens before it, rendering is `bot.blocks`, I/O goes through the Retell and
    Slack gateways and the store. Every step that must happen once is guarded by a
    conditional update in the store, so that the sweep can be run by any replica, and again
    after a crash, without posting a result twice.
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        retell: RetellAccounts,
        slack: SlackGateway,
        *,
        metrics: Metrics | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        services = Services(
            settings=settings,
            store=store,
            retell=retell,
            slack=slack,
            metrics=metrics or Metrics(),
            clock=clock,
            lease=timedelta(seconds=settings.follow_up_lease_seconds),
            slack_calls=asyncio.Semaphore(8),
        )
        self._services = services
        statuses = StatusMessages(services)
        creation = Creation(services, statuses)
        self._commands = AcceptedCommands(services)
        self._refusals = Refusals(services)
        self._starting = Starting(services, self._commands, self._refusals, creation)
        self._publishing = Publishing(services)
        delivery = Delivery(services, statuses, self._publishing)
        recovery = Recovery(services, creation)
        self._sweep = Sweep(
            services, BatchRefresher(retell), self._starting, recovery, delivery, statuses
        )
        self._triage = Triage(services, self._starting)

    async def drain(self, *, timeout: float) -> None:
        """Let runs being started finish (batch created, status posted) before shutdown.

        A run interrupted anyway is picked up by a later sweep (`Recovery.recover`).
        """
        await self._starting.drain(timeout=timeout)
        await self._commands.close()

    async def accept(self, who: Requester, text: str, request_key: str | None) -> Admission:
        """Keep a `run` command before it is acked (see `AcceptedCommands.accept`)."""
        return await self._commands.accept(who, text, request_key)

    @staticmethod
    def database_down() -> Message:
        """What a command the database could not take is answered with."""
        return database_down()

    async def resume_commands(self, unkept: Sequence[AckedCommand] = ()) -> None:
        """Start acked commands that are not started yet (see `Starting.resume_commands`);
        `serve` calls it once the application is ready, for what `bot.early` acked before."""
        await self._starting.resume_commands(unkept)

    async def start(self, request: RunRequest) -> Run | None:
        """Resolve the test cases, create the batch and post the status message."""
        return await self._starting.start(request)

    async def watch(
        self, who: Requester, batch_id: str, *, request_key: str | None = None
    ) -> Run | None:
        """Follow a batch created elsewhere (the dashboard, a CI job) and report it here."""
        return await self._starting.watch(who, batch_id, request_key=request_key)

    async def not_connected(self, who: Requester) -> Message | None:
        """How to connect Retell, when this workspace has no Retell key to run with."""
        return await self._refusals.not_connected(who)

    def not_allowed(self, who: Requester) -> Refusal | None:
        """Why this person may not run tests here (ALLOWED_* settings), if they may not."""
        return self._refusals.not_allowed(who)

    async def rerun(
        self, run_id: int, who: Requester, *, only_failed: bool, request_key: str | None = None
    ) -> Run | None:
        """A new batch with the same engine and cases (or only those that failed or errored)."""
        return await self._triage.rerun(
            run_id, who, only_failed=only_failed, request_key=request_key
        )

    async def show_failures(self, run_id: int, who: Requester) -> None:
        """Thread replies listing each failed, flaky and errored case with Retell's why."""
        await self._triage.show_failures(run_id, who)

    async def publish(self, value: str, who: Requester) -> None:
        """A **Publish** press: the agent's tested version published once, said in the thread."""
        await self._publishing.publish(value, who)

    async def status(self, who: Requester, batch_id: str | None) -> Message:
        """The `status` command: the runs in flight here, or one batch's status."""
        return await self._triage.status(who, batch_id)

    async def sweep(self) -> None:
        """One follow-up pass (an APScheduler job): refresh what is due, finish what is done."""
        await self._sweep.sweep()

    async def tell(self, who: Requester, message: Message) -> None:
        """Answer someone privately (or in the channel, for a schedule's `announce`)."""
        await self._services.tell(who, message)
