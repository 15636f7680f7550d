"""The Run modal: opened by a bare `/retell-test` or the shortcut, filled from Retell, submitted.

End-to-end tests talk to the real bot over signed HTTP the way Slack does (shortcut,
block_suggestion, block_actions and view_submission payloads built from the view the bot opened
on the Slack stand-in); unit tests cover the pure view building and submission reading.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

import pytest
from retell import AsyncRetell

from bot import blocks, listeners, modal
from bot.commands import TestSelection
from bot.modal import (
    ALL_CASES,
    CALLBACK_ID,
    CASES_ACTION,
    CHANNEL_ACTION,
    CHANNEL_BLOCK,
    COMPARE_ACTION,
    COMPARE_BLOCK,
    ENGINE_ACTION,
    ENGINE_BLOCK,
    HINT,
    MIN_PASS_ACTION,
    MIN_PASS_BLOCK,
    SHORTCUT_ID,
    VERSION_ACTION,
    VERSION_BLOCK,
    Origin,
    RunChoice,
)
from bot.refusal import Refusal
from bot.retell import CaseDefinition, EngineChoice
from bot.suite import Engine
from bot.testing.retell import FakeRetell
from bot.testing.slack import (
    MAX_VIEW_BLOCKS,
    BotReply,
    FakeSlack,
    SlackUser,
    block_kit_violation,
    new_trigger_id,
)
from bot.text import utf16_length

from ..helpers import (
    CHANNEL,
    ENGINE,
    FLOW,
    USER,
    BotFactory,
    RunningBot,
    results,
    top_level,
    visible_text,
)

OTHER_CHANNEL = "C0002"
JSONDict = dict[str, Any]

PICK_ENGINE = "Pick an engine."
PICK_CASES = "Pick at least one test case, or “All test cases”."
PICK_CHANNEL = "Pick the channel for the status and the results."
BAD_VERSION = "The version is a whole number such as 3; leave it empty for the latest."
OTHER_ENGINE = "These test cases were picked for another engine; pick them again."
PIN_VERSION = (
    "Give the version to compare from, such as 3: a comparison starts from a fixed version."
)
BAD_COMPARE = (
    "The version to compare with is a whole number such as 4, or “latest”; "
    "leave it empty to test one version."
)
PASS_RATES = "a percentage from 0 to 100, such as 95 or 97.5; leave it empty for no gate"
BAD_MIN_PASS = f"The minimum pass rate is {PASS_RATES}."


def same_version(version: int) -> str:
    return (
        f"That is the version above (v{version}): give another version, or “latest”, "
        "or leave it empty to test one version."
    )


def out_of_range(typed: str) -> str:
    return f"{typed} is outside 0 to 100: the minimum pass rate is {PASS_RATES}."


def too_many(count: int, limit: int) -> str:
    return (
        f"That is {count} test cases; a run can have at most {limit}. "
        "Pick fewer, or split them into several runs."
    )


# -- what Slack sends ----------------------------------------------------------------------------


async def send(bot: RunningBot, user: SlackUser, payload: JSONDict) -> BotReply:
    """POST an interaction payload to the bot, signed like Slack."""
    return await user.post_signed(bot.events_url, urlencode({"payload": json.dumps(payload)}))


def _people(slack: FakeSlack, user: SlackUser) -> JSONDict:
    return {
        "team": {"id": slack.team_id, "domain": slack.team_domain},
        "user": {"id": user.user_id, "username": user.user_name, "team_id": slack.team_id},
        "api_app_id": slack.app_id,
        "token": "verification-token-unused",
        "is_enterprise_install": False,
        "enterprise": None,
    }


def shortcut_payload(slack: FakeSlack, user: SlackUser, trigger_id: str) -> JSONDict:
    return {
        "type": "shortcut",
        "callback_id": SHORTCUT_ID,
        "trigger_id": trigger_id,
        "action_ts": f"{time.time():.6f}",
        **_people(slack, user),
    }


def state(
    *,
    engine: str | None = None,
    version: str | None = None,
    cases: Sequence[str] = (),
    channel: str | None = None,
    cases_block: str | None = None,
    runs: str | None = None,
    compare: str | None = None,
    min_pass: str | None = None,
) -> JSONDict:
    """`view.state.values` as Slack reports the form's inputs."""

    def option(value: str) -> JSONDict:
        return {"text": {"type": "plain_text", "text": value, "emoji": False}, "value": value}

    return {
        ENGINE_BLOCK: {
            ENGINE_ACTION: {
                "type": "external_select",
                "selected_option": option(engine) if engine else None,
            }
        },
        VERSION_BLOCK: {VERSION_ACTION: {"type": "plain_text_input", "value": version}},
        cases_block or modal.cases_block_id(engine): {
            CASES_ACTION: {
                "type": "multi_external_select",
                "selected_options": [option(case) for case in cases],
            }
        },
        CHANNEL_BLOCK: {
            CHANNEL_ACTION: {"type": "conversations_select", "selected_conversation": channel}
        },
        modal.REPEAT_BLOCK: {
            modal.REPEAT_ACTION: {
                "type": "static_select",
                "selected_option": option(runs) if runs else None,
            }
        },
        COMPARE_BLOCK: {COMPARE_ACTION: {"type": "plain_text_input", "value": compare}},
        MIN_PASS_BLOCK: {MIN_PASS_ACTION: {"type": "number_input", "value": min_pass}},
    }


def as_sent(view: JSONDict, values: JSONDict | None = None) -> JSONDict:
    """The view a payload carries: what the bot opened, plus Slack's fields and the state."""
    return {
        **view,
        "team_id": "T0001",
        "hash": f"{time.time():.6f}.hash",
        "state": {"values": values or {}},
        "root_view_id": view["id"],
        "app_id": "A0001",
        "bot_id": "BBOT",
    }


def suggestion_payload(
    slack: FakeSlack, user: SlackUser, view: JSONDict, action_id: str, value: str
) -> JSONDict:
    block_id = ENGINE_BLOCK if action_id == ENGINE_ACTION else modal.cases_block_id(None)
    return {
        "type": "block_suggestion",
        "action_id": action_id,
        "block_id": block_id,
        "value": value,
        "container": {"type": "view", "view_id": view["id"]},
        "view": view,
        **_people(slack, user),
    }


def engine_pick_payload(
    slack: FakeSlack, user: SlackUser, view: JSONDict, engine_id: str
) -> JSONDict:
    option = {"text": {"type": "plain_text", "text": engine_id}, "value": engine_id}
    return {
        "type": "block_actions",
        "container": {"type": "view", "view_id": view["id"]},
        "trigger_id": new_trigger_id(),
        "view": view,
        "actions": [
            {
                "type": "external_select",
                "action_id": ENGINE_ACTION,
                "block_id": ENGINE_BLOCK,
                "selected_option": option,
                "action_ts": f"{time.time():.6f}",
            }
        ],
        **_people(slack, user),
    }


