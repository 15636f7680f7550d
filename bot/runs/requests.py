"""Who asked for a run, and what they asked for."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.commands import RunCommand, TestSelection
from bot.store import RunSchedule
from bot.suite import Engine


@dataclass(frozen=True, slots=True)
class Requester:
    """Who asked, where, and how to answer them privately."""

    team_id: str
    channel_id: str
    user_id: str
    response_url: str | None = None
    # A schedule firing has nobody waiting for a private answer: what it would tell its
    # requester (e.g. why the batch could not be created) is posted in the channel instead.
    announce: bool = False


@dataclass(frozen=True, slots=True)
class RunRequest:
    requester: Requester
    engine: Engine
    tests: TestSelection
    source: str = "command"
    rerun_of: int | None = None
    # Slack's trigger_id of the command or press: the same request delivered twice (a Slack
    # retry, a replayed payload) carries the same one and starts nothing the second time.
    request_key: str | None = None
    # A firing of this schedule, due at `scheduled_for` (later means it ran late).
    schedule: RunSchedule | None = None
    scheduled_for: datetime | None = None
    # `repeat=N`: N batches of the suite, reported together as one result.
    repeats: int = 1
    # `compare`: version B of the engine, tested on the same cases as `engine` (A) and
    # compared with it case by case; no version means the engine's latest, resolved at start.
    candidate: Engine | None = None
    # `min_pass=P`: the pass rate (percent) the result must reach to be green.
    min_pass: float | None = None
    # Kept in `acked_commands` before the ack (under `request_key`): forgotten once started.
    recorded: bool = False

    @classmethod
    def asked(cls, who: Requester, command: RunCommand, **details: Any) -> RunRequest:
        """What a `run` or `compare` command asks for; `details` say how it came in."""
        return cls(
            who,
            command.engine,
            command.tests,
            repeats=command.repeats,
            candidate=command.candidate,
            min_pass=command.min_pass,
            **details,
        )

    @property
    def batches(self) -> int:
        """How many batches it starts: `repeats` on each version it tests."""
        return self.repeats * (2 if self.candidate is not None else 1)
