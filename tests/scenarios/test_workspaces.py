"""Many workspaces (SPEC §10): installing through OAuth, tokens per workspace (rotating ones
too), workspaces that never see each other, and uninstalling."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.fernet import Fernet
from slack_sdk.oauth.installation_store import Bot
from sqlalchemy import bindparam, func, select, text

from bot.scheduling import schedule_key
from bot.slackapi import web_client
from bot.store import Run, RunSchedule, Store, create_engine
from bot.testing.retell import FakeRetell
from bot.testing.slack import FakeSlack, SlackUser
from bot.workspaces.installations import REFRESH_RETRY_SECONDS, SCOPES, Installations
from tests.helpers import (
    ENGINE,
    BotFactory,
    RunningBot,
    browser,
    button_value,
    install,
    install_link,
    results,
    settings_for,
    visible_text,
)

ENCRYPTION_KEY = Fernet.generate_key().decode()
TEAM_A, TEAM_B = "T0AAAA", "T0BBBB"
CHANNEL_A, CHANNEL_B = "C0AAAA", "C0BBBB"


def distribution(slack: FakeSlack, **more: Any) -> dict[str, Any]:
    """Settings of a distributed app: no bot token, the OAuth app's id and secret."""
    return {
        "slack_bot_token": None,
        "slack_client_id": slack.client_id,
        "slack_client_secret": slack.client_secret,
        "encryption_keys": ENCRYPTION_KEY,
        **more,
    }


@asynccontextmanager
async def distributed(
    start_bot: BotFactory, slack: FakeSlack, **more: Any
) -> AsyncIterator[RunningBot]:
    async with start_bot(**distribution(slack, **more)) as bot:
        slack.redirect_url = f"{bot.url}/slack/oauth_redirect"
        yield bot


def member(slack: FakeSlack, team_id: str, channel_id: str, user_id: str) -> SlackUser:
    return SlackUser(
        slack=slack,
        user_id=user_id,
        user_name=user_id.lower(),
        team_id=team_id,
        channel_id=channel_id,
    )


def tokens_used(slack: FakeSlack, method: str, channel: str) -> set[str | None]:
    """The workspaces whose tokens the bot's `method` calls in `channel` carried."""
    return {
        c.team_id for c in slack.calls if c.method == method and c.params.get("channel") == channel
    }


async def count(bot: RunningBot, table: str) -> int:
    async with bot.app.store.engine.connect() as conn:
        return int((await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())


async def forgotten(bot: RunningBot, *teams: str, installations_left: int = 0) -> None:
    """Wait for an uninstall (handled after Slack's event is acked) to have deleted it all:
    the tokens, then each workspace's rows."""

    async def done() -> bool:
        async with bot.app.store.engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT count(*) FROM workspaces WHERE team_id IN :teams").bindparams(
                    bindparam("teams", expanding=True)
                ),
                {"teams": list(teams)},
            )
            left = int(rows.scalar_one())
        return left == 0 and await count(bot, "slack_bots") == installations_left

    deadline = asyncio.get_running_loop().time() + 10
    while not await done():  # the database has nothing to wait on: look again shortly
        assert asyncio.get_running_loop().time() < deadline, "the uninstall never finished"
        await asyncio.sleep(0.02)


# -- installing --------------------------------------------------------------------------------


async def test_installing_stores_the_workspace_and_its_commands_run_with_its_token(
    start_bot: BotFactory, slack: FakeSlack, retell: FakeRetell
) -> None:
    async with distributed(start_bot, slack) as bot:
        status, page = await install(bot.url, slack, TEAM_A)
        assert status == 200, page
        assert "Retell Tests is installed in Team AAAA" in page
        assert await count(bot, "slack_bots") == 1
        authorize = next(c for c in slack.calls if c.method == "oauth.v2.access")
        assert authorize.ok

        alice = member(slack, TEAM_A, CHANNEL_A, "U0ALICE")
        reply = await alice.command(bot.events_url, f"{ENGINE} tc_1 tc_2")
        assert "Starting a Retell batch test" in reply.text
        await slack.wait_for(lambda: len(results(slack, CHANNEL_A)) == 1)
    [result] = results(slack, CHANNEL_A)
    assert "2 passed" in result.text
    assert tokens_used(slack, "chat.postMessage", CHANNEL_A) == {TEAM_A}
    assert tokens_used(slack, "chat.update", CHANNEL_A) == {TEAM_A}