def submission_payload(
    slack: FakeSlack,
    user: SlackUser,
    view: JSONDict,
    *,
    trigger_id: str | None = None,
    response_urls: Sequence[JSONDict] = (),
) -> JSONDict:
    return {
        "type": "view_submission",
        "trigger_id": trigger_id or new_trigger_id(),
        "view": view,
        "response_urls": list(response_urls),
        **_people(slack, user),
    }


def view_calls(slack: FakeSlack, method: str) -> list[JSONDict]:
    return [call.params for call in slack.calls if call.method == method and call.ok]


def opened_view(slack: FakeSlack, trigger_id: str) -> JSONDict:
    """The view the bot opened with this trigger_id, as FakeSlack stored it (with its id)."""
    calls = view_calls(slack, "views.open")
    [index] = [n for n, params in enumerate(calls) if params.get("trigger_id") == trigger_id]
    homes = {view["id"] for view in slack.home_views.values()}
    opened = [view for view in slack.views.values() if view["id"] not in homes]
    return dict(opened[index])  # views.open stores views in the order of the calls


async def open_from_command(
    bot: RunningBot, slack: FakeSlack, user: SlackUser, text: str = ""
) -> tuple[BotReply, JSONDict, str]:
    """Type `/retell-test` (alone); wait for the modal; return the ack, the view, the trigger."""
    payload = user.command_payload(text)
    reply = await user.post_signed(bot.events_url, urlencode(payload), payload["response_url"])
    await slack.wait_for(lambda: len(view_calls(slack, "views.open")) == 1)
    return reply, opened_view(slack, payload["trigger_id"]), payload["response_url"]


def options_of(reply: BotReply) -> list[JSONDict]:
    assert reply.status == 200
    body = reply.json()
    assert isinstance(body, dict) and set(body) == {"options"}, body
    options = body["options"]
    assert isinstance(options, list)
    return options


def values_of(options: list[JSONDict]) -> list[str]:
    return [option["value"] for option in options]


def errors_of(reply: BotReply) -> dict[str, str]:
    assert reply.status == 200
    body = reply.json()
    assert isinstance(body, dict) and body.get("response_action") == "errors", body
    assert set(body) == {"response_action", "errors"}
    errors = body["errors"]
    assert isinstance(errors, dict)
    return errors


# -- opening ---------------------------------------------------------------------------------


