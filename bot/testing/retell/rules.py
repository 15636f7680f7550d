"""Misbehaviour on request: injected faults, held requests and endless pagination.

The rules are queued here and used up by `FakeRetell`'s middleware (`_take_rule`,
`_without_end`), before and after the real handler runs.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import TypeVar

from aiohttp import web

from bot.testing.retell.answers import _page
from bot.testing.retell.model import DEFAULT_FAULT_MESSAGES, _Delay, _Fault
from bot.testing.retell.state import RetellState

_Rule = TypeVar("_Rule", _Fault, _Delay)


class RulesMixin(RetellState):
    """`fail_next`, `delay` and `paginate_without_end`, and their undoing."""

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


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


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


def _without_end(response: web.Response, same_key: str | None, serial: int) -> web.Response:
    assert isinstance(response.body, bytes)
    page = json.loads(response.body)
    return _page(page["items"], True, same_key or f"endless-{serial}")