async def test_the_install_page_asks_for_the_manifests_scopes_with_a_state(
    start_bot: BotFactory, slack: FakeSlack
) -> None:
    async with distributed(start_bot, slack) as bot, browser(bot.url) as session:
        link = await install_link(session, bot.url)
    assert link.startswith(slack.base_url + "/oauth/v2/authorize?")
    query = parse_qs(urlsplit(link).query)
    assert query["client_id"] == [slack.client_id]
    assert query["state"][0]
    assert set(query["scope"][0].split(",")) == set(SCOPES)


@pytest.mark.parametrize("state_secret", [None, "state-secret-31e8"], ids=["stored", "signed"])
async def test_a_forged_or_reused_state_is_refused_and_nothing_is_stored(
    start_bot: BotFactory, slack: FakeSlack, state_secret: str | None
) -> None:
    slack.add_workspace(TEAM_A, "Team AAAA")
    async with distributed(start_bot, slack, slack_state_secret=state_secret) as bot:
        async with browser(bot.url) as session:
            link = await install_link(session, bot.url)
            state = re.search(r"[?&]state=([^&]+)", link).group(1)  # type: ignore[union-attr]
            forged = link.replace(state, "forged-state")
            # A forged state, in the browser the install began in: refused.
            async with session.get(f"{forged}&team={TEAM_A}") as refused:
                assert refused.status in (400, 401)
                assert "Start again from the install link" in await refused.text()
            # The real one: installed; the redirect it led to, replayed: refused.
            async with session.get(f"{link}&team={TEAM_A}") as done:
                assert done.status == 200
                redirect = str(done.url)
            async with session.get(redirect) as replayed:
                assert replayed.status in (400, 401)
                assert "Not installed" in await replayed.text()
        # The redirect from a browser that never opened the install page: refused.
        async with browser(bot.url) as stranger, stranger.get(redirect) as elsewhere:
            assert elsewhere.status == 400
            assert "another browser" in await elsewhere.text()
        assert await count(bot, "slack_bots") == 1, "only the one real installation"
    codes = [c for c in slack.calls if c.method == "oauth.v2.access"]
    assert len(codes) == 1, "no code was exchanged for a refused state"


async def test_a_cancelled_installation_says_so_and_stores_nothing(
    start_bot: BotFactory, slack: FakeSlack
) -> None:
    slack.add_workspace(TEAM_A, "Team AAAA")
    async with distributed(start_bot, slack) as bot, browser(bot.url) as session:
        link = await install_link(session, bot.url)
        async with session.get(f"{link}&team={TEAM_A}&deny=1") as page:
            assert "installation was cancelled" in await page.text()
        assert await count(bot, "slack_bots") == 0


async def test_a_workspace_that_has_not_installed_the_app_gets_nothing_done(
    start_bot: BotFactory, slack: FakeSlack, retell: FakeRetell
) -> None:
    async with distributed(start_bot, slack) as bot:
        stranger = member(slack, "T0NOTYET", "C0NOTYET", "U0EVE")
        reply = await stranger.command(bot.events_url, f"{ENGINE} tc_1")
    assert "Starting" not in reply.text
    assert retell.count("/create-batch-test") == 0


# -- two workspaces side by side ---------------------------------------------------------------


