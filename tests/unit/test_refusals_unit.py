"""`Refusals` alone: who may run tests where, as `Refusal` data, on an in-memory store.

The policy returns data and each surface renders it (`blocks.refused`, `modal.refusal_error`),
so what is refused, and whom it names, is tested here without Slack or a database.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from bot import blocks
from bot.metrics import Metrics
from bot.refusal import Refusal
from bot.runs.context import Services
from bot.runs.refusals import Refusals
from bot.runs.requests import Requester
from bot.settings import load_settings
from bot.slackapi import SlackGateway
from bot.store import Store
from bot.workspaces.accounts import RetellAccounts

NOW = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
HERE = Requester("T0TEAM", "C0ALLOWED", "U0ALLOWED")


class RunCounts:
    """The one query the hourly limit asks of the store: runs a user started since a time."""

    def __init__(self, started: int) -> None:
        self.started = started
        self.asked: list[tuple[str, datetime]] = []

    async def runs_by_user_since(self, user_id: str, since: datetime) -> int:
        self.asked.append((user_id, since))
        return self.started


def refusals(started: int = 0, **settings: Any) -> tuple[Refusals, RunCounts]:
    store = RunCounts(started)
    services = Services(
        settings=load_settings(
            slack_bot_token="xoxb-test",
            slack_signing_secret="secret",
            retell_api_key="key_test",
            _env_file=None,
            **settings,
        ),
        store=cast(Store, store),
        retell=cast(RetellAccounts, object()),
        slack=cast(SlackGateway, object()),
        metrics=Metrics(),
        clock=lambda: NOW,
        lease=timedelta(seconds=1),
        slack_calls=asyncio.Semaphore(1),
    )
    return Refusals(services), store


def test_everyone_may_run_tests_when_no_list_is_set() -> None:
    policy, _ = refusals()
    assert policy.not_allowed(HERE) is None


def test_a_channel_off_the_list_is_refused_naming_the_admins() -> None:
    policy, _ = refusals(allowed_channel_ids="C0OTHER", admin_user_ids="U0ADMIN2,U0ADMIN1")
    assert policy.not_allowed(HERE) == Refusal(
        "Retell tests can't be run from this channel.", frozenset({"U0ADMIN1", "U0ADMIN2"})
    )
    assert policy.not_allowed(Requester("T0TEAM", "C0OTHER", "U0ALLOWED")) is None


def test_a_person_off_the_list_is_refused_and_the_message_mentions_the_admins() -> None:
    policy, _ = refusals(allowed_user_ids="U0OTHER", admin_user_ids="U0ADMIN")
    refusal = policy.not_allowed(HERE)
    assert refusal is not None and refusal.reason.startswith("You are not on the list")
    assert "Ask <@U0ADMIN> if you need it." in blocks.refused(refusal).text
    many = refusals(allowed_user_ids="U0OTHER", admin_user_ids="U0ADMIN2,U0ADMIN1")[0]
    named = many.not_allowed(HERE)
    assert named is not None and "Ask <@U0ADMIN1>, <@U0ADMIN2> if" in blocks.refused(named).text


async def test_the_hourly_limit_counts_every_batch_of_a_repeat() -> None:
    policy, store = refusals(started=28, max_runs_per_user_per_hour=30)
    assert await policy.refusal(HERE, runs=2) is None
    refusal = await policy.refusal(HERE, runs=3)
    assert refusal is not None
    assert "started 28 runs in the last hour" in refusal.reason
    assert "3 more would go over it" in refusal.reason
    assert store.asked == [("U0ALLOWED", NOW - timedelta(hours=1))] * 2


async def test_schedule_firings_skip_the_hourly_limit_but_not_the_lists() -> None:
    policy, store = refusals(started=99, max_runs_per_user_per_hour=30)
    assert await policy.refusal(HERE, hourly_limit=False) is None
    assert store.asked == []  # not even asked
    listed, _ = refusals(started=99, allowed_user_ids="U0OTHER")
    assert await listed.refusal(HERE, hourly_limit=False) is not None
