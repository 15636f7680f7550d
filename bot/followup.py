"""Fresh counts for many batches at once, at the lowest number of Retell requests.

One `/v2/list-batch-tests` page refreshes every batch of an engine that is on it, so the bot
groups the runs it follows by engine and asks once per engine. Only what a list page cannot
cover (a batch run on an engine version that is no longer the latest, or one beyond the first
pages) is checked on its own with `get-batch-test`, and only when that run is due.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from bot.retell import LIST_PAGE_SIZE, BatchJob, RetellGateway, RetellProblem
from bot.suite import Engine

log = logging.getLogger(__name__)

MAX_LIST_PAGES = 3
MIN_LIST_PAGE = 50  # Retell's default page size


@dataclass(frozen=True, slots=True)
class Followed:
    """A batch the bot follows, and whether its own follow-up is due (not just its engine's)."""

    batch_id: str
    engine: Engine
    due: bool


@dataclass(slots=True)
class Refresh:
    """What one refresh learnt: fresh batches by id, and the problems met on the way."""

    batches: dict[str, BatchJob] = field(default_factory=dict)
    problems: dict[str, RetellProblem] = field(default_factory=dict)


class BatchRefresher:
    """Refreshes followed batches, engine by engine, with bounded concurrency."""

    def __init__(self, retell: RetellGateway, *, concurrency: int = 8) -> None:
        self._retell = retell
        self._limit = asyncio.Semaphore(concurrency)
        # How deep into each engine's list the followed batches reached last time: a long
        # batch outlives newer short ones, and a page sized by count alone would miss it.
        self._depth: dict[Engine, int] = {}

    async def refresh(self, followed: Iterable[Followed]) -> Refresh:
        by_engine: dict[Engine, list[Followed]] = defaultdict(list)
        for item in followed:
            by_engine[item.engine].append(item)
        refresh = Refresh()
        await asyncio.gather(
            *(self._refresh_engine(engine, items, refresh) for engine, items in by_engine.items())
        )
        return refresh

    async def _refresh_engine(
        self, engine: Engine, items: Sequence[Followed], refresh: Refresh
    ) -> None:
        wanted = {item.batch_id for item in items}
        if len(items) > 1 or not items[0].due:
            await self._from_list_pages(engine, wanted, refresh)
        leftovers = [item for item in items if item.batch_id in wanted and item.due]
        await asyncio.gather(*(self._one(item.batch_id, refresh) for item in leftovers))

    async def _from_list_pages(self, engine: Engine, wanted: set[str], refresh: Refresh) -> None:
        # Batches come newest first and the ones followed are recent: a page twice their
        # number (or a quarter deeper than they reached last time) covers them without parsing
        # the engine's whole history on every sweep.
        depth = self._depth.get(engine, 0)
        limit = min(LIST_PAGE_SIZE, max(MIN_LIST_PAGE, 2 * len(wanted), depth + depth // 4))
        key: str | None = None
        seen = 0
        for _ in range(MAX_LIST_PAGES):
            try:
                async with self._limit:
                    page, key = await self._retell.list_batches(
                        engine, pagination_key=key, limit=limit
                    )
            except RetellProblem as problem:
                log.warning("listing batches of %s failed: %s", engine.label, problem.message)
                return
            for batch in page:
                seen += 1
                if batch.batch_id in wanted:
                    refresh.batches[batch.batch_id] = batch
                    wanted.discard(batch.batch_id)
                    self._depth[engine] = seen
            if not wanted or key is None:
                return

    async def _one(self, batch_id: str, refresh: Refresh) -> None:
        try:
            async with self._limit:
                refresh.batches[batch_id] = await self._retell.get_batch(batch_id)
        except RetellProblem as problem:
            refresh.problems[batch_id] = problem
