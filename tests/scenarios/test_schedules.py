"""Schedules end to end: `<when>` forms, firing, missed firings, noise control, permissions.

Firing does not wait real minutes: a test moves a schedule's next fire time to "now" through
APScheduler's own data store (a controllable clock), and the real scheduler then fires it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import aiohttp
import attrs
import pytest
from apscheduler import AsyncScheduler, ConflictPolicy, ScheduleLookupError

from bot import blocks, history
from bot.chart import pass_rate_png
from bot.scheduling import build_scheduler, schedule_key
from bot.store import RunSchedule, ScheduleKind, Store, create_engine
from bot.testing.retell import FakeRetell
from bot.testing.slack import FakeSlack, SlackUser, block_kit_violation, signed_headers
from bot.when import WhenError, parse_when

from ..helpers import (
    CHANNEL,
    ENGINE,
    USER,
    BotFactory,
    FakeRun,
    RunningBot,
    done,
    results,
    top_level,
    visible_text,
)

FIFTEEN = timedelta(minutes=15)
OTHER = "U0002"
ADMIN = "U0ADMIN"


# -- <when>: every form, every malformed one, daylight saving ---------------------------------


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("hourly", "every hour, on the hour"),
        ("daily 09:00", "every day at 09:00"),
        ("weekdays 09:00", "every weekday at 09:00"),
        ("weekly mon 18:30", "every Monday at 18:30"),
        ("Weekly Friday 7:05", "every Friday at 07:05"),
        ("every 30m", "every 30 minutes"),
        ("every 2h", "every 2 hours"),
        ("0 9 * * mon-fri", "cron `0 9 * * mon-fri`"),
        ("*/30 8-18 * * *", "cron `*/30 8-18 * * *`"),
    ],
)
def test_every_when_form_parses_with_words_and_three_next_fires(text: str, words: str) -> None:
    when = parse_when(text, "Europe/Berlin", min_interval=FIFTEEN)
    assert when.words == words
    fires = when.next_fires()
    assert len(fires) == 3
    assert fires == sorted(fires) and len(set(fires)) == 3
    assert all(fire.tzinfo is not None and fire.utcoffset() is not None for fire in fires)
    assert all(str(fire.tzinfo) == "Europe/Berlin" for fire in fires)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "is not a schedule"),
        ("sometimes", "is not a schedule"),
        ("* * * *", "is not a schedule"),
        ("* * * * * *", "is not a schedule"),
        ("61 * * * *", "not a valid cron expression"),
        ("0 25 * * *", "not a valid cron expression"),
        ("0 9 * * funday", "not a valid cron expression"),
        ("0 0 30 2 *", "never fires"),
        ("0 0 31 4 *", "never fires"),
        ("*/5 * * * *", "shortest allowed recurrence is 15 minutes"),
        ("* * * * *", "shortest allowed recurrence is 15 minutes"),
        ("0,10 9 * * *", "would run every 10 minutes"),
        ("every 5m", "shortest allowed recurrence is 15 minutes"),
        ("every 0m", "takes 1 minute up to 7 days"),
        ("every 169h", "takes 1 minute up to 7 days"),
        ("every ten minutes", "write it like `every 30m`"),
        ("daily", "write it like `daily 09:00`"),
        ("daily 24:00", "is not a time of day"),
        ("daily 9", "is not a time of day"),
        ("weekdays 09:60", "is not a time of day"),
        ("weekly 09:00", "write it like `weekly mon 09:00`"),
        ("weekly funday 09:00", "is not a day of the week"),
        ("hourly 10", "is not a schedule"),
    ],
)
def test_malformed_when_is_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(WhenError) as refused:
        parse_when(text, "UTC", min_interval=FIFTEEN)
    assert reason in str(refused.value)


@pytest.mark.parametrize(
    ("timezone", "before_change", "utc_hours"),
    [
        # Berlin leaves CET (+1) for CEST (+2) on 29 March 2026 and comes back on 25 October.
        ("Europe/Berlin", datetime(2026, 3, 27, 12, tzinfo=UTC), [8, 7, 7, 7]),
        ("Europe/Berlin", datetime(2026, 10, 23, 12, tzinfo=UTC), [7, 8, 8, 8]),
        # New York leaves EST (-5) for EDT (-4) on 8 March 2026 and comes back on 1 November.
        ("America/New_York", datetime(2026, 3, 6, 18, tzinfo=UTC), [14, 13, 13, 13]),
        ("America/New_York", datetime(2026, 10, 30, 18, tzinfo=UTC), [13, 14, 14, 14]),
    ],
)
def test_next_fires_keep_the_local_time_across_daylight_saving(
    timezone: str, before_change: datetime, utc_hours: list[int]
) -> None:
    when = parse_when("daily 09:00", timezone, min_interval=FIFTEEN)
    fires = when.next_fires(4, after=before_change)
    assert [fire.astimezone(ZoneInfo(timezone)).hour for fire in fires] == [9, 9, 9, 9]
    assert [fire.astimezone(UTC).hour for fire in fires] == utc_hours
    days = [fire.date() for fire in fires]
    assert all(b - a == timedelta(days=1) for a, b in itertools.pairwise(days))


@pytest.mark.parametrize(
    ("text", "timezone", "after", "first"),
    [
        # 09:36 in Berlin: today's 09:00 is past, the first firing is tomorrow's.
        ("daily 09:00", "Europe/Berlin", datetime(2026, 12, 3, 8, 36, tzinfo=UTC), (4, 9)),
        ("0 9 * * *", "Europe/Berlin", datetime(2026, 12, 3, 8, 36, tzinfo=UTC), (4, 9)),
        # 03:36 in New York: today's 07:00 is still to come.
        ("daily 07:00", "America/New_York", datetime(2026, 12, 3, 8, 36, tzinfo=UTC), (3, 7)),
        ("weekdays 07:00", "America/New_York", datetime(2026, 12, 3, 8, 36, tzinfo=UTC), (3, 7)),
        ("0 7 * * *", "America/New_York", datetime(2026, 12, 3, 8, 36, tzinfo=UTC), (3, 7)),
    ],
)
def test_the_first_firing_is_the_next_local_time_after_now_in_any_zone(
    text: str, timezone: str, after: datetime, first: tuple[int, int]
) -> None:
    """APScheduler 4.0.0a6 read a UTC start time as local time: `daily 09:00` created at 09:36
    in Berlin fired at once (its 09:00 was "next"), and 07:00 in New York skipped a day."""
    [fire] = parse_when(text, timezone, min_interval=FIFTEEN).next_fires(1, after=after)
    assert fire > after
    local = fire.astimezone(ZoneInfo(timezone))
    assert (local.day, local.hour) == first


def test_a_cron_schedule_across_daylight_saving_is_not_refused_as_too_frequent() -> None:
    # 02:30 happens twice on 25 October in Berlin: APScheduler fires an hour apart, not "0 min".
    when = parse_when("30 2 * * *", "Europe/Berlin", min_interval=FIFTEEN)
    fires = when.next_fires(3, after=datetime(2026, 10, 23, 12, tzinfo=UTC))
    assert [fire.astimezone(UTC).hour for fire in fires][:2] == [0, 0]


# -- the rendering stays within Slack's limits ---------------------------------------------------


def entry(number: int, **changes: Any) -> blocks.ScheduleEntry:
    values: dict[str, Any] = {
        "id": number,
        "name": f"Nightly “regression” suite <!channel> number {number} " + "x" * 40,
        "kind": "run",
        "channel_id": CHANNEL,
        "user_id": USER,
        "engine": None,
        "tests": "all test cases (1000 when added)",
        "when": "every weekday at 09:00",
        "timezone": "America/New_York",
        "next_fire": datetime(2026, 11, 26, 14, tzinfo=UTC),
        "paused": number % 3 == 0,
        "notify": "failures",
        "mention": "<!subteam^S123>",
    }
    values.update(changes)
    return blocks.ScheduleEntry(**values)


def mrkdwn_texts(node: Any) -> list[str]:
    """Every mrkdwn text (where Slack would turn `<!channel>` into a mention)."""
    if isinstance(node, dict):
        own = [node["text"]] if node.get("type") == "mrkdwn" else []
        return own + [text for value in node.values() for text in mrkdwn_texts(value)]
    if isinstance(node, list):
        return [text for item in node for text in mrkdwn_texts(item)]
    return []


def test_a_list_of_100_schedules_fits_slack_in_five_messages() -> None:
    messages = blocks.schedule_list([entry(n) for n in range(1, 101)])
    assert len(messages) == 5
    for message in messages:
        assert block_kit_violation(message.text, message.blocks) is None
        assert not any("<!channel>" in text for text in mrkdwn_texts(message.blocks))
    shown = [b["block_id"] for m in messages for b in m.blocks if b.get("type") == "actions"]
    assert shown == [f"schedule-{n}" for n in range(1, 101)]
    first = messages[0].blocks[2]["elements"]
    assert [e["action_id"] for e in first] == ["schedule_run", "schedule_pause", "schedule_remove"]
    assert "Thu 26 Nov 2026 09:00 EST" in visible_text(messages[0].as_kwargs())


def test_the_home_tab_with_100_schedules_fits_in_one_view() -> None:
    view = blocks.home_view(
        [entry(n) for n in range(1, 101)], [], now=datetime(2026, 11, 25, tzinfo=UTC)
    )
    assert block_kit_violation(None, view["blocks"], max_blocks=100) is None
    assert "…and 70 more schedules" in json.dumps(view, ensure_ascii=False)


# -- over HTTP: adding, listing, firing -------------------------------------------------------


async def command(user: SlackUser, bot: RunningBot, slack: FakeSlack, text: str) -> str:
    """Type a command and return what the bot answered privately (ack and responses)."""
    reply = await user.command(bot.events_url, text)
    assert reply.status == 200
    await slack.wait_for(lambda: bool(slack.responses_to(reply.response_url)))
    return "\n".join(visible_text(body) for body in slack.responses_to(reply.response_url))


async def fire_now(
    scheduler: AsyncScheduler, schedule_id: int, *, at: datetime | None = None
) -> None:
    """The controllable clock: make schedule #id due now (or `at`), as if time had passed."""
    current = await scheduler.get_schedule(schedule_key(schedule_id))
    due = attrs.evolve(current, next_fire_time=at or datetime.now(UTC))
    await scheduler.data_store.add_schedule(due, ConflictPolicy.replace)


