"""The Slack stand-in's `/_control/workspaces` and `/_control/calls`: installing the app in many
workspaces at once (each with its own token) and seeing whose token every call carried."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.testing.slack import FakeSlack


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as slack:
        yield slack


async def control(
    fake: FakeSlack, method: str, path: str, body: Any = None
) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, f"{fake.base_url}{path}", json=body) as response,
    ):
        return response.status, await response.json()


async def test_workspaces_installed_at_once_answer_with_their_own_tokens(fake: FakeSlack) -> None:
    teams = [f"T{n:04d}X" for n in range(3)]
    status, answer = await control(
        fake,
        "POST",
        "/_control/workspaces",
        {"workspaces": [{"team_id": t, "token": f"xoxb-{t}-bench"} for t in teams]},
    )
    assert status == 200
    listed = {w["team_id"]: w for w in answer["workspaces"]}
    assert answer["client_id"] == fake.client_id
    assert all(listed[t]["installed"] and listed[t]["tokens"] == 1 for t in teams)
    assert "xoxb" not in str(answer), "tokens are never shown"

    for team in teams:
        client = AsyncWebClient(token=f"xoxb-{team}-bench", base_url=fake.api_url)
        await client.chat_postMessage(channel=f"C{team}", text="hello")
        assert (await client.auth_test())["team_id"] == team
    home = AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)
    await home.chat_postMessage(channel="C0HOME", text="hello")

    _, calls = await control(fake, "GET", "/_control/calls")
    posts = [(c["channel"], c["team_id"]) for c in calls["calls"] if c["method"] != "auth.test"]
    assert posts == [*((f"C{t}", t) for t in teams), ("C0HOME", fake.team_id)]
    _, later = await control(fake, "GET", f"/_control/calls?since={calls['total'] - 1}")
    assert [c["channel"] for c in later["calls"]] == ["C0HOME"]


async def test_a_token_of_another_workspace_or_twice_in_one_request_is_refused(
    fake: FakeSlack,
) -> None:
    taken = {"team_id": "T0OTHER", "token": fake.bot_token}
    status, _ = await control(fake, "POST", "/_control/workspaces", {"workspaces": [taken]})
    assert status == 400
    twice = [{"team_id": "T0A", "token": "xoxb-same"}, {"team_id": "T0B", "token": "xoxb-same"}]
    status, _ = await control(fake, "POST", "/_control/workspaces", {"workspaces": twice})
    assert status == 400
    status, _ = await control(fake, "POST", "/_control/workspaces", {"workspaces": [{}]})
    assert status == 400
    assert set(fake.workspaces) == {fake.team_id}, "nothing installed by a refused request"


async def test_an_uninstalled_workspaces_token_is_revoked_even_after_the_index_saw_it(
    fake: FakeSlack,
) -> None:
    await control(
        fake,
        "POST",
        "/_control/workspaces",
        {"workspaces": [{"team_id": "T0GONE", "token": "xoxb-gone"}]},
    )
    client = AsyncWebClient(token="xoxb-gone", base_url=fake.api_url)
    await client.auth_test()
    fake.uninstall("T0GONE")
    with pytest.raises(SlackApiError) as refused:
        await client.auth_test()
    assert refused.value.response["error"] == "token_revoked"
