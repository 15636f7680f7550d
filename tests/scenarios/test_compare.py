"""`compare A B` and `min_pass=` over HTTP (SPEC §9): two versions of an engine run on the same
cases, compared case by case in one message, gates held and failed, and the buttons on it.

The Retell stand-in keeps outcomes per engine version, so version 4 can regress a case that
version 3 passes, and fix another.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

from sqlalchemy import update

from bot.store import Run, utcnow
from bot.suite import Engine, Suite
from bot.testing.retell import FakeAgentVersion, FakeRetell
from bot.testing.slack import FakeSlack, Message, SlackUser

from ..helpers import (
    CHANNEL,
    ENGINE,
    USER,
    BotFactory,
    RunningBot,
    button_value,
    results,
    top_level,
    visible_text,
)


def creates(retell: FakeRetell) -> list[tuple[int | None, list[str]]]:
    """(engine version, test case ids) of every batch Retell was asked to create, in order."""
    return [
        (
            r.body["response_engine"].get("version"),
            list(r.body["test_case_definition_ids"]),
        )
        for r in retell.requests
        if r.path == "/create-batch-test" and r.status == 201
    ]


def shown(message: Message) -> str:
    return visible_text({"text": message.text, "blocks": message.blocks})


async def compare_to_result(
    bot: RunningBot, slack: FakeSlack, user: SlackUser, text: str
) -> tuple[str, Message]:
    reply = await user.command(bot.events_url, text)
    await slack.wait_for(lambda: len(results(slack)) == 1)
    [result] = results(slack)
    return reply.text, result


def versions(retell: FakeRetell, latest: int = 4) -> None:
    """ENGINE with versions 0..latest; on 4, `tc_2` regresses and `tc_fail_1` is fixed."""
    retell.add_engine("retell-llm", ENGINE, versions=latest + 1)
    retell.set_outcome("tc_2", "pass", version=3)
    retell.set_outcome("tc_2", "fail", "Quoted the old refund policy.", version=4)
    retell.set_outcome("tc_fail_1", "fail", "Hung up on the caller.", version=3)
    retell.set_outcome("tc_fail_1", "pass", version=4)


async def test_a_comparison_lists_the_regression_first_with_the_candidates_reason(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    versions(retell)
    ack, result = await compare_to_result(
        bot, slack, user, f"compare {ENGINE}@3 {ENGINE}@4 tc_1 tc_2 tc_fail_1"
    )
    assert f"Comparing `{ENGINE}@3` with `{ENGINE}@4`" in ack
    assert sorted(creates(retell)) == [
        (3, ["tc_1", "tc_2", "tc_fail_1"]),
        (4, ["tc_1", "tc_2", "tc_fail_1"]),
    ], "one batch per version, the same cases"
    assert len(top_level(slack)) == 1, "one message follows both batches"
    assert any("Comparing" in shown(update) for update in result.updates)

    for phrase in ("1 regressed", "1 fixed", "2 passed", "1 failed", "0 errored", "3 total"):
        assert phrase in result.text
    for batch_id in retell.batches:
        assert batch_id in result.text, "the fallback names both batches"
    text = shown(result)
    assert f"*❌ v4: 1 regression, 1 fixed* · Retell versions compared: `{ENGINE}@3`" in text
    assert "🔴 *Regressed (1)*" in text
    assert "• *Case 2* `tc_2`: Quoted the old refund policy." in text
    assert "🟢 Fixed (1): Refund request" in text
    assert "⚪ Unchanged: 1 case passed on both" in text
    assert text.index("Regressed") < text.index("Fixed") < text.index("Unchanged")
    assert f"`{ENGINE}@3` *66.7%* of 3 cases passed · `{ENGINE}@4` *66.7%* of 3" in text

    await slack.wait_for(lambda: len(slack.thread(CHANNEL, result.ts)) == 1)
    [mention] = slack.thread(CHANNEL, result.ts)
    assert f"<@{USER}> your comparison of `{ENGINE}@3` with `{ENGINE}@4` finished" in mention.text

    # Show failures lists the candidate's failures; Rerun failed runs them on both versions.
    value = button_value(result, "show_failures")
    assert value is not None
    await user.press(bot.events_url, action_id="show_failures", value=value, message_ts=result.ts)
    await slack.wait_for(lambda: len(slack.thread(CHANNEL, result.ts)) == 2)
    failures = slack.thread(CHANNEL, result.ts)[1]
    assert "Quoted the old refund policy." in shown(failures)
    assert "Hung up on the caller." not in shown(failures), "A's failure is not B's"

    value = button_value(result, "rerun_failed")
    assert value is not None
    await user.press(bot.events_url, action_id="rerun_failed", value=value, message_ts=result.ts)
    await retell.wait_for(lambda: len(creates(retell)) == 4)
    assert sorted(creates(retell)[2:]) == [(3, ["tc_2"]), (4, ["tc_2"])]


async def test_the_short_form_compares_with_the_latest_version_and_a_gate_holds(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    versions(retell)
    retell.set_outcome("tc_2", "pass", version=4)  # no regression on the latest
    _, result = await compare_to_result(
        bot, slack, user, f"compare {ENGINE}@3 tc_1 tc_2 tc_fail_1 min_pass=60"
    )
    assert sorted(version for version, _ in creates(retell)) == [3, 4], "latest resolved to 4"
    text = shown(result)
    assert "✅ v4: no regressions, 1 fixed" in text
    assert "🟢 Gate 60%: *held* (100.0% of 3 test runs passed)" in text
    assert "gate 60%: held (100.0%)" in result.text


async def test_a_gate_fails_on_the_candidates_rate_even_without_a_regression(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    retell.add_engine("retell-llm", ENGINE, versions=5)
    retell.set_outcome("tc_fail_1", "fail", "Still hangs up.")
    _, result = await compare_to_result(
        bot, slack, user, f"compare {ENGINE}@3 {ENGINE}@4 tc_1 tc_fail_1 min_pass=95"
    )
    text = shown(result)
    assert "❌ v4: no regressions; gate 95% failed" in text
    assert "❌ Still failing (1): Refund request" in text
    assert "🔴 Gate 95%: *failed* (50.0% of 2 test runs passed)" in text


async def test_a_comparison_with_repeats_names_the_flaky_case(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    retell.add_engine("retell-llm", ENGINE, versions=5)
    retell.script_outcomes(
        "tc_2", [("pass", None), ("fail", "Hung up early."), ("pass", None)], version=4
    )
    _, result = await compare_to_result(
        bot, slack, user, f"compare {ENGINE}@3 {ENGINE}@4 tc_1 tc_2 repeat=3"
    )
    assert len(creates(retell)) == 6, "three batches on each version"
    text = shown(result)
    assert "✅ v4: no regressions" in text
    assert "🔀 Flaky (1): Case 2 (3/3 → 2/3)" in text
    assert "2 on each version, 3 runs each" in text
    assert f"`{ENGINE}@3` *100.0%* of 6 test runs passed · `{ENGINE}@4` *83.3%* of 6" in text


async def test_bad_comparisons_create_nothing(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    retell.add_engine("retell-llm", ENGINE, versions=4)  # 0..3: 3 is the latest
    for text, said in (
        (f"compare {ENGINE}@3 {ENGINE}@9 tc_1", f"Retell has no version 9 of {ENGINE} (404)"),
        (f"compare {ENGINE}@7 {ENGINE}@2 tc_1", f"Retell has no version 7 of {ENGINE} (404)"),
        (f"compare {ENGINE}@3 tc_1", "is already the latest version"),
    ):
        url = (await user.command(bot.events_url, text)).response_url
        await slack.wait_for(lambda url=url: bool(slack.responses_to(url)))  # type: ignore[misc]
        [answer] = slack.responses_to(url)
        assert said in visible_text(answer)

    reply = await user.command(bot.events_url, f"compare {ENGINE}@3 {ENGINE}@3 tc_1")
    assert "compares a version with itself" in reply.text
    reply = await user.command(bot.events_url, f"compare {ENGINE}@3 llm_other@4 tc_1")
    assert "different engines" in reply.text
    reply = await user.command(bot.events_url, f"{ENGINE} tc_1 min_pass=120")
    assert "at most 100" in reply.text
    assert creates(retell) == [] and top_level(slack) == [], "nothing created"
    assert await bot.app.store.recent_runs() == []


async def test_a_run_with_a_gate_says_whether_it_held(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    retell.set_outcome("tc_fail_1", "fail", "Promised a refund.")
    await user.command(bot.events_url, f"{ENGINE} tc_1 tc_2 tc_3 tc_fail_1 min_pass=75%")
    await slack.wait_for(lambda: len(results(slack)) == 1)
    [result] = results(slack)
    assert "🟢 Gate 75%: *held* (75.0% of 4 test runs passed)" in shown(result)
    assert "gate 75%: held (75.0%)" in result.text


# -- Publish -------------------------------------------------------------------------------------


def agents(retell: FakeRetell) -> None:
    """Two agents whose draft answers with ENGINE@4, one whose draft is @3, one published @4."""
    retell.add_engine("retell-llm", ENGINE, versions=5)
    old = FakeAgentVersion("retell-llm", ENGINE, 3, published=True)
    draft = FakeAgentVersion("retell-llm", ENGINE, 4)
    retell.add_agent("agent_support", "Support line", [old, draft])
    retell.add_agent("agent_sales", "Sales line", [old, draft])
    retell.add_agent("agent_old", "Old line", [FakeAgentVersion("retell-llm", ENGINE, 3)])
    retell.add_agent("agent_live", "Live line", [FakeAgentVersion("retell-llm", ENGINE, 4, True)])


def publish_buttons(message: Message) -> dict[str, str]:
    """Button text → value of every Publish button on a message."""
    return {
        element["text"]["text"]: element["value"]
        for block in message.blocks
        for element in block.get("elements", [])
        if isinstance(element, dict) and str(element.get("action_id", "")).startswith("publish")
    }


async def green_comparison(bot: RunningBot, slack: FakeSlack, user: SlackUser) -> Message:
    _, result = await compare_to_result(bot, slack, user, f"compare {ENGINE}@3 {ENGINE}@4 tc_1")
    return result


async def test_an_admin_publishes_the_tested_draft_once_and_the_thread_says_who(
    start_bot: BotFactory, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    agents(retell)
    async with start_bot(admin_user_ids=USER) as bot:
        result = await green_comparison(bot, slack, user)
        buttons = publish_buttons(result)
        assert sorted(buttons) == ["🚀 Publish Sales line", "🚀 Publish Support line"]
        value = buttons["🚀 Publish Support line"]
        assert json.loads(value)["version"] == 1, "the agent's draft version, not the engine's"

        presses = [
            user.press(
                bot.events_url, action_id="publish_agent:0", value=value, message_ts=result.ts
            )
            for _ in range(2)
        ]
        replies = await asyncio.gather(*presses)
        await slack.wait_for(
            lambda: any("published" in m.text for m in slack.thread(CHANNEL, result.ts))
        )
        await slack.wait_for(lambda: any(slack.responses_to(r.response_url) for r in replies))
        assert retell.publishes == [("agent_support", 1)], "a double press publishes once"
        [said] = [m for m in slack.thread(CHANNEL, result.ts) if "published" in m.text]
        assert f"<@{USER}> published *Support line* version 1" in said.text
        assert f"`{ENGINE}@4`" in said.text
        told = [visible_text(b) for r in replies for b in slack.responses_to(r.response_url)]
        assert any("that agent from this result already" in text for text in told), (
            "the other is told"
        )


async def test_publish_is_for_admins_and_never_offered_on_a_regression(
    start_bot: BotFactory, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    agents(retell)
    async with start_bot(admin_user_ids="UADMIN") as bot:
        result = await green_comparison(bot, slack, user)
        value = publish_buttons(result)["🚀 Publish Support line"]
        reply = await user.press(
            bot.events_url, action_id="publish_agent:0", value=value, message_ts=result.ts
        )
        await slack.wait_for(lambda: bool(slack.responses_to(reply.response_url)))
        [refusal] = slack.responses_to(reply.response_url)
        assert "Only the bot's admins can publish agents" in visible_text(refusal)
        assert "<@UADMIN>" in visible_text(refusal)
        assert retell.publishes == []

        retell.set_outcome("tc_1", "fail", "Regressed.", version=4)
        await user.command(bot.events_url, f"compare {ENGINE}@3 {ENGINE}@4 tc_1")
        await slack.wait_for(lambda: len(results(slack)) == 2)
        assert publish_buttons(results(slack)[1]) == {}, "a regression offers no publish"


async def test_retells_refusal_to_publish_is_said_in_the_thread_and_can_be_pressed_again(
    start_bot: BotFactory, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    agents(retell)
    async with start_bot(admin_user_ids=USER) as bot:
        result = await green_comparison(bot, slack, user)
        value = publish_buttons(result)["🚀 Publish Support line"]
        retell.fail_next("/publish-agent-version", 422)
        await user.press(
            bot.events_url, action_id="publish_agent:0", value=value, message_ts=result.ts
        )
        await slack.wait_for(
            lambda: any("Retell refused" in m.text for m in slack.thread(CHANNEL, result.ts))
        )
        assert retell.publishes == []
        await user.press(
            bot.events_url, action_id="publish_agent:0", value=value, message_ts=result.ts
        )
        await retell.wait_for(lambda: retell.publishes == [("agent_support", 1)])


async def test_a_forged_publish_value_publishes_nothing(
    start_bot: BotFactory, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    agents(retell)
    async with start_bot(admin_user_ids=USER) as bot:
        result = await green_comparison(bot, slack, user)
        forged = json.dumps({"run": 1, "agent": "agent_old", "version": 0})
        reply = await user.press(
            bot.events_url, action_id="publish_agent:0", value=forged, message_ts=result.ts
        )
        await slack.wait_for(lambda: bool(slack.responses_to(reply.response_url)))
        assert "no longer a draft" in visible_text(slack.responses_to(reply.response_url)[0])
        reply = await user.press(
            bot.events_url, action_id="publish_agent:0", value="nonsense", message_ts=result.ts
        )
        await slack.wait_for(lambda: bool(slack.responses_to(reply.response_url)))
        assert retell.publishes == []


# -- schedules -----------------------------------------------------------------------------------


async def private_answer(user: SlackUser, bot: RunningBot, slack: FakeSlack, text: str) -> str:
    """Type a command and return what the bot answered privately (ack and responses)."""
    reply = await user.command(bot.events_url, text)
    await slack.wait_for(lambda: bool(slack.responses_to(reply.response_url)))
    return "\n".join(visible_text(body) for body in slack.responses_to(reply.response_url))


async def test_a_nightly_comparison_against_the_latest_draft_says_when_it_starts_regressing(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    retell.add_engine("retell-llm", ENGINE, versions=5)  # 0..4: 4 is the latest
    added = await private_answer(
        user,
        bot,
        slack,
        f'schedule add "daily 02:00" compare {ENGINE}@3 tc_1 tc_2 name=Nightly notify=failures',
    )
    assert f"compare `{ENGINE}@3` → the latest" in added
    listed = await private_answer(user, bot, slack, "schedule list")
    assert f"compare `{ENGINE}@3` → the latest" in listed

    await private_answer(user, bot, slack, "schedule run 1")
    await slack.wait_for(lambda: len(top_level(slack)) == 1)
    [quiet] = top_level(slack)
    assert f"✅ v4: no regressions · Nightly: `{ENGINE}@3` → `{ENGINE}@4`" in shown(quiet)
    assert (
        quiet.text.startswith("Nightly: Retell versions compared") and "0 regressed" in quiet.text
    )
    assert quiet.update_count == 0, "a quiet schedule posts no status while it runs"
    assert not any(block["type"] == "actions" for block in quiet.blocks)

    retell.add_engine("retell-llm", ENGINE, versions=6)  # a new draft, version 5, regresses
    retell.set_outcome("tc_2", "fail", "Forgot the caller's name.", version=5)
    await private_answer(user, bot, slack, "schedule run 1")
    await slack.wait_for(lambda: len(results(slack)) == 2)
    loud = top_level(slack)[1]
    assert "1 regressed" in loud.text and f"{ENGINE}@5" in loud.text, "B is the latest again"
    assert "• *Case 2* `tc_2`: Forgot the caller's name." in shown(loud)
    assert sorted(version for version, _ in creates(retell)) == [3, 3, 4, 5]

    await user.command(bot.events_url, "report 7")
    await slack.wait_for(lambda: any("📊" in m.text for m in top_level(slack)))
    [digest] = [m for m in top_level(slack) if "📊" in m.text]
    checks = shown(digest).split("*Version comparisons*\n")[1].split("\n")[:2]
    assert checks[0].endswith(f"`{ENGINE}@3` → `{ENGINE}@5`: 🔴 1 regression · Nightly")
    assert checks[1].endswith(f"`{ENGINE}@3` → `{ENGINE}@4`: 🟢 no regressions · Nightly")


async def test_a_quiet_schedule_treats_a_held_gate_as_green(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    retell.set_outcome("tc_fail_1", "fail", "Promised a refund.")
    await private_answer(
        user,
        bot,
        slack,
        f'schedule add "daily 09:00" {ENGINE} tc_1 tc_2 tc_3 tc_fail_1 name=Gated '
        "notify=failures min_pass=75",
    )
    await private_answer(user, bot, slack, "schedule run 1")
    await slack.wait_for(lambda: len(top_level(slack)) == 1)
    [quiet] = top_level(slack)
    assert "🟢 Gated: gate 75%: held (75.0%), 3/4 passed" in shown(quiet)
    assert not any(block["type"] == "actions" for block in quiet.blocks)

    retell.set_outcome("tc_3", "fail", "Hung up.")
    await private_answer(user, bot, slack, "schedule run 1")
    await slack.wait_for(lambda: len(results(slack)) == 2)
    assert "🔴 Gate 75%: *failed* (50.0% of 4 test runs passed)" in shown(top_level(slack)[1])


# -- faults --------------------------------------------------------------------------------------


async def test_a_comparison_whose_starter_died_after_the_first_batch_still_compares(
    start_bot: BotFactory, slack: FakeSlack, retell: FakeRetell
) -> None:
    """The starter created version A's batch and died before recording the rest of the group:
    the recovery follows A's batch and creates B's, so the comparison still reports."""
    retell.add_engine("retell-llm", ENGINE, versions=5)
    retell.set_outcome("tc_2", "fail", "Quoted the old refund policy.", version=4)
    suite = Suite(Engine.from_id(ENGINE, 3), ("tc_1", "tc_2"))
    async with start_bot() as bot:
        store, gateway = bot.app.store, bot.app.retell
        lead = await store.add_run(
            team_id="T0001",
            channel_id=CHANNEL,
            user_id=USER,
            suite=suite,
            candidate_version=4,
            lease=timedelta(minutes=5),
        )
        assert lead is not None
        await gateway.create_batch(suite)  # ... and then the starter died
        async with store.engine.begin() as conn:  # the dead starter's lease runs out
            await conn.execute(update(Run).where(Run.id == lead.id).values(claimed_until=utcnow()))
        await slack.wait_for(lambda: len(results(slack)) == 1, timeout=20)
    assert sorted(version for version, _ in creates(retell)) == [3, 4], "B created once"
    [result] = results(slack)
    assert "1 regressed" in result.text
    assert "• *Case 2* `tc_2`: Quoted the old refund policy." in shown(result)


async def test_a_green_pinned_run_offers_publish_and_an_unpinned_one_does_not(
    start_bot: BotFactory, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    agents(retell)
    async with start_bot(admin_user_ids=USER) as bot:
        await user.command(bot.events_url, f"{ENGINE}@4 tc_1 tc_2")
        await slack.wait_for(lambda: len(results(slack)) == 1)
        assert sorted(publish_buttons(results(slack)[0])) == [
            "🚀 Publish Sales line",
            "🚀 Publish Support line",
        ]
        await user.command(bot.events_url, f"{ENGINE} tc_1 tc_2")
        await slack.wait_for(lambda: len(results(slack)) == 2)
        assert publish_buttons(results(slack)[1]) == {}, "which version ran is not certain"
        assert retell.count("/v2/list-agents") == 1, "one scan, kept for the next result"
