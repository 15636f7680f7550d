"""How long a process may still act on a claim it holds on runs.

A claim is a lease in the database (`Run.claim`, `Run.claimed_until`): a peer takes the runs
over once it has run out. The holder extends it while it works, but an extension can fail (a
connection killed, the database down) or come late (an event loop stalled), and then the
claim may already be a peer's. Most work under a claim can be checked by the next holder (a
status message is looked for before posting another one), but creating a batch cannot: Retell
has no idempotency key, so a peer that recovers the run and finds no batch creates one. So the
holder bounds the create by its tenure, the time it can still vouch for the claim: the instant
its last successful extension was asked for, plus the lease, less a margin for Retell to
finish a request the client gave up on. A create still under way then is cancelled, and the
peer that takes the run over after the lease finds the batch if Retell made it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import anyio

log = logging.getLogger(__name__)

# Of the lease: how often the claim is extended, how soon a failed extension is tried again,
# and how long before the claim runs out work that must not overlap a peer's is stopped.
EXTEND_EVERY = 1 / 4
RETRY_EVERY = 1 / 10
MARGIN = 1 / 5


class ClaimLapsed(Exception):
    """The claim could not be extended in time: a peer may hold the runs now."""


class Tenure:
    """The holder's own view of one claim: until when it may act on it (event-loop time)."""

    def __init__(self, lease: timedelta, *, taken_at: float) -> None:
        self._lease = lease.total_seconds()
        self._until = self._vouched(taken_at)
        self._bounds: set[anyio.CancelScope] = set()

    def _vouched(self, asked_at: float) -> float:
        return asked_at + self._lease * (1 - MARGIN)

    @property
    def until(self) -> float:
        return self._until

    def extended(self, asked_at: float) -> None:
        """The claim was extended by a statement sent at `asked_at`: the tenure moves on."""
        self._until = max(self._until, self._vouched(asked_at))
        for bound in self._bounds:
            bound.deadline = self._until

    @contextlib.asynccontextmanager
    async def bounding(self) -> AsyncIterator[None]:
        """Run a step only while the claim is vouched for; cancel it and raise ClaimLapsed once
        it is not.

        An anyio cancel scope rather than `asyncio.timeout`: httpcore reads under anyio
        scopes of its own, and a plain task cancellation arriving there was lost (measured:
        the request ran on to its read timeout).
        """
        if anyio.current_time() >= self._until:
            raise ClaimLapsed
        bound = anyio.CancelScope(deadline=self._until)
        self._bounds.add(bound)
        try:
            with bound:
                yield
        finally:
            self._bounds.discard(bound)
        if bound.cancelled_caught:
            raise ClaimLapsed

    async def keep(self, extend: Callable[[float], Awaitable[None]]) -> None:
        """Extend the claim until cancelled; a failed extension is tried again soon.

        `extend(lease_seconds)` moves the claim's expiry in the database. A failure is logged
        once per run of failures, not once per try.
        """
        loop = asyncio.get_running_loop()
        pause = self._lease * EXTEND_EVERY
        failing = False
        while True:
            await asyncio.sleep(pause)
            asked_at = loop.time()
            try:
                await extend(self._lease)
            except Exception as exc:  # the next try may reach the database; the tenure says
                if not failing:  # what may still be done meanwhile
                    log.warning("claim not extended: %s", type(exc).__name__)
                failing = True
                pause = self._lease * RETRY_EVERY
                continue
            if failing:
                log.info("claim extended again")
            failing = False
            pause = self._lease * EXTEND_EVERY
            self.extended(asked_at)
