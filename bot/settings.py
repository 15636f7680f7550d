"""Configuration from the environment and `.env` (SPEC §5), parsed by pydantic-settings.

Secrets are `SecretStr` so that printing or logging a `Settings` never shows them.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Annotated, Literal

from dotenv import dotenv_values
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# A comma-separated list as README documents it (`U1,U2`, `U1, U2`, empty). `NoDecode` keeps
# pydantic-settings from JSON-decoding the variable first, which refused all of those forms.
IdList = Annotated[frozenset[str], NoDecode]
# A comma-separated list of secrets, in order (the first one is the current one).
SecretList = Annotated[tuple[SecretStr, ...], NoDecode]


def _id_list(value: object) -> object:
    """`U1,U2`, `U1, U2` or nothing; a JSON list (`["U1","U2"]`) is accepted as well."""
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    if isinstance(value, str):
        return frozenset(part.strip() for part in value.split(",") if part.strip())
    return value


def _is_fernet_key(key: str) -> bool:
    try:
        return len(base64.urlsafe_b64decode(key.encode("ascii"))) == 32 and len(key) == 44
    except (ValueError, UnicodeEncodeError):
        return False


def _split_secrets(value: object) -> object:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def _checked_fernet_keys(value: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
    """Checked here (no value echoed) so a bad key stops start-up, not the first connect."""
    for number, key in enumerate(value, start=1):
        if not _is_fernet_key(key.get_secret_value()):
            raise ValueError(
                f"key {number} of {len(value)} is not a Fernet key (32 bytes in url-safe "
                "base64, 44 characters); make one with `retell-bot keys new`"
            )
    return value


def _log_option(value: object) -> object:
    """`LOG_LEVEL=debug` and `LOG_FORMAT=JSON` are what people type; accept them."""
    if not isinstance(value, str):
        return value
    levels = {"debug", "info", "warning", "error"}
    return value.upper() if value.lower() in levels else value.lower()


class Settings(BaseSettings):
    """Everything the bot reads from its environment."""

    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", frozen=True, env_ignore_empty=True
    )

    # One workspace (the default): its bot token. Unset with SLACK_CLIENT_ID and
    # SLACK_CLIENT_SECRET: many workspaces, each installing the app (SPEC §10).
    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_api_url: str = "https://slack.com/api/"
    slack_client_id: str | None = None
    slack_client_secret: SecretStr | None = None
    # The bot scopes asked for at install; unset: the manifest's (`bot.workspaces.SCOPES`).
    slack_scopes: IdList = frozenset()
    # When set, every OAuth `state` is signed with it as well as being single-use.
    slack_state_secret: SecretStr | None = None
    # Where Slack sends the installer back; unset: the app's one registered redirect URL.
    slack_redirect_uri: str | None = None
    # Fernet keys (comma-separated): the first encrypts the workspaces' Retell keys, all decrypt.
    encryption_keys: SecretList = ()

    # One workspace: required. Many: the key of workspaces that have not connected their own.
    retell_api_key: SecretStr | None = None
    retell_base_url: str = "https://api.retellai.com"
    retell_timeout_seconds: float = Field(default=30.0, gt=0)
    retell_max_retries: int = Field(default=4, ge=0, le=10)

    database_url: str = "sqlite:///./retell-bot.db"
    # How long a SQLite query waits for another connection's write lock before failing.
    sqlite_busy_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    port: int = Field(default=3000, ge=1, le=65535)

    poll_initial_seconds: float = Field(default=10.0, gt=0)
    poll_max_seconds: float = Field(default=120.0, gt=0)
    batch_timeout_minutes: float = Field(default=180.0, gt=0)
    follow_up_lease_seconds: float = Field(default=15.0, gt=0)
    # Budgets: follow-up requests to Retell (all engines together); Slack edits per workspace
    # (chat.update is Tier 3, about 50 a minute) and posts per channel, each one budget shared
    # by every replica: the starting rate, which grows to twice that while Slack accepts and
    # drops by a quarter on a 429 (see bot.pacing).
    retell_requests_per_minute: float = Field(default=60.0, gt=0)
    slack_edits_per_minute: float = Field(default=45.0, gt=0)
    # chat.postMessage per channel (Slack: about one a second), shared like the edits.
    slack_posts_per_minute: float = Field(default=60.0, gt=0)
    schedule_min_interval_minutes: float = Field(default=15.0, ge=0)

    allowed_user_ids: IdList = frozenset()
    allowed_channel_ids: IdList = frozenset()
    admin_user_ids: IdList = frozenset()

    max_cases_per_run: int = Field(default=1000, ge=1, le=1000)
    max_runs_per_user_per_hour: int = Field(default=30, ge=0)

    # When set, `GET /metrics` answers only `Authorization: Bearer <token>`.
    metrics_token: SecretStr | None = None

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"

    _parse_ids = field_validator(
        "allowed_user_ids", "allowed_channel_ids", "admin_user_ids", "slack_scopes", mode="before"
    )(_id_list)

    _secret_list = field_validator("encryption_keys", mode="before")(_split_secrets)
    _fernet_keys = field_validator("encryption_keys")(_checked_fernet_keys)

    _log_options = field_validator("log_level", "log_format", mode="before")(_log_option)

    @field_validator("slack_api_url")
    @classmethod
    def _trailing_slash(cls, value: str) -> str:
        return value if value.endswith("/") else value + "/"

    def shown(self) -> dict[str, object]:
        """Every setting as it is in force, for `retell-bot config`: secrets only as "set"."""
        shown: dict[str, object] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = "(set)" if value.get_secret_value() else None
            elif isinstance(value, frozenset):
                value = sorted(value)
            elif name == "encryption_keys":
                value = f"({len(value)} set)" if value else None
            elif name == "database_url":
                value = _without_password(value)
            shown[name] = value
        return shown

    @property
    def distribution(self) -> bool:
        """Many workspaces: installed through OAuth rather than one token (SPEC §10)."""
        return self.slack_bot_token is None and self.slack_client_id is not None

    @property
    def socket_mode(self) -> bool:
        return self.slack_app_token is not None and bool(self.slack_app_token.get_secret_value())

    @property
    def poll_tick_seconds(self) -> float:
        """How often the follow-up sweep wakes: fine enough for the first check, never busy."""
        return min(max(self.poll_initial_seconds / 4, 0.05), 2.0)


def _without_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy can read: serve will say so; show nothing of it
        return "(unreadable)"


class DatabaseSettings(BaseSettings):
    """What `retell-bot db upgrade` needs: the database, and how to log; no Slack or Retell."""

    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", frozen=True, env_ignore_empty=True
    )

    database_url: str = Settings.model_fields["database_url"].default
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"

    _log_options = field_validator("log_level", "log_format", mode="before")(_log_option)


class KeySettings(DatabaseSettings):
    """What `retell-bot keys rotate` needs: the database and ENCRYPTION_KEYS, nothing else."""

    encryption_keys: SecretList = ()

    _secret_list = field_validator("encryption_keys", mode="before")(_split_secrets)
    _fernet_keys = field_validator("encryption_keys")(_checked_fernet_keys)


class SettingsError(Exception):
    """Start-up cannot go on; `lines` says what to fix, one line per problem."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def load_settings(*, http_mode: bool = True, **overrides: object) -> Settings:
    """Read settings, turning pydantic's errors into one plain line per variable.

    Every problem is reported at once, the signing secret included, so a first deployment
    is fixed in one round rather than one variable at a time.
    """
    lines: list[str] = []
    settings: Settings | None = None
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = [_line(error) for error in exc.errors()]
    lines += _mode_problems(settings, overrides)
    needs_secret = http_mode and not _has("slack_app_token", settings, overrides)
    if needs_secret and not _has("slack_signing_secret", settings, overrides):
        lines.append(
            "SLACK_SIGNING_SECRET is required in HTTP mode (or set SLACK_APP_TOKEN "
            "to use Socket Mode)"
        )
    if lines or settings is None:
        raise SettingsError(lines)
    return settings


