"""Triage from the result, over HTTP: Show failures, Rerun failed, repeat=N and flaky cases.

These are the buttons a team presses when a run goes red, so they are tested as Slack drives
them (signed presses on `/slack/events`) against the Retell stand-in, including the cases
that break naive bots: hundreds of failures, results spread over many pages, double clicks,
two people at once, and a suite run several times to tell flaky cases from broken ones.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re

from bot.suite import Engine
from bot.testing.retell import FakeRetell
from bot.testing.slack import FakeSlack, Message, SlackUser

from ..helpers import (
    CHANNEL,
    ENGINE,
    USER,
    RunningBot,
    button_value,
    results,
    top_level,
    visible_text,
)

WHY = (
    "The agent promised a refund before checking the order. It did not ask for the order "
    "number at any point. The caller had to repeat the request three times, and the agent "
    "then read out a policy that does not exist. Finally it transferred the call to a queue "
    "that was closed, so the caller hung up without an answer."
)


def creates(retell: FakeRetell) -> list[list[str]]:
    """The test case ids of every batch Retell was asked to create, in order."""
    return [
        list(r.body["test_case_definition_ids"])
        for r in retell.requests
        if r.path == "/create-batch-test" and r.status == 201
    ]


def paged_reads(retell: FakeRetell, batch_id: str) -> int:
    """How many list-test-runs pages after the first were read for a batch."""
    return sum(
        1
        for r in retell.requests
        if r.path == f"/v2/list-test-runs/{batch_id}" and "pagination_key" in r.query
    )


def thread_replies(slack: FakeSlack, result: Message) -> list[Message]:
    """Replies under a result other than the requester's mention."""
    return [m for m in slack.thread(CHANNEL, result.ts) if f"<@{USER}> your" not in m.text]


async def run_to_result(bot: RunningBot, slack: FakeSlack, user: SlackUser, text: str) -> Message:
    await user.command(bot.events_url, text)
    await slack.wait_for(lambda: len(results(slack)) == 1)
    [result] = results(slack)
    return result


async def press(bot: RunningBot, user: SlackUser, result: Message, action_id: str) -> str:
    """Press a button of the result; the response_url any private answer goes to."""
    value = button_value(result, action_id)
    assert value is not None, f"the result has no {action_id} button"
    reply = await user.press(bot.events_url, action_id=action_id, value=value, message_ts=result.ts)
    assert reply.status == 200
    return reply.response_url


# -- Show failures -------------------------------------------------------------------------------


