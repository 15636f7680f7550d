"""The Slack gateway: every message the bot posts, edits or sends privately goes through here.

slack_sdk's async retry handlers take care of rate limits (honouring `Retry-After`), server
errors and dropped connections; this module adds the channel rules a chat-ops bot needs: join a
public channel it was not invited to, and say so privately to the requester when it cannot post.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.blocks import Message

log = logging.getLogger(__name__)

UNREACHABLE_CHANNEL = frozenset({"channel_not_found", "is_archived", "not_in_channel"})


def retry_handlers() -> list[AsyncRetryHandler]:
    return [
        AsyncConnectionErrorRetryHandler(max_retry_count=3),
        AsyncRateLimitErrorRetryHandler(max_retry_count=5),
        AsyncServerErrorRetryHandler(max_retry_count=3),
    ]


def web_client(token: str, base_url: str) -> AsyncWebClient:
    client = AsyncWebClient(token=token, base_url=base_url, timeout=15)
    client.retry_handlers.extend(retry_handlers())
    return client


def error_code(exc: SlackApiError) -> str:
    data = exc.response.data if exc.response is not None else None
    return str(data.get("error", "")) if isinstance(data, dict) else ""


class SlackGateway:
    """Posts, edits and private replies, with the retries and channel rules in one place."""

    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client

    async def post(self, channel: str, message: Message, *, thread_ts: str | None = None) -> str:
        """Post to a channel and return the message `ts`; joins a public channel if needed."""
        kwargs: dict[str, Any] = {"channel": channel, **message.as_kwargs()}
        if thread_ts:
            kwargs["thread_ts"] = thread_ts
        try:
            response = await self.client.chat_postMessage(**kwargs)
        except SlackApiError as exc:
            if error_code(exc) != "not_in_channel" or not await self._join(channel):
                raise
            response = await self.client.chat_postMessage(**kwargs)
        return str(response["ts"])

    async def update(self, channel: str, ts: str, message: Message) -> None:
        await self.client.chat_update(channel=channel, ts=ts, **message.as_kwargs())

    async def tell(self, channel: str, user: str, message: Message) -> None:
        """An ephemeral message to one user; falls back to a DM when the channel is unusable."""
        try:
            await self.client.chat_postEphemeral(channel=channel, user=user, **message.as_kwargs())
        except SlackApiError as exc:
            if error_code(exc) not in UNREACHABLE_CHANNEL:
                raise
            await self.direct_message(user, message)

    async def direct_message(self, user: str, message: Message) -> None:
        await self.client.chat_postMessage(channel=user, **message.as_kwargs())

    async def respond(self, response_url: str, message: Message) -> None:
        """Reply privately through a slash command's or button's `response_url`."""
        webhook = AsyncWebhookClient(response_url, retry_handlers=retry_handlers())
        response = await webhook.send(
            text=message.text, blocks=message.blocks, response_type="ephemeral"
        )
        if response.status_code >= 300:
            log.warning("response_url answered %s", response.status_code)

    async def _join(self, channel: str) -> bool:
        try:
            await self.client.conversations_join(channel=channel)
        except SlackApiError as exc:
            log.info("could not join channel %s: %s", channel, error_code(exc))
            return False
        return True
