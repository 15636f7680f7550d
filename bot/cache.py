"""A small, time-limited memory for data that changes rarely and is asked for often."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    """A small, time-limited memory for menu data.

    Slack asks for options at nearly every keystroke; reading every page of an engine's
    definitions each time would be slow and costly, so a listing is reused for `ttl` seconds.
    Oldest entries go first past `max_entries`.
    """

    def __init__(
        self, *, ttl: float, max_entries: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> V | None:
        """The value stored under `key`, unless it is older than the ttl."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        stored_at, value = entry
        if self._clock() - stored_at > self._ttl:
            del self._entries[key]
            return None
        return value

    def put(self, key: K, value: V) -> None:
        """Store `value`, evicting the oldest entries past `max_entries`."""
        self._entries.pop(key, None)
        self._entries[key] = (self._clock(), value)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