async def test_show_failures_reads_every_page_and_lists_failures_before_errors(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    retell.page_cap = 2
    retell.set_outcome("tc_fail_1", "fail", WHY)
    retell.set_outcome("tc_error_1", "error", "The call could not be placed.")
    result = await run_to_result(bot, slack, user, f"{ENGINE} tc_error_1 tc_1 tc_2 tc_3 tc_fail_1")
    [batch_id] = retell.batches
    reads_before = paged_reads(retell, batch_id)

    await press(bot, user, result, "show_failures")
    await slack.wait_for(lambda: len(thread_replies(slack, result)) == 1)

    [reply] = thread_replies(slack, result)
    text = visible_text({"text": reply.text, "blocks": reply.blocks})
    assert paged_reads(retell, batch_id) - reads_before == 2, "5 test runs, 2 a page: 3 pages"
    assert "1 failed, 1 errored" in reply.text
    assert text.index("Refund request") < text.index("Angry caller"), "failures before errors"
    assert "`tc_fail_1` failed" in text and "`tc_error_1` errored" in text
    quoted = next(line for line in text.splitlines() if line.startswith(">The agent promised"))
    assert quoted.endswith(
        "three times, and the agent then read out a policy that does not exist. …"
    )
    assert ">The call could not be placed." in text
    assert "Case 1" not in text, "passed cases are not listed"


async def test_400_failures_of_1000_come_as_one_reply_and_a_csv_and_rerun_failed_runs_them(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    retell.page_cap = 250
    ids = retell.seed("llm_big", 1000, prefix="big_")
    failing = ids[::5] + ids[1::5]  # 400 cases: 200 fail, 200 error
    for case_id in ids[::5]:
        retell.set_outcome(case_id, "fail", f"{case_id}: {WHY}")
    for case_id in ids[1::5]:
        retell.set_outcome(case_id, "error", "Telephony error.")
    result = await run_to_result(bot, slack, user, "llm_big all")
    for phrase in ("600 passed", "200 failed", "200 errored", "1000 total"):
        assert phrase in result.text
    [batch_id] = retell.batches

    await press(bot, user, result, "show_failures")
    await slack.wait_for(
        lambda: any(u.completed and u.thread_ts == result.ts for u in slack.uploads.values())
    )

    [reply] = thread_replies(slack, result)
    assert "200 failed, 200 errored" in reply.text
    assert "of 400 are below" in visible_text({"blocks": reply.blocks})
    [upload] = slack.uploads.values()
    assert upload.filename == f"failures-{batch_id}.csv" and upload.channel_id == CHANNEL
    assert upload.data is not None
    rows = list(csv.DictReader(io.StringIO(upload.data.decode())))
    assert [row["case_id"] for row in rows] == failing, "failures, then errors, in suite order"
    assert [row["verdict"] for row in rows] == ["fail"] * 200 + ["error"] * 200
    assert rows[0]["explanation"] == f"{ids[0]}: {WHY}", "the file keeps explanations whole"
    assert paged_reads(retell, batch_id) >= 3, "1000 test runs in pages of 250"

    reads = retell.count("/v2/list-test-runs")
    told = await press(bot, user, result, "rerun_failed")
    await slack.wait_for(lambda: len(creates(retell)) == 2 or bool(slack.responses_to(told)))
    assert slack.responses_to(told) == []
    assert creates(retell)[1] == [case_id for case_id in ids if case_id in set(failing)]
    assert retell.count("/v2/list-test-runs") == reads, "the stored results said what failed"


async def test_a_double_click_on_show_failures_lists_them_once(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    result = await run_to_result(bot, slack, user, f"{ENGINE} tc_1 tc_fail_1")
    value = button_value(result, "show_failures")
    assert value is not None
    presses = await asyncio.gather(
        *(
            user.press(bot.events_url, action_id="show_failures", value=value, message_ts=result.ts)
            for _ in range(2)
        )
    )
    await slack.wait_for(
        lambda: (
            len(thread_replies(slack, result)) == 1
            and any(slack.responses_to(p.response_url) for p in presses)
        )
    )
    [answer] = [a for p in presses for a in slack.responses_to(p.response_url)]
    assert "already listed in the thread" in visible_text(answer)
    assert len(thread_replies(slack, result)) == 1


# -- Rerun failed ------------------------------------------------------------------------------


async def test_rerun_failed_runs_exactly_the_failed_and_errored_cases(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    result = await run_to_result(bot, slack, user, f"{ENGINE} tc_1 tc_fail_1 tc_2 tc_error_1")

    await press(bot, user, result, "rerun_failed")
    await slack.wait_for(lambda: len(results(slack)) == 2)

    assert creates(retell) == [
        ["tc_1", "tc_fail_1", "tc_2", "tc_error_1"],
        ["tc_fail_1", "tc_error_1"],
    ]
    rerun = results(slack)[1]
    assert "2 total" in rerun.text and "Rerun of run #1" in visible_text({"blocks": rerun.blocks})


async def test_a_result_where_everything_passed_offers_only_rerun(
    bot: RunningBot, slack: FakeSlack, user: SlackUser
) -> None:
    result = await run_to_result(bot, slack, user, f"{ENGINE} tc_1 tc_2")
    assert button_value(result, "rerun") is not None
    assert button_value(result, "rerun_failed") is None
    assert button_value(result, "show_failures") is None


async def test_two_people_pressing_rerun_and_rerun_failed_at_once_start_one_batch(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    result = await run_to_result(bot, slack, user, f"{ENGINE} tc_1 tc_fail_1")
    bob = SlackUser(slack=slack, user_id="U0002", user_name="bob", channel_id=CHANNEL)
    value = button_value(result, "rerun")
    assert value is not None
    presses = await asyncio.gather(
        user.press(bot.events_url, action_id="rerun", value=value, message_ts=result.ts),
        bob.press(bot.events_url, action_id="rerun_failed", value=value, message_ts=result.ts),
    )

    def settled() -> bool:
        told = sum(bool(slack.responses_to(p.response_url)) for p in presses)
        return len(creates(retell)) - 1 + told == 2

    await slack.wait_for(settled)
    assert len(creates(retell)) == 2, "two presses at once started two reruns"
    [answer] = [a for p in presses for a in slack.responses_to(p.response_url)]
    assert "already under way" in visible_text(answer)


async def test_unknown_ids_are_named_with_close_ones_and_nothing_runs(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    reply = await user.command(bot.events_url, f"{ENGINE} tc_1 tc_fial_1 tc_nope_at_all")
    await slack.wait_for(lambda: bool(slack.responses_to(reply.response_url)))

    [answer] = slack.responses_to(reply.response_url)
    text = visible_text(answer)
    assert "2 of the test case ids are not definitions of this engine" in text
    assert "`tc_fial_1`: did you mean `tc_fail_1` (“Refund request”)" in text
    assert "`tc_nope_at_all`: " in text
    assert "`tc_1`:" not in text, "a known id is not listed"
    assert retell.count("/create-batch-test") == 1, "a refusal is not retried"
    assert retell.batches == {} and top_level(slack) == []
    [run] = await bot.app.store.recent_runs()
    assert run.state == "failed" and "tc_nope_at_all" in (run.error or ""), "Retell's words kept"


# -- repeat=N ----------------------------------------------------------------------------------


async def test_repeat_reports_n_batches_as_one_result_with_flaky_cases(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    retell.script_outcomes("tc_2", [("pass", None), ("fail", "Hung up early."), ("pass", None)])
    retell.set_outcome("tc_fail_1", "fail", "Promised a refund.")
    reply = await user.command(bot.events_url, f"{ENGINE} tc_1 tc_2 tc_fail_1 repeat=3")
    assert "Starting 3 Retell batch tests" in reply.text
    await slack.wait_for(lambda: len(results(slack)) == 1)

    assert creates(retell) == [["tc_1", "tc_2", "tc_fail_1"]] * 3
    [result] = top_level(slack)
    assert result.update_count >= 1, "one status message, edited into the result"
    finals = [version.text for version in result.updates if " total" in version.text]
    assert all("1 flaky" in text for text in finals), "no result before every verdict is in"
    for phrase in ("5 passed", "4 failed", "0 errored", "9 total", "1 flaky", *retell.batches):
        assert phrase in result.text
    text = visible_text({"blocks": result.blocks})
    assert "🔀 Flaky (passed and failed): Case 2 (2/3)" in text
    assert "❌ Failed: Refund request (0/3)" in text
    assert "✅ 1 passed every run" in text
    await slack.wait_for(lambda: len(slack.thread(CHANNEL, result.ts)) == 1)
    [mention] = slack.thread(CHANNEL, result.ts)
    assert f"<@{USER}> your 3 runs of the suite" in mention.text

    await press(bot, user, result, "show_failures")
    await slack.wait_for(lambda: len(thread_replies(slack, result)) == 1)
    [failures] = thread_replies(slack, result)
    listed = visible_text({"blocks": failures.blocks})
    assert "1 failed, 1 flaky, 0 errored over 3 batches" in failures.text
    assert "*Refund request* `tc_fail_1` failed 3 of 3 runs" in listed
    assert "*Case 2* `tc_2` flaky: passed 2 of 3 runs, failed 1" in listed
    assert ">Hung up early." in listed
    assert listed.index("Refund request") < listed.index("Case 2")

    await press(bot, user, result, "rerun_failed")
    await slack.wait_for(lambda: len(creates(retell)) == 6)
    assert creates(retell)[3:] == [["tc_2", "tc_fail_1"]] * 3, "failed and flaky, 3 times again"


async def test_a_repeat_batch_retell_refuses_is_shown_in_the_group_result(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    # Hold the first create's answer, and refuse the next one (a repeat batch) meanwhile.
    retell.delay("/create-batch-test", 0.5, times=1, answer_late=True)
    await user.command(bot.events_url, f"{ENGINE} tc_1 tc_fail_1 repeat=2")
    await retell.wait_for(lambda: retell.count("/create-batch-test") == 1)
    retell.fail_next("/create-batch-test", 402)
    await slack.wait_for(lambda: len(results(slack)) == 1)

    [result] = results(slack)
    text = visible_text({"text": result.text, "blocks": result.blocks})
    assert len(retell.batches) == 1
    assert "2. could not be created: Retell refused for billing reasons (402)" in text
    assert re.search(r"1 passed, 1 failed, 0 errored, 2 total", result.text)


async def test_repeat_out_of_range_is_refused_before_anything_runs(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    reply = await user.command(bot.events_url, f"{ENGINE} tc_1 repeat=8")
    assert "`repeat=` takes a number of runs from 2 to 5" in reply.text
    assert retell.batches == {} and top_level(slack) == []


async def test_a_case_name_with_line_breaks_and_bidi_controls_shows_as_one_plain_line(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    retell.add_definition(ENGINE, "tc_forged", "Cancel\n✅ All 4 passed\u202e · 100.0% pass rate")
    retell.set_outcome("tc_forged", "fail", "The agent hung up.")
    await user.command(bot.events_url, f"{ENGINE} tc_1 tc_forged")
    await slack.wait_for(lambda: len(results(slack)) == 1)
    [result] = results(slack)
    run_id = button_value(result, "show_failures")
    assert run_id is not None
    await user.press(bot.events_url, action_id="show_failures", value=run_id, message_ts=result.ts)
    await slack.wait_for(lambda: len(thread_replies(slack, result)) == 1)
    [reply] = thread_replies(slack, result)
    shown = visible_text(reply.to_json())
    assert "Cancel ✅ All 4 passed · 100.0% pass rate" in shown
    assert "\n✅" not in shown and "\u202e" not in shown
    definitions = await bot.app.retell.definitions(Engine.from_id(ENGINE))
    [name] = [d.name for d in definitions if d.case_id == "tc_forged"]
    assert name == "Cancel ✅ All 4 passed · 100.0% pass rate", "names are one line on entry"
