"""Each workspace connects its own Retell account (SPEC §10), over real HTTP with the fakes:
App Home and the modal, refused and unchecked keys, non-admins, runs reaching the workspace's
own account, a workspace with no key at all, and `retell-bot keys rotate`."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import func, select

from bot import cli
from bot.application import Application
from bot.blocks import connect as view
from bot.store import AckedCommand, Run, Workspace
from bot.testing.retell import FakeRetell
from bot.testing.slack import FakeSlack, SlackUser
from bot.testing.slack.requests import new_trigger_id
from bot.web import start_http
from bot.workspaces.keys import RetellKeys

from ..helpers import (
    CHANNEL,
    ENGINE,
    USER,
    BotFactory,
    RunningBot,
    install,
    results,
    settings_for,
)

TEAM_A, TEAM_B = "T0AAAA", "T0BBBB"
CHANNEL_A, CHANNEL_B = "C0AAAA", "C0BBBB"

ADMIN = "U0ADMIN"
KEY_THEIRS = "key_their_own_account_7q2z"
FIRST, SECOND = Fernet.generate_key().decode(), Fernet.generate_key().decode()

JSONDict = dict[str, Any]


# -- what Slack sends ------------------------------------------------------------------------


async def send(bot: RunningBot, user: SlackUser, payload: JSONDict) -> int:
    reply = await user.post_signed(bot.events_url, urlencode({"payload": json.dumps(payload)}))
    return reply.status


async def open_home(bot: RunningBot, slack: FakeSlack, user: SlackUser) -> JSONDict:
    """`app_home_opened`, signed; the Home view the bot then published."""
    previous = slack.home_views.get(user.user_id)
    body = json.dumps(
        {
            "type": "event_callback",
            "token": "unused",
            "team_id": user.team_id,
            "api_app_id": slack.app_id,
            "event": {"type": "app_home_opened", "user": user.user_id, "tab": "home"},
            "event_id": f"Ev{time.time_ns()}",
            "event_time": int(time.time()),
        }
    )
    await user.post_signed(bot.events_url, body)
    await slack.wait_for(lambda: slack.home_views.get(user.user_id) not in (None, previous))
    return slack.home_views[user.user_id]


def home_press(slack: FakeSlack, user: SlackUser, action_id: str) -> JSONDict:
    """A press of a Home tab button: no channel, no response_url, a trigger_id."""
    press = user.press_payload(action_id=action_id, value="connect", message_ts="1.0")
    home = slack.home_views.get(user.user_id, {"id": "V0HOME"})
    press["container"] = {"type": "view", "view_id": home["id"]}
    press["view"] = {"id": home["id"], "type": "home"}
    press["trigger_id"] = new_trigger_id()
    del press["channel"], press["response_url"]
    return press


def submission(slack: FakeSlack, user: SlackUser, typed: str) -> JSONDict:
    modal = view.connect_modal()
    values = {view.KEY_BLOCK: {view.KEY_ACTION: {"type": "plain_text_input", "value": typed}}}
    return {
        "type": "view_submission",
        "trigger_id": new_trigger_id(),
        "view": {**modal, "id": "V0CONNECT", "state": {"values": values}},
        "team": {"id": user.team_id, "domain": slack.team_domain},
        "user": {"id": user.user_id, "username": user.user_name, "team_id": user.team_id},
        "api_app_id": slack.app_id,
    }


async def submit(bot: RunningBot, user: SlackUser, payload: JSONDict) -> Any:
    reply = await user.post_signed(bot.events_url, urlencode({"payload": json.dumps(payload)}))
    assert reply.status == 200
    return reply.json()


def words(home: JSONDict) -> str:
    return json.dumps(home, ensure_ascii=False)


def buttons(home: JSONDict) -> set[str]:
    return {
        element.get("action_id")
        for block in home["blocks"]
        for element in block.get("elements", [])
        if isinstance(element, dict) and element.get("type") == "button"
    }


def opened_views(slack: FakeSlack) -> list[JSONDict]:
    return [call.params for call in slack.calls if call.method == "views.open" and call.ok]


async def rows(bot: RunningBot) -> list[Workspace]:
    async with bot.app.store.engine.connect() as conn:
        return list((await conn.execute(select(Workspace))).all())  # type: ignore[arg-type]


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def admin(slack: FakeSlack) -> SlackUser:
    slack.add_user(ADMIN, "ann", is_admin=True)
    return SlackUser(slack=slack, user_id=ADMIN, user_name="ann", channel_id=CHANNEL)


@pytest.fixture
def theirs(retell: FakeRetell) -> FakeRetell:
    """The workspace's own Retell account, on the same stand-in, with an engine of its own."""
    account = retell.add_account(KEY_THEIRS)
    account.add_engine("retell-llm", ENGINE)
    account.add_definition(ENGINE, "tc_1", "Their case")
    return account


