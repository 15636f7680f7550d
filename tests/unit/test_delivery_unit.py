"""`Delivery` alone: a finished run's result against in-memory stand-ins of the store and Slack.

No database, no HTTP: the collaborator is built from a `Services` holding small fakes that
record what was asked of them, which is what a unit of the workflow should be testable with.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from bot.blocks import Message
from bot.metrics import Metrics
from bot.pacing import Priority
from bot.runs import MAX_DELIVERY_ATTEMPTS
from bot.runs.context import Services
from bot.runs.delivery import Delivery
from bot.runs.publishing import Publishing
from bot.runs.status import StatusMessages
from bot.settings import load_settings
from bot.slackapi import OUTAGE_CODES, SlackFailure, SlackGateway
from bot.store import Run, Store
from bot.workspaces.accounts import RetellAccounts

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def finished_run(**changes: Any) -> Run:
    """A completed run as the sweep hands it to delivery: status message posted, claim held."""
    values: dict[str, Any] = {
        "id": 7,
        "team_id": "T0TEAM",
        "channel_id": "C0CHANNEL",
        "user_id": "U0REQUESTER",
        "source": "command",
        "rerun_of": None,
        "engine_type": "agent",
        "engine_id": "agent_1",
        "engine_version": None,
        "case_ids": ["c1", "c2"],
        "case_count": 2,
        "state": "complete",
        "batch_id": "batch_1",
        "error": None,
        "passed": 2,
        "failed": 0,
        "errored": 0,
        "total": 2,
        "status_ts": "1700000000.000100",
        "status_posting_since": None,
        "shown_counts": None,
        "created_at": NOW - timedelta(minutes=5),
        "started_at": NOW - timedelta(minutes=5),
        "finished_at": NOW,
        "reported_at": None,
        "mention_pending": False,
        "claim": "claim-1",
        "delivery_attempts": 0,
        "channel_error": None,
        "cases_recorded_at": NOW,
        "schedule_id": None,
        "label": None,
        "scheduled_for": None,
        "notify": None,
        "mention": None,
        "repeats": 1,
        "repeat_of": None,
        "failures_shown_at": None,
    }
    values.update(changes)
    return Run(**values)


@dataclass
class StoreStandIn:
    """The store calls delivery makes, recorded; the conditional updates always succeed."""

    calls: list[tuple[str, Any]] = field(default_factory=list)

    async def previous_run(self, run: Run) -> Run | None:
        return None  # the first run of its suite here

    async def mark_reported(
        self, run_id: int, claim: str | None, *, now: datetime, mention: bool = False
    ) -> bool:
        self.calls.append(("mark_reported", mention))
        return True

    async def mark_mentioned(self, run_id: int, claim: str | None) -> None:
        self.calls.append(("mark_mentioned", run_id))

    async def set_channel_error(self, run_id: int, code: str) -> None:
        self.calls.append(("set_channel_error", code))

    async def defer_delivery(
        self, run_id: int, claim: str | None, *, retry_in: float, now: datetime
    ) -> None:
        self.calls.append(("defer_delivery", retry_in))

    async def delivery_failed(
        self, run_id: int, claim: str | None, *, retry_in: float, now: datetime
    ) -> None:
        self.calls.append(("delivery_failed", retry_in))

    async def give_up_delivery(self, run_id: int, claim: str | None, *, now: datetime) -> None:
        self.calls.append(("give_up_delivery", run_id))

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


@dataclass
class SlackStandIn:
    """Slack as delivery sees it; `failure` is raised by every edit when set."""

    failure: BaseException | None = None
    edited: list[Message] = field(default_factory=list)
    posted: list[tuple[Message, str | None, dict[str, Any] | None]] = field(default_factory=list)
    direct: list[tuple[str, Message]] = field(default_factory=list)

    def of(self, team_id: str) -> SlackStandIn:
        return self  # one workspace

    async def edit(
        self, team_id: str, channel_id: str, ts: str, message: Message, *, priority: Priority
    ) -> None:
        if self.failure is not None:
            raise self.failure
        self.edited.append(message)

    async def post(
        self,
        channel_id: str,
        message: Message,
        *,
        thread_ts: str | None = None,
        metadata: dict[str, Any] | None = None,
        priority: Priority = Priority.RESULT,
        defer: bool = False,
    ) -> str:
        self.posted.append((message, thread_ts, metadata))
        return "1700000000.000200"

    async def find_reply(self, *args: Any, **kwargs: Any) -> bool:
        return False

    async def direct_message(self, user_id: str, message: Message, *, defer: bool = False) -> None:
        self.direct.append((user_id, message))


def slack_error(code: str, status: int = 200) -> SlackFailure:
    """What the gateway raises when Slack answers `code` with HTTP `status`."""
    return SlackFailure(code, outage=status >= 500 or code in OUTAGE_CODES, answered=True)


def delivery(store: StoreStandIn, slack: SlackStandIn) -> Delivery:
    settings = load_settings(
        slack_bot_token="xoxb-test",
        slack_signing_secret="secret",
        retell_api_key="key_test",
        database_url="sqlite+aiosqlite://",
        poll_initial_seconds=0.5,
        poll_max_seconds=4.0,
        _env_file=None,
    )
    services = Services(
        settings=settings,
        store=cast(Store, store),
        retell=cast(RetellAccounts, object()),  # a recorded, all-passed run reads nothing there
        slack=cast(SlackGateway, slack),
        metrics=Metrics(),
        clock=lambda: NOW,
        lease=timedelta(seconds=1),
        slack_calls=asyncio.Semaphore(8),
    )
    return Delivery(services, StatusMessages(services), Publishing(services))


async def test_the_status_message_becomes_the_result_and_the_requester_is_mentioned_once() -> None:
    store, slack = StoreStandIn(), SlackStandIn()
    await delivery(store, slack).deliver(finished_run(), "claim-1")

    assert len(slack.edited) == 1 and "2 passed" in slack.edited[0].text
    assert store.calls[0] == ("mark_reported", True)  # the claim kept for the mention
    [(reply, thread_ts, metadata)] = slack.posted
    assert "<@U0REQUESTER>" in reply.text and thread_ts == "1700000000.000100"
    assert metadata == {
        "event_type": "retell_run_reply",
        "event_payload": {"run_id": 7, "kind": "requester"},
    }
    assert store.names() == ["mark_reported", "mark_mentioned"]


async def test_a_channel_the_bot_lost_gets_no_result_the_requester_gets_it_by_dm() -> None:
    store, slack = StoreStandIn(), SlackStandIn(failure=slack_error("channel_not_found"))
    run = finished_run()
    await delivery(store, slack).deliver(run, "claim-1")

    assert ("set_channel_error", "channel_not_found") in store.calls
    assert [user for user, _ in slack.direct] == ["U0REQUESTER"]
    assert slack.posted == []  # the DM is the notification: no mention in the channel
    assert run.channel_error == "channel_not_found"


async def test_a_slack_outage_defers_the_result_without_counting_an_attempt() -> None:
    store, slack = StoreStandIn(), SlackStandIn(failure=slack_error("internal_error", 503))
    await delivery(store, slack).deliver(finished_run(), "claim-1")

    assert store.names() == ["defer_delivery"]
    assert slack.posted == [] and slack.direct == []


async def test_a_refused_result_is_retried_then_given_up_after_the_last_attempt() -> None:
    store, slack = StoreStandIn(), SlackStandIn(failure=slack_error("msg_too_long"))
    await delivery(store, slack).deliver(finished_run(delivery_attempts=0), "claim-1")
    last = MAX_DELIVERY_ATTEMPTS - 1
    await delivery(store, slack).deliver(finished_run(delivery_attempts=last), "claim-1")

    assert store.calls[0] == ("delivery_failed", 0.5 * 2)  # backed off from POLL_INITIAL
    assert store.names() == ["delivery_failed", "give_up_delivery"]
