"""A Retell listing that never ends: every paginated read stops where the data must end.

The probe's case: `list-test-runs` kept answering `has_more` with a new (or the same)
`pagination_key`, and one Show failures press made 4,734 requests in 20 s without a word to
anyone. Now a batch's test runs stop at 1,000 (or on a key seen before), an engine's
definitions at 10,000, and the person who asked is told why.
"""

from __future__ import annotations

import pytest

from bot.retell import MAX_DEFINITIONS, MAX_TEST_RUNS, SMALLEST_PAGE
from bot.testing.retell import FakeRetell
from bot.testing.slack import FakeSlack, SlackUser

from ..helpers import ENGINE, RunningBot, button_value, results, visible_text

MAX_RUN_PAGES = MAX_TEST_RUNS // SMALLEST_PAGE + 1
MAX_DEFINITION_PAGES = MAX_DEFINITIONS // SMALLEST_PAGE + 1


def reads(retell: FakeRetell, prefix: str) -> int:
    return sum(1 for r in retell.requests if r.path.startswith(prefix))


@pytest.mark.parametrize("same_key", [False, True], ids=["new keys", "the same key"])
async def test_show_failures_on_an_endless_listing_stops_and_says_why(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser, same_key: bool
) -> None:
    retell.set_outcome("tc_2", "fail", "The agent hung up.")
    await user.command(bot.events_url, f"{ENGINE} tc_1 tc_2")
    await slack.wait_for(lambda: len(results(slack)) == 1)
    [result] = results(slack)
    run_id = button_value(result, "show_failures")
    assert run_id is not None

    retell.paginate_without_end("/v2/list-test-runs", same_key=same_key)
    before = reads(retell, "/v2/list-test-runs")
    press = await user.press(
        bot.events_url, action_id="show_failures", value=run_id, message_ts=result.ts
    )
    await slack.wait_for(lambda: bool(slack.responses_to(press.response_url)))

    [answer] = slack.responses_to(press.response_url)
    assert answer["response_type"] == "ephemeral"
    assert "never ended" in visible_text(answer)
    sent = reads(retell, "/v2/list-test-runs") - before
    assert sent == (2 if same_key else MAX_RUN_PAGES), "stopped at the repeated key / page bound"
    assert not slack.thread(result.channel, result.ts)[1:], "no half list was posted"

    # The mark is cleared: once Retell behaves again the same press lists the failures.
    retell.paginate_normally()
    await user.press(bot.events_url, action_id="show_failures", value=run_id, message_ts=result.ts)
    await slack.wait_for(
        lambda: any(
            "hung up" in visible_text(m.to_json()) for m in slack.thread(result.channel, result.ts)
        )
    )


@pytest.mark.parametrize("same_key", [False, True], ids=["new keys", "the same key"])
async def test_run_all_on_an_endless_definition_listing_creates_nothing_and_says_why(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser, same_key: bool
) -> None:
    retell.paginate_without_end("/v2/list-test-case-definitions", same_key=same_key)
    reply = await user.command(bot.events_url, f"{ENGINE} all")
    await slack.wait_for(lambda: bool(slack.responses_to(reply.response_url)))

    [answer] = slack.responses_to(reply.response_url)
    assert "never ended" in visible_text(answer)
    assert retell.count("/create-batch-test") == 0
    sent = reads(retell, "/v2/list-test-case-definitions")
    assert sent == (2 if same_key else MAX_DEFINITION_PAGES)
