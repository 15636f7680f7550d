"""The run workflow: start a batch, follow it up, finish it, deliver its result, rerun it.

This package owns the state machine of a run (see `RunState`) and nothing else: parsing happens
before it, rendering is `bot.blocks`, I/O goes through the Retell and Slack gateways and the store.
Every step that must happen once is guarded by a conditional update in the store, so that the
sweep can be run by any replica, and again after a crash, without posting a result twice.

Rooms, in the order they build on each other: `base` (parts, limits, rules of a run), `status`
(the status message), `starting`, `accepting` (commands before the ack), `recovery` (interrupted
starts), `delivery` (results and mentions), `sweep` (follow-ups), `triage` (buttons, status);
`workflow` stacks them into `RunWorkflow`, `notices` holds what requesters are told privately.
"""

from bot.runs.base import (
    ACCEPT_SECONDS,
    MAX_DELIVERY_ATTEMPTS,
    RECOVERY_PAGE,
    RECOVERY_PAGES,
    START_CONCURRENCY,
    Requester,
    RunRequest,
    all_settled,
)
from bot.runs.workflow import RunWorkflow

__all__ = [
    "ACCEPT_SECONDS",
    "MAX_DELIVERY_ATTEMPTS",
    "RECOVERY_PAGE",
    "RECOVERY_PAGES",
    "START_CONCURRENCY",
    "Requester",
    "RunRequest",
    "RunWorkflow",
    "all_settled",
]
