"""Start-up (issue 17): the HTTP surface answers before the application is ready.

`serve` starts the server on a `Front` and readies it once the application is built, migrated
and its scheduler started; these drive a `Front` directly, in process.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from bot import web
from bot.application import Application
from bot.testing.retell import FakeRetell
from bot.testing.slack import FakeSlack, SlackUser
from bot.web import STARTING_TEXT, Front, start_http

from ..helpers import ENGINE, results, settings_for


async def test_a_command_held_during_start_up_is_acked_and_started_once_ready(
    slack: FakeSlack, retell: FakeRetell, user: SlackUser, database_url: str
) -> None:
    settings = settings_for(slack, retell, database_url)
    front = Front(settings)
    runner, port = await start_http(front, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{url}/healthz") as response:
                assert (response.status, await response.json()) == (503, {"status": "starting"})
            async with session.get(f"{url}/livez") as response:
                assert (response.status, await response.json()) == (200, {"status": "starting"})
            async with session.get(f"{url}/metrics") as response:
                assert response.status == 503
        typed = asyncio.create_task(user.command(f"{url}/slack/events", f"{ENGINE} tc_1"))
        await asyncio.sleep(0.3)
        assert not typed.done(), "held until the application is ready"
        app = Application.build(settings)
        async with app.running():
            front.ready(app)
            reply = await typed
            assert reply.status == 200 and "Starting a Retell batch test" in reply.text
            await slack.wait_for(lambda: len(results(slack)) == 1, timeout=20)
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{url}/healthz") as response:
                    assert (response.status, await response.json()) == (200, {"status": "ok"})
                async with session.get(f"{url}/livez") as response:
                    assert await response.json() == {"status": "ok"}
            await runner.cleanup()
        assert len(retell.batches) == 1
    finally:
        await runner.cleanup()


async def test_a_command_the_start_up_does_not_finish_for_is_told_nothing_was_started(
    slack: FakeSlack,
    retell: FakeRetell,
    user: SlackUser,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(web, "HOLD_SECONDS", 0.3)
    front = Front(settings_for(slack, retell, database_url))
    runner, port = await start_http(front, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{port}"
    forger = SlackUser(slack=slack, signing_secret="not-the-secret")
    try:
        reply = await user.command(f"{url}/slack/events", f"{ENGINE} tc_1")
        assert reply.status == 200 and reply.json()["text"] == STARTING_TEXT
        assert (await forger.command(f"{url}/slack/events", f"{ENGINE} tc_1")).status == 401
        front.failed("failed")
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{url}/healthz") as response,
        ):
            assert (response.status, await response.json()) == (503, {"status": "failed"})
    finally:
        await runner.cleanup()
    assert not retell.batches
