"""The Slack gateway: every message the bot posts, edits or sends privately goes through here.

slack_sdk's async retry handlers take care of rate limits (honouring `Retry-After`), server
errors and dropped connections; this module adds the channel rules a chat-ops bot needs: join a
public channel it was not invited to, and say so privately to the requester when it cannot post.
It also paces `chat.update` (per workspace) and `chat.postMessage` (per channel) by one budget
all replicas share (`bot.pacing`): results first, progress edits coalesced, 429s fed back.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.blocks import Message
from bot.metrics import Metrics
from bot.pacing import Allowance, BudgetBook, Priority

log = logging.getLogger(__name__)

ADMIN_FLAGS = ("is_admin", "is_owner", "is_primary_owner")  # users.info: who runs the workspace

P = ParamSpec("P")
R = TypeVar("R")

UNREACHABLE_CHANNEL = frozenset({"channel_not_found", "is_archived", "not_in_channel"})
HISTORY_PAGE = 200  # messages read back when looking for one the bot posted moments ago
HISTORY_PAGES = 10  # pages of them at most, then the lookup is tried again later
HISTORY_SLACK_SECONDS = 5.0  # how far the bot's clock and Slack's may disagree


class RateLimitRetry(AsyncRateLimitErrorRetryHandler):
    """slack_sdk's 429 handler, waiting the whole `Retry-After`, for the calls the shared
    budget does not pace (`PACED_METHODS` go back to the gateway, which tells the budget).

    On the async (aiohttp) client the header's value is a string, and the stock handler reads
    its first character only: "45" became a 4 s wait, and the retry met another 429.
    """

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if _method(request) in PACED_METHODS:
            return False
        return await super()._can_retry_async(
            state=state, request=request, response=response, error=error
        )

    async def _prepare_for_next_attempt_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        if response is None:
            raise error or RuntimeError("rate-limited without a response")
        state.next_attempt_requested = True
        await asyncio.sleep(retry_after_seconds(response.headers) + random.random())
        state.increment_current_attempt()


def retry_after_seconds(headers: Mapping[str, Any]) -> float:
    """Seconds Slack asked to wait (`Retry-After`, a string or a list of them); 1 if unsaid."""
    for name, value in headers.items():
        if name.lower() == "retry-after":
            text = value[0] if isinstance(value, list | tuple) and value else value
            try:
                return max(float(str(text).strip()), 0.0)
            except ValueError:
                break
    return 1.0


def _method(request: HttpRequest) -> str:
    return request.url.rsplit("/", 1)[-1].split("?", 1)[0]


# Methods whose 429s feed the shared budget (`bot.pacing`) rather than a retry in place.
UPDATE_FAMILY = "chat.update"  # Tier 3, per workspace
POST_FAMILY = "chat.postMessage"  # about one a second, per channel
HISTORY_FAMILY = "conversations"  # history and replies: Tier 3, per workspace
HISTORY_METHODS = frozenset({"conversations.history", "conversations.replies"})
PACED_METHODS = frozenset({UPDATE_FAMILY, POST_FAMILY, *HISTORY_METHODS})
# How much of a minute's allowance may go at once: Slack tolerates bursts, and says so with a
# 429 when one was too much (the budget then waits and halves its rate).
UPDATE_BURST_SECONDS = 30.0
POST_BURST_SECONDS = 5.0
# How long a call nobody can defer (an answer someone waits for) waits for the budget at most
# before it goes anyway; Slack's 429, if it comes, is then waited out like any other.
MAX_PACED_WAIT_SECONDS = 30.0
PACED_RETRIES = 3  # 429s waited out by a call nobody can defer

# Methods that create something: Slack has no idempotency key, so a retry after the answer
# was lost posts it twice. The bot finds such a post in the channel's history instead
# (`find_posted`, `find_reply`).
CREATING_METHODS = frozenset({"chat.postMessage"})


class ConnectionRetry(AsyncConnectionErrorRetryHandler):
    """slack_sdk's dropped-connection handler, except where Slack may already have the call.

    A post is retried only when its connection was never made; once the request was sent,
    a lost answer goes to the caller, which looks before posting again.
    """

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if _method(request) in CREATING_METHODS and not isinstance(
            error, aiohttp.ClientConnectorError
        ):
            return False
        return await super()._can_retry_async(
            state=state, request=request, response=response, error=error
        )


def retry_handlers() -> list[AsyncRetryHandler]:
    return [
        ConnectionRetry(max_retry_count=3),
        RateLimitRetry(max_retry_count=5),
        AsyncServerErrorRetryHandler(max_retry_count=3),
    ]


# What a Slack call can end in once slack_sdk's retries are spent: an error answer, or no
# answer at all (a dropped connection, a timeout). Only this module sees these types;
# everything else catches `SlackFailure`.
SDK_FAILURES = (SlackApiError, aiohttp.ClientError, TimeoutError)


def error_code(exc: BaseException) -> str:
    """Slack's error code (`channel_not_found`), or the kind of failure when Slack never said."""
    if not isinstance(exc, SlackApiError):
        return type(exc).__name__
    data = exc.response.data if exc.response is not None else None
    return str(data.get("error", "")) if isinstance(data, dict) else ""


