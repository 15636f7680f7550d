"""Slack budgets: the rows every replica spends its Slack calls from (see `bot.pacing`)."""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from bot import pacing
from bot.pacing import Allowance, BudgetState, MemoryBook, Priority
from bot.store.base import Tables
from bot.store.engine import DATABASE_FAILURES
from bot.store.models import SlackBudget, utcnow

log = logging.getLogger(__name__)


class BudgetRecords(Tables):
    """Spending a budget and recording a 429, each one short transaction on the row."""

    async def spend_budget(
        self, family: str, scope: str, allowance: Allowance, priority: Priority
    ) -> float:
        """One call from the budget (0.0), or the seconds until this priority may call."""
        async with self._sessions.begin() as session:
            row = await self._budget_row(session, family, scope, allowance)
            state = _state(row)
            wait = pacing.spend(state, allowance, priority, utcnow())
            _store(row, state)
            return wait

    async def budget_limited(
        self, family: str, scope: str, allowance: Allowance, retry_after: float
    ) -> None:
        async with self._sessions.begin() as session:
            row = await self._budget_row(session, family, scope, allowance)
            state = _state(row)
            pacing.limited(state, allowance, retry_after, utcnow())
            _store(row, state)

    async def _budget_row(
        self, session: AsyncSession, family: str, scope: str, allowance: Allowance
    ) -> SlackBudget:
        """The row, locked for this transaction; created full on first use."""
        fresh = pacing.fresh(allowance, utcnow())
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        await session.execute(
            dialect.insert(SlackBudget)
            .values(
                family=family,
                scope=scope,
                tokens=fresh.tokens,
                counted_at=fresh.counted_at,
                base_per_minute=fresh.base_per_minute,
                since=fresh.since,
            )
            .on_conflict_do_nothing(index_elements=[SlackBudget.family, SlackBudget.scope])
        )
        result = await session.execute(
            select(SlackBudget)
            .where(SlackBudget.family == family, SlackBudget.scope == scope)
            .with_for_update()
        )
        return result.scalar_one()


def _state(row: SlackBudget) -> BudgetState:
    return BudgetState(
        tokens=row.tokens,
        counted_at=row.counted_at,
        base_per_minute=row.base_per_minute,
        since=row.since,
        blocked_until=row.blocked_until,
    )


def _store(row: SlackBudget, state: BudgetState) -> None:
    row.tokens = state.tokens
    row.counted_at = state.counted_at
    row.base_per_minute = state.base_per_minute
    row.since = state.since
    row.blocked_until = state.blocked_until


class SharedBook:
    """The store's budgets, shared by every replica; this process's own while the database
    cannot be reached, so that a database outage never stops a Slack call on its own."""

    def __init__(self, store: BudgetRecords) -> None:
        self._store = store
        self._own = MemoryBook(utcnow)

    async def spend_budget(
        self, family: str, scope: str, allowance: Allowance, priority: Priority
    ) -> float:
        try:
            return await self._store.spend_budget(family, scope, allowance, priority)
        except DATABASE_FAILURES as exc:
            log.warning("Slack budget not read (%s); this process counts alone", type(exc).__name__)
            return await self._own.spend_budget(family, scope, allowance, priority)

    async def budget_limited(
        self, family: str, scope: str, allowance: Allowance, retry_after: float
    ) -> None:
        await self._own.budget_limited(family, scope, allowance, retry_after)
        try:
            await self._store.budget_limited(family, scope, allowance, retry_after)
        except DATABASE_FAILURES as exc:
            log.warning("Slack's 429 not recorded (%s)", type(exc).__name__)
