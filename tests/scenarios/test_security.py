"""Hostile input and secrets (issue 8): the parser never raises, no secret ever leaves the bot."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import make_url

from bot import blocks, logs
from bot.application import Application
from bot.commands import CommandError, parse
from bot.testing.retell import FakeRetell
from bot.testing.slack import FakeSlack, SlackUser
from bot.web import start_http

from ..helpers import (
    CHANNEL,
    COMMAND_TYPES,
    ENGINE,
    FRAGMENTS,
    USER,
    BotFactory,
    assert_safe,
    button_value,
    results,
    settings_for,
    visible_text,
)

# -- the parser, under 10,000 hostile texts --------------------------------------------------------

SLACK_ESCAPES = [
    "<@U0001>",
    "<@U0001|alice>",
    "<#C0001|general>",
    "<!channel>",
    "<!here>",
    "<!subteam^S1|@team>",
    "<https://evil.example|click>",
    "<mailto:a@b.c>",
]
CONTROL = st.characters(min_codepoint=0, max_codepoint=31) | st.sampled_from("\x7f\u200b\u202e")
HOSTILE = st.one_of(
    st.text(max_size=300),  # any unicode, surrogates excluded by hypothesis
    st.text(CONTROL, max_size=50),
    st.lists(st.sampled_from([*FRAGMENTS, *SLACK_ESCAPES]), max_size=40).map("".join),
    st.lists(st.sampled_from([*FRAGMENTS, *SLACK_ESCAPES]), max_size=40).map(" ".join),
    st.builds(
        lambda head, body, size: (head + body * (4000 // max(len(body), 1) + 1))[:size],
        st.sampled_from(["", "llm_abc ", 'schedule add "', "watch ", "status ", "report "]),
        st.sampled_from(['"', "'", "\u201c", "<", "a,", "tc_1 ", "é", "🎉", "<!channel>"]),
        st.integers(min_value=3990, max_value=4000),
    ),
)


@settings(
    max_examples=10_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(HOSTILE)
def test_10000_hostile_command_texts_each_get_a_request_or_a_safe_error(text: str) -> None:
    result = parse(text)
    assert isinstance(result, (CommandError, *COMMAND_TYPES))
    if isinstance(result, CommandError):
        assert_safe(result)
        message = blocks.command_error(result)  # what the user would see
        assert "<!" not in message.text and "<@" not in message.text


# -- no secret in any log line or Slack message, the whole flow at DEBUG ---------------------------

BOT_TOKEN = "xoxb-SECRET-bot-token-4711"
SIGNING_SECRET = "SECRET-signing-secret-0815"
RETELL_KEY = "key_SECRET_retell_2342"
DB_PASSWORD = "SECRET-db-password-1234"


@pytest.fixture
def debug_log() -> Iterator[io.StringIO]:
    """The bot's own logging set-up at DEBUG, as `LOG_LEVEL=DEBUG` configures it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    buffer = io.StringIO()
    secrets = [BOT_TOKEN, SIGNING_SECRET, RETELL_KEY, DB_PASSWORD]
    logs.configure("DEBUG", "text", secrets=secrets, stream=buffer)
    yield buffer
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def secret_database_url(database_url: str) -> str:
    """The test database, reached with a password (PostgreSQL's trust auth accepts any)."""
    if not database_url.startswith("postgresql"):
        return database_url
    return make_url(database_url).set(password=DB_PASSWORD).render_as_string(hide_password=False)


@pytest.fixture
async def world() -> AsyncIterator[tuple[FakeSlack, FakeRetell]]:
    async with (
        FakeSlack(bot_token=BOT_TOKEN, signing_secret=SIGNING_SECRET) as slack,
        FakeRetell(api_key=RETELL_KEY, batch_seconds=0.3) as retell,
    ):
        retell.add_engine("retell-llm", ENGINE)
        retell.add_definition(ENGINE, "tc_1", "Case 1")
        retell.add_definition(ENGINE, "tc_fail_1", "Refund request")
        retell.set_outcome("tc_fail_1", "fail", f"The agent said {BOT_TOKEN[:4]}… and hung up.")
        yield slack, retell


