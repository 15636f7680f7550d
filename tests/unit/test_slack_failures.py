"""The Slack boundary: what slack_sdk and aiohttp raise becomes one `SlackFailure`.

Callers decide on `code`, `outage` and `answered` alone, so these mappings are the contract.
"""

from __future__ import annotations

from types import SimpleNamespace

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError

from bot.slackapi import SlackFailure, map_slack_errors


def answer(code: str, status: int = 200) -> SlackApiError:
    return SlackApiError(
        code, SimpleNamespace(data={"ok": False, "error": code}, status_code=status)
    )


@pytest.mark.parametrize(
    ("raised", "code", "outage", "answered"),
    [
        (answer("channel_not_found"), "channel_not_found", False, True),
        (answer("msg_too_long"), "msg_too_long", False, True),
        (answer("ratelimited", 429), "ratelimited", True, True),
        (answer("internal_error", 503), "internal_error", True, True),
        (answer("fatal_error"), "fatal_error", True, True),  # Slack's own trouble, HTTP 200
        (aiohttp.ServerDisconnectedError(), "ServerDisconnectedError", True, False),
        (TimeoutError(), "TimeoutError", True, False),
    ],
)
def test_failures_are_translated_once(
    raised: Exception, code: str, outage: bool, answered: bool
) -> None:
    with pytest.raises(SlackFailure) as caught, map_slack_errors():
        raise raised
    failure = caught.value
    assert (failure.code, failure.outage, failure.answered) == (code, outage, answered)
    assert failure.__cause__ is raised  # the SDK's exception stays for the log's traceback


def test_an_answer_without_a_body_still_has_a_code() -> None:
    bare = SlackApiError("no body", SimpleNamespace(data=None, status_code=502))
    with pytest.raises(SlackFailure) as caught, map_slack_errors():
        raise bare
    assert caught.value.code == "SlackApiError" and caught.value.outage


def test_other_errors_pass_through() -> None:
    with pytest.raises(KeyError), map_slack_errors():
        raise KeyError("not Slack's")
