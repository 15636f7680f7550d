"""What reaches `/slack/events`: malformed commands, unknown names, forged requests, odd buttons.

Every request goes over real HTTP to the bot, signed like Slack (or deliberately not), and the
assertions are on what the stand-ins saw: nothing created at Retell, nothing in the channel,
and a private explanation that says what was wrong.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import aiohttp

from bot.testing.retell import FakeRetell
from bot.testing.slack import FakeSlack, SlackUser, signed_headers, slash_command_body

from ..helpers import (
    CHANNEL,
    ENGINE,
    FLOW,
    USER,
    RunningBot,
    button_value,
    results,
    top_level,
    visible_text,
)

OTHER_CHANNEL = "C0002"

# -- helpers -----------------------------------------------------------------------------------


def ack_content(text: str) -> tuple[str, dict[str, Any] | None]:
    """What the requester sees of an ack body, and the body as JSON when it is JSON.

    Bolt acks with plain text or with a JSON message (text and blocks); both are handled.
    """
    try:
        data = json.loads(text) if text.strip() else None
    except ValueError:
        return text, None
    if not isinstance(data, dict):
        return text, None
    return visible_text(data), data


def private_replies(slack: FakeSlack, response_url: str) -> list[str]:
    return [visible_text(body) for body in slack.responses_to(response_url)]


async def post_raw(url: str, body: str, headers: Mapping[str, str]) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body.encode(), headers=dict(headers)) as response,
    ):
        return response.status, await response.text()


def command_body(slack: FakeSlack, text: str) -> str:
    return slash_command_body(
        text=text,
        user_id=USER,
        channel_id=CHANNEL,
        team_id=slack.team_id,
        response_url=slack.new_response_url(channel=CHANNEL),
    )


async def press_payload(
    bot: RunningBot, user: SlackUser, payload: dict[str, Any]
) -> tuple[int, str, str]:
    """POST a (possibly garbled) block_actions payload, signed; returns status, body, url."""
    body = urlencode({"payload": json.dumps(payload)})
    reply = await user.post_signed(bot.events_url, body, str(payload.get("response_url", "")))
    return reply.status, reply.text, reply.response_url


async def finished_run(
    bot: RunningBot, slack: FakeSlack, user: SlackUser, *, channel: str = CHANNEL
) -> str:
    """Run `llm_abc tc_1 tc_fail_1` in `channel` to completion; return the result's message ts."""
    await user.command(bot.events_url, f"{ENGINE} tc_1 tc_fail_1", channel_id=channel)
    await slack.wait_for(lambda: len(results(slack, channel)) == 1)
    [result] = results(slack, channel)
    return result.ts


# -- malformed commands --------------------------------------------------------------------------

MALFORMED: list[tuple[str, str, list[str]]] = [
    # (what is wrong, command text, phrases the explanation must contain)
    ("no engine", "run", ["needs an engine"]),
    ("agent id instead of engine", "agent_1 tc_1", ["agent_1", "agent id"]),
    ("no test cases", ENGINE, ["at least one test case"]),
    ("bad version", f"{ENGINE}@x tc_1", [f"{ENGINE}@x", "invalid version"]),
    ("unterminated quote", f'{ENGINE} "Refund request', ["never closed"]),
    (
        "1001 ids",
        f"{ENGINE} " + " ".join(f"tc_{n}" for n in range(1001)),
        ["1,001 test cases", "1,000"],
    ),
    ("mention as engine", "<@U123> tc_1", ["user mention", "not an engine"]),
    ("schedule without action", "schedule", ["`schedule` needs an action"]),
    ("watch without id", "watch", ["`watch` needs the id"]),
    ("mention as batch id", "status <!channel>", ["special mention", "not a batch id"]),
    ("zero-day report", "report 0", ["1 to 365 days"]),
    ("4,000-char id", f"{ENGINE} " + "a" * 4000, ["4,000 characters", "at most 128"]),
    (
        "control characters",
        "\x1b[31mllm_abc\x1b[0m tc_1\x00",
        ["[31mllm_abc", "not a subcommand or an engine"],
    ),
    ("all with ids", f"{ENGINE} all tc_1", ["`all` already runs every test case"]),
    ("upper-case prefix", "LLM_abc tc_1", ["lower-case", "LLM_abc"]),
    ("option outside schedule", f"{ENGINE} tc_1 name=x", ["`name=`", "schedule add"]),
    ("repeat out of range", f"{ENGINE} tc_1 repeat=9", ["`repeat=`", "2 to 5", "`9`"]),
    ("custom LLM url", "https://example.com/llm tc_1", ["custom LLM"]),
    ("detached version", f"{ENGINE} @3 tc_1", ["@3", "right after the engine"]),
    ("empty quotes", f'{ENGINE} ""', ["Empty quotes"]),
    ("engine prefix only", "conversation_flow_ tc_1", ["missing the id"]),
    ("unknown schedule action", "schedule frobnicate", ["frobnicate", "not a schedule action"]),
    ("report not a number", "report abc", ["abc", "not a number of days"]),
    ("two batch ids", "status a b", ["at most one batch id", "`b`"]),
    ("4,000-char word", "x" * 4000, ["not a subcommand or an engine"]),
]