OUTAGE_CODES = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)


def is_outage(exc: BaseException) -> bool:
    """Whether a failed call says Slack is unavailable (try later), not that it refuses.

    No answer at all, an HTTP 5xx or 429 (after slack_sdk's own retries), or one of Slack's
    error codes for its own trouble.
    """
    if not isinstance(exc, SlackApiError):
        return True
    status = getattr(exc.response, "status_code", 200) if exc.response is not None else 200
    return status >= 500 or status == 429 or error_code(exc) in OUTAGE_CODES


class SlackFailure(Exception):
    """A Slack call that failed once slack_sdk's retries were spent, in the bot's terms.

    The one Slack error the rest of the bot catches, as `RetellProblem` is for Retell: the
    gateway (and `map_slack_errors` around a listener's own calls) translates slack_sdk's and
    aiohttp's exceptions into it once, so no caller inspects SDK response objects.
    """

    def __init__(
        self,
        code: str,
        *,
        outage: bool,
        answered: bool,
        unsent: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(code)
        self.code = code  # Slack's error code, or the kind of failure when it never answered
        self.outage = outage  # Slack is unavailable: try later (see `is_outage`)
        self.answered = answered  # Slack answered with an error (not a lost connection)
        # Certainly not carried out: the budget held it back (`paced`), or Slack's 429.
        self.unsent = unsent
        # When to try again, as the budget or Slack's `Retry-After` says.
        self.retry_after = retry_after

    @property
    def paced(self) -> bool:
        """Held back by the shared budget or rate limited: try again after `retry_after`."""
        return self.unsent and self.retry_after is not None


@contextmanager
def map_slack_errors() -> Iterator[None]:
    """Re-raise what slack_sdk and aiohttp raise for a failed call as `SlackFailure`."""
    try:
        yield
    except SDK_FAILURES as exc:
        raise SlackFailure(
            error_code(exc) or type(exc).__name__,
            outage=is_outage(exc),
            answered=isinstance(exc, SlackApiError),
        ) from exc


def _translated(method: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """A gateway method whose failures reach its caller as `SlackFailure`."""

    @functools.wraps(method)
    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        with map_slack_errors():
            return await method(*args, **kwargs)

    return call


class CountingWebClient(AsyncWebClient):
    """An `AsyncWebClient` that counts the errors Slack answers (after retries), by code."""

    def __init__(self, *, metrics: Metrics | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._metrics = metrics

    async def api_call(self, api_method: str, **kwargs: Any) -> Any:
        try:
            return await super().api_call(api_method, **kwargs)
        except SDK_FAILURES as exc:
            if self._metrics is not None:
                self._metrics.slack_errors.labels(error_code(exc) or "unknown").inc()
            raise


# What Slack answers for a token it no longer takes.
REFUSED_TOKEN = frozenset({"token_revoked", "token_expired", "invalid_auth", "account_inactive"})


class WorkspaceWebClient(CountingWebClient):
    """One workspace's client in distribution mode: its token is asked for at each call, so a
    rotated token is used as soon as it exists and an uninstalled workspace gets what Slack
    itself answers for a revoked token (`token_revoked`) without a round trip."""

    def __init__(
        self,
        *,
        token_of: Callable[[], Awaitable[str | None]],
        refused: Callable[[], None] = lambda: None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._token_of = token_of
        self._refused = refused  # the token was refused: look it up again next time

    async def api_call(self, api_method: str, **kwargs: Any) -> Any:
        token = await self._token_of()
        if token is None:
            data = {"ok": False, "error": "token_revoked"}
            response = AsyncSlackResponse(
                client=self,
                http_verb="POST",
                api_url=f"{self.base_url}{api_method}",
                req_args={},
                data=data,
                headers={},
                status_code=200,
            )
            raise SlackApiError(f"{api_method}: the app is not installed here", response)  # type: ignore[no-untyped-call]
        self.token = token
        try:
            return await super().api_call(api_method, **kwargs)
        except SlackApiError as exc:
            if error_code(exc) not in REFUSED_TOKEN:
                raise
            # Refused, so not carried out: with a newer token (a reinstall or a refresh by
            # another replica), once more.
            self._refused()
            fresh = await self._token_of()
            if fresh is None or fresh == token:
                raise
        self.token = fresh
        return await super().api_call(api_method, **kwargs)


def web_client(
    token: str | None, base_url: str, *, metrics: Metrics | None = None
) -> AsyncWebClient:
    # In place of slack_sdk's defaults, whose connection handler would retry a post too.
    return CountingWebClient(
        token=token,
        base_url=base_url,
        timeout=15,
        metrics=metrics,
        retry_handlers=retry_handlers(),
    )


class SlackGateway:
    """Posts, edits and private replies, with the retries and channel rules in one place.

    Every public call that can fail raises `SlackFailure` (never an SDK exception).
    """

    def __init__(
        self,
        client: AsyncWebClient,
        *,
        book: BudgetBook,
        edits_per_minute: float = 45,
        posts_per_minute: float = 60,
        team_id: str = "",
        of: Callable[[str], SlackGateway] | None = None,
    ) -> None:
        self.client = client
        self._book = book
        self._updates = Allowance(edits_per_minute, burst_seconds=UPDATE_BURST_SECONDS)
        self._posts = Allowance(posts_per_minute, burst_seconds=POST_BURST_SECONDS)
        # conversations.history and .replies are Tier 3 like chat.update: the same allowance.
        self._history = Allowance(edits_per_minute, burst_seconds=UPDATE_BURST_SECONDS)
        self._team_id = team_id  # the workspace `chat.update`'s budget is counted in
        self._of = of

    def of(self, team_id: str) -> SlackGateway:
        """The gateway of this workspace: with one workspace, this one; with many, one that
        calls Slack with that workspace's token (`bot.workspaces.clients`)."""
        return self if self._of is None else self._of(team_id)

    async def _paced(
        self,
        family: str,
        scope: str,
        priority: Priority,
        send: Callable[[], Awaitable[R]],
        *,
        defer: bool,
    ) -> R:
        """A call paced by the shared budget, its 429s fed back to it.

        `defer`: the caller can come back later (a result, a mention, progress), so a call
        the budget holds back, or Slack rate limits, raises `SlackFailure` with `retry_after`
        instead of waiting here. Otherwise (someone waits for the answer) it waits, briefly.
        """
        allowance = {UPDATE_FAMILY: self._updates, HISTORY_FAMILY: self._history}.get(
            family, self._posts
        )
        waited = 0.0
        for attempt in range(PACED_RETRIES + 1):
            while (wait := await self._book.spend_budget(family, scope, allowance, priority)) > 0:
                if defer:
                    raise SlackFailure(
                        "paced", outage=True, answered=False, unsent=True, retry_after=wait
                    )
                if waited >= MAX_PACED_WAIT_SECONDS:
                    break  # go anyway: Slack's own 429, if it comes, says how long to wait
                pause = min(wait, MAX_PACED_WAIT_SECONDS - waited)
                await asyncio.sleep(pause)
                waited += pause
            try:
                return await send()
            except SlackApiError as exc:
                if exc.response is None or exc.response.status_code != 429:
                    raise
                retry_after = retry_after_seconds(exc.response.headers)
                await self._book.budget_limited(family, scope, allowance, retry_after)
                log.info("%s rate limited for %.0fs (%s)", family, retry_after, scope)
                if defer or attempt == PACED_RETRIES:
                    raise SlackFailure(
                        "ratelimited",
                        outage=True,
                        answered=True,
                        unsent=True,
                        retry_after=retry_after,
                    ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    @_translated
    async def check_auth(self) -> None:
        """Whether the token works (`auth.test`), before anything is created with it."""
        await self.client.auth_test()

    @_translated
    async def post(
        self,
        channel: str,
        message: Message,
        *,
        thread_ts: str | None = None,
        metadata: dict[str, Any] | None = None,
        priority: Priority = Priority.RESULT,
        defer: bool = False,
    ) -> str:
        """Post to a channel and return the message `ts`; joins a public channel if needed.

        `metadata` (Slack's message metadata: `event_type`, `event_payload`) lets the bot
        find the message again in the channel's history (see `find_posted`). Paced per
        channel by the shared budget (`defer`: see `_paced`).
        """
        kwargs: dict[str, Any] = {"channel": channel, **message.as_kwargs()}
        if thread_ts:
            kwargs["thread_ts"] = thread_ts
        if metadata is not None:
            kwargs["metadata"] = metadata

        async def send() -> Any:
            try:
                return await self.client.chat_postMessage(**kwargs)
            except SlackApiError as exc:
                if error_code(exc) != "not_in_channel" or not await self._join(channel):
                    raise
                return await self.client.chat_postMessage(**kwargs)

        response = await self._paced(POST_FAMILY, channel, priority, send, defer=defer)
        return str(response["ts"])

    @_translated
    async def find_posted(
        self, channel: str, *, since: datetime, event_type: str, payload: dict[str, Any]
    ) -> str | None:
        """The `ts` of a message this bot posted with this metadata since `since`, if any.

        Slack has no idempotency key: a process that died between posting a message and
        recording its `ts` leaves a message only the channel's history can tell about. Slack
        lists the newest first, so in a busy channel a lookup made a minute or two later finds
        it pages down: one page only took a posted status message for one never posted.
        """
        cursor: str | None = None
        for _ in range(HISTORY_PAGES):
            response = await self._paced(
                HISTORY_FAMILY,
                self._team_id,
                Priority.RESULT,
                functools.partial(
                    self.client.conversations_history,
                    channel=channel,
                    oldest=f"{since.timestamp() - HISTORY_SLACK_SECONDS:.6f}",
                    limit=HISTORY_PAGE,
                    include_all_metadata=True,
                    cursor=cursor,
                ),
                defer=True,
            )
            found = _carrying(response.get("messages"), event_type, payload)
            metadata = response.get("response_metadata") or {}
            cursor = metadata.get("next_cursor") if isinstance(metadata, dict) else None
            if found is not None or not response.get("has_more") or not cursor:
                return found
        # Thousands of messages since: rather a second message than none at all.
        log.warning("%s: message not found in %d pages of history", channel, HISTORY_PAGES)
        return None

    @_translated
    async def find_reply(
        self, channel: str, thread_ts: str, *, event_type: str, payload: dict[str, Any]
    ) -> str | None:
        """The `ts` of a reply this bot posted in a thread with this metadata, if any.

        `find_posted` for thread replies: the thread's first page (a result's own replies
        come first in it, right after the result). Both are paced like posts (Tier 3): a
        lookup held back raises `SlackFailure` with `retry_after`.
        """
        response = await self._paced(
            HISTORY_FAMILY,
            self._team_id,
            Priority.MENTION,
            functools.partial(
                self.client.conversations_replies,
                channel=channel,
                ts=thread_ts,
                limit=HISTORY_PAGE,
                include_all_metadata=True,
            ),
            defer=True,
        )
        return _carrying(response.get("messages"), event_type, payload)

    @_translated
    async def edit(
        self, team_id: str, channel: str, ts: str, message: Message, *, priority: Priority
    ) -> None:
        """Edit a message in place, paced by the workspace's shared budget.

        Always deferrable: when the budget holds it back (or Slack answers 429) it raises
        `SlackFailure` whose `retry_after` says when to try again.
        """
        kwargs: dict[str, Any] = {"channel": channel, "ts": ts, **message.as_kwargs()}

        async def send() -> None:
            try:
                await self.client.chat_update(**kwargs)
            except SlackApiError as exc:
                # Removed from a public channel since the status was posted: join it again.
                if error_code(exc) != "not_in_channel" or not await self._join(channel):
                    raise
                await self.client.chat_update(**kwargs)

        await self._paced(UPDATE_FAMILY, team_id or self._team_id, priority, send, defer=True)

    @_translated
    async def tell(self, channel: str, user: str, message: Message) -> None:
        """An ephemeral message to one user; falls back to a DM when the channel is unusable."""
        try:
            await self.client.chat_postEphemeral(channel=channel, user=user, **message.as_kwargs())
        except SlackApiError as exc:
            if error_code(exc) not in UNREACHABLE_CHANNEL:
                raise
            await self.direct_message(user, message)

    @_translated
    async def direct_message(self, user: str, message: Message, *, defer: bool = False) -> None:
        async def send() -> Any:
            return await self.client.chat_postMessage(channel=user, **message.as_kwargs())

        await self._paced(POST_FAMILY, user, Priority.RESULT, send, defer=defer)

    @_translated
    async def respond(self, response_url: str, message: Message) -> None:
        """Reply privately through a slash command's or button's `response_url`."""
        webhook = AsyncWebhookClient(response_url, retry_handlers=retry_handlers())
        response = await webhook.send(
            text=message.text, blocks=message.blocks, response_type="ephemeral"
        )
        if response.status_code >= 300:
            log.warning("response_url answered %s", response.status_code)

    async def user_timezone(self, user: str) -> str | None:
        """The IANA time zone a person set in Slack (`users.info`); None if it can't be read."""
        try:
            response = await self.client.users_info(user=user)
        except SDK_FAILURES as exc:
            log.info("time zone of %s not read: %s", user, error_code(exc))
            return None
        found = (response.get("user") or {}).get("tz")
        return found if isinstance(found, str) and found else None

    async def is_workspace_admin(self, user: str) -> bool:
        """Whether Slack says this person is an admin or owner of the workspace (`users.info`);
        False when that cannot be read (a refusal is safer than an unchecked admin)."""
        try:
            response = await self.client.users_info(user=user)
        except SDK_FAILURES as exc:
            log.info("admin status of %s not read: %s", user, error_code(exc))
            return False
        found = response.get("user") or {}
        return any(found.get(flag) is True for flag in ADMIN_FLAGS)

    @_translated
    async def upload(
        self,
        channel: str,
        content: bytes,
        *,
        filename: str,
        title: str,
        alt_text: str | None = None,
        thread_ts: str | None = None,
    ) -> None:
        """Share a file in a channel (or a thread) through Slack's upload flow v2."""
        extra: dict[str, Any] = {"alt_txt": alt_text} if alt_text else {}
        if thread_ts:
            extra["thread_ts"] = thread_ts
        await self.client.files_upload_v2(
            channel=channel, content=content, filename=filename, title=title, **extra
        )

    @_translated
    async def publish_home(self, user: str, view: dict[str, Any]) -> None:
        await self.client.views_publish(user_id=user, view=view)

    async def _join(self, channel: str) -> bool:
        try:
            await self.client.conversations_join(channel=channel)
        except SlackApiError as exc:
            log.info("could not join channel %s: %s", channel, error_code(exc))
            return False
        return True


def _carrying(messages: Any, event_type: str, payload: dict[str, Any]) -> str | None:
    """The `ts` of the first of `messages` (as Slack lists them) with this metadata."""
    for posted in messages or []:
        metadata = posted.get("metadata") if isinstance(posted, dict) else None
        if (
            isinstance(metadata, dict)
            and metadata.get("event_type") == event_type
            and metadata.get("event_payload") == payload
        ):
            return str(posted.get("ts"))
    return None
