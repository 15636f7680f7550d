"""`bot.store` claims: a held run is never handed to a second claimer, and a holder gives back
only what its claim still holds (both backends)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import pytest

from bot.retell import BatchJob
from bot.store import Run, RunState, Store, create_engine, utcnow
from bot.suite import Engine, Suite

LEASE = timedelta(seconds=30)
ENGINE = Engine.from_id("llm_claims")


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    store = Store(create_engine(database_url))
    await store.upgrade()
    yield store
    await store.close()


def batch(batch_id: str, *, passed: int = 0) -> BatchJob:
    return BatchJob(batch_id, ENGINE, "in_progress", passed, 0, 0, 2, 0, 0)


async def running(store: Store, batch_id: str, *, now: datetime) -> Run:
    """A running run due for a check at `now`, held by nobody."""
    run = await store.add_run(
        team_id="T1", channel_id="C1", user_id="U1", suite=Suite(ENGINE, ("tc_1", "tc_2"))
    )
    assert run is not None
    token = await store.mark_started(
        run.id, batch(batch_id), first_check_in=0, now=now, lease=LEASE, posting_status=False
    )
    assert token is not None
    await store.release_claim(token)
    return run


async def undelivered(store: Store, batch_id: str, *, now: datetime) -> Run:
    """A complete run whose result is not in Slack yet, held by nobody."""
    run = await running(store, batch_id, now=now)
    assert await store.finish(run.id, RunState.COMPLETE, batch(batch_id, passed=2), now=now)
    return run


async def fetch(store: Store, run_id: int) -> Run:
    run = await store.get(run_id)
    assert run is not None
    return run


async def test_a_held_run_is_not_claimed_again_until_its_lease_runs_out(store: Store) -> None:
    now = utcnow()
    first = await running(store, "batch_1", now=now)
    other = await undelivered(store, "batch_2", now=now)

    claim, claimed = await store.claim_due(now=now, lease=LEASE, limit=10)
    assert [run.id for run in claimed] == [first.id, other.id]
    assert all(run.claim == claim for run in claimed)

    second, none = await store.claim_due(now=now + LEASE / 2, lease=LEASE, limit=10)
    assert none == [] and second != claim

    later = now + LEASE + timedelta(seconds=1)
    third, taken = await store.claim_due(now=later, lease=LEASE, limit=10)
    assert [run.id for run in taken] == [first.id, other.id]
    assert third not in (claim, second)


async def test_extending_a_claim_keeps_its_runs_from_a_second_claimer(store: Store) -> None:
    now = utcnow()
    await running(store, "batch_1", now=now)
    claim, [_] = await store.claim_due(now=now, lease=LEASE, limit=10)

    await store.extend_claim(claim, until=now + 3 * LEASE)
    _, none = await store.claim_due(now=now + 2 * LEASE, lease=LEASE, limit=10)
    assert none == []


async def test_a_holder_whose_claim_was_taken_over_gives_back_nothing(store: Store) -> None:
    now = utcnow()
    run = await undelivered(store, "batch_1", now=now)
    stale, [_] = await store.claim_due(now=now, lease=LEASE, limit=10)
    later = now + LEASE + timedelta(seconds=1)
    holder, [_] = await store.claim_due(now=later, lease=LEASE, limit=10)

    await store.delivery_failed(run.id, stale, retry_in=5, now=later)
    await store.defer_delivery(run.id, stale, retry_in=5, now=later)
    await store.give_up_delivery(run.id, stale, now=later)
    await store.mark_mentioned(run.id, stale)
    assert not await store.mark_reported(run.id, stale, now=later)
    await store.release_claim(stale)
    assert await store.claim_alone(run.id, stale, until=later + LEASE) is None

    kept = await fetch(store, run.id)
    assert kept.claim == holder
    assert kept.delivery_attempts == 0 and kept.reported_at is None and kept.error is None

    await store.delivery_failed(run.id, holder, retry_in=5, now=later)
    released = await fetch(store, run.id)
    assert released.claim is None and released.claimed_until is None
    assert released.delivery_attempts == 1
    assert released.next_check_at == later + timedelta(seconds=5)


async def test_a_reported_result_keeps_the_claim_only_while_its_mention_is_owed(
    store: Store,
) -> None:
    now = utcnow()
    run = await undelivered(store, "batch_1", now=now)
    claim, [_] = await store.claim_due(now=now, lease=LEASE, limit=10)

    assert await store.mark_reported(run.id, claim, now=now, mention=True)
    owed = await fetch(store, run.id)
    assert owed.claim == claim and owed.mention_pending and owed.next_check_at == now
    assert not await store.mark_reported(run.id, claim, now=now)  # reported once only

    await store.mark_mentioned(run.id, claim)
    done = await fetch(store, run.id)
    assert done.claim is None and done.claimed_until is None
    assert not done.mention_pending and done.next_check_at is None

    other = await undelivered(store, "batch_2", now=now)
    claim, [_] = await store.claim_due(now=now, lease=LEASE, limit=10)
    assert await store.mark_reported(other.id, claim, now=now)
    reported = await fetch(store, other.id)
    assert reported.claim is None and reported.claimed_until is None
    assert reported.reported_at == now and reported.next_check_at is None


async def test_a_run_claimed_alone_stays_held_when_the_shared_claim_is_released(
    store: Store,
) -> None:
    now = utcnow()
    first = await running(store, "batch_1", now=now)
    second = await running(store, "batch_2", now=now)
    shared, [_, _] = await store.claim_due(now=now, lease=LEASE, limit=10)

    alone = await store.claim_alone(first.id, shared, until=now + LEASE)
    assert alone is not None and alone != shared
    await store.release_claim(shared)

    assert (await fetch(store, first.id)).claim == alone
    assert (await fetch(store, second.id)).claim is None
    _, [again] = await store.claim_due(now=now, lease=LEASE, limit=10)
    assert again.id == second.id


async def test_recorded_checks_release_only_the_runs_the_claim_holds(store: Store) -> None:
    now = utcnow()
    first = await running(store, "batch_1", now=now)
    claim, [_] = await store.claim_due(now=now, lease=LEASE, limit=10)
    second = await running(store, "batch_2", now=now)
    other, [_] = await store.claim_due(now=now, lease=LEASE, limit=10)

    checked = [(first.id, batch("batch_1", passed=1)), (second.id, batch("batch_2", passed=1))]
    await store.record_checks(claim, checked, interval=10, now=now)

    seen = await fetch(store, first.id)
    assert seen.claim is None and seen.passed == 1 and seen.checks == 1
    assert seen.next_check_at == now + timedelta(seconds=10)
    untouched = await fetch(store, second.id)
    assert untouched.claim == other and untouched.passed == 0 and untouched.checks == 0
