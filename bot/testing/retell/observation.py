"""Observation: what tests and benchmarks read back from a running stand-in.

Request counts, batch progress, waiting for a condition (woken by each answered request)
and the statistics `/_control/stats` serves (publishes included).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from bot.testing.retell.model import WAIT_TICK_SECONDS, BatchProgress
from bot.testing.retell.state import RetellState


class ObservationMixin(RetellState):
    """`count`, `progress`, `wait_for` and `stats`, and the wake-up `wait_for` sleeps on."""

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
        """Request counts per path prefix and per minute, when each batch completed, and every
        accepted publish of an agent version in order."""
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
            "publishes": [
                {"agent_id": agent_id, "version": version} for agent_id, version in self.publishes
            ],
        }

    def _wake(self) -> None:
        """Let every `wait_for` look again."""
        activity, self._activity = self._activity, asyncio.Event()
        activity.set()

    def _describe_last_request(self) -> str:
        if not self.requests:
            return "none"
        last = self.requests[-1]
        return f"{last.method} {last.path} -> {last.status}"
