"""FakeSlack must answer slack_sdk, Bolt and the Socket Mode client the way Slack does."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from slack_bolt.app.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.http_retry.builtin_interval_calculators import FixedValueRetryIntervalCalculator
from slack_sdk.signature import SignatureVerifier
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.testing.slack import (
    FakeSlack,
    SlackUser,
    block_action_body,
    signed_headers,
    slash_command_body,
    slash_command_payload,
)

TS = re.compile(r"^\d{10}\.\d{6}$")


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def button(action_id: str = "rerun", text: str = "Rerun", value: str = "batch_1") -> dict[str, Any]:
    return {
        "type": "button",
        "action_id": action_id,
        "text": {"type": "plain_text", "text": text},
        "value": value,
    }


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as slack:
        yield slack


@pytest.fixture
def client(fake: FakeSlack) -> AsyncWebClient:
    return AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)


async def test_post_update_and_thread_are_recorded(fake: FakeSlack, client: AsyncWebClient) -> None:
    first = await client.chat_postMessage(channel="C1", text="Running", blocks=[section("0/3")])
    second = await client.chat_postMessage(channel="C1", text="other")
    reply = await client.chat_postMessage(channel="C1", text="@alice done", thread_ts=first["ts"])
    updated = await client.chat_update(
        channel="C1", ts=first["ts"], text="Done", blocks=[section("3/3")]
    )

    assert TS.match(first["ts"]) and first["ts"] < second["ts"] < reply["ts"]
    assert updated["ts"] == first["ts"]
    status = fake.message("C1", first["ts"])
    assert (status.text, status.blocks) == ("Done", [section("3/3")])
    assert status.update_count == 1 and status.updates[0].text == "Running"
    assert status.updated_at >= status.posted_at
    assert [m.ts for m in fake.channel_messages("C1")] == [first["ts"], second["ts"]]
    assert [m.text for m in fake.thread("C1", first["ts"])] == ["@alice done"]
    assert fake.count("chat.postMessage") == 3

    with pytest.raises(SlackApiError) as missing:
        await client.chat_update(channel="C1", ts="1.000001", text="x")
    assert missing.value.response["error"] == "message_not_found"


async def test_ephemeral_users_info_and_permalink(fake: FakeSlack, client: AsyncWebClient) -> None:
    fake.add_user("U1", "alice", tz="America/New_York")

    info = await client.users_info(user="U1")
    ephemeral = await client.chat_postEphemeral(channel="C1", user="U1", text="Working on it")
    posted = await client.chat_postMessage(channel="C1", text="hi")
    link = await client.chat_getPermalink(channel="C1", message_ts=posted["ts"])

    user = info["user"]
    assert (user["tz"], user["real_name"]) == ("America/New_York", "alice")
    assert user["tz_offset"] in (-5 * 3600, -4 * 3600) and "Eastern" in user["tz_label"]
    assert TS.match(ephemeral["message_ts"])
    assert [(e.channel, e.user, e.text) for e in fake.ephemerals] == [("C1", "U1", "Working on it")]
    assert link["permalink"].endswith("/archives/C1/p" + posted["ts"].replace(".", ""))


@pytest.mark.parametrize(
    ("blocks", "reason"),
    [
        ([section("x")] * 51, "51 blocks > 50"),
        ([section("x" * 3001)], "blocks[0].text.text: 3001 characters > 3000"),
        ([{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}], "> 150"),
        ([{"type": "actions", "elements": [button(text="b" * 76)]}], "> 75"),
        ([{"type": "actions", "elements": [button(value="v" * 2001)]}], "value"),
        ([{"type": "actions", "elements": [button(action_id="a" * 256)]}], "action_id"),
        (
            [{"type": "context", "elements": [{"type": "mrkdwn", "text": "c"}] * 11}],
            "11 elements > 10",
        ),
        ([{"type": "sektion", "text": {"type": "mrkdwn", "text": "typo"}}], "unknown block"),
    ],
)
async def test_block_kit_limits_reject_like_slack(
    fake: FakeSlack, client: AsyncWebClient, blocks: list[dict[str, Any]], reason: str
) -> None:
    with pytest.raises(SlackApiError) as rejected:
        await client.chat_postMessage(channel="C1", text="t", blocks=blocks)

    assert rejected.value.response["error"] == "invalid_blocks"
    assert reason in fake.rejections[-1].reason
    assert fake.messages == []


async def test_limits_are_inclusive_and_long_text_is_refused(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    at_limit = [section("x" * 3000)] * 50
    await client.chat_postMessage(channel="C1", text="t" * 40_000, blocks=at_limit)

    with pytest.raises(SlackApiError) as too_long:
        await client.chat_postMessage(channel="C1", text="t" * 40_001)
    assert too_long.value.response["error"] == "msg_too_long"
    assert len(fake.messages) == 1


async def test_channel_rules() -> None:
    async with FakeSlack(strict_channels=True) as fake:
        client = AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)
        fake.add_channel("C2", "qa", member=False)
        fake.add_channel("C3", "old", archived=True)
        fake.add_channel("G4", "secret", private=True, member=False)

        async def error_of(channel: str, method: str = "chat.postMessage") -> str:
            with pytest.raises(SlackApiError) as failed:
                await client.api_call(method, json={"channel": channel, "text": "hi"})
            return str(failed.value.response["error"])

        assert await error_of("C2") == "not_in_channel"
        assert await error_of("C3") == "is_archived"
        assert await error_of("G4") == "channel_not_found"
        assert await error_of("C9") == "channel_not_found"
        assert await error_of("G4", "conversations.join") == "method_not_supported_for_channel_type"

        joined = await client.conversations_join(channel="C2")
        await client.chat_postMessage(channel="C2", text="hi")
        info = await client.conversations_info(channel="C2")
        assert joined["channel"]["is_member"] and info["channel"]["name"] == "qa"
        assert [m.text for m in fake.channel_messages("C2")] == ["hi"]


async def test_tokens_and_unknown_methods(fake: FakeSlack) -> None:
    async def error_of(token: str | None, method: str = "auth.test") -> str:
        with pytest.raises(SlackApiError) as failed:
            await AsyncWebClient(token=token, base_url=fake.api_url).api_call(method)
        return str(failed.value.response["error"])

    assert await error_of("xoxb-wrong") == "invalid_auth"
    assert await error_of(None) == "not_authed"
    assert await error_of(fake.app_token) == "not_allowed_token_type"
    assert await error_of(fake.bot_token, "apps.connections.open") == "not_allowed_token_type"
    assert await error_of(fake.bot_token, "chat.meMessage") == "unknown_method"
    auth = await AsyncWebClient(token=fake.bot_token, base_url=fake.api_url).auth_test()
    assert (auth["user_id"], auth["team_id"]) == ("UBOT", fake.team_id)


async def test_rate_limit_is_retried_after_retry_after(fake: FakeSlack) -> None:
    client = AsyncWebClient(
        token=fake.bot_token,
        base_url=fake.api_url,
        retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=1)],
    )
    fake.fail_next("chat.postMessage", status=429, retry_after=0)

    await client.chat_postMessage(channel="C1", text="eventually")

    assert fake.count("chat.postMessage") == 2
    assert [call.ok for call in fake.calls] == [False, True]
    assert len(fake.messages) == 1


async def test_injected_errors_surface_as_slack_api_errors(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    fake.fail_next("chat.update", error="cant_update_message")
    fake.fail_next("*", status=503)

    with pytest.raises(SlackApiError) as server_error:
        await client.auth_test()
    with pytest.raises(SlackApiError) as refused:
        await client.chat_update(channel="C1", ts="1.000001", text="x")

    assert server_error.value.response.status_code == 503
    assert refused.value.response["error"] == "cant_update_message"


async def test_dropped_connection_is_retried(fake: FakeSlack) -> None:
    client = AsyncWebClient(
        token=fake.bot_token,
        base_url=fake.api_url,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(
                max_retry_count=1, interval_calculator=FixedValueRetryIntervalCalculator(0.0)
            )
        ],
    )
    fake.drop_next("chat.postMessage")

    await client.chat_postMessage(channel="C1", text="after a reset")

    assert fake.count("chat.postMessage") == 2
    assert [m.text for m in fake.messages] == ["after a reset"]


async def test_clear_faults_lets_slack_recover(fake: FakeSlack, client: AsyncWebClient) -> None:
    fake.fail_next("chat.postMessage", status=502, times=3)
    fake.drop_next("chat.postMessage")
    fake.fail_next("auth.test", error="fatal_error")

    assert fake.clear_faults("chat.postMessage") == 4
    await client.chat_postMessage(channel="C1", text="straight through")
    assert fake.clear_faults() == 1
    await client.auth_test()

    assert [call.ok for call in fake.calls] == [True, True]


async def test_limit_rate_refuses_calls_beyond_a_sliding_window(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    fake.limit_rate("chat.update", per_window=2, window_seconds=0.5)
    ts = (await client.chat_postMessage(channel="C1", text="v0"))["ts"]
    await client.chat_update(channel="C1", ts=ts, text="v1")
    await asyncio.sleep(0.25)  # the passage of time is what is under test
    await client.chat_update(channel="C1", ts=ts, text="v2")
    with pytest.raises(SlackApiError) as refused:
        await client.chat_update(channel="C1", ts=ts, text="v3")
    response = refused.value.response
    assert (response.status_code, response["ok"], response["error"]) == (429, False, "ratelimited")
    assert response.headers["Retry-After"] == "1", "0.25 s until a slot frees, rounded up"
    assert fake.message("C1", ts).text == "v2", "a refused call changes nothing"
    wrong_token = AsyncWebClient(token="xoxb-wrong", base_url=fake.api_url)
    with pytest.raises(SlackApiError, match="invalid_auth"):
        await wrong_token.chat_update(channel="C1", ts=ts, text="v3")

    await asyncio.sleep(0.3)  # v1 has left the window, v2 has not: one slot is free
    await client.chat_update(channel="C1", ts=ts, text="v4")
    with pytest.raises(SlackApiError, match="ratelimited"):
        await client.chat_update(channel="C1", ts=ts, text="v5")
    for number in range(3):
        await client.chat_postMessage(channel="C1", text=f"not limited {number}")

    assert fake.rate_limited("chat.update") == 2
    assert fake.rate_limited("chat.postMessage") == 0
    assert fake.message("C1", ts).text == "v4"


async def test_limit_rate_retry_after_is_whole_seconds_until_a_slot_frees(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    fake.limit_rate("chat.postMessage", per_window=1, window_seconds=2.5)
    await client.chat_postMessage(channel="C1", text="first")
    with pytest.raises(SlackApiError) as refused:
        await client.chat_postMessage(channel="C1", text="second")
    assert refused.value.response.headers["Retry-After"] == "3"
    assert fake.rate_limited("chat.postMessage") == 1
    assert [m.text for m in fake.messages] == ["first"]


async def test_limit_rate_is_honoured_by_slack_sdks_retry_handler(fake: FakeSlack) -> None:
    client = AsyncWebClient(
        token=fake.bot_token,
        base_url=fake.api_url,
        retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=1)],
    )
    fake.limit_rate("chat.postMessage", per_window=1, window_seconds=0.5)
    await client.chat_postMessage(channel="C1", text="first")
    await client.chat_postMessage(channel="C1", text="second, after waiting")

    refused, accepted = [c for c in fake.calls if c.method == "chat.postMessage"][1:]
    assert (refused.ok, accepted.ok) == (False, True)
    assert accepted.at - refused.at >= 1.0, "slack_sdk waited the Retry-After (1 s)"
    assert fake.rate_limited("chat.postMessage") == 1
    assert [m.text for m in fake.messages] == ["first", "second, after waiting"]


def test_signed_headers_pass_slack_sdk_verification() -> None:
    body = slash_command_body(
        text="run llm_abc all",
        user_id="U1",
        channel_id="C1",
        team_id="T1",
        response_url="http://127.0.0.1/response/x",
    )

    headers = signed_headers("s3cret", body)

    assert SignatureVerifier("s3cret").is_valid_request(body, headers)
    assert not SignatureVerifier("other").is_valid_request(body, headers)
    assert "command=%2Fretell-test" in body and "user_name=u1" in body


async def test_files_upload_v2(fake: FakeSlack, client: AsyncWebClient) -> None:
    result = await client.files_upload_v2(
        channel="C1", content="case,status\n", filename="results.csv", title="Results"
    )

    upload = fake.uploads[result["file"]["id"]]
    assert (upload.data, upload.title, upload.channel_id) == (b"case,status\n", "Results", "C1")
    assert upload.completed and fake.count("upload") == 1


async def test_views_are_stored(fake: FakeSlack, client: AsyncWebClient) -> None:
    home = {"type": "home", "blocks": [section("Schedules")]}
    published = await client.views_publish(user_id="U1", view=home)
    opened = await client.views_open(trigger_id="1.2.3", view={"type": "modal", "blocks": []})
    await client.views_update(view_id=opened["view"]["id"], view={"type": "modal", "blocks": []})

    assert fake.home_views["U1"]["blocks"] == home["blocks"]
    assert published["view"]["id"] != opened["view"]["id"]
    assert set(fake.views) == {published["view"]["id"], opened["view"]["id"]}


async def test_response_url_acts_like_slack(fake: FakeSlack, client: AsyncWebClient) -> None:
    posted = await client.chat_postMessage(channel="C1", text="Result", blocks=[section("ok")])
    url = fake.new_response_url(channel="C1", message_ts=posted["ts"])
    webhook = AsyncWebhookClient(url)

    replaced = await webhook.send_dict({"replace_original": True, "text": "Rerunning"})
    shared = await webhook.send_dict({"response_type": "in_channel", "text": "Shared"})
    invalid = await webhook.send_dict({"text": "x", "blocks": [section("y" * 3001)]})
    for _ in range(3):
        await webhook.send_dict({"response_type": "ephemeral", "text": "note"})
    used_up = await webhook.send_dict({"text": "sixth"})

    assert (replaced.status_code, shared.status_code, invalid.status_code) == (200, 200, 400)
    assert used_up.status_code == 404 and "used_url" in used_up.body
    assert fake.message("C1", posted["ts"]).text == "Rerunning"
    assert [m.text for m in fake.channel_messages("C1")] == ["Rerunning", "Shared"]
    assert len(fake.responses_to(url)) == 5


async def test_wait_for_times_out_with_context(fake: FakeSlack, client: AsyncWebClient) -> None:
    await client.auth_test()

    def never() -> bool:
        return False

    with pytest.raises(TimeoutError, match=r"never still false .*auth\.test"):
        await fake.wait_for(never, timeout=0.05)


async def test_bolt_app_accepts_signed_command_and_button_press(fake: FakeSlack) -> None:
    app = AsyncApp(
        client=AsyncWebClient(token=fake.bot_token, base_url=fake.api_url),
        signing_secret=fake.signing_secret,
    )
    pressed_message: list[dict[str, Any]] = []

    @app.command("/retell-test")
    async def on_command(ack: Any, command: dict[str, Any], client: AsyncWebClient) -> None:
        await ack(f"Starting {command['text']}")
        await client.chat_postMessage(
            channel=command["channel_id"],
            text="Result",
            blocks=[{"type": "actions", "block_id": "result", "elements": [button()]}],
        )

    @app.action("rerun")
    async def on_rerun(ack: Any, body: dict[str, Any], respond: Any) -> None:
        await ack()
        pressed_message.append(body["message"])
        action = body["actions"][0]
        await respond(
            replace_original=True,
            text=f"{body['user']['id']} reran {action['value']} from {action['block_id']}",
        )

    runner = web.AppRunner(app.web_app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    bot_url = f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events"
    try:
        user = SlackUser(slack=fake, user_id="U1", channel_id="C1")
        command_reply = await user.command(bot_url, "llm_abc all")
        await fake.wait_for(lambda: len(fake.channel_messages("C1")) == 1, timeout=2)
        result = fake.channel_messages("C1")[0]
        press_reply = await user.press(
            bot_url, action_id="rerun", value="batch_1", message_ts=result.ts
        )
        await fake.wait_for(lambda: result.update_count == 1, timeout=2)
        forged_reply = await SlackUser(signing_secret="wrong").command(
            bot_url, "x", response_url=fake.new_response_url()
        )
    finally:
        await runner.cleanup()

    assert command_reply.status == 200
    assert command_reply.text == "Starting llm_abc all"
    assert press_reply.status == 200
    assert result.text == "U1 reran batch_1 from result"
    assert pressed_message[0]["blocks"] == result.updates[0].blocks
    assert forged_reply.status == 401


async def test_socket_mode_round_trip(fake: FakeSlack) -> None:
    received: list[SocketModeRequest] = []

    async def acknowledge(client: AsyncBaseSocketModeClient, request: SocketModeRequest) -> None:
        received.append(request)
        response = SocketModeResponse(request.envelope_id, payload={"text": "on it"})
        await client.send_socket_mode_response(response)

    socket_client = SocketModeClient(
        app_token=fake.app_token,
        web_client=AsyncWebClient(token=fake.bot_token, base_url=fake.api_url),
    )
    socket_client.socket_mode_request_listeners.append(acknowledge)
    try:
        await socket_client.connect()
        await fake.wait_socket_connected(timeout=2)
        payload = slash_command_payload(
            text="status",
            user_id="U1",
            channel_id="C1",
            team_id=fake.team_id,
            response_url=fake.new_response_url(),
        )
        ack = await fake.socket_send("slash_commands", payload, timeout=2)
    finally:
        await socket_client.close()

    assert ack["envelope_id"] == received[0].envelope_id
    assert ack["payload"] == {"text": "on it"}
    assert received[0].type == "slash_commands" and received[0].payload["text"] == "status"
    assert received[0].accepts_response_payload
    assert fake.count("apps.connections.open") == 1


async def test_socket_send_fails_fast_when_the_client_leaves(fake: FakeSlack) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(fake.socket_url) as socket:
        hello = await socket.receive_json()
        sending = asyncio.create_task(fake.socket_send("events_api", {"event": {}}, timeout=2))
        envelope = await socket.receive_json()
        await socket.close()

        with pytest.raises(ConnectionError, match="disconnected before acking"):
            await sending

    assert hello["type"] == "hello" and hello["connection_info"] == {"app_id": fake.app_id}
    assert envelope["type"] == "events_api" and envelope["retry_attempt"] == 0
    assert not fake.socket_connected


def test_block_action_body_is_a_form_encoded_payload() -> None:
    body = block_action_body(
        action_id="rerun",
        value="batch_1",
        user_id="U1",
        channel_id="C1",
        team_id="T1",
        message_ts="1700000000.000100",
        response_url="http://127.0.0.1/response/x",
    )
    assert body.startswith("payload=%7B%22type%22%3A+%22block_actions%22")


async def test_standalone_process_serves_and_reports() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.testing.slack",
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        ready = (await asyncio.wait_for(process.stdout.readline(), timeout=5)).decode()
        assert ready.startswith("READY http://127.0.0.1:")
        base_url = ready.split()[1]
        client = AsyncWebClient(token="xoxb-test", base_url=base_url + "/api/")
        posted = await client.chat_postMessage(channel="C1", text="first")
        await client.chat_update(channel="C1", ts=posted["ts"], text="final")
        async with aiohttp.ClientSession(base_url) as http:
            async with http.get("/_control/stats") as response:
                stats = await response.json()
            async with http.get("/_control/messages") as response:
                messages = await response.json()
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        exit_code = await asyncio.wait_for(process.wait(), timeout=5)

    assert exit_code == 0
    assert stats["counts"] == {"chat.postMessage": 1, "chat.update": 1}
    timing = stats["messages"][0]
    assert timing["final_update_at"] >= timing["first_post_at"] and timing["update_count"] == 1
    assert [(m["text"], m["updates"][0]["text"]) for m in messages] == [("final", "first")]
