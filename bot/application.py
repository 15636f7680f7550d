"""The one object built at start-up: settings, clients, store, scheduler, workflow, Bolt app.

Everything else receives what it needs from here; nothing is global. `Application.running()`
is the whole life cycle: migrate, start the scheduler, serve, and shut down in order.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from apscheduler import AsyncScheduler
from slack_bolt.async_app import AsyncApp

from bot import admission, listeners
from bot.metrics import Metrics
from bot.reports import Reports
from bot.retell import RetellGateway
from bot.runs import RunWorkflow
from bot.schedules import Schedules
from bot.scheduling import (
    SchedulerState,
    SchedulerSupervisor,
    build_scheduler,
    install_firing,
    install_sweep,
)
from bot.settings import Settings
from bot.slackapi import SlackGateway, web_client
from bot.store import SharedBook, Store
from bot.workspaces.accounts import RetellAccounts
from bot.workspaces.connect import RetellConnect, register_connect

if TYPE_CHECKING:
    from bot.workspaces.distribution import Workspaces

log = logging.getLogger(__name__)

SHUTDOWN_DRAIN_SECONDS = 15.0  # PaaS allow 30 s after SIGTERM; the rest is for the scheduler


@dataclass
class Application:
    settings: Settings
    metrics: Metrics
    store: Store
    retell: RetellGateway  # RETELL_API_KEY's account
    accounts: RetellAccounts  # each workspace's
    slack: SlackGateway
    scheduler: AsyncScheduler
    workflow: RunWorkflow
    schedules: Schedules
    bolt: AsyncApp
    supervisor: SchedulerSupervisor

    @classmethod
    def build(cls, settings: Settings, *, store: Store | None = None) -> Application:
        """`store`: one opened (and migrated) already, by `bot.early` during start-up."""
        metrics = Metrics()
        store = store or admission.open_store(settings)
        accounts = RetellAccounts.connect(settings, store, metrics=metrics)
        token = settings.slack_bot_token
        client = web_client(
            token.get_secret_value() if token else None, settings.slack_api_url, metrics=metrics
        )
        book = SharedBook(store)
        workspaces: Workspaces | None = None
        if settings.distribution:  # imported only then: one workspace starts without OAuth
            from bot.workspaces.distribution import Workspaces

            workspaces = Workspaces.build(settings, store, client, book=book, metrics=metrics)
        slack = SlackGateway(
            client,
            book=book,
            edits_per_minute=settings.slack_edits_per_minute,
            posts_per_minute=settings.slack_posts_per_minute,
            of=workspaces.clients.gateway if workspaces is not None else None,
        )
        workflow = RunWorkflow(settings, store, accounts, slack, metrics=metrics)
        scheduler = build_scheduler(store.engine, lease_seconds=settings.follow_up_lease_seconds)
        reports = Reports(store, slack)
        schedules = Schedules(settings, store, scheduler, workflow, reports, accounts, slack)
        signing_secret = settings.slack_signing_secret
        bolt = AsyncApp(
            client=client,
            signing_secret=signing_secret.get_secret_value() if signing_secret else "",
            # Socket Mode envelopes are authenticated by the socket itself.
            request_verification_enabled=not settings.socket_mode,
            logger=logging.getLogger("bot.bolt"),
            **(workspaces.bolt_options() if workspaces is not None else {}),
        )
        connect = RetellConnect(settings, accounts, slack, republish_home=schedules.publish_home)
        schedules.add_home_section(connect.home_section)
        register_connect(bolt, connect)
        # The modal first: `register` has listeners for every command text and action id.
        listeners.register_modal(bolt, workflow, accounts, max_cases=settings.max_cases_per_run)
        if workspaces is not None:
            workspaces.register(bolt, scheduler, accounts)
        listeners.register(bolt, workflow, schedules, reports)

        async def prepare(started: AsyncScheduler) -> None:
            await install_sweep(
                started, workflow.sweep, every_seconds=settings.poll_tick_seconds, metrics=metrics
            )
            await install_firing(started, schedules.fire, metrics=metrics)

        supervisor = SchedulerSupervisor(
            scheduler,
            prepare=prepare,
            entry_lock=store.one_replica_at_a_time,
            nudge_seconds=settings.follow_up_lease_seconds,
            metrics=metrics,
        )
        return cls(
            settings=settings,
            metrics=metrics,
            store=store,
            retell=accounts.deployment,
            accounts=accounts,
            slack=slack,
            scheduler=scheduler,
            workflow=workflow,
            schedules=schedules,
            bolt=bolt,
            supervisor=supervisor,
        )

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Application]:
        """Migrate, start the scheduler and the follow-up sweep; undo it all on the way out."""
        await self.store.upgrade()
        try:
            async with self.supervisor.running():
                log.info(
                    "scheduler started; follow-up sweep every %.2fs",
                    self.settings.poll_tick_seconds,
                )
                # Start-up leaves ~300k long-lived objects (retell-sdk's pydantic models alone
                # are 200k) that every full garbage collection would walk again, stalling all
                # requests for 100-250 ms; frozen, they are never scanned (bench/ack.py: p99
                # 160-280 ms -> ~70 ms).
                if not gc.get_freeze_count():  # `serve` froze it after the import already
                    gc.collect()
                    gc.freeze()
                try:
                    yield self
                finally:
                    await self.workflow.drain(timeout=SHUTDOWN_DRAIN_SECONDS)
                    # Stopping APScheduler cancels its loops, possibly mid-query; SQLAlchemy then
                    # discards those connections and logs each as an ERROR with a traceback.
                    # Nothing is lost (the process is exiting, the transactions roll back), so
                    # the pool's log is quieted for the shutdown only.
                    logging.getLogger("sqlalchemy.pool").setLevel(logging.CRITICAL)
        finally:
            await self.accounts.close()
            await self.store.close()

    async def healthy(self) -> dict[str, str]:
        """What /healthz reports: empty when healthy, else the failing parts."""
        problems: dict[str, str] = {}
        try:
            await self.store.ping()
        except Exception as exc:  # any database failure means "not healthy"
            log.debug("health check: database unreachable: %s", type(exc).__name__)
            problems["database"] = "unreachable"
        if self.supervisor.state is not SchedulerState.STARTED:
            problems["scheduler"] = self.supervisor.state.value
        return problems
