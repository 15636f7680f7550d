"""What tests and benchmarks read back: messages, threads, responses, counts, and waits."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from bot.testing.slack.records import (
    JSONDict,
    Message,
)
from bot.testing.slack.state import SlackState


class ObservationMixin(SlackState):
    """Lookups over the recorded state, and `wait_for`, woken after every request."""

    def message(self, channel: str, ts: str) -> Message:
        """The message at (channel, ts); KeyError listing what exists if there is none."""
        for message in self.messages:
            if message.channel == channel and message.ts == ts:
                return message
        known = [(m.channel, m.ts) for m in self.messages]
        raise KeyError(f"no message {ts} in {channel}; messages: {known}")

    def channel_messages(self, channel: str, *, include_replies: bool = False) -> list[Message]:
        """What the channel shows, oldest first: top-level messages (and replies if asked)."""
        return [
            m
            for m in self.messages
            if m.channel == channel and not m.deleted and (include_replies or not m.is_reply)
        ]

    def thread(self, channel: str, ts: str) -> list[Message]:
        """The replies under the message `ts`, oldest first (the parent is not included)."""
        return [
            m
            for m in self.messages
            if m.channel == channel and m.thread_ts == ts and m.ts != ts and not m.deleted
        ]

    def count(self, method: str) -> int:
        """How many requests `method` received, failed ones included."""
        return sum(1 for call in self.calls if call.method == method)

    def responses_to(self, response_url: str) -> list[JSONDict]:
        """The bodies posted to one response_url, in order."""
        token = response_url.rstrip("/").rsplit("/", 1)[-1]
        return self.responses.get(token, [])

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until `predicate()` holds; it is re-checked after every request the fake handles.

        Raises TimeoutError naming the predicate and the last calls, so a failure says what
        the bot did instead.
        """
        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(predicate)
        except TimeoutError:
            name = getattr(predicate, "__qualname__", repr(predicate))
            recent = [(c.method, c.ok) for c in self.calls[-8:]]
            raise TimeoutError(
                f"condition {name} still false after {timeout}s; "
                f"{len(self.calls)} calls, last: {recent}; {len(self.messages)} messages"
            ) from None

    def stats(self) -> JSONDict:
        """Counts per method and per-message timing (for benchmarks)."""
        counts: dict[str, int] = {}
        failures: dict[str, int] = {}
        for call in self.calls:
            counts[call.method] = counts.get(call.method, 0) + 1
            if not call.ok:
                failures[call.method] = failures.get(call.method, 0) + 1
        return {
            "calls": len(self.calls),
            "counts": counts,
            "failures": failures,
            "rate_limited": dict(self._rate_limited),  # 429s from rate limits, per method
            "rate_limits": None if self._tiers is None else self._tiers.tiers.to_json(),
            "messages": [
                {
                    "channel": m.channel,
                    "ts": m.ts,
                    "thread_ts": m.thread_ts,
                    "first_post_at": m.posted_at,
                    "final_update_at": m.updated_at,
                    "update_count": m.update_count,
                }
                for m in self.messages
            ],
            "uploads": [
                {
                    "file_id": u.file_id,
                    "filename": u.filename,
                    "size": len(u.data) if u.data is not None else 0,
                    "channel_id": u.channel_id,
                    "thread_ts": u.thread_ts,
                    "completed": u.completed,
                    "completed_at": u.completed_at,
                }
                for u in self.uploads.values()
            ],
        }
