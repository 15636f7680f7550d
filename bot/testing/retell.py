"""A local stand-in for Retell's batch-test API, served over real HTTP.

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
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import bisect
import contextlib
import json
import logging
import math
import random
import secrets
import signal
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler

EngineType = Literal["retell-llm", "conversation-flow"]
Outcome = Literal["pass", "fail", "error"]
RunStatus = Literal["pending", "in_progress", "pass", "fail", "error"]
BatchStatus = Literal["in_progress", "complete"]

ENGINE_ID_KEYS: dict[EngineType, str] = {
    "retell-llm": "llm_id",
    "conversation-flow": "conversation_flow_id",
}
ENGINE_LABELS: dict[EngineType, str] = {
    "retell-llm": "Retell LLM",
    "conversation-flow": "Conversation flow",
}
MAX_CASES_PER_BATCH = 1000
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
RUNS_IN_PARALLEL = 20  # how many cases of a batch show `in_progress` at once; the rest `pending`
BATCH_ID_PREFIX = "test_case_batch_job_"
JOB_ID_PREFIX = "test_case_job_"
BATCH_HEX_LENGTH = 24
JOB_INDEX_HEX_LENGTH = 3  # enough for MAX_CASES_PER_BATCH
WAIT_TICK_SECONDS = 0.02
UNAUTHORIZED_MESSAGE = "API key is missing or invalid."
SIMULATION_MODEL = "gpt-4.1"

FAIL_EXPLANATIONS = (
    "The agent did not confirm the refund amount before ending the call.",
    "The agent ended the call without verifying the caller's identity.",
    "The agent quoted a delivery date that contradicts the order record.",
    "The caller asked twice for a human and the agent never offered a transfer.",
)
ERROR_EXPLANATIONS = (
    "The simulation could not finish: the response engine did not reply within 30 seconds.",
    "The run was aborted because a mocked tool returned invalid JSON.",
)
DEFAULT_FAULT_MESSAGES: dict[int, str] = {
    402: "Payment required: the account has insufficient credits.",
    429: "Rate limit exceeded. Please retry later.",
    500: "Internal server error.",
    502: "Bad gateway.",
    503: "Service temporarily unavailable.",
}

log = logging.getLogger(__name__)


class RetellStandInError(Exception):
    """An error answer: HTTP status plus the message that goes into `{"status": "error", ...}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One API request as the stand-in answered it, so tests can assert on traffic."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    status: int
    time: float  # clock() when the request arrived


@dataclass(slots=True)
class FakeEngine:
    """A response engine: its latest version and its test case definitions in creation order."""

    engine_type: EngineType
    engine_id: str
    latest_version: int
    definition_ids: list[str] = field(default_factory=list)
    modified_ms: int = 0  # wall-clock ms of the latest change, as the list calls report it


@dataclass(frozen=True, slots=True)
class FakeDefinition:
    """A test case definition (a simulated caller) belonging to one engine."""

    case_id: str
    name: str
    engine_type: EngineType
    engine_id: str
    created_ms: int


@dataclass(frozen=True, slots=True)
class BatchProgress:
    """A batch's counts as of one clock reading."""

    passed: int
    failed: int
    errored: int
    total: int
    modified_at: float  # clock time of the last count change (creation if none)

    @property
    def completed(self) -> int:
        return self.passed + self.failed + self.errored

    @property
    def status(self) -> BatchStatus:
        return "complete" if self.completed >= self.total else "in_progress"


@dataclass(slots=True)
class FakeBatch:
    """A batch test: its cases, their outcomes (fixed at creation) and its completion timeline.

    Case `i` of `N` completes `duration * (i + 1) / N` simulated seconds after the start, so the
    state at any clock reading follows from arithmetic and two binary searches.
    """

    batch_id: str
    engine_type: EngineType
    engine_id: str
    version: int  # resolved: the latest version at creation when the request named none
    response_engine: dict[str, Any]  # echoed as sent
    case_ids: list[str]
    fail_indices: list[int]  # sorted
    error_indices: list[int]  # sorted
    explanations: dict[int, str]
    started_at: float  # clock()
    created_ms: int
    duration: float  # simulated seconds until the last case completes
    time_scale: float
    stalled: bool = False  # the last case never completes (timeouts)
    finished_at: float | None = None  # forced completion (finish_now)

    @property
    def total(self) -> int:
        return len(self.case_ids)

    def completed(self, now: float) -> int:
        """How many cases have completed at clock time `now`."""
        total = self.total
        if self.finished_at is not None and now >= self.finished_at:
            return total
        if self.duration <= 0:
            done = total
        else:
            elapsed = (now - self.started_at) * self.time_scale
            done = max(0, min(total, math.floor(elapsed * total / self.duration + 1e-9)))
        return min(done, total - 1) if self.stalled else done

    def changed_at(self, completed: int) -> float:
        """Clock time at which the completed count reached `completed`."""
        if completed <= 0:
            return self.started_at
        if self.stalled and completed >= self.total:
            natural = math.inf
        else:
            span = max(self.duration, 0.0) / self.time_scale
            natural = self.started_at + span * completed / self.total
        return natural if self.finished_at is None else min(natural, self.finished_at)

    def outcome(self, index: int) -> Outcome:
        if _contains(self.error_indices, index):
            return "error"
        if _contains(self.fail_indices, index):
            return "fail"
        return "pass"

    def progress(self, now: float) -> BatchProgress:
        done = self.completed(now)
        failed = bisect.bisect_left(self.fail_indices, done)
        errored = bisect.bisect_left(self.error_indices, done)
        return BatchProgress(
            passed=done - failed - errored,
            failed=failed,
            errored=errored,
            total=self.total,
            modified_at=self.changed_at(done),
        )

    def run_status(self, index: int, completed: int) -> RunStatus:
        if index < completed:
            return self.outcome(index)
        if index < completed + RUNS_IN_PARALLEL:
            return "in_progress"
        return "pending"

    def run_changed_at(self, index: int, completed: int) -> float:
        if index < completed:
            return self.changed_at(index + 1)
        if index < completed + RUNS_IN_PARALLEL:
            return self.changed_at(index - RUNS_IN_PARALLEL + 1)
        return self.started_at

    def wall_ms(self, clock_time: float) -> int:
        """Milliseconds since epoch for a clock reading, anchored at the batch's creation."""
        return self.created_ms + round((clock_time - self.started_at) * 1000)

    def job_id(self, index: int) -> str:
        return f"{JOB_ID_PREFIX}{self.batch_id.removeprefix(BATCH_ID_PREFIX)}{index:03x}"


@dataclass(slots=True)
class _Fault:
    path_prefix: str
    status: int
    remaining: int
    retry_after: float | None
    message: str


@dataclass(slots=True)
class _Delay:
    path_prefix: str
    seconds: float
    remaining: int | None  # None: every matching request
    answer_late: bool = False  # handle at once, hold only the answer


class FakeRetell:
    """An in-memory Retell batch-test API on a local port, with seeding, faults and observation."""

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
        # A real server may return fewer items than `limit` asks. When set, every `/v2/list-*`
        # page (batch tests, test runs, definitions, LLMs, flows) holds at most this many
        # items, with has_more/pagination_key as usual, so clients must follow the keys.
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
        self._outcomes: dict[str, tuple[Outcome, str | None]] = {}
        self._outcome_scripts: dict[str, list[tuple[Outcome, str | None]]] = {}
        self._batches_by_version: dict[tuple[str, int], list[FakeBatch]] = {}
        self._faults: list[_Fault] = []
        self._delays: list[_Delay] = []
        self._endless: dict[str, bool] = {}  # path prefix -> the same pagination_key every time
        self._requests_by_prefix: Counter[str] = Counter()
        self._requests_by_minute: Counter[int] = Counter()
        self._activity = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None

    # ----- lifecycle -------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on `host:port` (0 picks a free port) and return the base URL."""
        if self._runner is not None:
            raise RuntimeError("FakeRetell is already running")
        runner = web.AppRunner(self._build_app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        bound_port = runner.addresses[0][1]
        url_host = f"[{host}]" if ":" in host else host
        self._base_url = f"http://{url_host}:{bound_port}"
        return self._base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            self._base_url = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("FakeRetell is not started")
        return self._base_url

    # ----- seeding ---------------------------------------------------------------------------

    def add_engine(self, engine_type: EngineType, engine_id: str, *, versions: int = 1) -> None:
        """Create an engine with versions 0..versions-1, or publish more versions of one."""
        if versions < 1:
            raise ValueError("an engine has at least one version")
        engine = self._engines.get(engine_id)
        if engine is None:
            self._engines[engine_id] = FakeEngine(
                engine_type, engine_id, versions - 1, modified_ms=self._wall_ms()
            )
        elif engine.engine_type != engine_type:
            raise ValueError(f"{engine_id} already exists as a {engine.engine_type} engine")
        else:
            engine.latest_version = max(engine.latest_version, versions - 1)
            engine.modified_ms = self._wall_ms()

    def add_definition(self, engine_id: str, case_id: str, name: str) -> None:
        """Add a test case definition to an existing engine."""
        engine = self._engines.get(engine_id)
        if engine is None:
            raise KeyError(f"unknown engine {engine_id}; add_engine() first")
        if case_id in self._definitions:
            raise ValueError(f"test case definition {case_id} already exists")
        self._definitions[case_id] = FakeDefinition(
            case_id, name, engine.engine_type, engine_id, self._wall_ms()
        )
        engine.definition_ids.append(case_id)

    def seed(
        self,
        engine_id: str,
        count: int,
        *,
        prefix: str = "tc_",
        engine_type: EngineType | None = None,
    ) -> list[str]:
        """Add the engine if missing and `count` definitions named "Case 1".. for it.

        Ids are `<prefix><n>` with the lowest free numbers, so they stay unique across engines
        (`tc_1..tc_3` for one engine, then `tc_4..` for the next). The type is inferred from
        the id (`conversation_flow_…` or else `retell-llm`) unless given.
        """
        if engine_id not in self._engines:
            self.add_engine(engine_type or _infer_engine_type(engine_id), engine_id)
        engine = self._engines[engine_id]
        ids: list[str] = []
        number = 1
        while len(ids) < count:
            case_id = f"{prefix}{number}"
            number += 1
            if case_id not in self._definitions:
                self.add_definition(engine_id, case_id, f"Case {len(engine.definition_ids) + 1}")
                ids.append(case_id)
        return ids

    def set_outcome(self, case_id: str, status: Outcome, explanation: str | None = None) -> None:
        """Fix what a case resolves to in batches created from now on.

        Without it a case passes, unless its id contains "error" (errors) or "fail" (fails).
        """
        self._outcomes[case_id] = (status, explanation)

    def script_outcomes(self, case_id: str, outcomes: list[tuple[Outcome, str | None]]) -> None:
        """What a case resolves to in the next batches that include it, one entry per batch.

        Once the script is used up, `set_outcome` (or the id-based default) applies again;
        this is how a test makes a case flaky across repeated runs of one suite.
        """
        self._outcome_scripts[case_id] = list(outcomes)

    def create_batch_directly(
        self, engine: dict[str, Any], case_ids: list[str], *, duration: float | None = None
    ) -> str:
        """Create a batch as Retell's dashboard or a CI job would; returns its id.

        Validation is the API's: invalid input raises `RetellStandInError`.
        """
        return self._create_batch(engine, case_ids, duration=duration).batch_id

    def _drawn_duration(self) -> float:
        if self.shortest_batch_seconds is None:
            return self.batch_seconds
        return self._durations.uniform(self.shortest_batch_seconds, self.batch_seconds)

    def set_batch_duration(self, seconds: float) -> None:
        """Simulated seconds that new batches take, unless `next_batch_durations` says otherwise."""
        self.batch_seconds = seconds

    def finish_now(self, batch_id: str) -> None:
        """Complete every remaining case of a batch at the current clock time."""
        batch = self.batches[batch_id]
        now = self._clock()
        batch.finished_at = now if batch.finished_at is None else min(batch.finished_at, now)

    # ----- fault injection -------------------------------------------------------------------

    def fail_next(
        self,
        path_prefix: str,
        status: int,
        *,
        times: int = 1,
        retry_after: float | None = None,
        message: str | None = None,
    ) -> None:
        """Answer the next `times` requests whose path starts with `path_prefix` with `status`."""
        if times < 1:
            raise ValueError("times must be at least 1")
        text = message or DEFAULT_FAULT_MESSAGES.get(status) or _reason(status)
        self._faults.append(_Fault(path_prefix, status, times, retry_after, text))

    def clear_faults(self) -> int:
        """Forget every fault still queued by `fail_next`: Retell recovers. Returns how many."""
        dropped = sum(fault.remaining for fault in self._faults)
        self._faults.clear()
        return dropped

    def paginate_without_end(self, path_prefix: str, *, same_key: bool = False) -> None:
        """Misbehave like a broken list endpoint: every page under `path_prefix` says `has_more`.

        Each answer repeats the first page's items with a new `pagination_key` (or, with
        `same_key`, the key it was asked with), so a client that trusts `has_more` never stops.
        """
        self._endless[path_prefix] = same_key

    def paginate_normally(self) -> None:
        """Undo every `paginate_without_end`."""
        self._endless.clear()

    def delay(
        self,
        path_prefix: str,
        seconds: float,
        *,
        times: int | None = None,
        answer_late: bool = False,
    ) -> None:
        """Hold matching requests for `seconds` of real time (None `times`: always).

        By default a request is held before it is handled: one whose client stops waiting (or
        dies) meanwhile is never handled and leaves nothing behind but an entry in `dropped`.
        With `answer_late` it is handled (and recorded) at once and only the answer is held,
        like a slow server that does the work anyway: a create request that times out at the
        client still creates its batch.
        """
        self._delays.append(_Delay(path_prefix, seconds, times, answer_late))

    # ----- observation -----------------------------------------------------------------------

    def count(self, path_prefix: str, method: str | None = None) -> int:
        """How many answered API requests match the path prefix (and method, if given)."""
        wanted = method.upper() if method else None
        return sum(
            1
            for request in self.requests
            if request.path.startswith(path_prefix) and wanted in (None, request.method)
        )

    def progress(self, batch_id: str) -> BatchProgress:
        """A batch's counts as of now."""
        return self.batches[batch_id].progress(self._clock())

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until `predicate()` holds, re-checking after each request and on a short tick."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(
                    f"condition not met within {timeout:g}s; {len(self.requests)} API requests "
                    f"answered, the last: {self._describe_last_request()}"
                )
            activity = self._activity
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(activity.wait(), min(WAIT_TICK_SECONDS, remaining))

    def stats(self) -> dict[str, Any]:
        """Request counts per path prefix and per minute, and when each batch completed."""
        now = self._clock()
        batches: dict[str, Any] = {}
        for batch in self.batches.values():
            progress = batch.progress(now)
            complete = progress.status == "complete"
            batches[batch.batch_id] = {
                "total": batch.total,
                "created_ms": batch.created_ms,
                "completed_ms": batch.wall_ms(progress.modified_at) if complete else None,
            }
        return {
            "requests": {
                "total": len(self.requests),
                "by_path": dict(self._requests_by_prefix),
                "by_minute": {str(minute): n for minute, n in self._requests_by_minute.items()},
            },
            "batches": batches,
        }

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

    def _outcome_for(self, case_id: str) -> tuple[Outcome, str | None]:
        script = self._outcome_scripts.get(case_id)
        if script:
            status, explanation = script.pop(0)
        elif case_id in self._outcomes:
            status, explanation = self._outcomes[case_id]
        elif "error" in case_id:
            status, explanation = "error", None
        elif "fail" in case_id:
            status, explanation = "fail", None
        else:
            status, explanation = "pass", None
        if explanation is None and status != "pass":
            pool = ERROR_EXPLANATIONS if status == "error" else FAIL_EXPLANATIONS
            explanation = pool[zlib.crc32(case_id.encode()) % len(pool)]
        return status, explanation

    def _create_batch(
        self, response_engine: Any, case_ids: Any, *, duration: float | None
    ) -> FakeBatch:
        engine_type, engine_id, version = _parse_response_engine(response_engine)
        ids = _parse_case_ids(case_ids)
        engine = self._require_engine(engine_type, engine_id)
        resolved_version = self._resolve_version(engine, version)
        unknown = [
            case_id
            for case_id in dict.fromkeys(ids)
            if case_id not in self._definitions or self._definitions[case_id].engine_id != engine_id
        ]
        if unknown:
            raise RetellStandInError(
                404,
                f"Test case definitions not found for {engine_id}: {_id_list(unknown)}.",
            )
        if duration is None:
            duration = (
                self.next_batch_durations.pop(0)
                if self.next_batch_durations
                else self._drawn_duration()
            )
        fail_indices: list[int] = []
        error_indices: list[int] = []
        explanations: dict[int, str] = {}
        for index, case_id in enumerate(ids):
            status, explanation = self._outcome_for(case_id)
            if status == "fail":
                fail_indices.append(index)
            elif status == "error":
                error_indices.append(index)
            if explanation is not None:
                explanations[index] = explanation
        echoed: dict[str, Any] = {"type": engine_type, ENGINE_ID_KEYS[engine_type]: engine_id}
        if version is not None:
            echoed["version"] = version
        batch = FakeBatch(
            batch_id=BATCH_ID_PREFIX + secrets.token_hex(BATCH_HEX_LENGTH // 2),
            engine_type=engine_type,
            engine_id=engine_id,
            version=resolved_version,
            response_engine=echoed,
            case_ids=ids,
            fail_indices=fail_indices,
            error_indices=error_indices,
            explanations=explanations,
            started_at=self._clock(),
            created_ms=self._wall_ms(),
            duration=duration,
            time_scale=self.time_scale,
            stalled=self.complete_never,
        )
        self.batches[batch.batch_id] = batch
        self._batches_by_version.setdefault((engine_id, resolved_version), []).append(batch)
        return batch

    def _find_batch(self, batch_id: str) -> FakeBatch:
        batch = self.batches.get(batch_id)
        if batch is None:
            raise RetellStandInError(404, f"Batch test {batch_id} not found.")
        return batch

    def _find_run(self, job_id: str) -> tuple[FakeBatch, int]:
        suffix = job_id.removeprefix(JOB_ID_PREFIX)
        batch_hex, index_hex = suffix[:BATCH_HEX_LENGTH], suffix[BATCH_HEX_LENGTH:]
        batch = self.batches.get(BATCH_ID_PREFIX + batch_hex)
        if batch is not None and len(index_hex) == JOB_INDEX_HEX_LENGTH:
            with contextlib.suppress(ValueError):
                index = int(index_hex, 16)
                if index < batch.total:
                    return batch, index
        raise RetellStandInError(404, f"Test run {job_id} not found.")

    def _engine_from_query(self, query: dict[str, str]) -> FakeEngine:
        raw_type = query.get("type")
        if raw_type is None:
            raise RetellStandInError(400, "type is required.")
        engine_type = _engine_type(raw_type, "type")
        id_key = ENGINE_ID_KEYS[engine_type]
        engine_id = query.get(id_key)
        if not engine_id:
            raise RetellStandInError(400, f"{id_key} is required when type is {engine_type}.")
        return self._require_engine(engine_type, engine_id)

    # ----- JSON shapes -----------------------------------------------------------------------

    def _batch_json(self, batch: FakeBatch, now: float) -> dict[str, Any]:
        progress = batch.progress(now)
        return {
            "test_case_batch_job_id": batch.batch_id,
            "status": progress.status,
            "response_engine": dict(batch.response_engine),
            "pass_count": progress.passed,
            "fail_count": progress.failed,
            "error_count": progress.errored,
            "total_count": progress.total,
            "creation_timestamp": batch.created_ms,
            "user_modified_timestamp": batch.wall_ms(progress.modified_at),
        }

    def _definition_json(self, definition: FakeDefinition) -> dict[str, Any]:
        return {
            "test_case_definition_id": definition.case_id,
            "name": definition.name,
            "response_engine": {
                "type": definition.engine_type,
                ENGINE_ID_KEYS[definition.engine_type]: definition.engine_id,
            },
            "type": "simulation",
            "user_prompt": (
                f"You are a customer calling about: {definition.name}. Stay in character, "
                "answer the agent's questions and hang up once your request is handled."
            ),
            "metrics": [
                "The agent understood the caller's request",
                "The agent resolved the request or escalated it correctly",
            ],
            "dynamic_variables": {},
            "tool_mocks": [],
            "llm_model": SIMULATION_MODEL,
            "creation_timestamp": definition.created_ms,
            "user_modified_timestamp": definition.created_ms,
        }

    def _engine_json(self, engine: FakeEngine) -> dict[str, Any]:
        """A Retell LLM or conversation flow as the list calls return it (the main fields)."""
        body: dict[str, Any] = {
            ENGINE_ID_KEYS[engine.engine_type]: engine.engine_id,
            "version": engine.latest_version,
            "is_published": engine.latest_version > 0,
            "last_modification_timestamp": engine.modified_ms,
        }
        if engine.engine_type == "retell-llm":
            body.update(model=SIMULATION_MODEL, general_prompt="You are a helpful agent.")
        else:
            body.update(model_choice={"type": "cascading", "model": SIMULATION_MODEL}, nodes=[])
        return body

    def _run_json(self, batch: FakeBatch, index: int, completed: int) -> dict[str, Any]:
        case_id = batch.case_ids[index]
        done = index < completed
        return {
            "test_case_job_id": batch.job_id(index),
            "status": batch.run_status(index, completed),
            "test_case_definition_id": case_id,
            "test_case_definition_snapshot": self._definition_json(self._definitions[case_id]),
            "result_explanation": batch.explanations.get(index) if done else None,
            "creation_timestamp": batch.created_ms,
            "user_modified_timestamp": batch.wall_ms(batch.run_changed_at(index, completed)),
            "transcript_snapshot": None,
        }

    # ----- API handlers ----------------------------------------------------------------------

    def _page_limit(self, query: dict[str, str]) -> int:
        """The items one list page holds: the validated `limit`, then `page_cap` if smaller."""
        limit = _query_limit(query)
        return limit if self.page_cap is None else min(limit, self.page_cap)

    async def _create_batch_test(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        if "response_engine" not in body:
            raise RetellStandInError(400, "response_engine is required.")
        if "test_case_definition_ids" not in body:
            raise RetellStandInError(400, "test_case_definition_ids is required.")
        batch = self._create_batch(
            body["response_engine"], body["test_case_definition_ids"], duration=None
        )
        return web.json_response(self._batch_json(batch, self._clock()), status=201)

    async def _get_batch_test(self, request: web.Request) -> web.Response:
        batch = self._find_batch(request.match_info["batch_id"])
        return web.json_response(self._batch_json(batch, self._clock()))

    async def _list_batch_tests(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        engine = self._engine_from_query(query)
        version = self._resolve_version(engine, _query_version(query))
        limit = self._page_limit(query)
        batches = self._batches_by_version.get((engine.engine_id, version), [])
        scope = f"batches:{engine.engine_id}:{version}"
        after = _decode_key(query.get("pagination_key"), scope, len(batches))
        start = len(batches) - 1 if after is None else after - 1  # newest first
        stop = max(start - limit, -1)
        now = self._clock()
        items = [self._batch_json(batches[i], now) for i in range(start, stop, -1)]
        has_more = stop >= 0
        return _page(items, has_more, _encode_key(scope, stop + 1) if has_more else None)

    async def _list_test_runs(self, request: web.Request) -> web.Response:
        batch = self._find_batch(request.match_info["batch_id"])
        query = dict(request.query)
        limit = self._page_limit(query)
        scope = f"runs:{batch.batch_id}"
        after = _decode_key(query.get("pagination_key"), scope, batch.total)
        start = 0 if after is None else after + 1
        stop = min(start + limit, batch.total)
        completed = batch.completed(self._clock())
        items = [self._run_json(batch, i, completed) for i in range(start, stop)]
        has_more = stop < batch.total
        return _page(items, has_more, _encode_key(scope, stop - 1) if has_more else None)

    async def _list_test_case_definitions(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        engine = self._engine_from_query(query)
        limit = self._page_limit(query)
        ids = engine.definition_ids
        scope = f"definitions:{engine.engine_id}"
        after = _decode_key(query.get("pagination_key"), scope, len(ids))
        start = 0 if after is None else after + 1
        stop = min(start + limit, len(ids))
        items = [self._definition_json(self._definitions[ids[i]]) for i in range(start, stop)]
        has_more = stop < len(ids)
        return _page(items, has_more, _encode_key(scope, stop - 1) if has_more else None)

    async def _list_engines(self, request: web.Request, engine_type: EngineType) -> web.Response:
        """GET /v2/list-retell-llms and /v2/list-conversation-flows: the account's engines."""
        query = dict(request.query)
        limit = self._page_limit(query)
        order = query.get("sort_order", "ascending")
        if order not in ("ascending", "descending"):
            raise RetellStandInError(400, "sort_order must be 'ascending' or 'descending'.")
        engines = [e for e in self._engines.values() if e.engine_type == engine_type]
        if order == "descending":
            engines.reverse()
        scope = f"engines:{engine_type}:{order}"
        after = _decode_key(query.get("pagination_key"), scope, len(engines))
        start = 0 if after is None else after + 1
        stop = min(start + limit, len(engines))
        items = [self._engine_json(engines[i]) for i in range(start, stop)]
        has_more = stop < len(engines)
        return _page(items, has_more, _encode_key(scope, stop - 1) if has_more else None)

    async def _list_retell_llms(self, request: web.Request) -> web.Response:
        return await self._list_engines(request, "retell-llm")

    async def _list_conversation_flows(self, request: web.Request) -> web.Response:
        return await self._list_engines(request, "conversation-flow")

    async def _get_test_case_definition(self, request: web.Request) -> web.Response:
        case_id = request.match_info["definition_id"]
        definition = self._definitions.get(case_id)
        if definition is None:
            raise RetellStandInError(404, f"Test case definition {case_id} not found.")
        return web.json_response(self._definition_json(definition))

    async def _get_test_run(self, request: web.Request) -> web.Response:
        batch, index = self._find_run(request.match_info["job_id"])
        completed = batch.completed(self._clock())
        return web.json_response(self._run_json(batch, index, completed))

    # ----- control handlers (no auth; for separate-process use) ------------------------------

    async def _control_seed(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        engine_id = _field(body, "engine_id", str)
        raw_type = body.get("engine_type")
        engine_type = (
            _engine_type(raw_type, "engine_type")
            if raw_type is not None
            else _infer_engine_type(engine_id)
        )
        if "versions" in body:
            self.add_engine(engine_type, engine_id, versions=_field(body, "versions", int))
        prefix = _field(body, "prefix", str) if "prefix" in body else "tc_"
        ids = self.seed(
            engine_id, _field(body, "count", int), prefix=prefix, engine_type=engine_type
        )
        return web.json_response({"ids": ids})

    async def _control_outcome(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        status = body.get("status")
        if status not in ("pass", "fail", "error"):
            raise RetellStandInError(400, "status must be pass, fail or error.")
        explanation = body.get("explanation")
        self.set_outcome(
            _field(body, "case_id", str),
            status,
            explanation if isinstance(explanation, str) else None,
        )
        return web.json_response({"ok": True})

    async def _control_fail_next(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        retry_after = body.get("retry_after")
        message = body.get("message")
        self.fail_next(
            _field(body, "path_prefix", str),
            _field(body, "status", int),
            times=_field(body, "times", int) if "times" in body else 1,
            retry_after=float(retry_after) if isinstance(retry_after, int | float) else None,
            message=message if isinstance(message, str) else None,
        )
        return web.json_response({"ok": True})

    async def _control_delay(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        times = body.get("times")
        self.delay(
            _field(body, "path_prefix", str),
            _field(body, "seconds", float),
            times=times if isinstance(times, int) else None,
            answer_late=body.get("answer_late") is True,
        )
        return web.json_response({"ok": True})

    async def _control_create_batch(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        duration = body.get("duration")
        batch = self._create_batch(
            body.get("response_engine"),
            body.get("test_case_definition_ids"),
            duration=float(duration) if isinstance(duration, int | float) else None,
        )
        return web.json_response({"test_case_batch_job_id": batch.batch_id})

    async def _control_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    # ----- plumbing --------------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        @web.middleware
        async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            return await self._middleware(request, handler)

        app = web.Application(middlewares=[middleware])
        app.router.add_post("/create-batch-test", self._create_batch_test)
        app.router.add_get("/get-batch-test/{batch_id}", self._get_batch_test)
        app.router.add_get("/v2/list-batch-tests", self._list_batch_tests)
        app.router.add_get("/v2/list-test-runs/{batch_id}", self._list_test_runs)
        app.router.add_get("/v2/list-test-case-definitions", self._list_test_case_definitions)
        app.router.add_get(
            "/get-test-case-definition/{definition_id}", self._get_test_case_definition
        )
        app.router.add_get("/get-test-run/{job_id}", self._get_test_run)
        app.router.add_get("/v2/list-retell-llms", self._list_retell_llms)
        app.router.add_get("/v2/list-conversation-flows", self._list_conversation_flows)
        app.router.add_post("/_control/seed", self._control_seed)
        app.router.add_post("/_control/outcome", self._control_outcome)
        app.router.add_post("/_control/fail_next", self._control_fail_next)
        app.router.add_post("/_control/delay", self._control_delay)
        app.router.add_post("/_control/create_batch", self._control_create_batch)
        app.router.add_get("/_control/stats", self._control_stats)
        return app

    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/_control/"):
            # Seeding helpers refuse bad input (an unknown engine, a duplicate id) this way.
            return await _answer(request, handler, refused=(KeyError, ValueError))
        arrived = self._clock()
        # The whole request is read before a delay rule is used up, so a test that waits for the
        # rule to be taken knows the request has arrived (and, with `answer_late`, is handled).
        body = await _recorded_body(request)
        delay = _take_rule(self._delays, request.path)
        if delay is not None and not delay.answer_late:
            await asyncio.sleep(delay.seconds)
            if request.transport is None or request.transport.is_closing():
                # Its client went away (timed out, or its process was killed) while the request
                # was held: like a request still in the network, it never reaches Retell.
                self.dropped.append(request.path)
                self._wake()
                return web.Response(status=499)
        endless = next((v for k, v in self._endless.items() if request.path.startswith(k)), None)
        asked_key = request.query.get("pagination_key")
        if endless is not None and asked_key is not None:
            query = {k: v for k, v in request.query.items() if k != "pagination_key"}
            request = request.clone(rel_url=request.rel_url.with_query(query))
        response = self._reject(request) or await _answer(request, handler)
        if endless is not None and isinstance(response, web.Response) and response.status == 200:
            response = _without_end(response, asked_key if endless else None, len(self.requests))
        self._record(request, body, response.status, arrived)
        if delay is not None and delay.answer_late:
            await asyncio.sleep(delay.seconds)
        return response

    def _reject(self, request: web.Request) -> web.Response | None:
        """A 401 for a bad key, or an injected fault, before the real handler runs."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or token.strip() != self.api_key:
            return _error(401, UNAUTHORIZED_MESSAGE)
        fault = _take_rule(self._faults, request.path)
        if fault is None:
            return None
        headers = {} if fault.retry_after is None else {"Retry-After": f"{fault.retry_after:g}"}
        return _error(fault.status, fault.message, headers)

    def _record(self, request: web.Request, body: Any, status: int, arrived: float) -> None:
        self.requests.append(
            RecordedRequest(
                request.method, request.path, dict(request.query), body, status, arrived
            )
        )
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else request.path
        self._requests_by_prefix[route.split("/{", 1)[0]] += 1
        self._requests_by_minute[int((arrived - self._clock_anchor) // 60)] += 1
        self._wake()

    def _wake(self) -> None:
        """Let every `wait_for` look again."""
        activity, self._activity = self._activity, asyncio.Event()
        activity.set()

    def _describe_last_request(self) -> str:
        if not self.requests:
            return "none"
        last = self.requests[-1]
        return f"{last.method} {last.path} -> {last.status}"


# ----- helpers -------------------------------------------------------------------------------

_T = TypeVar("_T")
_Rule = TypeVar("_Rule", _Fault, _Delay)


def _contains(sorted_values: list[int], value: int) -> bool:
    position = bisect.bisect_left(sorted_values, value)
    return position < len(sorted_values) and sorted_values[position] == value


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


def _infer_engine_type(engine_id: str) -> EngineType:
    return "conversation-flow" if engine_id.startswith("conversation_flow_") else "retell-llm"


def _engine_type(value: object, name: str) -> EngineType:
    if value == "retell-llm":
        return "retell-llm"
    if value == "conversation-flow":
        return "conversation-flow"
    if value == "custom-llm":
        raise RetellStandInError(400, "Custom LLM is not supported")
    raise RetellStandInError(400, f"{name} must be 'retell-llm' or 'conversation-flow'.")


def _integral(value: object, name: str) -> int | None:
    """An optional non-negative integer; integral floats (3.0, as the SDK may send) count."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RetellStandInError(400, f"{name} must be a non-negative integer.")
    return value


def _parse_response_engine(value: object) -> tuple[EngineType, str, int | None]:
    if not isinstance(value, dict):
        raise RetellStandInError(400, "response_engine must be an object.")
    engine_type = _engine_type(value.get("type"), "response_engine.type")
    id_key = ENGINE_ID_KEYS[engine_type]
    engine_id = value.get(id_key)
    if not isinstance(engine_id, str) or not engine_id:
        raise RetellStandInError(
            400, f"response_engine.{id_key} is required when type is {engine_type}."
        )
    return engine_type, engine_id, _integral(value.get("version"), "response_engine.version")


def _parse_case_ids(value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise RetellStandInError(
            400, "test_case_definition_ids must be an array of non-empty strings."
        )
    if not 1 <= len(value) <= MAX_CASES_PER_BATCH:
        raise RetellStandInError(
            422,
            f"test_case_definition_ids must contain between 1 and {MAX_CASES_PER_BATCH} ids "
            f"(got {len(value)}).",
        )
    return list(value)


def _id_list(ids: list[str], shown: int = 10) -> str:
    text = ", ".join(ids[:shown])
    return f"{text} and {len(ids) - shown} more" if len(ids) > shown else text


def _query_int(query: dict[str, str], name: str) -> int | None:
    raw = query.get(name)
    if raw is None:
        return None
    try:
        number = float(raw)
    except ValueError:
        number = math.nan
    if not number.is_integer():
        raise RetellStandInError(400, f"{name} must be an integer.")
    return int(number)


def _query_limit(query: dict[str, str]) -> int:
    limit = _query_int(query, "limit")
    if limit is None:
        return DEFAULT_PAGE_SIZE
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise RetellStandInError(400, f"limit must be between 1 and {MAX_PAGE_SIZE}.")
    return limit


def _query_version(query: dict[str, str]) -> int | None:
    version = _query_int(query, "version")
    if version is not None and version < 0:
        raise RetellStandInError(400, "version must be a non-negative integer.")
    return version


def _encode_key(scope: str, position: int) -> str:
    """An opaque pagination key: where the previous page ended, bound to one listing."""
    return base64.urlsafe_b64encode(f"{scope}|{position}".encode()).decode().rstrip("=")


def _decode_key(key: str | None, scope: str, size: int) -> int | None:
    if key is None:
        return None
    with contextlib.suppress(ValueError):
        text = base64.urlsafe_b64decode(key + "=" * (-len(key) % 4)).decode()
        found_scope, _, position = text.rpartition("|")
        if found_scope == scope and 0 <= int(position) < size:
            return int(position)
    raise RetellStandInError(400, "Invalid pagination_key.")


def _without_end(response: web.Response, same_key: str | None, serial: int) -> web.Response:
    assert isinstance(response.body, bytes)
    page = json.loads(response.body)
    return _page(page["items"], True, same_key or f"endless-{serial}")


def _page(items: list[dict[str, Any]], has_more: bool, key: str | None) -> web.Response:
    return web.json_response({"items": items, "has_more": has_more, "pagination_key": key})


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(
        {"status": "error", "message": message}, status=status, headers=headers
    )


def _take_rule(rules: list[_Rule], path: str) -> _Rule | None:
    """The first rule whose prefix matches `path`, using up one of its times."""
    for rule in rules:
        if path.startswith(rule.path_prefix):
            if rule.remaining is not None:
                rule.remaining -= 1
                if rule.remaining <= 0:
                    rules.remove(rule)
            return rule
    return None


async def _recorded_body(request: web.Request) -> Any:
    if not request.body_exists:
        return None
    text = await request.text()
    try:
        return json.loads(text)
    except ValueError:
        return text


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.text())
    except ValueError:
        raise RetellStandInError(400, "Request body must be valid JSON.") from None
    if not isinstance(body, dict):
        raise RetellStandInError(400, "Request body must be a JSON object.")
    return body


def _field(body: dict[str, Any], name: str, kind: type[_T]) -> _T:
    value = body.get(name)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise RetellStandInError(400, f"{name} must be a {kind.__name__}.")
    return value


async def _answer(
    request: web.Request, handler: Handler, *, refused: tuple[type[Exception], ...] = ()
) -> web.StreamResponse:
    """Run a handler, turning every failure into Retell's JSON error body (`refused`: 400)."""
    try:
        return await handler(request)
    except RetellStandInError as exc:
        return _error(exc.status, exc.message)
    except web.HTTPException as exc:
        return _error(exc.status, exc.reason)
    except refused as exc:
        return _error(400, str(exc))
    except Exception:
        log.exception("stand-in handler failed: %s %s", request.method, request.path)
        return _error(500, "Internal server error.")


# ----- standalone process --------------------------------------------------------------------


async def _serve(args: argparse.Namespace) -> None:
    fake = FakeRetell(
        api_key=args.api_key,
        batch_seconds=args.batch_seconds,
        time_scale=args.time_scale,
        shortest_batch_seconds=args.shortest_batch_seconds,
        seed=args.seed,
    )
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    url = await fake.start(args.host, args.port)
    print(f"READY {url}", flush=True)
    try:
        await stopping.wait()
    finally:
        await fake.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bot.testing.retell",
        description="Serve a local stand-in of Retell's batch-test API.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--api-key", default="key_test")
    parser.add_argument("--batch-seconds", type=float, default=1.0)
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument(
        "--shortest-batch-seconds",
        type=float,
        default=None,
        help="spread batch durations uniformly between this and --batch-seconds",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the duration spread")
    asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
