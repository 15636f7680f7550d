"""`bot.tenure`: work under a claim stops before the claim can be a peer's."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from bot.tenure import MARGIN, ClaimLapsed, Tenure

LEASE = timedelta(seconds=0.5)


class Database:
    """Stands in for `Store.extend_claim`: records each try, fails the ones it is told to."""

    def __init__(self, *, failing: set[int] | None = None, always_failing: bool = False) -> None:
        self.tries: list[float] = []
        self._failing = failing or set()
        self._always_failing = always_failing
        self._changed = asyncio.Condition()

    async def extend(self, seconds: float) -> None:
        assert seconds == LEASE.total_seconds()
        async with self._changed:
            self.tries.append(asyncio.get_running_loop().time())
            self._changed.notify_all()
        if self._always_failing or len(self.tries) in self._failing:
            raise ConnectionResetError("the database dropped the connection")

    async def tried(self, count: int) -> None:
        async with asyncio.timeout(5), self._changed:
            await self._changed.wait_for(lambda: len(self.tries) >= count)


async def test_a_step_under_a_claim_that_cannot_be_extended_is_cancelled_in_time() -> None:
    loop = asyncio.get_running_loop()
    taken_at = loop.time()
    tenure = Tenure(LEASE, taken_at=taken_at)
    database = Database(always_failing=True)
    keeper = asyncio.create_task(tenure.keep(database.extend))
    try:
        with pytest.raises(ClaimLapsed):
            async with tenure.bounding():
                await asyncio.Event().wait()  # a create that never answers
    finally:
        keeper.cancel()
    lapsed_after = loop.time() - taken_at
    assert len(database.tries) >= 2, "a failed extension is tried again, not given up"
    assert lapsed_after < LEASE.total_seconds(), "stopped before the lease runs out"
    assert lapsed_after >= LEASE.total_seconds() * (1 - MARGIN) - 0.01


async def test_a_claim_extended_in_time_lets_a_long_step_finish() -> None:
    tenure = Tenure(LEASE, taken_at=asyncio.get_running_loop().time())
    database = Database()
    keeper = asyncio.create_task(tenure.keep(database.extend))
    try:
        async with tenure.bounding():
            await database.tried(6)  # two leases and more
    finally:
        keeper.cancel()
    assert tenure.until > database.tries[-1]


async def test_a_claim_extended_again_after_a_failure_goes_on() -> None:
    tenure = Tenure(LEASE, taken_at=asyncio.get_running_loop().time())
    database = Database(failing={1})
    keeper = asyncio.create_task(tenure.keep(database.extend))
    try:
        async with tenure.bounding():
            await database.tried(5)
    finally:
        keeper.cancel()
    assert tenure.until > database.tries[-1]


async def test_no_step_starts_once_the_claim_has_lapsed() -> None:
    loop = asyncio.get_running_loop()
    tenure = Tenure(LEASE, taken_at=loop.time() - LEASE.total_seconds())
    with pytest.raises(ClaimLapsed):
        async with tenure.bounding():
            pytest.fail("the step ran")
