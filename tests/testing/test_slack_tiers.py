"""FakeSlack's rate-limit tiers: bursts allowed, then 429 with Retry-After, then recovery.

The buckets refill in real time, so these tests use fast ones (600 a minute: one call per
0.1 s) and sleep a little: the passage of time is what is under test.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.slackapi import retry_after_seconds
from bot.testing.slack import (
    POST_MESSAGE,
    SLACK_METHOD_TIERS,
    TIER_3,
    Bucket,
    FakeSlack,
    SlackTiers,
)
from bot.testing.slack.tiers import TierMeter

FAST = Bucket(per_minute=600, burst=3)  # 10 a second, three at once
FAST_PER_CHANNEL = Bucket(per_minute=600, burst=2, per="channel")


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    tiers = SlackTiers.only({"chat.update": FAST, "chat.postMessage": FAST_PER_CHANNEL})
    async with FakeSlack(rate_limits=tiers) as slack:
        yield slack


@pytest.fixture
def client(fake: FakeSlack) -> AsyncWebClient:
    return AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)  # no retry handlers


async def refused(call: asyncio.Future[object] | object) -> SlackApiError:
    with pytest.raises(SlackApiError) as caught:
        await call  # type: ignore[misc]
    return caught.value


async def test_the_burst_is_allowed_then_429_with_retry_after(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    ts = str((await client.chat_postMessage(channel="C1", text="v0"))["ts"])
    for version in (1, 2, 3):
        await client.chat_update(channel="C1", ts=ts, text=f"v{version}")

    error = await refused(client.chat_update(channel="C1", ts=ts, text="v4"))

    response = error.response
    assert (response.status_code, response.data) == (429, {"ok": False, "error": "ratelimited"})
    assert response.headers["Retry-After"] == "1", "0.1 s to wait, in whole seconds as Slack"
    assert fake.message("C1", ts).text == "v3", "a refused call changes nothing"
    assert fake.rate_limited("chat.update") == 1
    assert fake.stats()["rate_limited"] == {"chat.update": 1}
    assert fake.stats()["failures"] == {"chat.update": 1}


async def test_the_allowance_refills_at_the_sustained_rate(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    ts = str((await client.chat_postMessage(channel="C1", text="v0"))["ts"])
    for version in (1, 2, 3):
        await client.chat_update(channel="C1", ts=ts, text=f"v{version}")
    await refused(client.chat_update(channel="C1", ts=ts, text="no"))

    await asyncio.sleep(0.12)  # one call's worth
    await client.chat_update(channel="C1", ts=ts, text="v4")
    await refused(client.chat_update(channel="C1", ts=ts, text="no"))
    await asyncio.sleep(0.35)  # three more, and the bucket holds no more than its burst
    for version in (5, 6, 7):
        await client.chat_update(channel="C1", ts=ts, text=f"v{version}")
    await refused(client.chat_update(channel="C1", ts=ts, text="no"))

    assert fake.message("C1", ts).text == "v7"
    assert fake.rate_limited("chat.update") == 3


async def test_refused_calls_do_not_use_up_the_allowance(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    ts = str((await client.chat_postMessage(channel="C1", text="v0"))["ts"])
    for version in (1, 2, 3):
        await client.chat_update(channel="C1", ts=ts, text=f"v{version}")
    for _ in range(20):  # hammering while refused
        await refused(client.chat_update(channel="C1", ts=ts, text="no"))
    await asyncio.sleep(0.12)
    await client.chat_update(channel="C1", ts=ts, text="v4")
    assert fake.rate_limited("chat.update") == 20


async def test_post_message_is_limited_per_channel(fake: FakeSlack, client: AsyncWebClient) -> None:
    for channel in ("C1", "C2", "C3"):
        await client.chat_postMessage(channel=channel, text="one")
        await client.chat_postMessage(channel=channel, text="two")
    error = await refused(client.chat_postMessage(channel="C1", text="three"))
    assert error.response.status_code == 429
    await client.chat_postMessage(channel="U7", text="a DM is a channel of its own")
    await client.chat_postMessage(channel="U7", text="and has its own burst")

    assert [m.text for m in fake.channel_messages("C1")] == ["one", "two"]
    assert fake.rate_limited("chat.postMessage") == 1


async def test_chat_update_is_limited_per_workspace_across_channels(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    stamps = {}
    for channel in ("C1", "C2", "C3", "C4"):
        stamps[channel] = str((await client.chat_postMessage(channel=channel, text="v0"))["ts"])
    for channel in ("C1", "C2", "C3"):
        await client.chat_update(channel=channel, ts=stamps[channel], text="v1")

    error = await refused(client.chat_update(channel="C4", ts=stamps["C4"], text="v1"))

    assert error.response.status_code == 429, "one allowance for the whole workspace"
    assert fake.message("C4", stamps["C4"]).text == "v0"


async def test_methods_not_listed_are_not_limited(fake: FakeSlack, client: AsyncWebClient) -> None:
    for _ in range(30):
        await client.auth_test()
    assert fake.rate_limited() == 0


async def test_limits_are_off_by_default() -> None:
    async with FakeSlack() as slack:
        client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
        ts = str((await client.chat_postMessage(channel="C1", text="v0"))["ts"])
        for number in range(80):
            await client.chat_update(channel="C1", ts=ts, text=f"v{number}")
            await client.chat_postMessage(channel="C1", text=f"m{number}")
        assert slack.rate_limits is None
        assert slack.rate_limited() == 0
        assert slack.stats()["rate_limited"] == {}


async def test_slacks_tiers_allow_tier_3s_burst_for_chat_update() -> None:
    async with FakeSlack(rate_limits=SlackTiers()) as slack:
        client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
        stamps = [
            str((await client.chat_postMessage(channel=f"C{n % 10}", text="v0"))["ts"])
            for n in range(int(TIER_3.burst) + 1)
        ]
        for number, ts in enumerate(stamps[:-1]):
            await client.chat_update(channel=f"C{number % 10}", ts=ts, text="v1")
        error = await refused(client.chat_update(channel="C5", ts=stamps[-1], text="v1"))
        assert error.response.headers["Retry-After"] == "2", "1.2 s until the next (50/min)"
        assert slack.rate_limited("chat.postMessage") == 0, "3 posts a channel: a burst"
        error = await refused(
            asyncio.gather(*(client.chat_postMessage(channel="C1", text="m") for _ in range(2)))
        )
        assert error.response.headers["Retry-After"] == "1", "1/s per channel, burst 4"


async def test_fractional_retry_after_keeps_fast_tests_fast() -> None:
    """`whole_seconds=False`: the exact wait, which the bot's `retry_after_seconds` reads.

    (slack_sdk's stock 429 handler reads only the first character, and fails on "0.083".)
    """
    tiers = SlackTiers.only({"chat.postMessage": Bucket(600, burst=1)}, whole_seconds=False)
    async with FakeSlack(rate_limits=tiers) as slack:
        client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
        await client.chat_postMessage(channel="C1", text="first")
        error = await refused(client.chat_postMessage(channel="C1", text="second"))
        wait = retry_after_seconds(error.response.headers)
        assert 0.05 < wait <= 0.1
        await asyncio.sleep(wait)
        await client.chat_postMessage(channel="C1", text="second, after waiting")
        assert [m.text for m in slack.messages] == ["first", "second, after waiting"]
        assert slack.rate_limited("chat.postMessage") == 1


async def test_retry_after_rounds_up_to_whole_seconds() -> None:
    tiers = SlackTiers()
    assert [tiers.retry_after(s) for s in (0.01, 1.0, 1.2, 59.5)] == ["1", "1", "2", "60"]
    fast = SlackTiers(whole_seconds=False)
    assert [fast.retry_after(s) for s in (0.0834, 0.0)] == ["0.083", "0.001"]


async def test_response_urls_are_limited_per_url() -> None:
    tiers = SlackTiers.only({"response_url": Bucket(600, burst=1, per="channel")})
    async with FakeSlack(rate_limits=tiers) as slack:
        first, second = slack.new_response_url(), slack.new_response_url()
        answers = [
            (await AsyncWebhookClient(url).send(text="hi")).status_code
            for url in (first, first, second)
        ]
        assert answers == [200, 429, 200]
        assert slack.rate_limited("response_url") == 1
        assert len(slack.responses_to(first)) == 1


async def test_set_rate_limits_replaces_the_tiers_with_full_buckets(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    ts = str((await client.chat_postMessage(channel="C1", text="v0"))["ts"])
    for version in (1, 2, 3):
        await client.chat_update(channel="C1", ts=ts, text=f"v{version}")
    fake.set_rate_limits(SlackTiers.only({"chat.update": Bucket(600, burst=5)}))
    for version in range(4, 9):
        await client.chat_update(channel="C1", ts=ts, text=f"v{version}")
    await refused(client.chat_update(channel="C1", ts=ts, text="no"))
    fake.set_rate_limits(None)
    for version in range(9, 30):
        await client.chat_update(channel="C1", ts=ts, text=f"v{version}")
    assert fake.rate_limited("chat.update") == 1


async def test_the_control_endpoint_sets_reads_and_clears_the_limits() -> None:
    async with FakeSlack() as slack, aiohttp.ClientSession() as session:
        client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
        url = f"{slack.base_url}/_control/rate_limits"
        body = {"base": "none", "methods": {"chat.postMessage": {"per_minute": 6, "burst": 1}}}
        async with session.post(url, json=body) as response:
            assert response.status == 200
            answer = await response.json()
        assert answer["rate_limits"]["methods"] == {
            "chat.postMessage": [{"per_minute": 6.0, "burst": 1.0, "per": "workspace"}]
        }
        await client.chat_postMessage(channel="C1", text="one")
        error = await refused(client.chat_postMessage(channel="C2", text="two"))
        assert error.response.headers["Retry-After"] == "10"
        async with session.get(url) as response:
            assert (await response.json())["rate_limited"] == {"chat.postMessage": 1}
        async with session.get(f"{slack.base_url}/_control/stats") as response:
            stats = await response.json()
        assert stats["rate_limited"] == {"chat.postMessage": 1}
        assert stats["rate_limits"]["methods"]["chat.postMessage"][0]["per_minute"] == 6.0

        async with session.post(url, json={"bogus": 1}) as response:
            assert response.status == 400
        async with session.post(url, json={"off": True}) as response:
            assert (await response.json())["rate_limits"] is None
        await client.chat_postMessage(channel="C2", text="two")
        async with session.post(url, json="slack") as response:
            methods = (await response.json())["rate_limits"]["methods"]
        assert methods["chat.update"] == [TIER_3.to_json()]


def test_tiers_scale_override_and_read_from_json() -> None:
    assert SlackTiers().methods == SLACK_METHOD_TIERS
    scaled = SlackTiers().scaled(10)
    assert scaled.methods["chat.update"] == (Bucket(500, burst=250),)
    assert scaled.methods["chat.postMessage"] == (Bucket(600, burst=40, per="channel"),)
    both = SlackTiers().override({"chat.postMessage": (POST_MESSAGE, Bucket(300, burst=50))})
    assert len(both.methods["chat.postMessage"]) == 2
    assert both.methods["chat.update"] == (TIER_3,)
    parsed = SlackTiers.from_json(
        {"scale": 2, "whole_seconds": False, "methods": {"chat.update": {"per_minute": 100}}}
    )
    assert parsed.methods["chat.update"] == (Bucket(200, burst=2),)
    assert parsed.methods["users.info"] == (Bucket(200, burst=100),)
    assert parsed.whole_seconds is False
    assert SlackTiers.from_json(json.loads(json.dumps(parsed.to_json()))) == parsed
    assert SlackTiers.from_json("slack") == SlackTiers()
    for bad in ({"scale": 0}, {"methods": {"x": {"per_minute": 0}}}, {"methods": []}, 3):
        with pytest.raises(ValueError):
            SlackTiers.from_json(bad)


def test_a_method_with_two_buckets_spends_neither_unless_both_have_room() -> None:
    tiers = SlackTiers.only(
        {"chat.postMessage": (Bucket(60, burst=2, per="channel"), Bucket(60, burst=3))}
    )
    meter = TierMeter(tiers)
    assert meter.take("chat.postMessage", "T1", "C1", 0.0) is None
    assert meter.take("chat.postMessage", "T1", "C1", 0.0) is None
    assert meter.take("chat.postMessage", "T1", "C1", 0.0) == pytest.approx(1.0)
    assert meter.take("chat.postMessage", "T1", "C2", 0.0) is None, "workspace had one left"
    assert meter.take("chat.postMessage", "T1", "C3", 0.0) == pytest.approx(1.0)
    assert meter.take("chat.postMessage", "T2", "C3", 0.0) is None, "another workspace"
    assert meter.take("chat.postMessage", "T1", "C3", 1.0) is None


async def test_the_standalone_fake_takes_rate_limits_on_its_command_line() -> None:
    limits = json.dumps({"base": "none", "methods": {"chat.update": {"per_minute": 60}}})
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.testing.slack",
        "--port",
        "0",
        "--rate-limits",
        limits,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        assert line.startswith("READY ")
        base = line.split()[1]
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{base}/_control/rate_limits") as response,
        ):
            answer = await response.json()
        assert answer["rate_limits"]["methods"] == {
            "chat.update": [{"per_minute": 60.0, "burst": 1.0, "per": "workspace"}]
        }
    finally:
        process.terminate()
        await process.wait()
