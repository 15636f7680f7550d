"""What the stand-in models: Retell's types and limits, and the records it keeps.

Plain data with no server in sight, so every other module (and any test) can import it.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Any, Literal

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
AGENT_VOICE = "11labs-Adrian"  # the SDK's agent model requires a voice; the bot never reads it

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
class FakeAgentVersion:
    """One version of an agent: the engine version it answers with, and whether it is published.

    A Retell agent's latest version is its draft until published; the bot offers to publish
    an agent whose draft answers with the engine version a green run tested.
    """

    engine_type: EngineType
    engine_id: str
    engine_version: int
    published: bool = False

    @property
    def response_engine(self) -> dict[str, Any]:
        """The version's `response_engine` as Retell returns it on an agent."""
        key = ENGINE_ID_KEYS[self.engine_type]
        return {"type": self.engine_type, key: self.engine_id, "version": self.engine_version}


@dataclass(slots=True)
class FakeAgent:
    """An agent: its name and its versions 0..n (the list's index is the version number)."""

    agent_id: str
    name: str
    versions: list[FakeAgentVersion]
    created_ms: int
    modified_ms: int

    @property
    def latest_version(self) -> int:
        return len(self.versions) - 1


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


def _contains(sorted_values: list[int], value: int) -> bool:
    position = bisect.bisect_left(sorted_values, value)
    return position < len(sorted_values) and sorted_values[position] == value


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