async def test_malformed_commands_are_explained_privately_and_create_nothing(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    assert len({text for _, text, _ in MALFORMED}) >= 14
    for what, text, phrases in MALFORMED:
        reply = await user.command(bot.events_url, text)
        assert reply.status == 200, what
        shown, data = ack_content(reply.text)
        if data is not None:
            assert data.get("response_type", "ephemeral") == "ephemeral", what
        assert "⚠️" in shown, f"{what}: not an error reply: {shown[:300]!r}"
        for phrase in phrases:
            assert phrase in shown, f"{what}: {phrase!r} missing from {shown[:400]!r}"
        assert "/retell-test" in shown, f"{what}: the usage line is shown"
        assert "<@U123>" not in shown and "<!channel>" not in shown, "user text never pings"
        assert not slack.responses_to(reply.response_url), what

    assert retell.count("/create-batch-test") == 0
    assert retell.requests == [], "bad input never reaches Retell"
    assert slack.messages == [], "nothing appears in any channel"
    assert await bot.app.store.recent_runs() == []


async def test_error_reply_quotes_the_input_escaped_once(
    bot: RunningBot, slack: FakeSlack, user: SlackUser
) -> None:
    reply = await user.command(bot.events_url, "<@U123> tc_1")
    shown, _ = ack_content(reply.text)
    assert "user mention" in shown
    assert "&amp;" not in shown, f"double-escaped entities reach Slack: {shown[:300]!r}"
    assert "&lt;@U123&gt;" in shown and "&lt;engine&gt;" in shown


async def test_unknown_name_is_listed_with_a_suggestion(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    reply = await user.command(bot.events_url, f'{ENGINE} "Refnd request" tc_1')
    assert reply.status == 200
    await slack.wait_for(lambda: bool(slack.responses_to(reply.response_url)))
    [answer] = private_replies(slack, reply.response_url)
    assert "Refnd request" in answer, "the name that was not found is named"
    assert "did you mean" in answer and "Refund request" in answer, "a close match is offered"
    [body] = slack.responses_to(reply.response_url)
    assert body["response_type"] == "ephemeral"
    assert retell.count("/v2/list-test-case-definitions") == 1
    assert retell.count("/create-batch-test") == 0
    assert slack.messages == []
    assert await bot.app.store.recent_runs() == [], "no run is recorded for input that can't run"


async def test_all_expands_to_every_definition_of_the_engine(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    await user.command(bot.events_url, f"{ENGINE} all")
    await user.command(bot.events_url, f"run {FLOW} all")
    await retell.wait_for(lambda: retell.count("/create-batch-test") == 2)
    bodies = sorted(
        (r.body for r in retell.requests if r.path == "/create-batch-test"),
        key=lambda body: body["response_engine"]["type"],
    )
    assert bodies == [
        {
            "response_engine": {"type": "conversation-flow", "conversation_flow_id": FLOW},
            "test_case_definition_ids": ["tc_flow_1"],
        },
        {
            "response_engine": {"type": "retell-llm", "llm_id": ENGINE},
            "test_case_definition_ids": [
                "tc_1",
                "tc_2",
                "tc_3",
                "tc_4",
                "tc_5",
                "tc_fail_1",
                "tc_error_1",
            ],
        },
    ]
    await slack.wait_for(lambda: len(results(slack)) == 2)


async def test_all_walks_every_page_and_refuses_more_than_a_batch_holds(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    retell.seed("llm_big", 1001, prefix="big_")
    reply = await user.command(bot.events_url, "llm_big all")
    await slack.wait_for(lambda: bool(slack.responses_to(reply.response_url)))
    [answer] = private_replies(slack, reply.response_url)
    assert "1,001 test cases" in answer and "1,000" in answer
    listings = [r for r in retell.requests if r.path == "/v2/list-test-case-definitions"]
    assert len(listings) == 2, "both pages of definitions were read"
    assert listings[1].query.get("pagination_key")
    assert retell.count("/create-batch-test") == 0
    assert slack.messages == []


# -- signatures ----------------------------------------------------------------------------------


async def test_requests_failing_signature_checks_have_no_effect(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell
) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    body = command_body(slack, f"{ENGINE} tc_1")
    now = int(time.time())
    good = signed_headers(slack.signing_secret, body, timestamp=now)
    altered = body.replace("tc_1", "tc_2")
    assert altered != body
    attempts = {
        "unsigned": (body, form),
        "forged signature": (body, {**form, **signed_headers("not-the-secret", body)}),
        "garbage signature": (body, {**form, **good, "X-Slack-Signature": "v0=deadbeef"}),
        "stale timestamp": (
            body,
            {**form, **signed_headers(slack.signing_secret, body, timestamp=now - 6 * 60)},
        ),
        "future timestamp": (
            body,
            {**form, **signed_headers(slack.signing_secret, body, timestamp=now + 6 * 60)},
        ),
        "body altered after signing": (altered, {**form, **good}),
        "timestamp swapped after signing": (
            body,
            {**form, **good, "X-Slack-Request-Timestamp": str(now - 1)},
        ),
    }
    for what, (sent, headers) in attempts.items():
        status, _ = await post_raw(bot.events_url, sent, headers)
        assert status == 401, what

    assert slack.calls == [], "no Slack API call at all"
    assert retell.requests == [], "no Retell request at all"
    assert await bot.app.store.recent_runs() == []

    # The same body, correctly signed, is accepted: the refusals were about the signature.
    status, _ = await post_raw(bot.events_url, body, {**form, **good})
    assert status == 200
    await retell.wait_for(lambda: retell.count("/create-batch-test") == 1)


# -- buttons -------------------------------------------------------------------------------------


async def test_garbled_button_presses_are_acked_and_do_nothing(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    ts = await finished_run(bot, slack, user)
    [result] = results(slack)
    run_id = button_value(result, "rerun")
    assert run_id is not None
    creates = retell.count("/create-batch-test")

    def pressed(value: str, action_id: str = "rerun") -> dict[str, Any]:
        return user.press_payload(action_id=action_id, value=value, message_ts=ts)

    no_value = pressed(run_id)
    del no_value["actions"][0]["value"]
    garbled = {
        "non-numeric value": pressed("abc"),
        "empty value": pressed(""),
        "float value": pressed("1.5"),
        "json value": pressed('{"run": 1}'),
        "no value": no_value,
        "rerun_failed non-numeric": pressed("x1", "rerun_failed"),
        "show_failures non-numeric": pressed("¯\\_(ツ)_/¯", "show_failures"),
    }
    for what, payload in garbled.items():
        status, _, _ = await press_payload(bot, user, payload)
        assert status == 200, what

    # A sentinel press the bot does answer, so everything sent before it has been handled.
    sentinel = await user.press(bot.events_url, action_id="rerun", value="424242", message_ts=ts)
    await slack.wait_for(lambda: bool(slack.responses_to(sentinel.response_url)))
    assert retell.count("/create-batch-test") == creates
    assert len(top_level(slack)) == 1
    assert len(await bot.app.store.recent_runs()) == 1


async def test_a_press_that_names_no_user_is_refused_and_starts_nothing(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    """The probe's case: a press without `user` started a rerun that mentioned `<@>`."""
    ts = await finished_run(bot, slack, user)
    [result] = results(slack)
    run_id = button_value(result, "rerun")
    assert run_id is not None
    creates = retell.count("/create-batch-test")
    for action_id in ("rerun", "rerun_failed", "show_failures", "schedule_run"):
        for broken in ({"user": None}, {"user": {}}, {"user": {"id": ""}}, {"user": "U0001"}):
            payload = {**user.press_payload(action_id=action_id, value=run_id, message_ts=ts)}
            payload.update(broken)
            status, _, url = await press_payload(bot, user, payload)
            assert status == 200, (action_id, broken)
            await slack.wait_for(lambda u=url: bool(slack.responses_to(u)))
            [answer] = slack.responses_to(url)
            assert "did not say who made it" in visible_text(answer), (action_id, broken)
    assert retell.count("/create-batch-test") == creates
    assert slack.thread(CHANNEL, ts)[1:] == [], "no failures listed, no mention of nobody"
    assert "<@>" not in "".join(m.text for m in slack.messages)


async def test_button_payloads_no_listener_handles_are_still_acked(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    statuses: dict[str, int] = {}
    unknown = await user.press(bot.events_url, action_id="retry_v0", value="1", message_ts="1.01")
    statuses["unknown action_id"] = unknown.status
    empty = user.press_payload(action_id="rerun", value="1", message_ts="1.01")
    empty["actions"] = []
    statuses["empty actions"], _, _ = await press_payload(bot, user, empty)
    assert retell.requests == [] and slack.messages == []
    assert statuses == {"unknown action_id": 200, "empty actions": 200}


async def test_press_on_a_run_that_does_not_exist_is_told_privately(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    for value in ("424242", "0", "-1", " 7 "):
        reply = await user.press(bot.events_url, action_id="rerun", value=value, message_ts="1.01")
        assert reply.status == 200, value
        await slack.wait_for(lambda r=reply: bool(slack.responses_to(r.response_url)))
        [answer] = slack.responses_to(reply.response_url)
        assert answer["response_type"] == "ephemeral", value
        assert "not one of this channel's" in visible_text(answer), value
    assert retell.requests == []
    assert slack.messages == []
    assert await bot.app.store.recent_runs() == []


async def test_press_with_an_out_of_range_run_id_is_told_privately(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    huge = await user.press(bot.events_url, action_id="rerun", value="9" * 30, message_ts="1.01")
    assert huge.status == 200
    await slack.wait_for(lambda: bool(slack.responses_to(huge.response_url)))
    assert retell.requests == [] and slack.messages == []
    [answer] = slack.responses_to(huge.response_url)
    assert "not one of this channel's" in visible_text(answer)


async def test_press_on_another_channels_run_is_refused_privately(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    other_ts = await finished_run(bot, slack, user, channel=OTHER_CHANNEL)
    [result] = results(slack, OTHER_CHANNEL)
    run_id = button_value(result, "rerun")
    assert run_id is not None
    creates = retell.count("/create-batch-test")
    runs_before = retell.count("/v2/list-test-runs")

    for action_id in ("rerun", "rerun_failed", "show_failures"):
        # Pressed from this channel, pointing at the other channel's run.
        reply = await user.press(
            bot.events_url, action_id=action_id, value=run_id, message_ts=other_ts
        )
        assert reply.status == 200
        await slack.wait_for(lambda r=reply: bool(slack.responses_to(r.response_url)))
        [answer] = slack.responses_to(reply.response_url)
        assert answer["response_type"] == "ephemeral", action_id
        assert "not one of this channel's" in visible_text(answer), action_id

    assert retell.count("/create-batch-test") == creates, "nothing was rerun"
    assert retell.count("/v2/list-test-runs") == runs_before, "no failures were fetched"
    assert top_level(slack) == [], "nothing posted in the channel pressed from"
    assert len(slack.channel_messages(OTHER_CHANNEL)) == 1
    assert slack.thread(OTHER_CHANNEL, other_ts) == [
        m for m in slack.thread(OTHER_CHANNEL, other_ts) if f"<@{USER}>" in m.text
    ], "only the requester mention sits in the other channel's thread"


async def test_double_press_of_rerun_creates_at_most_one_batch(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    ts = await finished_run(bot, slack, user)
    run_id = button_value(results(slack)[0], "rerun")
    assert run_id is not None
    presses = await asyncio.gather(
        *(
            user.press(bot.events_url, action_id="rerun", value=run_id, message_ts=ts)
            for _ in range(2)
        )
    )
    assert [p.status for p in presses] == [200, 200]

    def settled() -> bool:
        told = sum(bool(slack.responses_to(p.response_url)) for p in presses)
        return retell.count("/create-batch-test") - 1 + told >= len(presses)

    await slack.wait_for(settled)
    assert retell.count("/create-batch-test") == 2, "a double click started two reruns"
    [refused] = [p for p in presses if slack.responses_to(p.response_url)]
    [answer] = slack.responses_to(refused.response_url)
    assert answer["response_type"] == "ephemeral"
    assert "already under way" in visible_text(answer)
    reruns = [r for r in await bot.app.store.recent_runs() if r.rerun_of is not None]
    assert len(reruns) == 1


async def test_second_press_while_the_rerun_is_running_starts_nothing(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    ts = await finished_run(bot, slack, user)
    run_id = button_value(results(slack)[0], "rerun")
    assert run_id is not None
    retell.complete_never = True  # the rerun stays running
    await user.press(bot.events_url, action_id="rerun", value=run_id, message_ts=ts)
    await slack.wait_for(lambda: len(top_level(slack)) == 2)
    again = await user.press(bot.events_url, action_id="rerun", value=run_id, message_ts=ts)
    await slack.wait_for(
        lambda: bool(slack.responses_to(again.response_url)) or len(top_level(slack)) == 3
    )
    assert retell.count("/create-batch-test") == 2, "the same Rerun started a second rerun"
    [answer] = slack.responses_to(again.response_url)
    assert "already under way" in visible_text(answer)
