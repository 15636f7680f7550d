"""Retell errors are explained in words a user understands; Slack failures don't lose results.

Each test types `/retell-test` over signed HTTP, lets the stand-ins fail the way Retell and Slack
do (404, 401, 422, 429, 5xx, a hung request; a channel the bot can't post in, chat.update
failing), and checks what the requester is told, what the channel shows, and what the store
recorded. Retries are kept fast with a small `Retry-After` (retell-sdk honours it) and short
timeouts.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import text

from bot.store import Run, RunState, create_engine
from bot.testing.retell import FakeRetell
from bot.testing.slack import FakeSlack, SlackUser

from ..helpers import (
    CHANNEL,
    ENGINE,
    USER,
    BotFactory,
    RunningBot,
    results,
    top_level,
    visible_text,
)

QUICK_RETRY = 0.01  # Retry-After the stand-ins send, in seconds
DM_CHANNEL = "D" + USER[1:]  # where FakeSlack puts chat.postMessage(channel=<user id>)


# -- helpers -----------------------------------------------------------------------------------


async def failed_privately(bot: RunningBot, slack: FakeSlack, response_url: str) -> tuple[str, Run]:
    """The requester's private explanation, after checking nothing reached any channel.

    Returns the explanation's visible text and the run the store recorded as failed.
    """
    await slack.wait_for(lambda: bool(slack.responses_to(response_url)))
    [body] = slack.responses_to(response_url)
    assert body.get("response_type") == "ephemeral"
    shown = visible_text(body)
    assert "Couldn't start" in shown
    assert slack.messages == [], "no status message (nor anything else) was posted"
    [run] = await bot.app.store.recent_runs()
    assert run.state == RunState.FAILED.value
    assert run.error, "the store keeps why the run failed"
    assert run.batch_id is None
    return shown, run


def everything_slack_saw(slack: FakeSlack) -> str:
    """Every parameter of every Web API call and every response_url body, as one string."""
    return json.dumps(
        {
            "calls": [call.params for call in slack.calls],
            "responses": slack.responses,
            "messages": [m.to_json() for m in slack.messages],
            "ephemerals": [e.text for e in slack.ephemerals],
        },
        default=str,
    )


# -- the batch cannot be created -------------------------------------------------------------


@pytest.mark.parametrize(
    ("tests", "named"),
    [
        ("llm_nope tc_1", "llm_nope"),
        (f"{ENGINE}@9 tc_1", "Version 9"),
    ],
    ids=["unknown-engine", "unknown-version"],
)
async def test_not_found_says_retell_could_not_find_it(
    bot: RunningBot,
    slack: FakeSlack,
    retell: FakeRetell,
    user: SlackUser,
    tests: str,
    named: str,
) -> None:
    reply = await user.command(bot.events_url, tests)
    assert reply.status == 200
    shown, run = await failed_privately(bot, slack, reply.response_url)
    assert "could not find" in shown and "404" in shown
    assert named in shown, "Retell's own words say which id was not found"
    assert named in (run.error or "")
    assert retell.count("/create-batch-test") == 1, "a 404 is not retried"
    assert retell.batches == {}


async def test_bad_api_key_is_explained_without_showing_the_key(
    start_bot: BotFactory, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    secret = "key_wrong_7c1e9a52d4"
    async with start_bot(retell_api_key=secret) as bot:
        reply = await user.command(bot.events_url, f"{ENGINE} tc_1 tc_2")
        shown, run = await failed_privately(bot, slack, reply.response_url)
        assert "API key" in shown and "401" in shown
        assert "RETELL_API_KEY" in shown, "the admin knows which setting to fix"
        assert retell.count("/create-batch-test") == 1, "a 401 is not retried"
        assert secret not in everything_slack_saw(slack)
        assert secret not in reply.text
        assert secret not in (run.error or "")


@pytest.mark.parametrize("status", [422, 400])
async def test_validation_error_says_invalid_with_retells_message(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser, status: int
) -> None:
    message = "response_engine.version must be a non-negative integer."
    retell.fail_next("/create-batch-test", status, message=message)
    reply = await user.command(bot.events_url, f"{ENGINE} tc_1")
    shown, _ = await failed_privately(bot, slack, reply.response_url)
    assert "invalid" in shown and str(status) in shown
    assert message in shown, "Retell's explanation is passed on"
    assert retell.count("/create-batch-test") == 1


async def test_rate_limit_twice_then_success_creates_the_batch(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    retell.fail_next("/create-batch-test", 429, times=2, retry_after=QUICK_RETRY)
    reply = await user.command(bot.events_url, f"{ENGINE} tc_1 tc_2")
    await slack.wait_for(lambda: len(results(slack)) == 1)
    statuses = [r.status for r in retell.requests if r.path == "/create-batch-test"]
    assert statuses[:2] == [429, 429] and len(statuses) == 3 and statuses[2] < 300
    assert len(retell.batches) == 1, "exactly one batch despite the retries"
    [result] = results(slack)
    assert "2 passed" in result.text
    assert slack.responses_to(reply.response_url) == [], "no error was reported"
    [run] = await bot.app.store.recent_runs()
    assert run.state == RunState.COMPLETE.value


@pytest.mark.parametrize(
    ("retries", "burst", "created"),
    [(1, 5, False), (3, 2, True)],
    ids=["burst-longer-than-retries", "burst-shorter-than-retries"],
)
async def test_server_errors_are_retried_then_explained(
    start_bot: BotFactory,
    slack: FakeSlack,
    retell: FakeRetell,
    user: SlackUser,
    retries: int,
    burst: int,
    created: bool,
) -> None:
    retell.fail_next("/create-batch-test", 503, times=burst, retry_after=QUICK_RETRY)
    async with start_bot(retell_max_retries=retries) as bot:
        reply = await user.command(bot.events_url, f"{ENGINE} tc_1")
        if created:
            await slack.wait_for(lambda: len(results(slack)) == 1)
            assert retell.count("/create-batch-test") == burst + 1
            assert len(retell.batches) == 1
            assert slack.responses_to(reply.response_url) == []
        else:
            shown, _ = await failed_privately(bot, slack, reply.response_url)
            assert "Retell is having trouble" in shown and "503" in shown
            assert retell.count("/create-batch-test") == retries + 1
            assert retell.batches == {}


async def test_a_500_on_create_is_not_retried_and_says_it_may_exist(
    start_bot: BotFactory, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    """Retell may have created the batch before failing: trying again could bill it twice."""
    retell.fail_next("/create-batch-test", 500, times=1, retry_after=QUICK_RETRY)
    async with start_bot(retell_max_retries=3) as bot:
        reply = await user.command(bot.events_url, f"{ENGINE} tc_1")
        shown, _ = await failed_privately(bot, slack, reply.response_url)
    assert retell.count("/create-batch-test") == 1
    assert "Retell is having trouble" in shown and "500" in shown
    assert "may" in shown and "dashboard" in shown


async def test_timeout_says_retell_did_not_answer_in_time(
    start_bot: BotFactory, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    retell.delay("/create-batch-test", 1.0, times=1)
    async with start_bot(retell_timeout_seconds=0.3, retell_max_retries=0) as bot:
        reply = await user.command(bot.events_url, f"{ENGINE} tc_1")
        shown, _ = await failed_privately(bot, slack, reply.response_url)
        assert "did not answer in time" in shown


async def test_follow_up_survives_retell_failing_for_a_while(
    start_bot: BotFactory, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    outage = 6
    retell.fail_next("/v2/list-batch-tests", 500, times=outage, retry_after=QUICK_RETRY)
    retell.fail_next("/get-batch-test", 500, times=outage, retry_after=QUICK_RETRY)
    async with start_bot(retell_max_retries=0) as bot:
        # Two batches of one engine: followed through the list call and one by one.
        first = await user.command(bot.events_url, f"{ENGINE} tc_1 tc_2")
        second = await user.command(bot.events_url, f"{ENGINE} tc_3 tc_fail_1")
        await slack.wait_for(
            lambda: (
                len(results(slack)) == 2
                and all(slack.thread(CHANNEL, m.ts) for m in top_level(slack))
            ),
            timeout=15,
        )

        checks = [
            r.status
            for r in retell.requests
            if r.path.startswith(("/v2/list-batch-tests", "/get-batch-test"))
        ]
        assert checks[:outage] == [500] * outage, "Retell was down for several checks"
        assert any(status == 200 for status in checks), "the result came once it recovered"
        assert slack.responses_to(first.response_url) == []
        assert slack.responses_to(second.response_url) == [], "a failed check alarms no one"
        assert len(top_level(slack)) == 2, "one status message per batch, never re-posted"
        for message in top_level(slack):
            assert " total" in message.text
            mentions = slack.thread(CHANNEL, message.ts)
            assert len(mentions) == 1 and f"<@{USER}>" in mentions[0].text
        runs = await bot.app.store.recent_runs()
        assert {r.state for r in runs} == {RunState.COMPLETE.value}
        assert all(r.reported_at is not None for r in runs)
        by_batch = {r.batch_id: r for r in runs}
        assert set(by_batch) == set(retell.batches)
        assert {(r.passed, r.failed) for r in runs} == {(2, 0), (1, 1)}


# -- Slack side ----------------------------------------------------------------------------------


async def test_bot_joins_a_public_channel_it_is_not_in(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    slack.add_channel(CHANNEL, "general", member=False)
    await user.command(bot.events_url, f"{ENGINE} tc_1 tc_2")
    await slack.wait_for(lambda: len(results(slack)) == 1)
    assert slack.count("conversations.join") == 1
    assert [r.error for r in slack.rejections] == ["not_in_channel"]
    assert slack.channels[CHANNEL].member
    assert len(top_level(slack)) == 1


@pytest.mark.parametrize(
    ("channel", "options"),
    [("G0001", {"private": True, "member": False}), ("C0009", {"archived": True})],
    ids=["private-channel-bot-not-in", "archived-channel"],
)
async def test_unpostable_channel_sends_the_result_by_dm(
    bot: RunningBot,
    slack: FakeSlack,
    retell: FakeRetell,
    user: SlackUser,
    channel: str,
    options: dict[str, bool],
) -> None:
    slack.add_channel(channel, "somewhere", **options)
    reply = await user.command(bot.events_url, f"{ENGINE} tc_1 tc_fail_1", channel_id=channel)
    await slack.wait_for(lambda: len(results(slack, DM_CHANNEL)) == 1)

    notices = [visible_text(body) for body in slack.responses_to(reply.response_url)]
    notices += [e.text for e in slack.ephemerals if e.user == USER]
    notices += [m.text for m in top_level(slack, DM_CHANNEL) if " total" not in m.text]
    assert any("could not post" in n for n in notices), "the requester is told at once"
    [result] = results(slack, DM_CHANNEL)
    for phrase in ("1 passed", "1 failed", "2 total", *retell.batches):
        assert phrase in result.text
    assert slack.channel_messages(channel, include_replies=True) == []

    # Many sweeps later (a whole run in another channel), the DM is still the only delivery.
    await user.command(bot.events_url, f"{ENGINE} tc_2")
    await slack.wait_for(lambda: any(slack.thread(CHANNEL, m.ts) for m in results(slack)))
    assert len(results(slack, DM_CHANNEL)) == 1, "the result was delivered exactly once"
    first = min(await bot.app.store.recent_runs(), key=lambda r: r.id)
    assert first.state == RunState.COMPLETE.value and first.reported_at is not None


async def test_unpostable_channel_is_reported_to_the_requester_once(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    slack.add_channel("G0001", "secret", private=True, member=False)
    reply = await user.command(bot.events_url, f"{ENGINE} tc_1 tc_2 tc_3", channel_id="G0001")
    await slack.wait_for(lambda: len(results(slack, DM_CHANNEL)) == 1)
    notices = [visible_text(body) for body in slack.responses_to(reply.response_url)]
    notices += [e.text for e in slack.ephemerals if e.user == USER]
    notices += [m.text for m in top_level(slack, DM_CHANNEL) if " total" not in m.text]
    assert len([n for n in notices if "could not post" in n]) == 1, notices


async def test_result_is_delivered_once_after_chat_update_fails(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    retell.next_batch_durations = [0.0]  # complete at once: the only chat.update is the result
    # A 500 is retried inside slack_sdk (0.5-1.5 s); 502s are not, so they make the bot's own
    # delivery fail three times, to be retried by later sweeps.
    slack.fail_next("chat.update", status=500)
    slack.fail_next("chat.update", status=502, times=3)
    await user.command(bot.events_url, f"{ENGINE} tc_1 tc_error_1")
    await slack.wait_for(lambda: len(results(slack)) == 1, timeout=15)
    [status] = top_level(slack)
    await slack.wait_for(lambda: len(slack.thread(CHANNEL, status.ts)) == 1)

    assert slack.count("chat.update") == 5
    assert status.update_count == 1, "the status message became the result exactly once"
    for phrase in ("1 passed", "0 failed", "1 errored", "2 total"):
        assert phrase in status.text
    [run] = await bot.app.store.recent_runs()
    assert run.reported_at is not None
    assert run.delivery_attempts == 0, "Slack being unavailable is waited out, not counted"
    assert len(slack.thread(CHANNEL, status.ts)) == 1, "the requester is mentioned once"


# -- shutdown --------------------------------------------------------------------------------------


async def test_store_engine_survives_a_cancelled_checkout(tmp_path: Path) -> None:
    """Why test runs (and a stopping bot) sometimes hang forever when the event loop closes."""
    engine = create_engine(f"sqlite:///{tmp_path / 'cancel.db'}")
    stuck: set[asyncio.Task[Any]] = set()
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        with anyio.CancelScope() as scope:
            scope.cancel()  # what stopping APScheduler does to a sweep in the middle of a query
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        closing = {t for t in asyncio.all_tasks() if "graceful_close" in repr(t)}
        if closing:
            _, stuck = await asyncio.wait(closing, timeout=0.5)
        assert not stuck, "a connection close never finishes: the event loop can't shut down"
    finally:
        for task in stuck:
            task.cancel()  # the second cancel gets it out of aiosqlite's close()
        await asyncio.gather(*stuck, return_exceptions=True)
        await engine.dispose()


async def test_a_start_that_breaks_after_the_ack_tells_the_requester(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    """Retell answers 200 with something that is no batch: the bot must not go quiet."""
    retell.fail_next("/create-batch-test", 200, message="not a batch")
    reply = await user.command(bot.events_url, f"{ENGINE} tc_1")
    assert reply.status == 200
    await slack.wait_for(lambda: bool(slack.responses_to(reply.response_url)))
    [answer] = slack.responses_to(reply.response_url)
    assert "went wrong" in visible_text(answer)
    assert top_level(slack) == []
    [run] = await bot.app.store.recent_runs()
    assert run.state == RunState.FAILED.value, "a later sweep must not tell the requester again"


def test_a_test_runs_page_is_read_defensively() -> None:
    """Pages are read as raw JSON (see `RetellGateway.test_runs`), so odd items are tolerated."""
    from bot.retell import TestRun, _test_runs_page

    page = {
        "items": [
            {"test_case_definition_id": "tc_1", "status": "fail", "result_explanation": "No."},
            {
                "test_case_job_id": "j2",
                "test_case_definition_id": "tc_2",
                "test_case_definition_snapshot": {"name": "Refund"},
                "status": "brand_new_status",
                "result_explanation": None,
            },
        ],
        "has_more": True,
        "pagination_key": "k2",
    }
    assert _test_runs_page(page) == (
        [
            TestRun("", "tc_1", "tc_1", "fail", "No."),
            TestRun("j2", "tc_2", "Refund", "pending", None),
        ],
        True,
        "k2",
    )
    last = {"items": [], "has_more": False, "pagination_key": "k"}
    assert _test_runs_page(last) == ([], False, "k"), "whether to go on is PageWalk's to say"
    for garbage in (None, [], {"items": None}, {"items": ["x"]}, {"items": [{}]}):
        with pytest.raises((ValueError, KeyError)):
            _test_runs_page(garbage)
