"""What the bot knows of Retell's batch tests, without Retell's SDK: plain values and the failure.

`bot.retell` maps the SDK's objects to these (and re-exports them); the store and the blocks
need only these, so `import bot.store` stays free of retell-sdk, whose models alone take over a
second to import (issue 17: a command that arrives during start-up is kept in the database
before the SDK is loaded).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bot.suite import Engine

BatchStatus = Literal["in_progress", "complete"]
TestRunStatus = Literal["pending", "in_progress", "pass", "fail", "error"]
ProblemKind = Literal[
    "not_found",
    "unauthorized",
    "invalid",
    "payment",
    "rate_limited",
    "unavailable",
    "unexpected",
    "not_connected",  # the workspace has no Retell key of its own, and there is no default
]


@dataclass(frozen=True, slots=True)
class BatchJob:
    """A Retell batch test as the bot follows it."""

    batch_id: str
    engine: Engine
    status: BatchStatus
    passed: int
    failed: int
    errored: int
    total: int
    created_ms: int
    modified_ms: int

    @property
    def completed(self) -> int:
        return self.passed + self.failed + self.errored

    @property
    def is_complete(self) -> bool:
        return self.status == "complete"

    @property
    def counts(self) -> tuple[int, int, int, int]:
        return (self.passed, self.failed, self.errored, self.total)


@dataclass(frozen=True, slots=True)
class TestRun:
    """One test case's run inside a batch."""

    __test__ = False  # not a pytest class

    job_id: str
    case_id: str
    name: str
    status: TestRunStatus
    explanation: str | None


@dataclass(frozen=True, slots=True)
class CaseDefinition:
    case_id: str
    name: str


class RetellProblem(Exception):
    """A Retell call failed; `message` says why in words a Slack user understands."""

    def __init__(
        self, kind: ProblemKind, message: str, status: int | None = None, *, uncertain: bool = False
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        # No answer came back (timeout, dropped connection): Retell may have done it anyway.
        self.uncertain = uncertain
