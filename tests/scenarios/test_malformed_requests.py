"""Requests a hostile or broken client sends to `/slack/events`, and `/metrics` behind a token.

The signature is checked on the raw bytes before anything parses them: an unsigned request gets
401 however it is shaped, a signed one Bolt cannot read gets 400, neither logs a traceback, and
both are counted in `/metrics`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from urllib.parse import quote

import aiohttp
import pytest

from bot.testing.retell import FakeRetell
from bot.testing.slack import FakeSlack, signed_headers

from ..helpers import BotFactory, RunningBot

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
JSON = {"Content-Type": "application/json"}
DEEP = "[" * 5000 + "]" * 5000

BODIES: dict[str, tuple[bytes, Mapping[str, str]]] = {
    "invalid JSON": (b'{"type": "event_callback", ', JSON),
    "payload that is not JSON": (b"payload={not json", FORM),
    "payload of invalid UTF-8 escapes": (b"payload=%FF%FE", FORM),
    "5,000-deep array as JSON": (DEEP.encode(), JSON),
    "5,000-deep array as payload": (f"payload={quote(DEEP)}".encode(), FORM),
    "payload=[]": (b"payload=%5B%5D", FORM),
    "payload=null": (b"payload=null", FORM),
    "payload=123": (b"payload=123", FORM),
    "JSON body that is a list": (b"[1, 2]", JSON),
}


async def post(url: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=dict(headers)) as response,
    ):
        return response.status, await response.text()


async def metric(bot: RunningBot, name: str, headers: Mapping[str, str] | None = None) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{bot.url}/metrics", headers=dict(headers or {})) as response,
    ):
        assert response.status == 200
        text = await response.text()
    return "\n".join(line for line in text.splitlines() if line.startswith(name))


def sign(slack: FakeSlack, body: bytes) -> dict[str, str]:
    return signed_headers(slack.signing_secret, body.decode("utf-8", "replace"))


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        f"{r.name} {r.levelname}: {r.getMessage()}"
        for r in caplog.records
        if r.levelno >= logging.ERROR or r.exc_info
    ]


async def test_unsigned_malformed_requests_get_401_without_a_traceback(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, caplog: pytest.LogCaptureFixture
) -> None:
    now = str(int(time.time()))
    attempts = {f"unsigned {what}": (body, headers) for what, (body, headers) in BODIES.items()}
    good = signed_headers(slack.signing_secret, "payload=null")
    attempts |= {
        "timestamp abc": (b"payload=null", {**FORM, **good, "X-Slack-Request-Timestamp": "abc"}),
        "timestamp of 400 digits": (
            b"payload=null",
            {**FORM, **good, "X-Slack-Request-Timestamp": "9" * 400},
        ),
        "negative timestamp": (b"a=b", {**FORM, **good, "X-Slack-Request-Timestamp": "-1"}),
        "non-ASCII signature": (b"a=b", {**FORM, "X-Slack-Request-Timestamp": now}),
        "empty body": (b"", FORM),
        # No signature over bytes that are not UTF-8 can be checked, so none is valid.
        "bytes that are not UTF-8": (b"payload=\xff\xfe", {**FORM, **good}),
    }
    for what, (body, headers) in attempts.items():
        if what == "non-ASCII signature":
            # aiohttp sends header values as latin-1; `é` is one of its non-ASCII letters.
            headers = {**headers, "X-Slack-Signature": "v0=é" + "0" * 63}
        status, _ = await post(bot.events_url, body, headers)
        assert status == 401, what
    assert no_tracebacks(caplog) == []
    assert slack.calls == [] and retell.requests == []
    counted = await metric(bot, "retell_bot_rejected_requests_total")
    assert f'reason="signature"}} {float(len(attempts))}' in counted


async def test_signed_malformed_requests_get_400_without_a_traceback(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, caplog: pytest.LogCaptureFixture
) -> None:
    for what, (body, headers) in BODIES.items():
        status, _ = await post(bot.events_url, body, {**headers, **sign(slack, body)})
        assert status == 400, what
    assert no_tracebacks(caplog) == []
    assert slack.calls == [] and retell.requests == []
    counted = await metric(bot, "retell_bot_rejected_requests_total")
    assert f'reason="malformed"}} {float(len(BODIES))}' in counted


async def test_slacks_unsigned_ssl_check_is_still_answered(bot: RunningBot) -> None:
    status, _ = await post(bot.events_url, b"ssl_check=1&token=abc", FORM)
    assert status == 200


async def test_metrics_token_guards_metrics_and_nothing_else(start_bot: BotFactory) -> None:
    async with start_bot(metrics_token="scrape-me-please") as bot:
        async with aiohttp.ClientSession() as session:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}):
                async with session.get(f"{bot.url}/metrics", headers=headers) as response:
                    assert response.status == 401
                    assert response.headers["WWW-Authenticate"].startswith("Bearer")
            async with session.get(f"{bot.url}/healthz") as response:
                assert response.status == 200, "health checks need no token"
        bearer = {"Authorization": "Bearer scrape-me-please"}
        assert "retell_bot_ack_latency_seconds" in await metric(bot, "retell_bot_ack", bearer)
