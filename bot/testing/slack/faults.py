"""Faults on demand and Slack's rate limits: failed, dropped and refused calls."""

from __future__ import annotations

import math
import time
from collections import deque

from aiohttp import web

from bot.testing.slack.records import (
    ApiCall,
    Fault,
    JSONDict,
    RateLimit,
    Rejection,
    SlackApiFailure,
)
from bot.testing.slack.state import SlackState
from bot.testing.slack.tiers import SlackTiers, TierMeter


class FaultsMixin(SlackState):
    """Queued failures per method, sliding-window rate limits, and how refusals are answered."""

    def fail_next(
        self,
        method: str,
        *,
        error: str | None = None,
        status: int | None = None,
        times: int = 1,
        retry_after: float | None = None,
    ) -> None:
        """Make the next `times` calls of `method` ("*" for any) fail.

        With `status` the answer is that HTTP status (429 sends Retry-After, default 1 s);
        without it, HTTP 200 and ``{"ok": false, "error": error}``. `retry_after` alone
        implies 429. Pseudo-methods: "response_url" and "upload".
        """
        if status is None and retry_after is not None:
            status = 429
        if status == 429 and retry_after is None:
            retry_after = 1.0
        if error is None:
            error = "ratelimited" if status == 429 else "fatal_error"
        fault = Fault(error=error, status=status, retry_after=retry_after)
        self._faults.setdefault(method, deque()).extend([fault] * times)

    def drop_next(self, method: str, times: int = 1) -> None:
        """Close the connection on the next `times` calls of `method` without answering."""
        self._faults.setdefault(method, deque()).extend([Fault(drop=True)] * times)

    def lose_answer_next(self, method: str, times: int = 1) -> None:
        """Carry out the next `times` calls of `method`, then close the connection unanswered.

        What a network failure after Slack had the request looks like: the message is posted,
        the caller never learns its `ts`.
        """
        fault = Fault(drop=True, carried_out=True)
        self._faults.setdefault(method, deque()).extend([fault] * times)

    def clear_faults(self, method: str | None = None) -> int:
        """Forget the faults still queued for `method` (None: for every method): Slack recovers.

        Returns how many were dropped.
        """
        methods = list(self._faults) if method is None else [method]
        return sum(len(self._faults.pop(name, ())) for name in methods)

    def limit_rate(self, method: str, *, per_window: int, window_seconds: float) -> None:
        """Rate-limit `method` the way Slack's tiers do (chat.update: Tier 3, ~50/minute).

        Per team (the team of the token), a call beyond `per_window` accepted calls within the
        last `window_seconds` (a sliding window) is refused with HTTP 429, a `Retry-After`
        header (whole seconds until the oldest accepted call leaves the window, at least 1)
        and ``{"ok": false, "error": "ratelimited"}``. Refused calls do not use up the
        allowance; calls with a bad token are refused as such first. Calling it again
        replaces the limit; `rate_limited` keeps counting.
        """
        if per_window < 1:
            raise ValueError("per_window must be at least 1")
        if window_seconds <= 0:
            raise ValueError("window_seconds must be positive")
        self._rate_limits[method] = RateLimit(per_window, window_seconds)

    def set_rate_limits(self, tiers: SlackTiers | None) -> None:
        """Enforce these tiers from now on (None: no tier limits), every allowance full.

        ``SlackTiers()`` is Slack's published tiers; see `bot.testing.slack.tiers`. Limits
        set with `limit_rate` apply as well. `rate_limited` keeps counting.
        """
        self._tiers = None if tiers is None else TierMeter(tiers)

    @property
    def rate_limits(self) -> SlackTiers | None:
        """The tiers enforced now, if any."""
        return None if self._tiers is None else self._tiers.tiers

    def rate_limited(self, method: str | None = None) -> int:
        """How many calls of `method` (None: of any) were refused with 429 by a rate limit.

        Counts the refusals of `limit_rate` and of the tiers, not injected 429s (`fail_next`).
        """
        if method is None:
            return sum(self._rate_limited.values())
        return self._rate_limited[method]

    def _spend_rate_slot(self, method: str, team_id: str, channel: str | None = None) -> None:
        """Count a call against `method`'s limits, or refuse it with 429 if one is spent.

        `channel` is the conversation (for response_url: the URL) a per-channel bucket counts.
        """
        now = time.monotonic()
        limit = self._rate_limits.get(method)
        accepted: deque[float] | None = None
        if limit is not None:
            accepted = limit.accepted.setdefault(team_id, deque())
            while accepted and accepted[0] <= now - limit.window_seconds:
                accepted.popleft()
            if len(accepted) >= limit.per_window:
                self._rate_limited[method] += 1
                wait = max(1, math.ceil(accepted[0] + limit.window_seconds - now))
                reason = (
                    f"more than {limit.per_window} calls in {limit.window_seconds:g}s for {team_id}"
                )
                raise SlackApiFailure("ratelimited", reason, 429, retry_after=str(wait))
        if self._tiers is not None:
            tier_wait = self._tiers.take(method, team_id, channel, now)
            if tier_wait is not None:
                self._rate_limited[method] += 1
                header = self._tiers.tiers.retry_after(tier_wait)
                per_channel = any(b.per == "channel" for b in self._tiers.tiers.methods[method])
                where = f"{team_id} in {channel}" if per_channel else team_id
                reason = f"{method}: tier allowance spent for {where}"
                raise SlackApiFailure("ratelimited", reason, 429, retry_after=header)
        if accepted is not None:
            accepted.append(now)

    def _take_fault(self, method: str) -> Fault | None:
        for key in (method, "*"):
            queue = self._faults.get(key)
            if queue:
                return queue.popleft()
        return None

    def _refuse(self, method: str, params: JSONDict, failure: SlackApiFailure) -> web.Response:
        self.calls.append(ApiCall(method, params, False, time.time()))
        self.rejections.append(Rejection(method, failure.error, failure.reason))
        body: JSONDict = {"ok": False, "error": failure.error}
        if failure.reason != failure.error and failure.status != 429:  # Slack's 429: bare
            body["response_metadata"] = {"messages": [f"[ERROR] {failure.reason}"]}
        headers = {} if failure.retry_after is None else {"Retry-After": str(failure.retry_after)}
        return web.json_response(body, status=failure.status, headers=headers)

    def _apply_fault(
        self, request: web.Request, method: str, params: JSONDict, fault: Fault
    ) -> web.Response:
        self.calls.append(ApiCall(method, params, False, time.time()))
        if fault.drop:
            self.rejections.append(Rejection(method, "dropped", "connection closed on purpose"))
            return self._hang_up(request)
        error = fault.error or "fatal_error"
        self.rejections.append(Rejection(method, error, f"injected (status {fault.status})"))
        headers = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = str(math.ceil(fault.retry_after))
        return web.json_response(
            {"ok": False, "error": error}, status=fault.status or 200, headers=headers
        )

    def _lose_answer(self, request: web.Request, method: str) -> web.Response:
        """After a call carried out under `lose_answer_next`: its answer never arrives."""
        self.rejections.append(Rejection(method, "answer lost", "carried out, then hung up"))
        return self._hang_up(request)

    @staticmethod
    def _hang_up(request: web.Request) -> web.Response:
        if request.transport is not None:
            request.transport.close()
        return web.Response(status=500)  # never reaches the client: the connection is gone
