"""Fresh counts for many batches at once, at the lowest number of Retell requests.

One `/v2/list-batch-tests` page refreshes every batch of an engine that is on it, so the bot
groups the runs it follows by engine and asks once per engine (and per Retell account: each
workspace may have connected its own, and one account's list never shows another's batches).
Only what a list page cannot cover (a batch run on an engine version that is no longer the
latest, or one beyond the first pages) is checked on its own with `get-batch-test`, and only
when that run is due.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from bot.retell import LIST_PAGE_SIZE, BatchJob, RetellGateway, RetellProblem
from bot.suite import Engine
from bot.workspaces.accounts import RetellAccounts

log = logging.getLogger(__name__)

MAX_LIST_PAGES = 3
MIN_LIST_PAGE = 50  # Retell's default page size


@dataclass(frozen=True, slots=True)
class Followed:
    """A batch the bot follows, and whether its own follow-up is due (not just its engine's)."""

    batch_id: str
    engine: Engine
    due: bool
    team_id: str = ""


@dataclass(slots=True)
class Refresh:
    """What one refresh learnt: fresh batches by id, and the problems met on the way."""

    batches: dict[str, BatchJob] = field(default_factory=dict)
    problems: dict[str, RetellProblem] = field(default_factory=dict)


class BatchRefresher:
    """Refreshes followed batches, account by account and engine by engine, with bounded
    concurrency."""

    def __init__(self, retell: RetellAccounts, *, concurrency: int = 8) -> None:
        self._retell = retell
        self._limit = asyncio.Semaphore(concurrency)
        # How deep into each engine's list the followed batches reached last time: a long
        # batch outlives newer short ones, and a page sized by count alone would miss it.
        self._depth: dict[tuple[str, Engine], int] = {}

    async def refresh(self, followed: Iterable[Followed]) -> Refresh:
        items = list(followed)
        teams = {item.team_id for item in items}
        scopes = {team: await self._retell.budget_scope(team) for team in teams}
        by_engine: dict[tuple[str, Engine], list[Followed]] = defaultdict(list)
        for item in items:
            by_engine[scopes[item.team_id], item.engine].append(item)
        refresh = Refresh()
        await asyncio.gather(
            *(
                self._refresh_engine(self._retell.of(group[0].team_id), scope, group, refresh)
                for scope, group in by_engine.items()
            )
        )
        return refresh

    async def _refresh_engine(
        self,
        retell: RetellGateway,
        scope: tuple[str, Engine],
        items: Sequence[Followed],
        refresh: Refresh,
    ) -> None:
        wanted = {item.batch_id for item in items}
        if len(items) > 1 or not items[0].due:
            await self._from_list_pages(retell, scope, wanted, refresh)
        leftovers = [item for item in items if item.batch_id in wanted and item.due]
        await asyncio.gather(*(self._one(retell, item.batch_id, refresh) for item in leftovers))

    async def _from_list_pages(
        self,
        retell: RetellGateway,
        scope: tuple[str, Engine],
        wanted: set[str],
        refresh: Refresh,
    ) -> None:
        # Batches come newest first and the ones followed are recent: a page twice their
        # number (or a quarter deeper than they reached last time) covers them without parsing
        # the engine's whole history on every sweep.
        engine = scope[1]
        depth = self._depth.get(scope, 0)
        limit = min(LIST_PAGE_SIZE, max(MIN_LIST_PAGE, 2 * len(wanted), depth + depth // 4))
        key: str | None = None
        seen = 0
        for _ in range(MAX_LIST_PAGES):
            try:
                async with self._limit:
                    page, key = await retell.list_batches(engine, pagination_key=key, limit=limit)
            except RetellProblem as problem:
                log.warning("listing batches of %s failed: %s", engine.label, problem.message)
                return
            for batch in page:
                seen += 1
                if batch.batch_id in wanted:
                    refresh.batches[batch.batch_id] = batch
                    wanted.discard(batch.batch_id)
                    self._depth[scope] = seen
            if not wanted or key is None:
                return

    async def _one(self, retell: RetellGateway, batch_id: str, refresh: Refresh) -> None:
        try:
            async with self._limit:
                refresh.batches[batch_id] = await retell.get_batch(batch_id)
        except RetellProblem as problem:
            refresh.problems[batch_id] = problem
