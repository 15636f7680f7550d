"""The run workflow: start a batch, follow it up, finish it, deliver its result, rerun it.

`RunWorkflow` (workflow.py) is the one entry point; each of its jobs is a collaborator of its
own module (see workflow.py for which depends on which). Names imported from `bot.runs`
before it became a package are re-exported here.
"""

from bot.admission import ACCEPT_SECONDS
from bot.runs.delivery import MAX_DELIVERY_ATTEMPTS
from bot.runs.recovery import RECOVERY_PAGE, RECOVERY_PAGES
from bot.runs.requests import Requester, RunRequest
from bot.runs.starting import START_CONCURRENCY
from bot.runs.sweep import all_settled
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