def schedule_runs(slack: FakeSlack, name: str) -> list[Any]:
    return [m for m in top_level(slack) if name in m.text]


async def test_schedule_add_confirms_the_next_three_runs_in_the_creators_time_zone(
    bot: RunningBot, slack: FakeSlack, user: SlackUser
) -> None:
    slack.add_user(USER, "alice", tz="America/New_York")
    said = await command(
        user, bot, slack, f'schedule add "weekdays 09:00" {ENGINE} all name=nightly'
    )
    assert "Scheduled *#1 · nightly*" in said
    assert "every weekday at 09:00 (America/New_York)" in said
    fires = {line for line in said.splitlines() if line.startswith("• ")}  # text and blocks
    assert len(fires) == 3 and all("09:00 E" in line for line in fires)  # EST or EDT
    [row] = await bot.app.store.schedules_in(slack.team_id, CHANNEL)
    assert (row.name, row.timezone, row.tests) == (
        "nightly",
        "America/New_York",
        {"ids": [], "names": [], "all": True},
    )
    assert row.case_count == 7
    scheduled = await bot.app.scheduler.get_schedule(schedule_key(row.id))
    assert scheduled.next_fire_time is not None
    assert scheduled.next_fire_time.astimezone(ZoneInfo("America/New_York")).hour == 9


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (f'schedule add "every 5m" {ENGINE} tc_1', "shortest allowed recurrence"),
        (f'schedule add "0 0 30 2 *" {ENGINE} tc_1', "never fires"),
        (f'schedule add "99 * * * *" {ENGINE} tc_1', "not a valid cron expression"),
        (f'schedule add "daily 09:00" {ENGINE} "No such case"', "No such case"),
        ('schedule add-report "every 1m" 7', "shortest allowed recurrence"),
    ],
)
async def test_a_bad_schedule_is_refused_and_creates_nothing(
    bot: RunningBot, slack: FakeSlack, user: SlackUser, text: str, reason: str
) -> None:
    said = await command(user, bot, slack, text)
    assert reason in said
    assert await bot.app.store.schedules_in(slack.team_id, CHANNEL) == []
    assert [s.id for s in await bot.app.scheduler.get_schedules()] == ["runs.sweep"]


