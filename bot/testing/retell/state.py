"""The state every part of `FakeRetell` shares, set up in one place.

The mixins that make up `FakeRetell` (seeding, rules, observation, the API and control
handlers) all derive from `RetellState`, so each knows the attributes' types (for mypy) and
the lookups they share without importing one another's modules.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable

from aiohttp import web

from bot.testing.retell.model import (
    ENGINE_LABELS,
    EngineType,
    FakeAgent,
    FakeBatch,
    FakeDefinition,
    FakeEngine,
    Outcome,
    RecordedRequest,
    RetellStandInError,
    _Delay,
    _Fault,
)


class RetellState:
    """The records, clocks and rules of one stand-in, and the engine lookups all parts use."""

    def __init__(
        self,
        *,
        api_key: str = "key_test",
        clock: Callable[[], float] = time.monotonic,
        batch_seconds: float = 1.0,
        time_scale: float = 1.0,
        shortest_batch_seconds: float | None = None,
        seed: int = 0,
        page_cap: int | None = None,
    ) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        if page_cap is not None and page_cap < 1:
            raise ValueError("page_cap must be at least 1")
        self.api_key = api_key
        self.batch_seconds = batch_seconds
        # When set, new batches take a duration drawn uniformly between this and
        # `batch_seconds` (a seeded draw, so benchmark runs repeat).
        self.shortest_batch_seconds = shortest_batch_seconds
        self._durations = random.Random(seed)
        self.time_scale = time_scale
        self.next_batch_durations: list[float] = []  # consumed first-in first-out by new batches
        self.complete_never = False  # new batches stall one case short of complete
        # A real server may return fewer items than `limit` asks. When set, every list page
        # (batch tests, test runs, definitions, LLMs, flows, agents, agent versions) holds at
        # most this many items, with has_more/pagination_key as usual, so clients must follow
        # the keys.
        # None: pages are as long as `limit` asks; otherwise at least 1.
        self.page_cap: int | None = page_cap
        self.requests: list[RecordedRequest] = []
        # Paths of held requests never handled because their client had gone.
        self.dropped: list[str] = []
        self.batches: dict[str, FakeBatch] = {}
        self._clock = clock
        self._clock_anchor = clock()
        self._wall_anchor_ms = time.time() * 1000
        self._engines: dict[str, FakeEngine] = {}
        self._definitions: dict[str, FakeDefinition] = {}
        # Keyed by case id and engine version (None: whatever the version).
        self._outcomes: dict[tuple[str, int | None], tuple[Outcome, str | None]] = {}
        self._outcome_scripts: dict[tuple[str, int | None], list[tuple[Outcome, str | None]]] = {}
        self._agents: dict[str, FakeAgent] = {}
        # Every accepted publish-agent-version call, in order: (agent_id, version).
        self.publishes: list[tuple[str, int]] = []
        self._batches_by_version: dict[tuple[str, int], list[FakeBatch]] = {}
        self._faults: list[_Fault] = []
        self._delays: list[_Delay] = []
        self._endless: dict[str, bool] = {}  # path prefix -> the same pagination_key every time
        self._requests_by_prefix: Counter[str] = Counter()
        self._requests_by_minute: Counter[int] = Counter()
        self._activity = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None
        # Other Retell accounts served by the same server, by API key (`FakeRetell.add_account`):
        # each is a stand-in of its own (engines, definitions, batches, agents, rules, records)
        # that only its key reaches.
        self._accounts: dict[str, RetellState] = {}
        self._host: RetellState | None = None  # the stand-in serving this account

    # ----- the model -------------------------------------------------------------------------

    def _wall_ms(self, clock_time: float | None = None) -> int:
        reading = self._clock() if clock_time is None else clock_time
        return round(self._wall_anchor_ms + (reading - self._clock_anchor) * 1000)

    def _require_engine(self, engine_type: EngineType, engine_id: str) -> FakeEngine:
        engine = self._engines.get(engine_id)
        if engine is None or engine.engine_type != engine_type:
            raise RetellStandInError(404, f"{ENGINE_LABELS[engine_type]} {engine_id} not found.")
        return engine

    @staticmethod
    def _resolve_version(engine: FakeEngine, version: int | None) -> int:
        if version is None:
            return engine.latest_version
        if version > engine.latest_version:
            raise RetellStandInError(
                404,
                f"Version {version} of {engine.engine_id} not found "
                f"(latest is {engine.latest_version}).",
            )
        return version
