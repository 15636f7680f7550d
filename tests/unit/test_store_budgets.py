"""`bot.store` Slack budgets: two replicas (two stores on one database) spend one budget, a 429
seen by one holds the other back, and a database outage falls back to counting alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.exc import OperationalError

from bot.pacing import Allowance, Priority
from bot.store import SharedBook, Store, create_engine

EDITS = Allowance(per_minute=60, burst_seconds=10)  # a bucket of 10


@pytest.fixture
async def replicas(database_url: str) -> AsyncIterator[tuple[Store, Store]]:
    first, second = Store(create_engine(database_url)), Store(create_engine(database_url))
    await first.upgrade()
    yield first, second
    await first.close()
    await second.close()


async def test_two_replicas_spend_one_budget_and_honour_each_others_429(
    replicas: tuple[Store, Store],
) -> None:
    first, second = replicas

    async def spend(store: Store) -> float:
        return await store.spend_budget("chat.update", "T1", EDITS, Priority.RESULT)

    waits = await asyncio.gather(*(spend(first if n % 2 else second) for n in range(14)))
    assert sum(1 for wait in waits if wait == 0.0) == 10, "the bucket of 10, not 10 each"
    assert await second.spend_budget("chat.update", "T2", EDITS, Priority.RESULT) == 0.0

    await first.budget_limited("chat.postMessage", "C1", EDITS, 20.0)
    wait = await second.spend_budget("chat.postMessage", "C1", EDITS, Priority.RESULT)
    assert 19.0 < wait <= 20.0, "the other replica waits out the Retry-After too"


async def test_the_budget_counts_alone_while_the_database_is_down() -> None:
    class Down:
        async def spend_budget(self, *args: object) -> float:
            raise OperationalError("SELECT", {}, ConnectionRefusedError())

        async def budget_limited(self, *args: object) -> None:
            raise OperationalError("UPDATE", {}, ConnectionRefusedError())

    book = SharedBook(Down())  # type: ignore[arg-type]
    waits = [
        await book.spend_budget("chat.update", "T1", EDITS, Priority.RESULT) for _ in range(11)
    ]
    assert waits[:10] == [0.0] * 10 and waits[10] > 0
    await book.budget_limited("chat.update", "T1", EDITS, 5.0)  # recorded here, not lost
    assert 4.9 < await book.spend_budget("chat.update", "T1", EDITS, Priority.RESULT) <= 5.0
