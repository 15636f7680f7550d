"""Faults the bot survives (issue 6 item 5), each injected into the stand-ins of Retell and Slack.

Every test runs the real bot over real HTTP on SQLite and on PostgreSQL (`database_url`), breaks
Retell or Slack the way they break in production, and checks what the channel, the requester,
the store and the logs show afterwards. Waits are kept short by configuration (poll intervals,
timeouts, `Retry-After`), never by skipping a step.

Faults already shown elsewhere (not repeated here):

- Retell 5xx burst during create, then recovery: test_errors.py::
  test_server_errors_are_retried_then_explained[burst-shorter-than-retries]
- Retell 5xx burst during follow-up, then recovery: test_errors.py::
  test_follow_up_survives_retell_failing_for_a_while
- Retell 429 on create (retried, one batch): test_errors.py::
  test_rate_limit_twice_then_success_creates_the_batch (the wait is measured here)
- Retell timing out on create, retries spent: test_errors.py::
  test_timeout_says_retell_did_not_answer_in_time
- A batch that never completes ends as timed out with its last counts: test_flow.py::
  test_timed_out_batch_shows_its_last_counts
- Slack 5xx on chat.update, retried by slack_sdk (500) and by later sweeps (502): test_errors.py::
  test_result_is_delivered_once_after_chat_update_fails (also: a failed result is retried)
- not_in_channel in a public channel: the bot joins: test_errors.py::
  test_bot_joins_a_public_channel_it_is_not_in
- channel_not_found / is_archived when the status is first posted: the requester is told and
  gets the result by DM: test_errors.py::test_unpostable_channel_sends_the_result_by_dm,
  test_unpostable_channel_is_reported_to_the_requester_once
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import pytest
from slack_sdk.http_retry.builtin_interval_calculators import FixedValueRetryIntervalCalculator
from sqlalchemy import update

from bot.blocks import Message
from bot.pacing import MemoryBook
from bot.runs import MAX_DELIVERY_ATTEMPTS, RECOVERY_PAGE, all_settled
from bot.slackapi import SlackGateway, retry_after_seconds, web_client
from bot.store import Run, RunState, utcnow
from bot.suite import Engine, Suite
from bot.testing.retell import FakeRetell, RecordedRequest
from bot.testing.slack import ApiCall, Bucket, FakeSlack, SlackTiers, SlackUser

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

DM_CHANNEL = "D" + USER[1:]  # where FakeSlack puts chat.postMessage(channel=<user id>)
OTHER_CHANNEL = "C0002"


# -- helpers -----------------------------------------------------------------------------------


async def only_run(bot: RunningBot) -> Run:
    [run] = await bot.app.store.recent_runs()
    return run


async def only_run_in(bot: RunningBot, channel: str) -> Run:
    [run] = [r for r in await bot.app.store.recent_runs() if r.channel_id == channel]
    return run


async def settled_run(bot: RunningBot, timeout: float = 10.0) -> Run:
    """The only run, once nobody holds it and no mention is owed (asked of the database: no
    event says so)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        run = await only_run(bot)
        if (run.claim is None and not run.mention_pending) or (
            asyncio.get_running_loop().time() > deadline
        ):
            return run
        await asyncio.sleep(0.02)


async def run_with_status_recorded(bot: RunningBot, timeout: float = 10.0) -> Run:
    """The only run, once its status message's `ts` is recorded (Slack has the message a
    moment before the database knows it; asked of the database: no event says so)."""
    deadline = asyncio.get_running_loop().time() + timeout
    run = await only_run(bot)
    while run.status_ts is None and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
        run = await only_run(bot)
    assert run.status_ts is not None, "the status message was never recorded"
    return run


async def batch_ids(retell: FakeRetell) -> list[str]:
    """The ids of the batches created at Retell, once there is one."""
    await retell.wait_for(lambda: bool(retell.batches))
    return list(retell.batches)


def retell_calls(retell: FakeRetell, path: str) -> list[RecordedRequest]:
    return [r for r in retell.requests if r.path.startswith(path)]


def slack_calls(slack: FakeSlack, method: str) -> list[ApiCall]:
    return [c for c in slack.calls if c.method == method]


def retried_after(requests: list[RecordedRequest], status: int) -> float:
    """Seconds between the first request answered `status` and the request that followed it."""
    index = next(i for i, r in enumerate(requests) if r.status == status)
    return requests[index + 1].time - requests[index].time