@pytest.fixture
async def keyed_bot(start_bot: BotFactory) -> AsyncIterator[RunningBot]:
    async with start_bot(encryption_keys=FIRST) as running:
        yield running


async def connect(bot: RunningBot, slack: FakeSlack, admin: SlackUser, key: str) -> Any:
    """Connect through Home: the press opens the modal, the key is submitted."""
    await open_home(bot, slack, admin)
    assert await send(bot, admin, home_press(slack, admin, view.ACTION_CONNECT)) == 200
    await slack.wait_for(lambda: len(opened_views(slack)) == 1)
    return await submit(bot, admin, submission(slack, admin, key))


# -- tests ---------------------------------------------------------------------------------------


async def test_an_admin_connects_retell_in_home_and_runs_go_to_that_account(
    keyed_bot: RunningBot,
    slack: FakeSlack,
    retell: FakeRetell,
    theirs: FakeRetell,
    admin: SlackUser,
    user: SlackUser,
) -> None:
    home = await open_home(keyed_bot, slack, admin)
    assert "Using the deployment's Retell key" in words(home)
    assert buttons(home) >= {view.ACTION_CONNECT} and view.ACTION_REMOVE not in buttons(home)

    assert await connect(keyed_bot, slack, admin, KEY_THEIRS) is None  # the modal closes
    [opened] = opened_views(slack)
    assert opened["view"]["private_metadata"] == ""
    await slack.wait_for(lambda: "…7q2z" in words(slack.home_views[ADMIN]))
    shown = words(slack.home_views[ADMIN])
    assert "…7q2z" in shown and f"<@{ADMIN}>" in shown
    assert view.ACTION_REMOVE in buttons(slack.home_views[ADMIN])
    assert theirs.count("/get-concurrency") == 1 and retell.count("/get-concurrency") == 0

    [row] = await rows(keyed_bot)
    assert row.retell_key_hint == "7q2z" and row.retell_key_by == ADMIN
    assert row.retell_key is not None and KEY_THEIRS not in row.retell_key
    assert Fernet(FIRST.encode()).decrypt(row.retell_key.encode()).decode() == KEY_THEIRS

    await user.command(keyed_bot.events_url, f"run {ENGINE} tc_1")
    await slack.wait_for(lambda: len(results(slack)) == 1)
    assert len(theirs.batches) == 1 and not retell.batches
    assert retell.count("/") == 0, "the deployment's account saw no request of this workspace"
    assert "1 passed" in results(slack)[0].text
    everything = json.dumps([call.params for call in slack.calls])
    assert KEY_THEIRS not in everything, "the key never reaches Slack again"