def _mode_problems(settings: Settings | None, overrides: dict[str, object]) -> list[str]:
    """One workspace needs its token and a Retell key; many need the OAuth app's id and
    secret and the keys that encrypt each workspace's Retell key."""
    if _has("slack_bot_token", settings, overrides):
        if _has("retell_api_key", settings, overrides):
            return []
        return ["RETELL_API_KEY is required but not set"]
    has_id = _has("slack_client_id", settings, overrides)
    has_secret = _has("slack_client_secret", settings, overrides)
    if not has_id and not has_secret:
        lines = [
            "SLACK_BOT_TOKEN is required but not set (or, to serve many workspaces, set "
            "SLACK_CLIENT_ID and SLACK_CLIENT_SECRET instead)"
        ]
        if not _has("retell_api_key", settings, overrides):
            lines.append("RETELL_API_KEY is required but not set")
        return lines
    lines = []
    if not has_id:
        lines.append("SLACK_CLIENT_ID is required with SLACK_CLIENT_SECRET (or SLACK_BOT_TOKEN)")
    if not has_secret:
        lines.append("SLACK_CLIENT_SECRET is required with SLACK_CLIENT_ID (or SLACK_BOT_TOKEN)")
    if not _has("encryption_keys", settings, overrides):
        lines.append(
            "ENCRYPTION_KEYS is required to serve many workspaces (it encrypts their Retell "
            "keys); make one with `retell-bot keys new`"
        )
    return lines


