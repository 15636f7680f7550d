"""The shared Slack budget's arithmetic (`bot.pacing`): bursts, priorities, 429s, recovery."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot import pacing
from bot.pacing import Allowance, MemoryBook, Priority

T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
EDITS = Allowance(per_minute=60, burst_seconds=10)  # a bucket of 10, refilled at 1 a second


def spent_at_once(state: pacing.BudgetState, priority: Priority, now: datetime) -> int:
    taken = 0
    while pacing.spend(state, EDITS, priority, now) == 0.0:
        taken += 1
    return taken


def test_a_burst_spends_the_bucket_and_then_waits_for_the_refill() -> None:
    state = pacing.fresh(EDITS, T0)
    assert spent_at_once(state, Priority.RESULT, T0) == 10
    wait = pacing.spend(state, EDITS, Priority.RESULT, T0)
    assert 0.9 < wait <= 1.0, "one more in about a second"
    assert pacing.spend(state, EDITS, Priority.RESULT, T0 + timedelta(seconds=1)) == 0.0


def test_progress_leaves_a_quarter_to_results_and_mentions_a_tenth() -> None:
    state = pacing.fresh(EDITS, T0)
    assert spent_at_once(state, Priority.PROGRESS, T0) == 7, "3 of 10 left: more than a quarter"
    assert spent_at_once(state, Priority.MENTION, T0) == 2, "1 left: a tenth of 10"
    assert spent_at_once(state, Priority.RESULT, T0) == 1, "results may spend what is left"


def test_a_429_blocks_for_retry_after_lowers_the_rate_once_and_it_grows_back() -> None:
    state = pacing.fresh(EDITS, T0)
    pacing.limited(state, EDITS, 30.0, T0)
    pacing.limited(state, EDITS, 30.0, T0 + timedelta(seconds=1))  # the same spell
    assert pacing.spend(state, EDITS, Priority.RESULT, T0 + timedelta(seconds=11)) == 20.0
    after = T0 + timedelta(seconds=31)
    assert pacing.rate(state, EDITS, after) == 45.0, "a quarter less, once"
    assert pacing.rate(state, EDITS, after + pacing.RECOVERY / 4) == 60.0, "back to the rate"
    assert pacing.rate(state, EDITS, after + pacing.RECOVERY * 10) == EDITS.ceiling, "not beyond"


def test_repeated_429s_never_stop_calls_altogether() -> None:
    state = pacing.fresh(EDITS, T0)
    now = T0
    for _ in range(20):
        pacing.limited(state, EDITS, 1.0, now)
        now += timedelta(seconds=1)
    assert pacing.rate(state, EDITS, now) >= EDITS.floor > 0
    assert pacing.spend(state, EDITS, Priority.RESULT, now + timedelta(minutes=1)) == 0.0


async def test_the_memory_book_keeps_a_budget_per_family_and_scope() -> None:
    now = [T0]
    book = MemoryBook(lambda: now[0])
    for _ in range(10):
        assert await book.spend_budget("chat.update", "T1", EDITS, Priority.RESULT) == 0.0
    assert await book.spend_budget("chat.update", "T1", EDITS, Priority.RESULT) > 0
    assert await book.spend_budget("chat.update", "T2", EDITS, Priority.RESULT) == 0.0
    await book.budget_limited("chat.postMessage", "C1", EDITS, 5.0)
    assert await book.spend_budget("chat.postMessage", "C1", EDITS, Priority.RESULT) == 5.0