async def test_an_admin_removes_the_key_and_runs_use_the_deployments_again(
    keyed_bot: RunningBot,
    slack: FakeSlack,
    retell: FakeRetell,
    theirs: FakeRetell,
    admin: SlackUser,
    user: SlackUser,
) -> None:
    assert await connect(keyed_bot, slack, admin, KEY_THEIRS) is None
    await slack.wait_for(lambda: "…7q2z" in words(slack.home_views[ADMIN]))
    assert await send(keyed_bot, admin, home_press(slack, admin, view.ACTION_REMOVE)) == 200
    await slack.wait_for(lambda: "…7q2z" not in words(slack.home_views[ADMIN]))
    [row] = await rows(keyed_bot)
    assert row.retell_key is None and row.retell_key_hint is None
    await user.command(keyed_bot.events_url, f"run {ENGINE} tc_1")
    await slack.wait_for(lambda: len(results(slack)) == 1)
    assert len(retell.batches) == 1 and not theirs.batches


async def test_a_refused_key_or_retell_down_is_an_inline_error_and_nothing_is_stored(
    keyed_bot: RunningBot, slack: FakeSlack, theirs: FakeRetell, admin: SlackUser
) -> None:
    answer = await connect(keyed_bot, slack, admin, "key_nobody_has_this")
    assert answer == {"response_action": "errors", "errors": {view.KEY_BLOCK: view.KEY_REFUSED}}
    theirs.fail_next("/get-concurrency", 503)  # a good key, while Retell is down
    answer = await submit(keyed_bot, admin, submission(slack, admin, KEY_THEIRS))
    assert answer["errors"] == {view.KEY_BLOCK: view.KEY_UNCHECKED}
    answer = await submit(keyed_bot, admin, submission(slack, admin, "two words"))
    assert answer["errors"] == {view.KEY_BLOCK: view.KEY_MALFORMED}
    assert await rows(keyed_bot) == []


async def test_a_non_admin_sees_no_buttons_and_a_forged_press_is_refused_privately(
    keyed_bot: RunningBot, slack: FakeSlack, theirs: FakeRetell, user: SlackUser
) -> None:
    home = await open_home(keyed_bot, slack, user)
    assert "Retell account" in words(home)
    assert not buttons(home) & {view.ACTION_CONNECT, view.ACTION_REMOVE}

    assert await send(keyed_bot, user, home_press(slack, user, view.ACTION_CONNECT)) == 200
    await slack.wait_for(lambda: bool(slack.channel_messages("D" + USER[1:])))
    [told] = slack.channel_messages("D" + USER[1:])
    assert view.ONLY_ADMINS in told.text
    assert opened_views(slack) == []

    answer = await submit(keyed_bot, user, submission(slack, user, KEY_THEIRS))
    assert answer["errors"] == {view.KEY_BLOCK: view.ONLY_ADMINS}
    assert await send(keyed_bot, user, home_press(slack, user, view.ACTION_REMOVE)) == 200
    await slack.wait_for(lambda: len(slack.channel_messages("D" + USER[1:])) == 2)
    assert await rows(keyed_bot) == [] and theirs.count("/get-concurrency") == 0


async def test_admin_user_ids_may_connect_without_being_a_slack_admin(
    start_bot: BotFactory, slack: FakeSlack, theirs: FakeRetell, user: SlackUser
) -> None:
    async with start_bot(encryption_keys=FIRST, admin_user_ids=USER) as bot:
        assert await connect(bot, slack, user, KEY_THEIRS) is None
        [row] = await rows(bot)
        assert row.retell_key_by == USER


@asynccontextmanager
async def bot_without_retell_key(
    slack: FakeSlack, retell: FakeRetell, database_url: str
) -> AsyncIterator[RunningBot]:
    """The real application whose settings have ENCRYPTION_KEYS but no RETELL_API_KEY."""
    settings = settings_for(slack, retell, database_url, encryption_keys=FIRST)
    app = Application.build(settings.model_copy(update={"retell_api_key": None}))
    async with app.running():
        runner, port = await start_http(app, "127.0.0.1", 0)
        try:
            yield RunningBot(app, f"http://127.0.0.1:{port}")
        finally:
            await runner.cleanup()


