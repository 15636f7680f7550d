"""Socket Mode end to end: the bot holds FakeSlack's websocket and takes Slack's envelopes over it.

The same `start_bot` application as the HTTP tests, built with an app-level token; the test
connects `bot.web.socket_mode_handler` itself (as `bot.web.serve` does) and speaks to it through
FakeSlack's socket, then watches what reaches the stand-ins.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp

from bot.testing.retell import FakeRetell
from bot.testing.slack import FakeSlack, SlackUser, slash_command_body
from bot.web import socket_mode_handler

from ..helpers import (
    CHANNEL,
    ENGINE,
    USER,
    BotFactory,
    RunningBot,
    button_value,
    crash_scheduler,
    results,
)

APP_TOKEN = "xapp-test"


@asynccontextmanager
async def socket_mode(start_bot: BotFactory, slack: FakeSlack) -> AsyncIterator[RunningBot]:
    """The bot in Socket Mode, connected to FakeSlack's socket for the duration."""
    async with start_bot(slack_app_token=APP_TOKEN) as bot:
        assert bot.app.settings.socket_mode
        handler = socket_mode_handler(bot.app)
        await handler.connect_async()  # type: ignore[no-untyped-call]
        try:
            await slack.wait_socket_connected()
            yield bot
        finally:
            await handler.close_async()  # type: ignore[no-untyped-call]


async def test_command_and_rerun_over_the_socket(
    start_bot: BotFactory, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    async with socket_mode(start_bot, slack):
        assert any(call.method == "apps.connections.open" for call in slack.calls)

        ack = await user.socket_command(f"{ENGINE} tc_1 tc_2 tc_fail_1")

        assert ack["envelope_id"] == slack.socket_envelopes[-1]["envelope_id"]
        assert "Starting a Retell batch test" in ack["payload"]["text"]
        assert "3 test cases" in ack["payload"]["text"]
        await slack.wait_for(lambda: len(results(slack)) == 1)
        [first_batch] = retell.batches
        [result] = results(slack)
        for phrase in ("2 passed", "1 failed", "0 errored", "3 total", first_batch):
            assert phrase in result.text
        await slack.wait_for(lambda: len(slack.thread(CHANNEL, result.ts)) == 1)
        assert f"<@{USER}>" in slack.thread(CHANNEL, result.ts)[0].text

        run_id = button_value(result, "rerun")
        assert run_id is not None
        pressed = await user.socket_press(action_id="rerun", value=run_id, message_ts=result.ts)

        assert pressed["envelope_id"] == slack.socket_envelopes[-1]["envelope_id"]
        await slack.wait_for(lambda: len(results(slack)) == 2)
        assert len(retell.batches) == 2
        creates = [r.body for r in retell.requests if r.path == "/create-batch-test"]
        assert creates[0] == creates[1], "the rerun asks for the same engine and cases"
        second_batch = next(b for b in retell.batches if b != first_batch)
        assert any(second_batch in message.text for message in results(slack))
        await slack.wait_for(lambda: len(slack.thread(CHANNEL, results(slack)[1].ts)) == 1)


async def test_envelopes_are_acked_even_for_bad_input(
    start_bot: BotFactory, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    async with socket_mode(start_bot, slack):
        ack = await user.socket_command("run nonsense_engine tc_1")

        assert "usage" in str(ack["payload"]).lower() or "/retell-test" in str(ack["payload"])
        assert not retell.batches, "bad input creates nothing"
        assert not results(slack)


async def test_forged_http_request_is_refused_in_socket_mode(
    start_bot: BotFactory, slack: FakeSlack, retell: FakeRetell
) -> None:
    """In Socket Mode only the socket is trusted: `/slack/events` must not take forged work.

    Bolt already skips signature checks for envelopes that arrive over the socket (their mode
    is "socket_mode"), so verification can stay on for HTTP without affecting the socket.
    """
    async with socket_mode(start_bot, slack) as bot:
        forger = SlackUser(slack=slack, signing_secret="not-the-signing-secret")
        forged = await forger.command(bot.events_url, f"{ENGINE} tc_1")
        body = slash_command_body(
            text=f"{ENGINE} tc_2",
            user_id=USER,
            channel_id=CHANNEL,
            team_id=slack.team_id,
            response_url=slack.new_response_url(),
        )
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                bot.events_url,
                data=body.encode(),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            ) as response,
        ):
            unsigned = response.status
        # Whatever was wrongly accepted runs to its end before the bot stops, so that a failure
        # here reports the acceptance rather than a half-finished run at tear-down.
        accepted = [status for status in (forged.status, unsigned) if status == 200]
        await slack.wait_for(lambda: len(results(slack)) == len(accepted))

    assert forged.status in (401, 403, 404), f"wrongly signed command answered {forged.status}"
    assert unsigned in (401, 403, 404), f"unsigned command answered {unsigned}"
    assert not retell.batches, "a forged HTTP request started a batch"


async def test_a_crashed_scheduler_is_restarted_in_socket_mode_too(
    start_bot: BotFactory, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    """The same supervision as over HTTP: the scheduler stops, the socket stays, the run ends."""
    retell.set_batch_duration(1.0)
    async with socket_mode(start_bot, slack) as bot:
        await user.socket_command(f"{ENGINE} tc_1 tc_2")
        await slack.wait_for(lambda: bool(retell.batches))
        crashes = crash_scheduler(bot.app, 2, ConnectionResetError("connection lost"))
        await slack.wait_for(lambda: len(results(slack)) == 1, timeout=20)
        await slack.wait_for(lambda: bool(slack.thread(CHANNEL, results(slack)[0].ts)))
        again = await user.socket_command(f"{ENGINE} tc_3")
        assert "Starting a Retell batch test" in again["payload"]["text"], "the socket still works"
        await slack.wait_for(lambda: len(results(slack)) == 2, timeout=20)
        restarts = bot.app.metrics.scheduler_restarts._value.get()
    assert crashes.left == 0 and restarts == 2