async def test_a_firing_runs_the_suite_and_reports_like_a_manual_run_labelled_with_its_name(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    await command(user, bot, slack, f'schedule add "every 15m" {ENGINE} tc_1 tc_fail_1 name=Smoke')
    [row] = await bot.app.store.schedules_in(slack.team_id, CHANNEL)
    await fire_now(bot.app.scheduler, row.id)

    await slack.wait_for(lambda: len(results(slack)) == 1)
    [result] = results(slack)
    assert result.text.startswith("Smoke: Retell batch")
    for phrase in ("1 passed", "1 failed", "0 errored", "2 total"):
        assert phrase in result.text
    assert "Scheduled run “Smoke”" in visible_text(result.to_json())
    assert "ran late" not in visible_text(result.to_json())
    assert result.update_count >= 1, "a scheduled run updates its status message in place"
    [create] = [r for r in retell.requests if r.path == "/create-batch-test"]
    assert create.body["test_case_definition_ids"] == ["tc_1", "tc_fail_1"]
    fired = await bot.app.store.get_schedule(row.id)
    assert fired is not None and fired.last_fired_at is not None


async def test_a_firing_missed_while_the_bot_was_down_runs_once_and_says_it_ran_late(
    start_bot: BotFactory, slack: FakeSlack, retell: FakeRetell, user: SlackUser, database_url: str
) -> None:
    async with start_bot() as bot:
        await command(user, bot, slack, f'schedule add "every 15m" {ENGINE} tc_1 name=Late')
        [row] = await bot.app.store.schedules_in(slack.team_id, CHANNEL)
        when = parse_when(row.when_text, row.timezone, min_interval=FIFTEEN)
    # While no bot runs, two hours pass: eight slots of "every 15m" are missed. (The extra 7
    # minutes keep the next slot well clear of "now", so it cannot fire during the test.)
    store = Store(create_engine(database_url))
    scheduler = build_scheduler(store.engine)
    async with scheduler:
        trigger = when.trigger(start=datetime.now(UTC) - timedelta(hours=2, minutes=7))
        current = await scheduler.get_schedule(schedule_key(row.id))
        missed = attrs.evolve(current, trigger=trigger, next_fire_time=trigger.next())
        await scheduler.data_store.add_schedule(missed, ConflictPolicy.replace)
    await store.engine.dispose()

    async with start_bot() as bot:
        await slack.wait_for(lambda: len(results(slack)) == 1)
        [result] = results(slack)
        assert "ran late" in visible_text(result.to_json())
        # The scheduler has settled: no job is left and the next firing is in the future
        # again. Still one batch, not one per missed slot.
        await until(lambda: no_jobs(bot.app.scheduler))
        scheduled = await bot.app.scheduler.get_schedule(schedule_key(row.id))
        assert scheduled.next_fire_time is not None
        assert scheduled.next_fire_time > datetime.now(UTC)
        assert len(retell.batches) == 1


async def no_jobs(scheduler: AsyncScheduler) -> bool:
    return not await scheduler.get_jobs()


async def test_paused_and_removed_schedules_never_fire(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    for name in ("paused", "removed", "control"):
        await command(user, bot, slack, f'schedule add "every 15m" {ENGINE} tc_1 name={name}')
    paused, removed, control = await bot.app.store.schedules_in(slack.team_id, CHANNEL)
    assert "Paused schedule #1" in await command(user, bot, slack, f"schedule pause {paused.id}")
    assert "Removed schedule #2" in await command(user, bot, slack, f"schedule remove {removed.id}")
    with pytest.raises(ScheduleLookupError):
        await bot.app.scheduler.get_schedule(schedule_key(removed.id))

    # Make the paused one due too (its row still says paused), then let the control fire.
    await fire_now(bot.app.scheduler, paused.id)
    await fire_now(bot.app.scheduler, control.id)
    await bot.app.schedules.fire(removed.id)  # a stale job of a removed schedule: dropped
    await slack.wait_for(lambda: len(results(slack)) == 1)
    assert "control" in results(slack)[0].text
    assert len(retell.batches) == 1
    said = await command(user, bot, slack, f"schedule resume {paused.id}")
    assert "Resumed schedule #1" in said
    resumed = await bot.app.scheduler.get_schedule(schedule_key(paused.id))
    assert not resumed.paused and resumed.next_fire_time is not None
    assert resumed.next_fire_time > datetime.now(UTC), "a resumed schedule does not catch up"


async def test_only_the_creator_or_an_admin_may_remove_or_pause_a_schedule(
    start_bot: BotFactory, slack: FakeSlack, user: SlackUser
) -> None:
    other = SlackUser(slack=slack, user_id=OTHER, user_name="bob", channel_id=CHANNEL)
    admin = SlackUser(slack=slack, user_id=ADMIN, user_name="root", channel_id=CHANNEL)
    async with start_bot(admin_user_ids=ADMIN) as bot:
        await command(user, bot, slack, f'schedule add "daily 09:00" {ENGINE} tc_1 name=mine')
        for action in ("pause", "remove"):
            said = await command(other, bot, slack, f"schedule {action} 1")
            assert f"Only the schedule's creator or an admin can {action} schedule #1" in said
            # The creator and the admin are mentions, escaped once: never `&lt;@U…&gt;`.
            assert f"created by <@{USER}>" in said and f"<@{ADMIN}>" in said
            assert "&lt;@" not in said
        [row] = await bot.app.store.schedules_in(slack.team_id, CHANNEL)
        assert not row.paused
        assert "Paused schedule #1" in await command(admin, bot, slack, "schedule pause 1")
        assert "no schedule #7" in await command(user, bot, slack, "schedule remove 7")
        assert "Removed schedule #1" in await command(admin, bot, slack, "schedule remove 1")
        assert await bot.app.store.schedules_in(slack.team_id, CHANNEL) == []


async def test_schedule_list_and_its_buttons(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    await command(user, bot, slack, f'schedule add "weekly fri 17:00" {ENGINE} tc_1 name=Weekly')
    await command(user, bot, slack, 'schedule add-report "weekly mon 09:00" 14 name=Digest')
    listed = await command(user, bot, slack, "schedule list")
    assert "2 schedules in this channel" in listed
    assert "#1 · Weekly" in listed and "every Friday at 17:00 (Europe/Berlin)" in listed
    assert "#2 · Digest" in listed and "digest report of the last 14 days" in listed

    reply = await user.command(bot.events_url, "schedule list")
    await slack.wait_for(lambda: bool(slack.responses_to(reply.response_url)))
    [body] = slack.responses_to(reply.response_url)
    pause = next(
        element
        for block in body["blocks"]
        if block.get("block_id") == "schedule-1"
        for element in block["elements"]
        if element["action_id"] == "schedule_pause"
    )
    payload = user.press_payload(
        action_id=pause["action_id"], value=pause["value"], message_ts="1.0"
    )
    payload["actions"][0]["block_id"] = "schedule-1"
    pressed = await user.post_signed(
        bot.events_url, urlencode({"payload": json.dumps(payload)}), payload["response_url"]
    )
    assert pressed.status == 200
    await slack.wait_for(lambda: bool(slack.responses_to(payload["response_url"])))
    assert "Paused schedule #1" in visible_text(slack.responses_to(payload["response_url"])[0])

    run_now = user.press_payload(action_id="schedule_run", value="1", message_ts="1.0")
    await user.post_signed(
        bot.events_url, urlencode({"payload": json.dumps(run_now)}), run_now["response_url"]
    )
    await slack.wait_for(lambda: len(results(slack)) == 1)
    assert results(slack)[0].text.startswith("Weekly: ")


async def test_notify_failures_posts_one_quiet_line_when_all_passed_and_the_result_otherwise(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    await command(
        user,
        bot,
        slack,
        f'schedule add "daily 09:00" {ENGINE} tc_1 tc_2 name=Quiet notify=failures',
    )
    await command(user, bot, slack, "schedule run 1")
    await slack.wait_for(
        lambda: (
            len(top_level(slack)) == 1
            and "all 2 passed"
            in top_level(slack)[0].text + visible_text(top_level(slack)[0].to_json())
        )
    )
    [quiet] = top_level(slack)
    assert quiet.update_count == 0, "no status message was posted while it ran"
    assert not any(block["type"] == "actions" for block in quiet.blocks)
    assert "2 passed, 0 failed, 0 errored, 2 total" in quiet.text

    retell.set_outcome("tc_2", "fail", "The agent never offered a refund.")
    await command(user, bot, slack, "schedule run 1")
    await slack.wait_for(lambda: len(results(slack)) == 2)
    loud = top_level(slack)[1]
    assert "1 failed" in loud.text and any(b["type"] == "actions" for b in loud.blocks)
    assert "newly failing" in loud.text


async def test_notify_changes_stays_silent_when_nothing_changed_and_mentions_on_regression(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    await command(
        user,
        bot,
        slack,
        f'schedule add "daily 09:00" {ENGINE} tc_1 tc_2 name=Watchdog notify=changes '
        "mention=<!subteam^S0QA|@qa>",
    )
    await command(user, bot, slack, "schedule run 1")
    await slack.wait_for(lambda: len(results(slack)) == 1)  # a first run always reports
    await command(user, bot, slack, "schedule run 1")
    await _wait_reported(bot, count=2)
    assert len(top_level(slack)) == 1, "an unchanged result posts nothing"

    retell.set_outcome("tc_1", "fail", "Hung up on the caller.")
    await command(user, bot, slack, "schedule run 1")
    await slack.wait_for(lambda: len(results(slack)) == 2)
    regressed = results(slack)[1]
    await slack.wait_for(lambda: len(slack.thread(CHANNEL, regressed.ts)) == 1)
    [ping] = slack.thread(CHANNEL, regressed.ts)
    assert ping.text.startswith("<!subteam^S0QA> Watchdog regressed")
    assert "Case 1" in ping.text


async def _wait_reported(bot: RunningBot, *, count: int) -> None:
    async def reported() -> bool:
        runs = await bot.app.store.recent_runs()
        return sum(1 for run in runs if run.reported_at is not None) >= count

    await until(reported)


async def until(condition: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Await a condition only the database can answer (the fakes have nothing to wait on)."""
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, f"{condition} still false after {timeout}s"
        await asyncio.sleep(0.02)


async def test_every_result_names_the_cases_newly_failing_and_fixed_since_the_last_run(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    retell.set_outcome("tc_2", "fail", "Wrong refund amount.")
    await user.command(bot.events_url, f"{ENGINE} tc_1 tc_2 tc_3")
    await slack.wait_for(lambda: len(results(slack)) == 1)
    first = visible_text(results(slack)[0].to_json())
    assert "No previous run of this suite in this channel" in first

    retell.set_outcome("tc_2", "pass")
    retell.set_outcome("tc_3", "error", "Call dropped.")
    await user.command(bot.events_url, f"{ENGINE} tc_3,tc_2 tc_1")  # same suite, other order
    await slack.wait_for(lambda: len(results(slack)) == 2)
    second = results(slack)[1]
    shown = visible_text(second.to_json())
    assert "Newly failing (1): Case 3" in shown
    assert "Fixed (1): Case 2" in shown
    assert "Pass rate 66.7% → 66.7%" in shown
    assert "1 newly failing" in second.text

    await user.command(bot.events_url, f"{ENGINE} tc_1 tc_2")  # another suite: no comparison
    await slack.wait_for(lambda: len(results(slack)) == 3)
    assert "No previous run of this suite" in visible_text(results(slack)[2].to_json())


async def test_report_posts_the_digest_and_uploads_its_chart(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    retell.set_outcome("tc_2", "fail", "Wrong refund amount.")
    for finished in (1, 2):
        await user.command(bot.events_url, f"{ENGINE} tc_1 tc_2")
        await slack.wait_for(lambda finished=finished: len(results(slack)) == finished)  # type: ignore[misc]
    reply = await user.command(bot.events_url, "report 7")
    assert "Posting the digest of the last 7 days" in reply.text
    await slack.wait_for(lambda: any(u.completed for u in slack.uploads.values()))
    [digest] = [m for m in top_level(slack) if m.text.startswith("📊")]
    shown = visible_text(digest.to_json())
    assert "*2 runs* · *50.0%* pass rate" in shown
    assert "Case 2: failed 2 of 2" in shown
    [upload] = slack.uploads.values()
    assert upload.channel_id == CHANNEL and upload.data is not None
    assert upload.data.startswith(b"\x89PNG"), "the chart is a PNG image"
    assert upload.filename == "pass-rate.png"


async def test_a_report_schedule_posts_the_digest_by_itself(
    bot: RunningBot, slack: FakeSlack, user: SlackUser
) -> None:
    await command(user, bot, slack, 'schedule add-report "daily 18:00" 30 name=Monthly')
    await fire_now(bot.app.scheduler, 1)
    await slack.wait_for(lambda: any(m.text.startswith("📊 Monthly") for m in top_level(slack)))
    assert "no finished runs" in top_level(slack)[-1].text


async def test_the_home_tab_shows_your_schedules_and_latest_runs_with_buttons(
    bot: RunningBot, slack: FakeSlack, user: SlackUser
) -> None:
    await user.command(bot.events_url, f"{ENGINE} tc_1")
    await slack.wait_for(lambda: len(results(slack)) == 1)
    store = bot.app.store
    for number in range(100):
        await store.add_schedule(
            RunSchedule(
                team_id=slack.team_id,
                channel_id=CHANNEL,
                user_id=USER,
                kind=ScheduleKind.RUN.value,
                name=f"Suite {number} " + "ü" * 70,
                when_text="daily 09:00",
                timezone="Asia/Kolkata",
                engine_type="retell-llm",
                engine_id=ENGINE,
                tests={"ids": ["tc_1"], "names": [], "all": False},
                case_count=1,
                notify="always",
                paused=False,
                created_at=datetime.now(UTC),
            )
        )
    await open_home(bot, slack, USER)
    await slack.wait_for(lambda: USER in slack.home_views)
    view = slack.home_views[USER]
    shown = json.dumps(view, ensure_ascii=False)
    assert "Your schedules* (100)" in shown and "…and 70 more schedules" in shown
    assert "Latest runs in your channels" in shown and ENGINE in shown
    assert len(view["blocks"]) <= 100

    # A button on the Home tab acts, then redraws the tab.
    press = user.press_payload(action_id="schedule_pause", value="1", message_ts="1.0")
    press["container"] = {"type": "view", "view_id": view["id"]}
    press["view"] = {"id": view["id"], "type": "home"}
    del press["channel"], press["response_url"]
    previous = slack.home_views[USER]
    await user.post_signed(bot.events_url, urlencode({"payload": json.dumps(press)}))
    await slack.wait_for(lambda: slack.home_views[USER] is not previous)
    assert "⏸️ paused" in json.dumps(slack.home_views[USER], ensure_ascii=False)


async def open_home(bot: RunningBot, slack: FakeSlack, user_id: str) -> None:
    """Slack's `app_home_opened` event, signed, as the Events API POSTs it."""
    body = json.dumps(
        {
            "type": "event_callback",
            "token": "unused",
            "team_id": slack.team_id,
            "api_app_id": slack.app_id,
            "event": {
                "type": "app_home_opened",
                "user": user_id,
                "channel": "D0001",
                "tab": "home",
            },
            "event_id": f"Ev{time.time_ns()}",
            "event_time": int(time.time()),
        }
    )
    headers = {"Content-Type": "application/json", **signed_headers(slack.signing_secret, body)}
    async with (
        aiohttp.ClientSession() as session,
        session.post(bot.events_url, data=body.encode(), headers=headers) as response,
    ):
        assert response.status == 200


def test_digest_figures_from_a_fixture_of_runs() -> None:
    until = datetime(2026, 11, 25, 12, tzinfo=UTC)

    def run(days_ago: float, passed: int, total: int, minutes: int, **more: Any) -> FakeRun:
        finished = until - timedelta(days=days_ago)
        return done(
            passed=passed,
            failed=total - passed,
            errored=0,
            total=total,
            finished_at=finished,
            duration=timedelta(minutes=minutes),
            **more,
        )

    this_week = [
        run(0.1, 9, 10, 4, id=1),
        run(1.2, 8, 10, 12, id=2, label="nightly"),
        run(1.3, 10, 10, 3, id=3),
        run(6.5, 5, 10, 30, id=4, state="timed_out"),
    ]
    week_before = [run(8, 10, 10, 5, id=5), run(9, 10, 10, 5, id=6)]
    failing = [("Refund request", 3, 4), ("Angry caller", 1, 4)]
    digest = history.digest(7, until, this_week, week_before, failing)

    assert (digest.runs, digest.passed, digest.total, digest.timed_out) == (4, 32, 40, 1)
    assert digest.pass_rate == pytest.approx(80.0)
    assert digest.trend == pytest.approx(-20.0)
    assert [r.id for r in digest.slowest] == [4, 2, 1, 3]
    assert len(digest.daily) == 8 and digest.daily[-1] == (until.date(), 90.0)
    assert dict(digest.daily)[(until - timedelta(days=1.2)).date()] == pytest.approx(90.0)
    assert sum(rate is None for _, rate in digest.daily) == 5
    message = blocks.digest_message(digest)
    shown = visible_text(message.as_kwargs())
    assert "*4 runs* · *80.0%* pass rate (32 of 40 test cases passed)" in shown
    assert "📉 -20.0 pts vs the period before (100.0%)" in shown
    assert "Refund request: failed 3 of 4" in shown
    assert "run #4 · `llm_abc@3` · 30m 00s" in shown
    assert "1 run timed out" in shown
    assert block_kit_violation(message.text, message.blocks) is None
    png = pass_rate_png(digest, title="Pass rate")
    assert png.startswith(b"\x89PNG") and len(png) > 5_000


def test_comparison_of_per_case_results() -> None:
    @dataclass
    class Case:
        case_id: str
        name: str
        status: str

    before = [Case("a", "Alpha", "pass"), Case("b", "Beta", "fail"), Case("c", "Gamma", "error")]
    now = [Case("a", "Alpha", "fail"), Case("b", "Beta", "pass"), Case("c", "Gamma", "error")]
    previous = done(passed=1, failed=1, errored=1, total=3)
    comparison = history.compare(previous, now, before)
    assert comparison.newly_failing == ("Alpha",) and comparison.fixed == ("Beta",)
    assert comparison.previous_pass_rate == pytest.approx(100 / 3)
    current = done(passed=1, failed=1, errored=1, total=3)
    assert history.regressed(current, comparison)
    assert history.changed(current, previous, comparison)
    same = history.compare(previous, before, before)
    assert not history.regressed(previous, same) and not history.changed(previous, previous, same)
    assert history.compare(None, now, ()).previous_pass_rate is None


async def test_a_firing_whose_batch_cannot_be_created_says_why_in_the_channel(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    await command(user, bot, slack, f'schedule add "every 15m" {ENGINE} tc_1 name=Broken')
    retell.fail_next("/create-batch-test", 404, message="Test case definition tc_1 not found.")
    await fire_now(bot.app.scheduler, 1)
    await slack.wait_for(lambda: bool(top_level(slack)))
    [notice] = top_level(slack)
    assert "Couldn't start the Retell batch test" in visible_text(notice.to_json())
    assert "tc_1 not found" in visible_text(notice.to_json())
    assert not retell.batches, "nothing was created"
