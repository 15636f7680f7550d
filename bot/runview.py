"""What a run shows to the channel: the view messages and digests read, its pass rate, and how
it compares with the previous run of the same suite.

Pure types with no Slack, SQLAlchemy or SDK in them: `bot.store.Run` fits `RunView`, tests pass
plain dataclasses, and both the Block Kit renderers and `bot.history` build on them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from bot.suite import Engine


@dataclass(frozen=True, slots=True)
class Comparison:
    """How a run differs from the previous run of the same suite in the channel.

    `previous_pass_rate` is a percentage (0-100), None when there is nothing to compare with.
    """

    previous_pass_rate: float | None
    newly_failing: tuple[str, ...] = ()
    fixed: tuple[str, ...] = ()


class RunView(Protocol):
    """What messages read from a run; `bot.store.Run` fits it, tests pass plain dataclasses."""

    @property
    def id(self) -> int: ...
    @property
    def channel_id(self) -> str: ...
    @property
    def user_id(self) -> str: ...
    @property
    def engine(self) -> Engine: ...
    @property
    def case_count(self) -> int: ...
    @property
    def case_ids(self) -> Sequence[str]: ...
    @property
    def state(self) -> str: ...
    @property
    def batch_id(self) -> str | None: ...
    @property
    def error(self) -> str | None: ...
    @property
    def passed(self) -> int: ...
    @property
    def failed(self) -> int: ...
    @property
    def errored(self) -> int: ...
    @property
    def total(self) -> int: ...
    @property
    def completed(self) -> int: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def started_at(self) -> datetime | None: ...
    @property
    def finished_at(self) -> datetime | None: ...
    @property
    def duration(self) -> timedelta | None: ...
    @property
    def source(self) -> str: ...
    @property
    def rerun_of(self) -> int | None: ...
    @property
    def label(self) -> str | None: ...
    @property
    def scheduled_for(self) -> datetime | None: ...
    @property
    def min_pass(self) -> float | None: ...


def pass_rate(passed: int, total: int) -> float | None:
    return 100.0 * passed / total if total > 0 else None
