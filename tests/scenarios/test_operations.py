"""Operations: retried Slack requests, Retell and Slack budgets, metrics and run-tagged logs."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import Iterator
from urllib.parse import urlencode

import aiohttp
import pytest

from bot import logs
from bot.testing.retell import FakeRetell
from bot.testing.slack import FakeSlack, Message, SlackUser, signed_headers, slash_command_body
from tests.helpers import CHANNEL, ENGINE, USER, BotFactory, RunningBot, results, top_level

FOLLOW_UP = ("/v2/list-batch-tests", "/get-batch-test")


class LogWatch(logging.Handler):
    """Lets a test await a log line (the only trace some requests leave) instead of polling."""

    def __init__(self, fragment: str) -> None:
        super().__init__(logging.INFO)
        self.fragment = fragment
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.fragment in record.getMessage():
            self.seen.set()


@pytest.fixture
def handled_twice() -> Iterator[LogWatch]:
    """Set once the bot logs that a request it was given again had already been handled."""
    watch = LogWatch("was already handled")
    logger = logging.getLogger("bot")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(watch)
    yield watch
    logger.removeHandler(watch)
    logger.setLevel(level)


async def post_again(url: str, body: str, retry_num: int) -> int:
    """Deliver the same request body again, as Slack does when it retries (freshly signed)."""
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Retry-Num": str(retry_num),
        "X-Slack-Retry-Reason": "http_timeout",
        **signed_headers("secret", body),
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers) as r,
    ):
        return r.status


async def test_a_retried_slash_command_starts_one_batch(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, handled_twice: LogWatch
) -> None:
    body = slash_command_body(
        text=f"{ENGINE} tc_1 tc_2",
        user_id=USER,
        channel_id=CHANNEL,
        team_id=slack.team_id,
        response_url=slack.new_response_url(channel=CHANNEL),
    )
    statuses = await asyncio.gather(*(post_again(bot.events_url, body, n) for n in (0, 1, 2)))
    assert statuses == [200, 200, 200]
    await slack.wait_for(lambda: len(results(slack)) == 1)
    await asyncio.wait_for(handled_twice.seen.wait(), 10)
    assert retell.count("/create-batch-test") == 1
    assert len(top_level(slack)) == 1, "one status message, turned into one result"
    assert len(await bot.app.store.recent_runs()) == 1


async def test_a_replayed_rerun_press_starts_one_rerun(
    bot: RunningBot,
    slack: FakeSlack,
    retell: FakeRetell,
    user: SlackUser,
    handled_twice: LogWatch,
) -> None:
    await user.command(bot.events_url, f"{ENGINE} tc_1")
    await slack.wait_for(lambda: len(results(slack)) == 1)
    [result] = results(slack)
    payload = user.press_payload(action_id="rerun", value="1", message_ts=result.ts)
    body = urlencode({"payload": json.dumps(payload)})
    assert await post_again(bot.events_url, body, 0) == 200
    await slack.wait_for(lambda: len(results(slack)) == 2)
    assert await post_again(bot.events_url, body, 1) == 200  # the same press, replayed
    await asyncio.wait_for(handled_twice.seen.wait(), 10)
    assert retell.count("/create-batch-test") == 2, "the replayed press started a second rerun"


async def test_many_batches_of_one_engine_cost_one_list_call_per_follow_up(
    start_bot: BotFactory, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    # Held until all 30 are followed, then finished together: how long 30 starts take on a
    # loaded machine must not decide which follow-up sees which batch.
    retell.next_batch_durations = [600.0] * 30
    async with start_bot(max_runs_per_user_per_hour=0) as bot:
        for number in range(1, 31):
            await user.command(bot.events_url, f"{ENGINE} tc_{1 + number % 5}")
        await slack.wait_for(lambda: len(top_level(slack)) == 30)
        retell.requests.clear()
        for batch_id in retell.batches:
            retell.finish_now(batch_id)
        await slack.wait_for(lambda: len(results(slack)) == 30, timeout=20)
    lists = retell.count("/v2/list-batch-tests")
    gets = retell.count("/get-batch-test")
    checks = bot.app.metrics.follow_up_checks._value.get()
    assert lists >= 1
    assert gets <= 3, f"{gets} batches were checked one by one"
    assert checks / (lists + gets) >= 10, "each list call should refresh many batches"


async def test_follow_ups_stay_within_the_retell_budget_across_many_engines(
    start_bot: BotFactory, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    engines = [f"llm_budget_{n}" for n in range(12)]
    for engine in engines:
        retell.add_engine("retell-llm", engine)
        retell.add_definition(engine, f"tc_{engine}", "Case")
    retell.complete_never = True
    budget = 600.0  # follow-up requests a minute, for the 12 engines together: 10 a second

    def spent() -> int:
        return sum(retell.count(path) for path in FOLLOW_UP)

    async with start_bot(max_runs_per_user_per_hour=0, retell_requests_per_minute=budget) as bot:
        for engine in engines:
            await user.command(bot.events_url, f"{engine} tc_{engine}")
        await slack.wait_for(lambda: len(top_level(slack)) == len(engines))
        retell.requests.clear()
        started = time.monotonic()
        await retell.wait_for(lambda: spent() >= 3 * len(engines), timeout=15)
        elapsed = time.monotonic() - started
        assert bot.app.metrics.follow_up_checks._value.get() > 0
    allowed = budget / 60 * elapsed + len(engines)  # the budget, plus one check per engine
    assert spent() <= allowed, f"{spent()} requests in {elapsed:.1f}s; budget allows {allowed:.0f}"


async def test_metrics_count_runs_checks_requests_and_acks(
    bot: RunningBot, slack: FakeSlack, user: SlackUser
) -> None:
    await user.command(bot.events_url, f"{ENGINE} tc_1 tc_fail_1")
    await user.command(bot.events_url, "llm_unknown tc_1")
    await slack.wait_for(lambda: len(results(slack)) == 1)
    async with aiohttp.ClientSession() as session, session.get(f"{bot.url}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    samples = _samples(text)
    assert samples['retell_bot_runs_started_total{source="command"}'] == 1
    assert samples['retell_bot_runs_finished_total{state="complete"}'] == 1
    assert samples['retell_bot_runs_finished_total{state="failed"}'] == 1
    # The refused create, and the listing that would have named unknown test case ids.
    assert samples['retell_bot_retell_errors_total{kind="not_found"}'] == 2
    assert samples["retell_bot_follow_up_checks_total"] >= 1
    assert samples['retell_bot_retell_requests_total{call="create-batch-test",status="201"}'] == 1
    assert samples["retell_bot_ack_latency_seconds_count"] == 2


def mentions(slack: FakeSlack) -> list[Message]:
    return [m for m in slack.channel_messages(CHANNEL, include_replies=True) if m.is_reply]


def _samples(exposition: str) -> dict[str, float]:
    samples = {}
    for line in exposition.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The bot's own JSON log configuration, written to a buffer."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    buffer = io.StringIO()
    logs.configure("INFO", "json", secrets=["xoxb-test", "key_test"], stream=buffer)
    yield buffer
    root.handlers[:] = handlers
    root.setLevel(level)


async def test_json_log_lines_about_a_run_carry_its_run_and_batch_id(
    bot: RunningBot, slack: FakeSlack, user: SlackUser, json_log: io.StringIO
) -> None:
    await user.command(bot.events_url, f"{ENGINE} tc_1")
    await slack.wait_for(lambda: len(results(slack)) == 1)
    [run] = await bot.app.store.recent_runs()
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    about_run = [line for line in lines if f"run {run.id}:" in line["message"]]
    assert len(about_run) >= 2, "created and complete, at least"
    for line in about_run:
        assert line["run_id"] == run.id
        assert line["batch_id"] == run.batch_id


async def test_200_batches_in_one_workspace_stay_under_slacks_chat_update_limit(
    start_bot: BotFactory, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    """Slack's own Tier 3 limit and the bot's default allowance, with 200 status bars moving."""
    slack.limit_rate("chat.update", per_window=50, window_seconds=60)
    retell.set_batch_duration(60.0)  # a case every 12 s: they all keep moving during the test
    five_cases = f"{ENGINE} tc_1 tc_2 tc_3 tc_4 tc_5"
    async with start_bot(
        max_runs_per_user_per_hour=0, slack_edits_per_minute=45.0, follow_up_lease_seconds=15
    ) as bot:
        await asyncio.gather(*(user.command(bot.events_url, five_cases) for _ in range(200)))
        await slack.wait_for(lambda: len(top_level(slack)) == 200, timeout=30)
        coalesced = bot.app.metrics.status_edits_coalesced
        await slack.wait_for(lambda: coalesced._value.get() >= 200, timeout=30)
    assert slack.rate_limited("chat.update") == 0, "Slack answered chat.update with 429"
    assert 0 < slack.count("chat.update") <= 50


async def test_results_wait_for_the_edit_allowance_and_all_arrive_once(
    start_bot: BotFactory, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    """More results at once than the allowance takes: the rest are deferred, none is lost."""
    slack.limit_rate("chat.update", per_window=600, window_seconds=60)
    retell.set_batch_duration(1.0)
    # 90 starts at once in one event loop: a one-second claim (the suite's default, for fast
    # takeovers) can lapse under a busy machine's stalls, and each lapse costs a recovery.
    async with start_bot(
        max_runs_per_user_per_hour=0, slack_edits_per_minute=600.0, follow_up_lease_seconds=3
    ) as bot:
        await asyncio.gather(
            *(user.command(bot.events_url, f"{ENGINE} tc_{1 + n % 5}") for n in range(90))
        )
        await slack.wait_for(lambda: len(mentions(slack)) == 90, timeout=30)
    assert slack.rate_limited("chat.update") == 0
    assert len(results(slack)) == 90
    assert len(top_level(slack)) == 90


@pytest.mark.parametrize(
    "text",
    [
        f'schedule add "daily 09:00" {ENGINE} tc_1 name=Nightly',
        'schedule add-report "daily 09:00" 7',
    ],
    ids=["schedule add", "schedule add-report"],
)
async def test_a_replayed_schedule_add_adds_one_schedule(
    bot: RunningBot, slack: FakeSlack, handled_twice: LogWatch, text: str
) -> None:
    """Three deliveries of one request (Slack's retries, or a double press) add one schedule."""
    response_url = slack.new_response_url(channel=CHANNEL)
    body = slash_command_body(
        text=text,
        user_id=USER,
        channel_id=CHANNEL,
        team_id=slack.team_id,
        response_url=response_url,
    )
    statuses = await asyncio.gather(*(post_again(bot.events_url, body, n) for n in (0, 1, 2)))
    assert statuses == [200, 200, 200]
    await slack.wait_for(lambda: len(slack.responses_to(response_url)) == 3)
    await asyncio.wait_for(handled_twice.seen.wait(), 10)
    # One schedule; its id need not be 1: on PostgreSQL a delivery that lost the race on the
    # request key has used a sequence value before its insert was refused.
    [schedule] = await bot.app.store.schedules_in(slack.team_id, CHANNEL)
    assert len(await bot.app.scheduler.get_schedules()) == 1 + 1, "its firing and the sweep"
    for answer in slack.responses_to(response_url):
        assert f"Scheduled *#{schedule.id}" in str(answer), "every delivery is told of the one"


async def test_a_replayed_report_posts_one_digest(
    bot: RunningBot, slack: FakeSlack, handled_twice: LogWatch
) -> None:
    body = slash_command_body(
        text="report 7",
        user_id=USER,
        channel_id=CHANNEL,
        team_id=slack.team_id,
        response_url=slack.new_response_url(channel=CHANNEL),
    )
    assert await post_again(bot.events_url, body, 0) == 200
    await slack.wait_for(lambda: len(top_level(slack)) == 1)
    assert await post_again(bot.events_url, body, 1) == 200
    await asyncio.wait_for(handled_twice.seen.wait(), 10)
    assert len(top_level(slack)) == 1
