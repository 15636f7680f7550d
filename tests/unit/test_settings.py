"""Settings and logging: clear start-up errors, the right async driver, secrets kept out of logs."""

from __future__ import annotations

import io
import logging

import pytest

from bot.logs import JsonFormatter, SecretMask
from bot.settings import SettingsError, load_settings
from bot.store import async_database_url

REQUIRED = {"slack_bot_token": "xoxb-1", "retell_api_key": "key_1", "_env_file": None}


def test_missing_required_settings_are_listed_one_per_line() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(_env_file=None)
    assert caught.value.lines == [
        "SLACK_BOT_TOKEN is required but not set (or, to serve many workspaces, set "
        "SLACK_CLIENT_ID and SLACK_CLIENT_SECRET instead)",
        "RETELL_API_KEY is required but not set",
        "SLACK_SIGNING_SECRET is required in HTTP mode (or set SLACK_APP_TOKEN to use Socket Mode)",
    ]
    with pytest.raises(SettingsError) as socket_mode:
        load_settings(_env_file=None, slack_app_token="xapp-1")
    assert len(socket_mode.value.lines) == 2, "Socket Mode needs no signing secret"


def test_http_mode_needs_a_signing_secret_socket_mode_does_not() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(**REQUIRED)
    assert "SLACK_SIGNING_SECRET" in caught.value.lines[0]
    settings = load_settings(slack_app_token="xapp-1", **REQUIRED)
    assert settings.socket_mode


def test_invalid_values_are_named_without_echoing_them() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(slack_signing_secret="s", port="not-a-port-sekrit", **REQUIRED)
    [line] = caught.value.lines
    assert line.startswith("PORT:")
    assert "sekrit" not in line


def test_settings_never_print_secrets() -> None:
    settings = load_settings(slack_signing_secret="signing-sekrit", **REQUIRED)
    assert "signing-sekrit" not in repr(settings)
    assert "xoxb-1" not in str(settings)


def test_lists_and_defaults() -> None:
    settings = load_settings(
        slack_signing_secret="s", allowed_user_ids=" U1, U2,,", log_level="debug", **REQUIRED
    )
    assert settings.allowed_user_ids == frozenset({"U1", "U2"})
    assert settings.log_level == "DEBUG"
    assert settings.database_url == "sqlite:///./retell-bot.db"
    assert settings.slack_api_url == "https://slack.com/api/"
    assert (settings.poll_initial_seconds, settings.poll_max_seconds) == (10.0, 120.0)


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("postgres://u:p@db:5432/app", "postgresql+asyncpg://u:p@db:5432/app"),
        ("postgresql://u@db/app", "postgresql+asyncpg://u@db/app"),
        ("sqlite:///./retell-bot.db", "sqlite+aiosqlite:///./retell-bot.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
    ],
)
def test_database_urls_get_the_async_driver(given: str, used: str) -> None:
    assert async_database_url(given) == used


def test_secret_mask_covers_messages_arguments_and_tracebacks() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(SecretMask(["xoxb-very-secret", "short"]))
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("test.secret-mask")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("token %s in use", "xoxb-very-secret")
        try:
            raise RuntimeError("bad token xoxb-very-secret")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    output = stream.getvalue()
    assert "xoxb-very-secret" not in output
    assert output.count("***") >= 2
    # Values too short to be real secrets are left alone rather than garbling every log line.
    assert SecretMask(["short"]).mask("a short word") == "a short word"