async def test_no_secret_in_any_log_line_or_slack_message_at_debug(
    world: tuple[FakeSlack, FakeRetell], secret_database_url: str, debug_log: io.StringIO
) -> None:
    slack, retell = world
    settings = settings_for(
        slack,
        retell,
        secret_database_url,
        slack_bot_token=BOT_TOKEN,
        slack_signing_secret=SIGNING_SECRET,
        retell_api_key=RETELL_KEY,
        log_level="DEBUG",
    )
    user = SlackUser(slack=slack, user_id=USER, user_name="alice", channel_id=CHANNEL)
    app = Application.build(settings)
    async with app.running():
        runner, port = await start_http(app, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{port}/slack/events"
        try:
            await user.command(url, f"{ENGINE} tc_1 tc_fail_1")
            await slack.wait_for(lambda: len(results(slack)) == 1)
            [result] = results(slack)
            run_id = button_value(result, "show_failures")
            assert run_id is not None
            await user.press(url, action_id="show_failures", value=run_id, message_ts=result.ts)
            await user.press(url, action_id="rerun_failed", value=run_id, message_ts=result.ts)
            await slack.wait_for(lambda: len(results(slack)) == 2)
            await user.command(url, "status")
            retell.fail_next("/create-batch-test", 401)  # a refused key is explained...
            refused = await user.command(url, f"{ENGINE} tc_1")
            await slack.wait_for(lambda: bool(slack.responses_to(refused.response_url)))
            await user.command(url, "nonsense <!channel>")
        finally:
            await runner.cleanup()

    seen = [debug_log.getvalue()]
    seen += [f"{m.text} {m.blocks}" for m in slack.messages]
    seen += [f"{e.text} {e.blocks}" for e in slack.ephemerals]
    seen += [str(reply) for replies in slack.responses.values() for reply in replies]
    everything = "\n".join(seen)
    assert "DEBUG" in seen[0], "the log was at DEBUG"
    assert "RETELL_API_KEY" in everything, "...and named, never shown"
    for secret in (BOT_TOKEN, SIGNING_SECRET, RETELL_KEY, DB_PASSWORD):
        assert secret not in everything, f"{secret[:12]}… leaked"


async def test_a_rerun_press_is_authorized_like_a_command(
    start_bot: BotFactory, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    """Someone outside ALLOWED_USER_IDS presses Rerun on a result they can see: refused."""
    outsider = SlackUser(slack=slack, user_id="U0OUTSIDE", user_name="eve", channel_id=CHANNEL)
    async with start_bot(allowed_user_ids=USER, admin_user_ids="UADMIN") as bot:
        await user.command(bot.events_url, f"{ENGINE} tc_1")
        await slack.wait_for(lambda: len(results(slack)) == 1)
        [result] = results(slack)
        run_id = button_value(result, "rerun")
        assert run_id is not None
        press = await outsider.press(
            bot.events_url, action_id="rerun", value=run_id, message_ts=result.ts
        )
        await slack.wait_for(lambda: bool(slack.responses_to(press.response_url)))
    [answer] = slack.responses_to(press.response_url)
    assert answer["response_type"] == "ephemeral"
    assert "not on the list" in visible_text(answer) and "<@UADMIN>" in visible_text(answer)
    assert retell.count("/create-batch-test") == 1, "the press started nothing"


# -- text from Retell in text-format logs: no forged lines, no terminal escapes --------------------

FORGED = "2026-12-03 08:00:00,000 ERROR bot.runs: run 1: forged"


async def test_retells_text_cannot_forge_log_lines_or_colour_the_terminal(
    start_bot: BotFactory, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    buffer = io.StringIO()
    logs.configure("INFO", "text", stream=buffer)
    try:
        retell.fail_next(
            "/create-batch-test", 400, message=f"bad engine\n{FORGED}\x1b[31m red \u202eevil"
        )
        async with start_bot() as bot:
            reply = await user.command(bot.events_url, f"{ENGINE} tc_1")
            await slack.wait_for(lambda: bool(slack.responses_to(reply.response_url)))
            try:
                raise RuntimeError(f"a traceback\n{FORGED}")
            except RuntimeError:
                logging.getLogger("bot.test").exception("failed")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    lines = buffer.getvalue().splitlines()
    assert not [line for line in lines if line.startswith("2026-12-03 08:00:00")], "a forged line"
    [created] = [line for line in lines if "batch not created" in line]
    assert f"bad engine\\n{FORGED}\\x1b[31m red \\u202eevil" in created
    assert "\x1b" not in buffer.getvalue() and "\u202e" not in buffer.getvalue()
    traceback = lines[lines.index(next(line for line in lines if line.endswith(": failed"))) + 1 :]
    assert traceback[0] == "    Traceback (most recent call last):"
    assert f"    {FORGED}" in traceback, "a traceback's lines stay indented under their record"
