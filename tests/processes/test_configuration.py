"""Configuration the way operators set it: environment variables and `.env`, into a real process.

Building `Settings(...)` with keyword arguments skips what pydantic-settings does to environment
values (it once JSON-decoded `ALLOWED_USER_IDS=U1,U2` and refused it), so every variable of
README's configuration table is set here in the forms README documents, read back from
`retell-bot config --json` in a fresh process, and the access lists are also checked end to end
against a started `retell-bot serve`.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from bot.testing.process import BotProcess
from bot.testing.retell import FakeRetell
from bot.testing.slack import FakeSlack, SlackUser

from ..bot_processes import RETELL_BOT, log_tail, process_environment, run_cli, scrubbed_environment
from ..helpers import CHANNEL, ENGINE, USER, visible_text

README = Path(__file__).parents[2] / "README.md"

# Every variable of README's table, in a documented form, and the value `serve` must then use.
DOCUMENTED: dict[str, tuple[str, Any]] = {
    "SLACK_BOT_TOKEN": ("xoxb-1-2-3", "(set)"),
    "SLACK_SIGNING_SECRET": ("8f742231b10e8888abcd99yyyzzz85a5", "(set)"),
    "SLACK_API_URL": ("https://slack-gov.com/api", "https://slack-gov.com/api/"),
    "RETELL_API_KEY": ("key_0123456789", "(set)"),
    "RETELL_BASE_URL": ("https://retell.example.test", "https://retell.example.test"),
    "RETELL_TIMEOUT_SECONDS": ("12.5", 12.5),
    "RETELL_MAX_RETRIES": ("2", 2),
    "DATABASE_URL": ("postgres://bot:pw@db:5432/app", "postgres://bot:***@db:5432/app"),
    "SQLITE_BUSY_TIMEOUT_SECONDS": ("5", 5.0),
    "PORT": ("8080", 8080),
    "POLL_INITIAL_SECONDS": ("0.5", 0.5),
    "POLL_MAX_SECONDS": ("30", 30.0),
    "BATCH_TIMEOUT_MINUTES": ("60", 60.0),
    "FOLLOW_UP_LEASE_SECONDS": ("20", 20.0),
    "RETELL_REQUESTS_PER_MINUTE": ("120", 120.0),
    "SLACK_EDITS_PER_MINUTE": ("40", 40.0),
    "SLACK_POSTS_PER_MINUTE": ("30", 30.0),
    "SCHEDULE_MIN_INTERVAL_MINUTES": ("5", 5.0),
    "ALLOWED_USER_IDS": ("U1,U2", ["U1", "U2"]),
    "ALLOWED_CHANNEL_IDS": ("C1, C2 ,", ["C1", "C2"]),
    "ADMIN_USER_IDS": ("UADMIN", ["UADMIN"]),
    "MAX_CASES_PER_RUN": ("100", 100),
    "MAX_RUNS_PER_USER_PER_HOUR": ("5", 5),
    "METRICS_TOKEN": ("metrics-token-123", "(set)"),
    "LOG_LEVEL": ("debug", "DEBUG"),
    "LOG_FORMAT": ("JSON", "json"),
}
# Documented, but set in a test of its own: with it the bot is in Socket Mode.
SOCKET_MODE = {"SLACK_APP_TOKEN": ("xapp-1-A1-1-abc", "(set)")}
# Many workspaces (SPEC §10): with these and no SLACK_BOT_TOKEN the bot is a distributed app.
FERNET_KEYS = (
    "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=",
    "8zK2yq3dDNsP6fXvX0S0jLcnZ0i7xqkBv3b7p9PAZ5Q=",
)
DISTRIBUTION: dict[str, tuple[str, Any]] = {
    "SLACK_CLIENT_ID": ("1234.5678", "1234.5678"),
    "SLACK_CLIENT_SECRET": ("client-secret-9f1e", "(set)"),
    "SLACK_SCOPES": ("commands, chat:write", ["chat:write", "commands"]),
    "SLACK_STATE_SECRET": ("state-secret-77a2", "(set)"),
    "SLACK_REDIRECT_URI": (
        "https://bot.example.test/slack/oauth_redirect",
        "https://bot.example.test/slack/oauth_redirect",
    ),
    "ENCRYPTION_KEYS": (",".join(FERNET_KEYS), "(2 set)"),
}
REQUIRED = ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "RETELL_API_KEY")


def readme_variables() -> set[str]:
    """The variables named in the first column of README's `## Configuration` table."""
    section = README.read_text().split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`([A-Z][A-Z_]+)`", row.split("|")[1])}


def test_every_variable_of_the_readme_is_tested_here() -> None:
    assert readme_variables() == set(DOCUMENTED) | set(SOCKET_MODE) | set(DISTRIBUTION)