async def test_command_without_text_opens_the_modal_and_help_still_helps(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    reply, view, response_url = await open_from_command(bot, slack, user, "   ")

    assert reply.status == 200 and reply.text == "", "a plain ack: the modal is the answer"
    assert view["callback_id"] == CALLBACK_ID and view["type"] == "modal"
    origin = Origin.decode(view["private_metadata"])
    assert origin == Origin(channel_id=CHANNEL, response_url=response_url)
    [channel_block] = [b for b in view["blocks"] if b.get("block_id") == CHANNEL_BLOCK]
    assert channel_block["optional"] is True, "defaults to the channel it was opened from"
    assert channel_block["element"]["initial_conversation"] == CHANNEL
    assert retell.requests == [], "opening the form asks Retell nothing"

    helped = await user.command(bot.events_url, "help")
    assert "/retell-test" in visible_text(helped.json())
    assert len(view_calls(slack, "views.open")) == 1, "`help` shows help, not the modal"


async def test_global_shortcut_opens_the_modal_with_a_required_channel(
    bot: RunningBot, slack: FakeSlack, user: SlackUser
) -> None:
    trigger_id = new_trigger_id()
    reply = await send(bot, user, shortcut_payload(slack, user, trigger_id))
    assert reply.status == 200
    await slack.wait_for(lambda: len(view_calls(slack, "views.open")) == 1)
    view = opened_view(slack, trigger_id)
    assert Origin.decode(view["private_metadata"]) == Origin()
    [channel_block] = [b for b in view["blocks"] if b.get("block_id") == CHANNEL_BLOCK]
    assert channel_block["optional"] is False
    assert channel_block["element"]["default_to_current_conversation"] is True
    assert "initial_conversation" not in channel_block["element"]


async def test_command_without_text_in_a_refused_channel_is_refused_without_a_modal(
    start_bot: BotFactory, slack: FakeSlack, user: SlackUser
) -> None:
    async with start_bot(allowed_channel_ids=OTHER_CHANNEL) as bot:
        reply = await user.command(bot.events_url, "")
        assert "can't be run from this channel" in visible_text(reply.json())
        await user.command(bot.events_url, "help")  # answered after the one before it
    assert view_calls(slack, "views.open") == []


async def test_a_modal_that_cannot_open_is_explained_privately(
    bot: RunningBot, slack: FakeSlack, user: SlackUser
) -> None:
    slack.fail_next("views.open", error="expired_trigger_id")
    reply = await user.command(bot.events_url, "")
    assert reply.status == 200
    await slack.wait_for(lambda: bool(slack.responses_to(reply.response_url)))
    [answer] = slack.responses_to(reply.response_url)
    assert answer["response_type"] == "ephemeral"
    shown = visible_text(answer)
    assert "could not be opened (expired_trigger_id)" in shown and "/retell-test help" in shown
    assert slack.messages == []


# -- the menus --------------------------------------------------------------------------------


async def test_engine_menu_lists_llms_and_flows_filtered_by_the_typed_text(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    _, view, _ = await open_from_command(bot, slack, user)
    shown = as_sent(view)

    everything = options_of(
        await send(bot, user, suggestion_payload(slack, user, shown, ENGINE_ACTION, ""))
    )
    assert sorted(values_of(everything)) == sorted([ENGINE, FLOW])
    [llm] = [o for o in everything if o["value"] == ENGINE]
    assert llm["text"]["text"] == ENGINE
    assert llm["description"]["text"].startswith("Retell LLM · version 3")

    flows = options_of(
        await send(bot, user, suggestion_payload(slack, user, shown, ENGINE_ACTION, "FLOW"))
    )
    assert values_of(flows) == [FLOW], "case-insensitive, on the id and the kind of engine"
    nothing = options_of(
        await send(bot, user, suggestion_payload(slack, user, shown, ENGINE_ACTION, "zzz"))
    )
    assert [o["value"].startswith(HINT) for o in nothing] == [True]
    assert "zzz" in nothing[0]["text"]["text"]

    assert retell.count("/v2/list-retell-llms") == 1, "one listing serves the keystrokes"
    assert retell.count("/v2/list-conversation-flows") == 1


async def test_engine_menu_stays_within_slacks_100_options(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    for number in range(150):
        retell.add_engine("retell-llm", f"llm_many_{number:03d}")
    _, view, _ = await open_from_command(bot, slack, user)
    options = options_of(
        await send(bot, user, suggestion_payload(slack, user, as_sent(view), ENGINE_ACTION, "many"))
    )
    assert len(options) == 100
    assert all(value.startswith("llm_many_") for value in values_of(options))
    assert len(set(values_of(options))) == 100


async def test_engine_menu_answers_with_a_hint_when_retell_fails_or_is_slow(
    bot: RunningBot,
    slack: FakeSlack,
    retell: FakeRetell,
    user: SlackUser,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, view, _ = await open_from_command(bot, slack, user)
    shown = as_sent(view)
    retell.fail_next("/v2/list-retell-llms", 500)
    failed = options_of(
        await send(bot, user, suggestion_payload(slack, user, shown, ENGINE_ACTION, ""))
    )
    assert values_of(failed) == [HINT + "hint"]
    assert "Retell did not answer" in failed[0]["text"]["text"]
    assert retell.count("/v2/list-retell-llms") == 1, "no SDK retries: Slack waits 3 s at most"
    # The flows listing of that first answer runs on after it: once it has landed, it cannot
    # take the delay meant for the next one.
    await retell.wait_for(lambda: retell.count("/v2/list-conversation-flows") == 1)

    monkeypatch.setattr(listeners, "MENU_DEADLINE_SECONDS", 0.2)
    retell.delay("/v2/list-conversation-flows", 1.2, times=1)
    started = time.monotonic()
    slow = options_of(
        await send(bot, user, suggestion_payload(slack, user, shown, ENGINE_ACTION, ""))
    )
    assert time.monotonic() - started < 1.0, "answered at the deadline, not when Retell is done"
    assert values_of(slow) == [HINT + "hint"]

    recovered = options_of(
        await send(bot, user, suggestion_payload(slack, user, shown, ENGINE_ACTION, ""))
    )
    assert sorted(values_of(recovered)) == sorted([ENGINE, FLOW]), "failures are not cached"


async def test_cases_menu_follows_the_engine_in_the_view_state_and_the_search(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    _, view, _ = await open_from_command(bot, slack, user)

    def ask(engine: str | None, text: str) -> JSONDict:
        return suggestion_payload(
            slack, user, as_sent(view, state(engine=engine)), CASES_ACTION, text
        )

    no_engine = options_of(await send(bot, user, ask(None, "")))
    assert [o["text"]["text"] for o in no_engine] == ["Pick an engine first"]
    assert retell.requests == []

    listed = options_of(await send(bot, user, ask(ENGINE, "")))
    assert values_of(listed)[0] == f"{ALL_CASES}:7"
    assert listed[0]["text"]["text"] == "All test cases (7)"
    assert values_of(listed)[1:] == [
        "tc_1", "tc_2", "tc_3", "tc_4", "tc_5", "tc_fail_1", "tc_error_1",
    ]  # fmt: skip
    assert (
        listed[6]["text"]["text"] == "Refund request"
        and listed[6]["description"]["text"] == "tc_fail_1"
    )

    refund = options_of(await send(bot, user, ask(ENGINE, "REFUND")))
    assert values_of(refund) == ["tc_fail_1"], "by name, case-insensitively; no “All” here"
    by_id = options_of(await send(bot, user, ask(ENGINE, "error_1")))
    assert values_of(by_id) == ["tc_error_1"], "by id too"

    flow = options_of(await send(bot, user, ask(FLOW, "")))
    assert values_of(flow) == [f"{ALL_CASES}:1", "tc_flow_1"]
    listings = [r for r in retell.requests if r.path == "/v2/list-test-case-definitions"]
    assert [r.query.get("llm_id") or r.query.get("conversation_flow_id") for r in listings] == [
        ENGINE,
        FLOW,
    ], "each engine's definitions are listed once, then reused while the user types"


async def test_cases_menu_reads_every_page_of_definitions_and_stays_within_100(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    retell.seed("llm_big", 1500, prefix="big_")
    _, view, _ = await open_from_command(bot, slack, user)

    def ask(text: str) -> JSONDict:
        return suggestion_payload(
            slack, user, as_sent(view, state(engine="llm_big")), CASES_ACTION, text
        )

    first = options_of(await send(bot, user, ask("")))
    assert len(first) == 100
    assert first[0]["text"]["text"] == "All test cases (1,500)", "counted over both pages"
    listings = [r for r in retell.requests if r.path == "/v2/list-test-case-definitions"]
    assert len(listings) == 2 and listings[1].query.get("pagination_key")

    last = options_of(await send(bot, user, ask("case 1500")))
    assert values_of(last) == ["big_1500"], "a case from the second page is found"
    many = options_of(await send(bot, user, ask("Case 14")))
    assert len(many) == 100, "111 names start with “Case 14”: the first 100 are shown"
    assert values_of(many)[:2] == ["big_14", "big_140"]


async def test_cases_menu_for_an_engine_without_cases_or_when_retell_fails(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    retell.add_engine("retell-llm", "llm_empty")
    _, view, _ = await open_from_command(bot, slack, user)

    def ask(engine: str) -> JSONDict:
        return suggestion_payload(
            slack, user, as_sent(view, state(engine=engine)), CASES_ACTION, ""
        )

    empty = options_of(await send(bot, user, ask("llm_empty")))
    assert [o["text"]["text"] for o in empty] == ["This engine has no test cases in Retell"]
    retell.fail_next("/v2/list-test-case-definitions", 503)
    failed = options_of(await send(bot, user, ask(ENGINE)))
    assert values_of(failed) == [HINT + "hint"]
    assert failed[0]["text"]["text"] == "Retell did not answer: type again to retry"
    gone = options_of(await send(bot, user, ask("llm_deleted")))
    assert gone[0]["text"]["text"].startswith("Retell does not know this engine")
    listed = options_of(await send(bot, user, ask(ENGINE)))
    assert len(listed) == 8, "a failure is not remembered: the next keystroke lists again"


async def test_picking_an_engine_rebuilds_the_form_for_its_cases(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    _, view, response_url = await open_from_command(bot, slack, user)
    picked = as_sent(view, state(engine=FLOW, cases=["tc_1"], cases_block=modal.CASES_BLOCK))
    assert (await send(bot, user, engine_pick_payload(slack, user, picked, FLOW))).status == 200
    await slack.wait_for(lambda: len(view_calls(slack, "views.update")) == 1)

    [update] = view_calls(slack, "views.update")
    assert update["view_id"] == view["id"] and update["hash"] == picked["hash"]
    rebuilt = slack.views[view["id"]]
    assert Origin.decode(rebuilt["private_metadata"]) == Origin(CHANNEL, response_url, FLOW)
    block_ids = [block.get("block_id") for block in rebuilt["blocks"]]
    assert modal.cases_block_id(FLOW) in block_ids, "a new block id: cases picked before reset"
    assert ENGINE_BLOCK in block_ids and VERSION_BLOCK in block_ids, "kept: their input stays"

    # Picking the same engine again changes nothing; a failed update is only logged.
    await send(bot, user, engine_pick_payload(slack, user, as_sent(rebuilt), FLOW))
    slack.fail_next("views.update", error="hash_conflict")
    conflict = await send(bot, user, engine_pick_payload(slack, user, as_sent(rebuilt), ENGINE))
    assert conflict.status == 200
    await slack.wait_for(lambda: slack.count("views.update") == 2)
    assert len(view_calls(slack, "views.update")) == 1, "only the first pick's update landed"
    assert slack.views[view["id"]] == rebuilt, "the conflicting update was refused"

    # A suggestion whose view lacks state still knows the engine, from the metadata.
    options = options_of(
        await send(bot, user, suggestion_payload(slack, user, as_sent(rebuilt), CASES_ACTION, ""))
    )
    assert values_of(options) == [f"{ALL_CASES}:1", "tc_flow_1"]


# -- submitting -------------------------------------------------------------------------------


async def test_submission_runs_the_batch_in_the_picked_channel_like_the_command(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    _, view, _ = await open_from_command(bot, slack, user)
    values = state(
        engine=ENGINE, version=" 2 ", cases=["tc_1", "tc_fail_1", "tc_1"], channel=OTHER_CHANNEL
    )
    other_url = slack.new_response_url(channel=OTHER_CHANNEL)
    urls = [
        {
            "block_id": CHANNEL_BLOCK,
            "action_id": CHANNEL_ACTION,
            "channel_id": OTHER_CHANNEL,
            "response_url": other_url,
        }
    ]
    trigger_id = new_trigger_id()
    payload = submission_payload(
        slack, user, as_sent(view, values), trigger_id=trigger_id, response_urls=urls
    )

    reply = await send(bot, user, payload)
    assert reply.status == 200 and reply.text == "", "a plain ack closes the modal"
    await slack.wait_for(lambda: len(results(slack, OTHER_CHANNEL)) == 1)

    [create] = [r for r in retell.requests if r.path == "/create-batch-test"]
    assert create.body == {
        "response_engine": {"type": "retell-llm", "llm_id": ENGINE, "version": 2},
        "test_case_definition_ids": ["tc_1", "tc_fail_1"],
    }
    [result] = results(slack, OTHER_CHANNEL)
    [batch_id] = retell.batches
    for phrase in ("1 passed", "1 failed", "0 errored", "2 total", batch_id):
        assert phrase in result.text
    assert result.update_count >= 1, "the status message became the result in place"
    assert results(slack, CHANNEL) == [], "nothing in the channel it was opened from"
    await slack.wait_for(lambda: len(slack.thread(OTHER_CHANNEL, result.ts)) == 1)
    assert f"<@{USER}>" in slack.thread(OTHER_CHANNEL, result.ts)[0].text
    [run] = await bot.app.store.recent_runs()
    assert (run.channel_id, run.user_id, run.source) == (OTHER_CHANNEL, USER, "modal")

    for _ in range(2):  # the same submission delivered again
        assert (await send(bot, user, payload)).text == ""
    # The same form submitted again with a trigger_id of its own (a double click that Slack
    # delivered twice): the view id is the same, so it is the same request.
    again = submission_payload(slack, user, as_sent(view, values), response_urls=urls)
    assert again["trigger_id"] != payload["trigger_id"]
    assert (await send(bot, user, again)).text == ""
    # Another form, sent after those: once its batch exists, they have been handled.
    other_form = {**as_sent(view, values), "id": "V_ANOTHER_FORM"}
    await send(bot, user, submission_payload(slack, user, other_form, response_urls=urls))
    await slack.wait_for(lambda: len(results(slack, OTHER_CHANNEL)) == 2)
    assert retell.count("/create-batch-test") == 2, "the view id kept the repeats to one run"
    assert len(await bot.app.store.recent_runs()) == 2


async def test_all_test_cases_from_the_shortcut_runs_every_definition(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    trigger_id = new_trigger_id()
    await send(bot, user, shortcut_payload(slack, user, trigger_id))
    await slack.wait_for(lambda: len(view_calls(slack, "views.open")) == 1)
    view = opened_view(slack, trigger_id)
    values = state(engine=FLOW, cases=[f"{ALL_CASES}:1", "tc_flow_1"], channel=CHANNEL)

    reply = await send(bot, user, submission_payload(slack, user, as_sent(view, values)))
    assert reply.text == ""
    await slack.wait_for(lambda: len(results(slack)) == 1)
    [create] = [r for r in retell.requests if r.path == "/create-batch-test"]
    assert create.body == {
        "response_engine": {"type": "conversation-flow", "conversation_flow_id": FLOW},
        "test_case_definition_ids": ["tc_flow_1"],
    }


async def test_runs_picked_in_the_form_repeat_the_suite_as_one_result(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    _, view, _ = await open_from_command(bot, slack, user)
    values = state(engine=ENGINE, cases=["tc_1", "tc_fail_1"], runs="3")

    reply = await send(bot, user, submission_payload(slack, user, as_sent(view, values)))
    assert reply.text == ""
    await slack.wait_for(lambda: len(results(slack)) == 1)
    assert retell.count("/create-batch-test") == 3
    [result] = top_level(slack)
    assert "run 3 times" in result.text and "3 passed, 3 failed, 0 errored, 6 total" in result.text


async def test_invalid_submissions_get_inline_errors_and_start_nothing(
    start_bot: BotFactory, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    cases_block = modal.cases_block_id(ENGINE)
    async with start_bot(
        max_cases_per_run=2, allowed_channel_ids=f"{CHANNEL},{OTHER_CHANNEL}"
    ) as bot:
        _, view, _ = await open_from_command(bot, slack, user)
        trigger_id = new_trigger_id()
        await send(bot, user, shortcut_payload(slack, user, trigger_id))
        await slack.wait_for(lambda: len(view_calls(slack, "views.open")) == 2)
        from_shortcut = opened_view(slack, trigger_id)
        one = ["tc_1"]
        other_cases = modal.cases_block_id(FLOW)
        cases = (
            # (what is wrong, the view, its state, the errors Slack must show)
            (
                "no engine",
                view,
                state(cases=one, cases_block=cases_block),
                {ENGINE_BLOCK: PICK_ENGINE},
            ),
            (
                "a hint as engine",
                view,
                state(engine="!hint", cases=one, cases_block=cases_block),
                {ENGINE_BLOCK: PICK_ENGINE},
            ),
            ("no cases", view, state(engine=ENGINE), {cases_block: PICK_CASES}),
            (
                "only a hint as case",
                view,
                state(engine=ENGINE, cases=["!hint"]),
                {cases_block: PICK_CASES},
            ),
            (
                "version a word",
                view,
                state(engine=ENGINE, version="latest", cases=one),
                {VERSION_BLOCK: BAD_VERSION},
            ),
            (
                "negative version",
                view,
                state(engine=ENGINE, version="-1", cases=one),
                {VERSION_BLOCK: BAD_VERSION},
            ),
            (
                "decimal version",
                view,
                state(engine=ENGINE, version="1.5", cases=one),
                {VERSION_BLOCK: BAD_VERSION},
            ),
            (
                "3 cases, 2 allowed",
                view,
                state(engine=ENGINE, cases=["tc_1", "tc_2", "tc_3"]),
                {cases_block: too_many(3, 2)},
            ),
            (
                "all 7, 2 allowed",
                view,
                state(engine=ENGINE, cases=[f"{ALL_CASES}:7"]),
                {cases_block: too_many(7, 2)},
            ),
            (
                "another engine's cases",
                view,
                state(engine=ENGINE, cases=one, cases_block=other_cases),
                {other_cases: OTHER_ENGINE},
            ),
            (
                "shortcut, no channel",
                from_shortcut,
                state(engine=ENGINE, cases=one),
                {CHANNEL_BLOCK: PICK_CHANNEL},
            ),
            (
                "everything at once",
                from_shortcut,
                state(version="x", cases_block=modal.CASES_BLOCK),
                {
                    ENGINE_BLOCK: PICK_ENGINE,
                    VERSION_BLOCK: BAD_VERSION,
                    modal.CASES_BLOCK: PICK_CASES,
                    CHANNEL_BLOCK: PICK_CHANNEL,
                },
            ),
        )
        for what, shown, values, expected in cases:
            reply = await send(bot, user, submission_payload(slack, user, as_sent(shown, values)))
            assert errors_of(reply) == expected, what

        refused = state(engine=ENGINE, cases=one, channel="C0BAD")
        reply = await send(bot, user, submission_payload(slack, user, as_sent(view, refused)))
        [(block_id, error)] = errors_of(reply).items()
        assert block_id == CHANNEL_BLOCK and "can't be run from this channel" in error

        # The same form, put right, goes through: the refusals were about the input.
        fixed = state(engine=ENGINE, cases=["tc_1", "tc_2"], channel=OTHER_CHANNEL)
        assert (
            await send(bot, user, submission_payload(slack, user, as_sent(view, fixed)))
        ).text == ""
        await retell.wait_for(lambda: retell.count("/create-batch-test") == 1)
        assert len(await bot.app.store.recent_runs()) == 1
    assert [
        r.body["test_case_definition_ids"]
        for r in retell.requests
        if r.path == "/create-batch-test"
    ] == [["tc_1", "tc_2"]]


def seed_versions(retell: FakeRetell) -> None:
    """ENGINE with versions 0..4; on 4, `tc_2` regresses and `tc_fail_1` is fixed."""
    retell.add_engine("retell-llm", ENGINE, versions=5)
    retell.set_outcome("tc_2", "pass", version=3)
    retell.set_outcome("tc_2", "fail", "Quoted the old refund policy.", version=4)
    retell.set_outcome("tc_fail_1", "fail", "Hung up on the caller.", version=3)
    retell.set_outcome("tc_fail_1", "pass", version=4)


def created(retell: FakeRetell) -> list[tuple[int | None, list[str]]]:
    """(engine version, test case ids) of every batch Retell created, sorted."""
    return sorted(
        (r.body["response_engine"].get("version"), list(r.body["test_case_definition_ids"]))
        for r in retell.requests
        if r.path == "/create-batch-test" and r.status == 201
    )


async def test_compare_with_version_in_the_form_runs_both_versions_as_one_comparison(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    seed_versions(retell)
    _, view, _ = await open_from_command(bot, slack, user)
    cases = ["tc_1", "tc_2", "tc_fail_1"]
    values = state(engine=ENGINE, version="3", compare=" v4 ", cases=cases)

    reply = await send(bot, user, submission_payload(slack, user, as_sent(view, values)))
    assert reply.status == 200 and reply.text == "", "a plain ack closes the modal"
    await slack.wait_for(lambda: len(results(slack)) == 1)
    assert created(retell) == [(3, cases), (4, cases)], "one batch per version, the same cases"
    [result] = top_level(slack)
    text = visible_text({"text": result.text, "blocks": result.blocks})
    assert f"*❌ v4: 1 regression, 1 fixed* · Retell versions compared: `{ENGINE}@3`" in text
    assert "• *Case 2* `tc_2`: Quoted the old refund policy." in text
    assert "Gate" not in text, "no minimum pass rate, no gate"
    for batch_id in retell.batches:
        assert batch_id in result.text
    runs = await bot.app.store.recent_runs()
    assert len(runs) == 2 and {run.source for run in runs} == {"modal"}, "a run per version"


async def test_compare_with_latest_and_a_minimum_pass_rate_reach_the_result(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    seed_versions(retell)
    _, view, _ = await open_from_command(bot, slack, user)
    values = state(
        engine=ENGINE, version="3", compare="Latest", cases=["tc_1", "tc_fail_1"], min_pass="90"
    )
    assert (
        await send(bot, user, submission_payload(slack, user, as_sent(view, values)))
    ).text == ""
    await slack.wait_for(lambda: len(results(slack)) == 1)
    assert [version for version, _ in created(retell)] == [3, 4], "latest resolved to 4"
    [result] = results(slack)
    text = visible_text({"text": result.text, "blocks": result.blocks})
    assert "✅ v4: no regressions, 1 fixed" in text
    assert "🟢 Gate 90%: *held* (100.0% of 2 test runs passed)" in text

    # Without a comparison the gate applies to the one run (and decimals are kept).
    one_run = {**as_sent(view, state(engine=ENGINE, cases=["tc_1", "tc_2"], min_pass="97.5"))}
    one_run["id"] = "V_ANOTHER_FORM"
    retell.set_outcome("tc_2", "fail", "Forgot the caller's name.")
    assert (await send(bot, user, submission_payload(slack, user, one_run))).text == ""
    await slack.wait_for(lambda: len(results(slack)) == 2)
    gated = next(m for m in results(slack) if m.ts != result.ts)
    assert "🔴 Gate 97.5%: *failed* (50.0% of 2 test runs passed)" in visible_text(
        {"text": gated.text, "blocks": gated.blocks}
    )


async def test_compare_with_latest_when_version_a_is_the_latest_is_answered_privately(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    retell.add_engine("retell-llm", ENGINE, versions=4)  # 0..3: 3 is the latest
    _, view, response_url = await open_from_command(bot, slack, user)
    values = state(engine=ENGINE, version="3", compare="latest", cases=["tc_1"])
    assert (
        await send(bot, user, submission_payload(slack, user, as_sent(view, values)))
    ).text == ""
    await slack.wait_for(lambda: bool(slack.responses_to(response_url)))
    [answer] = slack.responses_to(response_url)
    assert "is already the latest version" in visible_text(answer)
    assert retell.count("/create-batch-test") == 0 and top_level(slack) == []


async def test_bad_comparisons_and_pass_rates_get_inline_errors_and_start_nothing(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    seed_versions(retell)
    _, view, _ = await open_from_command(bot, slack, user)
    one = ["tc_1"]
    cases = (
        # (what is wrong, its state, the errors Slack must show)
        (
            "compare without a version to compare from",
            state(engine=ENGINE, compare="4", cases=one),
            {VERSION_BLOCK: PIN_VERSION},
        ),
        (
            "compare with latest without a version to compare from",
            state(engine=ENGINE, compare="latest", cases=one),
            {VERSION_BLOCK: PIN_VERSION},
        ),
        (
            "compare a version with itself",
            state(engine=ENGINE, version="4", compare="v4", cases=one),
            {COMPARE_BLOCK: same_version(4)},
        ),
        (
            "compare with a word",
            state(engine=ENGINE, version="3", compare="newest", cases=one),
            {COMPARE_BLOCK: BAD_COMPARE},
        ),
        (
            "compare with a negative version",
            state(engine=ENGINE, version="3", compare="-4", cases=one),
            {COMPARE_BLOCK: BAD_COMPARE},
        ),
        (
            "compare with an engine id",
            state(engine=ENGINE, version="3", compare=f"{ENGINE}@4", cases=one),
            {COMPARE_BLOCK: BAD_COMPARE},
        ),
        (
            "a bad version A is said once, not as a missing one",
            state(engine=ENGINE, version="three", compare="4", cases=one),
            {VERSION_BLOCK: BAD_VERSION},
        ),
        (
            "pass rate over 100",
            state(engine=ENGINE, cases=one, min_pass="120"),
            {MIN_PASS_BLOCK: out_of_range("120")},
        ),
        (
            "negative pass rate",
            state(engine=ENGINE, cases=one, min_pass="-5"),
            {MIN_PASS_BLOCK: out_of_range("-5")},
        ),
        (
            "pass rate not a number",
            state(engine=ENGINE, cases=one, min_pass="ninety"),
            {MIN_PASS_BLOCK: BAD_MIN_PASS},
        ),
        (
            "pass rate in exponent form",
            state(engine=ENGINE, cases=one, min_pass="1e2"),
            {MIN_PASS_BLOCK: BAD_MIN_PASS},
        ),
        (
            "pass rate as a fraction",
            state(engine=ENGINE, cases=one, min_pass="0.95"),
            {
                MIN_PASS_BLOCK: "0.95 looks like a fraction; the minimum pass rate is in "
                "percent: enter 95 for 95%."
            },
        ),
        (
            "pass rate with three decimals",
            state(engine=ENGINE, cases=one, min_pass="97.125"),
            {MIN_PASS_BLOCK: "The minimum pass rate takes at most two decimals, such as 97.25."},
        ),
        (
            "all at once",
            state(compare="4", min_pass="101", cases_block=modal.cases_block_id(ENGINE)),
            {
                ENGINE_BLOCK: PICK_ENGINE,
                VERSION_BLOCK: PIN_VERSION,
                MIN_PASS_BLOCK: out_of_range("101"),
                modal.cases_block_id(ENGINE): PICK_CASES,
            },
        ),
    )
    for what, values, expected in cases:
        reply = await send(bot, user, submission_payload(slack, user, as_sent(view, values)))
        assert errors_of(reply) == expected, what
    assert retell.count("/create-batch-test") == 0 and top_level(slack) == [], "nothing created"
    assert await bot.app.store.recent_runs() == []

    # The edges of the range are pass rates, and `%` may be typed.
    for typed, gate in (("0", "Gate 0%"), ("100%", "Gate 100%")):
        values = state(engine=ENGINE, version="3", compare="4", cases=one, min_pass=typed)
        choice = modal.read_submission(as_sent(view, values), max_cases=10)
        assert isinstance(choice, RunChoice) and choice.min_pass == float(gate[5:-1]), typed


async def test_refusal_names_admins_in_plain_text(
    start_bot: BotFactory, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    async with start_bot(allowed_user_ids="U0OTHER", admin_user_ids="U0ADMIN,U0BOSS") as bot:
        trigger_id = new_trigger_id()
        await send(bot, user, shortcut_payload(slack, user, trigger_id))
        await slack.wait_for(lambda: len(view_calls(slack, "views.open")) == 1)
        values = state(engine=ENGINE, cases=["tc_1"], channel=CHANNEL)
        reply = await send(
            bot,
            user,
            submission_payload(slack, user, as_sent(opened_view(slack, trigger_id), values)),
        )
        [error] = errors_of(reply).values()
    assert "not on the list of people who can run Retell tests" in error
    assert "<@" not in error and "an admin of the bot" in error
    assert retell.requests == []


# -- the stand-in's engine listings -----------------------------------------------------------


async def test_stand_in_lists_llms_and_flows_in_pages_as_the_sdk_reads_them() -> None:
    async with FakeRetell(api_key="key") as fake:
        for number in range(5):
            fake.add_engine("retell-llm", f"llm_{number}", versions=number + 1)
        fake.add_engine("conversation-flow", "conversation_flow_a", versions=2)
        client = AsyncRetell(api_key="key", base_url=fake.base_url, max_retries=0)
        try:
            first = await client.llm.list(limit=2)
            assert [item.llm_id for item in first.items] == ["llm_0", "llm_1"]
            assert first.has_more and first.pagination_key
            rest = await client.llm.list(limit=10, pagination_key=first.pagination_key)
            assert [(i.llm_id, i.version) for i in rest.items] == [
                ("llm_2", 2),
                ("llm_3", 3),
                ("llm_4", 4),
            ]
            assert not rest.has_more and rest.pagination_key is None
            newest = await client.llm.list(limit=1, sort_order="descending")
            assert [item.llm_id for item in newest.items] == ["llm_4"]
            flows = await client.conversation_flow.list()
            [flow] = flows.items
            assert (flow.conversation_flow_id, flow.version) == ("conversation_flow_a", 1)
            assert flow.api_model_choice is not None
        finally:
            await client.close()


# -- the pure module --------------------------------------------------------------------------


def definition(case_id: str, name: str) -> CaseDefinition:
    return CaseDefinition(case_id, name)


def within_limits(options: list[JSONDict]) -> None:
    assert len(options) <= modal.MAX_OPTIONS
    for option in options:
        assert 0 < utf16_length(option["text"]["text"]) <= modal.MAX_OPTION_TEXT
        assert 0 < len(option["value"]) <= modal.MAX_OPTION_VALUE
        if "description" in option:
            assert 0 < utf16_length(option["description"]["text"]) <= modal.MAX_OPTION_TEXT
    assert len({option["value"] for option in options}) == len(options), "values are unique"


def test_case_options_with_1000_definitions_respect_every_limit() -> None:
    definitions = [definition(f"tc_{n}", f"Case {n}") for n in range(1000)]
    options = modal.case_options(definitions, "")
    within_limits(options)
    assert len(options) == 100
    assert (
        options[0]["value"] == f"{ALL_CASES}:1000"
        and options[0]["text"]["text"] == "All test cases (1,000)"
    )
    assert values_of(options)[1:4] == ["tc_0", "tc_1", "tc_2"]
    narrowed = modal.case_options(definitions, " case   99 ")
    assert values_of(narrowed) == ["tc_99", *[f"tc_{n}" for n in range(990, 1000)]]


def test_case_options_clip_long_and_unicode_names_and_match_them_loosely() -> None:
    long_name = "Caller asks for a refund " + "very " * 100 + "politely"
    definitions = [
        definition("tc_long", long_name),
        definition("tc_cafe", "Café order — réclamation 🎧👩‍👩‍👧"),
        definition("tc_quote", "Customer's refund"),
        definition("tc_blank", "   "),
        definition("x" * 200, "Id too long to be a value"),
        definition("tc bad", "Id with a space"),
        definition("tc_cjk", "退款请求" * 30),
    ]
    options = modal.case_options(definitions, "")
    within_limits(options)
    by_value = {option["value"]: option for option in options}
    assert set(by_value) == {
        f"{ALL_CASES}:7",
        "tc_long",
        "tc_cafe",
        "tc_quote",
        "tc_blank",
        "tc_cjk",
    }
    assert by_value["tc_long"]["text"]["text"].endswith("…")
    assert by_value["tc_blank"]["text"]["text"] == "tc_blank", "a blank name shows the id"
    assert utf16_length(by_value["tc_cjk"]["text"]["text"]) == 75

    assert values_of(modal.case_options(definitions, "CAFÉ")) == ["tc_cafe"]
    assert (
        values_of(
            modal.case_options(
                definitions, "\uff23\uff21\uff26\uff25 \uff2f\uff32\uff24\uff25\uff32"
            )
        )
        == []
    ), "accents still count"
    assert values_of(
        modal.case_options(definitions, "\uff43\uff41\uff46\u00e9 \uff4f\uff52\uff44\uff45\uff52")
    ) == ["tc_cafe"], "full-width folds"
    assert values_of(modal.case_options(definitions, "customer\u2019s")) == ["tc_quote"], (
        "curly quote"
    )
    assert values_of(modal.case_options(definitions, "refund")) == ["tc_long", "tc_quote"]
    assert values_of(modal.case_options(definitions, "退款")) == ["tc_cjk"]
    assert modal.case_options([], "") == []


def test_case_options_put_names_starting_with_the_query_first() -> None:
    definitions = [
        definition("tc_1", "Angry refund caller"),
        definition("tc_2", "Refund request"),
        definition("tc_3", "Billing"),
    ]
    assert values_of(modal.case_options(definitions, "refund")) == ["tc_2", "tc_1"]
    assert values_of(modal.case_options(definitions, "all test")) == [f"{ALL_CASES}:3"]
    assert values_of(modal.case_options(definitions, "all")) == [f"{ALL_CASES}:3", "tc_1"]


def test_engine_options_describe_filter_and_bound() -> None:
    choices = [
        EngineChoice("retell-llm", "llm_a", 3, "gpt-4.1", 10),
        EngineChoice("conversation-flow", "conversation_flow_b", None, None, 5),
        EngineChoice("retell-llm", "llm_" + "x" * 200, 1, None, 1),  # longer than a value holds
        EngineChoice("retell-llm", "agent_c", 1, None, 1),  # not an engine id
        *(EngineChoice("retell-llm", f"llm_n{n}", n, "claude-4.5-haiku", 0) for n in range(300)),
    ]
    options = modal.engine_options(choices, "")
    within_limits(options)
    assert len(options) == 100
    assert options[0] == {
        "text": {"type": "plain_text", "text": "llm_a", "emoji": False},
        "value": "llm_a",
        "description": {
            "type": "plain_text",
            "text": "Retell LLM · version 3 · gpt-4.1",
            "emoji": False,
        },
    }
    assert options[1]["description"]["text"] == "Conversation flow"
    assert values_of(modal.engine_options(choices, "GPT-4.1")) == ["llm_a"]
    assert values_of(modal.engine_options(choices, "conversation")) == ["conversation_flow_b"]
    assert modal.engine_options(choices, "agent") == []


def test_run_view_passes_slacks_checks_for_both_ways_in() -> None:
    long_url = "https://hooks.slack.com/commands/" + "x" * 4000
    for origin in (
        Origin(),
        Origin(CHANNEL, "https://hooks.slack.com/commands/T1/1/abc"),
        Origin(CHANNEL, long_url, "llm_" + "a" * 128),
    ):
        view = modal.run_view(origin)
        assert block_kit_violation(None, view["blocks"], max_blocks=MAX_VIEW_BLOCKS) is None
        assert len(view["private_metadata"]) <= modal.MAX_METADATA
        assert len(view["title"]["text"]) <= 24 and len(view["submit"]["text"]) <= 24
        for block in view["blocks"]:
            assert len(block.get("block_id", "")) <= 255
            placeholder = block.get("element", {}).get("placeholder", {}).get("text", "")
            assert len(placeholder) <= 150
    decoded = Origin.decode(modal.run_view(Origin(CHANNEL, long_url, "llm_a"))["private_metadata"])
    assert decoded == Origin(CHANNEL, None, "llm_a"), "an oversized response_url is dropped first"


def test_origin_decoding_tolerates_anything() -> None:
    for junk in (None, "", "not json", "[1]", '{"c": 5, "e": "agent_1"}', 42):
        assert Origin.decode(junk) == Origin()
    origin = Origin("C1", "https://example.com/r", "conversation_flow_1")
    assert Origin.decode(origin.encode()) == origin


def test_cases_block_id_differs_per_engine_and_is_stable() -> None:
    ids = {modal.cases_block_id(e) for e in (None, ENGINE, FLOW, "llm_" + "z" * 128)}
    assert len(ids) == 4 and all(len(i) <= 255 and i.startswith(modal.CASES_BLOCK) for i in ids)
    assert modal.cases_block_id(ENGINE) == modal.cases_block_id(ENGINE)


def test_read_submission_builds_what_the_command_would() -> None:
    view = as_sent(
        {**modal.run_view(Origin(CHANNEL, "https://r.example/1")), "id": "V1"},
        state(engine=FLOW, version="v4", cases=["tc_b", "tc_a", "tc_b"]),
    )
    choice = modal.read_submission(view, max_cases=1000)
    assert choice == RunChoice(
        engine=Engine("conversation-flow", FLOW, 4),
        tests=TestSelection(ids=("tc_b", "tc_a")),
        channel_id=CHANNEL,
        response_url="https://r.example/1",
        case_count=2,
    )
    elsewhere = as_sent(view, state(engine=ENGINE, cases=[f"{ALL_CASES}:7"], channel="C9"))
    urls = [{"channel_id": "C9", "response_url": "https://r.example/9"}, "junk"]
    moved = modal.read_submission(elsewhere, urls, max_cases=7)
    assert isinstance(moved, RunChoice)
    assert moved.tests.everything and moved.case_count == 7
    assert (moved.channel_id, moved.response_url) == ("C9", "https://r.example/9")
    without_url = modal.read_submission(elsewhere, [], max_cases=7)
    assert isinstance(without_url, RunChoice) and without_url.response_url is None, (
        "the command's response_url answers only in the command's channel"
    )
    tampered = as_sent(view, state(engine=ENGINE, cases=["tc_1"], channel="C9", runs="9"))
    assert modal.read_submission(tampered, max_cases=7) == {
        modal.REPEAT_BLOCK: "Pick how many runs, 1 to 5."
    }
    assert modal.read_submission({}, max_cases=1) == {
        ENGINE_BLOCK: "Pick an engine.",
        modal.CASES_BLOCK: "Pick at least one test case, or “All test cases”.",
        CHANNEL_BLOCK: "Pick the channel for the status and the results.",
    }


def test_read_submission_reads_a_comparison_and_a_gate() -> None:
    view = {**modal.run_view(Origin(CHANNEL)), "id": "V1"}
    values = state(engine=FLOW, version="2", compare="5", cases=["tc_a"], min_pass=" 97.5 ")
    choice = modal.read_submission(as_sent(view, values), max_cases=10)
    assert choice == RunChoice(
        engine=Engine("conversation-flow", FLOW, 2),
        tests=TestSelection(ids=("tc_a",)),
        channel_id=CHANNEL,
        response_url=None,
        case_count=1,
        candidate=Engine("conversation-flow", FLOW, 5),
        min_pass=97.5,
    )
    latest = modal.read_submission(
        as_sent(view, state(engine=ENGINE, version="v3", compare=" LATEST ", cases=["tc_1"])),
        max_cases=10,
    )
    assert isinstance(latest, RunChoice)
    assert latest.candidate == Engine("retell-llm", ENGINE, None), "the latest, resolved at start"
    plain = modal.read_submission(
        as_sent(view, state(engine=ENGINE, compare="  ", cases=["tc_1"], min_pass="")),
        max_cases=10,
    )
    assert isinstance(plain, RunChoice) and (plain.candidate, plain.min_pass) == (None, None)


def test_run_view_offers_compare_and_a_pass_rate_below_the_version() -> None:
    view = modal.run_view(Origin(CHANNEL))
    ids = [block.get("block_id") for block in view["blocks"]]
    assert ids.index(VERSION_BLOCK) + 1 == ids.index(COMPARE_BLOCK)
    [compare] = [b for b in view["blocks"] if b.get("block_id") == COMPARE_BLOCK]
    [gate] = [b for b in view["blocks"] if b.get("block_id") == MIN_PASS_BLOCK]
    assert compare["optional"] and gate["optional"]
    assert compare["label"]["text"] == "Compare with version"
    assert compare["element"]["type"] == "plain_text_input"
    assert gate["label"]["text"] == "Minimum pass rate (%)"
    assert gate["element"] == {
        "type": "number_input",
        "action_id": MIN_PASS_ACTION,
        "is_decimal_allowed": True,
        "min_value": "0",
        "max_value": "100",
        "placeholder": {"type": "plain_text", "text": "e.g. 95", "emoji": True},
    }
    for block in view["blocks"]:
        for key in ("label", "hint"):
            assert len(block.get(key, {}).get("text", "")) <= 2000


def test_refusal_error_is_plain_text() -> None:
    refusal = Refusal("You are not on the list <ok>.\nReally.", frozenset({"U0B", "U0A", "W0C"}))
    assert (
        modal.refusal_error(refusal)
        == "🔒 You are not on the list <ok>. Really. Ask an admin of the bot if you need it."
    )
    assert modal.refusal_error(Refusal("No.")) == "🔒 No. Ask the bot's admin if you need it."
    assert len(modal.refusal_error(Refusal("x" * 5000))) <= modal.MAX_ERROR_TEXT
    # The message form of the same refusal mentions the admins and escapes the reason.
    text = blocks.refused(refusal).text
    assert "Ask <@U0A>, <@U0B>, <@W0C> if" in text and "&lt;ok&gt;" in text


def test_hints_fit_an_option_and_are_never_run() -> None:
    for kind in (None, "unauthorized", "not_found", "payment", "rate_limited", "unexpected"):
        [hint] = modal.retell_hint(kind)
        within_limits([hint])
        assert hint["value"].startswith(HINT)
    [long_hint] = modal.hint_options("No test case matches " + "“x”" * 100)
    within_limits([long_hint])


def test_ttl_cache_expires_and_evicts_the_oldest() -> None:
    now = [0.0]
    cache: modal.TTLCache[str, int] = modal.TTLCache(ttl=10, max_entries=2, clock=lambda: now[0])
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1
    cache.put("c", 3)
    assert cache.get("a") is None and cache.get("b") == 2 and cache.get("c") == 3
    now[0] = 10.5
    assert cache.get("b") is None and cache.get("c") is None
