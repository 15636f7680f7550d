"""Slack's rate limits, paced by one budget that every replica shares (issue 17).

Slack limits `chat.update` per workspace (Tier 3, "50+ a minute", bursts tolerated) and
`chat.postMessage` per channel (about one a second, short bursts). A replica that counts on its
own cannot keep a fleet under those, and forgets what it spent when it restarts; so the budget
is a row per method family and scope in the database the replicas already share.

The allowance adapts: it starts at the configured rate, grows towards twice that while Slack
accepts, drops by a quarter on a 429 and waits out its `Retry-After`. Calls take from it by
priority: a final result may spend the whole bucket, a requester's mention leaves a tenth to
results, a progress edit a quarter (progress edits coalesce: the next follow-up shows newer
counts).
Nothing is dropped: a call the budget turns away is told how long to wait.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

# How far above the configured rate the allowance may grow while Slack accepts everything.
CEILING_FACTOR = 2.0
# The least the allowance falls to after repeated 429s, as a share of the configured rate.
FLOOR_FACTOR = 0.1
# After a 429 the allowance regains the configured rate over this long, if Slack allows.
RECOVERY = timedelta(minutes=1)
# What a 429 leaves of the allowance: gentle, since Slack's limit is near (it just said so).
DECREASE = 0.75


class Priority(enum.IntEnum):
    """What a Slack call is for, most urgent first."""

    RESULT = 0  # a final result, or an answer someone is waiting for
    MENTION = 1  # the requester's thread mention of a result
    PROGRESS = 2  # a status message's progress: coalesces


# The share of the bucket each priority leaves to the ones above it.
RESERVE: dict[Priority, float] = {
    Priority.RESULT: 0.0,
    Priority.MENTION: 0.1,
    Priority.PROGRESS: 0.25,
}


@dataclass(frozen=True, slots=True)
class Allowance:
    """A method family's configured rate and how much of it may come at once."""

    per_minute: float
    burst_seconds: float

    @property
    def ceiling(self) -> float:
        return self.per_minute * CEILING_FACTOR

    @property
    def floor(self) -> float:
        return self.per_minute * FLOOR_FACTOR


@dataclass(slots=True)
class BudgetState:
    """A budget row: tokens left, when they were counted, the allowance and any block."""

    tokens: float
    counted_at: datetime
    base_per_minute: float  # the allowance at `since`, before it grows back
    since: datetime
    blocked_until: datetime | None = None


def rate(state: BudgetState, allowance: Allowance, now: datetime) -> float:
    """The allowance (calls a minute) now: it grows back linearly towards the ceiling."""
    grown = (now - state.since) / RECOVERY * allowance.per_minute
    return min(allowance.ceiling, state.base_per_minute + max(grown, 0.0))


def capacity(per_minute: float, allowance: Allowance) -> float:
    return max(2.0, per_minute / 60 * allowance.burst_seconds)


def spend(state: BudgetState, allowance: Allowance, priority: Priority, now: datetime) -> float:
    """Take one call from the budget if its priority may; else the seconds to wait.

    Pure: `state` is updated in place for the caller to store.
    """
    if state.blocked_until is not None and state.blocked_until > now:
        return (state.blocked_until - now).total_seconds()
    per_minute = rate(state, allowance, now)
    room = capacity(per_minute, allowance)
    elapsed = max((now - state.counted_at).total_seconds(), 0.0)
    state.tokens = min(room, state.tokens + elapsed * per_minute / 60)
    state.counted_at = now
    needed = 1.0 + RESERVE[priority] * room
    if state.tokens >= needed:
        state.tokens -= 1.0
        return 0.0
    return (needed - state.tokens) * 60 / per_minute


def limited(state: BudgetState, allowance: Allowance, retry_after: float, now: datetime) -> None:
    """Slack answered 429: wait `retry_after`, then go on at a lower allowance.

    Calls already on their way when the first 429 came meet 429s of their own; those extend
    the wait but do not lower the allowance again (one decrease per rate-limited spell).
    """
    until = now + timedelta(seconds=retry_after)
    spell = state.blocked_until is not None and state.blocked_until > now
    if not spell:
        state.base_per_minute = max(allowance.floor, rate(state, allowance, now) * DECREASE)
    state.blocked_until = max(state.blocked_until or until, until)
    state.since = state.blocked_until
    state.tokens = 0.0
    state.counted_at = state.blocked_until


def fresh(allowance: Allowance, now: datetime) -> BudgetState:
    """A budget never used: a full bucket at the configured rate."""
    return BudgetState(
        tokens=capacity(allowance.per_minute, allowance),
        counted_at=now,
        base_per_minute=allowance.per_minute,
        since=now,
    )


class BudgetBook(Protocol):
    """Where budgets are kept: the store (shared by every replica), or `MemoryBook`."""

    async def spend_budget(
        self, family: str, scope: str, allowance: Allowance, priority: Priority
    ) -> float: ...

    async def budget_limited(
        self, family: str, scope: str, allowance: Allowance, retry_after: float
    ) -> None: ...


class MemoryBook:
    """Budgets in this process only: for the CLI, which is one process on its own."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self._clock = clock
        self._states: dict[tuple[str, str], BudgetState] = {}

    def _state(self, family: str, scope: str, allowance: Allowance) -> BudgetState:
        key = (family, scope)
        if key not in self._states:
            self._states[key] = fresh(allowance, self._clock())
        return self._states[key]

    async def spend_budget(
        self, family: str, scope: str, allowance: Allowance, priority: Priority
    ) -> float:
        return spend(self._state(family, scope, allowance), allowance, priority, self._clock())

    async def budget_limited(
        self, family: str, scope: str, allowance: Allowance, retry_after: float
    ) -> None:
        limited(self._state(family, scope, allowance), allowance, retry_after, self._clock())