async def config_of(tmp_path: Path, env: dict[str, str], dotenv: str | None = None) -> Any:
    """`retell-bot config --json` run in `tmp_path` (with `dotenv` as its `.env`)."""
    if dotenv is not None:
        (tmp_path / ".env").write_text(dotenv)
    code, out, err = await run_cli(
        str(RETELL_BOT), "config", "--json", env=scrubbed_environment(**env), cwd=tmp_path
    )
    assert code == 0, err
    return json.loads(out)


async def test_every_documented_variable_is_read_from_the_environment(tmp_path: Path) -> None:
    shown = await config_of(tmp_path, {name: form for name, (form, _) in DOCUMENTED.items()})
    assert {name: shown[name] for name in DOCUMENTED} == {
        name: used for name, (_, used) in DOCUMENTED.items()
    }
    assert shown["SLACK_APP_TOKEN"] is None


async def test_every_documented_variable_is_read_from_a_dotenv_file(tmp_path: Path) -> None:
    """`.env` as people write it: quoted and unquoted values, comments, `export`."""
    lines = ["# the bot's configuration"]
    for number, (name, (form, _)) in enumerate(DOCUMENTED.items()):
        quoted = f'"{form}"' if number % 2 else form
        lines.append(f"export {name}={quoted}" if number % 3 == 0 else f"{name}={quoted}")
    shown = await config_of(tmp_path, {}, dotenv="\n".join(lines) + "\n")
    assert {name: shown[name] for name in DOCUMENTED} == {
        name: used for name, (_, used) in DOCUMENTED.items()
    }


async def test_socket_mode_needs_no_signing_secret(tmp_path: Path) -> None:
    env = {"SLACK_BOT_TOKEN": "xoxb-1", "RETELL_API_KEY": "key_1"}
    shown = await config_of(tmp_path, {**env, "SLACK_APP_TOKEN": SOCKET_MODE["SLACK_APP_TOKEN"][0]})
    assert shown["SLACK_APP_TOKEN"] == "(set)"
    assert shown["SLACK_SIGNING_SECRET"] is None


@pytest.mark.parametrize(
    ("form", "used"),
    [
        ("U1,U2", ["U1", "U2"]),
        ("U1, U2", ["U1", "U2"]),
        (" U1 ,U2,, ", ["U1", "U2"]),
        ("U1", ["U1"]),
        ('["U1","U2"]', ["U1", "U2"]),
        ("", []),
    ],
)
async def test_id_lists_in_every_documented_form(
    tmp_path: Path, form: str, used: list[str]
) -> None:
    required = {name: DOCUMENTED[name][0] for name in REQUIRED}
    lists = ("ALLOWED_USER_IDS", "ALLOWED_CHANNEL_IDS", "ADMIN_USER_IDS")
    shown = await config_of(tmp_path, {**required, **dict.fromkeys(lists, form)})
    assert [shown[name] for name in lists] == [used] * 3


async def test_empty_values_mean_the_defaults(tmp_path: Path) -> None:
    """A PaaS form or a `.env` template often leaves a variable set but empty."""
    required = {name: DOCUMENTED[name][0] for name in REQUIRED}
    optional = {name: "" for name in DOCUMENTED if name not in REQUIRED}
    shown = await config_of(tmp_path, {**required, **optional})
    assert shown["PORT"] == 3000
    assert shown["POLL_INITIAL_SECONDS"] == 10.0
    assert shown["DATABASE_URL"] == "sqlite:///./retell-bot.db"
    assert shown["ALLOWED_USER_IDS"] == []
    assert shown["METRICS_TOKEN"] is None
    assert shown["LOG_LEVEL"] == "INFO"


async def test_the_environment_wins_over_dotenv(tmp_path: Path) -> None:
    required = {name: DOCUMENTED[name][0] for name in REQUIRED}
    shown = await config_of(
        tmp_path, {**required, "PORT": "4000"}, dotenv="PORT=5000\nPOLL_MAX_SECONDS=9\n"
    )
    assert (shown["PORT"], shown["POLL_MAX_SECONDS"]) == (4000, 9.0)


async def test_a_bad_value_stops_config_with_one_line_naming_it(tmp_path: Path) -> None:
    required = {name: DOCUMENTED[name][0] for name in REQUIRED}
    code, out, err = await run_cli(
        str(RETELL_BOT),
        "config",
        env=scrubbed_environment(**required, PORT="eighty", LOG_FORMAT="xml"),
        cwd=tmp_path,
    )
    assert code == 2 and not out
    lines = err.strip().splitlines()
    assert len(lines) == 2, err
    assert lines[0].startswith("retell-bot: PORT:") and "eighty" not in lines[0]
    assert lines[1].startswith("retell-bot: LOG_FORMAT:")


