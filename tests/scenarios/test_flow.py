"""The slash command end to end over real HTTP: ack, create, status, updates, result, rerun."""

from __future__ import annotations

import pytest

from bot.store import RunState
from bot.testing.retell import FakeRetell
from bot.testing.slack import FakeSlack, SlackUser

from ..helpers import (
    CHANNEL,
    ENGINE,
    FLOW,
    USER,
    BotFactory,
    RunningBot,
    button_value,
    results,
    top_level,
)


async def test_command_to_final_result_then_rerun(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    retell.set_batch_duration(60)  # held in progress until the test has seen it followed
    reply = await user.command(bot.events_url, f"run {ENGINE} tc_1 tc_2 tc_fail_1 tc_error_1")

    assert reply.status == 200
    assert "Starting a Retell batch test" in reply.text
    await retell.wait_for(lambda: len(retell.batches) == 1)
    [followed] = retell.batches
    await slack.wait_for(
        lambda: any(followed in m.text and "/4" in m.text for m in top_level(slack))
    )
    status_ts = top_level(slack)[0].ts
    retell.complete_cases(followed, 2)
    await slack.wait_for(lambda: "2/4" in slack.message(CHANNEL, status_ts).text)
    retell.set_batch_duration(0.4)
    retell.finish_now(followed)
    await slack.wait_for(lambda: len(results(slack)) == 1)

    [create] = [r for r in retell.requests if r.path == "/create-batch-test"]
    assert create.body == {
        "response_engine": {"type": "retell-llm", "llm_id": ENGINE},
        "test_case_definition_ids": ["tc_1", "tc_2", "tc_fail_1", "tc_error_1"],
    }
    [batch_id] = retell.batches
    [status] = top_level(slack)
    assert status.update_count >= 2, "the status message is edited in place, not re-posted"
    progress_texts = [version.text for version in status.updates]
    assert any("/4" in text for text in progress_texts)
    for phrase in ("2 passed", "1 failed", "1 errored", "4 total", batch_id):
        assert phrase in status.text
    assert button_value(status, "rerun") is not None
    assert button_value(status, "rerun_failed") is not None
    await slack.wait_for(lambda: len(slack.thread(CHANNEL, status.ts)) == 1)
    [mention] = slack.thread(CHANNEL, status.ts)
    assert f"<@{USER}>" in mention.text

    run_id = button_value(status, "rerun")
    assert run_id is not None
    pressed = await user.press(
        bot.events_url, action_id="rerun", value=run_id, message_ts=status.ts
    )
    assert pressed.status == 200
    await slack.wait_for(lambda: len(results(slack)) == 2)
    second_create = [r for r in retell.requests if r.path == "/create-batch-test"][1]
    assert second_create.body == create.body
    assert len(retell.batches) == 2
    assert len(top_level(slack)) == 2, "the rerun has a status message of its own"


@pytest.mark.parametrize(
    ("text", "response_engine", "case_ids"),
    [
        (f"{ENGINE} tc_1,tc_2", {"type": "retell-llm", "llm_id": ENGINE}, ["tc_1", "tc_2"]),
        (
            f"run {ENGINE}@2 tc_3 tc_3",
            {"type": "retell-llm", "llm_id": ENGINE, "version": 2},
            ["tc_3"],
        ),
        (
            f"{FLOW} tc_flow_1",
            {"type": "conversation-flow", "conversation_flow_id": FLOW},
            ["tc_flow_1"],
        ),
        (
            f'{ENGINE} "refund REQUEST" tc_1',
            {"type": "retell-llm", "llm_id": ENGINE},
            ["tc_1", "tc_fail_1"],
        ),
    ],
)
async def test_command_forms_create_the_right_batch(
    bot: RunningBot,
    slack: FakeSlack,
    retell: FakeRetell,
    user: SlackUser,
    text: str,
    response_engine: dict[str, object],
    case_ids: list[str],
) -> None:
    await user.command(bot.events_url, text)
    await slack.wait_for(lambda: len(results(slack)) == 1)
    [create] = [r for r in retell.requests if r.path == "/create-batch-test"]
    assert create.body == {"response_engine": response_engine, "test_case_definition_ids": case_ids}


async def test_status_and_help(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    retell.complete_never = True
    await user.command(bot.events_url, f"{ENGINE} tc_1 tc_2")
    await slack.wait_for(lambda: len(top_level(slack)) == 1)
    [batch_id] = retell.batches

    listing = await user.command(bot.events_url, "status")
    await slack.wait_for(lambda: bool(slack.responses_to(listing.response_url)))
    [answer] = slack.responses_to(listing.response_url)
    assert batch_id in answer["text"] or batch_id in str(answer["blocks"])

    one = await user.command(bot.events_url, f"status {batch_id}")
    await slack.wait_for(lambda: bool(slack.responses_to(one.response_url)))
    [detail] = slack.responses_to(one.response_url)
    assert batch_id in str(detail)

    helped = await user.command(bot.events_url, "help")
    assert "/retell-test" in str(helped.json())


async def test_timed_out_batch_shows_its_last_counts(
    start_bot: BotFactory, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    retell.complete_never = True
    async with start_bot(batch_timeout_minutes=0.02) as bot:
        await user.command(bot.events_url, f"{ENGINE} tc_1 tc_2 tc_3")
        await slack.wait_for(lambda: len(results(slack)) == 1, timeout=15)
        [result] = results(slack)
        assert "timed out" in result.text
        assert "2 passed" in result.text, "the last counts Retell reported are kept"
        [run] = await bot.app.store.recent_runs()
        assert run.state == RunState.TIMED_OUT.value


async def test_restart_resumes_follow_up_and_reports_once(
    start_bot: BotFactory, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    retell.set_batch_duration(1.5)
    async with start_bot() as first:
        await user.command(first.events_url, f"{ENGINE} tc_1 tc_2 tc_3 tc_4")
        await slack.wait_for(lambda: len(top_level(slack)) == 1)
    assert not results(slack), "stopped before the batch completed"
    async with start_bot() as second:
        await slack.wait_for(lambda: len(results(slack)) == 1, timeout=15)
        [status] = top_level(slack)
        await slack.wait_for(lambda: len(slack.thread(CHANNEL, status.ts)) == 1)
        [run] = await second.app.store.recent_runs()
        assert run.reported_at is not None
    assert len(top_level(slack)) == 1
    assert len(slack.thread(CHANNEL, status.ts)) == 1, "the requester is mentioned once"


async def test_allow_lists_refuse_in_the_ack_and_create_nothing(
    start_bot: BotFactory, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    async with start_bot(allowed_channel_ids="C0OTHER", admin_user_ids="UADMIN") as bot:
        reply = await user.command(bot.events_url, f"{ENGINE} tc_1")
        assert "can't be run from this channel" in reply.text
        assert "<@UADMIN>" in reply.text, "the refusal says who to ask"
    async with start_bot(allowed_user_ids="U0SOMEONE") as bot:
        reply = await user.command(bot.events_url, f"{ENGINE} tc_1")
        assert "not on the list" in reply.text
    assert retell.count("/create-batch-test") == 0
    assert not slack.messages


async def test_hourly_run_limit_per_user(
    start_bot: BotFactory, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    async with start_bot(max_runs_per_user_per_hour=1) as bot:
        await user.command(bot.events_url, f"{ENGINE} tc_1")
        await slack.wait_for(lambda: len(results(slack)) == 1)
        second = await user.command(bot.events_url, f"{ENGINE} tc_2")
        await slack.wait_for(lambda: bool(slack.responses_to(second.response_url)))
        [refusal] = slack.responses_to(second.response_url)
        assert "MAX_RUNS_PER_USER_PER_HOUR" in refusal["text"]
    assert retell.count("/create-batch-test") == 1


async def test_watch_follows_a_batch_created_elsewhere(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    engine = {"type": "retell-llm", "llm_id": ENGINE}
    batch_id = retell.create_batch_directly(engine, ["tc_1", "tc_fail_1"], duration=0.5)

    reply = await user.command(bot.events_url, f"watch {batch_id}")
    assert batch_id in reply.text
    await slack.wait_for(lambda: len(results(slack)) == 1)
    [result] = results(slack)
    for phrase in ("1 passed", "1 failed", "0 errored", "2 total", batch_id):
        assert phrase in result.text
    assert retell.count("/create-batch-test") == 0, "watching creates nothing"
    [run] = await bot.app.store.recent_runs()
    assert (run.source, run.case_ids) == ("watch", ["tc_1", "tc_fail_1"])

    again = await user.command(bot.events_url, f"watch {batch_id}")
    await slack.wait_for(lambda: bool(slack.responses_to(again.response_url)))
    assert "already being followed" in slack.responses_to(again.response_url)[0]["text"]

    unknown = await user.command(bot.events_url, "watch test_case_batch_job_nope")
    await slack.wait_for(lambda: bool(slack.responses_to(unknown.response_url)))
    assert "could not find" in slack.responses_to(unknown.response_url)[0]["text"]
    assert len(top_level(slack)) == 1
