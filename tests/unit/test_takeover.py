"""A run taken over from a starter whose claim ran out belongs to the peer that took it.

The chaos run (issue 14) saw a starter, whose claim had run out while it created the batch,
record the batch after a peer had already claimed the run to recover it: the peer then found
the batch, could not adopt it (the run was no longer `starting`) and created a second one,
followed by nobody. Recording a batch now needs the claim, and a recovery that loses the run
creates nothing.
"""

from __future__ import annotations

from datetime import timedelta

from bot.retell import BatchJob
from bot.store import Run, RunState, Store, create_engine, utcnow
from bot.suite import Engine, Suite

LEASE = timedelta(seconds=30)
SUITE = Suite(Engine.from_id("llm_abc"), ("tc_1",))


def batch(batch_id: str) -> BatchJob:
    return BatchJob(
        batch_id=batch_id,
        engine=SUITE.engine,
        status="in_progress",
        passed=0,
        failed=0,
        errored=0,
        total=1,
        created_ms=int(utcnow().timestamp() * 1000),
        modified_ms=int(utcnow().timestamp() * 1000),
    )


async def started(store: Store, run: Run, claim: str | None, batch_id: str) -> str | None:
    return await store.mark_started(
        run.id, batch(batch_id), first_check_in=1.0, now=utcnow(), lease=LEASE, claim=claim
    )


async def test_a_starter_whose_claim_was_taken_over_cannot_record_its_batch(
    database_url: str,
) -> None:
    store = Store(create_engine(database_url))
    try:
        await store.upgrade()
        run = await store.add_run(
            team_id="T1", channel_id="C1", user_id="U1", suite=SUITE, lease=LEASE
        )
        assert run is not None and run.claim is not None
        starter = run.claim
        # The starter's lease runs out (its database lost, its process frozen): a peer's
        # sweep claims the run as an interrupted start.
        later = utcnow() + LEASE * 2
        peer, claimed = await store.claim_due(now=later, lease=LEASE, limit=2)
        assert [r.id for r in claimed] == [run.id]

        assert await started(store, run, starter, "batch_of_the_starter") is None
        assert await started(store, run, peer, "batch_of_the_starter") == peer
        current = await store.get(run.id)
        assert current is not None
        assert current.state == RunState.RUNNING.value
        assert current.batch_id == "batch_of_the_starter"
        assert current.claim == peer
    finally:
        await store.close()


async def test_a_starter_whose_claim_was_taken_over_cannot_fail_the_run(database_url: str) -> None:
    """A create that Retell refused late (after the lease ran out) must not fail a run a peer
    is recovering: the peer may already have created its batch, which would then be orphaned
    and the requester told the run was not started."""
    store = Store(create_engine(database_url))
    try:
        await store.upgrade()
        run = await store.add_run(
            team_id="T1", channel_id="C1", user_id="U1", suite=SUITE, lease=LEASE
        )
        assert run is not None and run.claim is not None
        starter = run.claim
        later = utcnow() + LEASE * 2
        peer, claimed = await store.claim_due(now=later, lease=LEASE, limit=2)
        assert [r.id for r in claimed] == [run.id]

        assert not await store.mark_failed(run.id, "Retell is down", now=utcnow(), claim=starter)
        current = await store.get(run.id)
        assert current is not None and current.state == RunState.STARTING.value
        assert current.claim == peer and current.error is None

        assert await started(store, run, peer, "batch_of_the_peer") == peer
        assert not await store.mark_failed(run.id, "too late", now=utcnow(), claim=peer)
        current = await store.get(run.id)
        assert current is not None and current.state == RunState.RUNNING.value
    finally:
        await store.close()