async def test_with_no_key_anywhere_commands_say_how_to_connect_and_create_nothing(
    slack: FakeSlack, retell: FakeRetell, database_url: str, user: SlackUser, admin: SlackUser
) -> None:
    async with bot_without_retell_key(slack, retell, database_url) as bot:
        for text in (f"run {ENGINE} tc_1", "watch test_case_batch_job_x", ""):
            reply = await user.command(bot.events_url, text)
            assert reply.status == 200
            assert "connects Retell in the app's Home tab" in reply.text, text
        home = await open_home(bot, slack, admin)
        assert "Not connected" in words(home)
        async with bot.app.store.engine.connect() as conn:
            assert await conn.scalar(select(func.count()).select_from(Run)) == 0
            assert await conn.scalar(select(func.count()).select_from(AckedCommand)) == 0
        assert retell.requests == [] and opened_views(slack) == []


async def test_keys_rotate_re_encrypts_with_the_new_first_key(
    keyed_bot: RunningBot,
    slack: FakeSlack,
    theirs: FakeRetell,
    admin: SlackUser,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert await connect(keyed_bot, slack, admin, KEY_THEIRS) is None
    engine = keyed_bot.app.store.engine
    assert await RetellKeys(engine, [SECOND, FIRST]).key_for(slack.team_id) == KEY_THEIRS
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("ENCRYPTION_KEYS", f"{SECOND},{FIRST}")
    assert await asyncio.to_thread(cli.main, ["keys", "rotate"]) == 0
    assert await RetellKeys(engine, [SECOND]).key_for(slack.team_id) == KEY_THEIRS
    assert await RetellKeys(engine, [FIRST]).key_for(slack.team_id) is None
    [row] = await rows(keyed_bot)
    assert row.retell_key is not None and KEY_THEIRS not in row.retell_key


async def test_two_workspaces_one_with_its_own_retell_account_one_with_none(
    start_bot: BotFactory, slack: FakeSlack, retell: FakeRetell, theirs: FakeRetell
) -> None:
    """Distributed, with no RETELL_API_KEY: A connects its own account and runs there; B,
    which connected none, is told how to connect and creates nothing anywhere."""
    settings = {
        "slack_bot_token": None,
        "slack_client_id": slack.client_id,
        "slack_client_secret": slack.client_secret,
        "encryption_keys": FIRST,
        "retell_api_key": None,
    }
    async with start_bot(**settings) as bot:
        slack.redirect_url = f"{bot.url}/slack/oauth_redirect"
        for team in (TEAM_A, TEAM_B):
            assert (await install(bot.url, slack, team))[0] == 200
        slack.add_user("U0AADMIN", "ann", is_admin=True)
        slack.add_user("U0BADMIN", "ben", is_owner=True)
        admin_a = SlackUser(slack=slack, user_id="U0AADMIN", team_id=TEAM_A, channel_id=CHANNEL_A)
        admin_b = SlackUser(slack=slack, user_id="U0BADMIN", team_id=TEAM_B, channel_id=CHANNEL_B)
        assert await connect(bot, slack, admin_a, KEY_THEIRS) is None
        await slack.wait_for(lambda: "…7q2z" in words(slack.home_views["U0AADMIN"]))
        home_b = await open_home(bot, slack, admin_b)
        assert "Not connected" in words(home_b) and "…7q2z" not in words(home_b)
        assert view.ACTION_CONNECT in buttons(home_b)

        ran = await admin_a.command(bot.events_url, f"run {ENGINE} tc_1")
        assert "Starting a Retell batch test" in ran.text
        refused = await admin_b.command(bot.events_url, f"run {ENGINE} tc_1")
        assert "connects Retell in the app's Home tab" in refused.text
        await slack.wait_for(lambda: len(results(slack, CHANNEL_A)) == 1)
        [row] = [r for r in await rows(bot) if r.retell_key]
        assert row.team_id == TEAM_A
    assert len(theirs.batches) == 1 and not retell.batches
    assert results(slack, CHANNEL_B) == [] and retell.count("/") == 0