async def test_two_workspaces_never_see_or_change_each_others_runs_and_schedules(
    start_bot: BotFactory, slack: FakeSlack, retell: FakeRetell
) -> None:
    async with distributed(start_bot, slack) as bot:
        for team in (TEAM_A, TEAM_B):
            assert (await install(bot.url, slack, team))[0] == 200
        alice = member(slack, TEAM_A, CHANNEL_A, "U0ALICE")
        bob = member(slack, TEAM_B, CHANNEL_B, "U0BOB")
        await alice.command(bot.events_url, f"{ENGINE} tc_1")
        await bob.command(bot.events_url, f"{ENGINE} tc_1 tc_fail_1")
        await slack.wait_for(
            lambda: len(results(slack, CHANNEL_A)) == 1 and len(results(slack, CHANNEL_B)) == 1
        )
        added = await alice.command(
            bot.events_url, f'schedule add "daily 09:00" {ENGINE} tc_1 name=ours'
        )
        await slack.wait_for(lambda: bool(slack.responses_to(added.response_url)))

        # Bob presses Rerun with the id of Alice's run in the button's value.
        [result_a] = results(slack, CHANNEL_A)
        [result_b] = results(slack, CHANNEL_B)
        alices_run = button_value(result_a, "rerun")
        assert alices_run is not None
        forged = await bob.press(
            bot.events_url, action_id="rerun", value=alices_run, message_ts=result_b.ts
        )
        await slack.wait_for(lambda: bool(slack.responses_to(forged.response_url)))

        listing = await bob.command(bot.events_url, "schedule list")
        await slack.wait_for(lambda: bool(slack.responses_to(listing.response_url)))
        alices_batch = next(b for b in retell.batches if b in result_a.text)
        status = await bob.command(bot.events_url, f"status {alices_batch}")
        await slack.wait_for(lambda: bool(slack.responses_to(status.response_url)))
        [schedule] = await bot.app.store.schedules_in(TEAM_A, CHANNEL_A)
        removal = await bob.command(bot.events_url, f"schedule remove {schedule.id}")
        await slack.wait_for(lambda: bool(slack.responses_to(removal.response_url)))

    assert retell.count("/create-batch-test") == 2, "the forged press started nothing"
    assert "not" in visible_text(slack.responses_to(forged.response_url)[0]).lower()
    assert "ours" not in json.dumps(slack.responses_to(listing.response_url))
    # Retell's batch is in the one Retell account both use here, but A's run is not shown.
    assert "Not followed by this bot" in json.dumps(slack.responses_to(status.response_url))
    assert await bot.app.store.get_schedule(schedule.id) is not None, "not removed from B"
    assert tokens_used(slack, "chat.postMessage", CHANNEL_A) == {TEAM_A}
    assert tokens_used(slack, "chat.postMessage", CHANNEL_B) == {TEAM_B}


# -- uninstalling ------------------------------------------------------------------------------


async def test_uninstall_in_the_middle_of_a_run_ends_it_quietly_and_forgets_the_workspace(
    start_bot: BotFactory, slack: FakeSlack, retell: FakeRetell
) -> None:
    retell.batch_seconds = 2.0
    async with distributed(start_bot, slack) as bot:
        await install(bot.url, slack, TEAM_A)
        await install(bot.url, slack, TEAM_B)
        alice = member(slack, TEAM_A, CHANNEL_A, "U0ALICE")
        bob = member(slack, TEAM_B, CHANNEL_B, "U0BOB")
        added = await alice.command(
            bot.events_url, f'schedule add "daily 09:00" {ENGINE} tc_1 name=a'
        )
        await slack.wait_for(lambda: bool(slack.responses_to(added.response_url)))
        await alice.command(bot.events_url, f"{ENGINE} tc_1 tc_2")
        await slack.wait_for(lambda: len(slack.channel_messages(CHANNEL_A)) >= 1)
        [schedule] = await bot.app.store.schedules_in(TEAM_A, CHANNEL_A)

        slack.uninstall(TEAM_A)
        await alice.event(bot.events_url, {"type": "app_uninstalled"})
        await forgotten(bot, TEAM_A, installations_left=1)
        # Bob's batch starts after Alice's and takes as long: once his result is in, hers
        # has long completed at Retell, and the follow-ups have passed it by.
        await bob.command(bot.events_url, f"{ENGINE} tc_1")
        await slack.wait_for(lambda: len(results(slack, CHANNEL_B)) == 1)

        async with bot.app.store._sessions() as session:
            left = await session.scalar(
                select(func.count()).select_from(Run).where(Run.team_id == TEAM_A)
            )
            schedules = await session.scalar(
                select(func.count()).select_from(RunSchedule).where(RunSchedule.team_id == TEAM_A)
            )
        assert (left, schedules) == (0, 0)
        with pytest.raises(LookupError):
            await bot.app.scheduler.get_schedule(schedule_key(schedule.id))
        async with bot.app.store.engine.connect() as conn:
            installed = (await conn.execute(text("SELECT team_id FROM slack_bots"))).scalars()
            assert list(installed) == [TEAM_B]

        # A reinstall starts clean: no schedules, and commands work again.
        await install(bot.url, slack, TEAM_A)
        listing = await alice.command(bot.events_url, "schedule list")
        await slack.wait_for(lambda: bool(slack.responses_to(listing.response_url)))
    assert not results(slack, CHANNEL_A), "the uninstalled workspace's run reported nothing"
    assert "name=a" not in json.dumps(slack.responses_to(listing.response_url))