def _has(field: str, settings: Settings | None, overrides: dict[str, object]) -> bool:
    """Whether a setting has a value, even when other settings failed to validate."""
    if settings is not None:
        value = getattr(settings, field)
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        return bool(value)
    if overrides.get(field):
        return True
    if os.environ.get(field.upper()):
        return True
    env_file = overrides.get("_env_file", Settings.model_config.get("env_file"))
    if isinstance(env_file, str | os.PathLike) and os.path.exists(env_file):
        return bool(dotenv_values(env_file).get(field.upper()))
    return False


def _line(error: object) -> str:
    details = error if isinstance(error, dict) else {}
    location = details.get("loc") or ("?",)
    variable = str(location[0]).upper()
    if details.get("type") == "missing":
        return f"{variable} is required but not set"
    # Never echo the offending value: it may be a secret.
    return f"{variable}: {details.get('msg', 'invalid value')}"


class CliSettings(BaseSettings):
    """What `retell-bot run` and `retell-bot watch` read: Retell; Slack only for `--post-to`.

    A CI job has a Retell key and maybe a Slack token, but no signing secret or database, so
    the CLI must not demand the bot's full `Settings`. Defaults match the bot's.
    """

    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", frozen=True, env_ignore_empty=True
    )

    retell_api_key: SecretStr
    retell_base_url: str = Settings.model_fields["retell_base_url"].default
    retell_timeout_seconds: float = Field(default=30.0, gt=0)
    retell_max_retries: int = Field(default=4, ge=0, le=10)

    slack_bot_token: SecretStr | None = None
    slack_api_url: str = Settings.model_fields["slack_api_url"].default

    poll_initial_seconds: float = Field(default=10.0, gt=0)
    batch_timeout_minutes: float = Field(default=180.0, gt=0)
    max_cases_per_run: int = Field(default=1000, ge=1, le=1000)

    # Quiet by default: the CLI's own output is the report; logs only for trouble.
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "WARNING"
    log_format: Literal["text", "json"] = "text"

    _log_options = field_validator("log_level", "log_format", mode="before")(_log_option)

    @field_validator("slack_api_url")
    @classmethod
    def _trailing_slash(cls, value: str) -> str:
        return value if value.endswith("/") else value + "/"

    def secrets(self) -> list[str]:
        """The values log lines must never show."""
        values = [self.retell_api_key, self.slack_bot_token]
        return [v.get_secret_value() for v in values if v is not None]


def load_cli_settings(**overrides: object) -> CliSettings:
    """`CliSettings`, or a `SettingsError` with one plain line per problem."""
    try:
        return CliSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise SettingsError([_line(error) for error in exc.errors()]) from None
