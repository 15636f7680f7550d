"""Each workspace's Slack bot token in distribution mode (SPEC §10).

The installations and OAuth states live in slack-sdk's async SQLAlchemy stores, in the bot's
own database (migration 0011). What this adds on top:

- where a workspace's token is: its own install, or its Enterprise Grid org's org-wide install
  (the `workspaces` row says which, written at install and on the first request from a
  workspace of an org-wide install, so that follow-ups and schedules, which know only a run's
  `team_id`, find the same token a request would);
- rotation for every caller, not only Slack requests: a token within `REFRESH_BEFORE` of its
  expiry is refreshed first, by one replica at a time (a refresh token is single-use: two
  replicas refreshing at once would leave one with a dead token); a replica that finds the
  refresh taken goes on with the current token, still valid for a while;
- a short in-memory cache, because every Slack call of a follow-up needs the token.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from slack_bolt.authorization import AuthorizeResult
from slack_bolt.authorization.async_authorize import AsyncAuthorize
from slack_bolt.context.async_context import AsyncBoltContext
from slack_sdk.errors import SlackTokenRotationError
from slack_sdk.oauth.installation_store import Bot, Installation
from slack_sdk.oauth.installation_store.sqlalchemy import AsyncSQLAlchemyInstallationStore
from slack_sdk.oauth.state_store.async_state_store import AsyncOAuthStateStore
from slack_sdk.oauth.state_store.sqlalchemy import AsyncSQLAlchemyOAuthStateStore
from slack_sdk.oauth.token_rotation.async_rotator import AsyncTokenRotator
from slack_sdk.web.async_client import AsyncWebClient

from bot.settings import Settings
from bot.slackapi import error_code
from bot.store import DATABASE_FAILURES, Store

log = logging.getLogger(__name__)

# The bot scopes the manifest asks for (`tests/unit/test_workspaces.py` holds the two equal).
SCOPES = (
    "commands",
    "chat:write",
    "channels:join",
    "users:read",
    "files:write",
    "channels:history",
    "groups:history",
    "im:history",
    "mpim:history",
)
# Slack's rotating tokens live 12 hours; Bolt refreshes 2 hours ahead, and so do we.
REFRESH_BEFORE = timedelta(hours=2)
# How long one replica may hold a refresh before another may take it over.
REFRESH_HOLD = timedelta(seconds=30)
# How long a token (or "not installed") is reused before the database is asked again.
CACHED_SECONDS = 60.0
NOT_INSTALLED_SECONDS = 2.0
# An expiring token a peer is refreshing (or Slack would not refresh) is looked at again after.
REFRESH_RETRY_SECONDS = 5.0
STATE_SECONDS = 600  # an install link is good for ten minutes


@dataclass(frozen=True, slots=True)
class BotToken:
    """A workspace's bot token and who the bot is there."""

    token: str
    bot_id: str | None
    bot_user_id: str | None
    team_id: str | None
    enterprise_id: str | None
    expires_at: float | None  # epoch seconds; None: it does not rotate


@dataclass(slots=True)
class _Cached:
    bot: BotToken | None
    until: float
    retry_refresh_at: float = 0.0  # an expiring token is not refreshed again before this


class SignedStates(AsyncOAuthStateStore):
    """OAuth states that are single-use (the database) and signed with SLACK_STATE_SECRET:
    a state the bot did not issue is refused before the database is asked."""

    def __init__(self, inner: AsyncOAuthStateStore, secret: str) -> None:
        self._inner = inner
        self._secret = secret.encode()

    @property
    def logger(self) -> logging.Logger:
        return log

    def _signature(self, state: str) -> str:
        return hmac.new(self._secret, state.encode(), hashlib.sha256).hexdigest()[:32]

    async def async_issue(self, *args: object, **kwargs: object) -> str:
        state = await self._inner.async_issue(*args, **kwargs)
        return f"{state}.{self._signature(state)}"

    async def async_consume(self, state: str) -> bool:
        raw, _, signature = (state or "").rpartition(".")
        if not raw or not hmac.compare_digest(signature, self._signature(raw)):
            return False
        return await self._inner.async_consume(raw)


