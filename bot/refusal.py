"""`Refusal`: why a person may not do something here, and whom to ask, as data.

The policy that decides (`bot.runs.refusals`, the schedules' owner rule) returns one; each
surface renders it its own way: `blocks.refused` as a Slack message that mentions the admins,
`modal.refusal_error` as the plain text of a form's inline error, where mentions cannot render.
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Refusal:
    """A refusal in words: `reason` is plain text (escaped when rendered)."""

    reason: str
    admins: frozenset[str] = frozenset()  # Slack user ids of ADMIN_USER_IDS, to be asked
    owner: str | None = None  # who created the thing refused (a schedule), if it matters


class AccessLists(Protocol):
    """The ALLOWED_* and ADMIN_USER_IDS settings (`bot.settings.Settings` has them)."""

    @property
    def allowed_channel_ids(self) -> Set[str]: ...
    @property
    def allowed_user_ids(self) -> Set[str]: ...
    @property
    def admin_user_ids(self) -> Set[str]: ...


def not_allowed(settings: AccessLists, *, channel_id: str, user_id: str) -> Refusal | None:
    """Why this person may not run tests here (ALLOWED_* settings), if they may not.

    No I/O: a refusal arrives as the ack itself (also from `bot.early`, before the workflow
    is loaded).
    """
    if settings.allowed_channel_ids and channel_id not in settings.allowed_channel_ids:
        return Refusal(
            "Retell tests can't be run from this channel.", frozenset(settings.admin_user_ids)
        )
    if settings.allowed_user_ids and user_id not in settings.allowed_user_ids:
        return Refusal(
            "You are not on the list of people who can run Retell tests.",
            frozenset(settings.admin_user_ids),
        )
    return None
