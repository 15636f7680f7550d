"""The run workflow: start a batch, follow it up, finish it, deliver its result, rerun it.

`RunWorkflow` (workflow.py) is the one entry point; each of its jobs is a collaborator of its
own module (see workflow.py for which depends on which). Names imported from `bot.runs`
before it became a package are re-exported here.
"""

from bot.runs.delivery import MAX_DELIVERY_ATTEMPTS
from bot.runs.recovery import RECOVERY_PAGE
from bot.runs.replies import database_down as _database_down
from bot.runs.requests import Requester, RunRequest
from bot.runs.sweep import _all_settled
from bot.runs.workflow import RunWorkflow

__all__ = [
    "MAX_DELIVERY_ATTEMPTS",
    "RECOVERY_PAGE",
    "Requester",
    "RunRequest",
    "RunWorkflow",
    "_all_settled",
    "_database_down",
]