class Installations:
    """The installation and state stores, and each workspace's (rotated) bot token."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        client: AsyncWebClient,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        assert settings.slack_client_id is not None and settings.slack_client_secret is not None
        self._store = store
        self._clock = clock
        self.bots = AsyncSQLAlchemyInstallationStore(
            client_id=settings.slack_client_id, engine=store.engine, logger=log
        )
        states: AsyncOAuthStateStore = AsyncSQLAlchemyOAuthStateStore(
            expiration_seconds=STATE_SECONDS, engine=store.engine, logger=log
        )
        if settings.slack_state_secret is not None:
            states = SignedStates(states, settings.slack_state_secret.get_secret_value())
        self.states = states
        self._rotator = AsyncTokenRotator(
            client_id=settings.slack_client_id,
            client_secret=settings.slack_client_secret.get_secret_value(),
            client=client,
        )
        self._holder = str(uuid.uuid4())  # this process, as a refresh lease names it
        self._cache: dict[str, _Cached] = {}
        self._refreshing: dict[str, asyncio.Lock] = {}
        self._looking: dict[str, asyncio.Lock] = {}

    # ----- tokens -----------------------------------------------------------------------------

    async def bot(
        self, team_id: str | None, *, enterprise_id: str | None = None
    ) -> BotToken | None:
        """The bot token for this workspace (refreshed first when it is about to expire), or
        None when the app is not installed there."""
        key = team_id or f"org:{enterprise_id}"
        cached = self._cache.get(key)
        if cached is not None and self._usable(cached, self._clock()):
            return cached.bot
        # One lookup per workspace at a time: a sweep asks for many of its runs at once.
        async with self._looking.setdefault(key, asyncio.Lock()):
            now = self._clock()
            cached = self._cache.get(key)
            if cached is not None and self._usable(cached, now):
                return cached.bot
            found = await self._find(team_id, enterprise_id)
            retry_at = 0.0
            if found is not None and self._expiring(_token(found), now):
                found = await self._refresh(found)
                if self._expiring(_token(found), now):
                    # Not refreshed: a peer is at it, or Slack refused. Go on with this token
                    # and look again shortly, not at every call.
                    retry_at = now + REFRESH_RETRY_SECONDS
            bot = _token(found) if found is not None else None
            # "Not installed" briefly: an install on another replica must show up soon.
            kept = CACHED_SECONDS if bot is not None else NOT_INSTALLED_SECONDS
            self._cache[key] = _Cached(bot, now + kept, retry_at)
            return bot

    def _usable(self, cached: _Cached, now: float) -> bool:
        if cached.until <= now:
            return False
        return not self._expiring(cached.bot, now) or now < cached.retry_refresh_at

    async def token(self, team_id: str) -> str | None:
        bot = await self.bot(team_id)
        return bot.token if bot is not None else None

    def forget(self, team_id: str) -> None:
        """Slack refused this workspace's token (revoked, expired: a reinstall, or a peer's
        refresh this process has not seen): ask the database again next time."""
        self._cache.pop(team_id, None)

    def _expiring(self, bot: BotToken | None, now: float) -> bool:
        if bot is None or bot.expires_at is None:
            return False
        return bot.expires_at - now < REFRESH_BEFORE.total_seconds()

    async def _find(self, team_id: str | None, enterprise_id: str | None) -> Bot | None:
        where = await self._store.workspace(team_id) if team_id else None
        if where is not None:
            org_wide = where.enterprise_install
            return await self.bots.async_find_bot(
                enterprise_id=where.enterprise_id,
                team_id=None if org_wide else team_id,
                is_enterprise_install=org_wide,
            )
        if enterprise_id is None:
            return None
        # A workspace of an org-wide install, seen for the first time.
        bot = await self.bots.async_find_bot(
            enterprise_id=enterprise_id, team_id=None, is_enterprise_install=True
        )
        if bot is not None and team_id:
            await self._store.record_install(
                team_id, enterprise_id=enterprise_id, enterprise_install=True, at=None
            )
        return bot

    async def _refresh(self, bot: Bot) -> Bot:
        """Rotate the token, one replica at a time; whoever does not get the lease goes on
        with the current token (refreshes start two hours before it expires)."""
        installation = f"{bot.enterprise_id or ''}:{bot.team_id or ''}"
        lock = self._refreshing.setdefault(installation, asyncio.Lock())
        async with lock:
            now = datetime.fromtimestamp(self._clock(), UTC)
            if not await self._store.claim_refresh(
                installation, self._holder, now=now, hold=REFRESH_HOLD
            ):
                log.info("token of %s is being refreshed by another replica", installation)
                return bot
            try:
                # Read again under the lease: a peer may have refreshed it a moment ago.
                current = await self.bots.async_find_bot(
                    enterprise_id=bot.enterprise_id,
                    team_id=bot.team_id,
                    is_enterprise_install=bot.is_enterprise_install,
                )
                current = current or bot
                minutes = int(REFRESH_BEFORE.total_seconds() // 60)
                rotated = await self._rotator.perform_bot_token_rotation(
                    bot=current, minutes_before_expiration=minutes
                )
                if rotated is None:
                    return current
                await self.bots.async_save_bot(rotated)
                log.info("token of %s refreshed", installation)
                return rotated
            except SlackTokenRotationError as exc:
                code = error_code(exc.api_error)
                log.warning("token of %s could not be refreshed: %s", installation, code)
                return bot
            finally:
                await self._store.release_refresh(installation, self._holder)

    # ----- installs and uninstalls ----------------------------------------------------------

    async def installed(self, installation: Installation) -> None:
        """Bolt stored a new installation: note where its token is."""
        org_wide = bool(installation.is_enterprise_install)
        team_id = installation.team_id
        if team_id:
            await self._store.record_install(
                team_id,
                enterprise_id=installation.enterprise_id,
                enterprise_install=org_wide,
                at=datetime.fromtimestamp(installation.installed_at, UTC),
            )
        self._cache.clear()
        log.info(
            "installed in %s%s",
            team_id or installation.enterprise_id,
            " (org-wide)" if org_wide else "",
        )

    async def uninstalled(self, team_id: str | None, enterprise_id: str | None) -> list[str]:
        """Delete the tokens; the workspaces whose data the caller now forgets."""
        where = await self._store.workspace(team_id) if team_id else None
        org_wide = (where is not None and where.enterprise_install) or (
            team_id is None and enterprise_id is not None
        )
        if org_wide and enterprise_id is not None:
            teams = await self._store.teams_of_enterprise(enterprise_id)
            await self.bots.async_delete_installation(enterprise_id=enterprise_id, team_id=None)
            await self.bots.async_delete_bot(enterprise_id=enterprise_id, team_id=None)
        else:
            teams = [team_id] if team_id else []
            enterprise = where.enterprise_id if where is not None else enterprise_id
            await self.bots.async_delete_installation(enterprise_id=enterprise, team_id=team_id)
            await self.bots.async_delete_bot(enterprise_id=enterprise, team_id=team_id)
        self._cache.clear()
        return teams


def _token(bot: Bot) -> BotToken:
    return BotToken(
        token=str(bot.bot_token),
        bot_id=bot.bot_id,
        bot_user_id=bot.bot_user_id,
        team_id=bot.team_id,
        enterprise_id=bot.enterprise_id,
        expires_at=float(bot.bot_token_expires_at) if bot.bot_token_expires_at else None,
    )


class WorkspaceAuthorize(AsyncAuthorize):
    """Bolt's authorize step from `Installations`: the same token, rotated the same way, as
    the bot's own follow-ups use, and no `auth.test` round trip before every ack."""

    def __init__(self, installations: Installations) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._installations = installations

    async def __call__(
        self,
        *,
        context: AsyncBoltContext,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None,
        actor_enterprise_id: str | None = None,
        actor_team_id: str | None = None,
        actor_user_id: str | None = None,
    ) -> AuthorizeResult | None:
        try:
            bot = await self._installations.bot(team_id, enterprise_id=enterprise_id)
        except DATABASE_FAILURES as exc:
            # Not "please install the app": the listener runs without a token, and tells a
            # command that the database is down, as with one workspace.
            log.warning("authorize: database unreachable: %s", type(exc).__name__)
            return AuthorizeResult(enterprise_id=enterprise_id, team_id=team_id, user_id=user_id)
        if bot is None:
            return None
        return AuthorizeResult(
            enterprise_id=enterprise_id or bot.enterprise_id,
            team_id=team_id or bot.team_id,
            bot_token=bot.token,
            bot_id=bot.bot_id,
            bot_user_id=bot.bot_user_id,
            user_id=user_id,
        )