async def test_access_lists_from_dotenv_hold_in_a_started_bot(
    slack: FakeSlack, retell: FakeRetell, tmp_path: Path
) -> None:
    """The probe's case: `ALLOWED_USER_IDS=U1, U2` once stopped the bot at start."""
    (tmp_path / ".env").write_text(f'ALLOWED_USER_IDS="{USER}, U0002"\nADMIN_USER_IDS=UADMIN\n')
    environment = process_environment(slack, retell, f"sqlite:///{tmp_path / 'bot.db'}")
    bot = BotProcess(environment, log_path=tmp_path / "bot.log", cwd=tmp_path)
    allowed = SlackUser(slack=slack, user_id=USER, user_name="alice", channel_id=CHANNEL)
    outsider = SlackUser(slack=slack, user_id="U0EVE", user_name="eve", channel_id=CHANNEL)
    try:
        await bot.start()
        refused = await outsider.command(bot.events_url, f"{ENGINE} tc_1")
        accepted = await allowed.command(bot.events_url, f"{ENGINE} tc_1")
        await retell.wait_for(lambda: retell.count("/create-batch-test") == 1)
    except BaseException as exc:
        exc.add_note(log_tail(tmp_path / "bot.log"))
        raise
    finally:
        await bot.stop()
    assert refused.status == 200 and "not on the list" in refused.text
    assert "<@UADMIN>" in visible_text(refused.json())
    assert "Starting a Retell batch test" in accepted.text


async def test_many_workspaces_are_configured_from_the_environment_and_dotenv(
    tmp_path: Path,
) -> None:
    """No SLACK_BOT_TOKEN, the OAuth app's id and secret: the documented forms, read back."""
    given = {name: form for name, (form, _) in DISTRIBUTION.items()}
    secret = {"SLACK_SIGNING_SECRET": DOCUMENTED["SLACK_SIGNING_SECRET"][0]}
    half = dict(list(given.items())[:3])
    (tmp_path / ".env").write_text(
        "".join(f'{k}="{v}"\n' for k, v in given.items() if k not in half)
    )
    shown = await config_of(tmp_path, {**half, **secret})
    assert {name: shown[name] for name in DISTRIBUTION} == {
        name: used for name, (_, used) in DISTRIBUTION.items()
    }
    assert shown["SLACK_BOT_TOKEN"] is None and shown["RETELL_API_KEY"] is None


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        ({"SLACK_CLIENT_ID": "1.2", "ENCRYPTION_KEYS": FERNET_KEYS[0]}, "SLACK_CLIENT_SECRET is"),
        ({"SLACK_CLIENT_ID": "1.2", "SLACK_CLIENT_SECRET": "s3cr3t-x"}, "ENCRYPTION_KEYS"),
        (
            {
                "SLACK_CLIENT_ID": "1.2",
                "SLACK_CLIENT_SECRET": "s3cr3t-x",
                "ENCRYPTION_KEYS": "k-x1",
            },
            "not a Fernet key",
        ),
    ],
)
async def test_many_workspaces_with_a_setting_missing_or_wrong_say_which(
    tmp_path: Path, given: dict[str, str], problem: str
) -> None:
    env = scrubbed_environment(**given, SLACK_SIGNING_SECRET="sig")
    code, out, err = await run_cli(str(RETELL_BOT), "config", env=env, cwd=tmp_path)
    assert code == 2 and problem in err, err
    assert len(err.strip().splitlines()) == 1, err
    for value in given.values():
        if len(value) > 4:
            assert value not in err + out


async def test_a_started_distributed_app_serves_its_install_page(
    slack: FakeSlack, retell: FakeRetell, tmp_path: Path
) -> None:
    """`.env` as an operator writes it for many workspaces; the install page asks Slack for
    the scopes of SLACK_SCOPES with the client id, and /slack/events still answers."""
    environment = process_environment(slack, retell, f"sqlite:///{tmp_path / 'bot.db'}")
    del environment["SLACK_BOT_TOKEN"]
    (tmp_path / ".env").write_text(
        f"SLACK_CLIENT_ID={slack.client_id}\n"
        f"SLACK_CLIENT_SECRET={slack.client_secret}\n"
        "SLACK_SCOPES=commands,chat:write\n"
        f"ENCRYPTION_KEYS={FERNET_KEYS[0]}\n"
    )
    bot = BotProcess(environment, log_path=tmp_path / "bot.log", cwd=tmp_path)
    try:
        await bot.start()
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{bot.url}/slack/install") as page:
                body = await page.text()
            async with session.get(f"{bot.url}/slack/oauth_redirect?code=x&state=y") as back:
                refused = back.status
    except BaseException as exc:
        exc.add_note(log_tail(tmp_path / "bot.log"))
        raise
    finally:
        await bot.stop()
    assert page.status == 200
    link = html.unescape(re.search(r'href="([^"]*authorize[^"]*)"', body).group(1))  # type: ignore[union-attr]
    query = parse_qs(urlsplit(link).query)
    assert query["client_id"] == [slack.client_id]
    assert set(query["scope"][0].split(",")) == {"commands", "chat:write"}
    assert refused == 400, "a redirect without the install's cookie is refused"
