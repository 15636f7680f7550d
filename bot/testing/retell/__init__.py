"""A local stand-in for Retell's batch-test and agent API, served over real HTTP.

The bot's tests, `retell-bot demo` and the benchmarks need a Retell that behaves like the real one
(paths, JSON shapes, validation, pagination, gradual progress, rate limits) without a network, an
account or spend. The official `retell.AsyncRetell` SDK pointed at `FakeRetell.base_url` parses
every answer, so the code under test runs exactly as it does against production.

Time comes from an injectable clock: tests advance a fake clock instead of sleeping, and
benchmarks compress long batches with `time_scale`. A batch's outcomes are fixed when it is
created and its cases complete at evenly spread times, so any state is computed on demand in
O(log N) from the clock; nothing ticks in the background.

Standalone: `python -m bot.testing.retell --port 0 --api-key KEY` prints
`READY http://127.0.0.1:PORT` once listening; `/_control/*` endpoints (no auth) seed and steer it.

The package is split by responsibility: `model` (types and records), `parsing` and `answers`
(reading requests, writing answers), one mixin per part of `FakeRetell` on the shared
`state` (`seeding`, `rules`, `observation`, `definitions`, `batches`, `agents`, `control`),
combined in `server`, and `__main__` for the standalone process.
"""

from bot.testing.retell.model import (
    BATCH_HEX_LENGTH,
    BATCH_ID_PREFIX,
    DEFAULT_FAULT_MESSAGES,
    DEFAULT_PAGE_SIZE,
    ENGINE_ID_KEYS,
    ENGINE_LABELS,
    ERROR_EXPLANATIONS,
    FAIL_EXPLANATIONS,
    JOB_ID_PREFIX,
    JOB_INDEX_HEX_LENGTH,
    MAX_CASES_PER_BATCH,
    MAX_PAGE_SIZE,
    RUNS_IN_PARALLEL,
    SIMULATION_MODEL,
    UNAUTHORIZED_MESSAGE,
    WAIT_TICK_SECONDS,
    BatchProgress,
    BatchStatus,
    EngineType,
    FakeAgent,
    FakeAgentVersion,
    FakeBatch,
    FakeDefinition,
    FakeEngine,
    Outcome,
    RecordedRequest,
    RetellStandInError,
    RunStatus,
)
from bot.testing.retell.server import FakeRetell

__all__ = [
    "BATCH_HEX_LENGTH",
    "BATCH_ID_PREFIX",
    "DEFAULT_FAULT_MESSAGES",
    "DEFAULT_PAGE_SIZE",
    "ENGINE_ID_KEYS",
    "ENGINE_LABELS",
    "ERROR_EXPLANATIONS",
    "FAIL_EXPLANATIONS",
    "JOB_ID_PREFIX",
    "JOB_INDEX_HEX_LENGTH",
    "MAX_CASES_PER_BATCH",
    "MAX_PAGE_SIZE",
    "RUNS_IN_PARALLEL",
    "SIMULATION_MODEL",
    "UNAUTHORIZED_MESSAGE",
    "WAIT_TICK_SECONDS",
    "BatchProgress",
    "BatchStatus",
    "EngineType",
    "FakeAgent",
    "FakeAgentVersion",
    "FakeBatch",
    "FakeDefinition",
    "FakeEngine",
    "FakeRetell",
    "Outcome",
    "RecordedRequest",
    "RetellStandInError",
    "RunStatus",
]