def private_notices(slack: FakeSlack, response_url: str) -> list[str]:
    """Everything the requester alone was shown: response_url replies, ephemerals, DMs."""
    notices = [visible_text(body) for body in slack.responses_to(response_url)]
    notices += [e.text for e in slack.ephemerals if e.user == USER]
    notices += [m.text for m in top_level(slack, DM_CHANNEL)]
    return notices


def check_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "check failed" in r.getMessage()]


async def after_more_sweeps(bot: RunningBot, slack: FakeSlack, user: SlackUser) -> None:
    """Let many follow-up sweeps pass: a whole second run, in another channel, to its mention.

    A process runs one sweep at a time, so whatever an earlier sweep was writing to the
    database (a delivery, a give-up) is written by then: no need to poll the database.
    """
    await user.command(bot.events_url, f"{ENGINE} tc_3", channel_id=OTHER_CHANNEL)

    def mentioned() -> bool:
        return any(slack.thread(OTHER_CHANNEL, m.ts) for m in results(slack, OTHER_CHANNEL))

    await slack.wait_for(mentioned, timeout=15)


async def delivered_once(bot: RunningBot, slack: FakeSlack, batch_id: str) -> None:
    """The status message became the result exactly once and the requester was mentioned once."""
    await slack.wait_for(lambda: len(results(slack)) == 1, timeout=15)
    [status] = top_level(slack)
    await slack.wait_for(lambda: len(slack.thread(CHANNEL, status.ts)) == 1)
    assert batch_id in status.text
    [mention] = slack.thread(CHANNEL, status.ts)
    assert f"<@{USER}>" in mention.text
    run = await only_run(bot)
    assert run.state == RunState.COMPLETE.value and run.reported_at is not None


# -- Retell ------------------------------------------------------------------------------------