# -- rotating tokens ---------------------------------------------------------------------------


async def test_rotating_tokens_are_refreshed_for_background_work_once_across_replicas(
    start_bot: BotFactory, slack: FakeSlack, retell: FakeRetell
) -> None:
    """Slack's rotating tokens live 12 hours and the bot refreshes them 2 hours ahead; here
    they live 2 hours and 1 second, so a refresh is due a second after each one."""
    slack.rotating = True
    slack.token_seconds = 2 * 3600 + 1.0
    retell.batch_seconds = 2.5
    async with distributed(start_bot, slack) as first, distributed(start_bot, slack) as second:
        slack.redirect_url = f"{first.url}/slack/oauth_redirect"
        await install(first.url, slack, TEAM_A)
        workspace = slack.workspaces[TEAM_A]
        alice = member(slack, TEAM_A, CHANNEL_A, "U0ALICE")
        for bot in (first, second, first):
            await alice.command(bot.events_url, f"{ENGINE} tc_1")
        await slack.wait_for(lambda: len(results(slack, CHANNEL_A)) == 3, timeout=20)
    assert workspace.refreshes >= 1, "the follow-ups refreshed the token"
    assert not [
        r for r in slack.rejections if r.error in {"invalid_refresh_token", "token_expired"}
    ]
    refreshes = [c for c in slack.calls if c.method == "oauth.v2.access" and c.ok]
    assert len(refreshes) == 1 + workspace.refreshes, "each refresh token swapped once"


# -- Enterprise Grid ---------------------------------------------------------------------------


async def test_an_org_wide_install_serves_every_workspace_of_the_org_with_the_orgs_token(
    start_bot: BotFactory, slack: FakeSlack, retell: FakeRetell
) -> None:
    org = "E0ORG1"
    slack.add_workspace(org, "Org One", enterprise_id=org, org_wide=True)
    first, second = (
        SlackUser(
            slack=slack,
            user_id=f"U0{n}",
            user_name=f"user{n}",
            team_id=f"T0ORG{n}",
            channel_id=f"C0ORG{n}",
            enterprise_id=org,
            enterprise_install=True,
        )
        for n in (1, 2)
    )
    async with distributed(start_bot, slack) as bot:
        status, page = await install(bot.url, slack, org)
        assert status == 200 and "installed in Org E0ORG1" in page, page
        for person in (first, second):
            reply = await person.command(bot.events_url, f"{ENGINE} tc_1")
            assert "Starting a Retell batch test" in reply.text
        await slack.wait_for(
            lambda: len(results(slack, "C0ORG1")) == 1 and len(results(slack, "C0ORG2")) == 1
        )
        await first.event(bot.events_url, {"type": "app_uninstalled"})
        await forgotten(bot, "T0ORG1", "T0ORG2")
        assert await count(bot, "runs") == 0, "both workspaces of the org are forgotten"
    for channel in ("C0ORG1", "C0ORG2"):
        assert tokens_used(slack, "chat.postMessage", channel) == {org}


async def test_a_refresh_slack_refuses_is_tried_again_after_a_while_not_at_every_call(
    slack: FakeSlack, retell: FakeRetell, database_url: str
) -> None:
    """Twenty calls at once for a workspace whose token is due for a refresh that Slack
    refuses (its refresh token unknown): one lookup, one refresh, the current token used;
    the refresh is tried again only after REFRESH_RETRY_SECONDS."""
    settings = settings_for(slack, retell, database_url, **distribution(slack))
    store = Store(create_engine(database_url))
    await store.upgrade()
    now = [time.time()]
    installations = Installations(
        settings, store, web_client(None, slack.api_url), clock=lambda: now[0]
    )
    token = "xoxb-T0AAAA-current"
    slack.add_workspace(TEAM_A).tokens[token] = now[0] + 3600
    await installations.bots.async_save_bot(
        Bot(
            app_id=slack.app_id,
            enterprise_id=None,
            team_id=TEAM_A,
            bot_token=token,
            bot_id="B0A",
            bot_user_id="U0BOTA",
            bot_scopes="chat:write",
            bot_refresh_token="xoxe-unknown",
            bot_token_expires_at=int(now[0] + 3600),  # within the two hours: refresh due
            installed_at=now[0],
        )
    )
    await store.record_install(TEAM_A, enterprise_id=None, enterprise_install=False, at=None)

    def refreshes() -> int:
        return sum(c.method == "oauth.v2.access" for c in slack.calls)

    try:
        tokens = await asyncio.gather(*(installations.token(TEAM_A) for _ in range(20)))
        assert set(tokens) == {token}
        assert refreshes() == 1
        await installations.token(TEAM_A)
        assert refreshes() == 1, "not again at the next call"
        now[0] += REFRESH_RETRY_SECONDS + 1
        assert await installations.token(TEAM_A) == token
        assert refreshes() == 2
    finally:
        await store.close()


