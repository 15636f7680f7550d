"""Start-up (issue 17): the HTTP surface answers before the application is ready.

`serve` starts the server on a `Front`, opens the early stage on it (`bot.early`: the store,
migrated; `run` and `compare` kept and acked as usual) and readies it once the application is
built on that store and its scheduler started; these drive a `Front` directly, in process.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import select

from bot import blocks, web
from bot.application import Application
from bot.commands import RunCommand, parse
from bot.early import EarlyCommands
from bot.store import AckedCommand, Store, utcnow
from bot.testing.retell import FakeRetell
from bot.testing.slack import FakeSlack, SlackUser
from bot.web import STARTING_TEXT, Front, start_http

from ..helpers import ENGINE, results, settings_for

ROOT = Path(__file__).parents[2]


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


async def kept_commands(store: Store) -> list[tuple[str, str]]:
    """(request key, text) of what `acked_commands` holds, claimable now (nobody holds it)."""
    async with store.engine.connect() as connection:
        rows = await connection.execute(
            select(AckedCommand.request_key, AckedCommand.text).where(
                AckedCommand.claimed_until <= utcnow() + timedelta(milliseconds=1)
            )
        )
        return [(key, text) for key, text in rows.all()]


def acked_as_usual(text: str) -> str:
    """What the application acks this `run` or `compare` with."""
    parsed = parse(text)
    assert isinstance(parsed, RunCommand)
    return blocks.run_ack_text(parsed)


async def test_a_run_command_during_start_up_is_kept_acked_as_usual_and_started_once_ready(
    slack: FakeSlack, retell: FakeRetell, user: SlackUser, database_url: str
) -> None:
    """SPEC §11: the ack is not "send it again" but the usual one, because the command is in
    `acked_commands` before it; the ready application starts it once, a retry (the same
    trigger_id) before or after that included."""
    settings = settings_for(slack, retell, database_url)
    front = Front(settings)
    runner, port = await start_http(front, "127.0.0.1", 0)
    events = f"http://127.0.0.1:{port}/slack/events"
    command = f"{ENGINE} tc_1 tc_2"
    try:
        early = await EarlyCommands.open(settings)
        front.opened(early)
        sent = time.monotonic()
        reply = await user.command(events, command, trigger_id="T-early")
        assert time.monotonic() - sent < 1.0
        assert (reply.status, reply.text) == (200, acked_as_usual(command))
        assert reply.text.startswith("Starting a Retell batch test")
        again = await user.command(events, command, trigger_id="T-early")  # Slack retried it
        assert (again.status, again.text) == (200, reply.text)
        assert await kept_commands(early.store) == [("T-early", command)]
        helped = (await user.command(events, "help")).json()
        assert helped["blocks"] and "help" in helped["text"]
        assert not retell.batches, "nothing starts before the application is ready"

        app = Application.build(settings, store=early.store)
        async with app.running():
            front.ready(app)
            await early.hand_over(app.workflow)
            await slack.wait_for(lambda: len(results(slack)) == 1, timeout=20)
            late = await user.command(events, command, trigger_id="T-early")
            assert (late.status, late.text) == (200, reply.text)
            await asyncio.sleep(0.3)
            assert await kept_commands(app.store) == []
            await runner.cleanup()
        assert len(retell.batches) == 1, "started once"
        assert len(results(slack)) == 1
    finally:
        await runner.cleanup()


async def test_what_start_up_acked_is_started_by_the_next_process_if_this_one_stops_first(
    slack: FakeSlack, retell: FakeRetell, user: SlackUser, database_url: str
) -> None:
    """Stopped (or killed) before the application was ready: the kept command is claimable,
    so the next process (or another replica) starts it, as any orphaned command."""
    settings = settings_for(slack, retell, database_url)
    front = Front(settings)
    runner, port = await start_http(front, "127.0.0.1", 0)
    retell.add_engine("retell-llm", ENGINE, versions=5)
    command = f"compare {ENGINE}@3 {ENGINE}@4 tc_1 tc_2"
    try:
        early = await EarlyCommands.open(settings)
        front.opened(early)
        reply = await user.command(f"http://127.0.0.1:{port}/slack/events", command)
        assert (reply.status, reply.text) == (200, acked_as_usual(command))
        assert reply.text.startswith("Comparing")
    finally:
        await runner.cleanup()
    front.failed("stopping")
    await early.close()
    await early.store.close()

    assert not retell.batches
    successor = Application.build(settings)
    async with successor.running():  # its sweep finds the command
        await slack.wait_for(lambda: len(results(slack)) == 1, timeout=20)
        assert await kept_commands(successor.store) == []
    assert len(retell.batches) == 2, "both versions, once"


async def test_refusals_mistakes_and_other_commands_during_start_up(
    slack: FakeSlack,
    retell: FakeRetell,
    user: SlackUser,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The access lists hold before the application too; a mistake gets its usual answer;
    commands the early stage does not take (status, the Run form) wait for the application
    and, if it is not ready in time, are told nothing was started."""
    monkeypatch.setattr(web, "HOLD_SECONDS", 0.3)
    settings = settings_for(
        slack, retell, database_url, allowed_channel_ids="C0OTHER", admin_user_ids="UADMIN"
    )
    front = Front(settings)
    runner, port = await start_http(front, "127.0.0.1", 0)
    events = f"http://127.0.0.1:{port}/slack/events"
    try:
        early = await EarlyCommands.open(settings)
        front.opened(early)
        refused = (await user.command(events, f"{ENGINE} tc_1")).json()
        assert "can't be run from this channel" in refused["text"]
        assert "<@UADMIN>" in str(refused["blocks"])
        mistake = (await user.command(events, f"{ENGINE}")).json()
        assert mistake["text"].startswith("⚠️")
        for waits in ("status", ""):
            reply = await user.command(events, waits)
            assert reply.json()["text"] == STARTING_TEXT, waits
        assert await kept_commands(early.store) == []
    finally:
        await runner.cleanup()
        await early.close()
        await early.store.close()
    assert not retell.batches


@pytest.mark.parametrize(
    ("module", "not_yet"),
    [
        ("bot.web", ("sqlalchemy", "retell", "apscheduler", "bot.store", "bot.application")),
        ("bot.early", ("retell", "apscheduler", "bot.runs", "bot.application", "bot.retell")),
    ],
)
def test_what_each_stage_of_start_up_imports(module: str, not_yet: tuple[str, ...]) -> None:
    """`serve` listens with `bot.web` imported, keeps commands with `bot.early`: neither may
    pull in what the next stage is there to wait for (retell-sdk's models: over a second)."""
    probe = f"import sys, {module}; print(sorted(set(sys.modules) & {set(not_yet)!r}))"
    found = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert found.stdout.strip() == "[]", found.stdout