async def test_retell_429_retry_waits_the_retry_after(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    """429 with Retry-After on create and on a follow-up check: retried after that long."""
    retry_after = 0.6
    retell.fail_next("/create-batch-test", 429, retry_after=retry_after)
    retell.fail_next("/get-batch-test", 429, retry_after=retry_after)
    retell.fail_next("/v2/list-batch-tests", 429, retry_after=retry_after)
    reply = await user.command(bot.events_url, f"{ENGINE} tc_1 tc_fail_1")
    await slack.wait_for(lambda: len(results(slack)) == 1, timeout=15)

    creates = retell_calls(retell, "/create-batch-test")
    assert [r.status for r in creates] == [429, 201]
    assert retry_after <= retried_after(creates, 429) < retry_after + 1.0
    checks = [
        r for r in retell.requests if r.path.startswith(("/get-batch-test", "/v2/list-batch-tests"))
    ]
    refused = [r for r in checks if r.status == 429]
    assert refused, "a follow-up check was refused"
    for request in refused:
        same_path = [r for r in checks if r.path == request.path]
        assert retry_after <= retried_after(same_path, 429) < retry_after + 1.0
    [batch_id] = retell.batches
    [result] = results(slack)
    for phrase in ("1 passed", "1 failed", "2 total", batch_id):
        assert phrase in result.text
    assert slack.responses_to(reply.response_url) == [], "nobody was alarmed"


async def test_retell_timeouts_during_follow_up_are_survived(
    start_bot: BotFactory,
    slack: FakeSlack,
    retell: FakeRetell,
    user: SlackUser,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Checks that get no answer within RETELL_TIMEOUT_SECONDS (retries too) are tried later."""
    caplog.set_level(logging.INFO)
    retell.delay("/get-batch-test", 1.0, times=2)  # longer than the timeout, both SDK tries
    retell.delay("/v2/list-batch-tests", 1.0, times=2)
    async with start_bot(retell_timeout_seconds=0.3, retell_max_retries=1) as bot:
        reply = await user.command(bot.events_url, f"{ENGINE} tc_1 tc_2 tc_error_1")
        [batch_id] = await batch_ids(retell)
        await delivered_once(bot, slack, batch_id)
        [result] = results(slack)
        for phrase in ("2 passed", "0 failed", "1 errored", "3 total"):
            assert phrase in result.text
        assert any("did not answer in time" in w for w in check_warnings(caplog)), (
            "a follow-up check did time out"
        )
        assert slack.responses_to(reply.response_url) == [], "a failed check alarms no one"
        assert len(retell.batches) == 1


async def test_retell_create_timeout_never_creates_two_batches(
    start_bot: BotFactory, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    """Retell creates the batch but answers after the timeout: it must not be created twice."""
    retell.delay("/create-batch-test", 0.6, times=1, answer_late=True)
    async with start_bot(retell_timeout_seconds=0.3, retell_max_retries=1) as bot:
        reply = await user.command(bot.events_url, f"{ENGINE} tc_1")
        # The bot settles: a result in the channel, or a word to the requester.
        await slack.wait_for(
            lambda: bool(results(slack) or slack.responses_to(reply.response_url)), timeout=15
        )
        assert retell.count("/create-batch-test") >= 1
        assert len(retell.batches) == 1, f"batches created at Retell: {list(retell.batches)}"


async def test_retell_slow_answers_within_the_timeout(
    start_bot: BotFactory,
    slack: FakeSlack,
    retell: FakeRetell,
    user: SlackUser,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every Retell answer takes 0.5 s (timeout 3 s): slower, but nothing fails or is re-sent."""
    caplog.set_level(logging.INFO)
    slow = 0.5
    retell.delay("", slow)  # every request
    async with start_bot(retell_timeout_seconds=3.0) as bot:
        reply = await user.command(bot.events_url, f"{ENGINE} tc_1 tc_fail_1")
        assert reply.status == 200
        assert retell.count("/create-batch-test") == 0, "the ack never waits on Retell"
        [batch_id] = await batch_ids(retell)
        await delivered_once(bot, slack, batch_id)
        [result] = results(slack)
        for phrase in ("1 passed", "1 failed", "2 total"):
            assert phrase in result.text
    assert retell.count("/create-batch-test") == 1, "a slow answer is not a reason to retry"
    assert all(r.status < 300 for r in retell.requests)
    assert check_warnings(caplog) == []
    assert slack.responses_to(reply.response_url) == []


# -- Slack -------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["chat.postMessage", "chat.update"])
async def test_slack_429_is_retried_after_retry_after(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser, method: str
) -> None:
    """The status post (chat.postMessage) or the result (chat.update) is rate limited once.

    The 429 goes to the shared budget (`bot.pacing`), which holds that channel's posts or the
    workspace's edits back for `Retry-After`; the call is tried again then, by the follow-up
    that owns it, not by a task sleeping in place. Nothing counts as a failed attempt.
    """
    retell.next_batch_durations = [0.0]  # complete at once: the only chat.update is the result
    slack.fail_next(method, status=429, retry_after=1)
    await user.command(bot.events_url, f"{ENGINE} tc_1 tc_2")
    [batch_id] = await batch_ids(retell)
    await delivered_once(bot, slack, batch_id)

    refused, retried = slack_calls(slack, method)[:2]
    assert (refused.ok, retried.ok) == (False, True)
    assert retried.at - refused.at >= 1.0, "not before Retry-After"
    [message] = top_level(slack)
    assert batch_id in message.text and "2 passed" in message.text, "one message: the result"
    if method == "chat.update":
        assert message.update_count == 1, "one status message, turned into the result once"
    run = await only_run(bot)
    assert run.delivery_attempts == 0, "a rate limit is waited out, not counted as a failure"


async def test_slack_5xx_on_the_status_post_is_survived(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    """chat.postMessage answers 503 (retried by slack_sdk) then 502 twice (the bot retries)."""
    slack.fail_next("chat.postMessage", status=503)
    slack.fail_next("chat.postMessage", status=502, times=2)
    reply = await user.command(bot.events_url, f"{ENGINE} tc_1 tc_2 tc_fail_1")
    [batch_id] = await batch_ids(retell)
    await delivered_once(bot, slack, batch_id)

    statuses = [c.ok for c in slack_calls(slack, "chat.postMessage")]
    assert statuses[:3] == [False, False, False] and statuses[3], "posted once Slack recovered"
    assert len(top_level(slack)) == 1, "no second status message"
    [result] = results(slack)
    for phrase in ("2 passed", "1 failed", "3 total"):
        assert phrase in result.text
    assert slack.responses_to(reply.response_url) == []


async def test_slack_dropped_connections_are_retried(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    """The connection drops once on the result's edit: slack_sdk retries it at once."""
    retell.next_batch_durations = [0.0]
    slack.drop_next("chat.update")
    await user.command(bot.events_url, f"{ENGINE} tc_1 tc_error_1")
    [batch_id] = await batch_ids(retell)
    await delivered_once(bot, slack, batch_id)

    dropped = [r.method for r in slack.rejections if r.error == "dropped"]
    assert dropped == ["chat.update"]
    [status] = top_level(slack)
    assert status.update_count == 1
    assert "1 errored" in status.text
    assert (await only_run(bot)).delivery_attempts == 0


async def test_a_dropped_post_is_looked_for_before_it_is_posted_again(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    """A post is not retried blindly (Slack may have it): the next follow-up searches the
    channel's history, finds nothing and posts the status message once."""
    retell.next_batch_durations = [0.0]
    slack.drop_next("chat.postMessage")
    await user.command(bot.events_url, f"{ENGINE} tc_1 tc_error_1")
    [batch_id] = await batch_ids(retell)
    await delivered_once(bot, slack, batch_id)

    assert [r.method for r in slack.rejections if r.error == "dropped"] == ["chat.postMessage"]
    assert slack.count("conversations.history") >= 1
    [status] = top_level(slack)
    assert "1 errored" in status.text


async def test_slack_dropped_connections_beyond_retries_count_as_a_failed_delivery(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    """The result's chat.update drops more often than slack_sdk retries: a later sweep retries."""
    for handler in bot.app.slack.client.retry_handlers:  # keep slack_sdk's back-off short
        handler.interval_calculator = FixedValueRetryIntervalCalculator(0.05)
    retell.next_batch_durations = [0.0]
    slack.drop_next("chat.update", times=4)  # the first try and slack_sdk's 3 retries
    await user.command(bot.events_url, f"{ENGINE} tc_1 tc_2")
    [batch_id] = await batch_ids(retell)
    await delivered_once(bot, slack, batch_id)

    assert [c.ok for c in slack_calls(slack, "chat.update")] == [False] * 4 + [True]
    [status] = top_level(slack)
    assert status.update_count == 1
    assert (await only_run(bot)).delivery_attempts == 0, "a lost connection is no refusal"


async def test_not_in_channel_and_join_refused_tells_the_requester_and_dms_the_result(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    """A public channel the bot is not in and may not join (no channels:join scope)."""
    slack.add_channel(CHANNEL, "general", member=False)
    slack.fail_next("conversations.join", error="missing_scope", times=5)
    reply = await user.command(bot.events_url, f"{ENGINE} tc_1 tc_fail_1")
    await slack.wait_for(lambda: len(results(slack, DM_CHANNEL)) == 1, timeout=15)

    assert slack.count("conversations.join") >= 1, "it tried to join first"
    notices = private_notices(slack, reply.response_url)
    told = [n for n in notices if "could not post" in n]
    assert len(told) == 1 and "invite" in told[0], notices
    [result] = results(slack, DM_CHANNEL)
    [batch_id] = retell.batches
    for phrase in ("1 passed", "1 failed", "2 total", batch_id):
        assert phrase in result.text
    assert slack.channel_messages(CHANNEL, include_replies=True) == []

    await after_more_sweeps(bot, slack, user)
    assert len(results(slack, DM_CHANNEL)) == 1, "the result was delivered exactly once"
    run = min(await bot.app.store.recent_runs(), key=lambda r: r.id)
    assert (run.channel_error, run.state) == ("not_in_channel", RunState.COMPLETE.value)
    assert run.reported_at is not None


@pytest.mark.parametrize(
    ("error", "change"),
    [
        ("is_archived", {"archived": True}),
        ("channel_not_found", {"private": True, "member": False}),
    ],
    ids=["archived-mid-run", "removed-from-private-channel-mid-run"],
)
async def test_channel_lost_while_the_batch_runs_sends_the_result_by_dm(
    bot: RunningBot,
    slack: FakeSlack,
    retell: FakeRetell,
    user: SlackUser,
    error: str,
    change: dict[str, bool],
) -> None:
    """The status message is up, then the channel is archived (or the bot is removed)."""
    channel = slack.add_channel(CHANNEL, "general")
    retell.complete_never = True
    await user.command(bot.events_url, f"{ENGINE} tc_1 tc_2 tc_error_1")
    await slack.wait_for(lambda: len(top_level(slack)) == 1)
    [batch_id] = retell.batches
    for name, value in change.items():
        setattr(channel, name, value)
    retell.finish_now(batch_id)
    await slack.wait_for(lambda: len(results(slack, DM_CHANNEL)) == 1, timeout=15)

    assert error in [r.error for r in slack.rejections]
    [result] = results(slack, DM_CHANNEL)
    for phrase in ("2 passed", "0 failed", "1 errored", "3 total", batch_id):
        assert phrase in result.text
    assert results(slack) == [], "the lost channel never showed the result"

    retell.complete_never = False
    await after_more_sweeps(bot, slack, user)
    assert len(results(slack, DM_CHANNEL)) == 1, "the result was delivered exactly once"
    run = min(await bot.app.store.recent_runs(), key=lambda r: r.id)
    assert run.channel_error == error and run.reported_at is not None


async def test_removed_from_a_public_channel_mid_run_joins_again_for_the_result(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    """The bot is removed from a public channel after posting the status (not_in_channel)."""
    channel = slack.add_channel(CHANNEL, "general")
    retell.complete_never = True
    await user.command(bot.events_url, f"{ENGINE} tc_1 tc_fail_1")
    await slack.wait_for(lambda: len(top_level(slack)) == 1)
    [batch_id] = retell.batches
    channel.member = False
    retell.finish_now(batch_id)
    await slack.wait_for(lambda: bool(results(slack) or results(slack, DM_CHANNEL)), timeout=15)

    assert "not_in_channel" in [r.error for r in slack.rejections]
    assert slack.count("conversations.join") == 1, "a public channel is joined, as for posts"
    [result] = results(slack)
    assert batch_id in result.text and "1 failed" in result.text
    assert results(slack, DM_CHANNEL) == []


# -- a result that could not be posted -----------------------------------------------------------


async def test_undelivered_result_survives_a_restart(
    start_bot: BotFactory, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    """Slack refuses the result until the bot is stopped; a new process delivers it once."""
    retell.next_batch_durations = [0.0]
    slack.fail_next("chat.update", status=502, times=1000)  # not retried inside slack_sdk
    async with start_bot(poll_max_seconds=1.0) as first:
        await user.command(first.events_url, f"{ENGINE} tc_1 tc_fail_1 tc_error_1")
        await slack.wait_for(lambda: slack.count("chat.update") >= 2, timeout=15)
        before = await only_run(first)
    assert results(slack) == [], "not delivered before the restart"
    assert before.state == RunState.COMPLETE.value and before.reported_at is None
    assert before.delivery_attempts == 0, "an outage is waited out, not counted"

    slack.clear_faults("chat.update")
    async with start_bot() as second:
        [batch_id] = retell.batches
        await delivered_once(second, slack, batch_id)
        after = await only_run(second)
    [status] = top_level(slack)
    assert status.update_count == 1, "the result replaced the status message once"
    for phrase in ("1 passed", "1 failed", "1 errored", "3 total"):
        assert phrase in status.text
    assert after.error is None


async def test_result_delivery_gives_up_with_a_record_and_an_error_log(
    bot: RunningBot,
    slack: FakeSlack,
    retell: FakeRetell,
    user: SlackUser,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Slack refuses the result every time: after the last try, a record and an ERROR line.

    A refusal, not an outage: a workspace policy that forbids the bot's messages. (Slack
    unavailable is waited out instead: see the test after this one.)
    """
    caplog.set_level(logging.INFO)
    retell.next_batch_durations = [0.0]
    slack.fail_next("chat.update", error="restricted_action", times=1000)
    await user.command(bot.events_url, f"{ENGINE} tc_1 tc_2")
    await slack.wait_for(lambda: slack.count("chat.update") >= MAX_DELIVERY_ATTEMPTS, timeout=15)
    [first] = top_level(slack)

    # Slack is back, and the given-up result is not tried again, however many sweeps pass.
    slack.clear_faults("chat.update")
    await after_more_sweeps(bot, slack, user)
    assert results(slack) == [], "the status message never became the result"
    tries = [c for c in slack_calls(slack, "chat.update") if c.params.get("ts") == first.ts]
    assert len(tries) == MAX_DELIVERY_ATTEMPTS and not any(c.ok for c in tries)

    run = min(await bot.app.store.recent_runs(), key=lambda r: r.id)
    assert run.state == RunState.COMPLETE.value and run.reported_at is not None
    assert run.delivery_attempts == MAX_DELIVERY_ATTEMPTS
    assert run.error and "could not be posted" in run.error
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and r.name == "bot.runs"]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    line = errors[0].getMessage()
    assert f"run {run.id}" in line and str(MAX_DELIVERY_ATTEMPTS) in line


async def test_slack_down_for_a_long_while_every_result_arrives_once_when_it_is_back(
    start_bot: BotFactory, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    """Slack answers 502 to every call while five batches finish; no result is given up.

    The outage lasts until the bot has tried each result more often than the give-up budget
    of refusals (MAX_DELIVERY_ATTEMPTS): in production time that is many minutes. (A 502 is
    not retried inside slack_sdk, so each call here is one of the bot's own attempts.)
    """
    retell.next_batch_durations = [600.0] * 5  # finished by hand, once Slack is down
    async with start_bot() as bot:
        for _ in range(5):
            await user.command(bot.events_url, f"{ENGINE} tc_1 tc_2")
        await slack.wait_for(lambda: len(top_level(slack)) == 5)
        slack.fail_next("*", status=502, times=100_000)
        for batch_id in retell.batches:
            retell.finish_now(batch_id)
        refused = slack.count("chat.update")
        await slack.wait_for(
            lambda: slack.count("chat.update") - refused >= 5 * (MAX_DELIVERY_ATTEMPTS + 2),
            timeout=30,
        )
        assert results(slack) == []
        slack.clear_faults()
        await slack.wait_for(lambda: len(results(slack)) == 5, timeout=30)
        await slack.wait_for(lambda: all(slack.thread(CHANNEL, m.ts) for m in results(slack)))
        runs = await bot.app.store.recent_runs()
    assert len(top_level(slack)) == 5, "each status message became its result"
    assert all(len(slack.thread(CHANNEL, m.ts)) == 1 for m in results(slack))
    assert all(r.error is None and r.delivery_attempts == 0 for r in runs)


async def test_a_mention_refused_while_slack_fails_is_posted_once_when_it_is_back(
    start_bot: BotFactory, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    """The result lands, then Slack fails the thread reply: the mention stays owed.

    Before 0007 the reply was tried once after the result was recorded, and lost for good.
    """
    retell.next_batch_durations = [600.0]  # finished by hand, once replies fail
    async with start_bot() as bot:
        await user.command(bot.events_url, f"{ENGINE} tc_1 tc_2")
        await slack.wait_for(lambda: len(top_level(slack)) == 1)
        slack.fail_next("chat.postMessage", status=502, times=100_000)
        [batch_id] = await batch_ids(retell)
        retell.finish_now(batch_id)
        await slack.wait_for(lambda: len(results(slack)) == 1)
        refused = slack.count("chat.postMessage")
        await slack.wait_for(lambda: slack.count("chat.postMessage") - refused >= 3)
        [result] = results(slack)
        assert slack.thread(CHANNEL, result.ts) == []
        assert (await only_run(bot)).mention_pending
        slack.clear_faults()
        await delivered_once(bot, slack, batch_id)
        await after_more_sweeps(bot, slack, user)
        run = await only_run_in(bot, CHANNEL)
    assert len(slack.thread(CHANNEL, result.ts)) == 1
    assert not run.mention_pending and run.claim is None


async def test_a_mention_posted_but_not_recorded_is_not_posted_again(
    start_bot: BotFactory, slack: FakeSlack, user: SlackUser
) -> None:
    """A process that died between posting the mention and recording it leaves it owed in the
    database, as this test does by hand: the next sweep finds it in the thread, posts nothing."""
    async with start_bot() as bot:
        await user.command(bot.events_url, f"{ENGINE} tc_1")
        await slack.wait_for(lambda: len(results(slack)) == 1)
        [result] = results(slack)
        await slack.wait_for(lambda: len(slack.thread(CHANNEL, result.ts)) == 1)
        run = await settled_run(bot)  # the delivery recorded the mention: nothing is owed
        async with bot.app.store.engine.begin() as conn:
            await conn.execute(
                update(Run)
                .where(Run.id == run.id)
                .values(mention_pending=True, next_check_at=run.reported_at)
            )
        looked = slack.count("conversations.replies")
        await slack.wait_for(lambda: slack.count("conversations.replies") > looked)
        run = await settled_run(bot)
    assert len(slack.thread(CHANNEL, result.ts)) == 1
    assert not run.mention_pending


async def test_a_status_message_a_dead_starter_left_is_not_posted_twice_while_slack_cannot_say(
    start_bot: BotFactory, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    """A starter that died after Slack had its status message leaves `status_posting_since`
    behind (written here by hand). While `conversations.history` fails, the sweep neither posts
    a second status message nor gives up looking; once Slack answers it takes the first over.
    (The chaos run saw a second message when a takeover looked during a Slack outage.)"""
    retell.next_batch_durations = [600.0]  # finished by hand
    async with start_bot() as bot:
        await user.command(bot.events_url, f"{ENGINE} tc_1")
        await slack.wait_for(lambda: len(top_level(slack)) == 1)
        [status] = top_level(slack)
        run = await run_with_status_recorded(bot)
        slack.fail_next("conversations.history", status=503, times=100_000)
        async with bot.app.store.engine.begin() as conn:
            await conn.execute(
                update(Run)
                .where(Run.id == run.id)
                .values(status_ts=None, status_posting_since=run.created_at)
            )
        await slack.wait_for(lambda: slack.count("conversations.history") >= 3)
        [batch_id] = retell.batches
        retell.finish_now(batch_id)
        looked = slack.count("conversations.history")
        await slack.wait_for(lambda: slack.count("conversations.history") >= looked + 3)
        assert top_level(slack) == [status] and results(slack) == []
        slack.clear_faults()
        await slack.wait_for(lambda: len(results(slack)) == 1)
    assert [m.ts for m in top_level(slack)] == [status.ts]


async def test_a_status_message_whose_answer_was_lost_is_taken_over_not_posted_again(
    start_bot: BotFactory, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    """Slack posts the status message but its answer never arrives (the connection drops).
    Neither slack_sdk's retry nor the next follow-up posts a second one: the follow-up finds
    it in the channel's history, and the result lands on it. (The chaos run saw two
    top-level messages for one run when the answer, or the database after it, was lost.)"""
    retell.next_batch_durations = [600.0]  # finished by hand
    slack.lose_answer_next("chat.postMessage")
    async with start_bot() as bot:
        await user.command(bot.events_url, f"{ENGINE} tc_1")
        await slack.wait_for(lambda: slack.count("conversations.history") >= 1)
        [status] = top_level(slack)
        run = await run_with_status_recorded(bot)
        assert run.status_ts == status.ts
        [batch_id] = retell.batches
        retell.finish_now(batch_id)
        await slack.wait_for(lambda: len(results(slack)) == 1)
    assert [m.ts for m in top_level(slack)] == [status.ts]


async def test_a_result_posted_anew_whose_answer_was_lost_is_not_posted_twice(
    start_bot: BotFactory, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    """Slack refused the status message for a while; the next post of the run's message
    (status or result) loses its answer. The retry finds it in the history: one message."""
    retell.next_batch_durations = [600.0]
    slack.fail_next("chat.postMessage", error="invalid_blocks", times=100_000)
    async with start_bot() as bot:
        await user.command(bot.events_url, f"{ENGINE} tc_1")
        await slack.wait_for(lambda: slack.count("chat.postMessage") >= 2)
        [batch_id] = retell.batches
        slack.clear_faults()
        slack.lose_answer_next("chat.postMessage")
        retell.finish_now(batch_id)
        await slack.wait_for(lambda: len(results(slack)) == 1)
        [result] = results(slack)
        await slack.wait_for(lambda: len(slack.thread(CHANNEL, result.ts)) == 1)
        run = await settled_run(bot)
    assert [m.ts for m in top_level(slack)] == [result.ts]
    assert run.status_ts == result.ts


async def test_retell_down_for_a_long_while_every_run_reports_once_when_it_is_back(
    start_bot: BotFactory, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    """Retell answers 503 to every follow-up while the batches finish there."""
    retell.next_batch_durations = [600.0] * 5  # finished by hand, once Retell is down
    async with start_bot(retell_max_retries=0) as bot:
        for _ in range(5):
            await user.command(bot.events_url, f"{ENGINE} tc_1 tc_2")
        await slack.wait_for(lambda: len(top_level(slack)) == 5)
        retell.fail_next("/", 503, times=100_000)
        for batch_id in retell.batches:
            retell.finish_now(batch_id)
        failed = len(retell.requests)
        await retell.wait_for(lambda: len(retell.requests) - failed >= 50, timeout=30)
        assert results(slack) == []
        retell.clear_faults()
        await slack.wait_for(lambda: len(results(slack)) == 5, timeout=30)
        await slack.wait_for(lambda: all(slack.thread(CHANNEL, m.ts) for m in results(slack)))
    assert len(top_level(slack)) == 5
    assert retell.count("/create-batch-test") == 5


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"Retry-After": "45"}, 45.0),  # aiohttp's headers: a string (slack_sdk read "4")
        ({"retry-after": ["12"]}, 12.0),  # the sync client's: a list
        ({"Retry-After": "soon"}, 1.0),
        ({}, 1.0),
    ],
)
def test_slack_retry_after_is_read_whole(headers: dict[str, object], seconds: float) -> None:
    assert retry_after_seconds(headers) == seconds


async def test_work_under_a_claim_ends_before_a_failure_of_one_step_is_raised() -> None:
    """A sweep whose step failed (a killed database connection) released its claim while the
    other steps were still posting, and the next holder mentioned the requester again."""
    posted: list[str] = []
    slow_step_started = asyncio.Event()

    async def fails() -> None:
        await slow_step_started.wait()
        raise ConnectionResetError("database connection killed")

    async def posts() -> None:
        slow_step_started.set()
        for _ in range(5):
            await asyncio.sleep(0)
        posted.append("mention")

    with pytest.raises(ConnectionResetError):
        await all_settled(fails(), posts())
    assert posted == ["mention"]


async def test_a_status_message_is_found_pages_down_a_busy_channels_history(
    slack: FakeSlack,
) -> None:
    """A takeover looks for a dead starter's status message a minute or two later; in a
    channel busy with hundreds of runs it is no longer on the first page of the history,
    which lists the newest first (the chaos run posted a second one for it)."""
    gateway = SlackGateway(
        web_client(slack.bot_token, slack.api_url),
        book=MemoryBook(utcnow),
        edits_per_minute=10_000,
        posts_per_minute=100_000,
    )
    since = datetime.now(UTC)
    metadata = {"event_type": "retell_run_status", "event_payload": {"run_id": 7}}
    wanted = await gateway.post(
        CHANNEL, Message(text="status of run 7", blocks=[]), metadata=metadata
    )
    for number in range(450):
        await gateway.post(CHANNEL, Message(text=f"another run's status {number}", blocks=[]))
    found = await gateway.find_posted(
        CHANNEL, since=since, event_type="retell_run_status", payload={"run_id": 7}
    )
    assert found == wanted
    assert slack.count("conversations.history") == 3


async def test_an_interrupted_start_finds_its_batch_pages_down_a_busy_engines_list(
    start_bot: BotFactory, slack: FakeSlack, retell: FakeRetell
) -> None:
    """A starter died after Retell had created its batch (the run is left `starting`, under a
    claim that has run out), and the engine has had more batches created since than one page
    of its list holds. The recovery reads the list on, page after page, back to the run's
    creation, follows the batch it finds there and creates none. (After a database outage
    the chaos run saw a second batch created here: the first page of 50 was all newer.)"""
    engine = Engine.from_id(ENGINE)
    suite, others = Suite(engine, ("tc_1",)), Suite(engine, ("tc_2", "tc_3"))
    async with start_bot() as bot:
        store, gateway = bot.app.store, bot.app.retell
        run = await store.add_run(
            team_id="T0001",
            channel_id=CHANNEL,
            user_id=USER,
            suite=suite,
            lease=timedelta(minutes=5),
        )
        assert run is not None
        created = await gateway.create_batch(suite)  # ... and then the starter died
        for _ in range(RECOVERY_PAGE + 10):  # from the dashboard, CI, other channels
            await gateway.create_batch(others)
        async with store.engine.begin() as conn:  # the dead starter's lease runs out
            await conn.execute(update(Run).where(Run.id == run.id).values(claimed_until=utcnow()))
        await slack.wait_for(lambda: len(results(slack)) == 1, timeout=20)
    assert retell.count("/create-batch-test") == RECOVERY_PAGE + 11, "no second batch"
    [result] = results(slack)
    assert created.batch_id in result.text


async def test_results_that_finish_together_reach_slack_under_its_tiers_once_each(
    start_bot: BotFactory, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    """Twelve batches finish at once in one workspace while Slack enforces its limits (here
    600 edits and posts a minute with small bursts, time compressed): the shared budget paces
    the results and mentions, the few 429s feed it, and every result and mention arrives once,
    none counted as a failed delivery."""
    slack.set_rate_limits(
        SlackTiers.only(
            {
                "chat.update": Bucket(per_minute=600, burst=3),
                "chat.postMessage": Bucket(per_minute=600, burst=3, per="channel"),
            },
            whole_seconds=False,
        )
    )
    retell.next_batch_durations = [0.3] * 12
    limits = {"slack_edits_per_minute": 300.0, "slack_posts_per_minute": 300.0}
    async with start_bot(max_runs_per_user_per_hour=0, **limits) as bot:
        for n in range(12):
            await user.command(bot.events_url, f"{ENGINE} tc_{n % 5 + 1}")
        await slack.wait_for(lambda: len(results(slack)) == 12, timeout=30)
        await slack.wait_for(
            lambda: all(len(slack.thread(CHANNEL, m.ts)) == 1 for m in results(slack)), timeout=30
        )
        runs = await bot.app.store.recent_runs()
    assert len(top_level(slack)) == 12, "one message per run"
    assert all(run.delivery_attempts == 0 for run in runs), "paced, never a failed attempt"
    assert slack.rate_limited() <= 6, "the budget keeps under Slack's limits, bar a few 429s"