async def test_a_reinstall_seen_by_another_replica_is_used_at_once(
    start_bot: BotFactory, slack: FakeSlack, retell: FakeRetell
) -> None:
    """Replica 2 holds the old token in its cache when the workspace reinstalls through
    replica 1: Slack refuses the old one, and replica 2 goes on with the new one at once."""
    async with distributed(start_bot, slack) as first, distributed(start_bot, slack) as second:
        slack.redirect_url = f"{first.url}/slack/oauth_redirect"
        await install(first.url, slack, TEAM_A)
        alice = member(slack, TEAM_A, CHANNEL_A, "U0ALICE")
        await alice.command(second.events_url, f"{ENGINE} tc_1")
        await slack.wait_for(lambda: len(results(slack, CHANNEL_A)) == 1)

        slack.uninstall(TEAM_A)  # revokes the token replica 2 has cached
        await install(first.url, slack, TEAM_A)  # without telling replica 2
        await alice.command(second.events_url, f"{ENGINE} tc_2")
        await slack.wait_for(lambda: len(results(slack, CHANNEL_A)) == 2)
    revoked = [r for r in slack.rejections if r.error == "token_revoked"]
    assert revoked, "replica 2 did try its cached token"
    assert len(revoked) <= 2, "and looked the token up again at once"


async def test_in_a_channel_two_workspaces_share_each_reports_and_lists_only_its_own(
    start_bot: BotFactory, slack: FakeSlack, retell: FakeRetell
) -> None:
    """A Slack Connect channel has one id in both workspaces: a digest, the status of the
    channel and the schedules listed there still keep to the asking workspace."""
    shared = "C0SHARED"
    async with distributed(start_bot, slack) as bot:
        for team in (TEAM_A, TEAM_B):
            await install(bot.url, slack, team)
        alice = member(slack, TEAM_A, shared, "U0ALICE")
        bob = member(slack, TEAM_B, shared, "U0BOB")
        await alice.command(bot.events_url, f"{ENGINE} tc_1 tc_2")
        await slack.wait_for(lambda: len(results(slack, shared)) == 1)
        await bob.command(bot.events_url, f"{ENGINE} tc_fail_1")
        await slack.wait_for(lambda: len(results(slack, shared)) == 2)
        added = await alice.command(
            bot.events_url, f'schedule add "daily 09:00" {ENGINE} tc_1 name=alices'
        )
        await slack.wait_for(lambda: bool(slack.responses_to(added.response_url)))

        asked = await bob.command(bot.events_url, "report 7")
        assert "Posting the digest" in asked.text
        await slack.wait_for(
            lambda: any(
                m.text.startswith("📊")
                for m in results(slack, shared) + slack.channel_messages(shared)
            )
        )
        listing = await bob.command(bot.events_url, "schedule list")
        await slack.wait_for(lambda: bool(slack.responses_to(listing.response_url)))
    [digest] = [m for m in slack.channel_messages(shared) if m.text.startswith("📊")]
    shown = visible_text(digest.to_json())
    assert "*1 run*" in shown and "*0.0%* pass rate" in shown, shown
    assert "alices" not in json.dumps(slack.responses_to(listing.response_url))
    posts = [
        c
        for c in slack.calls
        if c.method == "chat.postMessage" and c.params.get("channel") == shared
    ]
    assert {c.team_id for c in posts} == {TEAM_A, TEAM_B}
    [digest_post] = [c for c in posts if str(c.params.get("text", "")).startswith("📊")]
    assert digest_post.team_id == TEAM_B
